//! WebSocket (RFC 7118, issue 16 point 6) in the core, on virtual time with one and two shards:
//! a browser client registered over a WS or WSS flow (its Contact's host `….invalid`, RFC 7118
//! §5.2) is listed with its transport and the flow's address, falls into the `web` device class
//! by a `transport` matcher, and is reached only over its flow: a forked INVITE rings it with a
//! `SIP/2.0/WS` Via and the RFC 5658 double Record-Route (the WS side's entry naming the `ws:`
//! listener with `;transport=ws`) beside a UDP device, its CANCEL and the dialog's ACK and BYE
//! follow over the flow, and once the flow is gone the binding is not rung (480 when alone).
//! Security rule: nothing naming `;transport=ws` (a REGISTER's Contact over UDP, a Request-URI,
//! a Route, a `maddr`, a forged in-dialog request) makes sipfork send anywhere but an open flow
//! of a registered device or the peer of a relayed transaction.

use std::net::SocketAddr;

use crate::outbound::{
    none_connects, nothing_toward_the_third_party, raw_invite, received, third_party_byes, THIRD,
};
use crate::outbound_tls::certificates;
use crate::transport::{record_routes, top_via};
use sipfork::core::transport::Transport;
use sipfork::sip::{parse, HeaderName};
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World, DEFAULT_CONFIG};
use sipfork::time::{ms, secs};

/// `shards` shards on UDP 127.0.0.1:5060, WS 127.0.0.2:8080 and WSS 127.0.0.2:8443, with a
/// `web` device class for whatever registers over WS or WSS.
fn config(shards: u16) -> String {
    // Written once per test process (the tests run in parallel).
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| certificates("ws"));
    format!(
        "{}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[[device_classes]]\nname = \"web\"\n\
         transport = [\"ws\", \"wss\"]\n",
        DEFAULT_CONFIG
            .replace("shards = 1", &format!("shards = {shards}"))
            .replace(
                "listen = \"127.0.0.1:5060\"",
                "listen = [\"udp:127.0.0.1:5060\", \"ws:127.0.0.2:8080\", \"wss:127.0.0.2:8443\"]",
            ),
        dir.join("cert.pem").display(),
        dir.join("key.pem").display(),
    )
}

/// The `ws:` / `wss:` listener of [`config`] for `t`.
fn listener(t: Transport) -> &'static str {
    match t {
        Transport::Ws => "127.0.0.2:8080",
        _ => "127.0.0.2:8443",
    }
}

struct Setup {
    w: World,
    caller: PhoneId,
    /// Extension 1001 over a WebSocket (`sip:1001@df7jal23ls0d.invalid;transport=ws`).
    web: PhoneId,
    /// Extension 1001 over UDP.
    udp: PhoneId,
}

/// A caller (1000, UDP), and extension 1001 with a browser over `t` and, if `with_udp`, a UDP
/// device.
fn setup(shards: u16, seed: u64, t: Transport, with_udp: bool) -> Setup {
    let mut w = World::new(&config(shards), shards, seed);
    let caller = w.add_phone("caller", "1000", 5071);
    let web = w.add_phone("browser", "1001", 50_123);
    let udp = w.add_phone("udp-dev", "1001", 5073);
    w.phone(web).contact_host = Some("df7jal23ls0d.invalid".into());
    w.phone(web).contact_params = format!(";transport={t}");
    w.connect(web, t);
    w.register(web, 300);
    if with_udp {
        w.register(udp, 300);
    }
    Setup {
        w,
        caller,
        web,
        udp,
    }
}

/// The devices of extension `number` as the owner shard lists them.
fn devices(w: &World, number: &[u8]) -> Vec<sipfork::core::registrar::Device> {
    w.cores()
        .iter()
        .find_map(|c| c.devices(w.now(), number).filter(|d| !d.is_empty()))
        .unwrap_or_default()
}

#[test]
fn a_browser_over_ws_or_wss_is_listed_with_its_transport_flow_and_the_web_class() {
    for shards in [1, 2] {
        for t in [Transport::Ws, Transport::Wss] {
            let s = setup(shards, 610, t, true);
            let web = s.w.phone_ref(s.web).addr;
            let udp = s.w.phone_ref(s.udp).addr;
            let mut got: Vec<_> = devices(&s.w, b"1001")
                .into_iter()
                .map(|d| (d.transport, d.destination, d.class, d.contact))
                .collect();
            got.sort();
            let name = t.via_token();
            let want_contact = format!("sip:1001@df7jal23ls0d.invalid;transport={t}");
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(
                (got[0].0, got[0].1, got[0].2.as_str()),
                ("UDP", udp, "ip_phone")
            );
            assert_eq!(
                (got[1].0, got[1].1, got[1].2.as_str()),
                (name, web, "web"),
                "{shards} shards"
            );
            assert!(got[1].3.contains(&want_contact), "{:?}", got[1].3);
        }
    }
}

#[test]
fn a_forked_invite_rings_the_browser_over_its_flow_and_cancels_it_there() {
    for shards in [1, 2] {
        for t in [Transport::Ws, Transport::Wss] {
            let mut s = setup(shards, 611, t, true);
            s.w.behave(s.udp, Behaviour::answer_after(ms(200)));
            let call = s.w.call(s.caller, "1001");
            s.w.run_for(secs(2));
            let what = format!("{t}, {shards} shards");
            let invites = received(&s.w, s.web, "INVITE ");
            assert_eq!(invites.len(), 1, "{what}: {}", s.w.dump());
            let via = top_via(invites[0]);
            let want = format!("Via: SIP/2.0/{} {};branch=", t.via_token(), listener(t));
            assert!(via.starts_with(&want), "{what}: {via}");
            // RFC 5658: UDP caller, WebSocket callee: two entries, the top one ours on the
            // WebSocket listener.
            let rr = record_routes(invites[0]);
            assert_eq!(rr.len(), 2, "{what}: {rr:?}");
            assert!(
                rr[0].contains(&format!("sip:{};transport={t};lr", listener(t))),
                "{what}: {rr:?}"
            );
            assert!(rr[1].contains("sip:127.0.0.1:5060;lr"), "{what}: {rr:?}");
            // The UDP device answered: the browser's branch is cancelled over its flow.
            assert_eq!(s.w.phone_ref(s.caller).outgoing[call].dialogs.len(), 1);
            let cancels = received(&s.w, s.web, "CANCEL ");
            assert_eq!(cancels.len(), 1, "{what}: {}", s.w.dump());
            assert!(top_via(cancels[0]).starts_with(&want), "{what}");
            assert!(s.w.unreachable_sends().is_empty(), "{what}: {}", s.w.dump());
            assert!(s.w.connects.is_empty(), "{what}: {:?}", s.w.connects);
        }
    }
}

#[test]
fn the_browser_answers_and_the_ack_and_bye_reach_it_over_its_flow() {
    for shards in [1, 2] {
        let mut s = setup(shards, 612, Transport::Ws, true);
        s.w.behave(s.web, Behaviour::answer_after(ms(100)));
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        let what = format!("{shards} shards");
        assert_eq!(
            s.w.phone_ref(s.caller).outgoing[call].dialogs.len(),
            1,
            "{what}: {}",
            s.w.dump()
        );
        // The 200's Contact is the browser's `.invalid` URI, passed on unchanged.
        let ok = received(&s.w, s.caller, "SIP/2.0 200")[0];
        let m = parse(ok).expect("parses");
        let contact = String::from_utf8_lossy(m.first_value(HeaderName::Contact).unwrap());
        assert!(
            contact.contains("df7jal23ls0d.invalid;transport=ws"),
            "{contact}"
        );
        assert_eq!(received(&s.w, s.udp, "CANCEL ").len(), 1, "{what}");
        let acks = received(&s.w, s.web, "ACK ");
        assert_eq!(acks.len(), 1, "{what}: {}", s.w.dump());
        assert!(top_via(acks[0]).starts_with("Via: SIP/2.0/WS 127.0.0.2:8080;"));
        s.w.hang_up(s.caller, call);
        s.w.run_for(secs(2));
        let byes = received(&s.w, s.web, "BYE ");
        assert_eq!(byes.len(), 1, "{what}: {}", s.w.dump());
        assert!(top_via(byes[0]).starts_with("Via: SIP/2.0/WS 127.0.0.2:8080;"));
        assert!(s.w.phone_ref(s.caller).statuses().contains(&200));
        assert!(s.w.unreachable_sends().is_empty(), "{what}: {}", s.w.dump());
    }
}

#[test]
fn a_browser_whose_websocket_closed_is_not_rung_and_480_when_alone() {
    for shards in [1, 2] {
        let mut s = setup(shards, 613, Transport::Ws, true);
        s.w.close_flow(s.web);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert!(
            received(&s.w, s.web, "INVITE ").is_empty(),
            "{}",
            s.w.dump()
        );
        assert_eq!(received(&s.w, s.udp, "INVITE ").len(), 1);

        let mut s = setup(shards, 614, Transport::Wss, false);
        s.w.close_flow(s.web);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert!(
            received(&s.w, s.web, "INVITE ").is_empty(),
            "{}",
            s.w.dump()
        );
        assert!(
            s.w.phone_ref(s.caller).statuses().contains(&480),
            "{}",
            s.w.dump()
        );
        // Back with a new WebSocket and REGISTER: rung again.
        s.w.connect(s.web, Transport::Wss);
        s.w.register(s.web, 300);
        s.w.call(s.caller, "1001");
        s.w.run_for(secs(1));
        assert_eq!(received(&s.w, s.web, "INVITE ").len(), 1, "{}", s.w.dump());
    }
}

// --- The security rule: `;transport=ws` never names a destination: sipfork sends only over an
// open flow of a registered device or back to the peer of a relayed transaction. ---

#[test]
fn a_ws_contact_registered_over_udp_is_never_rung() {
    for shards in [1, 2] {
        let mut w = World::new(&config(shards), shards, 615);
        let caller = w.add_phone("caller", "1000", 5071);
        let third: SocketAddr = THIRD.parse().unwrap();
        // Over UDP, naming the third party (and, for another, an `.invalid` host) with
        // `;transport=ws`: sipfork opens no WebSocket, so neither is reachable.
        let evil = w.add_phone_behind_nat("evil", "1002", 5075, third);
        w.phone(evil).contact_params = ";transport=ws".into();
        w.register(evil, 300);
        let odd = w.add_phone("odd", "1002", 5076);
        w.phone(odd).contact_host = Some("df7jal23ls0d.invalid".into());
        w.phone(odd).contact_params = ";transport=wss".into();
        w.register(odd, 300);
        assert_eq!(devices(&w, b"1002").len(), 2, "registered and listed");
        w.call(caller, "1002");
        w.run_for(secs(1));
        assert!(
            w.phone_ref(caller).statuses().contains(&480),
            "{}",
            w.dump()
        );
        assert!(received(&w, evil, "INVITE ").is_empty());
        assert!(received(&w, odd, "INVITE ").is_empty());
        nothing_toward_the_third_party(&w);
        assert!(w.connects.is_empty());
    }
}

#[test]
fn an_invite_naming_a_ws_third_party_reaches_nobody() {
    for shards in [1, 2] {
        let mut w = World::new(&config(shards), shards, 616);
        let caller = w.add_phone("caller", "1000", 5071);
        let from = w.phone_ref(caller).addr;
        let contact = format!("Contact: <sip:1000@{THIRD};transport=ws>\r\n");
        let cases = [
            raw_invite(
                &format!("sip:1001@{THIRD};transport=ws"),
                from,
                "a",
                &contact,
            ),
            raw_invite(
                "sip:1001@127.0.0.1:5060",
                from,
                "b",
                &format!("Route: <sip:{THIRD};transport=wss;lr>\r\n{contact}"),
            ),
            raw_invite(
                "sip:1001@127.0.0.2:8080;transport=ws;maddr=127.0.0.99",
                from,
                "c",
                &contact,
            ),
            raw_invite(
                "sip:1001@df7jal23ls0d.invalid;transport=ws",
                from,
                "d",
                &contact,
            ),
        ];
        none_connects(&mut w, caller, &cases);
        assert!(w.unreachable_sends().is_empty(), "{}", w.dump());
    }
}

#[test]
fn a_forged_in_dialog_request_naming_a_ws_third_party_reaches_only_the_browser() {
    for shards in [1, 2] {
        let mut s = setup(shards, 617, Transport::Ws, false);
        s.w.behave(s.web, Behaviour::answer_after(ms(100)));
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(s.w.phone_ref(s.caller).outgoing[call].dialogs.len(), 1);
        let ok = received(&s.w, s.caller, "SIP/2.0 200")[0].to_vec();
        let caller = s.w.phone_ref(s.caller).addr;
        // Forged tokens first (refused, nothing sent on), then the real ones: the request goes
        // to the browser's flow, never to the third party its Request-URI and last Route name
        // with `;transport=ws`.
        for bye in third_party_byes(&ok, caller, "ws") {
            s.w.send_raw(s.caller, bye.as_bytes());
            s.w.run_for(secs(1));
            nothing_toward_the_third_party(&s.w);
        }
        let byes = received(&s.w, s.web, "BYE ");
        assert_eq!(byes.len(), 1, "{}", s.w.dump());
        assert!(top_via(byes[0]).starts_with("Via: SIP/2.0/WS "));
        assert!(s.w.connects.is_empty());
    }
}

// --- Over a connection the connection is the way to the device: a Contact naming another
// port on the same IP (which `nat = "auto"` would trust over UDP) never redirects the dialog. ---

#[test]
fn a_browser_contact_naming_another_device_does_not_redirect_its_dialog() {
    for shards in [1, 2] {
        let mut s = setup(shards, 618, Transport::Ws, true);
        let what = format!("{shards} shards");
        // After registering, the browser's Contact names the UDP device's address and port.
        let udp = s.w.phone_ref(s.udp).addr;
        s.w.phone(s.web).contact_host = Some(udp.to_string());
        s.w.behave(s.web, Behaviour::answer_after(ms(100)));
        let call = s.w.call(s.caller, "1001");
        s.w.run_for(secs(2));
        assert_eq!(
            s.w.phone_ref(s.caller).outgoing[call].dialogs.len(),
            1,
            "{what}: {}",
            s.w.dump()
        );
        assert_eq!(
            received(&s.w, s.web, "ACK ").len(),
            1,
            "{what}: {}",
            s.w.dump()
        );
        s.w.hang_up(s.caller, call);
        s.w.run_for(secs(2));
        assert_eq!(
            received(&s.w, s.web, "BYE ").len(),
            1,
            "{what}: {}",
            s.w.dump()
        );
        // The UDP device got its INVITE, CANCEL and the ACK of its 487, nothing of the
        // browser's dialog.
        assert_eq!(
            received(&s.w, s.udp, "ACK ").len(),
            1,
            "{what}: {}",
            s.w.dump()
        );
        assert!(
            received(&s.w, s.udp, "BYE ").is_empty(),
            "{what}: {}",
            s.w.dump()
        );
        assert!(s.w.unreachable_sends().is_empty(), "{what}: {}", s.w.dump());
    }
}

#[test]
fn a_calling_browser_contact_naming_another_device_does_not_redirect_its_dialog() {
    for shards in [1, 2] {
        let mut s = setup(shards, 619, Transport::Ws, true);
        let what = format!("{shards} shards");
        s.w.register(s.caller, 300);
        s.w.behave(s.caller, Behaviour::answer_after(ms(100)));
        let udp = s.w.phone_ref(s.udp).addr;
        s.w.phone(s.web).contact_host = Some(udp.to_string());
        let call = s.w.call(s.web, "1000");
        s.w.run_for(secs(2));
        assert_eq!(
            s.w.phone_ref(s.web).outgoing[call].dialogs.len(),
            1,
            "{what}: {}",
            s.w.dump()
        );
        // The callee hangs up: its BYE reaches the browser over its WebSocket.
        s.w.hang_up_incoming(s.caller, 0);
        s.w.run_for(secs(2));
        let byes = received(&s.w, s.web, "BYE ");
        assert_eq!(byes.len(), 1, "{what}: {}", s.w.dump());
        assert!(top_via(byes[0]).starts_with("Via: SIP/2.0/WS 127.0.0.2:8080;"));
        assert!(
            received(&s.w, s.udp, "BYE ").is_empty(),
            "{what}: {}",
            s.w.dump()
        );
        // (Not checked here: the simulated phone sends its own in-dialog requests to the first
        // Record-Route's address rather than over its WebSocket, which the simulator does not
        // deliver; only what sipfork sends toward the browser is the point.)
    }
}
