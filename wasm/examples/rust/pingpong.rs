//! pingpong: answers pings, and with a peer keeps a rally going.
//!
//! Configuration (UTF-8, surrounding whitespace ignored): empty, or `peer=<agent name>`.
//! Anything else refuses the deployment with code 1.
//!
//! Messages:
//! - a `request` (a ping): replies `inform` with the same payload (the pong);
//! - an `inform` that is not a reply (a kick), or any reply (a pong coming back): with a
//!   peer, sends the peer a `request` with the same payload (the next ping), in the same
//!   conversation and at the same priority, correlation id counting the pings sent.
//!   Back-pressure (-2) drops the ping: the rally stops, and the next kick restarts it.
//!   Other send errors are returned as the message's error code.
//! - a `failure` reply (the peer crashed, is unknown, or returned an error) ends the
//!   rally with a warning instead of bouncing: a dead peer must not be pinged in a loop.
//! - anything else: ignored.
//!
//! So an agent configured `peer=echo`, once kicked, bounces its payload off `echo`
//! forever; two pingpongs work too (the one with the peer drives).

#![no_std]

use dataplane_agent::{
    export_agent, log, panic_trap, reply, send, Agent, AgentId, Level, Message, OutHeader,
    Performative, SendError,
};

/// Returned by `init` for a configuration it cannot read.
const BAD_CONFIG: i32 = 1;

struct PingPong {
    peer: Option<AgentId>,
    pings: u64,
}

/// `bytes` without leading and trailing ASCII whitespace.
fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !first.is_ascii_whitespace() {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !last.is_ascii_whitespace() {
            break;
        }
        bytes = rest;
    }
    bytes
}

impl PingPong {
    /// Sends the next ping to the peer, if there is one.
    fn ping(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        let peer = match self.peer {
            Some(peer) => peer,
            None => return Ok(()),
        };
        self.pings = self.pings.wrapping_add(1);
        let header = OutHeader::new(peer, Performative::Request)
            .priority(msg.priority())
            .conversation(msg.conversation_id())
            .correlation(self.pings);
        match send(&header, msg.payload()) {
            Ok(()) | Err(SendError::Backpressure) => Ok(()),
            Err(error) => Err(error.code()),
        }
    }
}

impl Agent for PingPong {
    fn init(config: &[u8]) -> Result<Self, i32> {
        let config = trim(config);
        let peer = if config.is_empty() {
            None
        } else if let Some(name) = config.strip_prefix(b"peer=").filter(|n| !n.is_empty()) {
            Some(AgentId::from_name_bytes(name))
        } else {
            log(
                Level::Error,
                "pingpong: config must be empty or peer=<agent name>",
            );
            return Err(BAD_CONFIG);
        };
        Ok(PingPong { peer, pings: 0 })
    }

    fn on_message(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        if msg.is_reply() {
            if msg.performative() == Performative::Failure || msg.is_error() {
                log(Level::Warn, "pingpong: failure reply, rally stopped");
                return Ok(());
            }
            return self.ping(msg);
        }
        match msg.performative() {
            Performative::Request => {
                reply(Performative::Inform, msg.payload()).map_err(SendError::code)
            }
            Performative::Inform => self.ping(msg),
            _ => Ok(()),
        }
    }
}

export_agent!(PingPong);
panic_trap!();
