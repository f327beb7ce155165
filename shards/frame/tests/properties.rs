//! Property tests: encode/validate round trips, and hostile bytes that must
//! be rejected or accepted without a panic.
//!
//! The model is the canonical-encoding property: a frame `validate` accepts
//! is byte-for-byte what `encode_into` writes for its header and payload. So
//! every accepted input is checked by re-encoding it.

use dataplane_frame::{
    access_trusted, encode_into, encoded_len, validate, AgentId, ArchivedFrame, Flags, FrameError,
    Header, Performative, Priority, FRAME_ALIGN,
};
use proptest::prelude::*;
use rkyv::util::AlignedVec;

mod common;

use common::header_strategy;

type Buffer = AlignedVec<FRAME_ALIGN>;

fn encode(header: &Header, payload: &[u8]) -> Buffer {
    let mut buffer = Buffer::new();
    buffer.resize(encoded_len(payload.len()), 0);
    let frame_bytes = encode_into(header, payload, &mut buffer).expect("valid header encodes");
    assert_eq!(frame_bytes, buffer.len());
    buffer
}

fn aligned(bytes: &[u8]) -> Buffer {
    let mut buffer = Buffer::with_capacity(bytes.len());
    buffer.extend_from_slice(bytes);
    buffer
}

/// Touches every accessor, then checks the frame re-encodes to `bytes`.
fn check_accepted(bytes: &[u8], frame: &ArchivedFrame) {
    let header = frame.header();
    assert_eq!(frame.version(), dataplane_frame::FRAME_VERSION);
    assert_eq!(header.to, frame.to());
    assert_eq!(header.from, frame.from());
    assert_eq!(header.conversation_id, frame.conversation_id());
    assert_eq!(header.correlation_id, frame.correlation_id());
    assert_eq!(header.performative, frame.performative());
    assert_eq!(header.priority, frame.priority());
    assert_eq!(header.flags, frame.flags());
    assert_eq!(&encode(&header, frame.payload())[..], bytes);
}

/// Validates `bytes` from an aligned copy; never panics except on a broken
/// property.
fn validate_any(bytes: &[u8]) -> Result<(), FrameError> {
    let buffer = aligned(bytes);
    let frame = validate(&buffer)?;
    check_accepted(&buffer, frame);
    Ok(())
}

proptest! {
    #[test]
    fn round_trips(header in header_strategy(), payload in prop::collection::vec(any::<u8>(), 0..600)) {
        let bytes = encode(&header, &payload);
        let frame = validate(&bytes).expect("own frames validate");
        prop_assert_eq!(frame.header(), header);
        prop_assert_eq!(frame.payload(), &payload[..]);
        // SAFETY: `bytes` is an unmodified `encode_into` output.
        let trusted = unsafe { access_trusted(&bytes) };
        prop_assert_eq!(trusted.header(), header);
        prop_assert_eq!(trusted.payload(), &payload[..]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = validate_any(&bytes);
    }

    #[test]
    fn random_roots_never_panic(
        prefix in prop::collection::vec(any::<u8>(), 0..64),
        root in prop::collection::vec(any::<u8>(), 48),
    ) {
        // A random root after a random prefix, with a supported version byte,
        // so the rkyv check and the semantic checks both get exercised.
        let mut bytes = [prefix, root].concat();
        let version_offset = bytes.len() - 8;
        bytes[version_offset] = dataplane_frame::FRAME_VERSION;
        let _ = validate_any(&bytes);
    }

    #[test]
    fn truncated_frames_are_rejected(
        header in header_strategy(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = encode(&header, &payload);
        let kept = cut.index(bytes.len());
        prop_assert!(validate_any(&bytes[..kept]).is_err());
        prop_assert!(validate_any(&bytes[bytes.len() - kept..]).is_err());
    }

    #[test]
    fn bit_flipped_frames_are_rejected_or_reencode_identically(
        header in header_strategy(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        flips in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
    ) {
        let mut bytes = encode(&header, &payload);
        let bits = bytes.len() * 8;
        for flip in flips {
            let bit = flip.index(bits);
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        let _ = validate_any(&bytes);
    }
}
