//! The thin driver: one pinned OS thread per shard, each running a glommio executor that
//! polls the shard's incoming rings, runs its [`Shard`](dataplane_shard::Shard) and flushes
//! its outbound rings.
//!
//! Everything with a policy in it (routing, mailboxes, back-pressure) lives in
//! `dataplane-shard`; this crate only moves ring items, reads the clock and sleeps.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use dataplane_runtime::{IdlePolicy, Node, RuntimeConfig};
//!
//! let config = RuntimeConfig::new(vec![0, 1], IdlePolicy::Park);
//! let node = Node::start(config, Arc::new(|_shard, _shards| Vec::new())).unwrap();
//! // Another thread may run work on a shard's own thread through a handle.
//! let handle = node.handle();
//! let agents = handle
//!     .call(1, Duration::from_secs(5), |shard, _ctx| shard.agents())
//!     .unwrap();
//! assert_eq!(agents, 0);
//! let reports = node.stop().unwrap();
//! assert_eq!(reports.len(), 2);
//! ```

#![warn(missing_docs)]

mod control;
mod doorbell;
mod driver;
mod io;
pub mod preflight;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use dataplane_frame::AgentId;
use dataplane_shard::{Agent, RingItem, Shard, ShardConfig, ShardStats};

pub use control::{JobContext, ShardJob, CONTROL_QUEUE_CAPACITY_JOBS};
pub use doorbell::{doorbell, Bell};
pub use io::{IoFactory, ShardIo};

use control::ControlQueue;

/// What a shard does when it has no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Spin on the rings: lowest latency, one core at 100% per shard. For pinned,
    /// dedicated cores.
    BusyPoll,
    /// Sleep in io_uring until another shard rings the doorbell: near-zero idle CPU, a few
    /// microseconds more latency after idle periods. For shared machines.
    Park,
}

/// How to run the node's shards.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The CPU (OS index) of each shard; the length is the shard count.
    pub cpus: Vec<usize>,
    /// The shard limits; `shard` and `shards` are filled in per shard.
    pub shard: ShardConfig,
    /// Idle behaviour.
    pub idle: IdlePolicy,
    /// Slots of each ring (one per ordered pair of shards); a power of two.
    pub ring_capacity_frames: usize,
    /// Items taken from one ring per poll.
    pub ring_batch_frames: usize,
    /// Handler calls per poll before the rings are looked at again.
    pub poll_budget_messages: usize,
    /// glommio's registered io memory per executor.
    pub io_memory_bytes: usize,
    /// A poll iteration longer than this is counted (and logged) as a stall.
    pub stall_threshold: Duration,
    /// How long a parked shard sleeps at most before looking around.
    pub park_timeout: Duration,
    /// How long shutdown waits for in-flight frames to settle, counted from the moment
    /// every shard has stopped its agents (stopping 100,000 WASM agents takes a while).
    pub drain_timeout: Duration,
}

impl RuntimeConfig {
    /// Defaults for shards on `cpus`.
    pub fn new(cpus: Vec<usize>, idle: IdlePolicy) -> RuntimeConfig {
        let shards = cpus.len();
        RuntimeConfig {
            cpus,
            shard: ShardConfig::new(0, shards.max(1)),
            idle,
            ring_capacity_frames: 1024,
            ring_batch_frames: 64,
            poll_budget_messages: 256,
            io_memory_bytes: 512 * 1024,
            stall_threshold: Duration::from_millis(1),
            park_timeout: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// Shards on the node.
    pub fn shards(&self) -> usize {
        self.cpus.len()
    }
}

/// Builds the agents of one shard: called on the shard's thread, after pinning, with
/// `(shard, shards)`. Agents whose id routes elsewhere are refused (and logged).
pub type AgentFactory = Arc<dyn Fn(usize, usize) -> Vec<(AgentId, Box<dyn Agent>)> + Send + Sync>;

/// Why the node could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No CPUs were given.
    #[error("a node needs at least one shard")]
    NoShards,
    /// More shards than the routing supports.
    #[error("{shards} shards requested; at most {max} are supported")]
    TooManyShards {
        /// Requested.
        shards: usize,
        /// Supported.
        max: usize,
    },
    /// io_uring cannot be used.
    #[error("io_uring is unavailable ({error}): {hint}")]
    IoUringUnavailable {
        /// The kernel's answer.
        error: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// The memlock limit is below what the executors register.
    #[error(
        "memlock limit is {limit_bytes} bytes (hard {hard_limit_bytes}) but the shards need {needed_bytes}: \
         run `ulimit -l unlimited` as root, add `* - memlock unlimited` to /etc/security/limits.conf, \
         or lower node.io_memory_bytes"
    )]
    MemlockTooLow {
        /// Needed.
        needed_bytes: u64,
        /// Soft limit.
        limit_bytes: u64,
        /// Hard limit.
        hard_limit_bytes: u64,
    },
    /// glommio refused to build or run an executor.
    #[error("shard {shard}: executor failed: {message}")]
    Executor {
        /// The shard.
        shard: usize,
        /// glommio's error.
        message: String,
    },
    /// A shard's I/O (the network edge) could not start.
    #[error("shard {shard}: {message}")]
    Io {
        /// The shard.
        shard: usize,
        /// What went wrong.
        message: String,
    },
    /// A shard could not set up its doorbell.
    #[error("shard {shard}: doorbell: {source}")]
    Doorbell {
        /// The shard.
        shard: usize,
        /// The socket error.
        source: std::io::Error,
    },
    /// A shard thread panicked (a bug: agents' panics are caught inside the shard).
    #[error("shard {shard} panicked")]
    Panicked {
        /// The shard.
        shard: usize,
    },
    /// A control job was addressed to a shard the node does not have.
    #[error("shard {shard} does not exist: the node has {shards} shard(s)")]
    NoSuchShard {
        /// The shard asked for.
        shard: usize,
        /// Shards on the node.
        shards: usize,
    },
    /// The shard's control queue is full: try again later.
    #[error(
        "shard {shard}: control queue is full ({capacity_jobs} jobs waiting); try again later"
    )]
    ControlQueueFull {
        /// The shard.
        shard: usize,
        /// The queue bound.
        capacity_jobs: usize,
    },
    /// The node is stopping: no more control jobs are accepted.
    #[error("the node is stopping")]
    Stopping,
    /// A control job did not answer in time. It may still run later.
    #[error("shard {shard} did not answer within {timeout:?}; the job may still run")]
    JobTimeout {
        /// The shard.
        shard: usize,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// A control job was dropped without an answer: the node stopped first, or the job
    /// panicked (logged by the shard).
    #[error(
        "shard {shard} dropped the job without an answer (node stopping, or the job panicked)"
    )]
    JobLost {
        /// The shard.
        shard: usize,
    },
}

/// What a shard reports when it stops.
#[derive(Debug, Clone)]
pub struct ShardReport {
    /// The shard.
    pub shard: usize,
    /// Its CPU.
    pub cpu: usize,
    /// Its counters.
    pub stats: ShardStats,
    /// Poll iterations run.
    pub polls: u64,
    /// Poll iterations that found no work.
    pub idle_polls: u64,
    /// Times the shard slept on its doorbell.
    pub parks: u64,
    /// Poll iterations longer than the stall threshold.
    pub stalls: u64,
    /// Frame buffers of this shard still held elsewhere at exit (leaked, never freed early).
    pub frames_in_flight_at_exit: usize,
}

/// State shared by the shards of one node during start-up and shutdown (never on the data
/// path).
pub(crate) struct Shared {
    pub(crate) config: RuntimeConfig,
    pub(crate) factory: AgentFactory,
    pub(crate) io: Option<IoFactory>,
    /// Start-up failures of shards' I/O, reported by `Node::start`.
    pub(crate) io_errors: Mutex<Vec<(usize, String)>>,
    pub(crate) stop: AtomicBool,
    /// Shards that have stopped their agents during shutdown (or left early).
    pub(crate) stopped: AtomicUsize,
    /// Per shard: it has counted itself in `stopped` (in `Driver::shutdown`); a shard
    /// that leaves without doing so is counted on its way out.
    pub(crate) stop_counted: Vec<AtomicBool>,
    /// Per shard, during shutdown: its pool's frames in flight once it has settled, or
    /// `driver::IN_FLIGHT_UNKNOWN` (see `Driver::shutdown`).
    pub(crate) in_flight: Vec<AtomicUsize>,
    pub(crate) started: Barrier,
    pub(crate) deployed: Barrier,
    /// `producers[from][to]`, filled by each consumer `to` after it pinned itself.
    pub(crate) producers: Mutex<Vec<Vec<Option<dataplane_ring::Producer<RingItem>>>>>,
    pub(crate) bells: Mutex<Vec<Option<Arc<Bell>>>>,
    /// One control queue per shard (`Node::run_on`).
    pub(crate) controls: Vec<ControlQueue>,
    pub(crate) epoch: Instant,
}

/// A running node: its shard threads.
pub struct Node {
    handle: NodeHandle,
    handles: Vec<glommio::ExecutorJoinHandle<Result<ShardReport, RuntimeError>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("cpus", &self.handle.shared.config.cpus)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts one pinned shard thread per CPU, waits until every shard has built its rings
    /// and deployed its agents, and returns.
    pub fn start(config: RuntimeConfig, factory: AgentFactory) -> Result<Node, RuntimeError> {
        Node::start_with_io(config, factory, None)
    }

    /// [`Node::start`], plus an I/O source per shard (the network edge), built by `io` on
    /// each shard's thread after its agents. If any shard's I/O fails to start, the node
    /// is stopped and the first error returned.
    pub fn start_with_io(
        config: RuntimeConfig,
        factory: AgentFactory,
        io: Option<IoFactory>,
    ) -> Result<Node, RuntimeError> {
        let shards = config.shards();
        if shards == 0 {
            return Err(RuntimeError::NoShards);
        }
        if shards > dataplane_shard::SHARDS_MAX {
            return Err(RuntimeError::TooManyShards {
                shards,
                max: dataplane_shard::SHARDS_MAX,
            });
        }
        preflight::check_io_uring()?;
        preflight::ensure_memlock((config.io_memory_bytes * shards) as u64)?;
        let shared = Arc::new(Shared {
            factory,
            io,
            io_errors: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            stopped: AtomicUsize::new(0),
            stop_counted: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            in_flight: (0..shards)
                .map(|_| AtomicUsize::new(driver::IN_FLIGHT_UNKNOWN))
                .collect(),
            started: Barrier::new(shards + 1),
            deployed: Barrier::new(shards + 1),
            producers: Mutex::new(
                (0..shards)
                    .map(|_| (0..shards).map(|_| None).collect())
                    .collect(),
            ),
            bells: Mutex::new(vec![None; shards]),
            controls: (0..shards).map(|_| ControlQueue::new()).collect(),
            epoch: Instant::now(),
            config,
        });
        let mut handles = Vec::with_capacity(shards);
        for shard in 0..shards {
            let cpu = shared.config.cpus[shard];
            let builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
                .name(&format!("shard-{shard}"))
                .io_memory(shared.config.io_memory_bytes)
                .preempt_timer(Duration::from_millis(1));
            let shared_for_shard = Arc::clone(&shared);
            let handle = builder
                .spawn(move || driver::run_shard(shared_for_shard, shard))
                .map_err(|error| RuntimeError::Executor {
                    shard,
                    message: error.to_string(),
                })?;
            handles.push(handle);
        }
        // A shard that fails before the barriers would leave us waiting forever; shards
        // reach both barriers on every path (see driver::run_shard).
        shared.started.wait();
        shared.deployed.wait();
        let bells = lock(&shared.bells).clone().into();
        let io_error = lock(&shared.io_errors).first().cloned();
        let node = Node {
            handle: NodeHandle { shared, bells },
            handles,
        };
        if let Some((shard, message)) = io_error {
            // The shards are up; stop them cleanly before reporting.
            let _ = node.stop();
            return Err(RuntimeError::Io { shard, message });
        }
        Ok(node)
    }

    /// A handle other threads may keep to run control jobs on the shards
    /// ([`NodeHandle::run_on`]); it outlives the node harmlessly (jobs are then refused).
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Shards on the node.
    pub fn shards(&self) -> usize {
        self.handles.len()
    }

    /// Nanoseconds since the node started (the clock shards pass to their agents).
    pub fn now_ns(&self) -> u64 {
        self.handle.now_ns()
    }

    /// Runs `job` on shard `shard`'s thread: see [`NodeHandle::run_on`].
    pub fn run_on(&self, shard: usize, job: ShardJob) -> Result<(), RuntimeError> {
        self.handle.run_on(shard, job)
    }

    /// Asks every shard to stop, without waiting.
    pub fn request_stop(&self) {
        let shared = &self.handle.shared;
        shared.stop.store(true, Ordering::Release);
        for bell in self.handle.bells.iter().flatten() {
            bell.ring();
        }
    }

    /// Stops every shard (agents' `on_stop` run, in-flight frames settle) and joins them.
    pub fn stop(self) -> Result<Vec<ShardReport>, RuntimeError> {
        self.request_stop();
        self.join()
    }

    /// Waits for the shards to stop (after [`Node::request_stop`]).
    pub fn join(self) -> Result<Vec<ShardReport>, RuntimeError> {
        let mut reports = Vec::with_capacity(self.handles.len());
        let mut first_error = None;
        for (shard, handle) in self.handles.into_iter().enumerate() {
            match handle.join() {
                Ok(Ok(report)) => reports.push(report),
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(_) => {
                    first_error.get_or_insert(RuntimeError::Panicked { shard });
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(reports),
        }
    }
}

/// A clonable, `Send + Sync` handle on a running node, for threads off the data path (the
/// admin endpoint, tests): it runs control jobs on a shard's own thread, where the shard's
/// agents live (they are not `Send`).
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
    /// Each shard's doorbell, by shard (`None` if the shard could not make one).
    bells: Arc<[Option<Arc<Bell>>]>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("shards", &self.shards())
            .field("stopping", &self.is_stopping())
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Shards on the node.
    pub fn shards(&self) -> usize {
        self.shared.config.shards()
    }

    /// Nanoseconds since the node started (the clock shards pass to their agents).
    pub fn now_ns(&self) -> u64 {
        self.shared.epoch.elapsed().as_nanos() as u64
    }

    /// Whether the node has been asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Queues `job` to run once on shard `shard`'s thread, between two polls, and wakes the
    /// shard if it is parked. Returns once the job is queued, not run.
    ///
    /// Refused with [`RuntimeError::NoSuchShard`], [`RuntimeError::ControlQueueFull`]
    /// (more than [`CONTROL_QUEUE_CAPACITY_JOBS`] waiting) or [`RuntimeError::Stopping`].
    /// An accepted job runs before the shard stops its agents, unless the shard thread
    /// failed; then it is dropped unrun.
    pub fn run_on(&self, shard: usize, job: ShardJob) -> Result<(), RuntimeError> {
        let shards = self.shards();
        let queue = self
            .shared
            .controls
            .get(shard)
            .ok_or(RuntimeError::NoSuchShard { shard, shards })?;
        if self.is_stopping() {
            return Err(RuntimeError::Stopping);
        }
        queue.push(shard, job)?;
        // A busy-polling shard looks at its queue within 32 polls; a parking one may be
        // asleep. The ring is a write(2) on this (control) thread, never on a shard's.
        if self.shared.config.idle == IdlePolicy::Park {
            if let Some(bell) = self.bells.get(shard).and_then(Option::as_ref) {
                bell.ring();
            }
        }
        Ok(())
    }

    /// Runs `f` on shard `shard`'s thread and waits up to `timeout` for its result.
    ///
    /// Errors as [`NodeHandle::run_on`], plus [`RuntimeError::JobTimeout`] (the job may
    /// still run later) and [`RuntimeError::JobLost`] (it was dropped unrun, or panicked).
    pub fn call<R, F>(&self, shard: usize, timeout: Duration, f: F) -> Result<R, RuntimeError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, &JobContext) -> R + Send + 'static,
    {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.run_on(
            shard,
            Box::new(move |core, ctx| {
                // The caller may have given up waiting; the result is then dropped here.
                let _ = sender.send(f(core, ctx));
            }),
        )?;
        receiver.recv_timeout(timeout).map_err(|error| match error {
            std::sync::mpsc::RecvTimeoutError::Timeout => {
                RuntimeError::JobTimeout { shard, timeout }
            }
            std::sync::mpsc::RecvTimeoutError::Disconnected => RuntimeError::JobLost { shard },
        })
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Start-up state is never left half-written by a panicking holder; a poisoned lock
    // still holds consistent data.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
