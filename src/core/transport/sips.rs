//! A `sips:` Request-URI (RFC 5630): TLS on every hop from the caller to the callee.
//!
//! RFC 3261 §26.2.2, as amended by RFC 5630 Appendix A, makes `sips:` mean that each hop over
//! which the request is forwarded is secured with TLS, with no last-hop exception. So sipfork:
//! - accepts a `sips:` request only when it arrived over TLS ([`arrived_securely`]). One that
//!   came over UDP or plain TCP already crossed a hop without TLS: it gets `480 Temporarily
//!   Unavailable` with warn-code 381 "SIPS Required" (RFC 5630 §9 registers 380 and 381 for
//!   refusing on the scheme; §5.3 uses 480 for a proxy's refusals; PJSIP answers a `sips:`
//!   request over a non-secure transport the same way). RFC 3261 §16.3 step 2's 416 is for a
//!   scheme the proxy does not understand, which `sips:` no longer is;
//! - forwards it only to targets reachable over TLS ([`tls_path`]) whose URI is `sips:` (a
//!   registered `sips:` Contact, RFC 5630 §5.3, chosen by `registrar::Reach`; a route's next hop
//!   configured with `;transport=tls`, the Request-URI kept as it came). When none is, the
//!   answer is RFC 5630 §5.3's: `480` with warn-code 380 "SIPS Not Allowed";
//! - names itself with a `sips:` Record-Route entry on a TLS side
//!   (`record_route::push_for_transport`), so the dialog's later requests keep TLS (RFC 5630
//!   §5.3: proxies do not use `transport=tls` for `sips:`).
//!
//! Sans-IO: looks at the parsed request, the flow set and the configuration.

use std::borrow::Cow;
use std::net::SocketAddr;

use super::{outbound, Transport};
use crate::core::context::Cx;
use crate::sip::{build, Essentials};

/// Whether the request's Request-URI is `sips:`.
pub fn requested(e: &Essentials<'_>) -> bool {
    e.request_uri.as_sip().is_some_and(|u| u.secure)
}

/// Whether the request being handled arrived over TLS.
pub fn arrived_securely(cx: &Cx<'_>) -> bool {
    outbound::secure(cx.arrival)
}

/// Whether a target at `dest` asking for `wanted` is reached over TLS: the flow open to it is
/// TLS, or none is open and sipfork opens a TLS connection to it (`tls:` listener and
/// `[tls] peer_ca`).
pub fn tls_path(cx: &Cx<'_>, dest: SocketAddr, wanted: Transport) -> bool {
    match cx.flows.get(dest) {
        Some(open) => outbound::secure(open),
        None => wanted == Transport::Tls && outbound::enabled_for(cx.cfg, Transport::Tls),
    }
}

/// Whether a request sipfork sends itself (a CANCEL, a non-2xx final's ACK, the ACK and BYE of
/// a torn-down 2xx, a maximum-duration BYE) may leave toward `dest`: always unless it belongs
/// to a `sips:` call or names a `sips:` target (`secure`), and then only over the TLS flow
/// open to `dest` (such a request never opens a connection). One that may not is not sent at
/// all: a cleartext copy would break RFC 5630's TLS on every hop.
pub fn may_send(cx: &Cx<'_>, secure: bool, dest: SocketAddr) -> bool {
    !secure || cx.flows.get(dest).is_some_and(outbound::secure)
}

/// The Request-URI of a branch toward target `uri`: for a `sip:` request (`!secure`) a `sips:`
/// target's scheme becomes `sip:`, the rest of the URI as is (RFC 5630 §5.3: a proxy never
/// forwards a `sip:` request to a `sips:` Request-URI; a device registered with a `sips:`
/// Contact still gets it over TLS, as `registrar::Reach` reaches that Contact).
pub fn branch_uri(uri: &[u8], secure: bool) -> Cow<'_, [u8]> {
    match uri.get(5..) {
        Some(rest) if !secure && outbound::is_sips(uri) => {
            let mut out = Vec::with_capacity(uri.len() - 1);
            out.extend_from_slice(b"sip:");
            out.extend_from_slice(rest);
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(uri),
    }
}

/// The scheme of a Request-URI sipfork builds itself (a trunk's, a follow-me external target's,
/// voicemail's): `sips:` for a `sips:` request (RFC 5630 §5.3), else `sip:`.
pub fn scheme(secure: bool) -> &'static [u8] {
    if secure {
        b"sips:"
    } else {
        b"sip:"
    }
}

/// warn-code 381: a `sips:` request that did not arrive over TLS.
pub const REQUIRED: (u16, &str) = (381, "SIPS Required");
/// warn-code 380: no target of a `sips:` request can be reached over TLS.
pub const NOT_ALLOWED: (u16, &str) = (380, "SIPS Not Allowed");

/// The `Warning` row (RFC 3261 §20.43) of a refusal: `code`, our TLS address as warn-agent,
/// the text.
pub fn warning(cx: &Cx<'_>, (code, text): (u16, &str)) -> Vec<u8> {
    let mut row = format!("Warning: {code} ").into_bytes();
    build::push_hostport(&mut row, super::ours::addr_for(cx, Transport::Tls));
    row.extend_from_slice(b" \"");
    row.extend_from_slice(text.as_bytes());
    row.extend_from_slice(b"\"\r\n");
    row
}
