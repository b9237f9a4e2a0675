//! `sips:` and the transport rules left open by issue 16, on virtual time with one and two
//! shards: a `sips:` or `;transport=tls` target whose address has a plain TCP flow open is never
//! sent over it (RFC 3261 §26.2.2 as amended by RFC 5630: TLS on every hop); a UDP caller's
//! final is retransmitted over UDP (Timer G) while sipfork holds a connection to its address
//! (RFC 3261 §18.2.2, §17.2.1); a `sips:` Request-URI is accepted over TLS and forwarded only
//! to `sips:` targets over TLS with a `sips:` Record-Route, else 480 with warn-code 381 (not
//! over TLS) or 380 (no TLS path to a `sips:` target), RFC 5630.

use std::net::SocketAddr;

use crate::outbound_tls::{certificates, config, setup, tls_hop_world};
use crate::transport::{record_routes, top_via};
use sipfork::core::transport::Transport;
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World, DEFAULT_CONFIG};
use sipfork::time::{ms, secs};

/// A REGISTER without Contact (it only asks for the bindings) for `user` from `addr`: sent
/// over a connection, it makes the shard owning `user` see that flow.
fn query_register(user: &str, addr: SocketAddr, transport: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/{transport} {addr};branch=z9hG4bKq{user}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1:5060>;tag=q{user}\r\n\
         To: <sip:{user}@127.0.0.1:5060>\r\nCall-ID: query-{user}@test\r\nCSeq: 1 REGISTER\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The final statuses of each call phone `id` placed.
pub(crate) fn finals(w: &World, id: PhoneId) -> Vec<Vec<u16>> {
    w.phone_ref(id)
        .outgoing
        .iter()
        .map(|o| o.finals())
        .collect()
}

#[test]
fn a_tls_or_sips_contact_is_never_reached_over_a_plain_tcp_flow_open_to_its_address() {
    let dir = certificates("sips-tcpflow");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 601);
        // Both devices (registered over UDP, a `;transport=tls` and a `sips:` Contact) also
        // hold a plain TCP connection to sipfork from the address they registered.
        for (id, user) in [(s.tls, "1001"), (s.sips, "1002")] {
            s.w.connect(id, Transport::Tcp);
            let addr = s.w.phone_ref(id).addr;
            s.w.send_raw(id, query_register(user, addr, "TCP").as_bytes());
        }
        s.w.run_for(ms(100));
        for number in ["1001", "1002"] {
            s.w.call(s.caller, number);
            s.w.run_for(secs(1));
        }
        // Neither is rung over the TCP flow, and no TLS connection can be opened beside it:
        // each was its extension's only device, 480.
        assert!(
            s.w.phone_ref(s.tls).incoming.is_empty(),
            "{shards} shards\n{}",
            s.w.dump()
        );
        assert!(s.w.phone_ref(s.sips).incoming.is_empty(), "{}", s.w.dump());
        assert!(s.w.connects.is_empty(), "{:?}", s.w.connects);
        assert_eq!(
            finals(&s.w, s.caller),
            vec![vec![480], vec![480]],
            "{shards} shards"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_next_hop_configured_for_tls_is_not_reached_over_a_plain_tcp_flow_to_its_address() {
    let dir = certificates("sips-hopflow");
    for shards in [1, 2] {
        let (mut w, caller, trunk, hop) = tls_hop_world(shards, &dir, 602);
        // The next hop connected to sipfork over plain TCP (a REGISTER for the number makes the
        // shard owning it see the flow; it is no extension of ours: 404).
        w.connect(trunk, Transport::Tcp);
        w.send_raw(trunk, query_register("0049301234", hop, "TCP").as_bytes());
        w.run_for(ms(100));
        w.call(caller, "0049301234");
        w.run_for(secs(1));
        assert!(
            w.phone_ref(trunk).incoming.is_empty(),
            "{shards} shards\n{}",
            w.dump()
        );
        assert!(w.connects.is_empty(), "{:?}", w.connects);
        // A transport error (RFC 3261 §8.1.3.1: 503), relayed as 500 (§16.7).
        assert_eq!(
            finals(&w, caller),
            vec![vec![500]],
            "{shards} shards\n{}",
            w.dump()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timer_g_retransmits_a_udp_callers_final_over_udp_while_it_also_has_a_tcp_connection() {
    for shards in [1, 2] {
        let cfg = DEFAULT_CONFIG
            .replace("shards = 1", &format!("shards = {shards}"))
            .replace(
                "listen = \"127.0.0.1:5060\"",
                "listen = [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\"]",
            );
        let mut w = World::new(&cfg, shards, 603);
        let caller = w.add_phone("caller", "1000", 5071);
        let dev = w.add_phone("dev", "1002", 5073);
        w.register(dev, 300);
        w.behave(dev, Behaviour::reject_after(486, ms(100)));
        // The caller holds a TCP connection to sipfork (seen by the shard owning 1002)...
        let me = w.phone_ref(caller).addr;
        w.connect(caller, Transport::Tcp);
        w.send_raw(caller, query_register("1002", me, "TCP").as_bytes());
        w.run_for(ms(100));
        // ...and sends an INVITE over UDP from the same address, never ACKing the 486.
        w.connect(caller, Transport::Udp);
        let invite = format!(
            "INVITE sip:1002@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKnoackg\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=g\r\nTo: <sip:1002@127.0.0.1>\r\n\
             Call-ID: noack-g\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@{me}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let (log, kept) = (w.log.len(), w.kept_udp.len());
        w.send_raw(caller, invite.as_bytes());
        w.run_for(secs(10));
        let to_caller = |line: &str| {
            w.log[log..]
                .iter()
                .filter(|t| t.from == w.proxy && t.to == me && t.line.starts_with(line))
                .count()
        };
        let finals = to_caller("SIP/2.0 486");
        assert!(finals >= 4, "Timer G over UDP: {finals}\n{}", w.dump());
        // Every answer to the caller (its 100 and each copy of the 486) is marked for UDP.
        let marked = w.kept_udp[kept..].iter().filter(|&&a| a == me).count();
        assert_eq!(
            marked,
            to_caller("SIP/2.0"),
            "{shards} shards\n{}",
            w.dump()
        );
    }
}

// --- A `sips:` Request-URI (RFC 5630): TLS on every hop. ---

/// A `sips:` INVITE for `number` (at our domain) from `from`, its Via naming `transport`.
fn sips_invite(number: &str, from: SocketAddr, transport: &str, tag: &str) -> String {
    format!(
        "INVITE sips:{number}@example.com SIP/2.0\r\nVia: SIP/2.0/{transport} {from};branch=z9hG4bKs{tag}\r\n\
         Max-Forwards: 70\r\nFrom: <sips:1000@example.com>;tag=s{tag}\r\nTo: <sips:{number}@example.com>\r\n\
         Call-ID: sips-{tag}@test\r\nCSeq: 1 INVITE\r\nContact: <sips:1000@{from}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The last message phone `id` got that `wanted` accepts, as text.
fn last_received(w: &World, id: PhoneId, wanted: impl Fn(&str) -> bool) -> Option<String> {
    w.phone_ref(id)
        .inbox
        .iter()
        .rev()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .find(|t| wanted(t))
}

/// The last final response phone `id` got that contains `row`.
fn final_for(w: &World, id: PhoneId, row: &str) -> String {
    last_received(w, id, |t| {
        t.starts_with("SIP/2.0 ") && !t.starts_with("SIP/2.0 1") && t.contains(row)
    })
    .unwrap_or_else(|| panic!("no final with {row}\n{}", w.dump()))
}

/// The final answer phone `id` got to the INVITE of Call-ID `sips-{tag}@test`: its status and
/// its Warning row.
fn answer(w: &World, id: PhoneId, tag: &str) -> (u16, String) {
    let text = final_for(w, id, &format!("Call-ID: sips-{tag}@test"));
    let status = text[8..11].parse().unwrap();
    let warning = text
        .lines()
        .find(|l| l.starts_with("Warning:"))
        .unwrap_or_default()
        .to_string();
    (status, warning)
}

#[test]
fn a_sips_request_over_tls_reaches_a_sips_contact_over_tls_with_a_sips_record_route() {
    let dir = certificates("sips-reach");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 604);
        let (me, dev) = (s.w.phone_ref(s.caller).addr, s.w.phone_ref(s.sips).addr);
        s.w.connect(s.caller, Transport::Tls);
        s.w.send_raw(s.caller, sips_invite("1002", me, "TLS", "ok").as_bytes());
        s.w.run_for(secs(1));
        assert_eq!(s.w.connects, vec![(dev, Transport::Tls)], "{}", s.w.dump());
        let invite = &s.w.phone_ref(s.sips).incoming[0].invite;
        assert!(invite.starts_with(b"INVITE sips:1002@"), "{}", s.w.dump());
        assert!(
            top_via(invite).starts_with("Via: SIP/2.0/TLS 127.0.0.1:5061;branch="),
            "{}",
            top_via(invite)
        );
        // TLS on both sides: one entry, a sips: URI naming the TLS listener.
        let rr = record_routes(invite);
        assert_eq!(rr.len(), 1, "{rr:?}");
        assert!(rr[0].starts_with("<sips:127.0.0.1:5061;lr;"), "{rr:?}");
        assert!(!rr[0].contains("transport="), "{rr:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sips_request_naming_our_tls_address_as_host_is_ours() {
    let dir = certificates("sips-host");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 610);
        let (me, dev) = (s.w.phone_ref(s.caller).addr, s.w.phone_ref(s.sips).addr);
        s.w.connect(s.caller, Transport::Tls);
        let invite = sips_invite("1002", me, "TLS", "host").replacen(
            "INVITE sips:1002@example.com ",
            "INVITE sips:1002@127.0.0.1:5061 ",
            1,
        );
        s.w.send_raw(s.caller, invite.as_bytes());
        s.w.run_for(secs(1));
        assert_eq!(s.w.connects, vec![(dev, Transport::Tls)], "{}", s.w.dump());
        assert_eq!(s.w.phone_ref(s.sips).incoming.len(), 1, "{}", s.w.dump());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sips_request_not_over_tls_gets_480_sips_required() {
    let dir = certificates("sips-plain");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 605);
        let me = s.w.phone_ref(s.caller).addr;
        s.w.send_raw(s.caller, sips_invite("1002", me, "UDP", "udp").as_bytes());
        s.w.run_for(secs(1));
        s.w.connect(s.caller, Transport::Tcp);
        s.w.send_raw(s.caller, sips_invite("1002", me, "TCP", "tcp").as_bytes());
        s.w.run_for(secs(1));
        for tag in ["udp", "tcp"] {
            assert_eq!(
                answer(&s.w, s.caller, tag),
                (480, "Warning: 381 127.0.0.1:5061 \"SIPS Required\"".into()),
                "{shards} shards, over {tag}"
            );
        }
        assert!(s.w.phone_ref(s.sips).incoming.is_empty());
        assert!(s.w.connects.is_empty(), "{:?}", s.w.connects);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sips_request_without_a_tls_path_to_a_sips_contact_gets_480_sips_not_allowed() {
    let dir = certificates("sips-none");
    for shards in [1, 2] {
        // With TLS out: 1001's Contact is a sip: URI (`;transport=tls`), no target of a sips:
        // request (RFC 5630 §5.3). Without `peer_ca`: 1002's sips: Contact cannot be reached.
        for (out, number) in [(true, "1001"), (false, "1002")] {
            let mut s = setup(&config(shards, &dir, out), shards, 606);
            let me = s.w.phone_ref(s.caller).addr;
            s.w.connect(s.caller, Transport::Tls);
            s.w.send_raw(s.caller, sips_invite(number, me, "TLS", number).as_bytes());
            s.w.run_for(secs(1));
            assert_eq!(
                answer(&s.w, s.caller, number),
                (
                    480,
                    "Warning: 380 127.0.0.1:5061 \"SIPS Not Allowed\"".into()
                ),
                "{shards} shards, {number}"
            );
            assert!(s.w.phone_ref(s.tls).incoming.is_empty());
            assert!(s.w.phone_ref(s.sips).incoming.is_empty());
            assert!(s.w.connects.is_empty(), "{:?}", s.w.connects);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sips_request_goes_to_a_tls_next_hop_and_not_to_a_udp_one() {
    let dir = certificates("sips-hop");
    for shards in [1, 2] {
        let (tls_hop, udp_hop): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5090".parse().unwrap(),
            "127.0.0.1:5091".parse().unwrap(),
        );
        let cfg = format!(
            "{}\n[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:{tls_hop};transport=tls\"\n\
             [[routes]]\nprefix = \"01\"\nnext_hop = \"sip:{udp_hop}\"\n",
            config(shards, &dir, true)
        );
        let mut w = World::new(&cfg, shards, 607);
        let caller = w.add_phone("caller", "1000", 5071);
        let tls = w.add_phone_at("tls-hop", "0049301234", tls_hop);
        let udp = w.add_phone_at("udp-hop", "0149301234", udp_hop);
        let me = w.phone_ref(caller).addr;
        w.connect(caller, Transport::Tls);
        w.send_raw(
            caller,
            sips_invite("0049301234", me, "TLS", "hop").as_bytes(),
        );
        w.send_raw(
            caller,
            sips_invite("0149301234", me, "TLS", "udphop").as_bytes(),
        );
        w.run_for(secs(1));
        assert_eq!(w.connects, vec![(tls_hop, Transport::Tls)], "{}", w.dump());
        // The Request-URI as it came: sips:.
        let invite = &w.phone_ref(tls).incoming[0].invite;
        assert!(
            invite.starts_with(b"INVITE sips:0049301234@example.com "),
            "{}",
            w.dump()
        );
        assert!(record_routes(invite)[0].starts_with("<sips:127.0.0.1:5061;lr;"));
        assert!(w.phone_ref(udp).incoming.is_empty());
        assert_eq!(answer(&w, caller, "udphop").0, 480);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A header row of `text` starting with `name`, without it.
fn row<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn a_sips_dialogs_requests_never_reach_a_leg_whose_tls_connection_closed_in_cleartext() {
    let dir = certificates("sips-dialog");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 611);
        let (me, dev) = (s.w.phone_ref(s.caller).addr, s.w.phone_ref(s.sips).addr);
        s.w.behave(s.sips, Behaviour::answer_after(ms(100)));
        s.w.connect(s.caller, Transport::Tls);
        s.w.send_raw(s.caller, sips_invite("1002", me, "TLS", "dlg").as_bytes());
        s.w.run_for(secs(1));
        assert_eq!(s.w.connects, vec![(dev, Transport::Tls)], "{}", s.w.dump());
        let ok = final_for(&s.w, s.caller, "CSeq: 1 INVITE");
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        let (rr, to) = (row(&ok, "Record-Route: "), row(&ok, "To: "));
        // The device's TLS connection closes: sipfork would reach it over UDP from now on.
        s.w.close_flow(s.sips);
        let log = s.w.log.len();
        let in_dialog = |method: &str, cseq: u32| {
            format!(
                "{method} sips:1002@{dev} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bKd{method}\r\n\
                 Max-Forwards: 70\r\nRoute: {rr}\r\nFrom: <sips:1000@example.com>;tag=sdlg\r\n\
                 To: {to}\r\nCall-ID: sips-dlg@test\r\nCSeq: {cseq} {method}\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        };
        s.w.send_raw(s.caller, in_dialog("ACK", 1).as_bytes());
        s.w.send_raw(s.caller, in_dialog("BYE", 2).as_bytes());
        s.w.run_for(secs(1));
        let leaked: Vec<_> = s.w.log[log..]
            .iter()
            .filter(|t| t.from == s.w.proxy && t.to == dev)
            .map(|t| t.line.clone())
            .collect();
        assert!(
            leaked.is_empty(),
            "{shards} shards: {leaked:?}\n{}",
            s.w.dump()
        );
        // The BYE is answered: 480, no TLS path (RFC 5630 §5.3).
        let bye = final_for(&s.w, s.caller, "CSeq: 2 BYE");
        assert!(bye.starts_with("SIP/2.0 480 "), "{bye}");
        assert_eq!(
            row(&bye, "Warning: "),
            "380 127.0.0.1:5061 \"SIPS Not Allowed\""
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- Follow-me external targets take their route's configured transport. ---

/// Extension 1000 follows to an external number whose route's next hop is `hop` with
/// `params`, over a UDP and TCP listener.
fn followme_config(shards: u16, hop: SocketAddr, params: &str) -> String {
    format!(
        "[server]\nlisten = [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\"]\ndomain = \"example.com\"\n\
         shards = {shards}\n[registrar]\nmin_expires = 10\n[auth]\nmode = \"none\"\n\
         [[tenants]]\nname = \"fwd\"\nforward_external = true\n\
         [[extensions]]\nnumbers = \"1000-1099\"\ntenant = \"fwd\"\n\
         [[routes]]\nprefix = \"00\"\nnext_hop = \"sip:{hop}{params}\"\n\
         [[followme]]\nextension = \"1000\"\nstages = [{{ targets = [\"0044201234567\"], ring = 5 }}]\n"
    )
}

#[test]
fn a_followme_external_target_is_reached_over_its_routes_transport() {
    for shards in [1, 2] {
        let hop: SocketAddr = "127.0.0.1:5099".parse().unwrap();
        for (params, want) in [(";transport=tcp", Some(Transport::Tcp)), ("", None)] {
            let mut w = World::new(&followme_config(shards, hop, params), shards, 608);
            let caller = w.add_phone("caller", "1001", 5071);
            let external = w.add_phone_at("external", "0044201234567", hop);
            // The caller's Request-URI asks for TLS: only the configuration chooses.
            let me = w.phone_ref(caller).addr;
            w.send_raw(
                caller,
                crate::outbound::raw_invite("sip:1000@example.com;transport=tls", me, "fm", "")
                    .as_bytes(),
            );
            w.run_for(secs(1));
            let invite = &w.phone_ref(external).incoming[0].invite;
            match want {
                Some(t) => {
                    assert_eq!(w.connects, vec![(hop, t)], "{shards} shards\n{}", w.dump());
                    assert!(top_via(invite).starts_with("Via: SIP/2.0/TCP "));
                }
                None => {
                    assert!(w.connects.is_empty(), "{:?}", w.connects);
                    assert!(top_via(invite).starts_with("Via: SIP/2.0/UDP "));
                }
            }
        }
    }
}

// --- Trunks reached over TCP or TLS (`trunk = "sip:IP:port;transport=tcp|tls"`). ---

/// [`config`] with TLS out and a TCP listener too, and three trunks: 3000 over TLS, 3001 over
/// TCP, 3002 over UDP (a bare address).
fn trunk_config(shards: u16, dir: &std::path::Path) -> String {
    format!(
        "{}\n[[extensions]]\nnumbers = \"3000\"\ntrunk = \"sip:127.0.0.1:5090;transport=tls\"\n\
         [[extensions]]\nnumbers = \"3001\"\ntrunk = [\"sip:127.0.0.1:5092;transport=tcp\"]\n\
         [[extensions]]\nnumbers = \"3002\"\ntrunk = \"127.0.0.1:5094\"\n",
        config(shards, dir, true).replace(
            "\"tls:127.0.0.1:5061\"]",
            "\"tls:127.0.0.1:5061\", \"tcp:127.0.0.1:5060\"]"
        )
    )
}

#[test]
fn trunks_are_reached_over_their_configured_transport_only() {
    let dir = certificates("sips-trunks");
    for shards in [1, 2] {
        let mut w = World::new(&trunk_config(shards, &dir), shards, 609);
        let caller = w.add_phone("caller", "1000", 5071);
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let tls = w.add_phone_at("tls-pbx", "3000", addr(5090));
        let tcp = w.add_phone_at("tcp-pbx", "3001", addr(5092));
        let udp = w.add_phone_at("udp-pbx", "3002", addr(5094));
        let me = w.phone_ref(caller).addr;
        // Request-URIs naming other transports and maddr: only the configuration chooses.
        let cases = [
            ("sip:3000@example.com;transport=udp", "t0"),
            ("sip:3001@example.com;transport=tls;maddr=127.0.0.99", "t1"),
            ("sip:3002@example.com;transport=tcp", "t2"),
        ];
        for (ruri, tag) in cases {
            let invite = crate::outbound::raw_invite(ruri, me, tag, "");
            w.send_raw(caller, invite.as_bytes());
        }
        w.run_for(secs(1));
        let mut connects = w.connects.clone();
        connects.sort_by_key(|(a, _)| *a);
        assert_eq!(
            connects,
            vec![(addr(5090), Transport::Tls), (addr(5092), Transport::Tcp)],
            "{shards} shards\n{}",
            w.dump()
        );
        for (pbx, via) in [(tls, "TLS"), (tcp, "TCP"), (udp, "UDP")] {
            let invite = &w.phone_ref(pbx).incoming[0].invite;
            let want = format!("Via: SIP/2.0/{via} ");
            assert!(top_via(invite).starts_with(&want), "{}", top_via(invite));
        }
        crate::outbound::nothing_toward_the_third_party(&w);
        // A sips: request over TLS: the TLS trunk, with a sips: Request-URI; not the UDP one.
        w.connect(caller, Transport::Tls);
        w.send_raw(caller, sips_invite("3000", me, "TLS", "trunk").as_bytes());
        w.send_raw(
            caller,
            sips_invite("3002", me, "TLS", "udptrunk").as_bytes(),
        );
        w.run_for(secs(1));
        let invite = &w.phone_ref(tls).incoming[1].invite;
        assert!(
            invite.starts_with(b"INVITE sips:3000@127.0.0.1:5090 "),
            "{}",
            w.dump()
        );
        assert_eq!(answer(&w, caller, "udptrunk").0, 480);
        assert_eq!(w.phone_ref(udp).incoming.len(), 1);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_trunk_configured_over_tls_or_tcp_is_known_only_over_that_transport() {
    let dir = certificates("sips-trunkfrom");
    for shards in [1, 2] {
        // Digest: a trunk is authenticated by its address, a stranger is challenged.
        let cfg = trunk_config(shards, &dir)
            .replace(
                "mode = \"none\"",
                "mode = \"digest\"\nrealm = \"example.com\"",
            )
            .replace(
                "numbers = \"1000-1099\"",
                "numbers = \"1000-1099\"\npassword = \"pw-{number}\"",
            );
        let mut w = World::new(&cfg, shards, 612);
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let tls = w.add_phone_at("tls-pbx", "3000", addr(5090));
        let tcp = w.add_phone_at("tcp-pbx", "3001", addr(5092));
        let udp = w.add_phone_at("udp-pbx", "3002", addr(5094));
        let status = |w: &World, id: PhoneId, tag: &str| {
            final_for(w, id, &format!("Call-ID: raw-{tag}@test"))[8..11].to_string()
        };
        let invite = |from: SocketAddr, tag: &str, via: &str| {
            crate::outbound::raw_invite("sip:1001@example.com", from, tag, "").replacen(
                "SIP/2.0/UDP",
                &format!("SIP/2.0/{via}"),
                1,
            )
        };
        // Over UDP from the TLS and TCP trunks' addresses: strangers, challenged. The UDP
        // trunk is one over UDP and over a connection.
        w.send_raw(tls, invite(addr(5090), "tlsudp", "UDP").as_bytes());
        w.send_raw(tcp, invite(addr(5092), "tcpudp", "UDP").as_bytes());
        w.send_raw(udp, invite(addr(5094), "udpudp", "UDP").as_bytes());
        w.run_for(secs(1));
        assert_eq!(status(&w, tls, "tlsudp"), "407", "{shards} shards");
        assert_eq!(status(&w, tcp, "tcpudp"), "407", "{shards} shards");
        // 1001 is not registered: a trunk's call gets that far.
        assert_eq!(status(&w, udp, "udpudp"), "480", "{shards} shards");
        // Over their configured transports: trunks.
        for (id, a, t, via) in [
            (tls, addr(5090), Transport::Tls, "TLS"),
            (tcp, addr(5092), Transport::Tcp, "TCP"),
            (udp, addr(5094), Transport::Tcp, "TCP"),
        ] {
            w.connect(id, t);
            let tag = format!("{via}{}", a.port());
            w.send_raw(id, invite(a, &tag, via).as_bytes());
            w.run_for(secs(1));
            assert_eq!(status(&w, id, &tag), "480", "{shards} shards, {a}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_trunk_over_tls_needs_peer_ca_and_one_over_tcp_a_tcp_listener() {
    let dir = certificates("sips-trunkcfg");
    let tls_trunk =
        "[[extensions]]\nnumbers = \"3000\"\ntrunk = \"sip:127.0.0.1:5090;transport=tls\"\n";
    let tcp_trunk =
        "[[extensions]]\nnumbers = \"3000\"\ntrunk = \"sip:127.0.0.1:5090;transport=tcp\"\n";
    for (base, trunk) in [
        (config(1, &dir, false), tls_trunk),
        (DEFAULT_CONFIG.to_string(), tls_trunk),
        (DEFAULT_CONFIG.to_string(), tcp_trunk),
    ] {
        let err = match sipfork::config::Config::from_toml(&format!("{base}\n{trunk}")) {
            Ok(_) => panic!("accepted: {trunk}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("extensions[1].trunk"), "{err}");
        assert!(err.contains("needs a t"), "{err}");
    }
    let ok = format!("{}\n{tls_trunk}", config(1, &dir, true));
    assert!(sipfork::config::Config::from_toml(&ok).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_route_next_hop_over_tls_or_tcp_needs_what_a_trunk_over_it_needs() {
    let dir = certificates("sips-routecfg");
    let route = |t: &str| {
        format!("[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:127.0.0.1:5090;transport={t}\"\n")
    };
    // [tls] with peer_ca but no tls: listener; no peer_ca; no [tls]; no tcp: listener.
    let no_tls_listener = config(1, &dir, true).replace(
        "[\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]",
        "[\"udp:127.0.0.1:5060\"]",
    );
    for (base, t) in [
        (no_tls_listener, "tls"),
        (config(1, &dir, false), "tls"),
        (DEFAULT_CONFIG.to_string(), "tls"),
        (DEFAULT_CONFIG.to_string(), "tcp"),
    ] {
        let err = match sipfork::config::Config::from_toml(&format!("{base}\n{}", route(t))) {
            Ok(_) => panic!("accepted: {t}\n{base}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("routes[0].next_hop"), "{err}");
        assert!(err.contains(&format!("transport={t} needs a")), "{err}");
    }
    let ok = format!("{}\n{}", config(1, &dir, true), route("tls"));
    assert!(sipfork::config::Config::from_toml(&ok).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- sipfork's own requests inside a `sips:` call (RFC 5630: TLS on every hop). ---

/// The sum of `sipfork_proxy_events_total{reason}` over every shard.
fn proxy_event(w: &World, reason: &str) -> u64 {
    w.cores()
        .iter()
        .map(|core| {
            let mut sink = sipfork::core::metrics::MetricSink::default();
            core.export_metrics(&mut sink);
            sink.samples
                .iter()
                .filter(|s| {
                    s.name == "sipfork_proxy_events_total"
                        && s.labels.iter().any(|(k, v)| *k == "reason" && v == reason)
                })
                .map(|s| s.value)
                .sum::<u64>()
        })
        .sum()
}

/// What sipfork sent to `to` from log entry `since` on: each message's first line.
fn sent_to(w: &World, since: usize, to: SocketAddr) -> Vec<String> {
    w.log[since..]
        .iter()
        .filter(|t| t.from == w.proxy && t.to == to)
        .map(|t| t.line.clone())
        .collect()
}

#[test]
fn the_max_call_bye_of_a_sips_dialog_never_reaches_a_leg_whose_tls_connection_closed() {
    let dir = certificates("sips-maxbye");
    for shards in [1, 2] {
        let cfg = format!(
            "{}[policy]\nmax_call_seconds = 60\n",
            config(shards, &dir, true)
        );
        let mut s = setup(&cfg, shards, 613);
        let (me, dev) = (s.w.phone_ref(s.caller).addr, s.w.phone_ref(s.sips).addr);
        s.w.behave(s.sips, Behaviour::answer_after(ms(100)));
        s.w.connect(s.caller, Transport::Tls);
        s.w.send_raw(
            s.caller,
            sips_invite("1002", me, "TLS", "maxbye").as_bytes(),
        );
        s.w.run_for(secs(1));
        let ok = final_for(&s.w, s.caller, "CSeq: 1 INVITE");
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        // The device's TLS connection closes; the caller's stays.
        s.w.close_flow(s.sips);
        let (log, errors) = (s.w.log.len(), proxy_event(&s.w, "branch_transport_error"));
        s.w.run_for(secs(61));
        // The caller (still over TLS) gets its BYE; the device nothing in cleartext.
        let to_caller = sent_to(&s.w, log, me);
        assert!(
            to_caller.iter().any(|l| l.starts_with("BYE sips:1000@")),
            "{shards} shards: {to_caller:?}\n{}",
            s.w.dump()
        );
        let leaked = sent_to(&s.w, log, dev);
        assert!(
            leaked.is_empty(),
            "{shards} shards: {leaked:?}\n{}",
            s.w.dump()
        );
        // Counted, and the dialog ended all the same.
        assert_eq!(
            proxy_event(&s.w, "branch_transport_error"),
            errors + 1,
            "{shards} shards"
        );
        assert_eq!(proxy_event(&s.w, "dialog_expired"), 1, "{shards} shards");
        let dialogs: u64 = s.w.cores().iter().map(|c| c.proxy_dialogs()).sum();
        assert_eq!(dialogs, 0, "{shards} shards");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_late_2xx_of_a_sips_call_whose_tls_connection_closed_gets_no_cleartext_ack_cancel_or_bye() {
    let dir = certificates("sips-teardown");
    for shards in [1, 2] {
        let cfg = config(shards, &dir, true).replace(
            "numbers = \"1000-1099\"",
            "numbers = \"1000-1099\"\nsingle_answer = true",
        );
        let mut s = setup(&cfg, shards, 614);
        // A second device of 1002 with a sips: Contact.
        let late = s.w.add_phone("sips-dev2", "1002", 5074);
        let late_addr = s.w.phone_ref(late).addr;
        register_sips(&mut s.w, late, "1002", "UDP", "");
        // 1002's first device answers; the second a millisecond later, after its TLS
        // connection closed: its 2xx comes over UDP and is torn down. It never rang, so its
        // CANCEL was still waiting for a provisional (one that may not be sent would end the
        // branch at once, and a later 2xx would find no transaction).
        s.w.behave(s.sips, Behaviour::answer_after(ms(100)));
        s.w.behave(
            late,
            Behaviour {
                ring_after: None,
                ..Behaviour::answer_after(ms(101))
            },
        );
        let me = s.w.phone_ref(s.caller).addr;
        s.w.connect(s.caller, Transport::Tls);
        s.w.send_raw(s.caller, sips_invite("1002", me, "TLS", "late").as_bytes());
        s.w.run_for(ms(50));
        assert_eq!(s.w.phone_ref(late).incoming.len(), 1, "{}", s.w.dump());
        s.w.close_flow(late);
        let (log, torn) = (s.w.log.len(), proxy_event(&s.w, "late_answer_torn_down"));
        s.w.run_for(secs(2));
        let ok = final_for(&s.w, s.caller, "CSeq: 1 INVITE");
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        assert_eq!(
            s.w.phone_ref(late).incoming[0].final_status,
            Some(200),
            "{}",
            s.w.dump()
        );
        assert_eq!(
            proxy_event(&s.w, "late_answer_torn_down"),
            torn + 1,
            "{shards} shards\n{}",
            s.w.dump()
        );
        let leaked = sent_to(&s.w, log, late_addr);
        assert!(
            leaked.is_empty(),
            "{shards} shards: {leaked:?}\n{}",
            s.w.dump()
        );
        // The winner's dialog is untouched.
        assert!(!s.w.phone_ref(s.sips).incoming[0].bye, "{}", s.w.dump());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Phone `id` registers `user` with Contact `contact` (`q` its q-value, if any), its REGISTER's
/// Via naming `via` and its Call-ID its own, and gets 200.
fn register_contact(w: &mut World, id: PhoneId, user: &str, contact: &str, via: &str, q: &str) {
    let addr = w.phone_ref(id).addr;
    let q = if q.is_empty() {
        String::new()
    } else {
        format!(";q={q}")
    };
    let register = crate::outbound_tls::raw_register(user, addr, contact)
        .replacen("SIP/2.0/UDP", &format!("SIP/2.0/{via}"), 1)
        .replace(
            &format!("reg-{user}@test"),
            &format!("reg-{user}-{}@test", addr.port()),
        )
        .replace(">\r\nExpires", &format!(">{q}\r\nExpires"));
    w.send_raw(id, register.as_bytes());
    w.run_for(ms(50));
    assert_eq!(w.phone_ref(id).statuses(), vec![200], "{}", w.dump());
}

/// [`register_contact`] with the phone's own `sips:` URI as Contact.
fn register_sips(w: &mut World, id: PhoneId, user: &str, via: &str, q: &str) {
    let contact = format!("sips:{user}@{}", w.phone_ref(id).addr);
    register_contact(w, id, user, &contact, via, q);
}

/// 1002 rings in q-groups: a silent device first, then three with `sips:` Contacts, one of
/// which lost its TLS connection and one whose address opened a plain TCP one meanwhile. A
/// `sips:` call (`scheme`) or a `sip:` one: either way the second group rings only the device
/// still reached over TLS (RFC 5630 §5.3: a `sips:` target of a `sip:` request too), never one
/// over UDP in cleartext.
fn later_q_group_rings_only_tls(scheme: &str, seed: u64) {
    let dir = certificates(&format!("{scheme}-qgroups"));
    for shards in [1, 2] {
        let cfg = config(shards, &dir, true).replace(
            "numbers = \"1000-1099\"",
            "numbers = \"1000-1099\"\nfork = \"q-groups\"\ngroup_timeout = 2",
        );
        let mut w = World::new(&cfg, shards, seed);
        let caller = w.add_phone("caller", "1000", 5071);
        // q=1.0: a device reached over a TLS connection sipfork opens; it never answers.
        let first = w.add_phone("first", "1002", 5080);
        // q=0.5: one registered over its own TLS connection, which closes while the first
        // group rings (reached only over UDP then); one registered over UDP whose address
        // opens a plain TCP connection meanwhile (the one connection per address is TCP); one
        // reached over a TLS connection sipfork opens.
        let closed = w.add_phone("closed", "1002", 5081);
        let tcp = w.add_phone("tcp", "1002", 5082);
        let tls = w.add_phone("tls", "1002", 5083);
        w.behave(first, Behaviour::silent());
        w.behave(tls, Behaviour::answer_after(ms(100)));
        w.connect(closed, Transport::Tls);
        for (id, via, q) in [
            (first, "UDP", "1.0"),
            (closed, "TLS", "0.5"),
            (tcp, "UDP", "0.5"),
            (tls, "UDP", "0.5"),
        ] {
            register_sips(&mut w, id, "1002", via, q);
        }
        let me = w.phone_ref(caller).addr;
        w.connect(caller, Transport::Tls);
        let invite = sips_invite("1002", me, "TLS", "qg").replacen(
            "INVITE sips:",
            &format!("INVITE {scheme}:"),
            1,
        );
        w.send_raw(caller, invite.as_bytes());
        w.run_for(ms(500));
        // The first group only: the q=1.0 device rings.
        assert_eq!(w.phone_ref(first).incoming.len(), 1, "{}", w.dump());
        for id in [closed, tcp, tls] {
            assert!(w.phone_ref(id).incoming.is_empty(), "{}", w.dump());
        }
        w.close_flow(closed);
        let tcp_addr = w.phone_ref(tcp).addr;
        w.connect(tcp, Transport::Tcp);
        w.send_raw(tcp, query_register("1002", tcp_addr, "TCP").as_bytes());
        let log = w.log.len();
        w.run_for(secs(3));
        // The second group: only the device still reached over TLS gets the INVITE, and
        // answers the call.
        assert_eq!(w.phone_ref(tls).incoming.len(), 1, "{}", w.dump());
        for id in [closed, tcp] {
            let addr = w.phone_ref(id).addr;
            let sent: Vec<_> = sent_to(&w, log, addr)
                .into_iter()
                .filter(|l| l.starts_with("INVITE"))
                .collect();
            assert!(
                sent.is_empty() && w.phone_ref(id).incoming.is_empty(),
                "{scheme}, {shards} shards: {sent:?}\n{}",
                w.dump()
            );
        }
        let ok = final_for(&w, caller, "CSeq: 1 INVITE");
        assert!(
            ok.starts_with("SIP/2.0 200"),
            "{scheme}, {shards} shards: {ok}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_later_q_group_of_a_sips_call_rings_only_the_devices_still_reached_over_tls() {
    later_q_group_rings_only_tls("sips", 615);
}

#[test]
fn a_later_q_group_of_a_sip_call_never_reaches_a_sips_contact_whose_tls_connection_closed() {
    later_q_group_rings_only_tls("sip", 623);
}

#[test]
fn a_sip_contact_reached_over_tls_is_no_target_of_a_sips_request_only_a_sips_one_is() {
    let dir = certificates("sips-sipcontact");
    for shards in [1, 2] {
        // 1002 rings its devices; 1003 follows me to its own devices first.
        let cfg = format!(
            "{}[[followme]]\nextension = \"1003\"\nstages = [{{ targets = [\"self\"], ring = 5 }}]\n",
            config(shards, &dir, true)
        );
        let mut w = World::new(&cfg, shards, 616);
        let caller = w.add_phone("caller", "1000", 5071);
        let mut phones = Vec::new();
        for (number, port) in [("1002", 5080), ("1003", 5090)] {
            // A sip: Contact registered over its own TLS connection, and one asking for TLS;
            // a sips: Contact registered over UDP, reached over a TLS connection sipfork opens.
            let over_tls = w.add_phone("sip-over-tls", number, port);
            let wants_tls = w.add_phone("sip-transport-tls", number, port + 1);
            let sips = w.add_phone("sips", number, port + 2);
            w.connect(over_tls, Transport::Tls);
            let contact = |w: &World, id: PhoneId, scheme: &str, params: &str| {
                format!("{scheme}:{number}@{}{params}", w.phone_ref(id).addr)
            };
            for (id, via, uri) in [
                (over_tls, "TLS", contact(&w, over_tls, "sip", "")),
                (
                    wants_tls,
                    "UDP",
                    contact(&w, wants_tls, "sip", ";transport=tls"),
                ),
                (sips, "UDP", contact(&w, sips, "sips", "")),
            ] {
                register_contact(&mut w, id, number, &uri, via, "");
            }
            phones.push((number, over_tls, wants_tls, sips));
        }
        let me = w.phone_ref(caller).addr;
        w.connect(caller, Transport::Tls);
        for &(number, over_tls, wants_tls, sips) in &phones {
            // A sips: request: the sips: Contact only.
            let tag = format!("only{number}");
            w.send_raw(caller, sips_invite(number, me, "TLS", &tag).as_bytes());
            w.run_for(ms(500));
            assert_eq!(w.phone_ref(sips).incoming.len(), 1, "{}", w.dump());
            let invite = &w.phone_ref(sips).incoming[0].invite;
            assert!(invite.starts_with(b"INVITE sips:"), "{}", w.dump());
            for id in [over_tls, wants_tls] {
                assert!(
                    w.phone_ref(id).incoming.is_empty(),
                    "{shards} shards, {number}\n{}",
                    w.dump()
                );
            }
            // A sip: request over the same connection rings all three: the sip: Contacts are
            // reachable over TLS, just not for a sips: request.
            let tag = format!("all{number}");
            let invite =
                sips_invite(number, me, "TLS", &tag).replacen("INVITE sips:", "INVITE sip:", 1);
            w.send_raw(caller, invite.as_bytes());
            w.run_for(ms(500));
            for id in [over_tls, wants_tls, sips] {
                assert!(
                    !w.phone_ref(id).incoming.is_empty(),
                    "{shards} shards, {number}\n{}",
                    w.dump()
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sips_contact_registered_over_wss_is_a_target_of_a_sips_request_and_over_ws_it_is_not() {
    let dir = certificates("sips-wss");
    for shards in [1, 2] {
        let cfg = config(shards, &dir, true).replace(
            "\"tls:127.0.0.1:5061\"]",
            "\"tls:127.0.0.1:5061\", \"ws:127.0.0.2:8080\", \"wss:127.0.0.2:8443\"]",
        );
        let mut w = World::new(&cfg, shards, 617);
        let caller = w.add_phone("caller", "1000", 5071);
        // Browsers (RFC 7118 §5.2: a `.invalid` host) with sips: Contacts: 1004 over WSS,
        // 1005 over WS.
        let wss = w.add_phone("wss-browser", "1004", 50_124);
        let ws = w.add_phone("ws-browser", "1005", 50_125);
        for (id, number, t, via) in [
            (wss, "1004", Transport::Wss, "WSS"),
            (ws, "1005", Transport::Ws, "WS"),
        ] {
            w.connect(id, t);
            let contact = format!("sips:{number}@df7jal23ls0d.invalid;transport=ws");
            register_contact(&mut w, id, number, &contact, via, "");
        }
        let me = w.phone_ref(caller).addr;
        w.connect(caller, Transport::Tls);
        w.send_raw(caller, sips_invite("1004", me, "TLS", "wss").as_bytes());
        w.send_raw(caller, sips_invite("1005", me, "TLS", "ws").as_bytes());
        w.run_for(ms(500));
        // WSS is TLS: rung over its WebSocket, with a sips: Request-URI.
        assert_eq!(w.phone_ref(wss).incoming.len(), 1, "{}", w.dump());
        let invite = &w.phone_ref(wss).incoming[0].invite;
        assert!(invite.starts_with(b"INVITE sips:1004@"), "{}", w.dump());
        assert!(
            top_via(invite).starts_with("Via: SIP/2.0/WSS 127.0.0.2:8443;"),
            "{}",
            top_via(invite)
        );
        // WS is not: never rung, 480 with warn-code 380.
        assert!(w.phone_ref(ws).incoming.is_empty(), "{}", w.dump());
        assert_eq!(
            answer(&w, caller, "ws"),
            (
                480,
                "Warning: 380 127.0.0.1:5061 \"SIPS Not Allowed\"".into()
            ),
            "{shards} shards"
        );
        assert!(w.connects.is_empty(), "{:?}", w.connects);
        // A sips: request from the WSS browser arrived over TLS (380: no TLS path to 1005);
        // from the WS one it did not (381).
        for (id, from, tag, code) in [(wss, "1004", "fromwss", 380), (ws, "1005", "fromws", 381)] {
            let addr = w.phone_ref(id).addr;
            let via = if id == wss { "WSS" } else { "WS" };
            let invite =
                sips_invite("1005", addr, via, tag).replace("sips:1000@", &format!("sips:{from}@"));
            w.send_raw(id, invite.as_bytes());
            w.run_for(ms(500));
            let (status, warning) = answer(&w, id, tag);
            assert_eq!(status, 480, "{shards} shards, {tag}");
            assert!(
                warning.starts_with(&format!("Warning: {code} ")),
                "{warning}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- A `sip:` request to a device registered with a `sips:` Contact (RFC 5630 §5.3). ---

#[test]
fn a_sip_request_to_a_sips_contact_goes_over_tls_with_a_sip_request_uri() {
    let dir = certificates("sips-sipreq");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 618);
        // A second device of 1002 registered over its own TLS connection with a sips: Contact.
        let own = s.w.add_phone("sips-own-tls", "1002", 5074);
        let own_addr = s.w.phone_ref(own).addr;
        s.w.connect(own, Transport::Tls);
        register_sips(&mut s.w, own, "1002", "TLS", "");
        // A plain sip: call from a UDP caller.
        let dev = s.w.phone_ref(s.sips).addr;
        s.w.call(s.caller, "1002");
        s.w.run_for(secs(1));
        // The UDP-registered one over a TLS connection sipfork opens; both get the scheme
        // replaced (never a sips: Request-URI for a sip: request), the rest of the URI as is.
        assert_eq!(s.w.connects, vec![(dev, Transport::Tls)], "{}", s.w.dump());
        for (id, addr) in [(s.sips, dev), (own, own_addr)] {
            let invite = &s.w.phone_ref(id).incoming[0].invite;
            let line = format!("INVITE sip:1002@{addr} SIP/2.0\r\n");
            assert!(
                invite.starts_with(line.as_bytes()),
                "{shards} shards\n{}",
                String::from_utf8_lossy(invite)
            );
            assert!(
                top_via(invite).starts_with("Via: SIP/2.0/TLS 127.0.0.1:5061;"),
                "{}",
                top_via(invite)
            );
            // A sip: request's Record-Route stays sip: (RFC 5630 §5.1.2: else the device's
            // Contact would have to be sips:).
            assert!(
                record_routes(invite).iter().all(|r| r.starts_with("<sip:")),
                "{:?}",
                record_routes(invite)
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- Follow-me's external targets and voicemail on a `sips:` request. ---

/// 1003 follows me to an external number (route next hop `hop` with `params`), then to
/// voicemail at `vm` (its URI with `params` too); UDP and TLS listeners, TLS out.
fn sips_followme_config(shards: u16, dir: &std::path::Path, params: &str) -> String {
    let (hop, vm) = ("127.0.0.1:5099", "127.0.0.1:5098");
    format!(
        "[server]\nlisten = [\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n\
         domain = \"example.com\"\nshards = {shards}\n[registrar]\nmin_expires = 10\n\
         [auth]\nmode = \"none\"\n[[tenants]]\nname = \"fwd\"\nforward_external = true\n\
         voicemail = true\n[[extensions]]\nnumbers = \"1000-1099\"\ntenant = \"fwd\"\n\
         [[routes]]\nprefix = \"00\"\nnext_hop = \"sip:{hop}{params}\"\n\
         [[followme]]\nextension = \"1003\"\nvoicemail = \"sip:vm@{vm}{params}\"\n\
         stages = [{{ targets = [\"0044201234567\"], ring = 2 }}]\n\
         [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\npeer_ca = \"{cert}\"\n",
        cert = dir.join("cert.pem").display(),
        key = dir.join("key.pem").display(),
    )
}

/// A world on [`sips_followme_config`] with `params`: caller 1000, the external number at its
/// next hop (never answers) and the voicemail (answers), all over TLS for `params` =
/// `;transport=tls`. The caller calls 1003: a `sips:` INVITE over TLS when `sips`, else a
/// `sip:` one over UDP. Four seconds later: the world, the caller, the external, the mailbox.
fn followme_call(
    shards: u16,
    dir: &std::path::Path,
    params: &str,
    sips: bool,
    seed: u64,
) -> (World, PhoneId, PhoneId, PhoneId) {
    let mut w = World::new(&sips_followme_config(shards, dir, params), shards, seed);
    let caller = w.add_phone("caller", "1000", 5071);
    let external = w.add_phone_at(
        "external",
        "0044201234567",
        "127.0.0.1:5099".parse().unwrap(),
    );
    let mailbox = w.add_phone_at("voicemail", "vm", "127.0.0.1:5098".parse().unwrap());
    w.behave(external, Behaviour::silent());
    w.behave(mailbox, Behaviour::answer_after(ms(100)));
    if sips {
        let me = w.phone_ref(caller).addr;
        w.connect(caller, Transport::Tls);
        w.send_raw(caller, sips_invite("1003", me, "TLS", "fm").as_bytes());
    } else {
        w.call(caller, "1003");
    }
    w.run_for(secs(4));
    (w, caller, external, mailbox)
}

#[test]
fn a_sips_request_reaches_followme_external_targets_and_voicemail_over_tls_or_gets_480() {
    let dir = certificates("sips-followme");
    let (hop, vm): (SocketAddr, SocketAddr) = (
        "127.0.0.1:5099".parse().unwrap(),
        "127.0.0.1:5098".parse().unwrap(),
    );
    for shards in [1, 2] {
        // Both configured for TLS: each stage takes TLS, with a sips: Request-URI; a sip: call
        // takes the same TLS connections with sip: Request-URIs (the voicemail URI's
        // `;transport=tls` is followed whatever the request's scheme).
        for (sips, seed) in [(true, 619), (false, 621)] {
            let (w, caller, external, mailbox) =
                followme_call(shards, &dir, ";transport=tls", sips, seed);
            assert_eq!(
                w.connects,
                vec![(hop, Transport::Tls), (vm, Transport::Tls)],
                "{shards} shards\n{}",
                w.dump()
            );
            let scheme = if sips { "sips" } else { "sip" };
            for (id, uri) in [
                (external, "0044201234567@127.0.0.1:5099"),
                (mailbox, "vm@127.0.0.1:5098;transport=tls"),
            ] {
                let invite = &w.phone_ref(id).incoming[0].invite;
                let line = format!("INVITE {scheme}:{uri} ");
                assert!(invite.starts_with(line.as_bytes()), "{}", w.dump());
                assert!(top_via(invite).starts_with("Via: SIP/2.0/TLS "));
            }
            let ok = final_for(&w, caller, "CSeq: 1 INVITE");
            assert!(ok.starts_with("SIP/2.0 200"), "{shards} shards: {ok}");
        }
        // Over UDP (neither asks for TLS): neither is sent anything; 480 with warn-code 380.
        let (w, caller, external, mailbox) = followme_call(shards, &dir, "", true, 620);
        assert!(w.phone_ref(external).incoming.is_empty(), "{}", w.dump());
        assert!(w.phone_ref(mailbox).incoming.is_empty(), "{}", w.dump());
        assert!(w.connects.is_empty(), "{:?}", w.connects);
        assert_eq!(
            answer(&w, caller, "fm"),
            (
                480,
                "Warning: 380 127.0.0.1:5061 \"SIPS Not Allowed\"".into()
            ),
            "{shards} shards"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sips_branchs_final_after_its_tls_connection_closed_gets_no_cleartext_ack() {
    let dir = certificates("sips-ack");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 622);
        // 1002's device rejects the call after its TLS connection closed: the 486 comes over
        // UDP, and the transaction's ACK would go back over UDP.
        s.w.behave(s.sips, Behaviour::reject_after(486, ms(200)));
        let (me, dev) = (s.w.phone_ref(s.caller).addr, s.w.phone_ref(s.sips).addr);
        s.w.connect(s.caller, Transport::Tls);
        s.w.send_raw(s.caller, sips_invite("1002", me, "TLS", "ack").as_bytes());
        s.w.run_for(ms(100));
        assert_eq!(s.w.phone_ref(s.sips).incoming.len(), 1, "{}", s.w.dump());
        s.w.close_flow(s.sips);
        let (log, dropped) = (s.w.log.len(), proxy_event(&s.w, "ack_dropped"));
        s.w.run_for(secs(2));
        assert_eq!(answer(&s.w, s.caller, "ack").0, 486, "{}", s.w.dump());
        let leaked = sent_to(&s.w, log, dev);
        assert!(
            leaked.is_empty(),
            "{shards} shards: {leaked:?}\n{}",
            s.w.dump()
        );
        assert!(
            proxy_event(&s.w, "ack_dropped") > dropped,
            "{shards} shards"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- A `sip:` call's own requests to a device reached over TLS (one rule: the branch went over
// TLS). ---

#[test]
fn a_sip_calls_ack_and_cancel_never_reach_a_sips_device_whose_tls_connection_closed() {
    let dir = certificates("sips-sipleg");
    for shards in [1, 2] {
        // A non-2xx final after the device's TLS connection closed: its ACK is not sent.
        let mut s = setup(&config(shards, &dir, true), shards, 624);
        s.w.behave(s.sips, Behaviour::reject_after(486, ms(200)));
        let dev = s.w.phone_ref(s.sips).addr;
        let call = s.w.call(s.caller, "1002");
        s.w.run_for(ms(100));
        assert_eq!(s.w.connects, vec![(dev, Transport::Tls)], "{}", s.w.dump());
        assert_eq!(s.w.phone_ref(s.sips).incoming.len(), 1, "{}", s.w.dump());
        s.w.close_flow(s.sips);
        let (log, dropped) = (s.w.log.len(), proxy_event(&s.w, "ack_dropped"));
        s.w.run_for(secs(2));
        let finals = s.w.phone_ref(s.caller).outgoing[call].finals();
        assert_eq!(finals, vec![486], "{}", s.w.dump());
        let leaked = sent_to(&s.w, log, dev);
        assert!(leaked.is_empty(), "{shards} shards: {leaked:?}");
        assert!(
            proxy_event(&s.w, "ack_dropped") > dropped,
            "{shards} shards"
        );

        // The caller cancels after the device's TLS connection closed: no CANCEL to it.
        let mut s = setup(&config(shards, &dir, true), shards, 625);
        let call = s.w.call(s.caller, "1002");
        s.w.run_for(ms(100));
        assert_eq!(s.w.phone_ref(s.sips).incoming.len(), 1, "{}", s.w.dump());
        s.w.close_flow(s.sips);
        let (log, errors) = (s.w.log.len(), proxy_event(&s.w, "branch_transport_error"));
        s.w.cancel(s.caller, call);
        s.w.run_for(secs(40));
        let leaked = sent_to(&s.w, log, dev);
        assert!(
            leaked.is_empty(),
            "{shards} shards: {leaked:?}\n{}",
            s.w.dump()
        );
        assert_eq!(proxy_event(&s.w, "branch_transport_error"), errors + 1);
        let finals = s.w.phone_ref(s.caller).outgoing[call].finals();
        assert_eq!(finals, vec![487], "{shards} shards\n{}", s.w.dump());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The CANCEL of [`sips_invite`]'s INVITE `text`.
fn cancel_of(invite: &str) -> String {
    let contact = invite
        .split("\r\n")
        .find(|l| l.starts_with("Contact:"))
        .unwrap();
    invite
        .replacen("INVITE ", "CANCEL ", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace(&format!("{contact}\r\n"), "")
}

#[test]
fn a_cancel_that_may_not_be_sent_ends_its_branch_and_the_caller_gets_487_at_once() {
    let dir = certificates("sips-cancel487");
    for shards in [1, 2] {
        // A sip: call from UDP and a sips: call over TLS, each to 1002's device reached over a
        // TLS connection sipfork opened; the connection closes while it rings.
        for sips in [false, true] {
            let mut s = setup(&config(shards, &dir, true), shards, 626);
            let me = s.w.phone_ref(s.caller).addr;
            let invite = sips_invite("1002", me, "TLS", "c487");
            let call = if sips {
                s.w.connect(s.caller, Transport::Tls);
                s.w.send_raw(s.caller, invite.as_bytes());
                None
            } else {
                Some(s.w.call(s.caller, "1002"))
            };
            s.w.run_for(ms(100));
            assert_eq!(s.w.phone_ref(s.sips).incoming.len(), 1, "{}", s.w.dump());
            s.w.close_flow(s.sips);
            match call {
                Some(call) => s.w.cancel(s.caller, call),
                None => s.w.send_raw(s.caller, cancel_of(&invite).as_bytes()),
            }
            // 487 at once, not after Timer C's 64·T1 guard (DECISIONS: 487 as soon as every
            // branch that had a provisional has ended).
            s.w.run_for(secs(1));
            let status = match call {
                Some(call) => s.w.phone_ref(s.caller).outgoing[call].finals(),
                None => {
                    let text = final_for(&s.w, s.caller, "CSeq: 1 INVITE");
                    vec![text[8..11].parse::<u16>().unwrap()]
                }
            };
            assert_eq!(
                status,
                vec![487],
                "{shards} shards, sips {sips}\n{}",
                s.w.dump()
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- Responses to a caller whose connection closed (RFC 3261 §18.2.2: never over UDP). ---

#[test]
fn responses_never_reach_a_stream_caller_whose_connection_closed_over_udp() {
    let dir = certificates("sips-callerclosed");
    for shards in [1, 2] {
        let cfg = config(shards, &dir, true).replace(
            "\"tls:127.0.0.1:5061\"]",
            "\"tls:127.0.0.1:5061\", \"tcp:127.0.0.1:5060\"]",
        );
        // A sips: call over TLS and a sip: call over TCP; the caller's connection closes while
        // 1002 rings; 1002 answers later.
        for (transport, via, scheme) in [
            (Transport::Tls, "TLS", "sips:"),
            (Transport::Tcp, "TCP", "sip:"),
        ] {
            let mut s = setup(&cfg, shards, 627);
            s.w.behave(s.sips, Behaviour::answer_after(ms(500)));
            let me = s.w.phone_ref(s.caller).addr;
            s.w.connect(s.caller, transport);
            let invite = sips_invite("1002", me, via, "gone").replacen(
                "INVITE sips:",
                &format!("INVITE {scheme}"),
                1,
            );
            s.w.send_raw(s.caller, invite.as_bytes());
            s.w.run_for(ms(100));
            assert_eq!(s.w.phone_ref(s.sips).incoming.len(), 1, "{}", s.w.dump());
            s.w.close_flow(s.caller);
            let (log, unsent) = (
                s.w.log.len(),
                proxy_event(&s.w, "response_connection_closed"),
            );
            s.w.run_for(secs(2));
            assert_eq!(
                s.w.phone_ref(s.sips).incoming[0].final_status,
                Some(200),
                "{}",
                s.w.dump()
            );
            let leaked = sent_to(&s.w, log, me);
            assert!(
                leaked.is_empty(),
                "{shards} shards, {via}: {leaked:?}\n{}",
                s.w.dump()
            );
            assert!(
                proxy_event(&s.w, "response_connection_closed") > unsent,
                "{shards} shards, {via}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
