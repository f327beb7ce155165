//! The pure placement function: which CPU each shard runs on.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::{CpuSet, ParseShardCountError, PlacementError, Pu, Topology};

/// How many shards to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShardCount {
    /// One shard per usable physical core (the default).
    #[default]
    Auto,
    /// Exactly this many shards; more than the usable cores is an error.
    Exact(usize),
}

impl FromStr for ShardCount {
    type Err = ParseShardCountError;

    /// `"auto"` (any case) or a decimal integer `>= 1`; surrounding whitespace is ignored.
    fn from_str(input: &str) -> Result<ShardCount, ParseShardCountError> {
        let text = input.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(ShardCount::Auto);
        }
        let is_decimal = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
        match text.parse::<usize>() {
            Ok(count) if is_decimal && count >= 1 => Ok(ShardCount::Exact(count)),
            _ => Err(ParseShardCountError {
                input: input.to_owned(),
            }),
        }
    }
}

impl fmt::Display for ShardCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardCount::Auto => f.write_str("auto"),
            ShardCount::Exact(count) => write!(f, "{count}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ShardCount {
    /// From `"auto"`, a positive integer, or a string holding one (`"4"`).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShardCountVisitor)
    }
}

impl serde::Serialize for ShardCount {
    /// `"auto"` or the integer, so that it reads back through `Deserialize`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ShardCount::Auto => serializer.serialize_str("auto"),
            ShardCount::Exact(count) => serializer.serialize_u64(*count as u64),
        }
    }
}

struct ShardCountVisitor;

impl serde::de::Visitor<'_> for ShardCountVisitor {
    type Value = ShardCount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"auto\" or an integer >= 1")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ShardCount, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, count: u64) -> Result<ShardCount, E> {
        match usize::try_from(count) {
            Ok(count) if count >= 1 => Ok(ShardCount::Exact(count)),
            _ => Err(E::invalid_value(
                serde::de::Unexpected::Unsigned(count),
                &self,
            )),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, count: i64) -> Result<ShardCount, E> {
        match u64::try_from(count) {
            Ok(count) => self.visit_u64(count),
            Err(_) => Err(E::invalid_value(
                serde::de::Unexpected::Signed(count),
                &self,
            )),
        }
    }
}

/// What [`place`] is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRequest {
    /// How many shards.
    pub shards: ShardCount,
    /// The `--cpuset` restriction, if given: only these CPUs may be used.
    pub cpuset: Option<CpuSet>,
    /// The process affinity mask, read once at start-up with [`crate::current_affinity`].
    pub affinity: CpuSet,
}

/// Where one shard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardPlacement {
    /// Shard index, `0..shards`.
    pub shard: usize,
    /// OS index of the CPU (PU) to pin the shard's thread to.
    pub cpu: usize,
    /// Logical index of the physical core (unique machine-wide).
    pub core: usize,
    /// OS index of the CPU's NUMA node.
    pub numa_node: usize,
    /// Logical index of the CPU's package.
    pub package: usize,
}

/// The result of [`place`]: one entry per shard, in shard order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `shards[i].shard == i`.
    pub shards: Vec<ShardPlacement>,
}

impl Placement {
    /// The CPUs used, one per shard.
    pub fn cpus(&self) -> CpuSet {
        self.shards.iter().map(|shard| shard.cpu).collect()
    }

    /// Number of shards on each NUMA node that has any.
    pub fn shards_per_numa_node(&self) -> BTreeMap<usize, usize> {
        let mut counts = BTreeMap::new();
        for shard in &self.shards {
            *counts.entry(shard.numa_node).or_insert(0) += 1;
        }
        counts
    }
}

impl fmt::Display for Placement {
    /// One header line, then one line per shard, for start-up logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard → cpu → core → NUMA node → package")?;
        for shard in &self.shards {
            write!(
                f,
                "\n{:>5} → {:>3} → {:>4} → {:>9} → {:>7}",
                shard.shard, shard.cpu, shard.core, shard.numa_node, shard.package
            )?;
        }
        Ok(())
    }
}

/// Places shards on CPUs. Pure and deterministic: the same input gives the same output.
///
/// - Usable CPUs are the topology's PUs that are in `request.affinity` and in
///   `request.cpuset` (if given).
/// - Usable cores are cores with at least one usable CPU. Each shard gets one core, and runs
///   on that core's lowest-numbered usable CPU: two shards never share a core (hyperthread
///   siblings share execution units and L1/L2, which hurts tail latency).
/// - [`ShardCount::Auto`] takes every usable core; [`ShardCount::Exact`] takes that many,
///   spread so that per-NUMA-node counts differ by at most one (unless a node runs out of
///   cores), then per-package counts likewise.
/// - Shard indexes are grouped by NUMA node (ascending node, then core), so neighbouring
///   shard ids share a node, as in Seastar.
pub fn place(topology: &Topology, request: &PlacementRequest) -> Result<Placement, PlacementError> {
    if request.shards == ShardCount::Exact(0) {
        return Err(PlacementError::ZeroShards);
    }
    if request.affinity.is_empty() {
        return Err(PlacementError::EmptyAffinity);
    }
    let usable_cpus = usable_cpus(topology, request)?;
    let cores = usable_cores(topology, &usable_cpus);
    let shard_count = match request.shards {
        ShardCount::Auto => cores.len(),
        ShardCount::Exact(requested) if requested > cores.len() => {
            return Err(PlacementError::TooManyShards {
                requested,
                usable_cores: cores.len(),
            })
        }
        ShardCount::Exact(requested) => requested,
    };
    let mut chosen = choose_balanced(&cores, shard_count);
    chosen.sort_by_key(|pu| (pu.numa_node, pu.package, pu.core));
    let shards = chosen
        .iter()
        .enumerate()
        .map(|(shard, pu)| ShardPlacement {
            shard,
            cpu: pu.cpu,
            core: pu.core,
            numa_node: pu.numa_node,
            package: pu.package,
        })
        .collect();
    Ok(Placement { shards })
}

/// Topology PUs ∩ affinity ∩ cpuset, with an error that says which input emptied it.
fn usable_cpus(topology: &Topology, request: &PlacementRequest) -> Result<CpuSet, PlacementError> {
    let machine = topology.cpus();
    if machine.len() != topology.pus.len() {
        let mut seen = CpuSet::new();
        if let Some(pu) = topology.pus.iter().find(|pu| !seen.insert(pu.cpu)) {
            return Err(PlacementError::DuplicateCpu { cpu: pu.cpu });
        }
    }
    let allowed = machine.intersection(&request.affinity);
    let Some(cpuset) = &request.cpuset else {
        if allowed.is_empty() {
            return Err(PlacementError::AffinityOutsideMachine {
                affinity: request.affinity.clone(),
                machine,
            });
        }
        return Ok(allowed);
    };
    if cpuset.is_empty() {
        return Err(PlacementError::EmptyCpuset);
    }
    let outside = cpuset.difference(&machine);
    if !outside.is_empty() {
        return Err(PlacementError::CpusetOutsideMachine { cpus: outside });
    }
    let usable = allowed.intersection(cpuset);
    if usable.is_empty() {
        return Err(PlacementError::CpusetDisjointFromAffinity {
            cpuset: cpuset.clone(),
            affinity: request.affinity.clone(),
        });
    }
    Ok(usable)
}

/// For each core with a usable CPU, its lowest usable CPU; ascending by core.
fn usable_cores<'t>(topology: &'t Topology, usable_cpus: &CpuSet) -> Vec<&'t Pu> {
    let mut lowest_by_core: BTreeMap<usize, &Pu> = BTreeMap::new();
    for pu in topology
        .pus
        .iter()
        .filter(|pu| usable_cpus.contains(pu.cpu))
    {
        lowest_by_core
            .entry(pu.core)
            .and_modify(|lowest| {
                if pu.cpu < lowest.cpu {
                    *lowest = pu;
                }
            })
            .or_insert(pu);
    }
    lowest_by_core.into_values().collect()
}

/// Picks `count` cores: each pick comes from a NUMA node with the fewest picks so far, ties
/// broken by the fewest picks on the package of the node's next core, then by node index; in
/// a node, cores go in ascending order. Node counts therefore differ by at most one among
/// nodes that still have cores.
fn choose_balanced<'t>(cores: &[&'t Pu], count: usize) -> Vec<&'t Pu> {
    let mut remaining_by_node: BTreeMap<usize, std::collections::VecDeque<&Pu>> = BTreeMap::new();
    for pu in cores {
        remaining_by_node
            .entry(pu.numa_node)
            .or_default()
            .push_back(pu);
    }
    let mut picks_by_node: BTreeMap<usize, usize> = BTreeMap::new();
    let mut picks_by_package: BTreeMap<usize, usize> = BTreeMap::new();
    let mut chosen = Vec::with_capacity(count);
    while chosen.len() < count {
        let next_node = remaining_by_node
            .iter()
            .filter_map(|(&node, remaining)| {
                let next = remaining.front()?;
                let node_picks = picks_by_node.get(&node).copied().unwrap_or(0);
                let package_picks = picks_by_package.get(&next.package).copied().unwrap_or(0);
                Some((node_picks, package_picks, node))
            })
            .min()
            .map(|(_, _, node)| node);
        // `count <= cores.len()`, so some node still has a core while we are short.
        let Some(pu) = next_node.and_then(|node| remaining_by_node.get_mut(&node)?.pop_front())
        else {
            break;
        };
        *picks_by_node.entry(pu.numa_node).or_insert(0) += 1;
        *picks_by_package.entry(pu.package).or_insert(0) += 1;
        chosen.push(pu);
    }
    chosen
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A panic is the failure report in tests.
mod tests {
    use super::*;

    #[test]
    fn shard_count_parses_auto_and_positive_integers() {
        assert_eq!("auto".parse(), Ok(ShardCount::Auto));
        assert_eq!(" AUTO ".parse(), Ok(ShardCount::Auto));
        assert_eq!("4".parse(), Ok(ShardCount::Exact(4)));
        for bad in [
            "0",
            "-1",
            "+3",
            "",
            "four",
            "1.5",
            "99999999999999999999999",
        ] {
            assert!(bad.parse::<ShardCount>().is_err(), "{bad:?}");
        }
        assert_eq!(ShardCount::Auto.to_string(), "auto");
        assert_eq!(ShardCount::Exact(12).to_string(), "12");
    }

    #[test]
    fn shard_count_deserializes_from_string_or_integer() {
        let parse = |json: &str| serde_json::from_str::<ShardCount>(json);
        assert_eq!(parse("\"auto\"").unwrap(), ShardCount::Auto);
        assert_eq!(parse("8").unwrap(), ShardCount::Exact(8));
        assert_eq!(parse("\"8\"").unwrap(), ShardCount::Exact(8));
        assert!(parse("0").is_err());
        assert!(parse("-2").is_err());
        assert!(parse("\"many\"").is_err());
        assert!(parse("1.5").is_err());
        let json = serde_json::to_string(&ShardCount::Exact(3)).unwrap();
        assert_eq!(parse(&json).unwrap(), ShardCount::Exact(3));
    }

    #[test]
    fn display_is_one_line_per_shard_under_a_header() {
        let placement = Placement {
            shards: vec![ShardPlacement {
                shard: 0,
                cpu: 2,
                core: 1,
                numa_node: 0,
                package: 0,
            }],
        };
        let text = placement.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "shard → cpu → core → NUMA node → package");
        assert_eq!(lines[1], "    0 →   2 →    1 →         0 →       0");
    }
}
