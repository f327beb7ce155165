//! Defaults and hard bounds of every numeric setting, in one table.
//!
//! Each [`Bounds`] holds the default (the value `default.yaml` writes, which a test checks)
//! and the inclusive range that validation accepts. The relations between defaults and
//! between bounds are asserted at compile time at the end of this module, so a change to
//! one constant that breaks another cannot build.

/// Default value and accepted inclusive range of one numeric setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Value used when neither the file nor a flag sets the field.
    pub default: u64,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
    /// Unit named in error messages and docs ("frames", "bytes", ...).
    pub unit: &'static str,
}

impl Bounds {
    /// Whether `value` lies in `min..=max`.
    #[must_use]
    pub const fn contains(&self, value: u64) -> bool {
        self.min <= value && value <= self.max
    }
}

/// One kibibyte (1024 bytes).
pub const KIB: u64 = 1024;
/// One mebibyte (1024 KiB).
pub const MIB: u64 = 1024 * KIB;
/// One gibibyte (1024 MiB).
pub const GIB: u64 = 1024 * MIB;

/// `node.shards` when it is a number: at most this many shards (the ring matrix is N×N).
pub const SHARDS: Bounds = Bounds {
    default: 1,
    min: 1,
    max: 1024,
    unit: "shards",
};
/// Highest CPU index accepted in `node.cpuset` (Linux `NR_CPUS` tops out at 8192).
pub const CPU_INDEX_MAX: usize = 8191;

/// `node.memlock_bytes_min`: locked memory (RLIMIT_MEMLOCK) the node needs.
///
/// The default is 8 MiB, the limit systemd gives a session since v253, so a default
/// node starts on a stock distribution.
pub const MEMLOCK_BYTES_MIN: Bounds = Bounds {
    default: 8 * MIB,
    min: 512 * KIB,
    max: 1024 * GIB,
    unit: "bytes",
};
/// `node.io_memory_bytes`: glommio io_memory (registered io_uring buffers) per executor.
pub const IO_MEMORY_BYTES: Bounds = Bounds {
    default: 2 * MIB,
    min: 512 * KIB,
    max: GIB,
    unit: "bytes",
};
/// `node.io_memory_bytes` must be a multiple of this (the page size).
pub const IO_MEMORY_ALIGN_BYTES: u64 = 4 * KIB;

/// `shard.ring_capacity_frames`: per ordered shard pair; also a power of two.
pub const RING_CAPACITY_FRAMES: Bounds = Bounds {
    default: 1024,
    min: 2,
    max: 65_536,
    unit: "frames",
};
/// `shard.mailbox_capacity_frames`: per agent, all priority classes together.
pub const MAILBOX_CAPACITY_FRAMES: Bounds = Bounds {
    default: 1024,
    min: 1,
    max: 1 << 20,
    unit: "frames",
};
/// `shard.frame_pool_frames_max`: frames one shard may have in flight.
pub const FRAME_POOL_FRAMES_MAX: Bounds = Bounds {
    default: 65_536,
    min: 2,
    max: 1 << 24,
    unit: "frames",
};
/// `shard.frame_bytes_max`: largest frame, header included; absolute cap 1 MiB.
pub const FRAME_BYTES_MAX: Bounds = Bounds {
    default: 64 * KIB,
    min: 64,
    max: MIB,
    unit: "bytes",
};
/// `shard.poll_budget_messages`: handler calls per poll.
pub const POLL_BUDGET_MESSAGES: Bounds = Bounds {
    default: 256,
    min: 1,
    max: 65_536,
    unit: "messages",
};
/// `shard.ring_batch_frames`: frames drained per ring per poll.
pub const RING_BATCH_FRAMES: Bounds = Bounds {
    default: 64,
    min: 1,
    max: 65_536,
    unit: "frames",
};
/// `shard.starvation_limit_passes`: passes before a waiting lower class is served.
pub const STARVATION_LIMIT_PASSES: Bounds = Bounds {
    default: 32,
    min: 1,
    max: 65_536,
    unit: "passes",
};
/// `shard.agents_max`: agents one shard may host.
pub const AGENTS_MAX: Bounds = Bounds {
    default: 100_000,
    min: 1,
    max: 1 << 24,
    unit: "agents",
};
/// `shard.stall_threshold_us`: a handler call or poll longer than this is logged.
pub const STALL_THRESHOLD_US: Bounds = Bounds {
    default: 500,
    min: 1,
    max: 60_000_000,
    unit: "microseconds",
};

/// Longest agent id, in bytes.
pub const AGENT_ID_BYTES_MAX: usize = 64;
/// Longest `log.level` filter, in bytes.
pub const LOG_LEVEL_BYTES_MAX: usize = 4096;

/// `admin.listen` default: metrics and admin on loopback only.
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9090";
/// `log.level` default tracing filter.
pub const LOG_LEVEL_DEFAULT: &str = "info";

/// Every numeric setting, for the checks below.
const ALL: [Bounds; 12] = [
    SHARDS,
    MEMLOCK_BYTES_MIN,
    IO_MEMORY_BYTES,
    RING_CAPACITY_FRAMES,
    MAILBOX_CAPACITY_FRAMES,
    FRAME_POOL_FRAMES_MAX,
    FRAME_BYTES_MAX,
    POLL_BUDGET_MESSAGES,
    RING_BATCH_FRAMES,
    STARVATION_LIMIT_PASSES,
    AGENTS_MAX,
    STALL_THRESHOLD_US,
];

const fn all_defaults_in_bounds() -> bool {
    let mut i = 0;
    while i < ALL.len() {
        if ALL[i].min == 0 || !ALL[i].contains(ALL[i].default) {
            return false;
        }
        i += 1;
    }
    true
}

// Every default is accepted by its own bounds, and no setting may be zero.
const _: () = assert!(all_defaults_in_bounds());
// Fields stored as `usize` fit on 32-bit targets too.
const _: () = assert!(IO_MEMORY_BYTES.max <= u32::MAX as u64);
const _: () = assert!(FRAME_POOL_FRAMES_MAX.max <= u32::MAX as u64);
const _: () = assert!(AGENTS_MAX.max <= u32::MAX as u64);
// Ring capacity: powers of two so indices wrap with a mask.
const _: () = assert!(RING_CAPACITY_FRAMES.default.is_power_of_two());
const _: () = assert!(RING_CAPACITY_FRAMES.min.is_power_of_two());
const _: () = assert!(RING_CAPACITY_FRAMES.max.is_power_of_two());
// A ring batch never exceeds the ring it drains.
const _: () = assert!(RING_BATCH_FRAMES.default <= RING_CAPACITY_FRAMES.default);
const _: () = assert!(RING_BATCH_FRAMES.max <= RING_CAPACITY_FRAMES.max);
// The frame pool can fill one ring and one mailbox.
const _: () = assert!(FRAME_POOL_FRAMES_MAX.default >= RING_CAPACITY_FRAMES.default);
const _: () = assert!(FRAME_POOL_FRAMES_MAX.default >= MAILBOX_CAPACITY_FRAMES.default);
// Frames: the issue fixes the absolute cap at 1 MiB.
const _: () = assert!(FRAME_BYTES_MAX.max == MIB);
// glommio needs at least 512 KiB of io_memory; the default is 2 MiB and page aligned.
const _: () = assert!(IO_MEMORY_BYTES.min == 512 * KIB);
const _: () = assert!(IO_MEMORY_BYTES.default == 2 * MIB);
const _: () = assert!(IO_MEMORY_BYTES
    .default
    .is_multiple_of(IO_MEMORY_ALIGN_BYTES));
const _: () = assert!(IO_MEMORY_BYTES.min.is_multiple_of(IO_MEMORY_ALIGN_BYTES));
// The locked-memory floor covers at least one executor's io_memory.
const _: () = assert!(MEMLOCK_BYTES_MIN.default >= IO_MEMORY_BYTES.default);
const _: () = assert!(MEMLOCK_BYTES_MIN.min >= IO_MEMORY_BYTES.min);
