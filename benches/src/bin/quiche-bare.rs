//! `quiche-bare`: the flood ceiling of bare quiche on two pinned cores, and each end of the
//! `remote` suite measured against a bare other end (`dataplane_benches::quiche_bare`).
//!
//! ```text
//! quiche-bare                          # bare server on cpu 0, bare client on cpu 1
//! quiche-bare --server node            # the real node (one shard, echo) instead
//! quiche-bare --client none --port P   # a bare server alone, for
//!                                      # `dataplane bench remote --addr 127.0.0.1:P --insecure`
//! ```
//!
//! Prints one JSON line per run (the suite's format, `"system":"quiche-bare"` with
//! `"server"`, `"client"` and `"replies_per_packet"`, how full the server's packets were
//! in the flood, added) and the median throughput on stderr.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use dataplane::bench::BenchResult;
use dataplane_benches::quiche_bare::{run_client, BareServer, SYSTEM_QUICHE_BARE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerKind {
    /// quiche writing back the stream bytes it reads, nothing else.
    Bare,
    /// The dataplane node: one busy-polling shard with the echo agent.
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    /// quiche writing pre-encoded requests and counting reply bytes.
    Bare,
    /// No client: a bare server serves exactly one connection, for at most `--seconds`.
    None,
}

/// The flood ceiling of bare quiche on two pinned cores.
#[derive(Debug, Parser)]
#[command(name = "quiche-bare")]
struct Args {
    #[arg(long, value_enum, default_value = "bare")]
    server: ServerKind,
    #[arg(long, value_enum, default_value = "bare")]
    client: ClientKind,
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Seconds per workload (closed loop, then flood); with `--client none`, how long the
    /// server waits for and serves its connection.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Runs; the median throughput goes to stderr.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Payload bytes per request.
    #[arg(long, default_value_t = 32)]
    payload_bytes: usize,
    /// Port of the bare server on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        anyhow::bail!("--seconds must be a positive number, got {}", args.seconds);
    }
    if args.client == ClientKind::None {
        if args.server == ServerKind::Node {
            anyhow::bail!("--client none serves a bare server; run `dataplane` for a node");
        }
        let server = BareServer::start(
            args.server_cpu,
            args.port,
            Duration::from_secs_f64(args.seconds),
        )?;
        eprintln!("bare quiche echo on {}", server.addr);
        return server.join();
    }
    let mut rates = Vec::new();
    for _ in 0..args.runs.max(1) {
        let serve_for = Duration::from_secs_f64(2.0 * args.seconds + 20.0);
        let (bare, node) = match args.server {
            ServerKind::Bare => (
                Some(BareServer::start(args.server_cpu, args.port, serve_for)?),
                None,
            ),
            ServerKind::Node => (
                None,
                Some(dataplane::bench::remote::start_server(args.server_cpu)?),
            ),
        };
        let addr = match (&bare, &node) {
            (Some(bare), _) => bare.addr,
            (None, Some(node)) => node.addr,
            (None, None) => unreachable!("one server was started"),
        };
        let run = run_client(args.client_cpu, addr, args.payload_bytes, args.seconds);
        if let Some(bare) = bare {
            bare.stop();
            bare.join()?;
        }
        let run = run?;
        drop(node);
        let result = BenchResult::new(
            "remote",
            SYSTEM_QUICHE_BARE,
            1,
            run.replies,
            run.seconds,
            run.latency.latency_ns(),
        );
        let line = result.to_json_line();
        let server = format!("{:?}", args.server).to_lowercase();
        let per_packet = run.replies as f64 / run.packets_in.max(1) as f64;
        // The suite's line with fields added after `latency_ns`, before its last brace.
        let fields = line.strip_suffix('}').unwrap_or(&line);
        println!(
            "{fields},\"server\":\"{server}\",\"client\":\"bare\",\"replies_per_packet\":{per_packet:.2}}}"
        );
        rates.push(result.throughput_msgs_per_s);
    }
    rates.sort_by(f64::total_cmp);
    eprintln!(
        "{} server, bare client: median of {} run(s) {:.2} M msg/s",
        format!("{:?}", args.server).to_lowercase(),
        rates.len(),
        rates[rates.len() / 2] / 1e6
    );
    Ok(())
}
