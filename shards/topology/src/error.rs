//! The two error types of this crate: reading the machine, and placing shards on it.

use std::path::PathBuf;

use crate::CpuSet;

/// Reading a CPU list, the affinity mask or the machine's topology failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A CPU list such as `"2-7,10"` had a token that is not `N` or `A-B` with `A <= B`.
    #[error("invalid CPU list {input:?}: bad token {token:?}: {reason}")]
    InvalidCpuList {
        /// The whole list as given.
        input: String,
        /// The comma-separated token that could not be read.
        token: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A CPU index is at or above the largest index this crate accepts.
    #[error("CPU index {cpu} is out of range: indexes must be below {cpu_index_limit}")]
    CpuIndexTooLarge {
        /// The offending index.
        cpu: usize,
        /// [`crate::CPU_INDEX_LIMIT`].
        cpu_index_limit: usize,
    },
    /// `sched_getaffinity` failed.
    #[error("sched_getaffinity failed (mask of {mask_bytes} bytes): {source}")]
    Affinity {
        /// Size of the last mask buffer tried.
        mask_bytes: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// The linked libhwloc is not of the 2.x ABI this crate's declarations assume.
    #[error("libhwloc API version {found:#x} is not 2.x (this crate needs 0x20000..0x30000)")]
    UnsupportedHwlocVersion {
        /// `hwloc_get_api_version()` of the loaded library.
        found: u32,
    },
    /// An hwloc call failed while building a topology.
    #[error("hwloc: {call} failed for {input}: {source}")]
    Hwloc {
        /// The C function that failed.
        call: &'static str,
        /// What we asked hwloc to read: "this system", an XML path or a synthetic description.
        input: String,
        /// `errno` after the call.
        source: std::io::Error,
    },
    /// The XML path contains a NUL byte and cannot be passed to hwloc.
    #[error("XML path {path:?} contains a NUL byte")]
    PathWithNul {
        /// The path given.
        path: PathBuf,
    },
    /// The synthetic description contains a NUL byte and cannot be passed to hwloc.
    #[error("synthetic description {description:?} contains a NUL byte")]
    SyntheticWithNul {
        /// The description given.
        description: String,
    },
    /// hwloc reported a topology level that is present more than once (never for PU, Core or
    /// Package in hwloc 2.x; checked rather than assumed).
    #[error("hwloc reports {object_type} objects at several depths")]
    AmbiguousDepth {
        /// The object type, as hwloc names it.
        object_type: &'static str,
    },
    /// hwloc gave a topology without any PU.
    #[error("hwloc found no processing unit (PU) in {input}")]
    NoProcessingUnits {
        /// What was read.
        input: String,
    },
    /// A PU has no NUMA node in its nodeset (hwloc 2.x always attaches one).
    #[error("CPU {cpu} has no NUMA node in its hwloc nodeset")]
    PuWithoutNumaNode {
        /// The PU's OS index.
        cpu: usize,
    },
    /// A PU's cpuset is empty, infinite or does not name the PU itself.
    #[error("PU with OS index {cpu} has an inconsistent hwloc cpuset")]
    InconsistentCpuset {
        /// The PU's OS index.
        cpu: usize,
    },
}

/// [`crate::place`] could not place the requested shards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// `ShardCount::Exact(0)` was requested.
    #[error("zero shards requested: at least one shard is needed")]
    ZeroShards,
    /// More shards were requested than there are usable physical cores.
    #[error(
        "{requested} shards requested but only {usable_cores} usable physical cores \
         (one shard per core; hyperthread siblings are not used twice)"
    )]
    TooManyShards {
        /// Shards asked for.
        requested: usize,
        /// Physical cores with at least one usable PU.
        usable_cores: usize,
    },
    /// The process affinity mask is empty.
    #[error("the process affinity mask is empty")]
    EmptyAffinity,
    /// The `--cpuset` restriction is empty.
    #[error("the --cpuset restriction is empty")]
    EmptyCpuset,
    /// The `--cpuset` restriction names CPUs the machine does not have.
    #[error("--cpuset names CPUs {cpus} that this machine does not have")]
    CpusetOutsideMachine {
        /// The CPUs of the cpuset that are not PUs of the topology.
        cpus: CpuSet,
    },
    /// The `--cpuset` restriction and the process affinity mask have no usable CPU in common.
    #[error("--cpuset {cpuset} and the affinity mask {affinity} share no CPU of this machine")]
    CpusetDisjointFromAffinity {
        /// The cpuset given.
        cpuset: CpuSet,
        /// The process affinity mask.
        affinity: CpuSet,
    },
    /// The affinity mask shares no CPU with the topology.
    #[error("the affinity mask {affinity} contains no CPU of the topology {machine}")]
    AffinityOutsideMachine {
        /// The process affinity mask.
        affinity: CpuSet,
        /// All PUs of the topology.
        machine: CpuSet,
    },
    /// The topology lists the same CPU twice.
    #[error("the topology lists CPU {cpu} more than once")]
    DuplicateCpu {
        /// The CPU listed twice.
        cpu: usize,
    },
}

/// A shard count string was neither `auto` nor a positive integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard count {input:?}: expected \"auto\" or an integer >= 1")]
pub struct ParseShardCountError {
    /// The text given.
    pub input: String,
}
