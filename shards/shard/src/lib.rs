//! The sans-IO core of a shard: agents, mailboxes, routing, the frame pool and the
//! restart policy for crashed agents.
//!
//! Nothing here touches threads, rings, sockets or clocks; the runtime crate drives a
//! [`Shard`] and moves its [`RingItem`]s. That is what lets the tests run whole meshes of
//! shards in one thread, deterministically, from a seed.
//!
//! ```
//! use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
//! use dataplane_shard::{Agent, AgentError, Context, Message, Shard, ShardConfig};
//!
//! struct Echo;
//! impl Agent for Echo {
//!     fn on_message(&mut self, m: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
//!         if !m.is_reply() {
//!             ctx.reply(Performative::Inform, m.payload).ok();
//!         }
//!         Ok(())
//!     }
//! }
//! struct Sink(u64);
//! impl Agent for Sink {
//!     fn on_message(&mut self, _: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
//!         self.0 += 1;
//!         Ok(())
//!     }
//! }
//!
//! let mut shard = Shard::new(ShardConfig::new(0, 1));
//! shard.deploy(AgentId::from_name("echo"), Box::new(Echo), 0).unwrap();
//! shard.deploy(AgentId::from_name("me"), Box::new(Sink(0)), 0).unwrap();
//! let header = Header {
//!     to: AgentId::from_name("echo"),
//!     from: AgentId::from_name("me"),
//!     conversation_id: 1,
//!     correlation_id: 7,
//!     performative: Performative::Request,
//!     priority: Priority::Normal,
//!     flags: Flags::NONE,
//! };
//! shard.handle_send(&header, b"hi").unwrap();
//! assert_eq!(shard.poll_deliver(0, 64), 2); // the request, then the reply
//! ```

#![warn(missing_docs)]

pub mod agent;
mod mailbox;
pub mod pool;
mod restart;
pub mod routing;
mod shard;
mod stats;

pub use agent::{Agent, AgentError, BatchOutcome, Message, Sink, SinkFull};
pub use mailbox::CLASSES;
pub use pool::{FrameHandle, FramePool, PoolError, Released};
pub use restart::{AgentState, AgentStatus, RestartPolicy};
pub use routing::{id_on_shard, owner_shard, SHARDS_MAX};
pub use shard::{
    Context, DeployError, Incoming, IncomingFrame, ReplaceError, RingItem, RingItemKind, SendError,
    Shard, ShardConfig,
};
pub use stats::ShardStats;
