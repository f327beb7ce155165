//! Regression: a shard's frame pool must reuse buffers rather than allocate a new one
//! per message. The end-to-end test once exhausted a 65,536-frame pool with at most a few
//! hundred frames in flight.

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_shard::{Agent, AgentError, Context, Message, Shard, ShardConfig};

struct SelfKicker {
    left: u32,
}

impl Agent for SelfKicker {
    fn on_message(&mut self, _: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        if self.left > 0 {
            self.left -= 1;
            let me = ctx.self_id();
            ctx.send(me, Performative::Inform, &[1, 2, 3])
                .expect("one frame in flight");
        }
        Ok(())
    }
}

#[test]
fn a_message_loop_reuses_one_buffer() {
    let mut shard = Shard::new(ShardConfig::new(0, 1));
    let me = AgentId::from_name("kicker");
    shard
        .deploy(me, Box::new(SelfKicker { left: 100_000 }), 0)
        .unwrap();
    let header = Header {
        to: me,
        from: me,
        conversation_id: 0,
        correlation_id: 0,
        performative: Performative::Inform,
        priority: Priority::Normal,
        flags: Flags::NONE,
    };
    shard.handle_send(&header, &[]).unwrap();
    while shard.poll_deliver(0, 1000) > 0 {}
    assert_eq!(shard.stats().messages_handled, 100_001);
    assert!(
        shard.pool().frames_allocated() <= 2,
        "allocated {}",
        shard.pool().frames_allocated()
    );
}
