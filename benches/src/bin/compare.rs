//! `compare SUITE`: runs every system for one suite, several times, and compares medians.
//!
//! Per run, in this order: `hardware` (the raw cache-line ping-pong, relabelled with the
//! suite's name so it shows in every table), `dataplane` (`dataplane::bench::native::run`)
//! and `tokio-mpsc` (the peer baseline); for `remote`: `dataplane`, `quinn` (the peer
//! baseline) and `quiche-bare` (quiche alone at both ends with the edge's settings, the
//! ceiling of a quiche-based pair; a `ceiling:` line follows the targets). A system that fails is reported on stderr
//! and the others still run. After all runs: the median per system and metric, the table with
//! ratios against `dataplane`, and one PASS/FAIL/MISSING line per target.
//!
//! Output: without `--json` everything goes to stdout. With `--json`, stdout holds only JSON
//! lines (one per system, the medians; with `--raw` also one per run, printed as each run
//! ends), and the table and target lines go to stderr, so the output pipes into `jq`.
//! The exit code is 0 whatever the verdicts; it is non-zero only for bad arguments.

use std::collections::BTreeMap;
use std::io::Write as _;

use anyhow::{bail, Context as _};
use clap::Parser;
use dataplane::bench::report::{
    format_table, median_of, SYSTEM_DATAPLANE, SYSTEM_HARDWARE, SYSTEM_TOKIO_MPSC,
};
use dataplane::bench::{hardware, native, BenchResult, Suite, SuiteOptions};
use dataplane_benches::quiche_bare::{self, SYSTEM_QUICHE_BARE};
use dataplane_benches::{quinn_remote, targets, tokio_mpsc};

/// The QUIC peer baseline of the `remote` suite.
const SYSTEM_QUINN: &str = "quinn";

/// Systems in the order they run and are printed.
const SYSTEMS: [&str; 3] = [SYSTEM_HARDWARE, SYSTEM_DATAPLANE, SYSTEM_TOKIO_MPSC];

/// Compare dataplane with the machine's limit and with tokio mpsc.
#[derive(Debug, Parser)]
#[command(name = "compare")]
struct Cli {
    /// Suite to run.
    #[arg(value_enum)]
    suite: Suite,
    /// Shards for dataplane (default: 1 for `local`, 2 otherwise).
    #[arg(long)]
    shards: Option<usize>,
    /// Wall-clock seconds per workload (ping-pong and flood each) per system and run.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Open-loop request rate in messages per second (default: closed-loop ping-pong).
    #[arg(long)]
    rate: Option<u64>,
    /// Runs per system; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print results as JSON lines on stdout (table and targets on stderr).
    #[arg(long)]
    json: bool,
    /// With `--json`: also print every run's line.
    #[arg(long, requires = "json")]
    raw: bool,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 32)]
    payload_bytes: usize,
    /// `remote`: connections per system's load generator.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// CPUs to pin to, in shard order (default: the first CPUs of this process's mask).
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
}

impl Cli {
    fn suite_options(&self) -> anyhow::Result<SuiteOptions> {
        if !(self.seconds.is_finite() && self.seconds > 0.0) {
            bail!("--seconds must be a positive number, got {}", self.seconds);
        }
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if self.rate == Some(0) {
            bail!("--rate must be at least 1 message per second");
        }
        let default_shards = if matches!(self.suite, Suite::Local | Suite::Remote) {
            1
        } else {
            2
        };
        Ok(SuiteOptions {
            shards: self.shards.unwrap_or(default_shards),
            seconds: self.seconds,
            rate_msgs_per_s: self.rate,
            payload_bytes: self.payload_bytes,
            cpus: self.cpus.clone(),
            remote: Some(dataplane::bench::remote::RemoteOptions {
                addr: None,
                client: None,
                connections: self.connections,
                to: dataplane_frame::AgentId::from_name("echo"),
            }),
            ..SuiteOptions::default()
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let opts = cli.suite_options()?;
    let mut runs_by_system: BTreeMap<&str, Vec<BenchResult>> = BTreeMap::new();
    for run_index in 1..=cli.runs {
        for system in systems_for(cli.suite) {
            eprintln!(
                "run {run_index}/{}: {} {system} ...",
                cli.runs,
                cli.suite.name()
            );
            match run_system(system, cli.suite, &opts) {
                Ok(result) => {
                    if cli.raw {
                        println!("{}", result.to_json_line());
                    }
                    runs_by_system.entry(system).or_default().push(result);
                }
                Err(error) => eprintln!("run {run_index}: {system} failed: {error:#}"),
            }
        }
    }

    let medians: Vec<BenchResult> = systems_for(cli.suite)
        .iter()
        .filter_map(|system| runs_by_system.get(system))
        .map(|runs| median_of(runs))
        .collect();
    if cli.json {
        for median in &medians {
            println!("{}", median.to_json_line());
        }
    }
    let mut report = format!("medians of {} run(s)\n", cli.runs);
    report.push_str(&format_table(&medians, SYSTEM_DATAPLANE));
    for check in targets::check_targets(cli.suite, &medians) {
        report.push_str(&format!("{check}\n"));
    }
    if cli.suite == Suite::Remote {
        report.push_str(&ceiling_note(&medians));
    }
    if cli.json {
        eprint!("{report}");
    } else {
        print!("{report}");
    }
    std::io::stdout().flush().context("flushing stdout")?;
    Ok(())
}

/// How the `remote` throughputs compare with bare quiche's ceiling (no target: context for
/// the 2x-quinn one, which a quiche-based pair cannot meet where the ceiling is below it).
fn ceiling_note(medians: &[BenchResult]) -> String {
    let throughput = |system: &str| {
        medians
            .iter()
            .find(|r| r.system == system)
            .map(|r| r.throughput_msgs_per_s)
    };
    let (Some(bare), Some(quinn), Some(dataplane)) = (
        throughput(SYSTEM_QUICHE_BARE),
        throughput(SYSTEM_QUINN),
        throughput(SYSTEM_DATAPLANE),
    ) else {
        return String::new();
    };
    if bare <= 0.0 || quinn <= 0.0 {
        return String::new();
    }
    format!(
        "ceiling: quiche-bare (no frame handling at either end) is {:.2}x quinn throughput; \
         dataplane reaches {:.0}% of it\n",
        bare / quinn,
        100.0 * dataplane / bare
    )
}

/// The systems that run for `suite`: only the hardware row for the hardware suite.
fn systems_for(suite: Suite) -> &'static [&'static str] {
    match suite {
        Suite::Hardware => &SYSTEMS[..1],
        // quiche-bare is the ceiling, not a peer: quiche at both ends with no frame handling.
        Suite::Remote => &[SYSTEM_DATAPLANE, SYSTEM_QUINN, SYSTEM_QUICHE_BARE],
        _ => &SYSTEMS,
    }
}

/// The `remote` suite over quinn: latency at the same offered load as dataplane's latency
/// workload (`--rate`, or closed loop), throughput from a second run at a rate no system
/// here sustains (10 M/s open loop), i.e. its saturated reply rate.
fn run_quinn(opts: &SuiteOptions) -> anyhow::Result<BenchResult> {
    let (server_cpu, client_cpu) = two_cpus(opts)?;
    let connections = opts.remote.as_ref().map_or(1, |remote| remote.connections);
    let base = quinn_remote::RemoteOptions {
        server_addr: None,
        server_cpu,
        client_cpu,
        connections,
        rate_msgs_per_s: opts.rate_msgs_per_s,
        seconds: opts.seconds,
        payload_bytes: opts.payload_bytes,
    };
    let latency = quinn_remote::run(&base)?;
    let saturated = quinn_remote::run(&quinn_remote::RemoteOptions {
        rate_msgs_per_s: Some(10_000_000),
        ..base
    })?;
    let mut result = latency;
    result.messages = saturated.messages;
    result.seconds = saturated.seconds;
    result.throughput_msgs_per_s = saturated.throughput_msgs_per_s;
    Ok(result)
}

/// The server's and the client's CPU for the `remote` suite (one CPU: both on it).
fn two_cpus(opts: &SuiteOptions) -> anyhow::Result<(usize, usize)> {
    let cpus = dataplane::bench::pick_cpus(opts, 2);
    match cpus.as_slice() {
        [server, client, ..] => Ok((*server, *client)),
        [only] => Ok((*only, *only)),
        [] => bail!("no CPU to run on"),
    }
}

fn run_system(system: &str, suite: Suite, opts: &SuiteOptions) -> anyhow::Result<BenchResult> {
    match system {
        SYSTEM_HARDWARE => {
            let mut result = hardware::run(opts);
            result.suite = suite.name().to_string();
            Ok(result)
        }
        SYSTEM_DATAPLANE if suite == Suite::Remote => {
            let remote = opts
                .remote
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("remote options missing"))?;
            dataplane::bench::remote::run(opts, remote)
        }
        SYSTEM_QUINN => run_quinn(opts),
        SYSTEM_QUICHE_BARE => {
            let connections = opts.remote.as_ref().map_or(1, |remote| remote.connections);
            if connections != 1 || opts.rate_msgs_per_s.is_some() {
                // Its row would not be the same workload as the others'.
                bail!("the ceiling runs one connection, closed loop: not with --connections or --rate");
            }
            let (server_cpu, client_cpu) = two_cpus(opts)?;
            quiche_bare::run(server_cpu, client_cpu, opts.payload_bytes, opts.seconds)
        }
        SYSTEM_DATAPLANE => native::run(suite, opts),
        SYSTEM_TOKIO_MPSC => tokio_mpsc::run(suite, opts),
        other => bail!("unknown system {other}"),
    }
}
