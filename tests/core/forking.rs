//! The proxy beyond the races: request validation (RFC 3261 §16.3), target resolution (§16.5),
//! non-INVITE forking, outbound routes, authentication of callers, the branch cap, best-response
//! rules (§16.7 step 6), and routing across shards.

use crate::races::{setup, setup_with};
use sipfork::sip;
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{World, DEFAULT_CONFIG};
use sipfork::time::{ms, secs};

fn last_status(w: &World, id: sipfork::testing::sim::PhoneId) -> Option<u16> {
    w.phone_ref(id).statuses().last().copied()
}

#[test]
fn message_to_an_extension_reaches_every_device() {
    let mut s = setup(31);
    s.w.request(
        s.alice,
        "MESSAGE",
        "1000",
        "Content-Type: text/plain\r\n",
        "hello",
    );
    s.w.run_for(secs(1));
    for &d in &s.devices {
        assert_eq!(
            s.w.phone_ref(d).requests_received("MESSAGE"),
            1,
            "{}",
            s.w.dump()
        );
    }
    let statuses = s.w.phone_ref(s.alice).statuses();
    assert_eq!(
        statuses,
        vec![200],
        "first 2xx upstream, once\n{}",
        s.w.dump()
    );
    s.w.run_for(secs(40));
    assert_eq!(s.w.proxy_calls(), 0);
}

#[test]
fn notify_for_message_waiting_reaches_every_device_and_the_best_answer_goes_back() {
    let mut s = setup(32);
    for &d in &s.devices.clone() {
        s.w.behave(
            d,
            Behaviour {
                other_status: 489,
                ..Behaviour::default()
            },
        );
    }
    s.w.request(
        s.alice,
        "NOTIFY",
        "1000",
        "Event: message-summary\r\nSubscription-State: active\r\nContent-Type: application/simple-message-summary\r\n",
        "Messages-Waiting: yes\r\n",
    );
    s.w.run_for(secs(1));
    for &d in &s.devices {
        assert_eq!(s.w.phone_ref(d).requests_received("NOTIFY"), 1);
    }
    assert_eq!(
        s.w.phone_ref(s.alice).statuses(),
        vec![489],
        "{}",
        s.w.dump()
    );
}

#[test]
fn unknown_numbers_get_404_and_extensions_without_devices_480() {
    let mut s = setup(33);
    s.w.request(s.alice, "MESSAGE", "1999", "", "x");
    s.w.run_for(ms(10));
    assert_eq!(last_status(&s.w, s.alice), Some(404));
    s.w.request(s.alice, "MESSAGE", "1001", "", "x");
    s.w.run_for(ms(10));
    assert_eq!(last_status(&s.w, s.alice), Some(480));
}

#[test]
fn numbers_with_a_route_go_to_its_next_hop_and_are_record_routed() {
    let config = format!(
        "{DEFAULT_CONFIG}\n[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:127.0.0.1:5090\"\n"
    );
    let mut s = setup_with(&config, 34, 1);
    let gw = s.w.add_phone("gateway", "gw", 5090);
    s.w.behave(gw, Behaviour::answer_after(ms(50)));
    let call = s.w.call(s.alice, "0049301234");
    s.w.run_for(secs(1));
    assert_eq!(
        s.w.phone_ref(s.alice).outgoing[call].finals(),
        vec![200],
        "{}",
        s.w.dump()
    );
    let inc = &s.w.phone_ref(gw).incoming[0];
    let invite = sip::parse(&inc.invite).unwrap();
    assert_eq!(
        invite.request_uri_raw(),
        Some(&b"sip:0049301234@127.0.0.1:5060"[..])
    );
    assert_eq!(invite.values(sip::HeaderName::RecordRoute).count(), 1);
    assert_eq!(invite.max_forwards().unwrap(), Some(69));
    s.w.hang_up(s.alice, call);
    s.w.run_for(secs(1));
    assert!(s.w.phone_ref(gw).incoming[0].bye);
    s.w.run_for(secs(40));
    assert_eq!(s.w.proxy_calls(), 0, "{}", s.w.dump());
}

/// A request built by hand, from alice, with one header line varied.
fn request_with(method: &str, ruri: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKhand{}\r\n\
         From: <sip:1050@127.0.0.1>;tag=h1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: hand-{}\r\n\
         CSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n",
        extra.len(),
        extra.len() + ruri.len()
    )
    .into_bytes()
}

/// RFC 3261 §21.5.11: a request longer than the engine's receive buffers (the core sees only its
/// head, flagged as cut) is answered 513 and reaches no device; an oversize response is dropped.
#[test]
fn a_request_longer_than_the_receive_buffer_gets_513_and_rings_nobody() {
    let mut s = setup(36);
    let pad = format!("X-Pad: {}\r\n", "a".repeat(s.w.max_datagram));
    let big = request_with(
        "INVITE",
        "sip:1000@127.0.0.1:5060",
        &format!("Max-Forwards: 70\r\n{pad}"),
    );
    let sent_before = s.w.log.iter().filter(|t| t.from == s.w.proxy).count();
    s.w.send_raw(s.alice, &big);
    s.w.run_for(ms(50));
    assert_eq!(
        s.w.phone_ref(s.alice).statuses(),
        vec![513],
        "{}",
        s.w.dump()
    );
    let (_, answer) = s.w.phone_ref(s.alice).inbox.last().unwrap();
    let answer = sip::parse(answer).unwrap();
    assert_eq!(answer.start_line(), b"SIP/2.0 513 Message Too Large");
    let call_id = sip::parse(&big)
        .map(|m| m.call_id().unwrap().to_vec())
        .unwrap();
    assert_eq!(
        answer.call_id().unwrap(),
        call_id,
        "the 513 answers that request"
    );
    let sent = s.w.log.iter().filter(|t| t.from == s.w.proxy).count();
    assert_eq!(sent - sent_before, 1, "only the 513\n{}", s.w.dump());
    assert_eq!(s.w.proxy_calls(), 0);

    let response = format!(
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsfx\r\n\
         From: <sip:1050@127.0.0.1>;tag=h1\r\nTo: <sip:1000@127.0.0.1>;tag=t\r\n\
         Call-ID: big-180\r\nCSeq: 1 INVITE\r\n{pad}Content-Length: 0\r\n\r\n"
    );
    s.w.send_raw(s.devices[0], response.as_bytes());
    s.w.run_for(ms(50));
    let sent_after = s.w.log.iter().filter(|t| t.from == s.w.proxy).count();
    assert_eq!(
        sent_after,
        sent,
        "an oversize response is dropped\n{}",
        s.w.dump()
    );
}

#[test]
fn section_16_3_checks_answer_416_420_483_and_482() {
    let mut s = setup(35);
    let cases: [(Vec<u8>, u16); 5] = [
        (
            request_with(
                "INVITE",
                "mailto:someone@example.com",
                "Max-Forwards: 70\r\n",
            ),
            416,
        ),
        (
            // sips: over UDP: 480 "SIPS Required" (RFC 5630; tests/core/sips.rs).
            request_with("INVITE", "sips:1000@127.0.0.1:5060", "Max-Forwards: 70\r\n"),
            480,
        ),
        (
            request_with(
                "INVITE",
                "sip:1000@127.0.0.1:5060",
                "Max-Forwards: 70\r\nProxy-Require: foo, bar\r\n",
            ),
            420,
        ),
        (
            request_with("OPTIONS", "sip:1000@127.0.0.1:5060", "Max-Forwards: 0\r\n"),
            483,
        ),
        (
            request_with("INVITE", "sip:1000@127.0.0.1:5060", "Max-Forwards: 70\r\n"),
            180,
        ),
    ];
    for (bytes, want) in cases {
        s.w.send_raw(s.alice, &bytes);
        s.w.run_for(ms(20));
        let got = s.w.phone_ref(s.alice).statuses();
        assert!(
            got.contains(&want),
            "wanted {want}, got {got:?}\n{}",
            s.w.dump()
        );
    }
    let unsupported =
        s.w.phone_ref(s.alice)
            .inbox
            .iter()
            .find(|(_, b)| b.starts_with(b"SIP/2.0 420"))
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .unwrap();
    assert!(
        unsupported.contains("Unsupported: foo, bar"),
        "{unsupported}"
    );
}

#[test]
fn a_request_that_loops_back_gets_482() {
    let mut s = setup_with(DEFAULT_CONFIG, 36, 1);
    let dev = s.devices[0];
    s.w.request(s.alice, "MESSAGE", "1000", "", "x");
    s.w.run_for(ms(10));
    // The device sends the very request it got back to the proxy: same identity, our Via in it.
    let got =
        s.w.phone_ref(dev)
            .inbox
            .iter()
            .find(|(_, b)| b.starts_with(b"MESSAGE"))
            .unwrap()
            .1
            .clone();
    let text = String::from_utf8_lossy(&got).replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5060",
        "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKloop\r\nVia: SIP/2.0/UDP 127.0.0.1:5060",
    );
    let text = text.replacen(
        "MESSAGE sip:1000@127.0.0.1:5071",
        "MESSAGE sip:1000@127.0.0.1:5060",
        1,
    );
    // Same Request-URI as the original: a loop, not a spiral.
    s.w.send_raw(dev, text.as_bytes());
    s.w.run_for(ms(10));
    assert_eq!(last_status(&s.w, dev), Some(482), "{}", s.w.dump());
}

#[test]
fn callers_are_challenged_unless_trusted_and_digest_admits_them() {
    let config = DEFAULT_CONFIG
        .replace(
            "mode = \"none\"",
            "mode = \"digest\"\nrealm = \"example.com\"",
        )
        .replace(
            "numbers = \"1000-1099\"",
            "numbers = \"1000-1099\"\npassword = \"pw-{number}\"",
        )
        + "\n[[trusted]]\ncidr = \"127.0.0.9/32\"\nname = \"pbx\"\n";
    let mut w = World::new(&config, 1, 37);
    let caller = w.add_phone("alice", "1050", 5070);
    // Unauthenticated INVITE: 407 with a Proxy-Authenticate per offered algorithm.
    let call = w.call(caller, "1000");
    w.run_for(ms(20));
    assert_eq!(
        w.phone_ref(caller).outgoing[call].finals(),
        vec![407],
        "{}",
        w.dump()
    );
    let challenge = w
        .phone_ref(caller)
        .inbox
        .iter()
        .find(|(_, b)| b.starts_with(b"SIP/2.0 407"))
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap();
    assert!(
        challenge.contains("Proxy-Authenticate: Digest"),
        "{challenge}"
    );
    // A trusted peer is not challenged (the extension has no devices: 480).
    let mut w2 = World::new(&config.replace("127.0.0.9/32", "127.0.0.1/32"), 1, 38);
    let pbx = w2.add_phone("pbx", "pbx", 5070);
    let call = w2.call(pbx, "1000");
    w2.run_for(ms(20));
    assert_eq!(
        w2.phone_ref(pbx).outgoing[call].finals(),
        vec![480],
        "{}",
        w2.dump()
    );
}

#[test]
fn the_branch_cap_rings_the_most_recently_registered() {
    let config = DEFAULT_CONFIG.replace("[registrar]", "[proxy]\nmax_branches = 2\n[registrar]");
    let mut s = setup_with(&config, 39, 3);
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(ms(50));
    let rung: Vec<usize> = s
        .devices
        .iter()
        .map(|&d| s.w.phone_ref(d).requests_received("INVITE"))
        .collect();
    assert_eq!(
        rung,
        vec![0, 1, 1],
        "a registered first and is left out\n{}",
        s.w.dump()
    );
    s.w.cancel(s.alice, call);
    s.w.run_for(secs(40));
    assert_eq!(s.w.proxy_calls(), 0);
}

#[test]
fn challenges_from_several_branches_are_merged_and_a_lone_503_becomes_500() {
    let mut s = setup_with(DEFAULT_CONFIG, 40, 2);
    for &d in &s.devices.clone() {
        s.w.behave(d, Behaviour::reject_after(407, ms(10)));
    }
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(1));
    assert_eq!(s.w.phone_ref(s.alice).outgoing[call].finals(), vec![407]);
    let mut s = setup_with(DEFAULT_CONFIG, 41, 1);
    s.w.behave(s.devices[0], Behaviour::reject_after(503, ms(10)));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(1));
    assert_eq!(
        s.w.phone_ref(s.alice).outgoing[call].finals(),
        vec![500],
        "{}",
        s.w.dump()
    );
}

#[test]
fn two_shards_hand_requests_and_responses_to_their_owner() {
    for seed in 42..46 {
        let mut w = World::new(DEFAULT_CONFIG, 2, seed);
        let alice = w.add_phone("alice", "1050", 5070);
        let devs: Vec<_> = (0..3)
            .map(|i| w.add_phone(["a", "b", "c"][i], "1000", 5071 + i as u16))
            .collect();
        for &d in &devs {
            w.register(d, 3600);
        }
        w.behave(devs[2], Behaviour::answer_after(ms(100)));
        let call = w.call(alice, "1000");
        w.run_for(secs(2));
        assert_eq!(
            w.phone_ref(alice).outgoing[call].finals(),
            vec![200],
            "seed {seed}\n{}",
            w.dump()
        );
        assert!(w.phone_ref(devs[0]).incoming[0].cancelled);
        w.hang_up(alice, call);
        w.run_for(secs(1));
        assert!(w.phone_ref(devs[2]).incoming[0].bye);
        w.run_for(secs(40));
        assert_eq!(w.proxy_calls(), 0, "seed {seed}\n{}", w.dump());
    }
}

#[test]
fn cancel_without_a_call_gets_481() {
    let mut s = setup(47);
    let bytes = request_with("CANCEL", "sip:1000@127.0.0.1:5060", "Max-Forwards: 70\r\n");
    s.w.send_raw(s.alice, &bytes);
    s.w.run_for(ms(10));
    assert_eq!(last_status(&s.w, s.alice), Some(481));
}

#[test]
fn a_bye_with_the_wrong_tags_still_ends_the_only_dialog_of_its_route() {
    let mut s = setup(48);
    let b = s.devices[1];
    s.w.behave(b, Behaviour::answer_after(ms(50)));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(1));
    assert_eq!(s.w.cores()[0].proxy_dialogs(), 1);
    // A client bug seen in the wild: the BYE names a losing device's tag.
    s.w.phone(s.alice).outgoing[call].dialogs[0].to_tag = "not-the-winner".into();
    s.w.hang_up(s.alice, call);
    s.w.run_for(secs(1));
    assert_eq!(s.w.cores()[0].proxy_dialogs(), 0, "{}", s.w.dump());
}

/// The same tests with every phone of `races::setup` behind NAT (all but the loop test, which
/// rewrites the device's Contact address by hand).
mod behind_nat {

    #[test]
    fn message_to_an_extension_reaches_every_device() {
        crate::races::behind_nat(super::message_to_an_extension_reaches_every_device);
    }

    #[test]
    fn notify_for_message_waiting_reaches_every_device_and_the_best_answer_goes_back() {
        crate::races::behind_nat(
            super::notify_for_message_waiting_reaches_every_device_and_the_best_answer_goes_back,
        );
    }

    #[test]
    fn unknown_numbers_get_404_and_extensions_without_devices_480() {
        crate::races::behind_nat(super::unknown_numbers_get_404_and_extensions_without_devices_480);
    }

    #[test]
    fn numbers_with_a_route_go_to_its_next_hop_and_are_record_routed() {
        crate::races::behind_nat(
            super::numbers_with_a_route_go_to_its_next_hop_and_are_record_routed,
        );
    }

    #[test]
    fn a_request_longer_than_the_receive_buffer_gets_513_and_rings_nobody() {
        crate::races::behind_nat(
            super::a_request_longer_than_the_receive_buffer_gets_513_and_rings_nobody,
        );
    }

    #[test]
    fn section_16_3_checks_answer_416_420_483_and_482() {
        crate::races::behind_nat(super::section_16_3_checks_answer_416_420_483_and_482);
    }

    #[test]
    fn callers_are_challenged_unless_trusted_and_digest_admits_them() {
        crate::races::behind_nat(
            super::callers_are_challenged_unless_trusted_and_digest_admits_them,
        );
    }

    #[test]
    fn the_branch_cap_rings_the_most_recently_registered() {
        crate::races::behind_nat(super::the_branch_cap_rings_the_most_recently_registered);
    }

    #[test]
    fn challenges_from_several_branches_are_merged_and_a_lone_503_becomes_500() {
        crate::races::behind_nat(
            super::challenges_from_several_branches_are_merged_and_a_lone_503_becomes_500,
        );
    }

    #[test]
    fn two_shards_hand_requests_and_responses_to_their_owner() {
        crate::races::behind_nat(super::two_shards_hand_requests_and_responses_to_their_owner);
    }

    #[test]
    fn cancel_without_a_call_gets_481() {
        crate::races::behind_nat(super::cancel_without_a_call_gets_481);
    }

    #[test]
    fn a_bye_with_the_wrong_tags_still_ends_the_only_dialog_of_its_route() {
        crate::races::behind_nat(
            super::a_bye_with_the_wrong_tags_still_ends_the_only_dialog_of_its_route,
        );
    }
}
