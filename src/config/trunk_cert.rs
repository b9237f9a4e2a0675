//! `trunk_certificate` on a trunk's `[[extensions]]` entry: the names (SAN dNSNames only, the
//! names a CA's name constraints hold: `core::transport::peer_cert`) of the client certificate
//! the trunk presents over TLS. Such a trunk is recognised by a TLS (or
//! WSS) connection whose verified certificate carries one of the names, from any source
//! address, and no longer by its address alone; [`Config::trunk_of`] is the one decision every
//! "is this request the trunk's" question asks (authentication, overload exemptions).
//!
//! Requests *to* the trunk still go to its configured `trunk` address(es), so the entry keeps
//! them; the names need a `tls:` or `wss:` listener and `[tls] ca` (the CA the certificates
//! must chain to), and each name belongs to one trunk.

use std::net::SocketAddr;

use super::tls::TlsConfig;
use super::{Config, ServerConfig};
use crate::core::transport::peer_cert::{host_name, CertNames};
use crate::core::transport::Transport;

/// Every configured certificate name and the number of the trunk it identifies.
pub(super) type TrunkNames = Vec<(Box<str>, Vec<u8>)>;

/// Checks the `trunk_certificate` names of entry `i` (a trunk of number `number` when `trunk`
/// is set) and adds them to `all`. The error names the key and says why.
pub(super) fn add(
    i: usize,
    names: Vec<String>,
    number: Option<&[u8]>,
    server: &ServerConfig,
    tls: Option<&TlsConfig>,
    all: &mut TrunkNames,
) -> Result<(), (String, String)> {
    let key = format!("extensions[{i}].trunk_certificate");
    let fail = |why: String| Err((key.clone(), why));
    let Some(number) = number else {
        return fail(
            "names the certificate of a trunk: the entry needs trunk = \"IP:port\" (where calls to it go)"
                .into(),
        );
    };
    let listener = server
        .listeners
        .iter()
        .any(|l| matches!(l.transport, Transport::Tls | Transport::Wss));
    if !listener || !tls.is_some_and(TlsConfig::verifies_clients) {
        return fail(
            "a trunk recognised by its certificate needs a tls: (or wss:) listener and [tls] ca (the CA certificates client certificates are verified against)"
                .into(),
        );
    }
    if names.is_empty() {
        return fail("give at least one certificate name".into());
    }
    for name in names {
        let Some(checked) = host_name(&name) else {
            return fail(format!(
                "{name:?} is not a host name (a certificate's dNSName; wildcards are never matched, RFC 5922 §7.2)"
            ));
        };
        if all.iter().any(|(n, _)| *n == checked) {
            return fail(format!(
                "{name:?} already names a trunk's certificate: a certificate identifies one trunk"
            ));
        }
        all.push((checked, number.to_vec()));
    }
    Ok(())
}

impl Config {
    /// The number of the trunk that sent a request from `source` over `arrival`, whose
    /// connection's verified client certificate is `cert` (`None`: none, or not TLS).
    ///
    /// A trunk with `trunk_certificate` is the sender when the request came over TLS or WSS
    /// with a certificate naming one of its names, from whatever address. Any other trunk is
    /// recognised by its configured address (IP and port): a trunk configured with
    /// `;transport=tcp` or `tls` only over that transport (a UDP datagram with its source
    /// address proves nothing), one configured for UDP over any transport (RFC 3261 §18.1.1
    /// sends a large request over TCP, and a connection proves its source address better than
    /// a datagram does). A trunk with `trunk_certificate` never is (a connection from its
    /// address without the certificate, or a datagram, proves nothing). `cert = None` asks
    /// for the trunk known by its address alone.
    pub fn trunk_of(
        &self,
        source: SocketAddr,
        arrival: Transport,
        cert: Option<&CertNames>,
    ) -> Option<&[u8]> {
        if self.trunks.is_empty() {
            return None;
        }
        if let (Some(cert), Transport::Tls | Transport::Wss) = (cert, arrival) {
            let named = self
                .trunk_certificates
                .iter()
                .find(|(n, _)| cert.contains(n));
            if let Some((_, number)) = named {
                return Some(number);
            }
        }
        self.trunks
            .iter()
            .find(|(a, t, _, by_certificate)| {
                *a == source && (*t == arrival || *t == Transport::Udp) && !by_certificate
            })
            .map(|(_, _, n, _)| n.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::{Config, ConfigError};
    use crate::core::io::Datagram;
    use crate::core::transport::peer_cert::CertNames;
    use crate::core::transport::Transport;

    /// A directory with a self-signed certificate (`cert.pem`, `key.pem`).
    fn dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sipfork-trunk-cert-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).unwrap();
        dir
    }

    /// Trunk 3000 at 192.0.2.10:5060 named by `names` (a TOML array); trunk 3001 at
    /// 192.0.2.11:5060 without names; `listen` and `tls` as given.
    fn text(listen: &str, tls: &str, names: &str) -> String {
        format!(
            "[server]\nlisten = {listen}\n[auth]\nmode = \"none\"\n\
             [[extensions]]\nnumbers = \"3000\"\ntrunk = \"192.0.2.10:5060\"\ntrunk_certificate = {names}\n\
             [[extensions]]\nnumbers = \"3001\"\ntrunk = \"192.0.2.11:5060\"\n{tls}"
        )
    }

    const LISTEN: &str = "[\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]";

    fn tls(dir: &std::path::Path, ca: bool) -> String {
        let cert = dir.join("cert.pem");
        let ca = if ca {
            format!("ca = \"{}\"\n", cert.display())
        } else {
            String::new()
        };
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{ca}",
            cert.display(),
            dir.join("key.pem").display()
        )
    }

    fn error(text: &str) -> (String, String) {
        match Config::from_toml(text) {
            Err(ConfigError::Invalid { key, why, .. }) => (key, why),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn cert(names: &[&str]) -> Arc<CertNames> {
        Arc::new(CertNames::from_certificate(names.iter().copied()))
    }

    #[test]
    fn names_need_a_tls_listener_a_ca_and_a_trunk_and_identify_one_trunk() {
        let d = dir("validate");
        let ok = Config::from_toml(&text(LISTEN, &tls(&d, true), "\"PBX1.example.net\""))
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<_> = ok.trunk_certificates.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["pbx1.example.net"]);
        let key = "extensions[0].trunk_certificate";
        // Without [tls] ca no client certificate is asked for.
        let (k, why) = error(&text(LISTEN, &tls(&d, false), "[\"pbx1.example.net\"]"));
        assert_eq!((k.as_str(), why.contains("[tls] ca")), (key, true), "{why}");
        // Without a tls: listener no TLS connection arrives (a [tls] section alone is not one).
        let (k, why) = error(&text(
            "[\"udp:127.0.0.1:5060\"]",
            &tls(&d, true),
            "[\"pbx1.example.net\"]",
        ));
        assert_eq!((k.as_str(), why.contains("tls:")), (key, true), "{why}");
        // A wss: listener takes TLS too.
        Config::from_toml(&text(
            "[\"udp:127.0.0.1:5060\", \"wss:127.0.0.1:5062\"]",
            &tls(&d, true),
            "[\"pbx1.example.net\"]",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        // Not a host name; a wildcard; none at all.
        for bad in ["[\"pbx 1\"]", "[\"*.example.net\"]", "[]"] {
            let (k, _) = error(&text(LISTEN, &tls(&d, true), bad));
            assert_eq!(k, key, "{bad}");
        }
        // A name belongs to one trunk.
        let twice = text(LISTEN, &tls(&d, true), "[\"pbx1.example.net\"]").replace(
            "trunk = \"192.0.2.11:5060\"\n",
            "trunk = \"192.0.2.11:5060\"\ntrunk_certificate = \"PBX1.example.net.\"\n",
        );
        let (k, why) = error(&twice);
        assert_eq!(k, "extensions[1].trunk_certificate");
        assert!(why.contains("already"), "{why}");
        // Only a trunk has one.
        let device = text(LISTEN, &tls(&d, true), "[\"pbx1.example.net\"]")
            + "[[extensions]]\nnumbers = \"1000\"\ntrunk_certificate = \"dev.example.net\"\n";
        let (k, why) = error(&device);
        assert_eq!(k, "extensions[2].trunk_certificate");
        assert!(why.contains("trunk ="), "{why}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_reload_applies_changed_names_without_restarting_the_counters() {
        let d = dir("reload");
        let old = Config::from_toml(&text(LISTEN, &tls(&d, true), "\"pbx1.example.net\"")).unwrap();
        let new = Config::from_toml(&text(LISTEN, &tls(&d, true), "\"pbx9.example.net\"")).unwrap();
        let diff = crate::app::reload::diff(&old, &new);
        assert_eq!(diff.applied, ["trunks and dids"]);
        assert!(
            !diff.counters_restart && diff.need_restart.is_empty(),
            "{diff:?}"
        );
        let merged = crate::app::reload::applicable(&old, new);
        let from = "198.51.100.7:40000".parse().unwrap();
        let pbx9 = cert(&["pbx9.example.net"]);
        assert_eq!(
            merged.trunk_of(from, Transport::Tls, Some(&pbx9)),
            Some(&b"3000"[..])
        );
        assert_eq!(
            merged.trunk_of(from, Transport::Tls, Some(&cert(&["pbx1.example.net"]))),
            None
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_trunk_is_its_certificate_not_its_address() {
        let d = dir("decide");
        let cfg = Config::from_toml(&text(
            LISTEN,
            &tls(&d, true),
            "[\"pbx1.example.net\", \"pbx1b.example.net\"]",
        ))
        .unwrap();
        let own: std::net::SocketAddr = "192.0.2.10:5060".parse().unwrap();
        let cloud: std::net::SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let good = cert(&["pbx1b.example.net"]);
        let other = cert(&["pbx2.example.net"]);
        let trunk = Some(&b"3000"[..]);
        // Its certificate over TLS or WSS, from any address.
        assert_eq!(cfg.trunk_of(cloud, Transport::Tls, Some(&good)), trunk);
        assert_eq!(cfg.trunk_of(cloud, Transport::Wss, Some(&good)), trunk);
        assert_eq!(cfg.trunk_of(own, Transport::Tls, Some(&good)), trunk);
        // Its address without it: over UDP, TCP, TLS without or with another certificate.
        for (arrival, c) in [
            (Transport::Udp, None),
            (Transport::Tcp, None),
            (Transport::Tls, None),
            (Transport::Tls, Some(&other)),
            // (A certificate can only come over TLS; one said to come over TCP counts for nothing.)
            (Transport::Tcp, Some(&good)),
        ] {
            assert_eq!(
                cfg.trunk_of(own, arrival, c.map(|c| &**c)),
                None,
                "{arrival:?}"
            );
        }
        // A trunk without names: by its address, as before.
        let plain: std::net::SocketAddr = "192.0.2.11:5060".parse().unwrap();
        assert_eq!(
            cfg.trunk_of(plain, Transport::Udp, None),
            Some(&b"3001"[..])
        );
        // The per-source limit's exemption asks the same question.
        let local = "127.0.0.1:5060".parse().unwrap();
        let bytes = b"INVITE sip:0049@example.com SIP/2.0\r\n\r\n";
        let datagram = |from, transport, peer_cert| Datagram {
            from,
            local,
            bytes,
            transport,
            peer_cert,
        };
        let exempt = |d| crate::core::overload::exempt_source(&cfg, local, &d);
        assert!(exempt(datagram(cloud, Transport::Tls, Some(&good))));
        assert!(!exempt(datagram(cloud, Transport::Tls, Some(&other))));
        assert!(!exempt(datagram(own, Transport::Udp, None)));
        assert!(!exempt(datagram(own, Transport::Tls, None)));
        assert!(exempt(datagram(plain, Transport::Udp, None)));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
