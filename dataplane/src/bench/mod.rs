//! `dataplane bench`: the benchmark suites and their report format.
//!
//! Every suite runs two workloads with the same shape in every system:
//! - **ping-pong** (latency): agent A sends a request to agent B, B replies, A records the
//!   round trip and sends the next one. With `--rate R` the sender is open-loop instead:
//!   request `i` is due at `start + i / R`, and latency is measured from that *intended*
//!   send time to the arrival of its reply, so a stall shows up in every request it delays
//!   (no coordinated omission).
//! - **flood** (throughput): A sends messages one-way to B as fast as back-pressure allows;
//!   throughput is messages received divided by the time from first send to last receipt.
//!
//! Latency figures are always *round trips*; one-way latency is reported as half of it.

pub mod hardware;
pub mod native;
pub mod remote;
pub mod report;
pub mod wasm;

pub use report::{BenchResult, LatencyNs};

/// Which suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Two agents on one shard.
    Local,
    /// Two agents on two shards (cores).
    CrossShard,
    /// A raw cache-line ping-pong between the two shard cores: the machine's own limit.
    Hardware,
    /// CPU and memory of an idle node in park mode (`native::run_idle`).
    Idle,
    /// WASM agent instantiation on one shard, pooled, against wasmtime's on-demand
    /// allocator.
    Spawn,
    /// RSS per idle WASM agent with 10,000 and 100,000 agents on one node.
    Memory,
    /// `local` with WASM agents, and with their native twins, in the same run.
    WasmLocal,
    /// `cross-shard` with WASM agents, and with their native twins, in the same run.
    WasmCross,
    /// Limit orders through the WASM order-book agent.
    Orderbook,
    /// How far past its time limit a looping WASM agent is interrupted.
    Interrupt,
    /// Request/response over the QUIC edge from a client process (`bench::remote`).
    Remote,
}

impl Suite {
    /// Whether the suite runs WASM agents (`bench::wasm`).
    pub fn is_wasm(self) -> bool {
        matches!(
            self,
            Suite::Spawn
                | Suite::WasmLocal
                | Suite::WasmCross
                | Suite::Orderbook
                | Suite::Interrupt
        )
    }

    /// Whether each report starts with the machine's own limit (the `hardware` row).
    pub fn has_hardware_row(self) -> bool {
        matches!(
            self,
            Suite::Local | Suite::CrossShard | Suite::WasmLocal | Suite::WasmCross
        )
    }

    /// The name used in reports (`"cross-shard"`).
    pub fn name(self) -> &'static str {
        match self {
            Suite::Local => "local",
            Suite::CrossShard => "cross-shard",
            Suite::Hardware => "hardware",
            Suite::Idle => "idle",
            Suite::Spawn => "spawn",
            Suite::Memory => "memory",
            Suite::WasmLocal => "wasm-local",
            Suite::WasmCross => "wasm-cross",
            Suite::Orderbook => "orderbook",
            Suite::Interrupt => "interrupt",
            Suite::Remote => "remote",
        }
    }
}

/// Options shared by all suites.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Shards (cores) to use; `local` uses one, `cross-shard` and `hardware` two.
    pub shards: usize,
    /// Wall-clock seconds per workload (ping-pong and flood each get this much).
    pub seconds: f64,
    /// Open-loop request rate for the latency workload; `None` means closed-loop ping-pong.
    pub rate_msgs_per_s: Option<u64>,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// CPUs to pin to, in shard order (OS indexes). Empty means "first usable CPUs".
    pub cpus: Vec<usize>,
    /// Agent counts of the `memory` suite.
    pub agents: Vec<u64>,
    /// The `remote` suite's server and connections.
    pub remote: Option<remote::RemoteOptions>,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self {
            shards: 2,
            seconds: 2.0,
            rate_msgs_per_s: None,
            payload_bytes: 32,
            cpus: Vec::new(),
            agents: vec![10_000, 100_000],
            remote: None,
        }
    }
}

/// The CPUs a suite pins its threads to, in order: `opts.cpus`, or else the calling
/// thread's affinity mask (read before any benchmark thread pins itself:
/// `core_affinity::get_core_ids` reports the caller's mask), at most `count` of them. May
/// return fewer than `count`; each suite decides what that means for it.
pub fn pick_cpus(opts: &SuiteOptions, count: usize) -> Vec<usize> {
    let cpus: Vec<usize> = if opts.cpus.is_empty() {
        let ids = core_affinity::get_core_ids().unwrap_or_default();
        ids.into_iter().map(|id| id.id).collect()
    } else {
        opts.cpus.clone()
    };
    cpus.into_iter().take(count).collect()
}
