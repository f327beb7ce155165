//! Properties of `place()` over random machine shapes and random masks, checked against a
//! simple model of what "usable" means.

use std::collections::{BTreeMap, BTreeSet};

use dataplane_topology::{place, CpuSet, PlacementError, PlacementRequest, ShardCount, Topology};
use proptest::prelude::*;

/// A random synthetic shape: packages × NUMA nodes per package × cores per node × PUs per core.
fn shapes() -> impl Strategy<Value = String> {
    (1usize..=4, 1usize..=3, 1usize..=6, 1usize..=4).prop_map(|(packages, nodes, cores, pus)| {
        format!("pack:{packages} numa:{nodes} core:{cores} pu:{pus}")
    })
}

/// A topology, an affinity mask, an optional cpuset (both random subsets of the machine's
/// CPUs, from bit masks) and a shard count.
fn cases() -> impl Strategy<Value = (Topology, CpuSet, Option<CpuSet>, ShardCount)> {
    shapes().prop_flat_map(|description| {
        let topology = Topology::from_synthetic(&description).expect("synthetic shape loads");
        let cpu_count = topology.pus.len();
        (
            Just(topology),
            proptest::collection::vec(any::<bool>(), cpu_count),
            proptest::option::of(proptest::collection::vec(any::<bool>(), cpu_count)),
            prop_oneof![
                Just(ShardCount::Auto),
                (0usize..=20).prop_map(ShardCount::Exact)
            ],
        )
            .prop_map(|(topology, affinity_bits, cpuset_bits, shards)| {
                let subset = |bits: &[bool]| -> CpuSet {
                    topology
                        .pus
                        .iter()
                        .zip(bits)
                        .filter(|(_, &keep)| keep)
                        .map(|(pu, _)| pu.cpu)
                        .collect()
                };
                let affinity = subset(&affinity_bits);
                let cpuset = cpuset_bits.as_deref().map(subset);
                (topology, affinity, cpuset, shards)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn placement_is_valid_balanced_and_deterministic(
        (topology, affinity, cpuset, shards) in cases()
    ) {
        let request = PlacementRequest { shards, cpuset: cpuset.clone(), affinity: affinity.clone() };
        let result = place(&topology, &request);
        prop_assert_eq!(&result, &place(&topology, &request), "not deterministic");

        // The model: usable CPUs and, per NUMA node, the cores that have one.
        let usable: CpuSet = topology
            .pus
            .iter()
            .map(|pu| pu.cpu)
            .filter(|&cpu| affinity.contains(cpu))
            .filter(|&cpu| cpuset.as_ref().is_none_or(|cpuset| cpuset.contains(cpu)))
            .collect();
        let mut usable_cores_by_node: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for pu in topology.pus.iter().filter(|pu| usable.contains(pu.cpu)) {
            usable_cores_by_node.entry(pu.numa_node).or_default().insert(pu.core);
        }
        let usable_cores: usize = usable_cores_by_node.values().map(BTreeSet::len).sum();

        let placement = match result {
            Ok(placement) => placement,
            Err(error) => {
                let expected_error = usable.is_empty()
                    || shards == ShardCount::Exact(0)
                    || matches!(shards, ShardCount::Exact(n) if n > usable_cores)
                    || cpuset.as_ref().is_some_and(CpuSet::is_empty);
                prop_assert!(expected_error, "unexpected {:?}", error);
                if let PlacementError::TooManyShards { requested, usable_cores: reported } = error {
                    prop_assert_eq!(ShardCount::Exact(requested), shards);
                    prop_assert_eq!(reported, usable_cores);
                }
                return Ok(());
            }
        };

        let expected_count = match shards {
            ShardCount::Auto => usable_cores,
            ShardCount::Exact(count) => count,
        };
        prop_assert_eq!(placement.shards.len(), expected_count);
        let cores: BTreeSet<usize> = placement.shards.iter().map(|shard| shard.core).collect();
        prop_assert_eq!(cores.len(), placement.shards.len(), "two shards on one core");
        for (index, shard) in placement.shards.iter().enumerate() {
            prop_assert_eq!(shard.shard, index);
            prop_assert!(usable.contains(shard.cpu), "CPU {} is not usable", shard.cpu);
            let pu = topology.pu(shard.cpu).expect("placed CPU is in the topology");
            prop_assert_eq!((pu.core, pu.numa_node, pu.package), (shard.core, shard.numa_node, shard.package));
            // The lowest usable PU of its core.
            let lowest = topology
                .pus
                .iter()
                .filter(|other| other.core == pu.core && usable.contains(other.cpu))
                .map(|other| other.cpu)
                .min();
            prop_assert_eq!(lowest, Some(shard.cpu));
        }

        // Balanced within one, except nodes that ran out of usable cores.
        let per_node = placement.shards_per_numa_node();
        for (node, node_cores) in &usable_cores_by_node {
            let count = per_node.get(node).copied().unwrap_or(0);
            let full = count == node_cores.len();
            for &other in per_node.values() {
                prop_assert!(full || count + 1 >= other, "node {} has {} vs {} ({:?})", node, count, other, per_node);
            }
        }

        // Shard ids are grouped by node: node indexes never decrease.
        prop_assert!(placement.shards.windows(2).all(|pair| pair[0].numa_node <= pair[1].numa_node));
    }
}
