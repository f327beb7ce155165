//! Which shard owns an agent: a pure function every shard computes on its own.
//!
//! `owner = ⌊ mix64(id) × shards / 2⁶⁴ ⌋`: the agent id is scrambled with the splitmix64
//! finaliser (ids are FNV hashes of names, whose low bits are poorly mixed) and mapped onto
//! `0..shards` with Lemire's multiply-shift range reduction, which costs one multiply and
//! no division. The mapping depends only on the id and the shard count, so any shard (or a
//! client that knows the shard count) finds the owner without asking anyone. Changing the
//! shard count moves agents: that happens only at node restart; across nodes the control
//! plane uses its own placement.

use dataplane_frame::AgentId;

/// The largest shard count a node supports (shard indexes fit in 16 bits on the wire).
pub const SHARDS_MAX: usize = 1024;

/// The splitmix64 finaliser: a bijection on `u64` with good avalanche.
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The shard (`0..shards`) that owns `agent` on a node of `shards` shards.
///
/// `shards` must be at least 1; a count of 0 is treated as 1 so that the function is total.
#[inline]
pub const fn owner_shard(agent: AgentId, shards: usize) -> usize {
    let shards = if shards == 0 { 1 } else { shards } as u128;
    ((mix64(agent.0) as u128 * shards) >> 64) as usize
}

/// The first agent id at or after `start` (in steps of one) that `owner_shard` maps to
/// `shard`: used by tests and benchmarks that need an agent on a given shard.
pub fn id_on_shard(start: u64, shard: usize, shards: usize) -> AgentId {
    let mut raw = start;
    loop {
        if owner_shard(AgentId(raw), shards) == shard {
            return AgentId(raw);
        }
        raw = raw.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_shard_owns_everything() {
        for raw in 0..1000 {
            assert_eq!(owner_shard(AgentId(raw), 1), 0);
            assert_eq!(owner_shard(AgentId(raw), 0), 0);
        }
    }

    #[test]
    fn owners_are_in_range_and_balanced() {
        for shards in [2usize, 3, 7, 64, 1024] {
            let mut counts = vec![0u32; shards];
            let samples = 200 * shards as u64;
            for raw in 0..samples {
                let owner = owner_shard(AgentId::from_name(&format!("agent-{raw}")), shards);
                counts[owner] += 1;
            }
            let expected = 200.0;
            for (shard, &count) in counts.iter().enumerate() {
                let ratio = f64::from(count) / expected;
                assert!(
                    (0.6..1.4).contains(&ratio),
                    "shard {shard}/{shards}: {count}"
                );
            }
        }
    }

    #[test]
    fn id_on_shard_finds_an_owned_id() {
        for shard in 0..8 {
            let id = id_on_shard(1, shard, 8);
            assert_eq!(owner_shard(id, 8), shard);
        }
    }

    #[test]
    fn routing_is_stable() {
        // The mapping is part of the wire contract: a change here moves agents.
        assert_eq!(owner_shard(AgentId(0), 2), 0);
        let echo = AgentId::from_name("echo");
        assert_eq!(owner_shard(echo, 1), 0);
        assert_eq!(owner_shard(echo, 2), owner_shard(echo, 2));
    }
}
