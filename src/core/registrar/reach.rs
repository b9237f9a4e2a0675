//! Which bindings a request can reach: the one place that says it ([`Reach`]), used by
//! [`super::location::LocationTable::targets`] for every caller (a call's fork, a follow-me
//! stage's own devices, the cluster's "is the number here" check).
//!
//! A binding is reached over its own connection when it registered over TCP or TLS (and only
//! while that flow is open), else at its destination as its Contact asks
//! ([`crate::core::transport::outbound`]). What `sips:` adds (RFC 3261 §26.2.2 as amended by
//! RFC 5630 Appendix A: TLS on every hop, no last-hop exception):
//! - a `sips:` Contact is reached over TLS only: its own TLS (or WSS) connection, or one sipfork opens
//!   (`tls:` listener and `[tls] peer_ca`); never over UDP or a plain TCP flow, even one that is
//!   open to its address (the engine keeps one connection per peer address, so a TLS one cannot
//!   be opened beside it);
//! - the same for a `sip:` Contact with `;transport=tls` whose address has a plain TCP flow
//!   open (without TLS out and without such a flow it is still reached over UDP, as
//!   docs/transports.md says);
//! - a Contact asking for WS or WSS is reached only over the WebSocket it registered on;
//! - a request whose Request-URI is `sips:` ([`Reach::secure`]) reaches only `sips:` Contacts
//!   (RFC 5630 §5.3: a target registered with a `sip:` Contact is not forwarded to; the proxy
//!   answers 480 with warn-code 380, `core::transport::sips`), over TLS as above.
//!
//! Sans-IO: reads the flow set and two flags.

use std::net::SocketAddr;

use crate::config::Config;
use crate::core::transport::flows::Flows;
use crate::core::transport::{outbound, Transport};

use super::binding;

/// What a request can reach: the open flows, whether sipfork opens TLS connections, and
/// whether the request asks for TLS on every hop (a `sips:` Request-URI).
#[derive(Clone, Copy, Debug)]
pub struct Reach<'f> {
    flows: &'f Flows,
    tls_out: bool,
    secure: bool,
}

impl<'f> Reach<'f> {
    /// For a request under configuration `cfg`.
    pub fn new(cfg: &Config, flows: &'f Flows) -> Reach<'f> {
        Self::with(flows, outbound::enabled_for(cfg, Transport::Tls))
    }

    /// As [`Reach::new`], saying whether TLS out is configured (`tls_out`).
    pub fn with(flows: &'f Flows, tls_out: bool) -> Reach<'f> {
        Reach {
            flows,
            tls_out,
            secure: false,
        }
    }

    /// For a request whose Request-URI is `sips:` when `secure` (RFC 5630).
    pub fn secure(self, secure: bool) -> Reach<'f> {
        Reach { secure, ..self }
    }

    /// The transport a connection to a binding would be opened with (`Target::transport`:
    /// UDP for one registered over a connection, which is reached over that connection only),
    /// or `None` when the request cannot reach it.
    pub(super) fn binding(
        &self,
        contact: &[u8],
        dest: SocketAddr,
        over: binding::Transport,
    ) -> Option<Transport> {
        let sips = outbound::is_sips(contact);
        if !sips
            && !contact
                .get(..4)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"sip:"))
        {
            return None; // `mailto:` and the like: listed, never a destination
        }
        if self.secure && !sips {
            return None; // RFC 5630 §5.3: a `sip:` Contact is no target of a `sips:` request
        }
        let open = self.flows.get(dest);
        if over.is_flow() {
            // Its own connection, while open (sipfork opens no new one to it); a `sips:`
            // Contact only over TLS.
            return match open {
                Some(t) if !sips || outbound::secure(t) => Some(Transport::Udp),
                _ => None,
            };
        }
        let wanted = outbound::wanted(contact);
        if wanted.is_websocket() {
            // Reached only over the WebSocket it registered on (RFC 7118 §5.2; its host is
            // often `.invalid`): never over UDP, and sipfork never opens one.
            return None;
        }
        if wanted == Transport::Tls {
            if open.is_some_and(|t| !outbound::secure(t)) {
                return None; // never over the plain TCP flow open to its address
            }
            if sips && !self.tls_out && open.is_none() {
                return None; // no TLS connection can be opened to it
            }
        }
        Some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use binding::Transport as Over;

    #[test]
    fn sips_contacts_need_tls_out() {
        let dest: SocketAddr = "127.0.0.1:5072".parse().unwrap();
        let flows = Flows::new();
        let sips = b"sips:1001@127.0.0.1:5072";
        assert_eq!(
            Reach::with(&flows, false).binding(sips, dest, Over::Udp),
            None
        );
        assert_eq!(
            Reach::with(&flows, true).binding(sips, dest, Over::Udp),
            Some(Transport::Tls)
        );
        assert_eq!(
            Reach::with(&flows, false).binding(
                b"sip:1001@127.0.0.1:5072;transport=tls",
                dest,
                Over::Udp
            ),
            Some(Transport::Tls)
        );
        assert_eq!(
            Reach::with(&flows, false).binding(b"mailto:a@b", dest, Over::Udp),
            None
        );
    }

    #[test]
    fn tls_targets_never_take_a_plain_tcp_flow() {
        let dest: SocketAddr = "127.0.0.1:5072".parse().unwrap();
        let mut flows = Flows::new();
        let sips = b"sips:1001@127.0.0.1:5072";
        let tls = b"sip:1001@127.0.0.1:5072;transport=tls";
        let udp = b"sip:1001@127.0.0.1:5072";
        flows.seen(dest, Transport::Tcp);
        for out in [false, true] {
            let r = Reach::with(&flows, out);
            assert_eq!(r.binding(sips, dest, Over::Udp), None);
            assert_eq!(r.binding(tls, dest, Over::Udp), None);
            assert_eq!(r.binding(udp, dest, Over::Udp), Some(Transport::Udp));
            // Registered over that TCP flow: a sip: Contact yes, a sips: one no.
            assert_eq!(r.binding(udp, dest, Over::Tcp), Some(Transport::Udp));
            assert_eq!(r.binding(sips, dest, Over::Tcp), None);
        }
        // Over a TLS flow a sips: Contact is reached, TLS out or not.
        flows.seen(dest, Transport::Tls);
        let r = Reach::with(&flows, false);
        assert_eq!(r.binding(sips, dest, Over::Tls), Some(Transport::Udp));
        assert_eq!(r.binding(sips, dest, Over::Udp), Some(Transport::Tls));
    }

    #[test]
    fn a_sips_request_reaches_only_sips_contacts_over_tls() {
        let dest: SocketAddr = "127.0.0.1:5072".parse().unwrap();
        let mut flows = Flows::new();
        let sips = b"sips:1001@127.0.0.1:5072";
        let tls = b"sip:1001@127.0.0.1:5072;transport=tls";
        let udp = b"sip:1001@127.0.0.1:5072";
        let r = Reach::with(&flows, true).secure(true);
        assert_eq!(r.binding(sips, dest, Over::Udp), Some(Transport::Tls));
        assert_eq!(r.binding(tls, dest, Over::Udp), None);
        assert_eq!(r.binding(udp, dest, Over::Udp), None);
        assert_eq!(
            Reach::with(&flows, false)
                .secure(true)
                .binding(sips, dest, Over::Udp),
            None
        );
        flows.seen(dest, Transport::Tls);
        let r = Reach::with(&flows, false).secure(true);
        assert_eq!(r.binding(sips, dest, Over::Tls), Some(Transport::Udp));
        assert_eq!(r.binding(tls, dest, Over::Tls), None);
        assert_eq!(r.binding(udp, dest, Over::Tls), None);
    }

    /// A WebSocket Contact is reached over its own WebSocket while open, never over UDP.
    #[test]
    fn websocket_contacts_only_over_their_own_flow() {
        let dest: SocketAddr = "127.0.0.1:40100".parse().unwrap();
        let ws = b"sip:k3a9@df7jal23ls0d.invalid;transport=ws";
        let mut flows = Flows::new();
        assert_eq!(Reach::with(&flows, true).binding(ws, dest, Over::Udp), None);
        assert_eq!(Reach::with(&flows, true).binding(ws, dest, Over::Ws), None);
        flows.seen(dest, Transport::Ws);
        assert_eq!(
            Reach::with(&flows, true).binding(ws, dest, Over::Ws),
            Some(Transport::Udp)
        );
        assert_eq!(Reach::with(&flows, true).binding(ws, dest, Over::Udp), None);
    }
}
