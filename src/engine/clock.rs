//! The engine's one clock: `CLOCK_MONOTONIC` read once per loop turn and turned into the core's
//! [`Instant`] (microseconds since the engine epoch).
//!
//! Every shard shares one [`Clock`], so instants from different shards compare. The wall-clock
//! time of the epoch is kept beside it, because expiry is persisted as wall time (monotonic epochs
//! reset at restart): `wall_of` / `instant_of_wall` convert between the two.

use std::time::{Duration, SystemTime};

use crate::time::Instant;

/// Monotonic clock anchored at the engine epoch.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: std::time::Instant,
    epoch_wall: SystemTime,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn start() -> Self {
        // std's Instant is CLOCK_MONOTONIC on Linux; this is the only place the engine reads it.
        Self {
            epoch: std::time::Instant::now(),
            epoch_wall: SystemTime::now(),
        }
    }

    /// Time since the epoch.
    pub fn now(&self) -> Instant {
        let micros = self.epoch.elapsed().as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// Wall-clock time of the epoch.
    pub fn epoch_wall(&self) -> SystemTime {
        self.epoch_wall
    }

    /// Wall-clock time of `t` (for persisting an expiry).
    pub fn wall_of(&self, t: Instant) -> SystemTime {
        self.epoch_wall + Duration::from_micros(t.as_micros())
    }

    /// The instant of a persisted wall-clock time; times before the epoch map to the epoch.
    pub fn instant_of_wall(&self, wall: SystemTime) -> Instant {
        match wall.duration_since(self.epoch_wall) {
            Ok(d) => Instant::ZERO + d,
            Err(_) => Instant::ZERO,
        }
    }

    /// How long to wait from `now` until `deadline` (zero if it has passed; `None`: no deadline).
    pub fn timeout_until(now: Instant, deadline: Option<Instant>) -> Option<Duration> {
        deadline.map(|d| d.saturating_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_advances_and_wall_conversion_round_trips() {
        let clock = Clock::start();
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        let b = clock.now();
        assert!(b.saturating_since(a) >= Duration::from_millis(2));
        let t = Instant::from_micros(90_000_000);
        assert_eq!(clock.instant_of_wall(clock.wall_of(t)), t);
        assert_eq!(clock.instant_of_wall(SystemTime::UNIX_EPOCH), Instant::ZERO);
        assert_eq!(Clock::timeout_until(b, Some(a)), Some(Duration::ZERO));
        assert_eq!(Clock::timeout_until(b, None), None);
    }
}
