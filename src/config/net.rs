//! Addresses, domains, trusted networks and routes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Parses `IPv4:port` or `[IPv6]:port`.
pub(super) fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{text:?} is not an address with a port, such as \"127.0.0.1:5060\" or \"[::1]:5060\""
        )
    })
}

/// A domain the proxy is responsible for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A host name, lower-case, without a trailing dot.
    Name(String),
    /// An IP address (matches with any port).
    Ip(IpAddr),
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(name) => f.write_str(name),
            Domain::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// An IP literal as it appears in a URI host: `1.2.3.4`, `[::1]`, or a bare `::1`.
pub(super) fn parse_host_ip(host: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(host).ok()?;
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    text.parse::<IpAddr>().ok()
}

/// Parses a `domain` entry: a host name (RFC 1123 labels) or an IP address.
pub(super) fn parse_domain(text: &str) -> Result<Domain, String> {
    if let Some(ip) = parse_host_ip(text.as_bytes()) {
        return Ok(Domain::Ip(ip.to_canonical()));
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{text:?} is not a host name or IP address (a domain has no port, scheme or user part)"
        ));
    }
    Ok(Domain::Name(name))
}

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// True when `ip` lies in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

pub(super) fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let network = addr
        .parse::<IpAddr>()
        .map_err(|_| {
            format!("{text:?} is not a network such as \"10.0.0.0/8\" or \"2001:db8::/32\"")
        })?
        .to_canonical();
    let max = if network.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(len) => len
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
    };
    let cidr = Cidr {
        network,
        prefix_len,
    };
    let masked = match network {
        IpAddr::V4(ip) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(ip) & mask))
        }
        IpAddr::V6(ip) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask))
        }
    };
    if masked != network {
        return Err(format!(
            "{text:?} has host bits set; did you mean \"{masked}/{prefix_len}\"?"
        ));
    }
    Ok(cidr)
}

/// A peer whose requests are not challenged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedPeer {
    /// Its network.
    pub cidr: Cidr,
    /// A label for logs and the summary.
    pub name: Option<String>,
}

/// A route's next hop: the URI as written and the address it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The URI as configured (`sip:127.0.0.1:5080;lr`).
    pub uri: String,
    /// Where requests go.
    pub addr: SocketAddr,
    /// `;transport=tcp`: requests go over a TCP connection sipfork opens (needs a `tcp:`
    /// listen address); `;transport=tls`: over a TLS connection (needs a `tls:` listen address
    /// and `[tls] peer_ca`); otherwise UDP.
    pub transport: crate::core::transport::Transport,
    /// The host name the URI gives instead of an IP address (resolved to `addr` when the
    /// configuration is loaded; lower case): over TLS, the name the server's certificate must
    /// carry.
    pub name: Option<rustls::pki_types::ServerName<'static>>,
}

/// Parses `sip:HOST[:port][;params]`. A host name is resolved here, once ([`resolve_host`]).
pub(super) fn parse_next_hop(text: &str) -> Result<NextHop, String> {
    if text
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("sips:"))
    {
        return Err(format!(
            "{text:?}: write a TLS next hop as sip:IP:port;transport=tls"
        ));
    }
    let rest = match text.get(..4) {
        Some(scheme) if scheme.eq_ignore_ascii_case("sip:") => &text[4..],
        _ => {
            return Err(format!(
                "{text:?} is not a SIP URI such as \"sip:127.0.0.1:5080\""
            ))
        }
    };
    let hostport = rest.split(';').next().unwrap_or(rest);
    let mut transport = crate::core::transport::Transport::Udp;
    for param in rest.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("transport") {
            continue;
        }
        transport = match value.trim().to_ascii_lowercase().as_str() {
            "udp" => crate::core::transport::Transport::Udp,
            "tcp" => crate::core::transport::Transport::Tcp,
            "tls" => crate::core::transport::Transport::Tls,
            other => {
                return Err(format!(
                    "{text:?}: transport={other} is not one sipfork connects with (udp, tcp or tls)"
                ))
            }
        };
    }
    if hostport.contains('@') {
        return Err(format!(
            "{text:?}: a next hop names a host, not a user (drop the part before '@')"
        ));
    }
    let (host, port) = split_host_port(hostport)
        .ok_or_else(|| format!("{text:?}: the port must be a number from 1 to 65535"))?;
    let port = port.unwrap_or_else(|| {
        crate::sip::uri::default_port(transport == crate::core::transport::Transport::Tls)
    });
    let (ip, name) = match parse_host_ip(host.as_bytes()) {
        Some(ip) => (ip, None),
        None => {
            let (ip, name) = resolve_host(host).map_err(|why| format!("{text:?}: {why}"))?;
            (ip, Some(name))
        }
    };
    Ok(NextHop {
        uri: text.to_owned(),
        addr: SocketAddr::new(ip, port),
        transport,
        name,
    })
}

/// A next hop's host name resolved through the system resolver (A/AAAA: `/etc/hosts`, DNS), at
/// load and at each reload only — never per request, so a name whose addresses change needs a
/// reload; no NAPTR/SRV (RFC 3263): the URI's port, or the transport's default, is the port.
/// The lowest IPv4 address, else the lowest IPv6 one (not the resolver's first: round-robin DNS
/// rotates the order, and a reload would move the peer for nothing). Returns the name too, as
/// the TLS server name it becomes (lower case).
fn resolve_host(host: &str) -> Result<(IpAddr, rustls::pki_types::ServerName<'static>), String> {
    // The same rules as a TLS server name (RFC 1123 labels), which it becomes over TLS; a
    // trailing dot (a fully qualified name) names the same host.
    let canonical = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let name = match rustls::pki_types::ServerName::try_from(canonical) {
        Ok(name @ rustls::pki_types::ServerName::DnsName(_)) => name,
        _ => return Err(format!("{host:?} is neither an IP address nor a host name")),
    };
    let found: Vec<IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
        .map_err(|e| format!("the host name {host:?} does not resolve: {e}"))?
        .map(|a| a.ip())
        .collect();
    let lowest = |v4: bool| found.iter().filter(|ip| ip.is_ipv4() == v4).min().copied();
    let ip = lowest(true)
        .or_else(|| lowest(false))
        .ok_or_else(|| format!("the host name {host:?} resolves to no address"))?;
    Ok((ip, name))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; `None` when a port is present but invalid.
pub(super) fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if text.starts_with('[') {
        let close = text.find(']')?;
        let (host, rest) = text.split_at(close + 1);
        (host, rest.strip_prefix(':'))
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':')?;
        (host, Some(port))
    } else {
        (text, None)
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
    };
    Some((host, port))
}

/// A route for numbers that are not provisioned here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Digits the number starts with (`""` matches every number).
    pub prefix: String,
    /// Where matching requests go.
    pub next_hop: NextHop,
}

/// Routes grouped by prefix length, longest first; each group sorted for binary search.
#[derive(Clone, Debug, Default)]
pub(super) struct RouteTable {
    by_len: Vec<(usize, Vec<Route>)>,
}

impl RouteTable {
    /// Builds the table; a repeated prefix returns the index of its second occurrence.
    pub(super) fn build(routes: Vec<Route>) -> Result<Self, usize> {
        let mut seen = std::collections::HashSet::new();
        for (i, route) in routes.iter().enumerate() {
            if !seen.insert(route.prefix.clone()) {
                return Err(i);
            }
        }
        let mut by_len: Vec<(usize, Vec<Route>)> = Vec::new();
        for route in routes {
            let len = route.prefix.len();
            match by_len.iter_mut().find(|(l, _)| *l == len) {
                Some((_, group)) => group.push(route),
                None => by_len.push((len, vec![route])),
            }
        }
        by_len.sort_by_key(|group| std::cmp::Reverse(group.0));
        for (_, group) in &mut by_len {
            group.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        }
        Ok(RouteTable { by_len })
    }

    /// The route with the longest prefix of `number`.
    pub(super) fn lookup(&self, number: &[u8]) -> Option<&Route> {
        self.by_len.iter().find_map(|(len, group)| {
            let head = number.get(..*len)?;
            group
                .binary_search_by(|r| r.prefix.as_bytes().cmp(head))
                .ok()
                .map(|i| &group[i])
        })
    }

    /// Every route, longest prefix first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Route> + '_ {
        self.by_len.iter().flat_map(|(_, group)| group.iter())
    }

    pub(super) fn len(&self) -> usize {
        self.by_len.iter().map(|(_, g)| g.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let net = parse_cidr("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped counts");
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        assert!(parse_cidr("0.0.0.0/0").unwrap().contains(ip("203.0.113.9")));
        let one = parse_cidr("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = parse_cidr("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert_eq!(v6.to_string(), "2001:db8::/32");
        let err = parse_cidr("10.0.0.1/8").unwrap_err();
        assert!(err.contains("did you mean \"10.0.0.0/8\""), "{err}");
        for bad in ["10.0.0.0/33", "10.0.0/8", "host/8", "::/129", "10.0.0.0/x"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_hops() {
        let hop = parse_next_hop("sip:127.0.0.1:5080").unwrap();
        assert_eq!(hop.addr, "127.0.0.1:5080".parse().unwrap());
        assert_eq!(
            parse_next_hop("SIP:10.0.0.1;lr").unwrap().addr,
            "10.0.0.1:5060".parse().unwrap()
        );
        assert_eq!(
            parse_next_hop("sip:[::1]:5090").unwrap().addr,
            "[::1]:5090".parse().unwrap()
        );
        assert_eq!(
            parse_next_hop("sip:[::1]").unwrap().addr,
            "[::1]:5060".parse().unwrap()
        );
        // Over TLS without a port: 5061 (RFC 3261 §19.1.2).
        assert_eq!(
            parse_next_hop("sip:10.0.0.1;transport=TLS").unwrap().addr,
            "10.0.0.1:5061".parse().unwrap()
        );
        assert_eq!(
            parse_next_hop("sip:10.0.0.1;transport=tcp").unwrap().addr,
            "10.0.0.1:5060".parse().unwrap()
        );
        for (bad, why) in [
            (
                "sip:gw_example!com",
                "neither an IP address nor a host name",
            ),
            ("sips:10.0.0.1", "TLS"),
            ("10.0.0.1:5060", "SIP URI"),
            ("sip:10.0.0.1:0", "port"),
            ("sip:10.0.0.1:99999", "port"),
            ("sip:user@10.0.0.1", "user"),
        ] {
            let err = parse_next_hop(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(
            parse_domain("Example.COM.").unwrap(),
            Domain::Name("example.com".into())
        );
        assert_eq!(parse_domain("[::1]").unwrap(), Domain::Ip(ip("::1")));
        assert_eq!(
            parse_domain("::ffff:1.2.3.4").unwrap(),
            Domain::Ip(ip("1.2.3.4"))
        );
        for bad in [
            "",
            "example.com:5060",
            "sip:example.com",
            "a..b",
            "-a.com",
            "a_b.com",
            "user@x",
        ] {
            assert!(parse_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_next_hop_names_its_transport() {
        use crate::core::transport::Transport;
        let hop = parse_next_hop("sip:127.0.0.1:5080;lr;Transport=TCP").unwrap();
        assert_eq!(hop.transport, Transport::Tcp);
        assert_eq!(hop.addr.port(), 5080);
        let hop = parse_next_hop("sip:127.0.0.1;transport=udp").unwrap();
        assert_eq!(hop.transport, Transport::Udp);
        assert_eq!(
            parse_next_hop("sip:127.0.0.1").unwrap().transport,
            Transport::Udp
        );
        assert_eq!(
            parse_next_hop("sip:127.0.0.1;transport=tls")
                .unwrap()
                .transport,
            Transport::Tls
        );
        let e = parse_next_hop("sip:127.0.0.1;transport=sctp").unwrap_err();
        assert!(e.contains("transport=sctp"), "{e}");
    }

    #[test]
    fn a_host_name_is_resolved_once_and_kept_as_the_tls_name() {
        // `localhost` is in every /etc/hosts: no DNS server is asked.
        let hop = parse_next_hop("sip:LocalHost:5091;transport=tls").unwrap();
        assert_eq!(
            hop.addr,
            SocketAddr::from(([127, 0, 0, 1], 5091)),
            "IPv4 first"
        );
        assert_eq!(
            hop.name,
            Some(rustls::pki_types::ServerName::try_from("localhost").unwrap())
        );
        assert_eq!(hop.uri, "sip:LocalHost:5091;transport=tls");
        // Without a port: the transport's default.
        let hop = parse_next_hop("sip:localhost;transport=tls").unwrap();
        assert_eq!(hop.addr.port(), 5061);
        assert_eq!(parse_next_hop("sip:127.0.0.1:5080").unwrap().name, None);
        // A host that is no name at all is refused as such, before any resolver is asked (a
        // name that does not resolve: `tests/e2e/cli.rs`, in a namespace, since the resolver
        // would ask a DNS server).
        let e = parse_next_hop("sip:bad_host!:5080").unwrap_err();
        assert!(e.contains("neither an IP address nor a host name"), "{e}");
        let e = parse_next_hop("sip:.:5080").unwrap_err();
        assert!(e.contains("neither an IP address nor a host name"), "{e}");
    }

    #[test]
    fn longest_prefix_wins() {
        let hop = |port: u16| NextHop {
            uri: format!("sip:127.0.0.1:{port}"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            transport: crate::core::transport::Transport::Udp,
            name: None,
        };
        let route = |prefix: &str, port| Route {
            prefix: prefix.into(),
            next_hop: hop(port),
        };
        let table = RouteTable::build(vec![
            route("00", 1),
            route("0049", 2),
            route("004930", 3),
            route("", 4),
            route("01", 5),
        ])
        .unwrap();
        let port = |n: &str| table.lookup(n.as_bytes()).map(|r| r.next_hop.addr.port());
        assert_eq!(port("00493012345"), Some(3));
        assert_eq!(port("0049891"), Some(2));
        assert_eq!(port("0033"), Some(1));
        assert_eq!(port("0123"), Some(5));
        assert_eq!(port("5"), Some(4));
        assert_eq!(port(""), Some(4));
        assert_eq!(table.len(), 5);
        let without_default = RouteTable::build(vec![route("00", 1)]).unwrap();
        assert!(without_default.lookup(b"5").is_none());
        assert!(without_default.lookup(b"0").is_none());
        assert_eq!(
            RouteTable::build(vec![route("00", 1), route("00", 2)]).unwrap_err(),
            1
        );
    }
}
