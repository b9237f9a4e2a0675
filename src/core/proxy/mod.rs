//! The stateful forking proxy: RFC 3261 §16 on top of the §17 transaction machines.
//!
//! - Request processing (§16.3–16.6) is [`Proxy::start_call`]: the core has validated the
//!   request, authenticated it and resolved its target set; the proxy creates the server
//!   transaction, answers 100 Trying, and forwards one branch per target (all at once, or one
//!   q-group at a time).
//! - Response processing (§16.7) lives in `response.rs`, CANCEL (§9.1, §16.10) and the timers
//!   that cancel (Timer C, group timeout) in `cancel.rs`, in-dialog routing (§16.12) and the ACK
//!   for 2xx in `dialog.rs`.
//!
//! Invariant: a call's key is reachable from the wire only through our authenticated Via branch
//! or Record-Route token, and every path that ends a transaction ends in `Proxy::reap`, which
//! frees the call once nothing of it can receive a message any more.

pub mod call;
mod cancel;
mod dialog;
pub mod features;
mod response;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};

use crate::core::cdr::{self, Cause};
use crate::core::context::Cx;
use crate::core::ids::Ids;
use crate::core::metrics::{MetricSink, ReasonCounters};
use crate::core::reply::{response_destination, write_answer, Answer};
use crate::core::route::ROUTE_TOKEN_PARAM;
use crate::core::slab::{Key, Slab};
use crate::core::transaction::client_invite::ClientInvite;
use crate::core::transaction::client_non_invite::ClientNonInvite;
use crate::core::transaction::server_invite::ServerInvite;
use crate::core::transaction::server_non_invite::ServerNonInvite;
use crate::core::transaction::{Sched, Timer, TxnSlot};
use crate::core::TimerKey;
use crate::sip::build::{self, Forward, ViaFix};
use crate::sip::{Essentials, HeaderName, Message, Method, SipUri};
use crate::time::Duration;

pub use call::{Branch, BranchRole, Call, CancelReason};

/// One target of a fork: the Request-URI to use and where to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkTarget<'a> {
    /// Request-URI of the branch (the binding's Contact, or the received R-URI for a next hop);
    /// borrowed from the location table or the request while forking, owned while a q-group
    /// waits its turn.
    pub uri: std::borrow::Cow<'a, [u8]>,
    /// Where the branch's requests go.
    pub dest: SocketAddr,
    /// q-value in thousandths (grouping for serial forking).
    pub q: u16,
    /// When the binding was registered (the branch cap keeps the most recent).
    pub registered_at: crate::time::Instant,
    /// Outside the platform, reached by follow-me: the call becomes public when it rings.
    pub external: bool,
    /// What the target asks to be reached over when no flow to `dest` is open: TCP for a
    /// device's `;transport=tcp` Contact registered over UDP or a next hop configured so (the
    /// engine then opens a connection, `core::transport::outbound`); UDP otherwise.
    pub transport: crate::core::transport::Transport,
}

/// How to fork one call (from config: the `[proxy]` section and per-extension overrides, and
/// what authentication and policy established about it).
#[derive(Debug)]
pub struct ForkPlan<'a> {
    /// Ring q-groups one after the other instead of everything at once.
    pub serial: bool,
    /// How long a q-group rings before the next one starts.
    pub group_timeout: Duration,
    /// ACK and BYE late 2xx instead of forwarding them.
    pub single_answer: bool,
    /// Record-Route (initial INVITEs to extensions).
    pub record_route: bool,
    /// The call is to one of our extensions.
    pub to_extension: bool,
    /// Drop P-Asserted-Identity / P-Preferred-Identity rows (the sender is not trusted).
    pub strip_identity: bool,
    /// Header rows to add to every branch (CRLF-terminated): the P-Asserted-Identity of an
    /// authenticated sender toward a trusted next hop.
    pub extra: &'a [u8],
    /// What the call holds on the shared policy counters (`core::policy`).
    pub holds: crate::core::policy::Holds,
    /// Follow-me: the targets' `q` numbers the stages (`1000 - stage`), stage `i` rings
    /// `stage_rings[i]`, and the branch cap counts over all stages.
    pub stage_rings: Option<&'a [Duration]>,
    /// Follow-me: the levels an external target's stage takes (`Call::external_levels`).
    pub external_levels: Option<&'a [usize]>,
    /// The CDR of a public call, when `[policy] cdr` is set.
    pub cdr: Option<Box<crate::core::cdr::Draft>>,
    /// Which of the request's first two Route values are ours, when the caller already read
    /// them (`record_route::routes_to_drop`; in-dialog requests: with the route token);
    /// `None`: the first branches read them.
    pub routes_to_drop: Option<(bool, bool)>,
}

impl ForkPlan<'_> {
    /// A plan for relaying a request to a single hop (in-dialog requests): no Record-Route, no
    /// groups.
    pub fn relay(strip_identity: bool) -> ForkPlan<'static> {
        ForkPlan {
            serial: false,
            group_timeout: Duration::ZERO,
            single_answer: false,
            record_route: false,
            to_extension: false,
            strip_identity,
            extra: b"",
            holds: crate::core::policy::Holds::default(),
            stage_rings: None,
            external_levels: None,
            cdr: None,
            routes_to_drop: None,
        }
    }
}

/// Counters of the proxy, by event.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    /// Initial INVITE accepted for forking.
    Call,
    /// Non-INVITE request forwarded statefully.
    NonInviteRequest,
    /// Branch created.
    Branch,
    /// A 2xx went upstream as the call's answer.
    Answered,
    /// A later 2xx went upstream (RFC 3261 behaviour).
    ExtraAnswer,
    /// A late 2xx was ACKed and BYEd by sipfork.
    LateAnswerTornDown,
    /// CANCEL sent to a branch.
    CancelSent,
    /// Caller CANCEL matched a call.
    CallerCancel,
    /// CANCEL without a matching call: 481.
    CancelUnmatched,
    /// Request retransmission absorbed or answered from the server transaction.
    Retransmission,
    /// ACK for a non-2xx absorbed.
    AckAbsorbed,
    /// ACK for a 2xx forwarded.
    AckForwarded,
    /// In-dialog request forwarded.
    InDialog,
    /// Response without a live call or branch (stray): dropped.
    StrayResponse,
    /// Timer C fired on a branch.
    TimerC,
    /// A q-group timed out and the next one started.
    GroupTimeout,
    /// Timer B / F: a branch never answered.
    BranchTimeout,
    /// The caller's CANCEL crossed a 2xx of the answering device.
    RaceCancelCrossed2xx,
    /// A 2xx arrived from a branch we had already cancelled.
    Race2xxAfterCancel,
    /// A second device answered after the first (double answer).
    RaceDoubleAnswer,
    /// A branch was cancelled before it sent any provisional; its CANCEL waited for one.
    RaceCancelBeforeProvisional,
    /// Dialog ended by BYE.
    DialogEnded,
    /// Dialog record dropped after the maximum call duration without BYE.
    DialogExpired,
    /// A call had more targets than `max_branches`; the rest were not rung.
    BranchesCapped,
    /// An in-dialog request without a valid token of a live dialog: 403/481, nothing relayed.
    InDialogRefused,
    /// An ACK that fits no transaction and no dialog of ours: dropped.
    AckDropped,
    /// A CANCEL from another address than its INVITE's: 481, nothing cancelled.
    CancelWrongSource,
    /// Follow-me's external targets were not rung: no public-call room left.
    ExternalRefused,
    /// A branch not sent: the request came over TCP/TLS, is over 1300 bytes, and its target is
    /// reached over UDP.
    BranchTooLarge,
    /// A branch ended by a connection to its target that could not be opened (503, RFC 3261
    /// §8.1.3.1).
    BranchTransportError,
    /// A response for a caller whose request came over a connection that has closed: not sent
    /// (RFC 3261 §18.2.2: never over UDP instead).
    ResponseConnectionClosed,
}

const EVENTS: [&str; 31] = [
    "call",
    "non_invite_request",
    "branch",
    "answered",
    "extra_answer",
    "late_answer_torn_down",
    "cancel_sent",
    "caller_cancel",
    "cancel_unmatched",
    "retransmission",
    "ack_absorbed",
    "ack_forwarded",
    "in_dialog",
    "stray_response",
    "timer_c",
    "group_timeout",
    "branch_timeout",
    "race_cancel_crossed_2xx",
    "race_2xx_after_cancel",
    "race_double_answer",
    "race_cancel_before_provisional",
    "dialog_ended",
    "dialog_expired",
    "branches_capped",
    "in_dialog_refused",
    "ack_dropped",
    "cancel_wrong_source",
    "external_refused",
    "branch_too_large",
    "branch_transport_error",
    "response_connection_closed",
];

/// Keys are already keyed 128-bit digests: hashing them again would only cost time.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

/// The forking proxy of one shard.
#[derive(Default)]
pub struct Proxy {
    calls: Slab<Call>,
    index: HashMap<u128, Key, BuildHasherDefault<PassThrough>>,
    events: ReasonCounters<31>,
    dialogs: u64,
    /// Reused buffers for the Via and Record-Route values of forwarded requests.
    scratch_via: Vec<u8>,
    scratch_rr: Vec<u8>,
    /// A branch's own Record-Route values (`record_route::entries`), reused by every branch.
    scratch_rr_sides: Vec<u8>,
    /// The answered calls of this shard's extensions (`features.rs`).
    lines: features::Lines,
}

/// What [`Proxy::match_request`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// The request belonged to a server transaction and was handled.
    Handled,
    /// No server transaction: the request is new. Its key, for the call that
    /// [`Proxy::start_call`] may start for it.
    New(ServerKey),
}

/// A new request's §17.2.3 server transaction key, hashed once by [`Proxy::match_request`]
/// and handed to [`Proxy::start_call`], which indexes the call by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerKey(u128);

impl ForkTarget<'_> {
    fn into_owned(self) -> ForkTarget<'static> {
        ForkTarget {
            uri: std::borrow::Cow::Owned(self.uri.into_owned()),
            dest: self.dest,
            q: self.q,
            registered_at: self.registered_at,
            external: self.external,
            transport: self.transport,
        }
    }
}

impl Proxy {
    /// An empty proxy.
    pub fn new() -> Self {
        Self::default()
    }

    fn count(&mut self, e: Event) {
        self.events.bump(e as usize);
    }

    /// Live calls (transactions and dialogs) on this shard.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Live dialogs on this shard.
    pub fn dialogs(&self) -> u64 {
        self.dialogs
    }

    /// Writes the proxy's counters.
    pub fn export_metrics(&self, sink: &mut MetricSink, labels: &[(&'static str, &str)]) {
        self.events.export(
            sink,
            "sipfork_proxy_events_total",
            "Proxy events: calls, branches, answers, cancels, races and their outcomes",
            &EVENTS,
            labels,
        );
        sink.gauge(
            "sipfork_proxy_calls",
            "Calls with live transactions or dialogs",
            labels,
            self.calls.len() as u64,
        );
        sink.gauge(
            "sipfork_proxy_dialogs",
            "Dialogs established through sipfork and not yet ended",
            labels,
            self.dialogs,
        );
        self.lines.export_metrics(sink, labels);
    }

    /// Matches a request against the server transactions (§17.2.3): retransmissions are
    /// answered from the transaction, an ACK for a non-2xx final is absorbed, and a CANCEL
    /// cancels its call (§16.10). A CANCEL or ACK that matches nothing is handled too: 481 for
    /// the CANCEL (stateless), loose-routed forwarding for the ACK of a 2xx.
    pub fn match_request(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
    ) -> Matched {
        let class: &[u8] = match e.method {
            Method::Invite | Method::Ack | Method::Cancel => b"INVITE",
            m => m.as_bytes(),
        };
        let new_key = server_key(cx.ids, e, class);
        let found = self.index.get(&new_key).copied();
        match (e.method, found) {
            (Method::Cancel, Some(call)) => {
                self.handle_cancel(cx, call, req, e, from);
                Matched::Handled
            }
            (Method::Cancel, None) => {
                self.count(Event::CancelUnmatched);
                crate::core::reply::no_such_transaction(cx, req, from);
                Matched::Handled
            }
            (Method::Ack, Some(call)) => {
                self.count(Event::AckAbsorbed);
                self.ack_matched(cx, call);
                Matched::Handled
            }
            (Method::Ack, None) => {
                self.ack_in_dialog(cx, req, e, from);
                Matched::Handled
            }
            (_, Some(call)) => {
                self.count(Event::Retransmission);
                self.retransmission(cx, call);
                Matched::Handled
            }
            (_, None) => Matched::New(ServerKey(new_key)),
        }
    }

    fn retransmission(&mut self, cx: &mut Cx<'_>, key: Key) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let resend = match &call.server {
            Server::Invite(t) => {
                t.on_retransmission()
                    == crate::core::transaction::server_invite::OnRequest::ResendLast
            }
            Server::NonInvite(t) => {
                t.on_retransmission()
                    == crate::core::transaction::server_non_invite::OnRequest::ResendLast
            }
        };
        if resend && !call.last_response.is_empty() {
            cx.out.push(call.upstream, &call.last_response);
        }
    }

    fn ack_matched(&mut self, cx: &mut Cx<'_>, key: Key) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if let Server::Invite(t) = &mut call.server {
            let mut s = sched(cx, key, TxnSlot::Server);
            t.on_ack(&mut s);
        }
    }

    /// Starts a call: server transaction, 100 Trying for an INVITE, and the first branches.
    /// `targets` must not be empty; the caller answers 404/480 for an empty target set.
    /// `server_key`: the request's, as [`Proxy::match_request`] found no transaction for it.
    #[allow(clippy::too_many_arguments)]
    pub fn start_call(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
        ServerKey(server_key): ServerKey,
        mut targets: Vec<ForkTarget<'_>>,
        plan: ForkPlan<'_>,
    ) {
        let is_invite = e.method == Method::Invite;
        let upstream = response_destination(&e.top_via, from);
        let fix = ViaFix::for_source(&e.top_via, from);
        let cap = usize::try_from(cx.cfg.proxy.max_branches)
            .unwrap_or(usize::MAX)
            .max(1);
        let mut skipped = 0;
        let mut groups: Vec<Vec<ForkTarget<'_>>> = Vec::new();
        if plan.serial || plan.stage_rings.is_some() {
            // Equal-q groups (q-groups, or follow-me stages), highest q first; each group rings
            // in parallel.
            targets.sort_by_key(|t| std::cmp::Reverse(t.q));
            for t in targets {
                match groups.last_mut() {
                    Some(g) if g.first().is_some_and(|f| f.q == t.q) => g.push(t),
                    _ => groups.push(vec![t]),
                }
            }
        } else {
            groups.push(targets);
        }
        if plan.stage_rings.is_some() {
            // Follow-me: at most max_branches over every stage, earliest stages first.
            let mut left = cap;
            for g in &mut groups {
                let keep = g.len().min(left);
                skipped += g.len() - keep;
                g.truncate(keep);
                left -= keep;
            }
        } else {
            // The cap applies per q-group.
            for g in &mut groups {
                if g.len() > cap {
                    // DECISIONS.md: the most recently registered devices ring.
                    g.sort_by_key(|t| std::cmp::Reverse(t.registered_at));
                    skipped += g.len() - cap;
                    g.truncate(cap);
                }
            }
        }
        if skipped > 0 {
            // Counted only: a log line per capped call would cost on the hot path.
            self.count(Event::BranchesCapped);
        }
        // A follow-me stage's ring time by its number (`q` = 1000 - stage).
        let ring_of = |g: &[ForkTarget<'_>]| {
            let stage = g
                .first()
                .map_or(0, |t| usize::from(1000u16.saturating_sub(t.q)));
            plan.stage_rings
                .and_then(|r| r.get(stage).copied())
                .unwrap_or(plan.group_timeout)
        };
        let mut groups: Vec<(Vec<ForkTarget<'_>>, Duration)> = groups
            .into_iter()
            .filter(|g| !g.is_empty())
            .map(|g| {
                let ring = ring_of(&g);
                (g, ring)
            })
            .collect();
        groups.reverse(); // pop() yields the highest group first
        let (first, first_ring) = groups.pop().unwrap_or((Vec::new(), plan.group_timeout));
        let groups: Vec<(Vec<ForkTarget<'static>>, Duration)> = groups
            .into_iter()
            .map(|(g, ring)| (g.into_iter().map(ForkTarget::into_owned).collect(), ring))
            .collect();
        // The caller's Contact is its leg's remote target only when nothing stands between
        // (one Via, no Record-Route); behind another proxy the flow is the way back, and over
        // a connection the connection is. Its first Contact, parsed once for that and for the
        // notes a recorded INVITE's first 2xx reads (`expiry::CallerNotes`).
        let direct = !cx.arrival.is_stream()
            && !has_second_via(req, &e.top_via)
            && req.record_routes().next().is_none();
        // (An INVITE with Record-Route rows keeps no notes: `Ends` reads its route set from
        // a parse at the 2xx, so its Contact is not parsed here for them.)
        let noted = is_invite && plan.record_route && !req.has(HeaderName::RecordRoute);
        let contact = (direct || noted)
            .then(|| req.contacts().next().and_then(Result::ok))
            .flatten();
        let caller_target = direct
            .then(|| contact.as_ref().and_then(contact_uri_destination))
            .flatten();
        let caller_notes = noted
            .then(|| dialog::expiry::CallerNotes::of(req, e, contact.as_ref()))
            .flatten();
        let call = Call {
            is_invite,
            server: if is_invite {
                Server::Invite(ServerInvite::start_over(cx.arrival.is_stream()))
            } else {
                Server::NonInvite(ServerNonInvite::start_over(cx.arrival.is_stream()))
            },
            server_key,
            upstream,
            upstream_transport: cx.arrival,
            fix,
            request: Some(req.bytes().into()),
            // One allocation sized for the largest response it will usually hold.
            last_response: Vec::with_capacity(req.bytes().len() + 256),
            branches: Vec::with_capacity(first.len()),
            pending_groups: groups,
            group: 0,
            group_timer: None,
            best: None,
            challenges: Vec::new(),
            cancelled: false,
            declined: false,
            outcome: call::Outcome::Pending,
            loop_hash: loop_hash(cx.ids, e, req),
            single_answer: plan.single_answer,
            dialogs: Vec::new(),
            dialog_timer: None,
            group_timeout: first_ring,
            external_levels: plan.external_levels.map(Into::into),
            last_group_times_out: plan.stage_rings.is_some(),
            to_extension: plan.to_extension,
            record_route: plan.record_route,
            caller_tag: e.from.tag.map_or(0, |t| dialog::tag_hash(cx, t)),
            caller_target,
            caller_notes,
            strip_identity: plan.strip_identity,
            extra: plan.extra.into(),
            holds: plan.holds,
            cdr: plan.cdr,
            ends: None,
            feature: None,
            secure: crate::core::transport::sips::requested(e),
        };
        let key = self.calls.insert(call);
        self.index.insert(server_key, key);
        self.count(if is_invite {
            Event::Call
        } else {
            Event::NonInviteRequest
        });
        if is_invite {
            // §16.2 / §17.2.1: 100 Trying at once quenches the caller's retransmissions.
            // From the request as parsed on arrival (the call stores a copy of its bytes).
            let trying = Answer {
                status: 100,
                reason: "Trying",
                extra: b"",
            };
            self.respond_to(cx, key, (req, e), trying);
        }
        self.fork(cx, key, req, e, first, plan.routes_to_drop);
        self.after_fork(cx, key);
    }

    /// Forwards one branch per target of the next group; arms the group timer when more
    /// groups wait.
    fn start_group(&mut self, cx: &mut Cx<'_>, key: Key, targets: Vec<ForkTarget<'static>>) {
        let Some(request) = self.calls.get_mut(key).and_then(|c| c.request.take()) else {
            return;
        };
        // Later q-groups fork from the stored copy of the request.
        if let Ok(req) = crate::sip::parse(&request) {
            if let Ok(e) = crate::sip::check_request(&req) {
                self.fork(cx, key, &req, &e, targets, None);
            }
        }
        if let Some(call) = self.calls.get_mut(key) {
            call.request = Some(request);
        }
        self.after_fork(cx, key);
    }

    /// Forwards one branch per target. `routes_to_drop`: [`ForkPlan::routes_to_drop`].
    fn fork(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        req: &Message<'_>,
        e: &Essentials<'_>,
        targets: Vec<ForkTarget<'_>>,
        routes_to_drop: Option<(bool, bool)>,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let mut targets = targets;
        if targets.iter().any(|t| t.external) && call.holds.admission.is_none() {
            // Follow-me reaches outside: the call is public from now on, if there is room.
            if let Some(levels) = call.external_levels.as_deref() {
                match cx.cfg.ledger.admit(levels) {
                    Ok(a) => {
                        if cx.cfg.policy.cdr.is_some() && call.cdr.is_none() {
                            call.cdr = Some(cdr::Draft::new(
                                cx.cfg,
                                cx.env,
                                cx.now,
                                e,
                                a.levels(),
                                cdr::PublicSide::Callee,
                            ));
                        }
                        call.holds.admission = Some(a);
                    }
                    Err(_) => {
                        self.events.bump(Event::ExternalRefused as usize);
                        targets.retain(|t| !t.external);
                    }
                }
            }
        }
        // What every branch shares is worked out once.
        let rr = &mut self.scratch_rr;
        rr.clear();
        if call.record_route && call.is_invite {
            rr.extend_from_slice(b"sip:");
            build::push_hostport(rr, cx.env.local);
            rr.extend_from_slice(b";lr;");
            rr.extend_from_slice(ROUTE_TOKEN_PARAM.as_bytes());
            rr.push(b'=');
            cx.ids.write_route_token(key, e.call_id, rr);
        }
        let extra = std::mem::take(&mut call.extra);
        let (drop_first_route, drop_second_route) = routes_to_drop
            .unwrap_or_else(|| crate::core::transport::record_route::routes_to_drop(cx, req));
        let mut shared = Shared {
            record_route: (!rr.is_empty()).then_some(&rr[..]),
            rr_sides: &mut self.scratch_rr_sides,
            drop_first_route,
            drop_second_route,
            max_forwards: e.max_forwards.map_or(70, |m| m.saturating_sub(1)),
            strip_identity: call.strip_identity,
            extra: &extra,
            top_via: &e.top_via,
        };
        for t in targets {
            if call.branches.len() >= usize::from(u8::MAX) {
                break;
            }
            match start_branch(cx, key, call, req, &mut shared, t, &mut self.scratch_via) {
                Ok(()) => self.events.bump(Event::Branch as usize),
                Err(failed) => self.events.bump(failed as usize),
            }
        }
        call.extra = extra;
    }

    /// Arms the group timer when more q-groups wait; answers at once when nothing could be
    /// forwarded.
    fn after_fork(&mut self, cx: &mut Cx<'_>, key: Key) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if (!call.pending_groups.is_empty() || call.last_group_times_out) && call.is_invite {
            let at = cx.now + call.group_timeout;
            call.group_timer = Some(cx.timers.insert(at, TimerKey::Group { call: key }));
        }
        if call.branches.is_empty() {
            self.complete(cx, key);
        }
    }

    /// Writes a response we generate ourselves for the call's request and sends it upstream
    /// through the server transaction.
    fn respond_local(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        status: u16,
        reason: &str,
        extra: &[u8],
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(request) = call.request.as_deref() else {
            return;
        };
        let Ok(req) = crate::sip::parse(request) else {
            return;
        };
        let tag = cx.ids.tag();
        let answer = Answer {
            status,
            reason,
            extra,
        };
        let last = &mut call.last_response;
        last.clear();
        write_answer(&req, None, call.fix, &tag, answer, last);
        self.send_upstream(cx, key, status);
    }

    /// [`Proxy::respond_local`] from the call's request as already parsed (`req`: the request
    /// whose bytes the call stores; `e`: its essentials).
    fn respond_to(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        (req, e): (&Message<'_>, &Essentials<'_>),
        answer: Answer<'_>,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let tag = cx.ids.tag();
        let last = &mut call.last_response;
        last.clear();
        write_answer(req, Some(&e.top_via), call.fix, &tag, answer, last);
        self.send_upstream(cx, key, answer.status);
    }

    /// Sends `call.last_response` (status `status`) upstream if the server transaction allows
    /// it, and updates the call's state. Returns whether it was sent.
    fn send_upstream(&mut self, cx: &mut Cx<'_>, key: Key, status: u16) -> bool {
        let Some(call) = self.calls.get_mut(key) else {
            return false;
        };
        // Every response to the client leaves through here: it carries the reduction of now
        // (RFC 7339), whenever it was built (a best response held for a later group, say).
        crate::core::overload::mark_response(cx, &mut call.last_response);
        let allowed = {
            let mut s = sched(cx, key, TxnSlot::Server);
            match &mut call.server {
                Server::Invite(t) if status < 200 => t.send_provisional(),
                Server::Invite(t) => t.send_final(status, &mut s),
                Server::NonInvite(t) => t.send(status, &mut s),
            }
        };
        if !allowed {
            return false;
        }
        if !push_last_response(cx, call) {
            self.events.bump(Event::ResponseConnectionClosed as usize);
        }
        if status >= 300 {
            // A failed call holds no policy counts any more.
            call.holds.release();
            if call.outcome == call::Outcome::Pending {
                let cause = if call.cancelled {
                    Cause::Cancelled
                } else {
                    Cause::Failed
                };
                cdr::end(&mut call.cdr, cx, status, cause);
            }
        } else if status >= 200 {
            if let Some(d) = call.cdr.as_mut() {
                d.answered(cx.env, cx.now, status);
            }
        }
        if status >= 200 {
            if call.outcome == call::Outcome::Pending {
                call.outcome = if status < 300 {
                    call::Outcome::Answered
                } else {
                    call::Outcome::Failed
                };
            }
            // Once the final went up nothing forks or answers from the request any more (a late
            // 2xx is torn down from the 2xx itself).
            call.request = None;
        }
        true
    }
}

use call::Server;

/// Queues `call.last_response` for the caller over the transport its request came on: a UDP
/// caller's answers stay on UDP even while sipfork holds a connection to its address (RFC 3261
/// §18.2.2), the server transaction's retransmissions (Timer G, §17.2.1) as well as the first.
/// A caller whose request came over a connection (TCP, TLS, WS, WSS) no longer open gets
/// nothing: §18.2.2 sends such a response over a new connection to the Via's address or not
/// at all, never over UDP (a TLS caller's would leave in cleartext), and sipfork opens no
/// connection to an address a request names itself (`transport::outbound`). Returns whether
/// it was queued.
#[must_use]
fn push_last_response(cx: &mut Cx<'_>, call: &Call) -> bool {
    let transport = call.upstream_transport;
    if transport.is_stream() && cx.flows.get(call.upstream) != Some(transport) {
        return false;
    }
    cx.out.push(call.upstream, &call.last_response);
    if call.upstream_transport == crate::core::transport::Transport::Udp
        && cx.flows.get(call.upstream).is_some()
    {
        // Came over UDP from an address sipfork also holds a connection to.
        cx.out.keep_udp(cx.out.len() - 1, call.upstream);
    }
    true
}

/// The scheduler handle for one of a call's transactions.
fn sched<'a>(cx: &'a mut Cx<'_>, call: Key, slot: TxnSlot) -> Sched<'a> {
    Sched {
        wheel: cx.timers,
        now: cx.now,
        call,
        slot,
        values: cx.env.timers,
    }
}

/// §17.2.3 server transaction key: branch + sent-by + method class for RFC 3261 requests; the
/// RFC 2543 fields otherwise.
fn server_key(ids: &Ids, e: &Essentials<'_>, class: &[u8]) -> u128 {
    let via = &e.top_via;
    let port = via.port.unwrap_or(5060).to_le_bytes();
    if via.has_rfc3261_branch() {
        ids.digest(&[
            b"3261",
            class,
            via.branch.unwrap_or_default(),
            via.host_raw,
            &port,
        ])
    } else {
        ids.digest(&[
            b"2543",
            class,
            e.request_uri.raw(),
            e.from.tag.unwrap_or_default(),
            e.call_id,
            &e.cseq.number.to_le_bytes(),
            via.raw,
        ])
    }
}

/// §16.6 step 8 / §16.3 step 4: what identifies this request for loop detection. The first
/// Route counts too: an in-dialog request that passes sipfork twice on a spiral (a follow-me
/// stage reached another extension through sipfork itself) carries a different one each time.
fn loop_hash(ids: &Ids, e: &Essentials<'_>, req: &Message<'_>) -> u32 {
    let mut proxy_require = [&b""[..]; 4];
    for (slot, tag) in proxy_require
        .iter_mut()
        .zip(req.values(HeaderName::ProxyRequire))
    {
        *slot = tag;
    }
    let first_route = req.first_value(HeaderName::Route).unwrap_or_default();
    ids.loop_hash(&[
        e.request_uri.raw(),
        first_route,
        e.from.tag.unwrap_or_default(),
        e.to.tag.unwrap_or_default(),
        e.call_id,
        &e.cseq.number.to_le_bytes(),
        proxy_require[0],
        proxy_require[1],
        proxy_require[2],
        proxy_require[3],
    ])
}

/// §16.3 step 4: has this request been through us before with the same identity (a loop, not a
/// spiral)?
pub fn is_loop(cx: &Cx<'_>, e: &Essentials<'_>, req: &Message<'_>) -> bool {
    // The request's own hash is worked out only once a Via of ours is found (rare: a spiral
    // or a loop), not for every request.
    let mut hash = None;
    req.vias().filter_map(Result::ok).any(|via| {
        sent_by_is_us(cx, &via)
            && via
                .branch
                .and_then(|b| cx.ids.read_branch(b, cx.env.shards))
                .is_some_and(|ours| {
                    ours.loop_hash == *hash.get_or_insert_with(|| loop_hash(cx.ids, e, req))
                })
    })
}

/// `req.vias().nth(1).is_some()` for a request whose top Via parsed as `top`, without parsing
/// the top Via again: after a well-formed first value comes the end of its row (then a second
/// value is a second Via row) or a comma (a second value in the same row).
fn has_second_via(req: &Message<'_>, top: &crate::sip::Via<'_>) -> bool {
    let Some(row) = req.first(HeaderName::Via) else {
        return false;
    };
    let rest = (top.raw.as_ptr() as usize)
        .checked_sub(row.value.as_ptr() as usize)
        .and_then(|start| start.checked_add(top.raw.len()))
        .and_then(|end| row.value.get(end..));
    match rest {
        Some(rest) => {
            !rest.iter().all(|&b| crate::sip::scan::is_lws(b))
                || req.rows(HeaderName::Via).nth(1).is_some()
        }
        // Not a value of that row (never for `Essentials::top_via`): ask the list itself.
        None => req.vias().nth(1).is_some(),
    }
}

fn sent_by_is_us(cx: &Cx<'_>, via: &crate::sip::Via<'_>) -> bool {
    // The default port is 5061 for TLS (RFC 3261 §18.2.2), 5060 otherwise.
    let default = crate::sip::uri::default_port(via.transport.eq_ignore_ascii_case(b"TLS"));
    via.host.ip().is_some_and(|ip| {
        crate::core::transport::ours::is_ours(cx, ip, via.port.unwrap_or(default))
    })
}

/// Does this URI name this proxy (§16.4): our address, or a domain we serve? (A Record-Route
/// token proves nothing by its presence; `dialog.rs` checks its MAC.)
pub fn uri_is_us(cx: &Cx<'_>, uri: &SipUri<'_>) -> bool {
    let port = uri.port.unwrap_or_else(|| uri.default_port());
    match uri.host.ip() {
        Some(ip) => crate::core::transport::ours::is_ours(cx, ip, port),
        None => cx.cfg.is_local_domain(uri.host_raw, uri.port),
    }
}

/// Where a SIP URI's requests go without DNS: its `maddr` or host must be an IP literal.
pub fn uri_destination(uri: &SipUri<'_>) -> Option<SocketAddr> {
    let ip: IpAddr = match uri.maddr() {
        Some(m) => crate::sip::uri::parse_ip(m)?,
        None => uri.host.ip()?,
    };
    Some(SocketAddr::new(
        ip,
        uri.port.unwrap_or_else(|| uri.default_port()),
    ))
}

/// Where the first Contact of `msg` (a remote target) points, when it is an IP literal.
fn contact_destination(msg: &Message<'_>) -> Option<SocketAddr> {
    contact_uri_destination(&msg.contacts().next()?.ok()?)
}

/// Where a Contact value's URI points, when it is an IP literal.
fn contact_uri_destination(contact: &crate::sip::ContactValue<'_>) -> Option<SocketAddr> {
    match contact {
        crate::sip::ContactValue::Addr(c) => c.addr.uri.as_sip().and_then(uri_destination),
        crate::sip::ContactValue::Star => None,
    }
}

/// Our Via value for branch `branch` of `call`, sent over `transport`: that of the hop (TCP or
/// TLS over an open flow to the destination, else UDP; RFC 3261 §18.1.1).
fn write_our_via(
    cx: &Cx<'_>,
    transport: crate::core::transport::Transport,
    loop_hash: u32,
    call: Key,
    branch: u8,
    out: &mut Vec<u8>,
) {
    write_via_start(cx, transport, out);
    out.extend_from_slice(b";branch=");
    cx.ids.write_branch(loop_hash, call, branch, out);
}

/// `SIP/2.0/<transport> <sent-by>` of our Via over `transport` (`cx.flows.transport_to` the
/// destination): the sent-by is our listener for that transport (RFC 3261 §18.2.2;
/// `core::transport::ours`).
pub(super) fn write_via_start(
    cx: &Cx<'_>,
    transport: crate::core::transport::Transport,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"SIP/2.0/");
    out.extend_from_slice(transport.via_token().as_bytes());
    out.push(b' ');
    build::push_hostport(out, crate::core::transport::ours::addr_for(cx, transport));
}

/// The largest request that came over TCP or TLS and is sent on over UDP (RFC 3261 §18.1.1:
/// 1300 bytes without a known path MTU).
pub const MAX_UDP_REQUEST: usize = 1300;

/// Forwards the call's request to one target as a new branch (§16.6), starting its client
/// transaction and, for an INVITE, Timer C.
/// What every branch of one fork has in common.
struct Shared<'a> {
    record_route: Option<&'a [u8]>,
    /// Where each branch writes its own Record-Route values (a reused buffer).
    rr_sides: &'a mut Vec<u8>,
    drop_first_route: bool,
    drop_second_route: bool,
    max_forwards: u8,
    strip_identity: bool,
    extra: &'a [u8],
    /// The request's top Via as parsed once (`Essentials`), for the `received`/`rport` fix.
    top_via: &'a crate::sip::Via<'a>,
}

fn start_branch(
    cx: &mut Cx<'_>,
    key: Key,
    call: &mut Call,
    req: &Message<'_>,
    shared: &mut Shared<'_>,
    target: ForkTarget<'_>,
    via: &mut Vec<u8>,
) -> Result<(), Event> {
    let index = call.branches.len() as u8;
    // A sips: request, or a sips: target of a sip: one, leaves over TLS only, whatever the
    // group, stage or dialog: a later q-group's device whose connection closed, an in-dialog
    // request to a leg no longer reached over TLS. The branch fails; alone, the caller gets
    // 480 with warn-code 380.
    let tls_only = call.secure || crate::core::transport::outbound::is_sips(&target.uri);
    if tls_only && !crate::core::transport::sips::tls_path(cx, target.dest, target.transport) {
        failed_branch(call, 480);
        return Err(Event::BranchTransportError);
    }
    // A target asking for TCP: its flow is entered before the Via names the transport.
    let Ok(connect) = crate::core::transport::outbound::prepare(cx, target.dest, target.transport)
    else {
        // A TLS target (a next hop configured so) whose address has a plain TCP flow open:
        // never over it; the branch fails as a transport error (RFC 3261 §8.1.3.1: 503).
        failed_branch(call, 503);
        return Err(Event::BranchTransportError);
    };
    // The branch's transport, looked up once: its Via, Record-Route, size rule, retransmissions
    // and later its CANCEL follow it.
    let transport = cx.flows.transport_to(target.dest);
    via.clear();
    write_our_via(cx, transport, call.loop_hash, key, index, via);
    // A sips: target of a sip: request gets a sip: Request-URI (RFC 5630 §5.3).
    let uri = crate::core::transport::sips::branch_uri(&target.uri, call.secure);
    // A branch to another node of the cluster: its Request-URI gets the authenticated mark.
    let marked = req
        .call_id()
        .ok()
        .and_then(|cid| crate::core::cluster::mark_uri(cx, &uri, target.dest, cid, via));
    // A transport change: two Record-Routes, each naming us on its side (RFC 5658); one stream
    // transport on both sides: one naming that listener; UDP on both: the shared one.
    let (incoming, outgoing) = (call.upstream_transport, transport);
    let addr = |t| crate::core::transport::ours::addr_for(cx, t);
    // A sips: request: our entry on a TLS side is sips: too (RFC 5630 §5.3).
    let secure = call.secure;
    let (record_route, record_route_in) = match shared.record_route {
        Some(rr) => {
            let (top, below) = crate::core::transport::record_route::entries(
                rr,
                incoming,
                outgoing,
                addr,
                secure,
                shared.rr_sides,
            );
            (Some(top), below)
        }
        None => (None, None),
    };
    let fwd = Forward {
        request_uri: Some(marked.as_deref().unwrap_or(&uri)),
        via,
        record_route,
        record_route_in,
        drop_first_route: shared.drop_first_route,
        drop_second_route: shared.drop_second_route,
        max_forwards: shared.max_forwards,
        fix: call.fix,
        extra: shared.extra,
        strip_identity: shared.strip_identity,
        consume_realm: (cx.cfg.auth.mode == crate::config::AuthMode::Digest)
            .then_some(cx.cfg.auth.realm.as_bytes()),
    };
    // Built once, straight into the outbox; the branch keeps an exact-size copy.
    let mut hop = None;
    let sent = cx.out.push_with(target.dest, |buf| {
        hop = build::forward_request_hop(req, &fwd, Some(shared.top_via), buf);
    });
    if sent.len() > MAX_UDP_REQUEST && !transport.is_stream() && call.upstream_transport.is_stream()
    {
        // A request that came over TCP or TLS would leave over UDP: §18.1.1 would take TCP,
        // but sipfork connects only to targets asking for TCP (one registered over UDP is reached on
        // its UDP flow, often through NAT), so this branch fails and the caller gets 513 when
        // no branch answers better. A request that came over UDP stays on UDP whatever its
        // size: its sender chose UDP, and phones send INVITEs just over 1300 bytes (PJSIP's
        // with its SDP, `tests/e2e/features.rs`) that must still ring UDP devices.
        cx.out.pop();
        failed_branch(call, 513);
        return Err(Event::BranchTooLarge);
    }
    let sent: Box<[u8]> = sent.into();
    if let Some(transport) = connect {
        cx.out.connect_last(transport);
    }
    let slot = TxnSlot::Branch(index);
    let timer_c_after = if marked.is_some() {
        // Until the remote node's 100 Trying: a dead node is given up within 2 s.
        crate::core::cluster::BRANCH_TIMEOUT
    } else {
        cx.cfg.proxy.timer_c
    };
    // No retransmissions over TCP or TLS (RFC 3261 §17.1.1.2, §17.1.2.2).
    let reliable = transport.is_stream();
    let (client, timer_c) = {
        let mut s = sched(cx, key, slot);
        if call.is_invite {
            let c = ClientInvite::start_over(&mut s, reliable);
            let tc = s.arm(Timer::C, timer_c_after);
            (call::Client::Invite(c), Some(tc))
        } else {
            (
                call::Client::NonInvite(ClientNonInvite::start_over(&mut s, reliable)),
                None,
            )
        }
    };
    call.branches.push(Branch {
        role: BranchRole::Forward,
        target: target.dest,
        transport,
        client,
        request: Some(sent),
        hop,
        ack: None,
        timer_c,
        provisional: false,
        cancel: call::Cancel::No,
        final_status: None,
        group: call.group,
        answer: None,
        to_tag: None,
        remote_target: None,
    });
    Ok(())
}

/// A branch that could not be sent: `status` is the call's best answer when none is better.
fn failed_branch(call: &mut Call, status: u16) {
    if call
        .best
        .as_ref()
        .is_none_or(|b| response::rank(status) < response::rank(b.status))
    {
        call.best = Some(call::Candidate {
            status,
            bytes: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::has_second_via;

    #[test]
    fn second_via_found_as_the_list_finds_it() {
        for rows in [
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n",
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1 \r\n",
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b\r\n",
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1 ,SIP/2.0/UDP b\r\n",
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n ,SIP/2.0/UDP b\r\n",
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nv: SIP/2.0/UDP b\r\n",
            "v: SIP/2.0/UDP a;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nVia: SIP/2.0/UDP b\r\n",
        ] {
            let text = format!(
                "INVITE sip:b@x SIP/2.0\r\n{rows}From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\n\
                 Call-ID: c\r\nCSeq: 1 INVITE\r\n\r\n"
            );
            let m = crate::sip::parse(text.as_bytes()).unwrap();
            let e = crate::sip::check_request(&m).unwrap();
            assert_eq!(
                has_second_via(&m, &e.top_via),
                m.vias().nth(1).is_some(),
                "{rows:?}"
            );
            // A Via parsed from other bytes is not taken for this row's.
            let copy = text.clone();
            let other = crate::sip::parse(copy.as_bytes()).unwrap();
            let other_top = other.top_via().unwrap();
            assert_eq!(
                has_second_via(&m, &other_top),
                m.vias().nth(1).is_some(),
                "{rows:?}"
            );
        }
    }
}
