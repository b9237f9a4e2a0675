//! Null relay for measuring the engine's own cost: the shard loop with the null reflector, which
//! echoes every datagram to its sender and does no SIP work. Driven by `benches/floor/udp_blast`
//! through `scripts/relay_bench.sh`, which compares its CPU per datagram with the floor relay.
//!
//! usage: relay ADDR SECS [--io auto|uring|mmsg] [--coalesce-us N] [--shards N] [--pin]
//! Runs SECS seconds (bounded), then prints one line of counters per shard and exits.

use std::net::SocketAddr;
use std::time::Duration;

use sipfork::engine::io::IoKind;
use sipfork::engine::shard::Reflector;
use sipfork::engine::{start, EngineConfig, Pinning};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: relay ADDR SECS [--io auto|uring|mmsg] [--coalesce-us N] [--shards N] [--pin]";
    let (Some(addr), Some(secs)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR must be ip:port");
    let secs: u64 = secs.parse().expect("SECS must be a number");
    assert!((1..=120).contains(&secs), "SECS must be 1..=120");
    let mut config = EngineConfig::new(addr, 1);
    config.pinning = Pinning::Off;
    let mut i = 3;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--io" => config.io = IoKind::parse(&value).expect("--io auto|uring|mmsg"),
            "--coalesce-us" => {
                let us: u64 = value.parse().expect("--coalesce-us N");
                config.io_options.coalesce = (us > 0).then(|| Duration::from_micros(us));
            }
            "--shards" => config.shards = value.parse().expect("--shards N"),
            "--pin" => {
                config.pinning = Pinning::Auto;
                i -= 1;
            }
            other => panic!("unknown argument {other}; {usage}"),
        }
        i += 2;
    }
    let engine = start(config, |_, _| Reflector::new(1)).expect("engine start");
    println!("READY {:?}", engine.local_addrs());
    std::thread::sleep(Duration::from_secs(secs));
    let reader = engine.stats_reader();
    engine.shutdown().expect("shutdown");
    for s in reader.snapshot() {
        println!(
            "DONE shard={} backend={} rx={} tx={} waits={} busy_turns={} per_busy_turn={:.2} coalesce_waits={} mailbox_wakes={} enobufs={} rearms={} truncated={} kernel_drops={} tx_errors={}",
            s.shard.0,
            s.backend,
            s.io.rx_datagrams,
            s.io.tx_datagrams,
            s.io.waits,
            s.looping.busy_turns,
            s.per_busy_turn(),
            s.io.coalesce_waits,
            s.io.mailbox_wakes,
            s.io.enobufs,
            s.io.rearms,
            s.io.truncated,
            s.io.kernel_drops,
            s.io.tx_errors,
        );
    }
}
