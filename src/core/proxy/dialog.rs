//! Dialogs: what sipfork keeps after a call is answered, in-dialog routing (RFC 3261 §16.12),
//! the ACK for a 2xx (§13.2.2.4, forwarded statelessly), and tearing down a 2xx nobody will use
//! (ACK + BYE from sipfork as the UAC of that leg).
//!
//! Egress rule for requests inside a dialog: they are relayed only when their first Route is a
//! Record-Route token sipfork issued (64-bit MAC over shard, call slot, generation and Call-ID)
//! for a call this shard still holds, and then only to the other leg of that call: the caller's
//! flow (where its INVITE came from) or the answering branch's flow (where the INVITE went),
//! or that leg's remote target under the NAT rule. Nothing in the request (its Request-URI, later
//! Routes) chooses the destination. Anything else gets 403 (no token of ours) or 481 (a token
//! that does not verify, or a dialog that ended, e.g. before a restart: dialog state is in memory
//! only); an ACK that fits no dialog is dropped.
//!
//! Invariant: per-dialog state is one small record per answered device inside its call (the To
//! tag's hash, the start time, the answering branch), released by a BYE through us or by the
//! maximum call duration (which sends a BYE to both legs: `expiry.rs`, with the little it keeps
//! per call for that), or sooner by an RFC 4028 session that was not refreshed (the same timer,
//! re-armed by the 2xx that carry Session-Expires: `session_timer.rs`); the concurrent-call counts of the policy work are derived from these.

use std::net::SocketAddr;

pub(super) mod expiry;
pub(super) mod session_timer;

use super::call::{AnswerFate, Branch, BranchRole, Call, Cancel, Client, Dialog};
use super::{
    sched, uri_destination, uri_is_us, write_our_via, write_via_start, Event, ForkPlan, ForkTarget,
    Proxy, ServerKey,
};
use crate::config::NatMode;
use crate::core::cdr::{self, Cause};
use crate::core::context::Cx;
use crate::core::route::ROUTE_TOKEN_PARAM;
use crate::core::slab::Key;
use crate::core::transaction::client_non_invite::ClientNonInvite;
use crate::core::transaction::TxnSlot;
use crate::core::TimerKey;
use crate::sip::build::{self, Forward, InDialog, ViaFix};
use crate::sip::{Essentials, HeaderName, Message, Method, Uri};

/// Branch index used in the Via of ACKs sipfork sends for 2xx: ACKs get no response, and real
/// branches stop below it.
const ACK_BRANCH: u8 = u8::MAX;

/// Keyed hash of a tag (so a record keeps 8 bytes, not the tag).
pub(super) fn tag_hash(cx: &Cx<'_>, tag: &[u8]) -> u64 {
    cx.ids.digest(&[b"tag", tag]) as u64
}

/// The keyed hashes of an in-dialog request's From and To tags, computed once for the dialog
/// lookup, the caller check and the dialog's end.
#[derive(Clone, Copy)]
struct TagHashes {
    from: Option<u64>,
    to: Option<u64>,
}

impl TagHashes {
    fn of(cx: &Cx<'_>, e: &Essentials<'_>) -> Self {
        TagHashes {
            from: e.from.tag.map(|t| tag_hash(cx, t)),
            to: e.to.tag.map(|t| tag_hash(cx, t)),
        }
    }

    /// The request comes from the caller (its From tag is the caller's).
    fn by_caller(&self, call: &Call) -> bool {
        self.from == Some(call.caller_tag)
    }
}

/// Where a leg is reached: its flow, or its remote target under the NAT rule of DECISIONS.md
/// (`auto`: the target when it is on the flow's address, else the flow).
pub(super) fn leg_destination(
    nat: NatMode,
    flow: SocketAddr,
    target: Option<SocketAddr>,
) -> SocketAddr {
    match (nat, target) {
        (NatMode::Contact, Some(t)) => t,
        (NatMode::Auto, Some(t)) if t.ip() == flow.ip() => t,
        _ => flow,
    }
}

/// What the first Route of an in-dialog request says about it.
enum RouteToken {
    /// No token of ours: the request was not routed through a dialog sipfork recorded.
    Absent,
    /// A token on our address that does not verify (forged, another call's, or minted before a
    /// restart), or one for another shard.
    Invalid,
    /// Our token for call `Key` on this shard. `second_ours`: the second Route value is our
    /// other entry of a double Record-Route (`record_route::second_pairs_first`), so the
    /// request is forwarded without both; read here, from the same parse of the Route list.
    Ours { call: Key, second_ours: bool },
}

fn route_token(cx: &Cx<'_>, req: &Message<'_>, call_id: &[u8]) -> RouteToken {
    let mut routes = req.routes();
    let Some(Ok(route)) = routes.next() else {
        return RouteToken::Absent;
    };
    let Some(uri) = route.uri.as_sip() else {
        return RouteToken::Absent;
    };
    let Some(Some(token)) = uri.param(ROUTE_TOKEN_PARAM) else {
        return RouteToken::Absent;
    };
    if !uri_is_us(cx, uri) {
        return RouteToken::Absent;
    }
    match cx.ids.read_route_token(token, call_id, cx.env.shards) {
        Some(d) if d.shard == cx.env.shard => RouteToken::Ours {
            call: d.call,
            second_ours: crate::core::transport::record_route::second_pairs_first(
                cx,
                routes.next(),
                token,
            ),
        },
        _ => RouteToken::Invalid,
    }
}

/// Where an in-dialog request of `call` from `source` goes: the other leg of the dialog its
/// tags name. `None` when the tags name no (early) dialog of the call, unless the call has
/// exactly one dialog and the request comes from one of its legs' flows (a client bug seen in
/// the wild: a BYE naming a losing device's tag still ends the only dialog its route leads to).
fn other_leg(cx: &Cx<'_>, call: &Call, tags: TagHashes, source: SocketAddr) -> Option<SocketAddr> {
    let nat = cx.cfg.registrar.nat;
    let caller_leg = leg_destination(nat, call.upstream, call.caller_target);
    let hashes = tags.from.zip(tags.to);
    if let [only] = call.dialogs[..] {
        let b = call.branches.get(usize::from(only.branch))?;
        let callee_leg = leg_destination(nat, b.target, b.remote_target);
        let tags_fit = hashes.is_some_and(|(f, t)| {
            (f == call.caller_tag && t == only.to_tag) || (t == call.caller_tag && f == only.to_tag)
        });
        if !tags_fit {
            return if source == call.upstream {
                Some(callee_leg)
            } else if source == b.target {
                Some(caller_leg)
            } else {
                None
            };
        }
    }
    let (from_tag, to_tag) = hashes?;
    let callee = |tag: u64| {
        // A confirmed dialog first; else an early one (PRACK, UPDATE before the answer).
        call.dialogs
            .iter()
            .find(|d| d.to_tag == tag)
            .and_then(|d| call.branches.get(usize::from(d.branch)))
            .or_else(|| {
                call.branches
                    .iter()
                    .find(|b| b.role == BranchRole::Forward && b.to_tag == Some(tag))
            })
    };
    if from_tag == call.caller_tag {
        let b = callee(to_tag)?;
        Some(leg_destination(nat, b.target, b.remote_target))
    } else if to_tag == call.caller_tag {
        callee(from_tag)?;
        Some(caller_leg)
    } else {
        None
    }
}

impl Proxy {
    /// Records the dialog a forwarded 2xx of branch `branch` established (`to_tag`: its To
    /// tag, as `check_response` parsed it).
    pub(super) fn add_dialog(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        branch: usize,
        to_tag: Option<&[u8]>,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if !call.is_invite || !call.record_route {
            return;
        }
        let Some(tag) = to_tag else { return };
        let h = tag_hash(cx, tag);
        if call.dialogs.iter().any(|d| d.to_tag == h) {
            return;
        }
        call.dialogs.push(Dialog {
            to_tag: h,
            since: cx.now,
            branch: branch as u8,
        });
        call.holds.confirmed(&cx.cfg.ledger);
        self.dialogs += 1;
        if call.dialog_timer.is_none() {
            call.dialog_timer = Some(cx.timers.insert(
                cx.now + cx.cfg.policy.max_call,
                TimerKey::Dialog { call: key },
            ));
        }
    }

    /// A BYE passed through us: the dialog it names has ended.
    fn end_dialog(&mut self, cx: &mut Cx<'_>, key: Key, tags: TagHashes) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let before = call.dialogs.len();
        for h in [tags.to, tags.from].into_iter().flatten() {
            call.dialogs.retain(|d| d.to_tag != h);
        }
        if call.dialogs.len() == before && before == 1 {
            // The BYE came through this dialog's Route but names the tags wrongly (a client
            // bug seen in the wild): it still ends the only dialog the route leads to, rather
            // than leaving its record for the maximum call duration.
            call.dialogs.clear();
        }
        let ended = before - call.dialogs.len();
        let cause = if tags.by_caller(call) {
            Cause::CallerBye
        } else {
            Cause::CalleeBye
        };
        self.dialogs_ended(cx, key, ended, cause);
    }

    /// Forgets dialog `to_tag` of `key` without a BYE through us (a moved call's old dialog).
    pub(super) fn drop_dialog(&mut self, cx: &mut Cx<'_>, key: Key, to_tag: u64) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let before = call.dialogs.len();
        call.dialogs.retain(|d| d.to_tag != to_tag);
        let ended = before - call.dialogs.len();
        // The call goes on with the device it moved to; its CDR ends here.
        self.dialogs_ended(cx, key, ended, Cause::Released);
    }

    /// `ended` dialog records of `key` were removed: timers, policy counts, lines, counters.
    fn dialogs_ended(&mut self, cx: &mut Cx<'_>, key: Key, ended: usize, cause: Cause) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if ended == 0 {
            return;
        }
        if call.dialogs.is_empty() {
            if let Some(id) = call.dialog_timer.take() {
                cx.timers.cancel(id);
            }
            // The call is over: its policy counts are free again.
            call.holds.release();
            cdr::end(&mut call.cdr, cx, 0, cause);
        }
        self.dialogs = self.dialogs.saturating_sub(ended as u64);
        for _ in 0..ended {
            self.count(Event::DialogEnded);
        }
        self.release_lines(key);
        self.reap(cx, key);
    }

    pub(super) fn dialog_expired(&mut self, cx: &mut Cx<'_>, key: Key) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        call.dialog_timer = None;
        // RFC 4028: the session timer, when it came first (`session_timer.rs`).
        let session = session_timer::session_expired(cx, call);
        self.bye_both_legs(cx, key, session);
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let n = call.dialogs.len();
        call.dialogs.clear();
        call.holds.release();
        let cause = if session {
            Cause::SessionExpired
        } else {
            Cause::MaxDuration
        };
        cdr::end(&mut call.cdr, cx, 0, cause);
        self.dialogs = self.dialogs.saturating_sub(n as u64);
        for _ in 0..n {
            self.count(Event::DialogExpired);
        }
        self.release_lines(key);
        self.reap(cx, key);
    }

    /// A request inside a dialog (To tag present, §16.12): relayed statefully to the other leg
    /// of the dialog its Route token and tags name, or refused (module docs). A BYE also ends
    /// the dialog record.
    pub fn in_dialog(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
        server_key: ServerKey,
    ) {
        let (key, second_ours) = match route_token(cx, req, e.call_id) {
            RouteToken::Ours { call, second_ours } => (Some(call), second_ours),
            RouteToken::Absent => {
                self.count(Event::InDialogRefused);
                return crate::core::reply::reply_to(
                    cx,
                    req,
                    from,
                    403,
                    "Forbidden - not routed through a dialog of this proxy",
                    b"",
                );
            }
            RouteToken::Invalid => (None, false),
        };
        let tags = TagHashes::of(cx, e);
        // A token that does not verify, or a dialog that ended (or whose tags it does not name).
        let Some((key, dest)) = key.and_then(|key| {
            let dest = other_leg(cx, self.calls.get(key)?, tags, from)?;
            Some((key, dest))
        }) else {
            self.count(Event::InDialogRefused);
            return crate::core::reply::no_such_transaction(cx, req, from);
        };
        if let Some(call) = self.calls.get_mut(key) {
            let from_caller = tags.by_caller(call);
            if let Some(ends) = call.ends.as_deref_mut() {
                ends.saw(from_caller, e.cseq.number);
            }
        }
        if e.method == Method::Bye {
            self.end_dialog(cx, key, tags);
        }
        self.count(Event::InDialog);
        let target = ForkTarget {
            uri: std::borrow::Cow::Borrowed(e.request_uri.raw()),
            dest,
            q: 1000,
            registered_at: crate::time::Instant::ZERO,
            external: false,
            // In-dialog: over the leg's open flow, else UDP; never a new connection.
            transport: crate::core::transport::Transport::Udp,
        };
        let plan = ForkPlan {
            // The first Route is ours (its token verified); whether the second is too was read
            // with it.
            routes_to_drop: Some((true, second_ours)),
            ..ForkPlan::relay(!cx.cfg.is_trusted(from.ip()))
        };
        self.start_call(cx, req, e, from, server_key, vec![target], plan);
    }

    /// An ACK that matched no server transaction: the ACK for a 2xx, forwarded statelessly to
    /// the other leg of its dialog (§16.11-style; ACKs get no response). An ACK that fits no
    /// dialog of ours is dropped and counted.
    pub fn ack_in_dialog(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
    ) {
        let (dest, drop_second_route) = match route_token(cx, req, e.call_id) {
            RouteToken::Ours { call, second_ours } => (
                self.calls
                    .get(call)
                    .and_then(|call| other_leg(cx, call, TagHashes::of(cx, e), from)),
                second_ours,
            ),
            RouteToken::Absent | RouteToken::Invalid => (None, false),
        };
        let (Some(dest), Some(mf)) = (dest, e.max_forwards.map_or(Some(70), |m| m.checked_sub(1)))
        else {
            return self.count(Event::AckDropped);
        };
        // A sips: ACK crosses TLS hops only (RFC 5630): one that came, or would leave, without
        // TLS is dropped (a leg whose connection closed is never reached in cleartext).
        if crate::core::transport::sips::requested(e)
            && (!crate::core::transport::sips::arrived_securely(cx)
                || !crate::core::transport::sips::tls_path(
                    cx,
                    dest,
                    crate::core::transport::Transport::Udp,
                ))
        {
            return self.count(Event::AckDropped);
        }
        self.count(Event::AckForwarded);
        // A deterministic branch, so a retransmitted ACK carries the same one (§16.11).
        let via = &mut self.scratch_via;
        via.clear();
        write_via_start(cx, cx.flows.transport_to(dest), via);
        via.extend_from_slice(b";branch=z9hG4bKsa");
        let d = cx
            .ids
            .digest(&[b"ack", e.top_via.branch.unwrap_or_default(), e.call_id]);
        push_hex(via, d as u64);
        let fix = ViaFix::for_source(&e.top_via, from);
        cx.out.push_with(dest, |buf| {
            build::forward_request_with(
                req,
                &Forward {
                    request_uri: None,
                    via,
                    record_route: None,
                    record_route_in: None,
                    drop_first_route: true,
                    drop_second_route,
                    max_forwards: mf,
                    fix,
                    extra: b"",
                    strip_identity: false,
                    consume_realm: None,
                },
                Some(&e.top_via),
                buf,
            )
        });
    }

    /// Ends a device's call that nobody will use: ACK its 2xx, then BYE it (sipfork acts as the
    /// UAC of that leg, §12.2.1.1).
    pub(super) fn tear_down(&mut self, cx: &mut Cx<'_>, key: Key, i: usize, resp: &Message<'_>) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(branch) = call.branches.get_mut(i) else {
            return;
        };
        branch.answer = Some(AnswerFate::TornDown);
        let target = branch.target;
        let j = call.branches.len();
        if j >= usize::from(ACK_BRANCH) {
            return;
        }
        self.ack_2xx(cx, key, i, resp);
        let Some(leg) = Leg::of(cx, resp, target) else {
            return;
        };
        let routes: Vec<&[u8]> = leg.routes.iter().map(|r| &r[..]).collect();
        self.send_bye(
            cx,
            key,
            leg.dest,
            InDialog {
                method: b"BYE",
                target: leg.contact,
                routes: &routes,
                via: b"",
                from: leg.from,
                to: leg.to,
                call_id: leg.call_id,
                cseq: leg.cseq.saturating_add(1),
                extra: b"Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n",
            },
        );
    }

    /// Sends `bye` (its Via is ours, written here) to `dest` as a new client transaction of
    /// `key`, so it is retransmitted until answered (sipfork as the UAC of that leg).
    pub(super) fn send_bye(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        dest: SocketAddr,
        bye: InDialog<'_>,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let j = call.branches.len();
        if j >= usize::from(ACK_BRANCH) {
            return;
        }
        // A sips: dialog's leg no longer reached over TLS gets nothing (RFC 5630); the dialog
        // ends all the same.
        let secure = super::call::tls_only(call.secure, call.leg_transport(dest))
            || crate::core::transport::outbound::is_sips(bye.target);
        if !crate::core::transport::sips::may_send(cx, secure, dest) {
            return self.count(Event::BranchTransportError);
        }
        let transport = cx.flows.transport_to(dest);
        let mut via = Vec::with_capacity(96);
        write_our_via(cx, transport, call.loop_hash, key, j as u8, &mut via);
        let mut bytes = Vec::with_capacity(512);
        build::in_dialog(&InDialog { via: &via, ..bye }, &mut bytes);
        cx.out.push(dest, &bytes);
        let reliable = transport.is_stream();
        let mut s = sched(cx, key, TxnSlot::Branch(j as u8));
        let client = Client::NonInvite(ClientNonInvite::start_over(&mut s, reliable));
        call.branches.push(Branch {
            role: BranchRole::Bye,
            target: dest,
            transport,
            client,
            request: Some(bytes.into_boxed_slice()),
            hop: None,
            ack: None,
            timer_c: None,
            provisional: false,
            cancel: Cancel::No,
            final_status: None,
            group: call.group,
            answer: None,
            to_tag: None,
            remote_target: None,
        });
    }

    /// Sends (again) the ACK for a 2xx of branch `i` that sipfork tears down.
    pub(super) fn ack_2xx(&mut self, cx: &mut Cx<'_>, key: Key, i: usize, resp: &Message<'_>) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let Some(branch) = call.branches.get(i) else {
            return;
        };
        let Some(leg) = Leg::of(cx, resp, branch.target) else {
            return;
        };
        // Never a cleartext ACK on a leg that went over TLS or in a sips: call (RFC 5630).
        let secure = super::call::tls_only(call.secure, branch.transport)
            || crate::core::transport::outbound::is_sips(leg.contact);
        if !crate::core::transport::sips::may_send(cx, secure, leg.dest) {
            return self.count(Event::AckDropped);
        }
        // The flow the ACK will go over when it leaves (the branch's may have closed since).
        let transport = cx.flows.transport_to(leg.dest);
        let mut via = Vec::with_capacity(96);
        write_our_via(cx, transport, call.loop_hash, key, ACK_BRANCH, &mut via);
        let routes: Vec<&[u8]> = leg.routes.iter().map(|r| &r[..]).collect();
        cx.out.push_with(leg.dest, |buf| {
            build::in_dialog(
                &InDialog {
                    method: b"ACK",
                    target: leg.contact,
                    routes: &routes,
                    via: &via,
                    from: leg.from,
                    to: leg.to,
                    call_id: leg.call_id,
                    cseq: leg.cseq,
                    extra: b"",
                },
                buf,
            )
        });
    }
}

/// The callee leg of a dialog as a 2xx describes it, seen from sipfork as its UAC.
pub(super) struct Leg<'a> {
    contact: &'a [u8],
    pub(super) routes: Vec<Vec<u8>>,
    dest: SocketAddr,
    from: &'a [u8],
    to: &'a [u8],
    call_id: &'a [u8],
    cseq: u32,
}

impl<'a> Leg<'a> {
    pub(super) fn of(
        cx: &Cx<'_>,
        resp: &Message<'a>,
        branch_target: SocketAddr,
    ) -> Option<Leg<'a>> {
        let contact = match resp.contacts().next()?.ok()? {
            crate::sip::ContactValue::Addr(c) => c.addr.uri,
            crate::sip::ContactValue::Star => return None,
        };
        // Route set: the Record-Route entries the callee side added below us, nearest first.
        let rr: Vec<_> = resp.record_routes().filter_map(Result::ok).collect();
        let ours = rr
            .iter()
            .position(|r| r.uri.as_sip().is_some_and(|u| uri_is_us(cx, u)))
            .unwrap_or(rr.len());
        let routes: Vec<Vec<u8>> = rr[..ours].iter().rev().map(|r| r.raw.to_vec()).collect();
        let dest = match rr[..ours].last() {
            // Devices behind NAT answer from their flow: the address the INVITE went to.
            None => branch_target,
            Some(first_hop) => match first_hop.uri {
                Uri::Sip(u) => uri_destination(&u)?,
                _ => return None,
            },
        };
        Some(Leg {
            contact: contact.raw(),
            routes,
            dest,
            from: resp.first_value(HeaderName::From)?,
            to: resp.first_value(HeaderName::To)?,
            call_id: resp.call_id().ok()?,
            cseq: resp.cseq().ok()?.number,
        })
    }
}

fn push_hex(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..16).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}
