//! The client certificate of a TLS connection accepted on a listener with `[tls] ca`: once the
//! handshake is done, the end-entity certificate rustls verified is read for its SAN dNSNames
//! ([`CertNames`]: the only names held to the CA's name constraints; never the Common Name nor a
//! URI SAN) with rustls' own certificate parser (`rustls-webpki`), and the
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
        Ok(cert) => CertNames::from_certificate(cert.valid_dns_names()),
        Err(_) => CertNames::from_certificate([]),
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
        CertNames::from_certificate(cert.valid_dns_names())
            .names()
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn only_san_dns_names_count_never_the_common_name_nor_a_uri() {
        let dns = |n: &str| rcgen::SanType::DnsName(n.try_into().unwrap());
        let uri = |u: &str| rcgen::SanType::URI(u.try_into().unwrap());
        let both = leaf(
            vec![dns("PBX1.example.net"), uri("sip:edge.example.net")],
            "cn.example.net",
        );
        // A URI SAN and the CN escape a CA's DNS name constraints: neither counts.
        assert_eq!(read(&both), ["pbx1.example.net"]);
        let uri_only = leaf(vec![uri("sip:edge.example.net")], "edge.example.net");
        assert!(read(&uri_only).is_empty());
        let cn_only = leaf(Vec::new(), "pbx2.example.net");
        assert!(read(&cn_only).is_empty());
        // An IP address SAN names no host, and the CN beside it is not pbx3.
        let ip_only = leaf(
            vec![rcgen::SanType::IpAddress([192, 0, 2, 7].into())],
            "pbx3.example.net",
        );
        assert!(read(&ip_only).is_empty());
        // A wildcard SAN matches nothing, and the CN does not stand in for it: no trunk.
        let wildcard = leaf(vec![dns("*.example.net")], "pbx1.example.net");
        assert!(read(&wildcard).is_empty());
    }
}
