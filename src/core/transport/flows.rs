//! The stream flows (TCP and TLS connections) a shard's core knows to be open.
//!
//! The engine owns the connections; the core only learns of them: a message that came over a
//! connection marks its peer address as an open flow ([`Flows::seen`]), and the engine reports a
//! closed connection ([`crate::core::Core::flow_closed`], on every shard). A binding registered
//! over TCP or TLS is reachable only while its flow is open (RFC 5626 §5.3 without requiring
//! Outbound from the device): sipfork opens no new connection to such a device, so a binding whose
//! flow is gone is not targeted (`outbound` connects only for bindings registered over UDP). Requests to an open flow go over it (its Via names its transport and no
//! UDP size limit applies, RFC 3261 §18.1.1).

use std::collections::HashMap;
use std::net::SocketAddr;

use super::Transport;

/// Open stream flows by peer address.
#[derive(Debug, Default)]
pub struct Flows {
    open: HashMap<SocketAddr, Transport>,
}

impl Flows {
    /// No flow open.
    pub fn new() -> Flows {
        Flows::default()
    }

    /// A message arrived from `peer` over `transport`: a stream marks its flow open.
    pub fn seen(&mut self, peer: SocketAddr, transport: Transport) {
        if transport.is_stream() && self.open.get(&peer) != Some(&transport) {
            self.open.insert(peer, transport);
        }
    }

    /// The connection with `peer` closed; returns whether it was known.
    pub fn closed(&mut self, peer: SocketAddr) -> bool {
        self.open.remove(&peer).is_some()
    }

    /// The transport of the open flow to `peer`, if one is open.
    pub fn get(&self, peer: SocketAddr) -> Option<Transport> {
        self.open.get(&peer).copied()
    }

    /// What a message to `peer` goes over: its open flow, else UDP.
    pub fn transport_to(&self, peer: SocketAddr) -> Transport {
        self.get(peer).unwrap_or(Transport::Udp)
    }

    /// Number of open flows known.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when no flow is known to be open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_open_flows_and_closing_forgets_them() {
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let mut f = Flows::new();
        f.seen(a, Transport::Udp);
        assert!(f.is_empty());
        f.seen(a, Transport::Tcp);
        f.seen(b, Transport::Tls);
        assert_eq!(f.transport_to(a), Transport::Tcp);
        assert_eq!(f.get(b), Some(Transport::Tls));
        assert!(f.closed(a));
        assert!(!f.closed(a));
        assert_eq!(f.transport_to(a), Transport::Udp);
        assert_eq!(f.len(), 1);
    }
}
