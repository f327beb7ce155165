//! The epoch ticker: a thread that advances the engine's epoch, so that a guest running
//! past its deadline reaches the epoch callback at its next function entry or loop
//! back-edge. The callback reads the clock and decides (see `agent.rs`); ticks only
//! decide *when* it looks.
//!
//! Three paces, chosen at each wake-up from what the shards are doing:
//! - **idle** (no guest call anywhere): one wake-up per [`IDLE_TICK_SLEEP`], so an idle
//!   node wakes ~1,100 times a second, not 2,000;
//! - **slow** (guest calls, no batch): one tick per `tick`. A call's start is read from
//!   the clock, so its interrupt comes at most one tick (plus wake-up lateness) past its
//!   limit;
//! - **fast** (a shard had a batch to run in the last [`FAST_HOLD_TICKS`] fast ticks):
//!   one tick per `tick / 2`. Message k > 0 of a batch starts while no host code runs, so
//!   its start is only known as the first tick that shows it: up to one tick late. Two
//!   half ticks (that lateness, then the tick that finds it past its limit) keep it
//!   within the same one-tick bound as a lone call.
//!
//! A shard may start a batch only while the ticker is fast ([`ShardFlags`] and
//! `TickerShared::fast` form a Dekker pair: the ticker never slows down under a running
//! batch). Otherwise the shard runs the message alone and asks for the fast pace, which
//! the ticker takes at its next wake-up. No system call on the data path: a shard never
//! wakes the ticker.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use wasmtime::Engine;

/// How long the ticker sleeps when no shard is running guest code: a call that starts
/// meanwhile is seen at the next wake-up, so its first look at the clock may come up to
/// this much later; its limit is still read from the clock at the call's start.
pub(crate) const IDLE_TICK_SLEEP: Duration = Duration::from_micros(900);

/// Fast ticks the ticker stays fast after it last saw a batch (running or wanted): a
/// flood of batches keeps it fast, a lone burst costs a few extra wake-ups.
pub(crate) const FAST_HOLD_TICKS: u32 = 8;

/// When the epoch ticker takes its fast pace (`wasm.ticker_pace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TickerPace {
    /// Fast only while batches run or wait (and [`FAST_HOLD_TICKS`] after): an idle node
    /// stays quiet, and the first messages after a quiet spell run one call each.
    #[default]
    Adaptive,
    /// Always fast: batches from the first message, for the cost of 2 wake-ups per tick
    /// on an idle node (4,000 a second at the default tick).
    Fast,
}

/// What a shard is doing, as the ticker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CallKind {
    /// No guest code runs.
    None = 0,
    /// One guest call for one message (or init, stop).
    One = 1,
    /// A `dp_on_batch` call.
    Batch = 2,
}

/// One shard's flags, on its own cache line: stored by the shard at every call's start
/// and end, read by the ticker once per wake-up.
#[derive(Debug, Default)]
pub(crate) struct ShardFlags {
    call: AtomicU8,
    /// The shard had a batch to run (run, or held back while the ticker was not fast)
    /// since the ticker last looked.
    wants_batch: AtomicBool,
}

/// State the ticker shares with the shards.
#[derive(Debug)]
pub(crate) struct TickerShared {
    shards: Box<[CachePadded<ShardFlags>]>,
    /// The ticker is in its fast pace: batches may start.
    fast: CachePadded<AtomicBool>,
    stop: AtomicBool,
}

impl TickerShared {
    fn flags(&self, shard: usize) -> &ShardFlags {
        &self.shards[shard % self.shards.len()]
    }

    /// Shard `shard` starts (or, with [`CallKind::None`], ends) a guest call.
    pub(crate) fn set_call(&self, shard: usize, kind: CallKind) {
        self.flags(shard).call.store(kind as u8, Ordering::Relaxed);
    }

    /// Whether shard `shard` may start a batch now. On `true` its flag says
    /// [`CallKind::Batch`] (the call that follows keeps it); on `false` the ticker is
    /// asked to go fast, and the shard runs one message alone.
    pub(crate) fn begin_batch(&self, shard: usize) -> bool {
        let flags = self.flags(shard);
        flags.wants_batch.store(true, Ordering::Relaxed);
        // SeqCst store then SeqCst load, against the ticker's SeqCst store of `fast`
        // then SeqCst load of the flags: at least one of the two sees the other, so
        // the ticker never slows down under a batch that it did not see.
        flags.call.store(CallKind::Batch as u8, Ordering::SeqCst);
        if self.fast.load(Ordering::SeqCst) {
            return true;
        }
        flags.call.store(CallKind::None as u8, Ordering::Relaxed);
        false
    }

    /// The busiest call any shard is in, and whether a shard had batches to run since
    /// the last survey (the marks are taken).
    fn survey(&self, order: Ordering) -> (u8, bool) {
        let mut busiest = 0;
        let mut wanted = false;
        for flags in self.shards.iter() {
            busiest = busiest.max(flags.call.load(order));
            if flags.wants_batch.load(Ordering::Relaxed) {
                flags.wants_batch.store(false, Ordering::Relaxed);
                wanted = true;
            }
        }
        (busiest, wanted)
    }
}

/// The ticker thread; stopped and joined on drop.
pub(crate) struct Ticker {
    pub(crate) tick: Duration,
    pub(crate) shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the ticker for `shards` shards, on `cpus` (empty: unpinned), at real-time
    /// priority when the process may (root), so that busy-polling shards on every core
    /// do not delay it.
    pub(crate) fn start(
        engine: Engine,
        tick: Duration,
        pace: TickerPace,
        shards: usize,
        cpus: Vec<usize>,
    ) -> Ticker {
        let always_fast = pace == TickerPace::Fast;
        let shared = Arc::new(TickerShared {
            shards: (0..shards.max(1))
                .map(|_| CachePadded::new(ShardFlags::default()))
                .collect(),
            fast: CachePadded::new(AtomicBool::new(always_fast)),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    pin_to(&cpus);
                    raise_to_realtime();
                    run(&engine, tick, always_fast, &shared);
                })
                .ok()
        };
        if thread.is_none() {
            tracing::error!("cannot start the wasm epoch thread: time limits are not enforced");
        }
        Ticker {
            tick,
            shared,
            thread,
        }
    }
}

fn run(engine: &Engine, tick: Duration, always_fast: bool, shared: &TickerShared) {
    let fast_tick = (tick / 2).max(Duration::from_micros(1));
    let mut hold = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let (busiest, wanted) = shared.survey(Ordering::Relaxed);
        if busiest == CallKind::Batch as u8 || wanted || always_fast {
            hold = FAST_HOLD_TICKS;
        }
        let sleep = if hold > 0 {
            hold -= 1;
            shared.fast.store(true, Ordering::Relaxed);
            fast_tick
        } else {
            shared.fast.store(false, Ordering::SeqCst);
            // A batch that began before the store above saw `fast` still set: stay.
            let (busiest, wanted) = shared.survey(Ordering::SeqCst);
            if busiest == CallKind::Batch as u8 || wanted {
                hold = FAST_HOLD_TICKS;
                continue;
            }
            if busiest == CallKind::One as u8 {
                tick
            } else {
                IDLE_TICK_SLEEP.max(tick)
            }
        };
        std::thread::sleep(sleep);
        // One increment per wake-up, never a catch-up after a late one: the callback
        // reads the clock, so a late tick only delays a look, and extra ticks would
        // only add looks.
        engine.increment_epoch();
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn pin_to(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: `set` is a plain bit set on the stack, zeroed and filled by the libc macros,
    // and passed by pointer with its size to a system call on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!("wasm epoch thread left unpinned");
        }
    }
}

fn raise_to_realtime() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if result != 0 {
        tracing::debug!("wasm epoch thread stays at normal priority (no CAP_SYS_NICE)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(shards: usize) -> TickerShared {
        TickerShared {
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardFlags::default()))
                .collect(),
            fast: CachePadded::new(AtomicBool::new(false)),
            stop: AtomicBool::new(false),
        }
    }

    #[test]
    fn a_batch_waits_for_the_fast_pace_and_asks_for_it_once() {
        let shared = shared(2);
        assert!(!shared.begin_batch(1));
        assert_eq!(
            shared.survey(Ordering::Relaxed),
            (CallKind::None as u8, true)
        );
        // The request was taken.
        assert_eq!(
            shared.survey(Ordering::Relaxed),
            (CallKind::None as u8, false)
        );
        shared.fast.store(true, Ordering::SeqCst);
        assert!(shared.begin_batch(1));
        assert_eq!(
            shared.survey(Ordering::Relaxed),
            (CallKind::Batch as u8, true)
        );
        assert_eq!(
            shared.survey(Ordering::Relaxed),
            (CallKind::Batch as u8, false)
        );
        shared.set_call(1, CallKind::None);
        shared.set_call(0, CallKind::One);
        assert_eq!(
            shared.survey(Ordering::Relaxed),
            (CallKind::One as u8, false)
        );
    }
}
