//! Dialogs: what sipfork keeps after a call is answered, in-dialog routing (RFC 3261 §16.12 loose
//! routing), the ACK for a 2xx (§13.2.2.4, forwarded statelessly), and tearing down a 2xx nobody
//! will use (ACK + BYE from sipfork as the UAC of that leg).
//!
//! Invariant: per-dialog state is one small record per answered device inside its call (the To
//! tag's hash and the start time), released by a BYE through us or by the maximum call duration;
//! the concurrent-call counts of the policy work are derived from these.

use std::net::SocketAddr;

use super::call::{AnswerFate, Branch, BranchRole, Cancel, Client, Dialog};
use super::{sched, uri_destination, uri_is_us, write_our_via, Event, ForkPlan, ForkTarget, Proxy};
use crate::core::context::Cx;
use crate::core::route::ROUTE_TOKEN_PARAM;
use crate::core::slab::Key;
use crate::core::transaction::client_non_invite::ClientNonInvite;
use crate::core::transaction::TxnSlot;
use crate::core::TimerKey;
use crate::sip::build::{self, Forward, InDialog, ViaFix};
use crate::sip::{Essentials, HeaderName, Message, Method, Uri};
use crate::time::Duration;

/// Longest call sipfork keeps dialog state for without seeing its BYE (a phone that lost power
/// never sends one).
pub const MAX_CALL_DURATION: Duration = Duration::from_secs(12 * 3600);

/// Branch index used in the Via of ACKs sipfork sends for 2xx: ACKs get no response, and real
/// branches stop below it.
const ACK_BRANCH: u8 = u8::MAX;

fn tag_hash(cx: &Cx<'_>, tag: &[u8]) -> u64 {
    cx.ids.digest(&[b"tag", tag]) as u64
}

/// The next hop of an in-dialog request or ACK (§16.12): the first Route after ours, else the
/// Request-URI. `None` when it is not an IP literal (sipfork does no DNS).
pub fn next_hop(cx: &Cx<'_>, req: &Message<'_>, e: &Essentials<'_>) -> Option<SocketAddr> {
    let mut routes = req.routes().filter_map(Result::ok).peekable();
    if let Some(first) = routes.peek() {
        if first.uri.as_sip().is_some_and(|u| uri_is_us(cx, u)) {
            routes.next();
        }
    }
    match routes.next() {
        Some(r) => r.uri.as_sip().and_then(uri_destination),
        None => e.request_uri.as_sip().and_then(uri_destination),
    }
}

/// Our dialog token in the first Route of an in-dialog request, if it is ours.
fn dialog_of(cx: &Cx<'_>, req: &Message<'_>) -> Option<Key> {
    let route = req.routes().next()?.ok()?;
    let token = route.uri.as_sip()?.param(ROUTE_TOKEN_PARAM)??;
    let d = cx.ids.read_route_token(token, cx.env.shards)?;
    (d.shard == cx.env.shard).then_some(d.call)
}

impl Proxy {
    /// Records the dialog a forwarded 2xx established.
    pub(super) fn add_dialog(&mut self, cx: &mut Cx<'_>, key: Key, resp: &Message<'_>) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if !call.is_invite || !call.record_route {
            return;
        }
        let Ok(to) = resp.to() else { return };
        let Some(tag) = to.tag else { return };
        let h = tag_hash(cx, tag);
        if call.dialogs.iter().any(|d| d.to_tag == h) {
            return;
        }
        call.dialogs.push(Dialog {
            to_tag: h,
            since: cx.now,
        });
        self.dialogs += 1;
        if call.dialog_timer.is_none() {
            call.dialog_timer = Some(
                cx.timers
                    .insert(cx.now + MAX_CALL_DURATION, TimerKey::Dialog { call: key }),
            );
        }
    }

    /// A BYE passed through us: the dialog it names has ended.
    fn end_dialog(&mut self, cx: &mut Cx<'_>, key: Key, e: &Essentials<'_>) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let tags = [e.to.tag, e.from.tag];
        let before = call.dialogs.len();
        for tag in tags.into_iter().flatten() {
            let h = tag_hash(cx, tag);
            call.dialogs.retain(|d| d.to_tag != h);
        }
        if call.dialogs.len() == before && before == 1 {
            // The BYE came through this dialog's Route but names the tags wrongly (a client
            // bug seen in the wild): it still ends the only dialog the route leads to, rather
            // than leaving its record for the maximum call duration.
            call.dialogs.clear();
        }
        let ended = before - call.dialogs.len();
        if ended == 0 {
            return;
        }
        if call.dialogs.is_empty() {
            if let Some(id) = call.dialog_timer.take() {
                cx.timers.cancel(id);
            }
        }
        self.dialogs = self.dialogs.saturating_sub(ended as u64);
        for _ in 0..ended {
            self.count(Event::DialogEnded);
        }
        self.reap(cx, key);
    }

    pub(super) fn dialog_expired(&mut self, cx: &mut Cx<'_>, key: Key) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        call.dialog_timer = None;
        let n = call.dialogs.len();
        call.dialogs.clear();
        self.dialogs = self.dialogs.saturating_sub(n as u64);
        for _ in 0..n {
            self.count(Event::DialogExpired);
        }
        self.reap(cx, key);
    }

    /// Forwards a request inside a dialog (To tag present) statefully to its next hop (§16.12);
    /// a BYE also ends the dialog record. `dest` overrides the next hop (NAT: a registered
    /// device's flow). Answers 502 when the next hop cannot be reached without DNS.
    pub fn forward_in_dialog(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
        dest: Option<SocketAddr>,
    ) {
        if e.method == Method::Bye {
            if let Some(key) = dialog_of(cx, req) {
                self.end_dialog(cx, key, e);
            }
        }
        let Some(dest) = dest.or_else(|| next_hop(cx, req, e)) else {
            crate::core::reply_to(
                cx,
                req,
                from,
                502,
                "Bad Gateway - next hop is not an IP address",
                b"",
            );
            return;
        };
        self.count(Event::InDialog);
        let target = ForkTarget {
            uri: std::borrow::Cow::Borrowed(e.request_uri.raw()),
            dest,
            q: 1000,
            registered_at: crate::time::Instant::ZERO,
        };
        let plan = ForkPlan {
            serial: false,
            group_timeout: Duration::ZERO,
            single_answer: false,
            record_route: false,
            to_extension: false,
        };
        self.start_call(cx, req, e, from, vec![target], plan);
    }

    /// An ACK that matched no server transaction: the ACK for a 2xx, forwarded statelessly along
    /// its route (§16.11-style; ACKs get no response). `dest` as for [`Proxy::forward_in_dialog`].
    pub fn forward_ack(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
    ) {
        let dest = next_hop(cx, req, e);
        self.forward_ack_to(cx, req, e, from, dest);
    }

    /// [`Proxy::forward_ack`] with the destination decided by the caller.
    pub fn forward_ack_to(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
        dest: Option<SocketAddr>,
    ) {
        let (Some(dest), Some(mf)) = (dest, e.max_forwards.map_or(Some(70), |m| m.checked_sub(1)))
        else {
            return;
        };
        if dest == cx.env.local {
            return;
        }
        self.count(Event::AckForwarded);
        // A deterministic branch, so a retransmitted ACK carries the same one (§16.11).
        let via = &mut self.scratch_via;
        via.clear();
        via.extend_from_slice(b"SIP/2.0/UDP ");
        build::push_hostport(via, cx.env.local);
        via.extend_from_slice(b";branch=z9hG4bKsa");
        let d = cx
            .ids
            .digest(&[b"ack", e.top_via.branch.unwrap_or_default(), e.call_id]);
        push_hex(via, d as u64);
        let route_is_us = req
            .routes()
            .next()
            .and_then(Result::ok)
            .and_then(|r| r.uri.as_sip().map(|u| uri_is_us(cx, u)))
            .unwrap_or(false);
        let fix = ViaFix::for_source(&e.top_via, from);
        cx.out.push_with(dest, |buf| {
            build::forward_request(
                req,
                &Forward {
                    request_uri: None,
                    via,
                    record_route: None,
                    drop_first_route: route_is_us,
                    max_forwards: mf,
                    fix,
                    extra: b"",
                },
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
        let loop_hash = call.loop_hash;
        let j = call.branches.len();
        if j >= usize::from(ACK_BRANCH) {
            return;
        }
        self.ack_2xx(cx, key, i, resp);
        let Some(leg) = Leg::of(cx, resp, target) else {
            return;
        };
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let mut via = Vec::with_capacity(96);
        write_our_via(cx, loop_hash, key, j as u8, &mut via);
        let routes: Vec<&[u8]> = leg.routes.iter().map(|r| &r[..]).collect();
        let mut bytes = Vec::with_capacity(512);
        build::in_dialog(
            &InDialog {
                method: b"BYE",
                target: leg.contact,
                routes: &routes,
                via: &via,
                from: leg.from,
                to: leg.to,
                call_id: leg.call_id,
                cseq: leg.cseq.saturating_add(1),
                extra: b"Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n",
            },
            &mut bytes,
        );
        cx.out.push(leg.dest, &bytes);
        let mut s = sched(cx, key, TxnSlot::Branch(j as u8));
        let client = Client::NonInvite(ClientNonInvite::start(&mut s));
        call.branches.push(Branch {
            role: BranchRole::Bye,
            target: leg.dest,
            client,
            request: Some(bytes.into_boxed_slice()),
            ack: None,
            timer_c: None,
            provisional: false,
            cancel: Cancel::No,
            final_status: None,
            group: call.group,
            answer: None,
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
        let mut via = Vec::with_capacity(96);
        write_our_via(cx, call.loop_hash, key, ACK_BRANCH, &mut via);
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
struct Leg<'a> {
    contact: &'a [u8],
    routes: Vec<Vec<u8>>,
    dest: SocketAddr,
    from: &'a [u8],
    to: &'a [u8],
    call_id: &'a [u8],
    cseq: u32,
}

impl<'a> Leg<'a> {
    fn of(cx: &Cx<'_>, resp: &Message<'a>, branch_target: SocketAddr) -> Option<Leg<'a>> {
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
