//! The identity a TLS peer proved with its client certificate: the names of the end-entity
//! certificate that the listener verified against `[tls] ca` (the engine reads them once, right
//! after the handshake, and hands them in with every message of that connection).
//!
//! Which names count follows RFC 5922 §7.1: each SAN `dNSName`, and the host of each SAN URI of
//! scheme `sip`; the subject's Common Name only when the certificate carries neither. Names are
//! compared whole and case-insensitively (§7.2): a wildcard name in a certificate (`*.example.net`)
//! matches nothing, so a wildcard certificate never speaks for one trunk.

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
    /// The identity of a certificate with SAN `dns` names, SAN `uris`, and subject Common Names
    /// `cn` (looked at only when the SANs name nothing). Names that are not host names are left
    /// out.
    pub fn from_certificate<'n>(
        dns: impl IntoIterator<Item = &'n str>,
        uris: impl IntoIterator<Item = &'n str>,
        cn: impl FnOnce() -> Vec<String>,
    ) -> CertNames {
        let mut names: Vec<Box<str>> = dns.into_iter().filter_map(host_name).collect();
        names.extend(
            uris.into_iter()
                .filter_map(sip_uri_host)
                .filter_map(host_name),
        );
        if names.is_empty() {
            names.extend(cn().iter().filter_map(|n| host_name(n)));
        }
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

/// The host of a SAN URI of scheme `sip` without a user part (RFC 5922 §7.1: `sip:example.net`);
/// `None` for any other URI.
fn sip_uri_host(uri: &str) -> Option<&str> {
    let scheme = uri.get(..4)?;
    if !scheme.eq_ignore_ascii_case("sip:") {
        return None;
    }
    let rest = &uri[4..];
    if rest.contains('@') {
        return None;
    }
    let end = rest.find([':', ';', '?']).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &CertNames) -> Vec<&str> {
        c.names().iter().map(|n| &**n).collect()
    }

    #[test]
    fn san_names_and_sip_uris_count_and_the_cn_only_without_them() {
        let c = CertNames::from_certificate(
            ["PBX1.Example.NET.", "*.example.net", "bad name"],
            [
                "sip:edge.example.net;transport=tls",
                "sip:alice@example.net",
                "https://x.example",
            ],
            || vec!["cn.example.net".into()],
        );
        assert_eq!(names(&c), ["edge.example.net", "pbx1.example.net"]);
        assert!(c.contains("pbx1.example.net"));
        // A wildcard matches nothing (RFC 5922 §7.2), not even a name under it.
        assert!(!c.contains("other.example.net"));
        assert!(!c.contains("cn.example.net"));
        let cn_only = CertNames::from_certificate([], [], || vec!["PBX2.example.net".into()]);
        assert_eq!(names(&cn_only), ["pbx2.example.net"]);
        let wildcard_only = CertNames::from_certificate(["*.example.net"], [], Vec::new);
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
