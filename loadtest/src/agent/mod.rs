//! The harness's user agents as one sans-IO state machine: `(now, datagram) → datagrams + timers`.
//!
//! An [`Agent`] plays the caller side, the device side, or both, for every call of a run. It
//! implements the engine's [`Handler`], so on real sockets `sipfork::engine::start` drives it with
//! the same batched loop as the proxy (one clock read per receive batch, one send batch per
//! turn), and in tests `crate::sim` drives it against the real proxy `Core` on virtual time.
//!
//! Phases: registration (device side: clear, then register every device, at a paced rate) →
//! load (open loop from `Plan::starts`, at the instant published in [`Shared`]) → drain (until
//! every call ended or the drain deadline) → done. The caller side and the device side may live
//! in two agents on two threads; they share only [`Shared`] (atomics) and the deterministic plan.
//!
//! Invariant: nothing here reads a clock or touches a socket; time comes in as `now`.

pub mod caller;
pub mod device;
pub mod register;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sipfork::core::io::{Datagram, Inbound, Outbox};
use sipfork::core::timer::TimerWheel;
use sipfork::engine::shard::Handler;
use sipfork::time::{Duration, Instant};

use crate::metrics::{Counts, Metric, Metrics};
use crate::plan::{Endpoint, Plan, Rng};
use crate::scenario::{Leg, LoadKind};
use crate::wire::{self, Origin, Reflect};

/// A point in time or none (`u64::MAX`), 8 bytes, for per-call records kept by the 100,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp(u64);

impl Default for Stamp {
    fn default() -> Self {
        Stamp::NONE
    }
}

impl Stamp {
    /// No time.
    pub const NONE: Stamp = Stamp(u64::MAX);

    /// The stamp of `t`.
    pub fn at(t: Instant) -> Stamp {
        Stamp(t.as_micros())
    }

    /// The time, if set.
    pub fn get(self) -> Option<Instant> {
        (self != Stamp::NONE).then(|| Instant::from_micros(self.0))
    }

    /// Whether set.
    pub fn is_set(self) -> bool {
        self != Stamp::NONE
    }

    /// Sets it to `t` unless already set; returns whether it was unset.
    pub fn set_once(&mut self, t: Instant) -> bool {
        let first = !self.is_set();
        if first {
            *self = Stamp::at(t);
        }
        first
    }

    /// µs from `earlier` to this stamp (0 if either is unset or out of order).
    pub fn since(self, earlier: Instant) -> u64 {
        self.get()
            .map_or(0, |t| t.saturating_since(earlier).as_micros() as u64)
    }
}

/// What the agents and the runner's main thread share (progress, phase hand-over).
#[derive(Debug)]
pub struct Shared {
    /// The load phase's start, in run time µs (since the run's epoch, which precedes every
    /// engine's; `u64::MAX`: not yet). Set by the agent with the device side once registration is
    /// done; the caller side starts its schedule from it.
    pub load_start_us: AtomicU64,
    /// Devices registered so far.
    pub registered: AtomicU64,
    /// Registration phase over (`registration_failed` tells how).
    pub registration_done: AtomicBool,
    /// Devices that did not register in time, or got a refusal.
    pub registration_failed: AtomicU64,
    /// Calls or REGISTERs started in the load phase.
    pub started: AtomicU64,
    /// Ended without a caller-side failure.
    pub completed: AtomicU64,
    /// Ended with a caller-side failure.
    pub failed: AtomicU64,
    /// Retransmissions sent by the harness.
    pub retransmitted: AtomicU64,
    /// INVITE→180 (or REGISTER→200) p99 of the last full second, µs.
    pub last_p99_us: AtomicU64,
    /// The caller side (or the REGISTER storm) has nothing left: every call ended, or the drain
    /// deadline passed.
    pub caller_done: AtomicBool,
    /// Finals the devices sent that wait for their ACK (open server transactions).
    pub devices_open: AtomicU64,
    /// The run is over: the caller side is done and no device waits for an ACK (or the drain
    /// deadline passed).
    pub load_done: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            load_start_us: AtomicU64::new(u64::MAX),
            registered: AtomicU64::new(0),
            registration_done: AtomicBool::new(false),
            registration_failed: AtomicU64::new(0),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retransmitted: AtomicU64::new(0),
            last_p99_us: AtomicU64::new(0),
            caller_done: AtomicBool::new(false),
            devices_open: AtomicU64::new(0),
            load_done: AtomicBool::new(false),
        }
    }
}

/// Which sides an agent plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// The caller sockets.
    pub caller: bool,
    /// The device sockets (and registration).
    pub devices: bool,
}

impl Roles {
    /// Both sides in one agent.
    pub const BOTH: Roles = Roles {
        caller: true,
        devices: true,
    };
}

/// Timers of both sides. A timer that fires after its reason went away is ignored by its
/// handler (lazy cancellation: cheaper than cancelling at 10,000 calls/s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Timer A: retransmit call `c`'s INVITE.
    InviteRetransmit(u32),
    /// The caller cancels call `c`.
    Cancel(u32),
    /// Timer E: retransmit call `c`'s CANCEL.
    CancelRetransmit(u32),
    /// Hold time over: BYE the dialogs of call `c`.
    Hangup(u32),
    /// Timer E: retransmit the BYE of call `c` to device position `k`.
    ByeRetransmit(u32, u8),
    /// Device `k` of call `c` sends 180.
    Ring(u32, u8),
    /// Device `k` of call `c` sends its final answer.
    Final(u32, u8),
    /// Timer G: device `k` of call `c` retransmits its final response.
    FinalRetransmit(u32, u8),
    /// Timer E: retransmit device `d`'s REGISTER.
    RegisterRetransmit(u32),
    /// Housekeeping: publish progress, phase changes, the drain deadline.
    Tick,
}

/// Housekeeping period.
const TICK: Duration = Duration::from_millis(100);

/// What every side needs to act: the plan, the outbox, the timers, the metrics, the loss model.
pub struct Ctx {
    /// The run plan.
    pub plan: Arc<Plan>,
    /// Shared with the other agent and the runner.
    pub shared: Arc<Shared>,
    /// How much later than the run's epoch this agent's engine clock started, µs: run time =
    /// engine time + offset (0 in the simulator).
    pub offset_us: u64,
    /// Datagrams to send this turn.
    pub out: Outbox,
    /// Every timer of both sides.
    pub timers: TimerWheel<Timer>,
    /// Latencies and counters.
    pub metrics: Metrics,
    loss: Rng,
    lossy: [bool; 4],
    scratch: Vec<u8>,
    reflects: Vec<Reflect>,
}

impl Ctx {
    fn new(plan: Arc<Plan>, shared: Arc<Shared>, offset_us: u64, seed: u64) -> Ctx {
        let net = &plan.scenario.network;
        let mut lossy = [false; 4];
        for leg in &net.legs {
            lossy[*leg as usize] = net.loss > 0.0;
        }
        Ctx {
            loss: Rng::new(plan.scenario.load.seed ^ seed),
            lossy,
            plan,
            shared,
            offset_us,
            out: Outbox::new(),
            timers: TimerWheel::new(Instant::ZERO),
            metrics: Metrics::default(),
            scratch: Vec::with_capacity(2048),
            reflects: Vec::new(),
        }
    }

    /// RFC 3261 T1 of the harness.
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.plan.scenario.network.t1_ms)
    }

    /// Whether the run's transport is reliable (TCP, TLS): requests and 2xx are not
    /// retransmitted (RFC 3261 §17.1.1.2, §17.1.2.2, §13.3.1.4 apply timers A, E and G to
    /// unreliable transports only).
    pub fn reliable(&self) -> bool {
        !self.plan.scenario.topology.transport.is_udp()
    }

    /// Arms a retransmission timer (A or E): on an unreliable transport only, since over a
    /// stream nothing is retransmitted and no give-up rides on these timers.
    pub fn arm_retransmission(&mut self, at: Instant, timer: Timer) {
        if !self.reliable() {
            self.timers.insert(at, timer);
        }
    }

    /// Whether scenario loss drops this datagram on `leg`.
    pub fn lose(&mut self, leg: Leg) -> bool {
        self.lossy[leg as usize] && self.loss.chance(self.plan.scenario.network.loss)
    }

    /// Sends `msg` from harness socket `from` to `to` (the proxy, or a dialog's next hop).
    /// In reflector mode it goes to the reflector instead, with the hint `hint` computes:
    /// what a forking proxy would send in answer to it.
    pub fn send(
        &mut self,
        now: Instant,
        leg: Leg,
        from: SocketAddr,
        to: SocketAddr,
        msg: &[u8],
        hint: impl FnOnce(&Plan, &mut Vec<Reflect>) -> Origin,
    ) {
        if self.lose(leg) {
            self.metrics.count(now, |c| c.lost += 1);
            return;
        }
        self.metrics.count(now, |c| c.sent += 1);
        if self.plan.reflect {
            self.reflects.clear();
            let origin = hint(&self.plan, &mut self.reflects);
            let reflects = &self.reflects;
            self.out
                .push_from_with(Some(from), self.plan.target, |buf| {
                    wire::push_with_hint(buf, msg, origin, reflects)
                });
        } else {
            self.out
                .push_from_with(Some(from), to, |buf| buf.extend_from_slice(msg));
        }
    }

    /// Counts a retransmission the harness sends.
    pub fn count_retransmission(&mut self, now: Instant) {
        self.metrics.count(now, |c| c.retransmitted += 1);
        self.shared.retransmitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a duplicate the harness received.
    pub fn count_duplicate(&mut self, now: Instant) {
        self.metrics.count(now, |c| c.duplicates += 1);
    }

    /// A scratch buffer to build a message in (taken, to be given back with `give_back`).
    pub fn take_scratch(&mut self) -> Vec<u8> {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        s
    }

    /// Returns the scratch buffer.
    pub fn give_back(&mut self, s: Vec<u8>) {
        self.scratch = s;
    }

    /// The load phase's start in engine time, once published.
    pub fn load_start(&self) -> Option<Instant> {
        match self.shared.load_start_us.load(Ordering::Acquire) {
            u64::MAX => None,
            run_us => Some(Instant::from_micros(run_us.saturating_sub(self.offset_us))),
        }
    }

    /// The intended start of call (or REGISTER) `i`, once the load phase started.
    pub fn intended(&self, i: u32) -> Option<Instant> {
        let start = self.load_start()?;
        let offset = *self.plan.starts.get(i as usize)?;
        Some(start + Duration::from_micros(offset))
    }

    /// When the drain ends: the last intended start plus the drain time.
    pub fn drain_deadline(&self) -> Option<Instant> {
        let last = self.plan.starts.last().copied().unwrap_or(0);
        let drain = (self.plan.scenario.load.drain_s * 1e6) as u64;
        Some(self.load_start()? + Duration::from_micros(last + drain))
    }
}

/// The harness's UAs for one run (one side or both).
pub struct Agent {
    ctx: Ctx,
    /// The caller side, if this agent plays it.
    pub caller: Option<caller::CallerSide>,
    /// The device side, if this agent plays it.
    pub devices: Option<device::DeviceSide>,
    last_published_second: usize,
    started_at: Option<Instant>,
    spin: bool,
}

impl Agent {
    /// An agent playing `roles` of `plan`. `offset_us`: how much later than the run's epoch its
    /// engine clock started (run time = engine time + offset; see [`Shared`]).
    pub fn new(plan: Arc<Plan>, roles: Roles, shared: Arc<Shared>, offset_us: u64) -> Agent {
        let seed = u64::from(roles.caller) | u64::from(roles.devices) << 1;
        let caller = roles.caller.then(|| caller::CallerSide::new(&plan));
        let devices = roles.devices.then(|| device::DeviceSide::new(&plan));
        Agent {
            ctx: Ctx::new(plan, shared, offset_us, seed),
            caller,
            devices,
            last_published_second: 0,
            started_at: None,
            spin: false,
        }
    }

    /// Busy-polls instead of sleeping between turns: the harness's own wake-up latency leaves
    /// the measured latencies, at the price of a whole CPU (pin it: `--pin`).
    pub fn set_spin(&mut self, spin: bool) {
        self.spin = spin;
    }

    /// The run plan.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.ctx.plan
    }

    /// The metrics so far.
    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }

    /// Whether this agent has nothing left to do (its load phase ended; a device-only agent
    /// never says so: its callers decide).
    pub fn load_done(&self) -> bool {
        self.ctx.shared.load_done.load(Ordering::Acquire)
    }

    fn first_turn(&mut self, now: Instant) {
        if self.started_at.is_some() {
            return;
        }
        self.started_at = Some(now);
        self.ctx.timers = TimerWheel::new(now);
        self.ctx.timers.insert(now + TICK, Timer::Tick);
        if let Some(d) = &mut self.devices {
            d.begin(&mut self.ctx, now);
        }
    }

    fn tick(&mut self, now: Instant) {
        self.ctx.timers.insert(now + TICK, Timer::Tick);
        if let Some(d) = &mut self.devices {
            d.tick(&mut self.ctx, now);
        }
        if let Some(c) = &mut self.caller {
            c.tick(&mut self.ctx, now);
        }
        let shared = &self.ctx.shared;
        if shared.caller_done.load(Ordering::Acquire)
            && (shared.devices_open.load(Ordering::Acquire) == 0
                || self.ctx.drain_deadline().is_some_and(|d| now >= d))
        {
            shared.load_done.store(true, Ordering::Release);
        }
        if self.ctx.metrics.origin.is_none() {
            if let Some(start) = self.ctx.load_start() {
                self.ctx.metrics.set_origin(start);
            }
        }
        self.publish_p99(now);
    }

    /// Publishes the p99 of the last complete second for the progress line.
    fn publish_p99(&mut self, now: Instant) {
        let Some(origin) = self.ctx.metrics.origin else {
            return;
        };
        let second = (now.saturating_since(origin).as_secs() as usize).saturating_sub(1);
        if second == self.last_published_second && second != 0 {
            return;
        }
        let metric = match self.ctx.plan.scenario.load.kind {
            LoadKind::Calls => Metric::Invite180,
            LoadKind::Register => Metric::Register,
        };
        if let Some(s) = self.ctx.metrics.seconds.get(second) {
            if let Some((_, h)) = s.latencies.iter().find(|(m, _)| *m == metric) {
                if !h.is_empty() {
                    self.ctx
                        .shared
                        .last_p99_us
                        .store(h.value_at_quantile(0.99), Ordering::Relaxed);
                    self.last_published_second = second;
                }
            }
        }
    }

    /// Totals of this agent's counters.
    pub fn totals(&self) -> &Counts {
        &self.ctx.metrics.totals
    }
}

impl Handler for Agent {
    fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) -> Inbound {
        self.first_turn(now);
        let endpoint = self.ctx.plan.endpoint(d.local);
        let leg = match endpoint {
            Some(Endpoint::Caller(_)) => Leg::CallerIn,
            Some(Endpoint::Device(_)) => Leg::DeviceIn,
            None => return Inbound::Handled,
        };
        if self.ctx.lose(leg) {
            self.ctx.metrics.count(now, |c| c.lost += 1);
            if let (Some(Endpoint::Device(dev)), Some(s)) = (endpoint, &mut self.devices) {
                s.lost(&self.ctx.plan, dev, d.bytes);
            }
            return Inbound::Handled;
        }
        self.ctx.metrics.count(now, |c| c.received += 1);
        match (endpoint, &mut self.caller, &mut self.devices) {
            (Some(Endpoint::Caller(_)), Some(c), _) => c.handle(&mut self.ctx, now, d),
            (Some(Endpoint::Device(dev)), _, Some(s)) => s.handle(&mut self.ctx, now, dev, d),
            _ => {}
        }
        Inbound::Handled
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.first_turn(now);
        if let Some(c) = &mut self.caller {
            c.start_due(&mut self.ctx, now);
        }
        if let Some(d) = &mut self.devices {
            d.pace(&mut self.ctx, now);
        }
        while let Some(timer) = self.ctx.timers.poll_expired(now) {
            match timer {
                Timer::Tick => self.tick(now),
                Timer::InviteRetransmit(_)
                | Timer::Cancel(_)
                | Timer::CancelRetransmit(_)
                | Timer::Hangup(_)
                | Timer::ByeRetransmit(..) => {
                    if let Some(c) = &mut self.caller {
                        c.fire(&mut self.ctx, now, timer);
                    }
                }
                Timer::Ring(..)
                | Timer::Final(..)
                | Timer::FinalRetransmit(..)
                | Timer::RegisterRetransmit(_) => {
                    if let Some(d) = &mut self.devices {
                        d.fire(&mut self.ctx, now, timer);
                    }
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.started_at.is_none() || self.spin {
            // First turn (set the timers up), or busy polling: always due, so the engine's loop
            // never blocks.
            return Some(Instant::ZERO);
        }
        let mut next = self.ctx.timers.next_deadline();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let Some(c) = &self.caller {
            consider(c.next_start(&self.ctx));
        }
        if let Some(d) = &self.devices {
            consider(d.next_pace(&self.ctx));
        }
        next
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.ctx.out
    }
}

/// How many Via values a request carries: one means the proxy itself originated it (its ACK or
/// BYE tearing down a late answer), two means it forwarded the caller's.
pub fn via_count(msg: &sipfork::sip::Message<'_>) -> usize {
    msg.vias().count()
}
