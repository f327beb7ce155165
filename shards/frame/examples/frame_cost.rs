//! Cost per frame of `encode_into`, `validate` and `access_trusted` for a
//! 32-byte payload, plus the raw rkyv checked access for comparison.
//!
//! Run with `cargo run --release -p dataplane-frame --example frame_cost`.
//! Prints the median of several rounds (the machine is shared and noisy).

use std::hint::black_box;
use std::time::Instant;

use dataplane_frame::{
    access_trusted, encode_into, encoded_len, validate, AgentId, Flags, Header, Performative,
    Priority, FRAME_ALIGN,
};
use rkyv::util::AlignedVec;

const PAYLOAD_BYTES: usize = 32;
const FRAMES_PER_ROUND: u32 = 5_000_000;
const ROUNDS: usize = 9;

fn header() -> Header {
    Header {
        to: AgentId::from_name("echo"),
        from: AgentId::from_name("client"),
        conversation_id: 1,
        correlation_id: 2,
        performative: Performative::Request,
        priority: Priority::Normal,
        flags: Flags::NONE,
    }
}

/// The same bytes as `encode_into` written by hand: the floor a custom writer
/// could reach, to judge rkyv's serializer against (checked equal in `main`).
fn encode_by_hand(header: &Header, payload: &[u8], out: &mut [u8]) -> usize {
    let root = encoded_len(payload.len()) - 48;
    out[..payload.len()].copy_from_slice(payload);
    out[payload.len()..root].fill(0);
    let root_bytes = &mut out[root..root + 48];
    root_bytes[0..8].copy_from_slice(&header.to.0.to_le_bytes());
    root_bytes[8..16].copy_from_slice(&header.from.0.to_le_bytes());
    root_bytes[16..24].copy_from_slice(&header.conversation_id.to_le_bytes());
    root_bytes[24..32].copy_from_slice(&header.correlation_id.to_le_bytes());
    let payload_offset = -((root + 32) as i32);
    root_bytes[32..36].copy_from_slice(&payload_offset.to_le_bytes());
    root_bytes[36..40].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let kinds = [1, header.performative as u8, header.priority as u8, 0];
    root_bytes[40..44].copy_from_slice(&kinds);
    root_bytes[44..46].copy_from_slice(&header.flags.0.to_le_bytes());
    root_bytes[46..48].fill(0);
    root + 48
}

/// Median nanoseconds per call of `step` over `ROUNDS` rounds.
fn median_ns_per_frame(mut step: impl FnMut(u32)) -> f64 {
    let mut ns_per_frame: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for index in 0..FRAMES_PER_ROUND {
                step(index);
            }
            start.elapsed().as_nanos() as f64 / f64::from(FRAMES_PER_ROUND)
        })
        .collect();
    ns_per_frame.sort_by(f64::total_cmp);
    ns_per_frame[ROUNDS / 2]
}

fn main() -> Result<(), dataplane_frame::FrameError> {
    let payload = [0x5a_u8; PAYLOAD_BYTES];
    let mut buffer = AlignedVec::<FRAME_ALIGN>::new();
    buffer.resize(encoded_len(PAYLOAD_BYTES), 0);
    let mut header = header();

    let encode_ns = median_ns_per_frame(|index| {
        header.correlation_id = u64::from(index);
        let written = encode_into(black_box(&header), black_box(&payload), &mut buffer);
        black_box(written).ok();
    });
    let mut by_hand = buffer.clone();
    let by_hand_ns = median_ns_per_frame(|index| {
        header.correlation_id = u64::from(index);
        let written = encode_by_hand(black_box(&header), black_box(&payload), &mut by_hand);
        black_box(written);
    });
    let frame_bytes = encode_into(&header, &payload, &mut buffer)?;
    assert_eq!(
        by_hand[..],
        buffer[..],
        "hand-written layout drifted from rkyv's"
    );
    let bytes = &buffer[..frame_bytes];

    let validate_ns = median_ns_per_frame(|_| {
        let frame = validate(black_box(bytes)).map(|frame| (frame.to(), frame.payload().len()));
        black_box(frame).ok();
    });
    let trusted_ns = median_ns_per_frame(|_| {
        // SAFETY: `bytes` is the unmodified output of `encode_into` above.
        let frame = unsafe { access_trusted(black_box(bytes)) };
        black_box((frame.to(), frame.payload().len()));
    });
    let header_ns = median_ns_per_frame(|_| {
        // SAFETY: as above.
        let frame = unsafe { access_trusted(black_box(bytes)) };
        black_box(frame.header());
    });

    println!("frame of {frame_bytes} bytes ({PAYLOAD_BYTES}-byte payload), median of {ROUNDS} rounds of {FRAMES_PER_ROUND}:");
    println!("  encode_into                      {encode_ns:6.2} ns/frame");
    println!("  hand-written writer (floor)      {by_hand_ns:6.2} ns/frame");
    println!("  validate + to + payload          {validate_ns:6.2} ns/frame");
    println!("  access_trusted + to + payload    {trusted_ns:6.2} ns/frame");
    println!("  access_trusted + header()        {header_ns:6.2} ns/frame");
    Ok(())
}
