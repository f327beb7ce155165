//! End to end through real pinned shards, glommio executors and lock-free rings: one
//! million numbered messages from shard 0 to shard 1 through small rings and mailboxes
//! (so both are full most of the time) must each arrive exactly once and in order, in both
//! idle modes. Also: the node starts and stops cleanly with no agents at all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_runtime::{AgentFactory, IdlePolicy, Node, RuntimeConfig};
use dataplane_shard::{id_on_shard, Agent, AgentError, Context, Message};

const MESSAGES: u64 = 1_000_000;

mod common;
use common::{cpus, turn};

struct Generator {
    to: AgentId,
    next: u64,
    refused: Arc<AtomicU64>,
}

impl Generator {
    fn kick(&self, ctx: &mut Context<'_>) {
        let me = ctx.self_id();
        let header = Header {
            to: me,
            from: me,
            conversation_id: 0,
            correlation_id: 0,
            performative: Performative::Request,
            priority: Priority::Low,
            flags: Flags::NONE,
        };
        ctx.send_with(header, &[])
            .expect("self-kick always fits: one in flight");
    }
}

impl Agent for Generator {
    fn on_start(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.kick(ctx);
        Ok(())
    }

    fn on_message(&mut self, _: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        while self.next < MESSAGES {
            match ctx.send(self.to, Performative::Inform, &self.next.to_le_bytes()) {
                Ok(()) => self.next += 1,
                Err(error) if error.is_backpressure() => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(error) => return Err(AgentError::Failed(error.to_string().into())),
            }
        }
        if self.next < MESSAGES {
            self.kick(ctx);
        }
        Ok(())
    }
}

struct Checker {
    expected: u64,
    received: Arc<AtomicU64>,
    out_of_order: Arc<AtomicBool>,
}

impl Agent for Checker {
    fn on_message(&mut self, message: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        let seq = u64::from_le_bytes(message.payload.try_into().expect("8-byte payload"));
        if seq != self.expected {
            self.out_of_order.store(true, Ordering::Relaxed);
        }
        self.expected = seq + 1;
        self.received.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

/// The agents a shard starts with, as an `AgentFactory` returns them.
type Agents = Vec<(AgentId, Box<dyn Agent>)>;

/// What a flood from a generator on shard 0 to a checker on shard 1 reports.
#[derive(Clone, Default)]
struct Flood {
    received: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    out_of_order: Arc<AtomicBool>,
}

impl Flood {
    /// A generator on shard 0 flooding a checker on shard 1, next to the agents
    /// `more_on_1` makes there.
    fn factory(&self, more_on_1: fn() -> Agents) -> AgentFactory {
        let flood = self.clone();
        let checker_id = id_on_shard(1, 1, 2);
        Arc::new(move |shard: usize, _shards: usize| {
            if shard == 0 {
                let generator = Generator {
                    to: checker_id,
                    next: 0,
                    refused: flood.refused.clone(),
                };
                let agents: Agents = vec![(id_on_shard(1, 0, 2), Box::new(generator))];
                agents
            } else {
                let checker = Checker {
                    expected: 0,
                    received: flood.received.clone(),
                    out_of_order: flood.out_of_order.clone(),
                };
                let mut agents: Agents = vec![(checker_id, Box::new(checker))];
                agents.extend(more_on_1());
                agents
            }
        })
    }
}

fn million_across_shards(idle: IdlePolicy) {
    let _turn = turn();
    let flood = Flood::default();
    let mut config = RuntimeConfig::new(cpus(), idle);
    config.ring_capacity_frames = 64;
    config.ring_batch_frames = 16;
    config.shard.mailbox_capacity_frames = 32;
    config.shard.outbound_capacity_frames = 64;
    let factory = flood.factory(Vec::new);
    let node = Node::start(config, factory).expect("node starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let Flood {
        received,
        refused,
        out_of_order,
    } = flood;
    while received.load(Ordering::Acquire) < MESSAGES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let reports = node.stop().expect("node stops");
    assert_eq!(
        received.load(Ordering::Acquire),
        MESSAGES,
        "every message arrives exactly once"
    );
    assert!(
        !out_of_order.load(Ordering::Relaxed),
        "messages arrive in order"
    );
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the rings were full at times (back-pressure seen)"
    );
    assert_eq!(reports[1].stats.received_remote, MESSAGES);
    for report in &reports {
        assert_eq!(
            report.frames_in_flight_at_exit, 0,
            "shard {}: buffers home",
            report.shard
        );
    }
}

#[test]
fn a_million_messages_cross_shards_busy_poll() {
    million_across_shards(IdlePolicy::BusyPoll);
}

#[test]
fn a_million_messages_cross_shards_park() {
    million_across_shards(IdlePolicy::Park);
}

#[test]
fn empty_node_starts_and_stops() {
    let _turn = turn();
    let node = Node::start(
        RuntimeConfig::new(cpus(), IdlePolicy::Park),
        Arc::new(|_, _| Vec::new()),
    )
    .expect("node starts");
    let reports = node.stop().expect("node stops");
    assert_eq!(reports.len(), 2);
}

/// Takes long to stop, as a shard with very many WASM agents does.
struct SlowToStop;

impl Agent for SlowToStop {
    fn on_message(&mut self, _: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        Ok(())
    }

    fn on_stop(&mut self, _: &mut Context<'_>) {
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A shard that takes longer to stop its agents than the drain timeout does not make its
/// peers give up: the timeout runs once every shard has stopped its agents, so the
/// buffers it holds still go home.
#[test]
fn a_shard_slow_to_stop_its_agents_still_gets_its_frames_drained() {
    let _turn = turn();
    let flood = Flood::default();
    let mut config = RuntimeConfig::new(cpus(), IdlePolicy::BusyPoll);
    config.ring_capacity_frames = 64;
    config.shard.mailbox_capacity_frames = 32;
    config.drain_timeout = Duration::from_millis(50);
    let factory = flood.factory(|| {
        let slow_id = id_on_shard(id_on_shard(1, 1, 2).0 + 1, 1, 2);
        vec![(slow_id, Box::new(SlowToStop) as Box<dyn Agent>)]
    });
    let node = Node::start(config, factory).expect("node starts");
    // Stop while the flood is on, so shard 1 holds shard 0's buffers.
    while flood.received.load(Ordering::Acquire) < 10_000 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let reports = node.stop().expect("node stops");
    for report in &reports {
        assert_eq!(
            report.frames_in_flight_at_exit, 0,
            "shard {}: buffers home",
            report.shard
        );
    }
}
