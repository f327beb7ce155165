//! The agent interface: one message at a time, with a context to send, reply and read time.
//!
//! The same trait is implemented by native handlers (tests, benchmarks, built-ins) and, in
//! the WASM host, by an adapter that copies the message into the guest's linear memory and
//! calls its export. An agent is created on its shard's thread and never leaves it, so it
//! need not be `Send`.

use std::borrow::Cow;

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};

use crate::shard::Context;

/// A message as an agent sees it: the decoded header and the payload, borrowed from the
/// frame buffer for the duration of the call.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The frame header.
    pub header: Header,
    /// The payload bytes.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// The sender.
    pub fn from(&self) -> AgentId {
        self.header.from
    }

    /// The addressee.
    pub fn to(&self) -> AgentId {
        self.header.to
    }

    /// The performative.
    pub fn performative(&self) -> Performative {
        self.header.performative
    }

    /// The priority class.
    pub fn priority(&self) -> Priority {
        self.header.priority
    }

    /// Whether this message answers an earlier one.
    pub fn is_reply(&self) -> bool {
        self.header.flags.contains(Flags::REPLY)
    }
}

/// Why an agent's handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The handler reported a failure.
    #[error("agent failed: {0}")]
    Failed(Cow<'static, str>),
    /// The handler panicked (native agents) or trapped (WASM agents).
    #[error("agent crashed: {0}")]
    Crashed(Cow<'static, str>),
}

/// An agent: owned by one shard, handling one message at a time.
pub trait Agent: 'static {
    /// Called once when the agent is deployed, before its first message.
    fn on_start(&mut self, _ctx: &mut Context<'_>) -> Result<(), AgentError> {
        Ok(())
    }

    /// Handles one message. Sends and replies go through `ctx`; an error is counted and,
    /// for a request, answered with a `failure` reply that names it. A
    /// [`AgentError::Crashed`] (or a panic) also puts the agent through the shard's
    /// restart policy; an [`AgentError::Failed`] fails this message only.
    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError>;

    /// Called once when the agent is undeployed, replaced or the shard stops, if it is
    /// running (not after a crash it has not been restarted from).
    fn on_stop(&mut self, _ctx: &mut Context<'_>) {}

    /// Rebuilds the agent after a crash, when its back-off has expired (see
    /// [`RestartPolicy`](crate::RestartPolicy)): it should start from scratch, as a fresh
    /// deployment would, including whatever its `on_start` does (the WASM adapter creates a
    /// fresh instance and runs its init again). The messages queued meanwhile are delivered
    /// after it returns `Ok`. An error or a panic counts as another crash: the agent waits
    /// out a longer back-off, or is stopped.
    ///
    /// The default refuses, so an agent that cannot rebuild itself runs through its
    /// back-offs and is then stopped.
    fn restart(&mut self, _ctx: &mut Context<'_>) -> Result<(), AgentError> {
        Err(AgentError::Failed("restart not supported".into()))
    }

    /// Up to how many queued messages of one priority class the shard may hand to
    /// [`Agent::on_batch`] at once. The default, 1, means the agent takes no batches and
    /// every message goes through [`Agent::on_message`].
    ///
    /// An agent that batches must not let a panic escape `on_batch` once it has handled
    /// a message: the shard cannot tell how far it got, blames the first message and
    /// keeps the rest. The default `on_batch` catches a handler's panic itself.
    fn batch_messages_max(&self) -> usize {
        1
    }

    /// Handles `messages` (at least 2, at most [`Agent::batch_messages_max`], in their
    /// mailbox order, all of one class) as if by `on_message` on each in turn, and says
    /// how far it got (see [`BatchOutcome`]). Before acting on message `i` the agent
    /// calls [`Context::set_current`] with it, so that `reply` answers that message.
    ///
    /// The default handles each message with `on_message` and stops at the first error
    /// (a panic becomes [`AgentError::Crashed`] with its message).
    fn on_batch(&mut self, messages: &[Message<'_>], ctx: &mut Context<'_>) -> BatchOutcome {
        for (handled, message) in messages.iter().enumerate() {
            ctx.set_current(message);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.on_message(message, ctx)
            }))
            .unwrap_or_else(|payload| Err(AgentError::Crashed(panic_reason(&*payload).into())));
            if let Err(error) = result {
                return BatchOutcome {
                    handled,
                    error: Some(error),
                };
            }
        }
        BatchOutcome {
            handled: messages.len(),
            error: None,
        }
    }
}

/// The text a panic was raised with (`"panic"` if it was not a string): the reason of the
/// [`AgentError::Crashed`] a caught panic becomes.
pub(crate) fn panic_reason(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// How far [`Agent::on_batch`] got through its messages.
///
/// `messages[..handled]` were handled. With `error`, `messages[handled]` failed with it:
/// the shard answers it as it answers a failed `on_message` (and a
/// [`AgentError::Crashed`] puts the agent through its restart policy). Every message
/// after that, or after `handled` when there is no error, goes back to the front of the
/// mailbox, in order, and is delivered later: nothing is lost or delivered twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Messages handled, from the first.
    pub handled: usize,
    /// The failure of message `handled`, if it failed.
    pub error: Option<AgentError>,
}

/// A host endpoint that takes each message the moment it is sent, with no mailbox and no
/// handler turn: the network edge's client connections, whose whole "handling" is to
/// append the frame to the connection's output. Deployed with [`Shard::deploy_sink`]
/// under an agent id, it is addressed like any agent (from this shard, other shards and
/// the edge) and removed with [`Shard::undeploy`].
///
/// `deliver` runs inside the sender's call (an agent's `send` or `reply`, a ring frame
/// being taken, a frame arriving from the edge): it must be cheap, must not panic, and
/// cannot send. Per-sender order is the order of the sends; priorities do not reorder
/// anything, since nothing waits.
///
/// [`Shard::deploy_sink`]: crate::Shard::deploy_sink
/// [`Shard::undeploy`]: crate::Shard::undeploy
pub trait Sink {
    /// Takes one message (its header and payload, borrowed for the call), or refuses it
    /// because the endpoint is over its bound; the sender then sees back-pressure
    /// ([`SendError::SinkFull`]) and may retry. Refuse only while a condition lasts that
    /// clears soon by itself: a refused frame from another shard stays at the head of its
    /// ring, and every frame behind it from that shard waits too.
    ///
    /// The header comes by reference, not in a [`Message`]: the sender has just built
    /// it, and copying it whole at once would stall on the store buffer (loads wider
    /// than the stores that wrote it cannot be forwarded).
    ///
    /// [`SendError::SinkFull`]: crate::SendError::SinkFull
    fn deliver(&mut self, header: &Header, payload: &[u8]) -> Result<(), SinkFull>;
}

/// A [`Sink`] refused a message: it holds more than its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("holds more than its {capacity_bytes}-byte bound")]
pub struct SinkFull {
    /// The sink's bound.
    pub capacity_bytes: usize,
}
