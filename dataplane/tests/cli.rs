//! The `dataplane` binary as an operator uses it: help, configuration, errors, topology
//! preview, a real node stopped by SIGTERM, and a short bench.
//!
//! Tests that pin threads to cores (a node, a bench) take turns through
//! [`ONE_NODE_AT_A_TIME`]; the others only parse and print, and run in parallel.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dataplane_control::{Config, EMBEDDED_DEFAULT_YAML};

/// How long a node may take to print "node ready".
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Processes that pin threads to the same cores would share them and crawl: one at a time.
static ONE_NODE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_NODE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn dataplane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the dataplane binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file in the temp directory with `text`, named after the test and this process.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("dataplane-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("temp dir is writable");
    path
}

#[test]
fn help_documents_the_run_options() {
    for args in [&["--help"][..], &["run", "--help"]] {
        let output = dataplane(args);
        assert!(output.status.success(), "{args:?}");
        let help = stdout(&output);
        for option in [
            "--shards",
            "--config",
            "--idle",
            "--cpuset",
            "--ring-capacity-frames",
        ] {
            assert!(help.contains(option), "{args:?} lacks {option}:\n{help}");
        }
        assert!(help.contains("default: busy-poll"), "{help}");
    }
}

#[test]
fn every_command_has_help_with_defaults() {
    for args in [
        &["config", "show", "--help"][..],
        &["config", "default", "--help"],
        &["topology", "--help"],
        &["bench", "--help"],
    ] {
        let output = dataplane(args);
        assert!(output.status.success(), "{args:?}");
        assert!(stdout(&output).contains("Usage: dataplane"), "{args:?}");
    }
    let bench = stdout(&dataplane(&["bench", "--help"]));
    for default in ["[default: 2]", "[default: 32]", "[default: 1]"] {
        assert!(
            bench.contains(default),
            "bench --help lacks {default}:\n{bench}"
        );
    }
}

#[test]
fn version_prints_the_package_version() {
    let output = dataplane(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        format!("dataplane {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_show_prints_yaml_that_reads_back() {
    let output = dataplane(&["config", "show", "--shards", "2", "--idle", "park"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let yaml = stdout(&output);
    let config = Config::from_yaml_str(&yaml, "config show").expect("valid YAML config");
    assert_eq!(config.node.shards.to_string(), "2");
    assert_eq!(config.node.idle.to_string(), "park");
}

#[test]
fn config_show_reads_the_file_then_the_flags() {
    let path = temp_file("show.yaml", "shard:\n  ring_capacity_frames: 4096\n");
    let path = path.to_str().expect("UTF-8 temp path");
    let output = dataplane(&[
        "config",
        "show",
        "--config",
        path,
        "--ring-batch-frames",
        "8",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let config = Config::from_yaml_str(&stdout(&output), "config show").expect("valid YAML");
    assert_eq!(config.shard.ring_capacity_frames.get(), 4096);
    assert_eq!(config.shard.ring_batch_frames.get(), 8);
}

#[test]
fn config_default_prints_the_embedded_file() {
    let output = dataplane(&["config", "default"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), EMBEDDED_DEFAULT_YAML);
}

#[test]
fn a_bad_config_file_is_refused_with_the_field() {
    let cases = [
        (
            "bad-value.yaml",
            "shard:\n  ring_capacity_frames: 1000\n",
            "shard.ring_capacity_frames = 1000",
        ),
        (
            "bad-key.yaml",
            "shard:\n  ring_capacity: 4\n",
            "unknown field `ring_capacity`",
        ),
    ];
    for (name, text, expected) in cases {
        let path = temp_file(name, text);
        let path = path.to_str().expect("UTF-8 temp path");
        for args in [
            &["config", "show", "--config", path][..],
            &["run", "--config", path],
        ] {
            let output = dataplane(args);
            assert!(!output.status.success(), "{args:?}");
            let message = stderr(&output);
            assert!(message.contains(expected), "{args:?}: {message}");
            assert!(message.contains(path), "the file is named: {message}");
            assert!(stdout(&output).is_empty(), "nothing on stdout");
        }
    }
}

#[test]
fn too_many_shards_names_the_count_and_the_usable_cores() {
    let output = dataplane(&["--shards", "99"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("99 shards requested"), "{message}");
    assert!(message.contains("usable physical cores"), "{message}");
    let cores = message
        .split("only ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse::<usize>().ok());
    assert!(cores.is_some_and(|cores| cores < 99), "{message}");
}

#[test]
fn topology_previews_a_synthetic_machine() {
    let output = dataplane(&[
        "topology",
        "--synthetic",
        "pack:2 numa:2 core:8 pu:2",
        "--shards",
        "4",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("NUMA nodes: 4"), "{text}");
    let rows: Vec<Vec<usize>> = text
        .lines()
        .skip_while(|line| !line.starts_with("shard → cpu"))
        .skip(1)
        .map(|line| {
            line.split('→')
                .map(|field| field.trim().parse().expect("a number"))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    let mut numa_nodes: Vec<usize> = rows.iter().map(|row| row[3]).collect();
    numa_nodes.sort_unstable();
    assert_eq!(numa_nodes, [0, 1, 2, 3], "one shard per NUMA node:\n{text}");
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    let _turn = turn();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        // Port 0: the admin endpoint takes any free port, so the test never collides
        // with a node already on the default 127.0.0.1:9090.
        .args([
            "run",
            "--shards",
            "2",
            "--idle",
            "park",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dataplane binary starts");
    let lines = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(lines).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + READY_TIMEOUT;
    while !seen
        .iter()
        .any(|line: &String| line.starts_with("node ready"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("child output");
                panic!("no \"node ready\" in {seen:?}; stderr: {}", stderr(&output));
            }
        }
    }
    assert!(
        seen[0].starts_with("shard → cpu"),
        "placement first: {seen:?}"
    );
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + STOP_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node did not stop within {STOP_TIMEOUT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().expect("reader thread");
    seen.extend(receiver.try_iter());
    assert!(status.success(), "exit status {status}; stdout: {seen:?}");
    assert!(
        seen.iter().any(|line| line.contains("backpressure")),
        "per-shard stats printed: {seen:?}"
    );
}

#[test]
fn bench_hardware_prints_one_json_line_per_run() {
    let _turn = turn();
    let output = dataplane(&[
        "bench",
        "hardware",
        "--seconds",
        "0.2",
        "--runs",
        "2",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("every stdout line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in lines {
        assert_eq!(line["system"], "hardware");
        assert!(line["messages"]
            .as_u64()
            .is_some_and(|messages| messages > 0));
    }
}

/// The order-book suite runs to completion: its order flow must not fill the agent's
/// memory limit (it did once, on runs longer than about 5 M orders).
#[test]
fn bench_orderbook_completes() {
    let _turn = turn();
    let output = dataplane(&[
        "bench",
        "orderbook",
        "--seconds",
        "0.3",
        "--runs",
        "1",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.lines().any(|line| line.contains("\"orderbook\"")),
        "{text}"
    );
}
