//! The client certificate of a TLS connection accepted on a listener with `[tls] ca`: once the
//! handshake is done, the end-entity certificate rustls verified is read for its names
//! ([`CertNames`], RFC 5922 §7.1) with rustls' own certificate parser (`rustls-webpki`), and the
//! connection keeps them for every message it delivers. Counted both ways: verified, and
//! handshakes refused for the certificate presented.

use std::sync::Arc;

use crate::core::transport::peer_cert::{CertNames, PeerCert};

use super::StreamStats;

/// The names of the verified client certificate of server session `tls`, when the peer
/// presented one (with `[tls] ca` rustls refuses the handshake for one that does not verify, so
/// any certificate seen here verified); `None` for a client session or a peer without one.
pub(super) fn names(tls: &rustls::Connection, stats: &mut StreamStats) -> Option<PeerCert> {
    if !matches!(tls, rustls::Connection::Server(_)) {
        return None;
    }
    let leaf = tls.peer_certificates()?.first()?;
    stats.client_cert_verified += 1;
    // Verified by rustls with this same parser, so it parses; a certificate it could not read
    // would identify nobody (an empty set of names).
    let names = match webpki::EndEntityCert::try_from(leaf) {
        Ok(cert) => {
            CertNames::from_certificate(cert.valid_dns_names(), cert.valid_uri_names(), || {
                common_names(cert.subject())
            })
        }
        Err(_) => CertNames::from_certificate([], [], Vec::new),
    };
    Some(Arc::new(names))
}

/// Counts a server session that failed for the client certificate its peer presented.
pub(super) fn count_refused(
    tls: &rustls::Connection,
    error: &Option<rustls::Error>,
    stats: &mut StreamStats,
) {
    if matches!(tls, rustls::Connection::Server(_))
        && matches!(error, Some(rustls::Error::InvalidCertificate(_)))
    {
        stats.client_cert_refused += 1;
    }
}

/// OID 2.5.4.3 (id-at-commonName), DER content bytes.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The Common Names of a certificate subject: `subject` is the content of its `Name` (a
/// sequence of `SET OF AttributeTypeAndValue`, RFC 5280 §4.1.2.4) as webpki gives it. Values
/// that are not a string type, and anything malformed, are skipped.
fn common_names(subject: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut rdns = subject;
    while let Some((0x31, mut set, rest)) = tlv(rdns) {
        rdns = rest;
        while let Some((0x30, pair, rest)) = tlv(set) {
            set = rest;
            let Some((0x06, oid, value)) = tlv(pair) else {
                continue;
            };
            // UTF8String, PrintableString, IA5String.
            if let (COMMON_NAME, Some((0x0c | 0x13 | 0x16, text, _))) = (oid, tlv(value)) {
                if let Ok(text) = std::str::from_utf8(text) {
                    names.push(text.to_owned());
                }
            }
        }
    }
    names
}

/// One DER element at the start of `bytes`: its tag (one byte), its content, and what follows.
fn tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 3 || rest.len() < octets {
            return None;
        }
        let (len, after) = rest.split_at(octets);
        rest = after;
        len.iter().fold(0, |n, &b| (n << 8) | usize::from(b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(sans: Vec<rcgen::SanType>, cn: &str) -> rustls::pki_types::CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Carrier");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).unwrap().der().clone()
    }

    fn read(der: &rustls::pki_types::CertificateDer<'_>) -> Vec<String> {
        let cert = webpki::EndEntityCert::try_from(der).unwrap();
        CertNames::from_certificate(cert.valid_dns_names(), cert.valid_uri_names(), || {
            common_names(cert.subject())
        })
        .names()
        .iter()
        .map(|n| n.to_string())
        .collect()
    }

    #[test]
    fn names_come_from_the_sans_and_the_common_name_only_without_them() {
        let dns = |n: &str| rcgen::SanType::DnsName(n.try_into().unwrap());
        let uri = |u: &str| rcgen::SanType::URI(u.try_into().unwrap());
        let both = leaf(
            vec![dns("pbx1.example.net"), uri("sip:edge.example.net")],
            "cn.example.net",
        );
        assert_eq!(read(&both), ["edge.example.net", "pbx1.example.net"]);
        let cn_only = leaf(Vec::new(), "PBX2.example.net");
        assert_eq!(read(&cn_only), ["pbx2.example.net"]);
        let ip_only = leaf(
            vec![rcgen::SanType::IpAddress([192, 0, 2, 7].into())],
            "pbx3.example.net",
        );
        // An IP address SAN names no host (nor a trunk): the CN is the name.
        assert_eq!(read(&ip_only), ["pbx3.example.net"]);
    }

    #[test]
    fn malformed_subjects_yield_nothing() {
        assert!(common_names(&[0x31, 0x05, 0x30]).is_empty());
        assert!(common_names(&[0x31, 0x84, 0, 0, 0, 1]).is_empty());
        assert_eq!(
            tlv(&[0x04, 0x81, 0x01, 0xaa]),
            Some((0x04, &[0xaa][..], &[][..]))
        );
    }
}
