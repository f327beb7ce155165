//! The QUIC edge: how clients and other nodes reach agents.
//!
//! - [`protocol`], [`framing`], [`reader`], [`cid`], [`tls`]: the wire protocol (docs/protocol.md) as
//!   pure code, shared by the server and clients.
//! - [`server`] (feature `server`): one quiche server per shard, polled by the shard's
//!   driver, routing client frames into the shard without re-encoding them.
//! - [`socket`]: `SO_REUSEPORT` binding and batched UDP I/O.

#![warn(missing_docs)]

pub mod cid;
pub mod framing;
pub mod protocol;
pub mod reader;
#[cfg(feature = "server")]
pub mod server;
pub mod socket;
pub mod tls;

pub use protocol::{ErrorCode, ALPN_V1};
pub use tls::{Fingerprint, TlsError};

/// Helpers the unit tests share with the end-to-end tests.
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_common;
