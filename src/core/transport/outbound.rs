//! Connections sipfork opens itself (RFC 3261 §18.1.1): which targets ask for one, and the
//! decision a branch takes before its request is built.
//!
//! Sans-IO: the core only marks a request it sends ([`crate::core::io::Transmit::connect`]);
//! the engine opens the connection, queues the request until it is up, and reports a failure
//! back ([`crate::core::Core::flow_failed`]). Only requests the proxy forks to a target it
//! knows are marked: a device's registered Contact (`;transport=tcp`, for a binding registered
//! over UDP: one registered over a connection is reached over that connection), or a route's
//! next hop configured with `;transport=tcp`. Nothing a request names itself (its
//! Request-URI toward a next hop, a Route, a Contact, a Via) makes sipfork connect anywhere.
//! Connecting needs a `tcp:` listen address: the peer's in-dialog requests come back to the
//! Record-Route entry naming it, and the engine serves the connection beside the accepted ones.
//!
//! TLS the same way: a Contact with `;transport=tls` or a `sips:` Contact, or a next hop with
//! `;transport=tls`, is connected to over TLS when a `tls:` listener and `[tls] peer_ca` (the
//! roots the server's certificate is verified against) are configured. Without them a
//! `;transport=tls` Contact is reached over UDP as before and a `sips:` Contact is not rung
//! (`core::registrar::Reach`).

use std::net::SocketAddr;

use super::Transport;
use crate::core::context::Cx;

/// The transport a target's URI asks for: TLS for a `sips:` URI or a `sip:` URI with
/// `;transport=tls`, TCP for a `sip:` URI with `;transport=tcp`, WS or WSS for `;transport=ws`
/// or `wss` (never connected to: [`enabled_for`]), else UDP.
pub fn wanted(uri: &[u8]) -> Transport {
    // Most Contacts name no transport: a scan, no parse, on every call's targets.
    if !is_sips(uri)
        && !uri
            .windows(10)
            .any(|w| w.eq_ignore_ascii_case(b"transport="))
    {
        return Transport::Udp;
    }
    match crate::sip::Uri::parse(uri) {
        Ok(crate::sip::Uri::Sip(u)) if u.secure && !wants_ws(&u) => Transport::Tls,
        Ok(crate::sip::Uri::Sip(u)) => match u.transport() {
            Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
            Some(t) if t.eq_ignore_ascii_case(b"tls") => Transport::Tls,
            Some(t) if t.eq_ignore_ascii_case(b"ws") => Transport::Ws,
            Some(t) if t.eq_ignore_ascii_case(b"wss") => Transport::Wss,
            _ => Transport::Udp,
        },
        _ => Transport::Udp,
    }
}

fn wants_ws(u: &crate::sip::SipUri<'_>) -> bool {
    u.transport()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"ws") || t.eq_ignore_ascii_case(b"wss"))
}

/// Whether `uri` is a `sips:` URI.
pub fn is_sips(uri: &[u8]) -> bool {
    uri.get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"sips:"))
}

/// Whether this configuration opens connections over `t`: a `tcp:` listen address for TCP;
/// a `tls:` one and `[tls] peer_ca` for TLS (never an unverified connection); never for WS or
/// WSS (RFC 7118: clients connect in; a device is reached over the connection it opened).
pub fn enabled_for(cfg: &crate::config::Config, t: Transport) -> bool {
    can_connect(&cfg.server.listeners, cfg.tls.as_ref(), t)
}

/// [`enabled_for`] on the parts it looks at, for validation before the `Config` is built
/// (a trunk's or a route next hop's transport).
pub fn can_connect(
    listeners: &[crate::config::Listener],
    tls: Option<&crate::config::tls::TlsConfig>,
    t: Transport,
) -> bool {
    let listener = listeners.iter().any(|l| l.transport == t);
    match t {
        Transport::Udp | Transport::Ws | Transport::Wss => false,
        Transport::Tcp => listener,
        Transport::Tls => listener && tls.is_some_and(|c| c.connects()),
    }
}

/// Whether a flow over `t` is secured by TLS (what a `sips:` or `;transport=tls` target needs):
/// TLS, or a WebSocket over TLS (WSS, RFC 7118; a `ws:` one is cleartext).
pub fn secure(t: Transport) -> bool {
    matches!(t, Transport::Tls | Transport::Wss)
}

/// A target asking for TLS whose address has a plain TCP flow open: the engine keeps one
/// connection per peer address, and the request must not go over the plain one (RFC 3261
/// §26.2.2, RFC 5630: TLS on every hop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoTlsPath;

/// Before a branch toward `dest`, which asks for `wanted`: the transport to connect with, if
/// the request is to be marked for a connection. `Some(wanted)` while a flow of that transport
/// is open or being opened (the engine writes to it, or queues the request until it is up);
/// `None` when a flow of another transport is open (it is used as it is: TLS for a TCP target
/// too) or `wanted` cannot be connected. A new flow is entered as open, so the branch's Via,
/// its Record-Route and every later request to `dest` (CANCEL, ACK, other calls) name and
/// take it until the engine reports it closed or failed. [`NoTlsPath`] when `wanted` is TLS
/// and a plain flow is open to `dest`: the branch is not sent.
pub fn prepare(
    cx: &mut Cx<'_>,
    dest: SocketAddr,
    wanted: Transport,
) -> Result<Option<Transport>, NoTlsPath> {
    let open = cx.flows.get(dest);
    if wanted == Transport::Tls && open.is_some_and(|t| !secure(t)) {
        return Err(NoTlsPath);
    }
    if !enabled_for(cx.cfg, wanted) {
        return Ok(None);
    }
    match open {
        Some(open) if open != wanted => Ok(None),
        _ => {
            cx.flows.seen(dest, wanted);
            Ok(Some(wanted))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_tcp_asks_for_tcp_and_sips_or_transport_tls_for_tls() {
        assert_eq!(
            wanted(b"sip:1001@127.0.0.1:5080;transport=tcp"),
            Transport::Tcp
        );
        assert_eq!(
            wanted(b"sip:1001@127.0.0.1:5080;Transport=TCP;ob"),
            Transport::Tcp
        );
        assert_eq!(wanted(b"sip:1001@127.0.0.1:5080"), Transport::Udp);
        assert_eq!(wanted(b"sip:1001@127.0.0.1;transport=udp"), Transport::Udp);
        assert_eq!(wanted(b"sip:1001@127.0.0.1;transport=tls"), Transport::Tls);
        assert_eq!(wanted(b"sip:1001@127.0.0.1;transport=TLS"), Transport::Tls);
        assert_eq!(wanted(b"sips:1001@127.0.0.1;transport=tcp"), Transport::Tls);
        assert_eq!(wanted(b"SIPS:1001@127.0.0.1:5061"), Transport::Tls);
        assert_eq!(wanted(b"sip:1001@127.0.0.1;transport=sctp"), Transport::Udp);
        assert_eq!(
            wanted(b"sip:abc@df7jal23ls0d.invalid;transport=ws"),
            Transport::Ws
        );
        assert_eq!(wanted(b"sip:abc@192.0.2.1;transport=WSS"), Transport::Wss);
        assert_eq!(wanted(b"sips:abc@192.0.2.1;transport=wss"), Transport::Wss);
        assert_eq!(wanted(b"tel:+4930123"), Transport::Udp);
        assert_eq!(wanted(b"garbage"), Transport::Udp);
    }
}
