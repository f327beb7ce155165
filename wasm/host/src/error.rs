//! Why a module or an agent was refused.

use std::path::PathBuf;

/// A module that cannot be loaded, or an agent that cannot be started. Every variant says
/// which module, export or import is at fault, so that a refused deploy is actionable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// The engine could not be built from the configuration.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// A module file could not be read.
    #[error("cannot read module {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly module.
    #[error("module {module} is not valid WebAssembly: {reason}")]
    Invalid {
        /// The module's name.
        module: String,
        /// wasmtime's validation message.
        reason: String,
    },
    /// A required export is missing.
    #[error("module {module} does not export {export} {expected} (agent ABI v1)")]
    MissingExport {
        /// The module's name.
        module: String,
        /// The export.
        export: &'static str,
        /// What it should be.
        expected: String,
    },
    /// An export has the wrong type.
    #[error("module {module} exports {export} as {found}, the agent ABI v1 needs {expected}")]
    WrongExport {
        /// The module's name.
        module: String,
        /// The export.
        export: &'static str,
        /// What it should be.
        expected: String,
        /// What it is.
        found: String,
    },
    /// An import the host does not provide.
    #[error(
        "module {module} imports {import_module}.{name}, which the host does not provide \
         (agent ABI v1 offers only dataplane_v1.{{send, reply, log, now_ns, self_id, random}})"
    )]
    UnknownImport {
        /// The module's name.
        module: String,
        /// The import's module.
        import_module: String,
        /// The import's name.
        name: String,
    },
    /// A host function imported with the wrong signature.
    #[error(
        "module {module} imports dataplane_v1.{name} as {found}, the host provides {expected}"
    )]
    WrongImport {
        /// The module's name.
        module: String,
        /// The import.
        name: String,
        /// What the host provides.
        expected: String,
        /// What the module asks for.
        found: String,
    },
    /// Every instance slot of the pooling allocator is in use: back-pressure, try later
    /// or raise `wasm.agents_per_shard_max`.
    #[error("agent instance pool is full ({slots} slots); undeploy agents or raise wasm.agents_per_shard_max")]
    PoolFull {
        /// Slots in the pool.
        slots: u32,
    },
    /// Instantiation failed for another reason.
    #[error("cannot instantiate module {module}: {reason}")]
    Instantiate {
        /// The module's name.
        module: String,
        /// Why.
        reason: String,
    },
    /// `dp_inbox` refused or returned an address outside memory.
    #[error("module {module}: dp_inbox({capacity}) returned {address:#x}, not a buffer inside its memory")]
    Inbox {
        /// The module's name.
        module: String,
        /// The capacity asked for.
        capacity: u32,
        /// What came back.
        address: u32,
    },
    /// `dp_init` returned non-zero.
    #[error("module {module}: dp_init returned {code}")]
    InitFailed {
        /// The module's name.
        module: String,
        /// The code.
        code: i32,
    },
    /// `dp_init` (or `dp_inbox`, or a start function) trapped.
    #[error("module {module} trapped while starting: {reason}")]
    InitTrap {
        /// The module's name.
        module: String,
        /// The trap.
        reason: String,
    },
    /// The agent's configuration does not fit in its inbox.
    #[error(
        "configuration of {bytes} bytes exceeds the agent's message_bytes_max of {limit_bytes}"
    )]
    ConfigTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
}
