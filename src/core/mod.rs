//! The sans-IO core: registrar, transactions, proxy and policy as plain state machines.
//!
//! No sockets, threads, locks, clocks or OS randomness in here: every method takes `now` as a
//! value and writes what must be sent into an [`io::Outbox`]. The engine (`crate::engine`) owns
//! all of that, and the simulator (`crate::testing`) drives the same code on virtual time.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cdr;
pub mod cluster;
pub mod context;
pub mod ids;
pub mod io;
pub mod metrics;
pub mod notice;
pub mod number;
pub mod overload;
pub mod persist;
pub mod policy;
pub mod proxy;
pub mod registrar;
pub mod reply;
pub mod route;
pub mod shard;
pub mod slab;
pub mod steer;
pub mod timer;
pub mod transaction;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::core::auth::Auth;
use crate::core::context::{Cx, Env};
use crate::core::ids::Ids;
use crate::core::io::{Datagram, Inbound, Outbox};
use crate::core::metrics::{MetricSink, ReasonCounters};
use crate::core::persist::{PersistLog, PersistOp};
use crate::core::policy::ledger::LineCount;
use crate::core::policy::Party;
use crate::core::proxy::{ForkPlan, ForkTarget, Matched, Proxy};
use crate::core::registrar::location::{NumberKey, Target};
use crate::core::registrar::{Device, Reach, Registrar, Restore};
use crate::core::reply::reply_to;
use crate::core::shard::ShardId;
use crate::core::slab::Key;
use crate::core::timer::TimerWheel;
use crate::core::transaction::{Timer, TimerValues, TxnSlot};
use crate::sip::build::{self, Reply, ViaFix};
use crate::sip::{self, Disposition, Essentials, Message, Method, ParseError};
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
    /// A moved call's far end had time enough to end the old dialog (`proxy/features.rs`).
    FeatureBye {
        /// The feature call.
        call: Key,
    },
    /// The earliest binding of an extension expires (RFC 3261 §10.3).
    BindingExpiry {
        /// The extension.
        extension: NumberKey,
    },
    /// A guessing block may have run out (`auth::throttle`).
    AuthSweep,
    /// A trunk address's OPTIONS keep-alive is due, due again, or timed out
    /// (`policy::keepalive`).
    Keepalive {
        /// The address's index among the configured trunk addresses.
        probe: u8,
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
    /// A request whose sender address is blocked for password guessing (dropped).
    BlockedSource,
    /// A request whose forwarded form would not fit the parser's row index (answered 513).
    TooManyRows,
}

const REFUSALS: [&str; 8] = [
    "malformed_request",
    "malformed_response",
    "not_sip",
    "invalid_request",
    "unanswerable",
    "stray_response",
    "blocked_source",
    "too_many_rows",
];

/// Counters of the dispatch layer.
#[derive(Default, Debug)]
struct DispatchMetrics {
    requests: u64,
    responses: u64,
    handed_off: u64,
    refused: ReasonCounters<8>,
}

/// `Retry-After` of a REGISTER refused because the journal cannot store its change.
const JOURNAL_RETRY_AFTER: &[u8] = b"Retry-After: 10\r\n";

/// No acknowledged binding the journal does not hold (issue 12, durability).
///
/// Design: a REGISTER's change is applied in memory at once, but its answer is *held* (its
/// outbox position is noted) until the engine reports the turn's journal write:
/// [`Core::persist_written`] lets the answers go; [`Core::persist_failed`] undoes every change
/// since the last write (each journal operation carries the record its key had before, see
/// `persist.rs`) and rewrites each held 2xx into `503` + `Retry-After`. While the engine reports
/// the journal unavailable ([`Core::set_journal_available`]), a REGISTER that would change a
/// binding is undone right after it was handled and answered `503`: the table never holds a
/// binding the journal lacks, and no 200 OK announces one. Queries and retransmissions (no
/// change) are answered as usual. Changes from timers (expiry) are rolled back too on a failed
/// write; an expired binding that comes back this way is dropped again by its timer or on
/// restore.
#[derive(Debug)]
struct Durability {
    journal_available: bool,
    /// Outbox positions of this turn's answers to REGISTERs that changed bindings.
    held: Vec<usize>,
    /// REGISTERs answered 503 because their change could not be journaled.
    refused: u64,
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
    notices: Vec<notice::Notice>,
    cdrs: Vec<cdr::Cdr>,
    keepalive: policy::keepalive::Keepalive,
    durable: Durability,
    metrics: DispatchMetrics,
    proxy: Proxy,
    auth: Auth,
    registrar: Registrar,
    /// Set while the appliance drains before a stop: `Retry-After` seconds of the 503 that new
    /// INVITEs get, and how many got it.
    drain: Option<u32>,
    drain_refused: u64,
    /// `[cluster]`: the directory snapshot in use and the cluster counters.
    cluster: cluster::Cluster,
    /// Shedding and per-source rate limits (`overload`).
    overload: overload::Overload,
    /// The stream flows known open, and what the message being handled came on.
    flows: transport::flows::Flows,
    arrival: transport::Transport,
}

/// A core split into disjointly borrowed parts: the shared context and each handler.
struct Parts<'a> {
    cx: Cx<'a>,
    registrar: &'a mut Registrar,
    auth: &'a mut Auth,
    proxy: &'a mut Proxy,
    keepalive: &'a mut policy::keepalive::Keepalive,
    cluster: &'a mut cluster::Cluster,
}

/// Where the Request-URI of a new request leads (§16.5).
enum Resolved<'b> {
    /// One of our extensions (its number).
    Extension(std::borrow::Cow<'b, [u8]>),
    /// A number reached through a configured next hop.
    Route(SocketAddr, transport::Transport),
    /// Addressed to sipfork itself (no user part, our domain).
    Proxy,
    /// A number of a served domain that nothing here answers to.
    NotFound,
    /// A domain sipfork does not serve (it is no open relay).
    ForeignDomain,
}

impl Core {
    /// A core for one shard.
    pub fn new(cfg: Arc<Config>, params: CoreParams, now: Instant) -> Core {
        let mut id_secret = [0u8; 16];
        id_secret.copy_from_slice(&params.secret[..16]);
        let mut core = Core {
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
            notices: Vec::new(),
            cdrs: Vec::new(),
            keepalive: Default::default(),
            durable: Durability {
                journal_available: true,
                held: Vec::new(),
                refused: 0,
            },
            metrics: DispatchMetrics::default(),
            proxy: Proxy::new(),
            drain: None,
            drain_refused: 0,
            cluster: cluster::Cluster::default(),
            overload: overload::Overload::new(),
            flows: transport::flows::Flows::new(),
            arrival: transport::Transport::Udp,
        };
        core.configure_keepalive(now);
        core
    }

    /// (Re)starts the trunk keep-alives for the configuration in force.
    fn configure_keepalive(&mut self, now: Instant) {
        let cfg = &self.cfg;
        // Each address over its configured transport (`policy::keepalive`).
        let addrs = cfg.trunk_addresses().map(|a| {
            let t = cfg.trunk_transport_at(a);
            (a, t.unwrap_or(transport::Transport::Udp))
        });
        self.keepalive
            .configure(&mut self.timers, now, addrs, cfg.policy.trunk_keepalive);
    }

    /// Installs a newer snapshot of the cluster directory (the shard does this before a
    /// datagram whenever the directory thread published one).
    pub fn set_directory(&mut self, directory: Arc<cluster::Directory>) {
        self.cluster.set_directory(directory);
    }

    /// The cluster directory snapshot in use.
    pub fn directory(&self) -> Option<&Arc<cluster::Directory>> {
        self.cluster.directory()
    }

    /// Swaps in a reloaded configuration between datagrams: extensions, passwords, limits,
    /// routes and trusted peers apply to the next request; bindings, transactions and dialogs
    /// stay. `[auth]` (realm, algorithms, nonces) is built at start and is not taken from `cfg`.
    pub fn set_config(&mut self, cfg: Arc<Config>) {
        self.cfg = cfg;
        // A deadline in the past fires at the next poll.
        self.configure_keepalive(Instant::ZERO);
    }

    /// Starts (`Some(retry_after_secs)`) or ends (`None`) draining: while draining, a new INVITE
    /// gets `503 Service Unavailable` with `Retry-After`; everything else (in-dialog requests,
    /// CANCEL, ACK, REGISTER, responses) is handled as usual.
    pub fn set_draining(&mut self, retry_after: Option<u32>) {
        self.drain = retry_after;
    }

    /// Sets the load level directly: `Some(percent)` of new INVITEs (and REGISTERs beyond
    /// `[overload] register_share`) are refused with 503 until `set_load(None)` hands the level
    /// back to the engine's samples ([`Core::observe_load`]).
    pub fn set_load(&mut self, reduction: Option<u32>) {
        self.overload.set_reduction(reduction);
    }

    /// One loop turn's load as the engine measured it; moves the load level per `[overload]`.
    pub fn observe_load(&mut self, now: Instant, sample: overload::LoadSample) {
        self.overload.observe(&self.cfg.overload, now, sample);
    }

    /// The load level now: percent of new INVITEs refused (0: not shedding).
    pub fn load_level(&self) -> u32 {
        self.overload.reduction()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
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

    /// Hands every event for the operator's log to `log`, in order (after each batch).
    pub fn drain_notices(&mut self, log: impl FnMut(notice::Notice)) {
        self.notices.drain(..).for_each(log);
    }

    /// Hands every finished public call's CDR to `write`, in order (after each batch; only with
    /// `[policy] cdr` set are there any).
    pub fn drain_cdrs(&mut self, write: impl FnMut(cdr::Cdr)) {
        self.cdrs.drain(..).for_each(write);
    }

    /// Hands every pending journal operation to `apply`, in order, and counts them as written
    /// (for an engine whose journal cannot fail, or has none).
    pub fn drain_persist(&mut self, apply: impl FnMut(PersistOp<'_>)) {
        self.persist.for_each(apply);
        self.persist_written();
    }

    /// Hands every pending journal operation to `apply`, in order, and keeps them until the
    /// engine reports the write: [`Core::persist_written`] or [`Core::persist_failed`].
    pub fn pending_persist(&self, apply: impl FnMut(PersistOp<'_>)) {
        self.persist.for_each(apply);
    }

    /// The pending journal operations reached the kernel: the answers that depend on them may go.
    pub fn persist_written(&mut self) {
        self.persist.clear();
        self.durable.held.clear();
    }

    /// The pending journal operations could not be written: every binding change since the last
    /// [`Core::persist_written`] is rolled back in memory, and each REGISTER answer that reported
    /// one becomes `503` with `Retry-After` (see [`Durability`]).
    pub fn persist_failed(&mut self, now: Instant) {
        self.roll_back(now, 0);
        let held = std::mem::take(&mut self.durable.held);
        self.refuse_unjournaled(&held);
        self.durable.held = held;
        self.durable.held.clear();
    }

    /// Whether the engine's journal takes records now. While it does not, every REGISTER that
    /// would change a binding is rolled back at once and answered `503` with `Retry-After`.
    pub fn set_journal_available(&mut self, available: bool) {
        self.durable.journal_available = available;
    }

    /// REGISTERs refused because their change could not be journaled.
    pub fn unjournaled_refusals(&self) -> u64 {
        self.durable.refused
    }

    /// Undoes the pending journal operations from index `from` on, newest first.
    fn roll_back(&mut self, now: Instant, from: usize) {
        let undone = self.persist.split_off(from);
        let Parts {
            mut cx, registrar, ..
        } = self.parts(now);
        undone.for_each_undo(|key, old| registrar.revert(&mut cx, key, old));
    }

    /// Replaces each answer in `outbox` positions `held` (a REGISTER's 2xx) with a `503` that
    /// carries the same Via, From, To, Call-ID and CSeq.
    fn refuse_unjournaled(&mut self, held: &[usize]) {
        let mut copy = Vec::new();
        for &i in held {
            let Some(t) = self.out.transmits().get(i) else {
                continue;
            };
            copy.clear();
            copy.extend_from_slice(self.out.bytes(t));
            let Ok(answer) = sip::parse(&copy) else {
                continue;
            };
            self.durable.refused += 1;
            self.out.replace(i, |buf| {
                build::response(
                    &answer,
                    &Reply {
                        status: 503,
                        reason: "Service Unavailable - bindings cannot be stored",
                        fix: ViaFix::default(),
                        to_tag: None,
                        extra: JOURNAL_RETRY_AFTER,
                        body: None,
                    },
                    buf,
                )
            });
        }
    }

    /// After a REGISTER was handled: when it changed bindings (journal operations from `ops` on)
    /// its answers (outbox from `outs` on) wait for the journal write, or, with the journal
    /// unavailable, the change is undone now and the answer refused.
    fn after_register(&mut self, now: Instant, ops: usize, outs: usize) {
        if self.persist.len() == ops {
            return;
        }
        let answers = outs..self.out.len();
        if self.durable.journal_available {
            self.durable.held.extend(answers);
            return;
        }
        self.roll_back(now, ops);
        let answers: Vec<usize> = answers.collect();
        self.refuse_unjournaled(&answers);
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
                notices: &mut self.notices,
                cdrs: &mut self.cdrs,
                overload: &mut self.overload,
                flows: &mut self.flows,
                arrival: self.arrival,
            },
            registrar: &mut self.registrar,
            auth: &mut self.auth,
            proxy: &mut self.proxy,
            keepalive: &mut self.keepalive,
            cluster: &mut self.cluster,
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

    /// Hands every core-to-core note for another shard to `send`, in order (after each batch);
    /// the engine delivers each to that shard's [`Core::handle_shard_note`]
    /// (`proxy/features/remote.rs`: lines of placed calls across shards).
    pub fn drain_shard_notes(&mut self, send: impl FnMut(ShardId, &[u8])) {
        self.proxy.drain_shard_notes(send);
    }

    /// Handles a note another shard's core emitted ([`Core::drain_shard_notes`]).
    pub fn handle_shard_note(&mut self, now: Instant, from: ShardId, bytes: &[u8]) {
        let Parts { mut cx, proxy, .. } = self.parts(now);
        proxy.shard_note(&mut cx, from, bytes);
    }

    /// The devices of extension `number` in an answered call (placed calls handled on another
    /// shard included): each one's flow and the call's Call-ID (`proxy/features.rs`).
    pub fn devices_in_call(&self, number: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.proxy.lines().in_call(number)
    }

    /// Where a call to extension `number` goes, best first (q, then most recent registration).
    pub fn targets(&self, number: &[u8]) -> impl Iterator<Item = Target<'_>> + '_ {
        self.registrar
            .targets(number, Reach::new(&self.cfg, &self.flows))
    }

    /// Every live binding as a journal put `(key, value)`: the live set for journal compaction.
    pub fn for_each_binding_record(&self, record: impl FnMut(&[u8], &[u8])) {
        self.registrar.for_each_record(record);
    }

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) -> Inbound {
        // A message over a connection marks its flow open (on the shard that handles it, too).
        self.flows.seen(d.from, d.transport);
        self.arrival = d.transport;
        let start = self.out.len();
        let inbound = self.dispatch(now, d);
        // Over UDP from the address of a connection sipfork opened (a device or next hop
        // listening on one port for both): its answers go back over UDP (RFC 3261 §18.2.2).
        if d.transport == transport::Transport::Udp
            && !self.flows.is_empty()
            && self.flows.get(d.from).is_some()
        {
            self.out.keep_udp(start, d.from);
        }
        self.arrival = transport::Transport::Udp;
        inbound
    }

    /// The engine closed the connection with `peer` (on whichever shard owned it; the engine
    /// tells every shard): bindings registered over it are no longer targeted (a call to an
    /// extension left without a reachable device gets 480), and a trunk keep-alive in flight
    /// on it is sent again at once (`Keepalive::flow_closed`).
    pub fn flow_closed(&mut self, now: Instant, peer: SocketAddr, transport: transport::Transport) {
        if !transport.is_stream() {
            return;
        }
        self.flows.closed(peer);
        let Parts {
            mut cx, keepalive, ..
        } = self.parts(now);
        keepalive.flow_closed(&mut cx, peer, transport);
    }

    /// The connection the engine opened to `peer` over `transport` for a request of ours could
    /// not be set up (refused, unreachable, timed out; `core::transport::outbound`), or a TLS
    /// transmit found only a plain connection there: that flow is forgotten and every branch
    /// waiting on `peer` over `transport` ends as a 503 (RFC 3261 §8.1.3.1). A flow of another
    /// transport to the same address (a plain TCP one a TLS request must not take) stays.
    pub fn flow_failed(&mut self, now: Instant, peer: SocketAddr, transport: transport::Transport) {
        if self.flows.get(peer) == Some(transport) {
            self.flows.closed(peer);
        }
        let Parts {
            mut cx,
            proxy,
            keepalive,
            ..
        } = self.parts(now);
        proxy.transport_failed(&mut cx, peer, transport);
        keepalive.transport_failed(&mut cx, peer, transport);
    }

    fn dispatch(&mut self, now: Instant, d: Datagram<'_>) -> Inbound {
        // The per-source limit looks at the source before any parsing (responses are exempt:
        // they only match transactions of ours).
        if !sip::looks_like_response(d.bytes)
            && !self
                .overload
                .source_within_rate(&self.cfg.overload, now, d.from.ip())
            && !overload::exempt_source(&self.cfg, self.env.local, &d)
        {
            self.overload.count_rate_limited();
            return Inbound::Handled;
        }
        // Indexed in place (`parse_into`): the 1 KiB index is not moved out of a `Result`.
        let mut msg = sip::Message::empty();
        if let Err(err) = sip::parse_into(&mut msg, d.bytes) {
            self.refuse_unparsed(now, d, err);
            return Inbound::Handled;
        }
        let msg = msg;
        // Validated first, so that the ownership reads the parsed essentials instead of parsing
        // the same rows again; a datagram that fails is refused wherever it arrived (the answer
        // is stateless and goes back to its source), and one that passes on a shard that does
        // not own it is validated again by its owner (none, with steering).
        if msg.is_request() {
            self.dispatch_request(now, d, &msg)
        } else {
            self.dispatch_response(now, &msg, d.from)
        }
    }

    fn dispatch_request(&mut self, now: Instant, d: Datagram<'_>, msg: &Message<'_>) -> Inbound {
        let checked = sip::check_request(msg);
        if let Ok(e) = &checked {
            let owner = route::request_owner(msg, e, &self.cfg, self.env.shards);
            if let Some(owner) = self.foreign(owner) {
                return Inbound::ForShard(owner);
            }
        }
        self.metrics.requests += 1;
        match checked {
            Ok(e) => self.handle_request(now, msg, &e, d.from, d.peer_cert),
            // An ACK is never answered (RFC 3261 §17.2.1): a broken one is only counted.
            Err(_) if msg.method() == Some(Method::Ack) => self.refuse(Refusal::InvalidRequest),
            Err(err) => {
                self.refuse(Refusal::InvalidRequest);
                if let Disposition::Reply(status, reason) = err.disposition(true) {
                    let mut cx = self.cx(now);
                    reply_to(&mut cx, msg, d.from, status, reason, b"");
                }
            }
        }
        Inbound::Handled
    }

    fn dispatch_response(&mut self, now: Instant, msg: &Message<'_>, from: SocketAddr) -> Inbound {
        let checked = sip::check_response(msg);
        if let Ok(re) = &checked {
            if let Some(owner) = self.foreign(route::response_owner(re, self.env.shards)) {
                return Inbound::ForShard(owner);
            }
        }
        self.metrics.responses += 1;
        let Ok(re) = checked else {
            self.refuse(Refusal::MalformedResponse);
            return Inbound::Handled;
        };
        let ours = re
            .top_via
            .branch
            .and_then(|b| self.ids.read_branch(b, self.env.shards))
            .filter(|b| b.shard == self.env.shard);
        match ours {
            Some(ours) if ours.call.index == policy::keepalive::PROBE_CALL => {
                let Parts {
                    mut cx, keepalive, ..
                } = self.parts(now);
                if !keepalive.on_response(&mut cx, ours, from) {
                    self.refuse(Refusal::StrayResponse);
                }
            }
            Some(ours) => {
                let Parts { mut cx, proxy, .. } = self.parts(now);
                proxy.handle_response(&mut cx, msg, &re, ours);
            }
            None => self.refuse(Refusal::StrayResponse),
        }
        Inbound::Handled
    }

    /// `owner` when it is another shard (counted as a hand-off), `None` when this one.
    fn foreign(&mut self, owner: Option<ShardId>) -> Option<ShardId> {
        let owner = owner.filter(|&o| o != self.env.shard)?;
        self.metrics.handed_off += 1;
        Some(owner)
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
                let answerable = sip::salvage(d.bytes).filter(|m| {
                    m.first(sip::HeaderName::Via).is_some() && m.method() != Some(Method::Ack)
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
        cert: Option<&transport::peer_cert::PeerCert>,
    ) {
        let drain = self.drain;
        // Shedding (`overload`): decided before any handler runs; a new INVITE is refused where
        // the drain refuses it (after retransmissions, CANCEL, ACK and in-dialog requests are
        // matched), a REGISTER before the registrar. Emergency calls are never shed.
        let shed = match e.method {
            Method::Invite
                if e.to.tag.is_none()
                    && !self
                        .cfg
                        .policy
                        .is_emergency(&number::of_uri(&e.request_uri)) =>
            {
                self.overload
                    .sheds(&self.cfg.overload, overload::Shed::Invite)
            }
            Method::Register => self
                .overload
                .sheds(&self.cfg.overload, overload::Shed::Register),
            _ => false,
        };
        // A spiral: sipfork forwarded this request to itself (a follow-me stage ringing another
        // extension's devices); it was authenticated and admitted on its first pass.
        let spiral = from == self.env.local;
        let trusted = spiral || self.cfg.is_trusted(from.ip());
        // A trunk recognised by its certificate is never shut out with its address: a stranger
        // guessing passwords from the same NAT or cloud address does not block it.
        let (cfg, arrival) = (&self.cfg, self.arrival);
        let is_trunk = || cfg.trunk_of(from, arrival, cert.map(|c| &**c)).is_some();
        if !trusted
            && self.auth.source_blocked(now, from, is_trunk)
            && !self
                .cfg
                .policy
                .is_emergency(&number::of_uri(&e.request_uri))
        {
            // Emergency calls are never blocked ([[emergency]]).
            return self.refuse(Refusal::BlockedSource);
        }
        if msg.header_count() + build::ROWS_ADDED_BY_FORWARDING > sip::MAX_ROWS
            && e.method != Method::Ack
        {
            // Its forwarded copy (and the CANCEL built from it) could not be parsed again: refuse
            // it before any state exists (RFC 3261 §21.5.11).
            self.refuse(Refusal::TooManyRows);
            let mut cx = self.cx(now);
            return reply_to(
                &mut cx,
                msg,
                from,
                513,
                "Message Too Large - too many header rows",
                b"",
            );
        }
        let Parts {
            mut cx,
            registrar,
            auth,
            proxy,
            keepalive,
            cluster,
        } = self.parts(now);
        if e.method == Method::Register {
            if shed {
                return self.refuse_overloaded(now, msg, from);
            }
            let (ops, outs) = (cx.persist.len(), cx.out.len());
            registrar.handle_register(&mut cx, auth, msg, e, from);
            return self.after_register(now, ops, outs);
        }
        // §17.2.3 first: retransmissions, the ACK of a non-2xx, CANCEL, the ACK of a 2xx.
        let Matched::New(server_key) = proxy.match_request(&mut cx, msg, e, from) else {
            return;
        };
        if let Some((status, reason, extra)) = proxy_checks(&cx, msg, e) {
            return reply_to(&mut cx, msg, from, status, reason, &extra);
        }
        if e.to.tag.is_some() {
            // §16.12: inside a dialog only what our Record-Route token vouches for is relayed,
            // and only to the dialog's other leg (proxy/dialog.rs). Not challenged: the token is
            // the proof (DECISIONS.md).
            return proxy.in_dialog(&mut cx, msg, e, from, server_key);
        }
        if shed {
            return self.refuse_overloaded(now, msg, from);
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
        // A cluster branch from another node (a valid mark, never the source address alone).
        let from_cluster = match cluster::inbound(&cx, e, from) {
            cluster::Inbound::Unmarked => false,
            cluster::Inbound::Branch => {
                cluster.accepted += 1;
                true
            }
            cluster::Inbound::Forged => {
                cluster.refused += 1;
                return reply_to(&mut cx, msg, from, 403, "Forbidden - bad cluster mark", b"");
            }
        };
        let trusted = trusted || from_cluster;
        let resolved = resolve(&cx, e);
        // A trunk (a PBX at a static address) is authenticated by that address, or by its
        // TLS client certificate (`trunk_certificate`).
        let trunk = cx.cfg.trunk_of(from, cx.arrival, cert.map(|c| &**c));
        // Identity rows to add toward a trusted next hop (RFC 3325).
        let mut asserted = Vec::new();
        // Who places the call: its number when it is one of ours.
        let mut caller_number = (!trusted && trunk.is_none())
            .then(|| number::of_uri(&e.from.uri))
            .filter(|n| cx.cfg.extension(n).is_some());
        let mut caller = match &caller_number {
            Some(n) => party_of(&cx, n),
            None => Party::Outside,
        };
        let challenged = !matches!(resolved, Resolved::Proxy | Resolved::ForeignDomain);
        if let Some(t) = trunk {
            caller = party_of(&cx, t);
            caller_number = Some(std::borrow::Cow::Borrowed(t));
            let from_number = number::of_uri(&e.from.uri);
            // It keeps the From the PBX chose when that is one of its DIDs.
            let shown = match cx.cfg.did(&from_number) {
                Some(ext) if ext == t => &from_number[..],
                _ => t,
            };
            auth::identity::asserted_row(&cx, shown, &mut asserted);
        } else if challenged && auth.enabled() && !trusted {
            // Every initial request to a served domain proves who sent it before the number is
            // looked up, so known and unknown numbers get the same answers (no enumeration).
            let outcome = auth.check(
                &mut cx,
                msg,
                e,
                auth::ChallengeHeader::ProxyAuthenticate,
                from,
            );
            if auth.reply(
                &mut cx,
                msg,
                from,
                auth::ChallengeHeader::ProxyAuthenticate,
                &outcome,
            ) {
                return;
            }
            if let auth::AuthOutcome::Authorized { user } = outcome {
                if !auth::identity::from_matches(&cx, e, user) {
                    return reply_to(
                        &mut cx,
                        msg,
                        from,
                        403,
                        "Forbidden - From is another user's number",
                        b"",
                    );
                }
                caller = party_of(&cx, user);
                caller_number = Some(std::borrow::Cow::Borrowed(user));
                auth::identity::asserted_row(&cx, user, &mut asserted);
            }
        }
        let dialled = number::of_uri(&e.request_uri);
        if let (Some((feature, named)), Method::Invite, true) =
            (cx.cfg.features.lookup(&dialled), e.method, challenged)
        {
            // A feature code acts on the calls of the extension that dialled it, and only a
            // device of that extension (authenticated as it) may use it (proxy/features.rs).
            let owner = caller_number.as_deref().filter(|_| trunk.is_none());
            return proxy.feature_invite(&mut cx, msg, e, from, server_key, feature, owner, named);
        }
        let strip_identity = !trusted;
        let secure = transport::sips::requested(e);
        // Follow-me's stage ring times and the levels its external targets take.
        let (mut stage_rings, mut ext_levels) = (Vec::new(), Vec::new());
        let (targets, plan) = match resolved {
            Resolved::Proxy => {
                return match e.method {
                    Method::Options => reply_to(&mut cx, msg, from, 200, "OK", ALLOW_ACCEPT),
                    Method::Other(_) => {
                        reply_to(&mut cx, msg, from, 501, "Not Implemented", ALLOW_ACCEPT)
                    }
                    _ => reply_to(&mut cx, msg, from, 404, "Not Found", b""),
                }
            }
            Resolved::ForeignDomain => {
                return reply_to(
                    &mut cx,
                    msg,
                    from,
                    404,
                    "Not Found - domain not served here",
                    b"",
                )
            }
            Resolved::NotFound => return reply_to(&mut cx, msg, from, 404, "Not Found", b""),
            Resolved::Route(dest, transport) => {
                if secure && !transport::sips::tls_path(&cx, dest, transport) {
                    return sips_not_allowed(&mut cx, msg, from);
                }
                let target = ForkTarget {
                    uri: std::borrow::Cow::Borrowed(e.request_uri.raw()),
                    dest,
                    q: 1000,
                    registered_at: Instant::ZERO,
                    external: false,
                    // The next hop's configured transport, never the Request-URI's.
                    transport,
                };
                let plan = ForkPlan {
                    serial: false,
                    group_timeout: cx.cfg.proxy.group_timeout,
                    single_answer: false,
                    record_route: true,
                    to_extension: false,
                    strip_identity,
                    extra: &asserted,
                    holds: Default::default(),
                    stage_rings: None,
                    external_levels: None,
                    cdr: None,
                    routes_to_drop: None,
                };
                (vec![target], (plan, Party::Outside))
            }
            Resolved::Extension(ref number) => {
                let Some(policy) = cx.cfg.extension(number) else {
                    return reply_to(&mut cx, msg, from, 404, "Not Found", b"");
                };
                let mut plan = ForkPlan {
                    serial: policy.fork == crate::config::ForkMode::QGroups,
                    group_timeout: policy.group_timeout,
                    single_answer: policy.single_answer,
                    record_route: true,
                    to_extension: true,
                    strip_identity,
                    extra: b"",
                    holds: Default::default(),
                    stage_rings: None,
                    external_levels: None,
                    cdr: None,
                    routes_to_drop: None,
                };
                // A spiral of a follow-me stage rings the extension's devices only.
                let devices_only = spiral
                    && e.request_uri
                        .as_sip()
                        .is_some_and(|u| u.param(DEVICES_ONLY_PARAM).is_some());
                let followme = cx
                    .cfg
                    .followme(number)
                    .filter(|_| !devices_only && !from_cluster);
                let targets: Vec<ForkTarget> = if let Some(dest) = keepalive.pick(policy.trunk()) {
                    // A trunk: its static address, the number as dialled (a DID stays in the
                    // Request-URI and To); sips: for a sips: request (RFC 5630 §5.3).
                    let mut uri = transport::sips::scheme(secure).to_vec();
                    uri.extend_from_slice(&number::of_uri(&e.request_uri));
                    uri.push(b'@');
                    build::push_hostport(&mut uri, dest);
                    vec![ForkTarget {
                        uri: std::borrow::Cow::Owned(uri),
                        dest,
                        q: 1000,
                        registered_at: Instant::ZERO,
                        external: false,
                        // Its configured transport (`trunk = "sip:IP:port;transport=tls"`),
                        // never the request's.
                        transport: policy.trunk_transport(dest),
                    }]
                } else if let Some(fm) = followme {
                    let tenant = policy.tenant();
                    ext_levels.extend(cx.cfg.tenancy.path(tenant));
                    plan.external_levels = Some(&ext_levels);
                    let mut skipped = Vec::new();
                    let mut targets = followme_targets(
                        &cx,
                        registrar,
                        number,
                        fm,
                        tenant,
                        secure,
                        &mut stage_rings,
                        &mut skipped,
                    );
                    cx.notices.append(&mut skipped);
                    plan.stage_rings = Some(&stage_rings);
                    // A stage's `self` rings the extension's devices on the other nodes too
                    // (never for a sips: request: nodes are reached over UDP).
                    if let (Some(c), Some(dir), Method::Invite, false) = (
                        cx.cfg.cluster.as_ref(),
                        cluster.directory(),
                        e.method,
                        secure,
                    ) {
                        cluster.branches +=
                            cluster::followme_targets(c, dir, number, fm, &mut targets);
                    }
                    targets
                } else {
                    let mut targets: Vec<ForkTarget> = registrar
                        .targets(number, Reach::new(cx.cfg, cx.flows).secure(secure))
                        .map(|t| ForkTarget {
                            uri: std::borrow::Cow::Borrowed(t.contact),
                            dest: t.dest,
                            q: t.q,
                            registered_at: t.registered_at,
                            external: false,
                            transport: t.transport,
                        })
                        .collect();
                    // One branch per other node holding the number; a cluster branch rings
                    // local devices only (no loops). A follow-me stage's spiral to another
                    // extension rings that extension's devices on every node.
                    // Never for a sips: request (nodes are reached over UDP).
                    if let (Some(c), Some(dir), false, Method::Invite) = (
                        cx.cfg.cluster.as_ref(),
                        cluster.directory(),
                        from_cluster || (spiral && !devices_only) || secure,
                        e.method,
                    ) {
                        cluster.branches += cluster::remote_targets(c, dir, number, &mut targets);
                    }
                    targets
                };
                // A sips: request's devices are only sips: Contacts over TLS (`registrar::Reach`,
                // RFC 5630 §5.3); a trunk or a follow-me target without a TLS path fails as its
                // branch starts (`proxy::start_branch`).
                if targets.is_empty() && secure {
                    return sips_not_allowed(&mut cx, msg, from);
                }
                if targets.is_empty() {
                    return reply_to(&mut cx, msg, from, 480, "Temporarily Unavailable", b"");
                }
                (targets, (plan, party_of(&cx, number)))
            }
        };
        let (mut plan, callee) = plan;
        if e.method == Method::Invite && !spiral && !from_cluster {
            // A public call's CDR (emergency calls included, refusals too).
            let draft = cx
                .cfg
                .policy
                .cdr
                .as_ref()
                .and_then(|_| public_call_draft(&cx, e, caller, callee));
            if !cx.cfg.policy.is_emergency(&number::of_uri(&e.request_uri)) {
                let callee_number = match &resolved {
                    Resolved::Extension(n) => Some(&n[..]),
                    _ => None,
                };
                match admit(&cx, caller, caller_number.as_deref(), callee, callee_number) {
                    Ok(holds) => plan.holds = holds,
                    Err((status, reason, extra)) => {
                        if let Some(d) = draft {
                            let cdr = d.finish(cx.env, cx.now, status, cdr::Cause::Refused);
                            cx.cdrs.push(cdr);
                        }
                        return reply_to(&mut cx, msg, from, status, reason, extra);
                    }
                }
            }
            plan.cdr = draft;
        }
        proxy.start_call(&mut cx, msg, e, from, server_key, targets, plan);
    }

    /// A new request refused because the shard is overloaded (`overload::refuse`).
    fn refuse_overloaded(&mut self, now: Instant, msg: &Message<'_>, from: SocketAddr) {
        let mut cx = self.cx(now);
        overload::refuse(&mut cx, msg, from);
    }

    /// Fires every due timer, in deadline order.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.timers.poll_expired(now) {
            let Parts {
                mut cx,
                registrar,
                proxy,
                auth,
                keepalive,
                ..
            } = self.parts(now);
            match key {
                TimerKey::Txn { .. }
                | TimerKey::Group { .. }
                | TimerKey::Dialog { .. }
                | TimerKey::FeatureBye { .. } => proxy.on_timer(&mut cx, key),
                TimerKey::BindingExpiry { extension } => {
                    registrar.handle_expiry(&mut cx, extension);
                }
                TimerKey::AuthSweep => auth.sweep(&mut cx),
                TimerKey::Keepalive { probe } => keepalive.on_timer(&mut cx, probe),
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
            "SIP requests received (parsed; counted on their owning shard, an invalid one where it arrived)",
            &labels,
            self.metrics.requests,
        );
        sink.counter(
            "sipfork_responses_total",
            "SIP responses received (parsed; counted on their owning shard, an invalid one where it arrived)",
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
        self.keepalive.export_metrics(sink, &labels);
        if self.cfg.cluster.is_some() {
            self.cluster.export_metrics(sink, &labels);
        }
        sink.gauge(
            "sipfork_timers",
            "Armed timers in the shard's wheel",
            &labels,
            self.timers.len() as u64,
        );
        self.registrar.export_metrics(sink, &labels);
        sink.counter(
            "sipfork_registrations_unjournaled_total",
            "REGISTERs answered 503 because the journal could not store their change (rolled back)",
            &labels,
            self.durable.refused,
        );
        self.auth.export_metrics(sink, &labels);
        sink.counter(
            "sipfork_drain_refused_total",
            "New INVITEs answered 503 while the appliance drained before a stop",
            &labels,
            self.drain_refused,
        );
        self.overload.export_metrics(sink, &labels);
        if self.env.shard.0 == 0 {
            // The ledger is shared by every shard: written once.
            self.export_ledger(sink);
        }
    }

    fn export_ledger(&self, sink: &mut MetricSink) {
        let ledger = &self.cfg.ledger;
        sink.gauge(
            "sipfork_public_calls",
            "Public calls in progress (server level of the tenancy tree)",
            &[],
            u64::from(ledger.live(0)),
        );
        sink.counter(
            "sipfork_public_calls_refused_total",
            "Calls refused because the server level ([server] max_public_calls) was full",
            &[],
            ledger.refused(0),
        );
        for (i, t) in self.cfg.tenancy.nodes().iter().enumerate().skip(1) {
            let labels = [("tenant", t.name.as_str())];
            sink.gauge(
                "sipfork_tenant_public_calls",
                "Public calls in progress counted on a tenant",
                &labels,
                u64::from(ledger.live(i)),
            );
            sink.counter(
                "sipfork_tenant_refused_total",
                "Calls refused because a tenant's max_public_calls was full",
                &labels,
                ledger.refused(i),
            );
        }
    }
}

/// A `sips:` request none of whose targets is reachable over TLS: 480 with warn-code 380
/// (RFC 5630 §5.3).
fn sips_not_allowed(cx: &mut Cx<'_>, msg: &Message<'_>, from: SocketAddr) {
    let warning = transport::sips::warning(cx, transport::sips::NOT_ALLOWED);
    reply_to(cx, msg, from, 480, "Temporarily Unavailable", &warning);
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
    // Step 2: a URI scheme we cannot route on.
    if matches!(e.request_uri, sip::Uri::Other(_)) {
        return Some((416, "Unsupported URI Scheme", Vec::new()));
    }
    // A sips: request that crossed a hop without TLS (RFC 3261 §26.2.2 as amended by RFC 5630;
    // 480 with warn-code 381, `transport/sips.rs`). An ACK is never answered.
    if transport::sips::requested(e)
        && !transport::sips::arrived_securely(cx)
        && e.method != Method::Ack
    {
        let warning = transport::sips::warning(cx, transport::sips::REQUIRED);
        return Some((480, "Temporarily Unavailable", warning));
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

/// The Request-URI parameter that marks a follow-me spiral: ring the extension's devices only.
const DEVICES_ONLY_PARAM: &str = "sfdev";

/// The targets of extension `number`'s follow-me sequence, stage by stage (`q` = 1000 - stage),
/// with each stage's ring time pushed to `rings`: its own devices (this shard owns them);
/// another extension through a spiral to sipfork itself (that extension's shard rings its
/// devices, never its follow-me or voicemail); external numbers through their route, only if
/// `forward_external` holds on the forwarding extension's tenant chain; voicemail last, only if
/// the chain allows voicemail.
#[allow(clippy::too_many_arguments)] // `secure`: a sips: request's targets (RFC 5630)
fn followme_targets<'r>(
    cx: &Cx<'_>,
    registrar: &'r Registrar,
    number: &[u8],
    fm: &crate::config::followme::FollowMe,
    tenant: usize,
    secure: bool,
    rings: &mut Vec<crate::time::Duration>,
    skipped: &mut Vec<crate::core::notice::Notice>,
) -> Vec<ForkTarget<'r>> {
    use crate::config::followme::Target;
    let node = cx.cfg.tenancy.node(tenant);
    let owned = |uri: Vec<u8>, dest: SocketAddr, q: u16, external: bool| ForkTarget {
        uri: std::borrow::Cow::Owned(uri),
        dest,
        q,
        registered_at: Instant::ZERO,
        external,
        transport: transport::Transport::Udp,
    };
    let mut out = Vec::new();
    for (i, stage) in fm.stages.iter().enumerate() {
        let q = 1000u16.saturating_sub(i as u16);
        for t in &stage.targets {
            match t {
                Target::Own => {
                    let reach = Reach::new(cx.cfg, cx.flows).secure(secure);
                    let own = registrar.targets(number, reach);
                    out.extend(own.map(|b| ForkTarget {
                        uri: std::borrow::Cow::Borrowed(b.contact),
                        dest: b.dest,
                        q,
                        registered_at: b.registered_at,
                        external: false,
                        transport: b.transport,
                    }))
                }
                // A spiral to ourselves over UDP: no target of a sips: request.
                Target::Extension(_) if secure => {}
                Target::Extension(other) => {
                    let mut uri = b"sip:".to_vec();
                    uri.extend_from_slice(other);
                    uri.push(b'@');
                    build::push_hostport(&mut uri, cx.env.local);
                    uri.push(b';');
                    uri.extend_from_slice(DEVICES_ONLY_PARAM.as_bytes());
                    out.push(owned(uri, cx.env.local, q, false));
                }
                Target::External {
                    number: n,
                    next_hop,
                    transport,
                } if node.forward_external => {
                    // sips: for a sips: request, which then takes TLS or fails
                    // (`proxy::start_branch`; RFC 5630 §5.3).
                    let mut uri = transport::sips::scheme(secure).to_vec();
                    uri.extend_from_slice(n);
                    uri.push(b'@');
                    build::push_hostport(&mut uri, *next_hop);
                    // Over its route's configured transport, as a call to the number would go.
                    let mut target = owned(uri, *next_hop, q, true);
                    target.transport = *transport;
                    out.push(target);
                }
                Target::External { number: n, .. } => {
                    skipped.push(crate::core::notice::Notice::ExternalSkipped { number: n.clone() })
                }
            }
        }
        rings.push(stage.ring);
    }
    if let (Some((uri, dest)), true) = (&fm.voicemail, node.voicemail) {
        let q = 1000u16.saturating_sub(fm.stages.len() as u16);
        // Configured as `sip:…`: `sips:…` for a sips: request, like an external target.
        let rest = uri.as_bytes().get(4..).unwrap_or_default();
        let mut target = owned(
            [transport::sips::scheme(secure), rest].concat(),
            *dest,
            q,
            false,
        );
        // Over what its URI asks for (`;transport=tls|tcp`), as a registered Contact is.
        target.transport = transport::outbound::wanted(uri.as_bytes());
        out.push(target);
        rings.push(cx.cfg.proxy.timer_c);
    }
    out
}

/// The policy party a number is: a trunk or an extension of its tenant, else outside.
fn party_of(cx: &Cx<'_>, number: &[u8]) -> Party {
    match cx.cfg.extension(number) {
        Some(p) if !p.trunk().is_empty() => Party::Trunk { tenant: p.tenant() },
        Some(p) => Party::Extension { tenant: p.tenant() },
        None => Party::Outside,
    }
}

/// An answer that refuses a call: status, reason phrase, extra rows.
type Refused = (u16, &'static str, &'static [u8]);

/// Policy admission of a new call (O(1), a few atomics): all-busy, the caller number's outgoing
/// limit, the public-call levels of the tenancy tree. The holds go with the call.
fn admit(
    cx: &Cx<'_>,
    caller: Party,
    caller_number: Option<&[u8]>,
    callee: Party,
    callee_number: Option<&[u8]>,
) -> Result<policy::Holds, Refused> {
    let cfg = cx.cfg;
    let mut holds = policy::Holds::default();
    let busy_line = |n: Option<&[u8]>| {
        let n = n?;
        cfg.extension(n)
            .filter(|p| p.all_busy())
            .and_then(|_| cfg.line(n))
    };
    holds.lines = [busy_line(caller_number), busy_line(callee_number)];
    if let Some(line) = holds.lines[1] {
        if cfg.ledger.line(line, LineCount::InCall) > 0 {
            return Err((486, "Busy Here", b""));
        }
    }
    if let Some(n) = caller_number {
        if let (Some(limit), Some(line)) = (
            cfg.extension(n).and_then(|p| p.max_outgoing_calls()),
            cfg.line(n),
        ) {
            holds.outgoing = Some(
                cfg.ledger
                    .hold_line(line, LineCount::Outgoing, Some(limit))
                    .ok_or((403, "Forbidden - too many outgoing calls", &b""[..]))?,
            );
        }
    }
    let mut levels = [0usize; policy::MAX_CALL_LEVELS];
    let n = policy::public_levels(&cfg.tenancy, caller, callee, &mut levels);
    if n > 0 {
        holds.admission = Some(
            cfg.ledger
                .admit(&levels[..n])
                .map_err(|_| refused_by_limit(cx))?,
        );
    }
    Ok(holds)
}

/// The CDR draft of a call between `caller` and `callee` when it is public (`core::cdr`).
fn public_call_draft(
    cx: &Cx<'_>,
    e: &Essentials<'_>,
    caller: Party,
    callee: Party,
) -> Option<Box<cdr::Draft>> {
    let public = |p: Party| matches!(p, Party::Outside | Party::Trunk { .. });
    let side = cdr::PublicSide::of(public(caller), public(callee))?;
    let mut levels = [0usize; policy::MAX_CALL_LEVELS];
    let n = policy::public_levels(&cx.cfg.tenancy, caller, callee, &mut levels);
    Some(cdr::Draft::new(
        cx.cfg,
        cx.env,
        cx.now,
        e,
        levels[..n].iter().copied(),
        side,
    ))
}

/// A call no tenancy level has room for: `[policy] refuse_with` (503 with Q.850 cause 34, or 486
/// with cause 17).
fn refused_by_limit(cx: &Cx<'_>) -> Refused {
    match cx.cfg.policy.refuse_with {
        486 => (
            486,
            "Busy Here",
            b"Reason: Q.850;cause=17;text=\"User busy\"\r\n",
        ),
        _ => (
            503,
            "Service Unavailable",
            b"Reason: Q.850;cause=34;text=\"No circuit/channel available\"\r\n",
        ),
    }
}

/// §16.5: where the Request-URI leads.
fn resolve<'b>(cx: &Cx<'_>, e: &Essentials<'b>) -> Resolved<'b> {
    if let sip::Uri::Sip(u) = &e.request_uri {
        if !cx.cfg.is_local_domain(u.host_raw, u.port) {
            return Resolved::ForeignDomain;
        }
        if u.user.is_none() {
            return Resolved::Proxy;
        }
    }
    let number = number::of_uri(&e.request_uri);
    if cx.cfg.extension(&number).is_some() {
        Resolved::Extension(number)
    } else if let Some(ext) = cx.cfg.did(&number) {
        Resolved::Extension(std::borrow::Cow::Owned(ext.to_vec()))
    } else if let Some(route) = cx.cfg.route_for(&number) {
        Resolved::Route(route.next_hop.addr, route.next_hop.transport)
    } else {
        Resolved::NotFound
    }
}
