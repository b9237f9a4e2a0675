//! `[tls]`: the certificate chain and key (PEM) the TLS listener presents, and optionally the CA
//! certificates client certificates are checked against. Read while the configuration is loaded,
//! so `check-config` finds a bad file and a reload (SIGHUP) reads and checks the files again: a
//! renewed certificate shows as a changed `tls` section, which the reload hands to every shard:
//! new TLS connections get it, open ones keep their session (`app::reload`).
//!
//! `peer_ca` names the roots the servers sipfork connects to over TLS must chain to (TLS out:
//! `;transport=tls` and `sips:` targets); without it sipfork opens no TLS connection (never an
//! unverified one). The same `cert`/`key` are presented when such a server asks for a client
//! certificate (mutual TLS toward trunks). A next hop or trunk written with a host name
//! (`sip:sbc.example.net;transport=tls`) must present a certificate for that name (RFC 5922
//! §7.2), which is also sent as SNI; one written with an IP address, a certificate for the IP.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};

/// The TLS listener's credentials, loaded.
#[derive(Clone)]
pub struct TlsConfig {
    /// Certificate chain file (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key file (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates are verified against; `None` asks for none.
    pub ca: Option<PathBuf>,
    /// CA certificates (PEM) the servers sipfork connects to must chain to; `None`: no TLS out.
    pub peer_ca: Option<PathBuf>,
    /// The rustls client configuration for TLS out (with `peer_ca`).
    pub client: Option<Arc<rustls::ClientConfig>>,
    /// The TLS next hops and trunks configured by host name: the name their certificate must
    /// carry (and the SNI sent). Any other TLS peer is verified against its IP address.
    pub peer_names: Arc<BTreeMap<SocketAddr, ServerName<'static>>>,
    /// The rustls server configuration built from them (TLS 1.2 and 1.3, ring provider).
    pub server: Arc<rustls::ServerConfig>,
    /// SHA-256 of the files' contents, so a reload sees a renewed certificate as a change.
    fingerprint: [u8; 32],
    /// SHA-256 of the `ca` file's contents (`None` without `ca`): a reload that changes it
    /// closes the connections whose client certificate the old CA vouched for.
    ca_fingerprint: Option<[u8; 32]>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("ca", &self.ca)
            .field("peer_ca", &self.peer_ca)
            // In the Debug text, which a reload compares: a renamed peer renews the shards'.
            .field("peer_names", &self.peer_names)
            .field("fingerprint", &hex(&self.fingerprint[..8]))
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Whether client certificates are requested (and verified against `ca` when presented).
    pub fn verifies_clients(&self) -> bool {
        self.ca.is_some()
    }

    /// Whether `other` verifies client certificates against the same CA certificates (the same
    /// contents of `ca`, wherever the file is; or neither has `ca`).
    pub fn same_ca(&self, other: &TlsConfig) -> bool {
        self.ca_fingerprint == other.ca_fingerprint
    }

    /// Whether sipfork opens TLS connections (`peer_ca` is set).
    pub fn connects(&self) -> bool {
        self.client.is_some()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A problem with one of the `[tls]` keys: the key and why.
pub(super) type TlsError = (&'static str, String);

/// Reads the files and builds the rustls configuration.
pub(super) fn load(
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    peer_ca: Option<PathBuf>,
) -> Result<TlsConfig, TlsError> {
    let read = |name: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| (name, format!("cannot read {}: {e}", path.display())))
    };
    let cert_pem = read("tls.cert", &cert)?;
    let key_pem = read("tls.key", &key)?;
    let ca_pem = ca.as_deref().map(|p| read("tls.ca", p)).transpose()?;
    let peer_ca_pem = peer_ca
        .as_deref()
        .map(|p| read("tls.peer_ca", p))
        .transpose()?;

    let chain = certificates("tls.cert", &cert, &cert_pem)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        (
            "tls.key",
            format!("{}: no usable private key in PEM ({e})", key.display()),
        )
    })?;
    // ring, not aws-lc-rs: it builds without cmake and NASM on every target the project ships
    // for; rustls marks it deprecated only for its lack of post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ("tls", format!("TLS versions: {e}")))?;
    let builder = match (&ca, &ca_pem) {
        (Some(path), Some(pem)) => {
            let roots = root_store("tls.ca", path, pem)?;
            // A client certificate is asked for and verified when sent; phones without one
            // still connect (digest authentication applies to them as over UDP).
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| ("tls.ca", format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let client = match (&peer_ca, &peer_ca_pem) {
        (Some(path), Some(pem)) => {
            let roots = root_store("tls.peer_ca", path, pem)?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| ("tls.peer_ca", format!("{}: {e}", path.display())))?;
            let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| ("tls", format!("TLS versions: {e}")))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ExactNames(webpki)))
                // Presented only when the server asks (mutual TLS toward a trunk).
                .with_client_auth_cert(chain.clone(), private.clone_key())
                .map_err(|e| {
                    (
                        "tls.key",
                        format!("the key does not go with the certificate: {e}"),
                    )
                })?;
            Some(Arc::new(config))
        }
        _ => None,
    };
    let server = builder.with_single_cert(chain, private).map_err(|e| {
        (
            "tls.key",
            format!("the key does not go with the certificate: {e}"),
        )
    })?;

    let mut h = Sha256::new();
    for part in [
        Some(&cert_pem),
        Some(&key_pem),
        ca_pem.as_ref(),
        peer_ca_pem.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok(TlsConfig {
        cert,
        key,
        ca,
        peer_ca,
        client,
        peer_names: Arc::default(),
        server: Arc::new(server),
        fingerprint: h.finalize().into(),
        ca_fingerprint: ca_pem.as_ref().map(|pem| Sha256::digest(pem).into()),
    })
}

/// The server certificate check of TLS out: rustls' own (chain to `peer_ca`, validity, the name
/// or IP address), and for a peer named by host name a `dNSName` equal to it — RFC 5922 §7.2
/// matches no wildcard, which webpki would accept (`*.example.net` for `sbc.example.net`).
#[derive(Debug)]
struct ExactNames(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ExactNames {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified =
            self.0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if let ServerName::DnsName(name) = server_name {
            let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
            // A trailing dot names the same host.
            let exact = cert.valid_dns_names().any(|n| {
                n.strip_suffix('.')
                    .unwrap_or(n)
                    .eq_ignore_ascii_case(name.as_ref().trim_end_matches('.'))
            });
            if !exact {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The CA certificates of a PEM file as rustls roots (`name`: the key named in errors).
fn root_store(
    name: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certificates(name, path, pem)? {
        roots.add(c).map_err(|e| {
            (
                name,
                format!("{}: not a CA certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(roots)
}

fn certificates(
    name: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (name, format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err((
            name,
            format!("{}: no CERTIFICATE in the PEM file", path.display()),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    /// A fresh directory with a self-signed certificate for `127.0.0.1` (`cert.pem`, `key.pem`).
    fn certificate_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sipfork-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).unwrap();
        dir
    }

    fn load(dir: &std::path::Path, toml: &str) -> Result<Config, ConfigError> {
        let path = dir.join("sipfork.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&path)
    }

    const LISTEN: &str = "[server]\nlisten = [\"127.0.0.1:5060\", \"tcp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n[auth]\nmode = \"none\"\n";

    #[test]
    fn certificates_load_relative_to_the_file_and_a_renewal_is_a_change() {
        let dir = certificate_dir("load");
        let text = format!("{LISTEN}[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
        let first = load(&dir, &text).unwrap_or_else(|e| panic!("{e}"));
        let tls = first.tls.as_ref().expect("[tls] loaded");
        assert_eq!(tls.cert, dir.join("cert.pem"));
        assert!(!tls.verifies_clients());
        let same = load(&dir, &text).unwrap();
        assert_eq!(format!("{:?}", first.tls), format!("{:?}", same.tls));
        // A renewed certificate (same paths) reads as a changed `tls` section on reload, which
        // applies without a restart.
        let renewed = certificate_dir("renewed");
        std::fs::copy(renewed.join("cert.pem"), dir.join("cert.pem")).unwrap();
        std::fs::copy(renewed.join("key.pem"), dir.join("key.pem")).unwrap();
        let after = load(&dir, &text).unwrap();
        assert_ne!(format!("{:?}", first.tls), format!("{:?}", after.tls));
        let diff = crate::app::reload::diff(&first, &after);
        assert_eq!(diff.applied, ["tls"]);
        assert!(diff.need_restart.is_empty(), "{diff:?}");
        let merged = crate::app::reload::applicable(&first, after);
        assert_eq!(
            format!("{:?}", merged.tls),
            format!("{:?}", load(&dir, &text).unwrap().tls)
        );
        // Client certificates are asked for once a CA is named.
        let with_ca = load(&dir, &format!("{text}ca = \"cert.pem\"\n")).unwrap();
        assert!(with_ca.tls.unwrap().verifies_clients());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&renewed).unwrap();
    }

    #[test]
    fn a_changed_ca_file_is_a_changed_ca_and_a_renewed_certificate_is_not() {
        let dir = certificate_dir("same-ca");
        let other = certificate_dir("other-ca");
        let text =
            format!("{LISTEN}[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nca = \"ca.pem\"\n");
        std::fs::copy(dir.join("cert.pem"), dir.join("ca.pem")).unwrap();
        let tls = |c: &Config| c.tls.clone().expect("[tls] loaded");
        let first = tls(&load(&dir, &text).unwrap());
        assert!(first.same_ca(&tls(&load(&dir, &text).unwrap())));
        // Another server certificate, the same CA.
        std::fs::copy(other.join("cert.pem"), dir.join("cert.pem")).unwrap();
        std::fs::copy(other.join("key.pem"), dir.join("key.pem")).unwrap();
        assert!(first.same_ca(&tls(&load(&dir, &text).unwrap())));
        // The same path, another CA in it; and no CA at all.
        std::fs::copy(other.join("cert.pem"), dir.join("ca.pem")).unwrap();
        assert!(!first.same_ca(&tls(&load(&dir, &text).unwrap())));
        let no_ca = format!("{LISTEN}[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
        assert!(!first.same_ca(&tls(&load(&dir, &no_ca).unwrap())));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }

    #[test]
    fn bad_files_name_the_key() {
        let dir = certificate_dir("bad");
        let err = |toml: &str| match load(&dir, toml) {
            Err(ConfigError::Invalid { key, why, .. }) => (key, why),
            other => panic!("expected an error, got {other:?}"),
        };
        let (key, why) = err(&format!(
            "{LISTEN}[tls]\ncert = \"missing.pem\"\nkey = \"key.pem\"\n"
        ));
        assert_eq!(key, "tls.cert");
        assert!(why.contains("missing.pem"), "{why}");
        let (key, _) = err(&format!(
            "{LISTEN}[tls]\ncert = \"key.pem\"\nkey = \"key.pem\"\n"
        ));
        assert_eq!(key, "tls.cert");
        let (key, _) = err(&format!(
            "{LISTEN}[tls]\ncert = \"cert.pem\"\nkey = \"cert.pem\"\n"
        ));
        assert_eq!(key, "tls.key");
        let other = certificate_dir("other");
        let (key, why) = err(&format!(
            "{LISTEN}[tls]\ncert = \"cert.pem\"\nkey = \"{}\"\n",
            other.join("key.pem").display()
        ));
        assert_eq!(key, "tls.key");
        assert!(why.contains("does not go with"), "{why}");
        // A tls: listener needs [tls].
        let (key, why) = err(LISTEN);
        assert_eq!(key, "server.listen");
        assert!(why.contains("[tls]"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }

    #[test]
    fn peer_ca_enables_tls_out_and_a_tls_next_hop_needs_it() {
        let dir = certificate_dir("peer");
        let text = format!("{LISTEN}[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
        let without = load(&dir, &text).unwrap();
        assert!(!without.tls.as_ref().unwrap().connects());
        let with_text = format!("{text}peer_ca = \"cert.pem\"\n");
        let with = load(&dir, &with_text).unwrap();
        let tls = with.tls.as_ref().unwrap();
        assert!(tls.connects());
        assert_eq!(tls.peer_ca.as_deref(), Some(dir.join("cert.pem").as_path()));
        // Naming peer_ca is a change a reload applies.
        assert_eq!(crate::app::reload::diff(&without, &with).applied, ["tls"]);
        // A next hop over TLS: refused without peer_ca, accepted with it.
        let route =
            "[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:127.0.0.1:5091;transport=tls\"\n";
        match load(&dir, &format!("{text}{route}")) {
            Err(ConfigError::Invalid { key, why, .. }) => {
                assert_eq!(key, "routes[0].next_hop");
                assert!(why.contains("peer_ca"), "{why}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let ok = load(&dir, &format!("{with_text}{route}")).unwrap();
        assert_eq!(
            ok.route_for(b"0049").unwrap().next_hop.transport,
            crate::core::transport::Transport::Tls
        );
        assert!(
            ok.tls.as_ref().unwrap().peer_names.is_empty(),
            "by IP: no name"
        );
        // Written with a host name, the next hop's address verifies that name; changing it (the
        // route alone) renews the shards' TLS settings on reload.
        let named = load(
            &dir,
            &format!("{with_text}{}", route.replace("127.0.0.1", "localhost")),
        )
        .unwrap();
        let names = &named.tls.as_ref().unwrap().peer_names;
        let addr: std::net::SocketAddr = "127.0.0.1:5091".parse().unwrap();
        assert_eq!(
            names.get(&addr),
            Some(&rustls::pki_types::ServerName::try_from("localhost").unwrap())
        );
        assert!(crate::app::reload::diff(&ok, &named)
            .applied
            .contains(&"tls"));
        // A bad peer_ca names its key.
        for bad in ["missing.pem", "key.pem"] {
            match load(&dir, &format!("{text}peer_ca = \"{bad}\"\n")) {
                Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "tls.peer_ca"),
                other => panic!("expected an error, got {other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
