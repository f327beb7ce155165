//! The WASM suites: `spawn`, `memory`, `wasm-local`, `wasm-cross`, `orderbook` and
//! `interrupt`.
//!
//! - `spawn`: deploys agents of the Rust echo module one after the other on one shard
//!   (a sans-IO [`Shard`] on a pinned thread: a deploy is what a shard does when asked to
//!   spawn), timing each `deploy` (store, pooled instance, `dp_inbox`, `dp_init`), with a
//!   warm module cache. The same loop with wasmtime's on-demand allocator is the
//!   baseline, in the same run.
//! - `memory`: the RSS a node gains per idle agent when it hosts `--agents` echo agents
//!   (10,000 and 100,000 by default), measured on a real parked node; the node's own fixed
//!   cost is charged to the agents, so the figure errs high.
//! - `wasm-local`, `wasm-cross`: the `local` and `cross-shard` workloads with peer B a
//!   WASM agent (echo for ping-pong, counter for the flood), and the same workloads with
//!   native twins of those agents in the same run: the ratio is the cost of WASM.
//! - `orderbook`: a native trader sends limit orders to the order-book agent (WASM) on
//!   the same shard: per-order round trip closed-loop, and orders/s with a window of
//!   orders in flight.
//! - `interrupt`: a looping agent with a 10 ms `time_per_message_ms` on a busy-polling
//!   node: how far past the limit the `failure` reply comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use dataplane_frame::{AgentId, Performative, Priority};
use dataplane_runtime::{IdlePolicy, Node, RuntimeConfig};
use dataplane_shard::{Agent, AgentError, Context, Message, RestartPolicy, Shard, ShardConfig};
use dataplane_wasm::{AgentLimits, AgentModule, AgentSpec, Host, HostConfig, WasmAgent};

use super::native::{self, finish, header, FloodEnd, Outcome, PeerFactory, Placement};
use super::report::Recorder;
use super::{BenchResult, Suite, SuiteOptions};
use crate::agents::Echo;

/// System names of the WASM suites' rows.
pub const SYSTEM_WASM: &str = "dataplane-wasm";
/// The same workload with native agents.
pub const SYSTEM_NATIVE: &str = "dataplane-native";
/// `interrupt` with the looping message last in a batch (after quick ones).
pub const SYSTEM_WASM_IN_BATCH: &str = "dataplane-wasm-in-batch";
/// `spawn`'s baseline: wasmtime's default (on-demand) instance allocator.
pub const SYSTEM_ON_DEMAND: &str = "wasmtime-on-demand";

/// Spawns per `spawn` run.
const SPAWNS_PER_RUN: u32 = 10_000;

/// The modules the suites use, compiled once per run.
#[derive(Clone)]
struct Modules {
    host: Host,
    echo: Arc<AgentModule>,
    counter: Arc<AgentModule>,
}

impl Modules {
    fn load(config: HostConfig) -> anyhow::Result<Modules> {
        let host = Host::new(config)?;
        let echo = AgentModule::from_bytes(&host, "echo", dataplane_guests::ECHO_RUST)?;
        let counter = AgentModule::from_bytes(&host, "counter", dataplane_guests::COUNTER_RUST)?;
        Ok(Modules {
            host,
            echo,
            counter,
        })
    }

    fn agent(&self, module: &Arc<AgentModule>, id: AgentId, limits: AgentLimits) -> Box<dyn Agent> {
        let spec = AgentSpec {
            module: Arc::clone(module),
            limits,
            config: Arc::from(&[][..]),
            seed: None,
        };
        Box::new(WasmAgent::new(&self.host, id, spec))
    }
}

/// A host for a few agents on shards pinned to `shard_cpus`; its epoch ticker runs on
/// the other usable CPUs, as on a node (none on a node with a shard on every core).
fn small_pool(shard_cpus: &[usize]) -> HostConfig {
    let spare = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|id| id.id)
        .filter(|cpu| !shard_cpus.contains(cpu))
        .collect();
    HostConfig {
        pool_slots: Some(64),
        shards: 2,
        ticker_cpus: spare,
        ..HostConfig::default()
    }
}

/// Runs a WASM suite once; one row per system.
pub fn run(suite: Suite, opts: &SuiteOptions) -> anyhow::Result<Vec<BenchResult>> {
    match suite {
        Suite::Spawn => spawn(opts),
        Suite::WasmLocal => workloads(suite, 1, opts),
        Suite::WasmCross => workloads(suite, 2, opts),
        Suite::Orderbook => orderbook(opts),
        Suite::Interrupt => interrupt(opts),
        other => bail!("suite {} is not a WASM suite", other.name()),
    }
}

// --- spawn -----------------------------------------------------------------------------

fn spawn(opts: &SuiteOptions) -> anyhow::Result<Vec<BenchResult>> {
    let cpu = native::pick_cpus(opts, 1)?[0];
    let cache = std::env::temp_dir().join(format!("dataplane-bench-cache-{}", std::process::id()));
    let pooled = HostConfig {
        pool_slots: Some(SPAWNS_PER_RUN),
        cache_dir: Some(cache.clone()),
        ..HostConfig::default()
    };
    let on_demand = HostConfig {
        pool_slots: None,
        ..pooled.clone()
    };
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<Vec<BenchResult>> {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                Ok(vec![
                    spawn_with(pooled, "dataplane", opts)?,
                    spawn_with(on_demand, SYSTEM_ON_DEMAND, opts)?,
                ])
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the spawn thread panicked"))?
    });
    let _ = std::fs::remove_dir_all(&cache);
    result
}

fn spawn_with(
    config: HostConfig,
    system: &str,
    _opts: &SuiteOptions,
) -> anyhow::Result<BenchResult> {
    // Load twice: the second load maps the module from the warm cache, as a restarted
    // node would.
    drop(Modules::load(config.clone())?);
    let modules = Modules::load(config)?;
    if modules.echo.cache_outcome() != dataplane_wasm::CacheOutcome::Hit {
        bail!("the module cache is not warm");
    }
    let mut shard_config = ShardConfig::new(0, 1);
    shard_config.agents_max = SPAWNS_PER_RUN as usize;
    let mut shard = Shard::new(shard_config);
    let mut recorder = Recorder::new();
    let ids: Vec<AgentId> = (0..u64::from(SPAWNS_PER_RUN))
        .map(|n| AgentId(n + 1))
        .collect();
    // A warm-up round, not recorded: first touches of the pool's pages.
    for &id in ids.iter().take(1000) {
        let agent = modules.agent(&modules.echo, id, AgentLimits::default());
        shard.deploy(id, agent, 0)?;
    }
    for &id in ids.iter().take(1000) {
        shard.undeploy(id, 0);
    }
    let start = Instant::now();
    for &id in &ids {
        let agent = modules.agent(&modules.echo, id, AgentLimits::default());
        let before = Instant::now();
        shard.deploy(id, agent, 0)?;
        recorder.record_between(before, Instant::now());
    }
    let seconds = start.elapsed().as_secs_f64();
    shard.stop_all(0);
    Ok(BenchResult::new(
        "spawn",
        system,
        1,
        u64::from(SPAWNS_PER_RUN),
        seconds,
        recorder.latency_ns(),
    ))
}

// --- memory ----------------------------------------------------------------------------

/// RSS of a node per idle agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryResult {
    /// Always `memory`.
    pub suite: String,
    /// Always `dataplane-wasm`.
    pub system: String,
    /// Shards of the node.
    pub shards: usize,
    /// Agents deployed.
    pub agents: u64,
    /// Process RSS before the node started (host and module loaded).
    pub rss_before_bytes: u64,
    /// Process RSS with every agent deployed and idle.
    pub rss_after_bytes: u64,
    /// `(after - before) / agents`.
    pub rss_per_agent_bytes: f64,
    /// Seconds the deployment took.
    pub deploy_seconds: f64,
}

impl MemoryResult {
    /// One JSON line.
    pub fn to_json_line(&self) -> String {
        // Invariant: strings and numbers only; serialization cannot fail.
        serde_json::to_string(self).expect("MemoryResult serializes to JSON")
    }
}

/// Deploys `agents` idle echo agents on a parked node and measures the RSS they add.
pub fn memory(opts: &SuiteOptions, agents: u64) -> anyhow::Result<MemoryResult> {
    let shards = opts.shards.max(1);
    let cpus = native::pick_cpus(opts, shards)?;
    let slots = u32::try_from(agents).context("too many agents")? + 16;
    crate::wasm::check_max_map_count(slots)?;
    let modules = Modules::load(HostConfig {
        pool_slots: Some(slots),
        memory_bytes_max: 1 << 20,
        shards,
        ..HostConfig::default()
    })?;
    let per_shard = agents.div_ceil(shards as u64);
    let factory_modules = modules.clone();
    let factory = Arc::new(move |shard: usize, shards: usize| {
        (1u64..)
            .map(AgentId)
            .filter(|id| dataplane_shard::owner_shard(*id, shards) == shard)
            .take(per_shard as usize)
            .map(|id| {
                let limits = AgentLimits {
                    memory_bytes_max: 1 << 20,
                    ..AgentLimits::default()
                };
                (id, factory_modules.agent(&factory_modules.echo, id, limits))
            })
            .collect()
    });
    let mut config = RuntimeConfig::new(cpus, IdlePolicy::Park);
    config.shard.agents_max = per_shard as usize + 16;
    let rss_before = native::process_rss_bytes()?;
    let start = Instant::now();
    let node = Node::start(config, factory).context("starting the node")?;
    let deploy_seconds = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = native::process_rss_bytes()?;
    node.stop().context("stopping the node")?;
    let deployed = per_shard * shards as u64;
    Ok(MemoryResult {
        suite: "memory".into(),
        system: SYSTEM_WASM.into(),
        shards,
        agents: deployed,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        rss_per_agent_bytes: rss_after.saturating_sub(rss_before) as f64 / deployed as f64,
        deploy_seconds,
    })
}

// --- wasm-local / wasm-cross -----------------------------------------------------------

/// The native twin of the WASM `counter` example, for the flood: counts 8-byte
/// `inform`s, answers a `query` with `count u64 LE, sum i64 LE`.
#[derive(Default)]
struct NativeCounter {
    count: u64,
    sum: i64,
}

impl Agent for NativeCounter {
    fn on_message(&mut self, m: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        if m.is_reply() {
            return Ok(());
        }
        match m.performative() {
            Performative::Inform => {
                if let Ok(bytes) = <[u8; 8]>::try_from(m.payload) {
                    self.sum = self.sum.wrapping_add(i64::from_le_bytes(bytes));
                    self.count += 1;
                }
            }
            Performative::Query => {
                let mut totals = [0u8; 16];
                totals[..8].copy_from_slice(&self.count.to_le_bytes());
                totals[8..].copy_from_slice(&self.sum.to_le_bytes());
                let _ = ctx.reply(Performative::Inform, &totals);
            }
            _ => {}
        }
        Ok(())
    }
}

fn workloads(suite: Suite, shards: usize, opts: &SuiteOptions) -> anyhow::Result<Vec<BenchResult>> {
    let cpus = native::pick_cpus(opts, shards)?;
    let placement = Placement::new(shards);
    let modules = Modules::load(small_pool(&cpus))?;
    // The counter counts 8-byte numbers: the flood sends those, in both systems.
    let flood_opts = SuiteOptions {
        payload_bytes: 8,
        ..opts.clone()
    };
    let b = placement.b;
    let mut rows = Vec::new();
    for system in [SYSTEM_NATIVE, SYSTEM_WASM] {
        let wasm = system == SYSTEM_WASM;
        let echo_modules = modules.clone();
        let echo = move || -> Box<dyn Agent> {
            if wasm {
                echo_modules.agent(&echo_modules.echo, b, AgentLimits::default())
            } else {
                Box::new(Echo)
            }
        };
        let counter_modules = modules.clone();
        let counter: PeerFactory = Arc::new(move || -> Box<dyn Agent> {
            if wasm {
                counter_modules.agent(&counter_modules.counter, b, AgentLimits::default())
            } else {
                Box::new(NativeCounter::default())
            }
        });
        let latency = native::ping_pong(&cpus, &placement, opts, echo)?;
        let (messages, seconds) = native::flood_into(
            &cpus,
            &placement,
            &flood_opts,
            FloodEnd::Query(None),
            counter,
        )?;
        rows.push(BenchResult::new(
            suite.name(),
            system,
            shards,
            messages,
            seconds,
            latency.latency_ns(),
        ));
    }
    Ok(rows)
}

// --- orderbook -------------------------------------------------------------------------

/// Orders in flight in the throughput phase.
const ORDER_WINDOW: u64 = 64;

/// A limit order, in the order book's 24-byte format.
///
/// Every order is priced through the mid (a buy at 10,000 to 10,010 ticks, a sell at
/// 9,990 to 10,000), so it crosses everything resting on the other side: the book is
/// one-sided at any time and its depth is a random walk of the signed quantities,
/// growing like the square root of the order count. The book has no cancel, so with
/// passive orders on both sides (the first version: prices 9,990 to 10,010 for either
/// side) the deep levels only grew, and a 2-second run at the current speed filled the
/// agent's 16 MiB memory limit (`failure`, error 2) after about 5 M orders.
fn order(order_id: u64, rng: &mut u64) -> [u8; 24] {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let side = (*rng & 1) as u8;
    let through = ((*rng >> 8) % 11) as i64;
    let price = if side == 0 {
        10_000 + through
    } else {
        10_000 - through
    };
    let qty = 1 + ((*rng >> 16) % 10) as u32;
    let mut bytes = [0u8; 24];
    bytes[0..8].copy_from_slice(&order_id.to_le_bytes());
    bytes[8..16].copy_from_slice(&price.to_le_bytes());
    bytes[16..20].copy_from_slice(&qty.to_le_bytes());
    bytes[20] = side;
    bytes
}

/// Sends orders: closed loop (one in flight) for the latency, then `ORDER_WINDOW` in
/// flight for the throughput.
struct Trader {
    book: AgentId,
    rng: u64,
    next_id: u64,
    phase_end: Instant,
    record_from: Instant,
    latency_phase: bool,
    sent_at: Instant,
    recorder: Recorder,
    duration: Duration,
    filled: u64,
    answered: u64,
    throughput_start: Option<Instant>,
    outcome: Outcome<(Recorder, u64, f64, u64)>,
}

impl Trader {
    fn send(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.next_id += 1;
        let bytes = order(self.next_id, &mut self.rng);
        ctx.send_with(
            header(
                self.book,
                Performative::Request,
                Priority::Normal,
                self.next_id,
            ),
            &bytes,
        )
        .map_err(|error| {
            finish(&self.outcome, Err(format!("order refused: {error}")));
            AgentError::Failed(error.to_string().into())
        })
    }
}

impl Agent for Trader {
    fn on_start(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let now = Instant::now();
        self.record_from = now + Duration::from_millis(100);
        self.phase_end = self.record_from + self.duration;
        self.sent_at = now;
        self.send(ctx)
    }

    fn on_message(&mut self, m: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        if m.performative() != Performative::Inform {
            let text = String::from_utf8_lossy(m.payload).into_owned();
            finish(
                &self.outcome,
                Err(format!("order answered {:?}: {text}", m.performative())),
            );
            return Ok(());
        }
        if let Some(bytes) = m.payload.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            self.filled += u64::from(u32::from_le_bytes(bytes));
        }
        let now = Instant::now();
        if self.latency_phase {
            if now >= self.record_from {
                self.recorder.record_between(self.sent_at, now);
            }
            if now < self.phase_end {
                // From just before the send, as in the ping-pong suites.
                self.sent_at = Instant::now();
                return self.send(ctx);
            }
            self.latency_phase = false;
            self.throughput_start = Some(now);
            self.phase_end = now + self.duration;
            for _ in 0..ORDER_WINDOW {
                self.send(ctx)?;
            }
            return Ok(());
        }
        self.answered += 1;
        if now < self.phase_end {
            return self.send(ctx);
        }
        if let Some(start) = self.throughput_start.take() {
            let seconds = now.duration_since(start).as_secs_f64();
            let recorder = std::mem::take(&mut self.recorder);
            finish(
                &self.outcome,
                Ok((recorder, self.answered, seconds, self.filled)),
            );
        }
        Ok(())
    }
}

fn orderbook(opts: &SuiteOptions) -> anyhow::Result<Vec<BenchResult>> {
    let cpus = native::pick_cpus(opts, 1)?;
    let placement = Placement::new(1);
    let host = Host::new(small_pool(&cpus))?;
    let module = AgentModule::from_bytes(&host, "orderbook", dataplane_guests::ORDERBOOK_RUST)?;
    let duration = Duration::from_secs_f64(opts.seconds);
    let book = placement.b;
    let (recorder, orders, seconds, filled) = native::run_node_with(
        &cpus,
        &placement,
        2 * duration + Duration::from_millis(100),
        None,
        move |outcome| {
            let now = Instant::now();
            let trader = Trader {
                book,
                rng: 0x2545_F491_4F6C_DD1D,
                next_id: 0,
                phase_end: now,
                record_from: now,
                latency_phase: true,
                sent_at: now,
                recorder: Recorder::new(),
                duration,
                filled: 0,
                answered: 0,
                throughput_start: None,
                outcome: Arc::clone(outcome),
            };
            let spec = AgentSpec {
                module: Arc::clone(&module),
                limits: AgentLimits::default(),
                config: Arc::from(&[][..]),
                seed: None,
            };
            let agent: Box<dyn Agent> = Box::new(WasmAgent::new(&host, book, spec));
            (Box::new(trader) as Box<dyn Agent>, agent)
        },
    )
    .context("order-book workload")?;
    tracing::info!(orders, filled, "order book");
    Ok(vec![BenchResult::new(
        "orderbook",
        SYSTEM_WASM,
        1,
        orders,
        seconds,
        recorder.latency_ns(),
    )])
}

// --- interrupt -------------------------------------------------------------------------

/// The time limit of the looping agent.
const LOOP_LIMIT: Duration = Duration::from_millis(10);
/// Loops per run.
const LOOPS_PER_RUN: u32 = 20;
/// Before a loop inside a batch: rounds of quick messages for this long, so that the
/// epoch ticker (adaptive pace) is fast, as it is whenever batches flow.
const BATCH_WARMUP: Duration = Duration::from_millis(3);
/// Quick messages ahead of the looping one in its batch (and per warm-up round).
const BATCH_AHEAD: usize = 3;

/// Where the looping message runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopPlace {
    /// Alone: the WAT fixture `LOOP`, one call per message.
    Alone,
    /// Last of a batch of `BATCH_AHEAD + 1`, after quick ones: the Rust `fragile`
    /// example, which takes batches.
    InBatch,
}

/// Sends a message that loops to the target, times its `failure` reply, repeats. In a
/// batch, warm-up rounds of quick messages come first, then the quick ones and the loop
/// together.
struct LoopProber {
    target: AgentId,
    place: LoopPlace,
    warmup_until: Instant,
    /// Quick messages sent and not answered yet.
    pending: usize,
    sent_at: Option<Instant>,
    remaining: u32,
    recorder: Recorder,
    outcome: Outcome<Recorder>,
}

impl LoopProber {
    fn new(target: AgentId, place: LoopPlace, outcome: &Outcome<Recorder>) -> LoopProber {
        LoopProber {
            target,
            place,
            warmup_until: Instant::now(),
            pending: 0,
            sent_at: None,
            remaining: LOOPS_PER_RUN,
            recorder: Recorder::new(),
            outcome: Arc::clone(outcome),
        }
    }

    fn send(&mut self, ctx: &mut Context<'_>, payload: &[u8]) -> Result<(), AgentError> {
        ctx.send_with(
            header(self.target, Performative::Request, Priority::Normal, 0),
            payload,
        )
        .map_err(|error| AgentError::Failed(error.to_string().into()))
    }

    fn start_probe(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.warmup_until = Instant::now() + BATCH_WARMUP;
        self.next(ctx)
    }

    /// The next step: a warm-up round, or the looping message (behind quick ones).
    fn next(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let in_batch = self.place == LoopPlace::InBatch;
        if in_batch {
            for _ in 0..BATCH_AHEAD {
                self.send(ctx, b"quick")?;
            }
            self.pending = BATCH_AHEAD;
            if Instant::now() < self.warmup_until {
                return Ok(());
            }
        }
        self.sent_at = Some(Instant::now());
        self.send(ctx, b"?spin")
    }
}

impl Agent for LoopProber {
    fn on_start(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.start_probe(ctx)
    }

    fn on_message(&mut self, m: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        if m.performative() == Performative::Inform && self.pending > 0 {
            // A quick message's answer; a warm-up round ends with its last one.
            self.pending -= 1;
            if self.pending == 0 && self.sent_at.is_none() {
                return self.next(ctx);
            }
            return Ok(());
        }
        let Some(sent_at) = self.sent_at.take() else {
            finish(&self.outcome, Err("an answer nobody waited for".into()));
            return Ok(());
        };
        let elapsed = sent_at.elapsed();
        let text = String::from_utf8_lossy(m.payload);
        if m.performative() != Performative::Failure || !text.contains("interrupt") {
            finish(&self.outcome, Err(format!("unexpected answer: {text}")));
            return Ok(());
        }
        // Overshoot past the limit; an early interrupt would be a bug, refused here.
        if elapsed < LOOP_LIMIT {
            finish(
                &self.outcome,
                Err(format!("interrupted after {elapsed:?}, before the limit")),
            );
            return Ok(());
        }
        self.recorder.record_duration(elapsed - LOOP_LIMIT);
        self.remaining -= 1;
        if self.remaining == 0 {
            finish(&self.outcome, Ok(std::mem::take(&mut self.recorder)));
            return Ok(());
        }
        self.start_probe(ctx)
    }
}

fn interrupt(opts: &SuiteOptions) -> anyhow::Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    for place in [LoopPlace::Alone, LoopPlace::InBatch] {
        results.push(interrupt_at(opts, place)?);
    }
    Ok(results)
}

fn interrupt_at(opts: &SuiteOptions, place: LoopPlace) -> anyhow::Result<BenchResult> {
    let shards = opts.shards.clamp(1, 2);
    let cpus = native::pick_cpus(opts, shards)?;
    let placement = Placement::new(shards);
    let host = Host::new(small_pool(&cpus))?;
    let (module, system) = match place {
        LoopPlace::Alone => (
            AgentModule::from_bytes(&host, "loop", dataplane_guests::fixtures::LOOP.as_bytes())?,
            SYSTEM_WASM,
        ),
        LoopPlace::InBatch => (
            AgentModule::from_bytes(&host, "fragile_rust", dataplane_guests::FRAGILE_RUST)?,
            SYSTEM_WASM_IN_BATCH,
        ),
    };
    // The agent traps every time: restart it at once, without limit, for the run.
    let restart = RestartPolicy {
        max_restarts: u32::MAX,
        window_ns: 1,
        backoff_initial_ns: 1,
        backoff_max_ns: 1,
    };
    let target = placement.b;
    let started = Instant::now();
    let (recorder, reports) = native::run_node_reporting(
        &cpus,
        &placement,
        (LOOP_LIMIT + BATCH_WARMUP + Duration::from_millis(50)) * LOOPS_PER_RUN,
        Some(restart),
        move |outcome| {
            let prober = LoopProber::new(target, place, outcome);
            let spec = AgentSpec {
                module: Arc::clone(&module),
                limits: AgentLimits {
                    time_per_message: LOOP_LIMIT,
                    ..AgentLimits::default()
                },
                config: Arc::from(&[][..]),
                seed: None,
            };
            let agent: Box<dyn Agent> = Box::new(WasmAgent::new(&host, target, spec));
            (Box::new(prober) as Box<dyn Agent>, agent)
        },
    )
    .context("interrupt workload")?;
    let batches: u64 = reports.iter().map(|report| report.stats.batches).sum();
    // Each interrupted batch still got through its quick messages, so it counts.
    if place == LoopPlace::InBatch && batches < u64::from(LOOPS_PER_RUN) {
        anyhow::bail!(
            "only {batches} batches for {LOOPS_PER_RUN} loops: the loops did not run inside batches"
        );
    }
    Ok(BenchResult::new(
        "interrupt",
        system,
        shards,
        u64::from(LOOPS_PER_RUN),
        started.elapsed().as_secs_f64(),
        recorder.latency_ns(),
    ))
}

#[cfg(test)]
mod tests {
    use super::order;

    /// The order flow must keep the book one-sided (every order crosses the mid), or the
    /// book, which has no cancel, grows until the agent's memory limit refuses orders.
    #[test]
    fn every_order_crosses_the_mid() {
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        let (mut buys, mut sells) = (0u32, 0u32);
        for id in 0..100_000 {
            let bytes = order(id, &mut rng);
            let price = i64::from_le_bytes(bytes[8..16].try_into().unwrap());
            let qty = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
            assert!((1..=10).contains(&qty));
            match bytes[20] {
                0 => {
                    buys += 1;
                    assert!((10_000..=10_010).contains(&price), "buy at {price}");
                }
                1 => {
                    sells += 1;
                    assert!((9_990..=10_000).contains(&price), "sell at {price}");
                }
                side => panic!("side {side}"),
            }
        }
        assert!(
            buys > 45_000 && sells > 45_000,
            "{buys} buys, {sells} sells"
        );
    }
}
