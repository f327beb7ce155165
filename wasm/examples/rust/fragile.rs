//! fragile: a test agent that fails on demand, for the host's tests of failures inside a
//! batch (the Rust SDK takes messages in batches through `dp_on_batch`). The same rules
//! as the WAT fixture `FRAGILE` of the host's tests.
//!
//! Messages (replies are ignored), by the payload's first byte:
//! - `!`: traps (a panic, which the SDK's handler turns into `unreachable`);
//! - `?`: loops forever (the time limit interrupts it);
//! - `#`: returns error 5;
//! - anything else (or empty): counts the message and replies `inform` with the count
//!   (`u64` LE) followed by the payload.
//!
//! Every message that is not a reply is counted, including the failing ones.

#![no_std]

use dataplane_agent::{export_agent, panic_trap, reply, Agent, Message, Performative};

struct Fragile {
    count: u64,
}

/// The reply being built: the count, then the whole payload (up to the inbox's 65,456
/// bytes). A static, not a field: the agent is built on the 64 KiB stack.
static mut OUT: [u8; 8 + 65_536] = [0; 8 + 65_536];

impl Agent for Fragile {
    fn init(_config: &[u8]) -> Result<Self, i32> {
        Ok(Fragile { count: 0 })
    }

    fn on_message(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        if msg.is_reply() {
            return Ok(());
        }
        self.count += 1;
        let payload = msg.payload();
        match payload.first() {
            Some(b'!') => panic!("asked to trap"),
            Some(b'?') => loop {
                core::hint::spin_loop();
            },
            Some(b'#') => return Err(5),
            _ => {}
        }
        // SAFETY: one thread, and calls never overlap: nothing else refers to `OUT`.
        let out = unsafe { &mut *core::ptr::addr_of_mut!(OUT) };
        let len = payload.len().min(out.len() - 8);
        out[..8].copy_from_slice(&self.count.to_le_bytes());
        out[8..8 + len].copy_from_slice(&payload[..len]);
        // Over the payload limit (a payload within 8 bytes of it): `reply` refuses with
        // -3, which becomes this message's error.
        reply(Performative::Inform, &out[..8 + len]).map_err(|error| error.code())
    }
}

export_agent!(Fragile);
panic_trap!();
