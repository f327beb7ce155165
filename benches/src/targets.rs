//! The targets the `compare` table is checked against, each a named constant.
//!
//! All checks read the *medians* across runs (see `dataplane::bench::report::median_of`):
//! - `cross-shard`: dataplane throughput ≥ 5× tokio-mpsc; dataplane p99 ≤ tokio-mpsc p99 / 5;
//!   dataplane one-way p50 ≤ 3 × (hardware round-trip p50 / 2).
//! - `local`: dataplane same-shard ping-pong round-trip p50 ≤ 1 µs; dataplane same-shard
//!   one-way throughput ≥ 10 M msg/s on one shard.

use std::fmt;

use dataplane::bench::report::{SYSTEM_DATAPLANE, SYSTEM_HARDWARE, SYSTEM_TOKIO_MPSC};
use dataplane::bench::{BenchResult, Suite};

/// Cross-shard: dataplane throughput divided by tokio-mpsc throughput, at least.
pub const CROSS_SHARD_THROUGHPUT_RATIO_MIN: f64 = 5.0;
/// Cross-shard: tokio-mpsc p99 divided by dataplane p99, at least.
pub const CROSS_SHARD_P99_RATIO_MIN: f64 = 5.0;
/// Cross-shard: dataplane one-way p50 divided by half the hardware round-trip p50, at most.
pub const CROSS_SHARD_ONE_WAY_VS_HARDWARE_MAX: f64 = 3.0;
/// Local: dataplane same-shard ping-pong round-trip p50, at most, in nanoseconds.
pub const LOCAL_ROUND_TRIP_P50_NS_MAX: u64 = 1_000;
/// Local: dataplane same-shard one-way throughput, at least, in messages per second.
pub const LOCAL_THROUGHPUT_MSGS_PER_S_MIN: f64 = 10e6;

/// The outcome of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target is met.
    Pass,
    /// The target is missed.
    Fail,
    /// A row the target needs is missing (its system failed or was not run).
    Missing,
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Missing => "MISSING",
        })
    }
}

/// One checked target: `PASS dataplane/tokio-mpsc throughput >= 5x: 7.30x`.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    /// Met, missed or not checkable.
    pub verdict: Verdict,
    /// What the target says.
    pub target: String,
    /// The measured value, or what was missing.
    pub measured: String,
}

impl fmt::Display for TargetCheck {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {}: {}",
            self.verdict, self.target, self.measured
        )
    }
}

/// Checks the targets of `suite` against the median row of each system.
/// The `hardware` suite has no targets.
pub fn check_targets(suite: Suite, medians: &[BenchResult]) -> Vec<TargetCheck> {
    let row = |system: &str| medians.iter().find(|r| r.system == system);
    let dataplane = row(SYSTEM_DATAPLANE);
    match suite {
        Suite::CrossShard => {
            let tokio = row(SYSTEM_TOKIO_MPSC);
            let hardware = row(SYSTEM_HARDWARE);
            vec![
                at_least(
                    format!("dataplane/tokio-mpsc throughput >= {CROSS_SHARD_THROUGHPUT_RATIO_MIN}x"),
                    dataplane.zip(tokio).map(|(d, t)| ratio(d.throughput_msgs_per_s, t.throughput_msgs_per_s)),
                    CROSS_SHARD_THROUGHPUT_RATIO_MIN,
                    "x",
                ),
                at_least(
                    format!("tokio-mpsc p99 / dataplane p99 >= {CROSS_SHARD_P99_RATIO_MIN}x"),
                    dataplane.zip(tokio).map(|(d, t)| ratio(t.latency_ns.p99 as f64, d.latency_ns.p99 as f64)),
                    CROSS_SHARD_P99_RATIO_MIN,
                    "x",
                ),
                at_most(
                    format!(
                        "dataplane one-way p50 / (hardware RTT p50 / 2) <= {CROSS_SHARD_ONE_WAY_VS_HARDWARE_MAX}x"
                    ),
                    dataplane.zip(hardware).map(|(d, h)| ratio(d.one_way_p50_ns(), h.one_way_p50_ns())),
                    CROSS_SHARD_ONE_WAY_VS_HARDWARE_MAX,
                    "x",
                ),
            ]
        }
        Suite::Local => vec![
            at_most(
                format!("dataplane same-shard ping-pong p50 <= {LOCAL_ROUND_TRIP_P50_NS_MAX} ns"),
                dataplane.map(|d| d.latency_ns.p50 as f64),
                LOCAL_ROUND_TRIP_P50_NS_MAX as f64,
                " ns",
            ),
            at_least(
                format!(
                    "dataplane same-shard one-way >= {} M msg/s",
                    LOCAL_THROUGHPUT_MSGS_PER_S_MIN / 1e6
                ),
                dataplane.map(|d| d.throughput_msgs_per_s / 1e6),
                LOCAL_THROUGHPUT_MSGS_PER_S_MIN / 1e6,
                " M msg/s",
            ),
        ],
        Suite::Remote => {
            let quinn = row("quinn");
            vec![
                at_most(
                    "dataplane QUIC round trip p50 <= 40 us".to_owned(),
                    dataplane.map(|d| d.latency_ns.p50 as f64 / 1e3),
                    40.0,
                    " us",
                ),
                at_most(
                    "dataplane QUIC round trip p99 <= 200 us".to_owned(),
                    dataplane.map(|d| d.latency_ns.p99 as f64 / 1e3),
                    200.0,
                    " us",
                ),
                at_least(
                    "dataplane QUIC throughput >= 1 M msg/s".to_owned(),
                    dataplane.map(|d| d.throughput_msgs_per_s / 1e6),
                    1.0,
                    " M msg/s",
                ),
                at_least(
                    "dataplane/quinn throughput >= 2x".to_owned(),
                    dataplane
                        .zip(quinn)
                        .map(|(d, q)| ratio(d.throughput_msgs_per_s, q.throughput_msgs_per_s)),
                    2.0,
                    "x",
                ),
                at_most(
                    "dataplane p99 / quinn p99 <= 0.5x (same offered load)".to_owned(),
                    dataplane
                        .zip(quinn)
                        .map(|(d, q)| ratio(d.latency_ns.p99 as f64, q.latency_ns.p99 as f64)),
                    0.5,
                    "x",
                ),
            ]
        }
        // hardware and idle have no targets here; the WASM suites are checked by `dataplane
        // bench` alone (they have no peer baseline in this crate).
        _ => Vec::new(),
    }
}

/// `numerator / denominator`, infinite when the denominator is not positive.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::INFINITY
    }
}

fn at_least(target: String, measured: Option<f64>, minimum: f64, unit: &str) -> TargetCheck {
    check(target, measured, unit, |value| value >= minimum)
}

fn at_most(target: String, measured: Option<f64>, maximum: f64, unit: &str) -> TargetCheck {
    check(target, measured, unit, |value| value <= maximum)
}

fn check(
    target: String,
    measured: Option<f64>,
    unit: &str,
    met: impl Fn(f64) -> bool,
) -> TargetCheck {
    match measured {
        None => TargetCheck {
            verdict: Verdict::Missing,
            target,
            measured: "a row is missing".into(),
        },
        Some(value) => TargetCheck {
            verdict: if met(value) {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            target,
            measured: format!("{value:.2}{unit}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use dataplane::bench::LatencyNs;

    use super::*;

    fn row(system: &str, throughput: f64, p50: u64, p99: u64) -> BenchResult {
        BenchResult {
            suite: "cross-shard".into(),
            system: system.into(),
            shards: 2,
            messages: 1,
            seconds: 1.0,
            throughput_msgs_per_s: throughput,
            latency_ns: LatencyNs {
                p50,
                p90: p50,
                p99,
                p999: p99,
                max: p99,
            },
        }
    }

    #[test]
    fn cross_shard_targets() {
        let medians = [
            row(SYSTEM_HARDWARE, 8e6, 200, 300),
            row(SYSTEM_DATAPLANE, 20e6, 500, 1_000),
            row(SYSTEM_TOKIO_MPSC, 2e6, 5_000, 4_000),
        ];
        let verdicts: Vec<Verdict> = check_targets(Suite::CrossShard, &medians)
            .iter()
            .map(|check| check.verdict)
            .collect();
        assert_eq!(verdicts, [Verdict::Pass, Verdict::Fail, Verdict::Pass]);
    }

    #[test]
    fn missing_rows_are_reported() {
        let checks = check_targets(Suite::Local, &[row(SYSTEM_TOKIO_MPSC, 1.0, 1, 1)]);
        assert!(checks.iter().all(|check| check.verdict == Verdict::Missing));
        assert!(checks[0]
            .to_string()
            .starts_with("MISSING dataplane same-shard ping-pong p50"));
    }
}
