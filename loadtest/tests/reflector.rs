//! The null reflector mode: the harness runs the same call flow end to end through the reflector,
//! and the reflector sends what sipfork sends (same count, sizes within a few bytes, same
//! parties), measured against sipfork's real `Core` in the simulator.

use std::sync::Arc;

use sipfork::time::Duration;
use sipfork_load::metrics::Metric;
use sipfork_load::plan::Plan;
use sipfork_load::reflect::ProxySizes;
use sipfork_load::scenario::Scenario;
use sipfork_load::sim::{ProxyOptions, Sim};
use sipfork_load::verdict::judge_all;

fn scenario(preset: &str) -> Scenario {
    let mut s = Scenario::preset(preset).unwrap();
    s.topology.extensions = 10;
    s.load.rate = 100.0;
    s.load.max = 30;
    s.registration.rate = 5000.0;
    s.registration.clear = false;
    s
}

struct Totals {
    received: usize,
    sent: usize,
    sent_bytes: usize,
    to_caller: usize,
}

fn totals(sim: &Sim) -> Totals {
    let trace = sim.trace.as_ref().unwrap();
    let caller = sim.caller_agent().plan().callers[0];
    Totals {
        received: trace.iter().filter(|e| !e.input.is_empty()).count(),
        sent: trace.iter().map(|e| e.outputs.len()).sum(),
        sent_bytes: trace
            .iter()
            .flat_map(|e| e.outputs.iter())
            .map(|(_, b)| b.len())
            .sum(),
        to_caller: trace
            .iter()
            .flat_map(|e| e.outputs.iter())
            .filter(|(to, _)| *to == caller)
            .count(),
    }
}

fn compare(preset: &str) {
    let target = "127.0.0.1:5060".parse().unwrap();
    let proxy_plan = Arc::new(Plan::new(scenario(preset), target, false, 9).unwrap());
    let mut sipfork = Sim::sipfork(Arc::clone(&proxy_plan), &ProxyOptions::default(), false);
    sipfork.trace = Some(Vec::new());
    assert!(sipfork.run(Duration::from_secs(60), Duration::from_secs(2)));

    let mut reflect_plan = Plan::new(scenario(preset), target, true, 9).unwrap();
    reflect_plan.sizes = ProxySizes::measure(&reflect_plan);
    let reflect_plan = Arc::new(reflect_plan);
    let mut reflector = Sim::reflector(Arc::clone(&reflect_plan), false);
    reflector.trace = Some(Vec::new());
    assert!(reflector.run(Duration::from_secs(60), Duration::from_secs(2)));

    for (sim, plan) in [(&sipfork, &proxy_plan), (&reflector, &reflect_plan)] {
        let j = judge_all(
            plan,
            sim.caller_agent().caller.as_ref().unwrap(),
            sim.device_agent().devices.as_ref().unwrap(),
        );
        assert_eq!(
            (j.calls, j.ok),
            (30, 30),
            "{preset}, reflect={}: {j:#?}",
            plan.reflect
        );
    }
    let (a, b) = (totals(&sipfork), totals(&reflector));
    assert_eq!(a.received, b.received, "{preset}: datagrams into the proxy");
    assert_eq!(a.sent, b.sent, "{preset}: datagrams out of the proxy");
    assert_eq!(
        a.to_caller, b.to_caller,
        "{preset}: datagrams to the caller"
    );
    let diff = a.sent_bytes.abs_diff(b.sent_bytes) as f64 / a.sent_bytes as f64;
    assert!(
        diff < 0.02,
        "{preset}: bytes out {} vs {}",
        a.sent_bytes,
        b.sent_bytes
    );
    // The same latencies are measured in both modes.
    let (ma, mb) = (
        sipfork.caller_agent().metrics(),
        reflector.caller_agent().metrics(),
    );
    for m in [Metric::Invite180, Metric::Invite200, Metric::CancelLatency] {
        assert_eq!(
            ma.histogram(m).len(),
            mb.histogram(m).len(),
            "{preset}: {m:?}"
        );
    }
}

#[test]
fn fork3_through_the_reflector_matches_sipfork_datagram_for_datagram() {
    compare("fork3");
}

#[test]
fn fork8_through_the_reflector_matches_sipfork_datagram_for_datagram() {
    compare("fork8");
}

#[test]
fn measured_sizes_are_sipforks() {
    let plan = Plan::new(
        scenario("fork3"),
        "127.0.0.1:5060".parse().unwrap(),
        true,
        9,
    )
    .unwrap();
    let s = ProxySizes::measure(&plan);
    assert_ne!(s, ProxySizes::default());
    assert!(s.invite > s.trying && s.answer > s.ringing, "{s:?}");
}
