//! Double Record-Route on a transport change (RFC 5658), and the stream listener's entry when
//! both sides use one stream transport.
//!
//! A request that arrives on one transport and leaves on another gets two Record-Route entries
//! from sipfork: the top one (read by the callee side) names our address on the outgoing
//! transport, the one below it (read by the caller side, which reverses the list) names it on
//! the incoming one. Both carry the same route token. A UDP side's entry has no `transport`
//! parameter (its bytes are those of the single entry written when nothing changes); a stream
//! side's has `;transport=tcp` or `;transport=tls`, so the peer's in-dialog requests come back
//! over a stream (RFC 3263 would pick UDP for a bare `sip:` URI with an IP literal).
//!
//! In-dialog requests then carry our two entries on top of their Route set: both go (loose
//! routing, RFC 5658 §3.3), after the first one's token was checked; the second is recognised
//! as ours by naming us with the same token (a spiral through sipfork carries another call's
//! token there, and keeps its entry).
//!
//! Sans-IO: byte builders and a check on a parsed message.

use std::net::SocketAddr;

use super::Transport;
use crate::core::context::Cx;
use crate::core::proxy::uri_is_us;
use crate::core::route::ROUTE_TOKEN_PARAM;
use crate::sip::{Message, NameAddr, ParseError, SipUri};

/// The `transport` URI parameter naming `t` (none for UDP, the default of a `sip:` URI).
fn transport_param(t: Transport) -> &'static [u8] {
    match t {
        Transport::Udp => b"",
        Transport::Tcp => b";transport=tcp",
        Transport::Tls => b";transport=tls",
        Transport::Ws => b";transport=ws",
        Transport::Wss => b";transport=wss",
    }
}

/// Appends our Record-Route URI `rr` (`sip:host:port;lr;...`, as written when the transport does
/// not change) for the side reached over `t` at our address `addr` (`ours::addr_for`): that
/// host and port instead of the ones in `rr`, and the `transport` parameter right after them.
/// With our UDP address for UDP the bytes are `rr`'s. The TLS side of a request whose
/// Request-URI is `sips:` (`secure`) gets a `sips:` URI without `transport` (RFC 5630 §5.3).
pub fn push_for_transport(
    rr: &[u8],
    t: Transport,
    addr: SocketAddr,
    secure: bool,
    out: &mut Vec<u8>,
) {
    let at = memchr::memchr(b';', rr).unwrap_or(rr.len());
    let sips = secure && t == Transport::Tls;
    out.extend_from_slice(if sips { b"sips:" } else { b"sip:" });
    crate::sip::build::push_hostport(out, addr);
    if !sips {
        out.extend_from_slice(transport_param(t));
    }
    out.extend_from_slice(&rr[at..]);
}

/// The Record-Route URIs of a request that came in over `incoming` and leaves over `outgoing`:
/// the top one, and the one below it on a transport change (RFC 5658). On a change the top one
/// names our address on the outgoing transport and the one below on the incoming one; on one
/// stream transport the single entry names that listener with its `transport` parameter, so
/// the peers' in-dialog requests come back over a stream too; on UDP both sides it is `rr`
/// itself. `addr` says which of our addresses each side's entry names (`ours::addr_for`);
/// `secure`: the request's Request-URI is `sips:` ([`push_for_transport`]).
///
/// What is written goes into `buf`, cleared first: a branch reuses the proxy's buffer, so no
/// branch allocates for its entries once the buffer has grown.
pub fn entries<'a>(
    rr: &'a [u8],
    incoming: Transport,
    outgoing: Transport,
    addr: impl Fn(Transport) -> SocketAddr,
    secure: bool,
    buf: &'a mut Vec<u8>,
) -> (&'a [u8], Option<&'a [u8]>) {
    buf.clear();
    if incoming != outgoing {
        push_for_transport(rr, outgoing, addr(outgoing), secure, buf);
        let at = buf.len();
        push_for_transport(rr, incoming, addr(incoming), secure, buf);
        let (top, below) = buf.split_at(at);
        return (top, Some(below));
    }
    if outgoing.is_stream() {
        push_for_transport(rr, outgoing, addr(outgoing), secure, buf);
        return (&buf[..], None);
    }
    (rr, None)
}

/// The route token of a SIP URI that names us, if it has one.
fn our_token<'b>(cx: &Cx<'_>, uri: &SipUri<'b>) -> Option<&'b [u8]> {
    let token = uri.param(ROUTE_TOKEN_PARAM)??;
    uri_is_us(cx, uri).then_some(token)
}

/// Whether `second` (the second Route value of a request, as parsed) is our other entry of a
/// double Record-Route: it names us with `token`, the route token of the first, which names us
/// too. (Whether that token verifies is checked once, on the first value, by the in-dialog
/// code, which reads the first value and calls this with the next.)
pub fn second_pairs_first(
    cx: &Cx<'_>,
    second: Option<Result<NameAddr<'_>, ParseError>>,
    token: &[u8],
) -> bool {
    match second {
        Some(Ok(second)) => second
            .uri
            .as_sip()
            .and_then(|second| our_token(cx, second))
            .is_some_and(|other| other == token),
        _ => false,
    }
}

/// Which of the first two Route values of `req` are ours, from one parse of each: the first
/// when it names us (RFC 3261 §16.4), and the second when it is our other entry of a double
/// Record-Route ([`second_pairs_first`]).
pub fn routes_to_drop(cx: &Cx<'_>, req: &Message<'_>) -> (bool, bool) {
    let mut routes = req.routes();
    let Some(Ok(first)) = routes.next() else {
        return (false, false);
    };
    let Some(first) = first.uri.as_sip() else {
        return (false, false);
    };
    if !uri_is_us(cx, first) {
        return (false, false);
    }
    let Some(Some(token)) = first.param(ROUTE_TOKEN_PARAM) else {
        return (true, false);
    };
    (true, second_pairs_first(cx, routes.next(), token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RR: &[u8] = b"sip:127.0.0.1:5060;lr;sf=abc";

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    /// Our address per transport in these tests: a TLS listener of its own.
    fn addrs(t: Transport) -> SocketAddr {
        if t == Transport::Tls {
            "127.0.0.3:5061".parse().unwrap()
        } else {
            "127.0.0.1:5060".parse().unwrap()
        }
    }

    /// The two entries on a transport change as owned bytes, `None` without one.
    fn double(
        rr: &[u8],
        incoming: Transport,
        outgoing: Transport,
        addr: impl Fn(Transport) -> SocketAddr,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut buf = Vec::new();
        let (top, below) = entries(rr, incoming, outgoing, addr, false, &mut buf);
        below.map(|below| (top.to_vec(), below.to_vec()))
    }

    #[test]
    fn one_entry_without_a_change_and_the_buffer_is_reused() {
        let mut buf = Vec::new();
        // UDP on both sides: the shared entry itself, nothing written.
        let (top, below) = entries(RR, Transport::Udp, Transport::Udp, addrs, false, &mut buf);
        assert_eq!((top, below), (RR, None));
        let (top, below) = entries(RR, Transport::Tls, Transport::Tls, addrs, false, &mut buf);
        assert_eq!(text(top), "sip:127.0.0.3:5061;transport=tls;lr;sf=abc");
        assert_eq!(below, None);
        let (top, below) = entries(RR, Transport::Tcp, Transport::Udp, addrs, false, &mut buf);
        assert_eq!(
            (top, below.map(text)),
            (RR, Some("sip:127.0.0.1:5060;transport=tcp;lr;sf=abc"))
        );
        // The next branch writes over the same bytes: no allocation once grown.
        let (cap, at) = (buf.capacity(), buf.as_ptr());
        let (top, _) = entries(RR, Transport::Udp, Transport::Tcp, addrs, false, &mut buf);
        assert_eq!(text(top), "sip:127.0.0.1:5060;transport=tcp;lr;sf=abc");
        assert_eq!((buf.capacity(), buf.as_ptr()), (cap, at));
    }

    #[test]
    fn the_transport_parameter_goes_after_the_host_and_port() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        let mut out = Vec::new();
        push_for_transport(RR, Transport::Tcp, at("127.0.0.1:5060"), false, &mut out);
        assert_eq!(text(&out), "sip:127.0.0.1:5060;transport=tcp;lr;sf=abc");
        out.clear();
        push_for_transport(RR, Transport::Tls, at("127.0.0.1:5061"), false, &mut out);
        assert_eq!(text(&out), "sip:127.0.0.1:5061;transport=tls;lr;sf=abc");
        out.clear();
        push_for_transport(RR, Transport::Udp, at("127.0.0.1:5060"), false, &mut out);
        assert_eq!(out, RR);
        out.clear();
        // A stream listener on another IP address: its host too.
        push_for_transport(RR, Transport::Tcp, at("127.0.0.2:5070"), false, &mut out);
        assert_eq!(text(&out), "sip:127.0.0.2:5070;transport=tcp;lr;sf=abc");
        out.clear();
        push_for_transport(
            b"sip:[::1]:5060;lr",
            Transport::Tcp,
            at("[::1]:5070"),
            false,
            &mut out,
        );
        assert_eq!(text(&out), "sip:[::1]:5070;transport=tcp;lr");
        // Toward a sips: Request-URI: a sips: URI on the TLS side, TCP and UDP as they were.
        out.clear();
        push_for_transport(RR, Transport::Tls, at("127.0.0.1:5061"), true, &mut out);
        assert_eq!(text(&out), "sips:127.0.0.1:5061;lr;sf=abc");
        out.clear();
        push_for_transport(RR, Transport::Tcp, at("127.0.0.1:5060"), true, &mut out);
        assert_eq!(text(&out), "sip:127.0.0.1:5060;transport=tcp;lr;sf=abc");
        out.clear();
        push_for_transport(RR, Transport::Udp, at("127.0.0.1:5060"), true, &mut out);
        assert_eq!(out, RR);
    }

    #[test]
    fn two_entries_only_on_a_change_top_one_for_the_outgoing_side() {
        assert!(double(RR, Transport::Tcp, Transport::Tcp, addrs).is_none());
        assert!(double(RR, Transport::Udp, Transport::Udp, addrs).is_none());
        let (top, below) = double(RR, Transport::Udp, Transport::Tcp, addrs).unwrap();
        assert_eq!(text(&top), "sip:127.0.0.1:5060;transport=tcp;lr;sf=abc");
        assert_eq!(below, RR);
        let (top, below) = double(RR, Transport::Tls, Transport::Udp, addrs).unwrap();
        assert_eq!(top, RR);
        assert_eq!(text(&below), "sip:127.0.0.3:5061;transport=tls;lr;sf=abc");
    }

    /// `forward_request` writes both entries below our Via and drops our two Routes, whether
    /// they share a row or not, keeping the rest of the route set.
    #[test]
    fn the_builder_writes_two_entries_and_drops_two_route_values() {
        use crate::sip::build::{forward_request, Forward, ViaFix};
        let head = "BYE sip:a@127.0.0.1:5071 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK1\r\n";
        let tail = "From: <sip:b@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let (top, below) = double(RR, Transport::Udp, Transport::Tcp, |_| {
            "127.0.0.1:5060".parse().unwrap()
        })
        .unwrap();
        let ours = "<sip:127.0.0.1:5060;transport=tcp;lr;sf=abc>, <sip:127.0.0.1:5060;lr;sf=abc>";
        let cases = [
            (format!("Route: {ours}, <sip:p@127.0.0.9;lr>\r\n"), "Route: <sip:p@127.0.0.9;lr>\r\n"),
            (format!("Route: {ours}\r\nRoute: <sip:p@127.0.0.9;lr>\r\n"), "Route: <sip:p@127.0.0.9;lr>\r\n"),
            (
                "Route: <sip:127.0.0.1:5060;transport=tcp;lr;sf=abc>\r\nRoute: <sip:127.0.0.1:5060;lr;sf=abc>, <sip:p@127.0.0.9;lr>\r\n".to_string(),
                "Route: <sip:p@127.0.0.9;lr>\r\n",
            ),
            (format!("Route: {ours}\r\n"), ""),
        ];
        for (route, left) in cases {
            let req = format!("{head}{route}{tail}");
            let msg = crate::sip::parse(req.as_bytes()).unwrap();
            let fwd = Forward {
                request_uri: None,
                via: b"SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKsf",
                record_route: Some(&top),
                record_route_in: Some(&below),
                drop_first_route: true,
                drop_second_route: true,
                max_forwards: 69,
                fix: ViaFix::default(),
                extra: b"",
                strip_identity: false,
                consume_realm: None,
            };
            let mut out = Vec::new();
            forward_request(&msg, &fwd, &mut out);
            let out = text(&out);
            assert!(
                out.starts_with(
                    "BYE sip:a@127.0.0.1:5071 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKsf\r\n\
                     Record-Route: <sip:127.0.0.1:5060;transport=tcp;lr;sf=abc>\r\n\
                     Record-Route: <sip:127.0.0.1:5060;lr;sf=abc>\r\n"
                ),
                "{out}"
            );
            let routes: String = out
                .lines()
                .filter(|l| l.starts_with("Route:"))
                .map(|l| format!("{l}\r\n"))
                .collect();
            assert_eq!(routes, left, "{route}");
        }
    }
}
