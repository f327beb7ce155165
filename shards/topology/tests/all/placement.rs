//! `place()` on the checked-in topologies: the cases start-up will meet.

use std::collections::BTreeSet;

use dataplane_topology::{
    place, CpuSet, Placement, PlacementError, PlacementRequest, ShardCount, Topology,
};

use crate::{checked_in, cpus};

fn request(shards: ShardCount, affinity: CpuSet) -> PlacementRequest {
    PlacementRequest {
        shards,
        cpuset: None,
        affinity,
    }
}

fn place_all(topology: &Topology, shards: ShardCount) -> Result<Placement, PlacementError> {
    place(topology, &request(shards, topology.cpus()))
}

fn distinct<T: Ord>(values: impl Iterator<Item = T>) -> usize {
    values.collect::<BTreeSet<T>>().len()
}

#[test]
fn auto_takes_one_pu_of_every_core_grouped_by_node() {
    let topology = checked_in("pack2-numa2-core8-pu2.xml");
    let placement = place_all(&topology, ShardCount::Auto).unwrap();
    assert_eq!(placement.shards.len(), 32);
    // The lowest PU of each core: the even CPUs.
    assert_eq!(placement.cpus(), (0..64).step_by(2).collect());
    assert_eq!(
        distinct(placement.shards.iter().map(|shard| shard.core)),
        32
    );
    // Shard ids are grouped by node: 0-7 on node 0, 8-15 on node 1, ...
    for shard in &placement.shards {
        assert_eq!(shard.numa_node, shard.shard / 8, "{placement}");
    }
    assert!(placement
        .shards
        .iter()
        .enumerate()
        .all(|(index, shard)| shard.shard == index));
}

#[test]
fn exact_four_on_two_packages_of_two_nodes_uses_four_nodes() {
    let topology = checked_in("pack2-numa2-core8-pu2.xml");
    let placement = place_all(&topology, ShardCount::Exact(4)).unwrap();
    assert_eq!(
        placement
            .shards_per_numa_node()
            .into_values()
            .collect::<Vec<_>>(),
        [1; 4]
    );
    assert_eq!(placement.cpus(), cpus("0,16,32,48"));
}

#[test]
fn exact_two_uses_both_packages() {
    let topology = checked_in("pack2-numa2-core8-pu2.xml");
    let placement = place_all(&topology, ShardCount::Exact(2)).unwrap();
    assert_eq!(
        distinct(placement.shards.iter().map(|shard| shard.package)),
        2
    );
}

#[test]
fn exact_on_four_packages_balances_nodes_and_packages() {
    let topology = checked_in("pack4-numa2-core8-pu2.xml");
    let placement = place_all(&topology, ShardCount::Exact(12)).unwrap();
    let per_node: Vec<usize> = placement.shards_per_numa_node().into_values().collect();
    assert_eq!(per_node.len(), 8);
    assert!(
        per_node.iter().all(|&count| count == 1 || count == 2),
        "{per_node:?}"
    );
    let mut per_package = [0usize; 4];
    for shard in &placement.shards {
        per_package[shard.package] += 1;
    }
    assert_eq!(per_package, [3, 3, 3, 3]);
}

#[test]
fn too_many_shards_names_both_numbers() {
    let topology = checked_in("pack1-core4-pu2-linux-smt.xml");
    let error = place_all(&topology, ShardCount::Exact(5)).unwrap_err();
    assert_eq!(
        error,
        PlacementError::TooManyShards {
            requested: 5,
            usable_cores: 4
        }
    );
    let message = error.to_string();
    assert!(message.contains('5') && message.contains('4'), "{message}");
}

#[test]
fn zero_shards_is_an_error() {
    let topology = checked_in("pack1-core4-pu2-linux-smt.xml");
    assert_eq!(
        place_all(&topology, ShardCount::Exact(0)),
        Err(PlacementError::ZeroShards)
    );
}

#[test]
fn mask_that_excludes_cores_leaves_them_out() {
    let topology = checked_in("pack1-core4-pu2-linux-smt.xml");
    // Cores 0 and 1 are CPUs {0,4} and {1,5}: excluded entirely.
    let placement = place(&topology, &request(ShardCount::Auto, cpus("2-3,6-7"))).unwrap();
    assert_eq!(placement.cpus(), cpus("2-3"));
    let error = place(&topology, &request(ShardCount::Exact(3), cpus("2-3,6-7"))).unwrap_err();
    assert_eq!(
        error,
        PlacementError::TooManyShards {
            requested: 3,
            usable_cores: 2
        }
    );
}

#[test]
fn mask_with_only_the_second_hyperthread_uses_that_thread() {
    let topology = checked_in("pack1-core4-pu2-linux-smt.xml");
    // Core 0 only through CPU 4 (its sibling 0 is excluded); cores 1-3 through both.
    let placement = place(&topology, &request(ShardCount::Auto, cpus("1-7"))).unwrap();
    assert_eq!(placement.cpus(), cpus("1-4"));
    let on_core_0: Vec<usize> = placement
        .shards
        .iter()
        .filter(|shard| shard.core == 0)
        .map(|shard| shard.cpu)
        .collect();
    assert_eq!(on_core_0, [4]);
}

#[test]
fn cpuset_restriction_takes_one_pu_per_core() {
    let topology = checked_in("pack2-numa2-core8-pu2.xml");
    let mut with_cpuset = request(ShardCount::Auto, topology.cpus());
    with_cpuset.cpuset = Some(cpus("2-7,10"));
    // Cores {2,3}, {4,5}, {6,7} and {10,11}.
    let placement = place(&topology, &with_cpuset).unwrap();
    assert_eq!(placement.cpus(), cpus("2,4,6,10"));
    assert_eq!(
        placement
            .shards
            .iter()
            .map(|shard| shard.core)
            .collect::<Vec<_>>(),
        [1, 2, 3, 5]
    );
}

#[test]
fn empty_affinity_is_an_error() {
    let topology = checked_in("pack2-numa2-core8-pu2.xml");
    assert_eq!(
        place(&topology, &request(ShardCount::Auto, CpuSet::new())),
        Err(PlacementError::EmptyAffinity)
    );
}

#[test]
fn cpuset_errors_name_the_cpus() {
    let topology = checked_in("pack1-core4-pu2-linux-smt.xml");
    let mut bad = request(ShardCount::Auto, cpus("0-3"));
    bad.cpuset = Some(cpus("6-9"));
    assert_eq!(
        place(&topology, &bad),
        Err(PlacementError::CpusetOutsideMachine { cpus: cpus("8-9") })
    );
    bad.cpuset = Some(cpus("4-7"));
    let error = place(&topology, &bad).unwrap_err();
    assert_eq!(
        error.to_string(),
        "--cpuset 4-7 and the affinity mask 0-3 share no CPU of this machine"
    );
    bad.cpuset = Some(CpuSet::new());
    assert_eq!(place(&topology, &bad), Err(PlacementError::EmptyCpuset));
    let outside = request(ShardCount::Auto, cpus("100"));
    assert!(matches!(
        place(&topology, &outside),
        Err(PlacementError::AffinityOutsideMachine { .. })
    ));
}

#[test]
fn duplicate_cpus_in_a_hand_made_topology_are_rejected() {
    let mut topology = checked_in("pack1-core4-pu2-linux-smt.xml");
    let copy = topology.pus[3];
    topology.pus.push(copy);
    assert_eq!(
        place_all(&topology, ShardCount::Auto),
        Err(PlacementError::DuplicateCpu { cpu: copy.cpu })
    );
}

#[test]
fn display_has_a_header_and_one_line_per_shard() {
    let topology = checked_in("pack2-numa2-core8-pu2.xml");
    let placement = place_all(&topology, ShardCount::Exact(4)).unwrap();
    let text = placement.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0], "shard → cpu → core → NUMA node → package");
    assert_eq!(lines[4], "    3 →  48 →   24 →         3 →       1");
}

#[test]
fn this_machine_places_with_its_own_affinity() {
    let topology = Topology::from_system().expect("live machine");
    let affinity = dataplane_topology::current_affinity().expect("affinity");
    let placement = place(&topology, &request(ShardCount::Auto, affinity.clone())).unwrap();
    assert!(!placement.shards.is_empty());
    assert!(placement.cpus().iter().all(|cpu| affinity.contains(cpu)));
}
