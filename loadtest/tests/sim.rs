//! The harness against sipfork's real proxy `Core` on virtual time: every preset's flow passes
//! its own verdicts, races are classified, loss is survived, and a broken proxy is caught.

use std::sync::Arc;

use sipfork::time::Duration;
use sipfork_load::metrics::Metric;
use sipfork_load::plan::Plan;
use sipfork_load::scenario::Scenario;
use sipfork_load::sim::{ProxyOptions, Sim};
use sipfork_load::verdict::{judge_all, Judgement};

fn small(preset: &str, calls: u64) -> Scenario {
    let mut s = Scenario::preset(preset).unwrap();
    s.topology.extensions = 20;
    s.load.rate = 100.0;
    s.load.max = calls;
    s.registration.rate = 5000.0;
    s
}

fn run(s: Scenario, options: &ProxyOptions, split: bool) -> (Sim, Judgement) {
    run_with(s, options, split, Duration::ZERO)
}

fn run_with(
    s: Scenario,
    options: &ProxyOptions,
    split: bool,
    jitter: Duration,
) -> (Sim, Judgement) {
    let plan = Arc::new(Plan::new(s, "127.0.0.1:5060".parse().unwrap(), false, 0x51).unwrap());
    let mut sim = Sim::sipfork(Arc::clone(&plan), options, split);
    sim.log = Some(Vec::new());
    sim.jitter = jitter;
    let done = sim.run(Duration::from_secs(120), Duration::from_secs(1));
    assert!(done, "the load phase ended");
    let caller = sim.caller_agent().caller.as_ref().unwrap();
    let devices = sim.device_agent().devices.as_ref().unwrap();
    let j = judge_all(&plan, caller, devices);
    for (c, why) in j.examples.iter().take(2) {
        eprintln!(
            "call {c} failed: {why:?}\n{}",
            sim.log_of(&format!("c{c}."))
        );
    }
    (sim, j)
}

/// fork3 with `calls` calls against a sipfork whose datagrams matching `drop` are lost (a broken
/// proxy), run to the end and judged.
fn broken_proxy(calls: u64, drop: fn(&[u8]) -> bool) -> (Arc<Plan>, Sim, Judgement) {
    let plan = Arc::new(
        Plan::new(
            small("fork3", calls),
            "127.0.0.1:5060".parse().unwrap(),
            false,
            0x51,
        )
        .unwrap(),
    );
    let mut sim = Sim::sipfork(Arc::clone(&plan), &ProxyOptions::default(), false);
    sim.drop_from_proxy = Some(drop);
    sim.run(Duration::from_secs(60), Duration::from_secs(1));
    let j = judge_all(
        &plan,
        sim.caller_agent().caller.as_ref().unwrap(),
        sim.device_agent().devices.as_ref().unwrap(),
    );
    (plan, sim, j)
}

/// The whole result (as `run` writes it) of `s` against sipfork configured by `options`.
fn result_of(s: Scenario, options: &ProxyOptions) -> sipfork_load::result::RunResult {
    let plan = Arc::new(Plan::new(s, "127.0.0.1:5060".parse().unwrap(), false, 0x51).unwrap());
    let mut sim = Sim::sipfork(Arc::clone(&plan), options, false);
    sim.run(Duration::from_secs(60), Duration::from_secs(1));
    let refs: Vec<&sipfork_load::agent::Agent> = sim.agents.iter().collect();
    sipfork_load::result::assemble(&plan, &refs, Default::default())
}

#[test]
fn fork3_every_call_passes_and_both_losers_are_cancelled() {
    let (mut sim, j) = run(small("fork3", 40), &ProxyOptions::default(), false);
    assert_eq!((j.calls, j.ok, j.failed), (40, 40, 0), "{j:#?}");
    let m = sim.caller_agent().metrics();
    assert_eq!(m.histogram(Metric::Invite180).len(), 40);
    assert_eq!(m.histogram(Metric::Invite100).len(), 40);
    assert_eq!(m.histogram(Metric::Invite200).len(), 40);
    assert_eq!(
        m.histogram(Metric::CancelLatency).len(),
        80,
        "two losers per call"
    );
    // 50 µs per hop: INVITE→180 is four hops (caller, proxy, device, proxy), 200 → CANCEL two.
    assert_eq!(m.histogram(Metric::Invite180).value_at_quantile(0.5), 200);
    assert_eq!(m.histogram(Metric::CancelLatency).max(), 100);
    assert_eq!(m.totals.retransmitted, 0);
    sim.run_for(Duration::from_secs(40));
    assert_eq!(sim.proxy_calls(), 0, "no transaction left in the proxy");
}

#[test]
fn caller_and_devices_in_two_agents_judge_the_same() {
    let (_, j) = run(small("fork3", 30), &ProxyOptions::default(), true);
    assert_eq!((j.calls, j.ok), (30, 30), "{j:#?}");
}

#[test]
fn fork8_cancels_seven_losers_per_call() {
    let mut s = small("fork8", 20);
    s.topology.extensions = 10;
    let (sim, j) = run(s, &ProxyOptions::default(), false);
    assert_eq!((j.calls, j.ok), (20, 20), "{j:#?}");
    let m = sim.caller_agent().metrics();
    assert_eq!(m.histogram(Metric::CancelLatency).len(), 140);
}

#[test]
fn double_answers_are_all_forwarded_by_default_and_torn_down_under_single_answer() {
    use sipfork_load::verdict::{Outcome, Race};
    let (_, j) = run(
        small("race-double-answer", 30),
        &ProxyOptions::default(),
        false,
    );
    assert_eq!((j.calls, j.ok), (30, 30), "{j:#?}");
    let r = &j.races[&Race::DoubleAnswer];
    assert_eq!(r.provoked, 30);
    assert_eq!(r.outcomes.get(&Outcome::BothForwarded), Some(&30), "{r:?}");

    let mut s = small("race-double-answer", 30);
    s.expect.single_answer = true;
    let options = ProxyOptions {
        single_answer: true,
        ..ProxyOptions::default()
    };
    let (_, j) = run(s, &options, false);
    assert_eq!((j.calls, j.ok), (30, 30), "{j:#?}");
    let r = &j.races[&Race::DoubleAnswer];
    assert_eq!(
        r.outcomes.get(&Outcome::SecondTornDownByProxy),
        Some(&30),
        "{r:?}"
    );
}

#[test]
fn cancel_crossing_200_ends_answered_or_cancelled_never_broken() {
    use sipfork_load::verdict::{Outcome, Race};
    // 0-100 µs of jitter per datagram: the CANCEL and the 200 cross in both orders.
    let jitter = Duration::from_micros(100);
    let (mut sim, j) = run_with(
        small("race-cancel-200", 200),
        &ProxyOptions::default(),
        false,
        jitter,
    );
    assert_eq!((j.calls, j.ok), (200, 200), "{j:#?}");
    let r = &j.races[&Race::Cancel200];
    assert_eq!(r.scripted, 200);
    assert_eq!(r.provoked + r.not_provoked, 200);
    assert!(r.provoked > 100, "most scripted crossings happen: {r:?}");
    assert!(!r.outcomes.contains_key(&Outcome::Broken), "{r:?}");
    assert!(
        r.outcomes.contains_key(&Outcome::Answered)
            && r.outcomes.contains_key(&Outcome::CancelledBeforeAnswer),
        "both ways the race can end were seen: {r:?}"
    );
    eprintln!("cancel/200 outcomes: {r:?}");
    sim.run_for(Duration::from_secs(40));
    assert_eq!(sim.proxy_calls(), 0);
}

#[test]
fn five_percent_loss_on_every_leg_is_survived_by_retransmissions() {
    for seed in 1..=8 {
        let mut s = small("lossy", 60);
        s.load.drain_s = 40.0;
        s.load.seed = seed;
        let (sim, j) = run(s, &ProxyOptions::default(), false);
        assert_eq!((j.calls, j.ok), (60, 60), "seed {seed}: {j:#?}");
        let m = sim.caller_agent().metrics();
        assert!(
            m.totals.lost > 0 && m.totals.retransmitted > 0,
            "{:?}",
            m.totals
        );
    }
}

#[test]
fn all_busy_gives_the_caller_486_and_every_busy_device_is_acked() {
    let mut s = small("fork3", 20);
    s.device.truncate(1);
    s.device[0].action = sipfork_load::scenario::Action::Busy;
    s.expect.final_status = Some(486);
    let (sim, j) = run(s, &ProxyOptions::default(), false);
    assert_eq!((j.calls, j.ok), (20, 20), "{j:#?}");
    let c = &sim.caller_agent().caller.as_ref().unwrap().calls[0];
    assert_eq!(c.final_status, 486);
}

#[test]
fn serial_q_groups_ring_the_second_group_after_the_first_is_busy() {
    let options = ProxyOptions {
        q_groups: true,
        ..ProxyOptions::default()
    };
    let (sim, j) = run(small("serial", 20), &options, false);
    assert_eq!((j.calls, j.ok), (20, 20), "{j:#?}");
    let d = sim.device_agent().devices.as_ref().unwrap();
    let (first, second) = (d.call(0, 0).unwrap(), d.call(0, 1).unwrap());
    assert_eq!(first.final_status, 486);
    let busy_at = first.final_at.get().unwrap();
    assert!(
        second.invite_at.get().unwrap() > busy_at,
        "group 2 rang after group 1 failed"
    );
}

#[test]
fn a_proxy_that_never_cancels_is_caught_as_kept_ringing() {
    use sipfork_load::verdict::Failure;
    let (_, _, j) = broken_proxy(10, |b| b.starts_with(b"CANCEL "));
    assert_eq!(j.failed, 10, "{j:#?}");
    assert_eq!(j.failures.get(&Failure::KeptRinging), Some(&10));
}

#[test]
fn a_proxy_that_loses_the_2xx_is_caught() {
    use sipfork_load::verdict::Failure;
    let (_, _, j) = broken_proxy(5, |b| {
        b.starts_with(b"SIP/2.0 200") && b.windows(14).any(|w| w == b"CSeq: 1 INVITE")
    });
    assert_eq!(j.failed, 5, "{j:#?}");
    assert!(
        j.failures.contains_key(&Failure::AnswerLost) || j.failures.contains_key(&Failure::NoFinal),
        "{j:#?}"
    );
}

#[test]
fn register_storm_with_digest_reuses_the_nonce_with_increasing_nc() {
    let mut s = small("register-storm-digest", 300);
    s.topology.extensions = 20;
    s.load.rate = 200.0;
    let options = ProxyOptions {
        digest: true,
        ..ProxyOptions::default()
    };
    let (sim, _) = run(s, &options, false);
    let shared = &sim.shared;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(shared.registered.load(Relaxed), 60);
    assert_eq!(shared.registration_failed.load(Relaxed), 0);
    assert_eq!(
        shared.completed.load(Relaxed),
        300,
        "every storm REGISTER got 200"
    );
    assert_eq!(shared.failed.load(Relaxed), 0);
    let m = sim.device_agent().metrics();
    assert_eq!(m.histogram(Metric::Register).len(), 300);
    // One challenge per clearing REGISTER (20 extensions) and per device (60) in the
    // registration phase, none in the storm: its REGISTERs carry the next nc of the same nonce.
    let challenges = sim
        .log
        .iter()
        .flatten()
        .filter(|l| l.contains("SIP/2.0 401"))
        .count();
    assert_eq!(challenges, 80, "the nonce is reused, not re-challenged");
}

#[test]
fn register_storm_without_auth_measures_every_register() {
    let mut s = small("register-storm", 200);
    s.topology.extensions = 10;
    s.load.rate = 500.0;
    let (sim, _) = run(s, &ProxyOptions::default(), false);
    let m = sim.device_agent().metrics();
    assert_eq!(m.histogram(Metric::Register).len(), 200);
    assert_eq!(
        m.histogram(Metric::Register).max(),
        100,
        "two hops of 50 µs"
    );
}

/// An INVITE from the proxy to a device that is not position 0 of its extension (fork3: device
/// ports 20000 + 3e + k).
fn invite_to_a_loser(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"INVITE sip:") else {
        return false;
    };
    let line = rest.split(|&c| c == b' ').next().unwrap_or_default();
    let port = line
        .rsplit(|&c| c == b':')
        .next()
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.split(';').next()?.parse::<u32>().ok());
    port.is_some_and(|p| (20000..30000).contains(&p) && (p - 20000) % 3 != 0)
}

#[test]
fn a_proxy_that_forks_to_one_device_of_three_fails_fork3_as_not_forked() {
    use sipfork_load::verdict::Failure;
    let (plan, sim, j) = broken_proxy(10, invite_to_a_loser);
    assert_eq!((j.calls, j.failed), (10, 10), "{j:#?}");
    assert_eq!(j.failures.get(&Failure::NotForked), Some(&10), "{j:#?}");
    let refs: Vec<&sipfork_load::agent::Agent> = sim.agents.iter().collect();
    let r = sipfork_load::result::assemble(&plan, &refs, Default::default());
    assert!(!r.passed && r.success_pct == 0.0, "{:?}", r.failed_because);
    assert_eq!((r.counters.completed, r.counters.failed), (0, 10));
    assert_eq!(
        r.counters.caller_completed, 10,
        "the caller alone saw nothing wrong"
    );
    let timeline_failed: u64 = r.timeline.iter().map(|p| p.counts.failed).sum();
    assert_eq!(
        timeline_failed, 10,
        "the timeline says what the verdicts say"
    );
}

#[test]
fn a_registrar_that_refuses_registrations_fails_the_run() {
    let options = ProxyOptions {
        max_contacts: Some(1),
        ..ProxyOptions::default()
    };
    let mut s = small("fork3", 10);
    let r = result_of(s.clone(), &options);
    assert_eq!(r.registration.devices, 60);
    assert_eq!((r.registration.registered, r.registration.failed), (20, 40));
    assert_eq!(
        r.registration.clear_failed, 0,
        "the clears are counted apart"
    );
    // The calls themselves pass (an unregistered device is not owed the INVITE), the run not.
    assert_eq!(r.success_pct, 100.0);
    assert!(!r.passed, "{r:#?}");
    assert!(
        r.failed_because[0].contains("did not register"),
        "{:?}",
        r.failed_because
    );
    s.registration.allow_failures = true;
    let r = result_of(s, &options);
    assert!(r.passed, "{:?}", r.failed_because);
}

#[test]
fn a_crossing_the_proxy_answers_before_the_cancel_leaves_is_not_provoked() {
    use sipfork_load::verdict::{Outcome, Race};
    // Device 0 answers 49.5-49.7 ms after the start: still scripted as a crossing (within 1 ms
    // of the CANCEL at 50 ms), but its 200 is at the caller 100 µs later, before the CANCEL is
    // due, so the caller sends none.
    let mut s = small("race-cancel-200", 40);
    s.device[0].after_ms = sipfork_load::scenario::Dist::Uniform(49.5, 49.7);
    let (sim, j) = run(s, &ProxyOptions::default(), false);
    assert_eq!((j.calls, j.ok), (40, 40), "{j:#?}");
    let r = &j.races[&Race::Cancel200];
    assert_eq!(
        (r.scripted, r.provoked, r.not_provoked),
        (40, 0, 40),
        "{r:?}"
    );
    assert_eq!(r.outcomes.get(&Outcome::NotProvoked), Some(&40));
    let caller = sim.caller_agent().caller.as_ref().unwrap();
    assert!(caller.calls.iter().all(|c| !c.cancel_sent.is_set()));
}

#[test]
fn invites_answer_the_407_with_the_extensions_credentials_in_either_algorithm_order() {
    for algorithms in [["SHA-256", "MD5"], ["MD5", "SHA-256"]] {
        let mut s = small("fork3", 20);
        s.registration.digest = true;
        s.caller.digest = true;
        let options = ProxyOptions {
            digest: true,
            algorithms: Some(algorithms.iter().map(ToString::to_string).collect()),
            ..ProxyOptions::default()
        };
        let (sim, j) = run(s, &options, false);
        assert_eq!((j.calls, j.ok), (20, 20), "{algorithms:?}: {j:#?}");
        let caller = sim.caller_agent().caller.as_ref().unwrap();
        assert!(
            caller.calls.iter().all(|c| c.authorized),
            "every INVITE was challenged"
        );
        assert_eq!(
            sim.shared
                .registration_failed
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
    // Without --digest the caller takes the 407 as the call's final answer.
    let mut s = small("fork3", 5);
    s.registration.digest = true;
    let options = ProxyOptions {
        digest: true,
        ..ProxyOptions::default()
    };
    let (_, j) = run(s, &options, false);
    assert_eq!(j.failed, 5, "{j:#?}");
}

#[test]
fn devices_refresh_their_bindings_while_calls_outlast_the_expiry() {
    // 25 s of calls; the bindings of the phase expire after 10 s unless the devices refresh them
    // (every 5 s): without refreshes the calls of the last 15 s would get 480.
    let mut s = small("fork3", 100);
    s.load.rate = 4.0;
    s.registration.expires = 10;
    let r = result_of(s, &ProxyOptions::default());
    assert_eq!(r.registration.registered, 60);
    assert!(
        r.registration.refreshed >= 4 * 60,
        "every device refreshed at 5, 10, 15 and 20 s: {:?}",
        r.registration
    );
    assert_eq!(r.registration.refresh_failed, 0);
    assert!(r.passed, "{:?}", r.failed_because);
    assert_eq!(r.success_pct, 100.0);
}
