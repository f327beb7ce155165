//! Runs the quinn peer baseline of the `remote` suite once and prints its JSON line.
//!
//! Starts the echo server on CPU 0 (unless `--addr` names one) and the client on CPU 1:
//!
//! ```text
//! cargo run --release -p dataplane-benches --example quinn_remote -- --rate 100000 --seconds 3
//! ```
//!
//! Without `--rate` the client runs closed loop (one request in flight per connection).
//! With `--serve ADDR` it only runs a server there until killed, for a client elsewhere.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use dataplane_benches::quinn_remote::{self, RemoteOptions};

/// One run of the quinn `remote` baseline.
#[derive(Debug, Parser)]
struct Cli {
    /// Server to load (default: start one in this process).
    #[arg(long, conflicts_with = "serve")]
    addr: Option<SocketAddr>,
    /// Only serve on this address (e.g. 0.0.0.0:4433) until killed.
    #[arg(long)]
    serve: Option<SocketAddr>,
    /// CPU of the in-process server.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU of the client.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Connections, one stream each.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Total open-loop rate in requests per second (default: closed loop).
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds of load, warm-up included.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 32)]
    payload_bytes: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(bind_addr) = cli.serve {
        let (addr, _server) = quinn_remote::spawn_server_on(cli.server_cpu, bind_addr)?;
        eprintln!(
            "quinn echo server on {addr} (CPU {}); Ctrl-C stops it",
            cli.server_cpu
        );
        loop {
            std::thread::park();
        }
    }
    let opts = RemoteOptions {
        server_addr: cli.addr,
        server_cpu: cli.server_cpu,
        client_cpu: cli.client_cpu,
        connections: cli.connections,
        rate_msgs_per_s: cli.rate,
        seconds: cli.seconds,
        payload_bytes: cli.payload_bytes,
    };
    let result = quinn_remote::run(&opts).context("quinn remote run")?;
    println!("{}", result.to_json_line());
    Ok(())
}
