//! INVITE client transaction: RFC 3261 §17.1.1, Figure 5, with RFC 6026's Accepted state.
//!
//! ```text
//!   Calling --1xx--> Proceeding --2xx--> Accepted --Timer M--> Terminated
//!     |  \             |
//!     |   2xx/300-699  300-699 (send ACK)
//!     |                v
//!     +--300-699--> Completed --Timer D--> Terminated
//!   Timer A: retransmit INVITE;  Timer B: timeout (the proxy treats it as 408)
//! ```
//! Invariant: the ACK for a non-2xx final is ours to send (hop by hop, same branch); the ACK for
//! a 2xx is end-to-end and never passes through this machine.

use super::timers::{Sched, Timer};
use crate::core::timer::TimerId;
use crate::time::Duration;

/// States of Figure 5 plus RFC 6026's Accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// INVITE sent, nothing heard.
    Calling,
    /// A provisional arrived; no more retransmissions.
    Proceeding,
    /// A 2xx arrived; later 2xx retransmissions are still forwarded (RFC 6026).
    Accepted,
    /// A non-2xx final arrived and was ACKed; absorbing its retransmissions.
    Completed,
    /// Over; the owner may free it.
    Terminated,
}

/// What the owner must do with a response the transaction received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnResponse {
    /// Hand it to the proxy (response context).
    PassUp,
    /// Send the ACK for this non-2xx final, then hand the response to the proxy.
    AckAndPassUp,
    /// A retransmitted non-2xx final: send the ACK again, nothing else.
    AckAgain,
    /// Nothing to do (e.g. a late provisional).
    Absorb,
}

/// What the owner must do when one of the transaction's timers fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTimer {
    /// Send the INVITE again.
    Retransmit,
    /// Timer B: no response at all; behave as if a 408 arrived (§16.7, §17.1.1.2).
    TimedOut,
    /// The transaction ended quietly.
    Terminated,
    /// Not a timer this state runs (already cancelled); ignore.
    Ignore,
}

/// One INVITE client transaction (the bytes it retransmits live with its owner).
#[derive(Debug)]
pub struct ClientInvite {
    state: State,
    retransmit: Option<TimerId>,
    interval: Duration,
    lifetime: Option<TimerId>,
    reliable: bool,
}

impl ClientInvite {
    /// The INVITE has just been handed to an unreliable transport (UDP): Calling, with Timers A
    /// and B running.
    pub fn start(s: &mut Sched<'_>) -> Self {
        Self::start_over(s, false)
    }

    /// The INVITE has just been handed to the transport, `reliable` (TCP, TLS) or not: Calling,
    /// with Timer B running, and Timer A only on an unreliable one (§17.1.1.2).
    pub fn start_over(s: &mut Sched<'_>, reliable: bool) -> Self {
        let interval = s.values.t1;
        ClientInvite {
            state: State::Calling,
            retransmit: (!reliable).then(|| s.arm(Timer::A, interval)),
            interval,
            lifetime: Some(s.arm(Timer::B, s.values.t1x64())),
            reliable,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True once a provisional (or any response) was received.
    pub fn heard_back(&self) -> bool {
        self.state != State::Calling
    }

    /// A response matched this transaction (§17.1.3).
    pub fn on_response(&mut self, status: u16, s: &mut Sched<'_>) -> OnResponse {
        match (self.state, status) {
            (State::Calling | State::Proceeding, 100..=199) => {
                s.cancel(&mut self.retransmit);
                s.cancel(&mut self.lifetime);
                self.state = State::Proceeding;
                OnResponse::PassUp
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.enter(State::Accepted, Timer::M, s.values.t1x64(), s);
                OnResponse::PassUp
            }
            (State::Calling | State::Proceeding, _) => {
                // Timer D: zero on a reliable transport (no retransmitted finals to absorb).
                let d = if self.reliable {
                    Duration::ZERO
                } else {
                    s.values.timer_d()
                };
                self.enter(State::Completed, Timer::D, d, s);
                OnResponse::AckAndPassUp
            }
            (State::Accepted, 200..=299) => OnResponse::PassUp,
            (State::Completed, 300..) => OnResponse::AckAgain,
            _ => OnResponse::Absorb,
        }
    }

    fn enter(&mut self, state: State, timer: Timer, after: Duration, s: &mut Sched<'_>) {
        s.cancel(&mut self.retransmit);
        s.cancel(&mut self.lifetime);
        self.state = state;
        self.lifetime = Some(s.arm(timer, after));
    }

    /// One of this transaction's timers fired.
    pub fn on_timer(&mut self, timer: Timer, s: &mut Sched<'_>) -> OnTimer {
        match (self.state, timer) {
            (State::Calling, Timer::A) => {
                self.interval *= 2;
                self.retransmit = Some(s.arm(Timer::A, self.interval));
                OnTimer::Retransmit
            }
            (State::Calling, Timer::B) => {
                self.terminate(s);
                OnTimer::TimedOut
            }
            (State::Accepted, Timer::M) | (State::Completed, Timer::D) => {
                self.terminate(s);
                OnTimer::Terminated
            }
            _ => OnTimer::Ignore,
        }
    }

    /// Ends the transaction now (e.g. its call is torn down), cancelling its timers.
    pub fn terminate(&mut self, s: &mut Sched<'_>) {
        s.cancel(&mut self.retransmit);
        s.cancel(&mut self.lifetime);
        self.state = State::Terminated;
    }
}
