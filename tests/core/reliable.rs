//! Our address per transport and the RFC 3261 timers on reliable transports (issue 16): the
//! Via sipfork adds toward a TCP device names the `tcp:` listener's address and port (§18.2.2),
//! a request carrying that Via back is a loop (§16.3 step 4), a stream side's Record-Route
//! entry names the stream listener's IP and port and in-dialog requests through it are ours;
//! no Timer A/E retransmissions toward a TCP flow (§17.1.1.2, §17.1.2.2), Timers B/F still end
//! the branch, and no Timer G retransmissions of a final toward a TCP caller (§17.2.1). UDP
//! bytes and retransmissions unchanged. On virtual time, one and two shards.

use sipfork::core::transport::Transport;
use sipfork::sip::{parse, HeaderName};
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World, DEFAULT_CONFIG};
use sipfork::time::{ms, secs};

use crate::transport::{received, top_via};

/// The simulated config with `shards` shards and a TCP listener on another IP and port.
fn config(shards: u16) -> String {
    let cfg = DEFAULT_CONFIG
        .replace("shards = 1", &format!("shards = {shards}"))
        .replace(
            "listen = \"127.0.0.1:5060\"",
            "listen = [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.2:5070\"]",
        );
    assert!(cfg.contains("tcp:127.0.0.2:5070"));
    cfg
}

struct Setup {
    w: World,
    /// 1000, over UDP.
    caller: PhoneId,
    /// 1001 over TCP.
    tcp: PhoneId,
    /// 1002 over UDP.
    udp: PhoneId,
}

/// The world of `cfg`; 1001 registers over TCP when `over_tcp` (else over UDP, the control).
fn setup_with(cfg: &str, shards: u16, seed: u64, over_tcp: bool) -> Setup {
    let mut w = World::new(cfg, shards, seed);
    let caller = w.add_phone("caller", "1000", 5071);
    let tcp = w.add_phone("tcp-dev", "1001", 5072);
    let udp = w.add_phone("udp-dev", "1002", 5073);
    if over_tcp {
        w.connect(tcp, Transport::Tcp);
    }
    w.register(tcp, 300);
    w.register(udp, 300);
    Setup {
        w,
        caller,
        tcp,
        udp,
    }
}

fn setup(cfg: &str, shards: u16, seed: u64) -> Setup {
    setup_with(cfg, shards, seed, true)
}

/// Asserts the top Via of `bytes` starts with `want`.
fn assert_top_via(bytes: &[u8], want: &str, what: &str) {
    let via = top_via(bytes);
    assert!(via.starts_with(want), "{what}: {via}");
}

fn header_values(bytes: &[u8], name: HeaderName) -> Vec<String> {
    let m = parse(bytes).expect("parses");
    m.values(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Our Via toward a TCP hop: the `tcp:` listener of [`config`].
const TCP_VIA: &str = "Via: SIP/2.0/TCP 127.0.0.2:5070;branch=";

#[test]
fn the_via_toward_a_tcp_device_names_the_tcp_listener_and_udp_is_unchanged() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 301);
        s.w.behave(s.tcp, Behaviour::answer_after(ms(100)));
        let call = s.w.call(s.caller, "1001");
        s.w.call(s.caller, "1002");
        s.w.run_for(secs(2));
        let tcp_invite = &s.w.phone_ref(s.tcp).incoming[0].invite;
        let udp_invite = &s.w.phone_ref(s.udp).incoming[0].invite;
        assert_top_via(tcp_invite, TCP_VIA, "INVITE to TCP");
        assert_top_via(
            udp_invite,
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=",
            "to UDP",
        );
        // The relayed ACK of the 2xx and the caller's BYE toward the TCP device: the same.
        assert_eq!(s.w.phone_ref(s.caller).outgoing[call].dialogs.len(), 1);
        s.w.hang_up(s.caller, call);
        s.w.run_for(secs(1));
        for method in ["ACK", "BYE"] {
            let got = received(&s.w, s.tcp, &format!("{method} "), method);
            assert_eq!(got.len(), 1, "{method}\n{}", s.w.dump());
            assert_top_via(got[0], TCP_VIA, method);
        }
    }
}

#[test]
fn our_tcp_via_coming_back_is_a_loop() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 302);
        s.w.behave(s.tcp, Behaviour::silent());
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        // The device sends the INVITE it got back to us unchanged but for its own Via on top
        // and the original Request-URI: the same request (§16.3 step 4), a loop.
        let invite = String::from_utf8(s.w.phone_ref(s.tcp).incoming[0].invite.clone()).unwrap();
        let _ = call;
        let original = format!("sip:1001@{}", s.w.proxy);
        let (_, rest) = invite.split_once("\r\n").unwrap();
        let dev = s.w.phone_ref(s.tcp).addr;
        let back = format!(
            "INVITE {original} SIP/2.0\r\nVia: SIP/2.0/TCP {dev};branch=z9hG4bKback\r\n{rest}"
        );
        s.w.send_raw(s.tcp, back.as_bytes());
        s.w.run_for(secs(1));
        let loops = received(&s.w, s.tcp, "SIP/2.0 482", "INVITE");
        assert_eq!(loops.len(), 1, "{shards} shards\n{}", s.w.dump());
    }
}

#[test]
fn the_tcp_record_route_names_the_tcp_listeners_ip_and_in_dialog_requests_through_it_are_ours() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 303);
        s.w.behave(s.tcp, Behaviour::answer_after(ms(100)));
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(s.w.phone_ref(s.caller).outgoing[call].dialogs.len(), 1);
        let rr = header_values(
            &s.w.phone_ref(s.tcp).incoming[0].invite,
            HeaderName::RecordRoute,
        );
        assert_eq!(rr.len(), 2, "{rr:?}");
        assert!(
            rr[0].starts_with("<sip:127.0.0.2:5070;transport=tcp;lr;sf="),
            "{}",
            rr[0]
        );
        assert!(rr[1].starts_with("<sip:127.0.0.1:5060;lr;sf="), "{}", rr[1]);
        // The device's BYE names the TCP entry first: both entries are ours and removed.
        s.w.hang_up_incoming(s.tcp, 0);
        s.w.run_for(secs(1));
        let byes = received(&s.w, s.caller, "BYE ", "BYE");
        assert_eq!(byes.len(), 1, "{shards} shards\n{}", s.w.dump());
        assert!(
            header_values(byes[0], HeaderName::Route).is_empty(),
            "{:?}",
            header_values(byes[0], HeaderName::Route)
        );
        // An entry naming the UDP IP with the TCP port is not ours: a forged BYE through it
        // is not taken as the dialog's.
        let sent_before = received(&s.w, s.caller, "BYE ", "BYE").len();
        let token = rr[0].split(";sf=").nth(1).unwrap().trim_end_matches('>');
        let m = parse(&s.w.phone_ref(s.tcp).incoming[0].invite).unwrap();
        let call_id = String::from_utf8_lossy(m.call_id().unwrap()).into_owned();
        let dev = s.w.phone_ref(s.tcp).addr;
        let forged = format!(
            "BYE sip:1000@127.0.0.1:5071 SIP/2.0\r\nVia: SIP/2.0/TCP {dev};branch=z9hG4bKf\r\n\
             Route: <sip:127.0.0.1:5070;transport=tcp;lr;sf={token}>\r\nMax-Forwards: 70\r\n\
             From: <sip:1001@x>;tag=f\r\nTo: <sip:1000@x>;tag=t\r\nCall-ID: {call_id}\r\n\
             CSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        s.w.send_raw(s.tcp, forged.as_bytes());
        s.w.run_for(secs(1));
        assert_eq!(
            received(&s.w, s.caller, "BYE ", "BYE").len(),
            sent_before,
            "{}",
            s.w.dump()
        );
    }
}

#[test]
fn an_invite_to_a_silent_tcp_device_is_not_retransmitted_and_ends_at_timer_b() {
    for shards in [1, 2] {
        let mut finals = Vec::new();
        for tcp in [true, false] {
            let mut s = setup_with(&config(shards), shards, 304, tcp);
            s.w.behave(s.tcp, Behaviour::silent());
            let call = s.w.call(s.caller, "1001");
            s.w.run_for(secs(31));
            assert!(s.w.phone_ref(s.caller).outgoing[call].finals().is_empty());
            let invites = s.w.phone_ref(s.tcp).requests_received("INVITE");
            if tcp {
                assert_eq!(invites, 1, "no Timer A over TCP\n{}", s.w.dump());
            } else {
                assert!(invites >= 6, "Timer A over UDP: {invites}");
            }
            s.w.run_for(secs(3));
            finals.push(s.w.phone_ref(s.caller).outgoing[call].finals());
        }
        assert_eq!(finals[0], finals[1], "{shards} shards");
        assert_eq!(finals[0], vec![408], "{shards} shards");
    }
}

#[test]
fn a_cancel_and_a_message_to_a_tcp_device_that_never_answers_them_are_not_retransmitted() {
    for shards in [1, 2] {
        let mut got = Vec::new();
        for tcp in [true, false] {
            let mut s = setup_with(&config(shards), shards, 305, tcp);
            let dev = s.w.phone_ref(s.tcp).addr;
            // The device rings, then never answers the CANCEL or a MESSAGE.
            s.w.drop_next(100, "SIP/2.0 ", Some("CANCEL"), Some(dev), None);
            s.w.drop_next(100, "SIP/2.0 ", Some("MESSAGE"), Some(dev), None);
            let call = s.w.call(s.caller, "1001");
            s.w.run_for(secs(1));
            s.w.cancel(s.caller, call);
            s.w.request(s.caller, "MESSAGE", "1001", "", "hello");
            s.w.run_for(secs(5));
            let phone = s.w.phone_ref(s.tcp);
            got.push((
                phone.requests_received("CANCEL"),
                phone.requests_received("MESSAGE"),
            ));
            // Timer F ends both transactions: the MESSAGE's caller gets 408 (§16.7: the best
            // answer of a branch that timed out); Timer J then ends the MESSAGE's call.
            s.w.run_for(secs(70));
            assert_eq!(s.w.phone_ref(s.caller).outgoing[call].finals(), vec![487]);
            assert!(
                received(&s.w, s.caller, "SIP/2.0 408", "MESSAGE").len() == 1,
                "tcp {tcp}, {shards} shards\n{}",
                s.w.dump()
            );
            assert_eq!(s.w.proxy_calls(), 0, "{}", s.w.dump());
        }
        assert_eq!(got[0], (1, 1), "{shards} shards: no Timer E over TCP");
        assert!(
            got[1].0 >= 3 && got[1].1 >= 3,
            "{shards} shards: Timer E over UDP: {:?}",
            got[1]
        );
    }
}

#[test]
fn a_final_to_a_tcp_caller_is_not_retransmitted_while_its_ack_is_missing() {
    for shards in [1, 2] {
        let mut counts = Vec::new();
        for tcp in [true, false] {
            let mut s = setup(&config(shards), shards, 306);
            if tcp {
                s.w.connect(s.caller, Transport::Tcp);
            }
            s.w.behave(s.udp, Behaviour::reject_after(486, ms(100)));
            // An INVITE whose sender never ACKs.
            let me = s.w.phone_ref(s.caller).addr;
            let invite = format!(
                "INVITE sip:1002@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/{t} {me};branch=z9hG4bKnoack\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=a\r\nTo: <sip:1002@127.0.0.1>\r\n\
                 Call-ID: noack-{tcp}\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@{me}>\r\n\
                 Content-Length: 0\r\n\r\n",
                t = if tcp { "TCP" } else { "UDP" },
            );
            s.w.send_raw(s.caller, invite.as_bytes());
            s.w.run_for(secs(10));
            counts.push(received(&s.w, s.caller, "SIP/2.0 486", "INVITE").len());
            // Timer H still ends the transaction.
            s.w.run_for(secs(30));
            assert_eq!(s.w.proxy_calls(), 0, "{}", s.w.dump());
        }
        assert_eq!(counts[0], 1, "no Timer G toward a TCP caller");
        assert!(counts[1] >= 4, "Timer G over UDP: {}", counts[1]);
    }
}

#[test]
fn a_non_invite_from_a_tcp_caller_is_over_once_answered_and_one_over_udp_waits_for_timer_j() {
    for shards in [1, 2] {
        let mut alive = Vec::new();
        for tcp in [true, false] {
            let mut s = setup(&config(shards), shards, 307);
            if tcp {
                s.w.connect(s.caller, Transport::Tcp);
            }
            s.w.request(s.caller, "MESSAGE", "1002", "", "hello");
            s.w.run_for(secs(1));
            assert_eq!(
                received(&s.w, s.caller, "SIP/2.0 200", "MESSAGE").len(),
                1,
                "tcp {tcp}, {shards} shards\n{}",
                s.w.dump()
            );
            // The branch toward the UDP device ends at Timer K (T4, 5 s) either way.
            s.w.run_for(secs(5));
            alive.push(s.w.proxy_calls());
            s.w.run_for(secs(40));
            assert_eq!(s.w.proxy_calls(), 0, "{}", s.w.dump());
        }
        assert_eq!(alive[0], 0, "{shards} shards: Timer J is zero over TCP");
        assert_eq!(alive[1], 1, "{shards} shards: Timer J (64·T1) over UDP");
    }
}

/// An in-dialog request relayed to the other leg goes through the same branch code as a
/// forked one, so the RFC 3261 §18.1.1 rule holds for it too: one that came over TCP and is
/// over 1,300 bytes toward a leg reached over UDP gets 513; a small one, or a large one that
/// came over UDP, is relayed.
#[test]
fn an_in_dialog_request_over_tcp_too_large_for_the_udp_leg_gets_513() {
    for shards in [1, 2] {
        // Our entries name 127.0.0.1:5060 (no `tcp:` listener): the simulator delivers the
        // caller's in-dialog requests to the proxy only at that address.
        let cfg = DEFAULT_CONFIG.replace("shards = 1", &format!("shards = {shards}"));
        for tcp in [true, false] {
            let mut s = setup(&cfg, shards, 307);
            if tcp {
                s.w.connect(s.caller, Transport::Tcp);
            }
            s.w.behave(s.udp, Behaviour::answer_after(ms(100)));
            let call = s.w.call(s.caller, "1002");
            s.w.run_for(secs(2));
            assert_eq!(s.w.phone_ref(s.caller).outgoing[call].dialogs.len(), 1);
            // A small UPDATE is relayed either way.
            s.w.update(s.caller, call, 2, "");
            s.w.run_for(secs(1));
            assert_eq!(s.w.phone_ref(s.udp).requests_received("UPDATE"), 1);
            // A 2 KB one: 513 from TCP, relayed from UDP.
            let pad = format!("X-Pad: {}\r\n", "a".repeat(2000));
            s.w.update(s.caller, call, 3, &pad);
            s.w.run_for(secs(1));
            let relayed = s.w.phone_ref(s.udp).requests_received("UPDATE");
            let too_large = received(&s.w, s.caller, "SIP/2.0 513", "UPDATE").len();
            if tcp {
                assert_eq!(
                    (relayed, too_large),
                    (1, 1),
                    "{shards} shards\n{}",
                    s.w.dump()
                );
            } else {
                assert_eq!((relayed, too_large), (2, 0), "{shards} shards");
            }
        }
    }
}

/// A CANCEL for a branch whose TCP flow closed while it rang leaves over UDP (the engine sends
/// a message over whatever flow is open when it leaves), so it is retransmitted like any CANCEL
/// over UDP: a lost 200 to the first copy does not leave the device ringing.
#[test]
fn a_cancel_after_the_branchs_tcp_flow_closed_is_retransmitted_over_udp() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 306);
        let dev = s.w.phone_ref(s.tcp).addr;
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        s.w.close_flow(s.tcp);
        s.w.drop_next(1, "SIP/2.0 ", Some("CANCEL"), Some(dev), None);
        s.w.cancel(s.caller, call);
        s.w.run_for(secs(5));
        assert!(
            s.w.phone_ref(s.tcp).requests_received("CANCEL") >= 2,
            "{shards} shards: Timer E over UDP after the flow closed\n{}",
            s.w.dump()
        );
        s.w.run_for(secs(70));
        assert_eq!(s.w.phone_ref(s.caller).outgoing[call].finals(), vec![487]);
        assert_eq!(s.w.proxy_calls(), 0, "{}", s.w.dump());
    }
}

/// A failure the engine reports for TLS to an address (a TLS transmit that found only a plain
/// connection there) leaves the plain TCP flow to it alone: its ringing branch goes on and the
/// device registered over it is still rung.
#[test]
fn a_tls_failure_to_an_address_leaves_its_plain_tcp_flow_and_branches_alone() {
    for shards in [1, 2] {
        let mut s = setup(&config(shards), shards, 307);
        let dev = s.w.phone_ref(s.tcp).addr;
        s.w.behave(s.tcp, Behaviour::default());
        let first = s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        s.w.fail_connect(dev, Transport::Tls);
        s.w.run_for(secs(1));
        assert!(
            s.w.phone_ref(s.caller).outgoing[first].finals().is_empty(),
            "{shards} shards: the TCP branch was ended\n{}",
            s.w.dump()
        );
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert_eq!(
            s.w.phone_ref(s.tcp).requests_received("INVITE"),
            2,
            "{shards} shards: the device is still rung over its flow\n{}",
            s.w.dump()
        );
    }
}
