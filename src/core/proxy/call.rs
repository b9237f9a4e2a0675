//! The per-request state of the stateful proxy: one [`Call`] per server transaction, holding the
//! response context of RFC 3261 §16 and every client transaction (branch) it created.
//!
//! A call lives in the proxy's slab under a generational key; our Via branches and our
//! Record-Route token name that key, so responses and in-dialog requests find it in O(1).
//! Invariant: a call is freed only when its server transaction, every branch and every dialog it
//! established have ended (`Call::is_finished`); big buffers (the received request, forwarded
//! requests) are dropped as soon as no transaction can need them again, so calls that linger for
//! Timers D, L, M or a long dialog stay small.

use std::net::SocketAddr;

use crate::core::timer::TimerId;
use crate::core::transaction::client_invite::ClientInvite;
use crate::core::transaction::client_non_invite::ClientNonInvite;
use crate::core::transaction::server_invite::ServerInvite;
use crate::core::transaction::server_non_invite::ServerNonInvite;
use crate::sip::build::ViaFix;
use crate::time::Instant;

/// The server side of a call.
#[derive(Debug)]
pub enum Server {
    /// An INVITE server transaction.
    Invite(ServerInvite),
    /// A non-INVITE server transaction.
    NonInvite(ServerNonInvite),
}

impl Server {
    /// Has a final response been sent upstream?
    pub fn is_final(&self) -> bool {
        match self {
            Server::Invite(t) => t.is_final(),
            Server::NonInvite(t) => t.is_final(),
        }
    }

    /// Is the server transaction over?
    pub fn is_terminated(&self) -> bool {
        match self {
            Server::Invite(t) => {
                t.state() == crate::core::transaction::server_invite::State::Terminated
            }
            Server::NonInvite(t) => {
                t.state() == crate::core::transaction::server_non_invite::State::Terminated
            }
        }
    }
}

/// The client transaction of a branch.
#[derive(Debug)]
pub enum Client {
    /// INVITE client transaction.
    Invite(ClientInvite),
    /// Non-INVITE client transaction (forked MESSAGE/NOTIFY, forwarded BYE, our own BYE).
    NonInvite(ClientNonInvite),
}

impl Client {
    /// Is the client transaction over?
    pub fn is_terminated(&self) -> bool {
        match self {
            Client::Invite(t) => {
                t.state() == crate::core::transaction::client_invite::State::Terminated
            }
            Client::NonInvite(t) => {
                t.state() == crate::core::transaction::client_non_invite::State::Terminated
            }
        }
    }
}

/// Why sipfork cancels a branch (RFC 3326 Reason on the CANCEL, where one applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// Another device answered: `Reason: SIP;cause=200;text="Call completed elsewhere"`.
    AnsweredElsewhere,
    /// The caller cancelled (its own Reason, if any, is not repeated).
    CallerCancelled,
    /// Another branch returned a 6xx; the call is over everywhere.
    Declined(u16),
    /// The q-group rang too long; the next group takes over.
    GroupTimeout,
    /// Timer C: the branch rang longer than the proxy allows.
    TimerC,
}

impl CancelReason {
    /// The Reason header value to send with the CANCEL, if any.
    pub fn header_value(self) -> Option<&'static [u8]> {
        match self {
            CancelReason::AnsweredElsewhere => {
                Some(b"SIP;cause=200;text=\"Call completed elsewhere\"")
            }
            CancelReason::Declined(603) => Some(b"SIP;cause=603;text=\"Declined\""),
            CancelReason::Declined(_) => Some(b"SIP;cause=600;text=\"Busy Everywhere\""),
            _ => None,
        }
    }
}

/// Where a branch stands with respect to cancellation (RFC 3261 §9.1: a CANCEL may only be sent
/// once the branch has sent a provisional response).
#[derive(Debug, Default)]
pub enum Cancel {
    /// Not cancelled.
    #[default]
    No,
    /// Cancelled before any provisional: the CANCEL goes out when one arrives (§16.10), or the
    /// branch is given up when its timer fires.
    Pending(CancelReason),
    /// A CANCEL was sent; its own non-INVITE client transaction retransmits it.
    Sent {
        /// Why.
        reason: CancelReason,
        /// The CANCEL transaction.
        txn: ClientNonInvite,
        /// The CANCEL's bytes, for retransmission.
        bytes: Box<[u8]>,
    },
    /// The CANCEL transaction is over (answered or timed out).
    Done(CancelReason),
}

impl Cancel {
    /// The reason, if the branch was cancelled by us in any way.
    pub fn reason(&self) -> Option<CancelReason> {
        match self {
            Cancel::No => None,
            Cancel::Pending(r) | Cancel::Done(r) | Cancel::Sent { reason: r, .. } => Some(*r),
        }
    }
}

/// What a branch is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchRole {
    /// A forwarded copy of the call's request (a fork target or the next hop).
    Forward,
    /// A BYE sipfork sends itself to a device whose 2xx nobody will use.
    Bye,
}

/// One client transaction of a call.
///
/// `repr(C)`, what `is_finished` reads (the client transaction's state, the cancellation's)
/// first, so an expiry's check of a call's branches reads one or two lines of each.
#[derive(Debug)]
#[repr(C)]
pub struct Branch {
    /// The client transaction.
    pub client: Client,
    /// Cancellation state.
    pub cancel: Cancel,
    /// The request as sent (retransmissions, CANCEL and ACK construction); dropped once final.
    pub request: Option<Box<[u8]>>,
    /// The ACK sent for a non-2xx final, sent again for each retransmission of that final
    /// (§17.1.1.2) until Timer D, after the request itself was dropped.
    pub ack: Option<Box<[u8]>>,
    /// Keyed hash of the To tag of its first tagged response: the callee's tag of the (early)
    /// dialog on this branch.
    pub to_tag: Option<u64>,
    /// Where its CANCEL's and ACK's parts lie in `request`, noted when it was written (`None`:
    /// they are found by parsing `request`).
    pub hop: Option<crate::sip::build::HopByHop>,
    /// Where its requests go.
    pub target: SocketAddr,
    /// Where the callee's Contact (remote target) of that response points, when it is an IP
    /// literal.
    pub remote_target: Option<SocketAddr>,
    /// Timer C (INVITE branches only).
    pub timer_c: Option<TimerId>,
    /// Final status received (or synthesised: 408 on timeout).
    pub final_status: Option<u16>,
    /// What the branch is for.
    pub role: BranchRole,
    /// What they go over, decided when the branch was made: the open flow to `target` (TCP,
    /// TLS), else UDP. Its Via, Record-Route and retransmission rule (none over a stream) and
    /// those of its CANCEL follow it.
    pub transport: crate::core::transport::Transport,
    /// A provisional response was received (so a CANCEL may be sent).
    pub provisional: bool,
    /// q-group the branch belongs to (0 = first).
    pub group: u8,
    /// What happened to its 2xx, once it answered.
    pub answer: Option<AnswerFate>,
}

/// What happened to a branch's 2xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerFate {
    /// Forwarded upstream (its retransmissions are forwarded too).
    Forwarded,
    /// ACKed and BYEd by sipfork (its retransmissions are ACKed again).
    TornDown,
}

impl Branch {
    /// Has this branch got (or been given) its final answer?
    pub fn is_final(&self) -> bool {
        self.final_status.is_some()
    }

    /// Is everything of this branch over (its transaction and its CANCEL's)?
    pub fn is_finished(&self) -> bool {
        self.client.is_terminated() && !matches!(self.cancel, Cancel::Sent { .. })
    }
}

/// A final response kept as a candidate for the best response (§16.7 step 6).
#[derive(Debug)]
pub struct Candidate {
    /// Its status.
    pub status: u16,
    /// The response as it would be forwarded (our Via already removed); `None` for a 408 we
    /// synthesise for a branch that never answered.
    pub bytes: Option<Box<[u8]>>,
}

/// Where the call stands, seen from upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Still ringing (or trying).
    #[default]
    Pending,
    /// A 2xx went upstream.
    Answered,
    /// A non-2xx final went upstream.
    Failed,
}

/// A dialog established through this call (a forwarded 2xx), kept small: the call-limit work
/// counts concurrent calls from these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialog {
    /// Hash of the To tag of the 2xx that established it.
    pub to_tag: u64,
    /// When it was established.
    pub since: Instant,
    /// The branch whose 2xx established it: its `target` is the callee leg's flow.
    pub branch: u8,
}

/// One call (response context + server transaction + branches).
///
/// `repr(C)`, the fields an expiry reads first: the server transaction, the branches and the
/// dialogs (all `is_finished` reads of the call itself) lie in the slab slot's first two cache
/// lines, beside the slot's generation, instead of spread over the call's nine (issue 15, the
/// lingering expiries' cold lines).
#[derive(Debug)]
#[repr(C)]
pub struct Call {
    /// The server transaction.
    pub server: Server,
    /// Branches, in creation order (index = branch number in our Via branch).
    pub branches: Vec<Branch>,
    /// Dialogs established through this call (usually one).
    pub dialogs: Vec<Dialog>,
    /// Key of the server transaction in the proxy's index (removed when the call is freed).
    pub server_key: u128,
    /// The received request; kept while the call may still create branches or generate
    /// responses, dropped when the server transaction has sent its final response.
    pub request: Option<Box<[u8]>>,
    /// The last response sent upstream (retransmitted by the server transaction).
    pub last_response: Vec<u8>,
    /// Targets of q-groups (or follow-me stages) not yet started, the next one last, each
    /// with how long it rings.
    pub pending_groups: Vec<(Vec<super::ForkTarget<'static>>, crate::time::Duration)>,
    /// Best final response so far.
    pub best: Option<Candidate>,
    /// WWW-/Proxy-Authenticate rows collected from 401/407 branches (merged, §16.7 step 6).
    pub challenges: Vec<u8>,
    /// How long the ringing group (q-group or follow-me stage) rings before the next starts.
    pub group_timeout: crate::time::Duration,
    /// The public-call levels to take before a group with external targets rings (follow-me to
    /// an external number makes the call public only when that stage starts).
    pub external_levels: Option<Box<[usize]>>,
    /// Keyed hash of the caller's From tag: tells the caller's in-dialog requests from the
    /// callee's.
    pub caller_tag: u64,
    /// Where what `ends` takes from the INVITE lies in `request` (`None`: it is parsed).
    pub caller_notes: Option<super::dialog::expiry::CallerNotes>,
    /// Rows every branch adds (an asserted identity); usually empty.
    pub extra: Box<[u8]>,
    /// What the call holds on the shared policy counters (`core::policy`): given back when it
    /// fails or its last dialog ends, or at the latest when the call is freed.
    pub holds: crate::core::policy::Holds,
    /// A public call's CDR until the call ends (`core::cdr`): taken once, by the first end.
    pub cdr: Option<Box<crate::core::cdr::Draft>>,
    /// What BYEs to both legs of the first dialog need at `max_call_seconds`
    /// (`dialog/expiry.rs`).
    pub ends: Option<Box<super::dialog::expiry::Ends>>,
    /// A move or join this call carries out (`features.rs`).
    pub feature: Option<Box<super::features::Pending>>,
    /// Where responses go.
    pub upstream: SocketAddr,
    /// Where the caller's Contact (remote target) points, when it is an IP literal.
    pub caller_target: Option<SocketAddr>,
    /// The q-group timer.
    pub group_timer: Option<TimerId>,
    /// Dialog lifetime guard.
    pub dialog_timer: Option<TimerId>,
    /// Loop-detection hash of the received request (goes into our branches).
    pub loop_hash: u32,
    /// `received`/`rport` for responses we generate.
    pub fix: ViaFix,
    /// INVITE or not.
    pub is_invite: bool,
    /// What the request came on: its responses go back the same way (RFC 3261 §18.2.2), even
    /// when sipfork also holds a connection to that address.
    pub upstream_transport: crate::core::transport::Transport,
    /// The group currently ringing.
    pub group: u8,
    /// The caller sent CANCEL.
    pub cancelled: bool,
    /// A 6xx arrived: no new branches.
    pub declined: bool,
    /// What went upstream.
    pub outcome: Outcome,
    /// Late 2xx are ACKed and BYEd here instead of forwarded.
    pub single_answer: bool,
    /// Follow-me: the last stage ends after its ring time too (q-groups ring on until Timer C).
    pub last_group_times_out: bool,
    /// This call belongs to an extension (metrics, later policy).
    pub to_extension: bool,
    /// Branches carry our Record-Route (initial INVITEs): the call can establish dialogs.
    pub record_route: bool,
    /// Branches drop P-Asserted-/P-Preferred-Identity (an untrusted sender).
    pub strip_identity: bool,
    /// Its request's Request-URI was `sips:` (RFC 5630): the requests sipfork sends itself in
    /// this call (CANCEL, ACKs, the BYE of a torn-down 2xx, the maximum-duration BYEs) leave
    /// over TLS only (`transport::sips::may_send`).
    pub secure: bool,
}

/// Whether a request sipfork sends itself on a leg (a CANCEL, a non-2xx final's ACK, the ACK
/// and BYE of a torn-down 2xx, a maximum-duration BYE) leaves over TLS only
/// (`transport::sips::may_send`): the call is `sips:` (`secure`), or the leg went over TLS or
/// WSS (`leg`: the branch's transport, [`Call::leg_transport`]). One rule for every such
/// request: a leg that went over TLS never gets a cleartext copy once its connection closed.
pub fn tls_only(secure: bool, leg: crate::core::transport::Transport) -> bool {
    secure || crate::core::transport::outbound::secure(leg)
}

impl Call {
    /// Is everything of this call over, so it can be freed?
    pub fn is_finished(&self) -> bool {
        self.server.is_terminated()
            && self.dialogs.is_empty()
            && self.branches.iter().all(Branch::is_finished)
    }

    /// Takes the next group to ring and makes its ring time the group timeout.
    pub fn next_group(&mut self) -> Option<Vec<super::ForkTarget<'static>>> {
        let (targets, ring) = self.pending_groups.pop()?;
        self.group_timeout = ring;
        Some(targets)
    }

    /// The transport of this call's leg at `dest`: the caller's request's when `dest` is the
    /// caller, else the first branch forwarded to `dest`; UDP when neither is.
    pub fn leg_transport(&self, dest: SocketAddr) -> crate::core::transport::Transport {
        if dest == self.upstream {
            return self.upstream_transport;
        }
        self.branches
            .iter()
            .find(|b| b.role == BranchRole::Forward && b.target == dest)
            .map_or(crate::core::transport::Transport::Udp, |b| b.transport)
    }

    /// Are branches still ringing (no final yet)?
    pub fn has_pending_branches(&self) -> bool {
        self.branches
            .iter()
            .any(|b| b.role == BranchRole::Forward && !b.is_final())
    }
}
