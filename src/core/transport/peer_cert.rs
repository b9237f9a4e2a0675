//! The identity a TLS peer proved with its client certificate: the names of the end-entity
//! certificate that the listener verified against `[tls] ca` (the engine reads them once, right
//! after the handshake, and hands them in with every message of that connection).
//!
//! Only the SAN `dNSName`s count: they are the one kind of name that the verifier holds to an
//! issuing CA's name constraints (webpki checks the constraints on dNSName and IP address SANs,
//! never on the subject's Common Name, and not on a URI SAN when the CA is limited to DNS names),
//! so an intermediate limited to `*.customer.example` cannot make a certificate that names
//! `pbx1.example.net` here. RFC 5922 §7.1 would also take the host of a SAN `sip:` URI and, without
//! SANs, the Common Name; both are left out on purpose. Names are compared whole and
//! case-insensitively (§7.2): a wildcard name in a certificate (`*.example.net`) matches nothing,
//! so a wildcard certificate never speaks for one trunk.

use std::sync::Arc;

/// The names of a verified client certificate, lowercase, without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertNames {
    names: Box<[Box<str>]>,
}

/// A connection's certificate names, shared by every message it delivers (and by the letter
/// that hands one to another shard): no copy per message.
pub type PeerCert = Arc<CertNames>;

impl CertNames {
    /// The identity of a certificate with SAN dNSNames `dns` (the only names that count, see the
    /// module docs). Names that are not host names (wildcards among them) are left out.
    pub fn from_certificate<'n>(dns: impl IntoIterator<Item = &'n str>) -> CertNames {
        let mut names: Vec<Box<str>> = dns.into_iter().filter_map(host_name).collect();
        names.sort();
        names.dedup();
        CertNames {
            names: names.into(),
        }
    }

    /// The names, sorted.
    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }

    /// Whether the certificate names `name` (a configured name: lowercase, see [`host_name`]).
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| **n == *name)
    }
}

/// `name` as compared: lowercase, without a trailing dot; `None` when it is not a host name
/// (empty, a wildcard, a character other than a letter, digit, `-` or `.`, an empty label, or
/// longer than 253 characters).
pub fn host_name(name: &str) -> Option<Box<str>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let good = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    good.then(|| name.to_ascii_lowercase().into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &CertNames) -> Vec<&str> {
        c.names().iter().map(|n| &**n).collect()
    }

    #[test]
    fn san_dns_names_count_wildcards_do_not() {
        let c = CertNames::from_certificate([
            "PBX1.Example.NET.",
            "*.example.net",
            "bad name",
            "pbx1.example.net",
        ]);
        assert_eq!(names(&c), ["pbx1.example.net"]);
        assert!(c.contains("pbx1.example.net"));
        // A wildcard matches nothing (RFC 5922 §7.2), not even a name under it.
        assert!(!c.contains("other.example.net"));
        let wildcard_only = CertNames::from_certificate(["*.example.net"]);
        assert!(wildcard_only.names().is_empty());
    }

    #[test]
    fn host_names_are_checked() {
        assert_eq!(
            host_name("A-1.example.net").as_deref(),
            Some("a-1.example.net")
        );
        for bad in [
            "",
            ".",
            "a..b",
            "*.example.net",
            "a b",
            "a_b.net",
            &"a".repeat(64),
        ] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
    }
}
