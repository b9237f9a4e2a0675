//! The caller side: places every call of the open loop and plays a UAC per call (RFC 3261 §13,
//! §17.1, §9.1 CANCEL, §15 BYE).
//!
//! Per call: INVITE at the intended time (Timer A retransmissions until a response), the
//! latencies to 100, first 180 and first 2xx, an ACK for every 2xx (end to end, along the
//! Record-Route set) and for every non-2xx final (hop by hop), a BYE after the hold time on the
//! first dialog and at once on any other (a second 2xx of a double answer, or a 2xx that won the
//! race against our CANCEL), CANCEL at the scenario's ring time, retransmissions of CANCEL and BYE
//! (Timer E). A call ends when it has a final response, every dialog's BYE was answered and a
//! CANCEL, if sent, was answered; the drain deadline ends the rest as timed out.
//!
//! Invariant: every record field a verdict reads is set from what arrived on the wire (or its
//! hint in reflector mode), never from what the scenario expected.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use sipfork::core::io::Datagram;
use sipfork::core::registrar::digest::{compute_response, Algorithm, Ha1, ResponseInput};
use sipfork::sip::build::{self, InDialog};
use sipfork::sip::{self, ContactValue, HeaderName, Message, Method};
use sipfork::time::{Duration, Instant};

use super::{Ctx, Stamp, Timer};
use crate::metrics::Metric;
use crate::plan::Plan;
use crate::scenario::{Action, Leg, LoadKind};
use crate::wire::{self, Dialog as CallId, Meaning, Origin, Reflect};

/// How a call ended at the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum End {
    /// Still open.
    #[default]
    Open,
    /// Ended as the scenario expects at the caller.
    Completed,
    /// Ended with a final response the scenario does not allow.
    WrongFinal,
    /// Still open at the drain deadline.
    TimedOut,
}

/// One dialog a 2xx established at the caller.
#[derive(Debug)]
struct CallerDialog {
    k: u32,
    next_hop: SocketAddr,
    target: Box<[u8]>,
    routes: Vec<Box<[u8]>>,
    to: Box<[u8]>,
    ack: Box<[u8]>,
    bye: Option<Box<[u8]>>,
    bye_interval: Duration,
}

/// What the caller saw of one call.
#[derive(Debug, Default)]
pub struct CallerCall {
    /// Intended INVITE send time.
    pub t0: Stamp,
    invite: Option<Box<[u8]>>,
    invite_interval: Duration,
    /// Any response to the INVITE arrived (Timer A stops).
    heard: bool,
    /// The INVITE was sent again with credentials after a 401/407 (its CSeq is then 2).
    pub authorized: bool,
    /// First 100.
    pub got_100: Stamp,
    /// First 180.
    pub got_180: Stamp,
    /// First 2xx.
    pub got_2xx: Stamp,
    /// First final status (2xx or not); 0 before.
    pub final_status: u16,
    /// Non-2xx finals received (retransmissions included).
    pub non2xx_finals: u16,
    /// A non-2xx final after a 2xx, or a second non-2xx with another status.
    pub conflicting_finals: u16,
    /// Device positions whose 180 arrived.
    pub ringing: u32,
    /// Device positions whose 2xx arrived.
    pub answered: u32,
    dialogs: Vec<CallerDialog>,
    /// When our CANCEL left.
    pub cancel_sent: Stamp,
    cancel: Option<Box<[u8]>>,
    cancel_interval: Duration,
    /// Our CANCEL got its final response.
    pub cancel_answered: bool,
    /// When the 487 arrived.
    pub got_487: Stamp,
    /// Dialogs (by device position) whose BYE was sent.
    pub bye_sent: u32,
    /// Dialogs whose BYE got its final response.
    pub bye_answered: u32,
    hangup_armed: bool,
    /// Retransmissions we sent.
    pub retransmitted: u16,
    /// Duplicates we received.
    pub duplicates: u16,
    /// Messages of this call we could not place.
    pub strays: u16,
    /// How it ended.
    pub end: End,
}

impl CallerCall {
    /// The CSeq number of the INVITE in force (2 once it was sent again with credentials).
    pub fn invite_cseq(&self) -> u32 {
        1 + u32::from(self.authorized)
    }
}

/// A 401/407 to call `c`'s first INVITE (`caller.digest`): ACK it, then send the INVITE again with
/// the called extension's credentials (RFC 3261 §22.3; the challenge's first algorithm, qop=auth).
/// A retransmitted challenge is only ACKed again.
fn challenged(ctx: &mut Ctx, now: Instant, c: u32, call: &mut CallerCall, msg: &Message<'_>) {
    let plan = std::sync::Arc::clone(&ctx.plan);
    let from = caller_addr(&plan, c);
    let mut buf = ctx.take_scratch();
    wire::invite(&plan, c, &mut buf);
    let mut ack = Vec::with_capacity(512);
    if let Ok(first) = sip::parse(&buf) {
        build::ack_for(&first, msg, &mut ack);
    }
    ctx.send(now, Leg::CallerOut, from, plan.target, &ack, |_, _| {
        Origin {
            id: c,
            device: 0,
            status: 0,
        }
    });
    if call.authorized {
        call.duplicates += 1;
        ctx.count_duplicate(now);
        ctx.give_back(buf);
        return;
    }
    let challenge = if msg.status() == Some(401) {
        msg.www_authenticate()
    } else {
        msg.proxy_authenticate()
    };
    let Some(Ok(ch)) = challenge else {
        // A challenge we cannot read: the call ends on it as on any other final.
        call.final_status = msg.status().unwrap_or(0);
        call.non2xx_finals += 1;
        ctx.give_back(buf);
        return;
    };
    let e = plan.extension_of(c);
    let user = plan.number(e).to_string();
    let algorithm = ch
        .algorithm
        .and_then(Algorithm::from_name)
        .unwrap_or(Algorithm::Md5);
    let ha1 = Ha1::from_password(
        algorithm,
        user.as_bytes(),
        ch.realm,
        plan.password(e).as_bytes(),
    );
    let mut cnonce = b"i".to_vec();
    build::push_u32(&mut cnonce, c);
    let response = compute_response(
        algorithm,
        &ha1,
        &ResponseInput {
            method: b"INVITE",
            uri: &wire::invite_uri(&plan, c),
            nonce: ch.nonce,
            nc: b"00000001",
            cnonce: &cnonce,
            qop: b"auth",
        },
    );
    buf.clear();
    wire::invite_authorized(
        &plan,
        c,
        &wire::Credentials {
            realm: ch.realm,
            nonce: ch.nonce,
            opaque: ch.opaque,
            algorithm: algorithm.name(),
            nc: 1,
            response: response.as_bytes(),
            cnonce: &cnonce,
        },
        &mut buf,
    );
    call.authorized = true;
    call.heard = false;
    call.invite_interval = ctx.t1();
    ctx.send(now, Leg::CallerOut, from, plan.target, &buf, |p, r| {
        invite_hint(p, c, r)
    });
    call.invite = Some(buf.as_slice().into());
    ctx.give_back(buf);
    ctx.arm_retransmission(now + call.invite_interval, Timer::InviteRetransmit(c));
}

/// The caller side of an agent.
#[derive(Debug)]
pub struct CallerSide {
    /// Every call, by number.
    pub calls: Vec<CallerCall>,
    next: u32,
    open: u32,
    drained: bool,
    /// Datagrams on caller sockets that belong to no call of this run.
    pub strays: u64,
}

fn bit(k: u32) -> u32 {
    1u32.checked_shl(k).unwrap_or(0)
}

/// Whether call `c` is meant to be answered at the caller (some device answers and the caller
/// does not cancel), so a non-2xx final is wrong.
pub fn expects_answer(plan: &Plan, c: u32) -> bool {
    plan.cancel_after_us(c).is_none()
        && (0..plan.width()).any(|k| plan.behaviour(c, k).action == Action::Answer)
}

impl CallerSide {
    /// The caller side of `plan` (no call started yet).
    pub fn new(plan: &Plan) -> CallerSide {
        let n = match plan.scenario.load.kind {
            LoadKind::Calls => plan.count() as usize,
            LoadKind::Register => 0,
        };
        CallerSide {
            calls: (0..n).map(|_| CallerCall::default()).collect(),
            next: 0,
            open: 0,
            drained: false,
            strays: 0,
        }
    }

    /// When the next call is due, if any.
    pub fn next_start(&self, ctx: &Ctx) -> Option<Instant> {
        if self.next as usize >= self.calls.len() {
            return None;
        }
        // Before the load phase's start is published there is nothing to wait for: the next
        // tick looks again.
        ctx.intended(self.next)
    }

    /// Starts every call whose intended time has come.
    pub fn start_due(&mut self, ctx: &mut Ctx, now: Instant) {
        while (self.next as usize) < self.calls.len() {
            let c = self.next;
            let Some(t0) = ctx.intended(c) else { return };
            if t0 > now {
                return;
            }
            self.next += 1;
            self.open += 1;
            ctx.shared.started.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.count(t0, |k| k.started += 1);
            ctx.metrics.record(
                Metric::SendLag,
                now,
                now.saturating_since(t0).as_micros() as u64,
            );
            let mut buf = ctx.take_scratch();
            wire::invite(&ctx.plan, c, &mut buf);
            let call = &mut self.calls[c as usize];
            call.t0 = Stamp::at(t0);
            call.invite_interval = ctx.t1();
            let from = caller_addr(&ctx.plan, c);
            ctx.send(now, Leg::CallerOut, from, ctx.plan.target, &buf, |p, r| {
                invite_hint(p, c, r)
            });
            call.invite = Some(buf.as_slice().into());
            ctx.give_back(buf);
            ctx.arm_retransmission(now + call.invite_interval, Timer::InviteRetransmit(c));
            if let Some(after) = ctx.plan.cancel_after_us(c) {
                ctx.timers
                    .insert(t0 + Duration::from_micros(after), Timer::Cancel(c));
            }
        }
    }

    /// A datagram on a caller socket.
    pub fn handle(&mut self, ctx: &mut Ctx, now: Instant, d: Datagram<'_>) {
        if ctx.plan.reflect {
            match wire::read_hint(d.bytes, d.local) {
                Some((origin, meaning)) => self.reflected(ctx, now, origin, meaning),
                None => self.strays += 1,
            }
            return;
        }
        let Ok(msg) = sip::parse(d.bytes) else {
            self.strays += 1;
            return;
        };
        let call_id = msg
            .call_id()
            .ok()
            .and_then(|v| wire::parse_call_id(v, ctx.plan.run_id));
        let (Some(CallId::Call(c)), Some(status)) = (call_id, msg.status()) else {
            // A request to the caller (none is expected in these flows) or another run's datagram.
            self.strays += 1;
            return;
        };
        if c as usize >= self.calls.len() || !self.calls[c as usize].t0.is_set() {
            self.strays += 1;
            return;
        }
        let k = msg
            .to()
            .ok()
            .and_then(|t| t.tag)
            .and_then(wire::parse_device_tag);
        match msg.cseq().map(|s| s.method) {
            Ok(Method::Invite) => self.invite_response(ctx, now, c, status, k, Some(&msg)),
            Ok(Method::Cancel) => self.cancel_response(ctx, now, c, status),
            Ok(Method::Bye) => self.bye_response(ctx, now, c, status, k),
            _ => self.calls[c as usize].strays += 1,
        }
    }

    fn reflected(&mut self, ctx: &mut Ctx, now: Instant, origin: Origin, meaning: Meaning) {
        let c = origin.id;
        if c as usize >= self.calls.len() || !self.calls[c as usize].t0.is_set() {
            self.strays += 1;
            return;
        }
        let k = Some(origin.device);
        match meaning {
            Meaning::Trying => self.invite_response(ctx, now, c, 100, None, None),
            Meaning::Ringing => self.invite_response(ctx, now, c, 180, k, None),
            Meaning::Answer => self.invite_response(ctx, now, c, 200, k, None),
            Meaning::Failure => self.invite_response(ctx, now, c, origin.status, k, None),
            Meaning::CancelOk => self.cancel_response(ctx, now, c, 200),
            Meaning::ByeOk => self.bye_response(ctx, now, c, 200, k),
            _ => self.calls[c as usize].strays += 1,
        }
    }

    fn invite_response(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        c: u32,
        status: u16,
        k: Option<u32>,
        msg: Option<&Message<'_>>,
    ) {
        let call = &mut self.calls[c as usize];
        let Some(t0) = call.t0.get() else { return };
        if let Some(m) = msg.filter(|m| {
            matches!(status, 401 | 407)
                && ctx.plan.scenario.caller.digest
                && m.cseq().is_ok_and(|s| s.number == 1)
        }) {
            challenged(ctx, now, c, call, m);
            return;
        }
        call.heard = true;
        match status {
            100 => {
                if call.got_100.set_once(now) {
                    ctx.metrics
                        .record(Metric::Invite100, now, call.got_100.since(t0));
                }
            }
            101..=199 => {
                if call.got_180.set_once(now) {
                    ctx.metrics
                        .record(Metric::Invite180, now, call.got_180.since(t0));
                }
                if let Some(k) = k {
                    call.ringing |= bit(k);
                }
            }
            200..=299 => {
                let Some(k) = k.filter(|&k| k < ctx.plan.width()) else {
                    call.strays += 1;
                    return;
                };
                if call.answered & bit(k) != 0 {
                    // A retransmitted 2xx: our ACK was lost (or is late); send it again.
                    call.duplicates += 1;
                    ctx.count_duplicate(now);
                    // After the call ended its dialogs are gone: the ACK is rebuilt from the
                    // retransmitted 2xx itself (a device whose ACK was lost retransmits until
                    // one arrives, even after the BYE).
                    let (hop, ack) = match call.dialogs.iter().find(|dl| dl.k == k) {
                        Some(dl) => (dl.next_hop, dl.ack.clone()),
                        None => {
                            let dl = build_dialog(&ctx.plan, c, k, msg, call.invite_cseq());
                            (dl.next_hop, dl.ack)
                        }
                    };
                    let from = caller_addr(&ctx.plan, c);
                    ctx.send(now, Leg::CallerOut, from, hop, &ack, |p, r| {
                        in_dialog_hint(p, c, k, Meaning::Ack, ack.len(), r)
                    });
                    return;
                }
                call.answered |= bit(k);
                if call.got_2xx.set_once(now) {
                    ctx.metrics
                        .record(Metric::Invite200, now, call.got_2xx.since(t0));
                }
                if call.final_status == 0 {
                    call.final_status = status;
                }
                let dialog = build_dialog(&ctx.plan, c, k, msg, call.invite_cseq());
                let from = caller_addr(&ctx.plan, c);
                let ack = dialog.ack.clone();
                ctx.send(now, Leg::CallerOut, from, dialog.next_hop, &ack, |p, r| {
                    in_dialog_hint(p, c, k, Meaning::Ack, ack.len(), r)
                });
                let first = call.dialogs.is_empty();
                call.dialogs.push(dialog);
                if first && !call.cancel_sent.is_set() {
                    let hold = ctx.plan.hold_us(c);
                    call.hangup_armed = true;
                    ctx.timers
                        .insert(now + Duration::from_micros(hold), Timer::Hangup(c));
                } else {
                    // A second answer of a double answer, or the 2xx that beat our CANCEL: a UAC
                    // that wants one dialog ends the others at once (RFC 3261 §13.2.2.4).
                    Self::send_bye(ctx, now, c, call, k);
                }
            }
            _ => {
                let duplicate = call.final_status == status && call.non2xx_finals > 0;
                call.non2xx_finals += 1;
                if call.final_status == 0 {
                    call.final_status = status;
                    if status == 503 {
                        // A refusal (shedding, a limit): per second of the answer, not the start.
                        ctx.metrics.count(now, |k| k.refused_503 += 1);
                    }
                } else if !duplicate {
                    call.conflicting_finals += 1;
                }
                if duplicate {
                    call.duplicates += 1;
                    ctx.count_duplicate(now);
                }
                if status == 487 {
                    if let Some(sent) = call.cancel_sent.get() {
                        if call.got_487.set_once(now) {
                            ctx.metrics
                                .record(Metric::Cancel487, now, call.got_487.since(sent));
                        }
                    }
                }
                // §17.1.1.3: ACK every non-2xx final (the proxy's server transaction waits for it).
                // In reflector mode there is no response to copy the To from; the INVITE's own
                // To gives an ACK of the same shape.
                let mut buf = ctx.take_scratch();
                if let Some(sent) = call.invite.as_deref().and_then(|i| sip::parse(i).ok()) {
                    build::ack_for(&sent, msg.unwrap_or(&sent), &mut buf);
                }
                if !buf.is_empty() {
                    let from = caller_addr(&ctx.plan, c);
                    ctx.send(now, Leg::CallerOut, from, ctx.plan.target, &buf, |_, _| {
                        Origin {
                            id: c,
                            device: 0,
                            status: 0,
                        }
                    });
                }
                ctx.give_back(buf);
            }
        }
        self.check_end(ctx, now, c);
    }

    fn cancel_response(&mut self, ctx: &mut Ctx, now: Instant, c: u32, status: u16) {
        let call = &mut self.calls[c as usize];
        if status >= 200 {
            if call.cancel_answered {
                call.duplicates += 1;
                ctx.count_duplicate(now);
            }
            call.cancel_answered = true;
        }
        self.check_end(ctx, now, c);
    }

    fn bye_response(&mut self, ctx: &mut Ctx, now: Instant, c: u32, status: u16, k: Option<u32>) {
        let call = &mut self.calls[c as usize];
        match k {
            Some(k) if status >= 200 && call.bye_sent & bit(k) != 0 => {
                if call.bye_answered & bit(k) != 0 {
                    call.duplicates += 1;
                    ctx.count_duplicate(now);
                }
                call.bye_answered |= bit(k);
            }
            Some(_) if status < 200 => {}
            _ => call.strays += 1,
        }
        self.check_end(ctx, now, c);
    }

    fn send_bye(ctx: &mut Ctx, now: Instant, c: u32, call: &mut CallerCall, k: u32) {
        if call.bye_sent & bit(k) != 0 {
            return;
        }
        let cseq = call.invite_cseq() + 1;
        let Some(dl) = call.dialogs.iter_mut().find(|dl| dl.k == k) else {
            return;
        };
        let mut buf = ctx.take_scratch();
        let routes: Vec<&[u8]> = dl.routes.iter().map(|r| &r[..]).collect();
        write_in_dialog(
            &ctx.plan, c, k, b"BYE", cseq, &dl.target, &routes, &dl.to, &mut buf,
        );
        call.bye_sent |= bit(k);
        let from = caller_addr(&ctx.plan, c);
        let n = buf.len();
        ctx.send(now, Leg::CallerOut, from, dl.next_hop, &buf, |p, r| {
            in_dialog_hint(p, c, k, Meaning::Bye, n, r)
        });
        dl.bye = Some(buf.as_slice().into());
        dl.bye_interval = ctx.t1();
        ctx.give_back(buf);
        ctx.arm_retransmission(now + dl.bye_interval, Timer::ByeRetransmit(c, k as u8));
    }

    /// A caller timer fired.
    pub fn fire(&mut self, ctx: &mut Ctx, now: Instant, timer: Timer) {
        let c = match timer {
            Timer::InviteRetransmit(c)
            | Timer::Cancel(c)
            | Timer::CancelRetransmit(c)
            | Timer::Hangup(c)
            | Timer::ByeRetransmit(c, _) => c,
            _ => return,
        };
        let Some(call) = self.calls.get_mut(c as usize) else {
            return;
        };
        if call.end != End::Open {
            return;
        }
        let from = caller_addr(&ctx.plan, c);
        match timer {
            Timer::InviteRetransmit(_) if !call.heard => {
                let Some(invite) = call.invite.clone() else {
                    return;
                };
                call.retransmitted += 1;
                ctx.count_retransmission(now);
                ctx.send(
                    now,
                    Leg::CallerOut,
                    from,
                    ctx.plan.target,
                    &invite,
                    |p, r| invite_hint(p, c, r),
                );
                call.invite_interval *= 2;
                ctx.arm_retransmission(now + call.invite_interval, Timer::InviteRetransmit(c));
            }
            Timer::Cancel(_) if call.final_status == 0 && !call.cancel_sent.is_set() => {
                let Some(invite) = call.invite.as_deref() else {
                    return;
                };
                let Ok(sent) = sip::parse(invite) else { return };
                let mut buf = ctx.take_scratch();
                build::cancel_for(&sent, None, &mut buf);
                call.cancel_sent = Stamp::at(now);
                call.cancel_interval = ctx.t1();
                ctx.send(now, Leg::CallerOut, from, ctx.plan.target, &buf, |_, _| {
                    Origin {
                        id: c,
                        device: 0,
                        status: 0,
                    }
                });
                call.cancel = Some(buf.as_slice().into());
                ctx.give_back(buf);
                ctx.arm_retransmission(now + call.cancel_interval, Timer::CancelRetransmit(c));
            }
            Timer::CancelRetransmit(_) if !call.cancel_answered => {
                let Some(cancel) = call.cancel.clone() else {
                    return;
                };
                call.retransmitted += 1;
                ctx.count_retransmission(now);
                ctx.send(
                    now,
                    Leg::CallerOut,
                    from,
                    ctx.plan.target,
                    &cancel,
                    |_, _| Origin {
                        id: c,
                        device: 0,
                        status: 0,
                    },
                );
                call.cancel_interval = (call.cancel_interval * 2).min(t2());
                ctx.arm_retransmission(now + call.cancel_interval, Timer::CancelRetransmit(c));
            }
            Timer::Hangup(_) => {
                call.hangup_armed = false;
                let ks: Vec<u32> = call.dialogs.iter().map(|dl| dl.k).collect();
                for k in ks {
                    Self::send_bye(ctx, now, c, call, k);
                }
            }
            Timer::ByeRetransmit(_, k) if call.bye_answered & bit(u32::from(k)) == 0 => {
                let Some(dl) = call.dialogs.iter_mut().find(|dl| dl.k == u32::from(k)) else {
                    return;
                };
                let Some(bye) = dl.bye.clone() else { return };
                call.retransmitted += 1;
                ctx.count_retransmission(now);
                let k = u32::from(k);
                ctx.send(now, Leg::CallerOut, from, dl.next_hop, &bye, |p, r| {
                    in_dialog_hint(p, c, k, Meaning::Bye, bye.len(), r)
                });
                dl.bye_interval = (dl.bye_interval * 2).min(t2());
                ctx.arm_retransmission(now + dl.bye_interval, Timer::ByeRetransmit(c, k as u8));
            }
            _ => {}
        }
    }

    fn check_end(&mut self, ctx: &mut Ctx, now: Instant, c: u32) {
        let call = &mut self.calls[c as usize];
        if call.end != End::Open || call.final_status == 0 || call.hangup_armed {
            return;
        }
        let all_byes = call
            .dialogs
            .iter()
            .all(|dl| call.bye_answered & bit(dl.k) != 0);
        let cancel_done = !call.cancel_sent.is_set() || call.cancel_answered;
        if !(all_byes && cancel_done) {
            return;
        }
        let answered = call.final_status < 300;
        // Unanswered is wrong when a device was scripted to answer, or when the scenario names
        // another final status.
        let wrong = !answered
            && (expects_answer(&ctx.plan, c)
                || ctx
                    .plan
                    .scenario
                    .expect
                    .final_status
                    .is_some_and(|s| s != call.final_status));
        call.end = if wrong {
            End::WrongFinal
        } else {
            End::Completed
        };
        Self::release(call);
        self.open -= 1;
        let at = call.t0.get().unwrap_or(now);
        if wrong {
            ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.count(at, |k| k.failed += 1);
        } else {
            ctx.shared.completed.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.count(at, |k| k.completed += 1);
        }
    }

    /// Frees what only an open call needs.
    fn release(call: &mut CallerCall) {
        call.invite = None;
        call.cancel = None;
        call.dialogs.clear();
        call.dialogs.shrink_to_fit();
    }

    /// Housekeeping: the end of the load phase, and the drain deadline.
    pub fn tick(&mut self, ctx: &mut Ctx, now: Instant) {
        if self.drained || ctx.plan.scenario.load.kind != LoadKind::Calls {
            return;
        }
        let all_started = self.next as usize >= self.calls.len();
        let past_deadline = ctx.drain_deadline().is_some_and(|d| now >= d);
        if all_started && (self.open == 0 || past_deadline) {
            for call in self
                .calls
                .iter_mut()
                .filter(|c| c.end == End::Open && c.t0.is_set())
            {
                call.end = End::TimedOut;
                Self::release(call);
                ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
                let at = call.t0.get().unwrap_or(now);
                ctx.metrics.count(at, |k| k.failed += 1);
            }
            self.open = 0;
            self.drained = true;
            ctx.shared.caller_done.store(true, Ordering::Release);
        }
    }
}

fn t2() -> Duration {
    Duration::from_secs(4)
}

fn caller_addr(plan: &Plan, c: u32) -> SocketAddr {
    plan.callers[plan.caller_of(c) as usize]
}

/// Where an in-dialog request goes: the first route's host:port, else the remote target's.
fn next_hop(route: Option<&[u8]>, target: &[u8]) -> Option<SocketAddr> {
    let uri = match route {
        Some(r) => {
            let inner = r.strip_prefix(b"<").unwrap_or(r);
            let end = inner.iter().position(|&b| b == b'>').unwrap_or(inner.len());
            &inner[..end]
        }
        None => target,
    };
    let parsed = sip::Uri::parse(uri).ok()?;
    let s = parsed.as_sip()?;
    Some(SocketAddr::new(s.host.ip()?, s.port.unwrap_or(5060)))
}

/// The dialog of device `k`'s 2xx: from the message, or (reflector mode) from what the device
/// side is known to send (its own address as target, no route set).
fn build_dialog(
    plan: &Plan,
    c: u32,
    k: u32,
    msg: Option<&Message<'_>>,
    invite_cseq: u32,
) -> CallerDialog {
    type Parts = (Box<[u8]>, Vec<Box<[u8]>>, Box<[u8]>);
    let (target, routes, to): Parts = match msg {
        Some(m) => {
            let target = m
                .contacts()
                .next()
                .and_then(Result::ok)
                .and_then(|v| match v {
                    ContactValue::Addr(a) => Some(a.addr.uri.raw()),
                    ContactValue::Star => None,
                })
                .unwrap_or(b"");
            // §12.1.2: the route set is the Record-Route list in reverse order.
            let mut routes: Vec<Box<[u8]>> =
                m.values(HeaderName::RecordRoute).map(Box::from).collect();
            routes.reverse();
            let to = m.first_value(HeaderName::To).unwrap_or(b"");
            (target.into(), routes, to.into())
        }
        None => {
            let e = plan.extension_of(c);
            let device = plan.devices[plan.device_index(e, k) as usize];
            let mut target = b"sip:".to_vec();
            build::push_u32(&mut target, plan.number(e));
            target.push(b'@');
            wire::push_addr(&mut target, device);
            let mut to = b"<sip:".to_vec();
            build::push_u32(&mut to, plan.number(e));
            to.push(b'@');
            to.extend_from_slice(plan.domain.as_bytes());
            to.extend_from_slice(b">;tag=");
            wire::push_device_tag(&mut to, k);
            (target.into(), Vec::new(), to.into())
        }
    };
    let hop = if plan.reflect {
        plan.target
    } else {
        next_hop(routes.first().map(|r| &r[..]), &target).unwrap_or(plan.target)
    };
    let mut ack = Vec::with_capacity(512);
    let route_refs: Vec<&[u8]> = routes.iter().map(|r| &r[..]).collect();
    write_in_dialog(
        plan,
        c,
        k,
        b"ACK",
        invite_cseq,
        &target,
        &route_refs,
        &to,
        &mut ack,
    );
    CallerDialog {
        k,
        next_hop: hop,
        target,
        routes,
        to,
        ack: ack.into_boxed_slice(),
        bye: None,
        bye_interval: Duration::ZERO,
    }
}

#[allow(clippy::too_many_arguments)]
fn write_in_dialog(
    plan: &Plan,
    c: u32,
    k: u32,
    method: &[u8],
    cseq: u32,
    target: &[u8],
    routes: &[&[u8]],
    to: &[u8],
    out: &mut Vec<u8>,
) {
    let caller = caller_addr(plan, c);
    let mut via = Vec::with_capacity(96);
    wire::push_via_proto(&mut via, plan);
    wire::push_addr(&mut via, caller);
    via.extend_from_slice(b";branch=");
    wire::push_branch(
        &mut via,
        plan.run_id,
        if method == b"ACK" { b"a" } else { b"b" },
        c,
        Some(k),
    );
    via.extend_from_slice(b";rport");
    let mut from = b"<sip:caller@".to_vec();
    from.extend_from_slice(plan.domain.as_bytes());
    from.extend_from_slice(b">;tag=f");
    sipfork::sip::build::push_u32(&mut from, c);
    let mut call_id = Vec::with_capacity(40);
    wire::push_call_id(&mut call_id, CallId::Call(c), plan.run_id);
    build::in_dialog(
        &InDialog {
            method,
            target,
            routes,
            via: &via,
            from: &from,
            to,
            call_id: &call_id,
            cseq,
            extra: b"",
        },
        out,
    );
}

/// Reflector hint of the INVITE: 100 to the caller, the INVITE to every device of the extension.
fn invite_hint(plan: &Plan, c: u32, r: &mut Vec<Reflect>) -> Origin {
    let s = &plan.sizes;
    r.push(Reflect {
        to: caller_addr(plan, c),
        size: s.trying,
        meaning: Meaning::Trying,
    });
    let e = plan.extension_of(c);
    for k in 0..plan.width() {
        r.push(Reflect {
            to: plan.devices[plan.device_index(e, k) as usize],
            size: s.invite,
            meaning: Meaning::Invite,
        });
    }
    Origin {
        id: c,
        device: 0,
        status: 0,
    }
}

/// Reflector hint of an in-dialog request to device `k`: forwarded to it.
fn in_dialog_hint(
    plan: &Plan,
    c: u32,
    k: u32,
    meaning: Meaning,
    len: usize,
    r: &mut Vec<Reflect>,
) -> Origin {
    let e = plan.extension_of(c);
    r.push(Reflect {
        to: plan.devices[plan.device_index(e, k) as usize],
        size: match meaning {
            Meaning::Ack => plan.sizes.ack_fwd,
            Meaning::Bye => plan.sizes.bye,
            _ => len as u32,
        },
        meaning,
    });
    Origin {
        id: c,
        device: k,
        status: 0,
    }
}
