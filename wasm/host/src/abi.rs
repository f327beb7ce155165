//! The agent ABI, version 1, as code: names, signatures, the header layout and the error
//! codes of `docs/agent-abi.md`. That page is the contract; this module must match it.

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use wasmtime::ValType;

/// The import module every host function lives in.
pub const IMPORT_MODULE: &str = "dataplane_v1";

/// Bytes of the message header in guest memory.
pub const HEADER_BYTES: usize = 48;

/// The exported memory.
pub const EXPORT_MEMORY: &str = "memory";
/// `(capacity: i32) -> i32`: the inbox address.
pub const EXPORT_INBOX: &str = "dp_inbox";
/// `(config_len: i32) -> i32`: start.
pub const EXPORT_INIT: &str = "dp_init";
/// `(payload_len: i32) -> i32`: one message.
pub const EXPORT_ON_MESSAGE: &str = "dp_on_message";
/// `() -> ()`: optional, before an orderly stop.
pub const EXPORT_ON_STOP: &str = "dp_on_stop";
/// `(count: i32) -> i32`: optional, several messages in one call (docs/agent-abi.md).
pub const EXPORT_ON_BATCH: &str = "dp_on_batch";

/// Bytes before the first message of a batch in the inbox: the progress index the guest
/// writes (`u32`), then the message count (`u32`).
pub const BATCH_PREFIX_BYTES: usize = 8;

/// Bytes a batched message takes in the inbox: its header, its payload, padding to 8.
pub const fn batch_record_bytes(payload_len: usize) -> usize {
    HEADER_BYTES + payload_len.div_ceil(8) * 8
}

/// A function signature: parameters, results.
pub type Signature = (&'static [ValType], &'static [ValType]);

/// Required function exports and their signatures.
pub const REQUIRED_EXPORTS: [(&str, Signature); 3] = [
    (EXPORT_INBOX, (&[ValType::I32], &[ValType::I32])),
    (EXPORT_INIT, (&[ValType::I32], &[ValType::I32])),
    (EXPORT_ON_MESSAGE, (&[ValType::I32], &[ValType::I32])),
];

/// Optional function exports and their signatures.
pub const OPTIONAL_EXPORTS: [(&str, Signature); 2] = [
    (EXPORT_ON_STOP, (&[], &[])),
    (EXPORT_ON_BATCH, (&[ValType::I32], &[ValType::I32])),
];

/// Every host function and its signature.
pub const HOST_FUNCTIONS: [(&str, Signature); 6] = [
    (
        "send",
        (&[ValType::I32, ValType::I32, ValType::I32], &[ValType::I32]),
    ),
    (
        "reply",
        (&[ValType::I32, ValType::I32, ValType::I32], &[ValType::I32]),
    ),
    ("log", (&[ValType::I32, ValType::I32, ValType::I32], &[])),
    ("now_ns", (&[], &[ValType::I64])),
    ("self_id", (&[], &[ValType::I64])),
    ("random", (&[], &[ValType::I64])),
];

/// Error codes returned by `send` and `reply`.
pub mod code {
    /// Accepted.
    pub const OK: i32 = 0;
    /// An address, length or header field is out of range.
    pub const INVALID: i32 = -1;
    /// A bounded queue or the frame pool is full; nothing was sent.
    pub const BACKPRESSURE: i32 = -2;
    /// The payload exceeds the agent's `message_bytes_max`.
    pub const TOO_LARGE: i32 = -3;
    /// The addressee would live on this shard and is not deployed.
    pub const UNKNOWN_AGENT: i32 = -4;
    /// `reply` outside a message handler.
    pub const NO_MESSAGE: i32 = -5;
    /// The call already sent `sends_per_message_max` messages.
    pub const SEND_LIMIT: i32 = -6;
}

/// Writes `header` and `payload_len` in the ABI layout.
#[inline]
pub fn write_header(out: &mut [u8; HEADER_BYTES], header: &Header, payload_len: u32) {
    out[0..8].copy_from_slice(&header.to.0.to_le_bytes());
    out[8..16].copy_from_slice(&header.from.0.to_le_bytes());
    out[16..24].copy_from_slice(&header.conversation_id.to_le_bytes());
    out[24..32].copy_from_slice(&header.correlation_id.to_le_bytes());
    out[32] = header.performative as u8;
    out[33] = header.priority as u8;
    out[34..36].copy_from_slice(&header.flags.0.to_le_bytes());
    out[36..40].copy_from_slice(&payload_len.to_le_bytes());
    out[40..48].fill(0);
}

/// Reads a header a guest passed to `send`; `from` is left for the host to set. `None`
/// when a field is out of range.
pub fn read_header(bytes: &[u8; HEADER_BYTES]) -> Option<Header> {
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    Some(Header {
        to: AgentId(u64_at(0)),
        from: AgentId(0),
        conversation_id: u64_at(16),
        correlation_id: u64_at(24),
        performative: performative(bytes[32].into())?,
        priority: Priority::ALL.get(usize::from(bytes[33])).copied()?,
        flags: Flags(u16::from_le_bytes([bytes[34], bytes[35]])),
    })
}

/// The performative with ABI number `value`.
pub fn performative(value: i32) -> Option<Performative> {
    usize::try_from(value)
        .ok()
        .and_then(|index| Performative::ALL.get(index).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_the_abi_layout() {
        let header = Header {
            to: AgentId(0x0102_0304_0506_0708),
            from: AgentId(9),
            conversation_id: 10,
            correlation_id: 11,
            performative: Performative::Propose,
            priority: Priority::Low,
            flags: Flags::ERROR,
        };
        let mut bytes = [0xAA; HEADER_BYTES];
        write_header(&mut bytes, &header, 77);
        assert_eq!(bytes[0], 0x08, "little-endian");
        assert_eq!(&bytes[36..40], &77u32.to_le_bytes());
        assert_eq!(&bytes[40..48], &[0; 8]);
        let back = read_header(&bytes).expect("valid");
        assert_eq!(back.to, header.to);
        assert_eq!(back.from, AgentId(0), "from is the host's to set");
        assert_eq!(back.performative, Performative::Propose);
        assert_eq!(back.priority, Priority::Low);
        assert_eq!(back.flags, Flags::ERROR);
    }

    #[test]
    fn out_of_range_fields_are_refused() {
        let mut bytes = [0; HEADER_BYTES];
        bytes[32] = 8;
        assert!(read_header(&bytes).is_none());
        bytes[32] = 0;
        bytes[33] = 4;
        assert!(read_header(&bytes).is_none());
    }
}
