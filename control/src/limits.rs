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

/// `edge.listen` default: loopback only; set `0.0.0.0:4433` to serve other machines.
pub const EDGE_LISTEN_DEFAULT: &str = "127.0.0.1:4433";
/// `edge.dev_cert_dir` default: `auto`, the user's data directory.
pub const EDGE_DEV_CERT_DIR_DEFAULT: &str = "auto";
/// `edge.connections_per_shard_max`: QUIC connections one shard serves at once.
pub const EDGE_CONNECTIONS_PER_SHARD_MAX: Bounds = Bounds {
    default: 4_096,
    min: 1,
    max: 1_000_000,
    unit: "connections",
};
/// `edge.idle_timeout_ms`: a connection without traffic this long is closed.
pub const EDGE_IDLE_TIMEOUT_MS: Bounds = Bounds {
    default: 30_000,
    min: 100,
    max: 3_600_000,
    unit: "milliseconds",
};
/// `edge.stream_window_bytes`: flow-control window of a connection's frame stream.
pub const EDGE_STREAM_WINDOW_BYTES: Bounds = Bounds {
    default: 8 * MIB,
    min: 64 * KIB,
    max: 1024 * MIB,
    unit: "bytes",
};
/// `edge.egress_bytes_max`: replies queued for a connection before its requests stop
/// being read (twice this closes it).
pub const EDGE_EGRESS_BYTES_MAX: Bounds = Bounds {
    default: 8 * MIB,
    min: 64 * KIB,
    max: 1024 * MIB,
    unit: "bytes",
};

/// WebAssembly page size, in bytes: linear memory sizes are multiples of it.
pub const WASM_PAGE_BYTES: u64 = 64 * KIB;

/// `wasm.agents_per_shard_max`: instance-pool slots per shard (pool = this x shards).
pub const WASM_AGENTS_PER_SHARD_MAX: Bounds = Bounds {
    default: 4_096,
    min: 1,
    max: 1_000_000,
    unit: "agents",
};
/// `wasm.memory_bytes_max`: the largest linear memory any agent may have (the pool's
/// per-memory bound); also a multiple of [`WASM_PAGE_BYTES`]. 4 GiB is all a 32-bit memory
/// can address.
pub const WASM_MEMORY_BYTES_MAX: Bounds = Bounds {
    default: 16 * MIB,
    min: WASM_PAGE_BYTES,
    max: 4 * GIB,
    unit: "bytes",
};
/// `wasm.memory_reservation_bytes`: virtual address space reserved per linear memory; also
/// a multiple of [`WASM_PAGE_BYTES`].
///
/// The key is optional and defaults to `null` (the host chooses), so `default` is never
/// applied by the configuration: it is 4 GiB, the reservation that lets compiled code skip
/// bounds checks, listed for reference.
pub const WASM_MEMORY_RESERVATION_BYTES: Bounds = Bounds {
    default: 4 * GIB,
    min: WASM_PAGE_BYTES,
    max: 8 * GIB,
    unit: "bytes",
};
/// `wasm.epoch_tick_us`: how often the epoch advances; time limits hold to within a tick.
pub const WASM_EPOCH_TICK_US: Bounds = Bounds {
    default: 500,
    min: 10,
    max: 100_000,
    unit: "microseconds",
};
/// `wasm.cache_dir` default: `auto`, the user's cache directory (see `CacheDir::Auto`).
pub const WASM_CACHE_DIR_DEFAULT: &str = "auto";

/// `wasm.restart.max_restarts`: restarts within `window_ms` before the agent is stopped;
/// 0 stops it at its first crash.
pub const RESTART_MAX_RESTARTS: Bounds = Bounds {
    default: 5,
    min: 0,
    max: 1000,
    unit: "restarts",
};
/// `wasm.restart.window_ms`: the sliding window `max_restarts` counts in.
pub const RESTART_WINDOW_MS: Bounds = Bounds {
    default: 60_000,
    min: 1,
    max: 86_400_000,
    unit: "milliseconds",
};
/// `wasm.restart.backoff_initial_ms`: delay before the first restart.
pub const RESTART_BACKOFF_INITIAL_MS: Bounds = Bounds {
    default: 1,
    min: 1,
    max: 60_000,
    unit: "milliseconds",
};
/// `wasm.restart.backoff_max_ms`: the longest delay between restarts; at least
/// `backoff_initial_ms` (checked across fields).
pub const RESTART_BACKOFF_MAX_MS: Bounds = Bounds {
    default: 1000,
    min: 1,
    max: 600_000,
    unit: "milliseconds",
};

/// Bytes of a frame that an agent's payload cannot use (the frame's fixed part and
/// padding): `message_bytes_max` is at most `shard.frame_bytes_max` minus this.
pub const MESSAGE_FRAME_OVERHEAD_BYTES: u64 = 80;

/// `memory_bytes_max` of `wasm.agent_defaults` and `agents[].limits`: linear memory one
/// agent may grow to; a multiple of [`WASM_PAGE_BYTES`], at most `wasm.memory_bytes_max`.
pub const AGENT_MEMORY_BYTES_MAX: Bounds = Bounds {
    default: 16 * MIB,
    min: WASM_PAGE_BYTES,
    max: 4 * GIB,
    unit: "bytes",
};
/// `time_per_message_ms` of `wasm.agent_defaults` and `agents[].limits`: how long one call
/// into an agent may run before it is interrupted.
pub const AGENT_TIME_PER_MESSAGE_MS: Bounds = Bounds {
    default: 10,
    min: 1,
    max: 60_000,
    unit: "milliseconds",
};
/// `message_bytes_max` of `wasm.agent_defaults` and `agents[].limits`: largest payload in
/// or out (and largest `config`); at most `shard.frame_bytes_max` minus
/// [`MESSAGE_FRAME_OVERHEAD_BYTES`].
pub const AGENT_MESSAGE_BYTES_MAX: Bounds = Bounds {
    default: 64 * KIB - MESSAGE_FRAME_OVERHEAD_BYTES,
    min: 0,
    max: MIB - MESSAGE_FRAME_OVERHEAD_BYTES,
    unit: "bytes",
};
/// `sends_per_message_max` of `wasm.agent_defaults` and `agents[].limits`: sends and
/// replies per call into an agent.
pub const AGENT_SENDS_PER_MESSAGE_MAX: Bounds = Bounds {
    default: 1024,
    min: 1,
    max: 1_000_000,
    unit: "messages",
};

/// Longest name after `builtin:` in `agents[].module`, in bytes.
pub const BUILTIN_MODULE_NAME_BYTES_MAX: usize = 64;
/// Longest file path (`agents[].module`, `wasm.cache_dir`), in bytes: Linux `PATH_MAX`.
pub const PATH_BYTES_MAX: usize = 4096;

/// Longest agent id, in bytes.
pub const AGENT_ID_BYTES_MAX: usize = 64;
/// Longest `log.level` filter, in bytes.
pub const LOG_LEVEL_BYTES_MAX: usize = 4096;

/// `admin.listen` default: metrics and admin on loopback only.
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9090";
/// `log.level` default tracing filter.
pub const LOG_LEVEL_DEFAULT: &str = "info";

/// Every numeric setting that may not be zero, for the checks below.
const ALL: [Bounds; 26] = [
    EDGE_CONNECTIONS_PER_SHARD_MAX,
    EDGE_IDLE_TIMEOUT_MS,
    EDGE_STREAM_WINDOW_BYTES,
    EDGE_EGRESS_BYTES_MAX,
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
    WASM_AGENTS_PER_SHARD_MAX,
    WASM_MEMORY_BYTES_MAX,
    WASM_MEMORY_RESERVATION_BYTES,
    WASM_EPOCH_TICK_US,
    RESTART_WINDOW_MS,
    RESTART_BACKOFF_INITIAL_MS,
    RESTART_BACKOFF_MAX_MS,
    AGENT_MEMORY_BYTES_MAX,
    AGENT_TIME_PER_MESSAGE_MS,
    AGENT_SENDS_PER_MESSAGE_MAX,
];

/// The numeric settings for which zero means something (no restarts, empty payloads).
const MAY_BE_ZERO: [Bounds; 2] = [RESTART_MAX_RESTARTS, AGENT_MESSAGE_BYTES_MAX];

const fn all_defaults_in_bounds() -> bool {
    let mut i = 0;
    while i < ALL.len() {
        if ALL[i].min == 0 || !ALL[i].contains(ALL[i].default) {
            return false;
        }
        i += 1;
    }
    let mut i = 0;
    while i < MAY_BE_ZERO.len() {
        if !MAY_BE_ZERO[i].contains(MAY_BE_ZERO[i].default) {
            return false;
        }
        i += 1;
    }
    true
}

// Every default is accepted by its own bounds, and no setting but those in MAY_BE_ZERO may
// be zero.
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
// WASM memories: whole pages, defaults within the pool's bound.
const _: () = assert!(WASM_MEMORY_BYTES_MAX
    .default
    .is_multiple_of(WASM_PAGE_BYTES));
const _: () = assert!(WASM_MEMORY_BYTES_MAX.max.is_multiple_of(WASM_PAGE_BYTES));
const _: () = assert!(WASM_MEMORY_RESERVATION_BYTES
    .max
    .is_multiple_of(WASM_PAGE_BYTES));
const _: () = assert!(WASM_MEMORY_RESERVATION_BYTES.max >= WASM_MEMORY_BYTES_MAX.max);
const _: () = assert!(AGENT_MEMORY_BYTES_MAX
    .default
    .is_multiple_of(WASM_PAGE_BYTES));
const _: () = assert!(AGENT_MEMORY_BYTES_MAX.default <= WASM_MEMORY_BYTES_MAX.default);
const _: () = assert!(AGENT_MEMORY_BYTES_MAX.max == WASM_MEMORY_BYTES_MAX.max);
// An agent's payload plus the frame's overhead fits a frame, by default and at the caps.
const _: () = assert!(
    AGENT_MESSAGE_BYTES_MAX.default + MESSAGE_FRAME_OVERHEAD_BYTES == FRAME_BYTES_MAX.default
);
const _: () =
    assert!(AGENT_MESSAGE_BYTES_MAX.max + MESSAGE_FRAME_OVERHEAD_BYTES == FRAME_BYTES_MAX.max);
// Restart back-off: the cap is at least the first delay.
const _: () = assert!(RESTART_BACKOFF_MAX_MS.default >= RESTART_BACKOFF_INITIAL_MS.default);
const _: () = assert!(RESTART_BACKOFF_MAX_MS.max >= RESTART_BACKOFF_INITIAL_MS.max);
// Fields stored as `u32`, and the node's whole pool, fit in 32 bits.
const _: () = assert!(
    WASM_AGENTS_PER_SHARD_MAX.max * SHARDS.max <= u32::MAX as u64,
    "agents_per_shard_max x shards is a u32 pool size"
);
const _: () = assert!(RESTART_MAX_RESTARTS.max <= u32::MAX as u64);
const _: () = assert!(AGENT_MESSAGE_BYTES_MAX.max <= u32::MAX as u64);
const _: () = assert!(AGENT_SENDS_PER_MESSAGE_MAX.max <= u32::MAX as u64);
