//! The dataplane side of the `local` and `cross-shard` suites, and the `idle` check.
//!
//! Every workload runs on a real node: pinned shard threads, glommio executors, the ring
//! mesh, frames in pooled buffers, busy-poll idle policy. The workload logic lives in
//! ordinary agents (the same `Agent` trait users implement), which read the clock
//! themselves because they are measuring instruments. Agent A lives on shard 0; agent B on
//! shard 0 (`local`) or shard 1 (`cross-shard`).
//!
//! - ping-pong: A sends a `request` to B, B (an echo) replies, A records the round trip
//!   and sends the next request at once. A round trip runs from a clock read just before
//!   the send to one when the reply arrives, as in the `hardware` row and the tokio
//!   baseline: recording the sample is not part of it.
//! - fixed rate (`--rate R`): A kicks itself with low-priority messages; on each kick it
//!   sends every request that is due by the schedule, carrying its intended send time in
//!   the correlation id, and records `arrival - intended` for each reply.
//! - flood: A kicks itself and on each kick sends one-way `inform`s to B until
//!   back-pressure, for the duration; then a stop message (`agree`). Throughput = messages
//!   B counted / (B saw the stop - A's first send), as in the tokio baseline.
//!
//! The first tenth of each latency run (at most 200 ms) is warm-up and not recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_runtime::{IdlePolicy, Node, RuntimeConfig, ShardReport};
use dataplane_shard::{id_on_shard, Agent, AgentError, Context, Message, RestartPolicy};

use super::report::{OpenLoopSchedule, Recorder, SYSTEM_DATAPLANE};
use super::{BenchResult, Suite, SuiteOptions};
use crate::agents::Echo;

/// Sends a flooding agent makes per kick before it yields to its peer.
const FLOOD_SENDS_PER_KICK: u32 = 4096;
/// Sends between two clock reads while flooding.
const FLOOD_SENDS_PER_CLOCK_READ: u32 = 256;
/// Extra time a workload may take beyond its duration before the run is declared hung.
const WORKLOAD_GRACE: Duration = Duration::from_secs(20);

/// Runs `suite` on a dataplane node and reports it.
pub fn run(suite: Suite, opts: &SuiteOptions) -> anyhow::Result<BenchResult> {
    let shards = match suite {
        Suite::Local => 1,
        Suite::CrossShard => 2,
        _ => bail!("suite {} is not a native message suite", suite.name()),
    };
    let cpus = pick_cpus(opts, shards)?;
    let placement = Placement::new(shards);
    let latency = match opts.rate_msgs_per_s {
        None => ping_pong(&cpus, &placement, opts, native_echo)?,
        Some(rate) => fixed_rate(&cpus, &placement, opts, rate)?,
    };
    let (messages, seconds) = flood(&cpus, &placement, opts, FloodEnd::Sink)?;
    Ok(BenchResult::new(
        suite.name(),
        SYSTEM_DATAPLANE,
        shards,
        messages,
        seconds,
        latency.latency_ns(),
    ))
}

/// Builds peer B of a workload on its shard's thread.
pub(super) type PeerFactory = Arc<dyn Fn() -> Box<dyn Agent> + Send + Sync>;

fn native_echo() -> Box<dyn Agent> {
    Box::new(Echo)
}

/// CPUs for `shards` shards (see [`super::pick_cpus`]); an error if there are too few.
pub(super) fn pick_cpus(opts: &SuiteOptions, shards: usize) -> anyhow::Result<Vec<usize>> {
    let cpus = super::pick_cpus(opts, shards);
    if cpus.len() < shards {
        bail!(
            "{shards} shards need {shards} CPUs, only {} usable: {cpus:?}",
            cpus.len()
        );
    }
    Ok(cpus)
}

/// Where the two agents of a workload live.
pub(super) struct Placement {
    pub(super) shards: usize,
    pub(super) a: AgentId,
    pub(super) b: AgentId,
}

impl Placement {
    pub(super) fn new(shards: usize) -> Placement {
        let b_shard = shards - 1;
        Placement {
            shards,
            a: id_on_shard(1, 0, shards),
            b: id_on_shard(1 << 32, b_shard, shards),
        }
    }
}

/// What a workload's agents hand back when they are done.
pub(super) type Outcome<T> = Arc<Mutex<Option<Result<T, String>>>>;

pub(super) fn finish<T>(outcome: &Outcome<T>, value: Result<T, String>) {
    let mut slot = outcome
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.get_or_insert(value);
}

/// Starts a busy-polling node with agents A and B, waits for the outcome, stops the node.
fn run_node<T: Send + 'static>(
    cpus: &[usize],
    placement: &Placement,
    limit: Duration,
    make_agents: impl Fn(&Outcome<T>) -> (Box<dyn Agent>, Box<dyn Agent>) + Send + Sync + 'static,
) -> anyhow::Result<T> {
    run_node_with(cpus, placement, limit, None, make_agents)
}

/// [`run_node`] with the shards' restart policy set (for workloads whose agents crash).
pub(super) fn run_node_with<T: Send + 'static>(
    cpus: &[usize],
    placement: &Placement,
    limit: Duration,
    restart: Option<RestartPolicy>,
    make_agents: impl Fn(&Outcome<T>) -> (Box<dyn Agent>, Box<dyn Agent>) + Send + Sync + 'static,
) -> anyhow::Result<T> {
    run_node_reporting(cpus, placement, limit, restart, make_agents).map(|(result, _)| result)
}

/// [`run_node_with`], also returning the shards' reports (their counters).
pub(super) fn run_node_reporting<T: Send + 'static>(
    cpus: &[usize],
    placement: &Placement,
    limit: Duration,
    restart: Option<RestartPolicy>,
    make_agents: impl Fn(&Outcome<T>) -> (Box<dyn Agent>, Box<dyn Agent>) + Send + Sync + 'static,
) -> anyhow::Result<(T, Vec<ShardReport>)> {
    let outcome: Outcome<T> = Arc::new(Mutex::new(None));
    let (a, b, shards) = (placement.a, placement.b, placement.shards);
    let factory_outcome = Arc::clone(&outcome);
    // Each shard builds both agents and keeps the ones it owns (agents are built on their
    // shard's thread; the unused one is dropped there). B is deployed first: A's on_start
    // sends to it.
    let factory = Arc::new(move |shard: usize, _shards: usize| {
        let (agent_a, agent_b) = make_agents(&factory_outcome);
        let mut mine: Vec<(AgentId, Box<dyn Agent>)> = Vec::new();
        if dataplane_shard::owner_shard(b, shards) == shard {
            mine.push((b, agent_b));
        }
        if dataplane_shard::owner_shard(a, shards) == shard {
            mine.push((a, agent_a));
        }
        mine
    });
    let mut config = RuntimeConfig::new(cpus.to_vec(), IdlePolicy::BusyPoll);
    if let Some(restart) = restart {
        config.shard.restart = restart;
    }
    let node = Node::start(config, factory).context("starting the benchmark node")?;
    let deadline = Instant::now() + limit + WORKLOAD_GRACE;
    let result = loop {
        if let Some(result) = outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            break result.map_err(|reason| anyhow!(reason));
        }
        if Instant::now() > deadline {
            break Err(anyhow!(
                "workload did not finish within {:?}",
                limit + WORKLOAD_GRACE
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let reports = node.stop().context("stopping the benchmark node")?;
    let result = result.with_context(|| format!("shard reports: {reports:?}"))?;
    Ok((result, reports))
}

pub(super) fn warmup(opts: &SuiteOptions) -> Duration {
    Duration::from_secs_f64(opts.seconds / 10.0).min(Duration::from_millis(200))
}

pub(super) fn header(
    to: AgentId,
    performative: Performative,
    priority: Priority,
    correlation_id: u64,
) -> Header {
    Header {
        to,
        from: AgentId(0), // set by Context::send_with
        conversation_id: 0,
        correlation_id,
        performative,
        priority,
        flags: Flags::NONE,
    }
}

fn kick(ctx: &mut Context<'_>) -> Result<(), AgentError> {
    let me = ctx.self_id();
    ctx.send_with(header(me, Performative::Request, Priority::Low, 0), &[])
        .map_err(|error| AgentError::Failed(format!("self-kick refused: {error}").into()))
}

// --- ping-pong -------------------------------------------------------------------------

struct Pinger {
    peer: AgentId,
    payload: Vec<u8>,
    warmup: Duration,
    duration: Duration,
    recorder: Recorder,
    record_from: Instant,
    deadline: Instant,
    last: Instant,
    outcome: Outcome<Recorder>,
}

impl Pinger {
    fn ping(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.last = Instant::now();
        let result = ctx.send_with(
            header(self.peer, Performative::Request, Priority::Normal, 0),
            &self.payload,
        );
        result.map_err(|error| {
            finish(&self.outcome, Err(format!("ping refused: {error}")));
            AgentError::Failed(error.to_string().into())
        })
    }
}

impl Agent for Pinger {
    fn on_start(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let now = Instant::now();
        self.record_from = now + self.warmup;
        self.deadline = self.record_from + self.duration;
        self.ping(ctx)
    }

    fn on_message(&mut self, _: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let now = Instant::now();
        if now >= self.record_from {
            self.recorder.record_between(self.last, now);
        }
        if now >= self.deadline {
            finish(&self.outcome, Ok(std::mem::take(&mut self.recorder)));
            return Ok(());
        }
        self.ping(ctx)
    }
}

pub(super) fn ping_pong(
    cpus: &[usize],
    placement: &Placement,
    opts: &SuiteOptions,
    make_peer: impl Fn() -> Box<dyn Agent> + Send + Sync + 'static,
) -> anyhow::Result<Recorder> {
    let duration = Duration::from_secs_f64(opts.seconds);
    let (warmup, peer, payload) = (warmup(opts), placement.b, vec![7u8; opts.payload_bytes]);
    run_node(cpus, placement, warmup + duration, move |outcome| {
        let now = Instant::now();
        let pinger = Pinger {
            peer,
            payload: payload.clone(),
            warmup,
            duration,
            recorder: Recorder::new(),
            record_from: now,
            deadline: now,
            last: now,
            outcome: Arc::clone(outcome),
        };
        (Box::new(pinger) as Box<dyn Agent>, make_peer())
    })
    .context("ping-pong workload")
}

// --- fixed rate ------------------------------------------------------------------------

struct RatePinger {
    peer: AgentId,
    payload: Vec<u8>,
    rate_msgs_per_s: u64,
    warmup_ns: u64,
    requests: u64,
    schedule: Option<OpenLoopSchedule>,
    sent: u64,
    answered: u64,
    recorder: Recorder,
    outcome: Outcome<Recorder>,
}

impl RatePinger {
    /// Sends every request that is due; stops early on back-pressure (the delay then shows
    /// in the latency of the requests it held back, as it should).
    fn send_due(&mut self, ctx: &mut Context<'_>, schedule: OpenLoopSchedule) {
        let now = Instant::now();
        while self.sent < self.requests && schedule.due(self.sent) <= now {
            let offset_ns = schedule.due_offset_ns(self.sent);
            let request = header(
                self.peer,
                Performative::Request,
                Priority::Normal,
                offset_ns,
            );
            if ctx.send_with(request, &self.payload).is_err() {
                return;
            }
            self.sent += 1;
        }
    }
}

impl Agent for RatePinger {
    fn on_start(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.schedule = Some(OpenLoopSchedule::new(Instant::now(), self.rate_msgs_per_s));
        kick(ctx)
    }

    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        let Some(schedule) = self.schedule else {
            return Ok(());
        };
        if message.from() == ctx.self_id() {
            self.send_due(ctx, schedule);
            return if self.sent < self.requests {
                kick(ctx)
            } else {
                Ok(())
            };
        }
        let offset_ns = message.header.correlation_id;
        if offset_ns >= self.warmup_ns {
            self.recorder
                .record_between(schedule.instant_from_offset_ns(offset_ns), Instant::now());
        }
        self.answered += 1;
        if self.answered == self.requests {
            finish(&self.outcome, Ok(std::mem::take(&mut self.recorder)));
        }
        Ok(())
    }
}

fn fixed_rate(
    cpus: &[usize],
    placement: &Placement,
    opts: &SuiteOptions,
    rate_msgs_per_s: u64,
) -> anyhow::Result<Recorder> {
    let (warmup, duration) = (warmup(opts), Duration::from_secs_f64(opts.seconds));
    let requests = ((warmup + duration).as_secs_f64() * rate_msgs_per_s as f64).ceil() as u64;
    let (peer, payload) = (placement.b, vec![7u8; opts.payload_bytes]);
    run_node(cpus, placement, warmup + duration, move |outcome| {
        let pinger = RatePinger {
            peer,
            payload: payload.clone(),
            rate_msgs_per_s,
            warmup_ns: warmup.as_nanos() as u64,
            requests: requests.max(1),
            schedule: None,
            sent: 0,
            answered: 0,
            recorder: Recorder::new(),
            outcome: Arc::clone(outcome),
        };
        (Box::new(pinger), Box::new(Echo))
    })
    .context("fixed-rate workload")
}

// --- flood -----------------------------------------------------------------------------

/// When the flood started, shared by its two agents.
#[derive(Default)]
struct FloodClock {
    first_send: Mutex<Option<Instant>>,
    stopping: AtomicBool,
}

/// How a flood ends and is counted.
#[derive(Clone)]
pub(super) enum FloodEnd {
    /// An `agree` to the native [`Sink`], which counts and reports.
    Sink,
    /// A `query` to a counter agent (the WASM `counter` example or a native twin), whose
    /// totals reply (`count u64 LE, sum i64 LE`) the flooder reports: this works with any
    /// agent that speaks the counter's protocol, WASM or not.
    Query(Option<Outcome<(u64, f64)>>),
}

struct Flooder {
    peer: AgentId,
    payload: Vec<u8>,
    duration: Duration,
    deadline: Option<Instant>,
    clock: Arc<FloodClock>,
    end: FloodEnd,
}

impl Flooder {
    /// Sends until back-pressure or the per-kick quota; returns whether time is up.
    fn burst(&mut self, ctx: &mut Context<'_>, deadline: Instant) -> bool {
        let data = header(self.peer, Performative::Inform, Priority::Normal, 0);
        for sent in 0..FLOOD_SENDS_PER_KICK {
            if sent % FLOOD_SENDS_PER_CLOCK_READ == 0 && Instant::now() >= deadline {
                return true;
            }
            if ctx.send_with(data, &self.payload).is_err() {
                break;
            }
        }
        false
    }
}

impl Agent for Flooder {
    fn on_start(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        kick(ctx)
    }

    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        if message.from() != ctx.self_id() {
            // The counter's totals: the flood has been counted.
            if let FloodEnd::Query(Some(outcome)) = &self.end {
                let end = Instant::now();
                let first = *self
                    .clock
                    .first_send
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let count = message
                    .payload
                    .get(..8)
                    .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                    .map(u64::from_le_bytes);
                let result = match (first, count) {
                    (Some(first), Some(count)) => {
                        Ok((count, end.duration_since(first).as_secs_f64()))
                    }
                    _ => Err(format!("bad totals reply: {:?}", message.payload)),
                };
                finish(outcome, result);
            }
            return Ok(());
        }
        let deadline = *self.deadline.get_or_insert_with(|| {
            let now = Instant::now();
            *self
                .clock
                .first_send
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now);
            now + self.duration
        });
        if !self.clock.stopping.load(Ordering::Relaxed) && self.burst(ctx, deadline) {
            self.clock.stopping.store(true, Ordering::Relaxed);
        }
        if self.clock.stopping.load(Ordering::Relaxed) {
            let performative = match self.end {
                FloodEnd::Sink => Performative::Agree,
                FloodEnd::Query(_) => Performative::Query,
            };
            let stop = header(self.peer, performative, Priority::Normal, 0);
            if ctx.send_with(stop, &[]).is_ok() {
                return Ok(()); // done: no more kicks
            }
        }
        kick(ctx)
    }
}

struct Sink {
    received: u64,
    clock: Arc<FloodClock>,
    outcome: Outcome<(u64, f64)>,
}

impl Agent for Sink {
    fn on_message(&mut self, message: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        if message.performative() != Performative::Agree {
            self.received += 1;
            return Ok(());
        }
        let end = Instant::now();
        let first = *self
            .clock
            .first_send
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = match first {
            Some(first) => Ok((self.received, end.duration_since(first).as_secs_f64())),
            None => Err("flood stopped before it started".to_owned()),
        };
        finish(&self.outcome, result);
        Ok(())
    }
}

/// One-way flood from A to B for `opts.seconds`: (messages B counted, seconds).
/// With [`FloodEnd::Query`], `make_counter` builds B, which must speak the counter
/// protocol (8-byte `inform`s counted; a `query` answered with the totals).
pub(super) fn flood(
    cpus: &[usize],
    placement: &Placement,
    opts: &SuiteOptions,
    end: FloodEnd,
) -> anyhow::Result<(u64, f64)> {
    flood_into(cpus, placement, opts, end, Arc::new(native_echo))
}

pub(super) fn flood_into(
    cpus: &[usize],
    placement: &Placement,
    opts: &SuiteOptions,
    end: FloodEnd,
    make_counter: PeerFactory,
) -> anyhow::Result<(u64, f64)> {
    let duration = Duration::from_secs_f64(opts.seconds);
    let (peer, payload) = (placement.b, vec![7u8; opts.payload_bytes]);
    let clock = Arc::new(FloodClock::default());
    run_node(cpus, placement, duration, move |outcome| {
        let end = match end {
            FloodEnd::Sink => FloodEnd::Sink,
            FloodEnd::Query(_) => FloodEnd::Query(Some(Arc::clone(outcome))),
        };
        let b: Box<dyn Agent> = match end {
            FloodEnd::Sink => Box::new(Sink {
                received: 0,
                clock: Arc::clone(&clock),
                outcome: Arc::clone(outcome),
            }),
            FloodEnd::Query(_) => make_counter(),
        };
        let flooder = Flooder {
            peer,
            payload: payload.clone(),
            duration,
            deadline: None,
            clock: Arc::clone(&clock),
            end,
        };
        (Box::new(flooder) as Box<dyn Agent>, b)
    })
    .context("flood workload")
}

// --- idle ------------------------------------------------------------------------------

/// CPU and memory of an idle node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IdleResult {
    /// Always `idle`.
    pub suite: String,
    /// Always `dataplane`.
    pub system: String,
    /// Shards of the node.
    pub shards: usize,
    /// Seconds observed.
    pub seconds: f64,
    /// CPU time used by the whole process over the observed period, as a percentage of
    /// one core.
    pub cpu_percent: f64,
    /// Resident set size of the whole process at the end.
    pub rss_bytes: u64,
}

impl IdleResult {
    /// One JSON line.
    pub fn to_json_line(&self) -> String {
        // Invariant: only strings and numbers; serialization cannot fail.
        serde_json::to_string(self).expect("IdleResult serializes to JSON")
    }
}

/// Starts a parked node with an echo agent on every shard, lets it settle, then measures
/// the process's CPU time and RSS over `opts.seconds`.
pub fn run_idle(opts: &SuiteOptions) -> anyhow::Result<IdleResult> {
    let shards = opts.shards.max(1);
    let cpus = pick_cpus(opts, shards)?;
    let factory = Arc::new(move |shard: usize, shards: usize| {
        let id = id_on_shard(1, shard, shards);
        vec![(id, Box::new(Echo) as Box<dyn Agent>)]
    });
    let node = Node::start(RuntimeConfig::new(cpus, IdlePolicy::Park), factory)
        .context("starting the idle node")?;
    std::thread::sleep(Duration::from_millis(300)); // let start-up work finish
    let (cpu_start, wall_start) = (process_cpu_time()?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(opts.seconds));
    let (cpu_end, wall) = (process_cpu_time()?, wall_start.elapsed());
    let rss_bytes = process_rss_bytes()?;
    node.stop().context("stopping the idle node")?;
    Ok(IdleResult {
        suite: "idle".to_owned(),
        system: SYSTEM_DATAPLANE.to_owned(),
        shards,
        seconds: wall.as_secs_f64(),
        cpu_percent: 100.0 * (cpu_end - cpu_start).as_secs_f64() / wall.as_secs_f64(),
        rss_bytes,
    })
}

fn process_cpu_time() -> anyhow::Result<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage struct into the buffer we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        bail!("getrusage: {}", std::io::Error::last_os_error());
    }
    // SAFETY: getrusage returned 0, so it initialised the struct.
    let usage = unsafe { usage.assume_init() };
    let to_duration = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    Ok(to_duration(usage.ru_utime) + to_duration(usage.ru_stime))
}

pub(super) fn process_rss_bytes() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or_else(|| anyhow!("no VmRSS in /proc/self/status"))?;
    Ok(kib * 1024)
}
