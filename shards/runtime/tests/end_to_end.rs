//! End to end through real pinned shards, glommio executors and lock-free rings: one
//! million numbered messages from shard 0 to shard 1 through small rings and mailboxes
//! (so both are full most of the time) must each arrive exactly once and in order, in both
//! idle modes. Also: the node starts and stops cleanly with no agents at all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_runtime::{IdlePolicy, Node, RuntimeConfig};
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

fn million_across_shards(idle: IdlePolicy) {
    let _turn = turn();
    let received = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(AtomicBool::new(false));
    let generator_id = id_on_shard(1, 0, 2);
    let checker_id = id_on_shard(1, 1, 2);
    let mut config = RuntimeConfig::new(cpus(), idle);
    config.ring_capacity_frames = 64;
    config.ring_batch_frames = 16;
    config.shard.mailbox_capacity_frames = 32;
    config.shard.outbound_capacity_frames = 64;
    let factory = {
        let (received, refused, out_of_order) =
            (received.clone(), refused.clone(), out_of_order.clone());
        Arc::new(
            move |shard: usize, _shards: usize| -> Vec<(AgentId, Box<dyn Agent>)> {
                if shard == 0 {
                    let generator = Generator {
                        to: checker_id,
                        next: 0,
                        refused: refused.clone(),
                    };
                    vec![(generator_id, Box::new(generator))]
                } else {
                    let checker = Checker {
                        expected: 0,
                        received: received.clone(),
                        out_of_order: out_of_order.clone(),
                    };
                    vec![(checker_id, Box::new(checker))]
                }
            },
        )
    };
    let node = Node::start(config, factory).expect("node starts");
    let deadline = Instant::now() + Duration::from_secs(120);
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
    let received = Arc::new(AtomicU64::new(0));
    let generator_id = id_on_shard(1, 0, 2);
    let checker_id = id_on_shard(1, 1, 2);
    let slow_id = id_on_shard(checker_id.0 + 1, 1, 2);
    let mut config = RuntimeConfig::new(cpus(), IdlePolicy::BusyPoll);
    config.ring_capacity_frames = 64;
    config.shard.mailbox_capacity_frames = 32;
    config.drain_timeout = Duration::from_millis(50);
    let factory = {
        let received = received.clone();
        Arc::new(
            move |shard: usize, _shards: usize| -> Vec<(AgentId, Box<dyn Agent>)> {
                if shard == 0 {
                    let generator = Generator {
                        to: checker_id,
                        next: 0,
                        refused: Arc::new(AtomicU64::new(0)),
                    };
                    vec![(generator_id, Box::new(generator))]
                } else {
                    let checker = Checker {
                        expected: 0,
                        received: received.clone(),
                        out_of_order: Arc::new(AtomicBool::new(false)),
                    };
                    vec![
                        (checker_id, Box::new(checker)),
                        (slow_id, Box::new(SlowToStop)),
                    ]
                }
            },
        )
    };
    let node = Node::start(config, factory).expect("node starts");
    // Stop while the flood is on, so shard 1 holds shard 0's buffers.
    while received.load(Ordering::Acquire) < 10_000 {
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
