//! Control jobs: work another thread runs on a shard's own thread (deploy, undeploy, hot
//! swap, status, counters), off the data path.
//!
//! Each shard has one bounded queue of boxed closures. A producer (the admin thread, a
//! test) pushes a job under a mutex, sets the queue's `pending` flag and, for a parking
//! shard, rings its doorbell. The shard never takes the lock on its hot path: it reads the
//! `pending` flag (one load of a line that only changes when a job arrives) after each poll
//! that did work and every 32 idle polls, and only then locks and drains. A parked shard
//! is woken by the doorbell (its byte stays in the socket, so a ring that comes before the
//! sleep is not lost) and re-checks the flag before it sleeps.
//!
//! The queue is closed when the shard leaves its loop: jobs accepted before that run
//! before the shard stops its agents; later pushes are refused with
//! [`RuntimeError::Stopping`]. A job that panics is caught and logged; the shard goes on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use dataplane_shard::Shard;

use crate::{lock, RuntimeError};

/// Jobs one shard's control queue holds; a push beyond it is refused
/// ([`RuntimeError::ControlQueueFull`]). Control work is rare and small: 64 is far more
/// than an operator issues at once, and bounds what a runaway client can queue.
pub const CONTROL_QUEUE_CAPACITY_JOBS: usize = 64;

/// A unit of control work, run once on the shard's thread with its [`Shard`] and a
/// [`JobContext`]. It must be short: the shard does nothing else while it runs.
pub type ShardJob = Box<dyn FnOnce(&mut Shard, &JobContext) + Send>;

/// What a job sees besides the shard: the shard's clock and its driver's counters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobContext {
    /// The shard's clock (nanoseconds since the node started), as its agents see it: pass
    /// it to `Shard::deploy`, `replace` and `undeploy`.
    pub now_ns: u64,
    /// The shard.
    pub shard: usize,
    /// Its CPU.
    pub cpu: usize,
    /// Poll iterations run so far.
    pub polls: u64,
    /// Poll iterations that found no work.
    pub idle_polls: u64,
    /// Times the shard slept on its doorbell.
    pub parks: u64,
    /// Poll iterations longer than the stall threshold.
    pub stalls: u64,
}

/// One shard's queue. Aligned so that the `pending` flags of two shards never share a
/// cache line.
#[repr(align(128))]
pub(crate) struct ControlQueue {
    /// Whether `state.jobs` may be non-empty: set under the lock by a push, cleared under
    /// the lock by the shard when it drains; read without the lock by the shard.
    pending: AtomicBool,
    state: Mutex<QueueState>,
}

struct QueueState {
    jobs: VecDeque<ShardJob>,
    closed: bool,
}

impl ControlQueue {
    pub(crate) fn new() -> ControlQueue {
        ControlQueue {
            pending: AtomicBool::new(false),
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
            }),
        }
    }

    /// Queues `job` for shard `shard`, or refuses it (queue full, or closed because the
    /// shard is stopping).
    pub(crate) fn push(&self, shard: usize, job: ShardJob) -> Result<(), RuntimeError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(RuntimeError::Stopping);
        }
        if state.jobs.len() >= CONTROL_QUEUE_CAPACITY_JOBS {
            return Err(RuntimeError::ControlQueueFull {
                shard,
                capacity_jobs: CONTROL_QUEUE_CAPACITY_JOBS,
            });
        }
        state.jobs.push_back(job);
        self.pending.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether jobs may be waiting: one load, for the shard's loop.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Moves the waiting jobs into `out`, oldest first.
    pub(crate) fn take(&self, out: &mut Vec<ShardJob>) {
        let mut state = lock(&self.state);
        out.extend(state.jobs.drain(..));
        self.pending.store(false, Ordering::Release);
    }

    /// Refuses every later push and hands back the jobs still waiting.
    pub(crate) fn close(&self) -> Vec<ShardJob> {
        let mut state = lock(&self.state);
        state.closed = true;
        self.pending.store(false, Ordering::Release);
        state.jobs.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ShardJob {
        Box::new(|_, _| {})
    }

    #[test]
    fn the_queue_is_bounded_and_refuses_after_close() {
        let queue = ControlQueue::new();
        assert!(!queue.has_pending());
        for _ in 0..CONTROL_QUEUE_CAPACITY_JOBS {
            queue.push(3, job()).unwrap();
        }
        assert!(queue.has_pending());
        let error = queue.push(3, job()).unwrap_err();
        assert!(
            matches!(
                error,
                RuntimeError::ControlQueueFull {
                    shard: 3,
                    capacity_jobs: CONTROL_QUEUE_CAPACITY_JOBS
                }
            ),
            "{error}"
        );
        let mut taken = Vec::new();
        queue.take(&mut taken);
        assert_eq!(taken.len(), CONTROL_QUEUE_CAPACITY_JOBS);
        assert!(!queue.has_pending());
        queue.push(3, job()).unwrap();
        assert_eq!(queue.close().len(), 1, "waiting jobs are handed back");
        assert!(matches!(
            queue.push(3, job()).unwrap_err(),
            RuntimeError::Stopping
        ));
        assert!(!queue.has_pending());
    }
}
