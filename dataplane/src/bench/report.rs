//! Results, their JSON line and the comparison table.

/// Latency percentiles in nanoseconds (round trips; see the module docs of `bench`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyNs {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

/// One system's result for one suite: one JSON line with `--json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BenchResult {
    /// `local`, `cross-shard`, `hardware`, ...
    pub suite: String,
    /// `dataplane`, `tokio-mpsc` or `hardware`.
    pub system: String,
    /// Shards (threads/cores) used.
    pub shards: usize,
    /// Messages moved by the throughput workload.
    pub messages: u64,
    /// Seconds the throughput workload took.
    pub seconds: f64,
    /// Throughput of the flood workload.
    pub throughput_msgs_per_s: f64,
    /// Round-trip latency of the ping-pong (or fixed-rate) workload.
    pub latency_ns: LatencyNs,
}
