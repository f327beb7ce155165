//! The `dataplane` node: command line, node start-up, the admin endpoint and the `bench`
//! suites.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so that the peer-baseline
//! runner in `benches/` can run the very same suites in the same process.

pub mod admin;
pub mod agents;
pub mod bench;
pub mod cli;
pub mod edge;
pub mod node;
pub mod signals;
pub mod wasm;
