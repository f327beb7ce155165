//! Reading topologies: XML files, synthetic descriptions and the live machine.

use std::path::Path;

use dataplane_topology::{Pu, Topology, TopologyError};

use crate::{checked_in, cpus, topology_path, CHECKED_IN};

/// (packages, NUMA nodes, cores, PUs) of a topology.
fn shape(topology: &Topology) -> (usize, usize, usize, usize) {
    (
        topology.packages().len(),
        topology.numa_nodes().len(),
        topology.cores().len(),
        topology.pus.len(),
    )
}

#[test]
fn xml_files_have_the_expected_counts() {
    let expected = [
        ("pack2-numa2-core8-pu2.xml", (2, 4, 32, 64)),
        ("pack1-core4-pu2-linux-smt.xml", (1, 1, 4, 8)),
        ("pack4-numa2-core8-pu2.xml", (4, 8, 64, 128)),
        ("pack2-die2-core4-pu2.xml", (2, 2, 16, 32)),
    ];
    for (file_name, counts) in expected {
        assert_eq!(shape(&checked_in(file_name)), counts, "{file_name}");
    }
}

#[test]
fn synthetic_descriptions_give_the_same_topology_as_their_xml() {
    for (file_name, description) in CHECKED_IN {
        let synthetic = Topology::from_synthetic(description).expect("synthetic loads");
        assert_eq!(
            synthetic,
            checked_in(file_name),
            "{file_name} vs {description:?}"
        );
    }
}

#[test]
fn pus_know_their_core_node_and_package() {
    let topology = checked_in("pack2-numa2-core8-pu2.xml");
    // Package 1 holds PUs 32-63, its first NUMA node (os 2) PUs 32-47, core 18 PUs 36-37.
    assert_eq!(
        topology.pu(37),
        Some(&Pu {
            cpu: 37,
            core: 18,
            numa_node: 2,
            package: 1
        })
    );
    assert_eq!(topology.cpus(), cpus("0-63"));
    assert!(topology
        .pus
        .windows(2)
        .all(|pair| pair[0].cpu < pair[1].cpu));
}

#[test]
fn linux_style_hyperthread_numbering_pairs_n_with_n_plus_4() {
    let topology = checked_in("pack1-core4-pu2-linux-smt.xml");
    for cpu in 0..4 {
        let core = topology.pu(cpu).map(|pu| pu.core);
        assert_eq!(core, topology.pu(cpu + 4).map(|pu| pu.core), "CPU {cpu}");
        assert_eq!(core, Some(cpu));
    }
}

#[test]
fn topology_without_package_or_core_levels_still_loads() {
    let topology = Topology::from_synthetic("pu:3").expect("loads");
    assert_eq!(shape(&topology), (1, 1, 3, 3));
}

#[test]
fn garbage_xml_is_an_error_not_a_panic() {
    let directory = std::env::temp_dir().join(format!("topology-test-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("garbage.xml");
    std::fs::write(&path, "this is <not an hwloc topology").expect("write");
    let error = Topology::from_xml_file(&path).expect_err("garbage must not load");
    assert!(matches!(error, TopologyError::Hwloc { .. }), "{error:?}");
    assert!(error.to_string().contains("garbage.xml"), "{error}");
    std::fs::remove_dir_all(&directory).ok();
}

#[test]
fn missing_xml_file_is_an_error() {
    let error = Topology::from_xml_file(Path::new("/nonexistent/topology.xml")).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/topology.xml"),
        "{error}"
    );
}

#[test]
fn bad_synthetic_descriptions_are_errors() {
    for description in ["pack:2 bogus:3", "", "core:0", "pack:2\0core:2"] {
        assert!(
            Topology::from_synthetic(description).is_err(),
            "{description:?}"
        );
    }
}

#[test]
fn checked_in_paths_exist() {
    for (file_name, _) in CHECKED_IN {
        assert!(topology_path(file_name).is_file(), "{file_name}");
    }
}

/// The live machine (this project's: 2 PUs, 1 NUMA node). Shape-agnostic checks only, so
/// the test also passes on a developer's larger machine.
#[test]
fn from_system_reads_this_machine() {
    let topology = Topology::from_system().expect("hwloc reads the live machine");
    assert!(!topology.pus.is_empty());
    assert!(!topology.numa_nodes().is_empty());
    assert!(topology.cores().len() <= topology.pus.len());
    let affinity = dataplane_topology::current_affinity().expect("affinity");
    assert!(
        !affinity.intersection(&topology.cpus()).is_empty(),
        "affinity {affinity} vs machine {}",
        topology.cpus()
    );
}

/// Canary: hwloc2 2.2.0's NUMA queries are why this crate reads nodesets (see
/// docs/decisions/why-hwloc-workaround.md). If this starts failing, hwloc2 was fixed or
/// replaced: revisit the workaround.
#[test]
fn hwloc2_numa_queries_are_still_broken() {
    let topology = hwloc2::Topology::new().expect("hwloc2 loads the live machine");
    assert!(topology
        .depth_for_type(&hwloc2::ObjectType::NUMANode)
        .is_err());
    let listed = std::panic::catch_unwind(|| {
        topology
            .objects_with_type(&hwloc2::ObjectType::NUMANode)
            .map(|nodes| nodes.len())
    });
    assert!(
        listed.is_err(),
        "objects_with_type(NUMANode) no longer panics"
    );
}
