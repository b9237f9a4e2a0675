//! The whole engine on loopback: shard loops, cross-shard hand-off, timers, shutdown, on both
//! backends (io_uring skipped with a printed reason where the probe fails).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::core::io::{Datagram, Inbound, Outbox};
use crate::engine::io::IoKind;
use crate::engine::shard::Reflector;
use crate::time::Instant;

fn config(kind: IoKind, shards: u16) -> EngineConfig {
    EngineConfig {
        io: kind,
        pinning: Pinning::Off, // tests share 2 cores with everything else
        ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), shards)
    }
}

/// Starts an engine, or `None` with the reason printed when io_uring is unavailable here.
fn start_or_skip<H, F>(kind: IoKind, shards: u16, make: F) -> Option<Engine<H>>
where
    H: Handler + Send + 'static,
    F: Fn(ShardId, &Clock) -> H + Send + Sync + 'static,
{
    match start(config(kind, shards), make) {
        Ok(e) => Some(e),
        Err(e @ EngineError::Backend { .. }) if kind == IoKind::Uring => {
            eprintln!("skipping the io_uring run: {e}");
            None
        }
        Err(e) => panic!("{kind:?}: {e}"),
    }
}

fn env_override_set() -> bool {
    std::env::var_os("SIPFORK_IO").is_some()
}

fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

const KINDS: [IoKind; 2] = [IoKind::Mmsg, IoKind::Uring];

#[test]
fn reflector_echoes_through_every_shard_and_shutdown_returns_the_handlers() {
    for kind in KINDS {
        let Some(engine) = start_or_skip(kind, 2, |_, _| Reflector::new(1)) else {
            continue;
        };
        let addr = engine.local_addrs()[0];
        let peers: Vec<UdpSocket> = (0..8).map(|_| peer()).collect();
        let mut buf = [0u8; 64];
        for round in 0..20 {
            for (p, s) in peers.iter().enumerate() {
                s.send_to(format!("{p}/{round}").as_bytes(), addr).unwrap();
            }
            for (p, s) in peers.iter().enumerate() {
                let (n, from) = s.recv_from(&mut buf).unwrap();
                assert_eq!(from, addr, "{kind:?}");
                assert_eq!(&buf[..n], format!("{p}/{round}").as_bytes(), "{kind:?}");
            }
        }
        let reader = engine.stats_reader();
        let t0 = std::time::Instant::now();
        let handlers = engine.shutdown().unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{kind:?}: shutdown took {:?}",
            t0.elapsed()
        );
        let stats = reader.snapshot();
        let total: u64 = stats.iter().map(|s| s.looping.datagrams).sum();
        assert_eq!(total, 160, "{kind:?}: {stats:?}");
        if !env_override_set() {
            let want = if kind == IoKind::Uring {
                "io_uring"
            } else {
                "mmsg"
            };
            assert!(stats.iter().all(|s| s.backend == want), "{stats:?}");
        }
        assert_eq!(handlers.len(), 2);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{kind:?}: shutdown took {:?}",
            t0.elapsed()
        );
    }
}

/// Hands every datagram to the shard named in its first byte; the owner records and echoes it.
/// With `by_note`, it instead turns every datagram into a core-to-core note for the other shard,
/// which answers the datagram's sender (the echo proves the note crossed and woke that shard).
struct Router {
    me: ShardId,
    seen: Vec<Vec<u8>>,
    outbox: Outbox,
    by_note: bool,
    notes: Vec<(ShardId, Vec<u8>)>,
    heard_from: Vec<ShardId>,
}

fn router(me: ShardId, by_note: bool) -> Router {
    Router {
        me,
        seen: Vec::new(),
        outbox: Outbox::new(),
        by_note,
        notes: Vec::new(),
        heard_from: Vec::new(),
    }
}

impl Handler for Router {
    fn handle_datagram(&mut self, _now: Instant, d: Datagram<'_>) -> Inbound {
        if self.by_note {
            let mut note = d.from.to_string().into_bytes();
            note.push(b'|');
            note.extend_from_slice(d.bytes);
            self.notes.push((ShardId(1 - self.me.0), note));
            return Inbound::Handled;
        }
        let owner = ShardId(u16::from(d.bytes[0]));
        if owner != self.me {
            return Inbound::ForShard(owner);
        }
        self.seen.push(d.bytes.to_vec());
        self.outbox.push(d.from, d.bytes);
        Inbound::Handled
    }
    fn handle_note(&mut self, _now: Instant, from: ShardId, bytes: &[u8]) {
        self.heard_from.push(from);
        let bar = bytes.iter().position(|b| *b == b'|').unwrap();
        let to: SocketAddr = std::str::from_utf8(&bytes[..bar]).unwrap().parse().unwrap();
        self.outbox.push(to, &bytes[bar + 1..]);
    }
    fn drain_notes(&mut self, send: &mut dyn FnMut(ShardId, &[u8])) {
        for (to, bytes) in self.notes.drain(..) {
            send(to, &bytes);
        }
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }
}

#[test]
fn cross_shard_hand_off_delivers_exactly_once_in_order_and_wakes_the_owner() {
    for kind in KINDS {
        let Some(engine) = start_or_skip(kind, 2, |me, _| router(me, false)) else {
            continue;
        };
        let addr = engine.local_addrs()[0];
        // Several peers, so the kernel's reuseport hash puts some on each shard; each datagram
        // names its owner, so about half of them cross over whichever shard receives them.
        let peers: Vec<UdpSocket> = (0..6).map(|_| peer()).collect();
        const ROUNDS: u32 = 100;
        let mut buf = [0u8; 64];
        for seq in 0..ROUNDS {
            for (p, s) in peers.iter().enumerate() {
                let owner = ((seq as usize + p) % 2) as u8;
                let mut msg = vec![owner, p as u8];
                msg.extend_from_slice(&seq.to_be_bytes());
                s.send_to(&msg, addr).unwrap();
            }
            for s in &peers {
                // The owner, parked with no deadline, only runs because the mailbox woke it.
                let (n, _) = s
                    .recv_from(&mut buf)
                    .expect("echo from the owner (lost wake-up?)");
                assert_eq!(n, 6);
            }
        }
        let reader = engine.stats_reader();
        let handlers = engine.shutdown().unwrap();
        let stats = reader.snapshot();
        let handed: u64 = stats.iter().map(|s| s.mailbox.sent).sum();
        let letters: u64 = stats.iter().map(|s| s.looping.letters).sum();
        assert_eq!(
            handed, letters,
            "{kind:?}: every letter arrives exactly once: {stats:?}"
        );
        assert!(
            handed > 0,
            "{kind:?}: some datagrams must have crossed shards"
        );
        let drops: u64 = stats
            .iter()
            .map(|s| s.mailbox.dropped_full + s.mailbox.dropped_bad_target)
            .sum();
        assert_eq!(drops, 0);
        for h in &handlers {
            assert!(
                h.seen.iter().all(|m| ShardId(u16::from(m[0])) == h.me),
                "owner only"
            );
            for p in 0..peers.len() as u8 {
                let seqs: Vec<u32> = h
                    .seen
                    .iter()
                    .filter(|m| m[1] == p)
                    .map(|m| u32::from_be_bytes([m[2], m[3], m[4], m[5]]))
                    .collect();
                let want: Vec<u32> = (0..ROUNDS)
                    .filter(|seq| (*seq as usize + usize::from(p)) % 2 == h.me.index())
                    .collect();
                assert_eq!(
                    seqs, want,
                    "{kind:?}: shard {} peer {p}: once each, in order",
                    h.me.0
                );
            }
        }
    }
}

#[test]
fn core_notes_reach_the_other_shard_and_wake_it() {
    for kind in KINDS {
        let Some(engine) = start_or_skip(kind, 2, |me, _| router(me, true)) else {
            continue;
        };
        let addr = engine.local_addrs()[0];
        let peers: Vec<UdpSocket> = (0..4).map(|_| peer()).collect();
        let mut buf = [0u8; 64];
        for round in 0..20u8 {
            for (p, s) in peers.iter().enumerate() {
                s.send_to(&[p as u8, round], addr).unwrap();
            }
            for (p, s) in peers.iter().enumerate() {
                let (n, _) = s
                    .recv_from(&mut buf)
                    .expect("echo after a note (lost wake-up?)");
                assert_eq!(&buf[..n], &[p as u8, round], "{kind:?}");
            }
        }
        let handlers = engine.shutdown().unwrap();
        let heard: usize = handlers.iter().map(|h| h.heard_from.len()).sum();
        assert_eq!(heard, 80, "{kind:?}");
        for h in &handlers {
            assert!(h.heard_from.iter().all(|f| *f != h.me), "{kind:?}");
        }
    }
}

/// Arms one deadline 60 ms after start and records when it fired.
struct OneTimer {
    deadline: Option<Instant>,
    fired_at: Option<Instant>,
    outbox: Outbox,
}

impl Handler for OneTimer {
    fn handle_datagram(&mut self, _now: Instant, _d: Datagram<'_>) -> Inbound {
        Inbound::Handled
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.fired_at = Some(now);
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
    fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }
}

#[test]
fn the_loop_fires_the_handlers_deadline_on_time() {
    for kind in KINDS {
        let Some(engine) = start_or_skip(kind, 1, |_, clock| OneTimer {
            deadline: Some(clock.now() + Duration::from_millis(60)),
            fired_at: None,
            outbox: Outbox::new(),
        }) else {
            continue;
        };
        std::thread::sleep(Duration::from_millis(400));
        let reader = engine.stats_reader();
        let h = engine.shutdown().unwrap().pop().unwrap();
        let stats = reader.snapshot();
        let fired = h.fired_at.expect("timer must fire");
        assert!(
            fired.as_micros() >= 60_000,
            "{kind:?}: fired early at {fired:?}"
        );
        assert!(
            fired.as_micros() < 350_000,
            "{kind:?}: fired late at {fired:?}"
        );
        assert_eq!(stats[0].looping.timeouts, 1, "{kind:?}");
        // Idle apart from the timer: a handful of turns, not a spinning loop.
        assert!(stats[0].looping.turns < 20, "{kind:?}: {stats:?}");
    }
}

/// A handler whose drop flags that the shard returned it (so it was not leaked on shutdown).
struct Flag(Arc<AtomicBool>, Outbox);

impl Handler for Flag {
    fn handle_datagram(&mut self, _now: Instant, _d: Datagram<'_>) -> Inbound {
        Inbound::Handled
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn outbox(&mut self) -> &mut Outbox {
        &mut self.1
    }
}

impl Drop for Flag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn idle_shards_stop_promptly_on_shutdown() {
    for kind in KINDS {
        let dropped = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&dropped);
        let Some(engine) = start_or_skip(kind, 3, move |_, _| Flag(Arc::clone(&d), Outbox::new()))
        else {
            continue;
        };
        std::thread::sleep(Duration::from_millis(20));
        let t0 = std::time::Instant::now();
        let handlers = engine.shutdown().unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{kind:?}: {:?}",
            t0.elapsed()
        );
        assert_eq!(handlers.len(), 3);
        assert!(!dropped.load(Ordering::SeqCst), "handlers come back alive");
        drop(handlers);
        assert!(dropped.load(Ordering::SeqCst));
    }
}

#[test]
fn bad_configs_and_taken_ports_are_errors_not_panics() {
    assert!(matches!(
        start(config(IoKind::Mmsg, 0), |_, _| Reflector::new(1)),
        Err(EngineError::Config(_))
    ));
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap(); // no SO_REUSEPORT: the port is not shareable
    let addr: SocketAddr = taken.local_addr().unwrap();
    let cfg = EngineConfig {
        pinning: Pinning::Off,
        ..EngineConfig::new(addr, 1)
    };
    match start(cfg, |_, _| Reflector::new(1)) {
        Err(EngineError::Bind(e)) => {
            assert_eq!(e.addr, addr);
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        other => panic!("expected a bind error, got {:?}", other.err()),
    }
}

#[test]
fn control_jobs_run_on_the_owning_shard_and_wake_it_when_parked() {
    for kind in KINDS {
        let Some(engine) = start_or_skip(kind, 2, |me, _| router(me, false)) else {
            continue;
        };
        let control = engine.controller();
        assert_eq!(control.shards(), 2);
        // Both shards sleep with no deadline: only the control wake-up can run the jobs.
        std::thread::sleep(Duration::from_millis(20));
        for round in 0..50u8 {
            for shard in 0..2u16 {
                let reply = control
                    .ask(ShardId(shard), move |h: &mut Router, _now| {
                        h.seen.push(vec![round]);
                        h.me
                    })
                    .unwrap();
                let me = reply
                    .wait(Duration::from_secs(2))
                    .expect("answer (lost wake-up?)");
                assert_eq!(me, ShardId(shard), "{kind:?}");
            }
        }
        let all = control
            .ask_all(|h: &mut Router, _| h.seen.len(), Duration::from_secs(2))
            .unwrap();
        assert_eq!(all, vec![50, 50], "{kind:?}");
        assert_eq!(
            control.post(ShardId(7), |_: &mut Router, _| {}),
            Err(control::ControlError::NoShard(ShardId(7)))
        );
        // A job posted after the shards stopped is dropped with its reply: no hang.
        let reader = engine.stats_reader();
        let handlers = engine.shutdown().unwrap();
        assert_eq!(handlers[0].seen.len(), 50);
        assert_eq!(
            control.ask(ShardId(0), |h: &mut Router, _| h.me).err(),
            Some(control::ControlError::Stopped)
        );
        let jobs: u64 = reader
            .snapshot()
            .iter()
            .map(|s| s.looping.control_jobs)
            .sum();
        assert_eq!(jobs, 2 * 50 + 2, "{kind:?}");
    }
}
