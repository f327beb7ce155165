//! The restart policy and hot swap: a crashed agent waits out a back-off with its mailbox
//! kept, is restarted, or is stopped after too many crashes; `replace` swaps an agent's code
//! under its queue. One shard, driven by hand; time is whatever the test passes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_shard::{
    Agent, AgentError, AgentState, Context, DeployError, Message, ReplaceError, RestartPolicy,
    Shard, ShardConfig,
};

const MS: u64 = 1_000_000;

/// What the probes of one test share: what they handled and how often their hooks ran.
#[derive(Default)]
struct Probes {
    /// `(probe name, payload)` per handler call, crashing ones included.
    handled: RefCell<Vec<(&'static str, String)>>,
    starts: Cell<u32>,
    stops: Cell<u32>,
    restarts: Cell<u32>,
    /// Restarts to refuse (with `Crashed`) before accepting again.
    refuse_restarts: Cell<u32>,
    /// Panic in the next restart.
    panic_on_restart: Cell<bool>,
}

/// The crashing test agent: panics on `crash`, reports a crash (as a WASM trap does) on
/// `trap`, fails (a per-message error) on `fail`, accepts anything else.
struct Probe {
    name: &'static str,
    probes: Rc<Probes>,
    refuse_start: bool,
}

impl Probe {
    fn boxed(name: &'static str, probes: &Rc<Probes>) -> Box<Probe> {
        Box::new(Probe {
            name,
            probes: Rc::clone(probes),
            refuse_start: false,
        })
    }
}

impl Agent for Probe {
    fn on_start(&mut self, _: &mut Context<'_>) -> Result<(), AgentError> {
        if self.refuse_start {
            return Err(AgentError::Failed("not today".into()));
        }
        self.probes.starts.set(self.probes.starts.get() + 1);
        Ok(())
    }

    fn on_message(&mut self, message: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        let payload = String::from_utf8_lossy(message.payload).into_owned();
        self.probes
            .handled
            .borrow_mut()
            .push((self.name, payload.clone()));
        match payload.as_str() {
            "crash" => panic!("boom"),
            "trap" => Err(AgentError::Crashed("trap".into())),
            "fail" => Err(AgentError::Failed("nope".into())),
            _ => Ok(()),
        }
    }

    fn on_stop(&mut self, _: &mut Context<'_>) {
        self.probes.stops.set(self.probes.stops.get() + 1);
    }

    fn restart(&mut self, _: &mut Context<'_>) -> Result<(), AgentError> {
        if self.probes.panic_on_restart.replace(false) {
            panic!("restart exploded");
        }
        let refuse = self.probes.refuse_restarts.get();
        if refuse > 0 {
            self.probes.refuse_restarts.set(refuse - 1);
            return Err(AgentError::Crashed("restart refused".into()));
        }
        self.probes.restarts.set(self.probes.restarts.get() + 1);
        Ok(())
    }
}

/// A native agent that does not implement `restart`.
struct Fragile;

impl Agent for Fragile {
    fn on_message(&mut self, _: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        Err(AgentError::Crashed("fragile".into()))
    }
}

type Inbox = Rc<RefCell<Vec<(Header, String)>>>;

/// The client: records what it receives (the replies).
struct Client(Inbox);

impl Agent for Client {
    fn on_message(&mut self, message: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        self.0.borrow_mut().push((
            message.header,
            String::from_utf8_lossy(message.payload).into_owned(),
        ));
        Ok(())
    }
}

struct Setup {
    shard: Shard,
    probe: AgentId,
    me: AgentId,
    probes: Rc<Probes>,
    inbox: Inbox,
    next_correlation: u64,
}

impl Setup {
    fn new(policy: RestartPolicy) -> Setup {
        let mut config = ShardConfig::new(0, 1);
        config.restart = policy;
        let mut shard = Shard::new(config);
        let (probe, me) = (AgentId::from_name("probe"), AgentId::from_name("me"));
        let probes = Rc::new(Probes::default());
        shard
            .deploy(probe, Probe::boxed("v1", &probes), 0)
            .expect("a fresh shard takes the probe");
        let inbox = Inbox::default();
        shard
            .deploy(me, Box::new(Client(Rc::clone(&inbox))), 0)
            .expect("a fresh shard takes the client");
        Setup {
            shard,
            probe,
            me,
            probes,
            inbox,
            next_correlation: 1,
        }
    }

    /// Sends a request from the client to the probe; returns its correlation id.
    fn send(&mut self, payload: &str) -> u64 {
        self.send_at(payload, Priority::Normal)
    }

    fn send_at(&mut self, payload: &str, priority: Priority) -> u64 {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let header = Header {
            to: self.probe,
            from: self.me,
            conversation_id: 1,
            correlation_id,
            performative: Performative::Request,
            priority,
            flags: Flags::NONE,
        };
        self.shard
            .handle_send(&header, payload.as_bytes())
            .expect("the mailbox has room");
        correlation_id
    }

    /// Polls at `now_ns` until nothing more is delivered; returns how many were.
    fn run(&mut self, now_ns: u64) -> usize {
        let mut delivered = 0;
        loop {
            let n = self.shard.poll_deliver(now_ns, 1000);
            if n == 0 {
                return delivered;
            }
            delivered += n;
        }
    }

    /// Payloads the probes handled, in order.
    fn handled(&self) -> Vec<String> {
        self.probes
            .handled
            .borrow()
            .iter()
            .map(|(_, payload)| payload.clone())
            .collect()
    }

    /// Failure replies the client received: `(correlation id, text)`.
    fn failures(&self) -> Vec<(u64, String)> {
        self.inbox
            .borrow()
            .iter()
            .map(|(header, text)| {
                assert_eq!(header.performative, Performative::Failure);
                assert!(header.flags.contains(Flags::REPLY) && header.flags.contains(Flags::ERROR));
                assert_eq!(header.from, self.probe);
                (header.correlation_id, text.clone())
            })
            .collect()
    }

    fn state(&self) -> AgentState {
        self.shard
            .agent_status(self.probe)
            .expect("the probe is deployed")
            .state
    }
}

/// The old agent from a replace that must succeed (`expect` wants `Debug`).
fn replaced(result: Result<Box<dyn Agent>, ReplaceError>) -> Box<dyn Agent> {
    match result {
        Ok(old) => old,
        Err(error) => panic!("the replace failed: {error}"),
    }
}

/// The error of a replace that must fail (`unwrap_err` wants the agent to be `Debug`).
fn refused(result: Result<Box<dyn Agent>, ReplaceError>) -> ReplaceError {
    match result {
        Ok(_) => panic!("the replace succeeded"),
        Err(error) => error,
    }
}

fn fast_policy(max_restarts: u32, window_ns: u64) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        window_ns,
        backoff_initial_ns: MS,
        backoff_max_ns: 1000 * MS,
    }
}

#[test]
fn the_default_policy_is_5_restarts_in_60_s_with_1_ms_to_1_s_backoff() {
    let policy = ShardConfig::new(0, 1).restart;
    assert_eq!(policy, RestartPolicy::default());
    assert_eq!(
        policy,
        RestartPolicy {
            max_restarts: 5,
            window_ns: 60_000 * MS,
            backoff_initial_ns: MS,
            backoff_max_ns: 1000 * MS,
        }
    );
}

#[test]
fn a_crash_answers_its_message_and_keeps_the_queue_for_the_restarted_agent() {
    let mut s = Setup::new(RestartPolicy::default());
    s.send("a");
    let crashing = s.send("crash");
    s.send("b");
    s.send("c");
    s.run(0);
    assert_eq!(s.handled(), ["a", "crash"]);
    let failures = s.failures();
    assert_eq!(failures.len(), 1, "only the crashing request is answered");
    assert_eq!(failures[0], (crashing, "agent crashed: boom".to_owned()));
    let status = s.shard.agent_status(s.probe).unwrap();
    assert_eq!(status.state, AgentState::Restarting { until_ns: MS });
    assert_eq!(
        (
            status.restarts,
            status.crashes_in_window,
            status.queued_frames
        ),
        (0, 1, 2)
    );
    assert_eq!(s.shard.next_timer_ns(), Some(MS));
    assert!(!s.shard.is_idle(), "an agent waits for its restart");
    assert_eq!(s.shard.stats().handler_panics, 1);

    // During the back-off the mailbox keeps accepting, and nothing is delivered.
    s.send("d");
    assert_eq!(s.run(MS - 1), 0);
    assert_eq!(s.probes.restarts.get(), 0);
    assert_eq!(s.shard.agent_status(s.probe).unwrap().queued_frames, 3);

    // The back-off ends: restarted, then everything queued, in order.
    assert_eq!(s.run(MS), 3);
    assert_eq!(s.probes.restarts.get(), 1);
    assert_eq!(s.handled(), ["a", "crash", "b", "c", "d"]);
    let status = s.shard.agent_status(s.probe).unwrap();
    assert_eq!(status.state, AgentState::Running);
    assert_eq!(
        (
            status.restarts,
            status.crashes_in_window,
            status.queued_frames
        ),
        (1, 1, 0)
    );
    assert_eq!(s.shard.next_timer_ns(), None);
    assert!(s.shard.is_idle());
    assert_eq!(s.shard.stats().agent_restarts, 1);
    assert_eq!(s.shard.stats().agents_stopped, 0);
    assert_eq!(s.failures().len(), 1);
    assert_eq!(
        s.probes.stops.get(),
        0,
        "a crashed agent is not stopped, it is restarted"
    );
}

#[test]
fn a_failed_message_is_not_a_crash() {
    let mut s = Setup::new(RestartPolicy::default());
    let failing = s.send("fail");
    s.send("after");
    s.run(0);
    assert_eq!(s.handled(), ["fail", "after"]);
    assert_eq!(s.failures(), [(failing, "agent failed: nope".to_owned())]);
    assert_eq!(s.state(), AgentState::Running);
    assert_eq!(s.shard.next_timer_ns(), None);
}

#[test]
fn backoff_doubles_per_consecutive_crash_and_starts_over_after_a_success() {
    let mut s = Setup::new(RestartPolicy::default());
    s.send("trap");
    s.run(0);
    assert_eq!(s.state(), AgentState::Restarting { until_ns: MS });
    // Each restart meets another crash at once: 1, 2, 4, 8 ms.
    let mut now = MS;
    for backoff in [2 * MS, 4 * MS, 8 * MS] {
        s.send("trap");
        s.run(now);
        assert_eq!(
            s.state(),
            AgentState::Restarting {
                until_ns: now + backoff
            }
        );
        now += backoff;
    }
    // A message handled without a crash: the next back-off is short again.
    s.send("fine");
    s.send("trap");
    s.run(now);
    assert_eq!(s.state(), AgentState::Restarting { until_ns: now + MS });
    assert_eq!(s.probes.restarts.get(), 4);
    assert_eq!(s.shard.agent_status(s.probe).unwrap().crashes_in_window, 5);
}

#[test]
fn backoff_is_capped() {
    let mut s = Setup::new(RestartPolicy {
        max_restarts: 100,
        window_ns: 1,
        backoff_initial_ns: MS,
        backoff_max_ns: 5 * MS,
    });
    let mut now = 0;
    for backoff in [MS, 2 * MS, 4 * MS, 5 * MS, 5 * MS] {
        s.send("trap");
        s.run(now);
        assert_eq!(
            s.state(),
            AgentState::Restarting {
                until_ns: now + backoff
            }
        );
        now += backoff;
    }
}

#[test]
fn too_many_crashes_in_the_window_stop_the_agent_and_answer_its_queue() {
    let mut s = Setup::new(fast_policy(2, 1000 * MS));
    s.send("trap");
    s.run(0);
    s.send("trap");
    s.run(MS); // restart 1, crash 2
    assert_eq!(s.state(), AgentState::Restarting { until_ns: 3 * MS });
    s.send("trap");
    let queued = [s.send("q1"), s.send("q2")];
    s.run(3 * MS); // restart 2, crash 3: more than 2 restarts in 1 s
    assert_eq!(s.state(), AgentState::Stopped);
    assert_eq!(s.handled(), ["trap", "trap", "trap"]);
    let reason = format!(
        "agent {} stopped after 3 crashes in 1 s: agent crashed: trap",
        s.probe
    );
    let failures = s.failures();
    assert_eq!(failures.len(), 5);
    assert_eq!(
        &failures[3..],
        [(queued[0], reason.clone()), (queued[1], reason.clone())]
    );

    // Later messages are answered the same way, whatever the time.
    let later = s.send("later");
    s.run(10_000 * MS);
    assert_eq!(s.failures()[5], (later, reason));
    assert_eq!(s.handled().len(), 3, "a stopped agent handles nothing");
    let status = s.shard.agent_status(s.probe).unwrap();
    assert_eq!(
        (
            status.state,
            status.restarts,
            status.crashes_in_window,
            status.queued_frames
        ),
        (AgentState::Stopped, 2, 3, 0)
    );
    assert_eq!(s.shard.stats().agents_stopped, 1);
    assert_eq!(s.shard.stats().agent_restarts, 2);
    assert_eq!(s.shard.next_timer_ns(), None);
    assert!(s.shard.is_idle());
    assert_eq!(s.shard.pool().frames_in_flight(), 0);
}

#[test]
fn crashes_spread_wider_than_the_window_never_stop_the_agent() {
    let window = 10 * MS;
    let mut s = Setup::new(fast_policy(1, window));
    let mut now = 0;
    for round in 1..=50u32 {
        // A success before each crash keeps the back-off at 1 ms.
        s.send("fine");
        s.send("trap");
        s.run(now);
        assert!(
            matches!(s.state(), AgentState::Restarting { .. }),
            "round {round}"
        );
        now += window;
        s.run(now);
        assert_eq!(s.state(), AgentState::Running, "round {round}");
        let status = s.shard.agent_status(s.probe).unwrap();
        assert_eq!((status.restarts, status.crashes_in_window), (round, 1));
    }
    assert_eq!(s.shard.stats().agents_stopped, 0);
}

#[test]
fn a_failing_restart_counts_as_another_crash() {
    let mut s = Setup::new(fast_policy(5, 1000 * MS));
    s.probes.refuse_restarts.set(1);
    s.send("trap");
    let kept = s.send("kept");
    s.run(0);
    s.run(MS); // the restart is refused: crash 2, back-off 2 ms
    assert_eq!(s.state(), AgentState::Restarting { until_ns: 3 * MS });
    assert_eq!(s.shard.agent_status(s.probe).unwrap().crashes_in_window, 2);
    s.probes.panic_on_restart.set(true);
    s.run(3 * MS); // the restart panics: crash 3, back-off 4 ms
    assert_eq!(s.state(), AgentState::Restarting { until_ns: 7 * MS });
    assert_eq!(s.shard.stats().handler_panics, 1);
    s.run(7 * MS);
    assert_eq!(s.state(), AgentState::Running);
    assert_eq!(s.handled(), ["trap", "kept"]);
    assert_eq!(s.failures().len(), 1, "{kept} was delivered, not answered");
    assert_eq!(s.shard.stats().agent_restarts, 1);
}

#[test]
fn a_failing_restart_with_no_restarts_left_stops_the_agent() {
    let mut s = Setup::new(fast_policy(1, 1000 * MS));
    s.probes.refuse_restarts.set(1);
    s.send("trap");
    let queued = s.send("queued");
    s.run(0);
    s.run(MS);
    assert_eq!(s.state(), AgentState::Stopped);
    let reason = format!(
        "agent {} stopped after 2 crashes in 1 s: agent crashed: restart refused",
        s.probe
    );
    assert_eq!(s.failures()[1], (queued, reason));
}

#[test]
fn an_agent_without_restart_runs_through_its_backoffs_and_stops() {
    let mut config = ShardConfig::new(0, 1);
    config.restart = fast_policy(2, 1000 * MS);
    let mut shard = Shard::new(config);
    let (fragile, me) = (AgentId::from_name("fragile"), AgentId::from_name("me"));
    let inbox = Inbox::default();
    shard.deploy(fragile, Box::new(Fragile), 0).unwrap();
    shard
        .deploy(me, Box::new(Client(Rc::clone(&inbox))), 0)
        .unwrap();
    for correlation_id in 1..=2 {
        let header = Header {
            to: fragile,
            from: me,
            conversation_id: 0,
            correlation_id,
            performative: Performative::Request,
            priority: Priority::Normal,
            flags: Flags::NONE,
        };
        shard.handle_send(&header, b"x").unwrap();
    }
    let mut now = 0;
    while let Some(deadline) = {
        shard.poll_deliver(now, 100);
        shard.next_timer_ns()
    } {
        now = deadline;
    }
    shard.poll_deliver(now, 100);
    assert_eq!(now, 3 * MS, "back-offs of 1 and 2 ms");
    assert_eq!(
        shard.agent_status(fragile).unwrap().state,
        AgentState::Stopped
    );
    let inbox = inbox.borrow();
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0].1, "agent crashed: fragile");
    assert_eq!(
        inbox[1].1,
        format!(
            "agent {fragile} stopped after 3 crashes in 1 s: agent failed: restart not supported"
        )
    );
}

#[test]
fn max_restarts_zero_stops_at_the_first_crash() {
    let mut s = Setup::new(RestartPolicy::NEVER);
    let crashing = s.send("crash");
    let queued = s.send("queued");
    s.run(0);
    assert_eq!(s.state(), AgentState::Stopped);
    assert_eq!(s.shard.next_timer_ns(), None);
    let reason = format!(
        "agent {} stopped after a crash (restarts disabled): agent crashed: boom",
        s.probe
    );
    assert_eq!(
        s.failures(),
        [
            (crashing, "agent crashed: boom".to_owned()),
            (queued, reason)
        ]
    );
    assert_eq!(s.probes.restarts.get(), 0);
    assert_eq!(s.shard.stats().agents_stopped, 1);
}

#[test]
fn undeploy_during_backoff_answers_the_queue_and_cancels_the_restart() {
    let mut s = Setup::new(RestartPolicy::default());
    s.send("trap");
    let queued = [s.send("q1"), s.send("q2")];
    s.run(0);
    assert_eq!(s.shard.next_timer_ns(), Some(MS));
    assert!(s.shard.undeploy(s.probe, MS / 2));
    assert_eq!(s.probes.stops.get(), 0, "no on_stop after a crash");
    assert_eq!(s.shard.next_timer_ns(), None);
    assert!(s.shard.agent_status(s.probe).is_none());
    s.run(2 * MS);
    assert_eq!(s.probes.restarts.get(), 0);
    let reason = format!("agent undeployed: {}", s.probe);
    assert_eq!(
        &s.failures()[1..],
        [(queued[0], reason.clone()), (queued[1], reason)]
    );
    assert!(s.shard.is_idle());
    assert_eq!(s.shard.pool().frames_in_flight(), 0);

    // The slot is reused by a new agent, which works.
    s.shard
        .deploy(s.probe, Probe::boxed("v2", &s.probes), 2 * MS)
        .unwrap();
    s.send("hello");
    s.run(2 * MS);
    assert_eq!(
        s.probes.handled.borrow().last().unwrap(),
        &("v2", "hello".to_owned())
    );
}

#[test]
fn a_slot_in_backoff_left_on_a_ready_list_is_skipped_then_served_after_restart() {
    let mut s = Setup::new(RestartPolicy::default());
    s.send_at("low-1", Priority::Low);
    s.send_at("trap", Priority::High);
    s.send_at("low-2", Priority::Low);
    s.send_at("high", Priority::High);
    // The high class goes first and crashes; the slot still sits on the low list.
    s.run(0);
    assert_eq!(s.handled(), ["trap"]);
    assert!(
        !s.shard.has_ready_work(),
        "the stale entry was skipped and dropped"
    );
    assert_eq!(s.shard.agent_status(s.probe).unwrap().queued_frames, 3);
    s.run(MS);
    assert_eq!(s.handled(), ["trap", "high", "low-1", "low-2"]);
}

#[test]
fn undeploy_of_a_slot_in_backoff_still_on_a_ready_list_frees_it_once() {
    let mut s = Setup::new(RestartPolicy::default());
    s.send_at("trap", Priority::High);
    s.send_at("low", Priority::Low);
    // One message: the crash leaves the slot on the low list.
    assert_eq!(s.shard.poll_deliver(0, 1), 1);
    assert!(s.shard.has_ready_work());
    assert!(s.shard.undeploy(s.probe, 0));
    // Not freed yet: the low list still refers to it. A new agent gets another slot.
    let other = AgentId::from_name("other");
    s.shard
        .deploy(other, Probe::boxed("other", &s.probes), 0)
        .unwrap();
    s.run(0); // pops the stale entry, frees the slot
    s.shard
        .deploy(s.probe, Probe::boxed("v2", &s.probes), 0)
        .unwrap();
    s.send("to v2");
    let header = Header {
        to: other,
        from: s.me,
        conversation_id: 0,
        correlation_id: 0,
        performative: Performative::Inform,
        priority: Priority::Normal,
        flags: Flags::NONE,
    };
    s.shard.handle_send(&header, b"to other").unwrap();
    s.run(0);
    let handled = s.probes.handled.borrow().clone();
    assert_eq!(
        handled,
        [
            ("v1", "trap".to_owned()),
            ("v2", "to v2".to_owned()),
            ("other", "to other".to_owned())
        ]
    );
    assert!(s.shard.is_idle());
    assert_eq!(s.shard.pool().frames_in_flight(), 0);
}

#[test]
fn replace_delivers_the_queued_messages_to_the_new_agent() {
    let mut s = Setup::new(RestartPolicy::default());
    s.send("one");
    s.send("two");
    let old = replaced(s.shard.replace(s.probe, Probe::boxed("v2", &s.probes), 0));
    drop(old);
    assert_eq!((s.probes.starts.get(), s.probes.stops.get()), (2, 1));
    s.send("three");
    s.run(0);
    let handled = s.probes.handled.borrow().clone();
    assert_eq!(
        handled,
        [
            ("v2", "one".to_owned()),
            ("v2", "two".to_owned()),
            ("v2", "three".to_owned())
        ]
    );
}

#[test]
fn replace_during_backoff_ends_it_and_resets_the_history() {
    let mut s = Setup::new(RestartPolicy::default());
    s.send("trap");
    s.send("queued");
    s.run(0);
    assert!(s
        .shard
        .replace(s.probe, Probe::boxed("v2", &s.probes), MS / 2)
        .is_ok());
    assert_eq!(s.probes.stops.get(), 0, "no on_stop for a crashed agent");
    assert_eq!(s.shard.next_timer_ns(), None);
    let status = s.shard.agent_status(s.probe).unwrap();
    assert_eq!(
        (
            status.state,
            status.restarts,
            status.crashes_in_window,
            status.queued_frames
        ),
        (AgentState::Running, 0, 0, 1)
    );
    s.run(MS / 2);
    assert_eq!(
        s.probes.handled.borrow().last().unwrap(),
        &("v2", "queued".to_owned())
    );
    s.run(10 * MS);
    assert_eq!(
        s.probes.restarts.get(),
        0,
        "the cancelled back-off never fires"
    );
}

#[test]
fn a_failed_replace_keeps_the_old_agent_untouched() {
    let mut s = Setup::new(RestartPolicy::default());
    s.send("queued");
    let refusing = Box::new(Probe {
        name: "v2",
        probes: Rc::clone(&s.probes),
        refuse_start: true,
    });
    let error = refused(s.shard.replace(s.probe, refusing, 0));
    assert_eq!(
        error.error,
        DeployError::Start {
            agent: s.probe,
            source: AgentError::Failed("not today".into())
        }
    );
    assert_eq!(
        error.to_string(),
        format!("agent {} failed to start: agent failed: not today", s.probe)
    );
    assert_eq!(s.probes.stops.get(), 0);
    s.run(0);
    assert_eq!(
        s.probes.handled.borrow().clone(),
        [("v1", "queued".to_owned())]
    );

    // The same in back-off: the back-off goes on.
    s.send("trap");
    s.run(0);
    let until = s.shard.next_timer_ns();
    assert!(until.is_some());
    let again = refused(s.shard.replace(s.probe, error.agent, 0));
    assert!(matches!(again.error, DeployError::Start { .. }));
    assert_eq!(s.shard.next_timer_ns(), until);
    assert!(matches!(s.state(), AgentState::Restarting { .. }));

    // And for an agent that is not there.
    let ghost = AgentId::from_name("ghost");
    let missing = refused(s.shard.replace(ghost, Probe::boxed("v3", &s.probes), 0));
    assert_eq!(missing.error, DeployError::NotFound { agent: ghost });
}

#[test]
fn replace_revives_a_stopped_agent() {
    let mut s = Setup::new(RestartPolicy::NEVER);
    s.send("crash");
    s.run(0);
    assert_eq!(s.state(), AgentState::Stopped);
    let crashed = replaced(s.shard.replace(s.probe, Probe::boxed("v2", &s.probes), MS));
    drop(crashed);
    assert_eq!(s.probes.stops.get(), 0);
    let status = s.shard.agent_status(s.probe).unwrap();
    assert_eq!(
        (status.state, status.restarts, status.crashes_in_window),
        (AgentState::Running, 0, 0)
    );
    s.send("alive");
    s.run(MS);
    assert_eq!(
        s.probes.handled.borrow().last().unwrap(),
        &("v2", "alive".to_owned())
    );
    assert_eq!(s.failures().len(), 1, "only the crash was answered");
}

#[test]
fn next_timer_is_the_earliest_backoff_deadline() {
    let mut s = Setup::new(RestartPolicy::default());
    let second = AgentId::from_name("second");
    s.shard
        .deploy(second, Probe::boxed("second", &s.probes), 0)
        .unwrap();
    assert_eq!(s.shard.next_timer_ns(), None);
    s.send("trap");
    s.run(0); // probe: until 1 ms
    let header = Header {
        to: second,
        from: s.me,
        conversation_id: 0,
        correlation_id: 0,
        performative: Performative::Inform,
        priority: Priority::Normal,
        flags: Flags::NONE,
    };
    s.shard.handle_send(&header, b"trap").unwrap();
    s.run(MS / 2); // second: until 1.5 ms
    assert_eq!(s.shard.next_timer_ns(), Some(MS));
    s.run(MS); // probe restarts
    assert_eq!(s.shard.next_timer_ns(), Some(MS + MS / 2));
    assert!(s.shard.undeploy(second, MS));
    assert_eq!(s.shard.next_timer_ns(), None);
    let mut ids: Vec<AgentId> = s.shard.agent_ids().collect();
    ids.sort_by_key(|id| id.0);
    let mut expected = vec![s.probe, s.me];
    expected.sort_by_key(|id| id.0);
    assert_eq!(ids, expected);
}

/// Sends itself a message from `restart`: it arrives after the restart, like any self-send.
struct SelfKicker(Rc<RefCell<Vec<String>>>);

impl Agent for SelfKicker {
    fn on_message(&mut self, message: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        let payload = String::from_utf8_lossy(message.payload).into_owned();
        self.0.borrow_mut().push(payload.clone());
        if payload == "trap" {
            return Err(AgentError::Crashed("trap".into()));
        }
        Ok(())
    }

    fn restart(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let me = ctx.self_id();
        ctx.send(me, Performative::Inform, b"restarted")
            .map_err(|error| AgentError::Failed(error.to_string().into()))
    }
}

#[test]
fn a_restart_may_send_to_itself() {
    let mut shard = Shard::new(ShardConfig::new(0, 1));
    let id = AgentId::from_name("kicker");
    let log = Rc::new(RefCell::new(Vec::new()));
    shard
        .deploy(id, Box::new(SelfKicker(Rc::clone(&log))), 0)
        .unwrap();
    let header = Header {
        to: id,
        from: id,
        conversation_id: 0,
        correlation_id: 0,
        performative: Performative::Inform,
        priority: Priority::Normal,
        flags: Flags::NONE,
    };
    shard.handle_send(&header, b"trap").unwrap();
    shard.handle_send(&header, b"queued").unwrap();
    while shard.poll_deliver(0, 100) > 0 {}
    while shard.poll_deliver(MS, 100) > 0 {}
    // The crash's failure reply went to the agent itself (it sent the message), queued
    // behind "queued"; the self-send from `restart` waits for the poll after the restart.
    assert_eq!(
        *log.borrow(),
        ["trap", "queued", "agent crashed: trap", "restarted"]
    );
    assert!(shard.is_idle());
    assert_eq!(shard.pool().frames_in_flight(), 0);
}
