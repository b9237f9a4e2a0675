//! CANCEL (RFC 3261 §9.1, §16.10) and the timers that end branches: Timer C (§16.8), the
//! q-group timeout, and every transaction timer of a call.
//!
//! Invariant (§9.1): a CANCEL goes to a branch only after that branch sent a provisional
//! response; before that, the branch is marked and cancelled when its first provisional arrives,
//! or given up when its own timer fires.

use super::call::{BranchRole, Cancel, Client, Server};
use super::{sched, CancelReason, Event, Proxy};
use crate::core::context::Cx;
use crate::core::slab::Key;
use crate::core::transaction::client_invite::OnTimer as InviteClientTimer;
use crate::core::transaction::client_non_invite::{
    ClientNonInvite, OnTimer as NonInviteClientTimer,
};
use crate::core::transaction::server_invite::OnTimer as InviteServerTimer;
use crate::core::transaction::{Timer, TxnSlot};
use crate::core::TimerKey;
use crate::sip::{build, Essentials, Message};

impl Proxy {
    /// The caller's CANCEL matched the INVITE server transaction of `key` (§16.10): 200 to the
    /// CANCEL at once, then every pending branch is cancelled. Only the flow the INVITE came
    /// from may cancel it (the branch and Call-ID are no secret to whoever saw the INVITE):
    /// anybody else gets 481 and cancels nothing.
    pub(super) fn handle_cancel(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        req: &Message<'_>,
        _e: &Essentials<'_>,
        from: std::net::SocketAddr,
    ) {
        if self.calls.get(key).is_some_and(|c| c.upstream != from) {
            self.count(Event::CancelWrongSource);
            return crate::core::reply::no_such_transaction(cx, req, from);
        }
        crate::core::reply::reply_to(cx, req, from, 200, "OK", b"");
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.server.is_final() || call.cancelled || !call.is_invite {
            return;
        }
        self.events.bump(Event::CallerCancel as usize);
        call.cancelled = true;
        call.pending_groups.clear();
        if let Some(id) = call.group_timer.take() {
            cx.timers.cancel(id);
        }
        let n = call.branches.len();
        for i in 0..n {
            self.cancel_branch(cx, key, i, CancelReason::CallerCancelled);
        }
        self.complete(cx, key);
    }

    /// Cancels branch `i` if it is still ringing: now if it sent a provisional, else when it does.
    pub(super) fn cancel_branch(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        i: usize,
        reason: CancelReason,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(branch) = call.branches.get_mut(i) else {
            return;
        };
        if branch.role != BranchRole::Forward
            || branch.is_final()
            || !matches!(branch.cancel, Cancel::No)
            || !matches!(branch.client, Client::Invite(_))
        {
            return;
        }
        if branch.provisional {
            self.send_cancel(cx, key, i, reason, false);
        } else {
            branch.cancel = Cancel::Pending(reason);
        }
    }

    /// Sends the CANCEL for branch `i` and starts its transaction. `pending` says the branch was
    /// marked earlier and this is its first provisional arriving.
    pub(super) fn send_cancel(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        i: usize,
        reason: CancelReason,
        pending: bool,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(branch) = call.branches.get_mut(i) else {
            return;
        };
        let already = match &branch.cancel {
            Cancel::No => false,
            Cancel::Pending(_) => !pending,
            Cancel::Sent { .. } | Cancel::Done(_) => true,
        };
        if already || branch.is_final() {
            return;
        }
        let Some(sent) = branch
            .request
            .as_deref()
            .and_then(|sent| build::SentRequest::of(sent, branch.hop))
        else {
            return;
        };
        // A branch that went over TLS (or of a sips: call) no longer reached over TLS: no
        // cleartext CANCEL (RFC 5630). The branch ends at once, given up (its 503 is never the
        // call's answer): a cancelled call's 487 does not wait for Timer C's guard (DECISIONS:
        // 487 as soon as every branch that had a provisional has ended).
        let tls_only = super::call::tls_only(call.secure, branch.transport);
        if !crate::core::transport::sips::may_send(cx, tls_only, branch.target) {
            branch.cancel = Cancel::Done(reason);
            self.count(Event::BranchTransportError);
            // A group timeout cancelling its group's branches starts the next group (or
            // answers) itself; a CANCEL that waited for this provisional ends it here.
            let decide = pending || reason != CancelReason::GroupTimeout;
            if self.end_branch(cx, key, i, 503) && decide {
                self.complete(cx, key);
            }
            return;
        }
        let bytes: Box<[u8]> = cx
            .out
            .push_with(branch.target, |buf| sent.cancel(reason.header_value(), buf))
            .into();
        {
            //= rfc3261#section-9.1
            //# If no final response has been received after 64*T1 seconds, the client SHOULD
            //# then consider the original transaction cancelled and SHOULD destroy the client
            //# transaction handling the original request.
            // Timer C guards the branch from now on: a device that rang and then died would
            // otherwise hold the call (and the caller's final response) forever.
            let guard = cx.env.timers.t1x64();
            let mut s = sched(cx, key, TxnSlot::Branch(i as u8));
            s.cancel(&mut branch.timer_c);
            branch.timer_c = Some(s.arm(Timer::C, guard));
        }
        // Over what it will go over now: the INVITE's flow while it is open (§9.1), and when
        // that flow has closed, UDP, which needs the retransmissions (the engine sends a message
        // over whatever flow is open to its address when it leaves).
        let reliable = cx.flows.transport_to(branch.target).is_stream();
        let mut s = sched(cx, key, TxnSlot::Cancel(i as u8));
        let txn = ClientNonInvite::start_over(&mut s, reliable);
        branch.cancel = Cancel::Sent { reason, txn, bytes };
        self.count(Event::CancelSent);
    }

    /// One of the proxy's timers fired.
    pub fn on_timer(&mut self, cx: &mut Cx<'_>, key: TimerKey) {
        match key {
            TimerKey::Txn { call, slot, timer } => match slot {
                TxnSlot::Server => self.server_timer(cx, call, timer),
                TxnSlot::Branch(i) if timer == Timer::C => self.timer_c(cx, call, usize::from(i)),
                TxnSlot::Branch(i) => self.branch_timer(cx, call, usize::from(i), timer),
                TxnSlot::Cancel(i) => self.cancel_timer(cx, call, usize::from(i), timer),
            },
            TimerKey::Group { call } => self.group_timeout(cx, call),
            TimerKey::Dialog { call } => self.dialog_expired(cx, call),
            TimerKey::FeatureBye { call } => self.feature_bye(cx, call),
            // The registrar's and authentication's; the core never hands them here.
            TimerKey::BindingExpiry { .. } | TimerKey::AuthSweep | TimerKey::Keepalive { .. } => {}
        }
    }

    fn server_timer(&mut self, cx: &mut Cx<'_>, key: Key, timer: Timer) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let mut s = sched(cx, key, TxnSlot::Server);
        let resend = match &mut call.server {
            Server::Invite(t) => t.on_timer(timer, &mut s) == InviteServerTimer::ResendFinal,
            Server::NonInvite(t) => {
                t.on_timer(timer, &mut s);
                false
            }
        };
        if resend && !super::push_last_response(cx, call) {
            self.events.bump(Event::ResponseConnectionClosed as usize);
        }
        self.reap(cx, key);
    }

    /// §16.8: Timer C fired. A branch that sent a provisional is cancelled; one that never did
    /// is treated as if it answered 408. Once the branch's CANCEL went out, Timer C is the §9.1
    /// guard: 64·T1 later without a final response, the branch is given up.
    fn timer_c(&mut self, cx: &mut Cx<'_>, key: Key, i: usize) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(branch) = call.branches.get_mut(i) else {
            return;
        };
        branch.timer_c = None;
        if branch.is_final() {
            return;
        }
        if matches!(branch.cancel, Cancel::Sent { .. } | Cancel::Done(_)) {
            self.events.bump(Event::BranchTimeout as usize);
            self.branch_timed_out(cx, key, i);
            return self.reap(cx, key);
        }
        self.events.bump(Event::TimerC as usize);
        if branch.provisional {
            self.send_cancel(cx, key, i, CancelReason::TimerC, false);
        } else {
            self.branch_timed_out(cx, key, i);
        }
    }

    fn branch_timer(&mut self, cx: &mut Cx<'_>, key: Key, i: usize, timer: Timer) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(branch) = call.branches.get_mut(i) else {
            return;
        };
        let mut s = sched(cx, key, TxnSlot::Branch(i as u8));
        let (retransmit, timed_out) = match &mut branch.client {
            Client::Invite(t) => match t.on_timer(timer, &mut s) {
                InviteClientTimer::Retransmit => (true, false),
                InviteClientTimer::TimedOut => (false, true),
                _ => (false, false),
            },
            Client::NonInvite(t) => match t.on_timer(timer, &mut s) {
                NonInviteClientTimer::Retransmit => (true, false),
                NonInviteClientTimer::TimedOut => (false, true),
                _ => (false, false),
            },
        };
        if retransmit {
            if let Some(bytes) = branch.request.as_deref() {
                cx.out.push(branch.target, bytes);
            }
        }
        if timed_out {
            self.events.bump(Event::BranchTimeout as usize);
            if branch.role == BranchRole::Bye {
                branch.final_status = Some(408);
                branch.request = None;
            } else {
                self.branch_timed_out(cx, key, i);
            }
        }
        self.reap(cx, key);
    }

    fn cancel_timer(&mut self, cx: &mut Cx<'_>, key: Key, i: usize, timer: Timer) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(branch) = call.branches.get_mut(i) else {
            return;
        };
        let Cancel::Sent { reason, txn, bytes } = &mut branch.cancel else {
            return;
        };
        let mut s = sched(cx, key, TxnSlot::Cancel(i as u8));
        match txn.on_timer(timer, &mut s) {
            NonInviteClientTimer::Retransmit => cx.out.push(branch.target, bytes),
            NonInviteClientTimer::TimedOut | NonInviteClientTimer::Terminated => {
                branch.cancel = Cancel::Done(*reason);
            }
            NonInviteClientTimer::Ignore => {}
        }
        self.reap(cx, key);
    }

    /// The ringing q-group (or follow-me stage) rang for `group_timeout`: cancel what still
    /// rings and move on; after a follow-me's last stage, the caller gets 480.
    fn group_timeout(&mut self, cx: &mut Cx<'_>, key: Key) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        call.group_timer = None;
        if call.outcome != super::call::Outcome::Pending || call.cancelled || call.declined {
            return;
        }
        let next = call.next_group();
        if next.is_none() && !call.last_group_times_out {
            return;
        }
        self.events.bump(Event::GroupTimeout as usize);
        let group = call.group;
        let ringing: Vec<usize> = call
            .branches
            .iter()
            .enumerate()
            .filter(|(_, b)| b.group == group && !b.is_final())
            .map(|(i, _)| i)
            .collect();
        for i in ringing {
            self.cancel_branch(cx, key, i, CancelReason::GroupTimeout);
        }
        let Some(next) = next else {
            // Nobody answered any stage: the sequence is over.
            self.respond_local(cx, key, 480, "Temporarily Unavailable - no answer", b"");
            return self.reap(cx, key);
        };
        if let Some(call) = self.calls.get_mut(key) {
            call.group = call.group.saturating_add(1);
        }
        self.start_group(cx, key, next);
    }
}
