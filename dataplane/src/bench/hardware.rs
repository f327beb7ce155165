//! The machine's own limit: a raw cache-line ping-pong between the two shard cores.
//!
//! Two threads, pinned to two CPUs, bounce one `AtomicU64` that sits alone on a 128-byte
//! aligned line (two 64-byte lines, so the adjacent-line prefetcher cannot drag a neighbour
//! along). The ping thread writes an odd number `2k - 1`; the pong thread, spinning on the
//! line, answers with the even number `2k`; the ping thread records the round trip from
//! just before its write to just after it sees the answer. Nothing else is on the path: no
//! queue, no message, no scheduler. Any messaging system that crosses cores pays at least
//! this, so the `compare` table reports how far each system is from it.
//!
//! What the result means:
//! - `latency_ns`: round trips (one clock read each side included, about 20–40 ns here).
//! - `messages`: one-way bounces (2 per round trip); `throughput_msgs_per_s` is the
//!   one-way bounce rate (`2 × round trips / s`). There is no flood workload: the line can
//!   only carry one value at a time, so the bounce rate *is* its throughput.
//! - `suite` is `"hardware"`; `compare` relabels it with the suite it is comparing, so the
//!   hardware row appears in every table (its `system` stays `"hardware"`).
//! - `--rate` is ignored: the ping-pong is always closed-loop.
//!
//! CPUs: `opts.cpus[0..2]` if given, else the first two CPUs of the calling thread's
//! affinity mask, read before any pinning (`core_affinity::get_core_ids` returns the
//! calling thread's mask). With fewer than two usable CPUs both threads run unpinned and
//! yield now and then so that they make progress on one core; the result is then not a
//! hardware limit, and a warning is logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::report::{BenchResult, Recorder, SYSTEM_HARDWARE};
use super::{Suite, SuiteOptions};

/// Round trips run before recording starts (page faults, frequency, first cache misses).
const WARMUP_ROUND_TRIPS: u64 = 10_000;
/// Spins between `thread::yield_now` calls: far more than a bounce takes (a few hundred),
/// so it only matters when both threads share one CPU.
const SPINS_BEFORE_YIELD: u32 = 1 << 16;
/// Value the ping thread stores to tell the pong thread to stop (odd values are requests).
const STOP: u64 = u64::MAX;

/// One `AtomicU64` alone on a 128-byte aligned line.
#[repr(align(128))]
#[derive(Debug, Default)]
struct CacheLine {
    value: AtomicU64,
}

/// Runs the cache-line ping-pong for `opts.seconds` and reports it (see the module docs).
pub fn run(opts: &SuiteOptions) -> BenchResult {
    let cpus = pick_cpus(opts);
    if cpus.is_none() {
        tracing::warn!("hardware suite: fewer than two usable CPUs; running unpinned");
    }
    let line = Arc::new(CacheLine::default());
    let ready = Arc::new(Barrier::new(2));
    let duration = Duration::from_secs_f64(opts.seconds.max(0.0));

    let pong = {
        let line = Arc::clone(&line);
        let ready = Arc::clone(&ready);
        let cpu = cpus.map(|[_, pong_cpu]| pong_cpu);
        thread::Builder::new()
            .name("hardware-pong".into())
            .spawn(move || {
                pin(cpu);
                ready.wait();
                pong_loop(&line.value);
            })
            // Invariant: spawning one thread only fails when the OS is out of threads or
            // memory, where no benchmark can run.
            .expect("spawn hardware-pong thread")
    };
    let ping = {
        let line = Arc::clone(&line);
        let cpu = cpus.map(|[ping_cpu, _]| ping_cpu);
        thread::Builder::new()
            .name("hardware-ping".into())
            .spawn(move || {
                pin(cpu);
                ready.wait();
                ping_loop(&line.value, duration)
            })
            .expect("spawn hardware-ping thread")
    };
    // Invariant: neither loop panics (no indexing, no unwrap); a panic there is a bug.
    let (recorder, round_trips, elapsed) = ping.join().expect("hardware-ping thread panicked");
    pong.join().expect("hardware-pong thread panicked");

    let messages = round_trips * 2;
    let seconds = elapsed.as_secs_f64();
    BenchResult::new(
        Suite::Hardware.name(),
        SYSTEM_HARDWARE,
        2,
        messages,
        seconds,
        recorder.latency_ns(),
    )
}

/// The two CPUs to pin to, ping first, or `None` when fewer than two are usable.
fn pick_cpus(opts: &SuiteOptions) -> Option<[core_affinity::CoreId; 2]> {
    match super::pick_cpus(opts, 2)[..] {
        [ping, pong] => Some([
            core_affinity::CoreId { id: ping },
            core_affinity::CoreId { id: pong },
        ]),
        _ => None,
    }
}

fn pin(cpu: Option<core_affinity::CoreId>) {
    if let Some(cpu) = cpu {
        if !core_affinity::set_for_current(cpu) {
            tracing::warn!(cpu = cpu.id, "hardware suite: could not pin thread");
        }
    }
}

/// Writes odd requests, waits for each even answer; returns the recorded round trips,
/// their count and the time they took (warm-up excluded).
fn ping_loop(value: &AtomicU64, duration: Duration) -> (Recorder, u64, Duration) {
    let mut recorder = Recorder::new();
    let mut sequence: u64 = 0;
    for _ in 0..WARMUP_ROUND_TRIPS {
        sequence += 1;
        bounce(value, sequence);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut round_trips: u64 = 0;
    let mut now = start;
    while now < deadline {
        sequence += 1;
        let sent = Instant::now();
        bounce(value, sequence);
        now = Instant::now();
        recorder.record_between(sent, now);
        round_trips += 1;
    }
    value.store(STOP, Ordering::Release);
    (recorder, round_trips, now - start)
}

/// One round trip: store request `2k - 1`, spin until the pong thread stores `2k`.
#[inline(always)]
fn bounce(value: &AtomicU64, sequence: u64) {
    let request = 2 * sequence - 1;
    value.store(request, Ordering::Release);
    let mut spins: u32 = 0;
    while value.load(Ordering::Acquire) == request {
        spin_or_yield(&mut spins);
    }
}

/// Answers each odd request with the next even number until it sees `STOP`.
fn pong_loop(value: &AtomicU64) {
    let mut spins: u32 = 0;
    loop {
        let seen = value.load(Ordering::Acquire);
        if seen == STOP {
            return;
        }
        if seen % 2 == 1 {
            value.store(seen + 1, Ordering::Release);
        } else {
            spin_or_yield(&mut spins);
        }
    }
}

#[inline(always)]
fn spin_or_yield(spins: &mut u32) {
    std::hint::spin_loop();
    *spins = spins.wrapping_add(1);
    if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
        thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_reports_positive_numbers() {
        let opts = SuiteOptions {
            seconds: 0.05,
            ..SuiteOptions::default()
        };
        let result = run(&opts);
        assert_eq!(result.system, "hardware");
        assert!(result.messages > 0 && result.messages.is_multiple_of(2));
        assert!(result.throughput_msgs_per_s > 0.0);
        assert!(result.latency_ns.p50 > 0);
        assert!(result.latency_ns.p50 <= result.latency_ns.max);
    }
}
