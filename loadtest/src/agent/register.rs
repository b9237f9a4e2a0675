//! Registration as the devices do it (RFC 3261 §10.2): the phase before the calls, and the
//! REGISTER storm load.
//!
//! Phase: optionally one `Contact: *` removal per extension (bindings of earlier runs), then one
//! REGISTER per device binding its own socket, both paced at `registration.rate`, each
//! retransmitted (T1 doubling to T2) until a final response. A 401 is answered with digest
//! credentials (RFC 8760 / RFC 7616 `qop=auth`). When every device is registered (or the phase
//! timed out) the load phase's start is published in `Shared`, 200 ms ahead.
//!
//! Refresh (`load.kind = "calls"`): once the phase is over, every bound device re-registers at
//! half its `registration.expires`, paced like the phase, for as long as the run lasts (a soak
//! outlives the bindings of its first REGISTERs); a refresh refused, or still unanswered when the
//! next one is due, counts in `refresh_failed`.
//!
//! Storm (`load.kind = "register"`): REGISTER `j` of the open loop goes to device `j % N` at its
//! intended time; with digest it reuses the device's nonce with the next nonce-count, as phones
//! do, and only a 401 (stale or refused nonce) costs a new challenge round trip. Latency is
//! measured from the intended send time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hdrhistogram::Histogram;
use sipfork::core::registrar::digest::{compute_response, Algorithm, Ha1, ResponseInput};
use sipfork::sip::Message;
use sipfork::time::{Duration, Instant};

use super::{Ctx, Stamp, Timer};
use crate::metrics::Metric;
use crate::plan::Plan;
use crate::scenario::{Leg, LoadKind};
use crate::wire::{self, Credentials, Dialog, Meaning, Origin, Reflect};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Clearing,
    Registering,
    Storm,
    /// Calls are the load: bound devices re-register at half their expiry.
    Refreshing,
    Done,
}

#[derive(Debug)]
struct Auth {
    realm: Box<[u8]>,
    nonce: Box<[u8]>,
    opaque: Option<Box<[u8]>>,
    algorithm: Algorithm,
    ha1: Ha1,
    nc: u32,
}

#[derive(Debug, Default)]
struct Reg {
    cseq: u32,
    first_sent: Stamp,
    intended: Stamp,
    msg: Option<Box<[u8]>>,
    interval: Duration,
    open: bool,
    challenges: u8,
    auth: Option<Box<Auth>>,
    /// The registration phase bound this device (a 2xx to its REGISTER).
    bound: bool,
}

/// Registration state of every device (ids `0..N`) and every extension's clearing REGISTER
/// (ids `N..N+E`).
#[derive(Debug)]
pub struct RegisterSide {
    phase: Phase,
    phase_start: Instant,
    next: u32,
    total: u32,
    pending: u32,
    regs: Vec<Reg>,
    storm_next: u32,
    storm_open: u32,
    devices: u32,
    /// REGISTER → final of the registration phase, µs (first send to final, 401 round trip
    /// included).
    pub phase_latency: Histogram<u64>,
    /// Devices whose registration-phase REGISTER was refused (non-2xx final).
    pub refused: u64,
    /// Devices whose registration-phase REGISTER had no final by the phase timeout.
    pub timed_out: u64,
    /// `Contact: *` clearing REGISTERs refused or unanswered (not device registrations).
    pub clear_failed: u64,
    /// Devices registered in the phase.
    pub registered: u64,
    /// When the phase ended.
    pub phase_secs: f64,
    /// Storm REGISTERs that got a non-2xx, or none before the next one of the same device.
    pub storm_failed: u64,
    /// Refreshes sent so far, and when the refresh rounds count from.
    refresh_next: u64,
    refresh_base: Instant,
    /// Refreshing REGISTERs answered 2xx.
    pub refreshed: u64,
    /// Refreshing REGISTERs refused, or unanswered when the next one of the device was due.
    pub refresh_failed: u64,
}

fn t2() -> Duration {
    Duration::from_secs(4)
}

/// How far ahead of its publication the load phase starts (both agents see it in time).
const LOAD_LEAD: Duration = Duration::from_millis(200);
/// 401 round trips per REGISTER before it counts as refused.
const MAX_CHALLENGES: u8 = 3;

impl RegisterSide {
    /// Nothing registered yet.
    pub fn new(plan: &Plan) -> RegisterSide {
        let devices = plan.devices.len() as u32;
        let extensions = plan.scenario.topology.extensions;
        RegisterSide {
            phase: Phase::Idle,
            phase_start: Instant::ZERO,
            next: 0,
            total: 0,
            pending: 0,
            regs: (0..devices + extensions).map(|_| Reg::default()).collect(),
            storm_next: 0,
            storm_open: 0,
            devices,
            phase_latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("invariant: static histogram bounds"),
            refused: 0,
            timed_out: 0,
            clear_failed: 0,
            registered: 0,
            phase_secs: 0.0,
            storm_failed: 0,
            refresh_next: 0,
            refresh_base: Instant::ZERO,
            refreshed: 0,
            refresh_failed: 0,
        }
    }

    /// Starts the registration phase (or skips it).
    pub fn begin(&mut self, ctx: &mut Ctx, now: Instant) {
        self.phase_start = now;
        let r = &ctx.plan.scenario.registration;
        if !r.enabled {
            self.finish_phase(ctx, now);
        } else if r.clear && !ctx.plan.reflect {
            self.enter(Phase::Clearing, ctx.plan.scenario.topology.extensions, now);
        } else {
            self.enter(Phase::Registering, self.devices, now);
        }
    }

    fn enter(&mut self, phase: Phase, total: u32, now: Instant) {
        self.phase = phase;
        self.total = total;
        self.next = 0;
        self.pending = 0;
        self.phase_start = now;
    }

    fn gap(ctx: &Ctx) -> Duration {
        Duration::from_secs_f64(1.0 / ctx.plan.scenario.registration.rate)
    }

    /// When the next paced REGISTER is due.
    pub fn next_pace(&self, ctx: &Ctx) -> Option<Instant> {
        match self.phase {
            Phase::Clearing | Phase::Registering if self.next < self.total => {
                Some(self.phase_start + Self::gap(ctx) * self.next)
            }
            Phase::Storm if self.storm_next < ctx.plan.count() => ctx.intended(self.storm_next),
            Phase::Refreshing if self.devices > 0 => {
                let devices = u64::from(self.devices);
                let (round, idx) = (self.refresh_next / devices, self.refresh_next % devices);
                let half =
                    Duration::from_secs(u64::from(ctx.plan.scenario.registration.expires)) / 2;
                Some(self.refresh_base + half * (round as u32 + 1) + Self::gap(ctx) * idx as u32)
            }
            _ => None,
        }
    }

    /// Sends what is due.
    pub fn pace(&mut self, ctx: &mut Ctx, now: Instant) {
        while let Some(at) = self.next_pace(ctx).filter(|&t| t <= now) {
            match self.phase {
                Phase::Clearing => {
                    let id = self.devices + self.next;
                    self.next += 1;
                    self.start(ctx, now, id, None);
                }
                Phase::Registering => {
                    let id = self.next;
                    self.next += 1;
                    self.start(ctx, now, id, None);
                }
                Phase::Storm => {
                    let j = self.storm_next;
                    self.storm_next += 1;
                    let id = j % self.devices;
                    if self.regs[id as usize].open {
                        // The previous REGISTER of this device is still unanswered: count it.
                        self.regs[id as usize].open = false;
                        self.storm_open -= 1;
                        self.storm_failed += 1;
                        ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    ctx.shared.started.fetch_add(1, Ordering::Relaxed);
                    ctx.metrics.count(at, |c| c.started += 1);
                    ctx.metrics.record(
                        Metric::SendLag,
                        now,
                        now.saturating_since(at).as_micros() as u64,
                    );
                    self.start(ctx, now, id, Some(at));
                }
                Phase::Refreshing => {
                    let id = (self.refresh_next % u64::from(self.devices)) as u32;
                    self.refresh_next += 1;
                    let reg = &mut self.regs[id as usize];
                    if !reg.bound {
                        continue;
                    }
                    if reg.open {
                        // The previous refresh of this device is still unanswered.
                        self.refresh_failed += 1;
                        self.pending = self.pending.saturating_sub(1);
                    }
                    self.start(ctx, now, id, None);
                }
                Phase::Idle | Phase::Done => return,
            }
        }
    }

    fn start(&mut self, ctx: &mut Ctx, now: Instant, id: u32, intended: Option<Instant>) {
        let reg = &mut self.regs[id as usize];
        reg.open = true;
        reg.challenges = 0;
        reg.first_sent = Stamp::at(now);
        reg.intended = intended.map_or(Stamp::NONE, Stamp::at);
        match self.phase {
            Phase::Storm => self.storm_open += 1,
            _ => self.pending += 1,
        }
        self.transmit(ctx, now, id);
    }

    /// Builds (next CSeq, next nonce-count) and sends REGISTER `id`.
    fn transmit(&mut self, ctx: &mut Ctx, now: Instant, id: u32) {
        let plan = Arc::clone(&ctx.plan);
        let plan = &*plan;
        let clear = id >= self.devices;
        let d = if clear {
            (id - self.devices) * plan.width()
        } else {
            id
        };
        let reg = &mut self.regs[id as usize];
        reg.cseq += 1;
        let mut buf = ctx.take_scratch();
        match reg.auth.as_deref_mut() {
            Some(a) => {
                a.nc += 1;
                let mut nc = Vec::with_capacity(8);
                wire::push_nc(&mut nc, a.nc);
                let mut cnonce = b"c".to_vec();
                sipfork::sip::build::push_u32(&mut cnonce, id);
                let uri = wire::register_uri(plan);
                let response = compute_response(
                    a.algorithm,
                    &a.ha1,
                    &ResponseInput {
                        method: b"REGISTER",
                        uri: &uri,
                        nonce: &a.nonce,
                        nc: &nc,
                        cnonce: &cnonce,
                        qop: b"auth",
                    },
                );
                let creds = Credentials {
                    realm: &a.realm,
                    nonce: &a.nonce,
                    opaque: a.opaque.as_deref(),
                    algorithm: a.algorithm.name(),
                    nc: a.nc,
                    response: response.as_bytes(),
                    cnonce: &cnonce,
                };
                wire::register(plan, d, reg.cseq, clear, Some(&creds), &mut buf);
            }
            None => wire::register(plan, d, reg.cseq, clear, None, &mut buf),
        }
        reg.interval = ctx.t1();
        let me = plan.devices[d as usize];
        let size = plan.sizes.register_ok;
        let to = plan.registrar(d);
        ctx.send(now, Leg::DeviceOut, me, to, &buf, |_, r| {
            r.push(Reflect {
                to: me,
                size,
                meaning: Meaning::RegisterOk,
            });
            Origin {
                id,
                device: 0,
                status: 0,
            }
        });
        reg.msg = Some(buf.as_slice().into());
        ctx.give_back(buf);
        ctx.arm_retransmission(now + reg.interval, Timer::RegisterRetransmit(id));
    }

    /// Timer E of REGISTER `id`.
    pub fn retransmit(&mut self, ctx: &mut Ctx, now: Instant, id: u32) {
        let Some(reg) = self.regs.get_mut(id as usize) else {
            return;
        };
        if !reg.open {
            return;
        }
        let Some(msg) = reg.msg.clone() else { return };
        reg.interval = (reg.interval * 2).min(t2());
        let next = now + reg.interval;
        let d = if id >= self.devices {
            (id - self.devices) * ctx.plan.width()
        } else {
            id
        };
        let me = ctx.plan.devices[d as usize];
        ctx.count_retransmission(now);
        let size = ctx.plan.sizes.register_ok;
        let to = ctx.plan.registrar(d);
        ctx.send(now, Leg::DeviceOut, me, to, &msg, |_, r| {
            r.push(Reflect {
                to: me,
                size,
                meaning: Meaning::RegisterOk,
            });
            Origin {
                id,
                device: 0,
                status: 0,
            }
        });
        ctx.arm_retransmission(next, Timer::RegisterRetransmit(id));
    }

    /// A response to a REGISTER arrived on device socket `d`.
    pub fn response(&mut self, ctx: &mut Ctx, now: Instant, _d: u32, msg: &Message<'_>) {
        let id = match msg
            .call_id()
            .ok()
            .and_then(|v| wire::parse_call_id(v, ctx.plan.run_id))
        {
            Some(Dialog::Register(d)) if d < self.devices => d,
            Some(Dialog::Clear(e)) if e < ctx.plan.scenario.topology.extensions => self.devices + e,
            _ => return,
        };
        let cseq = msg.cseq().map(|c| c.number).unwrap_or(0);
        let status = msg.status().unwrap_or(0);
        if cseq != self.regs[id as usize].cseq || !self.regs[id as usize].open {
            ctx.count_duplicate(now);
            return;
        }
        if (status == 401 || status == 407) && ctx.plan.scenario.registration.digest {
            let challenge = if status == 401 {
                msg.www_authenticate()
            } else {
                msg.proxy_authenticate()
            };
            if let Some(Ok(ch)) = challenge {
                let reg = &mut self.regs[id as usize];
                if reg.challenges < MAX_CHALLENGES {
                    reg.challenges += 1;
                    let algorithm = ch
                        .algorithm
                        .and_then(Algorithm::from_name)
                        .unwrap_or(Algorithm::Md5);
                    let e = if id >= self.devices {
                        id - self.devices
                    } else {
                        id / ctx.plan.width()
                    };
                    let user = ctx.plan.number(e).to_string();
                    let ha1 = Ha1::from_password(
                        algorithm,
                        user.as_bytes(),
                        ch.realm,
                        ctx.plan.password(e).as_bytes(),
                    );
                    reg.auth = Some(Box::new(Auth {
                        realm: ch.realm.into(),
                        nonce: ch.nonce.into(),
                        opaque: ch.opaque.map(Box::from),
                        algorithm,
                        ha1,
                        nc: 0,
                    }));
                    self.transmit(ctx, now, id);
                    return;
                }
            }
        }
        if status >= 200 {
            self.final_response(ctx, now, id, status);
        }
    }

    /// Reflector mode: the reflector's answer to REGISTER `origin.id`.
    pub fn reflected(&mut self, ctx: &mut Ctx, now: Instant, origin: Origin) {
        if self.regs.get(origin.id as usize).is_some_and(|r| r.open) {
            self.final_response(ctx, now, origin.id, 200);
        }
    }

    fn final_response(&mut self, ctx: &mut Ctx, now: Instant, id: u32, status: u16) {
        let reg = &mut self.regs[id as usize];
        reg.open = false;
        reg.msg = None;
        let ok = (200..300).contains(&status);
        match self.phase {
            Phase::Storm => {
                self.storm_open -= 1;
                let intended = reg.intended.get().unwrap_or(now);
                if ok {
                    ctx.metrics.record(
                        Metric::Register,
                        now,
                        now.saturating_since(intended).as_micros() as u64,
                    );
                    ctx.shared.completed.fetch_add(1, Ordering::Relaxed);
                    ctx.metrics.count(intended, |c| c.completed += 1);
                } else {
                    self.storm_failed += 1;
                    ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
                    ctx.metrics.count(intended, |c| c.failed += 1);
                }
                self.check_storm_end(ctx, now);
            }
            Phase::Clearing | Phase::Registering => {
                self.pending = self.pending.saturating_sub(1);
                let us = now.saturating_since(reg.first_sent.get().unwrap_or(now));
                let _ = self.phase_latency.record((us.as_micros() as u64).max(1));
                if !ok && self.phase == Phase::Clearing {
                    self.clear_failed += 1;
                } else if !ok {
                    self.refused += 1;
                } else if self.phase == Phase::Registering {
                    reg.bound = true;
                    self.registered += 1;
                    ctx.shared.registered.fetch_add(1, Ordering::Relaxed);
                }
                self.check_phase_end(ctx, now, false);
            }
            Phase::Refreshing => {
                self.pending = self.pending.saturating_sub(1);
                if ok {
                    self.refreshed += 1;
                } else {
                    self.refresh_failed += 1;
                }
            }
            Phase::Idle | Phase::Done => {}
        }
    }

    fn check_phase_end(&mut self, ctx: &mut Ctx, now: Instant, timed_out: bool) {
        if !matches!(self.phase, Phase::Clearing | Phase::Registering) {
            return;
        }
        if !timed_out && (self.next < self.total || self.pending > 0) {
            return;
        }
        if timed_out {
            let range = match self.phase {
                Phase::Clearing => self.devices..self.devices + self.total,
                _ => 0..self.total,
            };
            for id in range {
                let reg = &mut self.regs[id as usize];
                if reg.open || id - range_start(self.phase, self.devices) >= self.next {
                    reg.open = false;
                    if self.phase == Phase::Clearing {
                        self.clear_failed += 1;
                    } else {
                        self.timed_out += 1;
                    }
                }
            }
            self.pending = 0;
        }
        if self.phase == Phase::Clearing {
            self.enter(Phase::Registering, self.devices, now);
        } else {
            self.finish_phase(ctx, now);
        }
    }

    /// Registration over: publish the load phase's start.
    fn finish_phase(&mut self, ctx: &mut Ctx, now: Instant) {
        self.phase_secs = now.saturating_since(self.phase_start).as_secs_f64();
        let failed = self.refused + self.timed_out;
        ctx.shared
            .registration_failed
            .store(failed, Ordering::Relaxed);
        ctx.shared.registration_done.store(true, Ordering::Release);
        let start = (now + LOAD_LEAD).as_micros() + ctx.offset_us;
        ctx.shared.load_start_us.store(start, Ordering::Release);
        self.refresh_base = now;
        self.phase = match ctx.plan.scenario.load.kind {
            LoadKind::Register => Phase::Storm,
            LoadKind::Calls if ctx.plan.scenario.registration.enabled && !ctx.plan.reflect => {
                Phase::Refreshing
            }
            LoadKind::Calls => Phase::Done,
        };
    }

    fn check_storm_end(&mut self, ctx: &mut Ctx, now: Instant) {
        if self.phase != Phase::Storm {
            return;
        }
        let all_sent = self.storm_next >= ctx.plan.count();
        let past = ctx.drain_deadline().is_some_and(|d| now >= d);
        if all_sent && (self.storm_open == 0 || past) {
            for reg in self.regs.iter_mut().filter(|r| r.open) {
                reg.open = false;
                self.storm_failed += 1;
                ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
            }
            self.storm_open = 0;
            self.phase = Phase::Done;
            ctx.shared.caller_done.store(true, Ordering::Release);
        }
    }

    /// Whether device `d` (global index) is registered: the phase bound it, or there was no
    /// phase (`registration.enabled = false`: the bindings are the operator's business).
    pub fn is_registered(&self, plan: &Plan, d: u32) -> bool {
        !plan.scenario.registration.enabled || self.regs.get(d as usize).is_some_and(|r| r.bound)
    }

    /// Housekeeping: phase timeout, end of the storm.
    pub fn tick(&mut self, ctx: &mut Ctx, now: Instant) {
        let timeout = Duration::from_secs_f64(ctx.plan.scenario.registration.timeout_s);
        if matches!(self.phase, Phase::Clearing | Phase::Registering)
            && now >= self.phase_start + timeout
        {
            self.check_phase_end(ctx, now, true);
        }
        self.check_storm_end(ctx, now);
    }
}

fn range_start(phase: Phase, devices: u32) -> u32 {
    match phase {
        Phase::Clearing => devices,
        _ => 0,
    }
}
