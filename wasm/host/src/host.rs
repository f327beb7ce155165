//! The process-wide host: one wasmtime [`Engine`] (with its pooling allocator), the
//! linker of the ABI's host functions, the epoch ticker and the module cache.
//!
//! One `Host` serves every shard: an `Engine`, a `Module` and an `InstancePre` are
//! thread-safe and immutable once built, so sharing them shares no mutable state on the
//! data path. Each agent's `Store` (its instance, memory and state) lives on its shard.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, OptLevel, PoolingAllocationConfig,
    ProfilingStrategy,
};

use crate::agent::{self, AgentData};
use crate::cache::ModuleCache;
use crate::error::WasmError;
use crate::ticker::{Ticker, TickerPace, TickerShared};

/// How JIT-compiled code is named for profilers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profiling {
    /// No profiler support.
    #[default]
    None,
    /// `/tmp/perf-<pid>.map`, read by `perf report` and flamegraphs.
    PerfMap,
    /// A jitdump file, for `perf inject --jit`.
    JitDump,
}

/// The engine-wide settings: the pool and the epoch tick are shared by every agent.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Instance slots in the pooling allocator: the most agents alive at once on the node.
    /// `None` uses wasmtime's on-demand allocator (the baseline of the `spawn` benchmark).
    pub pool_slots: Option<u32>,
    /// The largest linear memory any agent may grow to.
    pub memory_bytes_max: u64,
    /// Virtual address space reserved per linear memory. `None` picks it: 4 GiB (no
    /// bounds checks in compiled code) when the pool fits in 64 TiB of address space,
    /// else `memory_bytes_max` (explicit bounds checks), which is what lets a node host
    /// 100,000 agents.
    pub memory_reservation_bytes: Option<u64>,
    /// How often the epoch advances; time limits are enforced to within one tick.
    pub epoch_tick_us: u64,
    /// When the ticker takes its fast pace (half a tick), which batches need.
    pub ticker_pace: TickerPace,
    /// Where compiled modules are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Names for JIT code in profilers.
    pub profiling: Profiling,
    /// Shards that will run agents: each gets a flag the epoch ticker watches.
    pub shards: usize,
    /// CPUs the epoch ticker may run on (the node's CPUs not taken by shards, so that it
    /// never preempts a shard); empty leaves it unpinned.
    pub ticker_cpus: Vec<usize>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            pool_slots: Some(10_000),
            memory_bytes_max: 16 << 20,
            memory_reservation_bytes: None,
            epoch_tick_us: 500,
            ticker_pace: TickerPace::Adaptive,
            cache_dir: None,
            profiling: Profiling::None,
            shards: 1,
            ticker_cpus: Vec::new(),
        }
    }
}

/// Address space the pool may reserve before memories shrink to their limit.
const POOL_RESERVATION_BYTES_MAX: u64 = 64 << 40;
const GIB: u64 = 1 << 30;
const WASM_PAGE_BYTES: u64 = 64 << 10;

/// The process-wide WASM host. Cheap to clone; every clone shares the engine.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<AgentData>,
    config: HostConfig,
    cache: Option<ModuleCache>,
    ticker: Ticker,
    clock: quanta::Clock,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(config: HostConfig) -> Result<Host, WasmError> {
        let engine = Engine::new(&engine_config(&config)?)
            .map_err(|error| WasmError::Engine(format!("{error:#}")))?;
        let mut linker = Linker::new(&engine);
        agent::define_host_functions(&mut linker)
            .map_err(|error| WasmError::Engine(format!("{error:#}")))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ModuleCache::open(dir.clone(), &engine)?),
            None => None,
        };
        let ticker = Ticker::start(
            engine.clone(),
            Duration::from_micros(config.epoch_tick_us),
            config.ticker_pace,
            config.shards,
            config.ticker_cpus.clone(),
        );
        // Calibrated here, once per process (0.6 ms here, 200 ms at most), not on a
        // shard's first call.
        let clock = quanta::Clock::new();
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                linker,
                config,
                cache,
                ticker,
                clock,
            }),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The clock that times guest calls: the CPU's invariant time-stamp counter where
    /// there is one (a read costs about 10 ns here, `Instant::now` about 25), the
    /// monotonic clock otherwise. See docs/decisions/why-wasm-host.md.
    pub(crate) fn clock(&self) -> &quanta::Clock {
        &self.inner.clock
    }

    /// The epoch tick.
    pub fn epoch_tick(&self) -> Duration {
        self.inner.ticker.tick
    }

    pub(crate) fn linker(&self) -> &Linker<AgentData> {
        &self.inner.linker
    }

    pub(crate) fn cache(&self) -> Option<&ModuleCache> {
        self.inner.cache.as_ref()
    }

    /// What the shards tell the epoch ticker (their calls, their wish to batch).
    pub(crate) fn ticker(&self) -> Arc<TickerShared> {
        Arc::clone(&self.inner.ticker.shared)
    }
}

fn engine_config(host: &HostConfig) -> Result<Config, WasmError> {
    if host.epoch_tick_us == 0 {
        return Err(WasmError::Engine("epoch_tick_us must be at least 1".into()));
    }
    let memory_bytes_max = host.memory_bytes_max.div_ceil(WASM_PAGE_BYTES) * WASM_PAGE_BYTES;
    if memory_bytes_max == 0 || memory_bytes_max > 4 * GIB {
        return Err(WasmError::Engine(format!(
            "memory_bytes_max {} is outside 64 KiB..=4 GiB",
            host.memory_bytes_max
        )));
    }
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        // A trap's message names the trap; a symbolicated backtrace per trap would make a
        // trap storm expensive for the shard.
        .wasm_backtrace_max_frames(None)
        .max_wasm_stack(512 << 10)
        .profiler(match host.profiling {
            Profiling::None => ProfilingStrategy::None,
            Profiling::PerfMap => ProfilingStrategy::PerfMap,
            Profiling::JitDump => ProfilingStrategy::JitDump,
        });
    if let Some(slots) = host.pool_slots {
        let slots = slots.max(1);
        let guard_bytes: u64 = 32 << 20;
        let reservation = match host.memory_reservation_bytes {
            Some(bytes) => bytes.max(memory_bytes_max),
            None if u64::from(slots) * (4 * GIB + guard_bytes) <= POOL_RESERVATION_BYTES_MAX => {
                4 * GIB
            }
            None => memory_bytes_max,
        };
        // With a small reservation, a guard region buys nothing but address space: the
        // compiled code checks bounds explicitly.
        let guard = if reservation >= 4 * GIB {
            guard_bytes
        } else {
            WASM_PAGE_BYTES
        };
        config
            .memory_reservation(reservation)
            .memory_guard_size(guard)
            .memory_reservation_for_growth(0);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .max_memory_size(usize::try_from(memory_bytes_max).unwrap_or(usize::MAX))
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .table_elements(10_000)
            .max_core_instance_size(64 << 10)
            // A freed slot keeps its first 64 KiB resident (zeroed by memset rather than
            // given back to the kernel), so the next agent in the slot starts without
            // page faults: at most `max_unused_warm_slots` (100) slots x 64 KiB.
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(4 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Ok(config)
}
