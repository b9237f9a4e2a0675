//! Response processing (RFC 3261 §16.7) and choosing the best final response (step 6).
//!
//! Invariants: provisional responses go upstream at once (each branch's 180 with its own To
//! tag) while the call rings; the first 2xx goes upstream at once and cancels every other
//! pending branch; a later 2xx is forwarded (RFC 3261) or, with `single_answer`, ACKed and BYEd
//! here so the caller sees exactly one answered device; non-2xx finals wait until every branch
//! has ended, then the best one goes upstream.

use super::call::{AnswerFate, Branch, BranchRole, Candidate, Client, Outcome};
use super::{sched, CancelReason, Event, Proxy};
use crate::core::cdr;
use crate::core::context::Cx;
use crate::core::ids::OurBranch;
use crate::core::slab::Key;
use crate::core::transaction::client_invite::OnResponse as InviteVerdict;
use crate::core::transaction::client_non_invite::OnResponse as NonInviteVerdict;
use crate::core::transaction::{Timer, TxnSlot};
use crate::sip::{build, HeaderName, Message, Method, ResponseEssentials};

impl Proxy {
    /// A response whose top Via is one of our branches on this shard.
    pub fn handle_response(
        &mut self,
        cx: &mut Cx<'_>,
        resp: &Message<'_>,
        re: &ResponseEssentials<'_>,
        ours: OurBranch,
    ) {
        let key = ours.call;
        let i = usize::from(ours.branch);
        let status = re.status;
        let Some(call) = self.calls.get_mut(key) else {
            return self.count(Event::StrayResponse);
        };
        let secure = call.secure;
        let Some(branch) = call.branches.get_mut(i) else {
            return self.count(Event::StrayResponse);
        };
        if re.cseq.method == Method::Cancel {
            if let super::call::Cancel::Sent { txn, reason, .. } = &mut branch.cancel {
                let reason = *reason;
                let mut s = sched(cx, key, TxnSlot::Cancel(ours.branch));
                if txn.on_response(status, &mut s) == NonInviteVerdict::PassUp && status >= 200 {
                    // Keep the CANCEL transaction alive for Timer K; it is reaped then.
                    let _ = reason;
                }
            }
            return;
        }
        match &mut branch.client {
            Client::NonInvite(t) => {
                let mut s = sched(cx, key, TxnSlot::Branch(ours.branch));
                if t.on_response(status, &mut s) == NonInviteVerdict::Absorb {
                    return;
                }
                if status >= 200 {
                    branch.final_status = Some(status);
                    branch.request = None;
                }
                if branch.role == BranchRole::Bye {
                    return;
                }
                self.branch_response(cx, key, i, resp, re.to.tag, status);
            }
            Client::Invite(t) => {
                let mut s = sched(cx, key, TxnSlot::Branch(ours.branch));
                let verdict = t.on_response(status, &mut s);
                match verdict {
                    InviteVerdict::AckAndPassUp
                        if !crate::core::transport::sips::may_send(
                            cx,
                            super::call::tls_only(secure, branch.transport),
                            branch.target,
                        ) =>
                    {
                        // A branch that went over TLS (or of a sips: call) no longer reached
                        // over TLS: no cleartext ACK (RFC 5630).
                        self.events.bump(Event::AckDropped as usize);
                    }
                    InviteVerdict::AckAndPassUp => {
                        if let Some(sent) = branch
                            .request
                            .as_deref()
                            .and_then(|sent| build::SentRequest::of(sent, branch.hop))
                        {
                            let ack = cx.out.push_with(branch.target, |buf| sent.ack(resp, buf));
                            branch.ack = Some(ack.into());
                        }
                    }
                    InviteVerdict::AckAgain => {
                        if let Some(ack) = branch.ack.as_deref() {
                            cx.out.push(branch.target, ack);
                        }
                    }
                    _ => {}
                }
                match verdict {
                    InviteVerdict::Absorb | InviteVerdict::AckAgain => {}
                    InviteVerdict::PassUp | InviteVerdict::AckAndPassUp => {
                        self.branch_response(cx, key, i, resp, re.to.tag, status)
                    }
                }
            }
        }
    }

    /// §16.7 steps 2–10 for a response the client transaction passed up.
    fn branch_response(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        i: usize,
        resp: &Message<'_>,
        to_tag: Option<&[u8]>,
        status: u16,
    ) {
        if status > 100 {
            self.note_callee(cx, key, i, resp, to_tag, status);
        }
        match status {
            100..=199 => self.provisional(cx, key, i, resp, status),
            200..=299 => self.success(cx, key, i, resp, to_tag, status),
            _ => self.failure(cx, key, i, resp, status),
        }
    }

    /// Remembers the callee's tag of branch `i` from its first tagged response, and its remote
    /// target from its 2xx, so in-dialog requests of its (early) dialog find their way
    /// (`dialog.rs`; early dialogs use the flow).
    fn note_callee(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        i: usize,
        resp: &Message<'_>,
        to_tag: Option<&[u8]>,
        status: u16,
    ) {
        let Some(branch) = self.calls.get_mut(key).and_then(|c| c.branches.get_mut(i)) else {
            return;
        };
        if branch.to_tag.is_none() {
            // The To tag as `check_response` parsed it (`ResponseEssentials::to`).
            if let Some(tag) = to_tag {
                branch.to_tag = Some(super::dialog::tag_hash(cx, tag));
            }
        }
        if status < 200 || branch.remote_target.is_some() {
            return;
        }
        // The callee's Contact is its leg's remote target only when no proxy below us
        // record-routed (ours is the only Record-Route); else the flow is the way there. Over a
        // connection the connection is the way there, whatever the Contact names.
        branch.remote_target = (!cx.arrival.is_stream() && resp.record_routes().nth(1).is_none())
            .then(|| super::contact_destination(resp))
            .flatten();
    }

    fn provisional(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        i: usize,
        resp: &Message<'_>,
        status: u16,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(branch) = call.branches.get_mut(i) else {
            return;
        };
        let first = !branch.provisional;
        branch.provisional = true;
        let cancel_sent = matches!(
            branch.cancel,
            super::call::Cancel::Sent { .. } | super::call::Cancel::Done(_)
        );
        // A cluster branch's short Timer C ends with the remote node's first response.
        let cluster_first = first && crate::core::cluster::is_peer(cx, branch.target);
        if (status > 100 || cluster_first) && branch.timer_c.is_some() && !cancel_sent {
            // §16.7 step 2: a provisional other than 100 resets Timer C (not once the branch
            // was cancelled: then it is the §9.1 guard, see `send_cancel`).
            let timer_c = cx.cfg.proxy.timer_c;
            let mut s = sched(cx, key, TxnSlot::Branch(i as u8));
            s.cancel(&mut branch.timer_c);
            branch.timer_c = Some(s.arm(Timer::C, timer_c));
        }
        if let super::call::Cancel::Pending(reason) = branch.cancel {
            if first {
                // §16.10 / §9.1: the CANCEL waited for this provisional.
                self.count(Event::RaceCancelBeforeProvisional);
                self.send_cancel(cx, key, i, reason, true);
            }
            return;
        }
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(branch) = call.branches.get(i) else {
            return;
        };
        if status == 100
            || call.outcome != Outcome::Pending
            || call.cancelled
            || branch.cancel.reason().is_some()
        {
            return;
        }
        let mut bytes = std::mem::take(&mut call.last_response);
        bytes.clear();
        build::forward_response(resp, &mut bytes);
        call.last_response = bytes;
        self.send_upstream(cx, key, status);
    }

    fn success(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        i: usize,
        resp: &Message<'_>,
        to_tag: Option<&[u8]>,
        status: u16,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if !call.is_invite {
            // Non-INVITE: the first 2xx is the answer; later ones have nowhere to go (§16.7
            // step 5 forwards every 2xx only for INVITE).
            if let Some(b) = call.branches.get_mut(i) {
                b.final_status.get_or_insert(status);
                b.request = None;
            }
            if call.outcome == Outcome::Pending && !call.server.is_final() {
                let request = call.request.take();
                let session = self.session_of(cx, key, resp, &StoredRequest::new(&request));
                self.restore_request(key, request);
                self.forward_2xx(cx, key, resp);
                self.session_rearm(cx, session);
            }
            return self.reap(cx, key);
        }
        let single_answer = call.single_answer;
        let outcome = call.outcome;
        let server_final = call.server.is_final();
        let Some(branch) = call.branches.get_mut(i) else {
            return;
        };
        let retransmission = branch.final_status.is_some();
        if !retransmission {
            branch.final_status = Some(status);
            let mut s = sched(cx, key, TxnSlot::Branch(i as u8));
            s.cancel(&mut branch.timer_c);
            branch.request = None;
        }
        let was_cancelled = branch.cancel.reason();
        let fate = if retransmission { branch.answer } else { None };
        if let Some(fate) = fate {
            // A retransmitted 2xx: repeat what we did with the first copy.
            match fate {
                AnswerFate::Forwarded => self.forward_2xx(cx, key, resp),
                AnswerFate::TornDown => self.ack_2xx(cx, key, i, resp),
            }
            return;
        }
        if was_cancelled.is_some() {
            self.count(Event::Race2xxAfterCancel);
        }
        let forward = match outcome {
            Outcome::Pending if !server_final => true,
            Outcome::Answered => !single_answer,
            _ => false,
        };
        if outcome == Outcome::Answered {
            self.count(Event::RaceDoubleAnswer);
        }
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.cancelled && outcome == Outcome::Pending {
            self.count(Event::RaceCancelCrossed2xx);
        }
        if forward {
            if let Some(b) = self.calls.get_mut(key).and_then(|c| c.branches.get_mut(i)) {
                b.answer = Some(AnswerFate::Forwarded);
            }
            self.count(if outcome == Outcome::Answered {
                Event::ExtraAnswer
            } else {
                Event::Answered
            });
            // The stored INVITE, parsed at most once for the three that may read it (most
            // answers need no parse: `StoredRequest`): lent out of the call while they run, so
            // the parse can borrow it while they take `&mut self`.
            let request = self.calls.get_mut(key).and_then(|c| c.request.take());
            let stored = StoredRequest::new(&request);
            self.keep_ends(cx, key, i, resp, &stored);
            let session = self.session_of(cx, key, resp, &stored);
            self.note_answer(cx, key, i, resp, &stored);
            self.restore_request(key, request);
            self.forward_2xx(cx, key, resp);
            self.add_dialog(cx, key, i, to_tag);
            self.session_rearm(cx, session);
            if outcome == Outcome::Pending {
                self.answered(cx, key, i);
            }
        } else {
            self.count(Event::LateAnswerTornDown);
            self.tear_down(cx, key, i, resp);
        }
        self.reap(cx, key);
    }

    /// Gives back the request lent out of call `key` while a 2xx was being looked at.
    fn restore_request(&mut self, key: Key, request: Option<Box<[u8]>>) {
        if let Some(call) = self.calls.get_mut(key) {
            call.request = request;
        }
    }

    /// The first answer: every other branch is cancelled, no more groups start (§16.7 step 10).
    fn answered(&mut self, cx: &mut Cx<'_>, key: Key, winner: usize) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        call.pending_groups.clear();
        if let Some(id) = call.group_timer.take() {
            cx.timers.cancel(id);
        }
        for j in (0..call.branches.len()).filter(|&j| j != winner) {
            self.cancel_branch(cx, key, j, CancelReason::AnsweredElsewhere);
        }
    }

    fn forward_2xx(&mut self, cx: &mut Cx<'_>, key: Key, resp: &Message<'_>) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let mut bytes = std::mem::take(&mut call.last_response);
        bytes.clear();
        build::forward_response(resp, &mut bytes);
        call.last_response = bytes;
        let status = resp.status().unwrap_or(200);
        if !self.send_upstream(cx, key, status) {
            // RFC 6026: in Accepted the server transaction lets more 2xx pass; after Timer L
            // a 2xx retransmission is still forwarded statelessly.
            // Through the one helper: a UDP caller's 2xx stays on UDP (`push_last_response`).
            if let Some(call) = self.calls.get(key) {
                if !super::push_last_response(cx, call) {
                    self.events.bump(Event::ResponseConnectionClosed as usize);
                }
            }
        }
    }

    fn failure(&mut self, cx: &mut Cx<'_>, key: Key, i: usize, resp: &Message<'_>, status: u16) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(branch) = call.branches.get_mut(i) else {
            return;
        };
        branch.final_status = Some(status);
        branch.request = None;
        {
            let mut s = sched(cx, key, TxnSlot::Branch(i as u8));
            s.cancel(&mut branch.timer_c);
        }
        // A branch we cancelled ourselves answers 487: that says nothing about the callee.
        let ours = matches!(
            branch.cancel.reason(),
            Some(
                CancelReason::AnsweredElsewhere
                    | CancelReason::GroupTimeout
                    | CancelReason::Declined(_)
                    | CancelReason::TimerC
            )
        );
        if !ours {
            if matches!(status, 401 | 407) {
                collect_challenges(resp, &mut call.challenges);
            }
            if call
                .best
                .as_ref()
                .is_none_or(|b| rank(status) < rank(b.status))
            {
                let mut bytes = Vec::with_capacity(resp.bytes().len());
                build::forward_response(resp, &mut bytes);
                call.best = Some(Candidate {
                    status,
                    bytes: Some(bytes.into_boxed_slice()),
                });
            }
        }
        if (600..700).contains(&status) && !call.declined {
            // §16.7 step 5: a 6xx ends the call everywhere.
            call.declined = true;
            call.pending_groups.clear();
            if let Some(id) = call.group_timer.take() {
                cx.timers.cancel(id);
            }
            for j in (0..call.branches.len()).filter(|&j| j != i) {
                self.cancel_branch(cx, key, j, CancelReason::Declined(status));
            }
        }
        self.complete(cx, key);
    }

    /// A branch ended without a response (Timer B/F, or Timer C before any provisional):
    /// behave as if it answered 408 (§16.7, §16.8).
    pub(super) fn branch_timed_out(&mut self, cx: &mut Cx<'_>, key: Key, i: usize) {
        self.branch_lost(cx, key, i, 408);
    }

    /// A branch ended without a response: `status` 408 (timeout) or 503 (transport error).
    pub(super) fn branch_lost(&mut self, cx: &mut Cx<'_>, key: Key, i: usize, status: u16) {
        if self.end_branch(cx, key, i, status) {
            self.complete(cx, key);
        }
    }

    /// [`Proxy::branch_lost`] without deciding what the call does next: ends branch `i` as if
    /// it answered `status` (ranked unless the branch was cancelled). Returns whether it ended
    /// now.
    pub(super) fn end_branch(&mut self, cx: &mut Cx<'_>, key: Key, i: usize, status: u16) -> bool {
        let Some(call) = self.calls.get_mut(key) else {
            return false;
        };
        let Some(branch) = call.branches.get_mut(i) else {
            return false;
        };
        if branch.is_final() {
            return false;
        }
        branch.final_status = Some(status);
        branch.request = None;
        {
            let mut s = sched(cx, key, TxnSlot::Branch(i as u8));
            s.cancel(&mut branch.timer_c);
            match &mut branch.client {
                Client::Invite(t) => t.terminate(&mut s),
                Client::NonInvite(t) => t.terminate(&mut s),
            }
        }
        let given_up = branch.cancel.reason().is_some();
        if branch.role == BranchRole::Forward
            && !given_up
            && call
                .best
                .as_ref()
                .is_none_or(|b| rank(status) < rank(b.status))
        {
            call.best = Some(Candidate {
                status,
                bytes: None,
            });
        }
        true
    }

    /// The connection to `peer` the engine opened for our requests failed (refused, timed out):
    /// every branch still waiting on `peer` over that transport ends as if it had answered 503 (RFC 3261 §8.1.3.1),
    /// at once instead of at Timer B/F. Returns how many ended.
    pub fn transport_failed(
        &mut self,
        cx: &mut Cx<'_>,
        peer: std::net::SocketAddr,
        transport: crate::core::transport::Transport,
    ) -> usize {
        let lost: Vec<(Key, usize)> = self
            .calls
            .iter()
            .flat_map(|(key, call)| {
                call.branches
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.target == peer && b.transport == transport && !b.is_final())
                    .map(move |(i, _)| (key, i))
            })
            .collect();
        for &(key, i) in &lost {
            self.count(Event::BranchTransportError);
            self.branch_lost(cx, key, i, 503);
        }
        lost.len()
    }

    /// Decides what the call does next once a branch ended: start the next q-group, send the
    /// caller its 487 after a CANCEL, or send the best final response (§16.7 step 6).
    pub(super) fn complete(&mut self, cx: &mut Cx<'_>, key: Key) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.server.is_final() {
            return self.reap(cx, key);
        }
        if call.cancelled {
            // DECISIONS.md: the caller gets 487 as soon as every branch that had a provisional
            // has ended; branches still waiting for one are cancelled when it comes.
            let done = call
                .branches
                .iter()
                .filter(|b| b.role == BranchRole::Forward && b.provisional)
                .all(Branch::is_final);
            if done {
                self.respond_local(cx, key, 487, "Request Terminated", b"");
            }
            return self.reap(cx, key);
        }
        if call.has_pending_branches() {
            return;
        }
        if !call.declined && call.outcome == Outcome::Pending {
            if let Some(next) = call.next_group() {
                if let Some(id) = call.group_timer.take() {
                    cx.timers.cancel(id);
                }
                call.group = call.group.saturating_add(1);
                return self.start_group(cx, key, next);
            }
        }
        match call.best.take() {
            Some(Candidate {
                status,
                bytes: Some(bytes),
            }) if status != 503 => {
                let mut out = std::mem::take(&mut call.last_response);
                out.clear();
                if matches!(status, 401 | 407) && !call.challenges.is_empty() {
                    merge_challenges(&bytes, &call.challenges, &mut out);
                } else {
                    out.extend_from_slice(&bytes);
                }
                call.last_response = out;
                self.send_upstream(cx, key, status);
            }
            // §16.7 step 6: a 503 becomes 500, so the caller does not back off from us.
            Some(Candidate { status: 503, .. }) => {
                self.respond_local(cx, key, 500, "Server Internal Error", b"")
            }
            // A request too large for UDP to a device reached over UDP (RFC 3261 §18.1.1).
            Some(Candidate {
                status: 513,
                bytes: None,
            }) => self.respond_local(cx, key, 513, "Message Too Large", b""),
            // A sips: request with no TLS path to its next hop (`start_branch`; RFC 5630 §5.3).
            Some(Candidate {
                status: 480,
                bytes: None,
            }) => {
                use crate::core::transport::sips;
                let warning = sips::warning(cx, sips::NOT_ALLOWED);
                self.respond_local(cx, key, 480, "Temporarily Unavailable", &warning)
            }
            Some(Candidate { status: 408, .. }) | None => {
                self.respond_local(cx, key, 408, "Request Timeout", b"")
            }
            Some(Candidate { status, .. }) => {
                self.respond_local(cx, key, status, "Request Failed", b"")
            }
        }
        self.reap(cx, key);
    }

    /// Frees the call if nothing of it can receive a message any more.
    pub(super) fn reap(&mut self, cx: &mut Cx<'_>, key: Key) {
        let finished = self.calls.get(key).is_some_and(|c| c.is_finished());
        if !finished {
            return;
        }
        // Read and freed where it lies (`Slab::free`): moving the call and its branches out
        // would read every line of records last touched 32 s ago (issue 15, the lingering
        // expiries' cold lines).
        if let Some(call) = self.calls.get_mut(key) {
            self.index.remove(&call.server_key);
            cdr::end(&mut call.cdr, cx, 0, cdr::Cause::Released);
            let feature_timer = call.feature_timer();
            for id in [call.group_timer, call.dialog_timer, feature_timer]
                .into_iter()
                .flatten()
            {
                cx.timers.cancel(id);
            }
            for b in &call.branches {
                if let Some(id) = b.timer_c {
                    cx.timers.cancel(id);
                }
            }
            self.calls.free(key);
        }
    }
}

/// A call's stored request (`Call::request`, lent out while a 2xx is looked at), parsed the
/// first time something reads it and only then: the first 2xx of a call that records its route
/// reads the pieces `Ends` keeps from notes taken on arrival (`expiry::CallerNotes`), and a
/// 2xx without Session-Expires (the BYE's 200, most INVITEs') needs nothing of it.
pub(super) struct StoredRequest<'a> {
    bytes: Option<&'a [u8]>,
    parsed: std::cell::OnceCell<Option<Message<'a>>>,
}

impl<'a> StoredRequest<'a> {
    pub(super) fn new(request: &'a Option<Box<[u8]>>) -> Self {
        StoredRequest {
            bytes: request.as_deref(),
            parsed: std::cell::OnceCell::new(),
        }
    }

    /// Its bytes, as received.
    pub(super) fn bytes(&self) -> Option<&'a [u8]> {
        self.bytes
    }

    /// Its parse (the first call parses; `None`: no request, or it does not parse).
    pub(super) fn message(&self) -> Option<&Message<'a>> {
        self.parsed
            .get_or_init(|| self.bytes.and_then(|b| crate::sip::parse(b).ok()))
            .as_ref()
    }
}

/// §16.7 step 6 preference: lower is better. 6xx first, then the lowest class; within 4xx,
/// answers that say something about the callee before timeouts and our own cancellations.
pub(super) fn rank(status: u16) -> (u8, u8) {
    match status {
        600..=699 => (0, 0),
        300..=399 => (1, 0),
        401 | 407 => (2, 0),
        486 => (2, 1),
        400..=499 if !matches!(status, 408 | 480 | 487) => (2, 2),
        480 => (2, 3),
        408 => (2, 4),
        487 => (2, 5),
        500..=599 => (3, if status == 503 { 1 } else { 0 }),
        _ => (4, 0),
    }
}

fn collect_challenges(resp: &Message<'_>, out: &mut Vec<u8>) {
    for h in resp.headers() {
        if matches!(
            h.name,
            HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate
        ) {
            out.extend_from_slice(h.row);
        }
    }
}

/// The best 401/407 with every branch's challenge rows (§16.7 step 6: merge them).
fn merge_challenges(best: &[u8], challenges: &[u8], out: &mut Vec<u8>) {
    let Ok(msg) = crate::sip::parse(best) else {
        out.extend_from_slice(best);
        return;
    };
    out.extend_from_slice(msg.start_line());
    out.extend_from_slice(b"\r\n");
    for h in msg.headers() {
        if !matches!(
            h.name,
            HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate
        ) {
            out.extend_from_slice(h.row);
        }
    }
    out.extend_from_slice(challenges);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(msg.body());
}

#[cfg(test)]
mod rank_tests {
    use super::rank;

    #[test]
    fn best_response_preferences() {
        assert!(rank(603) < rank(302));
        assert!(rank(302) < rank(486));
        assert!(rank(407) < rank(486));
        assert!(rank(486) < rank(404));
        assert!(rank(404) < rank(480));
        assert!(rank(480) < rank(408));
        assert!(rank(408) < rank(487));
        assert!(rank(487) < rank(500));
        assert!(rank(500) < rank(503));
    }
}
