//! One shard's thread: ring set-up after pinning, the poll loop, parking and shutdown.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dataplane_ring::{Consumer, Producer};
use dataplane_shard::{RingItem, Shard, ShardConfig};

use crate::control::{JobContext, ShardJob};
use crate::doorbell::{doorbell, AsyncWaiter, Bell};
use crate::io::ShardIo;
use crate::{lock, IdlePolicy, RuntimeError, ShardReport, Shared};

/// How many drain timeouts a shard that has stopped its agents waits for the others to
/// stop theirs, at most, before it gives up draining.
const STOP_WAIT_DRAIN_TIMEOUTS: u64 = 12;
/// What a draining shard publishes as its pool's frames in flight while it still has
/// work of its own (so that nobody stops on its account).
pub(crate) const IN_FLIGHT_UNKNOWN: usize = usize::MAX;
/// Idle polls a parking shard spins through before it sleeps: a burst that pauses for a
/// few microseconds should not pay a doorbell round trip.
const IDLE_POLLS_BEFORE_PARK: u32 = 256;
/// Idle poll iterations between two clock reads (and two looks at the control queue).
const POLLS_PER_CLOCK_READ: u32 = 32;
/// Idle poll iterations between two polls of the shard's I/O (a `recvmmsg` that finds
/// nothing costs a few hundred nanoseconds; an idle ring poll, a few). After an iteration
/// that did work the I/O is always polled.
const IDLE_POLLS_PER_IO_POLL: u64 = 4;

/// Closes the shard's control queue when the shard thread leaves `run_shard` by any path
/// (an error or a panic included), so that no job waits forever for a gone shard.
struct CloseControlOnExit {
    shared: Arc<Shared>,
    shard: usize,
}

impl Drop for CloseControlOnExit {
    fn drop(&mut self) {
        if !self.shared.stop_counted[self.shard].load(Ordering::Acquire) {
            // Left by an error or a panic: its peers' shutdown must not wait for it to
            // stop agents or hand buffers back. What it held is lost either way.
            self.shared.stopped.fetch_add(1, Ordering::AcqRel);
            self.shared.in_flight[self.shard].store(0, Ordering::Release);
        }
        let dropped = self.shared.controls[self.shard].close();
        if !dropped.is_empty() {
            tracing::warn!(
                shard = self.shard,
                jobs = dropped.len(),
                "control jobs dropped unrun"
            );
        }
    }
}

/// Runs shard `shard` on the current (already pinned) executor thread.
pub(crate) async fn run_shard(
    shared: Arc<Shared>,
    shard: usize,
) -> Result<ShardReport, RuntimeError> {
    let shards = shared.config.shards();
    let _close_control = CloseControlOnExit {
        shared: Arc::clone(&shared),
        shard,
    };
    // Rings into this shard are allocated here, after pinning, so their memory is local
    // to the consumer, which reads the slots most.
    let mut consumers = Vec::with_capacity(shards - 1);
    let waiter = {
        let mut producers = lock(&shared.producers);
        for (from, row) in producers.iter_mut().enumerate() {
            if from != shard {
                let (producer, consumer) =
                    dataplane_ring::channel(shared.config.ring_capacity_frames);
                row[shard] = Some(producer);
                consumers.push((from, consumer));
            }
        }
        drop(producers);
        doorbell().map(|(bell, waiter)| {
            lock(&shared.bells)[shard] = Some(Arc::new(bell));
            waiter
        })
    };
    // Every path reaches both barriers, or `Node::start` would wait forever.
    shared.started.wait();
    let producers: Vec<(usize, Producer<RingItem>)> = lock(&shared.producers)[shard]
        .iter_mut()
        .enumerate()
        .filter_map(|(to, slot)| slot.take().map(|producer| (to, producer)))
        .collect();
    let bells = lock(&shared.bells).clone();

    let config = ShardConfig {
        shard,
        shards,
        ..shared.config.shard.clone()
    };
    let mut core = Shard::new(config);
    let now_ns = shared.epoch.elapsed().as_nanos() as u64;
    for (id, agent) in (shared.factory)(shard, shards) {
        if let Err(error) = core.deploy(id, agent, now_ns) {
            tracing::error!(shard, %error, "agent not deployed");
        }
    }
    let io = match &shared.io {
        Some(factory) => match factory(&mut core, now_ns) {
            Ok(io) => Some(io),
            Err(message) => {
                tracing::error!(shard, %message, "shard I/O did not start");
                lock(&shared.io_errors).push((shard, message));
                None
            }
        },
        None => None,
    };
    shared.deployed.wait();

    let waiter = waiter.map_err(|source| RuntimeError::Doorbell { shard, source })?;
    let mut driver = Driver {
        stalled: (0..shards).map(|_| VecDeque::new()).collect(),
        scratch: Vec::with_capacity(shared.config.ring_batch_frames),
        returned: Vec::new(),
        report: ShardReport {
            shard,
            cpu: shared.config.cpus[shard],
            stats: Default::default(),
            polls: 0,
            idle_polls: 0,
            parks: 0,
            stalls: 0,
            frames_in_flight_at_exit: 0,
        },
        waiter: waiter.into_async(),
        jobs: Vec::new(),
        io,
        io_due: true,
        core,
        consumers,
        producers,
        bells,
        shared,
    };
    driver.serve().await;
    driver.shutdown();
    driver.report.stats = driver.core.stats().clone();
    driver.report.frames_in_flight_at_exit = driver.core.pool().frames_in_flight();
    Ok(driver.report)
}

struct Driver {
    shared: Arc<Shared>,
    core: Shard,
    consumers: Vec<(usize, Consumer<RingItem>)>,
    producers: Vec<(usize, Producer<RingItem>)>,
    bells: Vec<Option<Arc<Bell>>>,
    /// Items taken from a ring that the shard could not queue yet, per source shard:
    /// offered again, in order, before anything newer from that ring.
    stalled: Vec<VecDeque<RingItem>>,
    /// One ring batch on its way from the ring to the shard (capacity kept across polls).
    scratch: Vec<RingItem>,
    /// Buffers that came home during this poll, freed at its end.
    returned: Vec<RingItem>,
    waiter: AsyncWaiter,
    /// Control jobs taken from the queue, run between two polls (allocation kept).
    jobs: Vec<ShardJob>,
    /// The shard's network edge, if the node has one.
    io: Option<Box<dyn ShardIo>>,
    /// Whether the next poll looks at the I/O (the last one did work, or enough idle
    /// polls have passed).
    io_due: bool,
    report: ShardReport,
}

impl Driver {
    fn now_ns(&self) -> u64 {
        self.shared.epoch.elapsed().as_nanos() as u64
    }

    /// The main loop, until the node is asked to stop.
    ///
    /// The clock is read after a poll that did work (off the critical path: the frames it
    /// sent are already published) and every `POLLS_PER_CLOCK_READ` idle polls, not on
    /// every iteration: a `clock_gettime` costs about as much as a cache-line transfer
    /// here and was 20% of a busy shard's profile. Agents see the time at the end of the
    /// previous poll. The control queue's `pending` flag is looked at in the same places
    /// (one load of a line that only changes when a job arrives; no lock, no syscall).
    async fn serve(&mut self) {
        let stall_threshold_ns = self.shared.config.stall_threshold.as_nanos() as u64;
        let mut idle_streak = 0u32;
        let mut now_ns = self.now_ns();
        while !self.shared.stop.load(Ordering::Acquire) {
            let work = self.poll_once(now_ns);
            self.report.polls += 1;
            if work > 0 {
                let end_ns = self.now_ns();
                if end_ns.saturating_sub(now_ns) > stall_threshold_ns {
                    self.report.stalls += 1;
                    tracing::debug!(
                        shard = self.report.shard,
                        stall_ns = end_ns - now_ns,
                        "stall"
                    );
                }
                now_ns = end_ns;
                idle_streak = 0;
                self.run_control_jobs(now_ns);
                continue;
            }
            self.report.idle_polls += 1;
            idle_streak = idle_streak.saturating_add(1);
            if idle_streak.is_multiple_of(POLLS_PER_CLOCK_READ) {
                now_ns = self.now_ns();
                if self.run_control_jobs(now_ns) > 0 {
                    // A job may have queued messages (a deployed agent's on_start).
                    idle_streak = 0;
                    continue;
                }
            }
            match self.shared.config.idle {
                // Never yield to glommio here: see docs/decisions/why-no-glommio-yield.md.
                IdlePolicy::BusyPoll => std::hint::spin_loop(),
                IdlePolicy::Park if idle_streak >= IDLE_POLLS_BEFORE_PARK => {
                    self.park().await;
                    idle_streak = 0;
                    now_ns = self.now_ns();
                    self.run_control_jobs(now_ns);
                }
                IdlePolicy::Park => std::hint::spin_loop(),
            }
        }
    }

    /// Runs the control jobs waiting in this shard's queue, if its `pending` flag is set.
    /// Returns how many ran. A job that panics is logged; the shard goes on.
    fn run_control_jobs(&mut self, now_ns: u64) -> usize {
        let shard = self.report.shard;
        if !self.shared.controls[shard].has_pending() {
            return 0;
        }
        let mut jobs = std::mem::take(&mut self.jobs);
        self.shared.controls[shard].take(&mut jobs);
        let ran = self.run_jobs(&mut jobs, now_ns);
        self.jobs = jobs;
        ran
    }

    fn run_jobs(&mut self, jobs: &mut Vec<ShardJob>, now_ns: u64) -> usize {
        let ran = jobs.len();
        let ctx = JobContext {
            now_ns,
            shard: self.report.shard,
            cpu: self.report.cpu,
            polls: self.report.polls,
            idle_polls: self.report.idle_polls,
            parks: self.report.parks,
            stalls: self.report.stalls,
        };
        for job in jobs.drain(..) {
            let core = &mut self.core;
            if panic::catch_unwind(AssertUnwindSafe(|| job(core, &ctx))).is_err() {
                tracing::error!(shard = ctx.shard, "a control job panicked");
            }
        }
        ran
    }

    /// One iteration: rings in, handlers, rings out. Returns the units of work done.
    fn poll_once(&mut self, now_ns: u64) -> usize {
        let mut work = 0;
        // Rings before the network: the edge hands a frame to its agent at once when
        // nothing waits (`Shard::handle_incoming`), so what the rings already hold must
        // be queued first, or a client's frame could overtake a more urgent one.
        work += self.receive(now_ns);
        if let Some(io) = self.io.as_mut() {
            if self.io_due || self.report.polls.is_multiple_of(IDLE_POLLS_PER_IO_POLL) {
                work += io.poll(&mut self.core, now_ns);
            }
        }
        work += self
            .core
            .poll_deliver(now_ns, self.shared.config.poll_budget_messages);
        work += self.transmit();
        for item in self.returned.drain(..) {
            // A returned buffer is always accepted.
            let _ = self.core.handle_ring_item(item);
            work += 1;
        }
        self.io_due = work > 0;
        work
    }

    /// Takes what the rings brought. Frames count against `ring_batch_frames` per ring;
    /// buffers coming home do not (a return is one free-list push), so returns are never
    /// starved by a busy shard: otherwise a sender that polls slowly takes back fewer
    /// buffers per poll than it sends, and its pool drains into the receiver's return
    /// queue. A frame that is the only one this receive takes from all rings (and from
    /// the stalled queues) may be handled at once, at `now_ns`
    /// (`Shard::handle_lone_ring_item`): the request/reply path.
    fn receive(&mut self, now_ns: u64) -> usize {
        let batch = self.shared.config.ring_batch_frames;
        let Driver {
            core,
            consumers,
            stalled,
            scratch,
            returned,
            ..
        } = self;
        let mut work = 0;
        // The first frame of this receive is held back until every ring has been read:
        // if it stays the only one, it may be handled at once; a second frame anywhere
        // makes it queue first, ahead of that frame, like all the others.
        let mut held: Option<(usize, RingItem)> = None;
        let mut frames_seen = 0usize;
        for (from, consumer) in consumers.iter_mut() {
            let from = *from;
            // Overlap the slot's cache miss with the miss on the producer's index.
            consumer.prefetch_next();
            while let Some(item) = stalled[from].pop_front() {
                frames_seen += 1;
                match core.handle_ring_item(item) {
                    Ok(()) => work += 1,
                    Err(item) => {
                        stalled[from].push_front(item);
                        break;
                    }
                }
            }
            let mut frames = 0;
            while stalled[from].is_empty() && frames < batch {
                // Take the batch first, starting each frame's cache misses, then handle
                // it: the misses overlap instead of queueing one behind the other.
                let taken = consumer.pop_batch(batch - frames, |item| {
                    if !item.is_returned() {
                        frames += 1;
                    }
                    item.prefetch();
                    scratch.push(item);
                });
                for item in scratch.drain(..) {
                    // Returns have no order to keep: they are freed at the end of the poll,
                    // off the path of the frames next to them (a returned batch's count
                    // sits in a line the other shard just wrote), and even behind a stall.
                    if item.is_returned() {
                        returned.push(item);
                        continue;
                    }
                    frames_seen += 1;
                    if frames_seen == 1 {
                        held = Some((from, item));
                        continue;
                    }
                    if let Some((source, first)) = held.take() {
                        match core.handle_ring_item(first) {
                            Ok(()) => work += 1,
                            Err(first) => stalled[source].push_back(first),
                        }
                    }
                    if !stalled[from].is_empty() {
                        stalled[from].push_back(item);
                        continue;
                    }
                    match core.handle_ring_item(item) {
                        Ok(()) => work += 1,
                        Err(item) => stalled[from].push_back(item),
                    }
                }
                if taken == 0 {
                    break;
                }
            }
        }
        if let Some((source, item)) = held {
            match core.handle_lone_ring_item(item, now_ns) {
                Ok(()) => work += 1,
                Err(item) => stalled[source].push_back(item),
            }
        }
        work
    }

    fn transmit(&mut self) -> usize {
        let park_mode = self.shared.config.idle == IdlePolicy::Park;
        let mut work = 0;
        for (to, producer) in self.producers.iter_mut() {
            if !self.core.wants_transmit(*to) {
                continue;
            }
            work += self.core.poll_transmit(*to, |item| producer.stage(item));
            if producer.publish() > 0 && park_mode && producer.consumer_parked() {
                if let Some(bell) = &self.bells[*to] {
                    bell.ring();
                }
            }
        }
        work
    }

    /// Sleeps on the doorbell unless work is pending (see `Consumer::set_parked`), for at
    /// most `park_timeout` and not past the shard's next timer (`Shard::next_timer_ns`).
    async fn park(&mut self) {
        let mut announced = 0;
        let mut may_sleep = true;
        for (_, consumer) in self.consumers.iter_mut() {
            if !consumer.prepare_park() {
                may_sleep = false;
                break;
            }
            announced += 1;
        }
        may_sleep = may_sleep
            && !self.shared.controls[self.report.shard].has_pending()
            && !self.core.has_ready_work()
            && (0..self.core.config().shards).all(|to| !self.core.wants_transmit(to))
            && self.stalled.iter().all(VecDeque::is_empty)
            && !self.shared.stop.load(Ordering::Acquire);
        // Wake up in time to restart the crashed agent whose back-off ends first.
        let mut timeout = self.shared.config.park_timeout;
        let io_timer_ns = self.io.as_ref().and_then(|io| io.next_timer_ns());
        let next_timer_ns = match (self.core.next_timer_ns(), io_timer_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline_ns) = next_timer_ns.filter(|_| may_sleep) {
            let left_ns = deadline_ns.saturating_sub(self.now_ns());
            may_sleep = left_ns > 0;
            timeout = timeout.min(std::time::Duration::from_nanos(left_ns));
        }
        if may_sleep {
            self.report.parks += 1;
            let waiter = &mut self.waiter;
            let io = self.io.as_deref();
            futures_lite::future::or(
                futures_lite::future::or(
                    async {
                        let _ = waiter.wait().await;
                    },
                    async {
                        glommio::timer::sleep(timeout).await;
                    },
                ),
                async {
                    match io {
                        Some(io) => io.readable().await,
                        None => std::future::pending().await,
                    }
                },
            )
            .await;
            self.io_due = true;
        }
        for (_, consumer) in self.consumers.iter_mut().take(announced) {
            consumer.set_parked(false);
        }
    }

    /// Runs the control jobs accepted so far and refuses later ones, stops the agents,
    /// then keeps moving frames until no frame is left anywhere (or the drain timeout
    /// passes), so buffers go home before their pools are freed.
    ///
    /// When to stop draining: every frame is a buffer some pool counts as in flight
    /// until it is back on that pool's free list, wherever it is (a ring, a mailbox, a
    /// return queue). Once every shard has stopped its agents, no frame can be made
    /// except a failure reply to a frame that exists. So when every shard has stopped
    /// and every pool reports zero frames in flight, nothing can arrive any more. Each
    /// shard publishes its count, or "unknown" while it still has work, on every drain
    /// iteration; a count that is stale is too high, never too low (a pool's count can
    /// only grow in answer to a frame that another pool still counts).
    fn shutdown(&mut self) {
        let shard = self.report.shard;
        let start_ns = self.now_ns();
        let mut accepted = self.shared.controls[shard].close();
        self.run_jobs(&mut accepted, start_ns);
        if let Some(io) = self.io.as_mut() {
            io.shutdown(&mut self.core, start_ns);
        }
        self.core.stop_all(start_ns);
        self.shared.stop_counted[shard].store(true, Ordering::Release);
        self.shared.stopped.fetch_add(1, Ordering::AcqRel);
        // The drain timeout runs from the moment every shard has stopped its agents: a
        // shard with many agents may take longer to stop them than its peers take to
        // drain, and they must keep moving its frames meanwhile. A shard that never gets
        // there (its thread died) must not hold the others forever: they wait at most
        // `STOP_WAIT_DRAIN_TIMEOUTS` drain timeouts for it.
        let shards = self.core.config().shards;
        let drain_timeout_ns = self.shared.config.drain_timeout.as_nanos() as u64;
        let give_up_ns = self
            .now_ns()
            .saturating_add(drain_timeout_ns.saturating_mul(STOP_WAIT_DRAIN_TIMEOUTS));
        let mut deadline_ns = u64::MAX;
        loop {
            let now_ns = self.now_ns();
            // "Unknown" before the poll: anything this poll sends or answers is then
            // published after it, so no peer reads a zero that this poll has outdated.
            self.shared.in_flight[shard].store(IN_FLIGHT_UNKNOWN, Ordering::Release);
            // The I/O on every pass: closing connections need their timers swept.
            self.io_due = true;
            let work = self.poll_once(now_ns);
            let settled = work == 0
                && self.core.is_idle()
                && self.stalled.iter().all(VecDeque::is_empty)
                && self
                    .consumers
                    .iter_mut()
                    .all(|(_, consumer)| consumer.is_empty());
            let in_flight = if settled {
                self.core.pool().frames_in_flight()
            } else {
                IN_FLIGHT_UNKNOWN
            };
            if settled {
                self.shared.in_flight[shard].store(in_flight, Ordering::Release);
            }
            if self.shared.stopped.load(Ordering::Acquire) == shards {
                if in_flight == 0
                    && self
                        .shared
                        .in_flight
                        .iter()
                        .all(|count| count.load(Ordering::Acquire) == 0)
                {
                    break;
                }
                if deadline_ns == u64::MAX {
                    deadline_ns = now_ns.saturating_add(drain_timeout_ns);
                } else if now_ns > deadline_ns {
                    tracing::warn!(shard, in_flight, "shutdown drain timed out");
                    break;
                }
            } else if now_ns > give_up_ns {
                tracing::warn!(
                    shard,
                    "shutdown: not every shard stopped its agents in time"
                );
                break;
            }
            std::hint::spin_loop();
        }
    }
}
