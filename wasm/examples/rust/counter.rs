//! counter: keeps a count and a sum of the numbers it is sent.
//!
//! Messages (replies are ignored):
//! - `inform` with an 8-byte payload (`i64` LE): adds it to the sum, counts it, no reply.
//! - `request` with an 8-byte payload: adds and counts likewise, then replies `inform`
//!   with the totals. A `request` with any other payload length adds nothing and still
//!   replies with the totals.
//! - `query`: replies `inform` with the totals, adds nothing.
//! - anything else: ignored.
//!
//! Totals (16 bytes): `count u64 LE, sum i64 LE` (the sum wraps on overflow).

#![no_std]

use dataplane_agent::{export_agent, panic_trap, reply, Agent, Message, Performative, SendError};

struct Counter {
    count: u64,
    sum: i64,
}

impl Counter {
    /// Adds an 8-byte payload; other lengths are not numbers and add nothing.
    fn add(&mut self, payload: &[u8]) {
        if let Ok(bytes) = <[u8; 8]>::try_from(payload) {
            self.sum = self.sum.wrapping_add(i64::from_le_bytes(bytes));
            self.count = self.count.wrapping_add(1);
        }
    }

    /// Replies with `count u64 LE, sum i64 LE`.
    fn reply_totals(&self) -> Result<(), i32> {
        let mut totals = [0u8; 16];
        totals[..8].copy_from_slice(&self.count.to_le_bytes());
        totals[8..].copy_from_slice(&self.sum.to_le_bytes());
        reply(Performative::Inform, &totals).map_err(SendError::code)
    }
}

impl Agent for Counter {
    fn init(_config: &[u8]) -> Result<Self, i32> {
        Ok(Counter { count: 0, sum: 0 })
    }

    fn on_message(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        if msg.is_reply() {
            return Ok(());
        }
        match msg.performative() {
            Performative::Inform => {
                self.add(msg.payload());
                Ok(())
            }
            Performative::Request => {
                self.add(msg.payload());
                self.reply_totals()
            }
            Performative::Query => self.reply_totals(),
            _ => Ok(()),
        }
    }
}

export_agent!(Counter);
panic_trap!();
