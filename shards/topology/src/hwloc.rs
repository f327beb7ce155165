//! Reading hwloc topologies into the plain [`Topology`] model.
//!
//! Why this file looks the way it does is in docs/decisions/why-hwloc-workaround.md. In short:
//!
//! - The live machine is read through the `hwloc2` crate (`hwloc2::Topology::new`).
//! - hwloc2 2.2.0 cannot load an XML file or a synthetic description (it has no call between
//!   `hwloc_topology_init` and `hwloc_topology_load`), so [`ffi`] declares the few libhwloc
//!   functions for that and for listing objects by depth. Objects are then read through
//!   hwloc2's `TopologyObject` in both cases, so one function ([`build`]) turns objects into
//!   a [`Topology`].
//! - NUMA nodes are never listed (hwloc2's `objects_with_type(NUMANode)` panics on hwloc 2.x's
//!   negative memory depth): each PU's NUMA node is the lowest OS index in its `nodeset`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

use hwloc2::{ObjectType, TopologyObject, TypeDepthError};

use crate::{Pu, Topology, TopologyError, CPU_INDEX_LIMIT};

/// Objects of the three levels we read, each in hwloc's logical order.
struct Levels<'topology> {
    packages: Vec<&'topology TopologyObject>,
    cores: Vec<&'topology TopologyObject>,
    pus: Vec<&'topology TopologyObject>,
}

/// `hwloc_obj.os_index` of objects without an OS index (`HWLOC_UNKNOWN_INDEX`).
const HWLOC_UNKNOWN_INDEX: u32 = u32::MAX;

pub(crate) fn from_system() -> Result<Topology, TopologyError> {
    check_api_version()?;
    let input = "this system";
    let topology = hwloc2::Topology::new().ok_or_else(|| TopologyError::Hwloc {
        call: "hwloc_topology_init/hwloc_topology_load",
        input: input.to_owned(),
        source: std::io::Error::last_os_error(),
    })?;
    let objects = |object_type: ObjectType, name: &'static str| {
        match topology.depth_for_type(&object_type) {
            Ok(depth) => Ok(topology.objects_at_depth(depth)),
            Err(TypeDepthError::TypeDepthMultiple) => {
                Err(TopologyError::AmbiguousDepth { object_type: name })
            }
            // Absent level (e.g. no Core objects): the builder falls back.
            Err(_) => Ok(Vec::new()),
        }
    };
    let levels = Levels {
        packages: objects(ObjectType::Package, "Package")?,
        cores: objects(ObjectType::Core, "Core")?,
        pus: objects(ObjectType::PU, "PU")?,
    };
    build(&levels, input)
}

pub(crate) fn from_xml_file(path: &Path) -> Result<Topology, TopologyError> {
    let c_path =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| TopologyError::PathWithNul {
            path: path.to_owned(),
        })?;
    let input = format!("XML file {}", path.display());
    let raw = RawTopology::load(&input, "hwloc_topology_set_xml", |topology| {
        // SAFETY: `topology` is initialised and not yet loaded, as set_xml requires;
        // `c_path` is a NUL-terminated string that outlives the call (hwloc copies it).
        unsafe { ffi::hwloc_topology_set_xml(topology, c_path.as_ptr()) }
    })?;
    build(&raw.levels()?, &input)
}

pub(crate) fn from_synthetic(description: &str) -> Result<Topology, TopologyError> {
    let c_description = CString::new(description).map_err(|_| TopologyError::SyntheticWithNul {
        description: description.to_owned(),
    })?;
    let input = format!("synthetic description {description:?}");
    let raw = RawTopology::load(&input, "hwloc_topology_set_synthetic", |topology| {
        // SAFETY: `topology` is initialised and not yet loaded, as set_synthetic requires;
        // `c_description` is NUL-terminated and outlives the call (hwloc parses it at once).
        unsafe { ffi::hwloc_topology_set_synthetic(topology, c_description.as_ptr()) }
    })?;
    build(&raw.levels()?, &input)
}

/// Turns hwloc objects into the plain model: one [`Pu`] per PU object, sorted by CPU.
fn build(levels: &Levels<'_>, input: &str) -> Result<Topology, TopologyError> {
    if levels.pus.is_empty() {
        return Err(TopologyError::NoProcessingUnits {
            input: input.to_owned(),
        });
    }
    let core_of_cpu = index_by_cpu(&levels.cores);
    let package_of_cpu = index_by_cpu(&levels.packages);
    let core_count = levels.cores.len();
    let mut pus = Vec::with_capacity(levels.pus.len());
    for pu in &levels.pus {
        let os_index = pu.os_index();
        if os_index == HWLOC_UNKNOWN_INDEX {
            return Err(TopologyError::InconsistentCpuset {
                cpu: os_index as usize,
            });
        }
        let cpu = os_index as usize;
        if cpu >= CPU_INDEX_LIMIT {
            return Err(TopologyError::CpuIndexTooLarge {
                cpu,
                cpu_index_limit: CPU_INDEX_LIMIT,
            });
        }
        let cpuset_first = pu.cpuset().map(|cpuset| cpuset.first());
        if cpuset_first != Some(os_index as i32) {
            return Err(TopologyError::InconsistentCpuset { cpu });
        }
        // hwloc 2.x: a PU's nodeset holds the NUMA nodes local to it. Several nodes (DDR plus
        // HBM or CXL memory) are possible; Linux numbers the DDR nodes first, so the lowest
        // index is the PU's "home" node.
        let first_node = pu.nodeset().map_or(-1, |nodeset| nodeset.first());
        let numa_node =
            usize::try_from(first_node).map_err(|_| TopologyError::PuWithoutNumaNode { cpu })?;
        // A PU outside any Core (a topology without a Core level) is its own core, numbered
        // after the real cores so that core indexes stay unique.
        let core = core_of_cpu
            .get(&cpu)
            .copied()
            .unwrap_or(core_count + pu.logical_index() as usize);
        let package = package_of_cpu.get(&cpu).copied().unwrap_or(0);
        pus.push(Pu {
            cpu,
            core,
            numa_node,
            package,
        });
    }
    pus.sort_by_key(|pu| pu.cpu);
    Ok(Topology { pus })
}

/// Maps each CPU to the logical index of the object (core or package) whose cpuset holds it.
fn index_by_cpu(objects: &[&TopologyObject]) -> BTreeMap<usize, usize> {
    let mut index_of_cpu = BTreeMap::new();
    for object in objects {
        let Some(cpuset) = object.cpuset() else {
            continue;
        };
        // An infinite bitmap has no last bit (-1); iterating it would never end.
        if cpuset.last() < 0 {
            continue;
        }
        for cpu in cpuset {
            index_of_cpu.insert(cpu as usize, object.logical_index() as usize);
        }
    }
    index_of_cpu
}

fn check_api_version() -> Result<(), TopologyError> {
    // SAFETY: hwloc_get_api_version takes no argument and only returns a constant.
    let found = unsafe { ffi::hwloc_get_api_version() };
    if (0x20000..0x30000).contains(&found) {
        Ok(())
    } else {
        Err(TopologyError::UnsupportedHwlocVersion { found })
    }
}

/// A topology we initialised and loaded ourselves; destroyed on drop.
struct RawTopology(NonNull<ffi::HwlocTopology>);

impl RawTopology {
    /// `hwloc_topology_init`, then `configure` (set_xml or set_synthetic), then load.
    fn load(
        input: &str,
        configure_call: &'static str,
        configure: impl FnOnce(*mut ffi::HwlocTopology) -> libc::c_int,
    ) -> Result<RawTopology, TopologyError> {
        check_api_version()?;
        let failed = |call: &'static str| TopologyError::Hwloc {
            call,
            input: input.to_owned(),
            source: std::io::Error::last_os_error(),
        };
        let mut pointer: *mut ffi::HwlocTopology = std::ptr::null_mut();
        // SAFETY: `pointer` is a valid place for hwloc to store the new topology.
        if unsafe { ffi::hwloc_topology_init(&mut pointer) } != 0 {
            return Err(failed("hwloc_topology_init"));
        }
        let Some(topology) = NonNull::new(pointer) else {
            return Err(failed("hwloc_topology_init"));
        };
        // From here on, Drop destroys the topology on every path.
        let raw = RawTopology(topology);
        if configure(raw.0.as_ptr()) != 0 {
            return Err(failed(configure_call));
        }
        // SAFETY: initialised and configured, not yet loaded.
        if unsafe { ffi::hwloc_topology_load(raw.0.as_ptr()) } != 0 {
            return Err(failed("hwloc_topology_load"));
        }
        Ok(raw)
    }

    fn levels(&self) -> Result<Levels<'_>, TopologyError> {
        Ok(Levels {
            packages: self.objects(ffi::HWLOC_OBJ_PACKAGE, "Package")?,
            cores: self.objects(ffi::HWLOC_OBJ_CORE, "Core")?,
            pus: self.objects(ffi::HWLOC_OBJ_PU, "PU")?,
        })
    }

    /// All objects of a normal (non-memory, non-I/O) type, or none if the level is absent.
    fn objects(
        &self,
        object_type: libc::c_int,
        name: &'static str,
    ) -> Result<Vec<&TopologyObject>, TopologyError> {
        // SAFETY: the topology is loaded; any type value is accepted.
        let depth = unsafe { ffi::hwloc_get_type_depth(self.0.as_ptr(), object_type) };
        if depth == ffi::HWLOC_TYPE_DEPTH_MULTIPLE {
            return Err(TopologyError::AmbiguousDepth { object_type: name });
        }
        if depth < 0 {
            return Ok(Vec::new());
        }
        // SAFETY: the topology is loaded and `depth` is a depth hwloc just gave us.
        let count = unsafe { ffi::hwloc_get_nbobjs_by_depth(self.0.as_ptr(), depth) };
        let mut objects = Vec::with_capacity(count as usize);
        for index in 0..count {
            // SAFETY: `index < count` objects exist at `depth` of this loaded topology.
            let object = unsafe { ffi::hwloc_get_obj_by_depth(self.0.as_ptr(), depth, index) };
            // SAFETY: a non-null `hwloc_obj` pointer of a loaded topology stays valid until
            // `hwloc_topology_destroy`, which only our Drop calls: the returned reference
            // borrows `self`, so it cannot outlive it. `hwloc2::TopologyObject` is hwloc2's
            // `#[repr(C)]` mirror of `struct hwloc_obj` (the same cast hwloc2 performs in
            // `objects_at_depth`); the fields we read through it (os_index, logical_index,
            // cpuset, nodeset) sit at the C offsets (checked in the decision doc).
            if let Some(object) = unsafe { object.cast::<TopologyObject>().as_ref() } {
                objects.push(object);
            }
        }
        Ok(objects)
    }
}

impl Drop for RawTopology {
    fn drop(&mut self) {
        // SAFETY: we own the topology (init succeeded) and destroy it exactly once; no
        // reference into it survives `self` (they borrow `self`).
        unsafe { ffi::hwloc_topology_destroy(self.0.as_ptr()) }
    }
}

/// The libhwloc 2.x calls hwloc2 2.2.0 does not expose. Signatures from hwloc.h (2.x).
mod ffi {
    use libc::{c_char, c_int, c_uint, c_void};

    /// `struct hwloc_topology`, opaque.
    #[repr(C)]
    pub(super) struct HwlocTopology {
        _opaque: [u8; 0],
    }

    /// `HWLOC_OBJ_PACKAGE` of `hwloc_obj_type_t` (hwloc 2.x).
    pub(super) const HWLOC_OBJ_PACKAGE: c_int = 1;
    /// `HWLOC_OBJ_CORE`.
    pub(super) const HWLOC_OBJ_CORE: c_int = 2;
    /// `HWLOC_OBJ_PU`.
    pub(super) const HWLOC_OBJ_PU: c_int = 3;
    /// `HWLOC_TYPE_DEPTH_MULTIPLE`.
    pub(super) const HWLOC_TYPE_DEPTH_MULTIPLE: c_int = -2;

    #[link(name = "hwloc")]
    extern "C" {
        pub(super) fn hwloc_get_api_version() -> c_uint;
        pub(super) fn hwloc_topology_init(topology: *mut *mut HwlocTopology) -> c_int;
        pub(super) fn hwloc_topology_set_xml(
            topology: *mut HwlocTopology,
            xml_path: *const c_char,
        ) -> c_int;
        pub(super) fn hwloc_topology_set_synthetic(
            topology: *mut HwlocTopology,
            description: *const c_char,
        ) -> c_int;
        pub(super) fn hwloc_topology_load(topology: *mut HwlocTopology) -> c_int;
        pub(super) fn hwloc_topology_destroy(topology: *mut HwlocTopology);
        pub(super) fn hwloc_get_type_depth(
            topology: *mut HwlocTopology,
            object_type: c_int,
        ) -> c_int;
        pub(super) fn hwloc_get_nbobjs_by_depth(
            topology: *mut HwlocTopology,
            depth: c_int,
        ) -> c_uint;
        pub(super) fn hwloc_get_obj_by_depth(
            topology: *mut HwlocTopology,
            depth: c_int,
            index: c_uint,
        ) -> *mut c_void;
    }
}
