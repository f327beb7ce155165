//! Per-shard pool of frame buffers, recycled on the shard that owns them.
//!
//! A frame lives in one heap block: a 16-byte [`BlockHeader`] (owning shard, size class,
//! length) followed by the frame bytes, 16-byte aligned as `dataplane_frame` requires. A
//! [`FrameHandle`] is the one pointer to a block; it moves between shards through the
//! rings by value (8 bytes), so a frame is encoded once, by its sender, and read in place
//! by its receiver. Blocks come in power-of-two size classes from 256 bytes up to the
//! largest frame the shard accepts, and each class keeps a LIFO free list so that a
//! recycled buffer is likely still in cache.
//!
//! Ownership rule (Seastar's `foreign_ptr`): a block is allocated and freed only by the
//! shard whose pool created it. A shard that is done with a foreign frame hands the handle
//! back to its owner (`Released::Foreign`), which puts it on its free list. In steady state
//! the data path allocates nothing: a pool grows to its high-water mark and stays there,
//! bounded by `frames_max`.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use dataplane_frame::{ArchivedFrame, FRAME_ALIGN};

/// Bytes of the smallest size class.
pub const CLASS_MIN_BYTES: usize = 256;
/// Buffers one returned buffer carries home besides itself: as many pointers, plus a
/// count, as the smallest class holds.
pub const RETURN_BATCH_EXTRA_MAX: usize = CLASS_MIN_BYTES / 8 - 1;
/// Bytes of the block header in front of the frame bytes.
const HEADER_BYTES: usize = 16;

const _: () = assert!(HEADER_BYTES.is_multiple_of(FRAME_ALIGN));
const _: () = assert!(std::mem::size_of::<BlockHeader>() == HEADER_BYTES);
const _: () = assert!(CLASS_MIN_BYTES.is_power_of_two());

/// The header in front of every frame block.
#[repr(C, align(16))]
struct BlockHeader {
    owner_shard: u32,
    class: u32,
    len_bytes: u32,
    _reserved: u32,
}

/// The one handle to a pooled frame buffer.
///
/// A handle is not `Clone` and has no `Drop`: it must go back to a pool through
/// [`FramePool::release`] (on any shard); a handle that is forgotten leaks its block.
/// Invariant: the bytes `..len()` of a handle's buffer always hold a frame that was either
/// written by `dataplane_frame::encode_into` or checked by `dataplane_frame::validate`.
#[derive(Debug)]
#[must_use = "a frame handle must be released to a pool"]
pub struct FrameHandle(NonNull<BlockHeader>);

// SAFETY: a handle is the unique owner of its block (no aliasing handles exist), and the
// block is plain bytes; moving it to another thread moves that ownership with it.
unsafe impl Send for FrameHandle {}

impl FrameHandle {
    /// The shard whose pool owns (and will free) this buffer.
    pub fn owner_shard(&self) -> usize {
        self.header().owner_shard as usize
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        let len = self.header().len_bytes as usize;
        // SAFETY: the block holds `capacity_bytes()` initialised-or-written bytes after the
        // header; `len <= capacity` is kept by `set_len`, and `&self` borrows the handle,
        // the unique owner of the block.
        unsafe { std::slice::from_raw_parts(self.data_ptr(), len) }
    }

    /// The frame, read without re-validation.
    pub fn frame(&self) -> &ArchivedFrame {
        // SAFETY: the type invariant: the bytes are a frame that `encode_into` wrote or
        // `validate` accepted, and they have not changed since (the handle is unique).
        unsafe { dataplane_frame::access_trusted(self.bytes()) }
    }

    /// Bytes this buffer can hold.
    pub fn capacity_bytes(&self) -> usize {
        class_bytes(self.header().class as usize)
    }

    /// The whole buffer for writing a new frame; call [`FrameHandle::set_len`] after.
    pub(crate) fn buffer_mut(&mut self) -> &mut [u8] {
        let capacity = self.capacity_bytes();
        // SAFETY: the block was allocated with `capacity` bytes after the header and is
        // zero-initialised at allocation; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(), capacity) }
    }

    /// The bytes `..len()` for writing (an incoming frame being received in place).
    /// Until they are validated again the handle's invariant does not hold: only
    /// `Shard::alloc_incoming`/`handle_incoming` use this, and they validate before the
    /// handle is read as a frame.
    pub(crate) fn buffer_len_mut(&mut self) -> &mut [u8] {
        let len = self.header().len_bytes as usize;
        &mut self.buffer_mut()[..len]
    }

    /// Records how many bytes of the buffer the frame occupies.
    pub(crate) fn set_len(&mut self, len_bytes: usize) {
        assert!(
            len_bytes <= self.capacity_bytes(),
            "frame longer than its buffer"
        );
        // SAFETY: `&mut self` is the unique reference to the block; the header is ours.
        unsafe { (*self.0.as_ptr()).len_bytes = len_bytes as u32 };
    }

    /// The raw pointer, for carrying a handle through a ring as a `usize`.
    pub fn into_raw(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// Rebuilds a handle from [`FrameHandle::into_raw`].
    ///
    /// # Safety
    /// `raw` must come from `into_raw` and be turned back into a handle exactly once.
    pub unsafe fn from_raw(raw: usize) -> FrameHandle {
        // SAFETY: the caller passes a pointer from `into_raw`, which is never null.
        FrameHandle(unsafe { NonNull::new_unchecked(raw as *mut BlockHeader) })
    }

    /// Makes this buffer, whose frame is dead, carry `others` home with it: their count
    /// and pointers are written into its data area, so one ring item returns a whole
    /// batch. All of them must belong to the same owner (the caller sends the carrier to
    /// that owner). At most [`RETURN_BATCH_EXTRA_MAX`] others.
    pub(crate) fn pack_returns(&mut self, others: impl ExactSizeIterator<Item = FrameHandle>) {
        let count = others.len();
        assert!(count <= RETURN_BATCH_EXTRA_MAX, "return batch too large");
        let buffer = self.buffer_mut();
        buffer[..8].copy_from_slice(&(count as u64).to_le_bytes());
        for (index, handle) in others.enumerate() {
            let at = 8 + 8 * index;
            buffer[at..at + 8].copy_from_slice(&(handle.into_raw() as u64).to_le_bytes());
        }
    }

    /// Takes the handles [`FrameHandle::pack_returns`] stored in this carrier; a second
    /// call yields nothing.
    pub(crate) fn take_returns(&mut self) -> impl Iterator<Item = FrameHandle> + '_ {
        let buffer = self.buffer_mut();
        let mut word = [0u8; 8];
        word.copy_from_slice(&buffer[..8]);
        // The count was written by `pack_returns` on the sending shard (bounded there);
        // clamp anyway so a broken invariant cannot read past the buffer.
        let count = (u64::from_le_bytes(word) as usize).min(RETURN_BATCH_EXTRA_MAX);
        buffer[..8].copy_from_slice(&0u64.to_le_bytes());
        (0..count).map(move |index| {
            let at = 8 + 8 * index;
            let mut word = [0u8; 8];
            word.copy_from_slice(&buffer[at..at + 8]);
            // SAFETY: `pack_returns` stored this pointer from `into_raw`, and the count was
            // zeroed above, so each stored pointer is turned back into a handle once.
            unsafe { FrameHandle::from_raw(u64::from_le_bytes(word) as usize) }
        })
    }

    fn header(&self) -> &BlockHeader {
        // SAFETY: the pointer is valid for the handle's life; only `set_len` writes the
        // header, through `&mut self`.
        unsafe { self.0.as_ref() }
    }

    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: the block is `HEADER_BYTES + capacity` long, so one past the header is
        // inside (or one past the end of) the allocation.
        unsafe { self.0.as_ptr().cast::<u8>().add(HEADER_BYTES) }
    }
}

/// What [`FramePool::release`] did with a handle.
#[derive(Debug)]
#[must_use = "a foreign frame must be sent home"]
pub enum Released {
    /// It was ours and is back on the free list.
    Local,
    /// It belongs to another shard: send it home.
    Foreign(FrameHandle),
}

/// A pool could not hand out a buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Every buffer the pool may own is in flight.
    #[error("frame pool of shard {shard} exhausted: {frames_max} frames in flight")]
    Exhausted {
        /// The shard.
        shard: usize,
        /// The pool's bound.
        frames_max: usize,
    },
    /// The frame is larger than the largest size class.
    #[error("frame of {frame_bytes} bytes exceeds the {max_bytes}-byte limit")]
    TooLarge {
        /// Bytes asked for.
        frame_bytes: usize,
        /// Largest frame the pool serves.
        max_bytes: usize,
    },
}

/// A shard's frame buffers.
#[derive(Debug)]
pub struct FramePool {
    shard: u32,
    free: Vec<Vec<FrameHandle>>,
    frame_bytes_max: usize,
    frames_max: usize,
    frames_allocated: usize,
}

impl FramePool {
    /// A pool for `shard` serving frames up to `frame_bytes_max` bytes, owning at most
    /// `frames_max` buffers at once.
    pub fn new(shard: usize, frame_bytes_max: usize, frames_max: usize) -> FramePool {
        let classes = class_for(frame_bytes_max.max(1)) + 1;
        FramePool {
            shard: u32::try_from(shard).expect("shard index fits in u32"),
            free: (0..classes).map(|_| Vec::new()).collect(),
            frame_bytes_max,
            frames_max,
            frames_allocated: 0,
        }
    }

    /// A buffer of at least `frame_bytes` bytes (its length is not yet set).
    pub fn alloc(&mut self, frame_bytes: usize) -> Result<FrameHandle, PoolError> {
        if frame_bytes > self.frame_bytes_max {
            return Err(PoolError::TooLarge {
                frame_bytes,
                max_bytes: self.frame_bytes_max,
            });
        }
        let class = class_for(frame_bytes);
        if let Some(handle) = self.free[class].pop() {
            return Ok(handle);
        }
        if self.frames_allocated >= self.frames_max {
            return Err(PoolError::Exhausted {
                shard: self.shard as usize,
                frames_max: self.frames_max,
            });
        }
        self.frames_allocated += 1;
        Ok(allocate_block(self.shard, class))
    }

    /// Takes a handle back: onto the free list if this pool owns it, else it is returned
    /// to the caller to be sent to its owner.
    pub fn release(&mut self, handle: FrameHandle) -> Released {
        if handle.header().owner_shard != self.shard {
            return Released::Foreign(handle);
        }
        let class = handle.header().class as usize;
        self.free[class].push(handle);
        Released::Local
    }

    /// Buffers this pool has allocated (free or in flight).
    pub fn frames_allocated(&self) -> usize {
        self.frames_allocated
    }

    /// Buffers on the free lists.
    pub fn frames_free(&self) -> usize {
        self.free.iter().map(Vec::len).sum()
    }

    /// Buffers handed out and not yet back.
    pub fn frames_in_flight(&self) -> usize {
        self.frames_allocated - self.frames_free()
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // Only free-listed blocks are freed. A block still in flight (held by another shard
        // at shutdown) is leaked rather than freed under its holder's feet.
        for (class, list) in self.free.iter_mut().enumerate() {
            for handle in list.drain(..) {
                // SAFETY: the block was allocated by `allocate_block` with this class's
                // layout, and the handle (its unique owner) is consumed here.
                unsafe { alloc::dealloc(handle.0.as_ptr().cast(), block_layout(class)) };
            }
        }
    }
}

/// Bytes a buffer of `class` holds.
pub fn class_bytes(class: usize) -> usize {
    CLASS_MIN_BYTES << class
}

/// The smallest class whose buffers hold `frame_bytes`.
fn class_for(frame_bytes: usize) -> usize {
    let bytes = frame_bytes.max(CLASS_MIN_BYTES).next_power_of_two();
    (bytes.trailing_zeros() - CLASS_MIN_BYTES.trailing_zeros()) as usize
}

fn block_layout(class: usize) -> Layout {
    // The header's alignment (16) covers FRAME_ALIGN; sizes are far below isize::MAX.
    Layout::from_size_align(HEADER_BYTES + class_bytes(class), HEADER_BYTES)
        .expect("block layout is valid for every class")
}

fn allocate_block(shard: u32, class: usize) -> FrameHandle {
    let layout = block_layout(class);
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { alloc::alloc_zeroed(layout) }.cast::<BlockHeader>();
    let Some(block) = NonNull::new(block) else {
        alloc::handle_alloc_error(layout)
    };
    let header = BlockHeader {
        owner_shard: shard,
        class: class as u32,
        len_bytes: 0,
        _reserved: 0,
    };
    // SAFETY: the block is freshly allocated, aligned for BlockHeader and large enough.
    unsafe { block.as_ptr().write(header) };
    FrameHandle(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_sizes() {
        assert_eq!(class_for(0), 0);
        assert_eq!(class_for(256), 0);
        assert_eq!(class_for(257), 1);
        assert_eq!(class_for(1 << 20), 12);
        for bytes in [1usize, 100, 256, 300, 4096, 5000, 65536] {
            assert!(class_bytes(class_for(bytes)) >= bytes);
        }
    }

    #[test]
    fn buffers_are_recycled_lifo_and_bounded() {
        let mut pool = FramePool::new(3, 4096, 2);
        let a = pool.alloc(100).unwrap();
        let raw_a = a.0.as_ptr() as usize;
        assert_eq!(a.owner_shard(), 3);
        assert_eq!(a.as_ref_data_alignment(), 0);
        let b = pool.alloc(100).unwrap();
        assert_eq!(
            pool.alloc(10).unwrap_err(),
            PoolError::Exhausted {
                shard: 3,
                frames_max: 2
            }
        );
        assert!(matches!(pool.release(a), Released::Local));
        let c = pool.alloc(50).unwrap();
        assert_eq!(c.0.as_ptr() as usize, raw_a, "LIFO reuse");
        assert!(matches!(pool.release(b), Released::Local));
        assert!(matches!(pool.release(c), Released::Local));
        assert_eq!(pool.frames_in_flight(), 0);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut pool = FramePool::new(0, 1000, 10);
        assert_eq!(
            pool.alloc(1001).unwrap_err(),
            PoolError::TooLarge {
                frame_bytes: 1001,
                max_bytes: 1000
            }
        );
    }

    #[test]
    fn foreign_handles_go_home() {
        let mut home = FramePool::new(0, 1024, 4);
        let mut away = FramePool::new(1, 1024, 4);
        let h = home.alloc(10).unwrap();
        let Released::Foreign(h) = away.release(h) else {
            panic!("should be foreign")
        };
        let raw = h.into_raw();
        // SAFETY: `raw` came from `into_raw` and is used once.
        let h = unsafe { FrameHandle::from_raw(raw) };
        assert!(matches!(home.release(h), Released::Local));
    }

    impl FrameHandle {
        fn as_ref_data_alignment(&self) -> usize {
            self.data_ptr() as usize % FRAME_ALIGN
        }
    }
}
