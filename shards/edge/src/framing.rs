//! Writing frames onto a stream, and the aligned buffers frames are read into and encoded
//! in. Shared by the server and the clients so both sides write the same bytes.

use dataplane_frame::{encode_to_vec, encoded_len, FrameError, Header, FRAME_ALIGN};

use crate::protocol::length_prefix;

/// A heap buffer of `len` bytes whose start is 16-byte aligned ([`FRAME_ALIGN`]), as frames
/// need for `dataplane_frame::validate` and `encode_into`.
pub struct AlignedBuf {
    words: Vec<u128>,
    len: usize,
}

const _: () = assert!(std::mem::align_of::<u128>() >= FRAME_ALIGN);

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

impl AlignedBuf {
    /// `len` zero bytes.
    pub fn new(len: usize) -> AlignedBuf {
        AlignedBuf {
            words: vec![0; len.div_ceil(16)],
            len,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the Vec<u128> holds `words.len() * 16 >= len` initialised bytes; any
        // byte pattern is a valid u8; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    /// Makes the buffer exactly `len` bytes long, keeping its allocation when it is large
    /// enough. Bytes kept from before hold whatever they held.
    pub fn set_len(&mut self, len: usize) {
        self.words.resize(len.div_ceil(16), 0);
        self.len = len;
    }

    /// Bytes the buffer holds without allocating.
    pub fn capacity_bytes(&self) -> usize {
        self.words.capacity() * 16
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`, borrowed mutably through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// Appends `header` + `payload` to `out` as a length-prefixed frame (docs/protocol.md §4),
/// written in place ([`encode_to_vec`]). Returns the frame's length; on an error (frame
/// too large, unknown flag bits) nothing is appended.
pub fn append_frame(
    out: &mut Vec<u8>,
    header: &Header,
    payload: &[u8],
) -> Result<usize, FrameError> {
    let start = out.len();
    out.extend_from_slice(&length_prefix(encoded_len(payload.len())));
    match encode_to_vec(header, payload, out) {
        Ok(n) => Ok(n),
        Err(error) => {
            out.truncate(start);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane_frame::{validate, AgentId, Flags, Performative, Priority};

    #[test]
    fn appended_frames_are_prefixed_and_valid() {
        let header = Header {
            to: AgentId::from_name("echo"),
            from: AgentId(0),
            conversation_id: 1,
            correlation_id: 2,
            performative: Performative::Request,
            priority: Priority::Normal,
            flags: Flags::NONE,
        };
        // After one odd byte, so neither frame starts aligned in the stream.
        let mut out = vec![0x77];
        let first = append_frame(&mut out, &header, &[9; 300]).expect("encode");
        let second = append_frame(&mut out, &header, b"").expect("encode");
        assert_eq!(out.len(), 1 + 4 + first + 4 + second);
        let mut at = 1;
        for (n, payload) in [(first, &[9u8; 300][..]), (second, &[][..])] {
            let prefix = u32::from_le_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
            assert_eq!(prefix as usize, n);
            let mut frame = AlignedBuf::new(n);
            frame.as_mut().copy_from_slice(&out[at + 4..at + 4 + n]);
            assert_eq!(frame.as_slice().as_ptr() as usize % FRAME_ALIGN, 0);
            let valid = validate(frame.as_slice()).expect("valid");
            assert_eq!((valid.header(), valid.payload()), (header, payload));
            at += 4 + n;
        }
    }

    #[test]
    fn a_frame_that_cannot_be_encoded_appends_nothing() {
        let header = Header {
            to: AgentId(1),
            from: AgentId(2),
            conversation_id: 0,
            correlation_id: 0,
            performative: Performative::Inform,
            priority: Priority::Normal,
            flags: Flags(0x0084),
        };
        let mut out = vec![1, 2, 3];
        assert!(append_frame(&mut out, &header, b"x").is_err());
        assert_eq!(out, [1, 2, 3]);
    }
}
