//! Non-INVITE server transaction: RFC 3261 §17.2.2, Figure 8.
//!
//! ```text
//!   Trying --1xx sent--> Proceeding --final sent--> Completed --Timer J--> Terminated
//!     +--------------------final sent-------------------^
//! ```
//! Invariant: a retransmitted request is answered with the last response sent (or absorbed while
//! Trying) and never reaches the proxy core a second time.

use std::time::Duration;

use super::timers::{Sched, Timer};
use crate::core::timer::TimerId;

/// States of Figure 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Request received, nothing sent yet.
    Trying,
    /// A provisional was sent.
    Proceeding,
    /// A final was sent; answering retransmissions with it.
    Completed,
    /// Over.
    Terminated,
}

/// What to do with a retransmitted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRequest {
    /// Send the last response again.
    ResendLast,
    /// Nothing to send yet.
    Absorb,
}

/// One non-INVITE server transaction.
#[derive(Debug)]
pub struct ServerNonInvite {
    state: State,
    lifetime: Option<TimerId>,
    reliable: bool,
}

impl Default for ServerNonInvite {
    fn default() -> Self {
        Self::start()
    }
}

impl ServerNonInvite {
    /// A new request arrived over an unreliable transport (UDP): Trying.
    pub fn start() -> Self {
        Self::start_over(false)
    }

    /// A new request arrived, over a `reliable` transport (TCP, TLS) or not: Trying; on a
    /// reliable one Timer J is zero (no request retransmissions to absorb, §17.2.2).
    pub fn start_over(reliable: bool) -> Self {
        ServerNonInvite {
            state: State::Trying,
            lifetime: None,
            reliable,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True when a final response has been sent.
    pub fn is_final(&self) -> bool {
        matches!(self.state, State::Completed | State::Terminated)
    }

    /// The request was received again.
    pub fn on_retransmission(&self) -> OnRequest {
        match self.state {
            State::Proceeding | State::Completed => OnRequest::ResendLast,
            _ => OnRequest::Absorb,
        }
    }

    /// The owner is about to send a response with `status`; false if it must not.
    pub fn send(&mut self, status: u16, s: &mut Sched<'_>) -> bool {
        match (self.state, status) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                true
            }
            (State::Trying | State::Proceeding, 200..=699) => {
                self.state = State::Completed;
                let j = if self.reliable {
                    Duration::ZERO
                } else {
                    s.values.t1x64()
                };
                self.lifetime = Some(s.arm(Timer::J, j));
                true
            }
            _ => false,
        }
    }

    /// Timer J fired: true when the transaction just ended.
    pub fn on_timer(&mut self, timer: Timer, s: &mut Sched<'_>) -> bool {
        if (self.state, timer) == (State::Completed, Timer::J) {
            self.terminate(s);
            true
        } else {
            false
        }
    }

    /// Ends the transaction now, cancelling its timer.
    pub fn terminate(&mut self, s: &mut Sched<'_>) {
        s.cancel(&mut self.lifetime);
        self.state = State::Terminated;
    }
}
