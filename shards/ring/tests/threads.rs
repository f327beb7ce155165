//! Threaded tests of the ring and the mesh: real threads, small rings that are full most
//! of the time, random batch sizes from fixed seeds. Every test checks exactly-once FIFO
//! delivery; none measures time.
#![cfg(not(loom))]

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;

use dataplane_ring::{channel, mesh, Consumer, Producer};

/// Busy-polls, but yields to the OS scheduler after a while: tests share two cores with
/// other builds, and a spinning thread must not keep its peer off the CPU.
struct Backoff {
    spins: u32,
}

impl Backoff {
    fn new() -> Self {
        Self { spins: 0 }
    }

    fn snooze(&mut self) {
        self.spins += 1;
        if self.spins < 64 {
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }

    fn reset(&mut self) {
        self.spins = 0;
    }
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Sends `0..count` with random batch sizes through `stage` + `publish` and `try_push`.
fn produce_sequence(mut producer: Producer<u64>, count: u64, seed: u64) {
    let mut rng = SplitMix64(seed);
    let mut backoff = Backoff::new();
    let mut next_item = 0;
    while next_item < count {
        if rng.below(4) == 0 {
            match producer.try_push(next_item) {
                Ok(()) => next_item += 1,
                Err(item) => {
                    assert_eq!(item, next_item, "try_push must hand back the same item");
                    backoff.snooze();
                }
            }
            continue;
        }
        let batch_items = 1 + rng.below(40);
        let mut staged_items = 0;
        while staged_items < batch_items && next_item < count {
            if producer.stage(next_item).is_err() {
                break;
            }
            next_item += 1;
            staged_items += 1;
        }
        if producer.publish() == 0 {
            backoff.snooze();
        } else {
            backoff.reset();
        }
    }
}

#[test]
fn stress_small_ring_random_batches_is_fifo_and_exactly_once() {
    const ITEMS: u64 = 3_000_000;
    for (capacity, seed) in [(8, 1_u64), (64, 2)] {
        let (producer, mut consumer) = channel::<u64>(capacity);
        let producer_thread = thread::spawn(move || produce_sequence(producer, ITEMS, seed));
        let mut rng = SplitMix64(seed ^ 0xC0FFEE);
        let mut backoff = Backoff::new();
        let mut expected = 0_u64;
        while expected < ITEMS {
            let popped = if rng.below(4) == 0 {
                match consumer.try_pop() {
                    Some(item) => {
                        assert_eq!(item, expected, "capacity {capacity}");
                        expected += 1;
                        1
                    }
                    None => 0,
                }
            } else {
                let max_items = 1 + rng.below(48) as usize;
                consumer.pop_batch(max_items, |item| {
                    assert_eq!(item, expected, "capacity {capacity}");
                    expected += 1;
                })
            };
            if popped == 0 {
                backoff.snooze();
            } else {
                backoff.reset();
            }
        }
        producer_thread.join().expect("producer thread panicked");
        assert!(!consumer.is_producer_alive());
        assert_eq!(consumer.try_pop(), None, "nothing beyond the sequence");
    }
}

/// Records how many times each item was dropped.
struct DropLedger {
    drops: Vec<AtomicU8>,
}

impl DropLedger {
    fn new(items: usize) -> Arc<Self> {
        Arc::new(Self {
            drops: (0..items).map(|_| AtomicU8::new(0)).collect(),
        })
    }

    fn assert_each_dropped_once(&self) {
        for (id, drops) in self.drops.iter().enumerate() {
            assert_eq!(drops.load(Ordering::Relaxed), 1, "item {id}");
        }
    }
}

struct Tracked {
    id: usize,
    ledger: Arc<DropLedger>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ledger.drops[self.id].fetch_add(1, Ordering::Relaxed);
    }
}

fn tracked(ledger: &Arc<DropLedger>, id: usize) -> Tracked {
    Tracked {
        id,
        ledger: Arc::clone(ledger),
    }
}

/// Pushes 5, stages 2, pops 2; returns the ends with 5 items left inside.
fn half_consumed_ring(ledger: &Arc<DropLedger>) -> (Producer<Tracked>, Consumer<Tracked>) {
    let (mut producer, mut consumer) = channel::<Tracked>(8);
    for id in 0..5 {
        assert!(producer.try_push(tracked(ledger, id)).is_ok());
    }
    for id in 5..7 {
        assert!(producer.stage(tracked(ledger, id)).is_ok());
    }
    assert_eq!(consumer.try_pop().map(|item| item.id), Some(0));
    assert_eq!(consumer.pop_batch(1, |item| assert_eq!(item.id, 1)), 1);
    (producer, consumer)
}

#[test]
fn items_left_inside_are_dropped_once_whichever_end_goes_first() {
    let ledger = DropLedger::new(7);
    let (producer, consumer) = half_consumed_ring(&ledger);
    drop(consumer);
    drop(producer);
    ledger.assert_each_dropped_once();

    let ledger = DropLedger::new(7);
    let (producer, consumer) = half_consumed_ring(&ledger);
    drop(producer);
    drop(consumer);
    ledger.assert_each_dropped_once();
}

#[test]
fn rejected_items_come_back_and_are_dropped_once() {
    let ledger = DropLedger::new(3);
    let (mut producer, consumer) = channel::<Tracked>(2);
    assert!(producer.try_push(tracked(&ledger, 0)).is_ok());
    assert!(producer.stage(tracked(&ledger, 1)).is_ok());
    let rejected = producer.stage(tracked(&ledger, 2));
    assert_eq!(rejected.as_ref().err().map(|item| item.id), Some(2));
    drop(rejected);
    assert_eq!(ledger.drops[2].load(Ordering::Relaxed), 1);
    drop((producer, consumer));
    ledger.assert_each_dropped_once();
}

#[test]
fn panic_inside_pop_batch_neither_leaks_nor_double_drops() {
    let ledger = DropLedger::new(6);
    let (mut producer, mut consumer) = channel::<Tracked>(8);
    for id in 0..6 {
        assert!(producer.stage(tracked(&ledger, id)).is_ok());
    }
    producer.publish();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        consumer.pop_batch(8, |item| {
            if item.id == 2 {
                panic!("consumer callback fails on item 2");
            }
        })
    }));
    assert!(outcome.is_err());
    // Items 0..=2 were handed out (and dropped); 3..6 are still in the ring, in order.
    let remaining: Vec<usize> =
        std::iter::from_fn(|| consumer.try_pop().map(|item| item.id)).collect();
    assert_eq!(remaining, [3, 4, 5]);
    drop((producer, consumer));
    ledger.assert_each_dropped_once();
}

#[test]
fn consumer_dropped_mid_stream_across_threads_leaks_nothing() {
    const ITEMS: usize = 200_000;
    let ledger = DropLedger::new(ITEMS);
    let (mut producer, mut consumer) = channel::<Tracked>(16);
    let producer_ledger = Arc::clone(&ledger);
    let producer_thread = thread::spawn(move || {
        let mut rng = SplitMix64(7);
        let mut backoff = Backoff::new();
        let mut next_id = 0;
        let mut pending: Option<Tracked> = None;
        while (next_id < ITEMS || pending.is_some()) && producer.is_consumer_alive() {
            let batch_items = 1 + rng.below(20) as usize;
            for _ in 0..batch_items {
                let item = match pending.take() {
                    Some(item) => item,
                    None if next_id < ITEMS => {
                        next_id += 1;
                        tracked(&producer_ledger, next_id - 1)
                    }
                    None => break,
                };
                if let Err(rejected) = producer.stage(item) {
                    pending = Some(rejected);
                    break;
                }
            }
            if producer.publish() == 0 {
                backoff.snooze();
            }
        }
        drop(pending);
        // Items never created still need their one "drop" for the ledger check.
        for id in next_id..ITEMS {
            drop(tracked(&producer_ledger, id));
        }
    });
    let mut received = 0;
    let mut backoff = Backoff::new();
    while received < ITEMS / 2 {
        let popped = consumer.pop_batch(1 + received % 13, |item| {
            assert_eq!(item.id, received);
            received += 1;
        });
        if popped == 0 {
            backoff.snooze();
        }
    }
    drop(consumer);
    producer_thread.join().expect("producer thread panicked");
    ledger.assert_each_dropped_once();
}

#[test]
fn mesh_of_four_delivers_every_pair_fifo_exactly_once() {
    const SHARDS: usize = 4;
    const ITEMS_PER_PAIR: u64 = 100_000;
    let endpoints = mesh::<u64>(SHARDS, 32);
    let threads: Vec<_> = endpoints
        .into_iter()
        .map(|mut endpoint| {
            thread::spawn(move || {
                let shard = endpoint.shard;
                let mut rng = SplitMix64(shard as u64 + 11);
                let mut backoff = Backoff::new();
                let mut sent = [0_u64; SHARDS];
                let mut received = [0_u64; SHARDS];
                let expected_total = ITEMS_PER_PAIR * (SHARDS as u64 - 1);
                loop {
                    let mut work_items = 0;
                    for (to_shard, producer) in endpoint.producers_mut() {
                        let batch_items = 1 + rng.below(24);
                        for _ in 0..batch_items {
                            if sent[to_shard] == ITEMS_PER_PAIR {
                                break;
                            }
                            let item = ((shard as u64) << 32) | sent[to_shard];
                            if producer.stage(item).is_err() {
                                break;
                            }
                            sent[to_shard] += 1;
                        }
                    }
                    work_items += endpoint.publish_all();
                    let budget_items = 1 + rng.below(64) as usize;
                    work_items += endpoint.drain(budget_items, |from_shard, item| {
                        assert_eq!(item >> 32, from_shard as u64, "item from the wrong ring");
                        assert_eq!(item & 0xFFFF_FFFF, received[from_shard], "FIFO per pair");
                        received[from_shard] += 1;
                    });
                    let received_total = received.iter().sum::<u64>();
                    let sent_all = sent.iter().sum::<u64>() == expected_total;
                    if sent_all && received_total == expected_total {
                        break;
                    }
                    if work_items == 0 {
                        backoff.snooze();
                    } else {
                        backoff.reset();
                    }
                }
                assert_eq!(received.iter().sum::<u64>(), expected_total);
                // Keep the endpoint alive until every shard is done, so no producer sees
                // its peer gone; return it to the test thread.
                endpoint
            })
        })
        .collect();
    let mut endpoints: Vec<_> = threads
        .into_iter()
        .map(|thread| thread.join().expect("shard thread panicked"))
        .collect();
    for endpoint in &mut endpoints {
        assert_eq!(endpoint.drain(usize::MAX, |_, _| {}), 0, "nothing extra");
    }
}
