//! The shard's message loop as a sans-IO state machine.
//!
//! A [`Shard`] owns its agents, their mailboxes and its frame pool. It never touches a
//! thread, a ring, a socket or a clock: the driver feeds it inputs (`handle_*`), lets it
//! work (`poll_deliver`, with the current time as an argument) and collects its outputs
//! (`poll_transmit`: frames and buffer returns for each other shard). The driver calls, in
//! a loop: `handle_ring_item` for what the rings bring, `poll_deliver`, then
//! `poll_transmit` for every other shard. The same sequence runs under the deterministic
//! simulation in the tests, with simulated rings.
//!
//! Nothing accepted is lost: a send either fails at once with a typed [`SendError`]
//! (mailbox full, outbound queue full, pool exhausted, unknown local agent, frame too large)
//! or is queued; a frame from a ring that cannot be queued yet is handed back to the driver
//! (`Err(item)`), which keeps it and offers it again later (back-pressure propagates to
//! the sender through the ring filling up).
//!
//! A crashed agent is restarted after a back-off, or stopped, by the [`RestartPolicy`] in
//! [`ShardConfig::restart`]; its queued messages wait for the restart. The back-off
//! deadlines are the shard's only timers: [`Shard::next_timer_ns`] tells the driver how
//! long it may sleep.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{self, AssertUnwindSafe};

use dataplane_frame::{AgentId, Flags, FrameError, Header, Performative, Priority};

use crate::agent::{panic_reason, Agent, AgentError, BatchOutcome, Message, Sink, SinkFull};
use crate::mailbox::{Mailbox, ReadyLists, CLASSES};
use crate::pool::{FrameHandle, FramePool, PoolError, Released, RETURN_BATCH_EXTRA_MAX};
use crate::restart::{format_ns, AgentState, AgentStatus, CrashHistory, RestartPolicy, Verdict};
use crate::routing::{owner_shard, SHARDS_MAX};
use crate::stats::ShardStats;

/// Limits and identity of one shard. Every bound is explicit.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// This shard's index, `0..shards`.
    pub shard: usize,
    /// Shards on the node.
    pub shards: usize,
    /// Frames one agent's mailbox holds, all classes together.
    pub mailbox_capacity_frames: usize,
    /// Frames queued for one other shard before senders see back-pressure.
    pub outbound_capacity_frames: usize,
    /// Largest encoded frame.
    pub frame_bytes_max: usize,
    /// Buffers this shard's pool may own at once.
    pub frame_pool_frames_max: usize,
    /// Messages one agent handles per turn.
    pub agent_burst_messages: usize,
    /// Scheduler passes after which a waiting lower class is served.
    pub starvation_limit_passes: u32,
    /// Agents this shard hosts at most.
    pub agents_max: usize,
    /// What happens to an agent that crashes.
    pub restart: RestartPolicy,
}

impl ShardConfig {
    /// Defaults for shard `shard` of `shards` (the embedded configuration's values).
    pub fn new(shard: usize, shards: usize) -> ShardConfig {
        ShardConfig {
            shard,
            shards,
            mailbox_capacity_frames: 1024,
            outbound_capacity_frames: 1024,
            frame_bytes_max: 64 * 1024,
            frame_pool_frames_max: 65536,
            agent_burst_messages: 32,
            starvation_limit_passes: 32,
            agents_max: 100_000,
            restart: RestartPolicy::DEFAULT,
        }
    }
}

/// A send that was not accepted. Nothing was queued; the caller still owns its data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The addressee lives on this shard and its mailbox is full.
    #[error("mailbox of agent {to} is full ({capacity_frames} frames)")]
    MailboxFull {
        /// The addressee.
        to: AgentId,
        /// Its mailbox bound.
        capacity_frames: usize,
    },
    /// The addressee is a [`Sink`] that holds more than its bound.
    #[error("{to} is not taking messages: {source}")]
    SinkFull {
        /// The addressee.
        to: AgentId,
        /// The sink's refusal.
        source: SinkFull,
    },
    /// Too many frames are already queued for the addressee's shard.
    #[error("outbound queue to shard {to_shard} is full ({capacity_frames} frames)")]
    Backpressure {
        /// The addressee's shard.
        to_shard: usize,
        /// The queue bound.
        capacity_frames: usize,
    },
    /// The addressee would live on this shard but is not deployed.
    #[error("unknown agent {to}")]
    UnknownAgent {
        /// The addressee.
        to: AgentId,
    },
    /// No frame buffer is available, or the frame is too large for one.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The frame could not be encoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl SendError {
    /// Whether the same send may succeed later (back-pressure) rather than never.
    pub fn is_backpressure(&self) -> bool {
        matches!(
            self,
            SendError::MailboxFull { .. }
                | SendError::SinkFull { .. }
                | SendError::Backpressure { .. }
                | SendError::Pool(PoolError::Exhausted { .. })
        )
    }
}

/// A deployment that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The agent id routes to another shard.
    #[error("agent {agent} belongs to shard {owner}, not shard {shard}")]
    WrongShard {
        /// The agent.
        agent: AgentId,
        /// Its owner.
        owner: usize,
        /// The shard asked to host it.
        shard: usize,
    },
    /// An agent with this id is already deployed.
    #[error("agent {agent} is already deployed")]
    Duplicate {
        /// The agent.
        agent: AgentId,
    },
    /// The shard hosts its maximum number of agents.
    #[error("shard {shard} already hosts {agents_max} agents")]
    Full {
        /// The shard.
        shard: usize,
        /// The bound.
        agents_max: usize,
    },
    /// The agent's `on_start` failed.
    #[error("agent {agent} failed to start: {source}")]
    Start {
        /// The agent.
        agent: AgentId,
        /// Why.
        source: AgentError,
    },
    /// No agent with this id is deployed here (to replace).
    #[error("agent {agent} is not deployed")]
    NotFound {
        /// The agent.
        agent: AgentId,
    },
}

/// A frame buffer from [`Shard::alloc_incoming`], being filled with bytes from outside
/// the process. Like a [`FrameHandle`] it must go back to the shard
/// ([`Shard::handle_incoming`] or [`Shard::discard_incoming`]); a dropped one leaks.
#[derive(Debug)]
#[must_use = "an incoming frame buffer must be handled or discarded"]
pub struct IncomingFrame {
    handle: FrameHandle,
}

impl IncomingFrame {
    /// The frame's bytes, to fill (exactly the length asked for).
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        self.handle.buffer_len_mut()
    }

    /// The frame's length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.handle.bytes().len()
    }
}

impl AsMut<[u8]> for IncomingFrame {
    fn as_mut(&mut self) -> &mut [u8] {
        self.buffer_mut()
    }
}

/// What [`Shard::handle_incoming`] did with a frame.
#[derive(Debug)]
pub enum Incoming {
    /// Taken: queued for its addressee (here or on the way to its shard), handled on
    /// arrival, or delivered to a sink. The header as routed (sender stamped).
    Accepted(Header),
    /// Not a valid frame; the buffer was freed.
    Invalid(FrameError),
    /// Refused for good (unknown agent); the buffer was freed. The caller answers the
    /// client with an error naming the reason.
    Rejected {
        /// The frame's header (sender stamped).
        header: Header,
        /// Why.
        error: SendError,
    },
    /// Cannot be queued yet (mailbox or outbound queue full): offer it again later.
    Busy(IncomingFrame),
}

/// A [`Shard::replace`] that was refused: why, and the agent that was not installed. The
/// agent in place, if any, was not touched.
pub struct ReplaceError {
    /// Why.
    pub error: DeployError,
    /// The agent that was offered, handed back.
    pub agent: Box<dyn Agent>,
}

impl std::fmt::Debug for ReplaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplaceError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for ReplaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ReplaceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

/// What travels through a ring: a frame for this shard, or a buffer coming home.
///
/// Packed in one word: a frame handle's pointer is 16-byte aligned, so bit 0 is free to
/// say "returned buffer" and bit 1 "returned alone". A buffer going home alone is not
/// written on the way: its lines stay shared in both cores' caches instead of bouncing
/// once more (the owner reads its block header to free it). Like a [`FrameHandle`], an
/// item must be consumed ([`RingItem::into_parts`]); a dropped item leaks its buffer.
#[derive(Debug)]
#[must_use = "a ring item carries a frame buffer"]
pub struct RingItem(usize);

/// The two kinds of [`RingItem`].
#[derive(Debug)]
pub enum RingItemKind {
    /// A frame to deliver.
    Frame(FrameHandle),
    /// A buffer the receiver owns, sent back after use, carrying others
    /// ([`FrameHandle::pack_returns`]).
    Returned(FrameHandle),
    /// A buffer the receiver owns, sent back alone: its bytes were not written, so
    /// neither shard touches its cache lines on the way home.
    ReturnedAlone(FrameHandle),
}

const RETURNED_BIT: usize = 1;
/// With [`RETURNED_BIT`]: the carrier holds no packed handles.
const ALONE_BIT: usize = 2;
const TAG_BITS: usize = RETURNED_BIT | ALONE_BIT;

impl RingItem {
    /// An item carrying a frame to deliver.
    pub fn frame(handle: FrameHandle) -> RingItem {
        RingItem(handle.into_raw())
    }

    /// An item carrying a buffer home, with the others packed into it.
    pub fn returned(handle: FrameHandle) -> RingItem {
        RingItem(handle.into_raw() | RETURNED_BIT)
    }

    /// An item carrying one buffer home, nothing packed into it.
    pub fn returned_alone(handle: FrameHandle) -> RingItem {
        RingItem(handle.into_raw() | RETURNED_BIT | ALONE_BIT)
    }

    /// Asks the CPU to start loading the buffer this item carries (its first two cache
    /// lines: block header, payload start and, for small frames, the header fields; for a
    /// returned batch, the count and the first pointers), so that a batch of items can
    /// overlap their cache misses.
    #[inline]
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let block = self.0 as *const i8;
            // SAFETY: SSE is part of the x86-64 baseline, so the instruction exists; a
            // prefetch is a hint that never faults, and the block is at least 16 + 256
            // bytes long anyway.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(block);
                _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(64));
            }
        }
    }

    /// Whether the item brings a buffer home (as opposed to a frame to deliver).
    pub fn is_returned(&self) -> bool {
        self.0 & RETURNED_BIT != 0
    }

    /// Unpacks the item.
    pub fn into_parts(self) -> RingItemKind {
        let raw = self.0 & !TAG_BITS;
        // SAFETY: `raw` is a pointer from `FrameHandle::into_raw` (bits 0 and 1 are clear
        // in every such pointer because blocks are 16-byte aligned) and this item, which
        // is not Clone, is consumed here, so the handle is rebuilt exactly once.
        let handle = unsafe { FrameHandle::from_raw(raw) };
        match self.0 & TAG_BITS {
            0 => RingItemKind::Frame(handle),
            RETURNED_BIT => RingItemKind::Returned(handle),
            _ => RingItemKind::ReturnedAlone(handle),
        }
    }
}

/// A slot's state: the public [`AgentState`] plus `Removed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    /// Crashed; waits for its back-off to end. Its mailbox is kept but it is on no ready
    /// list: a ready list that still holds it (from before the crash) skips it.
    Restarting {
        until_ns: u64,
    },
    /// Crashed too often: its messages are answered (`answer_undeliverable`), not handled.
    Stopped,
    /// Undeployed; the slot is reused once no ready list refers to it.
    Removed,
}

impl Life {
    /// Whether frames popped from its mailbox are dispatched (handled or answered).
    fn dispatches(self) -> bool {
        matches!(self, Life::Running | Life::Stopped)
    }
}

struct AgentSlot {
    id: AgentId,
    /// `None` only while the agent's own handler runs.
    agent: Option<Box<dyn Agent>>,
    mailbox: Mailbox,
    /// Bit `c` set: the slot is on ready list `c`.
    ready_mask: u8,
    /// Frames the agent sent to itself that wait for the next poll (they count against
    /// its mailbox bound).
    deferred_frames: usize,
    state: Life,
    /// Crash bookkeeping: `None` until the agent first crashes (keeps the slot small).
    history: Option<Box<CrashHistory>>,
}

/// A hasher for agent ids, which are already hashes: one multiply-xorshift round.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        crate::routing::mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type IdMap = HashMap<AgentId, u32, BuildHasherDefault<IdHasher>>;
type SinkMap = HashMap<AgentId, Box<dyn Sink>, BuildHasherDefault<IdHasher>>;

/// One shard: its agents, mailboxes, frame pool and outbound queues.
pub struct Shard {
    config: ShardConfig,
    pool: FramePool,
    slots: Vec<AgentSlot>,
    free_slots: Vec<u32>,
    index: IdMap,
    /// Host endpoints that take messages as they are sent (no slot, no mailbox).
    sinks: SinkMap,
    ready: ReadyLists,
    /// Frames for each other shard, oldest first.
    outbound: Vec<VecDeque<FrameHandle>>,
    /// Foreign buffers to send home, per owner shard.
    returns: Vec<Vec<FrameHandle>>,
    /// The last agent a ring frame was queued for, and its slot: a flood to one agent
    /// skips the hash lookup. Cleared on undeploy.
    last_accepted: Option<(AgentId, u32)>,
    /// Frames agents sent to themselves from their own handler, delivered at the start of
    /// the next `poll_deliver`: a self-send is how an agent yields.
    deferred: Vec<(u32, FrameHandle)>,
    /// The slot whose handler is running.
    running: Option<u32>,
    /// Back-off deadlines `(until_ns, slot)`, earliest on top. An entry is live while its
    /// slot is `Restarting { until_ns }`; stale entries are skipped when popped, and the
    /// top is always live (`prune_timers`), so `next_timer_ns` is exact.
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    /// Slots whose back-off expired in this poll (allocation kept across polls).
    due: Vec<u32>,
    /// The frames of the batch being dispatched (allocation kept across polls).
    batch_frames: Vec<FrameHandle>,
    stats: ShardStats,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("config", &self.config)
            .field("agents", &self.index.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// A shard with no agents.
    ///
    /// # Panics
    /// If `config.shard >= config.shards` or `config.shards > SHARDS_MAX`: the driver
    /// validates both before building shards.
    pub fn new(config: ShardConfig) -> Shard {
        assert!(
            config.shard < config.shards && config.shards <= SHARDS_MAX,
            "bad shard index"
        );
        let pool = FramePool::new(
            config.shard,
            config.frame_bytes_max,
            config.frame_pool_frames_max,
        );
        Shard {
            pool,
            slots: Vec::new(),
            free_slots: Vec::new(),
            index: IdMap::default(),
            sinks: SinkMap::default(),
            ready: ReadyLists::new(config.starvation_limit_passes),
            outbound: (0..config.shards).map(|_| VecDeque::new()).collect(),
            returns: (0..config.shards).map(|_| Vec::new()).collect(),
            last_accepted: None,
            deferred: Vec::new(),
            running: None,
            timers: BinaryHeap::new(),
            due: Vec::new(),
            batch_frames: Vec::new(),
            stats: ShardStats::default(),
            config,
        }
    }

    // --- Getters ---------------------------------------------------------------------

    /// This shard's index.
    pub fn id(&self) -> usize {
        self.config.shard
    }

    /// The configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// The frame pool (for its counters).
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// Agents deployed.
    pub fn agents(&self) -> usize {
        self.index.len()
    }

    /// Sinks deployed ([`Shard::deploy_sink`]); not counted by [`Shard::agents`].
    pub fn sinks(&self) -> usize {
        self.sinks.len()
    }

    /// Whether `agent` is deployed here (an agent or a sink).
    pub fn hosts(&self, agent: AgentId) -> bool {
        self.index.contains_key(&agent) || self.sinks.contains_key(&agent)
    }

    /// The ids of the agents deployed here, in no particular order.
    pub fn agent_ids(&self) -> impl Iterator<Item = AgentId> + '_ {
        self.index.keys().copied()
    }

    /// The state, restart counts and queue length of `agent`, if it is deployed here.
    pub fn agent_status(&self, agent: AgentId) -> Option<AgentStatus> {
        let &index = self.index.get(&agent)?;
        let slot = &self.slots[index as usize];
        let state = match slot.state {
            Life::Running => AgentState::Running,
            Life::Restarting { until_ns } => AgentState::Restarting { until_ns },
            Life::Stopped => AgentState::Stopped,
            Life::Removed => return None,
        };
        let history = slot.history.as_deref();
        Some(AgentStatus {
            state,
            restarts: history.map_or(0, |history| history.restarts),
            crashes_in_window: history.map_or(0, CrashHistory::crashes_in_window),
            queued_frames: slot.mailbox.len_frames() + slot.deferred_frames,
        })
    }

    /// The earliest back-off deadline of a crashed agent, on the driver's clock: the
    /// driver should call [`Shard::poll_deliver`] at or after it even if nothing else
    /// happens (it bounds how long the driver sleeps). `None`: no agent is waiting.
    pub fn next_timer_ns(&self) -> Option<u64> {
        self.timers.peek().map(|&Reverse((until_ns, _))| until_ns)
    }

    /// Whether a message waits for an agent here that the next `poll_deliver` may
    /// deliver. Messages kept for an agent in back-off do not count: see
    /// [`Shard::next_timer_ns`].
    pub fn has_ready_work(&self) -> bool {
        !self.ready.is_empty() || !self.deferred.is_empty()
    }

    /// Whether nothing is queued anywhere: no ready messages, no outbound frames, no
    /// buffers waiting to go home and no agent waiting out a back-off.
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty()
            && self.deferred.is_empty()
            && self.timers.is_empty()
            && self.outbound.iter().all(VecDeque::is_empty)
            && self.returns.iter().all(Vec::is_empty)
    }

    // --- Mutators --------------------------------------------------------------------

    /// Deploys `agent` under `id` and runs its `on_start`.
    pub fn deploy(
        &mut self,
        id: AgentId,
        agent: Box<dyn Agent>,
        now_ns: u64,
    ) -> Result<(), DeployError> {
        self.check_deploy(id)?;
        let slot = AgentSlot {
            id,
            agent: Some(agent),
            mailbox: Mailbox::new(),
            ready_mask: 0,
            deferred_frames: 0,
            state: Life::Running,
            history: None,
        };
        let index = match self.free_slots.pop() {
            Some(index) => {
                self.slots[index as usize] = slot;
                index
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).expect("agents_max fits in u32")
            }
        };
        self.index.insert(id, index);
        let result = self.with_agent(index, None, now_ns, |agent, ctx| agent.on_start(ctx));
        if let Err(source) = result {
            self.undeploy(id, now_ns);
            return Err(DeployError::Start { agent: id, source });
        }
        Ok(())
    }

    /// Deploys `sink` under `id`: from now on, every message for `id` (from an agent here,
    /// another shard or the edge) goes straight to [`Sink::deliver`] as it is sent. Sinks
    /// count against `agents_max` like agents.
    pub fn deploy_sink(&mut self, id: AgentId, sink: Box<dyn Sink>) -> Result<(), DeployError> {
        self.check_deploy(id)?;
        self.sinks.insert(id, sink);
        Ok(())
    }

    /// Whether `id` may be deployed here now.
    fn check_deploy(&self, id: AgentId) -> Result<(), DeployError> {
        let owner = owner_shard(id, self.config.shards);
        if owner != self.config.shard {
            return Err(DeployError::WrongShard {
                agent: id,
                owner,
                shard: self.config.shard,
            });
        }
        if self.hosts(id) {
            return Err(DeployError::Duplicate { agent: id });
        }
        if self.index.len() + self.sinks.len() >= self.config.agents_max {
            return Err(DeployError::Full {
                shard: self.config.shard,
                agents_max: self.config.agents_max,
            });
        }
        Ok(())
    }

    /// Removes an agent: its `on_stop` runs (if it is running: not after a crash) and
    /// every message still queued for it is answered (requests get a `failure` reply) and
    /// released. Works in every state, back-off and stopped included. Returns whether it
    /// existed.
    /// A sink is simply removed (it holds nothing of the shard's).
    pub fn undeploy(&mut self, id: AgentId, now_ns: u64) -> bool {
        if self.sinks.remove(&id).is_some() {
            return true;
        }
        let Some(index) = self.index.get(&id).copied() else {
            return false;
        };
        self.last_accepted = None;
        if self.slots[index as usize].state == Life::Running {
            self.with_agent(index, None, now_ns, |agent, ctx| {
                agent.on_stop(ctx);
                Ok(())
            })
            .ok();
        }
        self.index.remove(&id);
        let queued: Vec<FrameHandle> = self.slots[index as usize].mailbox.drain().collect();
        let reason = format!("agent undeployed: {id}");
        for frame in queued {
            self.answer_undeliverable(frame, &reason);
        }
        let slot = &mut self.slots[index as usize];
        slot.agent = None;
        slot.history = None;
        slot.state = Life::Removed;
        // A back-off timer for the slot is stale now.
        self.prune_timers();
        // The slot may still sit on ready lists; `poll_deliver` skips removed slots and
        // frees the slot once no list refers to it (mask cleared).
        let slot = &self.slots[index as usize];
        if slot.ready_mask == 0 {
            self.free_slots.push(index);
        }
        true
    }

    /// Hot swap: installs `agent` in place of the agent deployed under `id`, keeping its
    /// mailbox, so messages queued before and during the swap go to the new code.
    ///
    /// The new agent's `on_start` runs first. If it fails, nothing changes: the old agent
    /// stays in place, in its state, and the new one is handed back in the error. If it
    /// succeeds, the old agent's `on_stop` runs (if it was running: not after a crash),
    /// the new one is installed as running with a fresh restart history, and the old one
    /// is returned for the caller to drop where it likes. It works in every state: a swap
    /// ends a back-off and revives a stopped agent.
    pub fn replace(
        &mut self,
        id: AgentId,
        agent: Box<dyn Agent>,
        now_ns: u64,
    ) -> Result<Box<dyn Agent>, ReplaceError> {
        // The agent is out of its slot only while its own handler runs, which cannot
        // call this; a removed slot is not in the index.
        let old = self
            .index
            .get(&id)
            .and_then(|&index| Some((index, self.slots[index as usize].agent.take()?)));
        let Some((index, mut old)) = old else {
            return Err(ReplaceError {
                error: DeployError::NotFound { agent: id },
                agent,
            });
        };
        // Both run with the agent's own context: their self-sends wait for the next poll
        // and then go to whichever agent is in the slot.
        let mut agent = agent;
        let started = self.call_agent(index, agent.as_mut(), None, now_ns, |agent, ctx| {
            agent.on_start(ctx)
        });
        if let Err(source) = started {
            self.slots[index as usize].agent = Some(old);
            return Err(ReplaceError {
                error: DeployError::Start { agent: id, source },
                agent,
            });
        }
        if self.slots[index as usize].state == Life::Running {
            self.call_agent(index, old.as_mut(), None, now_ns, |agent, ctx| {
                agent.on_stop(ctx);
                Ok(())
            })
            .ok();
        }
        let slot = &mut self.slots[index as usize];
        slot.agent = Some(agent);
        let was_restarting = matches!(slot.state, Life::Restarting { .. });
        slot.state = Life::Running;
        slot.history = None;
        if was_restarting {
            self.prune_timers();
        }
        self.make_ready(index);
        Ok(old)
    }

    /// Undeploys every agent (the running ones' `on_stop` runs) and answers what was
    /// queued for them. Sinks stay: they belong to the I/O, which removes them.
    pub fn stop_all(&mut self, now_ns: u64) {
        let ids: Vec<AgentId> = self.index.keys().copied().collect();
        for id in ids {
            self.undeploy(id, now_ns);
        }
    }

    // --- Inputs ----------------------------------------------------------------------

    /// A buffer for a `frame_bytes`-byte frame arriving from outside the process (the
    /// network edge): fill it with [`IncomingFrame::buffer_mut`], then pass it to
    /// [`Shard::handle_incoming`] (or give it back with [`Shard::discard_incoming`]).
    /// Refused when the pool is exhausted or the frame is larger than the shard accepts.
    pub fn alloc_incoming(&mut self, frame_bytes: usize) -> Result<IncomingFrame, SendError> {
        let mut handle = self
            .pool
            .alloc(frame_bytes)
            .inspect_err(|_| self.stats.pool_exhausted += 1)?;
        handle.set_len(frame_bytes);
        Ok(IncomingFrame { handle })
    }

    /// Gives back an incoming buffer that will not be handled.
    pub fn discard_incoming(&mut self, frame: IncomingFrame) {
        self.release(frame.handle);
    }

    /// Checks an incoming frame (untrusted bytes: [`dataplane_frame::validate`]), stamps
    /// its sender with `from` in place (the edge's id for the client's connection, so
    /// replies find their way back) and routes it without re-encoding: into a local
    /// mailbox, or onto the queue for the addressee's shard.
    ///
    /// A frame that cannot be queued yet is handed back ([`Incoming::Busy`]): the caller
    /// keeps it and offers it again later, so nothing accepted from a client is lost.
    ///
    /// When nothing else waits on this shard and the addressee is a running agent with an
    /// empty mailbox, it handles the frame at once, at `now_ns`, as
    /// [`Shard::handle_lone_ring_item`] does: of the frames the shard holds, the next
    /// [`Shard::poll_deliver`] would have handled it first anyway. Frames not yet read
    /// (later in the client's stream, or in the socket) are not held yet: a more urgent
    /// one among them runs after this one, where queueing both would have run it first.
    pub fn handle_incoming(
        &mut self,
        frame: IncomingFrame,
        from: AgentId,
        now_ns: u64,
    ) -> Incoming {
        let IncomingFrame { mut handle } = frame;
        let header = match dataplane_frame::validate_and_set_from(handle.buffer_len_mut(), from) {
            Ok(header) => header,
            Err(error) => {
                self.release(handle);
                return Incoming::Invalid(error);
            }
        };
        let owner = owner_shard(header.to, self.config.shards);
        if owner == self.config.shard {
            let Some(index) = self.local_index(header.to) else {
                match self.deliver_to_sink(&header, handle.frame().payload()) {
                    Some(Ok(())) => {
                        self.stats.received_ingress += 1;
                        self.release(handle);
                        return Incoming::Accepted(header);
                    }
                    Some(Err(_)) => {
                        self.stats.backpressure += 1;
                        return Incoming::Busy(IncomingFrame { handle });
                    }
                    None => {}
                }
                self.stats.unknown_agent += 1;
                self.release(handle);
                return Incoming::Rejected {
                    header,
                    error: SendError::UnknownAgent { to: header.to },
                };
            };
            let slot = &self.slots[index as usize];
            if slot.mailbox.len_frames() + slot.deferred_frames
                >= self.config.mailbox_capacity_frames
            {
                self.stats.backpressure += 1;
                return Incoming::Busy(IncomingFrame { handle });
            }
            self.stats.received_ingress += 1;
            if self.nothing_waits() && self.takes_now(index) {
                self.dispatch(index, handle, now_ns);
            } else {
                self.enqueue(index, handle);
            }
        } else {
            if self.outbound[owner].len() >= self.config.outbound_capacity_frames {
                self.stats.backpressure += 1;
                return Incoming::Busy(IncomingFrame { handle });
            }
            self.stats.received_ingress += 1;
            self.outbound[owner].push_back(handle);
        }
        Incoming::Accepted(header)
    }

    /// Sends a frame from outside any agent (the network edge, a test, a benchmark).
    pub fn handle_send(&mut self, header: &Header, payload: &[u8]) -> Result<(), SendError> {
        self.send_frame(header, payload)
    }

    /// Takes what a ring brought: a frame for one of our agents, or one of our buffers
    /// coming home. A frame that cannot be queued yet is handed back; offer it again
    /// after the next `poll_deliver`.
    pub fn handle_ring_item(&mut self, item: RingItem) -> Result<(), RingItem> {
        match item.into_parts() {
            crate::shard::RingItemKind::Returned(mut carrier) => {
                let mut returned = 1;
                for handle in carrier.take_returns() {
                    self.release(handle);
                    returned += 1;
                }
                self.stats.frames_returned += returned;
                self.release(carrier);
                Ok(())
            }
            crate::shard::RingItemKind::ReturnedAlone(carrier) => {
                self.stats.frames_returned += 1;
                self.release(carrier);
                Ok(())
            }
            crate::shard::RingItemKind::Frame(handle) => {
                self.accept(handle).map_err(RingItem::frame)?;
                self.stats.received_remote += 1;
                Ok(())
            }
        }
    }

    /// [`Shard::handle_ring_item`] for a frame that came alone (the driver took no other
    /// frame from any ring in this poll, only buffers going home): when nothing else
    /// waits on this shard (no ready agent, no deferred self-send, no restart timer) and
    /// its agent is running with an empty mailbox, the agent handles it at once, at
    /// `now_ns`, instead of through the mailbox and the ready lists. That is exactly what the next [`Shard::poll_deliver`] would
    /// do first, minus the queueing: about 10 ns a message on this machine
    /// (`examples/deliver_cost.rs`), a third of a round trip's software. Per-sender order
    /// holds (the mailbox is empty), and so do priorities (nothing else is waiting).
    /// Anything else takes the ordinary path.
    pub fn handle_lone_ring_item(&mut self, item: RingItem, now_ns: u64) -> Result<(), RingItem> {
        if item.is_returned() || !self.nothing_waits() {
            return self.handle_ring_item(item);
        }
        let RingItemKind::Frame(frame) = item.into_parts() else {
            unreachable!("checked: not a returned buffer");
        };
        let Some(index) = self.local_index(frame.frame().to()) else {
            return self.handle_ring_item(RingItem::frame(frame));
        };
        if !self.takes_now(index) {
            return self.handle_ring_item(RingItem::frame(frame));
        }
        self.stats.received_remote += 1;
        self.dispatch(index, frame, now_ns);
        Ok(())
    }

    // --- Work ------------------------------------------------------------------------

    /// Restarts the crashed agents whose back-off has expired by `now_ns`, then delivers
    /// up to `budget_messages` messages (handler calls, or answers for a stopped agent).
    /// Returns how many were delivered.
    pub fn poll_deliver(&mut self, now_ns: u64, budget_messages: usize) -> usize {
        // The common idle case (and the one after a lone frame was handled on arrival),
        // in three loads: nothing queued, deferred or timed.
        if self.ready.is_empty() && self.deferred.is_empty() && self.timers.is_empty() {
            return 0;
        }
        self.release_deferred();
        self.restart_due(now_ns);
        let mut handled = 0;
        while handled < budget_messages {
            let Some(class) = self.ready.next_class() else {
                break;
            };
            let Some(index) = self.ready.pop(class) else {
                break;
            };
            let burst = self
                .config
                .agent_burst_messages
                .min(budget_messages - handled)
                .max(1);
            // Asked once per turn (the agent is the same all turn; a crash ends the turn).
            let batch_max = match &self.slots[index as usize].agent {
                Some(agent) => agent.batch_messages_max(),
                None => 1,
            };
            let mut taken = 0;
            while taken < burst {
                let slot = &mut self.slots[index as usize];
                // A slot in back-off (crashed before or during this turn) keeps its frames.
                if !slot.state.dispatches() {
                    break;
                }
                let batch = if batch_max > 1 && slot.state == Life::Running {
                    batch_max
                        .min(burst - taken)
                        .min(slot.mailbox.len_class(class))
                } else {
                    1
                };
                if batch >= 2 {
                    let done = self.dispatch_batch(index, class, batch, now_ns);
                    taken += done;
                    handled += done;
                    continue;
                }
                let Some(frame) = slot.mailbox.pop(class) else {
                    break;
                };
                self.dispatch(index, frame, now_ns);
                taken += 1;
                handled += 1;
            }
            let slot = &mut self.slots[index as usize];
            if slot.state.dispatches() && slot.mailbox.has(class) {
                self.ready.push(class, index);
            } else {
                // Off this list: empty, removed, or in back-off (`make_ready` puts it back
                // after the restart).
                slot.ready_mask &= !(1 << class);
                if slot.state == Life::Removed && slot.ready_mask == 0 {
                    self.free_slots.push(index);
                }
            }
        }
        handled
    }

    // --- Outputs ---------------------------------------------------------------------

    /// Hands the ring to `to_shard` what is queued for it: buffers going home first,
    /// then frames, oldest first, until `push` refuses one (ring full). Returns how many
    /// items were taken.
    pub fn poll_transmit(
        &mut self,
        to_shard: usize,
        mut push: impl FnMut(RingItem) -> Result<(), RingItem>,
    ) -> usize {
        let mut pushed = 0;
        let returns = &mut self.returns[to_shard];
        // Buffers go home in batches: one returned buffer carries up to 31 others.
        while let Some(mut carrier) = returns.pop() {
            let extra = returns.len().min(RETURN_BATCH_EXTRA_MAX);
            let item = if extra == 0 {
                RingItem::returned_alone(carrier)
            } else {
                let start = returns.len() - extra;
                carrier.pack_returns(returns.drain(start..));
                RingItem::returned(carrier)
            };
            if let Err(item) = push(item) {
                match item.into_parts() {
                    RingItemKind::Returned(mut carrier) => {
                        returns.extend(carrier.take_returns());
                        returns.push(carrier);
                    }
                    RingItemKind::ReturnedAlone(carrier) => returns.push(carrier),
                    RingItemKind::Frame(_) => unreachable!("a returned item stays returned"),
                }
                return pushed;
            }
            pushed += 1;
        }
        let outbound = &mut self.outbound[to_shard];
        while let Some(handle) = outbound.pop_front() {
            if let Err(item) = push(RingItem::frame(handle)) {
                let RingItemKind::Frame(handle) = item.into_parts() else {
                    unreachable!()
                };
                outbound.push_front(handle);
                return pushed;
            }
            self.stats.sent_remote += 1;
            pushed += 1;
        }
        pushed
    }

    /// Whether anything waits for `to_shard`.
    pub fn wants_transmit(&self, to_shard: usize) -> bool {
        !self.outbound[to_shard].is_empty() || !self.returns[to_shard].is_empty()
    }

    // --- Internals -------------------------------------------------------------------

    fn send_frame(&mut self, header: &Header, payload: &[u8]) -> Result<(), SendError> {
        let owner = owner_shard(header.to, self.config.shards);
        let local_slot = if owner == self.config.shard {
            let Some(&index) = self.index.get(&header.to) else {
                return self.send_to_sink(header, payload);
            };
            let slot = &self.slots[index as usize];
            if slot.mailbox.len_frames() + slot.deferred_frames
                >= self.config.mailbox_capacity_frames
            {
                self.stats.backpressure += 1;
                return Err(SendError::MailboxFull {
                    to: header.to,
                    capacity_frames: self.config.mailbox_capacity_frames,
                });
            }
            Some(index)
        } else {
            if self.outbound[owner].len() >= self.config.outbound_capacity_frames {
                self.stats.backpressure += 1;
                return Err(SendError::Backpressure {
                    to_shard: owner,
                    capacity_frames: self.config.outbound_capacity_frames,
                });
            }
            None
        };
        let frame = self.encode(header, payload)?;
        match local_slot {
            Some(index) if self.running == Some(index) => {
                self.stats.sent_local += 1;
                self.slots[index as usize].deferred_frames += 1;
                self.deferred.push((index, frame));
            }
            Some(index) => {
                self.stats.sent_local += 1;
                self.enqueue(index, frame);
            }
            None => self.outbound[owner].push_back(frame),
        }
        Ok(())
    }

    fn encode(&mut self, header: &Header, payload: &[u8]) -> Result<FrameHandle, SendError> {
        let frame_bytes = dataplane_frame::encoded_len(payload.len());
        let mut frame = self
            .pool
            .alloc(frame_bytes)
            .inspect_err(|_| self.stats.pool_exhausted += 1)?;
        match dataplane_frame::encode_into(header, payload, frame.buffer_mut()) {
            Ok(len) => {
                frame.set_len(len);
                Ok(frame)
            }
            Err(error) => {
                self.release(frame);
                Err(error.into())
            }
        }
    }

    /// Queues a frame that arrived for one of our agents.
    fn accept(&mut self, frame: FrameHandle) -> Result<(), FrameHandle> {
        let Some(index) = self.local_index(frame.frame().to()) else {
            let header = frame.frame().header();
            return match self.deliver_to_sink(&header, frame.frame().payload()) {
                Some(Ok(())) => {
                    self.release(frame);
                    Ok(())
                }
                Some(Err(_)) => {
                    self.stats.stalled_deliveries += 1;
                    Err(frame)
                }
                None => self.bounce_unknown(frame, &header),
            };
        };
        if self.slots[index as usize].mailbox.len_frames() >= self.config.mailbox_capacity_frames {
            self.stats.stalled_deliveries += 1;
            return Err(frame);
        }
        self.enqueue(index, frame);
        Ok(())
    }

    /// The slot of the local agent `to`, through a one-entry cache: frames from a ring
    /// come in runs for one agent.
    fn local_index(&mut self, to: AgentId) -> Option<u32> {
        match self.last_accepted {
            Some((id, index)) if id == to => Some(index),
            _ => {
                let index = *self.index.get(&to)?;
                self.last_accepted = Some((to, index));
                Some(index)
            }
        }
    }

    /// Whether nothing waits on this shard: no agent is running (this is not a call from
    /// inside a handler), none is ready, no self-send is deferred, no restart is timed.
    /// Then a frame for a running agent with an empty mailbox may be handled on arrival.
    fn nothing_waits(&self) -> bool {
        self.running.is_none()
            && self.deferred.is_empty()
            && self.ready.is_empty()
            && self.timers.is_empty()
    }

    /// Whether slot `index` would handle a frame first: running, with an empty mailbox.
    fn takes_now(&self, index: u32) -> bool {
        let slot = &self.slots[index as usize];
        slot.state == Life::Running && slot.mailbox.len_frames() == 0
    }

    /// Hands a message to the sink deployed under its addressee, if there is one.
    fn deliver_to_sink(&mut self, header: &Header, payload: &[u8]) -> Option<Result<(), SinkFull>> {
        Some(self.sinks.get_mut(&header.to)?.deliver(header, payload))
    }

    /// A send from this shard to a local id with no agent: to its sink, or refused. The
    /// sink gets only what an agent could have been sent: a frame within the size bound,
    /// with no unknown must-understand flag.
    fn send_to_sink(&mut self, header: &Header, payload: &[u8]) -> Result<(), SendError> {
        let frame_bytes = dataplane_frame::encoded_len(payload.len());
        let frame_bytes_max = self.config.frame_bytes_max;
        let Some(sink) = self.sinks.get_mut(&header.to) else {
            self.stats.unknown_agent += 1;
            return Err(SendError::UnknownAgent { to: header.to });
        };
        if frame_bytes > frame_bytes_max {
            return Err(SendError::Pool(PoolError::TooLarge {
                frame_bytes,
                max_bytes: frame_bytes_max,
            }));
        }
        header.flags.checked()?;
        match sink.deliver(header, payload) {
            Ok(()) => {
                self.stats.sent_local += 1;
                Ok(())
            }
            Err(source) => {
                self.stats.backpressure += 1;
                Err(SendError::SinkFull {
                    to: header.to,
                    source,
                })
            }
        }
    }

    /// Moves the frames agents sent to themselves during the last poll into their
    /// mailboxes (or answers them, if the agent has gone since).
    fn release_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let mut deferred = std::mem::take(&mut self.deferred);
        for (index, frame) in deferred.drain(..) {
            let slot = &mut self.slots[index as usize];
            slot.deferred_frames -= 1;
            if slot.state == Life::Removed {
                let reason = format!("agent undeployed: {}", slot.id);
                self.answer_undeliverable(frame, &reason);
            } else {
                self.enqueue(index, frame);
            }
        }
        // Keep the allocation; anything deferred meanwhile (nothing runs here) is kept too.
        deferred.append(&mut self.deferred);
        self.deferred = deferred;
    }

    /// Queues a frame in a slot's mailbox (the caller has checked the bound) and, unless
    /// the agent waits out a back-off, puts the slot on the frame's ready list.
    fn enqueue(&mut self, index: u32, frame: FrameHandle) {
        let class = frame.frame().priority().index();
        let slot = &mut self.slots[index as usize];
        slot.mailbox.push(class, frame);
        let bit = 1u8 << class;
        if slot.ready_mask & bit == 0 && slot.state.dispatches() {
            slot.ready_mask |= bit;
            self.ready.push(class, index);
        }
    }

    /// Puts a slot on the ready list of every class it has frames of and is not on yet
    /// (after a restart or a swap). Invariant: bit `c` of `ready_mask` is set exactly
    /// while the slot is on ready list `c`, once.
    fn make_ready(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        for class in 0..CLASSES {
            let bit = 1u8 << class;
            if slot.mailbox.has(class) && slot.ready_mask & bit == 0 {
                slot.ready_mask |= bit;
                self.ready.push(class, index);
            }
        }
    }

    /// Calls `Agent::restart` on every agent whose back-off has expired by `now_ns`.
    /// Deadlines set by a restart that fails here wait for the next poll, even with a zero
    /// back-off, so this always ends.
    fn restart_due(&mut self, now_ns: u64) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(&Reverse((until_ns, index))) = self.timers.peek() {
            if until_ns > now_ns {
                break;
            }
            self.timers.pop();
            if self.slots[index as usize].state == (Life::Restarting { until_ns }) {
                due.push(index);
            }
        }
        for &index in &due {
            match self.with_agent(index, None, now_ns, |agent, ctx| agent.restart(ctx)) {
                Ok(()) => {
                    let slot = &mut self.slots[index as usize];
                    slot.state = Life::Running;
                    if let Some(history) = slot.history.as_deref_mut() {
                        history.restarts = history.restarts.saturating_add(1);
                    }
                    self.stats.agent_restarts += 1;
                    self.make_ready(index);
                }
                Err(error) => self.crashed(index, now_ns, &error),
            }
        }
        due.clear();
        self.due = due;
        self.prune_timers();
    }

    /// Drops stale entries from the top of the timer heap, so that its top is live.
    fn prune_timers(&mut self) {
        while let Some(&Reverse((until_ns, index))) = self.timers.peek() {
            if self.slots[index as usize].state == (Life::Restarting { until_ns }) {
                return;
            }
            self.timers.pop();
        }
    }

    /// The agent in slot `index` crashed at `now_ns` (in a handler or in `restart`):
    /// starts its back-off, or stops it.
    fn crashed(&mut self, index: u32, now_ns: u64, error: &AgentError) {
        let policy = self.config.restart;
        let slot = &mut self.slots[index as usize];
        let history = slot.history.get_or_insert_with(Box::default);
        match history.record_crash(&policy, now_ns) {
            Verdict::Restart { until_ns } => {
                slot.state = Life::Restarting { until_ns };
                self.timers.push(Reverse((until_ns, index)));
            }
            Verdict::Stop { crashes } => {
                let reason = if policy.max_restarts == 0 {
                    format!(
                        "agent {} stopped after a crash (restarts disabled): {error}",
                        slot.id
                    )
                } else {
                    format!(
                        "agent {} stopped after {crashes} crashes in {}: {error}",
                        slot.id,
                        format_ns(policy.window_ns)
                    )
                };
                slot.state = Life::Stopped;
                self.stats.agents_stopped += 1;
                let queued: Vec<FrameHandle> = slot.mailbox.drain().collect();
                for frame in queued {
                    self.answer_undeliverable(frame, &reason);
                }
                if let Some(history) = self.slots[index as usize].history.as_deref_mut() {
                    history.stop_reason = Some(reason.into_boxed_str());
                }
            }
        }
    }

    /// A frame for an agent that is not here: answer the sender with a `failure` that
    /// names the agent, unless the frame is itself a reply (which would loop).
    fn bounce_unknown(&mut self, frame: FrameHandle, header: &Header) -> Result<(), FrameHandle> {
        self.stats.unknown_agent += 1;
        if header.flags.contains(Flags::REPLY) {
            self.stats.undeliverable_replies += 1;
            self.release(frame);
            return Ok(());
        }
        let reason = format!("unknown agent {}", header.to);
        match self.send_error_reply(header, &reason) {
            Err(error) if error.is_backpressure() => Err(frame),
            _ => {
                self.release(frame);
                Ok(())
            }
        }
    }

    /// Answers a queued frame that will not be handled (agent gone or stopped): a request
    /// gets a `failure` reply carrying `reason`.
    fn answer_undeliverable(&mut self, frame: FrameHandle, reason: &str) {
        let header = frame.frame().header();
        if !header.flags.contains(Flags::REPLY) {
            if self.send_error_reply(&header, reason).is_err() {
                self.stats.undeliverable_replies += 1;
            }
        } else {
            self.stats.undeliverable_replies += 1;
        }
        self.release(frame);
    }

    fn send_error_reply(&mut self, request: &Header, reason: &str) -> Result<(), SendError> {
        let mut reply = request.reply_to(Performative::Failure);
        reply.flags = Flags(reply.flags.0 | Flags::ERROR.0);
        self.send_frame(&reply, reason.as_bytes())
    }

    fn release(&mut self, frame: FrameHandle) {
        if let Released::Foreign(frame) = self.pool.release(frame) {
            let owner = frame.owner_shard();
            self.returns[owner].push(frame);
        }
    }

    fn dispatch(&mut self, index: u32, frame: FrameHandle, now_ns: u64) {
        let archived = frame.frame();
        let message = Message {
            header: archived.header(),
            payload: archived.payload(),
        };
        if self.slots[index as usize].state == Life::Stopped {
            let reason = self.slots[index as usize]
                .history
                .as_deref()
                .and_then(|history| history.stop_reason.as_deref())
                .unwrap_or("agent stopped")
                .to_owned();
            self.answer_undeliverable(frame, &reason);
            return;
        }
        // The context gets its own header, decoded from the frame again rather than
        // copied from `message`: a copy would load the fields in wider pieces than they
        // were just stored in, and wait for the store buffer.
        let current = archived.header();
        let result = self.with_agent(index, Some(current), now_ns, |agent, ctx| {
            agent.on_message(&message, ctx)
        });
        self.stats.messages_handled += 1;
        match result {
            Ok(()) => {
                if let Some(history) = self.slots[index as usize].history.as_deref_mut() {
                    history.record_success();
                }
            }
            // This message is answered, never redelivered; then the policy decides.
            Err(error) => self.handler_failed(index, &message.header, &error, now_ns),
        }
        self.release(frame);
    }

    /// Hands the first `count` (≥ 2) frames of `class` in slot `index`'s mailbox to the
    /// agent's `on_batch`, answers and releases the ones it got through, and puts the rest
    /// back at the front of the mailbox. Returns how many it got through (at least 1: a
    /// batch that ends before its first message counts that message as failed).
    fn dispatch_batch(&mut self, index: u32, class: usize, count: usize, now_ns: u64) -> usize {
        let mut frames = std::mem::take(&mut self.batch_frames);
        let slot = &mut self.slots[index as usize];
        for _ in 0..count {
            match slot.mailbox.pop(class) {
                Some(frame) => frames.push(frame),
                None => break,
            }
        }
        let messages: Vec<Message<'_>> = frames
            .iter()
            .map(|frame| {
                let archived = frame.frame();
                Message {
                    header: archived.header(),
                    payload: archived.payload(),
                }
            })
            .collect();
        let mut outcome = None;
        let result = self.with_agent(index, None, now_ns, |agent, ctx| {
            outcome = Some(agent.on_batch(&messages, ctx));
            Ok(())
        });
        drop(messages);
        let outcome = match (result, outcome) {
            (Ok(()), Some(outcome)) => outcome,
            // A panic in `on_batch` (a native agent's, or the host's own code): where it
            // stopped is unknown, so the first message takes the blame and the rest are
            // kept. Agents that batch must not panic after handling a message.
            (result, _) => BatchOutcome {
                handled: 0,
                error: Some(
                    result
                        .err()
                        .unwrap_or_else(|| AgentError::Failed("agent is not available".into())),
                ),
            },
        };
        let handled = outcome.handled.min(frames.len());
        let error = match outcome.error {
            Some(error) if handled < frames.len() => Some(error),
            // A batch that got through none of its messages and says nothing still takes
            // the first, answered as failed, so that the shard always moves on.
            _ if handled == 0 => Some(AgentError::Failed("agent handled none of its batch".into())),
            _ => None,
        };
        let done = handled + usize::from(error.is_some());
        if done > 1 {
            self.stats.batches += 1;
        }
        // The rest go back, in order, in front of anything queued meanwhile.
        let slot = &mut self.slots[index as usize];
        for frame in frames.drain(done..).rev() {
            slot.mailbox.push_front(class, frame);
        }
        for (position, frame) in frames.drain(..).enumerate() {
            self.stats.messages_handled += 1;
            if position < handled {
                if let Some(history) = self.slots[index as usize].history.as_deref_mut() {
                    history.record_success();
                }
            } else if let Some(error) = &error {
                let header = frame.frame().header();
                self.handler_failed(index, &header, error, now_ns);
            }
            self.release(frame);
        }
        self.batch_frames = frames;
        done
    }

    /// What a failed handler call means for its message (answered with the error, never
    /// redelivered) and for the agent (a crash goes through the restart policy).
    fn handler_failed(&mut self, index: u32, header: &Header, error: &AgentError, now_ns: u64) {
        self.stats.handler_errors += 1;
        if !header.flags.contains(Flags::REPLY)
            && self.send_error_reply(header, &error.to_string()).is_err()
        {
            self.stats.undeliverable_replies += 1;
        }
        if matches!(error, AgentError::Crashed(_)) {
            self.crashed(index, now_ns, error);
        } else if let Some(history) = self.slots[index as usize].history.as_deref_mut() {
            // A handler error is not a crash: the back-off starts over.
            history.record_success();
        }
    }

    /// Runs `f` on the agent in slot `index` with a context; a panic becomes
    /// `AgentError::Crashed` and never leaves the shard.
    fn with_agent(
        &mut self,
        index: u32,
        current: Option<Header>,
        now_ns: u64,
        f: impl FnOnce(&mut dyn Agent, &mut Context<'_>) -> Result<(), AgentError>,
    ) -> Result<(), AgentError> {
        let Some(mut agent) = self.slots[index as usize].agent.take() else {
            return Err(AgentError::Failed("agent is not available".into()));
        };
        let result = self.call_agent(index, agent.as_mut(), current, now_ns, f);
        self.slots[index as usize].agent = Some(agent);
        result
    }

    /// Runs `f` on `agent` with the context of the agent in slot `index` (the slot's own
    /// agent, taken out by `with_agent`, or the one a swap is replacing); a panic becomes
    /// `AgentError::Crashed`.
    fn call_agent(
        &mut self,
        index: u32,
        agent: &mut dyn Agent,
        current: Option<Header>,
        now_ns: u64,
        f: impl FnOnce(&mut dyn Agent, &mut Context<'_>) -> Result<(), AgentError>,
    ) -> Result<(), AgentError> {
        let id = self.slots[index as usize].id;
        let outer = self.running.replace(index);
        let mut ctx = Context {
            shard: self,
            agent: id,
            current,
            now_ns,
        };
        let result = panic::catch_unwind(AssertUnwindSafe(|| f(agent, &mut ctx))).unwrap_or_else(
            |payload| {
                self.stats.handler_panics += 1;
                Err(AgentError::Crashed(panic_reason(&*payload).into()))
            },
        );
        self.running = outer;
        result
    }
}

/// What an agent may do while it handles a message.
pub struct Context<'a> {
    shard: &'a mut Shard,
    agent: AgentId,
    current: Option<Header>,
    now_ns: u64,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("agent", &self.agent)
            .field("now_ns", &self.now_ns)
            .finish()
    }
}

impl Context<'_> {
    /// The agent's own id.
    pub fn self_id(&self) -> AgentId {
        self.agent
    }

    /// The shard running the agent.
    pub fn shard(&self) -> usize {
        self.shard.config.shard
    }

    /// Shards on the node.
    pub fn shards(&self) -> usize {
        self.shard.config.shards
    }

    /// The time the driver passed to this poll, in nanoseconds of its monotonic clock.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Sends a new message (normal priority, no conversation) to `to`.
    pub fn send(
        &mut self,
        to: AgentId,
        performative: Performative,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let header = Header {
            to,
            from: self.agent,
            conversation_id: 0,
            correlation_id: 0,
            performative,
            priority: Priority::Normal,
            flags: Flags::NONE,
        };
        self.shard.send_frame(&header, payload)
    }

    /// Sends with a full header; `from` is set to this agent whatever `header` says.
    pub fn send_with(&mut self, mut header: Header, payload: &[u8]) -> Result<(), SendError> {
        header.from = self.agent;
        self.shard.send_frame(&header, payload)
    }

    /// Replies to the message being handled (same conversation and correlation id, same
    /// priority). Outside a message handler (in `on_start`) there is nothing to reply to.
    pub fn reply(&mut self, performative: Performative, payload: &[u8]) -> Result<(), SendError> {
        // Field by field from a reference: copying the whole header would load it in
        // 16-byte pieces right after it was stored in 8-byte ones, which the store buffer
        // cannot forward (a stall of about a dozen cycles; a few % of the edge flood).
        let Some(request) = self.current.as_ref() else {
            return Err(SendError::UnknownAgent { to: AgentId(0) });
        };
        let header = Header {
            to: request.from,
            from: self.agent,
            conversation_id: request.conversation_id,
            correlation_id: request.correlation_id,
            performative,
            priority: request.priority,
            flags: Flags::REPLY,
        };
        self.shard.send_frame(&header, payload)
    }

    /// Makes `message` the one being handled, the one [`Context::reply`] answers: for
    /// [`Agent::on_batch`], before it acts on each message of the batch. Only a message
    /// addressed to this agent is taken (a batch's messages all are).
    pub fn set_current(&mut self, message: &Message<'_>) {
        if message.header.to == self.agent {
            self.current = Some(message.header);
        }
    }
}
