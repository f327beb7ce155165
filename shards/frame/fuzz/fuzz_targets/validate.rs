//! `validate` on arbitrary bytes: it must never panic, and any frame it
//! accepts must re-encode to exactly the same bytes (the layout is canonical).
#![no_main]

use dataplane_frame::{encode_into, validate, FrameError, FRAME_ALIGN};
use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;

fuzz_target!(|data: &[u8]| {
    // libFuzzer's buffer has no alignment promise: check the unaligned view
    // too, then an aligned copy, which is what a receiver would hold.
    if let Ok(frame) = validate(data) {
        assert_eq!(data.as_ptr() as usize % FRAME_ALIGN, 0);
        let _ = frame.header();
    }
    let mut bytes = AlignedVec::<FRAME_ALIGN>::with_capacity(data.len());
    bytes.extend_from_slice(data);
    match validate(&bytes) {
        Ok(frame) => {
            let header = frame.header();
            assert_eq!(header.to, frame.to());
            assert_eq!(header.from, frame.from());
            assert_eq!(header.conversation_id, frame.conversation_id());
            assert_eq!(header.correlation_id, frame.correlation_id());
            assert_eq!(header.performative, frame.performative());
            assert_eq!(header.priority, frame.priority());
            assert_eq!(header.flags, frame.flags());
            assert_eq!(frame.version(), dataplane_frame::FRAME_VERSION);
            let mut again = AlignedVec::<FRAME_ALIGN>::new();
            again.resize(bytes.len(), 0);
            let written = encode_into(&header, frame.payload(), &mut again);
            assert_eq!(written, Ok(bytes.len()));
            assert_eq!(&again[..], &bytes[..]);
        }
        Err(FrameError::Malformed(message)) => assert!(!message.is_empty()),
        Err(_) => {}
    }
});
