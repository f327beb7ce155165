//! The wire protocol's constants: ALPN, stream layout, limits and error codes.
//! `docs/protocol.md` is the specification; this module is its machine-readable half.

/// The ALPN token of protocol version 1. A server speaks only the versions it lists; a
/// client that offers none of them fails the handshake (TLS alert 120,
/// `no_application_protocol`).
pub const ALPN_V1: &[u8] = b"dataplane/1";

/// ALPN tokens this build speaks, most preferred first, as quiche takes them.
pub const ALPNS: &[&[u8]] = &[ALPN_V1];

/// Bytes of the little-endian `u32` length in front of every frame on a stream.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The one stream frames travel on: the first client-initiated bidirectional stream.
/// Requests go client→server on it, replies (and anything an agent sends to the
/// connection) server→client on it.
pub const FRAME_STREAM_ID: u64 = 0;

/// Bidirectional streams a client may open (only [`FRAME_STREAM_ID`] carries frames).
pub const STREAMS_BIDI_MAX: u64 = 1;

/// Largest length prefix a peer may send: a frame longer than the receiver's frame
/// limit but within this is skipped and answered with an error frame; anything larger
/// closes the connection with [`ErrorCode::FrameTooLarge`].
pub const SKIP_BYTES_MAX: usize = 16 << 20;

/// Connection-level error codes (QUIC application `CONNECTION_CLOSE` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum ErrorCode {
    /// Orderly close.
    NoError = 0x0,
    /// The node hit a bug or an internal limit; retry elsewhere.
    Internal = 0x1,
    /// The peer broke the framing (a length prefix beyond [`SKIP_BYTES_MAX`], frames on a
    /// stream other than [`FRAME_STREAM_ID`], a finished frame stream with a partial
    /// frame).
    ProtocolViolation = 0x2,
    /// A length prefix larger than [`SKIP_BYTES_MAX`].
    FrameTooLarge = 0x3,
    /// The shard has as many connections as it accepts; retry later or elsewhere.
    ServerBusy = 0x4,
    /// The client let replies pile up past the connection's egress limit without reading.
    NotReading = 0x5,
    /// Mutual TLS is required and the client presented no certificate.
    CertificateRequired = 0x6,
    /// The server's certificate does not match the fingerprint the client pinned (sent
    /// by clients).
    FingerprintMismatch = 0x7,
    /// The node is shutting down.
    ShuttingDown = 0x8,
    /// The connection was idle past the idle timeout (reported locally, never sent).
    IdleTimeout = 0x9,
}

impl ErrorCode {
    /// The code for a number received in a `CONNECTION_CLOSE`, if it is one of ours.
    pub fn from_u64(code: u64) -> Option<ErrorCode> {
        Some(match code {
            0x0 => ErrorCode::NoError,
            0x1 => ErrorCode::Internal,
            0x2 => ErrorCode::ProtocolViolation,
            0x3 => ErrorCode::FrameTooLarge,
            0x4 => ErrorCode::ServerBusy,
            0x5 => ErrorCode::NotReading,
            0x6 => ErrorCode::CertificateRequired,
            0x7 => ErrorCode::FingerprintMismatch,
            0x8 => ErrorCode::ShuttingDown,
            0x9 => ErrorCode::IdleTimeout,
            _ => return None,
        })
    }

    /// The code's name as docs/protocol.md writes it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NoError => "NO_ERROR",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::ProtocolViolation => "PROTOCOL_VIOLATION",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::ServerBusy => "SERVER_BUSY",
            ErrorCode::NotReading => "NOT_READING",
            ErrorCode::CertificateRequired => "CERTIFICATE_REQUIRED",
            ErrorCode::FingerprintMismatch => "FINGERPRINT_MISMATCH",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::IdleTimeout => "IDLE_TIMEOUT",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:x})", self.name(), *self as u64)
    }
}

/// Writes the length prefix of a `frame_bytes`-byte frame.
pub fn length_prefix(frame_bytes: usize) -> [u8; LENGTH_PREFIX_BYTES] {
    (frame_bytes as u32).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_have_names() {
        for code in 0..=0x9u64 {
            let parsed = ErrorCode::from_u64(code).expect("known");
            assert_eq!(parsed as u64, code);
            assert!(parsed.to_string().contains(parsed.name()));
        }
        assert_eq!(ErrorCode::from_u64(0x1000), None);
    }
}
