//! The file's shape as serde sees it, before any rule is checked.
//!
//! Every leaf is a [`Scalar`] (the text of a YAML scalar), so that a wrong type and a wrong
//! value are refused the same way: by `validate`, with the field's dotted name. Serde still
//! refuses unknown fields, duplicate keys and structure errors, with line and column.
//! A field missing from the file takes its default from [`crate::limits`]; an explicit
//! `null` clears an optional field and is refused for a required one.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::limits::{self, Bounds};
use crate::types::{IdlePolicy, ShardCount, TickerPace, WasmProfiling};

/// The text of one YAML scalar exactly as written (`0x10` stays `0x10`), whatever its
/// YAML type; validation parses numbers as plain decimal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(String);

impl Scalar {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<T: fmt::Display> From<T> for Scalar {
    fn from(value: T) -> Self {
        Self(value.to_string())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a single value (number or text), not a list or mapping")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Scalar, E> {
        Ok(Scalar::from(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar, E> {
        Ok(Scalar::from(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar, E> {
        Ok(Scalar::from(value))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Scalar, E> {
        Ok(Scalar::from(value))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Scalar, E> {
        Ok(Scalar::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Scalar, E> {
        Ok(Scalar::from(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar, E> {
        Ok(Scalar::from(value))
    }
}

/// A required field: `None` only when the file wrote `null`.
pub(crate) type Field = Option<Scalar>;

fn default_of(bounds: Bounds) -> Field {
    Some(Scalar::from(bounds.default))
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub(crate) node: RawNode,
    pub(crate) shard: RawShard,
    pub(crate) wasm: RawWasm,
    pub(crate) agents: Option<Vec<RawAgent>>,
    pub(crate) edge: RawEdge,
    pub(crate) admin: RawAdmin,
    pub(crate) log: RawLog,
}

/// `node:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawNode {
    pub(crate) shards: Field,
    pub(crate) cpuset: Option<Scalar>,
    pub(crate) idle: Field,
    pub(crate) memlock_bytes_min: Field,
    pub(crate) io_memory_bytes: Field,
}

impl Default for RawNode {
    fn default() -> Self {
        Self {
            shards: Some(Scalar::from(ShardCount::default())),
            cpuset: None,
            idle: Some(Scalar::from(IdlePolicy::default())),
            memlock_bytes_min: default_of(limits::MEMLOCK_BYTES_MIN),
            io_memory_bytes: default_of(limits::IO_MEMORY_BYTES),
        }
    }
}

/// `shard:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawShard {
    pub(crate) ring_capacity_frames: Field,
    pub(crate) mailbox_capacity_frames: Field,
    pub(crate) frame_pool_frames_max: Field,
    pub(crate) frame_bytes_max: Field,
    pub(crate) poll_budget_messages: Field,
    pub(crate) ring_batch_frames: Field,
    pub(crate) starvation_limit_passes: Field,
    pub(crate) agents_max: Field,
    pub(crate) stall_threshold_us: Field,
}

impl Default for RawShard {
    fn default() -> Self {
        Self {
            ring_capacity_frames: default_of(limits::RING_CAPACITY_FRAMES),
            mailbox_capacity_frames: default_of(limits::MAILBOX_CAPACITY_FRAMES),
            frame_pool_frames_max: default_of(limits::FRAME_POOL_FRAMES_MAX),
            frame_bytes_max: default_of(limits::FRAME_BYTES_MAX),
            poll_budget_messages: default_of(limits::POLL_BUDGET_MESSAGES),
            ring_batch_frames: default_of(limits::RING_BATCH_FRAMES),
            starvation_limit_passes: default_of(limits::STARVATION_LIMIT_PASSES),
            agents_max: default_of(limits::AGENTS_MAX),
            stall_threshold_us: default_of(limits::STALL_THRESHOLD_US),
        }
    }
}

/// `wasm:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawWasm {
    pub(crate) agents_per_shard_max: Field,
    pub(crate) memory_bytes_max: Field,
    pub(crate) memory_reservation_bytes: Option<Scalar>,
    pub(crate) epoch_tick_us: Field,
    pub(crate) ticker_pace: Field,
    pub(crate) cache_dir: Option<Scalar>,
    pub(crate) profiling: Field,
    pub(crate) restart: RawRestart,
    pub(crate) agent_defaults: RawAgentDefaults,
}

impl Default for RawWasm {
    fn default() -> Self {
        Self {
            agents_per_shard_max: default_of(limits::WASM_AGENTS_PER_SHARD_MAX),
            memory_bytes_max: default_of(limits::WASM_MEMORY_BYTES_MAX),
            memory_reservation_bytes: None,
            epoch_tick_us: default_of(limits::WASM_EPOCH_TICK_US),
            ticker_pace: Some(Scalar::from(TickerPace::default())),
            cache_dir: Some(Scalar::from(limits::WASM_CACHE_DIR_DEFAULT)),
            profiling: Some(Scalar::from(WasmProfiling::default())),
            restart: RawRestart::default(),
            agent_defaults: RawAgentDefaults::default(),
        }
    }
}

/// `wasm.restart:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRestart {
    pub(crate) max_restarts: Field,
    pub(crate) window_ms: Field,
    pub(crate) backoff_initial_ms: Field,
    pub(crate) backoff_max_ms: Field,
}

impl Default for RawRestart {
    fn default() -> Self {
        Self {
            max_restarts: default_of(limits::RESTART_MAX_RESTARTS),
            window_ms: default_of(limits::RESTART_WINDOW_MS),
            backoff_initial_ms: default_of(limits::RESTART_BACKOFF_INITIAL_MS),
            backoff_max_ms: default_of(limits::RESTART_BACKOFF_MAX_MS),
        }
    }
}

/// `wasm.agent_defaults:` every key has a default and is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAgentDefaults {
    pub(crate) memory_bytes_max: Field,
    pub(crate) time_per_message_ms: Field,
    pub(crate) message_bytes_max: Field,
    pub(crate) sends_per_message_max: Field,
}

impl Default for RawAgentDefaults {
    fn default() -> Self {
        Self {
            memory_bytes_max: default_of(limits::AGENT_MEMORY_BYTES_MAX),
            time_per_message_ms: default_of(limits::AGENT_TIME_PER_MESSAGE_MS),
            message_bytes_max: default_of(limits::AGENT_MESSAGE_BYTES_MAX),
            sends_per_message_max: default_of(limits::AGENT_SENDS_PER_MESSAGE_MAX),
        }
    }
}

/// `agents[].limits:` a key left out (or `null`) takes its value from
/// `wasm.agent_defaults`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAgentLimits {
    pub(crate) memory_bytes_max: Option<Scalar>,
    pub(crate) time_per_message_ms: Option<Scalar>,
    pub(crate) message_bytes_max: Option<Scalar>,
    pub(crate) sends_per_message_max: Option<Scalar>,
}

impl RawAgentLimits {
    /// The keys that are set, as `{key: value, ...}`, for error messages.
    pub(crate) fn describe(&self) -> String {
        let keys = [
            ("memory_bytes_max", &self.memory_bytes_max),
            ("time_per_message_ms", &self.time_per_message_ms),
            ("message_bytes_max", &self.message_bytes_max),
            ("sends_per_message_max", &self.sends_per_message_max),
        ];
        let set: Vec<String> = keys
            .into_iter()
            .filter_map(|(key, value)| Some(format!("{key}: {}", value.as_ref()?.as_str())))
            .collect();
        format!("{{{}}}", set.join(", "))
    }
}

/// One entry of `agents:`; `id` and `kind` are required, the others belong to
/// `kind: wasm` (`module` required there, the rest optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub(crate) id: Scalar,
    pub(crate) kind: Scalar,
    #[serde(default)]
    pub(crate) module: Option<Scalar>,
    #[serde(default)]
    pub(crate) config: Option<Scalar>,
    #[serde(default)]
    pub(crate) seed: Option<Scalar>,
    #[serde(default)]
    pub(crate) limits: Option<RawAgentLimits>,
}

impl RawAgent {
    /// The agent the embedded default deploys: the WASM echo agent.
    fn echo() -> Self {
        Self {
            id: Scalar::from("echo"),
            kind: Scalar::from("wasm"),
            module: Some(Scalar::from("builtin:echo")),
            config: None,
            seed: None,
            limits: None,
        }
    }
}

/// `edge:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawEdge {
    pub(crate) listen: Option<Scalar>,
    pub(crate) cert: Option<Scalar>,
    pub(crate) key: Option<Scalar>,
    pub(crate) client_ca: Option<Scalar>,
    pub(crate) dev_cert_dir: Field,
    pub(crate) connections_per_shard_max: Field,
    pub(crate) idle_timeout_ms: Field,
    pub(crate) stream_window_bytes: Field,
    pub(crate) egress_bytes_max: Field,
}

impl Default for RawEdge {
    fn default() -> Self {
        Self {
            listen: Some(Scalar::from(limits::EDGE_LISTEN_DEFAULT)),
            cert: None,
            key: None,
            client_ca: None,
            dev_cert_dir: Some(Scalar::from(limits::EDGE_DEV_CERT_DIR_DEFAULT)),
            connections_per_shard_max: default_of(limits::EDGE_CONNECTIONS_PER_SHARD_MAX),
            idle_timeout_ms: default_of(limits::EDGE_IDLE_TIMEOUT_MS),
            stream_window_bytes: default_of(limits::EDGE_STREAM_WINDOW_BYTES),
            egress_bytes_max: default_of(limits::EDGE_EGRESS_BYTES_MAX),
        }
    }
}

/// `admin:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    pub(crate) listen: Option<Scalar>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: Some(Scalar::from(limits::ADMIN_LISTEN_DEFAULT)),
        }
    }
}

/// `log:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    pub(crate) level: Field,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: Some(Scalar::from(limits::LOG_LEVEL_DEFAULT)),
        }
    }
}

impl RawConfig {
    /// The agents to deploy: the file's list, or the default `echo` agent (`kind: wasm`,
    /// `module: builtin:echo`) when the file has no `agents:` key.
    pub(crate) fn agents_or_default(&self) -> Vec<RawAgent> {
        self.agents
            .clone()
            .unwrap_or_else(|| vec![RawAgent::echo()])
    }
}
