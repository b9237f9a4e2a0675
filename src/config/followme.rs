//! `[[followme]]`: ordered ring stages for an extension.
//!
//! Each stage rings its targets at the same time: `"self"` (the extension's own devices), another
//! extension (its devices only, never its own follow-me or voicemail) or an external number
//! (reached through its `[[routes]]` next hop, and only where `forward_external` allows it on the
//! forwarding extension's tenant chain). The next stage starts when the stage rang `ring`
//! seconds without answer or every branch failed; the voicemail URI, if any and if the tenant
//! chain allows voicemail, rings last.

use std::net::SocketAddr;

use super::net::{parse_host_ip, split_host_port};

/// One target of a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The extension's own devices.
    Own,
    /// Another extension's devices.
    Extension(Vec<u8>),
    /// An external number and the next hop that reaches it.
    External {
        /// The number as configured.
        number: Vec<u8>,
        /// Its route's next hop.
        next_hop: SocketAddr,
        /// The transport its route's next hop is configured with (`;transport=tcp|tls`,
        /// validated with the route): reached like that next hop.
        transport: crate::core::transport::Transport,
    },
}

/// One stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Rung at the same time.
    pub targets: Vec<Target>,
    /// How long the stage rings before the next starts.
    pub ring: std::time::Duration,
}

/// The follow-me sequence of one extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowMe {
    /// In order.
    pub stages: Vec<Stage>,
    /// Rung after the last stage: the URI to put in the Request-URI and where to send it.
    pub voicemail: Option<(String, SocketAddr)>,
}

/// Parses a voicemail URI `sip:user@IP[:port]` (no DNS).
pub(super) fn parse_voicemail(text: &str) -> Result<(String, SocketAddr), String> {
    let rest = text
        .strip_prefix("sip:")
        .ok_or_else(|| format!("{text:?} is not a sip: URI such as \"sip:vm@127.0.0.1:5090\""))?;
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = hostport.split(';').next().unwrap_or(hostport);
    let (host, port) = split_host_port(hostport)
        .ok_or_else(|| format!("{text:?}: the port must be a number from 1 to 65535"))?;
    let ip = parse_host_ip(host.as_bytes()).ok_or_else(|| {
        format!("{text:?}: the host must be an IP address (sipfork does not resolve DNS names)")
    })?;
    Ok((text.to_owned(), SocketAddr::new(ip, port.unwrap_or(5060))))
}
