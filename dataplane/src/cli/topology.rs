//! `dataplane topology`: the machine as hwloc sees it and where the shards would go.
//!
//! With `--xml FILE` (from `lstopo machine.xml`) or `--synthetic DESC` it previews another
//! machine; the affinity mask is then that machine's every CPU.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use dataplane_topology::{CpuSet, Topology};

use super::ConfigArgs;
use crate::node;

/// `dataplane topology [--xml FILE | --synthetic DESC] [--config FILE] [--shards N] ...`.
#[derive(Debug, clap::Args)]
pub struct TopologyArgs {
    /// Read this hwloc XML file (`lstopo machine.xml`) instead of this machine
    /// [default: this machine]
    #[arg(long, value_name = "FILE", conflicts_with = "synthetic")]
    pub xml: Option<PathBuf>,
    /// Use an hwloc synthetic description such as "pack:2 numa:2 core:8 pu:2" instead of
    /// this machine [default: this machine]
    #[arg(long, value_name = "DESC")]
    pub synthetic: Option<String>,
    /// The configuration whose node.shards and node.cpuset are placed.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Prints the topology summary and the placement the configuration would get.
pub fn run(args: &TopologyArgs) -> anyhow::Result<()> {
    let (topology, affinity, source) = read(args)?;
    let config = args.config.load_for(&topology, &affinity)?;
    print!("{}", summary(&topology, &affinity, &source));
    let placement = node::place_shards(&config, &topology, affinity)?;
    println!(
        "placement of node.shards = {}, node.cpuset = {}:",
        config.node.shards,
        config
            .node
            .cpuset
            .as_ref()
            .map_or("none", |list| list.as_str())
    );
    println!("{placement}");
    Ok(())
}

/// The topology to show, the affinity mask to place with, and a name for the source.
fn read(args: &TopologyArgs) -> anyhow::Result<(Topology, CpuSet, String)> {
    if let Some(path) = &args.xml {
        let topology = Topology::from_xml_file(path)
            .with_context(|| format!("reading hwloc XML {}", path.display()))?;
        let cpus = topology.cpus();
        return Ok((topology, cpus, format!("XML {}", path.display())));
    }
    if let Some(description) = &args.synthetic {
        let topology = Topology::from_synthetic(description)
            .with_context(|| format!("reading hwloc synthetic description {description:?}"))?;
        let cpus = topology.cpus();
        return Ok((topology, cpus, format!("synthetic {description:?}")));
    }
    let machine = node::Machine::read()?;
    Ok((
        machine.topology,
        machine.affinity,
        "this machine".to_owned(),
    ))
}

/// Counts, then one line per NUMA node with its CPUs and cores.
fn summary(topology: &Topology, affinity: &CpuSet, source: &str) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; results of `writeln!` are ignored on purpose.
    let _ = writeln!(out, "topology of {source}:");
    let _ = writeln!(
        out,
        "packages: {}, NUMA nodes: {}, cores: {}, CPUs: {} ({}); affinity: {}",
        topology.packages().len(),
        topology.numa_nodes().len(),
        topology.cores().len(),
        topology.pus.len(),
        topology.cpus(),
        affinity
    );
    for node in topology.numa_nodes() {
        let pus = topology.pus.iter().filter(|pu| pu.numa_node == node);
        let cpus: CpuSet = pus.clone().map(|pu| pu.cpu).collect();
        let cores: BTreeSet<usize> = pus.map(|pu| pu.core).collect();
        let _ = writeln!(out, "NUMA node {node}: CPUs {cpus} ({} cores)", cores.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_every_numa_node() {
        let topology = Topology::from_synthetic("pack:2 numa:2 core:8 pu:2").unwrap();
        let text = summary(&topology, &topology.cpus(), "test");
        assert!(
            text.contains("packages: 2, NUMA nodes: 4, cores: 32, CPUs: 64"),
            "{text}"
        );
        assert_eq!(text.matches("(8 cores)").count(), 4, "{text}");
    }
}
