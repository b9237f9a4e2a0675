//! What the core has to tell an operator (rare events: guessing blocks, refused digests,
//! follow-me targets skipped), kept as values: the core writes no log. The engine's shard drains
//! them after each batch and logs them ([`Notice::is_info`] says at which level); each
//! `Display`s as the one line fail2ban and operators match.

use std::fmt;
use std::net::IpAddr;

/// One event worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A (source, user) pair, or a whole address (`user` absent), is blocked for guessing.
    Blocked {
        /// The source address.
        source: IpAddr,
        /// The username, or `None` for the whole address.
        user: Option<Vec<u8>>,
        /// Failures counted when the block started.
        failures: u32,
    },
    /// A block ran out.
    Unblocked {
        /// The source address.
        source: IpAddr,
        /// The username, or `None` for the whole address.
        user: Option<Vec<u8>>,
    },
    /// Digest credentials answered a fresh nonce wrongly (a guess).
    DigestRefused {
        /// The source address.
        source: IpAddr,
        /// The username.
        user: Vec<u8>,
        /// Why.
        reason: &'static str,
    },
    /// A follow-me stage skipped an external target: `forward_external` is off.
    ExternalSkipped {
        /// The number not dialled.
        number: Vec<u8>,
    },
    /// A trunk address answered no OPTIONS keep-alive within Timer F: calls skip it.
    TrunkDown {
        /// The trunk address.
        addr: std::net::SocketAddr,
    },
    /// A trunk address reached over TCP or TLS could not be connected to (refused,
    /// unreachable, timed out, a failed TLS handshake): calls skip it.
    TrunkUnreachable {
        /// The trunk address.
        addr: std::net::SocketAddr,
        /// Its configured transport.
        transport: crate::core::transport::Transport,
    },
    /// A trunk address marked dead answered again.
    TrunkUp {
        /// The trunk address.
        addr: std::net::SocketAddr,
    },
}

impl Notice {
    /// Logged at info (the others at debug).
    pub fn is_info(&self) -> bool {
        !matches!(self, Notice::ExternalSkipped { .. })
    }
}

fn user(u: &Option<Vec<u8>>) -> String {
    u.as_deref().map_or_else(
        || "*".to_owned(),
        |u| String::from_utf8_lossy(u).into_owned(),
    )
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Blocked {
                source,
                user: u,
                failures,
            } => write!(
                f,
                "source blocked src={source} user={} failures={failures}",
                user(u)
            ),
            Notice::Unblocked { source, user: u } => {
                write!(f, "source unblocked src={source} user={}", user(u))
            }
            Notice::DigestRefused {
                source,
                user: u,
                reason,
            } => write!(
                f,
                "digest refused src={source} user={} reason={reason}",
                String::from_utf8_lossy(u)
            ),
            Notice::ExternalSkipped { number } => write!(
                f,
                "follow-me: external target {} skipped, forward_external is off for this tenant",
                String::from_utf8_lossy(number)
            ),
            Notice::TrunkDown { addr } => {
                write!(f, "trunk address {addr} down: no answer to OPTIONS")
            }
            Notice::TrunkUnreachable { addr, transport } => {
                write!(
                    f,
                    "trunk address {addr} down: {transport} connection failed"
                )
            }
            Notice::TrunkUp { addr } => write!(f, "trunk address {addr} up again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fail2ban_matches() {
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let n = Notice::Blocked {
            source: src,
            user: Some(b"1000".to_vec()),
            failures: 10,
        };
        assert_eq!(
            n.to_string(),
            "source blocked src=127.0.0.1 user=1000 failures=10"
        );
        let n = Notice::Unblocked {
            source: src,
            user: None,
        };
        assert_eq!(n.to_string(), "source unblocked src=127.0.0.1 user=*");
    }
}
