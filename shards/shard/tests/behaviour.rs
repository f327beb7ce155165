//! What a shard does with bad or unlucky input: unknown agents, full mailboxes, failing
//! and panicking handlers (restarts: tests/restart.rs), undeploy with queued messages. Two shards are driven by hand;
//! ring items move between them through plain vectors.

use std::cell::RefCell;
use std::rc::Rc;

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_shard::{
    id_on_shard, Agent, AgentError, Context, Message, RestartPolicy, RingItem, SendError, Shard,
    ShardConfig,
};

mod common;

use common::transmit_all;

type Inbox = Rc<RefCell<Vec<(Header, Vec<u8>)>>>;

/// Records everything it receives; fails on payload "fail", panics on payload "panic".
struct Recorder(Inbox);

impl Agent for Recorder {
    fn on_message(&mut self, message: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        self.0
            .borrow_mut()
            .push((message.header, message.payload.to_vec()));
        match message.payload {
            b"fail" => Err(AgentError::Failed("asked to fail".into())),
            b"panic" => panic!("asked to panic"),
            _ => Ok(()),
        }
    }
}

fn pair() -> (Shard, Shard) {
    (
        Shard::new(ShardConfig::new(0, 2)),
        Shard::new(ShardConfig::new(1, 2)),
    )
}

fn header(to: AgentId, from: AgentId) -> Header {
    Header {
        to,
        from,
        conversation_id: 9,
        correlation_id: 42,
        performative: Performative::Request,
        priority: Priority::Normal,
        flags: Flags::NONE,
    }
}

/// Moves everything `from` has for `to` into `to`, then lets both deliver, until quiet.
fn pump(shards: &mut [Shard; 2]) {
    loop {
        let mut moved = 0;
        for from in 0..2 {
            let to = 1 - from;
            let mut items: Vec<RingItem> = Vec::new();
            shards[from].poll_transmit(to, |item| {
                items.push(item);
                Ok(())
            });
            for item in items {
                shards[to]
                    .handle_ring_item(item)
                    .expect("mailboxes have room");
                moved += 1;
            }
            moved += shards[from].poll_deliver(0, 1000);
        }
        if moved == 0 {
            return;
        }
    }
}

fn recorder_on(shard: &mut Shard, id: AgentId) -> Inbox {
    let inbox = Inbox::default();
    shard
        .deploy(id, Box::new(Recorder(Rc::clone(&inbox))), 0)
        .expect("a fresh shard takes the recorder");
    inbox
}

#[test]
fn local_send_to_unknown_agent_is_refused() {
    let (mut shard, _) = pair();
    let ghost = id_on_shard(7, 0, 2);
    let error = shard
        .handle_send(&header(ghost, AgentId(1)), b"x")
        .unwrap_err();
    assert_eq!(error, SendError::UnknownAgent { to: ghost });
}

#[test]
fn remote_unknown_agent_gets_a_failure_reply_naming_it() {
    let (a, b) = pair();
    let mut shards = [a, b];
    let me = id_on_shard(1, 0, 2);
    let ghost = id_on_shard(1, 1, 2);
    let inbox = recorder_on(&mut shards[0], me);
    shards[0].handle_send(&header(ghost, me), b"hello").unwrap();
    pump(&mut shards);
    let inbox = inbox.borrow();
    assert_eq!(inbox.len(), 1);
    let (reply, payload) = &inbox[0];
    assert_eq!(reply.performative, Performative::Failure);
    assert!(reply.flags.contains(Flags::REPLY) && reply.flags.contains(Flags::ERROR));
    assert_eq!((reply.conversation_id, reply.correlation_id), (9, 42));
    assert_eq!(
        String::from_utf8_lossy(payload),
        format!("unknown agent {ghost}")
    );
    assert_eq!(shards[1].stats().unknown_agent, 1);
    assert_eq!(
        shards[0].pool().frames_in_flight() + shards[1].pool().frames_in_flight(),
        0
    );
}

#[test]
fn full_mailbox_pushes_back_and_loses_nothing() {
    let mut config = ShardConfig::new(0, 1);
    config.mailbox_capacity_frames = 4;
    let mut shard = Shard::new(config);
    let me = AgentId::from_name("me");
    let inbox = recorder_on(&mut shard, me);
    for n in 0..4u8 {
        shard.handle_send(&header(me, me), &[n]).unwrap();
    }
    let error = shard.handle_send(&header(me, me), &[4]).unwrap_err();
    assert_eq!(
        error,
        SendError::MailboxFull {
            to: me,
            capacity_frames: 4
        }
    );
    assert!(error.is_backpressure());
    shard.poll_deliver(0, 100);
    let payloads: Vec<u8> = inbox.borrow().iter().map(|(_, p)| p[0]).collect();
    assert_eq!(payloads, vec![0, 1, 2, 3]);
}

#[test]
fn a_ring_frame_for_a_full_mailbox_is_handed_back() {
    let (mut a, _) = pair();
    let mut config = ShardConfig::new(1, 2);
    config.mailbox_capacity_frames = 1;
    let mut b = Shard::new(config);
    let sender = id_on_shard(1, 0, 2);
    let target = id_on_shard(1, 1, 2);
    let inbox = recorder_on(&mut b, target);
    a.handle_send(&header(target, sender), b"1").unwrap();
    a.handle_send(&header(target, sender), b"2").unwrap();
    let mut items = Vec::new();
    a.poll_transmit(1, |item| {
        items.push(item);
        Ok(())
    });
    let mut items = items.into_iter();
    b.handle_ring_item(items.next().unwrap()).unwrap();
    let refused = b.handle_ring_item(items.next().unwrap()).unwrap_err();
    b.poll_deliver(0, 10);
    b.handle_ring_item(refused).unwrap();
    b.poll_deliver(0, 10);
    let payloads: Vec<Vec<u8>> = inbox.borrow().iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(payloads, vec![b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(b.stats().stalled_deliveries, 1);
}

#[test]
fn failing_and_panicking_handlers_are_contained() {
    // No restarts: the panic stops the victim at once (tests/restart.rs covers restarts).
    let mut config = ShardConfig::new(0, 1);
    config.restart = RestartPolicy::NEVER;
    let mut shard = Shard::new(config);
    let (me, victim, neighbour) = (
        AgentId::from_name("me"),
        AgentId::from_name("victim"),
        AgentId::from_name("neighbour"),
    );
    let replies = recorder_on(&mut shard, me);
    let _ = recorder_on(&mut shard, victim);
    let neighbour_inbox = recorder_on(&mut shard, neighbour);
    shard.handle_send(&header(victim, me), b"fail").unwrap();
    shard.handle_send(&header(victim, me), b"panic").unwrap();
    shard.handle_send(&header(victim, me), b"after").unwrap();
    shard
        .handle_send(&header(neighbour, me), b"still here")
        .unwrap();
    while shard.poll_deliver(0, 100) > 0 {}
    let replies = replies.borrow();
    let reasons: Vec<String> = replies
        .iter()
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(
        reasons.len(),
        3,
        "one failure reply per request: {reasons:?}"
    );
    assert!(reasons[0].contains("asked to fail"));
    assert!(reasons[1].contains("asked to panic"));
    assert_eq!(
        reasons[2],
        format!("agent {victim} stopped after a crash (restarts disabled): agent crashed: asked to panic")
    );
    assert_eq!(
        neighbour_inbox.borrow().len(),
        1,
        "the neighbour keeps serving"
    );
    assert_eq!(shard.stats().handler_panics, 1);
    assert_eq!(shard.stats().agents_stopped, 1);
}

#[test]
fn undeploy_answers_queued_requests_and_forgets_the_agent() {
    let (a, b) = pair();
    let mut shards = [a, b];
    let sender = id_on_shard(1, 0, 2);
    let (old, new) = (id_on_shard(1, 1, 2), id_on_shard(1000, 1, 2));
    let replies = recorder_on(&mut shards[0], sender);
    let _ = recorder_on(&mut shards[1], old);
    shards[0]
        .handle_send(&header(old, sender), b"first")
        .unwrap();
    pump(&mut shards); // delivered: shard 1 now remembers `old` as its last addressee
    assert!(shards[1].undeploy(old, 0));
    let new_inbox = recorder_on(&mut shards[1], new); // reuses old's slot
    shards[0]
        .handle_send(&header(old, sender), b"to the departed")
        .unwrap();
    pump(&mut shards);
    assert!(
        new_inbox.borrow().is_empty(),
        "a frame for a departed agent never reaches its slot's new tenant"
    );
    let replies = replies.borrow();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0.performative, Performative::Failure);
}

/// Sends itself one message per message it handles, forever.
struct Spinner;

impl Agent for Spinner {
    fn on_message(&mut self, _: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let me = ctx.self_id();
        ctx.send(me, Performative::Inform, b"again")
            .map_err(|error| AgentError::Failed(error.to_string().into()))
    }
}

#[test]
fn a_message_to_oneself_waits_for_the_next_poll() {
    let mut config = ShardConfig::new(0, 1);
    config.mailbox_capacity_frames = 1;
    let mut shard = Shard::new(config);
    let spinner = AgentId::from_name("spinner");
    shard.deploy(spinner, Box::new(Spinner), 0).unwrap();
    shard.handle_send(&header(spinner, spinner), b"go").unwrap();
    // Without the rule, one poll would spin through its whole budget on self-sends.
    assert_eq!(shard.poll_deliver(0, 1000), 1);
    assert!(
        shard.has_ready_work(),
        "the self-send waits for the next poll"
    );
    // The deferred frame counts against the mailbox bound: nothing else fits now.
    let error = shard
        .handle_send(&header(spinner, spinner), b"extra")
        .unwrap_err();
    assert!(error.is_backpressure());
    assert_eq!(shard.poll_deliver(0, 1000), 1);
    assert_eq!(shard.stats().handler_errors, 0);
}

/// Buffers go home alone (one untouched ring item) or packed into a carrier, and a
/// return the ring refuses stays queued: either way every buffer reaches its owner once.
#[test]
fn foreign_buffers_go_home_alone_or_packed_and_survive_a_full_ring() {
    let (mut a, mut b) = pair();
    let sender = id_on_shard(1, 0, 2);
    let target = id_on_shard(1, 1, 2);
    let _inbox = recorder_on(&mut b, target);
    for messages in [1_usize, 5] {
        for _ in 0..messages {
            a.handle_send(&header(target, sender), b"x").unwrap();
        }
        let mut items = Vec::new();
        a.poll_transmit(1, |item| {
            items.push(item);
            Ok(())
        });
        for item in items {
            b.handle_ring_item(item).unwrap();
        }
        b.poll_deliver(0, 100);
        assert_eq!(a.pool().frames_in_flight(), messages);
        // A full ring first: nothing is lost, the returns wait.
        assert_eq!(b.poll_transmit(0, Err), 0);
        assert!(b.wants_transmit(0));
        let mut returns = Vec::new();
        b.poll_transmit(0, |item| {
            assert!(item.is_returned());
            returns.push(item);
            Ok(())
        });
        // One alone, or one carrier with the other four packed into it.
        assert_eq!(returns.len(), 1);
        for item in returns {
            a.handle_ring_item(item).unwrap();
        }
        assert_eq!(
            a.pool().frames_in_flight(),
            0,
            "after {messages} message(s)"
        );
    }
    assert_eq!(a.stats().frames_returned, 6);
}

/// A frame that comes alone is handled at once when nothing else waits, and queued like
/// any other when something does (another agent ready, or its own mailbox not empty), so
/// neither priorities nor per-sender order change.
#[test]
fn a_lone_ring_frame_is_handled_at_once_only_when_nothing_waits() {
    let (mut a, mut b) = pair();
    let sender = id_on_shard(1, 0, 2);
    let target = id_on_shard(1, 1, 2);
    let other = id_on_shard(target.0 + 1, 1, 2);
    let inbox = recorder_on(&mut b, target);
    let other_inbox = recorder_on(&mut b, other);

    // Nothing waits: handled inside the call, at the time given.
    a.handle_send(&header(target, sender), b"first").unwrap();
    for item in transmit_all(&mut a, 1) {
        b.handle_lone_ring_item(item, 5).unwrap();
    }
    assert_eq!(inbox.borrow().len(), 1);
    assert_eq!(b.stats().messages_handled, 1);
    assert_eq!(b.stats().received_remote, 1);
    assert_eq!(b.poll_deliver(0, 100), 0);

    // Another agent is ready: queued, and served by priority afterwards.
    let low = Header {
        priority: Priority::Low,
        ..header(other, target)
    };
    b.handle_send(&low, b"low").unwrap();
    let critical = Header {
        priority: Priority::Critical,
        ..header(target, sender)
    };
    a.handle_send(&critical, b"critical").unwrap();
    for item in transmit_all(&mut a, 1) {
        b.handle_lone_ring_item(item, 6).unwrap();
    }
    assert_eq!(inbox.borrow().len(), 1, "queued behind the ready agent");
    assert_eq!(b.poll_deliver(0, 100), 2);
    assert_eq!(inbox.borrow()[1].1, b"critical");
    assert_eq!(other_inbox.borrow().len(), 1);

    // A frame for an unknown agent still gets its failure reply.
    let nobody = id_on_shard(target.0 + 1_000, 1, 2);
    a.handle_send(&header(nobody, sender), b"lost").unwrap();
    for item in transmit_all(&mut a, 1) {
        b.handle_lone_ring_item(item, 7).unwrap();
    }
    assert_eq!(b.stats().unknown_agent, 1);
    assert!(b.wants_transmit(0), "the failure reply waits for the ring");
}

/// A [`Recorder`] that takes up to 4 messages per call (the default `on_batch`).
struct BatchRecorder(Inbox);

impl Agent for BatchRecorder {
    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        Recorder(Rc::clone(&self.0)).on_message(message, ctx)?;
        ctx.reply(Performative::Inform, message.payload)
            .map_err(|error| AgentError::Failed(error.to_string().into()))
    }

    fn batch_messages_max(&self) -> usize {
        4
    }

    fn restart(&mut self, _: &mut Context<'_>) -> Result<(), AgentError> {
        Ok(())
    }
}

#[test]
fn a_failure_or_panic_inside_a_batch_answers_that_message_and_keeps_the_rest() {
    // One restart allowed, at once: the panic restarts the agent, the rest still come.
    let mut config = ShardConfig::new(0, 1);
    config.restart = RestartPolicy {
        max_restarts: 1,
        window_ns: 1_000_000_000,
        backoff_initial_ns: 0,
        backoff_max_ns: 0,
    };
    let mut shard = Shard::new(config);
    let (me, batcher) = (AgentId::from_name("me"), AgentId::from_name("batcher"));
    let replies = recorder_on(&mut shard, me);
    let handled = Inbox::default();
    shard
        .deploy(batcher, Box::new(BatchRecorder(Rc::clone(&handled))), 0)
        .expect("deploy");
    let payloads: [&[u8]; 10] = [
        b"0", b"1", b"fail", b"3", b"4", b"panic", b"6", b"7", b"8", b"9",
    ];
    for (n, payload) in payloads.iter().enumerate() {
        let mut header = header(batcher, me);
        header.correlation_id = n as u64;
        shard.handle_send(&header, payload).unwrap();
    }
    for now_ns in 0..10 {
        while shard.poll_deliver(now_ns, 100) > 0 {}
    }
    // Every message reached the handler exactly once, in order.
    let seen: Vec<Vec<u8>> = handled.borrow().iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(seen, payloads.map(<[u8]>::to_vec));
    // And every one was answered once: informs, and failures for "fail" and "panic".
    let answers: Vec<(u64, Performative)> = replies
        .borrow()
        .iter()
        .map(|(h, _)| (h.correlation_id, h.performative))
        .collect();
    let expected: Vec<(u64, Performative)> = payloads
        .iter()
        .enumerate()
        .map(|(n, payload)| {
            let performative = match *payload {
                b"fail" | b"panic" => Performative::Failure,
                _ => Performative::Inform,
            };
            (n as u64, performative)
        })
        .collect();
    assert_eq!(answers, expected);
    assert!(shard.stats().batches >= 3, "{:?}", shard.stats());
    assert_eq!(shard.stats().agent_restarts, 1);
}
