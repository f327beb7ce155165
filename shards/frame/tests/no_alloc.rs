//! `encode_into`, `validate` (on a valid frame) and `access_trusted` are on
//! the hot path and must not touch the heap. A counting global allocator
//! proves it; this binary holds a single test so no other thread allocates
//! while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use dataplane_frame::{
    access_trusted, encode_into, encoded_len, validate, AgentId, Flags, Header, Performative,
    Priority, FRAME_ALIGN,
};
use rkyv::util::AlignedVec;

struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to `System`, only counting.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn hot_path_does_not_allocate() {
    let header = Header {
        to: AgentId::from_name("echo"),
        from: AgentId::from_name("client"),
        conversation_id: 1,
        correlation_id: 2,
        performative: Performative::Inform,
        priority: Priority::Critical,
        flags: Flags::REPLY,
    };
    let payload = [7u8; 32];
    let mut buffer = AlignedVec::<FRAME_ALIGN>::new();
    buffer.resize(encoded_len(payload.len()), 0);

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let frame_bytes = encode_into(&header, &payload, &mut buffer).expect("encode");
    let checked = validate(&buffer[..frame_bytes]).map(|frame| frame.header());
    // SAFETY: `buffer[..frame_bytes]` is the unmodified output of `encode_into`.
    let trusted = unsafe { access_trusted(&buffer[..frame_bytes]) }.header();
    let after = ALLOCATIONS.load(Ordering::Relaxed);

    assert_eq!(after - before, 0, "heap allocations on the hot path");
    assert_eq!(checked, Ok(header));
    assert_eq!(trusted, header);
}
