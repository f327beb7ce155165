//! The built-in native agents that a configuration's `agents:` list can deploy.
//!
//! - [`Echo`] answers every message that is not itself a reply with an `inform` carrying the
//!   same payload: the round-trip partner of load generators and health checks.
//! - [`Sink`] counts what it receives and answers nothing: the one-way flood target.
//! - [`Counter`] counts messages and sums 8-byte little-endian payloads; a `query` is
//!   answered with the count (8 bytes, little-endian), any other `request` with an empty
//!   `inform` acknowledgement.
//!
//! A reply that cannot be sent (the sender's shard pushes back) is counted in the shard's
//! statistics and dropped: a built-in agent never fails its handler because of load, so one
//! slow client cannot turn into `failure` replies for everyone.

use dataplane_control::AgentKind;
use dataplane_frame::Performative;
use dataplane_shard::{Agent, AgentError, Context, Message};

/// A built-in agent kind this binary knows how to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// [`Echo`].
    Echo,
    /// [`Sink`].
    Sink,
    /// [`Counter`].
    Counter,
}

impl Builtin {
    /// The built-in for a configured kind, or `None` for a kind this binary cannot run
    /// (the configuration crate may learn kinds, such as `wasm`, before the binary does).
    #[must_use]
    pub fn from_kind(kind: AgentKind) -> Option<Builtin> {
        match kind {
            AgentKind::Echo => Some(Builtin::Echo),
            AgentKind::Sink => Some(Builtin::Sink),
            AgentKind::Counter => Some(Builtin::Counter),
            _ => None,
        }
    }

    /// A fresh agent of this kind.
    #[must_use]
    pub fn build(self) -> Box<dyn Agent> {
        match self {
            Builtin::Echo => Box::new(Echo),
            Builtin::Sink => Box::new(Sink::default()),
            Builtin::Counter => Box::new(Counter::default()),
        }
    }
}

/// Replies `inform` with the same payload to every message that is not a reply.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Agent for Echo {
    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        if !message.is_reply() {
            // A refused reply is counted by the shard (back-pressure); see the module docs.
            let _ = ctx.reply(Performative::Inform, message.payload);
        }
        Ok(())
    }
}

/// Counts messages; never replies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sink {
    /// Messages received.
    pub messages: u64,
}

impl Agent for Sink {
    fn on_message(&mut self, _: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        self.messages = self.messages.wrapping_add(1);
        Ok(())
    }
}

/// Counts messages and sums their 8-byte little-endian payloads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter {
    /// Messages counted (every message except a `query`).
    pub count: u64,
    /// Wrapping sum of the payloads that were exactly 8 bytes, read as little-endian `u64`.
    pub sum: u64,
}

impl Counter {
    fn record(&mut self, payload: &[u8]) {
        self.count = self.count.wrapping_add(1);
        if let Ok(bytes) = <[u8; 8]>::try_from(payload) {
            self.sum = self.sum.wrapping_add(u64::from_le_bytes(bytes));
        }
    }
}

impl Agent for Counter {
    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        if message.is_reply() {
            self.record(message.payload);
            return Ok(());
        }
        // Refused replies are counted by the shard (back-pressure); see the module docs.
        match message.performative() {
            Performative::Query => {
                let _ = ctx.reply(Performative::Inform, &self.count.to_le_bytes());
            }
            Performative::Request => {
                self.record(message.payload);
                let _ = ctx.reply(Performative::Inform, &[]);
            }
            _ => self.record(message.payload),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Sans-IO: agents run inside a real [`Shard`] driven by hand, no threads, no clock.

    use std::cell::RefCell;
    use std::rc::Rc;

    use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
    use dataplane_shard::{Shard, ShardConfig};

    use super::*;

    const CLIENT: AgentId = AgentId::from_name("client");
    const AGENT: AgentId = AgentId::from_name("agent");
    const POLL_BUDGET_MESSAGES: usize = 64;

    /// What the client received: (performative, payload, is reply).
    type Inbox = Rc<RefCell<Vec<(Performative, Vec<u8>, bool)>>>;

    /// Records every message it receives.
    struct Client(Inbox);

    impl Agent for Client {
        fn on_message(
            &mut self,
            message: &Message<'_>,
            _: &mut Context<'_>,
        ) -> Result<(), AgentError> {
            let entry = (
                message.performative(),
                message.payload.to_vec(),
                message.is_reply(),
            );
            self.0.borrow_mut().push(entry);
            Ok(())
        }
    }

    /// A one-shard node with `agent` deployed as AGENT and a recording client.
    fn shard_with(agent: Box<dyn Agent>) -> (Shard, Inbox) {
        let mut shard = Shard::new(ShardConfig::new(0, 1));
        let inbox = Inbox::default();
        shard.deploy(AGENT, agent, 0).unwrap();
        shard
            .deploy(CLIENT, Box::new(Client(inbox.clone())), 0)
            .unwrap();
        (shard, inbox)
    }

    fn send(shard: &mut Shard, performative: Performative, flags: Flags, payload: &[u8]) {
        let header = Header {
            to: AGENT,
            from: CLIENT,
            conversation_id: 1,
            correlation_id: 2,
            performative,
            priority: Priority::Normal,
            flags,
        };
        shard.handle_send(&header, payload).unwrap();
        while shard.poll_deliver(0, POLL_BUDGET_MESSAGES) > 0 {}
    }

    #[test]
    fn echo_replies_inform_with_the_payload() {
        let (mut shard, inbox) = shard_with(Builtin::Echo.build());
        send(&mut shard, Performative::Request, Flags::NONE, b"ping");
        send(&mut shard, Performative::Inform, Flags::NONE, b"");
        let expected = vec![
            (Performative::Inform, b"ping".to_vec(), true),
            (Performative::Inform, Vec::new(), true),
        ];
        assert_eq!(*inbox.borrow(), expected);
    }

    #[test]
    fn echo_ignores_replies() {
        let (mut shard, inbox) = shard_with(Builtin::Echo.build());
        send(
            &mut shard,
            Performative::Inform,
            Flags::REPLY,
            b"late answer",
        );
        assert!(inbox.borrow().is_empty());
        assert_eq!(shard.stats().messages_handled, 1);
    }

    #[test]
    fn sink_never_replies() {
        let (mut shard, inbox) = shard_with(Builtin::Sink.build());
        for performative in [
            Performative::Request,
            Performative::Query,
            Performative::Inform,
        ] {
            send(&mut shard, performative, Flags::NONE, b"x");
        }
        assert!(inbox.borrow().is_empty());
        assert_eq!(shard.stats().messages_handled, 3);
    }

    #[test]
    fn counter_answers_query_with_the_count() {
        let (mut shard, inbox) = shard_with(Builtin::Counter.build());
        send(
            &mut shard,
            Performative::Inform,
            Flags::NONE,
            &5u64.to_le_bytes(),
        );
        send(
            &mut shard,
            Performative::Inform,
            Flags::NONE,
            b"not eight bytes",
        );
        send(&mut shard, Performative::Query, Flags::NONE, b"");
        let replies = inbox.borrow();
        assert_eq!(replies.len(), 1, "informs are not answered");
        assert_eq!(
            replies[0],
            (Performative::Inform, 2u64.to_le_bytes().to_vec(), true)
        );
    }

    #[test]
    fn counter_acknowledges_requests() {
        let (mut shard, inbox) = shard_with(Builtin::Counter.build());
        send(
            &mut shard,
            Performative::Request,
            Flags::NONE,
            &7u64.to_le_bytes(),
        );
        send(&mut shard, Performative::Query, Flags::NONE, b"");
        let expected = vec![
            (Performative::Inform, Vec::new(), true),
            (Performative::Inform, 1u64.to_le_bytes().to_vec(), true),
        ];
        assert_eq!(*inbox.borrow(), expected);
    }

    #[test]
    fn counter_sums_eight_byte_payloads() {
        let mut counter = Counter::default();
        counter.record(&3u64.to_le_bytes());
        counter.record(&u64::MAX.to_le_bytes());
        counter.record(b"short");
        assert_eq!((counter.count, counter.sum), (3, 2), "the sum wraps");
    }

    #[test]
    fn every_native_kind_is_built_in() {
        for kind in AgentKind::NATIVE {
            assert!(Builtin::from_kind(kind).is_some(), "{kind}");
        }
        assert!(Builtin::from_kind(AgentKind::Wasm).is_none());
    }
}
