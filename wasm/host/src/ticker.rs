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
//! A shard may start a batch only while the ticker is fast. Otherwise the shard runs the
//! message alone and asks for the fast pace, which the ticker takes at its next wake-up.
//! No system call and no fence on the data path: a shard never wakes the ticker, and its
//! flags are plain stores to its own cache line. The ticker slows down in two steps
//! instead: it clears `fast`, keeps the fast pace for one more tick (a grace period, in
//! which any shard that read `fast` just before it was cleared has made its batch flag
//! visible), and looks again. So it never slows down under a running batch.

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
        // The flag before the look at `fast`: should the shard be held up in between,
        // the flag is already out (a context switch drains the store buffer), so the
        // ticker's grace period covers a look that came just before `fast` was cleared.
        flags.call.store(CallKind::Batch as u8, Ordering::Relaxed);
        if self.fast.load(Ordering::Relaxed) {
            return true;
        }
        flags.call.store(CallKind::None as u8, Ordering::Relaxed);
        false
    }

    /// The busiest call any shard is in, and whether a shard had batches to run since
    /// the last survey (the marks are taken).
    fn survey(&self) -> (u8, bool) {
        let mut busiest = 0;
        let mut wanted = false;
        for flags in self.shards.iter() {
            busiest = busiest.max(flags.call.load(Ordering::Relaxed));
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
    let mut pacer = Pacer::new(always_fast);
    while !shared.stop.load(Ordering::Relaxed) {
        let (busiest, wanted) = shared.survey();
        let (pace, fast) = pacer.step(busiest, wanted);
        shared.fast.store(fast, Ordering::Relaxed);
        std::thread::sleep(match pace {
            Pace::Fast => fast_tick,
            Pace::Slow => tick,
            Pace::Idle => IDLE_TICK_SLEEP.max(tick),
        });
        // One increment per wake-up, never a catch-up after a late one: the callback
        // reads the clock, so a late tick only delays a look, and extra ticks would
        // only add looks.
        engine.increment_epoch();
    }
}

/// How long the ticker sleeps next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    Fast,
    Slow,
    Idle,
}

/// The ticker's choice of pace, from what it saw at each wake-up. Sans-IO.
#[derive(Debug)]
struct Pacer {
    always_fast: bool,
    /// Fast ticks left before slowing down.
    hold: u32,
    /// Whether batches may start (what `TickerShared::fast` says).
    fast: bool,
}

impl Pacer {
    fn new(always_fast: bool) -> Pacer {
        Pacer {
            always_fast,
            hold: 0,
            fast: always_fast,
        }
    }

    /// The next sleep and the value of `fast`, given the busiest call seen and whether
    /// a shard had a batch to run since the last wake-up.
    fn step(&mut self, busiest: u8, wanted: bool) -> (Pace, bool) {
        if busiest == CallKind::Batch as u8 || wanted || self.always_fast {
            self.hold = FAST_HOLD_TICKS;
        }
        if self.hold > 0 {
            self.hold -= 1;
            self.fast = true;
            return (Pace::Fast, true);
        }
        if self.fast {
            // Slowing down: one more fast tick, in which a batch begun by a shard that
            // read `fast` just before it was cleared shows (and is seen at the next
            // wake-up, which turns fast again).
            self.fast = false;
            return (Pace::Fast, false);
        }
        if busiest == CallKind::One as u8 {
            (Pace::Slow, false)
        } else {
            (Pace::Idle, false)
        }
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

    const NONE: u8 = CallKind::None as u8;
    const ONE: u8 = CallKind::One as u8;
    const BATCH: u8 = CallKind::Batch as u8;

    #[test]
    fn the_pacer_is_fast_while_batches_flow_and_slows_down_through_a_grace_tick() {
        let mut pacer = Pacer::new(false);
        assert_eq!(pacer.step(NONE, false), (Pace::Idle, false));
        assert_eq!(pacer.step(ONE, false), (Pace::Slow, false));
        // A shard held a batch back: fast from this wake-up on, for the hold.
        assert_eq!(pacer.step(ONE, true), (Pace::Fast, true));
        for _ in 1..FAST_HOLD_TICKS {
            assert_eq!(pacer.step(ONE, false), (Pace::Fast, true));
        }
        // The hold is over: `fast` is cleared, and the pace stays fast one more tick.
        assert_eq!(pacer.step(ONE, false), (Pace::Fast, false));
        // A batch that started just before `fast` was cleared shows now: fast again.
        assert_eq!(pacer.step(BATCH, false), (Pace::Fast, true));
        for _ in 1..FAST_HOLD_TICKS {
            assert_eq!(pacer.step(NONE, false), (Pace::Fast, true));
        }
        assert_eq!(pacer.step(NONE, false), (Pace::Fast, false));
        assert_eq!(pacer.step(NONE, false), (Pace::Idle, false));
    }

    #[test]
    fn the_fast_pace_setting_never_slows_down() {
        let mut pacer = Pacer::new(true);
        assert!(pacer.fast);
        for _ in 0..3 * FAST_HOLD_TICKS {
            assert_eq!(pacer.step(NONE, false), (Pace::Fast, true));
        }
    }

    #[test]
    fn a_batch_waits_for_the_fast_pace_and_asks_for_it_once() {
        let shared = shared(2);
        assert!(!shared.begin_batch(1));
        assert_eq!(shared.survey(), (CallKind::None as u8, true));
        // The request was taken.
        assert_eq!(shared.survey(), (CallKind::None as u8, false));
        shared.fast.store(true, Ordering::SeqCst);
        assert!(shared.begin_batch(1));
        assert_eq!(shared.survey(), (CallKind::Batch as u8, true));
        assert_eq!(shared.survey(), (CallKind::Batch as u8, false));
        shared.set_call(1, CallKind::None);
        shared.set_call(0, CallKind::One);
        assert_eq!(shared.survey(), (CallKind::One as u8, false));
    }
}
