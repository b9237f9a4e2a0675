//! Via (RFC 3261 §8.1.1.7, §18.2.1, §20.42; RFC 3581 rport; RFC 5118 IPv6).
//!
//! `via-parm = sent-protocol LWS sent-by *( SEMI via-params )`, where
//! `sent-protocol = protocol-name SLASH protocol-version SLASH transport` (LWS allowed around each
//! slash) and `sent-by = host [ COLON port ]`. The transport is an open token (`UNKNOWN` is legal,
//! RFC 4475 §3.1.1.10). Known parameters are picked out in the same pass that validates them.

use std::net::IpAddr;

use crate::sip::error::ParseError;
use crate::sip::scan::{parse_port, parse_u32, Cursor};
use crate::sip::uri::{parse_ip, Host};

use super::params::Params;

/// The RFC 3261 branch prefix that marks a globally unique branch (§8.1.1.7).
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// One via-parm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'b> {
    /// This via-parm's octets, from the protocol name to the end of its last parameter.
    pub raw: &'b [u8],
    /// Protocol name (`SIP`).
    pub protocol: &'b [u8],
    /// Protocol version (`2.0`).
    pub version: &'b [u8],
    /// Transport token as written (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, or any other token).
    pub transport: &'b [u8],
    /// sent-by host.
    pub host: Host<'b>,
    /// sent-by host as written (IPv6 with brackets).
    pub host_raw: &'b [u8],
    /// sent-by port, when given.
    pub port: Option<u16>,
    /// `branch`.
    pub branch: Option<&'b [u8]>,
    /// `received`, as written (IPv4, or IPv6 with or without brackets); see [`Via::received_ip`].
    pub received: Option<&'b [u8]>,
    /// `rport`: `Some(None)` when present without a value (a request asking for it),
    /// `Some(Some(port))` when filled in.
    pub rport: Option<Option<u16>>,
    /// `maddr`.
    pub maddr: Option<&'b [u8]>,
    /// `ttl` (0..=255).
    pub ttl: Option<u8>,
    /// All parameters, known ones included, in order.
    pub params: Params<'b>,
}

impl<'b> Via<'b> {
    /// Does the branch start with the RFC 3261 magic cookie *and* carry something after it?
    /// `branch=z9hG4bK` alone (RFC 4475 `badbranch`) is not a usable RFC 3261 branch.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    /// The `received` address, if present and an IP address.
    pub fn received_ip(&self) -> Option<IpAddr> {
        self.received.and_then(parse_ip)
    }

    /// Is the transport `name` (case-insensitive)?
    pub fn transport_is(&self, name: &str) -> bool {
        self.transport.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Parses one via-parm at the cursor (leading whitespace allowed), leaving the cursor after it.
#[inline]
pub(crate) fn parse_via<'b>(c: &mut Cursor<'b>) -> Result<Via<'b>, ParseError> {
    let bad = ParseError::BadVia;
    c.skip_lws();
    let start = c.pos();
    let protocol = c.token().ok_or(bad)?;
    if !c.eat_separator(b'/') {
        return Err(bad);
    }
    let version = c.token().ok_or(bad)?;
    if !c.eat_separator(b'/') {
        return Err(bad);
    }
    let transport = c.token().ok_or(bad)?;
    let before_space = c.pos();
    c.skip_lws();
    if c.pos() == before_space {
        return Err(bad);
    }
    let (host, host_len) = Host::scan(c.rest()).map_err(|_| bad)?;
    let host_raw = c.rest().get(..host_len).unwrap_or(&[]);
    c.set_pos(c.pos() + host_len);
    let port = if c.eat_separator(b':') {
        let digits = c.take_while(|b| b.is_ascii_digit());
        Some(parse_port(digits).ok_or(bad)?)
    } else {
        None
    };
    let (mut branch, mut received, mut rport, mut maddr, mut ttl) = (None, None, None, None, None);
    let params = Params::parse_with_kind(c, bad, |name, value| {
        let token = value.and_then(|(v, token)| token.then_some(v));
        let value = value.map(|(v, _)| v);
        if name.eq_ignore_ascii_case(b"branch") {
            branch = Some(token.ok_or(bad)?);
        } else if name.eq_ignore_ascii_case(b"received") {
            received = Some(value.ok_or(bad)?);
        } else if name.eq_ignore_ascii_case(b"rport") {
            rport = Some(match value {
                None => None,
                Some(v) => Some(parse_port(v).ok_or(bad)?),
            });
        } else if name.eq_ignore_ascii_case(b"maddr") {
            maddr = Some(value.ok_or(bad)?);
        } else if name.eq_ignore_ascii_case(b"ttl") {
            let v = value.and_then(parse_u32).ok_or(bad)?;
            ttl = Some(u8::try_from(v).map_err(|_| bad)?);
        }
        Ok(())
    })?;
    Ok(Via {
        raw: c.slice(start, c.pos()),
        protocol,
        version,
        transport,
        host,
        host_raw,
        port,
        branch,
        received,
        rport,
        maddr,
        ttl,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn via(s: &[u8]) -> Result<(Via<'_>, &[u8]), ParseError> {
        let mut c = Cursor::new(s);
        let v = parse_via(&mut c)?;
        Ok((v, c.rest()))
    }

    #[test]
    fn tortuous_whitespace() {
        let (v, rest) = via(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.protocol, v.version, v.transport),
            (&b"SIP"[..], &b"2.0"[..], &b"UDP"[..])
        );
        assert_eq!(v.host, Host::V4(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(v.branch, Some(&b"390skdjuw"[..]));
        assert!(rest.is_empty());
        let (v, rest) = via(
            b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP",
        )
        .unwrap();
        assert_eq!(v.host_raw, b"spindle.example.com");
        assert_eq!(v.branch, Some(&b"z9hG4bK9ikj8"[..]));
        assert!(v.raw.ends_with(b"z9hG4bK9ikj8"));
        assert_eq!(rest, b"  ,\r\n SIP");
    }

    #[test]
    fn known_parameters() {
        let (v, _) = via(
            b"SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255];rport=5062;maddr=224.2.0.1;ttl=16;branch=z9hG4bKas3-111;x",
        )
        .unwrap();
        assert_eq!(v.host, Host::V6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v.port, Some(6050));
        assert_eq!(v.received_ip(), Some("2001:db8::9:255".parse().unwrap()));
        assert_eq!(v.rport, Some(Some(5062)));
        assert_eq!(v.maddr, Some(&b"224.2.0.1"[..]));
        assert_eq!(v.ttl, Some(16));
        assert!(v.has_rfc3261_branch());
        assert_eq!(v.params.get("x"), Some(None));
        let (v, _) = via(b"SIP/2.0/UDP h;rport;branch=z9hG4bK").unwrap();
        assert_eq!(v.rport, Some(None));
        assert!(!v.has_rfc3261_branch());
    }

    #[test]
    fn malformed() {
        for bad in [
            &b"SIP/2.0/UDP 192.0.2.15;;,;,,"[..],
            b"SIP/2.0 host",
            b"SIP/2.0/UDPhost",
            b"SIP/2.0/UDP ",
            b"SIP/2.0/UDP host:",
            b"SIP/2.0/UDP host;ttl=256",
            b"SIP/2.0/UDP host;rport=x",
            b"SIP/2.0/UDP host;branch",
            b"SIP/2.0/UDP [::1",
        ] {
            assert!(via(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
