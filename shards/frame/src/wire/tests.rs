use rkyv::util::AlignedVec;

use super::*;
use crate::PAYLOAD_BYTES_MAX;

fn header() -> Header {
    Header {
        to: AgentId(0x0102_0304_0506_0708),
        from: AgentId::from_name("client"),
        conversation_id: 0x1111,
        correlation_id: 0x2222,
        performative: Performative::Propose,
        priority: Priority::High,
        flags: Flags::REPLY | Flags(0x0100),
    }
}

fn encode(header: &Header, payload: &[u8]) -> AlignedVec<FRAME_ALIGN> {
    let mut buffer = AlignedVec::<FRAME_ALIGN>::new();
    buffer.resize(encoded_len(payload.len()), 0xcc);
    let frame_bytes = encode_into(header, payload, &mut buffer).expect("encode");
    assert_eq!(frame_bytes, buffer.len());
    buffer
}

/// Copies `bytes` into a fresh aligned buffer.
fn aligned(bytes: &[u8]) -> AlignedVec<FRAME_ALIGN> {
    let mut buffer = AlignedVec::<FRAME_ALIGN>::with_capacity(bytes.len());
    buffer.extend_from_slice(bytes);
    buffer
}

#[test]
fn encoded_len_pads_payload_to_eight_and_adds_root() {
    assert_eq!(encoded_len(0), 48);
    assert_eq!(encoded_len(1), 56);
    assert_eq!(encoded_len(8), 56);
    assert_eq!(encoded_len(32), 80);
    assert_eq!(encoded_len(usize::MAX), usize::MAX);
}

#[test]
fn borrowed_encoding_matches_rkyv_serializing_the_owned_frame() {
    for payload_len in [0, 1, 7, 8, 9, 32, 1000] {
        let payload: Vec<u8> = (0..payload_len).map(|index| index as u8).collect();
        let header = header();
        let owned = WireFrame {
            to: header.to.0,
            from: header.from.0,
            conversation_id: header.conversation_id,
            correlation_id: header.correlation_id,
            payload: payload.clone(),
            version: FRAME_VERSION,
            performative: header.performative as u8,
            priority: header.priority as u8,
            reserved_u8: 0,
            flags: header.flags.0,
            reserved_u16: 0,
        };
        let expected = rkyv::to_bytes::<rkyv::rancor::Error>(&owned).expect("rkyv");
        assert_eq!(
            &encode(&header, &payload)[..],
            &expected[..],
            "{payload_len}"
        );
    }
}

#[test]
fn layout_matches_the_documented_table() {
    let bytes = encode(&header(), b"abc");
    let root = 8;
    assert_eq!(bytes.len(), root + FRAME_FIXED_BYTES);
    assert_eq!(&bytes[..3], b"abc");
    assert_eq!(&bytes[3..root], &[0; 5], "padding is zeroed");
    let u64_at =
        |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"));
    assert_eq!(u64_at(root), 0x0102_0304_0506_0708);
    assert_eq!(u64_at(root + 8), AgentId::from_name("client").0);
    assert_eq!(u64_at(root + 16), 0x1111);
    assert_eq!(u64_at(root + 24), 0x2222);
    let payload_offset =
        i32::from_le_bytes(bytes[root + 32..root + 36].try_into().expect("4 bytes"));
    assert_eq!(payload_offset, -(root as i32 + 32));
    assert_eq!(&bytes[root + 36..root + 40], &3u32.to_le_bytes());
    assert_eq!(&bytes[root + 40..root + 44], &[FRAME_VERSION, 3, 1, 0]);
    assert_eq!(&bytes[root + 44..root + 48], &[0x01, 0x01, 0, 0]);
}

#[test]
fn round_trip_through_validate_and_access_trusted() {
    let bytes = encode(&header(), b"payload");
    let frame = validate(&bytes).expect("valid");
    assert_eq!(frame.header(), header());
    assert_eq!(frame.payload(), b"payload");
    assert_eq!(frame.version(), FRAME_VERSION);
    // SAFETY: `bytes` is an unmodified `encode_into` output.
    let trusted = unsafe { access_trusted(&bytes) };
    assert_eq!(trusted.header(), header());
    assert_eq!(trusted.payload(), b"payload");
    assert_eq!(header_of(&bytes), Ok(header()));
}

#[test]
fn largest_payload_fills_the_largest_frame() {
    let payload = vec![0x5a; PAYLOAD_BYTES_MAX];
    let bytes = encode(&header(), &payload);
    assert_eq!(bytes.len(), FRAME_BYTES_MAX);
    assert_eq!(validate(&bytes).expect("valid").payload(), &payload[..]);
}

#[test]
fn encode_rejects_oversized_misaligned_short_and_unknown_flags() {
    let mut buffer = AlignedVec::<FRAME_ALIGN>::new();
    buffer.resize(128, 0);
    let too_large = vec![0; PAYLOAD_BYTES_MAX + 1];
    assert_eq!(
        encode_into(&header(), &too_large, &mut buffer),
        Err(FrameError::TooLarge {
            frame_bytes: FRAME_BYTES_MAX + 8,
            max_bytes: FRAME_BYTES_MAX
        })
    );
    assert_eq!(
        encode_into(&header(), b"", &mut buffer[8..]),
        Err(FrameError::Misaligned {
            address_align_bytes: 8,
            required_align_bytes: 16
        })
    );
    assert_eq!(
        encode_into(&header(), &[0; 81], &mut buffer),
        Err(FrameError::BufferTooSmall {
            needed_bytes: 136,
            available_bytes: 128
        })
    );
    let flags = Header {
        flags: Flags(0x0004),
        ..header()
    };
    assert_eq!(
        encode_into(&flags, b"", &mut buffer),
        Err(FrameError::UnknownFlags { bits: 0x0004 })
    );
}

#[test]
fn encode_leaves_bytes_past_the_frame_untouched() {
    let mut buffer = AlignedVec::<FRAME_ALIGN>::new();
    buffer.resize(100, 0xee);
    let frame_bytes = encode_into(&header(), b"x", &mut buffer).expect("encode");
    assert!(buffer[frame_bytes..].iter().all(|&byte| byte == 0xee));
}

#[test]
fn validate_rejects_short_misaligned_and_oversized_bytes() {
    let short = aligned(&[0; 47]);
    assert_eq!(
        validate(&short).expect_err("too short"),
        FrameError::Truncated {
            frame_bytes: 47,
            min_bytes: 48
        }
    );
    let bytes = aligned(&[&[0u8; 8][..], &encode(&header(), b"")[..]].concat());
    assert!(matches!(
        validate(&bytes[8..]),
        Err(FrameError::Misaligned { .. })
    ));
    let huge = AlignedVec::<FRAME_ALIGN>::with_capacity(0);
    assert!(validate(&huge).is_err());
}

/// Encodes a frame, lets `corrupt` change it, and returns validate's verdict.
fn validate_corrupted(corrupt: impl FnOnce(&mut [u8], usize)) -> Result<(), FrameError> {
    let mut bytes = encode(&header(), b"abc");
    let root = bytes.len() - FRAME_FIXED_BYTES;
    corrupt(&mut bytes, root);
    validate(&bytes).map(|_| ())
}

#[test]
fn validate_names_the_bad_header_field() {
    let version = validate_corrupted(|bytes, root| bytes[root + 40] = 2);
    assert_eq!(version, Err(FrameError::UnsupportedVersion { version: 2 }));
    let performative = validate_corrupted(|bytes, root| bytes[root + 41] = 8);
    assert_eq!(performative, Err(FrameError::BadPerformative { value: 8 }));
    let priority = validate_corrupted(|bytes, root| bytes[root + 42] = 4);
    assert_eq!(priority, Err(FrameError::BadPriority { value: 4 }));
    let flags = validate_corrupted(|bytes, root| bytes[root + 44] = 0x81);
    assert_eq!(flags, Err(FrameError::UnknownFlags { bits: 0x80 }));
    let ignorable = validate_corrupted(|bytes, root| bytes[root + 45] = 0xff);
    assert_eq!(ignorable, Ok(()));
}

#[test]
fn validate_rejects_nonzero_reserved_and_padding_bytes() {
    for offset in [3, 7, 8 + 43, 8 + 46, 8 + 47] {
        let verdict = validate_corrupted(|bytes, _| bytes[offset] = 0x40);
        let expected = FrameError::ReservedNotZero {
            offset_bytes: offset,
            value: 0x40,
        };
        assert_eq!(verdict, Err(expected), "offset {offset}");
    }
}

#[test]
fn validate_rejects_out_of_bounds_payload_pointers() {
    let length = validate_corrupted(|bytes, root| bytes[root + 36] = 200);
    assert!(
        matches!(length, Err(FrameError::Malformed(_))),
        "{length:?}"
    );
    let pointer = validate_corrupted(|bytes, root| bytes[root + 32] = 0x10);
    assert!(
        matches!(pointer, Err(FrameError::Malformed(_))),
        "{pointer:?}"
    );
}

#[test]
fn validate_rejects_non_canonical_layouts() {
    // A valid archive with 16 unclaimed bytes in front: rkyv accepts it.
    let frame = encode(&header(), b"abc");
    let mut prefixed = aligned(&[0; 16]);
    prefixed.extend_from_slice(&frame);
    let verdict = validate(&prefixed).map(|_| ());
    let expected = FrameError::NonCanonical {
        frame_bytes: 72,
        payload_bytes: 3,
        payload_offset_bytes: 16,
        expected_frame_bytes: 56,
    };
    assert_eq!(verdict, Err(expected));
    // A 9-byte payload shortened to 8: in bounds, but 8 needs a 56-byte frame.
    let mut shorter = encode(&header(), b"123456789");
    shorter[16 + 36] = 8;
    let expected = FrameError::NonCanonical {
        frame_bytes: 64,
        payload_bytes: 8,
        payload_offset_bytes: 0,
        expected_frame_bytes: 56,
    };
    assert_eq!(validate(&shorter).map(|_| ()), Err(expected));
    // Shortened within the same padded size: the cut byte is now padding.
    let cut = validate_corrupted(|bytes, root| bytes[root + 36] = 2);
    assert_eq!(
        cut,
        Err(FrameError::ReservedNotZero {
            offset_bytes: 2,
            value: b'c'
        })
    );
}

#[test]
fn debug_shows_header_and_payload_size() {
    let bytes = encode(&header(), b"abc");
    let text = format!("{:?}", validate(&bytes).expect("valid"));
    assert!(text.contains("payload_bytes: 3"), "{text}");
}

#[test]
fn set_from_rewrites_only_the_sender() {
    let mut bytes = encode(&header(), b"payload");
    let before = bytes.clone();
    let stamped = crate::validate_and_set_from(&mut bytes, AgentId(0xfeed)).expect("valid");
    assert_eq!(stamped.from, AgentId(0xfeed));
    let reread = validate(&bytes).expect("still valid").header();
    assert_eq!(reread, stamped);
    assert_eq!(reread.to, header().to);
    assert_eq!(validate(&bytes).expect("valid").payload(), b"payload");
    let changed: Vec<usize> = (0..bytes.len())
        .filter(|&i| bytes[i] != before[i])
        .collect();
    let root = bytes.len() - FRAME_FIXED_BYTES;
    assert!(
        changed.iter().all(|&i| (root + 8..root + 16).contains(&i)),
        "{changed:?}"
    );
}

#[test]
fn set_from_refuses_what_validate_refuses() {
    let mut bytes = encode(&header(), b"abc");
    let root = bytes.len() - FRAME_FIXED_BYTES;
    bytes[root + 40] = 9; // version
    let before = bytes.clone();
    assert!(crate::validate_and_set_from(&mut bytes, AgentId(1)).is_err());
    assert_eq!(&bytes[..], &before[..], "a refused frame is left untouched");
}

#[path = "../../tests/common/mod.rs"]
mod common;

proptest::proptest! {
    /// The byte writer is rkyv's encoding, byte for byte, for every header and payload;
    /// appended to a stream at any alignment, it is the same bytes again.
    #[test]
    fn the_byte_writer_writes_exactly_what_rkyv_writes(
        header in common::header_strategy(),
        payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        stream_bytes in 0usize..24,
    ) {
        let frame_bytes = encoded_len(payload.len());
        // Both start from non-zero bytes, so a byte either writer skips shows.
        let mut expected = AlignedVec::<FRAME_ALIGN>::new();
        expected.resize(frame_bytes, 0xcc);
        proptest::prop_assert_eq!(encode_with_rkyv(&header, &payload, &mut expected), frame_bytes);
        let mut ours = AlignedVec::<FRAME_ALIGN>::new();
        ours.resize(frame_bytes, 0x33);
        proptest::prop_assert_eq!(encode_into(&header, &payload, &mut ours), Ok(frame_bytes));
        proptest::prop_assert_eq!(&ours[..], &expected[..]);

        let mut stream = vec![0xab; stream_bytes];
        proptest::prop_assert_eq!(encode_to_vec(&header, &payload, &mut stream), Ok(frame_bytes));
        proptest::prop_assert_eq!(&stream[..stream_bytes], &vec![0xab; stream_bytes][..]);
        proptest::prop_assert_eq!(&stream[stream_bytes..], &expected[..]);
    }
}

#[test]
fn encode_to_vec_refuses_what_encode_into_refuses_and_appends_nothing() {
    let mut stream = vec![1, 2, 3];
    let unknown = Header {
        flags: Flags(0x0084),
        ..header()
    };
    let mut aligned = AlignedVec::<FRAME_ALIGN>::new();
    aligned.resize(encoded_len(0), 0);
    let refused = encode_to_vec(&unknown, b"", &mut stream);
    assert!(matches!(refused, Err(FrameError::UnknownFlags { .. })));
    assert_eq!(refused, encode_into(&unknown, b"", &mut aligned));
    let too_large = vec![0u8; PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(
        encode_to_vec(&header(), &too_large, &mut stream),
        Err(FrameError::TooLarge { .. })
    ));
    assert_eq!(stream, [1, 2, 3]);
}
