//! The WASM host: agents are WebAssembly modules run by wasmtime.
//!
//! - [`Host`]: one per process: the engine (pooling allocator sized from the
//!   configuration), the linker of the ABI's host functions, the epoch ticker that
//!   enforces time limits, and the on-disk cache of compiled modules.
//! - [`AgentModule`]: a module compiled once (or mapped from the cache), checked against
//!   the ABI, pre-linked into an `InstancePre`.
//! - [`WasmAgent`]: one agent: a `Store` and instance on its shard, behind the shard's
//!   `Agent` trait, so the shard core does not know or care that it runs WASM.
//!
//! The ABI is `docs/agent-abi.md`; [`abi`] is its code.

#![warn(missing_docs)]

pub mod abi;
mod agent;
mod cache;
mod error;
mod host;
mod module;
mod ticker;

pub use agent::{AgentData, AgentLimits, AgentSpec, WasmAgent};
pub use cache::CacheOutcome;
pub use error::WasmError;
pub use host::{Host, HostConfig, Profiling};
pub use module::AgentModule;
pub use ticker::TickerPace;
