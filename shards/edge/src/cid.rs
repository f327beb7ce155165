//! Connection ids that name their owning shard.
//!
//! Every shard binds the node's UDP address with `SO_REUSEPORT`; the kernel spreads
//! packets over the shards' sockets by a hash of the 4-tuple. A connection lives on the
//! shard that accepted it. When a client's address changes (NAT rebinding, migration) its
//! packets may hash to another shard: that shard reads the owner from the destination
//! connection id and forwards the packet through the ring mesh instead of dropping it.
//!
//! Layout of the ids the node issues ([`CID_BYTES`] bytes):
//!
//! ```text
//! byte 0      format, always CID_FORMAT_V1
//! bytes 1..3  owning shard, u16 big-endian
//! bytes 3..16 random
//! ```

/// Bytes of a connection id issued by the node.
pub const CID_BYTES: usize = 16;
/// The first byte of every id of this layout.
pub const CID_FORMAT_V1: u8 = 0xd1;

/// A new connection id owned by `shard`, with 13 random bytes.
pub fn new_cid(shard: u16) -> [u8; CID_BYTES] {
    let mut cid = [0u8; CID_BYTES];
    // The random part only has to be unpredictable and unique among live connections;
    // if the OS source fails we still have the clock and a counter.
    if getrandom::getrandom(&mut cid[3..]).is_err() {
        fallback_random(&mut cid[3..]);
    }
    cid[0] = CID_FORMAT_V1;
    cid[1..3].copy_from_slice(&shard.to_be_bytes());
    cid
}

/// The shard that owns a destination connection id, if the node issued it (right length
/// and format byte). A client's own initial id usually is not ours: such packets stay on
/// the shard that received them.
pub fn owner_of(dcid: &[u8]) -> Option<u16> {
    if dcid.len() != CID_BYTES || dcid[0] != CID_FORMAT_V1 {
        return None;
    }
    Some(u16::from_be_bytes([dcid[1], dcid[2]]))
}

fn fallback_random(out: &mut [u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ nanos;
    for chunk in out.chunks_mut(8) {
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_shard() {
        for shard in [0u16, 1, 63, 1023] {
            let cid = new_cid(shard);
            assert_eq!(owner_of(&cid), Some(shard));
        }
        assert_ne!(new_cid(0), new_cid(0), "random part");
    }

    #[test]
    fn foreign_ids_have_no_owner() {
        assert_eq!(owner_of(&[0xd1; 8]), None);
        let mut cid = new_cid(3);
        cid[0] = 0;
        assert_eq!(owner_of(&cid), None);
        assert_eq!(owner_of(&[]), None);
    }
}
