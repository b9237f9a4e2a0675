//! Every race of a forked call, replayed on virtual time with a simulated network, each test
//! asserting what every party received (RFC 3261 §9.1, §16.7, §16.10, §17; DECISIONS.md
//! "Caller CANCEL").
//!
//! Setup: alice (1050) calls extension 1000, which has three registered devices a, b, c. Links
//! have 1 ms latency unless a test says otherwise. Every race runs a second time with every
//! phone behind NAT (`behind_nat::*`): Via and Contact name private addresses nobody answers
//! on, so each datagram must reach the flow the phone sends from, and none may go elsewhere.

use std::cell::Cell;

use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World, DEFAULT_CONFIG};
use sipfork::time::{ms, secs, Duration};

pub struct Setup {
    pub w: World,
    pub alice: PhoneId,
    pub devices: Vec<PhoneId>,
}

thread_local! {
    /// Set by the `behind_nat` copies of the tests: `setup_with` puts every phone behind NAT.
    static BEHIND_NAT: Cell<bool> = const { Cell::new(false) };
}

fn add_phone(w: &mut World, name: &str, user: &str, port: u16) -> PhoneId {
    if BEHIND_NAT.get() {
        let private = format!("192.168.7.{}:5060", port - 5000).parse().unwrap();
        w.add_phone_behind_nat(name, user, port, private)
    } else {
        w.add_phone(name, user, port)
    }
}

pub fn setup_with(config: &str, seed: u64, n: usize) -> Setup {
    let mut w = World::new(config, 1, seed);
    let alice = add_phone(&mut w, "alice", "1050", 5070);
    let devices: Vec<PhoneId> = (0..n)
        .map(|i| {
            let name = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            add_phone(&mut w, name, "1000", 5071 + i as u16)
        })
        .collect();
    for &d in &devices {
        w.register(d, 3600);
    }
    Setup { w, alice, devices }
}

pub fn setup(seed: u64) -> Setup {
    setup_with(DEFAULT_CONFIG, seed, 3)
}

const ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";

/// After a call ended: nothing of it is left in the proxy once every timer ran out.
fn assert_no_leftovers(w: &mut World) {
    w.run_for(secs(40));
    assert_eq!(w.proxy_calls(), 0, "calls left in the proxy\n{}", w.dump());
    assert!(
        w.unreachable_sends().is_empty(),
        "sent where nobody answers: {:?}\n{}",
        w.unreachable_sends(),
        w.dump()
    );
}

#[test]
fn parallel_fork_first_answer_wins_and_losers_are_cancelled_with_reason() {
    let mut s = setup(1);
    let (a, b, c) = (s.devices[0], s.devices[1], s.devices[2]);
    s.w.behave(b, Behaviour::answer_after(ms(100)));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(2));
    let w = &mut s.w;
    let out = &w.phone_ref(s.alice).outgoing[call];
    let ringing: Vec<_> = out
        .distinct()
        .into_iter()
        .filter(|(st, _)| *st == 180)
        .collect();
    assert_eq!(
        ringing.len(),
        3,
        "one 180 per device, each with its own To tag\n{}",
        w.dump()
    );
    assert_eq!(out.finals(), vec![200], "{}", w.dump());
    assert_eq!(out.dialogs.len(), 1);
    for loser in [a, c] {
        let inc = &w.phone_ref(loser).incoming[0];
        assert!(inc.cancelled, "loser got a CANCEL\n{}", w.dump());
        assert_eq!(inc.cancel_reason.as_deref(), Some(ELSEWHERE));
        assert_eq!(inc.final_status, Some(487));
        assert!(inc.acked, "the 487 was ACKed hop by hop");
    }
    let won = &w.phone_ref(b).incoming[0];
    assert_eq!(won.final_status, Some(200));
    assert!(
        won.acked,
        "the caller's ACK reached the winner through the Record-Route"
    );
    assert!(!won.cancelled);
    w.hang_up(s.alice, call);
    w.run_for(secs(1));
    assert!(w.phone_ref(b).incoming[0].bye, "BYE routed to the winner");
    assert!(w.phone_ref(s.alice).outgoing[call].dialogs[0].bye_done);
    assert_eq!(w.phone_ref(b).requests_received("INVITE"), 1);
    assert_no_leftovers(w);
}

#[test]
fn two_devices_answer_in_the_same_millisecond() {
    // RFC 3261 §16.7 step 5: both 2xx are forwarded; the caller ACKs both and hangs up both.
    let mut s = setup(2);
    let (a, b, c) = (s.devices[0], s.devices[1], s.devices[2]);
    s.w.behave(a, Behaviour::answer_after(ms(100)));
    s.w.behave(b, Behaviour::answer_after(ms(100)));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(2));
    let w = &mut s.w;
    let out = &w.phone_ref(s.alice).outgoing[call];
    assert_eq!(out.finals(), vec![200, 200], "{}", w.dump());
    assert_eq!(out.dialogs.len(), 2);
    for d in [a, b] {
        let inc = &w.phone_ref(d).incoming[0];
        assert_eq!(inc.final_status, Some(200));
        assert!(inc.acked);
    }
    let inc = &w.phone_ref(c).incoming[0];
    assert!(inc.cancelled && inc.final_status == Some(487) && inc.acked);
    w.hang_up(s.alice, call);
    w.run_for(secs(1));
    assert!(w.phone_ref(a).incoming[0].bye && w.phone_ref(b).incoming[0].bye);
    assert_no_leftovers(w);
}

#[test]
fn single_answer_ends_the_second_answer_with_ack_and_bye() {
    let config = DEFAULT_CONFIG.replace(
        "numbers = \"1000-1099\"",
        "numbers = \"1000-1099\"\nsingle_answer = true",
    );
    let mut s = setup_with(&config, 3, 3);
    let (a, b, c) = (s.devices[0], s.devices[1], s.devices[2]);
    s.w.behave(a, Behaviour::answer_after(ms(100)));
    s.w.behave(b, Behaviour::answer_after(ms(100)));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(2));
    let w = &mut s.w;
    let out = &w.phone_ref(s.alice).outgoing[call];
    assert_eq!(
        out.finals(),
        vec![200],
        "exactly one answer reaches the caller\n{}",
        w.dump()
    );
    let (winner, other) = if w.phone_ref(a).incoming[0].bye {
        (b, a)
    } else {
        (a, b)
    };
    let late = &w.phone_ref(other).incoming[0];
    assert_eq!(late.final_status, Some(200));
    assert!(late.acked, "sipfork ACKed the late 2xx\n{}", w.dump());
    assert!(late.bye, "and sent it a BYE");
    assert_eq!(late.bye_reason.as_deref(), Some(ELSEWHERE));
    assert!(!w.phone_ref(winner).incoming[0].bye);
    assert!(w.phone_ref(c).incoming[0].cancelled);
    w.hang_up(s.alice, call);
    w.run_for(secs(1));
    assert!(w.phone_ref(winner).incoming[0].bye);
    assert_no_leftovers(w);
}

/// The caller's CANCEL and device b's 200 OK are in flight at the same time; `cancel_first`
/// decides which reaches the proxy first. Either way both ends must agree.
fn cancel_crossing_200(cancel_first: bool, seed: u64) {
    let mut s = setup(seed);
    let b = s.devices[1];
    s.w.behave(b, Behaviour::answer_after(ms(100)));
    let call = s.w.call(s.alice, "1000");
    // The INVITE reaches b at 2 ms (1 ms to the proxy, 1 ms on): b answers at 102 ms.
    let answer_at = ms(102);
    let lead = if cancel_first {
        ms(0)
    } else {
        Duration::from_micros(500)
    };
    s.w.run_for(answer_at - ms(1) + lead);
    s.w.cancel(s.alice, call);
    s.w.run_for(secs(2));
    let w = &mut s.w;
    let out = &w.phone_ref(s.alice).outgoing[call];
    assert_eq!(out.cancel_status, Some(200), "{}", w.dump());
    let finals = out.finals();
    let dev_b = &w.phone_ref(b).incoming[0];
    assert_eq!(
        finals.len(),
        1,
        "exactly one final to the caller\n{}",
        w.dump()
    );
    match finals[0] {
        200 => {
            assert_eq!(dev_b.final_status, Some(200));
            assert!(dev_b.acked, "the caller ACKed b's 200\n{}", w.dump());
            w.hang_up(s.alice, call);
            w.run_for(secs(1));
            assert!(w.phone_ref(b).incoming[0].bye, "the caller hung up b");
        }
        487 => {
            // Then b must not be left in a call: either its 487 or sipfork's BYE ended it.
            assert!(
                dev_b.final_status == Some(487) || dev_b.bye,
                "b still thinks it is in a call\n{}",
                w.dump()
            );
        }
        other => panic!("unexpected final {other}\n{}", w.dump()),
    }
    for d in [s.devices[0], s.devices[2]] {
        let inc = &w.phone_ref(d).incoming[0];
        assert!(inc.cancelled && inc.final_status == Some(487) && inc.acked);
    }
    assert_no_leftovers(w);
}

#[test]
fn caller_cancel_crosses_200_ok_cancel_first() {
    cancel_crossing_200(true, 4);
}

#[test]
fn caller_cancel_crosses_200_ok_200_first() {
    cancel_crossing_200(false, 5);
}

#[test]
fn a_200_arriving_after_the_cancel_was_sent_to_that_branch() {
    // a answers first; the proxy CANCELs b, whose own 200 is already on its way.
    let mut s = setup(6);
    let (a, b) = (s.devices[0], s.devices[1]);
    s.w.behave(a, Behaviour::answer_after(ms(100)));
    s.w.behave(b, Behaviour::answer_after(Duration::from_micros(101_500)));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(2));
    let w = &mut s.w;
    let dev_b = &w.phone_ref(b).incoming[0];
    assert!(
        dev_b.cancelled,
        "the CANCEL reached b after it answered\n{}",
        w.dump()
    );
    assert_eq!(
        dev_b.final_status,
        Some(200),
        "b's answer stands (its CANCEL came too late)"
    );
    assert!(dev_b.acked);
    // Default mode forwards the second 2xx (RFC 3261): the caller has both dialogs.
    let out = &w.phone_ref(s.alice).outgoing[call];
    assert_eq!(out.finals(), vec![200, 200], "{}", w.dump());
    w.hang_up(s.alice, call);
    w.run_for(secs(1));
    assert!(w.phone_ref(a).incoming[0].bye && w.phone_ref(b).incoming[0].bye);
    assert_no_leftovers(w);
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut s = setup(7);
    for &d in &s.devices.clone() {
        s.w.behave(
            d,
            Behaviour {
                ring_after: Some(secs(2)),
                ..Behaviour::default()
            },
        );
    }
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(ms(100));
    s.w.cancel(s.alice, call);
    s.w.run_for(ms(50));
    {
        let w = &s.w;
        let out = &w.phone_ref(s.alice).outgoing[call];
        assert_eq!(out.cancel_status, Some(200));
        assert_eq!(
            out.finals(),
            vec![487],
            "the caller is not held until the devices ring\n{}",
            w.dump()
        );
        for &d in &s.devices {
            assert!(
                !w.phone_ref(d).incoming[0].cancelled,
                "§9.1: no CANCEL before a provisional"
            );
        }
    }
    s.w.run_for(secs(3));
    let w = &mut s.w;
    for &d in &s.devices {
        let inc = &w.phone_ref(d).incoming[0];
        assert!(inc.cancelled, "cancelled once it rang\n{}", w.dump());
        assert_eq!(inc.final_status, Some(487));
        assert!(inc.acked);
    }
    assert_no_leftovers(w);
}

#[test]
fn invite_retransmitted_while_forking_is_absorbed() {
    let mut s = setup(8);
    for &d in &s.devices.clone() {
        s.w.behave(
            d,
            Behaviour {
                trying: true,
                ring_after: Some(secs(2)),
                ..Behaviour::default()
            },
        );
    }
    // The 100 Trying is lost, so alice retransmits the INVITE at 500 ms.
    let proxy = s.w.proxy;
    let alice_addr = s.w.phone_ref(s.alice).addr;
    s.w.drop_next(1, "SIP/2.0 100", None, Some(proxy), Some(alice_addr));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(1));
    let w = &mut s.w;
    assert_eq!(w.phone_ref(s.alice).requests_received("INVITE"), 0);
    for &d in &s.devices {
        assert_eq!(
            w.phone_ref(d).requests_received("INVITE"),
            1,
            "forked once\n{}",
            w.dump()
        );
    }
    let out = &w.phone_ref(s.alice).outgoing[call];
    assert!(
        out.responses.iter().any(|(_, st, _)| *st == 100),
        "the retransmission was answered with the 100 again\n{}",
        w.dump()
    );
    w.cancel(s.alice, call);
    assert_no_leftovers(w);
}

#[test]
fn lost_cancel_is_retransmitted() {
    let mut s = setup(9);
    let (a, b) = (s.devices[0], s.devices[1]);
    s.w.behave(b, Behaviour::answer_after(ms(100)));
    let a_addr = s.w.phone_ref(a).addr;
    s.w.drop_next(1, "CANCEL", None, None, Some(a_addr));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(3));
    let w = &mut s.w;
    let inc = &w.phone_ref(a).incoming[0];
    assert!(
        inc.cancelled && inc.final_status == Some(487) && inc.acked,
        "{}",
        w.dump()
    );
    assert!(w.phone_ref(a).requests_received("CANCEL") >= 1);
    assert_eq!(w.phone_ref(s.alice).outgoing[call].finals(), vec![200]);
    w.hang_up(s.alice, call);
    assert_no_leftovers(w);
}

#[test]
fn lost_487_is_retransmitted_and_acked() {
    let mut s = setup(10);
    let (a, b) = (s.devices[0], s.devices[1]);
    s.w.behave(b, Behaviour::answer_after(ms(100)));
    let a_addr = s.w.phone_ref(a).addr;
    s.w.drop_next(1, "SIP/2.0 487", None, Some(a_addr), None);
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(3));
    let w = &mut s.w;
    assert!(w.phone_ref(a).incoming[0].acked, "{}", w.dump());
    assert_eq!(w.phone_ref(s.alice).outgoing[call].finals(), vec![200]);
    w.hang_up(s.alice, call);
    assert_no_leftovers(w);
}

#[test]
fn lost_ack_for_487_is_resent_on_the_retransmitted_487() {
    let mut s = setup(11);
    let (a, b) = (s.devices[0], s.devices[1]);
    s.w.behave(b, Behaviour::answer_after(ms(100)));
    let a_addr = s.w.phone_ref(a).addr;
    s.w.drop_next(1, "ACK", Some("ACK"), None, Some(a_addr));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(3));
    let w = &mut s.w;
    assert!(w.phone_ref(a).incoming[0].acked, "{}", w.dump());
    assert!(w.phone_ref(a).requests_received("ACK") >= 1);
    w.hang_up(s.alice, call);
    assert_no_leftovers(w);
}

#[test]
fn lost_200_ok_is_recovered_by_its_retransmission() {
    for (seed, from_device) in [(12, true), (13, false)] {
        let mut s = setup(seed);
        let b = s.devices[1];
        s.w.behave(b, Behaviour::answer_after(ms(100)));
        let b_addr = s.w.phone_ref(b).addr;
        let alice_addr = s.w.phone_ref(s.alice).addr;
        if from_device {
            s.w.drop_next(1, "SIP/2.0 200", Some("INVITE"), Some(b_addr), None);
        } else {
            s.w.drop_next(1, "SIP/2.0 200", Some("INVITE"), None, Some(alice_addr));
        }
        let call = s.w.call(s.alice, "1000");
        s.w.run_for(secs(3));
        let w = &mut s.w;
        assert_eq!(
            w.phone_ref(s.alice).outgoing[call].finals(),
            vec![200],
            "{}",
            w.dump()
        );
        assert!(w.phone_ref(b).incoming[0].acked, "{}", w.dump());
        w.hang_up(s.alice, call);
        assert_no_leftovers(w);
    }
}

#[test]
fn a_6xx_on_one_branch_cancels_the_others_and_ends_the_call() {
    let mut s = setup(14);
    let (a, b, c) = (s.devices[0], s.devices[1], s.devices[2]);
    s.w.behave(a, Behaviour::reject_after(603, ms(100)));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(3));
    let w = &mut s.w;
    assert_eq!(
        w.phone_ref(s.alice).outgoing[call].finals(),
        vec![603],
        "{}",
        w.dump()
    );
    for d in [b, c] {
        let inc = &w.phone_ref(d).incoming[0];
        assert!(inc.cancelled && inc.final_status == Some(487) && inc.acked);
        assert_eq!(
            inc.cancel_reason.as_deref(),
            Some("SIP;cause=603;text=\"Declined\"")
        );
    }
    assert!(w.phone_ref(a).incoming[0].acked);
    assert_no_leftovers(w);
}

#[test]
fn all_branches_busy_gives_486_upstream() {
    let mut s = setup(15);
    for (i, &d) in s.devices.clone().iter().enumerate() {
        s.w.behave(d, Behaviour::reject_after(486, ms(50 + 10 * i as u64)));
    }
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(3));
    let w = &mut s.w;
    assert_eq!(
        w.phone_ref(s.alice).outgoing[call].finals(),
        vec![486],
        "{}",
        w.dump()
    );
    for &d in &s.devices {
        assert!(w.phone_ref(d).incoming[0].acked);
        assert!(!w.phone_ref(d).incoming[0].cancelled);
    }
    assert_no_leftovers(w);
}

fn serial_config(timeout_s: u64) -> String {
    DEFAULT_CONFIG.replace(
        "numbers = \"1000-1099\"",
        &format!("numbers = \"1000-1099\"\nfork = \"q-groups\"\ngroup_timeout = {timeout_s}"),
    )
}

fn serial_setup(seed: u64) -> Setup {
    let config = serial_config(2);
    let mut w = World::new(&config, 1, seed);
    let alice = w.add_phone("alice", "1050", 5070);
    let qs = ["1.0", "0.5", "0.5"];
    let devices: Vec<PhoneId> = (0..3)
        .map(|i| {
            let id = w.add_phone(["a", "b", "c"][i], "1000", 5071 + i as u16);
            w.phone(id).q = Some(qs[i].to_owned());
            id
        })
        .collect();
    for &d in &devices {
        w.register(d, 3600);
    }
    Setup { w, alice, devices }
}

#[test]
fn serial_fork_moves_on_when_the_group_timer_fires() {
    let mut s = serial_setup(16);
    let (a, b, c) = (s.devices[0], s.devices[1], s.devices[2]);
    s.w.behave(b, Behaviour::answer_after(ms(300)));
    let start = s.w.now();
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(1));
    assert_eq!(
        s.w.phone_ref(b).requests_received("INVITE"),
        0,
        "only the q=1.0 group rings first"
    );
    assert_eq!(s.w.phone_ref(a).requests_received("INVITE"), 1);
    s.w.run_for(secs(3));
    let w = &mut s.w;
    let inc_a = &w.phone_ref(a).incoming[0];
    assert!(
        inc_a.cancelled && inc_a.final_status == Some(487),
        "{}",
        w.dump()
    );
    let inc_b = &w.phone_ref(b).incoming[0];
    assert_eq!(inc_b.final_status, Some(200));
    let out = &w.phone_ref(s.alice).outgoing[call];
    assert_eq!(out.finals(), vec![200]);
    let answered_at = out
        .responses
        .iter()
        .find(|(_, st, _)| *st == 200)
        .map(|r| r.0)
        .unwrap();
    assert!(
        answered_at - start >= secs(2),
        "group 2 started after the 2 s group timeout"
    );
    assert!(w.phone_ref(c).incoming[0].cancelled, "c lost to b");
    w.hang_up(s.alice, call);
    assert_no_leftovers(w);
}

#[test]
fn serial_fork_moves_on_at_once_when_the_group_fails() {
    let mut s = serial_setup(17);
    let (a, b) = (s.devices[0], s.devices[1]);
    s.w.behave(a, Behaviour::reject_after(486, ms(100)));
    s.w.behave(b, Behaviour::answer_after(ms(100)));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(ms(500));
    let w = &mut s.w;
    assert_eq!(
        w.phone_ref(s.alice).outgoing[call].finals(),
        vec![200],
        "{}",
        w.dump()
    );
    assert!(w.phone_ref(a).incoming[0].acked);
    w.hang_up(s.alice, call);
    assert_no_leftovers(w);
}

#[test]
fn timer_c_cancels_a_branch_that_rings_too_long() {
    let mut s = setup_with(DEFAULT_CONFIG, 18, 1);
    let a = s.devices[0];
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(180));
    assert!(!s.w.phone_ref(a).incoming[0].cancelled);
    s.w.run_for(secs(2));
    let w = &mut s.w;
    let inc = &w.phone_ref(a).incoming[0];
    assert!(
        inc.cancelled,
        "Timer C (181 s) cancelled the ringing branch\n{}",
        w.dump()
    );
    assert_eq!(inc.final_status, Some(487));
    assert_eq!(w.phone_ref(s.alice).outgoing[call].finals(), vec![408]);
    assert_no_leftovers(w);
}

#[test]
fn a_branch_that_never_answers_is_given_up_at_timer_b() {
    let mut s = setup_with(DEFAULT_CONFIG, 19, 2);
    let (a, b) = (s.devices[0], s.devices[1]);
    s.w.behave(a, Behaviour::silent());
    s.w.behave(b, Behaviour::reject_after(486, ms(100)));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(31));
    assert!(s.w.phone_ref(s.alice).outgoing[call].finals().is_empty());
    s.w.run_for(secs(2));
    let w = &mut s.w;
    assert_eq!(
        w.phone_ref(s.alice).outgoing[call].finals(),
        vec![486],
        "{}",
        w.dump()
    );
    assert!(
        w.phone_ref(a).requests_received("INVITE") >= 6,
        "Timer A retransmitted"
    );
    assert_no_leftovers(w);
}

#[test]
fn calls_converge_under_five_percent_loss_on_every_leg() {
    for seed in 100..130 {
        let mut s = setup(seed);
        s.w.netem.loss = 0.05;
        let b = s.devices[1];
        s.w.behave(b, Behaviour::answer_after(ms(200)));
        let call = s.w.call(s.alice, "1000");
        s.w.run_for(secs(40));
        let w = &mut s.w;
        let finals = w.phone_ref(s.alice).outgoing[call].finals();
        let dump = w.dump();
        assert_eq!(finals.len(), 1, "seed {seed}: exactly one final\n{dump}");
        if finals[0] == 200 {
            assert_eq!(
                w.phone_ref(b).incoming[0].final_status,
                Some(200),
                "seed {seed}\n{dump}"
            );
            w.hang_up(s.alice, call);
            w.run_for(secs(40));
            assert!(
                w.phone_ref(b).incoming[0].bye,
                "seed {seed}: BYE reached b\n{}",
                w.dump()
            );
        }
        for d in [s.devices[0], s.devices[2]] {
            let inc = &w.phone_ref(d).incoming;
            if let Some(inc) = inc.first() {
                assert_ne!(
                    inc.final_status,
                    Some(200),
                    "seed {seed}: a loser answered?"
                );
                assert!(
                    inc.final_status.is_some(),
                    "seed {seed}: a loser still rings\n{}",
                    w.dump()
                );
            }
        }
        w.run_for(secs(40));
        assert_eq!(w.proxy_calls(), 0, "seed {seed}: leftovers\n{}", w.dump());
    }
}

/// Runs `test` with every phone `setup_with` adds behind NAT.
pub fn behind_nat(test: fn()) {
    BEHIND_NAT.set(true);
    test();
}

/// The same races with every phone behind NAT.
mod behind_nat {
    use super::behind_nat as nat;

    #[test]
    fn parallel_fork_first_answer_wins_and_losers_are_cancelled_with_reason() {
        nat(super::parallel_fork_first_answer_wins_and_losers_are_cancelled_with_reason);
    }

    #[test]
    fn two_devices_answer_in_the_same_millisecond() {
        nat(super::two_devices_answer_in_the_same_millisecond);
    }

    #[test]
    fn single_answer_ends_the_second_answer_with_ack_and_bye() {
        nat(super::single_answer_ends_the_second_answer_with_ack_and_bye);
    }

    #[test]
    fn caller_cancel_crosses_200_ok_cancel_first() {
        nat(super::caller_cancel_crosses_200_ok_cancel_first);
    }

    #[test]
    fn caller_cancel_crosses_200_ok_200_first() {
        nat(super::caller_cancel_crosses_200_ok_200_first);
    }

    #[test]
    fn a_200_arriving_after_the_cancel_was_sent_to_that_branch() {
        nat(super::a_200_arriving_after_the_cancel_was_sent_to_that_branch);
    }

    #[test]
    fn cancel_before_any_provisional_waits_for_one() {
        nat(super::cancel_before_any_provisional_waits_for_one);
    }

    #[test]
    fn invite_retransmitted_while_forking_is_absorbed() {
        nat(super::invite_retransmitted_while_forking_is_absorbed);
    }

    #[test]
    fn lost_cancel_is_retransmitted() {
        nat(super::lost_cancel_is_retransmitted);
    }

    #[test]
    fn lost_487_is_retransmitted_and_acked() {
        nat(super::lost_487_is_retransmitted_and_acked);
    }

    #[test]
    fn lost_ack_for_487_is_resent_on_the_retransmitted_487() {
        nat(super::lost_ack_for_487_is_resent_on_the_retransmitted_487);
    }

    #[test]
    fn lost_200_ok_is_recovered_by_its_retransmission() {
        nat(super::lost_200_ok_is_recovered_by_its_retransmission);
    }

    #[test]
    fn a_6xx_on_one_branch_cancels_the_others_and_ends_the_call() {
        nat(super::a_6xx_on_one_branch_cancels_the_others_and_ends_the_call);
    }

    #[test]
    fn all_branches_busy_gives_486_upstream() {
        nat(super::all_branches_busy_gives_486_upstream);
    }

    #[test]
    fn serial_fork_moves_on_when_the_group_timer_fires() {
        nat(super::serial_fork_moves_on_when_the_group_timer_fires);
    }

    #[test]
    fn serial_fork_moves_on_at_once_when_the_group_fails() {
        nat(super::serial_fork_moves_on_at_once_when_the_group_fails);
    }

    #[test]
    fn timer_c_cancels_a_branch_that_rings_too_long() {
        nat(super::timer_c_cancels_a_branch_that_rings_too_long);
    }

    #[test]
    fn a_branch_that_never_answers_is_given_up_at_timer_b() {
        nat(super::a_branch_that_never_answers_is_given_up_at_timer_b);
    }

    #[test]
    fn calls_converge_under_five_percent_loss_on_every_leg() {
        nat(super::calls_converge_under_five_percent_loss_on_every_leg);
    }
}
