//! The sans-IO core: registrar, transactions, proxy and policy as plain state machines.
//!
//! No sockets, threads, locks, clocks or OS randomness in here: every method takes `now` as a
//! value and writes what must be sent into an [`io::Outbox`]. The engine (`crate::engine`) owns
//! all of that, and the simulator (`crate::testing`) drives the same code on virtual time.
#![forbid(unsafe_code)]

pub mod auth;
pub mod context;
pub mod ids;
pub mod io;
pub mod metrics;
pub mod persist;
pub mod registrar;
pub mod route;
pub mod shard;
pub mod slab;
pub mod timer;
pub mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::core::auth::Auth;
use crate::core::context::{Cx, Env};
use crate::core::ids::Ids;
use crate::core::io::{Datagram, Inbound, Outbox};
use crate::core::metrics::{MetricSink, ReasonCounters};
use crate::core::persist::{PersistLog, PersistOp};
use crate::core::registrar::location::{NumberKey, Target};
use crate::core::registrar::{Device, Registrar, Restore};
use crate::core::shard::ShardId;
use crate::core::slab::Key;
use crate::core::timer::TimerWheel;
use crate::core::transaction::{Timer, TimerValues, TxnSlot};
use crate::sip::build::{self, Reply, ViaFix};
use crate::sip::{self, Disposition, Essentials, Message, Method, ParseError, Via};
use crate::time::Instant;

/// What a timer in the shard's wheel is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKey {
    /// A transaction timer of one of a call's transactions.
    Txn {
        /// The call.
        call: Key,
        /// Which of its transactions.
        slot: TxnSlot,
        /// Which RFC 3261 timer.
        timer: Timer,
    },
    /// The earliest binding of an extension expires (RFC 3261 §10.3).
    BindingExpiry {
        /// The extension.
        extension: NumberKey,
    },
}

/// How the engine builds a shard's core.
#[derive(Clone, Debug)]
pub struct CoreParams {
    /// This shard.
    pub shard: ShardId,
    /// Number of shards.
    pub shards: u16,
    /// The listen address.
    pub local: SocketAddr,
    /// Process-wide secret (branch/route MACs, digest nonces), drawn by the engine from the OS.
    pub secret: [u8; 32],
    /// Wall-clock µs since the Unix epoch at `Instant::ZERO`.
    pub wall_epoch_us: u64,
    /// RFC 3261 timer values (defaults in production; shortened in some tests).
    pub timers: TimerValues,
}

/// Why the dispatch layer refused or dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// Unparseable request answered with 400/505.
    MalformedRequest,
    /// Malformed response dropped (§18.1.2).
    MalformedResponse,
    /// Not SIP (keep-alive, noise).
    NotSip,
    /// A request failed the checks of §8.2 / §16.3 step 1 (answered).
    InvalidRequest,
    /// An unparseable request we could not even answer (no usable Via).
    Unanswerable,
    /// A response whose top Via is not one of our branches.
    StrayResponse,
}

const REFUSALS: [&str; 6] = [
    "malformed_request",
    "malformed_response",
    "not_sip",
    "invalid_request",
    "unanswerable",
    "stray_response",
];

/// Counters of the dispatch layer.
#[derive(Default, Debug)]
struct DispatchMetrics {
    requests: u64,
    responses: u64,
    handed_off: u64,
    refused: ReasonCounters<6>,
}

/// One shard's sans-IO core: registrar and proxy behind one datagram-in, datagrams-out API.
///
/// Contract (see the crate docs): call [`Core::handle_datagram`] for each datagram and
/// [`Core::handle_timeout`] when [`Core::poll_timeout`] is due, always with a non-decreasing
/// `now`; after each batch, send what [`Core::outbox`] holds and clear it, and journal what
/// [`Core::drain_persist`] hands out *before* sending.
pub struct Core {
    cfg: Arc<Config>,
    env: Env,
    ids: Ids,
    timers: TimerWheel<TimerKey>,
    out: Outbox,
    persist: PersistLog,
    metrics: DispatchMetrics,
    auth: Auth,
    registrar: Registrar,
}

impl Core {
    /// A core for one shard.
    pub fn new(cfg: Arc<Config>, params: CoreParams, now: Instant) -> Core {
        let mut id_secret = [0u8; 16];
        id_secret.copy_from_slice(&params.secret[..16]);
        Core {
            ids: Ids::new(id_secret, params.shard),
            env: Env {
                shard: params.shard,
                shards: params.shards,
                local: params.local,
                wall_epoch_us: params.wall_epoch_us,
                timers: params.timers,
            },
            auth: Auth::new(&cfg, params.secret, params.shard),
            registrar: Registrar::new(params.wall_epoch_us),
            cfg,
            timers: TimerWheel::new(now),
            out: Outbox::new(),
            persist: PersistLog::new(),
            metrics: DispatchMetrics::default(),
        }
    }

    /// This shard's facts.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Datagrams to send; the engine drains and clears it after each batch.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// The earliest time [`Core::handle_timeout`] has work (may be early, never late).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Hands every pending journal operation to `apply`, in order.
    pub fn drain_persist(&mut self, apply: impl FnMut(PersistOp<'_>)) {
        self.persist.drain(apply);
    }

    fn cx(&mut self, now: Instant) -> Cx<'_> {
        self.parts(now).0
    }

    /// The shared context beside the parts that keep their own state.
    fn parts(&mut self, now: Instant) -> (Cx<'_>, &mut Registrar, &mut Auth) {
        let cx = Cx {
            now,
            env: &self.env,
            cfg: &self.cfg,
            ids: &mut self.ids,
            timers: &mut self.timers,
            out: &mut self.out,
            persist: &mut self.persist,
        };
        (cx, &mut self.registrar, &mut self.auth)
    }

    /// Rebuilds one binding from its journal record (the engine calls this on the shard owning
    /// the record's extension, before the first datagram). Expired and unprovisioned records
    /// are dropped with a journal delete.
    pub fn restore(&mut self, now: Instant, key: &[u8], value: &[u8]) -> Restore {
        let (mut cx, registrar, _) = self.parts(now);
        registrar.restore(&mut cx, key, value)
    }

    /// The registered devices of extension `number`; `None` when it is not provisioned.
    pub fn devices(&self, now: Instant, number: &[u8]) -> Option<Vec<Device>> {
        self.registrar
            .devices(&self.cfg, self.env.wall_us(now), number)
    }

    /// Where a call to extension `number` goes, best first (q, then most recent registration).
    pub fn targets(&self, number: &[u8]) -> impl Iterator<Item = Target<'_>> + '_ {
        self.registrar.targets(number)
    }

    /// Every live binding as a journal put `(key, value)`: the live set for journal compaction.
    pub fn for_each_binding_record(&self, record: impl FnMut(&[u8], &[u8])) {
        self.registrar.for_each_record(record);
    }

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) -> Inbound {
        let msg = match sip::parse(d.bytes) {
            Ok(msg) => msg,
            Err(err) => {
                self.refuse_unparsed(now, d, err);
                return Inbound::Handled;
            }
        };
        if let Some(owner) = route::owner(&msg, &self.ids, self.env.shards) {
            if owner != self.env.shard {
                self.metrics.handed_off += 1;
                return Inbound::ForShard(owner);
            }
        }
        if msg.is_request() {
            self.metrics.requests += 1;
            match sip::check_request(&msg) {
                Ok(e) => self.handle_request(now, &msg, &e, d.from),
                Err(err) => {
                    self.refuse(Refusal::InvalidRequest);
                    if let Disposition::Reply(status, reason) = err.disposition(true) {
                        let mut cx = self.cx(now);
                        reply_to(&mut cx, &msg, d.from, status, reason, b"");
                    }
                }
            }
        } else {
            self.metrics.responses += 1;
            match sip::check_response(&msg) {
                Ok(_) => self.refuse(Refusal::StrayResponse),
                Err(_) => self.refuse(Refusal::MalformedResponse),
            }
        }
        Inbound::Handled
    }

    fn refuse(&mut self, why: Refusal) {
        self.metrics.refused.bump(why as usize);
    }

    /// A datagram that did not parse: answer requests we can answer (§8.2.6 needs Via, From, To,
    /// Call-ID, CSeq), drop the rest, count all.
    fn refuse_unparsed(&mut self, now: Instant, d: Datagram<'_>, err: ParseError) {
        let is_request = !sip::looks_like_response(d.bytes);
        match err.disposition(is_request) {
            Disposition::Drop(sip::DropReason::MalformedResponse) => {
                self.refuse(Refusal::MalformedResponse)
            }
            Disposition::Drop(_) => self.refuse(Refusal::NotSip),
            Disposition::Reply(status, reason) => {
                let answerable = sip::salvage(d.bytes).filter(|m| {
                    m.top_via().is_ok()
                        && m.call_id().is_ok()
                        && m.cseq().is_ok()
                        && m.from().is_ok()
                        && m.to().is_ok()
                });
                match answerable {
                    Some(m) => {
                        self.refuse(Refusal::MalformedRequest);
                        let mut cx = self.cx(now);
                        reply_to(&mut cx, &m, d.from, status, reason, b"");
                    }
                    None => self.refuse(Refusal::Unanswerable),
                }
            }
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
    ) {
        if e.method == Method::Register {
            let (mut cx, registrar, auth) = self.parts(now);
            registrar.handle_register(&mut cx, auth, msg, e, from);
            return;
        }
        let mut cx = self.cx(now);
        match e.method {
            Method::Options if e.request_uri.as_sip().is_some_and(|u| u.user.is_none()) => {
                reply_to(
                    &mut cx,
                    msg,
                    from,
                    200,
                    "OK",
                    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, NOTIFY, INFO, UPDATE, PRACK, SUBSCRIBE, REFER\r\nAccept: application/sdp\r\n",
                );
            }
            _ => reply_to(&mut cx, msg, from, 501, "Not Implemented", b""),
        }
    }

    /// Fires every due timer, in deadline order.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.timers.poll_expired(now) {
            match key {
                TimerKey::Txn { .. } => {}
                TimerKey::BindingExpiry { extension } => {
                    let (mut cx, registrar, _) = self.parts(now);
                    registrar.handle_expiry(&mut cx, extension);
                }
            }
        }
    }

    /// Writes this shard's counters.
    pub fn export_metrics(&self, sink: &mut MetricSink) {
        let shard = self.env.shard.0.to_string();
        let labels = [("shard", shard.as_str())];
        sink.counter(
            "sipfork_requests_total",
            "SIP requests received (parsed, on their owning shard)",
            &labels,
            self.metrics.requests,
        );
        sink.counter(
            "sipfork_responses_total",
            "SIP responses received (parsed, on their owning shard)",
            &labels,
            self.metrics.responses,
        );
        sink.counter(
            "sipfork_handoffs_total",
            "Datagrams handed to the shard that owns them",
            &labels,
            self.metrics.handed_off,
        );
        self.metrics.refused.export(
            sink,
            "sipfork_refused_total",
            "Datagrams refused (answered with an error or dropped), by reason",
            &REFUSALS,
            &labels,
        );
        sink.gauge(
            "sipfork_timers",
            "Armed timers in the shard's wheel",
            &labels,
            self.timers.len() as u64,
        );
        self.registrar.export_metrics(sink, &labels);
        self.auth.export_metrics(sink, &labels);
    }
}

/// Where a response to a request goes (RFC 3261 §18.2.2 with RFC 3581): the source IP (it is
/// what `received` would say), and the source port when the client asked for `rport`, else the
/// sent-by port (5060 when absent).
pub fn response_destination(via: &Via<'_>, from: SocketAddr) -> SocketAddr {
    if via.rport.is_some() {
        from
    } else {
        SocketAddr::new(from.ip(), via.port.unwrap_or(5060))
    }
}

/// Answers `req` statelessly with a locally generated response (a To tag is added).
pub fn reply_to(
    cx: &mut Cx<'_>,
    req: &Message<'_>,
    from: SocketAddr,
    status: u16,
    reason: &str,
    extra: &[u8],
) {
    let Ok(via) = req.top_via() else { return };
    let dest = response_destination(&via, from);
    let fix = ViaFix::for_source(&via, from);
    let tag = cx.ids.tag();
    cx.out.push_with(dest, |buf| {
        build::response(
            req,
            &Reply {
                status,
                reason,
                fix,
                to_tag: (status > 100).then_some(&tag[..]),
                extra,
                body: None,
            },
            buf,
        )
    });
}
