//! The machine's topology, read with hwloc, and the pure function that places shards on it.
//!
//! Two halves with one plain model between them:
//!
//! - **Reading** ([`Topology::from_system`], [`Topology::from_xml_file`],
//!   [`Topology::from_synthetic`]) turns hwloc's object tree into a [`Topology`]: one [`Pu`]
//!   per hardware thread with its core, NUMA node and package. No hwloc type leaks out, so
//!   tests can build topologies by hand or from checked-in XML.
//! - **Placing** ([`place`]) is a pure, deterministic function of a [`Topology`] and a
//!   [`PlacementRequest`]: one shard per physical core, never two hyperthreads of one core,
//!   balanced across NUMA nodes, shard ids grouped by node.
//!
//! Read the affinity mask ([`current_affinity`]) once at start-up, before pinning any thread.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeSet;
//!
//! use dataplane_topology::{parse_cpu_list, place, PlacementRequest, ShardCount, Topology};
//!
//! // Two packages, two NUMA nodes each, 8 cores of 2 hyperthreads per node.
//! let topology = Topology::from_synthetic("pack:2 numa:2 core:8 pu:2")?;
//! assert_eq!(topology.numa_nodes().len(), 4);
//!
//! let request = PlacementRequest {
//!     shards: ShardCount::Exact(4),
//!     cpuset: None,
//!     affinity: topology.cpus(), // in a real process: current_affinity()?
//! };
//! let placement = place(&topology, &request)?;
//! let nodes: BTreeSet<usize> = placement.shards.iter().map(|shard| shard.numa_node).collect();
//! assert_eq!(nodes.len(), 4, "one shard per NUMA node");
//! println!("{placement}");
//!
//! // A --cpuset restriction, as given on the command line.
//! let request = PlacementRequest { cpuset: Some(parse_cpu_list("2-7,10")?), ..request };
//! assert_eq!(place(&topology, &request)?.cpus().to_string(), "2,4,6,10");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod cpuset;
mod error;
mod hwloc;
mod placement;

use std::collections::BTreeSet;
use std::path::Path;

pub use cpuset::{current_affinity, parse_cpu_list, CpuSet, CPU_INDEX_LIMIT};
pub use error::{ParseShardCountError, PlacementError, TopologyError};
pub use placement::{place, Placement, PlacementRequest, ShardCount, ShardPlacement};

/// A plain model of the machine: one entry per PU (hardware thread), sorted by `cpu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The PUs, ascending by `cpu` when read from hwloc.
    pub pus: Vec<Pu>,
}

/// One hardware thread and where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pu {
    /// OS index of the CPU (what `sched_setaffinity` takes).
    pub cpu: usize,
    /// Logical index of its physical core, unique machine-wide. PUs of one core share it.
    pub core: usize,
    /// OS index of its NUMA node (what `mbind`/libnuma take).
    pub numa_node: usize,
    /// Logical index of its package (socket); 0 if hwloc reports no package.
    pub package: usize,
}

impl Topology {
    /// Reads the live machine with hwloc.
    ///
    /// hwloc honours its environment variables (`HWLOC_XMLFILE`, `HWLOC_SYNTHETIC`, ...) here;
    /// use [`Topology::from_xml_file`] or [`Topology::from_synthetic`] to read something else
    /// explicitly.
    pub fn from_system() -> Result<Topology, TopologyError> {
        hwloc::from_system()
    }

    /// Reads an hwloc XML file, as written by `lstopo machine.xml`.
    pub fn from_xml_file(path: &Path) -> Result<Topology, TopologyError> {
        hwloc::from_xml_file(path)
    }

    /// Builds a topology from an hwloc synthetic description such as
    /// `"pack:2 numa:2 core:8 pu:2"` (see `lstopo --input`).
    pub fn from_synthetic(description: &str) -> Result<Topology, TopologyError> {
        hwloc::from_synthetic(description)
    }

    /// All CPUs (PU OS indexes).
    pub fn cpus(&self) -> CpuSet {
        self.pus.iter().map(|pu| pu.cpu).collect()
    }

    /// Distinct core indexes, ascending.
    pub fn cores(&self) -> Vec<usize> {
        distinct(self.pus.iter().map(|pu| pu.core))
    }

    /// Distinct NUMA node OS indexes, ascending.
    pub fn numa_nodes(&self) -> Vec<usize> {
        distinct(self.pus.iter().map(|pu| pu.numa_node))
    }

    /// Distinct package indexes, ascending.
    pub fn packages(&self) -> Vec<usize> {
        distinct(self.pus.iter().map(|pu| pu.package))
    }

    /// The PU with OS index `cpu`, if the machine has it.
    pub fn pu(&self, cpu: usize) -> Option<&Pu> {
        self.pus.iter().find(|pu| pu.cpu == cpu)
    }
}

fn distinct(values: impl Iterator<Item = usize>) -> Vec<usize> {
    values.collect::<BTreeSet<usize>>().into_iter().collect()
}
