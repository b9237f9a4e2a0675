//! OPTIONS keep-alives to trunk addresses (`[policy] trunk_keepalive`): each shard probes every
//! configured trunk address on its own timer and keeps its own view of which answer. A probe
//! is an OPTIONS sent like a non-INVITE client transaction over the address's configured
//! transport: over UDP retransmitted at T1, doubling up to T2; over TCP or TLS (`trunk =
//! "sip:IP:port;transport=tcp|tls"`) sent once (RFC 3261 §17.1.2.1: Timer E over UDP only),
//! through the connection path a call to the trunk takes ([`outbound::prepare`]: the open
//! connection if there is one, else the engine connects, TLS verified against `[tls]
//! peer_ca`), so a trunk's calls and probes share one connection and a probe on an idle one is
//! its keep-alive. **Any** response marks the address alive, no response within Timer F
//! (64·T1) marks it dead, and so does a connection to it that cannot be opened (refused,
//! unreachable, timed out, a failed TLS handshake: [`Keepalive::transport_failed`], at once). A
//! call to a trunk goes to the first of its addresses this shard sees alive; when every address
//! is dead it still goes to the first (a dead mark is up to one interval old, and a PBX that
//! came back takes the call; sipfork does not answer 503 for it).
//!
//! Egress rule: probes go only to configured trunk addresses, and a TCP or TLS address is never
//! probed over UDP. Their Via branch is one of ours (MAC, shard), on a call index no call ever
//! has ([`PROBE_CALL`]), so the response reaches the probing shard and nothing else matches it.
//! An answer counts only from the probed address over the transport the probe went out on (the
//! engine keeps one connection per peer address, so that is the probe's connection): a forged
//! datagram with the branch, or a response over another connection, proves nothing.

use std::net::SocketAddr;

use crate::core::context::Cx;
use crate::core::ids::OurBranch;
use crate::core::metrics::MetricSink;
use crate::core::notice::Notice;
use crate::core::slab::Key;
use crate::core::timer::{TimerId, TimerWheel};
use crate::core::transport::{outbound, Transport};
use crate::core::TimerKey;
use crate::sip::build::{self, InDialog};
use crate::time::{Duration, Instant};

/// The call index of probe branches: the slab never issues it (`u32::MAX` marks "no free slot").
pub const PROBE_CALL: u32 = u32::MAX;

/// Most trunk addresses probed (a branch index is a byte).
pub const MAX_PROBED: usize = 250;

#[derive(Debug)]
struct Probe {
    addr: SocketAddr,
    /// The transport the address is configured with.
    transport: Transport,
    alive: bool,
    /// What the latest probe went over: the transport its answer must arrive on.
    over: Transport,
    pending: Option<Pending>,
    timer: Option<TimerId>,
}

/// The probe in flight.
#[derive(Debug)]
struct Pending {
    generation: u32,
    /// When it was first sent.
    sent: Instant,
    bytes: Box<[u8]>,
    /// The current retransmit interval (UDP).
    every: Duration,
}

/// One shard's keep-alive state.
#[derive(Debug, Default)]
pub struct Keepalive {
    probes: Vec<Probe>,
    interval: Option<Duration>,
    generation: u32,
    sent: u64,
    answered: u64,
    connect_failures: u64,
}

impl Keepalive {
    /// Probes `addrs` (each with its configured transport) every `interval` (`None`: no
    /// probes, every address counts as alive). Called at start and on every reload; state is
    /// kept while the addresses and their transports stay.
    pub fn configure(
        &mut self,
        timers: &mut TimerWheel<TimerKey>,
        now: Instant,
        addrs: impl Iterator<Item = (SocketAddr, Transport)>,
        interval: Option<Duration>,
    ) {
        let addrs: Vec<(SocketAddr, Transport)> = addrs.take(MAX_PROBED).collect();
        let same = interval == self.interval
            && addrs.len() == self.probes.len()
            && addrs
                .iter()
                .zip(&self.probes)
                .all(|(a, p)| *a == (p.addr, p.transport));
        if same {
            return;
        }
        for p in self.probes.drain(..) {
            if let Some(id) = p.timer {
                timers.cancel(id);
            }
        }
        self.interval = interval;
        if interval.is_none() {
            return;
        }
        for (i, (addr, transport)) in addrs.into_iter().enumerate() {
            let timer = Some(timers.insert(now, TimerKey::Keepalive { probe: i as u8 }));
            self.probes.push(Probe {
                addr,
                transport,
                alive: true,
                over: transport,
                pending: None,
                timer,
            });
        }
    }

    /// Is `addr` alive as far as this shard knows (unprobed addresses are)?
    pub fn is_alive(&self, addr: SocketAddr) -> bool {
        self.probes
            .iter()
            .find(|p| p.addr == addr)
            .is_none_or(|p| p.alive)
    }

    /// Where a call to a trunk with addresses `addrs` goes: the first alive, else the first.
    pub fn pick(&self, addrs: &[SocketAddr]) -> Option<SocketAddr> {
        addrs
            .iter()
            .copied()
            .find(|&a| self.is_alive(a))
            .or_else(|| addrs.first().copied())
    }

    /// Probe `i`'s timer: send a new probe, retransmit (UDP), or give up on the one in flight.
    pub fn on_timer(&mut self, cx: &mut Cx<'_>, i: u8) {
        let Some(interval) = self.interval else {
            return;
        };
        let (t1, t2) = (cx.env.timers.t1, cx.env.timers.t2);
        let timer_f = t1 * 64;
        let Some(p) = self.probes.get_mut(usize::from(i)) else {
            return;
        };
        p.timer = None;
        let next = match p.pending.take() {
            Some(q) if cx.now >= q.sent + timer_f => {
                // Timer F: no answer.
                if p.alive {
                    p.alive = false;
                    cx.notices.push(Notice::TrunkDown { addr: p.addr });
                }
                (q.sent + interval).max(cx.now)
            }
            // Over a connection: no retransmissions, Timer F only.
            Some(q) if p.over.is_stream() => {
                let at = q.sent + timer_f;
                p.pending = Some(q);
                at
            }
            Some(mut q) => {
                cx.out.push(p.addr, &q.bytes);
                q.every = (q.every * 2).min(t2);
                let at = (cx.now + q.every).min(q.sent + timer_f);
                p.pending = Some(q);
                at
            }
            None => match route(cx, p.addr, p.transport) {
                Some((over, connect)) => {
                    self.generation = self.generation.wrapping_add(1);
                    let bytes = probe_bytes(cx, p, over, i, self.generation);
                    cx.out.push(p.addr, &bytes);
                    if let Some(t) = connect {
                        cx.out.connect_last(t);
                    }
                    self.sent += 1;
                    p.over = over;
                    p.pending = Some(Pending {
                        generation: self.generation,
                        sent: cx.now,
                        bytes,
                        every: t1,
                    });
                    cx.now + if over.is_stream() { timer_f } else { t1 }
                }
                None => {
                    // It cannot leave over its transport: dead, as a failed connect.
                    self.connect_failures += 1;
                    p.mark_unreachable(cx);
                    cx.now + interval
                }
            },
        };
        p.timer = Some(cx.timers.insert(next, TimerKey::Keepalive { probe: i }));
    }

    /// A response to one of this shard's probes (`ours.call.index == PROBE_CALL`) that came
    /// from `from` over `cx.arrival`: the address is alive when that is the probed address over
    /// the transport the probe went out on (returns whether the response was taken). Stale
    /// generations (an older probe's late answer) count too: it answered.
    pub fn on_response(&mut self, cx: &mut Cx<'_>, ours: OurBranch, from: SocketAddr) -> bool {
        let Some(interval) = self.interval else {
            return false;
        };
        let Some(p) = self.probes.get_mut(usize::from(ours.branch)) else {
            return false;
        };
        // Another address, or the trunk's address over another transport (a datagram with a
        // TLS trunk's source address is anybody's): not the trunk's answer.
        if from != p.addr || cx.arrival != p.over {
            return false;
        }
        if !p.alive {
            p.alive = true;
            cx.notices.push(Notice::TrunkUp { addr: p.addr });
        }
        let Some(q) = &p.pending else {
            return true;
        };
        if q.generation != ours.call.generation {
            return true;
        }
        let next = q.sent + interval;
        p.pending = None;
        self.answered += 1;
        if let Some(id) = p.timer.take() {
            cx.timers.cancel(id);
        }
        p.timer = Some(
            cx.timers
                .insert(next.max(cx.now), TimerKey::Keepalive { probe: ours.branch }),
        );
        true
    }

    /// The engine could not open a `transport` connection to `peer` (refused, unreachable,
    /// timed out, a failed TLS handshake; for a probe or a call, on any shard): a trunk address
    /// reached over that transport is dead at once, and a probe waiting on it ends (the next
    /// one goes one interval after it).
    pub fn transport_failed(&mut self, cx: &mut Cx<'_>, peer: SocketAddr, transport: Transport) {
        let Some(interval) = self.interval else {
            return;
        };
        if !transport.is_stream() {
            return;
        }
        for (i, p) in self.probes.iter_mut().enumerate() {
            if p.addr != peer || (p.transport != transport && p.over != transport) {
                continue;
            }
            let waiting = p.over == transport;
            if let Some(q) = p.pending.take_if(|_| waiting) {
                self.connect_failures += 1;
                p.rearm(cx, i, (q.sent + interval).max(cx.now));
            }
            p.mark_unreachable(cx);
        }
    }

    /// The engine closed the `transport` connection with `peer` (on any shard): a probe in
    /// flight on it can no longer be answered, so it is dropped and the next one goes at once
    /// (over a new connection), with no dead mark; a trunk that closed an idle connection is
    /// not dead. At most one such probe per T1 after the dropped one, so a peer that closes
    /// every connection at once is not probed in a loop; each new probe still gets its Timer F.
    pub fn flow_closed(&mut self, cx: &mut Cx<'_>, peer: SocketAddr, transport: Transport) {
        if self.interval.is_none() || !transport.is_stream() {
            return;
        }
        let t1 = cx.env.timers.t1;
        for (i, p) in self.probes.iter_mut().enumerate() {
            if p.addr != peer || p.over != transport {
                continue;
            }
            if let Some(q) = p.pending.take() {
                p.rearm(cx, i, (q.sent + t1).max(cx.now));
            }
        }
    }

    /// Writes the probe counters and the dead addresses gauge.
    pub fn export_metrics(&self, sink: &mut MetricSink, labels: &[(&'static str, &str)]) {
        sink.counter(
            "sipfork_trunk_probes_total",
            "OPTIONS keep-alives sent to trunk addresses (first transmissions)",
            labels,
            self.sent,
        );
        sink.counter(
            "sipfork_trunk_probes_answered_total",
            "OPTIONS keep-alives to trunk addresses answered (any response)",
            labels,
            self.answered,
        );
        sink.counter(
            "sipfork_trunk_probe_connect_failures_total",
            "OPTIONS keep-alives to TCP/TLS trunk addresses whose connection could not be opened \
             (refused, unreachable, timed out, TLS handshake failed) or that could not leave \
             over the trunk's transport; the address is marked dead at once",
            labels,
            self.connect_failures,
        );
        sink.gauge(
            "sipfork_trunk_addresses_dead",
            "Trunk addresses this shard marks dead (no answer to a keep-alive within Timer F, \
             or a TCP/TLS connection to it that could not be opened)",
            labels,
            self.probes.iter().filter(|p| !p.alive).count() as u64,
        );
    }
}

impl Probe {
    /// Probe `i`'s timer fires at `at` instead.
    fn rearm(&mut self, cx: &mut Cx<'_>, i: usize, at: Instant) {
        if let Some(id) = self.timer.take() {
            cx.timers.cancel(id);
        }
        self.timer = Some(cx.timers.insert(at, TimerKey::Keepalive { probe: i as u8 }));
    }

    /// Its TCP or TLS connection could not be opened: dead.
    fn mark_unreachable(&mut self, cx: &mut Cx<'_>) {
        if self.alive {
            self.alive = false;
            cx.notices.push(Notice::TrunkUnreachable {
                addr: self.addr,
                transport: self.transport,
            });
        }
    }
}

/// How a probe to `addr`, configured over `wanted`, leaves, as a call's branch to it would
/// ([`outbound::prepare`]): the transport its Via names and the connection mark. `None` when
/// it cannot leave over `wanted`: a TLS address with a plain TCP flow open, or a TCP/TLS
/// address with no flow open that this configuration cannot connect to (never over UDP).
fn route(
    cx: &mut Cx<'_>,
    addr: SocketAddr,
    wanted: Transport,
) -> Option<(Transport, Option<Transport>)> {
    let connect = outbound::prepare(cx, addr, wanted).ok()?;
    let over = cx.flows.transport_to(addr);
    if wanted.is_stream() && !over.is_stream() {
        return None;
    }
    Some((over, connect))
}

fn probe_bytes(cx: &mut Cx<'_>, p: &Probe, over: Transport, i: u8, generation: u32) -> Box<[u8]> {
    let addr = p.addr;
    let mut via = Vec::with_capacity(96);
    crate::core::proxy::write_via_start(cx, over, &mut via);
    via.extend_from_slice(b";branch=");
    let key = Key {
        index: PROBE_CALL,
        generation,
    };
    cx.ids.write_branch(0, key, i, &mut via);
    let mut target = b"sip:".to_vec();
    build::push_hostport(&mut target, addr);
    if p.transport.is_stream() {
        target.extend_from_slice(b";transport=");
        target.extend_from_slice(p.transport.param().as_bytes());
    }
    let mut from = b"<sip:keepalive@".to_vec();
    build::push_hostport(&mut from, cx.env.local);
    from.extend_from_slice(b">;tag=");
    from.extend_from_slice(&cx.ids.tag()[..]);
    let mut to = b"<".to_vec();
    to.extend_from_slice(&target);
    to.push(b'>');
    let mut call_id = b"keepalive-".to_vec();
    call_id.extend_from_slice(&cx.ids.tag()[..]);
    let mut out = Vec::with_capacity(320);
    build::in_dialog(
        &InDialog {
            method: b"OPTIONS",
            target: &target,
            routes: &[],
            via: &via,
            from: &from,
            to: &to,
            call_id: &call_id,
            cseq: generation,
            extra: b"",
        },
        &mut out,
    );
    out.into_boxed_slice()
}
