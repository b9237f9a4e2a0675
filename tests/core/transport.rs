//! The core and transports (issue 16, points 3 and 4): what a binding registered over TCP or
//! TLS records, the transport token of the Via sipfork adds toward a stream flow, bindings whose
//! flow closed (480 when none is left), and requests too large for UDP (RFC 3261 §18.1.1: one
//! that came over TCP gets 513 toward a device reached over UDP; sent regardless of size over a
//! stream flow, and kept on UDP when it came over UDP). On virtual
//! time, with one and two shards (the engine tells every shard of a closed connection, and the
//! simulator does the same).

use sipfork::core::transport::Transport;
use sipfork::testing::sim::{PhoneId, World, DEFAULT_CONFIG};
use sipfork::time::secs;

/// The config of the simulated worlds with `shards` shards.
fn config(shards: u16) -> String {
    DEFAULT_CONFIG.replace("shards = 1", &format!("shards = {shards}"))
}

struct Setup {
    w: World,
    caller: PhoneId,
    /// Extension 1001 over TCP.
    tcp: PhoneId,
    /// Extension 1001 over UDP.
    udp: PhoneId,
}

/// A caller (1000, UDP), and extension 1001 with a TCP device and, if `with_udp`, a UDP one.
fn setup(shards: u16, seed: u64, with_udp: bool) -> Setup {
    let mut w = World::new(&config(shards), shards, seed);
    let caller = w.add_phone("caller", "1000", 5071);
    let tcp = w.add_phone("tcp-dev", "1001", 5072);
    let udp = w.add_phone("udp-dev", "1001", 5073);
    w.connect(tcp, Transport::Tcp);
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

/// The devices of extension 1001 as the owner shard lists them.
fn devices(w: &World) -> Vec<sipfork::core::registrar::Device> {
    w.cores()
        .iter()
        .find_map(|c| c.devices(w.now(), b"1001").filter(|d| !d.is_empty()))
        .unwrap_or_default()
}

pub(crate) fn top_via(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find(|l| l.starts_with("Via:") || l.starts_with("v:"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_binding_over_tcp_records_its_transport_and_its_flow() {
    for shards in [1, 2] {
        let s = setup(shards, 161, true);
        let mut got: Vec<_> = devices(&s.w)
            .into_iter()
            .map(|d| (d.transport, d.destination))
            .collect();
        got.sort();
        let tcp_addr = s.w.phone_ref(s.tcp).addr;
        let udp_addr = s.w.phone_ref(s.udp).addr;
        assert_eq!(
            got,
            vec![("TCP", tcp_addr), ("UDP", udp_addr)],
            "{shards} shards"
        );
    }
}

#[test]
fn a_call_rings_the_tcp_device_with_a_tcp_via_and_the_udp_device_with_a_udp_via() {
    for shards in [1, 2] {
        let mut s = setup(shards, 162, true);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        let tcp_invite = &s.w.phone_ref(s.tcp).incoming[0].invite;
        let udp_invite = &s.w.phone_ref(s.udp).incoming[0].invite;
        assert!(
            top_via(tcp_invite).starts_with("Via: SIP/2.0/TCP 127.0.0.1:5060;branch="),
            "{shards} shards: {}",
            top_via(tcp_invite)
        );
        assert!(
            top_via(udp_invite).starts_with("Via: SIP/2.0/UDP 127.0.0.1:5060;branch="),
            "{shards} shards: {}",
            top_via(udp_invite)
        );
    }
}

#[test]
fn a_binding_whose_flow_closed_is_not_rung_and_480_when_none_is_left() {
    for shards in [1, 2] {
        // Beside a UDP device: only the UDP device rings.
        let mut s = setup(shards, 163, true);
        s.w.close_flow(s.tcp);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert!(s.w.phone_ref(s.tcp).incoming.is_empty(), "{}", s.w.dump());
        assert_eq!(s.w.phone_ref(s.udp).incoming.len(), 1, "{}", s.w.dump());
        // The binding stays listed (it expires or is replaced as usual).
        assert_eq!(devices(&s.w).len(), 2);

        // Alone: the caller gets 480 and nothing is sent to the gone flow.
        let mut s = setup(shards, 164, false);
        s.w.close_flow(s.tcp);
        let sent_before = s.w.log.len();
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert!(s.w.phone_ref(s.tcp).incoming.is_empty(), "{}", s.w.dump());
        assert_eq!(
            s.w.phone_ref(s.caller).statuses().last(),
            Some(&480),
            "{shards} shards\n{}",
            s.w.dump()
        );
        let tcp_addr = s.w.phone_ref(s.tcp).addr;
        assert!(s.w.log[sent_before..].iter().all(|t| t.to != tcp_addr));

        // Reconnected and registered again: it rings again.
        s.w.connect(s.tcp, Transport::Tcp);
        s.w.register(s.tcp, 300);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert_eq!(s.w.phone_ref(s.tcp).incoming.len(), 1, "{}", s.w.dump());
    }
}

/// An INVITE of about `size` bytes from `from` to extension 1001.
pub(crate) fn big_invite(w: &mut World, from: PhoneId, size: usize) {
    let addr = w.phone_ref(from).addr;
    let pad = "a=x-pad:".to_string() + &"x".repeat(size) + "\r\n";
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0\r\n{pad}"
    );
    let extra = format!("Contact: <sip:1000@{addr}>\r\nContent-Type: application/sdp\r\n");
    w.request(from, "INVITE", "1001", &extra, &sdp);
}

#[test]
fn a_request_over_tcp_too_large_for_udp_gets_513_when_its_only_device_is_on_udp() {
    for shards in [1, 2] {
        let mut w = World::new(&config(shards), shards, 165);
        let caller = w.add_phone("caller", "1000", 5071);
        let udp = w.add_phone("udp-dev", "1001", 5073);
        w.register(udp, 300);
        // The caller itself is on TCP: its INVITE may be as large as it likes.
        w.connect(caller, Transport::Tcp);
        big_invite(&mut w, caller, 3000);
        w.run_for(secs(1));
        assert!(w.phone_ref(udp).incoming.is_empty(), "{}", w.dump());
        assert_eq!(
            w.phone_ref(caller).statuses().last(),
            Some(&513),
            "{shards} shards\n{}",
            w.dump()
        );
        // A request that fits is forwarded as usual.
        big_invite(&mut w, caller, 500);
        w.run_for(secs(1));
        assert_eq!(w.phone_ref(udp).incoming.len(), 1, "{}", w.dump());
        // A large request that came over UDP stays on UDP (its sender chose UDP).
        let udp_caller = w.add_phone("udp-caller", "1002", 5074);
        big_invite(&mut w, udp_caller, 3000);
        w.run_for(secs(1));
        assert_eq!(w.phone_ref(udp).incoming.len(), 2, "{}", w.dump());
        assert!(w.phone_ref(udp).incoming[1].invite.len() > 3000);
    }
}

#[test]
fn a_request_too_large_for_udp_goes_over_the_tcp_flow_and_skips_the_udp_device() {
    for shards in [1, 2] {
        let mut s = setup(shards, 166, true);
        s.w.connect(s.caller, Transport::Tcp);
        big_invite(&mut s.w, s.caller, 3000);
        s.w.run_for(secs(1));
        let tcp = s.w.phone_ref(s.tcp);
        assert_eq!(tcp.incoming.len(), 1, "{}", s.w.dump());
        assert!(tcp.incoming[0].invite.len() > 3000);
        assert!(top_via(&tcp.incoming[0].invite).starts_with("Via: SIP/2.0/TCP "));
        assert!(s.w.phone_ref(s.udp).incoming.is_empty(), "{}", s.w.dump());
        // The TCP device's answers reach the caller.
        assert!(
            s.w.phone_ref(s.caller).statuses().contains(&180),
            "{}",
            s.w.dump()
        );
    }
}

// --- Double Record-Route on a transport change (issue 16 point 5, RFC 5658) ---

use sipfork::sip::{parse, HeaderName};
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::cseq_method;

/// The Record-Route values of `bytes`, top first.
pub(crate) fn record_routes(bytes: &[u8]) -> Vec<String> {
    let m = parse(bytes).expect("parses");
    m.values(HeaderName::RecordRoute)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The Route values of `bytes`, top first.
fn routes(bytes: &[u8]) -> Vec<String> {
    let m = parse(bytes).expect("parses");
    m.values(HeaderName::Route)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The route token (`sf` parameter) of a Record-Route or Route value.
fn token(value: &str) -> &str {
    let at = value.find(";sf=").expect("our token") + 4;
    value[at..].trim_end_matches('>')
}

/// The messages phone `id` received whose first line starts with `start` (a method, or
/// `SIP/2.0 200`) and whose CSeq method is `cseq`.
pub(crate) fn received<'a>(w: &'a World, id: PhoneId, start: &str, cseq: &str) -> Vec<&'a [u8]> {
    w.phone_ref(id)
        .inbox
        .iter()
        .map(|(_, b)| &b[..])
        .filter(|b| b.starts_with(start.as_bytes()) && cseq_method(b) == cseq)
        .collect()
}

/// A UDP caller (1000) and extension 1001 on one TCP device that answers after 100 ms; the call
/// is answered.
fn answered_udp_to_tcp(shards: u16, seed: u64) -> (Setup, usize) {
    let mut s = setup(shards, seed, false);
    s.w.behave(s.tcp, Behaviour::answer_after(sipfork::time::ms(100)));
    let call = s.w.call(s.caller, "1001");
    s.w.run_for(secs(2));
    assert_eq!(
        s.w.phone_ref(s.caller).outgoing[call].dialogs.len(),
        1,
        "{}",
        s.w.dump()
    );
    (s, call)
}

#[test]
fn udp_to_tcp_writes_two_record_routes_top_one_for_tcp_and_the_2xx_carries_both() {
    for shards in [1, 2] {
        let (s, _) = answered_udp_to_tcp(shards, 171);
        let invite = &s.w.phone_ref(s.tcp).incoming[0].invite;
        let rr = record_routes(invite);
        assert_eq!(rr.len(), 2, "{shards} shards: {rr:?}");
        assert!(
            rr[0].starts_with("<sip:127.0.0.1:5060;transport=tcp;lr;sf="),
            "{}",
            rr[0]
        );
        assert!(rr[1].starts_with("<sip:127.0.0.1:5060;lr;sf="), "{}", rr[1]);
        assert_eq!(token(&rr[0]), token(&rr[1]), "one token for both");
        // Written as two rows, right below our Via.
        let text = String::from_utf8_lossy(invite);
        let rows: Vec<&str> = text.lines().skip(1).take(3).collect();
        assert!(rows[0].starts_with("Via: SIP/2.0/TCP "), "{rows:?}");
        assert_eq!(rows[1], format!("Record-Route: {}", rr[0]));
        assert_eq!(rows[2], format!("Record-Route: {}", rr[1]));
        // The 2xx reaches the caller with both, in the same order.
        let ok = received(&s.w, s.caller, "SIP/2.0 200", "INVITE");
        assert!(!ok.is_empty(), "{}", s.w.dump());
        assert_eq!(record_routes(ok[0]), rr, "{shards} shards");
    }
}

#[test]
fn the_callees_bye_over_tcp_reaches_the_udp_caller_without_our_routes() {
    for shards in [1, 2] {
        let (mut s, _) = answered_udp_to_tcp(shards, 172);
        // The device's BYE carries both Routes (its route set is the Record-Route list).
        let rr = record_routes(&s.w.phone_ref(s.tcp).incoming[0].invite);
        s.w.hang_up_incoming(s.tcp, 0);
        s.w.run_for(secs(1));
        let byes = received(&s.w, s.caller, "BYE ", "BYE");
        assert_eq!(byes.len(), 1, "{shards} shards\n{}", s.w.dump());
        let bye = byes[0];
        assert!(
            routes(bye).iter().all(|r| !r.contains("127.0.0.1:5060")),
            "no Route of ours: {:?}",
            routes(bye)
        );
        assert!(top_via(bye).starts_with("Via: SIP/2.0/UDP 127.0.0.1:5060;"));
        assert_eq!(rr.len(), 2);
        // The caller's answer goes back to the device (the simulated caller answers 481 to a
        // BYE for a call it placed: the routing is what counts here).
        assert!(
            !received(&s.w, s.tcp, "SIP/2.0 ", "BYE").is_empty(),
            "{}",
            s.w.dump()
        );
        // The dialog ended: once the transactions' timers ran out, nothing of the call is left.
        s.w.run_for(secs(64));
        assert_eq!(s.w.proxy_calls(), 0, "the dialog ended: {}", s.w.dump());
    }
}

#[test]
fn the_callers_bye_over_udp_reaches_the_device_over_its_tcp_flow() {
    for shards in [1, 2] {
        let (mut s, call) = answered_udp_to_tcp(shards, 173);
        // The ACK for the 2xx went the same way, both Routes of ours removed.
        let acks = received(&s.w, s.tcp, "ACK ", "ACK");
        assert_eq!(acks.len(), 1, "{}", s.w.dump());
        assert!(routes(acks[0]).is_empty(), "{:?}", routes(acks[0]));
        assert!(top_via(acks[0]).starts_with("Via: SIP/2.0/TCP 127.0.0.1:5060;"));
        callers_bye_reaches_the_tcp_device(&mut s, call, shards);
    }
}

#[test]
fn the_same_transport_on_both_sides_keeps_one_record_route() {
    for shards in [1, 2] {
        // UDP to UDP: the entry sipfork always wrote.
        let mut s = setup(shards, 174, true);
        s.w.close_flow(s.tcp);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        let rr = record_routes(&s.w.phone_ref(s.udp).incoming[0].invite);
        assert_eq!(rr.len(), 1, "{rr:?}");
        assert!(rr[0].starts_with("<sip:127.0.0.1:5060;lr;sf="), "{}", rr[0]);
        // TCP to TCP: one entry naming the TCP listener, so both peers' in-dialog requests come
        // back over TCP (a bare `sip:` URI would send them over UDP).
        let mut s = setup(shards, 175, false);
        s.w.connect(s.caller, Transport::Tcp);
        s.w.behave(s.tcp, Behaviour::answer_after(sipfork::time::ms(100)));
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        let rr = record_routes(&s.w.phone_ref(s.tcp).incoming[0].invite);
        assert_eq!(rr.len(), 1, "{rr:?}");
        assert!(
            rr[0].starts_with("<sip:127.0.0.1:5060;transport=tcp;lr;sf="),
            "{}",
            rr[0]
        );
        let ok = received(&s.w, s.caller, "SIP/2.0 200", "INVITE");
        assert_eq!(ok.len(), 1, "{}", s.w.dump());
        assert_eq!(record_routes(ok[0]), rr, "the caller sees the same entry");
        // The caller's BYE through it reaches the device over its flow, our Route removed.
        callers_bye_reaches_the_tcp_device(&mut s, call, shards);
    }
}

/// The caller hangs up call `call`: its BYE reaches the TCP device over its flow with no Route
/// of ours, and the device's answer ends the caller's dialog.
fn callers_bye_reaches_the_tcp_device(s: &mut Setup, call: usize, shards: u16) {
    s.w.hang_up(s.caller, call);
    s.w.run_for(secs(1));
    let byes = received(&s.w, s.tcp, "BYE ", "BYE");
    assert_eq!(byes.len(), 1, "{shards} shards\n{}", s.w.dump());
    assert!(routes(byes[0]).is_empty(), "{:?}", routes(byes[0]));
    assert!(top_via(byes[0]).starts_with("Via: SIP/2.0/TCP 127.0.0.1:5060;"));
    assert!(s.w.phone_ref(s.tcp).incoming[0].bye);
    assert!(
        s.w.phone_ref(s.caller).outgoing[call].dialogs[0].bye_done,
        "{}",
        s.w.dump()
    );
}

#[test]
fn a_tcp_caller_forking_to_tcp_and_udp_devices_gets_one_or_two_record_routes_per_branch() {
    for shards in [1, 2] {
        let mut s = setup(shards, 176, true);
        s.w.connect(s.caller, Transport::Tcp);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        let tcp = record_routes(&s.w.phone_ref(s.tcp).incoming[0].invite);
        let udp = record_routes(&s.w.phone_ref(s.udp).incoming[0].invite);
        assert_eq!(tcp.len(), 1, "{tcp:?}");
        assert!(
            tcp[0].starts_with("<sip:127.0.0.1:5060;transport=tcp;lr;sf="),
            "{}",
            tcp[0]
        );
        assert_eq!(udp.len(), 2, "{udp:?}");
        assert!(
            udp[0].starts_with("<sip:127.0.0.1:5060;lr;sf="),
            "{}",
            udp[0]
        );
        assert!(
            udp[1].starts_with("<sip:127.0.0.1:5060;transport=tcp;lr;sf="),
            "{}",
            udp[1]
        );
        assert_eq!(token(&udp[0]), token(&tcp[0]));
        assert_eq!(token(&udp[1]), token(&tcp[0]));
    }
}

#[test]
fn a_forged_in_dialog_request_naming_our_two_entries_reaches_nobody() {
    for shards in [1, 2] {
        let (mut s, _) = answered_udp_to_tcp(shards, 177);
        let invite = s.w.phone_ref(s.tcp).incoming[0].invite.clone();
        let rr = record_routes(&invite);
        let m = parse(&invite).expect("parses");
        let call_id = String::from_utf8_lossy(m.call_id().expect("Call-ID")).into_owned();
        let from =
            String::from_utf8_lossy(m.first_value(HeaderName::From).expect("From")).into_owned();
        let to = String::from_utf8_lossy(m.first_value(HeaderName::To).expect("To")).into_owned();
        let good = token(&rr[0]).to_string();
        let bad = "0000.1.1.0123456789abcdef";
        let dev = s.w.phone_ref(s.tcp).addr;
        // Both entries forged; and a forged first entry with the real token second (the token
        // is checked on the first).
        for (i, (first, second)) in [(bad, bad), (bad, good.as_str())].into_iter().enumerate() {
            let bye = format!(
                "BYE sip:1000@127.0.0.1:5071 SIP/2.0\r\n\
                 Via: SIP/2.0/TCP {dev};branch=z9hG4bKforged{i}\r\n\
                 Route: <sip:127.0.0.1:5060;transport=tcp;lr;sf={first}>, \
                 <sip:127.0.0.1:5060;lr;sf={second}>\r\n\
                 Max-Forwards: 70\r\nFrom: {to};tag=forged\r\nTo: {from}\r\n\
                 Call-ID: {call_id}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
            );
            let sent_before = s.w.log.len();
            s.w.send_raw(s.tcp, bye.as_bytes());
            s.w.run_for(secs(1));
            let caller = s.w.phone_ref(s.caller).addr;
            assert!(
                s.w.log[sent_before..].iter().all(|t| t.to != caller),
                "{shards} shards, case {i}\n{}",
                s.w.dump()
            );
            assert!(received(&s.w, s.caller, "BYE ", "BYE").is_empty());
            let answers = received(&s.w, s.tcp, "SIP/2.0 481", "BYE");
            assert_eq!(answers.len(), i + 1, "{}", s.w.dump());
        }
        // The real dialog is untouched: the caller's BYE still ends it.
        assert_eq!(s.w.phone_ref(s.caller).outgoing[0].dialogs.len(), 1);
    }
}

#[test]
fn the_stream_sides_entry_names_the_tcp_listeners_port_and_its_routes_are_ours() {
    for shards in [1, 2] {
        let cfg = config(shards).replace(
            "listen = \"127.0.0.1:5060\"",
            "listen = [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5070\"]",
        );
        assert!(cfg.contains("tcp:127.0.0.1:5070"));
        let mut w = World::new(&cfg, shards, 178);
        let caller = w.add_phone("caller", "1000", 5071);
        let tcp = w.add_phone("tcp-dev", "1001", 5072);
        w.connect(tcp, Transport::Tcp);
        w.register(tcp, 300);
        w.behave(tcp, Behaviour::answer_after(sipfork::time::ms(100)));
        let call = w.call(caller, "1001");
        w.run_for(secs(2));
        assert_eq!(w.phone_ref(caller).outgoing[call].dialogs.len(), 1);
        let rr = record_routes(&w.phone_ref(tcp).incoming[0].invite);
        assert_eq!(rr.len(), 2, "{rr:?}");
        assert!(
            rr[0].starts_with("<sip:127.0.0.1:5070;transport=tcp;lr;sf="),
            "{}",
            rr[0]
        );
        assert!(rr[1].starts_with("<sip:127.0.0.1:5060;lr;sf="), "{}", rr[1]);
        // The device's BYE names the TCP listener first: both entries are recognised as ours.
        w.hang_up_incoming(tcp, 0);
        w.run_for(secs(1));
        let byes = received(&w, caller, "BYE ", "BYE");
        assert_eq!(byes.len(), 1, "{shards} shards\n{}", w.dump());
        assert!(routes(byes[0]).is_empty(), "{:?}", routes(byes[0]));
    }
}
