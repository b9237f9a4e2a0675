//! Connections sipfork opens itself (issue 16 point 4, RFC 3261 §18.1.1, §8.1.3.1), on virtual
//! time with one and two shards: a device registered over UDP whose Contact says
//! `;transport=tcp`, and a next hop configured with `;transport=tcp`, are reached over a TCP
//! connection the core asks the engine to open (`Transmit::connect`; the simulator accepts it
//! when a phone is at the address), reused by later requests; a refused or timed-out connect
//! ends the branch as a 503 at once; a 3 KB INVITE from a UDP caller goes over TCP to such a
//! target; and nothing a request names itself (Request-URI, Route, Contact) makes the core ask
//! for a connection anywhere else.

use std::net::SocketAddr;

use crate::transport::{big_invite, record_routes, top_via};
use sipfork::core::transport::Transport;
use sipfork::sip::{parse, HeaderName};
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World, DEFAULT_CONFIG};
use sipfork::time::{ms, secs};

/// `shards` shards, listening on UDP and TCP 127.0.0.1:5060.
fn config(shards: u16) -> String {
    DEFAULT_CONFIG
        .replace("shards = 1", &format!("shards = {shards}"))
        .replace(
            "listen = \"127.0.0.1:5060\"",
            "listen = [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\"]",
        )
}

struct Setup {
    w: World,
    caller: PhoneId,
    /// Extension 1001, registered over UDP with a `;transport=tcp` Contact.
    tcp: PhoneId,
    /// Extension 1001 over UDP.
    udp: PhoneId,
}

fn setup(cfg: &str, shards: u16, seed: u64, with_udp: bool) -> Setup {
    let mut w = World::new(cfg, shards, seed);
    let caller = w.add_phone("caller", "1000", 5071);
    let tcp = w.add_phone("tcp-dev", "1001", 5072);
    let udp = w.add_phone("udp-dev", "1001", 5073);
    w.phone(tcp).contact_params = ";transport=tcp".into();
    w.register(tcp, 300);
    if with_udp {
        w.register(udp, 300);
    }
    Setup {
        w,
        caller,
        tcp,
        udp,
    }
}

#[test]
fn a_tcp_contact_is_reached_over_a_connection_sipfork_opens_and_reuses() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 401, true);
        let dev = s.w.phone_ref(s.tcp).addr;
        // The REGISTER itself came over UDP: no connection yet.
        assert!(s.w.connects.is_empty());
        s.w.behave(s.tcp, Behaviour::answer_after(ms(200)));
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(s.w.connects, vec![(dev, Transport::Tcp)], "{shards} shards");
        let invite = &s.w.phone_ref(s.tcp).incoming[0].invite;
        assert!(
            top_via(invite).starts_with("Via: SIP/2.0/TCP 127.0.0.1:5060;branch="),
            "{}",
            top_via(invite)
        );
        // UDP caller, TCP callee: two Record-Routes (RFC 5658), the top one for TCP.
        let rr = record_routes(invite);
        assert_eq!(rr.len(), 2, "{rr:?}");
        assert!(rr[0].contains(";transport=tcp;"), "{rr:?}");
        // The UDP device rang over UDP, and got its CANCEL there once the TCP device answered.
        let udp_invite = &s.w.phone_ref(s.udp).incoming[0].invite;
        assert!(top_via(udp_invite).starts_with("Via: SIP/2.0/UDP "));
        assert_eq!(s.w.phone_ref(s.caller).outgoing[call].dialogs.len(), 1);
        // The caller's BYE reaches the device over the same connection; a second call reuses it.
        s.w.hang_up(s.caller, call);
        s.w.run_for(secs(1));
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(s.w.phone_ref(s.tcp).incoming.len(), 2, "{}", s.w.dump());
        assert_eq!(s.w.connects.len(), 1, "{shards} shards: {:?}", s.w.connects);
        // Once the connection closed, the next call opens a new one.
        s.w.close_flow(s.tcp);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(s.w.phone_ref(s.tcp).incoming.len(), 3, "{}", s.w.dump());
        assert_eq!(s.w.connects.len(), 2, "{shards} shards: {:?}", s.w.connects);
    }
}

#[test]
fn without_a_tcp_listener_a_tcp_contact_is_reached_over_udp_as_before() {
    let cfg = DEFAULT_CONFIG.to_string();
    let mut s = setup(&cfg, 1, 402, false);
    s.w.call(s.caller, "1001");
    s.w.run_for(secs(1));
    assert!(s.w.connects.is_empty());
    let invite = &s.w.phone_ref(s.tcp).incoming[0].invite;
    assert!(top_via(invite).starts_with("Via: SIP/2.0/UDP "));
}

/// The caller's last answer is 500 (a branch's 503 is never relayed, §16.7), its only final
/// one; and once the transactions' timers ran out nothing of the call is left.
fn the_caller_got_500_and_nothing_waits(w: &mut World, caller: PhoneId, shards: u16) {
    let statuses = w.phone_ref(caller).statuses();
    assert_eq!(statuses.last(), Some(&500), "{shards} shards\n{}", w.dump());
    w.run_for(secs(40));
    assert_eq!(w.proxy_calls(), 0, "{}", w.dump());
    let statuses = w.phone_ref(caller).statuses();
    let finals = statuses.iter().filter(|&&st| st >= 200).count();
    assert_eq!(finals, 1, "{statuses:?}");
}

#[test]
fn a_refused_connect_ends_the_branch_at_once_as_503() {
    for shards in [1, 2] {
        // Alone: the caller gets 500 (a 503 becomes 500 upstream, §16.7) within the second,
        // not after Timer B.
        let mut s = setup(&config(shards), shards, 403, false);
        let dev = s.w.phone_ref(s.tcp).addr;
        s.w.connect_refused.push(dev);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert_eq!(s.w.connects, vec![(dev, Transport::Tcp)]);
        assert!(s.w.phone_ref(s.tcp).incoming.is_empty());
        the_caller_got_500_and_nothing_waits(&mut s.w, s.caller, shards);
        // Beside a UDP device: the UDP device rings and answers.
        let mut s = setup(&config(shards), shards, 404, true);
        let dev = s.w.phone_ref(s.tcp).addr;
        s.w.connect_refused.push(dev);
        s.w.behave(s.udp, Behaviour::answer_after(ms(300)));
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(s.w.phone_ref(s.udp).incoming.len(), 1);
        assert_eq!(
            s.w.phone_ref(s.caller).outgoing[call].dialogs.len(),
            1,
            "{}",
            s.w.dump()
        );
    }
}

#[test]
fn a_connect_that_times_out_ends_the_branch_when_the_engine_says_so() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 405, false);
        let dev = s.w.phone_ref(s.tcp).addr;
        s.w.connect_silent.push(dev);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(3));
        assert!(!s.w.phone_ref(s.caller).statuses().contains(&500));
        // The engine's connect timeout (`[tcp] connect_seconds`) fires.
        s.w.fail_connect(dev, Transport::Tcp);
        s.w.run_for(ms(100));
        the_caller_got_500_and_nothing_waits(&mut s.w, s.caller, shards);
    }
}

#[test]
fn a_3kb_invite_from_a_udp_caller_goes_over_tcp_to_a_tcp_contact() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 406, false);
        big_invite(&mut s.w, s.caller, 3000);
        s.w.run_for(secs(1));
        let tcp = s.w.phone_ref(s.tcp);
        assert_eq!(tcp.incoming.len(), 1, "{}", s.w.dump());
        assert!(tcp.incoming[0].invite.len() > 3000);
        assert!(top_via(&tcp.incoming[0].invite).starts_with("Via: SIP/2.0/TCP "));
        assert!(!s.w.phone_ref(s.caller).statuses().contains(&513));
    }
}

/// A route `00` to a next hop at `hop`, with `params` on its URI.
fn with_route(shards: u16, hop: SocketAddr, params: &str) -> String {
    format!(
        "{}\n[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:{hop}{params}\"\n",
        config(shards)
    )
}

#[test]
fn a_next_hop_configured_for_tcp_is_reached_over_tcp_whatever_the_request_uri_says() {
    for shards in [1, 2] {
        let hop: SocketAddr = "127.0.0.1:5090".parse().unwrap();
        let mut w = World::new(&with_route(shards, hop, ";transport=tcp"), shards, 407);
        let caller = w.add_phone("caller", "1000", 5071);
        let trunk = w.add_phone_at("trunk", "0049301234", hop);
        w.call(caller, "0049301234");
        w.run_for(secs(1));
        assert_eq!(w.connects, vec![(hop, Transport::Tcp)], "{}", w.dump());
        let invite = &w.phone_ref(trunk).incoming[0].invite;
        assert!(top_via(invite).starts_with("Via: SIP/2.0/TCP "));

        // A UDP next hop: a Request-URI naming `;transport=tcp` changes nothing.
        let mut w = World::new(&with_route(shards, hop, ""), shards, 408);
        let caller = w.add_phone("caller", "1000", 5071);
        let trunk = w.add_phone_at("trunk", "0049301234", hop);
        let addr = w.phone_ref(caller).addr;
        let invite = raw_invite(
            "sip:0049301234@127.0.0.1:5060;transport=tcp",
            addr,
            "",
            &format!("Contact: <sip:1000@{addr};transport=tcp>\r\n"),
        );
        w.send_raw(caller, invite.as_bytes());
        w.run_for(secs(1));
        assert!(w.connects.is_empty(), "{:?}", w.connects);
        assert_eq!(w.phone_ref(trunk).incoming.len(), 1, "{}", w.dump());
        let invite = &w.phone_ref(trunk).incoming[0].invite;
        assert!(top_via(invite).starts_with("Via: SIP/2.0/UDP "));
    }
}

/// An INVITE from `from` to `ruri` with `extra` rows (Route, Contact) and a fresh Call-ID
/// from `tag`.
pub(crate) fn raw_invite(ruri: &str, from: SocketAddr, tag: &str, extra: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKraw{tag};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1:5060>;tag=raw{tag}\r\n\
         To: <sip:1001@127.0.0.1:5060>\r\nCall-ID: raw-{tag}@test\r\nCSeq: 1 INVITE\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

// --- The security rule: sipfork connects only to a registered device, a configured next hop,
// or the peer of a dialog it relayed; nothing a request names makes it connect elsewhere. ---

/// A third party no one registered or configured, named with `;transport=tcp`.
pub(crate) const THIRD: &str = "127.0.0.99:5099";

pub(crate) fn nothing_toward_the_third_party(w: &World) {
    let third: SocketAddr = THIRD.parse().unwrap();
    assert!(
        w.connects.iter().all(|(to, _)| *to != third),
        "{:?}",
        w.connects
    );
    assert!(w.log.iter().all(|t| t.to != third), "{}", w.dump());
}

/// The caller's two in-dialog BYEs toward a third party (`THIRD`, with `;transport=PARAM` on its
/// Request-URI and last Route): first with forged Record-Route tokens, then with the real ones
/// from the caller's 200 `ok`. The route set is the Record-Route list reversed.
pub(crate) fn third_party_byes(ok: &[u8], caller: SocketAddr, param: &str) -> [String; 2] {
    let m = parse(ok).expect("parses");
    let rr = record_routes(ok);
    assert_eq!(rr.len(), 2, "{rr:?}");
    let call_id = String::from_utf8_lossy(m.call_id().expect("Call-ID")).into_owned();
    let from = String::from_utf8_lossy(m.first_value(HeaderName::From).expect("From")).into_owned();
    let to = String::from_utf8_lossy(m.first_value(HeaderName::To).expect("To")).into_owned();
    let forged: Vec<String> = rr
        .iter()
        .map(|v| {
            let at = v.find(";sf=").unwrap() + 4;
            format!("{}0000.1.1.0123456789abcdef>", &v[..at])
        })
        .collect();
    let sets = [forged, rr];
    std::array::from_fn(|i| {
        let entries = &sets[i];
        format!(
            "BYE sip:1001@{THIRD};transport={param} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {caller};branch=z9hG4bK{param}third{i};rport\r\n\
             Route: {}, {}, <sip:{THIRD};transport={param};lr>\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {} BYE\r\nContent-Length: 0\r\n\r\n",
            entries[1],
            entries[0],
            20 + i
        )
    })
}

pub(crate) fn received<'a>(w: &'a World, id: PhoneId, start: &str) -> Vec<&'a [u8]> {
    w.phone_ref(id)
        .inbox
        .iter()
        .map(|(_, b)| &b[..])
        .filter(|b| b.starts_with(start.as_bytes()))
        .collect()
}

#[test]
fn a_forged_in_dialog_request_naming_a_tcp_third_party_opens_no_connection() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 410, false);
        let dev = s.w.phone_ref(s.tcp).addr;
        s.w.behave(s.tcp, Behaviour::answer_after(ms(100)));
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(s.w.phone_ref(s.caller).outgoing[call].dialogs.len(), 1);
        let ok = received(&s.w, s.caller, "SIP/2.0 200")[0].to_vec();
        let caller = s.w.phone_ref(s.caller).addr;
        // A third party with `;transport=tcp`: forged tokens first (481 or 403, nothing sent
        // on), then the real ones (the request goes to the device's flow).
        for bye in third_party_byes(&ok, caller, "tcp") {
            s.w.send_raw(s.caller, bye.as_bytes());
            s.w.run_for(secs(1));
            nothing_toward_the_third_party(&s.w);
            assert_eq!(s.w.connects, vec![(dev, Transport::Tcp)], "{shards} shards");
        }
        // The forged one reached nobody; the real one reached the device, over its connection.
        let byes = received(&s.w, s.tcp, "BYE ");
        assert_eq!(byes.len(), 1, "{}", s.w.dump());
        assert!(
            top_via(byes[0]).starts_with("Via: SIP/2.0/TCP "),
            "{}",
            top_via(byes[0])
        );
    }
}

#[test]
fn a_register_naming_a_tcp_third_party_makes_sipfork_connect_only_to_its_sender() {
    for shards in [1, 2] {
        let mut w = World::new(&config(shards), shards, 411);
        let caller = w.add_phone("caller", "1000", 5071);
        let third: SocketAddr = THIRD.parse().unwrap();
        // It sends from 127.0.0.1:5075 but names the third party in its Contact (`nat = auto`:
        // the binding is reached at the REGISTER's source).
        let evil = w.add_phone_behind_nat("evil", "1002", 5075, third);
        w.phone(evil).contact_params = ";transport=tcp".into();
        w.register(evil, 300);
        w.call(caller, "1002");
        w.run_for(secs(1));
        let sender = w.phone_ref(evil).addr;
        assert_eq!(w.connects, vec![(sender, Transport::Tcp)], "{}", w.dump());
        nothing_toward_the_third_party(&w);
    }
}

#[test]
fn an_invite_naming_a_tcp_third_party_opens_no_connection() {
    for shards in [1, 2] {
        let mut w = World::new(&config(shards), shards, 412);
        let caller = w.add_phone("caller", "1000", 5071);
        let from = w.phone_ref(caller).addr;
        let contact = format!("Contact: <sip:1000@{THIRD};transport=tcp>\r\n");
        let cases = [
            // The third party as Request-URI (not a domain of ours).
            raw_invite(
                &format!("sip:1001@{THIRD};transport=tcp"),
                from,
                "a",
                &contact,
            ),
            // A pre-loaded Route to it, toward an extension without devices.
            raw_invite(
                "sip:1001@127.0.0.1:5060",
                from,
                "b",
                &format!("Route: <sip:{THIRD};transport=tcp;lr>\r\n{contact}"),
            ),
            // Our own address with `;transport=tcp` and a maddr naming it.
            raw_invite(
                "sip:1001@127.0.0.1:5060;transport=tcp;maddr=127.0.0.99",
                from,
                "c",
                &contact,
            ),
        ];
        none_connects(&mut w, caller, &cases);
    }
}

/// Sends each of `cases` from `caller`: none opens a connection or reaches the third party,
/// and each gets a final answer.
pub(crate) fn none_connects(w: &mut World, caller: PhoneId, cases: &[String]) {
    for invite in cases {
        w.send_raw(caller, invite.as_bytes());
        w.run_for(secs(1));
    }
    assert!(w.connects.is_empty(), "{:?}", w.connects);
    nothing_toward_the_third_party(w);
    let finals = w
        .phone_ref(caller)
        .statuses()
        .into_iter()
        .filter(|&st| st >= 300)
        .count();
    assert!(finals >= cases.len(), "{}", w.dump());
}

#[test]
fn answers_to_udp_requests_from_a_connected_address_go_back_over_udp() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 413, false);
        let dev = s.w.phone_ref(s.tcp).addr;
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert_eq!(s.w.connects, vec![(dev, Transport::Tcp)]);
        assert!(s.w.kept_udp.is_empty());
        // The device refreshes its registration over UDP from the same address and port: the
        // 200 goes back over UDP, not over the connection sipfork opened (RFC 3261 §18.2.2).
        s.w.connect(s.tcp, Transport::Udp);
        s.w.register(s.tcp, 300);
        assert!(s.w.phone_ref(s.tcp).registered, "{}", s.w.dump());
        assert_eq!(s.w.kept_udp, vec![dev], "{shards} shards");
        // Its messages over the connection are answered on it as before.
        s.w.connect(s.tcp, Transport::Tcp);
        s.w.register(s.tcp, 300);
        assert_eq!(s.w.kept_udp, vec![dev]);
    }
}

#[test]
fn a_call_over_udp_from_a_connected_address_gets_every_response_over_udp() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 414, false);
        let dev = s.w.phone_ref(s.tcp).addr;
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert_eq!(s.w.connects, vec![(dev, Transport::Tcp)]);
        // The device places a call over UDP from the address sipfork holds a connection to:
        // the 100 (sent while its INVITE is handled) and the 180 relayed later both go back
        // over UDP (RFC 3261 §18.2.2), not over the connection.
        s.w.register(s.caller, 300);
        let before = s.w.kept_udp.len();
        s.w.connect(s.tcp, Transport::Udp);
        s.w.call(s.tcp, "1000");
        s.w.run_for(secs(1));
        let kept = s.w.kept_udp[before..].iter().filter(|&&a| a == dev).count();
        assert!(
            kept >= 2,
            "{shards} shards: {:?}\n{}",
            s.w.kept_udp,
            s.w.dump()
        );
    }
}
