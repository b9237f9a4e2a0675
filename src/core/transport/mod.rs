//! Transports beside UDP: what a flow is carried on, and the sans-IO stream framer that cuts a
//! TCP or TLS byte stream into SIP messages (RFC 3261 §18.3).
//!
//! Plain values and state machines only: the engine owns the sockets and the TLS sessions and
//! feeds the bytes it read to a [`framer::Framer`] per connection.

pub mod flows;
pub mod framer;
pub mod ours;
pub mod outbound;
pub mod record_route;
pub mod sips;

use std::fmt;

/// What a listener or a flow is carried on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// A TCP connection.
    Tcp,
    /// TLS on a TCP connection.
    Tls,
}

impl Transport {
    /// The Via transport token (RFC 3261 §18.2.1, §20.42).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// A byte stream (framed by Content-Length), not datagrams.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}
