//! Sinks ([`Shard::deploy_sink`]): host endpoints that take messages as they are sent,
//! from agents here, from other shards and from the edge; their refusals are
//! back-pressure that loses nothing. Also: a frame from the edge is handled on arrival only
//! when nothing else waits.

use std::cell::RefCell;
use std::rc::Rc;

use dataplane_frame::{encode_into, encoded_len, AgentId, Flags, Header, Performative, Priority};
use dataplane_shard::{
    id_on_shard, Agent, AgentError, Context, DeployError, Incoming, IncomingFrame, Message,
    PoolError, RingItem, SendError, Shard, ShardConfig, Sink, SinkFull,
};

mod common;

use common::transmit_all;

type Taken = Rc<RefCell<Vec<(Header, Vec<u8>)>>>;

/// Takes messages while `open`, refuses them otherwise.
struct TestSink {
    taken: Taken,
    open: Rc<RefCell<bool>>,
}

impl Sink for TestSink {
    fn deliver(&mut self, header: &Header, payload: &[u8]) -> Result<(), SinkFull> {
        if !*self.open.borrow() {
            return Err(SinkFull { capacity_bytes: 0 });
        }
        self.taken.borrow_mut().push((*header, payload.to_vec()));
        Ok(())
    }
}

fn sink_on(shard: &mut Shard, id: AgentId) -> (Taken, Rc<RefCell<bool>>) {
    let taken = Taken::default();
    let open = Rc::new(RefCell::new(true));
    shard
        .deploy_sink(
            id,
            Box::new(TestSink {
                taken: Rc::clone(&taken),
                open: Rc::clone(&open),
            }),
        )
        .expect("a fresh shard takes the sink");
    (taken, open)
}

/// What an [`Echo`] handled: `(now_ns, payload)`.
type Handled = Rc<RefCell<Vec<(u64, Vec<u8>)>>>;

/// Replies `inform` with the payload; records what it handled, with the time.
struct Echo(Handled);

impl Agent for Echo {
    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        self.0
            .borrow_mut()
            .push((ctx.now_ns(), message.payload.to_vec()));
        if message.header.flags.contains(Flags::REPLY) {
            return Ok(());
        }
        ctx.reply(Performative::Inform, message.payload)
            .map_err(|error| AgentError::Failed(error.to_string().into()))
    }
}

fn header(to: AgentId, from: AgentId) -> Header {
    Header {
        to,
        from,
        conversation_id: 3,
        correlation_id: 77,
        performative: Performative::Request,
        priority: Priority::Normal,
        flags: Flags::NONE,
    }
}

/// A frame as the edge would read it from a client (sender left zero: the shard stamps it).
fn incoming(shard: &mut Shard, to: AgentId, payload: &[u8]) -> IncomingFrame {
    let mut frame = shard
        .alloc_incoming(encoded_len(payload.len()))
        .expect("the pool has room");
    let len = encode_into(&header(to, AgentId(0)), payload, frame.buffer_mut())
        .expect("the buffer fits the frame");
    assert_eq!(len, frame.len_bytes());
    frame
}

#[test]
fn a_sink_takes_messages_from_here_from_other_shards_and_from_the_edge_as_they_are_sent() {
    let mut a = Shard::new(ShardConfig::new(0, 2));
    let mut b = Shard::new(ShardConfig::new(1, 2));
    let client = id_on_shard(10, 0, 2);
    let (taken, _) = sink_on(&mut a, client);
    let local = id_on_shard(11, 0, 2);
    let remote = id_on_shard(12, 1, 2);
    let handled = Handled::default();
    a.deploy(local, Box::new(Echo(Rc::clone(&handled))), 0)
        .unwrap();
    b.deploy(remote, Box::new(Echo(Rc::default())), 0).unwrap();
    assert!(a.hosts(client));
    assert_eq!((a.agents(), a.sinks()), (1, 1));

    // From the edge, to a local agent: handled on arrival (nothing waits), and its reply
    // is in the sink before `handle_incoming` returns.
    let frame = incoming(&mut a, local, b"one");
    assert!(matches!(
        a.handle_incoming(frame, client, 5),
        Incoming::Accepted(_)
    ));
    assert_eq!(handled.borrow().as_slice(), &[(5, b"one".to_vec())]);
    assert_eq!(taken.borrow().len(), 1);
    let (reply, payload) = taken.borrow()[0].clone();
    assert_eq!(
        (reply.to, reply.from, payload.as_slice()),
        (client, local, &b"one"[..])
    );
    assert_eq!(reply.correlation_id, 77);
    assert!(reply.flags.contains(Flags::REPLY));

    // From the edge, to an agent on the other shard: its reply comes back through the
    // ring and goes straight into the sink (no poll needed on the sink's shard).
    let frame = incoming(&mut a, remote, b"two");
    assert!(matches!(
        a.handle_incoming(frame, client, 6),
        Incoming::Accepted(_)
    ));
    for item in transmit_all(&mut a, 1) {
        b.handle_ring_item(item).unwrap();
    }
    b.poll_deliver(7, 100);
    for item in transmit_all(&mut b, 0) {
        a.handle_ring_item(item).unwrap();
    }
    assert_eq!(taken.borrow().len(), 2);
    assert_eq!(taken.borrow()[1].0.from, remote);
    assert_eq!(taken.borrow()[1].1, b"two");
    assert_eq!(a.poll_deliver(8, 100), 0, "nothing was queued for the sink");

    // From the edge, to the sink itself (a client writing to a connection id).
    let frame = incoming(&mut a, client, b"three");
    assert!(matches!(
        a.handle_incoming(frame, client, 9),
        Incoming::Accepted(_)
    ));
    assert_eq!(taken.borrow()[2].1, b"three");

    // Every buffer went home: nothing is held for a sink.
    for item in transmit_all(&mut b, 0) {
        a.handle_ring_item(item).unwrap();
    }
    assert_eq!(a.pool().frames_in_flight(), 0);
}

#[test]
fn a_full_sink_is_back_pressure_and_loses_nothing() {
    let mut a = Shard::new(ShardConfig::new(0, 2));
    let mut b = Shard::new(ShardConfig::new(1, 2));
    let client = id_on_shard(20, 0, 2);
    let (taken, open) = sink_on(&mut a, client);
    let remote = id_on_shard(21, 1, 2);
    *open.borrow_mut() = false;

    // A local send: refused as back-pressure, with the sink's reason.
    let error = a
        .handle_send(&header(client, AgentId(1)), b"local")
        .unwrap_err();
    assert!(matches!(error, SendError::SinkFull { to, .. } if to == client));
    assert!(error.is_backpressure());

    // A frame from the edge: handed back to be offered again.
    let frame = incoming(&mut a, client, b"edge");
    let Incoming::Busy(frame) = a.handle_incoming(frame, client, 1) else {
        panic!("a full sink must hand the frame back");
    };

    // A frame from another shard: the ring item is handed back (the driver keeps it).
    b.handle_send(&header(client, remote), b"ring").unwrap();
    let items = transmit_all(&mut b, 0);
    assert_eq!(items.len(), 1);
    let stalled: Vec<RingItem> = items
        .into_iter()
        .map(|item| a.handle_ring_item(item).unwrap_err())
        .collect();
    assert!(taken.borrow().is_empty());

    // Room again: both are taken, nothing was lost.
    *open.borrow_mut() = true;
    assert!(matches!(
        a.handle_incoming(frame, client, 2),
        Incoming::Accepted(_)
    ));
    for item in stalled {
        a.handle_ring_item(item).unwrap();
    }
    let payloads: Vec<Vec<u8>> = taken.borrow().iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(payloads, vec![b"edge".to_vec(), b"ring".to_vec()]);
    assert!(a.stats().backpressure >= 2);
    assert!(a.stats().stalled_deliveries >= 1);
}

#[test]
fn sinks_share_the_agent_ids_and_the_agent_bound() {
    let mut config = ShardConfig::new(0, 1);
    config.agents_max = 2;
    config.frame_bytes_max = 256;
    let mut shard = Shard::new(config);
    let agent = AgentId(1);
    let sink = AgentId(2);
    shard
        .deploy(agent, Box::new(Echo(Rc::default())), 0)
        .unwrap();
    let (taken, _) = sink_on(&mut shard, sink);
    let refused = |shard: &mut Shard, id| {
        shard.deploy_sink(
            id,
            Box::new(TestSink {
                taken: Taken::default(),
                open: Rc::new(RefCell::new(true)),
            }),
        )
    };
    assert_eq!(
        refused(&mut shard, agent),
        Err(DeployError::Duplicate { agent })
    );
    assert_eq!(
        shard
            .deploy(sink, Box::new(Echo(Rc::default())), 0)
            .unwrap_err()
            .to_string(),
        DeployError::Duplicate { agent: sink }.to_string()
    );
    assert!(matches!(
        refused(&mut shard, AgentId(3)),
        Err(DeployError::Full { agents_max: 2, .. })
    ));

    // The frame bound and the flag check hold for a sink as for an agent; an unknown id
    // is unknown whatever the frame.
    let error = shard
        .handle_send(&header(sink, agent), &[0; 512])
        .unwrap_err();
    assert!(matches!(error, SendError::Pool(PoolError::TooLarge { .. })));
    let unknown_flags = Header {
        flags: Flags(0x0084),
        ..header(sink, agent)
    };
    let error = shard.handle_send(&unknown_flags, b"x").unwrap_err();
    assert!(matches!(error, SendError::Frame(_)), "{error}");
    assert!(taken.borrow().is_empty());
    let nobody = AgentId(99);
    assert_eq!(
        shard
            .handle_send(&header(nobody, agent), &[0; 512])
            .unwrap_err(),
        SendError::UnknownAgent { to: nobody }
    );

    // Undeployed: the id is unknown again, and the room is free.
    assert!(shard.undeploy(sink, 0));
    assert!(!shard.hosts(sink));
    assert_eq!(
        shard.handle_send(&header(sink, agent), b"x").unwrap_err(),
        SendError::UnknownAgent { to: sink }
    );
    refused(&mut shard, AgentId(3)).unwrap();
}

/// An edge frame is handled inside `handle_incoming` only when the next `poll_deliver`
/// would have handled it first anyway; otherwise it queues, so priorities and per-sender
/// order are kept.
#[test]
fn an_edge_frame_is_handled_on_arrival_only_when_nothing_waits() {
    let mut shard = Shard::new(ShardConfig::new(0, 1));
    let client = AgentId(100);
    let (taken, _) = sink_on(&mut shard, client);
    let target = AgentId(101);
    let other = AgentId(102);
    let handled = Handled::default();
    let other_handled = Handled::default();
    shard
        .deploy(target, Box::new(Echo(Rc::clone(&handled))), 0)
        .unwrap();
    shard
        .deploy(other, Box::new(Echo(Rc::clone(&other_handled))), 0)
        .unwrap();

    // Another agent is ready: the frame queues behind it.
    shard.handle_send(&header(other, target), b"other").unwrap();
    let frame = incoming(&mut shard, target, b"queued");
    assert!(matches!(
        shard.handle_incoming(frame, client, 1),
        Incoming::Accepted(_)
    ));
    assert!(handled.borrow().is_empty());
    assert!(taken.borrow().is_empty());
    // Both run in the next poll (the other agent's reply to `target` too).
    assert!(shard.poll_deliver(2, 100) >= 2);
    assert_eq!(other_handled.borrow().len(), 1);
    assert_eq!(handled.borrow()[0], (2, b"queued".to_vec()));
    assert_eq!(taken.borrow().len(), 1);

    // Nothing waits now: handled on arrival, at the time given.
    let frame = incoming(&mut shard, target, b"now");
    assert!(matches!(
        shard.handle_incoming(frame, client, 3),
        Incoming::Accepted(_)
    ));
    assert_eq!(handled.borrow().last(), Some(&(3, b"now".to_vec())));
    assert_eq!(taken.borrow().len(), 2);
    assert_eq!(shard.poll_deliver(4, 100), 0);
    assert_eq!(shard.stats().received_ingress, 2);
}
