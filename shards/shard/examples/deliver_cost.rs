//! The software cost of one cross-shard round trip, without the cache transfers.
//!
//! Two shards of a 2-shard node run on one thread and hand their ring items over in
//! vectors, so every line stays in this core's cache: what is left is the shards' own
//! work per message (queueing, scheduling, header decode, handler call, reply encode,
//! buffer return), both directions. A pinger on shard 0 sends 32-byte requests to an
//! echo on shard 1 (the `cross-shard` ping-pong, minus the clock reads). Each frame comes
//! alone, so it takes the driver's direct path (`Shard::handle_lone_ring_item`).
//!
//! ```text
//! cargo run -p dataplane-shard --release --example deliver_cost [round_trips]
//! ```
//! Run it under `perf record` to see where the software part of a round trip goes.

use std::time::Instant;

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_shard::{
    id_on_shard, Agent, AgentError, Context, Message, RingItem, Shard, ShardConfig,
};

const ROUND_TRIPS_DEFAULT: u64 = 20_000_000;
const RUNS: usize = 5;

/// Replies to every request with the same payload.
struct Echo;

impl Agent for Echo {
    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        if !message.is_reply() {
            let _ = ctx.reply(Performative::Inform, message.payload);
        }
        Ok(())
    }
}

/// Sends the next request when a reply comes in.
struct Pinger {
    peer: AgentId,
    payload: Vec<u8>,
}

impl Agent for Pinger {
    fn on_message(&mut self, _: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let header = Header {
            to: self.peer,
            from: ctx.self_id(),
            conversation_id: 0,
            correlation_id: 0,
            performative: Performative::Request,
            priority: Priority::Normal,
            flags: Flags::NONE,
        };
        ctx.send_with(header, &self.payload)
            .map_err(|error| AgentError::Failed(error.to_string().into()))
    }
}

/// Moves what `from` has for `to` into `to`, as a ring and the driver would: a frame
/// that comes alone goes through `handle_lone_ring_item`.
fn hand_over(from: &mut Shard, to: &mut Shard, items: &mut Vec<RingItem>) {
    from.poll_transmit(to.id(), |item| {
        items.push(item);
        Ok(())
    });
    let lone = items.iter().filter(|item| !item.is_returned()).count() == 1;
    for item in items.drain(..) {
        let handled = if lone {
            to.handle_lone_ring_item(item, 0)
        } else {
            to.handle_ring_item(item)
        };
        if handled.is_err() {
            panic!("mailboxes never fill in a ping-pong");
        }
    }
}

fn main() {
    let round_trips: u64 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(ROUND_TRIPS_DEFAULT);
    let mut a = Shard::new(ShardConfig::new(0, 2));
    let mut b = Shard::new(ShardConfig::new(1, 2));
    let pinger = id_on_shard(1, 0, 2);
    let echo = id_on_shard(1 << 32, 1, 2);
    b.deploy(echo, Box::new(Echo), 0).expect("fresh shard");
    a.deploy(
        pinger,
        Box::new(Pinger {
            peer: echo,
            payload: vec![7; 32],
        }),
        0,
    )
    .expect("fresh shard");
    let kick = Header {
        to: echo,
        from: pinger,
        conversation_id: 0,
        correlation_id: 0,
        performative: Performative::Request,
        priority: Priority::Normal,
        flags: Flags::NONE,
    };
    a.handle_send(&kick, &[7; 32]).expect("first request");
    let mut items = Vec::with_capacity(64);
    for run in 0..RUNS {
        let start = Instant::now();
        for _ in 0..round_trips {
            hand_over(&mut a, &mut b, &mut items);
            b.poll_deliver(0, 64);
            hand_over(&mut b, &mut a, &mut items);
            a.poll_deliver(0, 64);
        }
        let ns = start.elapsed().as_nanos() as f64 / round_trips as f64;
        println!("run {run}: {ns:.1} ns of shard work per round trip (both directions)");
    }
}
