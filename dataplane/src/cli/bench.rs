//! `dataplane bench SUITE`: runs a suite `--runs` times and reports every run.
//!
//! Every message suite (not `hardware`, not `idle`) first runs the `hardware` suite once (the raw cache-line
//! ping-pong between the two shard cores) and reports it as a row of its own, relabelled with
//! the suite's name, so each report says how far the dataplane is from the machine's limit.
//!
//! Output: with `--json`, standard output holds only JSON lines: the hardware row first, then
//! one line per run as it ends. Without it, a table per run set (and the medians when
//! `--runs` is above 1). `idle` reports the CPU and memory of a parked node instead, one
//! line (or JSON line) per run. A failed run is reported on standard error, the other runs still
//! go on, and the exit code is then non-zero.

use std::num::NonZeroUsize;

use anyhow::bail;
use dataplane_control::CpuList;

use crate::bench::report::{format_table, median_of, SYSTEM_DATAPLANE};
use crate::bench::{hardware, native, BenchResult, Suite, SuiteOptions};

/// `dataplane bench SUITE [options]`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Suite to run.
    #[arg(value_enum)]
    pub suite: Suite,
    /// Shards (cores) for the dataplane workloads [default: 1 for local, 2 otherwise]
    #[arg(long, value_name = "N")]
    pub shards: Option<NonZeroUsize>,
    /// Wall-clock seconds per workload and run (ping-pong and flood each get this much)
    #[arg(long, value_name = "S", default_value_t = 2.0, value_parser = positive_seconds)]
    pub seconds: f64,
    /// Open-loop request rate of the latency workload, messages per second
    /// [default: none, closed-loop ping-pong]
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Payload bytes per message
    #[arg(long, value_name = "B", default_value_t = 32)]
    pub payload_bytes: usize,
    /// Times to run the suite; every run is reported, and the medians when more than one
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::MIN)]
    pub runs: NonZeroUsize,
    /// Print JSON lines on standard output (one per run, hardware row first), nothing else
    #[arg(long)]
    pub json: bool,
    /// CPUs to pin to, Linux list syntax such as 2-3; shard i gets the i-th CPU, ascending
    /// [default: the first CPUs of this process's affinity mask]
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<CpuList>,
    /// `remote`: a running node's QUIC edge, HOST:PORT [default: start a one-shard node
    /// in this process on the first CPU]
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// `remote`: connections the load generator opens
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: usize,
    /// `remote`: the agent requests go to (it must reply, like echo)
    #[arg(long, value_name = "AGENT", default_value = "echo")]
    pub to: String,
    /// `remote` with --addr: trust this CA file (PEM)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// `remote` with --addr: pin the node's certificate fingerprint
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: Option<String>,
    /// `remote` with --addr: do not verify the node
    #[arg(long)]
    pub insecure: bool,
    /// Agent counts of the `memory` suite, comma-separated
    #[arg(long, value_name = "N,N", value_delimiter = ',', default_values_t = [10_000u64, 100_000])]
    pub agents: Vec<u64>,
}

impl BenchArgs {
    /// The options every suite takes.
    #[must_use]
    pub fn suite_options(&self) -> SuiteOptions {
        let default_shards = match self.suite {
            Suite::Local | Suite::WasmLocal | Suite::Spawn | Suite::Orderbook | Suite::Remote => 1,
            _ => 2,
        };
        SuiteOptions {
            shards: self.shards.map_or(default_shards, NonZeroUsize::get),
            seconds: self.seconds,
            rate_msgs_per_s: self.rate,
            payload_bytes: self.payload_bytes,
            cpus: self
                .cpus
                .as_ref()
                .map(|list| list.cpus().to_vec())
                .unwrap_or_default(),
            agents: self.agents.clone(),
            remote: None,
        }
    }

    /// The `remote` suite's options (resolving `--addr` and how to verify the node).
    pub fn remote_options(&self) -> anyhow::Result<crate::bench::remote::RemoteOptions> {
        let (addr, client) = match &self.addr {
            None => (None, None),
            Some(addr) => {
                let edge = super::send::EdgeClientArgs {
                    addr: addr.clone(),
                    ca: self.ca.clone(),
                    fingerprint: self.fingerprint.clone(),
                    insecure: self.insecure,
                    server_name: None,
                    cert: None,
                    key: None,
                    dev_cert_dir: None,
                };
                let (addr, config) = edge.resolve()?;
                (Some(addr), Some(config))
            }
        };
        Ok(crate::bench::remote::RemoteOptions {
            addr,
            client,
            connections: self.connections,
            to: super::send::parse_agent(&self.to)?,
        })
    }
}

/// Runs the suite as asked and prints the report; an error if any run failed.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.suite == Suite::Idle {
        return run_idle(args);
    }
    if args.suite == Suite::Memory {
        return run_memory(args);
    }
    let mut opts = args.suite_options();
    if args.suite == Suite::Remote {
        opts.remote = Some(args.remote_options()?);
    }
    let mut results = Vec::with_capacity(args.runs.get() + 1);
    if args.suite.has_hardware_row() {
        let hardware = hardware_row(args.suite, &opts);
        emit_json(args, &hardware);
        results.push(hardware);
    }
    let mut failed_runs = 0;
    for run_index in 1..=args.runs.get() {
        tracing::info!(
            suite = args.suite.name(),
            run_index,
            runs = args.runs,
            "bench run"
        );
        match run_suite(args.suite, &opts) {
            Ok(rows) => {
                for result in rows {
                    emit_json(args, &result);
                    results.push(result);
                }
            }
            Err(error) => {
                failed_runs += 1;
                eprintln!(
                    "run {run_index}/{}: {} failed: {error:#}",
                    args.runs,
                    args.suite.name()
                );
            }
        }
    }
    if !args.json {
        print!("{}", human_report(args.suite, &results));
    }
    if failed_runs > 0 {
        bail!("{failed_runs} of {} run(s) failed", args.runs);
    }
    Ok(())
}

/// The `idle` check: CPU and memory of a parked node, no messages, so no hardware row.
fn run_idle(args: &BenchArgs) -> anyhow::Result<()> {
    let opts = args.suite_options();
    let mut failed_runs = 0;
    for run_index in 1..=args.runs.get() {
        match native::run_idle(&opts) {
            Ok(result) if args.json => println!("{}", result.to_json_line()),
            Ok(result) => println!(
                "idle: {} shard(s) parked for {:.2} s: {:.2} % of one core, RSS {:.1} MiB",
                result.shards,
                result.seconds,
                result.cpu_percent,
                result.rss_bytes as f64 / (1024.0 * 1024.0)
            ),
            Err(error) => {
                failed_runs += 1;
                eprintln!("run {run_index}/{}: idle failed: {error:#}", args.runs);
            }
        }
    }
    if failed_runs > 0 {
        bail!("{failed_runs} of {} run(s) failed", args.runs);
    }
    Ok(())
}

/// The `memory` suite: RSS per idle agent, one line per agent count and run.
fn run_memory(args: &BenchArgs) -> anyhow::Result<()> {
    let opts = args.suite_options();
    let mut failed_runs = 0;
    for run_index in 1..=args.runs.get() {
        for &agents in &opts.agents {
            match crate::bench::wasm::memory(&opts, agents) {
                Ok(result) if args.json => println!("{}", result.to_json_line()),
                Ok(result) => println!(
                    "memory: {} agents on {} shard(s): RSS {:.1} → {:.1} MiB, {:.1} KiB per \
                     idle agent (deployed in {:.2} s)",
                    result.agents,
                    result.shards,
                    result.rss_before_bytes as f64 / (1024.0 * 1024.0),
                    result.rss_after_bytes as f64 / (1024.0 * 1024.0),
                    result.rss_per_agent_bytes / 1024.0,
                    result.deploy_seconds,
                ),
                Err(error) => {
                    failed_runs += 1;
                    eprintln!(
                        "run {run_index}/{}: memory ({agents} agents) failed: {error:#}",
                        args.runs
                    );
                }
            }
        }
    }
    if failed_runs > 0 {
        bail!("{failed_runs} memory run(s) failed");
    }
    Ok(())
}

/// One run of `suite`: the hardware suite in-process, every other suite on a dataplane
/// node (or, for `spawn`, a shard on a pinned thread). One row per system.
fn run_suite(suite: Suite, opts: &SuiteOptions) -> anyhow::Result<Vec<BenchResult>> {
    match suite {
        Suite::Hardware => Ok(vec![hardware::run(opts)]),
        Suite::Remote => {
            let remote = opts
                .remote
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("remote options missing"))?;
            Ok(vec![crate::bench::remote::run(opts, remote)?])
        }
        suite if suite.is_wasm() => crate::bench::wasm::run(suite, opts),
        suite => Ok(vec![native::run(suite, opts)?]),
    }
}

/// The hardware suite once, relabelled with `suite` so it sits in that suite's table.
fn hardware_row(suite: Suite, opts: &SuiteOptions) -> BenchResult {
    let mut result = hardware::run(opts);
    result.suite = suite.name().to_owned();
    result
}

fn emit_json(args: &BenchArgs, result: &BenchResult) {
    if args.json {
        println!("{}", result.to_json_line());
    }
}

/// The system the others are compared with in `suite`'s tables.
fn baseline_system(suite: Suite) -> &'static str {
    match suite {
        Suite::WasmLocal | Suite::WasmCross | Suite::Orderbook | Suite::Interrupt => {
            crate::bench::wasm::SYSTEM_WASM
        }
        _ => SYSTEM_DATAPLANE,
    }
}

/// The table of every row, then, when there are several runs, the table of the medians
/// of each system.
fn human_report(suite: Suite, results: &[BenchResult]) -> String {
    let baseline = baseline_system(suite);
    let mut out = format_table(results, baseline);
    let hardware = crate::bench::report::SYSTEM_HARDWARE;
    let mut systems: Vec<&str> = Vec::new();
    for result in results.iter().filter(|result| result.system != hardware) {
        if !systems.contains(&result.system.as_str()) {
            systems.push(&result.system);
        }
    }
    let runs_of = |system: &str| -> Vec<BenchResult> {
        results
            .iter()
            .filter(|result| result.system == system)
            .cloned()
            .collect()
    };
    let runs = systems.first().map_or(0, |system| runs_of(system).len());
    if runs > 1 && suite != Suite::Hardware {
        let mut medians: Vec<BenchResult> = runs_of(hardware);
        for system in &systems {
            medians.push(median_of(&runs_of(system)));
        }
        out.push_str(&format!("\nmedians of {runs} run(s)\n"));
        out.push_str(&format_table(&medians, baseline));
    }
    out
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(seconds),
        _ => Err(format!("`{text}` is not a positive number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let cli = Cli::try_parse_from(["dataplane", "bench"].iter().chain(args))?;
        match cli.command {
            Some(Command::Bench(args)) => Ok(args),
            other => panic!("not a bench command: {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_suite() {
        let local = parse(&["local"]).unwrap().suite_options();
        assert_eq!(
            (local.shards, local.seconds, local.payload_bytes),
            (1, 2.0, 32)
        );
        assert_eq!(local.rate_msgs_per_s, None);
        assert!(local.cpus.is_empty());
        let cross = parse(&["cross-shard", "--cpus", "2-3", "--rate", "1000"]).unwrap();
        let cross = cross.suite_options();
        assert_eq!((cross.shards, cross.cpus.as_slice()), (2, &[2, 3][..]));
        assert_eq!(cross.rate_msgs_per_s, Some(1000));
    }

    #[test]
    fn nonsense_is_refused() {
        for args in [
            &["local", "--seconds", "0"][..],
            &["local", "--seconds", "NaN"],
            &["local", "--runs", "0"],
            &["local", "--rate", "0"],
            &["local", "--shards", "0"],
            &["local", "--cpus", "3-1"],
            &["nosuch"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
