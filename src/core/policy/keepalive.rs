//! OPTIONS keep-alives to trunk addresses (`[policy] trunk_keepalive`): each shard probes every
//! configured trunk address on its own timer and keeps its own view of which answer. A probe
//! is an OPTIONS sent like a non-INVITE client transaction over UDP (retransmitted at T1,
//! doubling up to T2); **any** response marks the address alive, no response within Timer F
//! (64·T1) marks it dead. A call to a trunk goes to the first of its addresses this shard sees
//! alive; when every address is dead it still goes to the first (a dead mark is up to one
//! interval old, and a PBX that came back takes the call; sipfork does not answer 503 for it).
//!
//! Egress rule: probes go only to configured trunk addresses. Their Via branch is one of ours
//! (MAC, shard), on a call index no call ever has ([`PROBE_CALL`]), so the response reaches the
//! probing shard and nothing else matches it.

use std::net::SocketAddr;

use crate::core::context::Cx;
use crate::core::ids::OurBranch;
use crate::core::metrics::MetricSink;
use crate::core::notice::Notice;
use crate::core::slab::Key;
use crate::core::timer::{TimerId, TimerWheel};
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
    alive: bool,
    /// The probe in flight: its generation, when it was first sent, its bytes, the current
    /// retransmit interval.
    pending: Option<(u32, Instant, Box<[u8]>, Duration)>,
    timer: Option<TimerId>,
}

/// One shard's keep-alive state.
#[derive(Debug, Default)]
pub struct Keepalive {
    probes: Vec<Probe>,
    interval: Option<Duration>,
    generation: u32,
    sent: u64,
    answered: u64,
}

impl Keepalive {
    /// Probes `addrs` every `interval` (`None`: no probes, every address counts as alive).
    /// Called at start and on every reload; state is kept for addresses that stay.
    pub fn configure(
        &mut self,
        timers: &mut TimerWheel<TimerKey>,
        now: Instant,
        addrs: impl Iterator<Item = SocketAddr>,
        interval: Option<Duration>,
    ) {
        let addrs: Vec<SocketAddr> = addrs.take(MAX_PROBED).collect();
        let same = interval == self.interval
            && addrs.len() == self.probes.len()
            && addrs.iter().zip(&self.probes).all(|(a, p)| *a == p.addr);
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
        for (i, addr) in addrs.into_iter().enumerate() {
            let timer = Some(timers.insert(now, TimerKey::Keepalive { probe: i as u8 }));
            self.probes.push(Probe {
                addr,
                alive: true,
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

    /// Probe `i`'s timer: send a new probe, retransmit, or give up on the one in flight.
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
            Some((_, sent, _, _)) if cx.now >= sent + timer_f => {
                // Timer F: no answer.
                if p.alive {
                    p.alive = false;
                    cx.notices.push(Notice::TrunkDown { addr: p.addr });
                }
                (sent + interval).max(cx.now)
            }
            Some((generation, sent, bytes, every)) => {
                cx.out.push(p.addr, &bytes);
                let every = (every * 2).min(t2);
                let at = (cx.now + every).min(sent + timer_f);
                p.pending = Some((generation, sent, bytes, every));
                at
            }
            None => {
                self.generation = self.generation.wrapping_add(1);
                let bytes = probe_bytes(cx, p.addr, i, self.generation);
                cx.out.push(p.addr, &bytes);
                self.sent += 1;
                p.pending = Some((self.generation, cx.now, bytes, t1));
                cx.now + t1
            }
        };
        p.timer = Some(cx.timers.insert(next, TimerKey::Keepalive { probe: i }));
    }

    /// A response to one of this shard's probes (`ours.call.index == PROBE_CALL`): the address
    /// is alive. Stale generations (an older probe's late answer) count too: it answered.
    pub fn on_response(&mut self, cx: &mut Cx<'_>, ours: OurBranch) {
        let Some(interval) = self.interval else {
            return;
        };
        let Some(p) = self.probes.get_mut(usize::from(ours.branch)) else {
            return;
        };
        if !p.alive {
            p.alive = true;
            cx.notices.push(Notice::TrunkUp { addr: p.addr });
        }
        let Some((generation, sent, _, _)) = &p.pending else {
            return;
        };
        if *generation != ours.call.generation {
            return;
        }
        let next = *sent + interval;
        p.pending = None;
        self.answered += 1;
        if let Some(id) = p.timer.take() {
            cx.timers.cancel(id);
        }
        p.timer = Some(
            cx.timers
                .insert(next.max(cx.now), TimerKey::Keepalive { probe: ours.branch }),
        );
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
        sink.gauge(
            "sipfork_trunk_addresses_dead",
            "Trunk addresses this shard marks dead (no answer to a keep-alive within Timer F)",
            labels,
            self.probes.iter().filter(|p| !p.alive).count() as u64,
        );
    }
}

fn probe_bytes(cx: &mut Cx<'_>, addr: SocketAddr, i: u8, generation: u32) -> Box<[u8]> {
    let mut via = b"SIP/2.0/UDP ".to_vec();
    build::push_hostport(&mut via, cx.env.local);
    via.extend_from_slice(b";branch=");
    let key = Key {
        index: PROBE_CALL,
        generation,
    };
    cx.ids.write_branch(0, key, i, &mut via);
    let mut target = b"sip:".to_vec();
    build::push_hostport(&mut target, addr);
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
