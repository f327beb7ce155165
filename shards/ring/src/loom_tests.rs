//! Model checks: loom runs each closure under every interleaving and every memory-model
//! outcome it can reach (within a preemption bound), with tiny rings so that the full and
//! empty edges and slot reuse are all exercised. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p dataplane-ring --release --lib loom`.
//!
//! Loom's `UnsafeCell` flags any slot access not ordered by happens-before, so a missing
//! or weakened `Acquire`/`Release` on `head` or `tail` fails here even on x86-64.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::channel;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Stage + publish (one store for two items), then `try_push` into a full ring, against a
/// consumer alternating `pop_batch` and `try_pop`: FIFO, exactly once, no data race.
#[test]
fn loom_stage_publish_try_push_against_pop_batch_and_try_pop() {
    model(|| {
        let (mut producer, mut consumer) = channel::<usize>(2);
        let producer_thread = thread::spawn(move || {
            assert_eq!(producer.stage(0), Ok(()));
            assert_eq!(producer.stage(1), Ok(()));
            assert_eq!(producer.publish(), 2);
            let mut next_item = 2;
            while next_item < 4 {
                match producer.try_push(next_item) {
                    Ok(()) => next_item += 1,
                    Err(item) => {
                        assert_eq!(item, next_item);
                        thread::yield_now();
                    }
                }
            }
        });
        let mut received = Vec::new();
        while received.len() < 4 {
            let popped = if received.len() % 2 == 0 {
                consumer.pop_batch(2, |item| received.push(item))
            } else {
                consumer.try_pop().map_or(0, |item| {
                    received.push(item);
                    1
                })
            };
            if popped == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(received, [0, 1, 2, 3]);
        producer_thread.join().expect("producer panicked");
        assert!(!consumer.is_producer_alive());
        assert_eq!(consumer.try_pop(), None);
    });
}

/// Capacity 1 (mask 0): every item reuses the same slot.
#[test]
fn loom_capacity_one_reuses_the_slot() {
    model(|| {
        let (mut producer, mut consumer) = channel::<usize>(1);
        let producer_thread = thread::spawn(move || {
            for item in 0..3 {
                while producer.stage(item).is_err() {
                    thread::yield_now();
                }
                assert_eq!(producer.publish(), 1);
            }
        });
        let mut received = Vec::new();
        while received.len() < 3 {
            if consumer.pop_batch(usize::MAX, |item| received.push(item)) == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(received, [0, 1, 2]);
        producer_thread.join().expect("producer panicked");
    });
}

struct Tracked {
    drops: Arc<AtomicUsize>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Both ends dropped on different threads while items (published and staged) are inside:
/// each item is dropped exactly once, whichever end goes last.
#[test]
fn loom_items_inside_are_dropped_once() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut producer, mut consumer) = channel::<Tracked>(4);
        let producer_drops = Arc::clone(&drops);
        let producer_thread = thread::spawn(move || {
            for _ in 0..2 {
                let item = Tracked {
                    drops: Arc::clone(&producer_drops),
                };
                assert!(producer.try_push(item).is_ok());
            }
            let staged = Tracked {
                drops: Arc::clone(&producer_drops),
            };
            assert!(producer.stage(staged).is_ok());
            // Dropped here with one item staged: the drop publishes it.
        });
        let popped = consumer.try_pop();
        drop(popped);
        drop(consumer);
        producer_thread.join().expect("producer panicked");
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    });
}

/// The doorbell handshake: if the consumer decides to sleep, the producer must see the
/// parked flag after publishing (otherwise the item would sit behind a sleeping shard).
#[test]
fn loom_park_handshake_never_loses_a_wakeup() {
    model(|| {
        let (mut producer, mut consumer) = channel::<usize>(2);
        let producer_thread = thread::spawn(move || {
            assert_eq!(producer.try_push(7), Ok(()));
            producer.consumer_parked()
        });
        let consumer_sleeps = consumer.prepare_park();
        let doorbell_rung = producer_thread.join().expect("producer panicked");
        assert!(
            !consumer_sleeps || doorbell_rung,
            "consumer went to sleep and the producer did not ring"
        );
        if !consumer_sleeps {
            assert_eq!(consumer.try_pop(), Some(7));
        }
    });
}
