//! RFC 4028 session timers, observed: when the 2xx that establishes a recorded dialog, or a
//! later 2xx to a re-INVITE or UPDATE of that dialog passing through sipfork, carries
//! `Session-Expires: N` (compact `x`, any `refresher`), the dialog's one timer is re-armed to
//! fire N seconds later (§10: the session expires N seconds after the last refresh), but never
//! later than `[policy] max_call_seconds` after the answer. When it fires first, the dialog is
//! ended exactly as at `max_call_seconds` (`expiry.rs`), with
//! `Reason: SIP;cause=408;text="session expired"` and CDR cause `session_expired`.
//!
//! sipfork never rewrites Session-Expires or Min-SE; it only reads them, and never uses an
//! interval below the request's Min-SE (at least 90 s, §5), so a party cannot make sipfork end
//! the session earlier than the negotiation allows. No state is kept beyond the dialog timer
//! itself: which deadline fired is told by the time (before `max_call_seconds`: the session's).

use super::{route_token, RouteToken};
use crate::core::context::Cx;
use crate::core::proxy::call::{Call, Outcome};
use crate::core::proxy::response::StoredRequest;
use crate::core::proxy::Proxy;
use crate::core::slab::Key;
use crate::core::TimerKey;
use crate::sip::{HeaderName, Message, Method};
use crate::time::{Duration, Instant};

/// RFC 4028 §5: Min-SE is never below 90 seconds.
const MIN_SE: u64 = 90;

/// The leading number of a `Session-Expires` / `Min-SE` value (`1800;refresher=uac`).
fn delta_seconds(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii_start();
    let end = v
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    if end == 0 || end > 10 {
        return None;
    }
    std::str::from_utf8(&v[..end]).ok()?.parse().ok()
}

/// The session interval a 2xx `resp` to `req` sets: its Session-Expires, not below the
/// request's Min-SE (nor 90 s). `None`: no session timer negotiated.
pub(super) fn session_interval(req: Option<&Message<'_>>, resp: &Message<'_>) -> Option<Duration> {
    let n = delta_seconds(resp.first_value(HeaderName::SessionExpires)?)?;
    let min_se = req
        .and_then(|r| r.first_value(HeaderName::MinSe))
        .and_then(delta_seconds)
        .unwrap_or(0)
        .max(MIN_SE);
    Some(Duration::from_secs(n.max(min_se)))
}

/// When `max_call_seconds` ends the dialogs of a call (`None`: it has none).
fn max_end(cx: &Cx<'_>, call: &Call) -> Option<Instant> {
    let since = call.dialogs.iter().map(|d| d.since).min()?;
    Some(since + cx.cfg.policy.max_call)
}

/// The dialog timer of `call` fired: did the session expire (before `max_call_seconds`)?
pub(super) fn session_expired(cx: &Cx<'_>, call: &Call) -> bool {
    max_end(cx, call).is_some_and(|end| cx.now < end)
}

impl Proxy {
    /// A 2xx of call `key` to request `req` (the call's) is about to go upstream: the call
    /// whose dialog it refreshes and the session interval, when it sets one. That is the
    /// first 2xx of a recorded INVITE (its own dialog), or a 2xx to a relayed re-INVITE or
    /// UPDATE (the dialog its Route token names). Apply it with [`Proxy::session_rearm`] once
    /// the dialog is recorded. `req` is parsed only for a 2xx that carries Session-Expires.
    pub(in crate::core::proxy) fn session_of(
        &self,
        cx: &Cx<'_>,
        key: Key,
        resp: &Message<'_>,
        req: &StoredRequest<'_>,
    ) -> Option<(Key, Duration)> {
        let call = self.calls.get(key)?;
        // No Session-Expires, no session interval (`session_interval`): settled by a row
        // lookup, before the CSeq or the request is parsed.
        if !resp.has(HeaderName::SessionExpires) {
            return None;
        }
        let cseq = resp.cseq().ok()?;
        if !matches!(cseq.method, Method::Invite | Method::Update) {
            return None;
        }
        let req = req.message()?;
        let interval = session_interval(Some(req), resp)?;
        if call.record_route {
            return (call.outcome == Outcome::Pending).then_some((key, interval));
        }
        match route_token(cx, req, req.call_id().ok()?) {
            RouteToken::Ours { call, .. } => Some((call, interval)),
            _ => None,
        }
    }

    /// Re-arms the dialog timer of the call `session` names to fire one session interval from
    /// now, never past its `max_call_seconds`.
    pub(in crate::core::proxy) fn session_rearm(
        &mut self,
        cx: &mut Cx<'_>,
        session: Option<(Key, Duration)>,
    ) {
        let Some((key, interval)) = session else {
            return;
        };
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let (Some(id), Some(end)) = (call.dialog_timer, max_end(cx, call)) else {
            return;
        };
        cx.timers.cancel(id);
        let at = (cx.now + interval).min(end);
        call.dialog_timer = Some(cx.timers.insert(at, TimerKey::Dialog { call: key }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(first: &str, rows: &str) -> Vec<u8> {
        format!(
            "{first}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 UPDATE\r\n{rows}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn session_interval_reads_session_expires_not_below_min_se() {
        let interval = |req_rows: &str, resp_rows: &str| {
            let req = msg("UPDATE sip:b@h SIP/2.0", req_rows);
            let resp = msg("SIP/2.0 200 OK", resp_rows);
            let (req, resp) = (
                crate::sip::parse(&req).unwrap(),
                crate::sip::parse(&resp).unwrap(),
            );
            session_interval(Some(&req), &resp).map(|d| d.as_secs())
        };
        assert_eq!(interval("", ""), None);
        assert_eq!(
            interval("", "Session-Expires: 1800;refresher=uac\r\n"),
            Some(1800)
        );
        assert_eq!(interval("", "x: 600\r\n"), Some(600));
        assert_eq!(interval("", "Session-Expires: 30\r\n"), Some(90));
        assert_eq!(interval("Min-SE: 2000\r\n", "x: 1800\r\n"), Some(2000));
        assert_eq!(interval("", "Session-Expires: soon\r\n"), None);
        assert_eq!(interval("", "Session-Expires: 99999999999\r\n"), None);
    }
}
