//! `trunk_certificate` on a trunk's `[[extensions]]` entry: the names (RFC 5922 §7.1: a SAN
//! dNSName, the host of a SAN `sip:` URI, or the subject CN of a certificate without those) of
//! the client certificate the trunk presents over TLS. Such a trunk is recognised by a TLS (or
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
    /// recognised by its configured address as [`Config::trunk_at`] says; a trunk with
    /// `trunk_certificate` never is (a connection from its address without the certificate,
    /// or a datagram, proves nothing).
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
            .find(|(a, t, number)| {
                *a == source
                    && (*t == arrival || *t == Transport::Udp)
                    && !self.trunk_certificates.iter().any(|(_, n)| n == number)
            })
            .map(|(.., n)| n.as_slice())
    }
}
