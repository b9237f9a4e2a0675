//! A scripted SIP phone for the simulator: registers, calls, rings, answers, rejects, cancels,
//! hangs up, and retransmits like a real UDP user agent (RFC 3261 §17 timers with T1 = 500 ms).
//!
//! It is deliberately small and literal: it builds messages from format strings, keeps every
//! datagram it receives (`inbox`), and exposes what tests assert on (responses per call, CANCELs,
//! ACKs and BYEs seen as a callee).

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::sip::build::{self, Reply, ViaFix};
use crate::sip::{self, ContactValue, HeaderName, Message, Method};
use crate::time::{Duration, Instant};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// How a phone answers an INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Send 100 Trying at once.
    pub trying: bool,
    /// Send 180 Ringing after this delay (None: no 180).
    pub ring_after: Option<Duration>,
    /// Send 200 OK after this delay (None: never answer).
    pub answer_after: Option<Duration>,
    /// Send this final error after this delay instead.
    pub reject: Option<(u16, Duration)>,
    /// Status to answer non-INVITE requests outside a call with (MESSAGE, NOTIFY, ...).
    pub other_status: u16,
}

impl Default for Behaviour {
    /// Rings at once and never answers.
    fn default() -> Self {
        Behaviour {
            trying: false,
            ring_after: Some(Duration::ZERO),
            answer_after: None,
            reject: None,
            other_status: 200,
        }
    }
}

impl Behaviour {
    /// Rings at once and answers after `after`.
    pub fn answer_after(after: Duration) -> Self {
        Behaviour {
            answer_after: Some(after),
            ..Self::default()
        }
    }
    /// Rings at once and answers `status` after `after`.
    pub fn reject_after(status: u16, after: Duration) -> Self {
        Behaviour {
            reject: Some((status, after)),
            ..Self::default()
        }
    }
    /// Sends nothing at all (a device that lost power).
    pub fn silent() -> Self {
        Behaviour {
            trying: false,
            ring_after: None,
            answer_after: None,
            reject: None,
            other_status: 200,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerKind {
    Ring(usize),
    Answer(usize),
    Reject(usize),
    ResendFinal(usize),
    ResendInvite(usize),
    ResendCancel(usize),
    ResendBye(usize, usize),
    ResendRegister,
}

/// A call this phone received.
#[derive(Debug)]
pub struct Incoming {
    /// Call-ID.
    pub call_id: String,
    /// The INVITE as received.
    pub invite: Vec<u8>,
    source: SocketAddr,
    to_tag: String,
    last: Option<Vec<u8>>,
    /// Final status sent (200 answered, 487 cancelled, ...).
    pub final_status: Option<u16>,
    /// The final (2xx or not) was ACKed.
    pub acked: bool,
    /// A CANCEL arrived.
    pub cancelled: bool,
    /// The Reason header of the CANCEL, if any.
    pub cancel_reason: Option<String>,
    /// A BYE arrived.
    pub bye: bool,
    /// The Reason header of the BYE, if any.
    pub bye_reason: Option<String>,
    interval: Duration,
    give_up: Instant,
}

/// A dialog this phone's outgoing call established.
#[derive(Debug)]
pub struct OutDialog {
    /// The callee's To tag.
    pub to_tag: String,
    remote_target: String,
    route_set: Vec<String>,
    bye: Option<Vec<u8>>,
    /// The BYE got its final response.
    pub bye_done: bool,
    interval: Duration,
}

/// A call this phone placed.
#[derive(Debug)]
pub struct Outgoing {
    /// Call-ID.
    pub call_id: String,
    from_tag: String,
    branch: String,
    invite: Vec<u8>,
    request_uri: String,
    /// Every response to the INVITE, in order, with retransmissions: (time, status, To tag).
    pub responses: Vec<(Instant, u16, Option<String>)>,
    /// Dialogs (one per 2xx To tag).
    pub dialogs: Vec<OutDialog>,
    heard: bool,
    interval: Duration,
    give_up: Instant,
    cancel: Option<Vec<u8>>,
    /// Status of the response to our CANCEL.
    pub cancel_status: Option<u16>,
    cancel_interval: Duration,
}

impl Outgoing {
    /// Distinct (status, To tag) pairs in the order first received.
    pub fn distinct(&self) -> Vec<(u16, Option<String>)> {
        let mut out: Vec<(u16, Option<String>)> = Vec::new();
        for (_, s, t) in &self.responses {
            if !out.iter().any(|(s2, t2)| s2 == s && t2 == t) {
                out.push((*s, t.clone()));
            }
        }
        out
    }

    /// Distinct final statuses (≥ 200) in order.
    pub fn finals(&self) -> Vec<u16> {
        self.distinct()
            .into_iter()
            .filter(|(s, _)| *s >= 200)
            .map(|(s, _)| s)
            .collect()
    }
}

/// A scripted phone.
pub struct Phone {
    /// Name in logs.
    pub name: String,
    /// The user (extension) it registers as and calls from.
    pub user: String,
    /// Its address (where its datagrams come from: behind NAT, the NAT's public flow).
    pub addr: SocketAddr,
    /// Behind NAT: the private address it writes into its Via and Contact, which nobody can
    /// reach (the simulator logs a datagram sent there as "no such host").
    pub private: Option<SocketAddr>,
    proxy: SocketAddr,
    /// How it answers INVITEs.
    pub behaviour: Behaviour,
    /// Rows its 2xx to an INVITE or to an in-dialog UPDATE carry (`Session-Expires: 120\r\n`).
    pub answer_extra: String,
    /// A 200 OK to its last REGISTER arrived.
    pub registered: bool,
    /// q-value to register with (`"0.5"`), if any.
    pub q: Option<String>,
    /// URI parameters of its Contact (`";transport=tcp"`: reach me over a connection).
    pub contact_params: String,
    /// The host its Contact names instead of its address: a WebSocket client's
    /// `….invalid` (RFC 7118 §5.2: it has no address of its own to give).
    pub contact_host: Option<String>,
    /// Everything it received.
    pub inbox: Vec<(Instant, Vec<u8>)>,
    /// Calls it received.
    pub incoming: Vec<Incoming>,
    /// Calls it placed.
    pub outgoing: Vec<Outgoing>,
    timers: Vec<(Instant, TimerKind)>,
    counter: u64,
    register: Option<(Vec<u8>, Duration, Instant)>,
    reg_cseq: u32,
    reg_call_id: String,
}

type Out = Vec<(SocketAddr, Vec<u8>)>;

impl Phone {
    /// A phone for `user` at `addr`, sending through `proxy`.
    pub fn new(name: &str, user: &str, addr: SocketAddr, proxy: SocketAddr, seed: u64) -> Phone {
        Phone {
            name: name.to_owned(),
            user: user.to_owned(),
            addr,
            private: None,
            proxy,
            behaviour: Behaviour::default(),
            answer_extra: String::new(),
            registered: false,
            q: None,
            contact_params: String::new(),
            contact_host: None,
            inbox: Vec::new(),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            timers: Vec::new(),
            counter: seed.wrapping_mul(1_000_003),
            register: None,
            reg_cseq: 0,
            reg_call_id: format!("reg-{name}-{}", addr.port()),
        }
    }

    fn fresh(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        self.counter
    }

    fn branch(&mut self) -> String {
        let n = self.fresh();
        format!("z9hG4bK{}{n}", self.name)
    }

    fn at(&mut self, at: Instant, kind: TimerKind) {
        self.timers.push((at, kind));
    }

    fn unset(&mut self, pred: impl Fn(&TimerKind) -> bool) {
        self.timers.retain(|(_, k)| !pred(k));
    }

    /// The earliest pending timer.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.iter().map(|(t, _)| *t).min()
    }

    /// The address it writes into its messages (its private one behind NAT).
    fn advertised(&self) -> SocketAddr {
        self.private.unwrap_or(self.addr)
    }

    fn contact(&self) -> String {
        let host = match &self.contact_host {
            Some(host) => host.clone(),
            None => self.advertised().to_string(),
        };
        format!("<sip:{}@{}{}>", self.user, host, self.contact_params)
    }

    /// A REGISTER for its user (expires in seconds).
    pub fn register(&mut self, now: Instant, expires: u32) -> Out {
        self.reg_cseq += 1;
        self.registered = false;
        let branch = self.branch();
        let msg = format!(
            "REGISTER sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{proxy}>;tag=r{tag}\r\nTo: <sip:{user}@{proxy}>\r\n\
             Call-ID: {cid}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\n\
             User-Agent: sim-phone {name}\r\nContent-Length: 0\r\n\r\n",
            proxy = self.proxy,
            me = self.advertised(),
            user = self.user,
            tag = self.addr.port(),
            cid = self.reg_call_id,
            cseq = self.reg_cseq,
            contact = match &self.q {
                Some(q) => format!("{};q={q}", self.contact()),
                None => self.contact(),
            },
            name = self.name,
        )
        .into_bytes();
        self.register = Some((msg.clone(), T1, now + T1 * 64));
        self.unset(|k| *k == TimerKind::ResendRegister);
        self.at(now + T1, TimerKind::ResendRegister);
        vec![(self.proxy, msg)]
    }

    /// An INVITE to `number` at the proxy; returns the call index.
    pub fn invite(&mut self, now: Instant, number: &str) -> (usize, Out) {
        let n = self.fresh();
        let call_id = format!("call-{}-{n}@{}", self.name, self.addr.ip());
        let from_tag = format!("ft{n}");
        let branch = self.branch();
        let request_uri = format!("sip:{number}@{}", self.proxy);
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let invite = format!(
            "INVITE {request_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{proxy}>;tag={from_tag}\r\nTo: <sip:{number}@{proxy}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\n\
             Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            me = self.advertised(),
            user = self.user,
            proxy = self.proxy,
            contact = self.contact(),
            len = sdp.len(),
        )
        .into_bytes();
        let index = self.outgoing.len();
        self.outgoing.push(Outgoing {
            call_id,
            from_tag,
            branch,
            invite: invite.clone(),
            request_uri,
            responses: Vec::new(),
            dialogs: Vec::new(),
            heard: false,
            interval: T1,
            give_up: now + T1 * 64,
            cancel: None,
            cancel_status: None,
            cancel_interval: T1,
        });
        self.at(now + T1, TimerKind::ResendInvite(index));
        (index, vec![(self.proxy, invite)])
    }

    /// A non-INVITE request (MESSAGE, NOTIFY, OPTIONS ...) to `number` at the proxy; responses
    /// are kept in `inbox`.
    pub fn request(&mut self, method: &str, number: &str, extra: &str, body: &str) -> Out {
        let n = self.fresh();
        let branch = self.branch();
        let msg = format!(
            "{method} sip:{number}@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{proxy}>;tag=m{n}\r\nTo: <sip:{number}@{proxy}>\r\n\
             Call-ID: req-{name}-{n}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
            proxy = self.proxy,
            me = self.advertised(),
            user = self.user,
            name = self.name,
            len = body.len(),
        )
        .into_bytes();
        vec![(self.proxy, msg)]
    }

    /// Statuses of every response received, in order (all methods, retransmissions included).
    pub fn statuses(&self) -> Vec<u16> {
        self.inbox
            .iter()
            .filter_map(|(_, b)| sip::parse(b).ok()?.status())
            .collect()
    }

    /// A CANCEL for outgoing call `index` (RFC 3261 §9.1).
    pub fn cancel(&mut self, now: Instant, index: usize) -> Out {
        let me = self.advertised();
        let Some(c) = self.outgoing.get_mut(index) else {
            return vec![];
        };
        let msg = format!(
            "CANCEL {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{proxy}>;tag={ft}\r\nTo: {to}\r\n\
             Call-ID: {cid}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
            ruri = c.request_uri,
            me = me,
            branch = c.branch,
            user = self.user,
            proxy = self.proxy,
            ft = c.from_tag,
            to = value_of(&c.invite, HeaderName::To),
            cid = c.call_id,
        )
        .into_bytes();
        c.cancel = Some(msg.clone());
        c.cancel_interval = T1;
        self.at(now + T1, TimerKind::ResendCancel(index));
        vec![(self.proxy, msg)]
    }

    /// `method` (CSeq `cseq`, rows `extra`) on dialog `d` of outgoing call `index`, and where it
    /// goes (its first Route, else its remote target).
    fn dialog_request(
        &mut self,
        index: usize,
        d: usize,
        method: &str,
        cseq: u32,
        extra: &str,
    ) -> (SocketAddr, Vec<u8>) {
        let branch = self.branch();
        let (me, user, proxy) = (self.advertised(), self.user.clone(), self.proxy);
        let c = &self.outgoing[index];
        let dialog = &c.dialogs[d];
        let mut routes = String::new();
        for r in &dialog.route_set {
            let _ = write!(routes, "Route: {r}\r\n");
        }
        let msg = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n{routes}\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{proxy}>;tag={ft}\r\nTo: {to};tag={tt}\r\n\
             Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n",
            target = dialog.remote_target,
            ft = c.from_tag,
            to = value_of(&c.invite, HeaderName::To),
            tt = dialog.to_tag,
            cid = c.call_id,
        )
        .into_bytes();
        let dest = first_hop(&dialog.route_set, &dialog.remote_target).unwrap_or(proxy);
        (dest, msg)
    }

    /// BYE on every confirmed dialog of outgoing call `index`.
    pub fn bye(&mut self, now: Instant, index: usize) -> Out {
        let mut out = Vec::new();
        let n = self.outgoing.get(index).map_or(0, |c| c.dialogs.len());
        for d in 0..n {
            let (dest, msg) = self.dialog_request(index, d, "BYE", 2, "");
            let dialog = &mut self.outgoing[index].dialogs[d];
            dialog.bye = Some(msg.clone());
            dialog.interval = T1;
            out.push((dest, msg));
            self.timers.push((now + T1, TimerKind::ResendBye(index, d)));
        }
        out
    }

    /// An UPDATE with CSeq `cseq` and rows `extra` on every confirmed dialog of outgoing call
    /// `index` (a session refresh, RFC 4028; sent once, its 200 is not tracked).
    pub fn update(&mut self, index: usize, cseq: u32, extra: &str) -> Out {
        let n = self.outgoing.get(index).map_or(0, |c| c.dialogs.len());
        (0..n)
            .map(|d| self.dialog_request(index, d, "UPDATE", cseq, extra))
            .collect()
    }

    /// The callee hangs up answered incoming call `i`: one BYE along the INVITE's
    /// Record-Route (sent once; the tests that use it do not lose it).
    pub fn bye_incoming(&mut self, i: usize) -> Out {
        let branch = self.branch();
        let me = self.advertised();
        let Some(c) = self.incoming.get(i) else {
            return vec![];
        };
        let Ok(invite) = sip::parse(&c.invite) else {
            return vec![];
        };
        let mut routes = String::new();
        for v in invite.values(HeaderName::RecordRoute) {
            let _ = write!(routes, "Route: {}\r\n", lossy(v));
        }
        let target = match invite.contacts().next() {
            Some(Ok(ContactValue::Addr(a))) => lossy(a.addr.uri.raw()),
            _ => return vec![],
        };
        let msg = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n{routes}\
             Max-Forwards: 70\r\nFrom: {to};tag={tag}\r\nTo: {from}\r\n\
             Call-ID: {cid}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            to = value_of(&c.invite, HeaderName::To),
            tag = c.to_tag,
            from = value_of(&c.invite, HeaderName::From),
            cid = c.call_id,
        )
        .into_bytes();
        vec![(self.proxy, msg)]
    }

    /// A datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Out {
        self.inbox.push((now, bytes.to_vec()));
        let Ok(msg) = sip::parse(bytes) else {
            return vec![];
        };
        if msg.is_request() {
            self.incoming_request(now, from, &msg)
        } else {
            self.response(now, &msg)
        }
    }

    fn incoming_request(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>) -> Out {
        let call_id = String::from_utf8_lossy(msg.call_id().unwrap_or_default()).into_owned();
        let found = self.incoming.iter().position(|c| c.call_id == call_id);
        match (msg.method(), found) {
            (Some(Method::Invite), None) => {
                let tag = format!("tt{}", self.fresh());
                let index = self.incoming.len();
                self.incoming.push(Incoming {
                    call_id,
                    invite: msg.bytes().to_vec(),
                    source: from,
                    to_tag: tag,
                    last: None,
                    final_status: None,
                    acked: false,
                    cancelled: false,
                    cancel_reason: None,
                    bye: false,
                    bye_reason: None,
                    interval: T1,
                    give_up: now + T1 * 64,
                });
                let b = self.behaviour;
                let mut out = Vec::new();
                if b.trying {
                    out.extend(self.respond(index, 100, "Trying"));
                }
                if let Some(d) = b.ring_after {
                    self.at(now + d, TimerKind::Ring(index));
                }
                if let Some(d) = b.answer_after {
                    self.at(now + d, TimerKind::Answer(index));
                }
                if let Some((_, d)) = b.reject {
                    self.at(now + d, TimerKind::Reject(index));
                }
                out
            }
            (Some(Method::Invite), Some(i)) => match self.incoming[i].last.clone() {
                Some(last) => vec![(self.incoming[i].source, last)],
                None => vec![],
            },
            (Some(Method::Cancel), Some(i)) => {
                let ok = self.plain_response(msg, 200, "OK");
                let c = &mut self.incoming[i];
                c.cancelled = true;
                c.cancel_reason = msg.first_value(HeaderName::Reason).map(lossy);
                let mut out = vec![(from, ok)];
                if c.final_status.is_none() {
                    out.extend(self.finish(now, i, 487, "Request Terminated"));
                }
                out
            }
            (Some(Method::Ack), Some(i)) => {
                self.incoming[i].acked = true;
                self.unset(|k| *k == TimerKind::ResendFinal(i));
                vec![]
            }
            (Some(Method::Bye), Some(i)) => {
                let c = &mut self.incoming[i];
                c.bye = true;
                c.bye_reason = msg.first_value(HeaderName::Reason).map(lossy);
                vec![(from, self.plain_response(msg, 200, "OK"))]
            }
            (Some(Method::Update), Some(_)) => {
                let mut out = Vec::new();
                build::response(
                    msg,
                    &Reply {
                        status: 200,
                        reason: "OK",
                        fix: ViaFix::default(),
                        to_tag: None,
                        extra: self.answer_extra.as_bytes(),
                        body: None,
                    },
                    &mut out,
                );
                vec![(from, out)]
            }
            (Some(Method::Ack), None) => vec![],
            (Some(Method::Cancel | Method::Bye), None) => vec![(
                from,
                self.plain_response(msg, 481, "Call/Transaction Does Not Exist"),
            )],
            _ => {
                let status = self.behaviour.other_status;
                vec![(from, self.plain_response(msg, status, "Answer"))]
            }
        }
    }

    fn plain_response(&self, req: &Message<'_>, status: u16, reason: &str) -> Vec<u8> {
        let mut out = Vec::new();
        build::response(
            req,
            &Reply {
                status,
                reason,
                fix: ViaFix::default(),
                to_tag: Some(b"x"),
                extra: b"",
                body: None,
            },
            &mut out,
        );
        out
    }

    /// Sends a response on incoming call `i` (tag, Record-Route and Contact as a UAS must).
    fn respond(&mut self, i: usize, status: u16, reason: &str) -> Out {
        let contact = self.contact();
        let c = &mut self.incoming[i];
        let Ok(invite) = sip::parse(&c.invite) else {
            return vec![];
        };
        let mut extra = Vec::new();
        if status > 100 && status < 300 {
            for h in invite.rows(HeaderName::RecordRoute) {
                extra.extend_from_slice(h.row);
            }
            let _ = write!(ExtraWriter(&mut extra), "Contact: {contact}\r\n");
        }
        if (200..300).contains(&status) {
            extra.extend_from_slice(self.answer_extra.as_bytes());
        }
        let mut out = Vec::new();
        build::response(
            &invite,
            &Reply {
                status,
                reason,
                fix: ViaFix::default(),
                to_tag: (status > 100).then_some(c.to_tag.as_bytes()),
                extra: &extra,
                body: None,
            },
            &mut out,
        );
        c.last = Some(out.clone());
        // Responses go back along the Via: to the proxy that sent the INVITE.
        vec![(c.source, out)]
    }

    fn finish(&mut self, now: Instant, i: usize, status: u16, reason: &str) -> Out {
        if self.incoming[i].final_status.is_some() {
            return vec![];
        }
        self.incoming[i].final_status = Some(status);
        let out = self.respond(i, status, reason);
        self.incoming[i].interval = T1;
        self.incoming[i].give_up = now + T1 * 64;
        self.unset(|k| matches!(k, TimerKind::Ring(j) | TimerKind::Answer(j) | TimerKind::Reject(j) if *j == i));
        self.at(now + T1, TimerKind::ResendFinal(i));
        out
    }

    fn response(&mut self, now: Instant, msg: &Message<'_>) -> Out {
        let Ok(cseq) = msg.cseq() else { return vec![] };
        let status = msg.status().unwrap_or(0);
        let call_id = msg.call_id().unwrap_or_default();
        if cseq.method == Method::Register {
            if status >= 200 {
                self.register = None;
                self.unset(|k| *k == TimerKind::ResendRegister);
                self.registered = status < 300;
            }
            return vec![];
        }
        let Some(index) = self
            .outgoing
            .iter()
            .position(|c| c.call_id.as_bytes() == call_id)
        else {
            return vec![];
        };
        match cseq.method {
            Method::Invite => self.invite_response(now, index, msg, status),
            Method::Cancel => {
                self.outgoing[index].cancel_status = Some(status);
                self.unset(|k| *k == TimerKind::ResendCancel(index));
                vec![]
            }
            Method::Bye => {
                let tag = msg.to().ok().and_then(|t| t.tag).map(lossy);
                if let Some(d) = self.outgoing[index]
                    .dialogs
                    .iter()
                    .position(|d| Some(&d.to_tag) == tag.as_ref())
                {
                    if status >= 200 {
                        self.outgoing[index].dialogs[d].bye_done = true;
                        self.unset(|k| *k == TimerKind::ResendBye(index, d));
                    }
                }
                vec![]
            }
            _ => vec![],
        }
    }

    fn invite_response(
        &mut self,
        _now: Instant,
        index: usize,
        msg: &Message<'_>,
        status: u16,
    ) -> Out {
        let to_tag = msg.to().ok().and_then(|t| t.tag).map(lossy);
        let c = &mut self.outgoing[index];
        c.responses.push((_now, status, to_tag.clone()));
        if !c.heard {
            c.heard = true;
            self.unset(|k| *k == TimerKind::ResendInvite(index));
        }
        let me = self.advertised();
        let c = &mut self.outgoing[index];
        match status {
            200..=299 => {
                let Some(tag) = to_tag else { return vec![] };
                let target = msg
                    .contacts()
                    .next()
                    .and_then(Result::ok)
                    .and_then(|v| match v {
                        ContactValue::Addr(a) => Some(lossy(a.addr.uri.raw())),
                        ContactValue::Star => None,
                    })
                    .unwrap_or_default();
                // §12.1.2: the route set is the Record-Route list in reverse order.
                let mut route_set: Vec<String> =
                    msg.values(HeaderName::RecordRoute).map(lossy).collect();
                route_set.reverse();
                if !c.dialogs.iter().any(|d| d.to_tag == tag) {
                    c.dialogs.push(OutDialog {
                        to_tag: tag.clone(),
                        remote_target: target.clone(),
                        route_set: route_set.clone(),
                        bye: None,
                        bye_done: false,
                        interval: T1,
                    });
                }
                let d = c
                    .dialogs
                    .iter()
                    .find(|d| d.to_tag == tag)
                    .expect("just added");
                let mut routes = String::new();
                for r in &d.route_set {
                    let _ = write!(routes, "Route: {r}\r\n");
                }
                let ack = format!(
                    "ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKack{tag}\r\n{routes}\
                     Max-Forwards: 70\r\nFrom: <sip:{user}@{proxy}>;tag={ft}\r\nTo: {to};tag={tag}\r\n\
                     Call-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                    target = d.remote_target,
                    me = me,
                    user = self.user,
                    proxy = self.proxy,
                    ft = c.from_tag,
                    to = value_of(&c.invite, HeaderName::To),
                    cid = c.call_id,
                )
                .into_bytes();
                let dest = first_hop(&d.route_set, &d.remote_target).unwrap_or(self.proxy);
                vec![(dest, ack)]
            }
            300..=699 => {
                // §17.1.1.3: hop-by-hop ACK with the INVITE's branch and the response's To.
                let ack = format!(
                    "ACK {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:{user}@{proxy}>;tag={ft}\r\nTo: {to}\r\n\
                     Call-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                    ruri = c.request_uri,
                    me = me,
                    branch = c.branch,
                    user = self.user,
                    proxy = self.proxy,
                    ft = c.from_tag,
                    to = msg
                        .first_value(HeaderName::To)
                        .map(lossy)
                        .unwrap_or_default(),
                    cid = c.call_id,
                )
                .into_bytes();
                vec![(self.proxy, ack)]
            }
            _ => vec![],
        }
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Out {
        let mut out = Vec::new();
        while let Some(pos) = self.timers.iter().position(|(t, _)| *t <= now) {
            let (_, kind) = self.timers.remove(pos);
            out.extend(self.fire(now, kind));
        }
        out
    }

    fn fire(&mut self, now: Instant, kind: TimerKind) -> Out {
        match kind {
            TimerKind::Ring(i) => {
                if self.incoming[i].final_status.is_some() {
                    return vec![];
                }
                self.respond(i, 180, "Ringing")
            }
            TimerKind::Answer(i) => self.finish(now, i, 200, "OK"),
            TimerKind::Reject(i) => {
                let status = self.behaviour.reject.map_or(486, |(s, _)| s);
                self.finish(now, i, status, "Rejected")
            }
            TimerKind::ResendFinal(i) => {
                let c = &mut self.incoming[i];
                if c.acked || now >= c.give_up {
                    return vec![];
                }
                c.interval = (c.interval * 2).min(T2);
                let next = now + c.interval;
                let out = c.last.clone().map(|l| (c.source, l));
                self.at(next, TimerKind::ResendFinal(i));
                out.into_iter().collect()
            }
            TimerKind::ResendInvite(i) => {
                let c = &mut self.outgoing[i];
                if c.heard || now >= c.give_up {
                    return vec![];
                }
                c.interval *= 2;
                let next = now + c.interval;
                let msg = c.invite.clone();
                self.at(next, TimerKind::ResendInvite(i));
                vec![(self.proxy, msg)]
            }
            TimerKind::ResendCancel(i) => {
                let c = &mut self.outgoing[i];
                let Some(msg) = c.cancel.clone() else {
                    return vec![];
                };
                if c.cancel_status.is_some() {
                    return vec![];
                }
                c.cancel_interval = (c.cancel_interval * 2).min(T2);
                let next = now + c.cancel_interval;
                self.at(next, TimerKind::ResendCancel(i));
                vec![(self.proxy, msg)]
            }
            TimerKind::ResendBye(i, d) => {
                let dialog = &mut self.outgoing[i].dialogs[d];
                let Some(msg) = dialog.bye.clone() else {
                    return vec![];
                };
                if dialog.bye_done {
                    return vec![];
                }
                dialog.interval = (dialog.interval * 2).min(T2);
                let next = now + dialog.interval;
                let dest =
                    first_hop(&dialog.route_set, &dialog.remote_target).unwrap_or(self.proxy);
                self.at(next, TimerKind::ResendBye(i, d));
                vec![(dest, msg)]
            }
            TimerKind::ResendRegister => {
                let Some((msg, interval, give_up)) = self.register.clone() else {
                    return vec![];
                };
                if now >= give_up {
                    return vec![];
                }
                let interval = (interval * 2).min(T2);
                self.register = Some((msg.clone(), interval, give_up));
                self.at(now + interval, TimerKind::ResendRegister);
                vec![(self.proxy, msg)]
            }
        }
    }

    /// Requests of `method` received (retransmissions included).
    pub fn requests_received(&self, method: &str) -> usize {
        self.inbox
            .iter()
            .filter(|(_, b)| b.starts_with(method.as_bytes()) && b.get(method.len()) == Some(&b' '))
            .count()
    }
}

struct ExtraWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ExtraWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn value_of(msg: &[u8], name: HeaderName) -> String {
    sip::parse(msg)
        .ok()
        .and_then(|m| m.first_value(name).map(lossy))
        .unwrap_or_default()
}

/// Where a request inside a dialog goes: the first route's address, else the remote target's.
fn first_hop(route_set: &[String], remote_target: &str) -> Option<SocketAddr> {
    let uri = match route_set.first() {
        Some(r) => r.trim_start_matches('<').split('>').next().unwrap_or(""),
        None => remote_target,
    };
    let parsed = sip::Uri::parse(uri.as_bytes()).ok()?;
    let sip = parsed.as_sip()?;
    Some(SocketAddr::new(sip.host.ip()?, sip.port.unwrap_or(5060)))
}
