//! Per-shard counters, owned by the shard and read by its driver.

/// Counters of one shard. Plain integers: only the shard writes them; the driver publishes
/// snapshots for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Handler calls that ran.
    pub messages_handled: u64,
    /// Frames queued to an agent on this shard by a send here.
    pub sent_local: u64,
    /// Frames handed to a ring for another shard.
    pub sent_remote: u64,
    /// Frames accepted from rings.
    pub received_remote: u64,
    /// Frames accepted from outside the process (the network edge).
    pub received_ingress: u64,
    /// Buffers that came home from other shards.
    pub frames_returned: u64,
    /// Sends refused because a mailbox or outbound queue was full.
    pub backpressure: u64,
    /// Sends refused because the frame pool was exhausted.
    pub pool_exhausted: u64,
    /// Frames for agents that do not exist here.
    pub unknown_agent: u64,
    /// Replies and error replies that could not be delivered (counted, then released).
    pub undeliverable_replies: u64,
    /// Ring frames handed back to the driver because the mailbox was full.
    pub stalled_deliveries: u64,
    /// Handler calls that returned an error.
    pub handler_errors: u64,
    /// Agent calls (handlers, `on_start`, `restart`, `on_stop`) that panicked.
    pub handler_panics: u64,
    /// Crashed agents restarted successfully.
    pub agent_restarts: u64,
    /// Agents stopped for crashing too often (restart policy).
    pub agents_stopped: u64,
    /// Calls of `Agent::on_batch` that got through two or more messages (an agent may
    /// take only the first, as a WASM agent does while the epoch ticker is slow).
    pub batches: u64,
}
