//! Timer wheel cost figures (not a test): `cargo run --release --example timer_figures`.
//!
//! Inserts 1,000,000 timers spread over two hours, cancels half, polls the rest in 1 ms steps,
//! then runs transaction-style churn (timers 500 ms out, most cancelled before they fire).

use std::time::Instant as Clock;

use sipfork::core::timer::{TimerId, TimerWheel};
use sipfork::time::{ms, Duration, Instant};

fn main() {
    const N: u64 = 1_000_000;
    let mut wheel: TimerWheel<u64> = TimerWheel::with_capacity(Instant::ZERO, N as usize);
    let mut state = 7u64;
    let mut below = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let deadlines: Vec<Instant> = (0..N)
        .map(|_| Instant::from_micros(below(7_200_000_000)))
        .collect();
    let clock = Clock::now();
    let ids: Vec<TimerId> = deadlines
        .iter()
        .enumerate()
        .map(|(k, &at)| wheel.insert(at, k as u64))
        .collect();
    let insert_ns = clock.elapsed().as_nanos() as f64 / N as f64;
    let clock = Clock::now();
    for id in ids.iter().step_by(2) {
        wheel.cancel(*id);
    }
    let cancel_ns = clock.elapsed().as_nanos() as f64 / (N / 2) as f64;
    let clock = Clock::now();
    let mut now = Instant::ZERO;
    let mut fired = 0u64;
    while fired < N / 2 {
        now += ms(1);
        while wheel.poll_expired(now).is_some() {
            fired += 1;
        }
    }
    let poll_ns = clock.elapsed().as_nanos() as f64 / fired as f64;
    let clock = Clock::now();
    let mut live = std::collections::VecDeque::new();
    for i in 0..N {
        now += Duration::from_micros(100);
        live.push_back(wheel.insert(now + ms(500), i));
        if live.len() > 1_000 {
            let id = live.pop_front().expect("non-empty");
            if i % 10 != 0 {
                wheel.cancel(id);
            }
        }
        while wheel.poll_expired(now).is_some() {}
    }
    let churn_ns = clock.elapsed().as_nanos() as f64 / N as f64;
    println!(
        "timer wheel: {} bytes/entry (K = u64); insert {insert_ns:.1} ns, cancel {cancel_ns:.1} ns, \
         poll (1 ms steps over 2 h, 500k fired) {poll_ns:.1} ns/fired, churn insert+cancel/poll {churn_ns:.1} ns",
        TimerWheel::<u64>::entry_bytes(),
    );
}
