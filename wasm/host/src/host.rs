//! The process-wide host: one wasmtime [`Engine`] (with its pooling allocator), the
//! linker of the ABI's host functions, the epoch ticker and the module cache.
//!
//! One `Host` serves every shard: an `Engine`, a `Module` and an `InstancePre` are
//! thread-safe and immutable once built, so sharing them shares no mutable state on the
//! data path. Each agent's `Store` (its instance, memory and state) lives on its shard.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, OptLevel, PoolingAllocationConfig,
    ProfilingStrategy,
};

use crate::agent::{self, AgentData};
use crate::cache::ModuleCache;
use crate::error::WasmError;

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
        let in_call: Arc<[CachePadded<AtomicBool>]> = (0..config.shards.max(1))
            .map(|_| CachePadded::new(AtomicBool::new(false)))
            .collect();
        let ticker = Ticker::start(
            engine.clone(),
            Duration::from_micros(config.epoch_tick_us),
            Arc::clone(&in_call),
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

    /// The flag shard `shard` raises while it runs guest code.
    pub(crate) fn in_call_flag(&self, shard: usize) -> Arc<[CachePadded<AtomicBool>]> {
        let _ = shard;
        Arc::clone(&self.inner.ticker.in_call)
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

/// The epoch ticker: a thread that advances the engine's epoch every tick, so that a
/// guest running past its deadline traps at its next function entry or loop back-edge.
/// It runs at real-time priority when the process may (root), so that busy-polling
/// shards on every core do not delay it.
struct Ticker {
    tick: Duration,
    stop: Arc<AtomicBool>,
    in_call: Arc<[CachePadded<AtomicBool>]>,
    thread: Option<JoinHandle<()>>,
}

/// How long the ticker sleeps when no shard is running guest code: a call that starts
/// meanwhile is seen at the next wake-up, so its interrupt may come up to this much
/// later (never earlier) than the limit plus one tick.
const IDLE_TICK_SLEEP: Duration = Duration::from_micros(900);

impl Ticker {
    fn start(
        engine: Engine,
        tick: Duration,
        in_call: Arc<[CachePadded<AtomicBool>]>,
        cpus: Vec<usize>,
    ) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let flags = Arc::clone(&in_call);
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    pin_to(&cpus);
                    raise_to_realtime();
                    while !stop.load(Ordering::Relaxed) {
                        // Tick by tick while guest code runs somewhere; otherwise a longer
                        // sleep (an idle node wakes ~1,100 times a second, not 2,000).
                        let busy = flags.iter().any(|flag| flag.load(Ordering::Relaxed));
                        std::thread::sleep(if busy {
                            tick
                        } else {
                            IDLE_TICK_SLEEP.max(tick)
                        });
                        // One increment per wake-up, at least a tick after the last one,
                        // never a catch-up: a call's deadline counts ticks from the epoch
                        // at its start, so a burst of overdue ticks right after it starts
                        // (after an idle sleep or a late wake-up) would interrupt it
                        // before its limit. A late wake-up delays the interrupt instead.
                        engine.increment_epoch();
                    }
                })
                .ok()
        };
        if thread.is_none() {
            tracing::error!("cannot start the wasm epoch thread: time limits are not enforced");
        }
        Ticker {
            tick,
            stop,
            in_call,
            thread,
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn pin_to(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: `set` is a plain bit set on the stack, zeroed and filled by the libc macros,
    // and passed by pointer with its size to a system call on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!("wasm epoch thread left unpinned");
        }
    }
}

fn raise_to_realtime() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if result != 0 {
        tracing::debug!("wasm epoch thread stays at normal priority (no CAP_SYS_NICE)");
    }
}
