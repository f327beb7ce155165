//! What the admin endpoint does, independent of HTTP plumbing: routing, validation,
//! module loading and the control jobs sent to the shards.
//!
//! Everything here runs on the admin thread, one request at a time. Modules are compiled
//! here (or mapped from the cache), never on a shard; a shard only receives a job that
//! builds the (not `Send`) `WasmAgent` from `Send` parts and deploys, swaps or undeploys
//! it, and a reply through a channel, awaited with a timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dataplane_control::{Config, ModuleSource, WasmAgentSpec};
use dataplane_edge::server::EdgeMetrics;
use dataplane_frame::AgentId;
use dataplane_runtime::{NodeHandle, RuntimeError};
use dataplane_shard::{owner_shard, AgentState, AgentStatus, DeployError};
use dataplane_wasm::{AgentModule, AgentSpec, WasmAgent};

use super::api::{AgentInfo, DeployRequest, ErrorBody};
use super::metrics;
use crate::node::{AgentCode, PlannedAgent};
use crate::wasm::{agent_limits, load_module, WasmAgents};

/// How long the admin thread waits for a shard to run a job.
pub const SHARD_JOB_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

/// `application/json`.
pub const JSON: &str = "application/json";

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: &impl serde::Serialize) -> Reply {
        // Serializing plain structs, strings and numbers into a String cannot fail.
        let body = serde_json::to_string(body)
            .unwrap_or_else(|error| format!("{{\"error\":\"cannot encode the answer: {error}\"}}"));
        Reply {
            status,
            content_type: JSON,
            body: body + "\n",
            allow: None,
        }
    }

    /// An error answer: `{"error": "..."}`.
    pub fn error(status: u16, error: impl Into<String>) -> Reply {
        Reply::json(
            status,
            &ErrorBody {
                error: error.into(),
            },
        )
    }
}

/// A request that failed, with its status.
#[derive(Debug)]
pub(crate) struct Failure {
    status: u16,
    message: String,
}

impl Failure {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<Failure> for Reply {
    fn from(failure: Failure) -> Reply {
        Reply::error(failure.status, failure.message)
    }
}

/// A shard that did not run a job: 503 while the node stops or the queue is full, 504
/// after the timeout.
impl From<RuntimeError> for Failure {
    fn from(error: RuntimeError) -> Failure {
        let status = match error {
            RuntimeError::JobTimeout { .. } => 504,
            RuntimeError::Stopping
            | RuntimeError::ControlQueueFull { .. }
            | RuntimeError::JobLost { .. } => 503,
            _ => 500,
        };
        Failure::new(status, error.to_string())
    }
}

/// What the admin endpoint knows about an agent that the shard does not: its name and
/// what it runs.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    module: String,
}

/// The admin endpoint's state.
#[derive(Debug)]
pub struct Service {
    node: NodeHandle,
    wasm: WasmAgents,
    /// The node's validated configuration: requests are validated against it.
    config: Config,
    known: HashMap<AgentId, Known>,
    /// Built-in modules loaded so far (file modules are read again at every deploy, so a
    /// swap picks up a new version of the same file).
    builtins: HashMap<String, Arc<AgentModule>>,
    /// The QUIC edge's counters, if the node has an edge.
    edge: Option<EdgeMetrics>,
}

impl Service {
    /// The service for a node started from `config` with `agents`.
    #[must_use]
    pub fn new(
        node: NodeHandle,
        wasm: WasmAgents,
        config: Config,
        agents: &[PlannedAgent],
    ) -> Service {
        let known = agents
            .iter()
            .map(|agent| {
                let module = match &agent.code {
                    AgentCode::Wasm(spec) => spec.module.to_string(),
                    AgentCode::Native(builtin) => {
                        format!("native:{}", format!("{builtin:?}").to_lowercase())
                    }
                };
                let name = agent.name.clone();
                (agent.id, Known { name, module })
            })
            .collect();
        Service {
            node,
            wasm,
            config,
            known,
            builtins: HashMap::new(),
            edge: None,
        }
    }

    /// Also exports the QUIC edge's counters on `/metrics`.
    #[must_use]
    pub fn with_edge_metrics(mut self, edge: EdgeMetrics) -> Service {
        self.edge = Some(edge);
        self
    }

    /// Answers one request. `body` is `Err` with a reply when it could not be read.
    pub fn handle(&mut self, method: &str, url: &str, body: Result<Vec<u8>, Reply>) -> Reply {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let result = match (method, segments.as_slice()) {
            ("GET", ["health"]) => Ok(self.health()),
            ("GET", ["metrics"]) => self.metrics(),
            ("GET", ["agents"]) => self.list().map(|agents| Reply::json(200, &agents)),
            ("POST", ["agents"]) => body.map_or_else(Ok, |body| {
                parse_request(&body).and_then(|request| self.deploy(request, None))
            }),
            ("GET", ["agents", name]) => self.one(name),
            ("PUT", ["agents", name]) => body.map_or_else(Ok, |body| {
                parse_request(&body).and_then(|request| self.deploy(request, Some(name)))
            }),
            ("DELETE", ["agents", name]) => self.undeploy(name),
            (_, ["health" | "metrics"]) => Ok(not_allowed(method, path, "GET")),
            (_, ["agents"]) => Ok(not_allowed(method, path, "GET, POST")),
            (_, ["agents", _]) => Ok(not_allowed(method, path, "GET, PUT, DELETE")),
            _ => Err(Failure::new(
                404,
                format!(
                    "no endpoint {path}: the admin API has /health, /metrics, /agents and \
                     /agents/{{id}} (docs/admin.md)"
                ),
            )),
        };
        result.unwrap_or_else(Reply::from)
    }

    fn health(&self) -> Reply {
        let status = if self.node.is_stopping() {
            "stopping"
        } else {
            "ok"
        };
        Reply::json(
            200,
            &serde_json::json!({"status": status, "shards": self.node.shards()}),
        )
    }

    fn metrics(&self) -> Result<Reply, Failure> {
        let snapshots = (0..self.node.shards())
            .map(|shard| {
                self.node
                    .call(shard, SHARD_JOB_TIMEOUT, metrics::snapshot)
                    .map_err(Failure::from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let text = metrics::encode(&snapshots, self.edge.as_deref())
            .map_err(|error| Failure::new(500, format!("cannot encode the metrics: {error}")))?;
        Ok(Reply {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body: text,
            allow: None,
        })
    }

    /// Every agent of every shard, by shard, then name.
    fn list(&self) -> Result<Vec<AgentInfo>, Failure> {
        let mut agents = Vec::new();
        for shard in 0..self.node.shards() {
            let statuses = self.node.call(shard, SHARD_JOB_TIMEOUT, |core, _| {
                core.agent_ids()
                    .filter_map(|id| Some((id, core.agent_status(id)?)))
                    .collect::<Vec<_>>()
            })?;
            agents.extend(
                statuses
                    .into_iter()
                    .map(|(id, status)| self.info(id, shard, &status)),
            );
        }
        agents.sort_by(|a, b| (a.shard, &a.id).cmp(&(b.shard, &b.id)));
        Ok(agents)
    }

    fn one(&self, name: &str) -> Result<Reply, Failure> {
        let id = AgentId::from_name(name);
        let shard = owner_shard(id, self.node.shards());
        let status = self.node.call(shard, SHARD_JOB_TIMEOUT, move |core, _| {
            core.agent_status(id)
        })?;
        match status {
            Some(status) => Ok(Reply::json(200, &self.info(id, shard, &status))),
            None => Err(not_deployed(name)),
        }
    }

    fn info(&self, id: AgentId, shard: usize, status: &AgentStatus) -> AgentInfo {
        let known = self.known.get(&id);
        AgentInfo {
            id: known.map_or_else(|| id.to_string(), |known| known.name.clone()),
            agent_id: id.to_string(),
            shard,
            state: state_name(status.state).to_owned(),
            restarts: status.restarts,
            queued_frames: status.queued_frames,
            module: known.map(|known| known.module.clone()),
        }
    }

    /// Deploys (`swap_name` is `None`) or hot-swaps the agent of `request`.
    fn deploy(
        &mut self,
        request: DeployRequest,
        swap_name: Option<&str>,
    ) -> Result<Reply, Failure> {
        let name = match (swap_name, request.id.as_deref()) {
            (None, None) => return Err(Failure::new(400, "id: required")),
            (None, Some(name)) => name.to_owned(),
            (Some(path), Some(body)) if path != body => {
                return Err(Failure::new(
                    400,
                    format!("id = {body}: differs from the agent in the path, {path}"),
                ))
            }
            (Some(path), _) => path.to_owned(),
        };
        let spec = validate(&self.config, &name, &request)?;
        let id = AgentId::from_name(&name);
        let shard = owner_shard(id, self.node.shards());
        if swap_name.is_some() {
            // Refuse an unknown agent before compiling anything for it.
            let hosted = self
                .node
                .call(shard, SHARD_JOB_TIMEOUT, move |core, _| core.hosts(id))?;
            if !hosted {
                return Err(not_deployed(&name));
            }
        }
        let module = self.load(&spec.module)?;
        let agent_spec = AgentSpec {
            module,
            limits: agent_limits(&spec.limits),
            config: Arc::from(spec.config.as_bytes()),
            seed: spec.seed,
        };
        let host = self.wasm.host().clone();
        let swap = swap_name.is_some();
        let result = self.node.call(shard, SHARD_JOB_TIMEOUT, move |core, ctx| {
            // Built here: a WasmAgent is not Send. Whatever agent comes back (the old one
            // after a swap, the refused new one otherwise) is dropped on this shard.
            let agent = Box::new(WasmAgent::new(&host, id, agent_spec));
            if swap {
                core.replace(id, agent, ctx.now_ns)
                    .map(drop)
                    .map_err(|refused| refused.error)
            } else {
                core.deploy(id, agent, ctx.now_ns)
            }
        });
        let module = spec.module.to_string();
        if let Err(RuntimeError::JobTimeout { .. }) = &result {
            // The job may still run: remember what it would deploy.
            self.remember(id, &name, &module);
        }
        result?.map_err(|error| deploy_failure(&error, id, &name))?;
        self.remember(id, &name, &module);
        let (status, state) = if swap {
            (200, "swapped")
        } else {
            (201, "deployed")
        };
        tracing::info!(agent = %name, %id, shard, module, "{state}");
        Ok(Reply::json(
            status,
            &AgentInfo {
                id: name,
                agent_id: id.to_string(),
                shard,
                state: state.to_owned(),
                restarts: 0,
                queued_frames: 0,
                module: Some(module),
            },
        ))
    }

    fn undeploy(&mut self, name: &str) -> Result<Reply, Failure> {
        let id = AgentId::from_name(name);
        let shard = owner_shard(id, self.node.shards());
        let existed = self.node.call(shard, SHARD_JOB_TIMEOUT, move |core, ctx| {
            core.undeploy(id, ctx.now_ns)
        })?;
        if !existed {
            return Err(not_deployed(name));
        }
        let known = self.known.remove(&id);
        tracing::info!(agent = %name, %id, shard, "undeployed");
        Ok(Reply::json(
            200,
            &AgentInfo {
                id: name.to_owned(),
                agent_id: id.to_string(),
                shard,
                state: "undeployed".to_owned(),
                restarts: 0,
                queued_frames: 0,
                module: known.map(|known| known.module),
            },
        ))
    }

    fn remember(&mut self, id: AgentId, name: &str, module: &str) {
        let known = Known {
            name: name.to_owned(),
            module: module.to_owned(),
        };
        self.known.insert(id, known);
    }

    /// Compiles (or maps from the cache) the module of `source`, here on the admin thread.
    fn load(&mut self, source: &ModuleSource) -> Result<Arc<AgentModule>, Failure> {
        let cached = match source {
            ModuleSource::Builtin(name) => self
                .builtins
                .get(name)
                .cloned()
                .or_else(|| self.wasm.module(source)),
            ModuleSource::File(_) => None,
        };
        if let Some(module) = cached {
            return Ok(module);
        }
        let module = load_module(self.wasm.host(), source)
            .map_err(|error| Failure::new(422, format!("module {source}: {error:#}")))?;
        if let ModuleSource::Builtin(name) = source {
            self.builtins.insert(name.clone(), Arc::clone(&module));
        }
        Ok(module)
    }
}

/// Parses a deploy or swap body: JSON, no unknown keys.
fn parse_request(body: &[u8]) -> Result<DeployRequest, Failure> {
    serde_json::from_slice(body)
        .map_err(|error| Failure::new(400, format!("invalid request body: {error}")))
}

/// Checks `request` for agent `name` with the rules of the configuration file (an
/// `agents:` entry of `kind: wasm`, against the node's `shard` and `wasm` settings), by
/// running it through `dataplane_control` as a one-agent configuration. Limits left out
/// come from `wasm.agent_defaults`. A module file must be given by absolute path.
pub(crate) fn validate(
    config: &Config,
    name: &str,
    request: &DeployRequest,
) -> Result<WasmAgentSpec, Failure> {
    let internal = |error: serde_json::Error| Failure::new(500, format!("{error}"));
    let mut entry = serde_json::json!({
        "id": name,
        "kind": "wasm",
        "module": request.module,
        "config": request.config,
    });
    if let Some(seed) = request.seed {
        entry["seed"] = seed.into();
    }
    if !request.limits.is_empty() {
        entry["limits"] = serde_json::to_value(request.limits).map_err(internal)?;
    }
    let mut document = serde_json::to_value(config).map_err(internal)?;
    document["agents"] = serde_json::json!([entry]);
    // JSON is YAML (flow style): the configuration's own parser reads it.
    let text = serde_json::to_string(&document).map_err(internal)?;
    let checked = Config::from_yaml_str(&text, "request")
        .map_err(|error| Failure::new(400, error.to_string().replace("agents[0].", "")))?;
    let spec = checked
        .agents
        .into_iter()
        .next()
        .and_then(|agent| agent.wasm)
        .ok_or_else(|| Failure::new(500, "the checked request lost its agent"))?;
    if let ModuleSource::File(path) = &spec.module {
        if !path.is_absolute() {
            return Err(Failure::new(
                400,
                format!(
                    "module = {}: a module file must be an absolute path (the node reads \
                     it; `dataplane deploy` makes relative paths absolute)",
                    path.display()
                ),
            ));
        }
    }
    Ok(spec)
}

fn deploy_failure(error: &DeployError, id: AgentId, name: &str) -> Failure {
    let status = match error {
        DeployError::Duplicate { .. } => 409,
        DeployError::NotFound { .. } => 404,
        DeployError::Full { .. } => 503,
        DeployError::Start { .. } => 422,
        _ => 500,
    };
    let hex = id.to_string();
    Failure::new(
        status,
        error.to_string().replace(&hex, &format!("{name} ({hex})")),
    )
}

fn not_deployed(name: &str) -> Failure {
    let id = AgentId::from_name(name);
    Failure::new(404, format!("agent {name} ({id}) is not deployed"))
}

fn not_allowed(method: &str, path: &str, allow: &'static str) -> Reply {
    let mut reply = Reply::error(
        405,
        format!("{method} is not allowed on {path}; allowed: {allow}"),
    );
    reply.allow = Some(allow);
    reply
}

fn state_name(state: AgentState) -> &'static str {
    match state {
        AgentState::Running => "running",
        AgentState::Restarting { .. } => "restarting",
        AgentState::Stopped => "stopped",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::api::LimitsRequest;

    fn request(module: &str) -> DeployRequest {
        DeployRequest {
            module: module.to_owned(),
            ..DeployRequest::default()
        }
    }

    #[test]
    fn a_valid_request_takes_the_node_defaults() {
        let config = Config::embedded_default();
        let mut deploy = request("builtin:counter");
        deploy.seed = Some(7);
        deploy.config = "hello".into();
        deploy.limits.time_per_message_ms = Some(20);
        let spec = validate(&config, "counter", &deploy).unwrap();
        assert_eq!(spec.module, ModuleSource::Builtin("counter".into()));
        assert_eq!(spec.seed, Some(7));
        assert_eq!(spec.config, "hello");
        assert_eq!(spec.limits.time_per_message_ms.get(), 20);
        let defaults = config.wasm.agent_defaults;
        assert_eq!(spec.limits.memory_bytes_max, defaults.memory_bytes_max);
        assert_eq!(spec.limits.message_bytes_max, defaults.message_bytes_max);
    }

    #[test]
    fn bad_fields_are_named_as_in_the_configuration() {
        let config = Config::embedded_default();
        let limits = |limits: LimitsRequest| DeployRequest {
            limits,
            ..request("builtin:echo")
        };
        let cases = [
            ("bad name!", request("builtin:echo"), "id = bad name!"),
            ("a", request("builtin:Echo"), "module = builtin:Echo"),
            ("a", request(""), "module"),
            (
                "a",
                limits(LimitsRequest {
                    memory_bytes_max: Some(1000),
                    ..LimitsRequest::default()
                }),
                "limits.memory_bytes_max = 1000",
            ),
            (
                "a",
                limits(LimitsRequest {
                    time_per_message_ms: Some(0),
                    ..LimitsRequest::default()
                }),
                "limits.time_per_message_ms = 0",
            ),
            (
                "a",
                limits(LimitsRequest {
                    memory_bytes_max: Some(1 << 40),
                    ..LimitsRequest::default()
                }),
                "limits.memory_bytes_max",
            ),
            ("a", request("relative/x.wasm"), "absolute path"),
        ];
        for (name, deploy, expected) in cases {
            let failure = validate(&config, name, &deploy).unwrap_err();
            assert_eq!(failure.status, 400, "{}", failure.message);
            assert!(
                failure.message.contains(expected),
                "{expected:?} not in {:?}",
                failure.message
            );
            assert!(
                !failure.message.contains("agents[0]"),
                "{}",
                failure.message
            );
        }
    }

    #[test]
    fn a_config_longer_than_message_bytes_max_is_refused() {
        let config = Config::embedded_default();
        let mut deploy = request("builtin:echo");
        deploy.limits.message_bytes_max = Some(4);
        deploy.config = "too long".into();
        let failure = validate(&config, "a", &deploy).unwrap_err();
        assert!(failure.message.contains("config"), "{}", failure.message);
    }

    #[test]
    fn request_bodies_refuse_unknown_keys_and_bad_json() {
        let unknown =
            parse_request(br#"{"id":"a","module":"builtin:echo","modul":1}"#).unwrap_err();
        assert_eq!(unknown.status, 400);
        assert!(
            unknown.message.contains("unknown field `modul`"),
            "{}",
            unknown.message
        );
        let limits =
            parse_request(br#"{"module":"builtin:echo","limits":{"memory":1}}"#).unwrap_err();
        assert!(
            limits.message.contains("unknown field `memory`"),
            "{}",
            limits.message
        );
        let json = parse_request(b"{").unwrap_err();
        assert!(
            json.message.starts_with("invalid request body"),
            "{}",
            json.message
        );
        let negative = parse_request(br#"{"module":"builtin:echo","seed":-1}"#).unwrap_err();
        assert_eq!(negative.status, 400);
    }

    #[test]
    fn deploy_errors_name_the_agent() {
        let id = AgentId::from_name("counter");
        let failure = deploy_failure(&DeployError::Duplicate { agent: id }, id, "counter");
        assert_eq!(failure.status, 409);
        assert_eq!(
            failure.message,
            format!("agent counter ({id}) is already deployed")
        );
    }
}
