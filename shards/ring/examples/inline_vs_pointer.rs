//! Evidence for `docs/decisions/why-small-frames-travel-inline.md`: the round trip of an
//! 80-byte message (a 32-byte payload frame) between two pinned threads, carried
//!
//! (a) **by pointer**: the sender writes the bytes into a buffer it owns and pushes the
//!     buffer's address; the receiver reads the 80 bytes through the pointer, writes its
//!     answer into its own buffer and pushes that address back (the data path before
//!     inline frames: one serial cache miss on the frame after the one on the ring);
//! (b) **inline**: the sender stages the bytes as ring words (a length word and 10 data
//!     words) and publishes once; the receiver pops them and copies them into a local
//!     buffer, then answers the same way.
//!
//! ```text
//! cargo run -p dataplane-ring --release --example inline_vs_pointer [runs]
//! ```

use std::hint::spin_loop;
use std::thread;
use std::time::Instant;

use dataplane_ring::{channel, Consumer, Producer};

const MESSAGE_BYTES: usize = 80;
const WORDS: usize = MESSAGE_BYTES / 8;
const ROUND_TRIPS_WARMUP: usize = 50_000;
const ROUND_TRIPS_MEASURED: usize = 500_000;
const RING_CAPACITY_WORDS: usize = 1024;
const RUNS_DEFAULT: usize = 5;
const STOP: usize = usize::MAX;

#[repr(align(64))]
struct Buffer([u64; 16]);

fn main() {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (main_core, peer_core) = match cores.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };
    if let Some(core) = main_core {
        core_affinity::set_for_current(core);
    }
    let runs = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(RUNS_DEFAULT);
    let (mut pointer_p50s, mut inline_p50s) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let pointer = round_trips(peer_core, Mode::Pointer);
        let inline = round_trips(peer_core, Mode::Inline);
        println!("run {run}: by pointer p50 {pointer} ns | inline p50 {inline} ns");
        pointer_p50s.push(pointer);
        inline_p50s.push(inline);
    }
    pointer_p50s.sort_unstable();
    inline_p50s.sort_unstable();
    println!(
        "median of {runs}: by pointer {} ns, inline {} ns (round trip p50)",
        pointer_p50s[runs / 2],
        inline_p50s[runs / 2]
    );
}

#[derive(Clone, Copy)]
enum Mode {
    Pointer,
    Inline,
}

fn round_trips(peer_core: Option<core_affinity::CoreId>, mode: Mode) -> u64 {
    let (mut to_peer, from_main) = channel::<usize>(RING_CAPACITY_WORDS);
    let (to_main, mut from_peer) = channel::<usize>(RING_CAPACITY_WORDS);
    let peer = thread::spawn(move || {
        if let Some(core) = peer_core {
            core_affinity::set_for_current(core);
        }
        echo(from_main, to_main, mode);
    });
    let mut mine = Box::new(Buffer([0; 16]));
    let mut samples_ns = Vec::with_capacity(ROUND_TRIPS_MEASURED);
    for n in 0..ROUND_TRIPS_WARMUP + ROUND_TRIPS_MEASURED {
        let start = Instant::now();
        send(&mut to_peer, &mut mine, n as u64, mode);
        let answer = receive(&mut from_peer, &mut mine, mode);
        assert_eq!(answer, Some(n as u64 + 1));
        if n >= ROUND_TRIPS_WARMUP {
            samples_ns.push(start.elapsed().as_nanos() as u64);
        }
    }
    push(&mut to_peer, STOP);
    to_peer.publish();
    peer.join().expect("echo thread panicked");
    samples_ns.sort_unstable();
    samples_ns[samples_ns.len() / 2]
}

fn echo(mut from_main: Consumer<usize>, mut to_main: Producer<usize>, mode: Mode) {
    let mut mine = Box::new(Buffer([0; 16]));
    while let Some(value) = receive(&mut from_main, &mut mine, mode) {
        send(&mut to_main, &mut mine, value + 1, mode);
    }
}

/// Writes a message whose words all hold `value` and sends it.
fn send(producer: &mut Producer<usize>, buffer: &mut Buffer, value: u64, mode: Mode) {
    for word in &mut buffer.0[..WORDS] {
        *word = value;
    }
    match mode {
        Mode::Pointer => push(producer, std::ptr::from_ref(buffer) as usize),
        Mode::Inline => {
            push(producer, MESSAGE_BYTES);
            for &word in &buffer.0[..WORDS] {
                push(producer, word as usize);
            }
        }
    }
    producer.publish();
}

/// Waits for a message, reads all its words (into `buffer` when inline), returns the
/// value it carries, or `None` for STOP.
fn receive(consumer: &mut Consumer<usize>, buffer: &mut Buffer, mode: Mode) -> Option<u64> {
    let first = pop(consumer);
    if first == STOP {
        return None;
    }
    let words: &[u64] = match mode {
        Mode::Pointer => {
            // SAFETY: the peer sent the address of its buffer, which lives until the
            // peer's thread ends, and does not write it again before we answer.
            let theirs = unsafe { &*(first as *const Buffer) };
            &theirs.0[..WORDS]
        }
        Mode::Inline => {
            for word in &mut buffer.0[..first / 8] {
                *word = pop(consumer) as u64;
            }
            &buffer.0[..WORDS]
        }
    };
    let value = words[0];
    assert!(words.iter().all(|&word| word == value));
    Some(value)
}

fn push(producer: &mut Producer<usize>, item: usize) {
    let mut item = item;
    while let Err(rejected) = producer.stage(item) {
        item = rejected;
        producer.publish();
        spin_loop();
    }
}

fn pop(consumer: &mut Consumer<usize>) -> usize {
    loop {
        if let Some(item) = consumer.try_pop() {
            return item;
        }
        spin_loop();
    }
}
