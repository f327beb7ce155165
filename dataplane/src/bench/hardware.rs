//! Placeholder: raw cache-line ping-pong.
