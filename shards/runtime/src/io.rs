//! Per-shard I/O beside the rings: the hook the network edge plugs into.
//!
//! A shard's driver owns its thread and never yields to glommio while it has work (see
//! `docs/decisions/why-no-glommio-yield.md`), so an I/O source such as the QUIC edge
//! cannot be a separate glommio task: the driver polls it, like a ring, from the same
//! loop. A [`ShardIo`] is built on the shard's thread after pinning (its sockets and
//! buffers are then local to the core), may deploy system agents into the shard, and is
//! handed the shard on every poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dataplane_shard::Shard;

/// One shard's I/O source, polled by the shard's driver on the shard's thread.
pub trait ShardIo {
    /// Moves what is ready (packets in and out, frames into `core`) without blocking.
    /// Returns the units of work done; 0 means nothing was ready.
    fn poll(&mut self, core: &mut Shard, now_ns: u64) -> usize;

    /// When the source next needs a poll even without input (protocol timers), in the
    /// node clock's nanoseconds; a parking shard does not sleep past it.
    fn next_timer_ns(&self) -> Option<u64>;

    /// Resolves when input may be waiting. A parking shard races it with its doorbell;
    /// it must be cancel-safe (dropped unresolved when the doorbell wins).
    fn readable(&self) -> Pin<Box<dyn Future<Output = ()> + '_>>;

    /// The node is stopping: close connections politely. Called once, before the agents
    /// stop; `poll` keeps being called while the shard drains.
    fn shutdown(&mut self, core: &mut Shard, now_ns: u64);
}

/// Builds shard `shard`'s I/O on its thread, after its agents are deployed:
/// `(core, now_ns)`. An error stops the node's start-up with that message.
pub type IoFactory = Arc<dyn Fn(&mut Shard, u64) -> Result<Box<dyn ShardIo>, String> + Send + Sync>;
