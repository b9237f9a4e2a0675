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
pub mod proxy;
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
use crate::core::proxy::{ForkPlan, ForkTarget, Matched, Proxy};
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
    /// The ringing q-group of a serially forked call has rung long enough.
    Group {
        /// The call.
        call: Key,
    },
    /// A dialog lived past the longest call sipfork keeps state for without seeing a BYE.
    Dialog {
        /// The call that established it.
        call: Key,
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
    proxy: Proxy,
    auth: Auth,
    registrar: Registrar,
    /// Set while the appliance drains before a stop: `Retry-After` seconds of the 503 that new
    /// INVITEs get, and how many got it.
    drain: Option<u32>,
    drain_refused: u64,
}

/// A core split into disjointly borrowed parts: the shared context and each handler.
struct Parts<'a> {
    cx: Cx<'a>,
    registrar: &'a mut Registrar,
    auth: &'a mut Auth,
    proxy: &'a mut Proxy,
}

/// Where the Request-URI of a new request leads (§16.5).
enum Resolved<'b> {
    /// One of our extensions (its number).
    Extension(std::borrow::Cow<'b, [u8]>),
    /// A number reached through a configured next hop.
    Route(SocketAddr),
    /// Addressed to sipfork itself (no user part, our domain).
    Proxy,
    /// Nothing here answers to it.
    NotFound(&'static str),
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
            proxy: Proxy::new(),
            drain: None,
            drain_refused: 0,
        }
    }

    /// Swaps in a reloaded configuration between datagrams: extensions, passwords, limits,
    /// routes and trusted peers apply to the next request; bindings, transactions and dialogs
    /// stay. `[auth]` (realm, algorithms, nonces) is built at start and is not taken from `cfg`.
    pub fn set_config(&mut self, cfg: Arc<Config>) {
        self.cfg = cfg;
    }

    /// Starts (`Some(retry_after_secs)`) or ends (`None`) draining: while draining, a new INVITE
    /// gets `503 Service Unavailable` with `Retry-After`; everything else (in-dialog requests,
    /// CANCEL, ACK, REGISTER, responses) is handled as usual.
    pub fn set_draining(&mut self, retry_after: Option<u32>) {
        self.drain = retry_after;
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
        self.parts(now).cx
    }

    /// The shared context beside the parts that keep their own state (disjoint borrows).
    fn parts(&mut self, now: Instant) -> Parts<'_> {
        Parts {
            cx: Cx {
                now,
                env: &self.env,
                cfg: &self.cfg,
                ids: &mut self.ids,
                timers: &mut self.timers,
                out: &mut self.out,
                persist: &mut self.persist,
            },
            registrar: &mut self.registrar,
            auth: &mut self.auth,
            proxy: &mut self.proxy,
        }
    }

    /// Rebuilds one binding from its journal record (the engine calls this on the shard owning
    /// the record's extension, before the first datagram). Expired and unprovisioned records
    /// are dropped with a journal delete.
    pub fn restore(&mut self, now: Instant, key: &[u8], value: &[u8]) -> Restore {
        let Parts {
            mut cx, registrar, ..
        } = self.parts(now);
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
                Ok(re) => {
                    let ours = re
                        .top_via
                        .branch
                        .and_then(|b| self.ids.read_branch(b, self.env.shards))
                        .filter(|b| b.shard == self.env.shard);
                    match ours {
                        Some(ours) => {
                            let Parts { mut cx, proxy, .. } = self.parts(now);
                            proxy.handle_response(&mut cx, &msg, &re, ours);
                        }
                        None => self.refuse(Refusal::StrayResponse),
                    }
                }
                Err(_) => self.refuse(Refusal::MalformedResponse),
            }
        }
        Inbound::Handled
    }

    /// The head of a datagram too long for the receive buffers: a request gets 513 (RFC 3261
    /// §21.5.11) when its head still has a Via to answer to; anything else is counted and dropped.
    pub fn handle_oversize(&mut self, now: Instant, d: Datagram<'_>) {
        self.refuse_unparsed(now, d, ParseError::MessageTooLarge);
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
                // Answers go back to the source address, so any Via row will do; the response
                // copies whichever of Via, From, To, Call-ID and CSeq the request has (RFC 4475
                // `insuf` expects a 400 even without From/To/Call-ID). Without a Via the sender
                // could not match an answer at all.
                let answerable =
                    sip::salvage(d.bytes).filter(|m| m.first(sip::HeaderName::Via).is_some());
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
        let drain = self.drain;
        let Parts {
            mut cx,
            registrar,
            auth,
            proxy,
        } = self.parts(now);
        if e.method == Method::Register {
            return registrar.handle_register(&mut cx, auth, msg, e, from);
        }
        // §17.2.3 first: retransmissions, the ACK of a non-2xx, CANCEL, the ACK of a 2xx.
        if proxy.match_request(&mut cx, msg, e, from) == Matched::Handled {
            return;
        }
        if let Some((status, reason, extra)) = proxy_checks(&cx, msg, e) {
            return reply_to(&mut cx, msg, from, status, reason, &extra);
        }
        if e.to.tag.is_some() {
            // §16.12: inside a dialog, follow the route the dialog set up. In-dialog requests
            // are not challenged (DECISIONS.md); a device behind NAT is reached on its flow.
            let dest = e
                .request_uri
                .as_sip()
                .and_then(|u| registrar.flow_of(u))
                .filter(|_| cx.cfg.registrar.nat != crate::config::NatMode::Contact);
            return proxy.forward_in_dialog(&mut cx, msg, e, from, dest);
        }
        if let (Some(secs), Method::Invite) = (drain, e.method) {
            let retry_after = format!("Retry-After: {secs}\r\n");
            reply_to(
                &mut cx,
                msg,
                from,
                503,
                "Service Unavailable",
                retry_after.as_bytes(),
            );
            self.drain_refused += 1;
            return;
        }
        let resolved = resolve(&cx, e);
        if matches!(resolved, Resolved::Extension(_) | Resolved::Route(_))
            && auth.enabled()
            && !cx.cfg.is_trusted(from.ip())
        {
            // DECISIONS.md: initial requests from anyone but a trusted peer prove who they are.
            let outcome = auth.check(&cx, msg, e, auth::ChallengeHeader::ProxyAuthenticate);
            if auth.reply(
                &mut cx,
                msg,
                from,
                auth::ChallengeHeader::ProxyAuthenticate,
                &outcome,
            ) {
                return;
            }
        }
        match resolved {
            Resolved::Proxy => match e.method {
                Method::Options => reply_to(&mut cx, msg, from, 200, "OK", ALLOW_ACCEPT),
                Method::Other(_) => {
                    reply_to(&mut cx, msg, from, 501, "Not Implemented", ALLOW_ACCEPT)
                }
                _ => reply_to(&mut cx, msg, from, 404, "Not Found", b""),
            },
            Resolved::NotFound(reason) => reply_to(&mut cx, msg, from, 404, reason, b""),
            Resolved::Route(dest) => {
                let target = ForkTarget {
                    uri: std::borrow::Cow::Borrowed(e.request_uri.raw()),
                    dest,
                    q: 1000,
                    registered_at: Instant::ZERO,
                };
                let plan = ForkPlan {
                    serial: false,
                    group_timeout: cx.cfg.proxy.group_timeout,
                    single_answer: false,
                    record_route: true,
                    to_extension: false,
                };
                proxy.start_call(&mut cx, msg, e, from, vec![target], plan);
            }
            Resolved::Extension(number) => {
                let Some(policy) = cx.cfg.extension(&number) else {
                    return reply_to(&mut cx, msg, from, 404, "Not Found", b"");
                };
                let plan = ForkPlan {
                    serial: policy.fork == crate::config::ForkMode::QGroups,
                    group_timeout: policy.group_timeout,
                    single_answer: policy.single_answer,
                    record_route: true,
                    to_extension: true,
                };
                let targets: Vec<ForkTarget> = registrar
                    .targets(&number)
                    .map(|t| ForkTarget {
                        uri: std::borrow::Cow::Borrowed(t.contact),
                        dest: t.dest,
                        q: t.q,
                        registered_at: t.registered_at,
                    })
                    .collect();
                if targets.is_empty() {
                    return reply_to(&mut cx, msg, from, 480, "Temporarily Unavailable", b"");
                }
                proxy.start_call(&mut cx, msg, e, from, targets, plan);
            }
        }
    }

    /// Fires every due timer, in deadline order.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.timers.poll_expired(now) {
            let Parts {
                mut cx,
                registrar,
                proxy,
                ..
            } = self.parts(now);
            match key {
                TimerKey::Txn { .. } | TimerKey::Group { .. } | TimerKey::Dialog { .. } => {
                    proxy.on_timer(&mut cx, key)
                }
                TimerKey::BindingExpiry { extension } => {
                    registrar.handle_expiry(&mut cx, extension);
                }
            }
        }
    }

    /// Calls (transactions or dialogs) alive in this shard's proxy.
    pub fn proxy_calls(&self) -> usize {
        self.proxy.calls()
    }

    /// Dialogs established through this shard's proxy and not yet ended.
    pub fn proxy_dialogs(&self) -> u64 {
        self.proxy.dialogs()
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
        self.proxy.export_metrics(sink, &labels);
        sink.gauge(
            "sipfork_timers",
            "Armed timers in the shard's wheel",
            &labels,
            self.timers.len() as u64,
        );
        self.registrar.export_metrics(sink, &labels);
        self.auth.export_metrics(sink, &labels);
        sink.counter(
            "sipfork_drain_refused_total",
            "New INVITEs answered 503 while the appliance drained before a stop",
            &labels,
            self.drain_refused,
        );
    }
}

/// Where a response to a request goes: back to the address it came from (symmetric response
/// routing, RFC 4961; RFC 3581 `rport` asks for exactly this). At a carrier edge most devices sit
/// behind NAT, where the Via's sent-by port is unreachable; with `rport` the sent-by port is
/// ignored anyway, and a device that sends from one port and listens on another is the rare case.
pub fn response_destination(_via: &Via<'_>, from: SocketAddr) -> SocketAddr {
    from
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
    // Symmetric routing needs no Via to find the way back; a broken top Via (RFC 4475
    // `badinv01`) is copied as it came and gets no received/rport.
    let dest = from;
    if dest == cx.env.local {
        return;
    }
    let fix = req
        .top_via()
        .map(|via| ViaFix::for_source(&via, from))
        .unwrap_or_default();
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

/// Allow and Accept rows for answers sipfork gives as the request's destination.
const ALLOW_ACCEPT: &[u8] = b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, NOTIFY, INFO, UPDATE, PRACK, SUBSCRIBE, REFER\r\nAccept: application/sdp\r\n";

/// RFC 3261 §16.3 steps 2–6 (step 1, syntax, passed already): what the proxy refuses, with the
/// answer to give.
fn proxy_checks(
    cx: &Cx<'_>,
    msg: &Message<'_>,
    e: &Essentials<'_>,
) -> Option<(u16, &'static str, Vec<u8>)> {
    // Step 2: a URI scheme we cannot route on (sips needs TLS, which this UDP edge lacks).
    let scheme_ok = match &e.request_uri {
        sip::Uri::Sip(u) => !u.secure,
        sip::Uri::Tel(_) => true,
        sip::Uri::Other(_) => false,
    };
    if !scheme_ok {
        return Some((416, "Unsupported URI Scheme", Vec::new()));
    }
    // Step 3.
    if e.max_forwards == Some(0) {
        return Some((483, "Too Many Hops", Vec::new()));
    }
    // Step 4.
    if proxy::is_loop(cx, e, msg) {
        return Some((482, "Loop Detected", Vec::new()));
    }
    // Step 5: we support no option tag a proxy must understand.
    let mut unsupported = Vec::new();
    for tag in msg.proxy_require().filter_map(Result::ok) {
        unsupported.extend_from_slice(if unsupported.is_empty() {
            b"Unsupported: "
        } else {
            b", "
        });
        unsupported.extend_from_slice(tag);
    }
    if !unsupported.is_empty() {
        unsupported.extend_from_slice(b"\r\n");
        return Some((420, "Bad Extension", unsupported));
    }
    None
}

/// The number a request is for: the user part of a SIP Request-URI (unescaped), or a tel URI's
/// digits without visual separators. Borrowed unless something had to be removed.
fn extension_number<'b>(e: &Essentials<'b>) -> std::borrow::Cow<'b, [u8]> {
    use std::borrow::Cow;
    match &e.request_uri {
        sip::Uri::Sip(u) => u.user_unescaped().unwrap_or(Cow::Borrowed(b"")),
        sip::Uri::Tel(t)
            if t.number
                .iter()
                .any(|c| matches!(c, b'-' | b'.' | b'(' | b')')) =>
        {
            Cow::Owned(
                t.number
                    .iter()
                    .copied()
                    .filter(|c| !matches!(c, b'-' | b'.' | b'(' | b')'))
                    .collect(),
            )
        }
        sip::Uri::Tel(t) => Cow::Borrowed(t.number),
        sip::Uri::Other(_) => Cow::Borrowed(b""),
    }
}

/// §16.5: where the Request-URI leads.
fn resolve<'b>(cx: &Cx<'_>, e: &Essentials<'b>) -> Resolved<'b> {
    if let sip::Uri::Sip(u) = &e.request_uri {
        if !cx.cfg.is_local_domain(u.host_raw, u.port) {
            return Resolved::NotFound("Not Found - domain not served here");
        }
        if u.user.is_none() {
            return Resolved::Proxy;
        }
    }
    let number = extension_number(e);
    if cx.cfg.extension(&number).is_some() {
        Resolved::Extension(number)
    } else if let Some(route) = cx.cfg.route_for(&number) {
        Resolved::Route(route.next_hop.addr)
    } else {
        Resolved::NotFound("Not Found")
    }
}
