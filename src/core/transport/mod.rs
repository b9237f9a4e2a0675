//! Transports beside UDP: what a flow is carried on, and the sans-IO stream framer that cuts a
//! TCP or TLS byte stream into SIP messages (RFC 3261 §18.3), and the WebSocket handshake and frame
//! codec ([`ws`], RFC 6455 / RFC 7118) that does the same for a WS or WSS connection.
//!
//! Plain values and state machines only: the engine owns the sockets and the TLS sessions and
//! feeds the bytes it read to a [`framer::Framer`] (or a [`ws::WsCodec`]) per connection.

pub mod flows;
pub mod framer;
pub mod ours;
pub mod outbound;
pub mod peer_cert;
pub mod record_route;
pub mod sips;
pub mod ws;

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
    /// WebSocket on a TCP connection (RFC 7118): one SIP message per WebSocket message.
    Ws,
    /// WebSocket on TLS (RFC 7118 `wss`).
    Wss,
}

impl Transport {
    /// The Via transport token (RFC 3261 §18.2.1, §20.42).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// A connection (reliable, a flow with one peer), not datagrams: TCP and TLS framed by
    /// Content-Length, WS and WSS by WebSocket messages.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// WebSocket (WS or WSS): clients always connect in, sipfork never opens one.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

impl Transport {
    /// Its name as a URI's `transport` parameter takes it (RFC 3261 §19.1.1, RFC 7118 §5.2).
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.param())
    }
}
