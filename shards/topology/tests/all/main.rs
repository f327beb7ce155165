//! End-to-end tests of dataplane-topology, in one test binary.

// In tests a panic is the failure report; `unwrap` keeps the cases short.
#![allow(clippy::unwrap_used)]

mod hwloc_reading;
mod placement;
mod properties;

use std::path::PathBuf;

use dataplane_topology::{CpuSet, Topology};

/// Synthetic descriptions of the checked-in XML files, by file name.
const CHECKED_IN: [(&str, &str); 4] = [
    ("pack2-numa2-core8-pu2.xml", "pack:2 numa:2 core:8 pu:2"),
    (
        "pack1-core4-pu2-linux-smt.xml",
        "pack:1 core:4 pu:2(indexes=0,4,1,5,2,6,3,7)",
    ),
    ("pack4-numa2-core8-pu2.xml", "pack:4 numa:2 core:8 pu:2"),
    (
        "pack2-die2-core4-pu2.xml",
        "pack:2 numa:1 die:2 l3:1 core:4 pu:2",
    ),
];

fn topology_path(file_name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/topologies")
        .join(file_name)
}

fn checked_in(file_name: &str) -> Topology {
    Topology::from_xml_file(&topology_path(file_name)).expect("checked-in XML loads")
}

fn cpus(list: &str) -> CpuSet {
    dataplane_topology::parse_cpu_list(list).expect("valid CPU list in test")
}
