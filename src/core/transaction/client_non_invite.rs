//! Non-INVITE client transaction: RFC 3261 §17.1.2, Figure 6.
//!
//! ```text
//!   Trying --1xx--> Proceeding --200-699--> Completed --Timer K--> Terminated
//!     |                                        ^
//!     +----------------200-699-----------------+
//!   Timer E: retransmit (T1 doubling to T2; T2 once Proceeding);  Timer F: timeout (408)
//! ```
//! Used for CANCELs of branches, forwarded non-INVITE requests (MESSAGE, NOTIFY, BYE ...), and
//! the BYEs sipfork sends itself to end a late-answering device's call.

use super::timers::{Sched, Timer};
use crate::core::timer::TimerId;
use crate::time::Duration;

/// States of Figure 6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Request sent, nothing heard.
    Trying,
    /// A provisional arrived; retransmitting every T2.
    Proceeding,
    /// A final arrived; absorbing its retransmissions.
    Completed,
    /// Over.
    Terminated,
}

/// What to do with a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnResponse {
    /// Hand it up (first final, or a provisional).
    PassUp,
    /// Retransmission or late response: nothing to do.
    Absorb,
}

/// What to do when a timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTimer {
    /// Send the request again (Timer E).
    Retransmit,
    /// Timer F: no final response; behave as if a 408 arrived.
    TimedOut,
    /// Timer K: over.
    Terminated,
    /// Stale; ignore.
    Ignore,
}

/// One non-INVITE client transaction.
#[derive(Debug)]
pub struct ClientNonInvite {
    state: State,
    retransmit: Option<TimerId>,
    interval: Duration,
    lifetime: Option<TimerId>,
    reliable: bool,
}

impl ClientNonInvite {
    /// The request has just been sent over an unreliable transport (UDP): Trying, with Timers E
    /// and F running.
    pub fn start(s: &mut Sched<'_>) -> Self {
        Self::start_over(s, false)
    }

    /// The request has just been sent, over a `reliable` transport (TCP, TLS) or not: Trying,
    /// with Timer F running, and Timer E only on an unreliable one (§17.1.2.2).
    pub fn start_over(s: &mut Sched<'_>, reliable: bool) -> Self {
        let interval = s.values.t1;
        ClientNonInvite {
            state: State::Trying,
            retransmit: (!reliable).then(|| s.arm(Timer::E, interval)),
            interval,
            lifetime: Some(s.arm(Timer::F, s.values.t1x64())),
            reliable,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// A response matched the transaction.
    pub fn on_response(&mut self, status: u16, s: &mut Sched<'_>) -> OnResponse {
        match (self.state, status) {
            (State::Trying, 100..=199) => {
                self.state = State::Proceeding;
                OnResponse::PassUp
            }
            (State::Proceeding, 100..=199) => OnResponse::PassUp,
            (State::Trying | State::Proceeding, 200..) => {
                s.cancel(&mut self.retransmit);
                s.cancel(&mut self.lifetime);
                self.state = State::Completed;
                // Timer K: zero on a reliable transport (§17.1.2.2).
                let k = if self.reliable {
                    Duration::ZERO
                } else {
                    s.values.t4
                };
                self.lifetime = Some(s.arm(Timer::K, k));
                OnResponse::PassUp
            }
            _ => OnResponse::Absorb,
        }
    }

    /// One of this transaction's timers fired.
    pub fn on_timer(&mut self, timer: Timer, s: &mut Sched<'_>) -> OnTimer {
        match (self.state, timer) {
            (State::Trying | State::Proceeding, Timer::E) => {
                self.interval = if self.state == State::Trying {
                    (self.interval * 2).min(s.values.t2)
                } else {
                    s.values.t2
                };
                self.retransmit = Some(s.arm(Timer::E, self.interval));
                OnTimer::Retransmit
            }
            (State::Trying | State::Proceeding, Timer::F) => {
                self.terminate(s);
                OnTimer::TimedOut
            }
            (State::Completed, Timer::K) => {
                self.terminate(s);
                OnTimer::Terminated
            }
            _ => OnTimer::Ignore,
        }
    }

    /// Ends the transaction now, cancelling its timers.
    pub fn terminate(&mut self, s: &mut Sched<'_>) {
        s.cancel(&mut self.retransmit);
        s.cancel(&mut self.lifetime);
        self.state = State::Terminated;
    }
}
