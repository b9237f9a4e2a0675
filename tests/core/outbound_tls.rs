//! TLS connections sipfork opens itself (issue 16, TLS out), on virtual time with one and two
//! shards: a device registered over UDP whose Contact says `;transport=tls` or is a `sips:`
//! URI, and a next hop configured with `;transport=tls`, are reached over a TLS connection the
//! core asks the engine to open (`Transmit::connect = Some(Tls)`) when a `tls:` listener and
//! `[tls] peer_ca` are configured: `SIP/2.0/TLS` Via, the RFC 5658 double Record-Route naming
//! the TLS listener. Without `peer_ca` a `;transport=tls` Contact is reached over UDP as before
//! and a `sips:` Contact is not rung. A failed connect (the engine's TCP or handshake failure)
//! ends the branch at once; nothing a request names (Request-URI, Route, `maddr`, a REGISTER's
//! Contact) makes the core connect to a third party over TLS.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::outbound::{none_connects, nothing_toward_the_third_party, raw_invite, THIRD};
use crate::transport::{record_routes, top_via};
use sipfork::core::transport::Transport;
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World, DEFAULT_CONFIG};
use sipfork::time::{ms, secs};

/// A directory with a certificate for 127.0.0.1 (`cert.pem`, `key.pem`), made once per test.
pub(crate) fn certificates(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sipfork-core-tls-out-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).unwrap();
    dir
}

/// `shards` shards on UDP 127.0.0.1:5060 and TLS 127.0.0.1:5061, `[tls]` from `dir`, with
/// `peer_ca` (TLS out) when `out`.
pub(crate) fn config(shards: u16, dir: &std::path::Path, out: bool) -> String {
    let peer_ca = if out {
        format!("peer_ca = \"{}\"\n", dir.join("cert.pem").display())
    } else {
        String::new()
    };
    format!(
        "{}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{peer_ca}",
        DEFAULT_CONFIG
            .replace("shards = 1", &format!("shards = {shards}"))
            .replace(
                "listen = \"127.0.0.1:5060\"",
                "listen = [\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]",
            ),
        dir.join("cert.pem").display(),
        dir.join("key.pem").display(),
    )
}

/// A REGISTER over UDP from `addr` for `user` with `contact` as its Contact URI.
pub(crate) fn raw_register(user: &str, addr: SocketAddr, contact: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKreg{user};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1:5060>;tag=r{user}\r\n\
         To: <sip:{user}@127.0.0.1:5060>\r\nCall-ID: reg-{user}@test\r\nCSeq: 1 REGISTER\r\n\
         Contact: <{contact}>\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n"
    )
}

pub(crate) struct Setup {
    pub(crate) w: World,
    pub(crate) caller: PhoneId,
    /// Extension 1001, registered over UDP with a `;transport=tls` Contact.
    pub(crate) tls: PhoneId,
    /// Extension 1002, registered over UDP with a `sips:` Contact.
    pub(crate) sips: PhoneId,
}

pub(crate) fn setup(cfg: &str, shards: u16, seed: u64) -> Setup {
    let mut w = World::new(cfg, shards, seed);
    let caller = w.add_phone("caller", "1000", 5071);
    let tls = w.add_phone("tls-dev", "1001", 5072);
    let sips = w.add_phone("sips-dev", "1002", 5073);
    w.phone(tls).contact_params = ";transport=tls".into();
    w.register(tls, 300);
    let addr = w.phone_ref(sips).addr;
    w.send_raw(
        sips,
        raw_register("1002", addr, &format!("sips:1002@{addr}")).as_bytes(),
    );
    w.run_for(ms(100));
    assert_eq!(w.phone_ref(sips).statuses(), vec![200], "{}", w.dump());
    Setup {
        w,
        caller,
        tls,
        sips,
    }
}

fn check_tls_branch(invite: &[u8]) {
    assert!(
        top_via(invite).starts_with("Via: SIP/2.0/TLS 127.0.0.1:5061;branch="),
        "{}",
        top_via(invite)
    );
    // UDP caller, TLS callee: two Record-Routes (RFC 5658), the top one naming the TLS listener.
    let rr = record_routes(invite);
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(rr[0].contains(":5061;transport=tls;"), "{rr:?}");
    assert!(!rr[1].contains("transport="), "{rr:?}");
}

#[test]
fn tls_and_sips_contacts_are_reached_over_tls_connections_sipfork_opens() {
    let dir = certificates("reach");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 501);
        let (tls, sips) = (s.w.phone_ref(s.tls).addr, s.w.phone_ref(s.sips).addr);
        assert!(s.w.connects.is_empty());
        s.w.behave(s.tls, Behaviour::answer_after(ms(200)));
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(s.w.connects, vec![(tls, Transport::Tls)], "{shards} shards");
        check_tls_branch(&s.w.phone_ref(s.tls).incoming[0].invite);
        assert_eq!(s.w.phone_ref(s.caller).outgoing[call].dialogs.len(), 1);
        // The BYE and a second call take the same connection.
        s.w.hang_up(s.caller, call);
        s.w.run_for(secs(1));
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(s.w.phone_ref(s.tls).incoming.len(), 2, "{}", s.w.dump());
        assert_eq!(s.w.connects.len(), 1, "{:?}", s.w.connects);
        // A sips: Contact: its own TLS connection; a sip: request gets a sip: Request-URI
        // (RFC 5630 §5.3).
        s.w.call(s.caller, "1002");
        s.w.run_for(secs(2));
        assert_eq!(
            s.w.connects,
            vec![(tls, Transport::Tls), (sips, Transport::Tls)],
            "{shards} shards"
        );
        let invite = &s.w.phone_ref(s.sips).incoming[0].invite;
        assert!(invite.starts_with(b"INVITE sip:1002@"), "{}", s.w.dump());
        check_tls_branch(invite);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_peer_ca_a_tls_contact_is_reached_over_udp_and_a_sips_contact_not_at_all() {
    let dir = certificates("nopeer");
    let mut s = setup(&config(1, &dir, false), 1, 502);
    s.w.call(s.caller, "1001");
    s.w.run_for(secs(1));
    let invite = &s.w.phone_ref(s.tls).incoming[0].invite;
    assert!(top_via(invite).starts_with("Via: SIP/2.0/UDP "));
    // The sips: device alone: nobody to ring, 480.
    s.w.call(s.caller, "1002");
    s.w.run_for(secs(1));
    assert!(s.w.connects.is_empty(), "{:?}", s.w.connects);
    assert!(s.w.phone_ref(s.sips).incoming.is_empty());
    assert_eq!(s.w.phone_ref(s.caller).statuses().last(), Some(&480));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_tls_connect_ends_the_branch_at_once() {
    let dir = certificates("fail");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 503);
        let dev = s.w.phone_ref(s.tls).addr;
        // The engine reports a refused connect and a failed handshake alike (flow_failed).
        s.w.connect_refused.push(dev);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert_eq!(s.w.connects, vec![(dev, Transport::Tls)]);
        assert!(s.w.phone_ref(s.tls).incoming.is_empty());
        assert_eq!(
            s.w.phone_ref(s.caller).statuses().last(),
            Some(&500),
            "{shards} shards\n{}",
            s.w.dump()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A world of [`config`] with TLS out whose route `00` goes to a next hop at 127.0.0.1:5090
/// configured with `;transport=tls`: the world, the caller (1000), the next hop (a phone for
/// 0049301234) and its address.
pub(crate) fn tls_hop_world(
    shards: u16,
    dir: &std::path::Path,
    seed: u64,
) -> (World, PhoneId, PhoneId, SocketAddr) {
    let hop: SocketAddr = "127.0.0.1:5090".parse().unwrap();
    let cfg = format!(
        "{}\n[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:{hop};transport=tls\"\n",
        config(shards, dir, true)
    );
    let mut w = World::new(&cfg, shards, seed);
    let caller = w.add_phone("caller", "1000", 5071);
    let trunk = w.add_phone_at("trunk", "0049301234", hop);
    (w, caller, trunk, hop)
}

#[test]
fn a_next_hop_configured_for_tls_is_reached_over_tls() {
    let dir = certificates("hop");
    for shards in [1, 2] {
        let (mut w, caller, trunk, hop) = tls_hop_world(shards, &dir, 504);
        w.call(caller, "0049301234");
        w.run_for(secs(1));
        assert_eq!(w.connects, vec![(hop, Transport::Tls)], "{}", w.dump());
        check_tls_branch(&w.phone_ref(trunk).incoming[0].invite);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- The security rule: TLS out only toward a registered device or a configured next hop. ---

#[test]
fn requests_naming_a_tls_third_party_open_no_connection() {
    let dir = certificates("attack");
    for shards in [1, 2] {
        let mut w = World::new(&config(shards, &dir, true), shards, 505);
        let caller = w.add_phone("caller", "1000", 5071);
        let from = w.phone_ref(caller).addr;
        let contact = format!("Contact: <sips:1000@{THIRD}>\r\n");
        let cases = [
            raw_invite(&format!("sips:1001@{THIRD}"), from, "tls-a", &contact),
            raw_invite(
                &format!("sip:1001@{THIRD};transport=tls"),
                from,
                "tls-b",
                &contact,
            ),
            raw_invite(
                "sip:1001@127.0.0.1:5060",
                from,
                "tls-c",
                &format!("Route: <sips:{THIRD};lr>\r\n{contact}"),
            ),
            raw_invite(
                "sip:1001@127.0.0.1:5060",
                from,
                "tls-d",
                &format!("Route: <sip:{THIRD};transport=tls;lr>\r\n{contact}"),
            ),
            raw_invite(
                "sip:1001@127.0.0.1:5060;transport=tls;maddr=127.0.0.99",
                from,
                "tls-e",
                &contact,
            ),
        ];
        none_connects(&mut w, caller, &cases);

        // A REGISTER from 127.0.0.1:5075 naming the third party in a sips: Contact
        // (`nat = auto`): the connect goes to its sender only.
        let third: SocketAddr = THIRD.parse().unwrap();
        let evil = w.add_phone_behind_nat("evil", "1003", 5075, third);
        let sender = w.phone_ref(evil).addr;
        w.send_raw(
            evil,
            raw_register("1003", sender, &format!("sips:1003@{THIRD}")).as_bytes(),
        );
        w.run_for(ms(100));
        w.call(caller, "1003");
        w.run_for(secs(1));
        assert_eq!(w.connects, vec![(sender, Transport::Tls)], "{}", w.dump());
        nothing_toward_the_third_party(&w);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
