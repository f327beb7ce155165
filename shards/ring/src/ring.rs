//! One bounded single-producer single-consumer ring.
//!
//! # Layout
//!
//! The shared state lives in one `Arc` allocation. Every field that one side writes sits
//! on its own 128-byte block ([`CachePadded`]): Intel's adjacent-line prefetcher pulls
//! cache lines in pairs, so 64-byte padding still lets the producer's line drag the
//! consumer's along with it (glommio and crossbeam pad to 128 for the same reason).
//!
//! | block | written by | read by | when |
//! |---|---|---|---|
//! | `head` | consumer | producer | producer refreshes only when the ring looks full |
//! | `tail` | producer | consumer | consumer refreshes only when the ring looks empty (or short of a batch) |
//! | `consumer_parked` | consumer | producer | park/idle mode only |
//! | `cold` (alive flags, slot buffer pointer) | each end once, on drop | rarely | |
//!
//! Each end keeps its own index privately and a cached copy of the other end's index,
//! so in steady state an end touches the other end's line once per refresh, not once per
//! item (the "FastForward"/rtrb trick). The slot buffer's address and mask are copied
//! into each end, so the hot paths never read the `Arc`.
//!
//! # Memory ordering
//!
//! Indices grow monotonically (wrapping `usize`) and are masked by `capacity - 1`; the
//! ring is full when `tail - head == capacity` and empty when `tail == head`.
//!
//! * Producer: plain write of the slot, then `tail.store(Release)`. Consumer:
//!   `tail.load(Acquire)`, then plain read of the slot. The Release/Acquire pair makes
//!   the slot write happen-before the read.
//! * Consumer: plain read (move out) of the slot, then `head.store(Release)`. Producer:
//!   `head.load(Acquire)`, then plain overwrite of the slot. This pair makes the read
//!   happen-before the overwrite (no write-after-read race on a reused slot).
//! * Neither end ever loads its own index from shared memory, so no other ordering is
//!   needed. On x86-64 all of these compile to plain `mov`s.
//! * Park/doorbell: see [`Consumer::set_parked`]; it is a Dekker handshake and needs a
//!   `SeqCst` fence on each side, paid only when parking is in use.
//! * Alive flags: `Release` store on drop, `Acquire` load, so a consumer that sees the
//!   producer gone also sees every item the producer published (the producer publishes
//!   before clearing its flag).

use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::sync::{fence, Arc, AtomicBool, AtomicUsize, Ordering, UnsafeCell};

/// Largest capacity, in items, that [`channel`] accepts (after rounding up to a power of
/// two). Rings are per pair of shards and hold small handles: anything near this is a
/// configuration mistake, not a workload.
pub const RING_CAPACITY_ITEMS_MAX: usize = 1 << 30;

const _: () = assert!(RING_CAPACITY_ITEMS_MAX.is_power_of_two());

/// Why a ring could not be built. Carries the numbers that explain the refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapacityError {
    /// A ring must hold at least one item.
    #[error("ring capacity must be at least 1 item, got 0")]
    Zero,
    /// The requested capacity exceeds [`RING_CAPACITY_ITEMS_MAX`].
    #[error("ring capacity {requested_items} items exceeds the maximum of {max_items} items")]
    TooLarge {
        /// Capacity asked for, in items.
        requested_items: usize,
        /// [`RING_CAPACITY_ITEMS_MAX`].
        max_items: usize,
    },
}

/// Pads and aligns `T` to 128 bytes so that it shares neither its cache line nor the
/// adjacent line (pulled in by the spatial prefetcher) with any other field.
#[repr(align(128))]
struct CachePadded<T>(T);

const _: () = assert!(std::mem::align_of::<CachePadded<AtomicUsize>>() == 128);

type Slot<T> = UnsafeCell<MaybeUninit<T>>;

/// Fields written at most once per end, at drop.
struct Cold<T> {
    producer_alive: AtomicBool,
    consumer_alive: AtomicBool,
    slots: Box<[Slot<T>]>,
}

struct Shared<T> {
    /// Index of the next slot the consumer will read. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Index one past the last published slot. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    /// The consumer is about to sleep and wants a doorbell on the next publish.
    consumer_parked: CachePadded<AtomicBool>,
    cold: CachePadded<Cold<T>>,
}

// SAFETY: `Shared` hands out `T`s by value across threads, so `T: Send` is needed and
// enough. Slots are accessed through the `UnsafeCell`s only by the one producer (slots in
// `[head, head + capacity)` not yet published) and the one consumer (slots in
// `[head, tail)`), never both on the same slot at once, as the ordering argument in the
// module docs shows.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; moving the shared state moves the `T`s it holds.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both ends are gone and the `Arc` drop synchronised with their last writes, so
        // `[head, tail)` is exactly the set of published, unconsumed items. The producer
        // publishes its staged items when dropped, so nothing lies beyond `tail`.
        let head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Relaxed);
        let mask = self.cold.0.slots.len() - 1;
        let mut index = head;
        while index != tail {
            self.cold.0.slots[index & mask].with_mut(|slot| {
                // SAFETY: slots in `[head, tail)` were written by the producer and not
                // moved out by the consumer, so each is initialised and is dropped here
                // once; no other reference exists because both ends are gone.
                unsafe { (*slot).assume_init_drop() }
            });
            index = index.wrapping_add(1);
        }
    }
}

/// Creates a ring holding at least `capacity` items (rounded up to a power of two).
///
/// # Panics
///
/// If `capacity` is 0 or rounds up past [`RING_CAPACITY_ITEMS_MAX`]. Use [`try_channel`]
/// when the capacity comes from configuration that has not been validated.
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    match try_channel(capacity) {
        Ok(ends) => ends,
        Err(error) => panic!("dataplane_ring::channel: {error}"),
    }
}

/// Creates a ring holding at least `capacity` items (rounded up to a power of two), or
/// says why it cannot.
pub fn try_channel<T: Send>(capacity: usize) -> Result<(Producer<T>, Consumer<T>), CapacityError> {
    let capacity = checked_capacity(capacity)?;
    let slots: Box<[Slot<T>]> = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        consumer_parked: CachePadded(AtomicBool::new(false)),
        cold: CachePadded(Cold {
            producer_alive: AtomicBool::new(true),
            consumer_alive: AtomicBool::new(true),
            slots,
        }),
    });
    // The boxed slice's pointer is stable for the life of the `Arc`, which both ends hold.
    let slots = NonNull::from(&*shared.cold.0.slots).cast::<Slot<T>>();
    let mask = capacity - 1;
    let producer = Producer {
        shared: Arc::clone(&shared),
        slots,
        mask,
        tail_next: 0,
        tail_published: 0,
        head_cached: 0,
        _not_sync: PhantomData,
    };
    let consumer = Consumer {
        shared,
        slots,
        mask,
        head_next: 0,
        tail_cached: 0,
        _not_sync: PhantomData,
    };
    Ok((producer, consumer))
}

/// Rounds `capacity` up to a power of two and checks it against the limits.
pub(crate) fn checked_capacity(capacity: usize) -> Result<usize, CapacityError> {
    if capacity == 0 {
        return Err(CapacityError::Zero);
    }
    match capacity.checked_next_power_of_two() {
        Some(rounded) if rounded <= RING_CAPACITY_ITEMS_MAX => Ok(rounded),
        _ => Err(CapacityError::TooLarge {
            requested_items: capacity,
            max_items: RING_CAPACITY_ITEMS_MAX,
        }),
    }
}

/// The writing end of a ring. `Send`, not `Sync`: exactly one thread pushes.
///
/// Items are written with [`stage`](Self::stage) (invisible to the consumer) and made
/// visible with [`publish`](Self::publish), which costs one `Release` store however many
/// items were staged. [`try_push`](Self::try_push) is stage + publish. Dropping the
/// producer publishes whatever is still staged.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    slots: NonNull<Slot<T>>,
    mask: usize,
    /// Index of the next slot to write; staged items lie in `[tail_published, tail_next)`.
    tail_next: usize,
    /// Value last stored to `shared.tail`.
    tail_published: usize,
    /// Last value read from `shared.head`; never ahead of the real one.
    head_cached: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: the producer owns the write side of the ring; moving it to another thread moves
// that role with it. `T: Send` because the items it writes are received on another thread.
// It stays `!Sync` (via `NonNull` and the `Cell` marker): two threads must never push at once.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T> Producer<T> {
    /// Number of items the ring holds (a power of two).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Pushes `item` and publishes it, together with any items staged before it.
    /// Gives `item` back when the ring is full; staged items then stay staged.
    #[inline]
    pub fn try_push(&mut self, item: T) -> Result<(), T> {
        self.stage(item)?;
        self.publish();
        Ok(())
    }

    /// Writes `item` into the next slot without making it visible to the consumer.
    /// Gives `item` back when the ring is full (staged items count as used slots).
    #[inline]
    pub fn stage(&mut self, item: T) -> Result<(), T> {
        if self.tail_next.wrapping_sub(self.head_cached) == self.capacity() {
            self.head_cached = self.shared.head.0.load(Ordering::Acquire);
            if self.tail_next.wrapping_sub(self.head_cached) == self.capacity() {
                return Err(item);
            }
        }
        self.slot(self.tail_next).with_mut(|slot| {
            // SAFETY: `tail_next - head < capacity`, so this slot is outside `[head, tail)`:
            // the consumer has moved its previous item out (the Acquire load of `head`
            // ordered that read before this write) and will not read it before we publish.
            // Writing `MaybeUninit` never drops a previous value.
            unsafe { (*slot).write(item) };
        });
        self.tail_next = self.tail_next.wrapping_add(1);
        Ok(())
    }

    /// Makes every staged item visible with one `Release` store; returns how many.
    /// Does not touch shared memory when nothing is staged.
    #[inline]
    pub fn publish(&mut self) -> usize {
        let count = self.staged();
        if count != 0 {
            self.shared.tail.0.store(self.tail_next, Ordering::Release);
            self.tail_published = self.tail_next;
        }
        count
    }

    /// Number of items staged but not yet published.
    #[inline]
    pub fn staged(&self) -> usize {
        self.tail_next.wrapping_sub(self.tail_published)
    }

    /// Number of items that can be staged now. Reads the consumer's index (a cache miss
    /// when the consumer has moved on), so call it per batch, not per item.
    #[inline]
    pub fn free_slots(&mut self) -> usize {
        self.head_cached = self.shared.head.0.load(Ordering::Acquire);
        self.capacity() - self.tail_next.wrapping_sub(self.head_cached)
    }

    /// Whether the [`Consumer`] still exists. When it does not, pushed items are never
    /// received (they are dropped with the producer).
    #[inline]
    pub fn is_consumer_alive(&self) -> bool {
        self.shared.cold.0.consumer_alive.load(Ordering::Acquire)
    }

    /// Whether the consumer has announced it is going to sleep, so the caller must ring
    /// its doorbell. Call it right after [`publish`](Self::publish) or
    /// [`try_push`](Self::try_push) returned items.
    ///
    /// Starts with a `SeqCst` fence, the producer's half of the handshake described at
    /// [`Consumer::set_parked`]: `publish` (tail store); fence; load `parked`. With the
    /// consumer's `store parked; fence; load tail`, at least one side sees the other's
    /// store, so a published item never sits unnoticed behind a sleeping consumer.
    /// Costs one fence (`mfence` on x86-64): busy-polling runtimes need not call it.
    #[inline]
    pub fn consumer_parked(&self) -> bool {
        fence(Ordering::SeqCst);
        self.shared.consumer_parked.0.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn slot(&self, index: usize) -> &Slot<T> {
        // SAFETY: `index & mask < capacity`, `slots` points at `capacity` slots owned by
        // `shared`, which `self` keeps alive.
        unsafe { self.slots.add(index & self.mask).as_ref() }
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Publish first, so a consumer that sees `producer_alive == false` (Acquire) also
        // sees every item; then whatever it does not take is dropped with `Shared`.
        self.publish();
        self.shared
            .cold
            .0
            .producer_alive
            .store(false, Ordering::Release);
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("tail_next", &self.tail_next)
            .field("tail_published", &self.tail_published)
            .field("head_cached", &self.head_cached)
            .finish()
    }
}

/// The reading end of a ring. `Send`, not `Sync`: exactly one thread pops.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    slots: NonNull<Slot<T>>,
    mask: usize,
    /// Index of the next slot to read; equals `shared.head` outside `pop_batch`.
    head_next: usize,
    /// Last value read from `shared.tail`; never ahead of the real one.
    tail_cached: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: the consumer owns the read side of the ring; moving it moves that role. `T: Send`
// because items written on another thread are returned here. `!Sync` as for `Producer`.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T> Consumer<T> {
    /// Number of items the ring holds (a power of two).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Takes the oldest published item and releases its slot at once.
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        if self.available_cached() == 0 && self.refresh_tail() == 0 {
            return None;
        }
        // SAFETY: `head_next < tail` as just checked.
        let item = unsafe { self.read_next() };
        self.shared.head.0.store(self.head_next, Ordering::Release);
        Some(item)
    }

    /// Hands up to `max_items` items, oldest first, to `f`, then releases all their slots
    /// with one `Release` store. Returns how many items `f` received.
    ///
    /// Reads the producer's index only if the cached view holds fewer than `max_items`.
    /// Slots are released only when the batch ends, so a producer facing a full ring
    /// waits for the whole batch: keep `max_items` well below the capacity when latency
    /// matters. If `f` panics, the items it already received stay consumed (their slots
    /// are released during unwinding) and the rest stay in the ring.
    #[inline]
    pub fn pop_batch(&mut self, max_items: usize, mut f: impl FnMut(T)) -> usize {
        let mut available = self.available_cached();
        if available < max_items {
            available = self.refresh_tail();
        }
        let count = available.min(max_items);
        if count == 0 {
            return 0;
        }
        let guard = ReleaseHeadOnDrop { consumer: self };
        for _ in 0..count {
            // SAFETY: `count <= tail - head_next` at the start and each read advances
            // `head_next` by one, so every read is below `tail`.
            let item = unsafe { guard.consumer.read_next() };
            f(item);
        }
        drop(guard);
        count
    }

    /// Starts loading the cache line of the next slot to be read, so that when an item
    /// arrives the slot's miss overlaps the miss on the producer's index instead of
    /// following it. A hint: never faults, no effect on correctness. Meant for idle polls.
    #[inline]
    pub fn prefetch_next(&self) {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let slot = self.slots.as_ptr().wrapping_add(self.head_next & self.mask);
            // SAFETY: SSE is part of the x86-64 baseline; a prefetch never faults and the
            // address is inside the slot buffer anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(slot.cast::<i8>()) };
        }
    }

    /// Number of published items not yet popped. Reads the producer's index.
    #[inline]
    pub fn len(&mut self) -> usize {
        self.refresh_tail()
    }

    /// Whether no published item is waiting. Reads the producer's index only when the
    /// cached view is empty.
    #[inline]
    pub fn is_empty(&mut self) -> bool {
        self.available_cached() == 0 && self.refresh_tail() == 0
    }

    /// Whether the [`Producer`] still exists. Once this returns `false`, every item the
    /// producer will ever send is already visible: drain until empty, then stop.
    #[inline]
    pub fn is_producer_alive(&self) -> bool {
        self.shared.cold.0.producer_alive.load(Ordering::Acquire)
    }

    /// Announces (`true`) or withdraws (`false`) the consumer's intention to sleep until
    /// its doorbell rings. The flag has its own cache line, so busy-polling costs nothing.
    ///
    /// The handshake (use [`prepare_park`](Self::prepare_park), which does all of it):
    ///
    /// 1. consumer: `set_parked(true)`, which stores the flag and then issues a `SeqCst`
    ///    fence;
    /// 2. consumer: re-check [`is_empty`](Self::is_empty); if items arrived,
    ///    `set_parked(false)` and keep polling; otherwise sleep on the doorbell;
    /// 3. producer: [`publish`](Producer::publish), then
    ///    [`consumer_parked`](Producer::consumer_parked) (fence, then load the flag); if
    ///    `true`, ring the doorbell;
    /// 4. consumer, once woken: `set_parked(false)` and poll.
    ///
    /// Both sides store, fence (`SeqCst`), then load the other's variable, so the fences
    /// are totally ordered and at least one side sees the other's store: either the
    /// consumer sees the item in step 2, or the producer sees the flag in step 3. Spurious
    /// doorbells (the consumer found the item itself) are harmless.
    #[inline]
    pub fn set_parked(&self, parked: bool) {
        self.shared
            .consumer_parked
            .0
            .store(parked, Ordering::Relaxed);
        if parked {
            fence(Ordering::SeqCst);
        }
    }

    /// Steps 1 and 2 of the handshake at [`set_parked`](Self::set_parked): announces the
    /// intention to sleep and re-checks the ring. Returns `true` when the caller may sleep
    /// (the producer will see the flag); returns `false`, with the flag withdrawn, when
    /// items arrived meanwhile.
    #[inline]
    pub fn prepare_park(&mut self) -> bool {
        self.set_parked(true);
        if self.is_empty() {
            return true;
        }
        self.set_parked(false);
        false
    }

    #[inline(always)]
    fn available_cached(&self) -> usize {
        self.tail_cached.wrapping_sub(self.head_next)
    }

    #[inline]
    fn refresh_tail(&mut self) -> usize {
        self.tail_cached = self.shared.tail.0.load(Ordering::Acquire);
        self.available_cached()
    }

    /// Moves the item at `head_next` out and advances `head_next` (not `shared.head`).
    ///
    /// # Safety
    ///
    /// `head_next` must be below a `tail` value loaded with `Acquire`, so the slot holds
    /// a published item whose write happened-before this read.
    #[inline(always)]
    unsafe fn read_next(&mut self) -> T {
        // SAFETY: `index & mask < capacity`, `slots` points at `capacity` slots owned by
        // `shared`, which `self` keeps alive.
        let slot = unsafe { self.slots.add(self.head_next & self.mask).as_ref() };
        // SAFETY: per this function's contract the slot is initialised and published;
        // advancing `head_next` right after means it is read exactly once.
        let item = slot.with(|slot| unsafe { (*slot).assume_init_read() });
        self.head_next = self.head_next.wrapping_add(1);
        item
    }
}

/// Publishes the consumer's `head_next` when a batch ends, normally or by a panic in the
/// caller's closure, so moved-out items are never seen as present again.
struct ReleaseHeadOnDrop<'a, T> {
    consumer: &'a mut Consumer<T>,
}

impl<T> Drop for ReleaseHeadOnDrop<'_, T> {
    fn drop(&mut self) {
        let consumer = &mut *self.consumer;
        consumer
            .shared
            .head
            .0
            .store(consumer.head_next, Ordering::Release);
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Unread items are left for `Shared::drop`, which runs once both ends are gone.
        self.shared
            .cold
            .0
            .consumer_alive
            .store(false, Ordering::Release);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("head_next", &self.head_next)
            .field("tail_cached", &self.tail_cached)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        assert_eq!(channel::<u8>(1).0.capacity(), 1);
        assert_eq!(channel::<u8>(3).0.capacity(), 4);
        assert_eq!(channel::<u8>(64).1.capacity(), 64);
        assert_eq!(try_channel::<u8>(0).err(), Some(CapacityError::Zero));
        assert_eq!(
            try_channel::<u8>(RING_CAPACITY_ITEMS_MAX + 1).err(),
            Some(CapacityError::TooLarge {
                requested_items: RING_CAPACITY_ITEMS_MAX + 1,
                max_items: RING_CAPACITY_ITEMS_MAX
            })
        );
        assert_eq!(
            try_channel::<u8>(usize::MAX).err(),
            Some(CapacityError::TooLarge {
                requested_items: usize::MAX,
                max_items: RING_CAPACITY_ITEMS_MAX
            })
        );
    }

    #[test]
    #[should_panic(expected = "at least 1 item")]
    fn zero_capacity_panics() {
        let _ = channel::<u8>(0);
    }

    #[test]
    fn shared_fields_sit_on_separate_128_byte_blocks() {
        assert_eq!(std::mem::align_of::<Shared<u64>>(), 128);
        let shared = Shared::<u64> {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            consumer_parked: CachePadded(AtomicBool::new(false)),
            cold: CachePadded(Cold {
                producer_alive: AtomicBool::new(true),
                consumer_alive: AtomicBool::new(true),
                slots: Box::new([UnsafeCell::new(MaybeUninit::uninit())]),
            }),
        };
        let mut blocks = [
            std::ptr::addr_of!(shared.head) as usize / 128,
            std::ptr::addr_of!(shared.tail) as usize / 128,
            std::ptr::addr_of!(shared.consumer_parked) as usize / 128,
            std::ptr::addr_of!(shared.cold) as usize / 128,
        ];
        blocks.sort_unstable();
        assert!(blocks.windows(2).all(|pair| pair[0] != pair[1]));
    }

    #[test]
    fn try_push_gives_the_item_back_when_full() {
        let (mut producer, mut consumer) = channel::<u32>(2);
        assert_eq!(producer.try_push(1), Ok(()));
        assert_eq!(producer.try_push(2), Ok(()));
        assert_eq!(producer.try_push(3), Err(3));
        assert_eq!(producer.free_slots(), 0);
        assert_eq!(consumer.try_pop(), Some(1));
        assert_eq!(producer.free_slots(), 1);
        assert_eq!(producer.try_push(3), Ok(()));
        assert_eq!(consumer.try_pop(), Some(2));
        assert_eq!(consumer.try_pop(), Some(3));
        assert_eq!(consumer.try_pop(), None);
    }

    #[test]
    fn staged_items_are_invisible_until_published() {
        let (mut producer, mut consumer) = channel::<u32>(4);
        assert_eq!(producer.stage(1), Ok(()));
        assert_eq!(producer.stage(2), Ok(()));
        assert_eq!(producer.staged(), 2);
        assert!(consumer.is_empty());
        assert_eq!(consumer.len(), 0);
        assert_eq!(producer.publish(), 2);
        assert_eq!(producer.publish(), 0);
        assert_eq!(producer.staged(), 0);
        assert_eq!(consumer.len(), 2);
        // try_push publishes earlier staged items with it, in order.
        assert_eq!(producer.stage(3), Ok(()));
        assert_eq!(producer.try_push(4), Ok(()));
        assert_eq!(producer.stage(5), Err(5));
        let mut received = Vec::new();
        assert_eq!(
            consumer.pop_batch(usize::MAX, |item| received.push(item)),
            4
        );
        assert_eq!(received, [1, 2, 3, 4]);
    }

    #[test]
    fn pop_batch_respects_max_items() {
        let (mut producer, mut consumer) = channel::<u32>(8);
        for item in 0..6 {
            assert_eq!(producer.stage(item), Ok(()));
        }
        producer.publish();
        let mut received = Vec::new();
        assert_eq!(consumer.pop_batch(4, |item| received.push(item)), 4);
        assert_eq!(consumer.pop_batch(0, |item| received.push(item)), 0);
        assert_eq!(consumer.pop_batch(4, |item| received.push(item)), 2);
        assert_eq!(consumer.pop_batch(4, |item| received.push(item)), 0);
        assert_eq!(received, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn liveness_flags_follow_drops() {
        let (producer, consumer) = channel::<u32>(2);
        assert!(producer.is_consumer_alive());
        assert!(consumer.is_producer_alive());
        drop(consumer);
        assert!(!producer.is_consumer_alive());
        let (mut producer, consumer) = channel::<u32>(2);
        assert_eq!(producer.stage(7), Ok(()));
        drop(producer);
        assert!(!consumer.is_producer_alive());
        let mut consumer = consumer;
        // Dropping the producer published what it had staged.
        assert_eq!(consumer.try_pop(), Some(7));
    }

    #[test]
    fn park_handshake_single_thread() {
        let (mut producer, mut consumer) = channel::<u32>(2);
        assert!(!producer.consumer_parked());
        assert!(consumer.prepare_park());
        assert!(producer.consumer_parked());
        assert_eq!(producer.try_push(1), Ok(()));
        assert!(producer.consumer_parked());
        consumer.set_parked(false);
        assert!(!producer.consumer_parked());
        // Items present: prepare_park refuses and withdraws the flag.
        assert!(!consumer.prepare_park());
        assert!(!producer.consumer_parked());
    }

    #[test]
    fn zero_sized_items() {
        let (mut producer, mut consumer) = channel::<()>(2);
        assert_eq!(producer.try_push(()), Ok(()));
        assert_eq!(producer.try_push(()), Ok(()));
        assert_eq!(producer.try_push(()), Err(()));
        assert_eq!(consumer.pop_batch(8, |()| {}), 2);
    }

    /// Index arithmetic must survive `usize` wrap-around; start both ends just below it.
    #[test]
    fn indices_wrap_around_usize_max() {
        let (mut producer, mut consumer) = channel::<usize>(4);
        let start = usize::MAX - 5;
        producer.tail_next = start;
        producer.tail_published = start;
        producer.head_cached = start;
        producer.shared.head.0.store(start, Ordering::Relaxed);
        producer.shared.tail.0.store(start, Ordering::Relaxed);
        consumer.head_next = start;
        consumer.tail_cached = start;
        let mut received = Vec::new();
        for round in 0..10 {
            for item in round * 3..round * 3 + 3 {
                assert_eq!(producer.stage(item), Ok(()));
            }
            assert_eq!(producer.publish(), 3);
            assert_eq!(consumer.pop_batch(2, |item| received.push(item)), 2);
            assert_eq!(consumer.try_pop(), Some(round * 3 + 2));
            received.push(round * 3 + 2);
        }
        assert_eq!(received, (0..30).collect::<Vec<_>>());
        assert!(producer.tail_next < start, "the test did not wrap");
    }

    /// Runs seeded random operation sequences against a `VecDeque` model. A failure
    /// prints the seed; rerun with it to replay.
    #[test]
    fn matches_a_vecdeque_model() {
        for seed in 1..=200_u64 {
            run_model(seed);
        }
    }

    fn run_model(seed: u64) {
        let mut rng = SplitMix64(seed);
        let capacity = 1 << (rng.next() % 4);
        let (mut producer, mut consumer) = channel::<u64>(capacity);
        let mut published: VecDeque<u64> = VecDeque::new();
        let mut staged: VecDeque<u64> = VecDeque::new();
        let mut next_item = 0_u64;
        for step in 0..300 {
            let used = published.len() + staged.len();
            match rng.next() % 6 {
                0 => {
                    let result = producer.stage(next_item);
                    if used < capacity {
                        assert_eq!(result, Ok(()), "seed {seed} step {step}");
                        staged.push_back(next_item);
                    } else {
                        assert_eq!(result, Err(next_item), "seed {seed} step {step}");
                    }
                    next_item += 1;
                }
                1 => {
                    let result = producer.try_push(next_item);
                    if used < capacity {
                        assert_eq!(result, Ok(()), "seed {seed} step {step}");
                        staged.push_back(next_item);
                        published.extend(staged.drain(..));
                    } else {
                        assert_eq!(result, Err(next_item), "seed {seed} step {step}");
                    }
                    next_item += 1;
                }
                2 => {
                    assert_eq!(producer.publish(), staged.len(), "seed {seed} step {step}");
                    published.extend(staged.drain(..));
                }
                3 => assert_eq!(consumer.try_pop(), published.pop_front(), "seed {seed}"),
                4 => {
                    let max_items = (rng.next() % 6) as usize;
                    let mut received = Vec::new();
                    let count = consumer.pop_batch(max_items, |item| received.push(item));
                    let expected: Vec<u64> =
                        published.drain(..max_items.min(published.len())).collect();
                    assert_eq!(count, expected.len(), "seed {seed} step {step}");
                    assert_eq!(received, expected, "seed {seed} step {step}");
                }
                _ => {
                    assert_eq!(consumer.len(), published.len(), "seed {seed} step {step}");
                    assert_eq!(producer.staged(), staged.len(), "seed {seed} step {step}");
                    assert_eq!(producer.free_slots(), capacity - used, "seed {seed}");
                }
            }
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
    }
}
