//! Our own address per transport: what sipfork's Via sent-by and Record-Route entries name for
//! a hop over UDP, TCP or TLS, and whether an address seen in a message is one of ours.
//!
//! The UDP listener's address is the core's own (`Env::local`); a `tcp:` or `tls:` listener
//! may listen on another IP address and port (TLS usually on 5061). RFC 3261 §18.2.2: a device
//! that lost the connection opens a new one to the sent-by address, so a TCP/TLS Via must name
//! the stream listener. Sans-IO: reads the configuration and the core's environment only.

use std::net::{IpAddr, SocketAddr};

use super::Transport;
use crate::core::context::Cx;

/// Our address for a hop over `t`: the `tcp:`/`tls:` listener's when one is configured (its IP
/// replaced by our UDP address's when it listens on a wildcard, which names no host), else our
/// UDP address.
pub fn addr_for(cx: &Cx<'_>, t: Transport) -> SocketAddr {
    if !t.is_stream() {
        return cx.env.local;
    }
    match cx.cfg.server.listeners.iter().find(|l| l.transport == t) {
        Some(l) => SocketAddr::new(named_ip(cx, l.addr.ip()), l.addr.port()),
        None => cx.env.local,
    }
}

/// The IP a listener on `ip` is reached at (`ServerConfig::named_ip`).
fn named_ip(cx: &Cx<'_>, ip: IpAddr) -> IpAddr {
    crate::config::ServerConfig::named_ip(ip, cx.env.local.ip())
}

/// Whether `ip`:`port` is one of our listeners: the UDP address, or a `tcp:`/`tls:` listener
/// (a wildcard one on our UDP IP, as [`addr_for`] names it).
pub fn is_ours(cx: &Cx<'_>, ip: IpAddr, port: u16) -> bool {
    (ip == cx.env.local.ip() && port == cx.env.local.port())
        || cx
            .cfg
            .server
            .is_stream_listener(ip, port, cx.env.local.ip())
}
