//! Results, their JSON line and the comparison table.
//!
//! Every system (`dataplane`, `tokio-mpsc`, `hardware`) reports one [`BenchResult`] per
//! run. The pieces here are shared so that all systems measure and print the same way:
//!
//! - [`Recorder`] records nanosecond samples into an hdrhistogram (3 significant digits,
//!   1 ns ..= 60 s, out-of-range values saturate instead of panicking).
//! - [`OpenLoopSchedule`] gives the *intended* send time of request `i` at a fixed rate.
//!   Latency in fixed-rate mode is measured from that intended time, never from the moment
//!   the sender actually got to send: if the sender or the system stalls for 5 ms, every
//!   request that was due during the stall reports the delay it suffered (no coordinated
//!   omission).
//! - [`median_of`] folds several runs of one system into the median per metric.
//! - [`format_table`] / [`print_table`] print the human table with ratios.
//!
//! ```
//! use dataplane::bench::report::{BenchResult, Recorder};
//!
//! let mut recorder = Recorder::new();
//! for sample_ns in [150, 160, 170, 900] {
//!     recorder.record_ns(sample_ns);
//! }
//! let result = BenchResult {
//!     suite: "cross-shard".into(),
//!     system: "dataplane".into(),
//!     shards: 2,
//!     messages: 10,
//!     seconds: 1.0,
//!     throughput_msgs_per_s: 10.0,
//!     latency_ns: recorder.latency_ns(),
//! };
//! assert!(result.to_json_line().starts_with(r#"{"suite":"cross-shard","system":"dataplane""#));
//! ```

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Smallest value the recorder's histogram tells apart, in nanoseconds.
pub const RECORDER_LOWEST_NS: u64 = 1;
/// Largest value the recorder's histogram holds, in nanoseconds (60 s); larger samples
/// saturate to it.
pub const RECORDER_HIGHEST_NS: u64 = 60_000_000_000;
/// Significant decimal digits the recorder keeps (0.1 % resolution).
pub const RECORDER_SIGNIFICANT_DIGITS: u8 = 3;

/// The system every ratio in the table is computed for.
pub const SYSTEM_DATAPLANE: &str = "dataplane";
/// The peer baseline: tokio multi-thread runtime, one tokio mpsc channel per agent.
pub const SYSTEM_TOKIO_MPSC: &str = "tokio-mpsc";
/// The raw cache-line ping-pong: the machine's own limit.
pub const SYSTEM_HARDWARE: &str = "hardware";

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

impl LatencyNs {
    /// Reads the percentiles out of a histogram of nanosecond samples.
    ///
    /// Values are hdrhistogram's "highest equivalent value" of each bucket, so they are at
    /// most 0.1 % above the true sample with 3 significant digits. An empty histogram gives
    /// all zeros.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
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

impl BenchResult {
    /// The result as one JSON line (no trailing newline), fields in this order:
    ///
    /// `{"suite":..,"system":..,"shards":..,"messages":..,"seconds":..,
    /// "throughput_msgs_per_s":..,"latency_ns":{"p50":..,"p90":..,"p99":..,"p999":..,"max":..}}`
    ///
    /// The order is the declaration order of the fields; new fields go after `latency_ns`.
    /// A non-finite float (a run that moved nothing) is written as `null`.
    pub fn to_json_line(&self) -> String {
        // Invariant: the struct holds only strings, integers and floats, which serde_json
        // serializes without error (non-finite floats become `null`).
        serde_json::to_string(self).expect("BenchResult serializes to JSON")
    }

    /// A result whose throughput is `messages / seconds` (0 when no time passed, so a
    /// run that moved nothing never reports infinity).
    pub fn new(
        suite: &str,
        system: &str,
        shards: usize,
        messages: u64,
        seconds: f64,
        latency_ns: LatencyNs,
    ) -> Self {
        let throughput_msgs_per_s = if seconds > 0.0 {
            messages as f64 / seconds
        } else {
            0.0
        };
        Self {
            suite: suite.to_owned(),
            system: system.to_owned(),
            shards,
            messages,
            seconds,
            throughput_msgs_per_s,
            latency_ns,
        }
    }

    /// One-way latency median in nanoseconds: half the round-trip median.
    pub fn one_way_p50_ns(&self) -> f64 {
        self.latency_ns.p50 as f64 / 2.0
    }
}

/// Records nanosecond samples into a histogram with the project's fixed bounds.
///
/// Samples below 1 ns are recorded as they are (hdrhistogram keeps them in the lowest
/// bucket); samples above 60 s saturate to 60 s instead of panicking or failing.
#[derive(Debug, Clone)]
pub struct Recorder {
    histogram: Histogram<u64>,
}

impl Recorder {
    /// An empty recorder (1 ns ..= 60 s, 3 significant digits; about 190 KiB).
    pub fn new() -> Self {
        // Invariant: the bounds are constants that satisfy hdrhistogram's rules
        // (low >= 1, high >= 2 * low, sigfig <= 5), so creation cannot fail.
        let histogram = Histogram::new_with_bounds(
            RECORDER_LOWEST_NS,
            RECORDER_HIGHEST_NS,
            RECORDER_SIGNIFICANT_DIGITS,
        )
        .expect("constant histogram bounds are valid");
        Self { histogram }
    }

    /// Records one sample in nanoseconds, saturating at 60 s.
    #[inline]
    pub fn record_ns(&mut self, sample_ns: u64) {
        self.histogram.saturating_record(sample_ns);
    }

    /// Records one duration, saturating at 60 s.
    #[inline]
    pub fn record_duration(&mut self, sample: Duration) {
        self.record_ns(u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records the time from `since` to `now`, or 0 when `now` is earlier.
    #[inline]
    pub fn record_between(&mut self, since: Instant, now: Instant) {
        self.record_duration(now.saturating_duration_since(since));
    }

    /// Adds every sample of `other` (same bounds, so this cannot fail).
    pub fn merge(&mut self, other: &Recorder) {
        // Invariant: both histograms have the same fixed bounds and saturate on record, so
        // no value of `other` is out of range for `self`.
        self.histogram
            .add(&other.histogram)
            .expect("recorders share bounds");
    }

    /// Samples recorded so far.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The percentiles of the samples so far.
    pub fn latency_ns(&self) -> LatencyNs {
        LatencyNs::from_histogram(&self.histogram)
    }

    /// The underlying histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// The intended send times of a fixed-rate (open-loop) sender.
///
/// Request `index` is due at `start + index / rate`. The sender waits until a request is
/// due (spinning or yielding: OS and async timers are far too coarse at these rates), sends
/// it carrying its intended send time, and never skips a request: if it falls behind, it
/// sends the overdue requests back to back. The receiving side records
/// `arrival - intended_send_time`, so every request delayed by a stall reports that delay.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoopSchedule {
    start: Instant,
    interval_ns: f64,
}

impl OpenLoopSchedule {
    /// A schedule of `rate_msgs_per_s` requests per second starting at `start`.
    /// A rate of 0 is treated as 1 per second.
    pub fn new(start: Instant, rate_msgs_per_s: u64) -> Self {
        Self {
            start,
            interval_ns: 1e9 / rate_msgs_per_s.max(1) as f64,
        }
    }

    /// When the schedule started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds from the start at which request `index` is due.
    pub fn due_offset_ns(&self, index: u64) -> u64 {
        (index as f64 * self.interval_ns) as u64
    }

    /// The instant at which request `index` is due.
    pub fn due(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos(self.due_offset_ns(index))
    }

    /// Turns an offset carried in a message back into the intended send instant.
    pub fn instant_from_offset_ns(&self, offset_ns: u64) -> Instant {
        self.start + Duration::from_nanos(offset_ns)
    }
}

/// The median of several runs of one system, per metric.
///
/// Each metric (messages, seconds, throughput and each latency percentile) is the median of
/// that metric across runs, independently, so the result need not equal any one run. With
/// an even number of runs the two middle values are averaged. `suite`, `system` and `shards`
/// come from the first run.
///
/// # Panics
///
/// If `results` is empty: there is no median of nothing, and callers always have a run.
pub fn median_of(results: &[BenchResult]) -> BenchResult {
    assert!(!results.is_empty(), "median_of needs at least one run");
    let first = &results[0];
    let median_u64 = |metric: fn(&BenchResult) -> u64| -> u64 {
        let mut values: Vec<u64> = results.iter().map(metric).collect();
        values.sort_unstable();
        let middle = values.len() / 2;
        if values.len() % 2 == 1 {
            values[middle]
        } else {
            // Average of the two middle values, rounded down, without overflow.
            values[middle - 1].midpoint(values[middle])
        }
    };
    let median_f64 = |metric: fn(&BenchResult) -> f64| -> f64 {
        let mut values: Vec<f64> = results.iter().map(metric).collect();
        values.sort_unstable_by(f64::total_cmp);
        let middle = values.len() / 2;
        if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        }
    };
    BenchResult {
        suite: first.suite.clone(),
        system: first.system.clone(),
        shards: first.shards,
        messages: median_u64(|r| r.messages),
        seconds: median_f64(|r| r.seconds),
        throughput_msgs_per_s: median_f64(|r| r.throughput_msgs_per_s),
        latency_ns: LatencyNs {
            p50: median_u64(|r| r.latency_ns.p50),
            p90: median_u64(|r| r.latency_ns.p90),
            p99: median_u64(|r| r.latency_ns.p99),
            p999: median_u64(|r| r.latency_ns.p999),
            max: median_u64(|r| r.latency_ns.max),
        },
    }
}

/// Prints [`format_table`] to stdout.
pub fn print_table(results: &[BenchResult], baseline_system: &str) {
    print!("{}", format_table(results, baseline_system));
}

/// The human table: one row per result, then one ratio line per other system.
///
/// Columns: system, shards, throughput (M msg/s), round-trip p50/p90/p99/p99.9/max in µs,
/// and one-way p50 (= round-trip p50 / 2) in ns. Below the rows, for every system other
/// than `baseline_system` (normally `"dataplane"`):
/// `dataplane is 7.3x tokio-mpsc throughput, p99 0.12x` (above 1 is better for throughput,
/// below 1 is better for latency). When a `hardware` row is present:
/// `dataplane one-way p50 / (hardware RTT p50 / 2) = 1.8x` (1.0 would be the machine's own
/// limit). The hardware row's throughput is its one-way bounce rate.
pub fn format_table(results: &[BenchResult], baseline_system: &str) -> String {
    let mut out = String::new();
    let suite = results.first().map_or("", |r| r.suite.as_str());
    // Writing into a String cannot fail; the results of `writeln!` are ignored on purpose.
    // `interrupt` times how far past its limit a loop is stopped: no round trip, and no
    // ratio between its rows (a loop alone, a loop inside a batch).
    let overshoot = suite == "interrupt";
    let _ = if overshoot {
        writeln!(out, "suite: {suite} (latency = time past the limit)")
    } else {
        writeln!(
            out,
            "suite: {suite} (latency = round trip; one-way = p50 / 2)"
        )
    };
    let _ = writeln!(
        out,
        "{:<23} {:>6} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>13}",
        "system",
        "shards",
        "M msg/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "one-way p50 ns"
    );
    for result in results {
        let latency = &result.latency_ns;
        let _ = writeln!(
            out,
            "{:<23} {:>6} {:>12.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.1} {:>13.0}",
            result.system,
            result.shards,
            result.throughput_msgs_per_s / 1e6,
            latency.p50 as f64 / 1e3,
            latency.p90 as f64 / 1e3,
            latency.p99 as f64 / 1e3,
            latency.p999 as f64 / 1e3,
            latency.max as f64 / 1e3,
            result.one_way_p50_ns(),
        );
    }
    if overshoot {
        return out;
    }
    let Some(baseline) = results.iter().find(|r| r.system == baseline_system) else {
        let _ = writeln!(out, "(no {baseline_system} row: no ratios)");
        return out;
    };
    for other in results
        .iter()
        .filter(|r| r.system != baseline_system && r.system != SYSTEM_HARDWARE)
    {
        let _ = writeln!(
            out,
            "{} is {}x {} throughput, p50 {}x, p99 {}x",
            baseline.system,
            format_ratio(baseline.throughput_msgs_per_s, other.throughput_msgs_per_s),
            other.system,
            format_ratio(baseline.latency_ns.p50 as f64, other.latency_ns.p50 as f64),
            format_ratio(baseline.latency_ns.p99 as f64, other.latency_ns.p99 as f64),
        );
    }
    if let Some(hardware) = results.iter().find(|r| r.system == SYSTEM_HARDWARE) {
        let _ = writeln!(
            out,
            "{} one-way p50 / (hardware RTT p50 / 2) = {}x (1.0 = the machine's limit)",
            baseline.system,
            format_ratio(baseline.one_way_p50_ns(), hardware.one_way_p50_ns()),
        );
    }
    out
}

/// `numerator / denominator` with two decimals, or `n/a` when the denominator is not
/// positive (a system that failed or moved nothing).
pub fn format_ratio(numerator: f64, denominator: f64) -> String {
    if denominator > 0.0 && numerator.is_finite() && denominator.is_finite() {
        format!("{:.2}", numerator / denominator)
    } else {
        "n/a".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(system: &str, throughput: f64, p50: u64, p99: u64) -> BenchResult {
        BenchResult {
            suite: "cross-shard".into(),
            system: system.into(),
            shards: 2,
            messages: 1000,
            seconds: 1.0,
            throughput_msgs_per_s: throughput,
            latency_ns: LatencyNs {
                p50,
                p90: p50.saturating_add(1),
                p99,
                p999: p99.saturating_add(1),
                max: p99.saturating_mul(10),
            },
        }
    }

    #[test]
    fn latency_from_histogram_reads_percentiles() {
        let mut recorder = Recorder::new();
        for sample_ns in 1..=1000 {
            recorder.record_ns(sample_ns);
        }
        let latency = LatencyNs::from_histogram(recorder.histogram());
        assert_eq!(latency.p50, 500);
        assert_eq!(latency.p90, 900);
        assert_eq!(latency.p99, 990);
        assert_eq!(latency.p999, 999);
        assert_eq!(latency.max, 1000);
    }

    #[test]
    fn latency_from_empty_histogram_is_zero() {
        assert_eq!(Recorder::new().latency_ns(), LatencyNs::default());
    }

    #[test]
    fn recorder_saturates_instead_of_panicking() {
        let mut recorder = Recorder::new();
        recorder.record_ns(u64::MAX);
        recorder.record_duration(Duration::from_secs(3600));
        recorder.record_ns(0);
        assert_eq!(recorder.len(), 3);
        let max = recorder.latency_ns().max;
        // Within hdrhistogram's 0.1 % bucket of 60 s.
        assert!(
            (RECORDER_HIGHEST_NS..=RECORDER_HIGHEST_NS + RECORDER_HIGHEST_NS / 500).contains(&max)
        );
    }

    #[test]
    fn recorder_merge_adds_samples() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.record_ns(100);
        b.record_ns(300);
        a.merge(&b);
        assert_eq!(a.len(), 2);
        assert_eq!(a.latency_ns().max, 300);
    }

    #[test]
    fn json_line_has_exact_format_and_order() {
        let line = result("dataplane", 2.5e6, 150, 400).to_json_line();
        assert_eq!(
            line,
            r#"{"suite":"cross-shard","system":"dataplane","shards":2,"messages":1000,"seconds":1.0,"throughput_msgs_per_s":2500000.0,"latency_ns":{"p50":150,"p90":151,"p99":400,"p999":401,"max":4000}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed["latency_ns"]["p99"], 400);
        let keys = [
            "\"suite\"",
            "\"system\"",
            "\"shards\"",
            "\"messages\"",
            "\"seconds\"",
            "\"throughput_msgs_per_s\"",
            "\"latency_ns\"",
            "\"p50\"",
            "\"p90\"",
            "\"p99\"",
            "\"p999\"",
            "\"max\"",
        ];
        let positions: Vec<usize> = keys
            .iter()
            .map(|key| line.find(key).expect("key present"))
            .collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "key order: {positions:?}"
        );
        let round_trip: BenchResult = serde_json::from_str(&line).expect("parses back");
        assert_eq!(round_trip, result("dataplane", 2.5e6, 150, 400));
    }

    #[test]
    fn median_is_per_metric() {
        let runs = [
            result("dataplane", 3.0, 300, 900),
            result("dataplane", 1.0, 100, 700),
            result("dataplane", 2.0, 500, 800),
        ];
        let median = median_of(&runs);
        assert_eq!(median.throughput_msgs_per_s, 2.0);
        assert_eq!(median.latency_ns.p50, 300);
        assert_eq!(median.latency_ns.p99, 800);
        assert_eq!(median.latency_ns.max, 8000);
        assert_eq!(median.system, "dataplane");
    }

    #[test]
    fn median_of_even_count_averages_middle() {
        let runs = [result("x", 1.0, 100, 10), result("x", 3.0, 201, 20)];
        let median = median_of(&runs);
        assert_eq!(median.throughput_msgs_per_s, 2.0);
        assert_eq!(median.latency_ns.p50, 150);
        assert_eq!(
            median_of(&[result("x", 1.0, u64::MAX, 1), result("x", 1.0, u64::MAX, 1)])
                .latency_ns
                .p50,
            u64::MAX
        );
    }

    #[test]
    fn table_has_ratios_and_hardware_line() {
        let results = [
            result(SYSTEM_HARDWARE, 8e6, 200, 300),
            result(SYSTEM_DATAPLANE, 20e6, 400, 1000),
            result(SYSTEM_TOKIO_MPSC, 2e6, 4000, 20000),
        ];
        let table = format_table(&results, SYSTEM_DATAPLANE);
        assert!(
            table.contains("dataplane is 10.00x tokio-mpsc throughput, p50 0.10x, p99 0.05x"),
            "{table}"
        );
        assert!(
            table.contains("dataplane one-way p50 / (hardware RTT p50 / 2) = 2.00x"),
            "{table}"
        );
    }

    #[test]
    fn open_loop_schedule_spaces_requests() {
        let start = Instant::now();
        let schedule = OpenLoopSchedule::new(start, 1_000_000);
        assert_eq!(schedule.due_offset_ns(0), 0);
        assert_eq!(schedule.due_offset_ns(3), 3_000);
        assert_eq!(schedule.due(2), start + Duration::from_nanos(2_000));
    }
}
