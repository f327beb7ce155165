//! The validated configuration and the one function that builds it from the raw file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::error::ConfigError;
use crate::limits::{self, Bounds};
use crate::raw::{
    Field, RawAgent, RawAgentDefaults, RawAgentLimits, RawConfig, RawNode, RawRestart, RawShard,
    RawWasm, Scalar,
};
use crate::types::{
    AgentId, AgentKind, CacheDir, CpuList, IdlePolicy, ModuleSource, ParseValueError, PowerOfTwo,
    ShardCount, TickerPace, WasmProfiling,
};

/// The node's whole configuration, every rule checked.
///
/// Build it with [`Config::load`], [`Config::from_yaml_str`] or [`Config::embedded_default`];
/// print it with [`Config::to_yaml`]. Field docs give each default and unit;
/// `docs/configuration.md` is the same list for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Config {
    /// Process-wide settings: shards, CPUs, memory.
    pub node: NodeConfig,
    /// Per-shard limits and scheduling.
    pub shard: ShardConfig,
    /// The WebAssembly host: instance pool, epoch, module cache, restarts, agent limits.
    pub wasm: WasmConfig,
    /// Agents deployed at start-up. Default: one agent `echo` of `kind: wasm` running
    /// `builtin:echo`; `agents: []` deploys none.
    pub agents: Vec<AgentSpec>,
    /// The QUIC edge.
    pub edge: EdgeConfig,
    /// Metrics and admin endpoint.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `node:` — process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Shards to run, one per core: `auto` (one per CPU of `cpuset`, or per online CPU) or
    /// a number from 1 to 1024. Default: `auto`.
    pub shards: ShardCount,
    /// CPUs the shards are pinned to, Linux list syntax (`2-7,10`). Default: none (all
    /// online CPUs).
    pub cpuset: Option<CpuList>,
    /// What an idle shard does: `busy-poll` or `park`. Default: `busy-poll`.
    pub idle: IdlePolicy,
    /// Locked memory the node needs (RLIMIT_MEMLOCK), in bytes; start-up refuses to run
    /// below it. At least `io_memory_bytes` (times `shards` when that is a number).
    /// Default: 8388608 (8 MiB). Range: 524288 (512 KiB) to 1 TiB.
    pub memlock_bytes_min: u64,
    /// glommio io_memory (registered io_uring buffers) per executor, in bytes; a multiple
    /// of 4096. Default: 2097152 (2 MiB). Range: 524288 (512 KiB) to 1 GiB.
    pub io_memory_bytes: usize,
}

/// `shard:` — limits and scheduling of every shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ShardConfig {
    /// Capacity of the ring of each ordered shard pair, in frames; a power of two.
    /// Default: 1024. Range: 2 to 65536.
    pub ring_capacity_frames: PowerOfTwo,
    /// Mailbox capacity of each agent, all priority classes together, in frames.
    /// Default: 1024. Range: 1 to 1048576.
    pub mailbox_capacity_frames: NonZeroUsize,
    /// Frames one shard may have in flight (frame pool bound), in frames; at least
    /// `ring_capacity_frames` and `mailbox_capacity_frames`. Default: 65536.
    /// Range: 2 to 16777216.
    pub frame_pool_frames_max: NonZeroUsize,
    /// Largest frame, in bytes. Default: 65536 (64 KiB). Range: 64 to 1048576 (1 MiB).
    pub frame_bytes_max: NonZeroUsize,
    /// Handler calls per poll before the shard looks at rings and network again, in
    /// messages. Default: 256. Range: 1 to 65536.
    pub poll_budget_messages: NonZeroUsize,
    /// Frames drained from one ring per poll, in frames; at most `ring_capacity_frames`.
    /// Default: 64. Range: 1 to 65536.
    pub ring_batch_frames: NonZeroUsize,
    /// Priority policy: a waiting lower class is served after this many passes over the
    /// higher ones, in passes. Default: 32. Range: 1 to 65536.
    pub starvation_limit_passes: NonZeroU32,
    /// Agents one shard may host, in agents. Default: 100000. Range: 1 to 16777216.
    pub agents_max: NonZeroUsize,
    /// Stall detector: a handler call or poll longer than this is logged, in microseconds.
    /// Default: 500. Range: 1 to 60000000 (60 s).
    pub stall_threshold_us: NonZeroU64,
}

impl ShardConfig {
    /// [`ShardConfig::stall_threshold_us`] as a [`Duration`].
    #[must_use]
    pub fn stall_threshold(&self) -> Duration {
        Duration::from_micros(self.stall_threshold_us.get())
    }
}

/// `wasm:` — the WebAssembly host, shared by every WASM agent of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WasmConfig {
    /// Instance-pool slots per shard, in agents: the pool holds this times the number of
    /// shards ([`WasmConfig::pool_slots`]), and bounds the WASM agents alive at once.
    /// Default: 10000. Range: 1 to 1000000.
    pub agents_per_shard_max: NonZeroU32,
    /// The largest linear memory any agent may have (the pool's per-memory bound), in
    /// bytes; a multiple of 65536 (the WebAssembly page). Default: 16777216 (16 MiB).
    /// Range: 65536 (64 KiB) to 4294967296 (4 GiB).
    pub memory_bytes_max: u64,
    /// Virtual address space reserved per linear memory, in bytes; a multiple of 65536, at
    /// least `memory_bytes_max`. `None` (`null`, the default): the host chooses.
    /// Range: 65536 to 8589934592 (8 GiB).
    pub memory_reservation_bytes: Option<u64>,
    /// How often the epoch advances, in microseconds; time limits are enforced to within
    /// one tick. Default: 500. Range: 10 to 100000 (100 ms).
    pub epoch_tick_us: NonZeroU64,
    /// When the epoch ticker takes its fast pace (half a tick), which batches need:
    /// `adaptive` (while batches run or wait; an idle node stays quiet) or `fast`
    /// (always; batches from the first message after a quiet spell). Default: `adaptive`.
    pub ticker_pace: TickerPace,
    /// Where compiled modules are cached: `auto` (the user's cache directory, see
    /// [`WasmConfig::cache_dir_path`]) or a directory; `None` (`null`) compiles every
    /// module at every start. Default: `auto`.
    pub cache_dir: Option<CacheDir>,
    /// How JIT code is named for profilers: `none`, `perfmap` or `jitdump`.
    /// Default: `none`.
    pub profiling: WasmProfiling,
    /// What happens after an agent traps.
    pub restart: RestartPolicy,
    /// Limits of every WASM agent that does not set its own in `agents[].limits`.
    pub agent_defaults: AgentLimits,
}

impl WasmConfig {
    /// Pool slots of the whole node with `shard_count` shards:
    /// `agents_per_shard_max` x `shard_count`.
    #[must_use]
    pub fn pool_slots(&self, shard_count: NonZeroUsize) -> u64 {
        u64::from(self.agents_per_shard_max.get()).saturating_mul(shard_count.get() as u64)
    }

    /// [`WasmConfig::epoch_tick_us`] as a [`Duration`].
    #[must_use]
    pub fn epoch_tick(&self) -> Duration {
        Duration::from_micros(self.epoch_tick_us.get())
    }

    /// The module cache directory, or `None` for no cache: the configured path, or for
    /// [`CacheDir::Auto`] `$XDG_CACHE_HOME/dataplane/modules`, else
    /// `$HOME/.cache/dataplane/modules`, read from the environment now (`None` when
    /// neither variable holds an absolute path). See [`CacheDir::resolve`].
    #[must_use]
    pub fn cache_dir_path(&self) -> Option<PathBuf> {
        self.cache_dir.as_ref()?.resolve(
            std::env::var_os("XDG_CACHE_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        )
    }
}

/// `wasm.restart:` — restarts of an agent after a trap (docs/agent-abi.md).
///
/// A trapped agent is restarted after a back-off that starts at `backoff_initial_ms` and
/// grows up to `backoff_max_ms`; after more than `max_restarts` restarts within
/// `window_ms` it is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RestartPolicy {
    /// Restarts allowed within `window_ms`, in restarts; 0 stops an agent at its first
    /// trap. Default: 5. Range: 0 to 1000.
    pub max_restarts: u32,
    /// The window `max_restarts` counts in, in milliseconds. Default: 60000 (1 min).
    /// Range: 1 to 86400000 (1 day).
    pub window_ms: NonZeroU64,
    /// Delay before the first restart, in milliseconds. Default: 1. Range: 1 to 60000.
    pub backoff_initial_ms: NonZeroU64,
    /// Longest delay between restarts, in milliseconds; at least `backoff_initial_ms`.
    /// Default: 1000. Range: 1 to 600000 (10 min).
    pub backoff_max_ms: NonZeroU64,
}

impl RestartPolicy {
    /// [`RestartPolicy::window_ms`] as a [`Duration`].
    #[must_use]
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms.get())
    }

    /// [`RestartPolicy::backoff_initial_ms`] as a [`Duration`].
    #[must_use]
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(self.backoff_initial_ms.get())
    }

    /// [`RestartPolicy::backoff_max_ms`] as a [`Duration`].
    #[must_use]
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms.get())
    }
}

/// Limits of one WASM agent (docs/agent-abi.md, "Limits"): `wasm.agent_defaults`, and the
/// resolved limits of each agent ([`WasmAgentSpec::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AgentLimits {
    /// Linear memory the agent may grow to, in bytes; a multiple of 65536, at most
    /// `wasm.memory_bytes_max`. Default: 16777216 (16 MiB). Range: 65536 to 4294967296.
    pub memory_bytes_max: u64,
    /// How long one call into the agent may run before it is interrupted, in
    /// milliseconds. Default: 10. Range: 1 to 60000 (1 min).
    pub time_per_message_ms: NonZeroU64,
    /// Largest payload in or out, and largest `config`, in bytes; at most
    /// `shard.frame_bytes_max` - 80. Default: 65456 (64 KiB - 80). Range: 0 to 1048496.
    pub message_bytes_max: u32,
    /// Sends and replies per call into the agent, in messages. Default: 1024.
    /// Range: 1 to 1000000.
    pub sends_per_message_max: NonZeroU32,
}

impl AgentLimits {
    /// [`AgentLimits::time_per_message_ms`] as a [`Duration`].
    #[must_use]
    pub fn time_per_message(&self) -> Duration {
        Duration::from_millis(self.time_per_message_ms.get())
    }
}

/// One entry of `agents:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AgentSpec {
    /// Unique name: 1 to 64 bytes of `[A-Za-z0-9._-]`. Required.
    pub id: AgentId,
    /// Handler: `echo`, `sink` or `counter` (native), or `wasm`. Required.
    pub kind: AgentKind,
    /// The module, configuration and limits of a `kind: wasm` agent; `Some` exactly when
    /// `kind` is [`AgentKind::Wasm`]. Its keys sit next to `id` and `kind` in the file.
    #[serde(flatten)]
    pub wasm: Option<WasmAgentSpec>,
}

/// The `kind: wasm` part of an `agents:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WasmAgentSpec {
    /// `module`: `builtin:<name>` or a file path. Required for `kind: wasm`.
    pub module: ModuleSource,
    /// `config`: the text the agent's `dp_init` receives, at most
    /// `limits.message_bytes_max` bytes. Default: empty.
    pub config: String,
    /// `seed`: seed of the agent's `random` host function, any u64. Default: none (seeded
    /// from the agent's id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `limits`: the agent's limits, resolved: each key the entry leaves out is taken from
    /// `wasm.agent_defaults`.
    pub limits: AgentLimits,
}

/// `edge:` — the QUIC edge clients and other nodes connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EdgeConfig {
    /// Address every shard binds (`SO_REUSEPORT`), `IP:PORT`; `null` turns the edge off.
    /// Default: `127.0.0.1:4433`.
    pub listen: Option<SocketAddr>,
    /// Certificate chain (PEM). With `key`; when both are `null` the node uses a
    /// development certificate from `dev_cert_dir`.
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to; set it to require
    /// mutual TLS. Default: `null` (no client certificates).
    pub client_ca: Option<PathBuf>,
    /// Where the development certificate lives: `auto` (`$XDG_DATA_HOME/dataplane/tls`,
    /// else `~/.local/share/dataplane/tls`) or a directory.
    pub dev_cert_dir: Option<PathBuf>,
    /// Connections one shard serves at once.
    pub connections_per_shard_max: u64,
    /// A connection without traffic this long is closed, milliseconds.
    pub idle_timeout_ms: u64,
    /// Flow-control window of a connection's frame stream, bytes.
    pub stream_window_bytes: u64,
    /// Reply bytes queued for one connection before its requests stop being read.
    pub egress_bytes_max: u64,
}

/// `admin:` — metrics and admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Address the admin endpoint listens on, `IP:PORT`; `null` disables it.
    /// Default: `127.0.0.1:9090`.
    pub listen: Option<SocketAddr>,
}

/// `log:` — logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LogConfig {
    /// tracing filter (`EnvFilter` syntax, e.g. `info,dataplane_shard=debug`); the binary
    /// checks the directives. Default: `info`.
    pub level: String,
}

impl Config {
    /// Locked memory the node needs with `shard_count` shards, in bytes: the larger of
    /// `memlock_bytes_min` and one `io_memory_bytes` per shard. The binary calls this once
    /// it has resolved [`ShardCount::Auto`].
    #[must_use]
    pub fn memlock_bytes_required(&self, shard_count: NonZeroUsize) -> u64 {
        let io_memory_bytes =
            (self.node.io_memory_bytes as u64).saturating_mul(shard_count.get() as u64);
        self.node.memlock_bytes_min.max(io_memory_bytes)
    }

    /// Checks every rule of `raw` and builds the validated configuration.
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let node = node(&raw.node)?;
        let shard = shard(&raw.shard)?;
        let wasm = wasm(&raw.wasm)?;
        let agents = raw
            .agents_or_default()
            .iter()
            .enumerate()
            .map(|(index, agent)| agent_spec(index, agent, &wasm.agent_defaults))
            .collect::<Result<Vec<_>, _>>()?;
        let admin = AdminConfig {
            listen: match &raw.admin.listen {
                None => None,
                Some(text) => Some(parsed_with("admin.listen", text, |text| {
                    SocketAddr::from_str(text)
                        .map_err(|_| ParseValueError::new("must be IP:PORT, e.g. 127.0.0.1:9090"))
                })?),
            },
        };
        let log = LogConfig {
            level: log_level(&raw.log.level)?,
        };
        let edge = edge(&raw.edge)?;
        let config = Self {
            node,
            shard,
            wasm,
            agents,
            edge,
            admin,
            log,
        };
        config.check_relations()?;
        Ok(config)
    }

    /// Rules between fields; each error names the field that must change.
    fn check_relations(&self) -> Result<(), ConfigError> {
        let Self {
            node,
            shard,
            wasm,
            agents,
            ..
        } = self;
        let ring_capacity_frames = shard.ring_capacity_frames.get();
        if shard.ring_batch_frames.get() > ring_capacity_frames {
            return Err(ConfigError::invalid(
                "shard.ring_batch_frames",
                shard.ring_batch_frames,
                format!("must not exceed shard.ring_capacity_frames ({ring_capacity_frames})"),
            ));
        }
        let pool = shard.frame_pool_frames_max.get();
        let needed = ring_capacity_frames.max(shard.mailbox_capacity_frames.get());
        if pool < needed {
            return Err(ConfigError::invalid(
                "shard.frame_pool_frames_max",
                pool,
                format!(
                    "must be at least shard.ring_capacity_frames ({ring_capacity_frames}) and \
                     shard.mailbox_capacity_frames ({})",
                    shard.mailbox_capacity_frames
                ),
            ));
        }
        let shards = node.shards.exact().map_or(1, NonZeroUsize::get);
        let io_memory_bytes = (node.io_memory_bytes as u64).saturating_mul(shards as u64);
        if node.memlock_bytes_min < io_memory_bytes {
            return Err(ConfigError::invalid(
                "node.memlock_bytes_min",
                node.memlock_bytes_min,
                format!(
                    "must be at least node.io_memory_bytes ({}) x {shards} shard(s) = {io_memory_bytes}",
                    node.io_memory_bytes
                ),
            ));
        }
        if let (Some(count), Some(cpuset)) = (node.shards.exact(), &node.cpuset) {
            if count > cpuset.len() {
                return Err(ConfigError::invalid(
                    "node.shards",
                    count,
                    format!(
                        "is more than the {} CPU(s) in node.cpuset ({cpuset})",
                        cpuset.len()
                    ),
                ));
            }
        }
        let mut seen = HashSet::with_capacity(agents.len());
        for (index, agent) in agents.iter().enumerate() {
            if !seen.insert(agent.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("agents[{index}].id"),
                    &agent.id,
                    "is already used by an earlier agent",
                ));
            }
        }
        if let Some(count) = node.shards.exact() {
            let capacity = shard.agents_max.get().saturating_mul(count.get());
            if agents.len() > capacity {
                return Err(ConfigError::invalid(
                    "agents",
                    format!("{} agents", agents.len()),
                    format!("more than shard.agents_max x node.shards = {capacity}"),
                ));
            }
            let slots = wasm.pool_slots(count);
            let wasm_agents = agents.iter().filter(|agent| agent.wasm.is_some()).count();
            if wasm_agents as u64 > slots {
                return Err(ConfigError::invalid(
                    "agents",
                    format!("{wasm_agents} wasm agents"),
                    format!("more than wasm.agents_per_shard_max x node.shards = {slots}"),
                ));
            }
        }
        wasm.check_relations(shard)?;
        for (index, agent) in agents.iter().enumerate() {
            if let Some(spec) = &agent.wasm {
                // The defaults passed these checks above, so a failure is the agent's own
                // `limits` key.
                spec.limits
                    .check_relations(&format!("agents[{index}].limits"), wasm, shard)?;
            }
        }
        Ok(())
    }
}

impl WasmConfig {
    /// Rules between `wasm:` fields, and between them and `shard:`.
    fn check_relations(&self, shard: &ShardConfig) -> Result<(), ConfigError> {
        if let Some(reservation) = self.memory_reservation_bytes {
            if reservation < self.memory_bytes_max {
                return Err(ConfigError::invalid(
                    "wasm.memory_reservation_bytes",
                    reservation,
                    format!(
                        "must be at least wasm.memory_bytes_max ({})",
                        self.memory_bytes_max
                    ),
                ));
            }
        }
        let restart = &self.restart;
        if restart.backoff_max_ms < restart.backoff_initial_ms {
            return Err(ConfigError::invalid(
                "wasm.restart.backoff_max_ms",
                restart.backoff_max_ms,
                format!(
                    "must be at least wasm.restart.backoff_initial_ms ({})",
                    restart.backoff_initial_ms
                ),
            ));
        }
        self.agent_defaults
            .check_relations("wasm.agent_defaults", self, shard)
    }
}

impl AgentLimits {
    /// Rules between these limits (named `prefix.<key>` in errors) and the node's.
    fn check_relations(
        &self,
        prefix: &str,
        wasm: &WasmConfig,
        shard: &ShardConfig,
    ) -> Result<(), ConfigError> {
        if self.memory_bytes_max > wasm.memory_bytes_max {
            return Err(ConfigError::invalid(
                format!("{prefix}.memory_bytes_max"),
                self.memory_bytes_max,
                format!(
                    "must not exceed wasm.memory_bytes_max ({})",
                    wasm.memory_bytes_max
                ),
            ));
        }
        let frame_bytes_max = shard.frame_bytes_max.get() as u64;
        let message_bytes_max =
            frame_bytes_max.saturating_sub(limits::MESSAGE_FRAME_OVERHEAD_BYTES);
        if u64::from(self.message_bytes_max) > message_bytes_max {
            return Err(ConfigError::invalid(
                format!("{prefix}.message_bytes_max"),
                self.message_bytes_max,
                format!(
                    "must not exceed shard.frame_bytes_max ({frame_bytes_max}) - {} = \
                     {message_bytes_max}",
                    limits::MESSAGE_FRAME_OVERHEAD_BYTES
                ),
            ));
        }
        Ok(())
    }
}

fn node(raw: &RawNode) -> Result<NodeConfig, ConfigError> {
    let io_memory_bytes = number(
        "node.io_memory_bytes",
        &raw.io_memory_bytes,
        limits::IO_MEMORY_BYTES,
    )?;
    if !io_memory_bytes.is_multiple_of(limits::IO_MEMORY_ALIGN_BYTES) {
        return Err(ConfigError::invalid(
            "node.io_memory_bytes",
            io_memory_bytes,
            format!(
                "must be a multiple of {} bytes (the page size)",
                limits::IO_MEMORY_ALIGN_BYTES
            ),
        ));
    }
    Ok(NodeConfig {
        shards: parsed("node.shards", &raw.shards)?,
        cpuset: match &raw.cpuset {
            None => None,
            Some(text) => Some(parsed_with("node.cpuset", text, CpuList::from_str)?),
        },
        idle: parsed("node.idle", &raw.idle)?,
        memlock_bytes_min: number(
            "node.memlock_bytes_min",
            &raw.memlock_bytes_min,
            limits::MEMLOCK_BYTES_MIN,
        )?,
        io_memory_bytes: to_usize("node.io_memory_bytes", io_memory_bytes)?,
    })
}

fn shard(raw: &RawShard) -> Result<ShardConfig, ConfigError> {
    let field = "shard.ring_capacity_frames";
    let bounds = limits::RING_CAPACITY_FRAMES;
    let ring_capacity_frames = required(field, &raw.ring_capacity_frames)?;
    let ring_capacity_frames = ring_capacity_frames
        .as_str()
        .parse::<u64>()
        .ok()
        .filter(|&frames| bounds.contains(frames))
        .and_then(|frames| usize::try_from(frames).ok())
        .and_then(PowerOfTwo::new)
        .ok_or_else(|| {
            ConfigError::invalid(
                field,
                ring_capacity_frames.as_str(),
                format!(
                    "must be a power of two between {} and {}",
                    bounds.min, bounds.max
                ),
            )
        })?;
    let passes = number(
        "shard.starvation_limit_passes",
        &raw.starvation_limit_passes,
        limits::STARVATION_LIMIT_PASSES,
    )?;
    let stall_threshold_us = number(
        "shard.stall_threshold_us",
        &raw.stall_threshold_us,
        limits::STALL_THRESHOLD_US,
    )?;
    Ok(ShardConfig {
        ring_capacity_frames,
        mailbox_capacity_frames: count(
            "shard.mailbox_capacity_frames",
            &raw.mailbox_capacity_frames,
            limits::MAILBOX_CAPACITY_FRAMES,
        )?,
        frame_pool_frames_max: count(
            "shard.frame_pool_frames_max",
            &raw.frame_pool_frames_max,
            limits::FRAME_POOL_FRAMES_MAX,
        )?,
        frame_bytes_max: count(
            "shard.frame_bytes_max",
            &raw.frame_bytes_max,
            limits::FRAME_BYTES_MAX,
        )?,
        poll_budget_messages: count(
            "shard.poll_budget_messages",
            &raw.poll_budget_messages,
            limits::POLL_BUDGET_MESSAGES,
        )?,
        ring_batch_frames: count(
            "shard.ring_batch_frames",
            &raw.ring_batch_frames,
            limits::RING_BATCH_FRAMES,
        )?,
        starvation_limit_passes: u32::try_from(passes)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                out_of_bounds(
                    "shard.starvation_limit_passes",
                    passes,
                    limits::STARVATION_LIMIT_PASSES,
                )
            })?,
        agents_max: count("shard.agents_max", &raw.agents_max, limits::AGENTS_MAX)?,
        stall_threshold_us: NonZeroU64::new(stall_threshold_us).ok_or_else(|| {
            out_of_bounds("shard.stall_threshold_us", 0, limits::STALL_THRESHOLD_US)
        })?,
    })
}

fn edge(raw: &crate::raw::RawEdge) -> Result<EdgeConfig, ConfigError> {
    let path = |field: &str, value: &Option<Scalar>| -> Result<Option<PathBuf>, ConfigError> {
        match value {
            None => Ok(None),
            Some(text) => parsed_with(field, text, |text| {
                if text.is_empty() || text.len() > limits::PATH_BYTES_MAX {
                    Err(ParseValueError::new("must be a file path"))
                } else {
                    Ok(Some(PathBuf::from(text)))
                }
            }),
        }
    };
    let cert = path("edge.cert", &raw.cert)?;
    let key = path("edge.key", &raw.key)?;
    if cert.is_some() != key.is_some() {
        let (field, value) = if cert.is_some() {
            ("edge.key", "null")
        } else {
            ("edge.cert", "null")
        };
        return Err(ConfigError::invalid(
            field,
            value,
            "edge.cert and edge.key go together: set both, or neither for a development certificate",
        ));
    }
    let dev_cert_dir = match &raw.dev_cert_dir {
        None => None,
        Some(text) if text.as_str() == "auto" => None,
        dir => path("edge.dev_cert_dir", dir)?,
    };
    Ok(EdgeConfig {
        listen: match &raw.listen {
            None => None,
            Some(text) => Some(parsed_with("edge.listen", text, |text| {
                SocketAddr::from_str(text)
                    .map_err(|_| ParseValueError::new("must be IP:PORT, e.g. 127.0.0.1:4433"))
            })?),
        },
        cert,
        key,
        client_ca: path("edge.client_ca", &raw.client_ca)?,
        dev_cert_dir,
        connections_per_shard_max: number(
            "edge.connections_per_shard_max",
            &raw.connections_per_shard_max,
            limits::EDGE_CONNECTIONS_PER_SHARD_MAX,
        )?,
        idle_timeout_ms: number(
            "edge.idle_timeout_ms",
            &raw.idle_timeout_ms,
            limits::EDGE_IDLE_TIMEOUT_MS,
        )?,
        stream_window_bytes: number(
            "edge.stream_window_bytes",
            &raw.stream_window_bytes,
            limits::EDGE_STREAM_WINDOW_BYTES,
        )?,
        egress_bytes_max: number(
            "edge.egress_bytes_max",
            &raw.egress_bytes_max,
            limits::EDGE_EGRESS_BYTES_MAX,
        )?,
    })
}

fn wasm(raw: &RawWasm) -> Result<WasmConfig, ConfigError> {
    let agents_per_shard_max = number(
        "wasm.agents_per_shard_max",
        &raw.agents_per_shard_max,
        limits::WASM_AGENTS_PER_SHARD_MAX,
    )?;
    // Optional: `null` (the default) lets the host choose.
    let memory_reservation_bytes = match &raw.memory_reservation_bytes {
        None => None,
        reservation @ Some(_) => Some(pages(
            "wasm.memory_reservation_bytes",
            reservation,
            limits::WASM_MEMORY_RESERVATION_BYTES,
        )?),
    };
    Ok(WasmConfig {
        agents_per_shard_max: to_nonzero_u32(
            "wasm.agents_per_shard_max",
            agents_per_shard_max,
            limits::WASM_AGENTS_PER_SHARD_MAX,
        )?,
        memory_bytes_max: pages(
            "wasm.memory_bytes_max",
            &raw.memory_bytes_max,
            limits::WASM_MEMORY_BYTES_MAX,
        )?,
        memory_reservation_bytes,
        epoch_tick_us: nonzero_u64(
            "wasm.epoch_tick_us",
            &raw.epoch_tick_us,
            limits::WASM_EPOCH_TICK_US,
        )?,
        cache_dir: match &raw.cache_dir {
            None => None,
            Some(text) => Some(parsed_with("wasm.cache_dir", text, CacheDir::from_str)?),
        },
        ticker_pace: parsed("wasm.ticker_pace", &raw.ticker_pace)?,
        profiling: parsed("wasm.profiling", &raw.profiling)?,
        restart: restart(&raw.restart)?,
        agent_defaults: agent_defaults(&raw.agent_defaults)?,
    })
}

fn restart(raw: &RawRestart) -> Result<RestartPolicy, ConfigError> {
    let field = "wasm.restart.max_restarts";
    let bounds = limits::RESTART_MAX_RESTARTS;
    let max_restarts = number(field, &raw.max_restarts, bounds)?;
    Ok(RestartPolicy {
        max_restarts: u32::try_from(max_restarts)
            .map_err(|_| out_of_bounds(field, max_restarts, bounds))?,
        window_ms: nonzero_u64(
            "wasm.restart.window_ms",
            &raw.window_ms,
            limits::RESTART_WINDOW_MS,
        )?,
        backoff_initial_ms: nonzero_u64(
            "wasm.restart.backoff_initial_ms",
            &raw.backoff_initial_ms,
            limits::RESTART_BACKOFF_INITIAL_MS,
        )?,
        backoff_max_ms: nonzero_u64(
            "wasm.restart.backoff_max_ms",
            &raw.backoff_max_ms,
            limits::RESTART_BACKOFF_MAX_MS,
        )?,
    })
}

fn agent_defaults(raw: &RawAgentDefaults) -> Result<AgentLimits, ConfigError> {
    let prefix = "wasm.agent_defaults";
    Ok(AgentLimits {
        memory_bytes_max: agent_memory_bytes_max(prefix, &raw.memory_bytes_max)?,
        time_per_message_ms: agent_time_per_message_ms(prefix, &raw.time_per_message_ms)?,
        message_bytes_max: agent_message_bytes_max(prefix, &raw.message_bytes_max)?,
        sends_per_message_max: agent_sends_per_message_max(prefix, &raw.sends_per_message_max)?,
    })
}

/// An agent's `limits:`, each key left out taken from `defaults`.
fn agent_limits(
    prefix: &str,
    raw: &RawAgentLimits,
    defaults: &AgentLimits,
) -> Result<AgentLimits, ConfigError> {
    fn or_default<T>(
        prefix: &str,
        value: &Option<Scalar>,
        default: T,
        check: fn(&str, &Field) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        match value {
            None => Ok(default),
            Some(_) => check(prefix, value),
        }
    }
    Ok(AgentLimits {
        memory_bytes_max: or_default(
            prefix,
            &raw.memory_bytes_max,
            defaults.memory_bytes_max,
            agent_memory_bytes_max,
        )?,
        time_per_message_ms: or_default(
            prefix,
            &raw.time_per_message_ms,
            defaults.time_per_message_ms,
            agent_time_per_message_ms,
        )?,
        message_bytes_max: or_default(
            prefix,
            &raw.message_bytes_max,
            defaults.message_bytes_max,
            agent_message_bytes_max,
        )?,
        sends_per_message_max: or_default(
            prefix,
            &raw.sends_per_message_max,
            defaults.sends_per_message_max,
            agent_sends_per_message_max,
        )?,
    })
}

fn agent_memory_bytes_max(prefix: &str, value: &Field) -> Result<u64, ConfigError> {
    pages(
        &format!("{prefix}.memory_bytes_max"),
        value,
        limits::AGENT_MEMORY_BYTES_MAX,
    )
}

fn agent_time_per_message_ms(prefix: &str, value: &Field) -> Result<NonZeroU64, ConfigError> {
    nonzero_u64(
        &format!("{prefix}.time_per_message_ms"),
        value,
        limits::AGENT_TIME_PER_MESSAGE_MS,
    )
}

fn agent_message_bytes_max(prefix: &str, value: &Field) -> Result<u32, ConfigError> {
    let field = format!("{prefix}.message_bytes_max");
    let bounds = limits::AGENT_MESSAGE_BYTES_MAX;
    let bytes = number(&field, value, bounds)?;
    u32::try_from(bytes).map_err(|_| out_of_bounds(&field, bytes, bounds))
}

fn agent_sends_per_message_max(prefix: &str, value: &Field) -> Result<NonZeroU32, ConfigError> {
    let field = format!("{prefix}.sends_per_message_max");
    let bounds = limits::AGENT_SENDS_PER_MESSAGE_MAX;
    let sends = number(&field, value, bounds)?;
    to_nonzero_u32(&field, sends, bounds)
}

fn agent_spec(
    index: usize,
    raw: &RawAgent,
    defaults: &AgentLimits,
) -> Result<AgentSpec, ConfigError> {
    let field = |key: &str| format!("agents[{index}].{key}");
    let id = parsed_with(&field("id"), &raw.id, AgentId::from_str)?;
    let kind = parsed_with(&field("kind"), &raw.kind, AgentKind::from_str)?;
    if kind.is_native() {
        let only_wasm = format!("only for kind: wasm (this agent is kind: {kind})");
        if let Some(module) = &raw.module {
            return Err(ConfigError::invalid(
                field("module"),
                module.as_str(),
                only_wasm,
            ));
        }
        if let Some(config) = &raw.config {
            let value = format!("{} bytes", config.as_str().len());
            return Err(ConfigError::invalid(field("config"), value, only_wasm));
        }
        if let Some(seed) = &raw.seed {
            return Err(ConfigError::invalid(
                field("seed"),
                seed.as_str(),
                only_wasm,
            ));
        }
        if let Some(limits) = &raw.limits {
            return Err(ConfigError::invalid(
                field("limits"),
                limits.describe(),
                only_wasm,
            ));
        }
        return Ok(AgentSpec {
            id,
            kind,
            wasm: None,
        });
    }
    let module = raw.module.as_ref().ok_or_else(|| {
        ConfigError::invalid(
            field("module"),
            "null",
            "is required for kind: wasm: a file path or builtin:NAME (e.g. builtin:echo)",
        )
    })?;
    let module = parsed_with(&field("module"), module, ModuleSource::from_str)?;
    let limits = match &raw.limits {
        None => *defaults,
        Some(limits) => agent_limits(&field("limits"), limits, defaults)?,
    };
    let config = raw.config.as_ref().map_or("", Scalar::as_str).to_owned();
    if config.len() as u64 > u64::from(limits.message_bytes_max) {
        return Err(ConfigError::invalid(
            field("config"),
            format!("{} bytes", config.len()),
            format!(
                "must not exceed the agent's message_bytes_max ({} bytes)",
                limits.message_bytes_max
            ),
        ));
    }
    let seed = match &raw.seed {
        None => None,
        Some(text) => Some(text.as_str().parse::<u64>().map_err(|_| {
            ConfigError::invalid(
                field("seed"),
                text.as_str(),
                format!("must be a whole number between 0 and {}", u64::MAX),
            )
        })?),
    };
    Ok(AgentSpec {
        id,
        kind,
        wasm: Some(WasmAgentSpec {
            module,
            config,
            seed,
            limits,
        }),
    })
}

fn log_level(raw: &Field) -> Result<String, ConfigError> {
    let level = required("log.level", raw)?.as_str();
    let printable = level.bytes().all(|byte| byte.is_ascii_graphic());
    if level.is_empty() || level.len() > limits::LOG_LEVEL_BYTES_MAX || !printable {
        return Err(ConfigError::invalid(
            "log.level",
            level,
            format!(
                "must be a tracing filter such as info or warn,dataplane=debug: 1 to {} \
                 printable ASCII bytes without spaces",
                limits::LOG_LEVEL_BYTES_MAX
            ),
        ));
    }
    Ok(level.to_owned())
}

/// The scalar of a required field; `null` is refused.
fn required<'a>(field: &str, value: &'a Field) -> Result<&'a Scalar, ConfigError> {
    value
        .as_ref()
        .ok_or_else(|| ConfigError::invalid(field, "null", "a value is required"))
}

/// A required field parsed with its type's [`FromStr`].
fn parsed<T: FromStr<Err = ParseValueError>>(field: &str, value: &Field) -> Result<T, ConfigError> {
    parsed_with(field, required(field, value)?, T::from_str)
}

fn parsed_with<T>(
    field: &str,
    text: &Scalar,
    parse: impl FnOnce(&str) -> Result<T, ParseValueError>,
) -> Result<T, ConfigError> {
    parse(text.as_str()).map_err(|error| ConfigError::invalid(field, text.as_str(), error.reason))
}

fn out_of_bounds(field: &str, value: impl ToString, bounds: Bounds) -> ConfigError {
    ConfigError::invalid(
        field,
        value,
        format!(
            "must be a whole number of {} between {} and {}",
            bounds.unit, bounds.min, bounds.max
        ),
    )
}

/// A required whole number within `bounds`.
fn number(field: &str, value: &Field, bounds: Bounds) -> Result<u64, ConfigError> {
    let text = required(field, value)?.as_str();
    text.parse::<u64>()
        .ok()
        .filter(|&number| bounds.contains(number))
        .ok_or_else(|| out_of_bounds(field, text, bounds))
}

/// A required count within `bounds` (whose `min` is at least 1, asserted in `limits`).
fn count(field: &str, value: &Field, bounds: Bounds) -> Result<NonZeroUsize, ConfigError> {
    let number = number(field, value, bounds)?;
    NonZeroUsize::new(to_usize(field, number)?).ok_or_else(|| out_of_bounds(field, number, bounds))
}

/// A required whole number of bytes within `bounds` and a multiple of the WebAssembly page.
fn pages(field: &str, value: &Field, bounds: Bounds) -> Result<u64, ConfigError> {
    let bytes = number(field, value, bounds)?;
    if !bytes.is_multiple_of(limits::WASM_PAGE_BYTES) {
        return Err(ConfigError::invalid(
            field,
            bytes,
            format!(
                "must be a multiple of {} bytes (the WebAssembly page size)",
                limits::WASM_PAGE_BYTES
            ),
        ));
    }
    Ok(bytes)
}

/// A required whole number within `bounds` (whose `min` is at least 1).
fn nonzero_u64(field: &str, value: &Field, bounds: Bounds) -> Result<NonZeroU64, ConfigError> {
    let number = number(field, value, bounds)?;
    NonZeroU64::new(number).ok_or_else(|| out_of_bounds(field, number, bounds))
}

/// `number`, already within `bounds` (whose `min` is at least 1), as a [`NonZeroU32`].
fn to_nonzero_u32(field: &str, number: u64, bounds: Bounds) -> Result<NonZeroU32, ConfigError> {
    u32::try_from(number)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| out_of_bounds(field, number, bounds))
}

fn to_usize(field: &str, number: u64) -> Result<usize, ConfigError> {
    usize::try_from(number).map_err(|_| {
        ConfigError::invalid(field, number, "does not fit this machine's address space")
    })
}
