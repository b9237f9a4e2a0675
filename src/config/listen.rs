//! `[server] listen`: one address or a list, each `"udp:IP:port"`, `"tcp:IP:port"`,
//! `"tls:IP:port"`, `"ws:IP:port"`, `"wss:IP:port"` (WebSocket, RFC 7118), or a bare
//! `"IP:port"` (UDP).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::net::parse_socket_addr;
use super::raw::RawTcp;
use crate::core::transport::Transport;

/// One listen address and its transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// What it accepts.
    pub transport: Transport,
    /// Where.
    pub addr: SocketAddr,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// Every transport, as `listen` and `[[device_classes]] transport` name them.
const TRANSPORTS: [Transport; 5] = [
    Transport::Udp,
    Transport::Tcp,
    Transport::Tls,
    Transport::Ws,
    Transport::Wss,
];

/// The transport `name` names (`udp`, `tcp`, `tls`, `ws`, `wss`; any ASCII case).
pub(super) fn transport_named(name: &str) -> Result<Transport, String> {
    TRANSPORTS
        .into_iter()
        .find(|t| t.to_string().eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("unknown transport {name:?}; expected udp, tcp, tls, ws or wss"))
}

/// Parses one `listen` entry.
pub(super) fn parse_listener(text: &str) -> Result<Listener, String> {
    let (transport, addr) = match text.split_once(':') {
        Some((scheme, rest)) if transport_named(scheme).is_ok() => {
            (transport_named(scheme)?, rest)
        }
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme.bytes().all(|b| b.is_ascii_alphabetic())
                && rest.parse::<SocketAddr>().is_ok() =>
        {
            return Err(format!(
                "{text:?}: unknown transport {scheme:?}; expected udp:, tcp:, tls:, ws: or wss: before the address"
            ))
        }
        _ => (Transport::Udp, text),
    };
    let addr = parse_socket_addr(addr).map_err(|why| {
        if addr == text {
            why
        } else {
            format!("{text:?}: {why}")
        }
    })?;
    Ok(Listener { transport, addr })
}

/// The listeners of one `listen` value, checked together: exactly one UDP address (the proxy's
/// own address in Via and Record-Route), at most one TCP, TLS, WS and WSS address.
pub(super) fn check_listeners(listeners: &[Listener]) -> Result<(), String> {
    for t in TRANSPORTS {
        let n = listeners.iter().filter(|l| l.transport == t).count();
        if t == Transport::Udp && n != 1 {
            return Err(format!(
                "lists {n} UDP addresses; list exactly one (RFC 3261 §18: a proxy speaks UDP), \
                 e.g. \"udp:127.0.0.1:5060\" or \"127.0.0.1:5060\""
            ));
        }
        if n > 1 {
            return Err(format!("lists {n} {t} addresses; list at most one"));
        }
    }
    for (i, a) in listeners.iter().enumerate() {
        if listeners[..i].iter().any(|b| {
            b.addr == a.addr && (a.transport == Transport::Udp) == (b.transport == Transport::Udp)
        }) {
            return Err(format!(
                "{a}: the TCP, TLS, WS and WSS listeners need different ports (all are TCP sockets)"
            ));
        }
    }
    Ok(())
}

/// `[tcp]`: limits of each TCP or TLS connection and of connections per source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// A connection without a message (or keep-alive) for this long is closed.
    pub idle: Duration,
    /// Open connections per source IP address, per shard.
    pub max_connections_per_source: u32,
    /// Longest header block, bytes.
    pub max_header_bytes: u32,
    /// Largest body, bytes.
    pub max_body_bytes: u32,
    /// Messages per connection per second.
    pub max_messages_per_second: u32,
    /// Connections sipfork opens itself (to `;transport=tcp` and TLS targets), per shard.
    pub max_outbound_connections: u32,
    /// A connection sipfork opens that is not up after this long fails (a transport error for
    /// the requests waiting on it, RFC 3261 §8.1.3.1).
    pub connect_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            idle: Duration::from_secs(300),
            max_connections_per_source: 64,
            max_header_bytes: 16 << 10,
            max_body_bytes: 64 << 10,
            max_messages_per_second: 1000,
            max_outbound_connections: 1024,
            connect_timeout: Duration::from_secs(4),
        }
    }
}

/// `[tcp]` with its defaults and ranges; an error names the key.
pub(super) fn build_tcp(raw: &RawTcp) -> Result<TcpConfig, (&'static str, String)> {
    fn range<T: PartialOrd + fmt::Display + Copy>(
        key: &'static str,
        v: Option<T>,
        default: T,
        lo: T,
        hi: T,
    ) -> Result<T, (&'static str, String)> {
        let v = v.unwrap_or(default);
        if v < lo || v > hi {
            return Err((key, format!("{v} is out of range: expected {lo} to {hi}")));
        }
        Ok(v)
    }
    let d = TcpConfig::default();
    Ok(TcpConfig {
        idle: Duration::from_secs(range(
            "tcp.idle_seconds",
            raw.idle_seconds,
            d.idle.as_secs(),
            1,
            86_400,
        )?),
        max_connections_per_source: range(
            "tcp.max_connections_per_source",
            raw.max_connections_per_source,
            d.max_connections_per_source,
            1,
            1_000_000,
        )?,
        max_header_bytes: range(
            "tcp.max_header_bytes",
            raw.max_header_bytes,
            d.max_header_bytes,
            1024,
            1 << 20,
        )?,
        max_body_bytes: range(
            "tcp.max_body_bytes",
            raw.max_body_bytes,
            d.max_body_bytes,
            0,
            16 << 20,
        )?,
        // RFC 3261 trunks and SIPp pipeline many messages on one connection: never below 500/s.
        max_messages_per_second: range(
            "tcp.max_messages_per_second",
            raw.max_messages_per_second,
            d.max_messages_per_second,
            500,
            10_000_000,
        )?,
        max_outbound_connections: range(
            "tcp.max_outbound_connections",
            raw.max_outbound_connections,
            d.max_outbound_connections,
            0,
            1_000_000,
        )?,
        connect_timeout: Duration::from_secs(range(
            "tcp.connect_seconds",
            raw.connect_seconds,
            d.connect_timeout.as_secs(),
            1,
            60,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_and_bare_addresses() {
        let l = parse_listener("127.0.0.1:5060").unwrap();
        assert_eq!((l.transport, l.addr.port()), (Transport::Udp, 5060));
        let l = parse_listener("UDP:127.0.0.1:5062").unwrap();
        assert_eq!((l.transport, l.addr.port()), (Transport::Udp, 5062));
        let l = parse_listener("tcp:[::1]:5060").unwrap();
        assert_eq!(
            (l.transport, l.addr),
            (Transport::Tcp, "[::1]:5060".parse().unwrap())
        );
        let l = parse_listener("tls:127.0.0.1:5061").unwrap();
        assert_eq!(
            (l.transport, l.to_string().as_str()),
            (Transport::Tls, "tls:127.0.0.1:5061")
        );
        let l = parse_listener("ws:127.0.0.1:8080").unwrap();
        assert_eq!((l.transport, l.addr.port()), (Transport::Ws, 8080));
        let l = parse_listener("WSS:[::1]:8443").unwrap();
        assert_eq!(
            (l.transport, l.to_string().as_str()),
            (Transport::Wss, "wss:[::1]:8443")
        );
        assert_eq!(transport_named("WS"), Ok(Transport::Ws));
        assert!(transport_named("sctp").is_err());
        assert!(parse_listener("sctp:127.0.0.1:5060")
            .unwrap_err()
            .contains("unknown transport"));
        assert!(parse_listener("tcp:localhost:5060")
            .unwrap_err()
            .contains("tcp:localhost"));
        assert!(parse_listener("tcp:127.0.0.1").is_err());
    }

    #[test]
    fn one_udp_at_most_one_stream_of_each() {
        let p = |v: &[&str]| {
            check_listeners(
                &v.iter()
                    .map(|t| parse_listener(t).unwrap())
                    .collect::<Vec<_>>(),
            )
        };
        assert!(p(&["127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:127.0.0.1:5061"]).is_ok());
        assert!(p(&["tcp:127.0.0.1:5060"]).unwrap_err().contains("0 UDP"));
        assert!(p(&["127.0.0.1:5060", "udp:127.0.0.2:5060"])
            .unwrap_err()
            .contains("2 UDP"));
        assert!(
            p(&["127.0.0.1:5060", "tcp:127.0.0.1:5070", "tcp:127.0.0.1:5071"])
                .unwrap_err()
                .contains("2 tcp")
        );
        assert!(
            p(&["127.0.0.1:5060", "tcp:127.0.0.1:5070", "tls:127.0.0.1:5070"])
                .unwrap_err()
                .contains("different ports")
        );
        assert!(p(&[
            "127.0.0.1:5060",
            "tcp:127.0.0.1:5060",
            "ws:127.0.0.1:8080",
            "wss:127.0.0.1:8443"
        ])
        .is_ok());
        assert!(
            p(&["127.0.0.1:5060", "ws:127.0.0.1:8080", "ws:127.0.0.1:8081"])
                .unwrap_err()
                .contains("2 ws")
        );
        assert!(
            p(&["127.0.0.1:5060", "tcp:127.0.0.1:8080", "ws:127.0.0.1:8080"])
                .unwrap_err()
                .contains("different ports")
        );
    }

    #[test]
    fn tcp_limits_default_and_ranges() {
        let d = build_tcp(&RawTcp::default()).unwrap();
        assert_eq!(d, TcpConfig::default());
        assert!(d.max_messages_per_second >= 500);
        let raw = RawTcp {
            max_messages_per_second: Some(100),
            ..RawTcp::default()
        };
        assert_eq!(
            build_tcp(&raw).unwrap_err().0,
            "tcp.max_messages_per_second"
        );
        let raw = RawTcp {
            idle_seconds: Some(0),
            ..RawTcp::default()
        };
        assert_eq!(build_tcp(&raw).unwrap_err().0, "tcp.idle_seconds");
    }
}
