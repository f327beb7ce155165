//! Measures the ring between two pinned threads:
//!
//! (a) round trip, one item at a time, through two rings (A → B → A), p50/p99;
//! (b) one-way throughput with `stage` × 64 + `publish` against `pop_batch(64)`, and the
//!     same one item at a time (`try_push` / `try_pop`) for comparison.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/targets/ring cargo run -p dataplane-ring --release --example ring_pingpong [runs]
//! ```
//!
//! This machine's timings fall into a fast and a slow level about 3x apart (shared VM),
//! so each measurement is repeated and the median run is reported too.

use std::hint::spin_loop;
use std::thread;
use std::time::{Duration, Instant};

use dataplane_ring::{channel, Consumer, Producer};

/// Items are pointer-sized handles, as on the real data path.
type Handle = usize;

const ROUND_TRIPS_WARMUP: usize = 20_000;
const ROUND_TRIPS_MEASURED: usize = 200_000;
const PINGPONG_RING_CAPACITY_ITEMS: usize = 64;
const THROUGHPUT_ITEMS: usize = 40_000_000;
const THROUGHPUT_RING_CAPACITY_ITEMS: usize = 1024;
const BATCH_ITEMS: usize = 64;
const RUNS_DEFAULT: usize = 5;
const STOP: Handle = Handle::MAX;

const _: () = assert!(BATCH_ITEMS < THROUGHPUT_RING_CAPACITY_ITEMS);

fn main() {
    // Read the affinity mask before pinning anything: core_affinity reports the calling
    // thread's mask, which shrinks to one core once the thread is pinned.
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let (core_a, core_b) = match core_ids.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => {
            eprintln!("fewer than 2 cores in the affinity mask: running unpinned");
            (None, None)
        }
    };
    if let Some(core) = core_a {
        core_affinity::set_for_current(core);
    }
    let runs = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(RUNS_DEFAULT);
    println!(
        "cores: main={:?} peer={:?}; Instant::now() overhead ~{} ns",
        core_a.map(|core| core.id),
        core_b.map(|core| core.id),
        instant_overhead_ns()
    );

    let mut round_trip_p50s = Vec::new();
    let mut round_trip_p99s = Vec::new();
    let mut round_trip_means = Vec::new();
    let mut batched_rates = Vec::new();
    let mut single_rates = Vec::new();
    for run in 0..runs {
        let round_trip = measure_round_trip(core_b);
        let batched = measure_throughput(core_b, BATCH_ITEMS);
        let single = measure_throughput(core_b, 1);
        println!(
            "run {run}: round trip p50 {} ns, p99 {} ns, p99.9 {} ns, mean {} ns (untimed loop) | \
             one-way batched({BATCH_ITEMS}) {:.1} M items/s | one at a time {:.1} M items/s",
            round_trip.p50_ns,
            round_trip.p99_ns,
            round_trip.p999_ns,
            round_trip.mean_untimed_ns,
            batched,
            single
        );
        round_trip_p50s.push(round_trip.p50_ns);
        round_trip_p99s.push(round_trip.p99_ns);
        round_trip_means.push(round_trip.mean_untimed_ns);
        batched_rates.push(batched);
        single_rates.push(single);
    }
    println!(
        "median of {runs} runs: round trip p50 {} ns, p99 {} ns, mean {} ns | \
         batched {:.1} M items/s | one at a time {:.1} M items/s",
        median(&mut round_trip_p50s),
        median(&mut round_trip_p99s),
        median(&mut round_trip_means),
        median(&mut batched_rates),
        median(&mut single_rates)
    );
}

struct RoundTrip {
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    /// Mean of a loop without per-sample clock reads: no `Instant` overhead included.
    mean_untimed_ns: u64,
}

fn measure_round_trip(peer_core: Option<core_affinity::CoreId>) -> RoundTrip {
    let (mut to_peer, from_main) = channel::<Handle>(PINGPONG_RING_CAPACITY_ITEMS);
    let (to_main, mut from_peer) = channel::<Handle>(PINGPONG_RING_CAPACITY_ITEMS);
    let peer = thread::spawn(move || {
        pin(peer_core);
        echo(from_main, to_main);
    });
    let mut samples_ns = Vec::with_capacity(ROUND_TRIPS_MEASURED);
    for item in 0..ROUND_TRIPS_WARMUP {
        round_trip(&mut to_peer, &mut from_peer, item);
    }
    for item in 0..ROUND_TRIPS_MEASURED {
        let start = Instant::now();
        round_trip(&mut to_peer, &mut from_peer, item);
        samples_ns.push(start.elapsed().as_nanos() as u64);
    }
    let start = Instant::now();
    for item in 0..ROUND_TRIPS_MEASURED {
        round_trip(&mut to_peer, &mut from_peer, item);
    }
    let mean_untimed_ns = (start.elapsed().as_nanos() / ROUND_TRIPS_MEASURED as u128) as u64;
    push_spinning(&mut to_peer, STOP);
    peer.join().expect("echo thread panicked");
    samples_ns.sort_unstable();
    RoundTrip {
        p50_ns: samples_ns[samples_ns.len() / 2],
        p99_ns: samples_ns[samples_ns.len() * 99 / 100],
        p999_ns: samples_ns[samples_ns.len() * 999 / 1000],
        mean_untimed_ns,
    }
}

#[inline(always)]
fn round_trip(to_peer: &mut Producer<Handle>, from_peer: &mut Consumer<Handle>, item: Handle) {
    push_spinning(to_peer, item);
    loop {
        if let Some(echoed) = from_peer.try_pop() {
            debug_assert_eq!(echoed, item);
            return;
        }
        spin_loop();
    }
}

fn echo(mut from_main: Consumer<Handle>, mut to_main: Producer<Handle>) {
    loop {
        match from_main.try_pop() {
            Some(STOP) => return,
            Some(item) => push_spinning(&mut to_main, item),
            None => spin_loop(),
        }
    }
}

#[inline(always)]
fn push_spinning(producer: &mut Producer<Handle>, mut item: Handle) {
    while let Err(rejected) = producer.try_push(item) {
        item = rejected;
        spin_loop();
    }
}

/// One-way items per second (in millions), producer on `peer_core`, consumer here.
fn measure_throughput(peer_core: Option<core_affinity::CoreId>, batch_items: usize) -> f64 {
    let (mut producer, mut consumer) = channel::<Handle>(THROUGHPUT_RING_CAPACITY_ITEMS);
    let peer = thread::spawn(move || {
        pin(peer_core);
        let mut next_item = 0;
        while next_item < THROUGHPUT_ITEMS {
            let batch_end = (next_item + batch_items).min(THROUGHPUT_ITEMS);
            while next_item < batch_end && producer.stage(next_item).is_ok() {
                next_item += 1;
            }
            if producer.publish() == 0 {
                spin_loop();
            }
        }
    });
    let start = Instant::now();
    let mut expected = 0;
    while expected < THROUGHPUT_ITEMS {
        let popped = if batch_items == 1 {
            consumer.try_pop().map_or(0, |item| {
                debug_assert_eq!(item, expected);
                expected += 1;
                1
            })
        } else {
            consumer.pop_batch(batch_items, |item| {
                debug_assert_eq!(item, expected);
                expected += 1;
            })
        };
        if popped == 0 {
            spin_loop();
        }
    }
    let elapsed = start.elapsed();
    peer.join().expect("producer thread panicked");
    THROUGHPUT_ITEMS as f64 / elapsed.as_secs_f64() / 1e6
}

fn pin(core: Option<core_affinity::CoreId>) {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
}

fn instant_overhead_ns() -> u64 {
    const CALLS: u32 = 100_000;
    let start = Instant::now();
    let mut last = start;
    for _ in 0..CALLS {
        last = Instant::now();
    }
    (last.duration_since(start).max(Duration::from_nanos(1)) / CALLS).as_nanos() as u64
}

fn median<V: PartialOrd + Copy>(values: &mut [V]) -> V {
    values.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}
