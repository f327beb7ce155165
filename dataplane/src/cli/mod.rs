//! The command line: `dataplane [run] | config | topology | bench`, and the clients of a
//! running node's admin endpoint: `agents | deploy | swap | undeploy`.
//!
//! Without a subcommand the binary runs the node, so `dataplane --shards auto` and
//! `dataplane run --shards auto` are the same; the run options and a subcommand cannot be
//! mixed (`args_conflicts_with_subcommands`). Standard output carries the reports (placement,
//! YAML, tables, JSON lines); logs go to standard error.

mod admin;
mod bench;
pub mod send;
mod topology;

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context as _;
use dataplane_control::{limits, Config, Overrides, EMBEDDED_DEFAULT_YAML};
use dataplane_topology::{CpuSet, Topology};
use tracing_subscriber::EnvFilter;

use crate::node::Machine;
use crate::signals::TerminationSignals;

pub use admin::{agents_table, AdminArgs, AgentsArgs, DeployArgs, UndeployArgs};
pub use bench::BenchArgs;
pub use topology::TopologyArgs;

/// Shard-per-core runtime for WebAssembly agents. Without a subcommand: run the node.
#[derive(Debug, clap::Parser)]
#[command(name = "dataplane", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; `run` when left out.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `run`, accepted here too.
    #[command(flatten)]
    pub run: ConfigArgs,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the node: place shards, start them, serve until SIGINT or SIGTERM.
    Run(ConfigArgs),
    /// Show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the machine's topology and where the shards would be placed.
    Topology(TopologyArgs),
    /// Run a benchmark suite and report it (with the machine's own limit for comparison).
    Bench(BenchArgs),
    /// List the agents of a running node (through its admin endpoint).
    Agents(AgentsArgs),
    /// Deploy a WASM agent on a running node.
    Deploy(DeployArgs),
    /// Hot-swap a running agent's module: same id and mailbox; on failure the old code
    /// keeps running.
    Swap(DeployArgs),
    /// Undeploy an agent from a running node.
    Undeploy(UndeployArgs),
    /// Send one message to an agent over the node's QUIC edge and print the reply.
    Send(send::SendArgs),
}

/// `dataplane config ...`.
// Parsed once per process; boxing the flags would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (file, then flags, over the defaults) as YAML.
    Show(ConfigArgs),
    /// Print the embedded default configuration file, with its comments.
    Default,
}

/// Where the configuration comes from: a file and flags on top.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// YAML configuration file; keys it leaves out take their defaults
    /// [default: none, the embedded default (`dataplane config default`)]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Flags that override single keys of the file.
    #[command(flatten)]
    pub overrides: Overrides,
}

impl ConfigArgs {
    /// Loads and validates the configuration, with an error that names the file and field.
    pub fn load(&self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref(), &self.overrides).with_context(|| match &self.config {
            Some(path) => format!("invalid configuration ({})", path.display()),
            None => "invalid configuration (embedded default and flags)".to_owned(),
        })
    }

    /// [`ConfigArgs::load`] for a node on `topology`: when the configuration is refused and
    /// its shards do not fit the machine either, the placement error is reported instead.
    ///
    /// Why: validation checks `node.memlock_bytes_min` against `io_memory_bytes` × shards,
    /// so `--shards 99` on a small machine would first ask for more locked memory, and only
    /// after that is raised say that 99 shards cannot be placed at all.
    pub fn load_for(&self, topology: &Topology, affinity: &CpuSet) -> anyhow::Result<Config> {
        self.load()
            .map_err(|error| self.placement_error(topology, affinity).unwrap_or(error))
    }

    /// The placement error of this configuration with the memory floor lifted, if any.
    fn placement_error(&self, topology: &Topology, affinity: &CpuSet) -> Option<anyhow::Error> {
        let mut overrides = self.overrides.clone();
        overrides.memlock_bytes_min = Some(limits::MEMLOCK_BYTES_MIN.max);
        let probe = Config::load(self.config.as_deref(), &overrides).ok()?;
        crate::node::place_shards(&probe, topology, affinity.clone()).err()
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => run_node(&cli.run),
        Some(Command::Run(args)) => run_node(&args),
        Some(Command::Config(ConfigCommand::Show(args))) => {
            print!("{}", args.load()?.to_yaml());
            Ok(())
        }
        Some(Command::Config(ConfigCommand::Default)) => {
            print!("{EMBEDDED_DEFAULT_YAML}");
            Ok(())
        }
        Some(Command::Topology(args)) => {
            init_logging(None)?;
            topology::run(&args)
        }
        Some(Command::Bench(args)) => {
            init_logging(None)?;
            bench::run(&args)
        }
        Some(Command::Agents(args)) => admin::agents(&args),
        Some(Command::Deploy(args)) => admin::deploy(&args, false),
        Some(Command::Swap(args)) => admin::deploy(&args, true),
        Some(Command::Undeploy(args)) => admin::undeploy(&args),
        Some(Command::Send(args)) => send::send(&args),
    }
}

fn run_node(args: &ConfigArgs) -> anyhow::Result<()> {
    // First, before any thread exists: the shard threads inherit the blocked mask.
    let signals = TerminationSignals::block().context("blocking SIGINT and SIGTERM")?;
    let machine = Machine::read()?;
    let config = args.load_for(&machine.topology, &machine.affinity)?;
    init_logging(Some(&config.log.level))?;
    crate::node::run(&config, &machine, &signals)
}

/// Logs to standard error with the filter in `RUST_LOG` if set, else `level` (`log.level`),
/// else `info`.
fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::builder()
            .parse(&directives)
            .with_context(|| format!("RUST_LOG = {directives}: not a tracing filter"))?,
        Err(_) => {
            let level = level.unwrap_or("info");
            EnvFilter::builder()
                .parse(level)
                .with_context(|| format!("log.level = {level}: not a tracing filter"))?
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|error| anyhow::anyhow!("cannot start logging: {error}"))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run() {
        let cli = Cli::try_parse_from(["dataplane", "--shards", "auto", "--idle", "park"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.overrides.shards, Some("auto".parse().unwrap()));
    }

    #[test]
    fn run_options_and_a_subcommand_do_not_mix() {
        assert!(Cli::try_parse_from(["dataplane", "--shards", "2", "topology"]).is_err());
    }
}
