//! echo: replies `inform` with the same payload to every message that is not itself a
//! reply (replies are dropped, so two echoes cannot bounce a message forever).
//!
//! State: none. Payload: any bytes, returned unchanged.

#![no_std]

use dataplane_agent::{export_agent, panic_trap, reply, Agent, Message, Performative, SendError};

/// The agent has no state.
struct Echo;

impl Agent for Echo {
    fn init(_config: &[u8]) -> Result<Self, i32> {
        Ok(Echo)
    }

    fn on_message(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        if msg.is_reply() {
            return Ok(());
        }
        // The payload is borrowed from the inbox; the host copies it out during `reply`.
        reply(Performative::Inform, msg.payload()).map_err(SendError::code)
    }
}

export_agent!(Echo);
panic_trap!();
