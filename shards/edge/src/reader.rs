//! Reading length-prefixed frames from a stream, as a sans-IO state machine.
//!
//! The reader pulls bytes from a source (on the server, quiche's `stream_recv`) straight
//! into the buffer the frame will live in (on the server, a pooled frame buffer of the
//! shard), so a frame is copied once, from QUIC's reassembly buffer into its final place.
//! It never allocates and never trusts the length prefix beyond its limits:
//!
//! - a length up to `frame_bytes_max` is read into a buffer from `alloc`; if `alloc` has
//!   none (pool exhausted) the reader stops ([`Event::Blocked`]) and stream flow control
//!   pushes back on the client; nothing is lost;
//! - a length above `frame_bytes_max` but within [`SKIP_BYTES_MAX`] is read and thrown
//!   away, keeping the last 48 bytes so the error reply can name the addressee and carry
//!   the request's correlation id ([`Event::Skipped`]);
//! - a larger length is a [`ReadError`]: the connection is closed.
//!
//! Validation of the frame's contents is not the reader's business: the shard validates
//! every frame ([`dataplane_frame::validate`]) before anything reads it.

use dataplane_frame::{AgentId, FRAME_FIXED_BYTES};

use crate::protocol::{LENGTH_PREFIX_BYTES, SKIP_BYTES_MAX};

/// Bytes read at once while skipping an oversized frame.
const SKIP_CHUNK_BYTES: usize = 4096;

/// What [`FrameReader::next`] produced.
#[derive(Debug)]
pub enum Event<B> {
    /// A whole frame, in the buffer `alloc` gave (not yet validated).
    Frame(B),
    /// A frame longer than the limit was skipped. Its addressee and correlation id are
    /// read from its last 48 bytes without validation (they name things in the error
    /// reply only).
    Skipped {
        /// Its length prefix.
        frame_bytes: usize,
        /// The `to` field at its end.
        to: AgentId,
        /// The `correlation_id` field at its end.
        correlation_id: u64,
    },
    /// The source has no more bytes for now.
    Drained,
    /// A frame of `frame_bytes` is announced but `alloc` had no buffer: call again later.
    Blocked {
        /// The announced length.
        frame_bytes: usize,
    },
}

/// The stream cannot be read any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A length prefix beyond what is even skipped.
    #[error("length prefix of {frame_bytes} bytes exceeds {max_bytes} bytes")]
    TooLarge {
        /// The prefix.
        frame_bytes: usize,
        /// [`SKIP_BYTES_MAX`].
        max_bytes: usize,
    },
}

enum State<B> {
    Prefix {
        bytes: [u8; LENGTH_PREFIX_BYTES],
        got: usize,
    },
    Body {
        buf: Option<B>,
        frame_bytes: usize,
        got: usize,
    },
    Skip {
        frame_bytes: usize,
        left: usize,
    },
}

/// Reads length-prefixed frames from one stream.
pub struct FrameReader<B> {
    state: State<B>,
    /// The last [`FRAME_FIXED_BYTES`] of the frame being skipped (its root: `to` and
    /// `correlation_id` for the error reply). Kept out of [`State`] so that the state
    /// stays a few words: it is rewritten twice per frame, and a large enum is built on
    /// the stack and copied in 16-byte pieces over bytes just stored in smaller ones (a
    /// store-forwarding stall, ~1% of the edge's core under a flood).
    skip_tail: [u8; FRAME_FIXED_BYTES],
    frame_bytes_max: usize,
}

impl<B> std::fmt::Debug for FrameReader<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Prefix { got, .. } => format!("prefix {got}/4"),
            State::Body {
                frame_bytes, got, ..
            } => format!("body {got}/{frame_bytes}"),
            State::Skip {
                frame_bytes, left, ..
            } => format!("skip {left} of {frame_bytes}"),
        };
        f.debug_struct("FrameReader")
            .field("state", &state)
            .field("frame_bytes_max", &self.frame_bytes_max)
            .finish()
    }
}

impl<B: AsMut<[u8]>> FrameReader<B> {
    /// A reader at the start of a stream, accepting frames up to `frame_bytes_max`.
    pub fn new(frame_bytes_max: usize) -> FrameReader<B> {
        FrameReader {
            state: State::Prefix {
                bytes: [0; LENGTH_PREFIX_BYTES],
                got: 0,
            },
            skip_tail: [0; FRAME_FIXED_BYTES],
            frame_bytes_max,
        }
    }

    /// Whether the reader is between two frames (a stream may end here cleanly).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Prefix { got: 0, .. })
    }

    /// Gives back the buffer of a frame being read, if any (the stream is going away).
    pub fn take_partial(&mut self) -> Option<B> {
        match &mut self.state {
            State::Body { buf, .. } => buf.take(),
            _ => None,
        }
    }

    /// Reads until one event: `read(out)` copies up to `out.len()` bytes from the stream
    /// and returns how many (0: nothing more now); `alloc(n)` gives an `n`-byte buffer,
    /// or `None` to block.
    pub fn next(
        &mut self,
        read: &mut impl FnMut(&mut [u8]) -> usize,
        alloc: &mut impl FnMut(usize) -> Option<B>,
    ) -> Result<Event<B>, ReadError> {
        loop {
            match &mut self.state {
                State::Prefix { bytes, got } => {
                    let n = read(&mut bytes[*got..]);
                    if n == 0 {
                        return Ok(Event::Drained);
                    }
                    *got += n;
                    if *got < LENGTH_PREFIX_BYTES {
                        continue;
                    }
                    let frame_bytes = u32::from_le_bytes(*bytes) as usize;
                    if frame_bytes > SKIP_BYTES_MAX {
                        return Err(ReadError::TooLarge {
                            frame_bytes,
                            max_bytes: SKIP_BYTES_MAX,
                        });
                    }
                    self.state = if frame_bytes > self.frame_bytes_max {
                        self.skip_tail = [0; FRAME_FIXED_BYTES];
                        State::Skip {
                            frame_bytes,
                            left: frame_bytes,
                        }
                    } else {
                        State::Body {
                            buf: None,
                            frame_bytes,
                            got: 0,
                        }
                    };
                }
                State::Body {
                    buf,
                    frame_bytes,
                    got,
                } => {
                    if buf.is_none() {
                        match alloc(*frame_bytes) {
                            Some(new) => *buf = Some(new),
                            None => {
                                return Ok(Event::Blocked {
                                    frame_bytes: *frame_bytes,
                                })
                            }
                        }
                    }
                    if *got < *frame_bytes {
                        let Some(target) = buf.as_mut() else {
                            unreachable!("allocated above")
                        };
                        let n = read(&mut target.as_mut()[*got..*frame_bytes]);
                        if n == 0 {
                            return Ok(Event::Drained);
                        }
                        *got += n;
                        if *got < *frame_bytes {
                            continue;
                        }
                    }
                    let frame = buf.take();
                    self.state = State::Prefix {
                        bytes: [0; LENGTH_PREFIX_BYTES],
                        got: 0,
                    };
                    if let Some(frame) = frame {
                        return Ok(Event::Frame(frame));
                    }
                }
                State::Skip { frame_bytes, left } => {
                    let mut chunk = [0u8; SKIP_CHUNK_BYTES];
                    let want = (*left).min(SKIP_CHUNK_BYTES);
                    let n = read(&mut chunk[..want]);
                    if n == 0 {
                        return Ok(Event::Drained);
                    }
                    *left -= n;
                    keep_tail(&mut self.skip_tail, &chunk[..n]);
                    if *left > 0 {
                        continue;
                    }
                    let event = Event::Skipped {
                        frame_bytes: *frame_bytes,
                        to: AgentId(u64_at(&self.skip_tail, 0)),
                        correlation_id: u64_at(&self.skip_tail, 24),
                    };
                    self.state = State::Prefix {
                        bytes: [0; LENGTH_PREFIX_BYTES],
                        got: 0,
                    };
                    return Ok(event);
                }
            }
        }
    }
}

/// Bytes read from a stream ahead of a [`FrameReader`], so that a run of small frames
/// costs one read of the stream instead of two per frame (prefix, then body): each
/// stream read is a call into QUIC's reassembly buffer, far dearer than copying a few
/// hundred bytes. Reads at least as large as the staging buffer bypass it.
///
/// Bytes left staged when the reader stops (back-pressure, or the per-call cap) belong to
/// that stream: [`Staging::save`] moves them out and [`Staging::load`] puts them back
/// first, so one staging buffer can serve many streams in turn.
pub struct Staging {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("bytes", &self.buf.len())
            .field("staged", &(self.end - self.start))
            .finish()
    }
}

impl Staging {
    /// A staging buffer of `bytes` (at least 1).
    pub fn new(bytes: usize) -> Staging {
        Staging {
            buf: vec![0; bytes.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Bytes staged and not yet read.
    pub fn staged(&self) -> usize {
        self.end - self.start
    }

    /// Copies up to `out.len()` bytes into `out`, refilling from `source` (same contract
    /// as [`FrameReader::next`]'s `read`) when nothing is staged. Returns how many.
    pub fn read(&mut self, out: &mut [u8], source: &mut impl FnMut(&mut [u8]) -> usize) -> usize {
        if self.start == self.end {
            if out.len() >= self.buf.len() {
                return source(out);
            }
            self.start = 0;
            self.end = source(&mut self.buf).min(self.buf.len());
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        n
    }

    /// Moves the unread staged bytes to the end of `into`; the staging is empty after.
    pub fn save(&mut self, into: &mut Vec<u8>) {
        into.extend_from_slice(&self.buf[self.start..self.end]);
        self.start = 0;
        self.end = 0;
    }

    /// Stages `from` (bytes an earlier [`Staging::save`] moved out, so they fit) ahead
    /// of anything else and empties it. The staging must be empty.
    pub fn load(&mut self, from: &mut Vec<u8>) {
        debug_assert_eq!(self.start, self.end, "staging not empty");
        let n = from.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&from[..n]);
        self.start = 0;
        self.end = n;
        from.drain(..n);
    }
}

/// Keeps the last `tail.len()` bytes seen, `bytes` being the newest.
fn keep_tail(tail: &mut [u8; FRAME_FIXED_BYTES], bytes: &[u8]) {
    if bytes.len() >= tail.len() {
        let start = bytes.len() - FRAME_FIXED_BYTES;
        tail.copy_from_slice(&bytes[start..]);
    } else {
        tail.rotate_left(bytes.len());
        let start = tail.len() - bytes.len();
        tail[start..].copy_from_slice(bytes);
    }
}

fn u64_at(bytes: &[u8; FRAME_FIXED_BYTES], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames read, skipped frames `(length, correlation id)`, and the error that ended it.
    type Outcome = (Vec<Vec<u8>>, Vec<(usize, u64)>, Option<ReadError>);

    /// Feeds `stream` in chunks of the given sizes; collects frames and skips.
    fn run(stream: &[u8], chunks: &[usize], max: usize) -> Outcome {
        run_staged(stream, chunks, max, None)
    }

    /// As [`run`], through a staging buffer of `staging` bytes if given, which is saved
    /// and reloaded after every event (as the server does between service calls).
    fn run_staged(stream: &[u8], chunks: &[usize], max: usize, staging: Option<usize>) -> Outcome {
        let mut staging = staging.map(Staging::new);
        let mut leftover = Vec::new();
        let mut reader = FrameReader::<Vec<u8>>::new(max);
        let mut pos = 0;
        let mut frames = Vec::new();
        let mut skips = Vec::new();
        let mut sizes = chunks.iter().copied().cycle();
        let mut budget = 0usize;
        loop {
            let before = pos;
            let mut source = |out: &mut [u8]| {
                if budget == 0 {
                    budget = sizes.next().unwrap_or(1).max(1);
                }
                let n = out.len().min(stream.len() - pos).min(budget);
                out[..n].copy_from_slice(&stream[pos..pos + n]);
                pos += n;
                budget -= n;
                n
            };
            let event = match staging.as_mut() {
                Some(staging) => {
                    staging.load(&mut leftover);
                    let event = reader.next(
                        &mut |out: &mut [u8]| staging.read(out, &mut source),
                        &mut |n| Some(vec![0; n]),
                    );
                    staging.save(&mut leftover);
                    event
                }
                None => reader.next(&mut source, &mut |n| Some(vec![0; n])),
            };
            let drained = pos == stream.len() && before == pos && leftover.is_empty();
            match event {
                Ok(Event::Frame(frame)) => frames.push(frame),
                Ok(Event::Skipped {
                    frame_bytes,
                    correlation_id,
                    ..
                }) => skips.push((frame_bytes, correlation_id)),
                Ok(Event::Drained) if drained => break,
                Ok(Event::Drained) => {}
                Ok(Event::Blocked { .. }) => unreachable!(),
                Err(error) => return (frames, skips, Some(error)),
            }
        }
        (frames, skips, None)
    }

    fn framed(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(frame);
        }
        out
    }

    #[test]
    fn oversized_frames_are_skipped_with_their_tail() {
        let mut big = vec![7u8; 1000];
        big[1000 - 48 + 24..1000 - 48 + 32].copy_from_slice(&42u64.to_le_bytes());
        let small = vec![1u8; 56];
        let stream = framed(&[small.clone(), big, small.clone()]);
        let (frames, skips, error) = run(&stream, &[3, 100, 7], 512);
        assert_eq!(error, None);
        assert_eq!(frames, vec![small.clone(), small]);
        assert_eq!(skips, vec![(1000, 42)]);
    }

    #[test]
    fn a_huge_prefix_is_an_error() {
        let stream = ((SKIP_BYTES_MAX + 1) as u32).to_le_bytes();
        let (_, _, error) = run(&stream, &[1], 512);
        assert!(matches!(error, Some(ReadError::TooLarge { .. })));
    }

    #[test]
    fn blocked_alloc_loses_nothing() {
        let stream = framed(&[vec![5u8; 64]]);
        let mut reader = FrameReader::<Vec<u8>>::new(512);
        let mut pos = 0;
        let mut read = |out: &mut [u8]| {
            let n = out.len().min(stream.len() - pos);
            out[..n].copy_from_slice(&stream[pos..pos + n]);
            pos += n;
            n
        };
        assert!(matches!(
            reader.next(&mut read, &mut |_| None),
            Ok(Event::Blocked { frame_bytes: 64 })
        ));
        match reader.next(&mut read, &mut |n| Some(vec![0; n])) {
            Ok(Event::Frame(frame)) => assert_eq!(frame, vec![5u8; 64]),
            other => panic!("{other:?}"),
        }
        assert!(reader.at_boundary());
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_frames(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            chunks in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let stream = framed(&frames);
            let (got, skips, error) = run(&stream, &chunks, 200);
            prop_assert_eq!(error, None);
            let expected: Vec<Vec<u8>> = frames.iter().filter(|f| f.len() <= 200).cloned().collect();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(skips.len(), frames.iter().filter(|f| f.len() > 200).count());
        }

        #[test]
        fn staging_yields_the_same_frames(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            chunks in proptest::collection::vec(1usize..400, 1..8),
            staging in 1usize..512,
        ) {
            let stream = framed(&frames);
            prop_assert_eq!(run_staged(&stream, &chunks, 200, Some(staging)), run(&stream, &chunks, 200));
        }

        #[test]
        fn arbitrary_bytes_never_panic(stream in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = run(&stream, &[13], 256);
        }
    }
}
