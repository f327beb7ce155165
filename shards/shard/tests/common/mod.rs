//! Helpers shared by the shard's integration tests that drive shards by hand.

use dataplane_shard::{RingItem, Shard};

/// Everything `from` has queued for shard `to`, taken as an unbounded ring would.
pub fn transmit_all(from: &mut Shard, to: usize) -> Vec<RingItem> {
    let mut items = Vec::new();
    from.poll_transmit(to, |item| {
        items.push(item);
        Ok(())
    });
    items
}
