//! The N×N mesh: one ring per ordered pair of distinct shards, as in Seastar's
//! `smp_message_queue` matrix. Shard `i` owns the producer of ring `(i, j)` and the
//! consumer of ring `(j, i)`; no two shards ever share an end.

use std::fmt;

use crate::ring::{checked_capacity, try_channel, CapacityError, Consumer, Producer};

/// All endpoints of a freshly built mesh, before they are handed to their shards.
pub struct Mesh<T> {
    endpoints: Vec<MeshEndpoint<T>>,
}

impl<T: Send> Mesh<T> {
    /// Builds `shards × (shards - 1)` rings of at least `capacity` items each.
    ///
    /// # Panics
    ///
    /// Under the same conditions as [`channel`](crate::channel).
    pub fn new(shards: usize, capacity: usize) -> Self {
        match Self::try_new(shards, capacity) {
            Ok(mesh) => mesh,
            Err(error) => panic!("dataplane_ring::Mesh::new: {error}"),
        }
    }

    /// Builds the mesh, or says why the ring capacity is unacceptable.
    pub fn try_new(shards: usize, capacity: usize) -> Result<Self, CapacityError> {
        checked_capacity(capacity)?;
        let mut endpoints: Vec<MeshEndpoint<T>> = (0..shards)
            .map(|shard| MeshEndpoint {
                shard,
                producers: (0..shards).map(|_| None).collect(),
                consumers: (0..shards).map(|_| None).collect(),
                next_source_shard: 0,
            })
            .collect();
        for from_shard in 0..shards {
            for to_shard in (0..shards).filter(|&to_shard| to_shard != from_shard) {
                let (producer, consumer) = try_channel(capacity)?;
                endpoints[from_shard].producers[to_shard] = Some(producer);
                endpoints[to_shard].consumers[from_shard] = Some(consumer);
            }
        }
        Ok(Self { endpoints })
    }
}

impl<T> Mesh<T> {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.endpoints.len()
    }

    /// The endpoints; element `i` belongs to shard `i`.
    pub fn into_endpoints(self) -> Vec<MeshEndpoint<T>> {
        self.endpoints
    }
}

impl<T> fmt::Debug for Mesh<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("shards", &self.shards())
            .finish()
    }
}

/// Builds a mesh of `shards` shards with rings of at least `capacity` items; endpoint `i`
/// belongs to shard `i`. Shorthand for `Mesh::new(shards, capacity).into_endpoints()`.
///
/// # Panics
///
/// Under the same conditions as [`channel`](crate::channel).
pub fn mesh<T: Send>(shards: usize, capacity: usize) -> Vec<MeshEndpoint<T>> {
    Mesh::new(shards, capacity).into_endpoints()
}

/// One shard's ends of the mesh: a producer towards every other shard and a consumer from
/// every other shard. `Send`, so it can be moved to the shard's thread.
pub struct MeshEndpoint<T> {
    /// The shard this endpoint belongs to.
    pub shard: usize,
    /// Indexed by destination shard; `None` at `shard`.
    producers: Vec<Option<Producer<T>>>,
    /// Indexed by source shard; `None` at `shard`.
    consumers: Vec<Option<Consumer<T>>>,
    /// Where the next [`drain`](Self::drain) starts, so no source is always served last.
    next_source_shard: usize,
}

impl<T> MeshEndpoint<T> {
    /// Number of shards in the mesh.
    #[inline]
    pub fn shards(&self) -> usize {
        self.producers.len()
    }

    /// The producer of the ring towards `to_shard`; `None` for this shard itself or an
    /// index out of range.
    #[inline]
    pub fn producer(&mut self, to_shard: usize) -> Option<&mut Producer<T>> {
        self.producers.get_mut(to_shard)?.as_mut()
    }

    /// The consumer of the ring from `from_shard`; `None` for this shard itself or an
    /// index out of range.
    #[inline]
    pub fn consumer(&mut self, from_shard: usize) -> Option<&mut Consumer<T>> {
        self.consumers.get_mut(from_shard)?.as_mut()
    }

    /// Every outgoing producer with its destination shard.
    pub fn producers_mut(&mut self) -> impl Iterator<Item = (usize, &mut Producer<T>)> {
        self.producers
            .iter_mut()
            .enumerate()
            .filter_map(|(to_shard, producer)| Some((to_shard, producer.as_mut()?)))
    }

    /// Every incoming consumer with its source shard.
    pub fn consumers_mut(&mut self) -> impl Iterator<Item = (usize, &mut Consumer<T>)> {
        self.consumers
            .iter_mut()
            .enumerate()
            .filter_map(|(from_shard, consumer)| Some((from_shard, consumer.as_mut()?)))
    }

    /// Publishes the staged items of every outgoing ring; returns how many in total.
    /// One `Release` store per ring that had staged items, none for the others.
    pub fn publish_all(&mut self) -> usize {
        self.producers_mut()
            .map(|(_, producer)| producer.publish())
            .sum()
    }

    /// Hands up to `budget_items` incoming items to `f(from_shard, item)`, FIFO per source,
    /// and returns how many it handed over (0 means no work was done).
    ///
    /// Sources are visited round-robin, each getting at most
    /// `ceil(budget_items / sources)` items per pass; passes repeat while budget remains
    /// and some source still had items, and the first source visited rotates every call.
    /// So a busy source cannot starve the others, and the work per call is bounded.
    /// Each visit is one [`Consumer::pop_batch`]: at most one read of the producer's
    /// index and one release store per source and pass.
    pub fn drain(&mut self, budget_items: usize, mut f: impl FnMut(usize, T)) -> usize {
        let shards = self.shards();
        let sources = shards.saturating_sub(1);
        if sources == 0 || budget_items == 0 {
            return 0;
        }
        let quota_items = budget_items.div_ceil(sources);
        let first_source_shard = self.next_source_shard;
        self.next_source_shard = (first_source_shard + 1) % shards;
        let mut drained_items = 0;
        loop {
            let mut progressed = false;
            for step in 0..shards {
                let from_shard = (first_source_shard + step) % shards;
                let Some(consumer) = self.consumers[from_shard].as_mut() else {
                    continue;
                };
                let take_items = quota_items.min(budget_items - drained_items);
                let popped = consumer.pop_batch(take_items, |item| f(from_shard, item));
                drained_items += popped;
                progressed |= popped != 0;
                if drained_items == budget_items {
                    return drained_items;
                }
            }
            if !progressed {
                return drained_items;
            }
        }
    }
}

impl<T> fmt::Debug for MeshEndpoint<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshEndpoint")
            .field("shard", &self.shard)
            .field("shards", &self.shards())
            .field("next_source_shard", &self.next_source_shard)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_ordered_pair_gets_one_ring() {
        let mut endpoints = mesh::<u32>(3, 4);
        assert_eq!(endpoints.len(), 3);
        for (shard, endpoint) in endpoints.iter_mut().enumerate() {
            assert_eq!(endpoint.shard, shard);
            assert_eq!(endpoint.shards(), 3);
            assert!(endpoint.producer(shard).is_none());
            assert!(endpoint.consumer(shard).is_none());
            assert!(endpoint.producer(3).is_none());
            assert_eq!(endpoint.producers_mut().count(), 2);
            assert_eq!(endpoint.consumers_mut().count(), 2);
        }
        // Shard 0 -> shard 2 arrives at shard 2's consumer for source 0, and nowhere else.
        let pushed = endpoints[0]
            .producer(2)
            .map(|producer| producer.try_push(42));
        assert_eq!(pushed, Some(Ok(())));
        assert_eq!(endpoints[1].consumer(0).and_then(|c| c.try_pop()), None);
        assert_eq!(endpoints[2].consumer(1).and_then(|c| c.try_pop()), None);
        assert_eq!(endpoints[2].consumer(0).and_then(|c| c.try_pop()), Some(42));
    }

    #[test]
    fn degenerate_sizes() {
        assert!(mesh::<u32>(0, 4).is_empty());
        let mut single = mesh::<u32>(1, 4);
        assert_eq!(single[0].drain(10, |_, _| {}), 0);
        assert_eq!(single[0].publish_all(), 0);
        assert!(matches!(
            Mesh::<u32>::try_new(2, 0),
            Err(CapacityError::Zero)
        ));
    }

    #[test]
    fn drain_is_fair_and_bounded() {
        let mut endpoints = mesh::<u32>(4, 16);
        for endpoint in &mut endpoints[1..] {
            let base = endpoint.shard as u32 * 100;
            let producer = endpoint.producer(0).expect("ring exists");
            for item in 0..10 {
                assert_eq!(producer.stage(base + item), Ok(()));
            }
        }
        for endpoint in &mut endpoints[1..] {
            assert_eq!(endpoint.publish_all(), 10);
        }
        let mut received: Vec<(usize, u32)> = Vec::new();
        let drained = endpoints[0].drain(6, |from_shard, item| received.push((from_shard, item)));
        assert_eq!(drained, 6);
        // Two from each source, FIFO per source.
        for from_shard in 1..4 {
            let items: Vec<u32> = received
                .iter()
                .filter(|(source, _)| *source == from_shard)
                .map(|(_, item)| *item)
                .collect();
            let base = from_shard as u32 * 100;
            assert_eq!(items, [base, base + 1]);
        }
        // Rest drains fully with a large budget, in repeated passes.
        let drained =
            endpoints[0].drain(1000, |from_shard, item| received.push((from_shard, item)));
        assert_eq!(drained, 24);
        assert_eq!(endpoints[0].drain(1000, |_, _| {}), 0);
    }
}
