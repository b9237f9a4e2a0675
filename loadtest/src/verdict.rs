//! Per-call verdicts and the race classifier: what the caller and every device saw of a call,
//! put together after the run, checked against what a forking proxy owes each party.
//!
//! A call passes when: the caller got a final response; the caller got a 2xx if (and only if)
//! a device answered and the caller did not cancel, and no more 2xx than the policy allows (one
//! under `single_answer`, else one per answering device); no conflicting finals; every device
//! that got the INVITE (and was not scripted silent) sent a final, so none kept ringing; every
//! final a device sent was ACKed (a loser's 487 absorbed by the proxy's ACK; a 2xx by the
//! caller's ACK or, for a late answer under `single_answer`, the proxy's); every answered device
//! got a BYE; every CANCEL and BYE the caller sent got its final response.
//!
//! Races: a call *provokes* a double answer when two devices are scripted to answer within
//! 1 ms of each other, and a CANCEL/200 crossing when the caller is scripted to cancel within
//! 1 ms of a device's answer. Each provoked race is classified by how it ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::caller::{CallerCall, CallerSide, End};
use crate::agent::device::{CallAgg, DevCall, DeviceSide};
use crate::plan::Plan;
use crate::scenario::Action;

/// Why a call failed (a call may fail for several reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The caller never got a final response.
    NoFinal,
    /// The caller's final response is not the one the scenario allows.
    WrongFinal,
    /// A device answered, the caller did not cancel, and no 2xx reached the caller.
    AnswerLost,
    /// More 2xx reached the caller than the policy allows.
    TooMany2xx,
    /// The caller got finals that contradict each other (e.g. a 487 after a 200).
    ConflictingFinals,
    /// A device that got the INVITE never sent a final: nobody cancelled it.
    KeptRinging,
    /// A device's final response was never ACKed.
    FinalNotAcked,
    /// A device answered and never got a BYE.
    DialogLeftOpen,
    /// The caller's BYE got no final response.
    ByeUnanswered,
    /// The caller's CANCEL got no final response.
    CancelUnanswered,
    /// Still open at the drain deadline for another reason.
    TimedOut,
}

/// The races the harness provokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Race {
    /// Two devices answer in the same millisecond.
    DoubleAnswer,
    /// The caller's CANCEL crosses a device's 200 OK.
    Cancel200,
}

/// How a provoked race ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Double answer: both 2xx reached the caller, which ACKed both and BYEd the second.
    BothForwarded,
    /// Double answer: one 2xx reached the caller; the proxy ACKed and BYEd the other.
    SecondTornDownByProxy,
    /// Double answer: the second device got the CANCEL before its answer left (487).
    SecondCancelled,
    /// CANCEL/200: the 200 won; the caller has the call (and BYEs it).
    Answered,
    /// CANCEL/200: the CANCEL reached the device before its 200 left; 487 to the caller.
    CancelledBeforeAnswer,
    /// CANCEL/200: the 200 left but the caller got 487; the proxy ACKed and BYEd the device.
    AnswerTornDownByProxy,
    /// The call failed its verdict.
    Broken,
}

/// The verdict on one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Reasons it failed (empty: it passed).
    pub failures: Vec<Failure>,
    /// The race it provoked and how that ended.
    pub race: Option<(Race, Outcome)>,
}

impl Verdict {
    /// Whether the call passed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

fn bits(mask: u32) -> u32 {
    mask.count_ones()
}

/// Scripted answer time of device `k` in call `c` (µs from the call's start; INVITE-anchored
/// delays count from 0, as the INVITE reaches every device within microseconds).
fn planned_answer(plan: &Plan, c: u32, k: u32) -> Option<u64> {
    (plan.behaviour(c, k).action == Action::Answer).then(|| plan.answer_delay_us(c, k))
}

/// The race call `c` provokes, if any.
pub fn provoked(plan: &Plan, c: u32) -> Option<Race> {
    let answers: Vec<u64> = (0..plan.width())
        .filter_map(|k| planned_answer(plan, c, k))
        .collect();
    if let Some(cancel) = plan.cancel_after_us(c) {
        if answers.iter().any(|&a| a.abs_diff(cancel) < 1000) {
            return Some(Race::Cancel200);
        }
    }
    let mut sorted = answers;
    sorted.sort_unstable();
    sorted
        .windows(2)
        .any(|w| w[1] - w[0] < 1000)
        .then_some(Race::DoubleAnswer)
}

/// Judges call `c` from the caller's record and each device's (`None`: it saw nothing).
pub fn judge(
    plan: &Plan,
    c: u32,
    call: &CallerCall,
    devices: &[Option<&DevCall>],
    agg: CallAgg,
) -> Verdict {
    let mut f = Vec::new();
    let single_answer = plan.scenario.expect.single_answer;
    let cancelled = call.cancel_sent.is_set();
    let answered_devices: u32 = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_some_and(|d| d.final_status == 200))
        .fold(0, |m, (k, _)| m | 1 << k);
    let n2xx = bits(call.answered);
    if call.final_status == 0 {
        f.push(Failure::NoFinal);
    }
    if call.end == End::WrongFinal {
        f.push(Failure::WrongFinal);
    }
    if answered_devices != 0 && !cancelled && n2xx == 0 && call.final_status != 0 {
        f.push(Failure::AnswerLost);
    }
    if answered_devices == 0 && n2xx > 0 {
        f.push(Failure::WrongFinal);
    }
    let allowed = if single_answer {
        1
    } else {
        bits(answered_devices)
    };
    if n2xx > allowed {
        f.push(Failure::TooMany2xx);
    }
    if call.conflicting_finals > 0 || (n2xx > 0 && call.non2xx_finals > 0) {
        f.push(Failure::ConflictingFinals);
    }
    for (k, d) in devices.iter().enumerate() {
        let Some(d) = d else { continue };
        if !d.invite_at.is_set() {
            continue;
        }
        let silent = plan.behaviour(c, k as u32).action == Action::Silent;
        if d.final_status == 0 {
            if !silent {
                f.push(Failure::KeptRinging);
            }
            continue;
        }
        if !d.ack_at.is_set() {
            f.push(Failure::FinalNotAcked);
        }
        if d.final_status == 200 && !d.bye_at.is_set() {
            f.push(Failure::DialogLeftOpen);
        }
    }
    if cancelled && !call.cancel_answered {
        f.push(Failure::CancelUnanswered);
    }
    if call.bye_sent & !call.bye_answered != 0 {
        f.push(Failure::ByeUnanswered);
    }
    if call.end == End::TimedOut && f.is_empty() {
        f.push(Failure::TimedOut);
    }
    f.sort_unstable();
    f.dedup();
    let race = provoked(plan, c).map(|race| {
        let outcome = if !f.is_empty() {
            Outcome::Broken
        } else {
            classify(race, call, devices, agg, answered_devices)
        };
        (race, outcome)
    });
    Verdict { failures: f, race }
}

fn classify(
    race: Race,
    call: &CallerCall,
    devices: &[Option<&DevCall>],
    agg: CallAgg,
    answered_devices: u32,
) -> Outcome {
    let torn_down = |k: usize| {
        devices
            .get(k)
            .copied()
            .flatten()
            .is_some_and(|d| d.final_status == 200 && d.ack_from_proxy && d.bye_from_proxy)
    };
    match race {
        Race::DoubleAnswer => {
            if bits(call.answered) >= 2 {
                Outcome::BothForwarded
            } else if bits(answered_devices) >= 2 {
                let loser = (0..devices.len())
                    .find(|&k| answered_devices & 1 << k != 0 && call.answered & 1 << k == 0);
                match loser {
                    Some(k) if torn_down(k) => Outcome::SecondTornDownByProxy,
                    _ => Outcome::Broken,
                }
            } else {
                Outcome::SecondCancelled
            }
        }
        Race::Cancel200 => {
            if call.final_status >= 200 && call.final_status < 300 {
                Outcome::Answered
            } else if answered_devices == 0 {
                Outcome::CancelledBeforeAnswer
            } else if torn_down(usize::from(agg.first_answer_k)) {
                Outcome::AnswerTornDownByProxy
            } else {
                Outcome::Broken
            }
        }
    }
}

/// Counts of one race kind.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RaceCounts {
    /// Calls that provoked it.
    pub provoked: u64,
    /// How they ended.
    pub outcomes: BTreeMap<Outcome, u64>,
}

/// Verdicts over a whole run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Judgement {
    /// Calls judged (every started call).
    pub calls: u64,
    /// Calls that passed.
    pub ok: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Failed calls by reason (a call counts once per reason).
    pub failures: BTreeMap<Failure, u64>,
    /// Provoked races and their outcomes.
    pub races: BTreeMap<Race, RaceCounts>,
    /// A few failed calls with their reasons, for a first look.
    pub examples: Vec<(u32, Vec<Failure>)>,
    /// What each party saw of those calls (same order as `examples`).
    #[serde(default)]
    pub example_records: Vec<String>,
}

/// One line per party of what it saw of a call, for failure reports.
pub fn describe(call: &CallerCall, devices: &[Option<&DevCall>]) -> String {
    let t0 = call.t0.get().map_or(0, |t| t.as_micros());
    let at = |s: crate::agent::Stamp| {
        s.get().map_or("-".to_owned(), |t| {
            format!("{:.1}ms", (t.as_micros() as f64 - t0 as f64) / 1000.0)
        })
    };
    let mut out = format!(
        "caller: 100@{} 180@{} 2xx@{} final={} answered={:#b} ringing={:#b} cancel@{} cancel_answered={} 487@{} bye_sent={:#b} bye_answered={:#b} retrans={} dups={} end={:?}",
        at(call.got_100),
        at(call.got_180),
        at(call.got_2xx),
        call.final_status,
        call.answered,
        call.ringing,
        at(call.cancel_sent),
        call.cancel_answered,
        at(call.got_487),
        call.bye_sent,
        call.bye_answered,
        call.retransmitted,
        call.duplicates,
        call.end
    );
    for (k, d) in devices.iter().enumerate() {
        match d {
            None => out.push_str(&format!("; d{k}: nothing")),
            Some(d) => out.push_str(&format!(
                "; d{k}: invite@{} x{} 180@{} final={}@{} cancel@{} x{} ack@{}{} bye@{}{} retrans={}{}",
                at(d.invite_at),
                d.invites,
                at(d.ringing_at),
                d.final_status,
                at(d.final_at),
                at(d.cancel_at),
                d.cancels,
                at(d.ack_at),
                if d.ack_from_proxy { "(proxy)" } else { "" },
                at(d.bye_at),
                if d.bye_from_proxy { "(proxy)" } else { "" },
                d.retransmitted,
                if d.gave_up { " gave-up" } else { "" }
            )),
        }
    }
    out
}

/// Judges every started call of a run.
pub fn judge_all(plan: &Plan, caller: &CallerSide, devices: &DeviceSide) -> Judgement {
    let mut j = Judgement::default();
    let width = plan.width();
    for (c, call) in caller.calls.iter().enumerate() {
        if !call.t0.is_set() {
            continue;
        }
        let c = c as u32;
        let devs: Vec<Option<&DevCall>> = (0..width).map(|k| devices.call(c, k)).collect();
        let agg = devices.aggs.get(c as usize).copied().unwrap_or_default();
        let v = judge(plan, c, call, &devs, agg);
        j.calls += 1;
        if v.ok() {
            j.ok += 1;
        } else {
            j.failed += 1;
            for r in &v.failures {
                *j.failures.entry(*r).or_default() += 1;
            }
            if j.examples.len() < 10 {
                j.examples.push((c, v.failures.clone()));
                j.example_records.push(describe(call, &devs));
            }
        }
        if let Some((race, outcome)) = v.race {
            let rc = j.races.entry(race).or_default();
            rc.provoked += 1;
            *rc.outcomes.entry(outcome).or_default() += 1;
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Stamp;
    use crate::scenario::Scenario;
    use sipfork::time::Instant;

    fn plan(preset: &str, single_answer: bool) -> Plan {
        let mut s = Scenario::preset(preset).unwrap();
        s.expect.single_answer = single_answer;
        Plan::new(s, "127.0.0.1:5060".parse().unwrap(), false, 1).unwrap()
    }

    fn at(ms: u64) -> Stamp {
        Stamp::at(Instant::from_micros(ms * 1000))
    }

    /// A caller record of a call answered by device 0 and hung up cleanly.
    fn answered_call() -> CallerCall {
        let mut c = CallerCall::default();
        c.t0 = at(0);
        c.got_100 = at(1);
        c.got_180 = at(1);
        c.got_2xx = at(100);
        c.final_status = 200;
        c.ringing = 0b111;
        c.answered = 0b1;
        c.bye_sent = 0b1;
        c.bye_answered = 0b1;
        c.end = End::Completed;
        c
    }

    fn device(final_status: u16) -> DevCall {
        let mut d = DevCall::default();
        d.invite_at = at(1);
        d.ringing_at = at(1);
        d.final_status = final_status;
        d.final_at = at(100);
        d.ack_at = at(101);
        d
    }

    fn winner() -> DevCall {
        let mut d = device(200);
        d.bye_at = at(600);
        d
    }

    fn loser() -> DevCall {
        let mut d = device(487);
        d.cancel_at = at(101);
        d.ack_from_proxy = true;
        d
    }

    #[test]
    fn a_clean_fork3_call_passes() {
        let p = plan("fork3", false);
        let (w, l1, l2) = (winner(), loser(), loser());
        let v = judge(
            &p,
            0,
            &answered_call(),
            &[Some(&w), Some(&l1), Some(&l2)],
            CallAgg::default(),
        );
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.race, None);
    }

    #[test]
    fn each_broken_obligation_is_named() {
        let p = plan("fork3", false);
        type Breaks = Box<dyn Fn(&mut CallerCall, &mut [DevCall; 3])>;
        let cases: Vec<(Breaks, Failure)> = vec![
            (
                Box::new(|_, d| {
                    d[1].final_status = 0;
                    d[1].final_at = Stamp::NONE;
                    d[1].cancel_at = Stamp::NONE;
                    d[1].ack_at = Stamp::NONE;
                }),
                Failure::KeptRinging,
            ),
            (
                Box::new(|_, d| d[2].ack_at = Stamp::NONE),
                Failure::FinalNotAcked,
            ),
            (
                Box::new(|_, d| d[0].bye_at = Stamp::NONE),
                Failure::DialogLeftOpen,
            ),
            (Box::new(|c, _| c.bye_answered = 0), Failure::ByeUnanswered),
            (
                Box::new(|c, _| {
                    c.final_status = 0;
                    c.got_2xx = Stamp::NONE;
                    c.answered = 0;
                    c.bye_sent = 0;
                    c.bye_answered = 0;
                }),
                Failure::NoFinal,
            ),
            (
                Box::new(|c, _| {
                    c.final_status = 480;
                    c.answered = 0;
                    c.bye_sent = 0;
                    c.bye_answered = 0;
                }),
                Failure::AnswerLost,
            ),
            (
                Box::new(|c, _| c.non2xx_finals = 1),
                Failure::ConflictingFinals,
            ),
        ];
        for (i, (breaks, want)) in cases.iter().enumerate() {
            let mut call = answered_call();
            let mut devs = [winner(), loser(), loser()];
            breaks(&mut call, &mut devs);
            let refs: Vec<Option<&DevCall>> = devs.iter().map(Some).collect();
            let v = judge(&p, 0, &call, &refs, CallAgg::default());
            assert!(
                v.failures.contains(want),
                "case {i}: want {want:?}, got {v:?}"
            );
        }
    }

    #[test]
    fn the_2xx_policy_follows_single_answer() {
        let mut call = answered_call();
        call.answered = 0b11;
        call.bye_sent = 0b11;
        call.bye_answered = 0b11;
        let (a, b, l) = (winner(), winner(), loser());
        let devs = [Some(&a), Some(&b), Some(&l)];
        let forwarded = judge(
            &plan("race-double-answer", false),
            0,
            &call,
            &devs,
            CallAgg::default(),
        );
        assert!(forwarded.ok(), "{forwarded:?}");
        assert_eq!(
            forwarded.race,
            Some((Race::DoubleAnswer, Outcome::BothForwarded))
        );
        let single = judge(
            &plan("race-double-answer", true),
            0,
            &call,
            &devs,
            CallAgg::default(),
        );
        assert!(single.failures.contains(&Failure::TooMany2xx), "{single:?}");
        assert_eq!(single.race, Some((Race::DoubleAnswer, Outcome::Broken)));
    }

    #[test]
    fn races_are_classified_by_how_they_ended() {
        let p = plan("race-double-answer", true);
        // One 2xx reached the caller; the proxy ACKed and BYEd the other answering device.
        let mut torn = winner();
        torn.ack_from_proxy = true;
        torn.bye_from_proxy = true;
        let (w, l) = (winner(), loser());
        let v = judge(
            &p,
            0,
            &answered_call(),
            &[Some(&w), Some(&torn), Some(&l)],
            CallAgg::default(),
        );
        assert_eq!(
            v.race,
            Some((Race::DoubleAnswer, Outcome::SecondTornDownByProxy)),
            "{v:?}"
        );
        // The second device was cancelled before its answer left.
        let (w, l1, l2) = (winner(), loser(), loser());
        let v = judge(
            &p,
            0,
            &answered_call(),
            &[Some(&w), Some(&l1), Some(&l2)],
            CallAgg::default(),
        );
        assert_eq!(v.race, Some((Race::DoubleAnswer, Outcome::SecondCancelled)));

        let p = plan("race-cancel-200", false);
        let mut cancelled = CallerCall::default();
        cancelled.t0 = at(0);
        cancelled.final_status = 487;
        cancelled.non2xx_finals = 1;
        cancelled.cancel_sent = at(50);
        cancelled.cancel_answered = true;
        cancelled.got_487 = at(51);
        cancelled.end = End::Completed;
        let (d0, l1, l2) = (loser(), loser(), loser());
        let v = judge(
            &p,
            0,
            &cancelled,
            &[Some(&d0), Some(&l1), Some(&l2)],
            CallAgg::default(),
        );
        assert_eq!(
            v.race,
            Some((Race::Cancel200, Outcome::CancelledBeforeAnswer)),
            "{v:?}"
        );
        let mut late = winner();
        late.ack_from_proxy = true;
        late.bye_from_proxy = true;
        let v = judge(
            &p,
            0,
            &cancelled,
            &[Some(&late), Some(&l1), Some(&l2)],
            CallAgg::default(),
        );
        assert_eq!(
            v.race,
            Some((Race::Cancel200, Outcome::AnswerTornDownByProxy)),
            "{v:?}"
        );
        cancelled.final_status = 200;
        cancelled.non2xx_finals = 0;
        cancelled.answered = 0b1;
        cancelled.bye_sent = 0b1;
        cancelled.bye_answered = 0b1;
        let w = winner();
        let v = judge(
            &p,
            0,
            &cancelled,
            &[Some(&w), Some(&l1), Some(&l2)],
            CallAgg::default(),
        );
        assert_eq!(v.race, Some((Race::Cancel200, Outcome::Answered)), "{v:?}");
    }

    #[test]
    fn only_scripted_coincidences_count_as_provoked_races() {
        assert_eq!(provoked(&plan("fork3", false), 7), None);
        assert_eq!(
            provoked(&plan("race-double-answer", false), 7),
            Some(Race::DoubleAnswer)
        );
        assert_eq!(
            provoked(&plan("race-cancel-200", false), 7),
            Some(Race::Cancel200)
        );
    }
}
