//! `dataplane agents | deploy | swap | undeploy`: a client of a running node's admin
//! endpoint (`docs/admin.md`). Plain HTTP/1.1 with `ureq`; the server's error message is
//! the command's error (exit status 1).

use std::io::Read as _;
use std::time::Duration;

use anyhow::Context as _;
use dataplane_control::{AgentId, ModuleSource};

use crate::admin::api::{AgentInfo, DeployRequest, ErrorBody, LimitsRequest};

/// How long the client waits for an answer: a deploy compiles its module first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest answer read, in bytes.
const RESPONSE_BYTES_MAX: u64 = 64 << 20;

/// Where the node's admin endpoint is.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The node's admin endpoint, HOST:PORT (its admin.listen)
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "DATAPLANE_ADMIN",
        default_value = "127.0.0.1:9090"
    )]
    pub admin: String,
}

/// `dataplane agents`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentsArgs {
    /// Print the JSON list instead of a table
    #[arg(long)]
    pub json: bool,
    /// The endpoint.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `dataplane deploy` and `dataplane swap`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// The agent's name: 1 to 64 bytes of A-Z a-z 0-9 . _ -
    #[arg(long, value_name = "ID")]
    pub id: AgentId,
    /// builtin:NAME, or a .wasm/.wat file (a relative path is made absolute here; the
    /// node reads the file)
    #[arg(long, value_name = "SRC")]
    pub module: ModuleSource,
    /// Text the agent's dp_init receives [default: empty]
    #[arg(long, value_name = "TEXT")]
    pub config: Option<String>,
    /// Seed of the agent's random host function [default: from the id]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Linear memory limit, bytes, a multiple of 65536 [default: wasm.agent_defaults]
    #[arg(long, value_name = "BYTES")]
    pub memory_bytes_max: Option<u64>,
    /// Time limit per call into the agent, milliseconds [default: wasm.agent_defaults]
    #[arg(long, value_name = "MS")]
    pub time_per_message_ms: Option<u64>,
    /// Largest payload in or out, bytes [default: wasm.agent_defaults]
    #[arg(long, value_name = "BYTES")]
    pub message_bytes_max: Option<u64>,
    /// Sends and replies per call [default: wasm.agent_defaults]
    #[arg(long, value_name = "N")]
    pub sends_per_message_max: Option<u64>,
    /// The endpoint.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `dataplane undeploy`.
#[derive(Debug, Clone, clap::Args)]
pub struct UndeployArgs {
    /// The agent's name
    #[arg(long, value_name = "ID")]
    pub id: AgentId,
    /// The endpoint.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `dataplane agents`: the agents of the node, as a table (or JSON).
pub fn agents(args: &AgentsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.admin);
    let body = client.send("GET", "/agents", None)?;
    if args.json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let agents: Vec<AgentInfo> =
        serde_json::from_str(&body).context("the admin endpoint answered an unexpected list")?;
    print!("{}", agents_table(&agents));
    Ok(())
}

/// `dataplane deploy` (`swap` false) or `dataplane swap`.
pub fn deploy(args: &DeployArgs, swap: bool) -> anyhow::Result<()> {
    let client = Client::new(&args.admin);
    let module = match &args.module {
        ModuleSource::File(path) => ModuleSource::File(
            std::path::absolute(path)
                .with_context(|| format!("making {} absolute", path.display()))?,
        ),
        builtin @ ModuleSource::Builtin(_) => builtin.clone(),
    };
    let request = DeployRequest {
        id: Some(args.id.to_string()),
        module: module.to_string(),
        config: args.config.clone().unwrap_or_default(),
        seed: args.seed,
        limits: LimitsRequest {
            memory_bytes_max: args.memory_bytes_max,
            time_per_message_ms: args.time_per_message_ms,
            message_bytes_max: args.message_bytes_max,
            sends_per_message_max: args.sends_per_message_max,
        },
    };
    let body = serde_json::to_string(&request).context("encoding the request")?;
    let answer = if swap {
        client.send("PUT", &format!("/agents/{}", args.id), Some(&body))?
    } else {
        client.send("POST", "/agents", Some(&body))?
    };
    print_change(&answer)
}

/// `dataplane undeploy`.
pub fn undeploy(args: &UndeployArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.admin);
    let answer = client.send("DELETE", &format!("/agents/{}", args.id), None)?;
    print_change(&answer)
}

fn print_change(answer: &str) -> anyhow::Result<()> {
    let agent: AgentInfo =
        serde_json::from_str(answer).context("the admin endpoint answered unexpectedly")?;
    println!(
        "{} {} (id {}, shard {}){}",
        agent.state,
        agent.id,
        agent.agent_id,
        agent.shard,
        agent
            .module
            .map(|module| format!(": {module}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// The agents as a table, one row each.
#[must_use]
pub fn agents_table(agents: &[AgentInfo]) -> String {
    let width = agents
        .iter()
        .map(|agent| agent.id.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let mut out = format!(
        "{:<width$}  {:>5}  {:<10}  {:>8}  {:>6}  MODULE\n",
        "ID", "SHARD", "STATE", "RESTARTS", "QUEUED"
    );
    for agent in agents {
        out.push_str(&format!(
            "{:<width$}  {:>5}  {:<10}  {:>8}  {:>6}  {}\n",
            agent.id,
            agent.shard,
            agent.state,
            agent.restarts,
            agent.queued_frames,
            agent.module.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// A client of one admin endpoint.
struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(args: &AdminArgs) -> Client {
        let base = if args.admin.contains("://") {
            args.admin.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", args.admin)
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build();
        Client {
            base,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends one request; the body of a 2xx answer, else the server's error.
    fn send(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body),
            ("PUT", Some(body)) => self
                .agent
                .put(&url)
                .header("Content-Type", "application/json")
                .send(body),
            _ => anyhow::bail!("{method} {path}: not a request this client makes"),
        };
        let mut response = result.with_context(|| {
            format!(
                "cannot reach the admin endpoint at {} (is a node running there with \
                 admin.listen set? --admin HOST:PORT picks another)",
                self.base
            )
        })?;
        let status = response.status();
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .take(RESPONSE_BYTES_MAX)
            .read_to_string(&mut text)
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        if status.is_success() {
            return Ok(text);
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(error) => anyhow::bail!("{}", error.error),
            Err(_) => anyhow::bail!("{method} {url}: HTTP {status}: {}", text.trim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_table_has_a_header_and_a_row_per_agent() {
        let agents = vec![AgentInfo {
            id: "echo".into(),
            agent_id: "3000e56026044164".into(),
            shard: 1,
            state: "running".into(),
            restarts: 0,
            queued_frames: 3,
            module: Some("builtin:echo".into()),
        }];
        let table = agents_table(&agents);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID"));
        assert!(lines[1].starts_with("echo"));
        assert!(lines[1].ends_with("builtin:echo"));
    }

    #[test]
    fn relative_module_paths_are_made_absolute() {
        let path = std::path::absolute(Path::new("x.wasm")).unwrap();
        assert!(path.is_absolute());
        assert!(path.ends_with("x.wasm"));
    }
}
