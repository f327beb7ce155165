//! Control jobs on real pinned shards (`NodeHandle::run_on` / `call`), in both idle modes,
//! while a ping-pong between the two shards keeps the rings busy: every job runs on the
//! shard it was sent to, deploys and undeploys through jobs take effect (a deployed agent
//! receives messages, a duplicate is refused), the traffic keeps flowing, a parked shard
//! wakes for a job through its doorbell (the park timeout is a minute, so only the bell
//! can be in time), and a stopping node refuses jobs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_runtime::{IdlePolicy, Node, NodeHandle, RuntimeConfig, RuntimeError};
use dataplane_shard::{id_on_shard, Agent, AgentError, AgentState, Context, DeployError, Message};

const JOB_TIMEOUT: Duration = Duration::from_secs(10);

mod common;
use common::{cpus, turn};

/// Sends a request to `to`, and another one each time the reply comes, until `quiet`.
struct Pinger {
    to: AgentId,
    round_trips: Arc<AtomicU64>,
    quiet: Arc<AtomicBool>,
}

impl Pinger {
    fn ping(&self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        ctx.send(self.to, Performative::Request, b"ping")
            .map_err(|error| AgentError::Failed(error.to_string().into()))
    }
}

impl Agent for Pinger {
    fn on_start(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.ping(ctx)
    }

    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        if message.is_reply() {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            if !self.quiet.load(Ordering::Relaxed) {
                return self.ping(ctx);
            }
        }
        Ok(())
    }
}

struct Echo;

impl Agent for Echo {
    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        if !message.is_reply() {
            let _ = ctx.reply(Performative::Inform, message.payload);
        }
        Ok(())
    }
}

/// Counts what it receives.
struct Sink(Arc<AtomicU64>);

impl Agent for Sink {
    fn on_message(&mut self, _: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Deploys a sink on `shard` through a job, feeds it through another, undeploys it.
fn deploy_feed_undeploy(handle: &NodeHandle, shard: usize) {
    let shards = handle.shards();
    let id = id_on_shard(1000, shard, shards);
    let received = Arc::new(AtomicU64::new(0));
    let sink = Sink(Arc::clone(&received));
    let (ran_on, deployed) = handle
        .call(shard, JOB_TIMEOUT, move |core, ctx| {
            (
                (core.id(), ctx.shard),
                core.deploy(id, Box::new(sink), ctx.now_ns),
            )
        })
        .expect("the deploy job runs");
    assert_eq!(ran_on, (shard, shard), "the job ran on its shard");
    deployed.expect("the sink deploys");

    let again = handle
        .call(shard, JOB_TIMEOUT, move |core, ctx| {
            core.deploy(id, Box::new(Echo), ctx.now_ns)
        })
        .expect("the job runs");
    assert!(
        matches!(again, Err(DeployError::Duplicate { agent }) if agent == id),
        "{again:?}"
    );

    // Messages from outside any agent, queued by a job and delivered by the shard's loop.
    handle
        .call(shard, JOB_TIMEOUT, move |core, _| {
            let header = Header {
                to: id,
                from: id,
                conversation_id: 0,
                correlation_id: 0,
                performative: Performative::Inform,
                priority: Priority::Normal,
                flags: Flags::NONE,
            };
            for _ in 0..10 {
                core.handle_send(&header, b"x")
                    .expect("the mailbox has room");
            }
        })
        .expect("the send job runs");
    wait_until("the deployed sink's messages", JOB_TIMEOUT, || {
        received.load(Ordering::Relaxed) == 10
    });

    let status = handle
        .call(shard, JOB_TIMEOUT, move |core, _| core.agent_status(id))
        .expect("the status job runs")
        .expect("the sink is deployed");
    assert_eq!(status.state, AgentState::Running);

    let (existed, hosted) = handle
        .call(shard, JOB_TIMEOUT, move |core, ctx| {
            (core.undeploy(id, ctx.now_ns), core.hosts(id))
        })
        .expect("the undeploy job runs");
    assert!(existed && !hosted, "undeployed");
}

fn jobs_run_on_every_shard(idle: IdlePolicy) {
    let _turn = turn();
    let round_trips = Arc::new(AtomicU64::new(0));
    let quiet = Arc::new(AtomicBool::new(false));
    let pinger_id = id_on_shard(1, 0, 2);
    let echo_id = id_on_shard(1, 1, 2);
    let mut config = RuntimeConfig::new(cpus(), idle);
    // Only the doorbell can wake a parked shard in time for the job deadlines below.
    config.park_timeout = Duration::from_secs(60);
    let factory = {
        let (round_trips, quiet) = (Arc::clone(&round_trips), Arc::clone(&quiet));
        Arc::new(
            move |shard: usize, _shards: usize| -> Vec<(AgentId, Box<dyn Agent>)> {
                if shard == 0 {
                    let pinger = Pinger {
                        to: echo_id,
                        round_trips: Arc::clone(&round_trips),
                        quiet: Arc::clone(&quiet),
                    };
                    vec![(pinger_id, Box::new(pinger))]
                } else {
                    vec![(echo_id, Box::new(Echo))]
                }
            },
        )
    };
    let node = Node::start(config, factory).expect("node starts");
    let handle = node.handle();
    assert_eq!(handle.shards(), 2);
    wait_until("traffic", JOB_TIMEOUT, || {
        round_trips.load(Ordering::Relaxed) > 1000
    });

    // While traffic flows.
    for round in 0..3 {
        for shard in 0..2 {
            deploy_feed_undeploy(&handle, shard);
        }
        let before = round_trips.load(Ordering::Relaxed);
        wait_until("traffic after the jobs", JOB_TIMEOUT, || {
            round_trips.load(Ordering::Relaxed) > before + 100
        });
        let agents: Vec<usize> = (0..2)
            .map(|shard| {
                handle
                    .call(shard, JOB_TIMEOUT, |core, _| core.agents())
                    .expect("the count job runs")
            })
            .collect();
        assert_eq!(
            agents,
            [1, 1],
            "round {round}: only the ping-pong pair is left"
        );
    }

    // Idle: in park mode both shards sleep now, and a job must wake them.
    quiet.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    for shard in 0..2 {
        let start = Instant::now();
        let parks = handle
            .call(shard, JOB_TIMEOUT, |_, ctx| ctx.parks)
            .expect("a parked shard wakes for a job");
        let elapsed = start.elapsed();
        assert!(
            elapsed < Duration::from_secs(5),
            "shard {shard} answered after {elapsed:?}"
        );
        if idle == IdlePolicy::Park {
            assert!(parks > 0, "shard {shard} parked while idle");
        }
        deploy_feed_undeploy(&handle, shard);
    }

    let error = handle
        .call(7, JOB_TIMEOUT, |_, _| ())
        .expect_err("no shard 7");
    assert!(
        matches!(
            error,
            RuntimeError::NoSuchShard {
                shard: 7,
                shards: 2
            }
        ),
        "{error}"
    );

    let reports = node.stop().expect("node stops");
    for report in &reports {
        assert_eq!(report.frames_in_flight_at_exit, 0, "shard {}", report.shard);
    }
    let error = handle
        .call(0, JOB_TIMEOUT, |_, _| ())
        .expect_err("a stopped node refuses jobs");
    assert!(matches!(error, RuntimeError::Stopping), "{error}");
}

#[test]
fn jobs_run_on_every_shard_busy_poll() {
    jobs_run_on_every_shard(IdlePolicy::BusyPoll);
}

#[test]
fn jobs_run_on_every_shard_park() {
    jobs_run_on_every_shard(IdlePolicy::Park);
}

/// A job that panics is caught on the shard; the caller sees `JobLost` and the shard
/// keeps serving jobs.
#[test]
fn a_panicking_job_does_not_take_the_shard_down() {
    let _turn = turn();
    let node = Node::start(
        RuntimeConfig::new(cpus(), IdlePolicy::Park),
        Arc::new(|_, _| Vec::new()),
    )
    .expect("node starts");
    let handle = node.handle();
    let error = handle
        .call(1, JOB_TIMEOUT, |_, _| -> () { panic!("job bug") })
        .unwrap_err();
    assert!(
        matches!(error, RuntimeError::JobLost { shard: 1 }),
        "{error}"
    );
    let shard = handle
        .call(1, JOB_TIMEOUT, |core, _| core.id())
        .expect("the shard still serves jobs");
    assert_eq!(shard, 1);
    node.stop().expect("node stops");
}
