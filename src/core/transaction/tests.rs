//! Each figure walked edge by edge on virtual time: the wheel fires timers, the machine answers.

use super::client_invite::{self, ClientInvite};
use super::client_non_invite::{self, ClientNonInvite};
use super::server_invite::{self, ServerInvite};
use super::server_non_invite::{self, ServerNonInvite};
use super::{Sched, Timer, TimerValues, TxnSlot, LINGER_GRID};
use crate::core::slab::Key;
use crate::core::timer::TimerWheel;
use crate::core::TimerKey;
use crate::time::{ms, secs, Instant};

const CALL: Key = Key {
    index: 0,
    generation: 0,
};

struct Bench {
    wheel: TimerWheel<TimerKey>,
    now: Instant,
}

impl Bench {
    fn new() -> Self {
        Bench {
            wheel: TimerWheel::new(Instant::ZERO),
            now: Instant::ZERO,
        }
    }
    fn sched(&mut self) -> Sched<'_> {
        Sched {
            wheel: &mut self.wheel,
            now: self.now,
            call: CALL,
            slot: TxnSlot::Branch(0),
            values: TimerValues::default(),
        }
    }
    /// Advances to `until`, returning every timer that fired with its time (in ms).
    fn fire_until(&mut self, until: Instant, mut on: impl FnMut(Timer, &mut Sched<'_>)) {
        while let Some(at) = self.wheel.next_deadline().filter(|at| *at <= until) {
            self.now = self.now.max(at);
            while let Some(TimerKey::Txn { timer, .. }) = self.wheel.poll_expired(self.now) {
                let mut s = self.sched();
                on(timer, &mut s);
            }
        }
        self.now = until;
    }
}

/// `ms` rounded up to the grid that lingering timers (D, I, J, K, L, M) fire on.
fn lingered(ms: u64) -> u64 {
    let grid = LINGER_GRID.as_millis() as u64;
    ms.div_ceil(grid) * grid
}

fn at_ms(t: Instant) -> u64 {
    t.as_millis()
}

#[test]
fn invite_client_retransmits_at_doubling_intervals_then_times_out_at_64_t1() {
    let mut b = Bench::new();
    let mut t = ClientInvite::start(&mut b.sched());
    let mut log = Vec::new();
    let mut now_log = Vec::new();
    b.fire_until(Instant::ZERO + secs(40), |timer, s| {
        let v = t.on_timer(timer, s);
        log.push((timer, v));
        now_log.push(at_ms(s.now));
    });
    // A at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B at 32 s.
    assert_eq!(now_log, vec![500, 1500, 3500, 7500, 15500, 31500, 32000]);
    assert!(log[..6]
        .iter()
        .all(|e| *e == (Timer::A, client_invite::OnTimer::Retransmit)));
    assert_eq!(log[6], (Timer::B, client_invite::OnTimer::TimedOut));
    assert_eq!(t.state(), client_invite::State::Terminated);
    assert!(
        b.wheel.is_empty(),
        "Timer A must not outlive the transaction"
    );
}

#[test]
fn invite_client_provisional_stops_retransmissions_and_timer_b() {
    let mut b = Bench::new();
    let mut t = ClientInvite::start(&mut b.sched());
    b.now = Instant::ZERO + ms(100);
    assert_eq!(
        t.on_response(180, &mut b.sched()),
        client_invite::OnResponse::PassUp
    );
    assert_eq!(t.state(), client_invite::State::Proceeding);
    assert!(
        b.wheel.is_empty(),
        "Proceeding runs no timer of its own (Timer C is the proxy's)"
    );
    assert_eq!(
        t.on_response(183, &mut b.sched()),
        client_invite::OnResponse::PassUp
    );
}

#[test]
fn invite_client_non_2xx_is_acked_and_retransmissions_are_re_acked_until_timer_d() {
    let mut b = Bench::new();
    let mut t = ClientInvite::start(&mut b.sched());
    assert_eq!(
        t.on_response(180, &mut b.sched()),
        client_invite::OnResponse::PassUp
    );
    assert_eq!(
        t.on_response(487, &mut b.sched()),
        client_invite::OnResponse::AckAndPassUp
    );
    assert_eq!(
        t.on_response(487, &mut b.sched()),
        client_invite::OnResponse::AckAgain
    );
    assert_eq!(
        t.on_response(180, &mut b.sched()),
        client_invite::OnResponse::Absorb
    );
    assert_eq!(
        t.on_response(200, &mut b.sched()),
        client_invite::OnResponse::Absorb
    );
    let mut fired = Vec::new();
    b.fire_until(Instant::ZERO + secs(33), |timer, s| {
        fired.push((timer, t.on_timer(timer, s), s.now))
    });
    assert_eq!(
        fired,
        vec![(
            Timer::D,
            client_invite::OnTimer::Terminated,
            Instant::ZERO + secs(32)
        )]
    );
}

#[test]
fn invite_client_accepted_forwards_2xx_retransmissions_until_timer_m() {
    let mut b = Bench::new();
    let mut t = ClientInvite::start(&mut b.sched());
    assert_eq!(
        t.on_response(200, &mut b.sched()),
        client_invite::OnResponse::PassUp
    );
    assert_eq!(t.state(), client_invite::State::Accepted);
    assert_eq!(
        t.on_response(200, &mut b.sched()),
        client_invite::OnResponse::PassUp
    );
    assert_eq!(
        t.on_response(486, &mut b.sched()),
        client_invite::OnResponse::Absorb
    );
    let mut fired = Vec::new();
    b.fire_until(Instant::ZERO + secs(40), |timer, s| {
        fired.push((timer, t.on_timer(timer, s)))
    });
    assert_eq!(fired, vec![(Timer::M, client_invite::OnTimer::Terminated)]);
    assert_eq!(
        t.on_response(200, &mut b.sched()),
        client_invite::OnResponse::Absorb
    );
}

#[test]
fn invite_server_resends_final_on_g_until_ack_then_absorbs_for_timer_i() {
    let mut b = Bench::new();
    let mut t = ServerInvite::start();
    assert_eq!(
        t.on_retransmission(),
        server_invite::OnRequest::ResendLast,
        "100 Trying again"
    );
    assert!(t.send_provisional());
    assert!(t.send_final(486, &mut b.sched()));
    assert!(
        !t.send_final(200, &mut b.sched()),
        "no 2xx after a non-2xx final"
    );
    assert!(!t.send_provisional());
    let mut resends = Vec::new();
    b.fire_until(Instant::ZERO + ms(7600), |timer, s| {
        assert_eq!(t.on_timer(timer, s), server_invite::OnTimer::ResendFinal);
        resends.push(at_ms(s.now));
    });
    // G at T1, then doubling, capped at T2 = 4 s: 0.5, 1.5, 3.5, 7.5 s.
    assert_eq!(resends, vec![500, 1500, 3500, 7500]);
    assert_eq!(t.on_retransmission(), server_invite::OnRequest::ResendLast);
    assert_eq!(t.on_ack(&mut b.sched()), server_invite::OnRequest::Absorb);
    assert_eq!(t.state(), server_invite::State::Confirmed);
    assert_eq!(t.on_retransmission(), server_invite::OnRequest::Absorb);
    let mut fired = Vec::new();
    b.fire_until(Instant::ZERO + secs(20), |timer, s| {
        fired.push((timer, t.on_timer(timer, s), at_ms(s.now)))
    });
    assert_eq!(
        fired,
        vec![(
            Timer::I,
            server_invite::OnTimer::Terminated,
            lingered(12_600)
        )]
    );
    assert!(b.wheel.is_empty());
}

#[test]
fn invite_server_gives_up_on_a_missing_ack_at_timer_h() {
    let mut b = Bench::new();
    let mut t = ServerInvite::start();
    assert!(t.send_final(404, &mut b.sched()));
    let mut last = None;
    b.fire_until(Instant::ZERO + secs(40), |timer, s| {
        last = Some((timer, t.on_timer(timer, s), at_ms(s.now)))
    });
    assert_eq!(
        last,
        Some((Timer::H, server_invite::OnTimer::AckTimeout, 32_000))
    );
    assert!(b.wheel.is_empty());
}

#[test]
fn invite_server_accepted_absorbs_invites_and_allows_more_2xx_until_timer_l() {
    let mut b = Bench::new();
    let mut t = ServerInvite::start();
    assert!(t.send_final(200, &mut b.sched()));
    assert!(
        t.send_final(200, &mut b.sched()),
        "a second 2xx from another branch passes"
    );
    assert!(!t.send_final(487, &mut b.sched()));
    assert_eq!(t.on_retransmission(), server_invite::OnRequest::Absorb);
    let mut fired = Vec::new();
    b.fire_until(Instant::ZERO + secs(40), |timer, s| {
        fired.push((timer, t.on_timer(timer, s)))
    });
    assert_eq!(fired, vec![(Timer::L, server_invite::OnTimer::Terminated)]);
}

#[test]
fn non_invite_client_retransmits_capped_at_t2_and_times_out_at_f() {
    let mut b = Bench::new();
    let mut t = ClientNonInvite::start(&mut b.sched());
    let mut at = Vec::new();
    let mut end = None;
    b.fire_until(Instant::ZERO + secs(40), |timer, s| {
        match t.on_timer(timer, s) {
            client_non_invite::OnTimer::Retransmit => at.push(at_ms(s.now)),
            v => end = Some((timer, v, at_ms(s.now))),
        }
    });
    assert_eq!(
        at,
        vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(
        end,
        Some((Timer::F, client_non_invite::OnTimer::TimedOut, 32_000))
    );
}

#[test]
fn non_invite_client_proceeding_retransmits_every_t2_and_final_completes() {
    let mut b = Bench::new();
    let mut t = ClientNonInvite::start(&mut b.sched());
    assert_eq!(
        t.on_response(100, &mut b.sched()),
        client_non_invite::OnResponse::PassUp
    );
    let mut at = Vec::new();
    b.fire_until(Instant::ZERO + ms(9000), |timer, s| {
        assert_eq!(t.on_timer(timer, s), client_non_invite::OnTimer::Retransmit);
        at.push(at_ms(s.now));
    });
    assert_eq!(at, vec![500, 4500, 8500]);
    assert_eq!(
        t.on_response(200, &mut b.sched()),
        client_non_invite::OnResponse::PassUp
    );
    assert_eq!(
        t.on_response(200, &mut b.sched()),
        client_non_invite::OnResponse::Absorb
    );
    let mut fired = Vec::new();
    b.fire_until(Instant::ZERO + secs(20), |timer, s| {
        fired.push((timer, t.on_timer(timer, s), at_ms(s.now)))
    });
    assert_eq!(
        fired,
        vec![(
            Timer::K,
            client_non_invite::OnTimer::Terminated,
            lingered(14_000)
        )]
    );
}

#[test]
fn non_invite_server_answers_retransmissions_with_the_last_response_until_timer_j() {
    let mut b = Bench::new();
    let mut t = ServerNonInvite::start();
    assert_eq!(t.on_retransmission(), server_non_invite::OnRequest::Absorb);
    assert!(t.send(100, &mut b.sched()));
    assert_eq!(
        t.on_retransmission(),
        server_non_invite::OnRequest::ResendLast
    );
    assert!(t.send(200, &mut b.sched()));
    assert!(!t.send(500, &mut b.sched()));
    assert_eq!(
        t.on_retransmission(),
        server_non_invite::OnRequest::ResendLast
    );
    let mut fired = Vec::new();
    b.fire_until(Instant::ZERO + secs(40), |timer, s| {
        fired.push((timer, t.on_timer(timer, s), at_ms(s.now)))
    });
    assert_eq!(fired, vec![(Timer::J, true, 32_000)]);
    assert_eq!(t.state(), server_non_invite::State::Terminated);
}

#[test]
fn non_invite_server_over_a_reliable_transport_ends_as_its_final_is_sent() {
    let mut b = Bench::new();
    let mut t = ServerNonInvite::start_over(true);
    assert!(t.send(200, &mut b.sched()));
    let mut fired = Vec::new();
    b.fire_until(Instant::ZERO + secs(40), |timer, s| {
        fired.push((timer, t.on_timer(timer, s), at_ms(s.now)))
    });
    assert_eq!(
        fired,
        vec![(Timer::J, true, 0)],
        "Timer J is zero (§17.2.2)"
    );
    assert_eq!(t.state(), server_non_invite::State::Terminated);
}

/// Runs the wheel to `until`, handing each timer to `on`: (ms, timer, what `on` said).
fn timeline<T>(
    b: &mut Bench,
    until: Instant,
    mut on: impl FnMut(Timer, &mut Sched<'_>) -> T,
) -> Vec<(u64, Timer, T)> {
    let mut log = Vec::new();
    b.fire_until(until, |timer, s| {
        log.push((at_ms(s.now), timer, on(timer, s)))
    });
    log
}

/// On a reliable transport (TCP, TLS) the client transactions run no Timer A/E and end at
/// B/F; D and K are zero (RFC 3261 §17.1.1.2, §17.1.2.2).
#[test]
fn reliable_clients_never_retransmit_and_run_zero_d_and_k() {
    // INVITE, no answer: only Timer B, at 32 s.
    let mut b = Bench::new();
    let mut t = ClientInvite::start_over(&mut b.sched(), true);
    let log = timeline(&mut b, Instant::ZERO + secs(40), |timer, s| {
        t.on_timer(timer, s)
    });
    assert_eq!(
        log,
        vec![(32000, Timer::B, client_invite::OnTimer::TimedOut)]
    );
    // INVITE answered 486: Completed, and Timer D ends it at once.
    let mut b = Bench::new();
    let mut t = ClientInvite::start_over(&mut b.sched(), true);
    b.now = Instant::ZERO + ms(100);
    t.on_response(486, &mut b.sched());
    let log = timeline(&mut b, Instant::ZERO + secs(1), |timer, s| {
        t.on_timer(timer, s)
    });
    assert_eq!(
        log,
        vec![(100, Timer::D, client_invite::OnTimer::Terminated)]
    );
    // Non-INVITE, no answer: only Timer F; answered: Timer K at once.
    let mut b = Bench::new();
    let mut t = ClientNonInvite::start_over(&mut b.sched(), true);
    let log = timeline(&mut b, Instant::ZERO + secs(40), |timer, s| {
        t.on_timer(timer, s)
    });
    assert_eq!(
        log,
        vec![(32000, Timer::F, client_non_invite::OnTimer::TimedOut)]
    );
    let mut b = Bench::new();
    let mut t = ClientNonInvite::start_over(&mut b.sched(), true);
    b.now = Instant::ZERO + ms(100);
    t.on_response(200, &mut b.sched());
    let log = timeline(&mut b, Instant::ZERO + secs(1), |timer, s| {
        t.on_timer(timer, s)
    });
    assert_eq!(
        log,
        vec![(100, Timer::K, client_non_invite::OnTimer::Terminated)]
    );
}

/// On a reliable transport the INVITE server sends a non-2xx final once (no Timer G), still
/// gives up at Timer H, and Timer I is zero (§17.2.1).
#[test]
fn reliable_invite_server_never_retransmits_its_final() {
    let mut b = Bench::new();
    let mut t = ServerInvite::start_over(true);
    assert!(t.send_final(486, &mut b.sched()));
    let log = timeline(&mut b, Instant::ZERO + secs(40), |timer, s| {
        t.on_timer(timer, s)
    });
    assert_eq!(
        log,
        vec![(32000, Timer::H, server_invite::OnTimer::AckTimeout)]
    );
    let mut b = Bench::new();
    let mut t = ServerInvite::start_over(true);
    assert!(t.send_final(486, &mut b.sched()));
    b.now = Instant::ZERO + ms(50);
    t.on_ack(&mut b.sched());
    let log = timeline(&mut b, Instant::ZERO + secs(1), |timer, s| {
        t.on_timer(timer, s)
    });
    assert_eq!(
        log,
        vec![(50, Timer::I, server_invite::OnTimer::Terminated)]
    );
}

#[test]
fn lingering_timers_end_together_on_the_grid_and_retransmissions_stay_exact() {
    let mut b = Bench::new();
    let mut armed = Vec::new();
    // Three calls end a wait within one grid step; a retransmission timer is armed beside them.
    for (at, timer) in [(1, Timer::K), (9, Timer::J), (20, Timer::D), (21, Timer::E)] {
        b.now = Instant::ZERO + ms(at);
        let after = match timer {
            Timer::K => TimerValues::default().t4,
            Timer::E => TimerValues::default().t1,
            _ => secs(32),
        };
        armed.push(b.sched().arm(timer, after));
    }
    // Over a reliable transport the wait is zero: it ends at once, not at the next grid step.
    b.now = Instant::ZERO + ms(22);
    b.sched().arm(Timer::K, ms(0));
    let mut fired = Vec::new();
    b.fire_until(Instant::ZERO + secs(40), |timer, s| {
        fired.push((timer, at_ms(s.now)))
    });
    assert_eq!(
        fired,
        vec![
            (Timer::K, 22),
            (Timer::E, 521),
            (Timer::K, lingered(5_001)),
            (Timer::J, lingered(32_009)),
            (Timer::D, lingered(32_020)),
        ]
    );
    assert_eq!(lingered(32_009), lingered(32_020), "one wake-up ends both");
    assert!(lingered(5_001) - 5_001 < LINGER_GRID.as_millis() as u64);
    assert!(
        !Timer::A.lingers() && !Timer::B.lingers() && !Timer::G.lingers() && Timer::M.lingers()
    );
}
