//! The validated configuration and the one function that builds it from the raw file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::error::ConfigError;
use crate::limits::{self, Bounds};
use crate::raw::{Field, RawAgent, RawConfig, RawNode, RawShard, Scalar};
use crate::types::{
    AgentId, AgentKind, CpuList, IdlePolicy, ParseValueError, PowerOfTwo, ShardCount,
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
    /// Agents deployed at start-up. Default: one `echo` agent; `agents: []` deploys none.
    pub agents: Vec<AgentSpec>,
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

/// One entry of `agents:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AgentSpec {
    /// Unique name: 1 to 64 bytes of `[A-Za-z0-9._-]`. Required.
    pub id: AgentId,
    /// Handler: `echo`, `sink` or `counter`. Required.
    pub kind: AgentKind,
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
        let agents = raw
            .agents_or_default()
            .iter()
            .enumerate()
            .map(|(index, agent)| agent_spec(index, agent))
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
        let config = Self {
            node,
            shard,
            agents,
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

fn agent_spec(index: usize, raw: &RawAgent) -> Result<AgentSpec, ConfigError> {
    Ok(AgentSpec {
        id: parsed_with(&format!("agents[{index}].id"), &raw.id, AgentId::from_str)?,
        kind: parsed_with(
            &format!("agents[{index}].kind"),
            &raw.kind,
            AgentKind::from_str,
        )?,
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

fn to_usize(field: &str, number: u64) -> Result<usize, ConfigError> {
    usize::try_from(number).map_err(|_| {
        ConfigError::invalid(field, number, "does not fit this machine's address space")
    })
}
