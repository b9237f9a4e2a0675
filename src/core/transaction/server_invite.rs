//! INVITE server transaction: RFC 3261 §17.2.1, Figure 7, with RFC 6026's Accepted state.
//!
//! ```text
//!   Proceeding --2xx sent--> Accepted --Timer L--> Terminated
//!       |
//!   300-699 sent
//!       v
//!   Completed --ACK--> Confirmed --Timer I--> Terminated
//!       | Timer G: resend final;  Timer H: no ACK came, Terminated
//! ```
//! Invariant: request retransmissions never reach the proxy core; they are answered here with the
//! last response (Proceeding, Completed) or absorbed (Accepted, Confirmed).

use super::timers::{Sched, Timer};
use crate::core::timer::TimerId;
use crate::time::Duration;

/// States of Figure 7 plus RFC 6026's Accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Request received, provisionals may be sent.
    Proceeding,
    /// A 2xx was sent; INVITE retransmissions are absorbed, more 2xx may pass (RFC 6026).
    Accepted,
    /// A non-2xx final was sent; retransmitting it until the ACK comes.
    Completed,
    /// The ACK came; absorbing ACK retransmissions.
    Confirmed,
    /// Over; the owner may free it.
    Terminated,
}

/// What to do with a retransmitted request or an ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRequest {
    /// Send the last response again.
    ResendLast,
    /// Nothing to send.
    Absorb,
}

/// What to do when a timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTimer {
    /// Send the final response again (Timer G).
    ResendFinal,
    /// Timer H: the ACK never came. The transaction is over.
    AckTimeout,
    /// The transaction ended normally.
    Terminated,
    /// Stale; ignore.
    Ignore,
}

/// One INVITE server transaction (the last response's bytes live with the owner).
#[derive(Debug)]
pub struct ServerInvite {
    state: State,
    retransmit: Option<TimerId>,
    interval: Duration,
    lifetime: Option<TimerId>,
    reliable: bool,
}

impl ServerInvite {
    /// A new INVITE arrived over an unreliable transport (UDP): Proceeding (the owner sends
    /// 100 Trying at once, §16.2 / §17.2.1).
    pub fn start() -> Self {
        Self::start_over(false)
    }

    /// A new INVITE arrived, over a `reliable` transport (TCP, TLS) or not: as [`Self::start`],
    /// and a non-2xx final is then not retransmitted on a reliable one (Timer G, §17.2.1).
    pub fn start_over(reliable: bool) -> Self {
        ServerInvite {
            state: State::Proceeding,
            retransmit: None,
            interval: Duration::ZERO,
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
        self.state != State::Proceeding
    }

    /// The INVITE was received again.
    pub fn on_retransmission(&self) -> OnRequest {
        match self.state {
            State::Proceeding | State::Completed => OnRequest::ResendLast,
            _ => OnRequest::Absorb,
        }
    }

    /// An ACK matched the transaction (for a non-2xx final: hop by hop).
    pub fn on_ack(&mut self, s: &mut Sched<'_>) -> OnRequest {
        if self.state == State::Completed {
            s.cancel(&mut self.retransmit);
            s.cancel(&mut self.lifetime);
            self.state = State::Confirmed;
            // Timer I: zero on a reliable transport (no ACK retransmissions, §17.2.1).
            let i = if self.reliable {
                Duration::ZERO
            } else {
                s.values.t4
            };
            self.lifetime = Some(s.arm(Timer::I, i));
        }
        OnRequest::Absorb
    }

    /// The owner is about to send a provisional; returns false if it must not (final sent).
    pub fn send_provisional(&self) -> bool {
        self.state == State::Proceeding
    }

    /// The owner is about to send a final response with `status`; returns false if it must not
    /// (a final was already sent; further 2xx are allowed in Accepted, RFC 6026 §7.1).
    pub fn send_final(&mut self, status: u16, s: &mut Sched<'_>) -> bool {
        match (self.state, status) {
            (State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                self.lifetime = Some(s.arm(Timer::L, s.values.t1x64()));
                true
            }
            (State::Proceeding, 300..=699) => {
                self.state = State::Completed;
                self.interval = s.values.t1;
                self.retransmit = (!self.reliable).then(|| s.arm(Timer::G, self.interval));
                self.lifetime = Some(s.arm(Timer::H, s.values.t1x64()));
                true
            }
            (State::Accepted, 200..=299) => true,
            _ => false,
        }
    }

    /// One of this transaction's timers fired.
    pub fn on_timer(&mut self, timer: Timer, s: &mut Sched<'_>) -> OnTimer {
        match (self.state, timer) {
            (State::Completed, Timer::G) => {
                self.interval = (self.interval * 2).min(s.values.t2);
                self.retransmit = Some(s.arm(Timer::G, self.interval));
                OnTimer::ResendFinal
            }
            (State::Completed, Timer::H) => {
                self.terminate(s);
                OnTimer::AckTimeout
            }
            (State::Confirmed, Timer::I) | (State::Accepted, Timer::L) => {
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
