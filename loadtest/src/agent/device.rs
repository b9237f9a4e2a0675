//! The device side: every device of every extension as a UAS (RFC 3261 §13.3, §17.2.1, §9.2
//! CANCEL, §15.1.2 BYE), plus its registration (see `register.rs`).
//!
//! Per INVITE: 180 after `ring_ms`, then the scenario's final answer (200 with SDP, 486, 603)
//! after its delay (from the INVITE, or from the call's intended start so devices and caller line
//! up to the microsecond), or nothing (`ring`, `silent`). A CANCEL gets 200 and, if no final was
//! sent, 487. Every final is retransmitted (T1 doubling up to T2) until its ACK, for at most
//! 64·T1. A BYE gets 200. Whether an ACK or BYE came from the proxy itself (one Via: it tore a
//! late answer down) or was the caller's, forwarded (two Vias), is recorded for the verdicts.
//!
//! CANCEL latency is measured here: from the moment the call's first 200 OK left its device to
//! the moment a CANCEL reached each other device (both on this side's clock).

use std::net::SocketAddr;

use sipfork::core::io::Datagram;
use sipfork::sip::build::{self, Reply, ViaFix};
use sipfork::sip::{self, HeaderName, Message, Method};
use sipfork::time::{Duration, Instant};

use super::register::RegisterSide;
use super::{via_count, Ctx, Shared, Stamp, Timer};
use crate::metrics::Metric;
use crate::plan::Plan;
use crate::scenario::{Action, Anchor, Leg};
use crate::wire::{self, Dialog as CallId, Meaning, Origin, Reflect};
use std::sync::atomic::Ordering;

/// What one device saw and did in one call.
#[derive(Debug, Default)]
pub struct DevCall {
    /// First INVITE received.
    pub invite_at: Stamp,
    invite: Option<Box<[u8]>>,
    src: Option<SocketAddr>,
    /// INVITE copies received (retransmissions included).
    pub invites: u8,
    /// 180 sent.
    pub ringing_at: Stamp,
    /// Final status sent (0: none).
    pub final_status: u16,
    /// When the final left.
    pub final_at: Stamp,
    last_final: Option<Box<[u8]>>,
    interval: Duration,
    /// First CANCEL received.
    pub cancel_at: Stamp,
    /// CANCEL copies received.
    pub cancels: u8,
    /// First ACK of the final.
    pub ack_at: Stamp,
    /// That ACK came from the proxy itself (one Via).
    pub ack_from_proxy: bool,
    /// First BYE.
    pub bye_at: Stamp,
    /// That BYE came from the proxy itself (one Via).
    pub bye_from_proxy: bool,
    /// Retransmissions of the final sent.
    pub retransmitted: u16,
    /// Gave up retransmitting the final without an ACK (64·T1).
    pub gave_up: bool,
    /// Messages of this call it could not place (e.g. CANCEL before INVITE).
    pub strays: u16,
    /// An INVITE of this call reached the device's socket, even if scenario loss then dropped it
    /// (the proxy forked to it).
    pub offered: bool,
    /// The INVITE server transaction is open: INVITE received (from a device that answers it),
    /// final not yet ACKed. Counted in `Shared::devices_open`.
    open: bool,
}

/// Per call, across its devices.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallAgg {
    /// When the call's first 200 OK left a device.
    pub first_answer: Stamp,
    /// Which device position sent it.
    pub first_answer_k: u8,
}

/// The device side of an agent.
#[derive(Debug)]
pub struct DeviceSide {
    /// `calls[c * D + k]`: device position `k` in call `c`.
    pub calls: Vec<DevCall>,
    /// Per call.
    pub aggs: Vec<CallAgg>,
    /// Registration (phase and storm).
    pub reg: RegisterSide,
    /// Datagrams on device sockets that belong to nothing of this run.
    pub strays: u64,
    width: u32,
}

fn t2() -> Duration {
    Duration::from_secs(4)
}

const SDP_ANSWER: &[u8] = b"v=0\r\no=device 53655766 2353687638 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

impl DeviceSide {
    /// The device side of `plan`.
    pub fn new(plan: &Plan) -> DeviceSide {
        DeviceSide {
            calls: Vec::new(),
            aggs: Vec::new(),
            reg: RegisterSide::new(plan),
            strays: 0,
            width: plan.width(),
        }
    }

    /// First turn: the registration phase starts.
    pub fn begin(&mut self, ctx: &mut Ctx, now: Instant) {
        self.reg.begin(ctx, now);
    }

    /// Paced sends (registration phase, REGISTER storm).
    pub fn pace(&mut self, ctx: &mut Ctx, now: Instant) {
        self.reg.pace(ctx, now);
    }

    /// When the next paced send is due.
    pub fn next_pace(&self, ctx: &Ctx) -> Option<Instant> {
        self.reg.next_pace(ctx)
    }

    /// Housekeeping.
    pub fn tick(&mut self, ctx: &mut Ctx, now: Instant) {
        self.reg.tick(ctx, now);
    }

    fn slot(&mut self, c: u32, k: u32) -> &mut DevCall {
        let i = (c * self.width + k) as usize;
        if self.calls.len() <= i {
            let want = (c as usize + 1) * self.width as usize;
            self.calls.resize_with(want, DevCall::default);
            self.aggs.resize(c as usize + 1, CallAgg::default());
        }
        &mut self.calls[i]
    }

    /// The record of device `k` in call `c`, if it saw anything.
    pub fn call(&self, c: u32, k: u32) -> Option<&DevCall> {
        self.calls.get((c * self.width + k) as usize)
    }

    /// A datagram on device `d`'s socket.
    pub fn handle(&mut self, ctx: &mut Ctx, now: Instant, d: u32, dg: Datagram<'_>) {
        if ctx.plan.reflect {
            match wire::read_hint(dg.bytes, dg.local) {
                Some((origin, Meaning::RegisterOk)) => self.reg.reflected(ctx, now, origin),
                Some((origin, meaning)) => self.reflected(ctx, now, d, origin, meaning),
                None => self.strays += 1,
            }
            return;
        }
        let Ok(msg) = sip::parse(dg.bytes) else {
            self.strays += 1;
            return;
        };
        let id = msg.call_id().ok().and_then(|v| {
            wire::parse_call_id(v, ctx.plan.run_id, ctx.plan.scenario.load.call_base)
        });
        match id {
            Some(CallId::Call(c)) if msg.is_request() => {
                let Some(k) = self.position(&ctx.plan, c, d) else {
                    self.strays += 1;
                    return;
                };
                let from_proxy = via_count(&msg) <= 1;
                match msg.method() {
                    Some(Method::Invite) => self.invite(ctx, now, c, k, dg.from, Some(&msg)),
                    Some(Method::Cancel) => self.cancel(ctx, now, c, k, dg.from, Some(&msg)),
                    Some(Method::Ack) => self.ack(&ctx.shared, c, k, now, from_proxy),
                    Some(Method::Bye) => self.bye(ctx, now, c, k, dg.from, Some(&msg), from_proxy),
                    _ => {
                        let mut buf = ctx.take_scratch();
                        respond_plain(&msg, 501, "Not Implemented", &mut buf);
                        let me = ctx.plan.devices[d as usize];
                        ctx.send(now, Leg::DeviceOut, me, dg.from, &buf, |_, _| Origin {
                            id: c,
                            device: k,
                            status: 501,
                        });
                        ctx.give_back(buf);
                    }
                }
            }
            Some(CallId::Register(_)) | Some(CallId::Clear(_)) if !msg.is_request() => {
                self.reg.response(ctx, now, d, &msg)
            }
            _ => self.strays += 1,
        }
    }

    /// Scenario loss dropped `bytes` on device `d`'s socket: if it was an INVITE of a call to
    /// `d`'s extension, the proxy did fork to `d` (what the verdicts' `not_forked` asks).
    pub fn lost(&mut self, plan: &Plan, d: u32, bytes: &[u8]) {
        if plan.reflect || !bytes.starts_with(b"INVITE ") {
            return;
        }
        let Ok(msg) = sip::parse(bytes) else { return };
        if let Some(CallId::Call(c)) = msg
            .call_id()
            .ok()
            .and_then(|v| wire::parse_call_id(v, plan.run_id, plan.scenario.load.call_base))
        {
            if let Some(k) = self.position(plan, c, d) {
                self.slot(c, k).offered = true;
            }
        }
    }

    /// Device `d`'s position in call `c`, if `d` belongs to the called extension.
    fn position(&self, plan: &Plan, c: u32, d: u32) -> Option<u32> {
        (c < plan.count() && d / self.width == plan.extension_of(c)).then_some(d % self.width)
    }

    fn reflected(&mut self, ctx: &mut Ctx, now: Instant, d: u32, origin: Origin, m: Meaning) {
        let c = origin.id;
        let Some(k) = self.position(&ctx.plan, c, d) else {
            self.strays += 1;
            return;
        };
        let from = ctx.plan.target;
        // A request the proxy originated carries the device's own status as origin (its 487's ACK,
        // a late 2xx's ACK and BYE); one forwarded from the caller carries none.
        let from_proxy = origin.status != 0;
        match m {
            Meaning::Invite => self.invite(ctx, now, c, k, from, None),
            Meaning::Cancel => self.cancel(ctx, now, c, k, from, None),
            Meaning::Ack => self.ack(&ctx.shared, c, k, now, from_proxy),
            Meaning::Bye => self.bye(ctx, now, c, k, from, None, from_proxy),
            _ => self.slot(c, k).strays += 1,
        }
    }

    fn invite(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        c: u32,
        k: u32,
        from: SocketAddr,
        msg: Option<&Message<'_>>,
    ) {
        let dc = self.slot(c, k);
        dc.offered = true;
        dc.invites = dc.invites.saturating_add(1);
        if dc.invite_at.is_set() {
            // A retransmission (our 180 or final was lost, or is late): answer it again.
            ctx.count_duplicate(now);
            if let Some(last) = dc.last_final.clone() {
                let me = device_addr(&ctx.plan, c, k);
                let status = dc.final_status;
                ctx.send(now, Leg::DeviceOut, me, from, &last, |_, _| Origin {
                    id: c,
                    device: k,
                    status,
                });
            } else if dc.ringing_at.is_set() && dc.final_status == 0 {
                self.respond(ctx, now, c, k, 180);
            }
            return;
        }
        dc.invite_at = Stamp::at(now);
        dc.src = Some(from);
        dc.invite = Some(match msg {
            Some(m) => m.bytes().into(),
            None => {
                // Reflector mode: the device answers the caller's INVITE as the hint describes it.
                let mut v = Vec::with_capacity(1024);
                wire::invite(&ctx.plan, c, &mut v);
                v.into()
            }
        });
        let b = ctx.plan.behaviour(c, k).clone();
        if b.action == Action::Silent {
            return;
        }
        dc.open = true;
        ctx.shared.devices_open.fetch_add(1, Ordering::AcqRel);
        let ring_at = now + Duration::from_micros((b.ring_ms * 1000.0) as u64);
        if ring_at <= now {
            self.respond(ctx, now, c, k, 180);
        } else {
            ctx.timers.insert(ring_at, Timer::Ring(c, k as u8));
        }
        if matches!(b.action, Action::Answer | Action::Busy | Action::Decline) {
            let delay = Duration::from_micros(ctx.plan.answer_delay_us(c, k));
            let at = match b.anchor {
                Anchor::Invite => now + delay,
                Anchor::CallStart => ctx.intended(c).unwrap_or(now) + delay,
            };
            if at <= now && ring_at <= now {
                self.final_answer(ctx, now, c, k);
            } else {
                ctx.timers.insert(at.max(ring_at), Timer::Final(c, k as u8));
            }
        }
    }

    fn cancel(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        c: u32,
        k: u32,
        from: SocketAddr,
        msg: Option<&Message<'_>>,
    ) {
        let agg = self.aggs.get(c as usize).copied().unwrap_or_default();
        let dc = self.slot(c, k);
        let me = device_addr(&ctx.plan, c, k);
        if !dc.invite_at.is_set() {
            dc.strays += 1;
            if let Some(m) = msg {
                let mut buf = ctx.take_scratch();
                respond_plain(m, 481, "Call/Transaction Does Not Exist", &mut buf);
                ctx.send(now, Leg::DeviceOut, me, from, &buf, |_, _| Origin {
                    id: c,
                    device: k,
                    status: 481,
                });
                ctx.give_back(buf);
            }
            return;
        }
        dc.cancels = dc.cancels.saturating_add(1);
        if dc.cancel_at.set_once(now) {
            // CANCEL latency: the winner's 200 leaving its device → this CANCEL arriving. Only
            // for calls the caller does not cancel itself (then the CANCEL is the caller's).
            if let Some(won) = agg.first_answer.get() {
                if u32::from(agg.first_answer_k) != k && ctx.plan.cancel_after_us(c).is_none() {
                    let us = now.saturating_since(won).as_micros() as u64;
                    ctx.metrics.record(Metric::CancelLatency, now, us);
                }
            }
        } else {
            ctx.count_duplicate(now);
        }
        // §9.2: 200 to the CANCEL, then 487 to the INVITE if it had no final yet.
        let mut buf = ctx.take_scratch();
        match msg {
            Some(m) => respond_tagged(m, 200, "OK", k, &mut buf),
            None => {
                let mut inv = Vec::with_capacity(1024);
                wire::invite(&ctx.plan, c, &mut inv);
                if let Ok(m) = sip::parse(&inv) {
                    respond_tagged(&m, 200, "OK", k, &mut buf);
                }
            }
        }
        ctx.send(now, Leg::DeviceOut, me, from, &buf, |_, _| Origin {
            id: c,
            device: k,
            status: 200,
        });
        ctx.give_back(buf);
        if self.slot(c, k).final_status == 0 {
            self.finish(ctx, now, c, k, 487);
        }
    }

    fn ack(&mut self, shared: &Shared, c: u32, k: u32, now: Instant, from_proxy: bool) {
        let dc = self.slot(c, k);
        if dc.final_status == 0 {
            dc.strays += 1;
            return;
        }
        if dc.ack_at.set_once(now) {
            dc.ack_from_proxy = from_proxy;
        }
        dc.last_final = None;
        if std::mem::replace(&mut dc.open, false) {
            shared.devices_open.fetch_sub(1, Ordering::AcqRel);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn bye(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        c: u32,
        k: u32,
        from: SocketAddr,
        msg: Option<&Message<'_>>,
        from_proxy: bool,
    ) {
        let dc = self.slot(c, k);
        if dc.bye_at.set_once(now) {
            dc.bye_from_proxy = from_proxy;
        } else {
            ctx.count_duplicate(now);
        }
        let me = device_addr(&ctx.plan, c, k);
        let mut buf = ctx.take_scratch();
        match msg {
            Some(m) => respond_plain(m, 200, "OK", &mut buf),
            None => {
                let mut inv = Vec::with_capacity(1024);
                wire::invite(&ctx.plan, c, &mut inv);
                if let Ok(m) = sip::parse(&inv) {
                    respond_tagged(&m, 200, "OK", k, &mut buf);
                }
            }
        }
        let caller = ctx.plan.callers[ctx.plan.caller_of(c) as usize];
        ctx.send(now, Leg::DeviceOut, me, from, &buf, |p, r| {
            // The proxy forwards the 200 of the caller's BYE; the 200 of its own BYE stays.
            if !from_proxy {
                r.push(Reflect {
                    to: caller,
                    size: p.sizes.bye_ok,
                    meaning: Meaning::ByeOk,
                });
            }
            Origin {
                id: c,
                device: k,
                status: 200,
            }
        });
        ctx.give_back(buf);
    }

    /// A device timer fired.
    pub fn fire(&mut self, ctx: &mut Ctx, now: Instant, timer: Timer) {
        match timer {
            Timer::Ring(c, k) => {
                let k = u32::from(k);
                if self.slot(c, k).final_status == 0 {
                    self.respond(ctx, now, c, k, 180);
                }
            }
            Timer::Final(c, k) => self.final_answer(ctx, now, c, u32::from(k)),
            Timer::FinalRetransmit(c, k) => {
                let k = u32::from(k);
                let t1 = ctx.t1();
                let me = device_addr(&ctx.plan, c, k);
                let dc = self.slot(c, k);
                let (Some(last), Some(src)) = (dc.last_final.clone(), dc.src) else {
                    return;
                };
                if dc.ack_at.is_set() {
                    return;
                }
                if dc.final_at.get().is_some_and(|t| now >= t + t1 * 64) {
                    dc.gave_up = true;
                    dc.last_final = None;
                    if std::mem::replace(&mut dc.open, false) {
                        ctx.shared.devices_open.fetch_sub(1, Ordering::AcqRel);
                    }
                    return;
                }
                if ctx.reliable() {
                    // No timer G over a stream: only timer H's give-up, at 64·T1.
                    if let Some(t) = dc.final_at.get() {
                        ctx.timers
                            .insert(t + t1 * 64, Timer::FinalRetransmit(c, k as u8));
                    }
                    return;
                }
                dc.retransmitted += 1;
                dc.interval = (dc.interval * 2).min(t2());
                let (next, status) = (now + dc.interval, dc.final_status);
                ctx.count_retransmission(now);
                ctx.send(now, Leg::DeviceOut, me, src, &last, |_, _| Origin {
                    id: c,
                    device: k,
                    status,
                });
                ctx.timers.insert(next, Timer::FinalRetransmit(c, k as u8));
            }
            Timer::RegisterRetransmit(id) => self.reg.retransmit(ctx, now, id),
            _ => {}
        }
    }

    fn final_answer(&mut self, ctx: &mut Ctx, now: Instant, c: u32, k: u32) {
        if self.slot(c, k).final_status != 0 {
            return; // cancelled (487) before its time
        }
        let status = match ctx.plan.behaviour(c, k).action {
            Action::Answer => 200,
            Action::Busy => 486,
            Action::Decline => 603,
            Action::Ring | Action::Silent => return,
        };
        self.finish(ctx, now, c, k, status);
    }

    /// Sends final `status` and keeps it for retransmission until the ACK.
    fn finish(&mut self, ctx: &mut Ctx, now: Instant, c: u32, k: u32, status: u16) {
        if status == 200 {
            let agg = &mut self.aggs[c as usize];
            if agg.first_answer.set_once(now) {
                agg.first_answer_k = k as u8;
            }
        }
        let t1 = ctx.t1();
        let Some(bytes) = self.respond(ctx, now, c, k, status) else {
            return;
        };
        let dc = self.slot(c, k);
        dc.final_status = status;
        dc.final_at = Stamp::at(now);
        dc.last_final = Some(bytes);
        dc.invite = None;
        dc.interval = t1;
        ctx.timers
            .insert(now + t1, Timer::FinalRetransmit(c, k as u8));
    }

    /// Builds and sends a response to device `k`'s INVITE of call `c`; returns its bytes.
    fn respond(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        c: u32,
        k: u32,
        status: u16,
    ) -> Option<Box<[u8]>> {
        let me = device_addr(&ctx.plan, c, k);
        let dc = self.slot(c, k);
        let src = dc.src?;
        let invite = sip::parse(dc.invite.as_deref()?).ok()?;
        if status == 180 {
            dc.ringing_at.set_once(now);
        }
        let number = ctx.plan.number(ctx.plan.extension_of(c));
        let mut extra = Vec::with_capacity(256);
        for h in invite.rows(HeaderName::RecordRoute) {
            extra.extend_from_slice(h.row);
        }
        extra.extend_from_slice(b"Contact: <sip:");
        build::push_u32(&mut extra, number);
        extra.push(b'@');
        wire::push_addr(&mut extra, me);
        wire::push_transport_param(&mut extra, &ctx.plan);
        extra.extend_from_slice(b">\r\n");
        let mut tag = Vec::with_capacity(8);
        wire::push_device_tag(&mut tag, k);
        let mut buf = ctx.take_scratch();
        build::response(
            &invite,
            &Reply {
                status,
                reason: reason(status),
                fix: ViaFix::default(),
                to_tag: Some(&tag),
                extra: if status < 300 { &extra } else { b"" },
                body: (status == 200).then_some(("application/sdp", SDP_ANSWER)),
            },
            &mut buf,
        );
        let width = self.width;
        let aggs = &self.aggs;
        let calls = &self.calls;
        ctx.send(now, Leg::DeviceOut, me, src, &buf, |p, r| {
            response_hint(p, calls, aggs, width, c, k, status, r)
        });
        let bytes: Box<[u8]> = buf.as_slice().into();
        ctx.give_back(buf);
        Some(bytes)
    }
}

fn device_addr(plan: &Plan, c: u32, k: u32) -> SocketAddr {
    plan.devices[plan.device_index(plan.extension_of(c), k) as usize]
}

fn reason(status: u16) -> &'static str {
    match status {
        180 => "Ringing",
        200 => "OK",
        486 => "Busy Here",
        487 => "Request Terminated",
        603 => "Decline",
        _ => "Response",
    }
}

fn respond_tagged(req: &Message<'_>, status: u16, reason: &str, k: u32, out: &mut Vec<u8>) {
    let mut tag = Vec::with_capacity(8);
    wire::push_device_tag(&mut tag, k);
    build::response(
        req,
        &Reply {
            status,
            reason,
            fix: ViaFix::default(),
            to_tag: Some(&tag),
            extra: b"",
            body: None,
        },
        out,
    );
}

fn respond_plain(req: &Message<'_>, status: u16, reason: &str, out: &mut Vec<u8>) {
    build::response(
        req,
        &Reply {
            status,
            reason,
            fix: ViaFix::default(),
            to_tag: None,
            extra: b"",
            body: None,
        },
        out,
    );
}

/// Reflector hint of device `k`'s response in call `c`: what a parallel-forking proxy sends on.
#[allow(clippy::too_many_arguments)]
fn response_hint(
    plan: &Plan,
    calls: &[DevCall],
    aggs: &[CallAgg],
    width: u32,
    c: u32,
    k: u32,
    status: u16,
    r: &mut Vec<Reflect>,
) -> Origin {
    let s = &plan.sizes;
    let caller = plan.callers[plan.caller_of(c) as usize];
    let e = plan.extension_of(c);
    let me = plan.devices[plan.device_index(e, k) as usize];
    let agg = aggs.get(c as usize).copied().unwrap_or_default();
    let dev = |j: u32| calls.get((c * width + j) as usize);
    let answered_by_other = agg.first_answer.is_set() && u32::from(agg.first_answer_k) != k;
    match status {
        101..=199 if answered_by_other => {
            // §16.7 / DECISIONS: a branch without provisional is cancelled on its first one.
            r.push(Reflect {
                to: me,
                size: s.cancel,
                meaning: Meaning::Cancel,
            });
        }
        101..=199 => r.push(Reflect {
            to: caller,
            size: s.ringing,
            meaning: Meaning::Ringing,
        }),
        200..=299 => {
            r.push(Reflect {
                to: caller,
                size: s.answer,
                meaning: Meaning::Answer,
            });
            if !answered_by_other {
                for j in (0..width).filter(|&j| j != k) {
                    if dev(j).is_some_and(|d| d.ringing_at.is_set() && d.final_status == 0) {
                        let to = plan.devices[plan.device_index(e, j) as usize];
                        r.push(Reflect {
                            to,
                            size: s.cancel,
                            meaning: Meaning::Cancel,
                        });
                    }
                }
            }
        }
        _ => {
            // The proxy ACKs a non-2xx hop by hop; when it was the last branch and nobody
            // answered, the caller gets the final.
            r.push(Reflect {
                to: me,
                size: s.ack,
                meaning: Meaning::Ack,
            });
            let others_final = (0..width)
                .filter(|&j| j != k)
                .all(|j| dev(j).is_some_and(|d| d.final_status >= 300));
            if others_final && !agg.first_answer.is_set() {
                r.push(Reflect {
                    to: caller,
                    size: s.failure,
                    meaning: Meaning::Failure,
                });
            }
        }
    }
    Origin {
        id: c,
        device: k,
        status,
    }
}
