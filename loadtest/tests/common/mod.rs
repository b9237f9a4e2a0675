//! What several integration tests share: sipfork itself, in this process.

use std::sync::Arc;

use sipfork::app::shard::Shard;
use sipfork::config::Config;
use sipfork::core::transaction::TimerValues;
use sipfork::core::{Core, CoreParams};
use sipfork::engine::io::IoKind;
use sipfork::engine::{start, Engine, EngineConfig, Pinning};

/// sipfork serving `cfg` (a configuration's text) on its listen address, one shard, recvmmsg,
/// no persistence. Its threads are in the calling thread's network namespace.
pub fn start_sipfork(cfg: &str) -> Result<Engine<Shard>, String> {
    let cfg = Arc::new(Config::from_toml(cfg).map_err(|e| e.to_string())?);
    let listen = cfg.server.listen;
    let mut engine = EngineConfig::new(listen, 1);
    engine.io = IoKind::Mmsg;
    engine.pinning = Pinning::Off;
    start(engine, move |id, clock| {
        let core = Core::new(
            Arc::clone(&cfg),
            CoreParams {
                shard: id,
                shards: 1,
                local: listen,
                secret: [9; 32],
                wall_epoch_us: 1_800_000_000_000_000,
                timers: TimerValues::default(),
            },
            clock.now(),
        );
        Shard::new(core, None)
    })
    .map_err(|e| e.to_string())
}
