//! Smoke test: the tokio baseline and the hardware suite run briefly and report well-formed
//! results. No timing assertions: this machine is shared and noisy.

use dataplane::bench::{hardware, BenchResult, Suite, SuiteOptions};
use dataplane_benches::tokio_mpsc;

fn assert_well_formed(result: &BenchResult, system: &str) {
    assert_eq!(result.system, system);
    assert!(result.messages > 0, "{result:?}");
    assert!(result.seconds > 0.0, "{result:?}");
    assert!(result.throughput_msgs_per_s > 0.0, "{result:?}");
    let latency = result.latency_ns;
    assert!(latency.p50 > 0, "{result:?}");
    assert!(
        latency.p50 <= latency.p90 && latency.p90 <= latency.p99,
        "{result:?}"
    );
    assert!(
        latency.p99 <= latency.p999 && latency.p999 <= latency.max,
        "{result:?}"
    );
    let line = result.to_json_line();
    let value: serde_json::Value = serde_json::from_str(&line).expect("the JSON line parses");
    for key in [
        "suite",
        "system",
        "shards",
        "messages",
        "seconds",
        "throughput_msgs_per_s",
        "latency_ns",
    ] {
        assert!(value.get(key).is_some(), "{key} missing in {line}");
    }
    let parsed: BenchResult = serde_json::from_str(&line).expect("the JSON line parses back");
    // serde_json's default float parser may be one ULP off, so floats compare with a margin.
    assert_eq!(parsed.latency_ns, result.latency_ns);
    assert_eq!(parsed.messages, result.messages);
    let close = |a: f64, b: f64| (a - b).abs() <= b.abs() * 1e-12;
    assert!(close(parsed.seconds, result.seconds), "{line}");
    assert!(
        close(parsed.throughput_msgs_per_s, result.throughput_msgs_per_s),
        "{line}"
    );
}

/// One test, so that the spinning hardware threads and the tokio workers do not compete
/// for the same two cores at once.
#[test]
fn tokio_baseline_and_hardware_report_positive_numbers() {
    let opts = SuiteOptions {
        seconds: 0.2,
        ..SuiteOptions::default()
    };
    let hardware = hardware::run(&opts);
    assert_well_formed(&hardware, "hardware");
    assert_eq!(hardware.suite, "hardware");

    for (suite, shards) in [(Suite::Local, 1), (Suite::CrossShard, 2)] {
        let result = tokio_mpsc::run(suite, &opts).expect("the tokio baseline runs");
        assert_well_formed(&result, "tokio-mpsc");
        assert_eq!(result.suite, suite.name());
        assert_eq!(result.shards, shards);
    }
}
