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

use std::net::SocketAddr;

use super::Transport;
use crate::core::context::Cx;

/// The transport a target's URI asks for: TCP for a `sip:` URI with `;transport=tcp`, else UDP
/// (TLS and `sips:` are not connected to yet).
pub fn wanted(uri: &[u8]) -> Transport {
    // Most Contacts name no transport: a scan, no parse, on every call's targets.
    if !uri
        .windows(10)
        .any(|w| w.eq_ignore_ascii_case(b"transport="))
    {
        return Transport::Udp;
    }
    match crate::sip::Uri::parse(uri) {
        Ok(crate::sip::Uri::Sip(u))
            if !u.secure
                && u.transport()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"tcp")) =>
        {
            Transport::Tcp
        }
        _ => Transport::Udp,
    }
}

/// Whether this configuration opens connections: a `tcp:` listen address is configured.
pub fn enabled(cx: &Cx<'_>) -> bool {
    cx.cfg
        .server
        .listeners
        .iter()
        .any(|l| l.transport == Transport::Tcp)
}

/// Before a branch toward `dest`, which asks for `wanted`: the transport to connect with, if
/// the request is to be marked for a connection. A flow to `dest` open already is used as it
/// is (returns `None`); otherwise the flow is entered as open, so the branch's Via, its
/// Record-Route and every later request to `dest` (CANCEL, ACK, other calls) name and take it
/// until the engine reports it closed or failed.
pub fn prepare(cx: &mut Cx<'_>, dest: SocketAddr, wanted: Transport) -> Option<Transport> {
    if !wanted.is_stream() || !enabled(cx) {
        return None;
    }
    match cx.flows.get(dest) {
        Some(open) if open != wanted => None,
        _ => {
            cx.flows.seen(dest, wanted);
            Some(wanted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sip_uri_with_transport_tcp_asks_for_tcp() {
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
        assert_eq!(wanted(b"sip:1001@127.0.0.1;transport=tls"), Transport::Udp);
        assert_eq!(wanted(b"sips:1001@127.0.0.1;transport=tcp"), Transport::Udp);
        assert_eq!(wanted(b"tel:+4930123"), Transport::Udp);
        assert_eq!(wanted(b"garbage"), Transport::Udp);
    }
}
