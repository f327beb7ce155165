//! Arbitrary bytes into a connection's frame reader, in arbitrary chunks, with a buffer
//! allocator that sometimes refuses (pool exhausted). The reader must never panic, never
//! hand out a frame longer than its limit, and keep every byte accounted for.
#![no_main]

use dataplane_edge::reader::{Event, FrameReader};
use libfuzzer_sys::fuzz_target;

const FRAME_BYTES_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control % 61) + 1;
    let refuse_every = usize::from(control / 61) + 2;
    let mut reader = FrameReader::<Vec<u8>>::new(FRAME_BYTES_MAX);
    let mut pos = 0;
    let mut allocs = 0usize;
    let mut stalls = 0;
    loop {
        let before = pos;
        let mut read = |out: &mut [u8]| {
            let n = out.len().min(stream.len() - pos).min(chunk);
            out[..n].copy_from_slice(&stream[pos..pos + n]);
            pos += n;
            n
        };
        let mut alloc = |n: usize| {
            allocs += 1;
            (allocs % refuse_every != 0).then(|| vec![0u8; n])
        };
        match reader.next(&mut read, &mut alloc) {
            Ok(Event::Frame(frame)) => assert!(frame.len() <= FRAME_BYTES_MAX),
            Ok(Event::Skipped { frame_bytes, .. }) => assert!(frame_bytes > FRAME_BYTES_MAX),
            Ok(Event::Blocked { .. }) => {
                stalls += 1;
                assert!(stalls < 1_000_000);
            }
            Ok(Event::Drained) if pos == stream.len() && before == pos => break,
            Ok(Event::Drained) => {}
            Err(_) => break,
        }
    }
});
