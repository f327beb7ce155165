//! Why a frame could not be encoded or was rejected.

/// Why [`encode_into`](crate::encode_into) or [`validate`](crate::validate)
/// failed. Each variant carries the numbers that explain the failure.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame would be, or claims to be, larger than the absolute cap.
    #[error("frame of {frame_bytes} bytes exceeds the cap of {max_bytes} bytes")]
    TooLarge {
        /// Encoded size of the frame.
        frame_bytes: usize,
        /// [`FRAME_BYTES_MAX`](crate::FRAME_BYTES_MAX).
        max_bytes: usize,
    },
    /// The output buffer cannot hold the encoded frame.
    #[error("frame needs {needed_bytes} bytes but the buffer has {available_bytes}")]
    BufferTooSmall {
        /// [`encoded_len`](crate::encoded_len) of the payload.
        needed_bytes: usize,
        /// Length of the output buffer.
        available_bytes: usize,
    },
    /// The buffer does not start at a multiple of the required alignment.
    #[error(
        "buffer is aligned to {address_align_bytes} bytes, frames need {required_align_bytes}"
    )]
    Misaligned {
        /// Largest power of two dividing the buffer's address (capped at 4096).
        address_align_bytes: usize,
        /// [`FRAME_ALIGN`](crate::FRAME_ALIGN).
        required_align_bytes: usize,
    },
    /// Too few bytes to hold even an empty frame.
    #[error("frame of {frame_bytes} bytes is shorter than the minimum of {min_bytes}")]
    Truncated {
        /// Length of the received bytes.
        frame_bytes: usize,
        /// [`FRAME_FIXED_BYTES`](crate::FRAME_FIXED_BYTES).
        min_bytes: usize,
    },
    /// rkyv's structural check failed (bad relative pointer, out-of-range
    /// length, overlapping subtree). The text is rkyv's.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The version byte is not [`FRAME_VERSION`](crate::FRAME_VERSION).
    #[error("frame version {version} is not supported")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The performative byte names no [`Performative`](crate::Performative).
    #[error("performative byte {value} is out of range")]
    BadPerformative {
        /// The byte found.
        value: u8,
    },
    /// The priority byte names no [`Priority`](crate::Priority).
    #[error("priority byte {value} is out of range")]
    BadPriority {
        /// The byte found.
        value: u8,
    },
    /// Must-understand flag bits this version does not know are set.
    #[error("unknown must-understand flag bits {bits:#06x}")]
    UnknownFlags {
        /// The unknown bits (the others masked off).
        bits: u16,
    },
    /// A reserved header field or a padding byte is not zero.
    #[error("reserved byte at offset {offset_bytes} is {value:#04x}, must be zero")]
    ReservedNotZero {
        /// Offset of the first non-zero reserved byte from the frame start.
        offset_bytes: usize,
        /// Its value.
        value: u8,
    },
    /// The frame is structurally valid but not laid out the one way
    /// [`encode_into`](crate::encode_into) lays it out: its length is not
    /// `encoded_len(payload_bytes)` or the payload does not start at offset 0.
    #[error(
        "non-canonical frame: {frame_bytes} bytes with payload of {payload_bytes} bytes \
         at offset {payload_offset_bytes}; expected {expected_frame_bytes} bytes, offset 0"
    )]
    NonCanonical {
        /// Length of the received bytes.
        frame_bytes: usize,
        /// Payload length the frame claims.
        payload_bytes: usize,
        /// Where the payload starts, from the frame start.
        payload_offset_bytes: usize,
        /// `encoded_len(payload_bytes)`.
        expected_frame_bytes: usize,
    },
    /// rkyv's serializer failed after every precondition was checked; this
    /// indicates a bug in this crate, not bad input.
    #[error("rkyv serializer failed writing {needed_bytes} bytes")]
    SerializeFailed {
        /// The bytes the frame needed.
        needed_bytes: usize,
    },
}
