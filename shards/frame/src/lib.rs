//! Message frames: one byte layout for shard-to-shard rings and the wire.
//!
//! A frame is an [rkyv] 0.8 archive of a fixed 48-byte root (the header plus
//! a relative pointer to the payload) preceded by the payload bytes. The same
//! bytes travel through the in-process pointer rings and, length-prefixed,
//! over QUIC, so the ingress routes a frame without re-encoding it. The layout
//! and the reasons for it are in `docs/decisions/why-frame-layout.md`.
//!
//! This crate is pure: no I/O, no clock, no allocation on the hot path.
//!
//! There are two ways in, one per side of the trust boundary:
//! - [`validate`] for bytes from outside the process (network, guests): the
//!   rkyv structural check plus this crate's semantic checks. Never panics.
//! - [`access_trusted`] (`unsafe`) for frames this process built with
//!   [`encode_into`] and has not modified since: no checks, about 1 ns.
//!
//! ```
//! use dataplane_frame::{
//!     encode_into, encoded_len, validate, AgentId, Flags, Header, Performative, Priority,
//!     FRAME_ALIGN,
//! };
//!
//! // Any buffer aligned to FRAME_ALIGN works; pooled buffers in production.
//! #[repr(C, align(16))]
//! struct Aligned([u8; 256]);
//! const _: () = assert!(std::mem::align_of::<Aligned>() == FRAME_ALIGN);
//! let mut buffer = Aligned([0; 256]);
//!
//! let header = Header {
//!     to: AgentId::from_name("echo"),
//!     from: AgentId::from_name("client"),
//!     conversation_id: 1,
//!     correlation_id: 7,
//!     performative: Performative::Request,
//!     priority: Priority::Normal,
//!     flags: Flags::NONE,
//! };
//! let frame_bytes = encode_into(&header, b"ping", &mut buffer.0)?;
//! assert_eq!(frame_bytes, encoded_len(4));
//!
//! let frame = validate(&buffer.0[..frame_bytes])?;
//! assert_eq!(frame.header(), header);
//! assert_eq!(frame.payload(), b"ping");
//! # Ok::<(), dataplane_frame::FrameError>(())
//! ```
#![warn(missing_docs)]

mod agent;
mod error;
mod header;
mod wire;

pub use crate::agent::AgentId;
pub use crate::error::FrameError;
pub use crate::header::{Flags, Header, Performative, Priority};
pub use crate::wire::{
    access_trusted, encode_into, encode_to_vec, encoded_len, header_of, validate,
    validate_and_set_from, ArchivedFrame,
};

/// The layout version this crate writes and accepts. It is the byte at
/// `frame_bytes - 8`, and every future version keeps it there, so a reader can
/// tell an unsupported version from a malformed frame.
pub const FRAME_VERSION: u8 = 1;

/// Absolute cap on one frame's encoded bytes: payload, padding and root.
pub const FRAME_BYTES_MAX: usize = 1 << 20;

/// Alignment the start of a frame's bytes needs, for [`encode_into`],
/// [`validate`] and [`access_trusted`] alike. 16 is what rkyv's `AlignedVec`
/// and common allocators give, and more than the root's 8.
pub const FRAME_ALIGN: usize = 16;

/// Bytes of the fixed root at the end of every frame: `encoded_len(0)`.
pub const FRAME_FIXED_BYTES: usize = 48;

/// Largest payload that fits in [`FRAME_BYTES_MAX`].
pub const PAYLOAD_BYTES_MAX: usize = FRAME_BYTES_MAX - FRAME_FIXED_BYTES;

// The caps relate: a maximal payload fills a maximal frame exactly, and every
// offset in a frame fits rkyv's 32-bit relative pointers.
const _: () = assert!(encoded_len(PAYLOAD_BYTES_MAX) == FRAME_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX <= i32::MAX as usize);
const _: () = assert!(FRAME_ALIGN.is_power_of_two());
