//! The appliance: configuration → journals → engine with one [`Core`] per shard → persistence
//! thread → admin listener, until SIGTERM or SIGINT.
//!
//! Start-up order matters: stop signals are blocked before any thread exists (so only the main
//! thread sees them, `engine::os`); the data directory is locked (`DATA_DIR/lock`, one instance per
//! directory) before its journals are recovered, and the engine refuses a listen address another
//! process serves (one instance per port); journals are recovered and every shard restores its bindings
//! before it serves a datagram; the admin listener opens last, so `/health` answering means the
//! appliance is serving.
//!
//! SIGHUP re-reads the configuration (`reload.rs`); it never stops the process.
//!
//! Clean stop (SIGTERM/SIGINT): with `[server] drain_seconds` above zero the shards drain first
//! (new INVITEs get 503 with `Retry-After`, calls in progress go on until they end or the time is
//! up; a second signal cuts the drain short). Then the admin listener closes, every shard finishes its turn (handles
//! what is ready, writes its journal out, sends), the engine returns the shards, each journal is
//! written out and fsynced on the main thread, the persistence thread does a last round, and the
//! process exits 0.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cdr;
pub mod cli;
pub mod cluster;
pub mod devices;
pub mod metrics;
pub mod persist;
pub mod reload;
pub mod shard;

use std::net::TcpListener;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use crate::config::{Config, ConfigError, IoBackend, PinCores, Steering};
use crate::core::registrar::binding::key_extension;
use crate::core::registrar::Restore;
use crate::core::shard::{owner_of, ShardId};
use crate::core::steer::WireParams;
use crate::core::transaction::TimerValues;
use crate::core::{Core, CoreParams};
use crate::engine::control::Controller;
use crate::engine::io::{IoKind, IoOptions};
use crate::engine::os::{self, StopSignal, StopSignals};
use crate::engine::persist::journal::Records;
use crate::engine::persist::Journal;
use crate::engine::{self as eng, EngineConfig, EngineError, Pinning};
use admin::{Admin, AdminContext};
use persist::Persistence;
use reload::Reloader;
use shard::{CompactionRequest, Shard};

/// Why the appliance did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is wrong (names key and line).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The engine could not start or a shard failed.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// A file, socket or thread could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The data directory is locked by another process, or cannot be locked.
    #[error("{0}")]
    DataDir(#[from] crate::engine::persist::LockError),
    /// A shard thread ended on its own.
    #[error("shard {0} stopped unexpectedly (see the log above)")]
    ShardExited(u16),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AppError {
    let what = what.into();
    move |source| AppError::Io { what, source }
}

/// How often the main thread looks for a stop signal or a dead shard.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);

/// The engine settings a configuration asks for.
pub fn engine_config(cfg: &Config) -> EngineConfig {
    let s = &cfg.server;
    EngineConfig {
        listen: vec![s.listen],
        shards: s.shards,
        io: match s.io {
            IoBackend::Auto => IoKind::Auto,
            IoBackend::Uring => IoKind::Uring,
            IoBackend::Mmsg => IoKind::Mmsg,
            IoBackend::Xdp => IoKind::Xdp,
        },
        xdp: s
            .interface
            .as_ref()
            .map(|i| crate::engine::io::xdp::XdpOptions {
                mode: s.xdp_mode,
                ..crate::engine::io::xdp::XdpOptions::new(i.clone())
            }),
        io_options: IoOptions {
            coalesce: (!s.coalesce.is_zero()).then_some(s.coalesce),
            ..IoOptions::default()
        },
        pinning: match &s.pin_cores {
            PinCores::Off => Pinning::Off,
            PinCores::PerShard => Pinning::Auto,
            PinCores::Cpus(cpus) => Pinning::Cores(cpus.clone()),
        },
        socket_buffer: usize::try_from(s.socket_buffer).unwrap_or(usize::MAX),
        steering: (s.steering == Steering::Auto).then(|| WireParams::of(cfg)),
        stream_listen: s
            .listeners
            .iter()
            .filter(|l| l.transport.is_stream())
            .map(|l| l.addr)
            .collect(),
        stream_tls: s
            .listeners
            .iter()
            .filter(|l| l.transport.is_stream())
            .map(|l| match l.transport {
                crate::core::transport::Transport::Tls | crate::core::transport::Transport::Wss => {
                    cfg.tls.as_ref().map(|t| Arc::clone(&t.server))
                }
                _ => None,
            })
            .collect(),
        stream_ws: {
            let settings = Arc::new(crate::core::transport::ws::WsSettings::from_config(
                &cfg.tcp,
                &cfg.websocket,
            ));
            s.listeners
                .iter()
                .filter(|l| l.transport.is_stream())
                .map(|l| l.transport.is_websocket().then(|| Arc::clone(&settings)))
                .collect()
        },
        stream_options: crate::engine::stream::StreamOptions::from_config(&cfg.tcp),
        stream_tls_client: cfg.tls.as_ref().and_then(|t| t.client.clone()),
        stream_tls_names: cfg
            .tls
            .as_ref()
            .map(|t| Arc::clone(&t.peer_names))
            .unwrap_or_default(),
        ..EngineConfig::new(s.listen, s.shards)
    }
}

/// The shard that owns a journal record: the owner of the record's extension. A key the
/// registrar does not recognise (a newer format) goes wherever its bytes hash; it stays in the
/// journal untouched.
fn record_owner(key: &[u8], shards: u16) -> ShardId {
    owner_of(key_extension(key).unwrap_or(key), shards)
}

/// Gives every recovered record to the shard's core (on the shard's thread, before it serves).
fn restore(core: &mut Core, now: crate::time::Instant, records: &Records) {
    let mut counts = [0u64; 4];
    for (key, value) in records {
        let slot = match core.restore(now, key, value) {
            Restore::Restored => 0,
            Restore::Expired => 1,
            Restore::NotProvisioned => 2,
            Restore::Malformed => 3,
        };
        counts[slot] += 1;
    }
    let [restored, expired, not_provisioned, unreadable] = counts;
    tracing::info!(
        shard = core.env().shard.0,
        restored,
        expired,
        not_provisioned,
        unreadable,
        "bindings restored"
    );
}

/// How often a drain looks whether the calls in progress have ended.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Drains before a stop: new INVITEs get 503, calls in progress get up to `limit` to end. A
/// second stop signal ends the drain at once; SIGHUP still reloads.
fn drain(control: &Controller<Shard>, signals: &StopSignals, reloader: &Reloader, limit: Duration) {
    let retry_after = u32::try_from(limit.as_secs()).unwrap_or(u32::MAX).max(1);
    let calls = || -> usize {
        control
            .ask_all(
                |s: &mut Shard, _| s.core().proxy_calls(),
                admin::SHARD_TIMEOUT,
            )
            .map_or(usize::MAX, |n| n.iter().sum())
    };
    if let Err(e) = control.ask_all(
        move |s: &mut Shard, _| s.core_mut().set_draining(Some(retry_after)),
        admin::SHARD_TIMEOUT,
    ) {
        tracing::warn!(error = %e, "a shard did not confirm the drain");
    }
    let deadline = std::time::Instant::now() + limit;
    tracing::info!(
        calls = calls(),
        drain_s = limit.as_secs(),
        "draining: new INVITEs get 503, calls in progress may finish"
    );
    loop {
        let left = calls();
        if left == 0 {
            tracing::info!("drained: no call in progress; stopping");
            return;
        }
        if std::time::Instant::now() >= deadline {
            tracing::info!(
                calls = left,
                "drain time is up; stopping with calls in progress"
            );
            return;
        }
        match signals.wait(DRAIN_POLL) {
            Ok(Some(StopSignal::Hangup)) => {
                let _ = reloader.reload("SIGHUP");
            }
            Ok(Some(signal)) => {
                tracing::info!(?signal, calls = left, "second stop signal: stopping now");
                return;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "waiting for signals during the drain; stopping");
                return;
            }
        }
    }
}

/// Runs the appliance described by the file at `config_path` until a stop signal.
pub fn run(config_path: &Path) -> Result<(), AppError> {
    let signals = StopSignals::block().map_err(io_err("blocking stop signals"))?;
    let cfg = Arc::new(Config::load(config_path)?);
    for warning in cfg.warnings() {
        tracing::warn!("{warning}");
    }
    let mut secret = [0u8; 32];
    os::random_bytes(&mut secret).map_err(io_err("drawing the secret from the OS"))?;
    let started = std::time::Instant::now();
    let shards = cfg.server.shards;

    // One instance per data_dir: locked before recovery, held until the process exits.
    let _data_dir_lock = match &cfg.server.data_dir {
        Some(dir) => Some(crate::engine::persist::lock_dir(dir)?),
        None => None,
    };
    let recovered: Vec<(Journal, Records)> = match &cfg.server.data_dir {
        Some(dir) => persist::recover(dir, usize::from(shards), |key| {
            record_owner(key, shards).index()
        })
        .map_err(io_err(format!(
            "recovering the journals in {}",
            dir.display()
        )))?,
        None => Vec::new(),
    };
    let sync_handles: Vec<_> = recovered.iter().map(|(j, _)| j.sync_handle()).collect();
    let (compaction_tx, compaction_rx) = mpsc::channel::<CompactionRequest>();
    // Taken once each by the shard threads at start-up (a lock only there, never per datagram).
    let parts: Mutex<Vec<Option<(Journal, Records)>>> =
        Mutex::new(recovered.into_iter().map(Some).collect());
    let compaction_tx = Mutex::new(compaction_tx);
    let cdr_writer = cdr::CdrWriter::start(cfg.policy.cdr.clone(), cdr::QUEUE).map_err(io_err(
        format!("opening the CDR file {:?}", cfg.policy.cdr.as_deref()),
    ))?;
    let cdr_sink = cdr_writer.sink();
    let core_cfg = Arc::clone(&cfg);
    let listen = cfg.server.listen;
    // `[cluster]`: the directory thread starts first; it connects in the background.
    let directory = match &cfg.cluster {
        Some(c) => Some(
            cluster::DirectoryThread::start(c.clone(), cfg.server.admin)
                .map_err(io_err("starting the cluster directory thread"))?,
        ),
        None => None,
    };
    let cluster_shared = directory.as_ref().map(cluster::DirectoryThread::shared);
    let shard_cluster = cluster_shared.clone();
    let engine = eng::start(engine_config(&cfg), move |id, clock| {
        let now = clock.now();
        let wall_epoch_us = clock
            .epoch_wall()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut core = Core::new(
            Arc::clone(&core_cfg),
            CoreParams {
                shard: id,
                shards,
                local: listen,
                secret,
                wall_epoch_us,
                timers: TimerValues::default(),
            },
            now,
        );
        let part = parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(id.index())
            .and_then(Option::take);
        let journal = part.map(|(journal, records)| {
            restore(&mut core, now, &records);
            let tx = compaction_tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            (journal, tx)
        });
        let shard = Shard::new(core, journal).with_cdr(cdr_sink.clone());
        match &shard_cluster {
            Some(c) => shard.with_cluster(Arc::clone(c)),
            None => shard,
        }
    })?;

    let control = engine.controller();
    let persistence = match cfg.server.data_dir {
        Some(_) => Some(
            Persistence::start(sync_handles, compaction_rx, control.clone())
                .map_err(io_err("starting the persistence thread"))?,
        ),
        None => None,
    };
    let reloader = Arc::new(
        Reloader::new(config_path.to_owned(), Arc::clone(&cfg), control.clone())
            .with_cdr(cdr_writer.sink()),
    );
    let admin = match cfg.server.admin {
        Some(addr) => {
            let listener = TcpListener::bind(addr).map_err(|e| {
                let advice = eng::io::socket::bind_advice(&e, addr.port());
                io_err(format!("binding the admin listener (TCP {addr}){advice}"))(e)
            })?;
            let ctx = AdminContext {
                control: control.clone(),
                engine_stats: engine.stats_reader(),
                persist_stats: persistence.as_ref().map(Persistence::stats),
                reloader: Arc::clone(&reloader),
                started,
                cluster: cluster_shared.clone(),
            };
            Some(Admin::start(listener, ctx).map_err(io_err("starting the admin thread"))?)
        }
        None => None,
    };
    tracing::info!(
        listen = %engine.local_addrs()[0],
        shards,
        admin = %admin.as_ref().map_or("off".to_owned(), |a| format!("http://{}/", a.addr())),
        data_dir = %cfg.server.data_dir.as_ref().map_or("none (memory only)".to_owned(), |d| d.display().to_string()),
        startup_ms = started.elapsed().as_millis() as u64,
        "sipfork running"
    );

    let outcome = loop {
        match signals.wait(SUPERVISE_EVERY) {
            Ok(Some(StopSignal::Hangup)) => {
                // Refusals are logged and counted inside; the running configuration stays.
                let _ = reloader.reload("SIGHUP");
            }
            Ok(Some(signal)) => {
                let drain_for = reloader.config().server.drain;
                if drain_for.is_zero() {
                    tracing::info!(?signal, "stopping");
                } else {
                    drain(&control, &signals, &reloader, drain_for);
                }
                break Ok(());
            }
            Ok(None) => {}
            Err(e) => break Err(io_err("waiting for signals")(e)),
        }
        if let Some(shard) = engine.exited_shard() {
            tracing::error!(shard = shard.0, "a shard thread ended; stopping");
            break Err(AppError::ShardExited(shard.0));
        }
    };

    if let Some(admin) = admin {
        admin.stop();
    }
    let mut stopped = engine.shutdown()?;
    let mut flush_error = None;
    for (i, shard) in stopped.iter_mut().enumerate() {
        if let Err(e) = shard.flush_journal() {
            tracing::error!(shard = i, error = %e, "journal flush at shutdown failed");
            flush_error.get_or_insert(io_err(format!("flushing the journal of shard {i}"))(e));
        }
    }
    if let Some(p) = persistence {
        p.stop();
    }
    cdr_writer.stop();
    if let Some(d) = directory {
        d.stop();
    }
    outcome?;
    if let Some(e) = flush_error {
        return Err(e);
    }
    tracing::info!(
        uptime_s = started.elapsed().as_secs(),
        "stopped cleanly; journals flushed"
    );
    Ok(())
}
