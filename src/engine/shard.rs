//! The shard loop (ARCHITECTURE.md section 5): one per pinned core, the only loop the engine has.
//!
//! Each turn: wait (for datagrams, a mailbox wake-up, or the handler's next deadline) → hand every
//! received datagram to the handler (one clock read per batch; `ForShard` → copy to the owner's
//! mailbox) → hand over letters other shards left → run control jobs, if any (`control.rs`) →
//! fire due timers → `after_batch` (persistence write-out before sends) → send the outbox in one
//! batch and clear it → wake the shards that got letters → publish counters.
//!
//! Invariant: the shard only sleeps after `Waker::park` and a last look at its mailbox and its
//! control queue (see `mailbox.rs`), so a letter or a control job never waits for an unrelated
//! datagram or timer to be handled.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::core::io::{Datagram, Inbound, Outbox};
use crate::core::shard::ShardId;
use crate::core::transport::Transport;
use crate::engine::clock::Clock;
use crate::engine::control::ControlQueue;
use crate::engine::counters::{counters, Histogram, Published, PublishedHistogram};
use crate::engine::io::{IoStats, UdpBackend};
use crate::engine::mailbox::{LetterKind, Mailbox, MailboxStats, Waker};
use crate::engine::stream::{StreamStats, Streams};
use crate::time::Instant;

/// What a shard drives: the real `Core`, or a measurement stand-in such as the null reflector.
pub trait Handler {
    /// One received datagram (from the socket or handed over by another shard).
    fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) -> Inbound;
    /// The head of a datagram longer than the backend's `max_datagram` (already counted as
    /// `truncated`). Answered where it arrived, never handed to another shard.
    fn handle_oversize(&mut self, _now: Instant, _d: Datagram<'_>) {}
    /// A TCP or TLS connection with `peer` closed (on this shard or on another: every shard is
    /// told, since bindings over it may live on any).
    fn flow_closed(&mut self, _now: Instant, _peer: SocketAddr, _transport: Transport) {}
    /// A connection a shard opened to `peer` for the handler's requests failed before it was
    /// up (every shard is told: requests of any shard may wait on it).
    fn flow_failed(&mut self, _now: Instant, _peer: SocketAddr, _transport: Transport) {}
    /// Fires every timer due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next deadline, if any.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Datagrams to send; the engine drains and clears it once per turn.
    fn outbox(&mut self) -> &mut Outbox;
    /// Called once per turn after input and timers and before the sends (e.g. journal write-out,
    /// so a 200 OK never leaves before its binding reached the kernel).
    fn after_batch(&mut self, _now: Instant) {}
    /// The load of the turn that started at `now`: how long it worked and how many datagrams
    /// and letters it handled (what was waiting). Feeds overload control (`core::overload`).
    fn observe_load(&mut self, _now: Instant, _worked: Duration, _handled: u64) {}
    /// A core-to-core note from shard `from` (`Core::handle_shard_note`).
    fn handle_note(&mut self, _now: Instant, _from: ShardId, _bytes: &[u8]) {}
    /// Hands the notes for other shards to `send` (once per turn, after the timers).
    fn drain_notes(&mut self, _send: &mut dyn FnMut(ShardId, &[u8])) {}
    /// A renewed TLS configuration (a reload's new certificate or `peer_ca`), asked for after
    /// the control jobs ran: the shard's TLS listeners give it to the connections they accept
    /// from then on, and the TLS connections it opens use it; open connections keep their
    /// session.
    fn take_tls_renewal(&mut self) -> Option<crate::engine::stream::TlsRenewal> {
        None
    }
}

counters! {
/// Counters of the loop itself.
pub struct LoopStats {
    /// Loop turns.
    pub turns,
    /// Turns that handled at least one datagram or letter.
    pub busy_turns,
    /// Datagrams from the sockets handed to the handler.
    pub datagrams,
    /// Letters from other shards handed to the handler.
    pub letters,
    /// `handle_timeout` calls.
    pub timeouts,
    /// Control jobs run (admin requests, persistence hand-backs).
    pub control_jobs,
    /// Datagrams the handler sent to this very shard, or letters it tried to forward again:
    /// dropped and counted (a core bug; never ping-pong between shards).
    pub misrouted,
    /// Backend errors the loop survived (each followed by a 1 ms pause).
    pub io_errors,
}
}

/// Upper bounds (µs) of the loop-turn-time histogram: the work of one turn, from the end of the
/// wait to the end of the sends.
pub const TURN_US_BOUNDS: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000,
];
/// Upper bounds of the batch-size histogram: datagrams and letters handled in one busy turn.
pub const BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
/// Loop turn time (µs).
pub type TurnHistogram = Histogram<{ TURN_US_BOUNDS.len() }>;
/// Batch size (datagrams and letters per busy turn).
pub type BatchHistogram = Histogram<{ BATCH_BOUNDS.len() }>;

/// Letters taken from the mailbox per turn at most, so a flood from peers cannot starve timers.
const MAILBOX_LIMIT_PER_TURN: usize = 4096;
/// Pause after a backend error so a persistent failure cannot spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(1);
/// How soon letters held back for a full ring are tried again when nothing else wakes the shard.
const RETRY_DEFERRED: Duration = Duration::from_millis(1);

/// A shard's counters as published for other threads (metrics, admin).
#[derive(Debug, Default)]
pub struct SharedStats {
    backend: OnceLock<&'static str>,
    io: Published<{ IoStats::LEN }>,
    mailbox: Published<{ MailboxStats::LEN }>,
    looping: Published<{ LoopStats::LEN }>,
    turn_us: PublishedHistogram<{ TURN_US_BOUNDS.len() }>,
    batch: PublishedHistogram<{ BATCH_BOUNDS.len() }>,
    streams: Published<{ StreamStats::LEN }>,
}

/// A point-in-time copy of one shard's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// The shard.
    pub shard: ShardId,
    /// Backend name (`"io_uring"`, `"mmsg"`), empty before the shard started.
    pub backend: &'static str,
    /// Backend counters.
    pub io: IoStats,
    /// Mailbox counters.
    pub mailbox: MailboxStats,
    /// Loop counters.
    pub looping: LoopStats,
    /// Time each turn worked, µs ([`TURN_US_BOUNDS`]).
    pub turn_us: TurnHistogram,
    /// Datagrams and letters per busy turn ([`BATCH_BOUNDS`]).
    pub batch: BatchHistogram,
    /// TCP connection counters (zero without TCP listeners).
    pub streams: StreamStats,
}

impl ShardSnapshot {
    /// Mean datagrams and letters handled per busy turn (the batch size the wake-up policy got).
    pub fn per_busy_turn(&self) -> f64 {
        let handled = self.looping.datagrams + self.looping.letters;
        handled as f64 / self.looping.busy_turns.max(1) as f64
    }
}

impl SharedStats {
    /// Records the backend's name (once, at start-up).
    pub fn set_backend(&self, name: &'static str) {
        let _ = self.backend.set(name);
    }

    /// Reads the latest published counters.
    pub fn snapshot(&self, shard: ShardId) -> ShardSnapshot {
        ShardSnapshot {
            shard,
            backend: self.backend.get().copied().unwrap_or(""),
            io: IoStats::from_array(self.io.load()),
            mailbox: MailboxStats::from_array(self.mailbox.load()),
            looping: LoopStats::from_array(self.looping.load()),
            turn_us: self.turn_us.load(),
            batch: self.batch.load(),
            streams: StreamStats::from_array(self.streams.load()),
        }
    }

    fn publish(
        &self,
        io: &IoStats,
        mailbox: &MailboxStats,
        looping: &LoopStats,
        hist: &TurnHistograms,
    ) {
        self.io.store(io.to_array());
        self.mailbox.store(mailbox.to_array());
        self.looping.store(looping.to_array());
        self.turn_us.store(&hist.turn_us);
        self.batch.store(&hist.batch);
    }
}

/// The loop's histograms, kept on the shard's thread.
#[derive(Default)]
struct TurnHistograms {
    turn_us: TurnHistogram,
    batch: BatchHistogram,
}

/// Everything a shard loop runs with besides its handler.
pub struct ShardParts<H> {
    /// This shard.
    pub id: ShardId,
    /// The opened backend over this shard's sockets.
    pub backend: Box<dyn UdpBackend>,
    /// This shard's end of the mesh.
    pub mailbox: Mailbox,
    /// This shard's waker (in the backend's wait set).
    pub waker: Arc<Waker>,
    /// The engine clock.
    pub clock: Clock,
    /// Set to stop every shard (followed by a wake-up of each).
    pub stop: Arc<AtomicBool>,
    /// Where the counters are published.
    pub stats: Arc<SharedStats>,
    /// Jobs other threads want run on this shard.
    pub control: Arc<ControlQueue<H>>,
    /// This shard's TCP listeners and connections (its epoll set is in the backend's wait set).
    pub streams: Option<Streams>,
}

/// Posts a letter about the connection with `peer` to every shard but `me` (held back on a
/// full ring: it must arrive).
fn tell_other_shards(mailbox: &mut Mailbox, me: ShardId, kind: LetterKind, peer: SocketAddr) {
    for other in (0..mailbox.shards()).map(|k| ShardId(k as u16)) {
        if other != me {
            mailbox.post_surely(other, kind, peer, peer, b"");
        }
    }
}

/// Runs the loop until `stop` is set, then does one last non-blocking turn (handles what is
/// ready, sends the outbox) and returns the handler.
pub fn run<H: Handler>(mut handler: H, parts: ShardParts<H>) -> H {
    let ShardParts {
        id,
        mut backend,
        mut mailbox,
        waker,
        clock,
        stop,
        stats,
        control,
        mut streams,
    } = parts;
    stats.set_backend(backend.name());
    let mut counters = LoopStats::default();
    let mut hist = TurnHistograms::default();
    let mut now = clock.now();
    let mut stopping = false;
    loop {
        // Waiting until the deadline computed from the previous turn's clock reading oversleeps by
        // that turn's processing time (microseconds): the price of one clock read per turn.
        let mut timeout = if stopping {
            Some(Duration::ZERO)
        } else {
            let streams_due = streams.as_ref().and_then(|s| s.next_deadline(now));
            // Letters held back for a full ring are retried a millisecond on, not at the next
            // unrelated wake-up.
            let retry_due = mailbox.has_deferred().then(|| now + RETRY_DEFERRED);
            let due = earliest(handler.poll_timeout(), earliest(streams_due, retry_due));
            Clock::timeout_until(now, due)
        };
        let parked = timeout != Some(Duration::ZERO);
        if parked {
            waker.park();
            if mailbox.has_inbound() || control.has_pending() || stop.load(Ordering::SeqCst) {
                timeout = Some(Duration::ZERO);
            }
        }
        let mut batch_now: Option<Instant> = None;
        let mut handled = 0u64;
        let result = backend.wait(timeout, &mut |d| {
            let now = *batch_now.get_or_insert_with(|| clock.now());
            handled += 1;
            let datagram = Datagram {
                from: d.from,
                local: d.local,
                bytes: d.bytes,
                transport: crate::core::transport::Transport::Udp,
                peer_cert: None,
            };
            if d.truncated {
                return handler.handle_oversize(now, datagram);
            }
            hand_over(&mut handler, &mut mailbox, &mut counters, id, now, datagram);
        });
        if parked {
            waker.unpark();
        }
        if let Err(e) = result {
            counters.io_errors += 1;
            if counters.io_errors.is_power_of_two() {
                tracing::error!(shard = id.0, error = %e, count = counters.io_errors, "shard I/O error");
            }
            std::thread::sleep(ERROR_PAUSE);
        }
        now = batch_now.unwrap_or_else(|| clock.now());
        counters.datagrams += handled;
        if let Some(s) = streams.as_mut() {
            // TCP messages count as datagrams: the handler sees them the same way.
            let messages = s.poll(now, &mut |d| {
                hand_over(&mut handler, &mut mailbox, &mut counters, id, now, d);
            }) as u64;
            handled += messages;
            counters.datagrams += messages;
            // Connections this shard opened that failed (in this poll, or in the last turn's
            // sends, which makes this turn come at once): every shard's requests may wait on one.
            for (peer, transport) in s.take_failed() {
                handler.flow_failed(now, peer, transport);
                tell_other_shards(&mut mailbox, id, LetterKind::FlowFailed(transport), peer);
            }
        }

        let letters = mailbox.receive(MAILBOX_LIMIT_PER_TURN, |letter| match letter.kind {
            LetterKind::Inbound(_) => {
                if let Inbound::ForShard(_) = handler.handle_datagram(now, letter.as_datagram()) {
                    counters.misrouted += 1;
                }
            }
            LetterKind::Note(from) => handler.handle_note(now, from, &letter.bytes),
            LetterKind::Transmit => match streams.as_mut() {
                Some(s) => s.write_relayed(letter.from, &letter.bytes),
                None => counters.misrouted += 1,
            },
            LetterKind::FlowClosed(t) => handler.flow_closed(now, letter.from, t),
            LetterKind::FlowFailed(t) => handler.flow_failed(now, letter.from, t),
        });
        counters.letters += letters as u64;
        if control.has_pending() {
            counters.control_jobs += control.run_pending(&mut handler, now) as u64;
            if let (Some(s), Some(tls)) = (streams.as_mut(), handler.take_tls_renewal()) {
                s.renew_tls(tls);
            }
        }

        if handler
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            handler.handle_timeout(now);
            counters.timeouts += 1;
        }
        handler.after_batch(now);
        handler.drain_notes(&mut |to, bytes| {
            mailbox.send_note(to, bytes); // held back on a full ring; a bad id is counted inside
        });
        let out = handler.outbox();
        if let Some(s) = streams.as_mut() {
            // Surely: nothing retransmits over a connection, and the letter must not overtake
            // a FlowClosed held back for the same shard.
            s.divert(out, &mut |owner, peer, bytes| {
                mailbox.post_surely(owner, LetterKind::Transmit, peer, peer, bytes)
            });
            s.expire(now);
            stats.streams.store(s.stats().to_array());
        }
        if !out.is_empty() {
            if let Err(e) = backend.send(out) {
                counters.io_errors += 1;
                tracing::error!(shard = id.0, error = %e, "shard send error");
            }
        }
        // Also when everything went over connections: the arena is emptied every turn.
        out.clear();
        if let Some(s) = streams.as_mut() {
            // Every shard learns of a closed connection: bindings over it may live on any.
            for (peer, transport) in s.take_gone() {
                handler.flow_closed(now, peer, transport);
                tell_other_shards(&mut mailbox, id, LetterKind::FlowClosed(transport), peer);
            }
        }
        mailbox.flush();

        counters.turns += 1;
        if handled > 0 || letters > 0 {
            counters.busy_turns += 1;
            hist.batch.observe(&BATCH_BOUNDS, handled + letters as u64);
        }
        // One more clock read per turn: the turn's work, from the end of the wait to here.
        let worked = clock.now().saturating_since(now);
        hist.turn_us
            .observe(&TURN_US_BOUNDS, worked.as_micros() as u64);
        handler.observe_load(now, worked, handled + letters as u64);
        stats.publish(&backend.stats(), &mailbox.stats(), &counters, &hist);
        if stopping {
            break;
        }
        stopping = stop.load(Ordering::SeqCst);
    }
    control.close();
    drop(backend); // io_uring: waits for in-flight sends before its memory goes
    handler
}

/// One received message to the handler; what belongs to another shard goes to its mailbox.
fn hand_over<H: Handler>(
    handler: &mut H,
    mailbox: &mut Mailbox,
    counters: &mut LoopStats,
    id: ShardId,
    now: Instant,
    datagram: Datagram<'_>,
) {
    if let Inbound::ForShard(owner) = handler.handle_datagram(now, datagram) {
        if owner == id {
            counters.misrouted += 1;
        } else {
            mailbox.send(owner, datagram); // a full ring or bad id is counted inside
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The null reflector: answers every datagram with `replies` copies of it to its sender and does
/// no SIP work, so `sipfork ÷ reflector` isolates the SIP work (DECISIONS.md "Measuring").
#[derive(Debug)]
pub struct Reflector {
    outbox: Outbox,
    replies: usize,
}

impl Reflector {
    /// Answers each datagram with `replies` copies of itself (1: an echo relay).
    pub fn new(replies: usize) -> Self {
        Self {
            outbox: Outbox::new(),
            replies,
        }
    }
}

impl Handler for Reflector {
    fn handle_datagram(&mut self, _now: Instant, d: Datagram<'_>) -> Inbound {
        for _ in 0..self.replies {
            self.outbox.push(d.from, d.bytes);
        }
        Inbound::Handled
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }
}
