//! Command-line overrides: the last layer, applied over the file before validation.

use std::net::SocketAddr;

use crate::raw::{RawConfig, Scalar};
use crate::types::{CacheDir, CpuList, IdlePolicy, ShardCount, WasmProfiling};

/// Flags that override single fields of the configuration file.
///
/// The binary flattens this into its `run` command (`#[command(flatten)]`). Each flag is
/// named after its field (`shard.ring_capacity_frames` is `--ring-capacity-frames`), is
/// unset by default, and when given replaces the file's value; the result is then validated
/// like the file, so errors name the field. Help text gives the default of the embedded file
/// and the unit (a test keeps the two in step).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
#[command(
    next_help_heading = "Configuration overrides (default: --config file, else the embedded default)"
)]
pub struct Overrides {
    /// Shards to run: auto (one per CPU) or 1..=1024 [node.shards; default: auto]
    #[arg(long, value_name = "auto|N")]
    pub shards: Option<ShardCount>,
    /// CPUs to pin shards to, Linux list syntax such as 2-7,10 [node.cpuset; default: none, all online CPUs]
    #[arg(long, value_name = "LIST")]
    pub cpuset: Option<CpuList>,
    /// What an idle shard does [node.idle; default: busy-poll]
    #[arg(long, value_name = "POLICY")]
    pub idle: Option<IdlePolicy>,
    /// Locked memory the node needs, bytes [node.memlock_bytes_min; default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub memlock_bytes_min: Option<u64>,
    /// glommio io_memory per executor, bytes, >= 524288 [node.io_memory_bytes; default: 2097152]
    #[arg(long, value_name = "BYTES")]
    pub io_memory_bytes: Option<u64>,
    /// Ring capacity per ordered shard pair, frames, power of two 2..=65536 [shard.ring_capacity_frames; default: 1024]
    #[arg(long, value_name = "FRAMES")]
    pub ring_capacity_frames: Option<u64>,
    /// Mailbox capacity per agent, frames [shard.mailbox_capacity_frames; default: 1024]
    #[arg(long, value_name = "FRAMES")]
    pub mailbox_capacity_frames: Option<u64>,
    /// Frames one shard may have in flight, frames [shard.frame_pool_frames_max; default: 65536]
    #[arg(long, value_name = "FRAMES")]
    pub frame_pool_frames_max: Option<u64>,
    /// Largest frame, bytes, <= 1048576 [shard.frame_bytes_max; default: 65536]
    #[arg(long, value_name = "BYTES")]
    pub frame_bytes_max: Option<u64>,
    /// Handler calls per poll, messages [shard.poll_budget_messages; default: 256]
    #[arg(long, value_name = "MESSAGES")]
    pub poll_budget_messages: Option<u64>,
    /// Frames drained per ring per poll, frames [shard.ring_batch_frames; default: 64]
    #[arg(long, value_name = "FRAMES")]
    pub ring_batch_frames: Option<u64>,
    /// Passes before a waiting lower priority class is served, passes [shard.starvation_limit_passes; default: 32]
    #[arg(long, value_name = "PASSES")]
    pub starvation_limit_passes: Option<u64>,
    /// Agents per shard, agents [shard.agents_max; default: 100000]
    #[arg(long, value_name = "AGENTS")]
    pub agents_max: Option<u64>,
    /// Handler call or poll longer than this is logged, microseconds [shard.stall_threshold_us; default: 500]
    #[arg(long, value_name = "MICROSECONDS")]
    pub stall_threshold_us: Option<u64>,
    /// WASM instance-pool slots per shard, agents, 1..=1000000 [wasm.agents_per_shard_max; default: 4096]
    #[arg(long, value_name = "AGENTS")]
    pub agents_per_shard_max: Option<u64>,
    /// Compiled-module cache: auto ($XDG_CACHE_HOME or ~/.cache, then dataplane/modules) or a directory [wasm.cache_dir; default: auto]
    #[arg(long, value_name = "auto|DIR", conflicts_with = "wasm_cache_disabled")]
    pub wasm_cache_dir: Option<CacheDir>,
    /// Turn the compiled-module cache off [wasm.cache_dir = null; default: auto]
    #[arg(long)]
    pub wasm_cache_disabled: bool,
    /// How JIT code is named for profilers [wasm.profiling; default: none]
    #[arg(long, value_name = "PROFILING")]
    pub wasm_profiling: Option<WasmProfiling>,
    /// QUIC edge address every shard binds, IP:PORT [edge.listen; default: 127.0.0.1:4433]
    #[arg(long, value_name = "IP:PORT", conflicts_with = "edge_disabled")]
    pub listen: Option<SocketAddr>,
    /// Turn the QUIC edge off [edge.listen = null; default: on]
    #[arg(long)]
    pub edge_disabled: bool,
    /// Certificate chain for the QUIC edge, PEM [edge.cert; default: none, a development certificate]
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Private key for the QUIC edge, PEM [edge.key; default: none]
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this CA, PEM [edge.client_ca; default: none]
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<std::path::PathBuf>,
    /// Admin endpoint address, IP:PORT [admin.listen; default: 127.0.0.1:9090]
    #[arg(long, value_name = "IP:PORT", conflicts_with = "admin_disabled")]
    pub admin_listen: Option<SocketAddr>,
    /// Turn the admin endpoint off [admin.listen = null; default: on]
    #[arg(long)]
    pub admin_disabled: bool,
    /// tracing filter, e.g. info or warn,dataplane=debug [log.level; default: info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

impl Overrides {
    /// Replaces each field of `raw` whose flag was given.
    pub(crate) fn apply_to(&self, raw: &mut RawConfig) {
        fn set<T: std::fmt::Display>(field: &mut Option<Scalar>, value: Option<&T>) {
            if let Some(value) = value {
                *field = Some(Scalar::from(value));
            }
        }
        let (node, shard) = (&mut raw.node, &mut raw.shard);
        set(&mut node.shards, self.shards.as_ref());
        set(&mut node.cpuset, self.cpuset.as_ref());
        set(&mut node.idle, self.idle.as_ref());
        set(&mut node.memlock_bytes_min, self.memlock_bytes_min.as_ref());
        set(&mut node.io_memory_bytes, self.io_memory_bytes.as_ref());
        set(
            &mut shard.ring_capacity_frames,
            self.ring_capacity_frames.as_ref(),
        );
        set(
            &mut shard.mailbox_capacity_frames,
            self.mailbox_capacity_frames.as_ref(),
        );
        set(
            &mut shard.frame_pool_frames_max,
            self.frame_pool_frames_max.as_ref(),
        );
        set(&mut shard.frame_bytes_max, self.frame_bytes_max.as_ref());
        set(
            &mut shard.poll_budget_messages,
            self.poll_budget_messages.as_ref(),
        );
        set(
            &mut shard.ring_batch_frames,
            self.ring_batch_frames.as_ref(),
        );
        set(
            &mut shard.starvation_limit_passes,
            self.starvation_limit_passes.as_ref(),
        );
        set(&mut shard.agents_max, self.agents_max.as_ref());
        set(
            &mut shard.stall_threshold_us,
            self.stall_threshold_us.as_ref(),
        );
        let wasm = &mut raw.wasm;
        set(
            &mut wasm.agents_per_shard_max,
            self.agents_per_shard_max.as_ref(),
        );
        set(&mut wasm.cache_dir, self.wasm_cache_dir.as_ref());
        if self.wasm_cache_disabled {
            wasm.cache_dir = None;
        }
        set(&mut wasm.profiling, self.wasm_profiling.as_ref());
        set(&mut raw.edge.listen, self.listen.as_ref());
        if self.edge_disabled {
            raw.edge.listen = None;
        }
        set(
            &mut raw.edge.cert,
            self.cert.as_ref().map(|p| p.display()).as_ref(),
        );
        set(
            &mut raw.edge.key,
            self.key.as_ref().map(|p| p.display()).as_ref(),
        );
        set(
            &mut raw.edge.client_ca,
            self.client_ca.as_ref().map(|p| p.display()).as_ref(),
        );
        set(&mut raw.admin.listen, self.admin_listen.as_ref());
        if self.admin_disabled {
            raw.admin.listen = None;
        }
        set(&mut raw.log.level, self.log_level.as_ref());
    }
}
