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

fn top_via(bytes: &[u8]) -> String {
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
fn big_invite(w: &mut World, from: PhoneId, size: usize) {
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
