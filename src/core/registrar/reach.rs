//! Which bindings a request can reach: the one place that says it ([`Reach`]), used by
//! [`super::location::LocationTable::targets`] for every caller (a call's fork, a follow-me
//! stage's own devices, the cluster's "is the number here" check).
//!
//! A binding is reached over its own connection when it registered over TCP or TLS (and only
//! while that flow is open), else at its destination as its Contact asks
//! ([`crate::core::transport::outbound`]). A `sips:` Contact needs TLS (RFC 3261 §26.2.2): it is
//! reached only when sipfork can open TLS connections (`tls:` listener and `[tls] peer_ca`).
//!
//! Sans-IO: reads the flow set and a flag.

use std::net::SocketAddr;

use crate::config::Config;
use crate::core::transport::flows::Flows;
use crate::core::transport::{outbound, Transport};

use super::binding;

/// What a request can reach: the open flows, and whether sipfork opens TLS connections.
#[derive(Clone, Copy, Debug)]
pub struct Reach<'f> {
    flows: &'f Flows,
    tls_out: bool,
}

impl<'f> Reach<'f> {
    /// For a request under configuration `cfg`.
    pub fn new(cfg: &Config, flows: &'f Flows) -> Reach<'f> {
        Self::with(flows, outbound::enabled_for(cfg, Transport::Tls))
    }

    /// As [`Reach::new`], saying whether TLS out is configured (`tls_out`).
    pub fn with(flows: &'f Flows, tls_out: bool) -> Reach<'f> {
        Reach { flows, tls_out }
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
        if sips && !self.tls_out {
            return None; // a sips: target is never reached over a plain transport
        }
        if over.is_flow() {
            // Its own connection, while open (sipfork opens no new one to it).
            return self.flows.get(dest).map(|_| Transport::Udp);
        }
        Some(outbound::wanted(contact))
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
}
