//! Overload control on virtual time (`core::overload`, issue 12 point 2): what a shedding shard
//! refuses (new INVITEs, REGISTERs beyond their share: `503` + `Retry-After`), what it never
//! refuses (in-dialog requests, CANCEL, ACK, responses, emergency calls), RFC 7339 `oc` values
//! only toward peers that announce support, and the per-source rate limit (tolerant of a NAT's
//! many phones, trusted peers and emergency calls exempt).

use std::net::SocketAddr;

use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World};
use sipfork::time::{ms, secs};

fn config(overload: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:5060"
domain = "example.com"
[registrar]
min_expires = 10
[auth]
mode = "none"
[overload]
retry_after = 7
{overload}
[[extensions]]
numbers = "1000-1099"
[[extensions]]
numbers = "112"
[[emergency]]
numbers = ["112"]
[[trusted]]
cidr = "203.0.113.0/24"
name = "carrier"
"#
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Devices for 1000 (answers after 50 ms), 1001 (answers after 10 s: rings), 112 (answers);
/// a caller at `caller`.
fn world(overload: &str, caller: &str) -> (World, PhoneId, [PhoneId; 3]) {
    let mut w = World::new(&config(overload), 1, 7);
    let devices = [("1000", 50), ("1001", 10_000), ("112", 50)].map(|(n, after)| {
        let d = w.add_phone(
            &format!("d{n}"),
            n,
            5100 + n.len() as u16 * 10 + after as u16 % 7,
        );
        w.behave(d, Behaviour::answer_after(ms(after)));
        w.register(d, 3600);
        d
    });
    let caller = w.add_phone_at("caller", "1050", addr(caller));
    w.run_for(ms(100));
    (w, caller, devices)
}

fn inbox_text(w: &World, id: PhoneId) -> Vec<String> {
    w.phone_ref(id)
        .inbox
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect()
}

/// The value of metric `name` whose labels include `label = value` (any, when `label` is "").
fn metric(w: &World, name: &str, label: (&str, &str)) -> u64 {
    let mut sink = sipfork::core::metrics::MetricSink::default();
    w.cores()[0].export_metrics(&mut sink);
    sink.samples
        .iter()
        .find(|s| {
            s.name == name
                && (label.0.is_empty()
                    || s.labels.iter().any(|(k, v)| *k == label.0 && v == label.1))
        })
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("{name} {label:?} not exported"))
}

#[test]
fn a_shed_invite_gets_503_with_retry_after_before_any_fork() {
    let (mut w, caller, [d1000, ..]) = world("", "127.0.0.1:5070");
    w.core_mut(0).set_load(Some(100));
    let call = w.call(caller, "1000");
    w.run_for(secs(1));
    assert_eq!(w.phone_ref(caller).outgoing[call].finals(), vec![503]);
    let refusal = inbox_text(&w, caller)
        .into_iter()
        .find(|t| t.starts_with("SIP/2.0 503"))
        .unwrap();
    assert!(refusal.contains("\r\nRetry-After: 7\r\n"), "{refusal}");
    assert!(
        !refusal.contains("oc="),
        "the caller did not announce oc: {refusal}"
    );
    assert_eq!(w.phone_ref(d1000).requests_received("INVITE"), 0);
    assert_eq!(
        metric(&w, "sipfork_overload_shed_total", ("method", "INVITE")),
        1
    );
    assert_eq!(metric(&w, "sipfork_overload_reduction", ("", "")), 100);
    assert_eq!(w.proxy_calls(), 0, "a shed INVITE leaves no state");

    // Back to the engine's samples (none: not overloaded): the next call rings and is answered.
    w.core_mut(0).set_load(None);
    let call = w.call(caller, "1000");
    w.run_for(secs(2));
    assert_eq!(w.phone_ref(caller).outgoing[call].finals(), vec![200]);
}

#[test]
fn in_dialog_requests_cancel_ack_and_responses_pass_while_shedding() {
    let (mut w, caller, [d1000, d1001, _]) = world("", "127.0.0.1:5070");
    // Call a: established. Call b: ringing. Call c: forked, answered after shedding started.
    let a = w.call(caller, "1000");
    w.run_for(secs(1));
    assert_eq!(w.phone_ref(caller).outgoing[a].finals(), vec![200]);
    let b = w.call(caller, "1001");
    w.run_for(ms(200));
    w.behave(d1000, Behaviour::answer_after(ms(300)));
    let c = w.call(caller, "1000");
    w.run_for(ms(50));
    let acks_before = w.phone_ref(d1000).requests_received("ACK");

    w.core_mut(0).set_load(Some(100));
    w.cancel(caller, b);
    w.hang_up(caller, a);
    w.run_for(secs(2));
    let out = &w.phone_ref(caller).outgoing;
    assert_eq!(out[b].cancel_status, Some(200), "CANCEL passes");
    assert_eq!(out[b].finals(), vec![487]);
    assert_eq!(w.phone_ref(d1001).requests_received("CANCEL"), 1);
    assert!(out[a].dialogs[0].bye_done, "BYE passes and is answered");
    assert_eq!(out[c].finals(), vec![200], "the device's 2xx is relayed");
    assert_eq!(
        w.phone_ref(d1000).requests_received("ACK"),
        acks_before + 1,
        "the caller's ACK of the 2xx reaches the device"
    );
    assert_eq!(
        metric(&w, "sipfork_overload_shed_total", ("method", "INVITE")),
        0
    );
}

#[test]
fn emergency_calls_are_never_shed() {
    let (mut w, caller, [.., d112]) = world("", "127.0.0.1:5070");
    w.core_mut(0).set_load(Some(100));
    let call = w.call(caller, "112");
    w.run_for(secs(1));
    assert_eq!(w.phone_ref(caller).outgoing[call].finals(), vec![200]);
    assert_eq!(w.phone_ref(d112).requests_received("INVITE"), 1);
}

#[test]
fn registers_beyond_their_share_are_shed() {
    let (mut w, _, _) = world("register_share = 50", "127.0.0.1:5070");
    w.core_mut(0).set_load(Some(100));
    let phones: Vec<PhoneId> = (0..10)
        .map(|i| w.add_phone(&format!("p{i}"), &format!("10{:02}", 20 + i), 6000 + i))
        .collect();
    for &p in &phones {
        w.start_register(p, 600);
    }
    w.run_for(ms(100));
    let registered = phones
        .iter()
        .filter(|&&p| w.phone_ref(p).registered)
        .count();
    assert_eq!(registered, 5, "half the REGISTERs are served at any load");
    let refused = phones
        .iter()
        .filter(|&&p| {
            inbox_text(&w, p)
                .iter()
                .any(|t| t.starts_with("SIP/2.0 503") && t.contains("Retry-After: 7"))
        })
        .count();
    assert_eq!(refused, 5);
    assert_eq!(
        metric(&w, "sipfork_overload_shed_total", ("method", "REGISTER")),
        5
    );
}

const INVITE: &str = "INVITE sip:1000@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-oc-BRANCH;rport{OC}\r\nMax-Forwards: 70\r\nFrom: <sip:1050@example.com>;tag=f1\r\nTo: <sip:1000@example.com>\r\nCall-ID: oc-BRANCH@test\r\nCSeq: 1 INVITE\r\nContact: <sip:1050@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n";

#[test]
fn oc_values_go_only_to_peers_that_announce_support() {
    let (mut w, caller, _) = world("oc_validity_ms = 500", "127.0.0.1:5070");
    w.core_mut(0).set_load(Some(40));
    // 40 %: of five INVITEs, two are refused (spread evenly: the 3rd and the 5th); the 5th
    // announces oc, the 3rd does not.
    for i in 0..5 {
        let oc = if i == 4 { ";oc" } else { "" };
        let req = INVITE.replace("BRANCH", &i.to_string()).replace("{OC}", oc);
        w.send_raw(caller, req.as_bytes());
        w.run_for(ms(10));
    }
    let refusals: Vec<String> = inbox_text(&w, caller)
        .into_iter()
        .filter(|t| t.starts_with("SIP/2.0 503"))
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    for r in &refusals {
        let via = r.lines().find(|l| l.starts_with("Via:")).unwrap();
        if via.contains("branch=z9hG4bK-oc-4;") {
            assert!(
                via.contains(";oc=40;oc-validity=500;oc-seq=1800000000.")
                    && via.contains(";oc-algo=\"loss\""),
                "{via}"
            );
        } else {
            assert!(
                !via.contains(";oc"),
                "no oc toward a peer without it: {via}"
            );
        }
    }
    assert_eq!(metric(&w, "sipfork_overload_oc_total", ("", "")), 1);
}

/// RFC 7339 §5.2: the responses sipfork sends on a call to a client that announced `oc` carry the
/// shard's current reduction (so the client throttles before its requests are refused); a client
/// without `oc` gets the responses unchanged.
#[test]
fn responses_on_a_call_tell_announcing_clients_the_reduction() {
    let (mut w, caller, _) = world("oc_validity_ms = 500", "127.0.0.1:5070");
    let plain = w.add_phone_at("plain", "1051", addr("127.0.0.1:5071"));
    w.core_mut(0).set_load(Some(40));
    // The first INVITE of five is admitted at 40 %; its 180 and 200 come back relayed.
    let req = INVITE.replace("BRANCH", "r0").replace("{OC}", ";oc");
    w.send_raw(caller, req.as_bytes());
    w.run_for(ms(200));
    let relayed: Vec<String> = inbox_text(&w, caller)
        .into_iter()
        .filter(|t| t.starts_with("SIP/2.0 1") || t.starts_with("SIP/2.0 200"))
        .collect();
    // 100 Trying (sipfork's own), 180 and 200 (relayed).
    assert_eq!(relayed.len(), 3, "{:#?}", inbox_text(&w, caller));
    for r in &relayed {
        let via = r.lines().find(|l| l.starts_with("Via:")).unwrap();
        assert!(
            via.contains(";oc=40;oc-validity=500;oc-seq=1800000000.") && via.contains("oc-algo"),
            "{via}"
        );
    }
    let before = metric(&w, "sipfork_overload_oc_total", ("", ""));
    assert_eq!(before, 3);
    // Without `oc` in its Via a client gets no values.
    let req = INVITE
        .replace("BRANCH", "r1")
        .replace("{OC}", "")
        .replace("127.0.0.1:5070", "127.0.0.1:5071");
    w.send_raw(plain, req.as_bytes());
    w.run_for(ms(200));
    let answers: Vec<String> = inbox_text(&w, plain)
        .into_iter()
        .filter(|t| t.starts_with("SIP/2.0 1") || t.starts_with("SIP/2.0 200"))
        .collect();
    assert!(!answers.is_empty());
    assert!(answers.iter().all(|t| !t.contains(";oc")), "{answers:#?}");
    assert_eq!(metric(&w, "sipfork_overload_oc_total", ("", "")), before);
}

#[test]
fn a_flooding_source_is_limited_before_parsing_but_not_a_nat_or_a_trusted_peer() {
    let (mut w, flooder, _) = world("rate_limit = 100\nrate_burst = 100", "198.51.100.9:5070");
    // A NAT with many phones stays under the limit: 40 phones behind 198.51.100.20 send one
    // OPTIONS each per second for 3 s (40/s < 100/s). Each gets 480 (1099 has no device).
    let nat: Vec<PhoneId> = (0..40)
        .map(|i| {
            w.add_phone_at(
                &format!("n{i}"),
                "1060",
                addr(&format!("198.51.100.20:{}", 7000 + i)),
            )
        })
        .collect();
    let carrier = w.add_phone_at("carrier", "0049", addr("203.0.113.5:5060"));
    for _ in 0..3 {
        for &p in &nat {
            w.request(p, "OPTIONS", "1099", "", "");
        }
        // The flooder and the trusted carrier send 500 each within the same second.
        for _ in 0..500 {
            w.request(flooder, "OPTIONS", "1099", "", "");
            w.request(carrier, "OPTIONS", "1099", "", "");
        }
        w.run_for(secs(1));
    }
    let answered = |w: &World, p: PhoneId| {
        inbox_text(w, p)
            .iter()
            .filter(|t| t.starts_with("SIP/2.0 480"))
            .count()
    };
    for &p in &nat {
        assert_eq!(answered(&w, p), 3, "every NATed phone answered");
    }
    assert_eq!(answered(&w, carrier), 1500, "trusted peers are exempt");
    // The flooder: its burst (100) and then 100/s.
    let got = answered(&w, flooder);
    assert!((290..=310).contains(&got), "flooder answered {got} of 1500");
    assert_eq!(
        metric(&w, "sipfork_rate_limited_total", ("", "")),
        1500 - got as u64
    );
    // An emergency call from the limited source still goes through.
    let call = w.call(flooder, "112");
    w.run_for(secs(1));
    assert_eq!(w.phone_ref(flooder).outgoing[call].finals(), vec![200]);
}
