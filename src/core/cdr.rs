//! Call detail records of public calls (`[policy] cdr`), kept as values: the core writes no
//! file. A public call carries a [`Draft`] from the moment it is admitted (or, for follow-me to
//! an external number, from the moment that stage rings); the first way the call ends turns it
//! into a [`Cdr`] (the draft is taken, so each call yields exactly one). The engine's shard
//! drains them after each batch and hands them to the CDR writer thread (`app::cdr`), which
//! formats and appends one JSON line each ([`Cdr::to_json_line`]).

use crate::config::Config;
use crate::core::context::Env;
use crate::sip::Essentials;
use crate::time::Instant;

/// Which side of a public call faces outside the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublicSide {
    /// The caller (a carrier, a trunk, an unauthenticated caller).
    Caller,
    /// The callee (a route's next hop, a trunk, a follow-me external target).
    Callee,
    /// Both (a trunk calling out through a route, a carrier calling a trunk).
    Both,
}

impl PublicSide {
    /// The side from which parties are outside (or trunks); `None` when neither is.
    pub fn of(caller_public: bool, callee_public: bool) -> Option<PublicSide> {
        match (caller_public, callee_public) {
            (true, true) => Some(PublicSide::Both),
            (true, false) => Some(PublicSide::Caller),
            (false, true) => Some(PublicSide::Callee),
            (false, false) => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PublicSide::Caller => "caller",
            PublicSide::Callee => "callee",
            PublicSide::Both => "both",
        }
    }
}

/// Why a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Refused by policy before ringing (a tenancy limit, all-busy, the outgoing limit).
    Refused,
    /// A final non-2xx went to the caller (rejected, unanswered, timed out).
    Failed,
    /// The caller cancelled before an answer.
    Cancelled,
    /// The caller sent BYE.
    CallerBye,
    /// The callee sent BYE.
    CalleeBye,
    /// No BYE came within `[policy] max_call_seconds`.
    MaxDuration,
    /// An RFC 4028 session timer the parties negotiated expired without a refresh.
    SessionExpired,
    /// The call's state went away without any of the above (an answered call that recorded no
    /// dialog, a call freed otherwise).
    Released,
}

impl Cause {
    /// The name written in the CDR.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::Failed => "failed",
            Cause::Cancelled => "cancelled",
            Cause::CallerBye => "caller_bye",
            Cause::CalleeBye => "callee_bye",
            Cause::MaxDuration => "max_call_seconds",
            Cause::SessionExpired => "session_expired",
            Cause::Released => "released",
        }
    }
}

/// What a public call's CDR knows before it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    call_id: Box<str>,
    caller: Box<str>,
    callee: Box<str>,
    tenants: Box<[Box<str>]>,
    side: PublicSide,
    start_us: u64,
    answer_us: Option<u64>,
    status: u16,
}

impl Draft {
    /// A draft for the call `e` starts, counted on the tenancy `levels` (the server level is
    /// left out of the path written).
    pub fn new(
        cfg: &Config,
        env: &Env,
        now: Instant,
        e: &Essentials<'_>,
        levels: impl Iterator<Item = usize>,
        side: PublicSide,
    ) -> Box<Draft> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned().into_boxed_str();
        Box::new(Draft {
            call_id: text(e.call_id),
            caller: text(e.from.uri.raw()),
            callee: text(e.request_uri.raw()),
            tenants: levels
                .filter(|&l| l != 0 && l < cfg.tenancy.len())
                .map(|l| cfg.tenancy.node(l).name.clone().into_boxed_str())
                .collect(),
            side,
            start_us: env.wall_us(now),
            answer_us: None,
            status: 0,
        })
    }

    /// A 2xx went to the caller (the first one counts).
    pub fn answered(&mut self, env: &Env, now: Instant, status: u16) {
        if self.answer_us.is_none() {
            self.answer_us = Some(env.wall_us(now));
            self.status = status;
        }
    }

    /// The call ended at `now`: a final non-2xx `status` when it failed (ignored once answered).
    pub fn finish(self: Box<Self>, env: &Env, now: Instant, status: u16, cause: Cause) -> Cdr {
        let status = if self.answer_us.is_some() {
            self.status
        } else {
            status
        };
        Cdr {
            draft: self,
            end_us: env.wall_us(now),
            status,
            cause,
        }
    }
}

/// One public call's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cdr {
    draft: Box<Draft>,
    end_us: u64,
    status: u16,
    cause: Cause,
}

impl Cdr {
    /// The final status the caller got (the 2xx for an answered call).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Why the call ended.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// The Call-ID of the caller's INVITE.
    pub fn call_id(&self) -> &str {
        &self.draft.call_id
    }

    /// The tenancy levels it counted on, nearest first (server level left out).
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.draft.tenants.iter().map(|t| &**t)
    }

    /// Which side is public.
    pub fn side(&self) -> PublicSide {
        self.draft.side
    }

    /// Wall-clock µs since the Unix epoch: start, answer, end.
    pub fn times_us(&self) -> (u64, Option<u64>, u64) {
        (self.draft.start_us, self.draft.answer_us, self.end_us)
    }

    /// The record as one JSON line (newline included); times are Unix seconds with
    /// millisecond precision, `answer` is `null` for an unanswered call.
    pub fn to_json_line(&self) -> String {
        let secs = |us: u64| (us / 1000) as f64 / 1000.0;
        let d = &self.draft;
        let v = serde_json::json!({
            "start": secs(d.start_us),
            "answer": d.answer_us.map(secs),
            "end": secs(self.end_us),
            "duration": d.answer_us.map_or(0.0, |a| secs(self.end_us.saturating_sub(a))),
            "call_id": d.call_id,
            "caller": d.caller,
            "callee": d.callee,
            "tenants": d.tenants,
            "public_side": d.side.as_str(),
            "status": self.status,
            "cause": self.cause.as_str(),
        });
        let mut line = v.to_string();
        line.push('\n');
        line
    }
}

/// Ends the call whose draft `draft` holds (if it still holds one): its CDR joins `cx.cdrs`.
/// Taking the draft makes every later end a no-op, so a call yields exactly one CDR.
pub fn end(
    draft: &mut Option<Box<Draft>>,
    cx: &mut crate::core::context::Cx<'_>,
    status: u16,
    cause: Cause,
) {
    if let Some(d) = draft.take() {
        cx.cdrs.push(d.finish(cx.env, cx.now, status, cause));
    }
}
