//! The control path: work that other threads (admin API, persistence) need done *on* a shard.
//!
//! A shard's state (its core, its journal) belongs to its thread; nothing else touches it and the
//! hot path takes no lock. Another thread that needs to read or change it sends a [`Job`] — a
//! closure over the shard's handler — to the shard's bounded control queue and wakes it through
//! the shard's existing [`Waker`]; the loop runs waiting jobs once per turn, after the datagrams
//! and letters of that turn and before `after_batch` and the sends, so a job's journal writes and
//! datagrams go out like any other. An answer travels back on a one-shot channel ([`Reply`]).
//!
//! Invariants a reader must not break:
//! - No lost wake-up: a producer pushes, then calls [`Waker::wake_if_parked`] (a SeqCst fence and
//!   a load of `parked`); the shard checks [`ControlQueue::has_pending`] after `Waker::park`. It is
//!   the same handshake as the mailbox's (see `mailbox.rs`).
//! - The hot path costs one emptiness check per turn when no job is pending.
//! - A stopped shard closes its queue and drops the jobs left in it, which drops their reply
//!   senders: the asker sees [`ControlError::Stopped`] instead of waiting out its timeout (a job
//!   racing with the close is covered by that timeout).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::core::shard::ShardId;
use crate::engine::mailbox::Waker;
use crate::time::Instant;

/// A piece of work run on a shard's thread with its handler and the turn's `now`.
pub type Job<H> = Box<dyn FnOnce(&mut H, Instant) + Send>;

/// Jobs a shard's queue holds before [`Controller`] refuses more (admin requests are rare; a
/// full queue means the shard is stuck or flooded, and refusing is better than growing).
pub const CONTROL_QUEUE_CAPACITY: usize = 256;
/// Jobs one turn runs at most, so a burst of control work cannot starve datagrams.
pub const JOBS_PER_TURN: usize = 32;

/// Why a control request got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// No such shard.
    NoShard(ShardId),
    /// The shard's queue is full.
    Busy(ShardId),
    /// The shard stopped before running the job.
    Stopped,
    /// The shard did not answer in time.
    Timeout,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoShard(s) => write!(f, "no shard {}", s.0),
            Self::Busy(s) => write!(f, "shard {} has too many control requests queued", s.0),
            Self::Stopped => write!(f, "the shard stopped"),
            Self::Timeout => write!(f, "the shard did not answer in time"),
        }
    }
}

impl std::error::Error for ControlError {}

/// One shard's control queue (the shard end).
pub struct ControlQueue<H> {
    jobs: ArrayQueue<Job<H>>,
    closed: AtomicBool,
}

impl<H> fmt::Debug for ControlQueue<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlQueue")
            .field("pending", &self.jobs.len())
            .finish()
    }
}

impl<H> ControlQueue<H> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            jobs: ArrayQueue::new(CONTROL_QUEUE_CAPACITY),
            closed: AtomicBool::new(false),
        }
    }

    /// Refuses further jobs and drops those still queued (the shard is stopping).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        while self.jobs.pop().is_some() {}
    }

    /// True when a job waits (the loop's per-turn check and its last look before sleeping).
    pub fn has_pending(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Runs at most [`JOBS_PER_TURN`] waiting jobs on `handler`; returns how many ran.
    pub fn run_pending(&self, handler: &mut H, now: Instant) -> usize {
        let mut ran = 0;
        while ran < JOBS_PER_TURN {
            let Some(job) = self.jobs.pop() else { break };
            job(handler, now);
            ran += 1;
        }
        ran
    }
}

impl<H> Default for ControlQueue<H> {
    fn default() -> Self {
        Self::new()
    }
}

/// The answer to one [`Controller::ask`].
#[derive(Debug)]
pub struct Reply<R>(mpsc::Receiver<R>);

impl<R> Reply<R> {
    /// Waits at most `timeout` for the shard's answer.
    pub fn wait(self, timeout: Duration) -> Result<R, ControlError> {
        self.0.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => ControlError::Timeout,
            mpsc::RecvTimeoutError::Disconnected => ControlError::Stopped,
        })
    }
}

/// Sends jobs to shards from any thread.
pub struct Controller<H> {
    shards: Vec<(Arc<ControlQueue<H>>, Arc<Waker>)>,
}

impl<H> Clone for Controller<H> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
        }
    }
}

impl<H> fmt::Debug for Controller<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl<H: 'static> Controller<H> {
    /// A controller over each shard's queue and waker, in shard order.
    pub fn new(shards: Vec<(Arc<ControlQueue<H>>, Arc<Waker>)>) -> Self {
        Self { shards }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Queues `job` on `shard` and wakes it if it sleeps.
    pub fn post(
        &self,
        shard: ShardId,
        job: impl FnOnce(&mut H, Instant) + Send + 'static,
    ) -> Result<(), ControlError> {
        let (queue, waker) = self
            .shards
            .get(shard.index())
            .ok_or(ControlError::NoShard(shard))?;
        if queue.closed.load(Ordering::SeqCst) {
            return Err(ControlError::Stopped);
        }
        queue
            .jobs
            .push(Box::new(job))
            .map_err(|_| ControlError::Busy(shard))?;
        waker.wake_if_parked();
        Ok(())
    }

    /// Runs `f` on `shard` and returns a handle to its answer.
    pub fn ask<R: Send + 'static>(
        &self,
        shard: ShardId,
        f: impl FnOnce(&mut H, Instant) -> R + Send + 'static,
    ) -> Result<Reply<R>, ControlError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.post(shard, move |handler, now| {
            // The asker may have given up waiting; its answer is then simply dropped.
            let _ = tx.send(f(handler, now));
        })?;
        Ok(Reply(rx))
    }

    /// Runs `f` on every shard and collects the answers in shard order, waiting at most
    /// `timeout` in total.
    pub fn ask_all<R: Send + 'static>(
        &self,
        f: impl Fn(&mut H, Instant) -> R + Send + Sync + 'static,
        timeout: Duration,
    ) -> Result<Vec<R>, ControlError> {
        let f = Arc::new(f);
        let replies = (0..self.shards.len())
            .map(|i| {
                let f = Arc::clone(&f);
                self.ask(ShardId(i as u16), move |h, now| f(h, now))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let deadline = std::time::Instant::now() + timeout;
        replies
            .into_iter()
            .map(|r| r.wait(deadline.saturating_duration_since(std::time::Instant::now())))
            .collect()
    }
}
