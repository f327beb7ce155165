//! Test helpers shared by the property tests (`tests/properties.rs`) and the crate's
//! unit tests (`src/wire/tests.rs`, through `#[path]`). The including module brings
//! `AgentId`, `Flags`, `Header`, `Performative` and `Priority` into scope.

use proptest::prelude::*;

use super::{AgentId, Flags, Header, Performative, Priority};

/// Any header this crate encodes: every performative and priority, and flags with only
/// known or ignorable bits.
pub fn header_strategy() -> impl Strategy<Value = Header> {
    let ids = (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>());
    let kinds = (0..8u8, 0..4u8, any::<u16>());
    (ids, kinds).prop_map(|((to, from, conversation_id, correlation_id), kinds)| {
        let (performative, priority, flags) = kinds;
        Header {
            to: AgentId(to),
            from: AgentId(from),
            conversation_id,
            correlation_id,
            performative: Performative::ALL[usize::from(performative)],
            priority: Priority::ALL[usize::from(priority)],
            flags: Flags(flags & (Flags::KNOWN.0 | Flags::IGNORABLE.0)),
        }
    })
}
