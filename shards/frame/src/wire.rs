//! The archived layout, encoding, and the two ways to read a frame.
//!
//! Byte layout of a frame carrying `p` payload bytes (`pad = align_up(p, 8) - p`):
//!
//! ```text
//! offset from start   bytes  field
//! 0                   p      payload
//! p                   pad    zero padding (root alignment)
//! root = p + pad      8      to               u64 le
//! root + 8            8      from             u64 le
//! root + 16           8      conversation_id  u64 le
//! root + 24           8      correlation_id   u64 le
//! root + 32           4      payload offset   i32 le, relative to root + 32 (= -root)
//! root + 36           4      payload length   u32 le (= p)
//! root + 40           1      version          u8 (= FRAME_VERSION)
//! root + 41           1      performative     u8
//! root + 42           1      priority         u8
//! root + 43           1      reserved         u8, zero
//! root + 44           2      flags            u16 le
//! root + 46           2      reserved         u16, zero
//! ```
//!
//! This is exactly rkyv 0.8's archive of [`WireFrame`] (little-endian,
//! aligned, 32-bit pointers): rkyv writes dependencies first and the root
//! last, so the root sits at `frame_bytes - 48` and the header is found from
//! the end of the frame.
//!
//! Frames are read with rkyv ([`validate`], [`access_trusted`]) and written by
//! a plain byte writer that follows the table (`write_frame`): rkyv's
//! serializer costs a few nanoseconds more per frame (a generic writer, a
//! `memset` call for the padding) and needs an aligned output, which a
//! length-prefixed stream is not. The tests prove, for all inputs, that the
//! writer's bytes are rkyv's (docs/decisions/why-a-hand-written-frame-writer.md).

use std::mem::{align_of, offset_of, size_of};

use rkyv::api::low::access;
#[cfg(test)]
use rkyv::rancor::Fallible;
#[cfg(test)]
use rkyv::ser::{Allocator, Writer};
#[cfg(test)]
use rkyv::vec::{ArchivedVec, VecResolver};
#[cfg(test)]
use rkyv::with::{ArchiveWith, SerializeWith};
#[cfg(test)]
use rkyv::Place;
use rkyv::{Archive, Serialize};

use crate::{
    AgentId, Flags, FrameError, Header, Performative, Priority, FRAME_ALIGN, FRAME_BYTES_MAX,
    FRAME_FIXED_BYTES, FRAME_VERSION,
};

/// Alignment of the root (its widest field is a `u64`).
const ROOT_ALIGN: usize = align_of::<ArchivedWireFrame>();

/// The frame as rkyv sees it, with an owned payload: the specification of the
/// layout. The tests serialize it (and [`WireFrameRef`], which archives to the
/// same type) and prove that `write_frame` produces the same bytes.
#[derive(Archive, Serialize)]
#[rkyv(archived = ArchivedWireFrame)]
#[cfg_attr(not(test), expect(dead_code, reason = "defines ArchivedWireFrame"))]
struct WireFrame {
    to: u64,
    from: u64,
    conversation_id: u64,
    correlation_id: u64,
    payload: Vec<u8>,
    version: u8,
    performative: u8,
    priority: u8,
    reserved_u8: u8,
    flags: u16,
    reserved_u16: u16,
}

/// [`WireFrame`] with a borrowed payload, so rkyv can encode into a buffer
/// without allocating: the tests' reference encoder.
///
/// `omit_bounds` plus explicit `serialize_bounds`: with the derived
/// `PayloadAsVec: ArchiveWith<&'a [u8]>` bound, rustc would not normalize the
/// archived payload type to `ArchivedVec<u8>`.
#[cfg(test)]
#[derive(Archive, Serialize)]
#[rkyv(as = ArchivedWireFrame, serialize_bounds(__S: Allocator + Writer))]
struct WireFrameRef<'a> {
    to: u64,
    from: u64,
    conversation_id: u64,
    correlation_id: u64,
    #[rkyv(with = PayloadAsVec, omit_bounds)]
    payload: &'a [u8],
    version: u8,
    performative: u8,
    priority: u8,
    reserved_u8: u8,
    flags: u16,
    reserved_u16: u16,
}

// The layout table in the module docs, checked by the compiler.
const _: () = assert!(size_of::<ArchivedWireFrame>() == FRAME_FIXED_BYTES);
const _: () = assert!(FRAME_ALIGN.is_multiple_of(ROOT_ALIGN));
const _: () = assert!(offset_of!(ArchivedWireFrame, correlation_id) == 24);
const _: () = assert!(offset_of!(ArchivedWireFrame, payload) == PAYLOAD_FIELD_OFFSET);
const _: () = assert!(offset_of!(ArchivedWireFrame, version) == VERSION_OFFSET);
const _: () = assert!(offset_of!(ArchivedWireFrame, reserved_u8) == RESERVED_U8_OFFSET);
const _: () = assert!(offset_of!(ArchivedWireFrame, flags) == 44);
const _: () = assert!(offset_of!(ArchivedWireFrame, reserved_u16) == RESERVED_U16_OFFSET);

/// Offset of the payload's relative pointer within the root.
const PAYLOAD_FIELD_OFFSET: usize = 32;
/// Offset of the version byte within the root (`frame_bytes - 8`).
const VERSION_OFFSET: usize = 40;
/// Offset of the reserved byte within the root.
const RESERVED_U8_OFFSET: usize = 43;
/// Offset of the reserved `u16` within the root.
const RESERVED_U16_OFFSET: usize = 46;

#[cfg(test)]
impl<'a> WireFrameRef<'a> {
    fn new(header: &Header, payload: &'a [u8]) -> Self {
        WireFrameRef {
            to: header.to.0,
            from: header.from.0,
            conversation_id: header.conversation_id,
            correlation_id: header.correlation_id,
            payload,
            version: FRAME_VERSION,
            performative: header.performative as u8,
            priority: header.priority as u8,
            reserved_u8: 0,
            flags: header.flags.0,
            reserved_u16: 0,
        }
    }
}

/// Archives a borrowed `&[u8]` as the `ArchivedVec<u8>` an owned `Vec<u8>`
/// archives to (rkyv's `InlineAsBox` would give an `ArchivedBox<[u8]>`).
#[cfg(test)]
struct PayloadAsVec;

#[cfg(test)]
impl ArchiveWith<&[u8]> for PayloadAsVec {
    type Archived = ArchivedVec<u8>;
    type Resolver = VecResolver;

    fn resolve_with(field: &&[u8], resolver: VecResolver, out: Place<ArchivedVec<u8>>) {
        ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

#[cfg(test)]
impl<S> SerializeWith<&[u8], S> for PayloadAsVec
where
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize_with(field: &&[u8], serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::<u8>::serialize_from_slice(field, serializer)
    }
}

/// A frame in place: the archived root, reached through [`validate`] or
/// [`access_trusted`]. Accessors read the bytes directly; none copies the
/// payload.
///
/// Every `&ArchivedFrame` this crate hands out passed [`validate`]'s checks
/// or was built by [`encode_into`], so its fields are in range.
#[repr(transparent)]
pub struct ArchivedFrame {
    inner: ArchivedWireFrame,
}

impl ArchivedFrame {
    fn wrap(inner: &ArchivedWireFrame) -> &ArchivedFrame {
        let ptr = (inner as *const ArchivedWireFrame).cast::<ArchivedFrame>();
        // SAFETY: `ArchivedFrame` is `repr(transparent)` over
        // `ArchivedWireFrame`, so the pointer is valid, aligned and points to
        // an initialized `ArchivedFrame` for the lifetime of `inner`.
        unsafe { &*ptr }
    }

    /// The layout version, [`FRAME_VERSION`].
    pub fn version(&self) -> u8 {
        self.inner.version
    }

    /// The receiver.
    pub fn to(&self) -> AgentId {
        AgentId(self.inner.to.to_native())
    }

    /// The sender.
    pub fn from(&self) -> AgentId {
        AgentId(self.inner.from.to_native())
    }

    /// The conversation this frame belongs to.
    pub fn conversation_id(&self) -> u64 {
        self.inner.conversation_id.to_native()
    }

    /// The request/reply correlation id.
    pub fn correlation_id(&self) -> u64 {
        self.inner.correlation_id.to_native()
    }

    /// What the sender means.
    pub fn performative(&self) -> Performative {
        // The byte was range-checked by `validate` or written by `encode_into`
        // from a `Performative`; the fallback keeps a broken `access_trusted`
        // contract from turning into a panic here.
        Performative::try_from(self.inner.performative).unwrap_or(Performative::NotUnderstood)
    }

    /// The scheduling class.
    pub fn priority(&self) -> Priority {
        // Range-checked like `performative`; same reason for the fallback.
        Priority::try_from(self.inner.priority).unwrap_or(Priority::Low)
    }

    /// The flag bits.
    pub fn flags(&self) -> Flags {
        Flags(self.inner.flags.to_native())
    }

    /// The whole header as plain values.
    pub fn header(&self) -> Header {
        Header {
            to: self.to(),
            from: self.from(),
            conversation_id: self.conversation_id(),
            correlation_id: self.correlation_id(),
            performative: self.performative(),
            priority: self.priority(),
            flags: self.flags(),
        }
    }

    /// The payload bytes, in place.
    pub fn payload(&self) -> &[u8] {
        self.inner.payload.as_slice()
    }

    /// Checks the fields rkyv's structural check does not know about.
    fn check_fields(&self) -> Result<(), FrameError> {
        Performative::try_from(self.inner.performative)?;
        Priority::try_from(self.inner.priority)?;
        self.flags().checked()?;
        Ok(())
    }
}

impl std::fmt::Debug for ArchivedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchivedFrame")
            .field("version", &self.version())
            .field("header", &self.header())
            .field("payload_bytes", &self.payload().len())
            .finish()
    }
}

/// The exact number of bytes [`encode_into`] writes for a payload of
/// `payload_len` bytes: the payload padded to 8, plus the 48-byte root.
/// Saturates instead of overflowing; anything above [`FRAME_BYTES_MAX`] is
/// rejected by `encode_into`.
pub const fn encoded_len(payload_len: usize) -> usize {
    let padded = payload_len.saturating_add(ROOT_ALIGN - 1) & !(ROOT_ALIGN - 1);
    padded.saturating_add(FRAME_FIXED_BYTES)
}

/// Writes the frame for `header` and `payload` at `out[..n]` and returns `n`,
/// which is always [`encoded_len`]`(payload.len())`. Bytes past `n` are left
/// untouched. Does not allocate.
///
/// Fails if the frame would exceed [`FRAME_BYTES_MAX`], if `out` does not start
/// at a multiple of [`FRAME_ALIGN`] or is shorter than `n`, or if
/// `header.flags` has unknown must-understand bits (so that every frame this
/// function writes passes [`validate`]).
pub fn encode_into(header: &Header, payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    let frame_bytes = encoded_len(payload.len());
    check_frame_bytes(frame_bytes)?;
    check_aligned(out)?;
    if out.len() < frame_bytes {
        return Err(FrameError::BufferTooSmall {
            needed_bytes: frame_bytes,
            available_bytes: out.len(),
        });
    }
    header.flags.checked()?;
    write_frame(header, payload, &mut out[..frame_bytes]);
    Ok(frame_bytes)
}

/// Appends the frame for `header` and `payload` to `out` and returns its
/// length ([`encoded_len`]`(payload.len())`): the bytes [`encode_into`]
/// writes, at whatever alignment `out` ends (bytes to send, such as a
/// length-prefixed stream, not to read in place). Fails, appending nothing, in
/// the cases [`encode_into`] fails other than alignment and buffer size.
pub fn encode_to_vec(
    header: &Header,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, FrameError> {
    let frame_bytes = encoded_len(payload.len());
    check_frame_bytes(frame_bytes)?;
    header.flags.checked()?;
    let root = frame_bytes - FRAME_FIXED_BYTES;
    out.reserve(frame_bytes);
    out.extend_from_slice(payload);
    out.extend_from_slice(&[0u8; ROOT_ALIGN][..root - payload.len()]);
    out.extend_from_slice(&root_bytes(header, payload.len(), root));
    Ok(frame_bytes)
}

/// Writes a frame into `out`, which is exactly `encoded_len(payload.len())`
/// bytes long (at most [`FRAME_BYTES_MAX`]): the payload, zero padding, then
/// the root (the table in the module docs).
fn write_frame(header: &Header, payload: &[u8], out: &mut [u8]) {
    let root = out.len() - FRAME_FIXED_BYTES;
    let (head, tail) = out.split_at_mut(root);
    let (payload_out, padding) = head.split_at_mut(payload.len());
    payload_out.copy_from_slice(payload);
    padding.fill(0);
    tail.copy_from_slice(&root_bytes(header, payload.len(), root));
}

/// The root of a frame whose root starts at byte `root` and whose payload is
/// `payload_len` bytes at byte 0. Both are at most [`FRAME_BYTES_MAX`], which
/// fits an `i32`.
fn root_bytes(header: &Header, payload_len: usize, root: usize) -> [u8; FRAME_FIXED_BYTES] {
    const _: () = assert!(FRAME_BYTES_MAX < i32::MAX as usize);
    let mut bytes = [0u8; FRAME_FIXED_BYTES];
    bytes[0..8].copy_from_slice(&header.to.0.to_le_bytes());
    bytes[8..16].copy_from_slice(&header.from.0.to_le_bytes());
    bytes[16..24].copy_from_slice(&header.conversation_id.to_le_bytes());
    bytes[24..32].copy_from_slice(&header.correlation_id.to_le_bytes());
    // rkyv's relative pointer: from the field (root + 32) back to the payload (0).
    let offset = -((root + PAYLOAD_FIELD_OFFSET) as i32);
    bytes[32..36].copy_from_slice(&offset.to_le_bytes());
    bytes[36..40].copy_from_slice(&(payload_len as u32).to_le_bytes());
    bytes[VERSION_OFFSET] = FRAME_VERSION;
    bytes[41] = header.performative as u8;
    bytes[42] = header.priority as u8;
    // reserved_u8 (43) and reserved_u16 (46..48) stay zero.
    bytes[44..46].copy_from_slice(&header.flags.0.to_le_bytes());
    bytes
}

/// rkyv's own encoding of the frame: the reference `write_frame` must match.
#[cfg(test)]
fn encode_with_rkyv(header: &Header, payload: &[u8], out: &mut [u8]) -> usize {
    use rkyv::api::low::to_bytes_in_with_alloc;
    use rkyv::rancor::Failure;
    use rkyv::ser::allocator::SubAllocator;
    use rkyv::ser::writer::Buffer;
    let frame = WireFrameRef::new(header, payload);
    let writer = Buffer::from(out);
    to_bytes_in_with_alloc::<_, _, Failure>(&frame, writer, SubAllocator::empty())
        .expect("the buffer fits the frame")
        .len()
}

/// Checks bytes from outside the process and returns the frame in place.
///
/// Checks, in order: size within [`FRAME_BYTES_MAX`] and at least
/// [`FRAME_FIXED_BYTES`]; start aligned to [`FRAME_ALIGN`]; version byte;
/// rkyv's structural check (pointers and lengths in bounds); performative,
/// priority and flags in range; reserved bytes and padding zero; canonical
/// layout (payload at offset 0, length exactly `encoded_len`). A frame that
/// passes is byte-for-byte what [`encode_into`] writes for its header and
/// payload. Never panics; does not allocate unless it fails with
/// [`FrameError::Malformed`].
pub fn validate(bytes: &[u8]) -> Result<&ArchivedFrame, FrameError> {
    check_frame_bytes(bytes.len())?;
    if bytes.len() < FRAME_FIXED_BYTES {
        return Err(FrameError::Truncated {
            frame_bytes: bytes.len(),
            min_bytes: FRAME_FIXED_BYTES,
        });
    }
    check_aligned(bytes)?;
    let root_offset = bytes.len() - FRAME_FIXED_BYTES;
    let version = bytes[root_offset + VERSION_OFFSET];
    if version != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion { version });
    }
    let inner = access::<ArchivedWireFrame, rkyv::rancor::Error>(bytes)
        .map_err(|error| FrameError::Malformed(error.to_string()))?;
    let frame = ArchivedFrame::wrap(inner);
    frame.check_fields()?;
    check_canonical(bytes, frame.payload())?;
    Ok(frame)
}

/// The frame in `bytes`, without any check.
///
/// # Safety
///
/// `bytes` must be exactly the `n` bytes an [`encode_into`] call in this
/// process wrote and reported (`&out[..n]`), at the same address, and not
/// modified since. Those bytes pass [`validate`] by construction (tested for
/// all inputs by the crate's property tests), so the relative pointer and
/// every field are in range. Any other input (bytes from the network or a
/// guest, a frame cut short or written into) is undefined behavior: use
/// [`validate`]. Debug builds run `validate` and panic if the contract is
/// broken.
pub unsafe fn access_trusted(bytes: &[u8]) -> &ArchivedFrame {
    if cfg!(debug_assertions) {
        if let Err(error) = validate(bytes) {
            panic!("access_trusted on bytes that fail validate: {error}");
        }
    }
    // SAFETY: the caller guarantees `bytes` is an unmodified `encode_into`
    // output: aligned, long enough for the root at its end, and with a
    // payload pointer inside `bytes`.
    let inner = unsafe { rkyv::api::access_unchecked::<ArchivedWireFrame>(bytes) };
    ArchivedFrame::wrap(inner)
}

/// Offset of the `from` field within the root.
const FROM_OFFSET: usize = 8;
const _: () = assert!(offset_of!(ArchivedWireFrame, from) == FROM_OFFSET);

/// Checks untrusted `bytes` like [`validate`], then overwrites the frame's sender with
/// `from` in place and returns the header as it now reads. This is how the network edge
/// stamps a client's frames with its connection's id without re-encoding them: any
/// `u64` is a valid sender, so the bytes still pass [`validate`] afterwards.
pub fn validate_and_set_from(bytes: &mut [u8], from: AgentId) -> Result<Header, FrameError> {
    let mut header = validate(bytes)?.header();
    let at = bytes.len() - FRAME_FIXED_BYTES + FROM_OFFSET;
    bytes[at..at + 8].copy_from_slice(&from.0.to_le_bytes());
    header.from = from;
    Ok(header)
}

/// The header of the frame in untrusted `bytes`: [`validate`] then
/// [`ArchivedFrame::header`].
pub fn header_of(bytes: &[u8]) -> Result<Header, FrameError> {
    validate(bytes).map(ArchivedFrame::header)
}

fn check_frame_bytes(frame_bytes: usize) -> Result<(), FrameError> {
    if frame_bytes > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            frame_bytes,
            max_bytes: FRAME_BYTES_MAX,
        });
    }
    Ok(())
}

fn check_aligned(bytes: &[u8]) -> Result<(), FrameError> {
    let address = bytes.as_ptr() as usize;
    if !address.is_multiple_of(FRAME_ALIGN) {
        return Err(FrameError::Misaligned {
            address_align_bytes: 1 << address.trailing_zeros().min(12),
            required_align_bytes: FRAME_ALIGN,
        });
    }
    Ok(())
}

/// Rejects every layout but the one `encode_into` writes: payload at offset 0,
/// total length `encoded_len(payload)`, zero padding and reserved bytes.
fn check_canonical(bytes: &[u8], payload: &[u8]) -> Result<(), FrameError> {
    let payload_offset_bytes = (payload.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
    let expected_frame_bytes = encoded_len(payload.len());
    if payload_offset_bytes != 0 || bytes.len() != expected_frame_bytes {
        return Err(FrameError::NonCanonical {
            frame_bytes: bytes.len(),
            payload_bytes: payload.len(),
            payload_offset_bytes,
            expected_frame_bytes,
        });
    }
    let root_offset = bytes.len() - FRAME_FIXED_BYTES;
    check_zero(bytes, payload.len()..root_offset)?;
    check_zero(
        bytes,
        root_offset + RESERVED_U8_OFFSET..root_offset + RESERVED_U8_OFFSET + 1,
    )?;
    check_zero(bytes, root_offset + RESERVED_U16_OFFSET..bytes.len())
}

fn check_zero(bytes: &[u8], range: std::ops::Range<usize>) -> Result<(), FrameError> {
    let start = range.start;
    let region = bytes.get(range).unwrap_or_default();
    match region.iter().position(|&byte| byte != 0) {
        None => Ok(()),
        Some(index) => Err(FrameError::ReservedNotZero {
            offset_bytes: start + index,
            value: region[index],
        }),
    }
}

#[cfg(test)]
mod tests;
