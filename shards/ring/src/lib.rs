//! Bounded lock-free single-producer single-consumer rings and the N×N shard mesh: the
//! cross-shard data path of the dataplane.
//!
//! Each ordered pair of shards gets one [`channel`]. Items (in practice pointer-sized
//! frame handles) move by value; a full ring hands the item back instead of blocking or
//! dropping it. Both ends batch: the producer [`stage`](Producer::stage)s items and makes
//! them visible with one [`publish`](Producer::publish), the consumer drains with
//! [`pop_batch`](Consumer::pop_batch) and frees all the slots with one store. Each end
//! caches the other's index and reads it only when the ring looks full or empty, so a
//! busy ring costs about one cache-line transfer per batch, not per item.
//!
//! For idle shards that sleep, the consumer can announce it is parking
//! ([`Consumer::prepare_park`]) and the producer can ask whether it must ring a doorbell
//! ([`Producer::consumer_parked`]); the doorbell itself (eventfd, futex, glommio waker)
//! belongs to the runtime.
//!
//! ```
//! use dataplane_ring::{channel, mesh};
//!
//! let (mut producer, mut consumer) = channel::<u64>(3); // rounded up to 4
//! assert_eq!(producer.capacity(), 4);
//! assert_eq!(producer.try_push(1), Ok(()));
//! for item in 2..=4 {
//!     assert_eq!(producer.stage(item), Ok(()));
//! }
//! assert_eq!(producer.stage(5), Err(5)); // full: the item comes back
//! assert_eq!(consumer.len(), 1); // staged items are not visible yet
//! assert_eq!(producer.publish(), 3); // one release store for three items
//! let mut received = Vec::new();
//! assert_eq!(consumer.pop_batch(16, |item| received.push(item)), 4);
//! assert_eq!(received, [1, 2, 3, 4]);
//!
//! // A mesh of three shards: endpoint i belongs to shard i.
//! let mut endpoints = mesh::<u64>(3, 64);
//! let (left, right) = endpoints.split_at_mut(2);
//! let to_shard_2 = left[0].producer(2).expect("0 -> 2 exists");
//! assert_eq!(to_shard_2.try_push(7), Ok(()));
//! let mut incoming = Vec::new();
//! right[0].drain(32, |from_shard, item| incoming.push((from_shard, item)));
//! assert_eq!(incoming, [(0, 7)]);
//! ```
#![warn(missing_docs)]

mod mesh;
mod ring;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

pub use mesh::{mesh, Mesh, MeshEndpoint};
pub use ring::{channel, try_channel, CapacityError, Consumer, Producer, RING_CAPACITY_ITEMS_MAX};
