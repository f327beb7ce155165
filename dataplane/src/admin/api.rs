//! The admin API's JSON bodies, shared by the server (`admin`) and its client (the
//! `agents`, `deploy`, `swap` and `undeploy` subcommands). `docs/admin.md` documents them.

use serde::{Deserialize, Serialize};

/// The body of `POST /agents` (deploy) and `PUT /agents/{id}` (hot swap).
///
/// Unknown keys are refused, so a typo cannot silently fall back to a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The agent's name: 1 to 64 bytes of `[A-Za-z0-9._-]`. Required by `POST`; a `PUT`
    /// takes it from the path (and refuses a different one here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `builtin:<name>` or an absolute path to a `.wasm` (or `.wat`) file, read by the node.
    pub module: String,
    /// The text the agent's `dp_init` receives. Default: empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
    /// Seed of the agent's `random` host function. Default: from the agent's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Limits; each key left out is taken from `wasm.agent_defaults`.
    #[serde(default, skip_serializing_if = "LimitsRequest::is_empty")]
    pub limits: LimitsRequest,
}

/// The optional `limits` of a [`DeployRequest`]: the keys of `agents[].limits` in the
/// configuration, with the same bounds (`docs/configuration.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// Linear memory the agent may grow to, in bytes (a multiple of 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes_max: Option<u64>,
    /// How long one call into the agent may run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_per_message_ms: Option<u64>,
    /// Largest payload in or out, and largest `config`, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_bytes_max: Option<u64>,
    /// Sends and replies per call into the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sends_per_message_max: Option<u64>,
}

impl LimitsRequest {
    /// Whether no key is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == LimitsRequest::default()
    }
}

/// One agent, as `GET /agents` lists it and as deploy, swap and undeploy answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's name, or its wire id in hex when the node does not know the name.
    pub id: String,
    /// The wire id (FNV-1a of the name), 16 hex digits.
    pub agent_id: String,
    /// The shard that owns it.
    pub shard: usize,
    /// `running`, `restarting` (waiting out a back-off after a crash) or `stopped`
    /// (crashed too often); `deployed`, `swapped` or `undeployed` in the answer to a
    /// change.
    pub state: String,
    /// Successful restarts since it was deployed or last swapped.
    pub restarts: u32,
    /// Frames waiting in its mailbox.
    pub queued_frames: usize,
    /// What it runs: `builtin:<name>`, a file path, or `native:<kind>`; `null` if the
    /// node does not know.
    pub module: Option<String>,
}

/// The body of every error answer (4xx and 5xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, naming the field, module, export or import at fault.
    pub error: String,
}
