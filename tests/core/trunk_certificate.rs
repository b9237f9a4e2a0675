//! A trunk recognised by its TLS client certificate (`trunk_certificate`, issue 16 point 1) on
//! virtual time: a PBX whose connection presented a verified certificate naming the trunk is
//! the trunk from whatever address it connects (not challenged; its calls out carry the trunk's
//! P-Asserted-Identity), and such a trunk is no longer recognised by its configured address:
//! its address over TLS without the certificate, over TCP, or over UDP is a stranger (407), as
//! is another certificate from the same CA. A trunk without `trunk_certificate` stays
//! recognised by its address.

use sipfork::core::transport::Transport;
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World};
use sipfork::time::{ms, secs};

/// The trunk's configured address (where calls to it go).
const TRUNK_PORT: u16 = 5090;
/// A carrier next hop for numbers starting with 00.
const HOP_PORT: u16 = 5080;

/// Digest on for 1000-1099; trunk 3000 at 127.0.0.1:5090 known by `pbx1.example.net`, trunk
/// 3001 at 127.0.0.1:5091 known by its address; TLS listener with `[tls] ca`.
fn config(name: &str) -> String {
    let dir = crate::outbound_tls::certificates(&format!("trunk-cert-{name}"));
    let pem = dir.join("cert.pem");
    format!(
        r#"
[server]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:127.0.0.1:5061"]
domain = "example.com"
shards = 1
[auth]
mode = "digest"
realm = "example.com"
[[extensions]]
numbers = "1000-1099"
password = "pw-{{number}}"
[[extensions]]
numbers = "3000"
trunk = "sip:127.0.0.1:{TRUNK_PORT};transport=tls"
trunk_certificate = ["pbx1.example.net", "pbx1-backup.example.net"]
[[extensions]]
numbers = "3001"
trunk = "127.0.0.1:5091"
[[routes]]
prefix = "00"
next_hop = "sip:127.0.0.1:{HOP_PORT}"
[tls]
cert = "{cert}"
key = "{key}"
ca = "{cert}"
peer_ca = "{cert}"
"#,
        cert = pem.display(),
        key = dir.join("key.pem").display(),
    )
}

struct Edge {
    w: World,
    hop: PhoneId,
}

fn edge(name: &str) -> Edge {
    let mut w = World::new(&config(name), 1, 1601);
    let hop = w.add_phone_at("carrier", "0049301234", ([127, 0, 0, 1], HOP_PORT).into());
    w.behave(hop, Behaviour::answer_after(ms(100)));
    Edge { w, hop }
}

/// Phone `pbx` calls the carrier number; what the hop received (INVITEs) and the statuses the
/// caller got.
fn call_out(e: &mut Edge, pbx: PhoneId) -> (Vec<Vec<u8>>, Vec<u16>) {
    e.w.call(pbx, "0049301234");
    e.w.run_for(secs(2));
    let invites =
        e.w.phone_ref(e.hop)
            .incoming
            .iter()
            .map(|c| c.invite.clone())
            .collect();
    (invites, e.w.phone_ref(pbx).outgoing[0].finals())
}

fn asserted(invite: &[u8]) -> Option<String> {
    String::from_utf8_lossy(invite)
        .lines()
        .find(|l| l.starts_with("P-Asserted-Identity:"))
        .map(str::to_owned)
}

#[test]
fn the_trunks_certificate_makes_a_call_from_a_new_address_the_trunks() {
    let mut e = edge("new-address");
    // Not the configured trunk address: a PBX on a cloud address.
    let pbx = e.w.add_phone("pbx", "3000", 5099);
    e.w.connect_with_certificate(pbx, Transport::Tls, &["PBX1.example.net"]);
    let (invites, finals) = call_out(&mut e, pbx);
    assert_eq!(finals, vec![200], "{}", e.w.dump());
    assert_eq!(invites.len(), 1, "{}", e.w.dump());
    assert_eq!(
        asserted(&invites[0]).as_deref(),
        Some("P-Asserted-Identity: <sip:3000@example.com>"),
        "{}",
        e.w.dump()
    );
    // Never challenged.
    assert!(!e.w.phone_ref(pbx).statuses().contains(&407));
    // A call to an extension is let in too (no device is registered: 480, not 407).
    e.w.call(pbx, "1000");
    e.w.run_for(secs(2));
    assert_eq!(
        e.w.phone_ref(pbx).outgoing[1].finals(),
        vec![480],
        "{}",
        e.w.dump()
    );
    assert!(!e.w.phone_ref(pbx).statuses().contains(&407));
}

/// Attacks: each sender is a stranger, challenged (407) and not let through to the carrier.
#[test]
fn without_the_certificate_the_trunks_address_is_a_stranger() {
    type Setup = fn(&mut World, PhoneId);
    let cases: [(&str, u16, Setup); 5] = [
        // Its own configured address, over TLS, no client certificate.
        ("tls without a certificate", TRUNK_PORT, |w, p| {
            w.connect(p, Transport::Tls)
        }),
        // Its address over UDP (a datagram's source address proves nothing).
        ("udp from its address", TRUNK_PORT, |_, _| {}),
        // Over TCP from its address.
        ("tcp from its address", TRUNK_PORT, |w, p| {
            w.connect(p, Transport::Tcp)
        }),
        // Another valid certificate of the same CA, from its address.
        ("another name of the same CA", TRUNK_PORT, |w, p| {
            w.connect_with_certificate(p, Transport::Tls, &["pbx2.example.net"])
        }),
        // A wildcard certificate covering the trunk's domain (RFC 5922 §7.2: never matched).
        ("a wildcard certificate", 5098, |w, p| {
            w.connect_with_certificate(p, Transport::Tls, &["*.example.net"])
        }),
    ];
    for (case, port, setup) in cases {
        let mut e = edge(&format!("stranger-{port}"));
        let pbx = e.w.add_phone("pbx", "3000", port);
        setup(&mut e.w, pbx);
        let (invites, finals) = call_out(&mut e, pbx);
        assert!(invites.is_empty(), "{case}: {}", e.w.dump());
        assert_eq!(finals, vec![407], "{case}: {}", e.w.dump());
    }
}

#[test]
fn a_trunk_without_a_certificate_name_is_still_known_by_its_address() {
    let mut e = edge("by-address");
    let pbx = e.w.add_phone("pbx", "3001", 5091);
    let (invites, finals) = call_out(&mut e, pbx);
    assert_eq!(finals, vec![200], "{}", e.w.dump());
    assert_eq!(
        asserted(&invites[0]).as_deref(),
        Some("P-Asserted-Identity: <sip:3001@example.com>")
    );
    // The certificate of trunk 3000 over TLS from trunk 3001's address is trunk 3000.
    let mut e = edge("cert-wins");
    let pbx = e.w.add_phone("pbx", "3000", 5091);
    e.w.connect_with_certificate(pbx, Transport::Tls, &["pbx1-backup.example.net"]);
    let (invites, _) = call_out(&mut e, pbx);
    assert_eq!(
        asserted(&invites[0]).as_deref(),
        Some("P-Asserted-Identity: <sip:3000@example.com>")
    );
}

/// A stranger guessing passwords from the address a certificate trunk connects from (a shared
/// NAT or cloud address) gets that address blocked, but not the trunk: its requests are still
/// the trunk's, while the same address without the certificate stays blocked.
#[test]
fn a_guesser_behind_the_trunks_address_does_not_get_the_trunk_blocked() {
    use crate::security::{guess_from_until_blocked, request, Edge};
    use sipfork::core::transport::peer_cert::CertNames;
    use std::sync::Arc;

    let config = config("guesser").replace(
        "realm = \"example.com\"\n",
        "realm = \"example.com\"\nalgorithms = [\"MD5\"]\n",
    );
    let mut e = Edge::new(&config, 1);
    let (guesser, pbx) = ("127.0.0.66:5060", "127.0.0.66:6000");
    guess_from_until_blocked(&mut e, guesser);
    let options = request(
        "OPTIONS",
        "sip:1000@example.com",
        guesser,
        "1001",
        "",
        "o",
        "",
    );
    assert!(
        e.send(guesser, &options).is_empty(),
        "the address is blocked"
    );
    let cert = Arc::new(CertNames::from_certificate(["pbx1.example.net"]));
    let invite = |call_id: &str| {
        request(
            "INVITE",
            "sip:0049301234@example.com",
            pbx,
            "3000",
            "",
            call_id,
            "",
        )
    };
    // Without the certificate the trunk's connection is the blocked address: dropped.
    let out = e.send_over(pbx, &invite("plain"), Transport::Tls, None);
    assert!(out.is_empty(), "{}", crate::security::dump(&out));
    // With it, the call goes to the carrier, as the trunk's.
    let out = e.send_over(pbx, &invite("trunk"), Transport::Tls, Some(&cert));
    let hop: std::net::SocketAddr = ([127, 0, 0, 1], HOP_PORT).into();
    let forwarded: Vec<_> = out.iter().filter(|(to, _)| *to == hop).collect();
    assert_eq!(forwarded.len(), 1, "{}", crate::security::dump(&out));
    assert_eq!(
        asserted(&forwarded[0].1).as_deref(),
        Some("P-Asserted-Identity: <sip:3000@example.com>")
    );
}
