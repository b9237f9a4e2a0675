//! Per-call verdicts and the race classifier: what the caller and every device saw of a call,
//! put together after the run, checked against what a forking proxy owes each party.
//!
//! A call passes when: the caller got a final response; the caller got a 2xx if (and only if)
//! a device answered and the caller did not cancel, and no more 2xx than the policy allows (one
//! under `single_answer`, else one per answering device); no conflicting finals; every device
//! that got the INVITE (and was not scripted silent) sent a final, so none kept ringing; every
//! final a device sent was ACKed (a loser's 487 absorbed by the proxy's ACK; a 2xx by the
//! caller's ACK or, for a late answer under `single_answer`, the proxy's); every answered device
//! got a BYE; every CANCEL and BYE the caller sent got its final response; and every device the
//! proxy owed the INVITE got it (`not_forked`): every registered device of the extension, less
//! the lower q-groups while a higher one has not failed, less what `expect.max_branches` lets the
//! proxy leave out, unless the caller cancelled before any provisional response.
//!
//! Races: a call is *scripted* to provoke a double answer when two devices are scripted to answer
//! within [`RACE_WINDOW_US`] of each other, and a CANCEL/200 crossing when the caller is scripted
//! to cancel within that window of a device's answer. Whether the race then happened is judged
//! from what was sent on the wire: a double answer needs both 2xx sent within the window, a
//! crossing needs the caller's CANCEL sent while the device had the INVITE (its 200 sent within
//! the window of the CANCEL, or no 200 because the CANCEL reached it first). Scripted races that
//! did not happen count as `not_provoked`; the provoked ones are classified by how they ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::caller::{CallerCall, CallerSide, End};
use crate::agent::device::{CallAgg, DevCall, DeviceSide};
use crate::agent::Stamp;
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
    /// A registered device the proxy owed the INVITE (see the module docs) never got it.
    NotForked,
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
    /// Double answer: the second device got the CANCEL before its answer left (487). Kept for
    /// result files of earlier versions: with both 2xx required on the wire, such a call is now
    /// `not_provoked`.
    SecondCancelled,
    /// CANCEL/200: the 200 won; the caller has the call (and BYEs it).
    Answered,
    /// CANCEL/200: the CANCEL reached the device before its 200 left; 487 to the caller.
    CancelledBeforeAnswer,
    /// CANCEL/200: the 200 left but the caller got 487; the proxy ACKed and BYEd the device.
    AnswerTornDownByProxy,
    /// The call failed its verdict.
    Broken,
    /// Scripted, but the race did not happen on the wire (e.g. the 200 reached the caller
    /// before its CANCEL was due, so no CANCEL was sent). Not counted in `provoked`.
    NotProvoked,
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

/// Two events closer than this (µs) coincide: a scripted race, and a race seen on the wire.
pub const RACE_WINDOW_US: u64 = 1000;

/// Scripted answer time of device `k` in call `c` (µs from the call's start; INVITE-anchored
/// delays count from 0, as the INVITE reaches every device within microseconds).
fn planned_answer(plan: &Plan, c: u32, k: u32) -> Option<u64> {
    (plan.behaviour(c, k).action == Action::Answer).then(|| plan.answer_delay_us(c, k))
}

/// The race call `c` is scripted to provoke, if any.
pub fn provoked(plan: &Plan, c: u32) -> Option<Race> {
    let answers: Vec<u64> = (0..plan.width())
        .filter_map(|k| planned_answer(plan, c, k))
        .collect();
    if let Some(cancel) = plan.cancel_after_us(c) {
        if answers.iter().any(|&a| a.abs_diff(cancel) < RACE_WINDOW_US) {
            return Some(Race::Cancel200);
        }
    }
    let mut sorted = answers;
    sorted.sort_unstable();
    sorted
        .windows(2)
        .any(|w| w[1] - w[0] < RACE_WINDOW_US)
        .then_some(Race::DoubleAnswer)
}

fn us(s: Stamp) -> Option<u64> {
    s.get().map(|t| t.as_micros())
}

/// Whether `a` happened, and not after `b` (or `b` never happened).
fn not_after(a: Stamp, b: Stamp) -> bool {
    match (us(a), us(b)) {
        (Some(a), Some(b)) => a <= b,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Whether the scripted race of call `c` happened on the wire.
fn happened(
    plan: &Plan,
    c: u32,
    race: Race,
    call: &CallerCall,
    devices: &[Option<&DevCall>],
) -> bool {
    let sent_2xx: Vec<u64> = devices
        .iter()
        .filter_map(|d| {
            d.filter(|d| d.final_status == 200)
                .and_then(|d| us(d.final_at))
        })
        .collect();
    match race {
        Race::DoubleAnswer => {
            let mut t = sent_2xx;
            t.sort_unstable();
            t.windows(2).any(|w| w[1] - w[0] < RACE_WINDOW_US)
        }
        Race::Cancel200 => {
            let (Some(cancel), Some(t0)) = (us(call.cancel_sent), us(call.t0)) else {
                return false;
            };
            (0..plan.width()).any(|k| {
                let Some(answer) = planned_answer(plan, c, k) else {
                    return false;
                };
                let Some(d) = devices.get(k as usize).copied().flatten() else {
                    return false;
                };
                if !d.invite_at.is_set() {
                    return false;
                }
                match (d.final_status, us(d.final_at)) {
                    (200, Some(at)) => at.abs_diff(cancel) < RACE_WINDOW_US,
                    // The CANCEL reached it before its answer: a crossing only if the CANCEL left
                    // within the window of the scripted answer.
                    _ => d.cancel_at.is_set() && (t0 + answer).abs_diff(cancel) < RACE_WINDOW_US,
                }
            })
        }
    }
}

/// The device positions of call `c` the proxy owed the INVITE, out of `registered`: every
/// registered device whose higher q-groups (by the q each registered with) all sent a non-2xx
/// final; none when the caller cancelled before any provisional response.
fn owed(plan: &Plan, call: &CallerCall, devices: &[Option<&DevCall>], registered: u32) -> u32 {
    if call.cancel_sent.is_set()
        && !not_after(call.got_100, call.cancel_sent)
        && !not_after(call.got_180, call.cancel_sent)
    {
        return 0;
    }
    let q = |k: u32| plan.scenario.device(k).q.unwrap_or(1.0);
    let failed = |k: u32| {
        devices
            .get(k as usize)
            .copied()
            .flatten()
            .is_some_and(|d| d.final_status >= 300)
    };
    (0..plan.width())
        .filter(|&k| registered & 1 << k != 0)
        .filter(|&k| {
            (0..plan.width())
                .filter(|&j| registered & 1 << j != 0 && q(j) > q(k))
                .all(failed)
        })
        .fold(0, |m, k| m | 1 << k)
}

/// Judges call `c` from the caller's record and each device's (`None`: it saw nothing);
/// `registered` is the mask of the extension's device positions that are registered.
pub fn judge(
    plan: &Plan,
    c: u32,
    call: &CallerCall,
    devices: &[Option<&DevCall>],
    agg: CallAgg,
    registered: u32,
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
    let offered: u32 = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_some_and(|d| d.offered || d.invite_at.is_set()))
        .fold(0, |m, (k, _)| m | 1 << k);
    let owed = owed(plan, call, devices, registered);
    let not_forked = match plan.scenario.expect.max_branches {
        Some(max) => bits(offered) < bits(owed).min(max),
        None => owed & !offered != 0,
    };
    if not_forked {
        f.push(Failure::NotForked);
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
        let outcome = if !happened(plan, c, race, call, devices) {
            Outcome::NotProvoked
        } else if !f.is_empty() {
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
            } else {
                // Both 2xx were sent (the race happened): one did not reach the caller.
                let loser = (0..devices.len())
                    .find(|&k| answered_devices & 1 << k != 0 && call.answered & 1 << k == 0);
                match loser {
                    Some(k) if torn_down(k) => Outcome::SecondTornDownByProxy,
                    _ => Outcome::Broken,
                }
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
    /// Calls in which the race happened on the wire.
    pub provoked: u64,
    /// How they ended (plus `not_provoked`: scripted calls in which it did not happen).
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Calls scripted to provoke it (`provoked` + `not_provoked`).
    #[serde(default)]
    pub scripted: u64,
    /// Scripted calls in which the race did not happen on the wire.
    #[serde(default)]
    pub not_provoked: u64,
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
    judge_each(plan, caller, devices, false, |_, _| {})
}

/// Judges every started call of a run (`ended_only`: every call that ended at the caller, for an
/// interrupted run), handing each call's verdict to `each` too.
pub fn judge_each(
    plan: &Plan,
    caller: &CallerSide,
    devices: &DeviceSide,
    ended_only: bool,
    mut each: impl FnMut(u32, &Verdict),
) -> Judgement {
    let mut j = Judgement::default();
    let width = plan.width();
    let registered = |c: u32| {
        let e = plan.extension_of(c);
        (0..width)
            .filter(|&k| devices.reg.is_registered(plan, plan.device_index(e, k)))
            .fold(0u32, |m, k| m | 1 << k)
    };
    for (c, call) in caller.calls.iter().enumerate() {
        if !call.t0.is_set() || (ended_only && call.end == End::Open) {
            continue;
        }
        let c = c as u32;
        let devs: Vec<Option<&DevCall>> = (0..width).map(|k| devices.call(c, k)).collect();
        let agg = devices.aggs.get(c as usize).copied().unwrap_or_default();
        let v = judge(plan, c, call, &devs, agg, registered(c));
        j.calls += 1;
        each(c, &v);
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
            rc.scripted += 1;
            if outcome == Outcome::NotProvoked {
                rc.not_provoked += 1;
            } else {
                rc.provoked += 1;
            }
            *rc.outcomes.entry(outcome).or_default() += 1;
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
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
            0b111,
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
            let v = judge(&p, 0, &call, &refs, CallAgg::default(), 0b111);
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
            0b111,
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
            0b111,
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
            0b111,
        );
        assert_eq!(
            v.race,
            Some((Race::DoubleAnswer, Outcome::SecondTornDownByProxy)),
            "{v:?}"
        );
        // The second device was cancelled before its answer left: only one 2xx on the wire,
        // so the scripted race did not happen.
        let (w, l1, l2) = (winner(), loser(), loser());
        let v = judge(
            &p,
            0,
            &answered_call(),
            &[Some(&w), Some(&l1), Some(&l2)],
            CallAgg::default(),
            0b111,
        );
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.race, Some((Race::DoubleAnswer, Outcome::NotProvoked)));
        // Both 2xx were sent, but 5 ms apart: not within the window either.
        let mut later = winner();
        later.final_at = at(105);
        later.ack_from_proxy = true;
        later.bye_from_proxy = true;
        let v = judge(
            &p,
            0,
            &answered_call(),
            &[Some(&w), Some(&later), Some(&l2)],
            CallAgg::default(),
            0b111,
        );
        assert_eq!(v.race, Some((Race::DoubleAnswer, Outcome::NotProvoked)));

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
            0b111,
        );
        assert_eq!(
            v.race,
            Some((Race::Cancel200, Outcome::CancelledBeforeAnswer)),
            "{v:?}"
        );
        let mut late = winner();
        late.final_at = at(50);
        late.ack_from_proxy = true;
        late.bye_from_proxy = true;
        let v = judge(
            &p,
            0,
            &cancelled,
            &[Some(&late), Some(&l1), Some(&l2)],
            CallAgg::default(),
            0b111,
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
        let mut w = winner();
        w.final_at = at(50);
        let v = judge(
            &p,
            0,
            &cancelled,
            &[Some(&w), Some(&l1), Some(&l2)],
            CallAgg::default(),
            0b111,
        );
        assert_eq!(v.race, Some((Race::Cancel200, Outcome::Answered)), "{v:?}");
        // The proxy forwarded the 200 before the CANCEL was due: the caller sent none, and the
        // scripted crossing did not happen.
        let mut uncancelled = answered_call();
        uncancelled.got_2xx = at(49);
        let v = judge(
            &p,
            0,
            &uncancelled,
            &[Some(&w), Some(&l1), Some(&l2)],
            CallAgg::default(),
            0b111,
        );
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.race, Some((Race::Cancel200, Outcome::NotProvoked)));
    }

    #[test]
    fn a_registered_device_that_never_got_the_invite_is_not_forked() {
        let p = plan("fork3", false);
        let (w, l1) = (winner(), loser());
        let untouched = DevCall::default();
        let devs = [Some(&w), Some(&l1), Some(&untouched)];
        let v = judge(&p, 0, &answered_call(), &devs, CallAgg::default(), 0b111);
        assert_eq!(v.failures, vec![Failure::NotForked], "{v:?}");
        // Not registered: not owed.
        let v = judge(&p, 0, &answered_call(), &devs, CallAgg::default(), 0b011);
        assert!(v.ok(), "{v:?}");
        // An INVITE that scenario loss dropped at the device still reached it.
        let mut dropped = DevCall::default();
        dropped.offered = true;
        let devs = [Some(&w), Some(&l1), Some(&dropped)];
        let v = judge(&p, 0, &answered_call(), &devs, CallAgg::default(), 0b111);
        assert!(v.ok(), "{v:?}");
        // max_branches = 2: two of three is what the proxy owes.
        let mut s = p.scenario.clone();
        s.expect.max_branches = Some(2);
        let p2 = Plan::new(s, "127.0.0.1:5060".parse().unwrap(), false, 1).unwrap();
        let devs = [Some(&w), Some(&l1), Some(&untouched)];
        let v = judge(&p2, 0, &answered_call(), &devs, CallAgg::default(), 0b111);
        assert!(v.ok(), "{v:?}");
        let devs = [Some(&w), Some(&untouched), Some(&untouched)];
        let v = judge(&p2, 0, &answered_call(), &devs, CallAgg::default(), 0b111);
        assert_eq!(v.failures, vec![Failure::NotForked], "{v:?}");
    }

    #[test]
    fn a_lower_q_group_is_owed_the_invite_only_once_the_higher_groups_failed() {
        // serial: device 0 registers with q=1.0, devices 1 and 2 with q=0.5.
        let p = plan("serial", false);
        let untouched = DevCall::default();
        let mut first_answers = winner();
        first_answers.final_at = at(40);
        let devs = [Some(&first_answers), Some(&untouched), Some(&untouched)];
        let v = judge(&p, 0, &answered_call(), &devs, CallAgg::default(), 0b111);
        assert!(!v.failures.contains(&Failure::NotForked), "{v:?}");
        let busy = device(486);
        let devs = [Some(&busy), Some(&untouched), Some(&untouched)];
        let mut call = answered_call();
        call.final_status = 486;
        call.answered = 0;
        call.bye_sent = 0;
        call.bye_answered = 0;
        let v = judge(&p, 0, &call, &devs, CallAgg::default(), 0b111);
        assert!(v.failures.contains(&Failure::NotForked), "{v:?}");
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
