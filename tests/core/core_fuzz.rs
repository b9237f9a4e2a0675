//! The forked-call script behind `benches/core.rs` and the `core_datagrams` fuzz harness
//! (`sipfork::testing::{forked_call, core_fuzz}`), run here so both stay right: the script's
//! call goes as RFC 3261 §16 says with nothing left behind, the recorded call replays through the
//! fuzz harness, every shared vector is a valid seed, and record-level mutations of the recorded
//! call (lost, repeated, reordered, delayed, misaddressed datagrams) keep the harness's
//! invariants (every sent datagram parses, calls bounded, nothing left after silence).

use proptest::prelude::*;
use sipfork::core::transport::Transport;
use sipfork::testing::core_fuzz::{decode, encode, peers, recorded_call, run};
use sipfork::testing::forked_call::{CallStats, ForkedCall, Observer, CALLER};
use sipfork::testing::phone::Behaviour;
use sipfork::time::{ms, secs, Duration};

use crate::vectors;

/// What the script's call sends and receives when it goes right.
const CLEAN_CALL: CallStats = CallStats {
    datagrams_in: 12,
    datagrams_out: 15,
    from_timers: 0,
};

/// RFC 3261 §16.7, §9.1, §17.1.1.3: per call 12 datagrams in (INVITE, 3 × 180, 200, 2 × 200 to
/// CANCEL, 2 × 487, ACK, BYE, 200 to BYE) and 15 out (100, 3 × INVITE, 3 × 180, 200, 2 × CANCEL,
/// 2 × ACK, ACK, BYE, 200), none of them a retransmission; 64·T1 after the last call nothing is
/// left of any of them.
#[test]
fn forked_call_script_runs_clean_and_leaves_nothing() {
    let mut fc = ForkedCall::new();
    for _ in 0..40 {
        let stats = fc.call(&mut ());
        assert_eq!(stats, CLEAN_CALL);
    }
    assert!(
        fc.core().proxy_calls() > 0,
        "recent calls are still in their timers"
    );
    fc.idle(&mut (), secs(40));
    assert_eq!(fc.core().proxy_calls(), 0);
}

/// The same script with the devices registered and answering over TCP (the caller on UDP):
/// every INVITE to a device names TCP in our Via and carries our two Record-Route entries
/// (RFC 5658), the same datagrams go, none from a timer (no retransmission over a stream), and
/// nothing is left.
#[test]
fn forked_call_script_runs_clean_with_the_devices_on_tcp() {
    #[derive(Default)]
    struct Invites(Vec<String>);
    impl Observer for Invites {
        fn sent(&mut self, datagrams: &[(std::net::SocketAddr, Vec<u8>)]) {
            for (to, bytes) in datagrams {
                if *to != CALLER && bytes.starts_with(b"INVITE ") {
                    self.0.push(String::from_utf8_lossy(bytes).into_owned());
                }
            }
        }
    }
    let mut fc = ForkedCall::new().with_devices_over(Transport::Tcp);
    for _ in 0..20 {
        let mut invites = Invites::default();
        let stats = fc.call(&mut invites);
        assert_eq!(stats, CLEAN_CALL);
        assert_eq!(invites.0.len(), 3);
        for invite in &invites.0 {
            assert!(
                invite.contains("\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch="),
                "{invite}"
            );
            assert!(
                invite.contains("\r\nRecord-Route: <sip:127.0.0.1:5060;transport=tcp;lr;sf=")
                    && invite.matches("\r\nRecord-Route: ").count() == 2,
                "{invite}"
            );
        }
    }
    fc.idle(&mut (), secs(40));
    assert_eq!(fc.core().proxy_calls(), 0);
}

#[test]
fn recorded_call_replays_through_the_harness() {
    let seed = recorded_call();
    let records = decode(&seed);
    assert_eq!(records.len(), 12);
    assert_eq!(records[0].1, CALLER);
    assert!(records[0].2.starts_with(b"INVITE sip:1000@example.com"));
    let summary = run(&seed);
    assert_eq!(summary.datagrams_in, 12);
    assert_eq!(summary.datagrams_out, 15, "the replay is the same call");
    assert_eq!(
        summary.peak_calls, 2,
        "the INVITE's call and the BYE's transaction"
    );
}

#[test]
fn every_vector_is_a_seed() {
    for (name, bytes) in vectors::all_messages() {
        let seed = encode(&[(Duration::ZERO, CALLER, bytes)]);
        let summary = std::panic::catch_unwind(|| run(&seed))
            .unwrap_or_else(|_| panic!("vector {name} broke an invariant"));
        assert_eq!(summary.datagrams_in, 1, "{name}");
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Drop(usize),
    Repeat(usize),
    Swap(usize, usize),
    Delay(usize, u16),
    From(usize, u8),
    /// Replaces a record's bytes with a shared vector's.
    Vector(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let delay = prop::sample::select(vec![0u16, 1, 499, 600, 4_100, 32_500, 65_535]);
    prop_oneof![
        any::<usize>().prop_map(Mutation::Drop),
        any::<usize>().prop_map(Mutation::Repeat),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<usize>(), delay).prop_map(|(i, d)| Mutation::Delay(i, d)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, p)| Mutation::From(i, p)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, v)| Mutation::Vector(i, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// The recorded call with datagrams lost, repeated, swapped, delayed past the RFC 3261
    /// timers, sent from the wrong peer, or replaced by a torture vector.
    #[test]
    fn mutated_calls_keep_the_invariants(muts in prop::collection::vec(mutation(), 1..5)) {
        let seed = recorded_call();
        let mut records: Vec<(Duration, std::net::SocketAddr, Vec<u8>)> = decode(&seed)
            .into_iter()
            .map(|(d, f, b)| (d, f, b.to_vec()))
            .collect();
        let corpus = vectors::all_messages();
        for m in &muts {
            let n = records.len().max(1);
            match *m {
                Mutation::Drop(i) => {
                    if !records.is_empty() {
                        records.remove(i % n);
                    }
                }
                Mutation::Repeat(i) => {
                    if let Some(r) = records.get(i % n).cloned() {
                        records.insert(i % n, r);
                    }
                }
                Mutation::Swap(a, b) => {
                    if !records.is_empty() {
                        records.swap(a % n, b % n);
                    }
                }
                Mutation::Delay(i, ms) => {
                    if let Some(r) = records.get_mut(i % n) {
                        r.0 = Duration::from_millis(u64::from(ms));
                    }
                }
                Mutation::From(i, p) => {
                    let peers = peers();
                    if let Some(r) = records.get_mut(i % n) {
                        r.1 = peers[usize::from(p) % peers.len()];
                    }
                }
                Mutation::Vector(i, v) => {
                    if let Some(r) = records.get_mut(i % n) {
                        r.2 = corpus[v % corpus.len()].1.clone();
                    }
                }
            }
        }
        run(&encode(&records));
    }
}

// ---------------------------------------------------------------- regressions found here

/// RFC 3261 §9.1 ("If no final response has been received after 64*T1 seconds, the client
/// SHOULD then consider the original transaction cancelled"). Found by
/// `mutated_calls_keep_the_invariants`: a device that rang and then went dark (its CANCEL is
/// lost for good, so no 487 ever comes) kept the whole call in the proxy forever, after the
/// answered dialog had ended.
#[test]
fn a_branch_silent_after_its_cancel_is_given_up_after_64_t1() {
    let mut s = crate::races::setup(11);
    let (a, b) = (s.devices[0], s.devices[1]);
    s.w.behave(b, Behaviour::answer_after(ms(100)));
    let a_addr = s.w.phone_ref(a).addr;
    s.w.drop_next(usize::MAX, "CANCEL", None, None, Some(a_addr));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(2));
    assert_eq!(s.w.phone_ref(s.alice).outgoing[call].finals(), vec![200]);
    s.w.hang_up(s.alice, call);
    s.w.run_for(secs(40));
    assert_eq!(s.w.proxy_calls(), 0, "call left behind\n{}", s.w.dump());
}

/// §16.8 then §9.1: the only device rings past Timer C and never answers the CANCEL. The caller
/// gets a final response 64·T1 after the CANCEL (before: never), and nothing is left.
#[test]
fn timer_c_on_a_dead_device_still_ends_the_call() {
    let mut s = crate::races::setup_with(sipfork::testing::sim::DEFAULT_CONFIG, 12, 1);
    let a_addr = s.w.phone_ref(s.devices[0]).addr;
    s.w.drop_next(usize::MAX, "CANCEL", None, None, Some(a_addr));
    let call = s.w.call(s.alice, "1000");
    s.w.run_for(secs(181 + 33));
    assert_eq!(
        s.w.phone_ref(s.alice).outgoing[call].finals(),
        vec![408],
        "{}",
        s.w.dump()
    );
    s.w.run_for(secs(40));
    assert_eq!(s.w.proxy_calls(), 0, "call left behind\n{}", s.w.dump());
}
