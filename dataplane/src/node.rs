//! `dataplane run`: from a validated [`Config`] to a running node, and back on SIGINT/SIGTERM.
//!
//! Start-up order matters and is fixed here:
//! 1. (the caller) block SIGINT and SIGTERM ([`TerminationSignals`]), so the shard threads
//!    inherit the mask, and read the [`Machine`] before any thread is pinned;
//! 2. place the shards ([`plan`], pure) and print the placement and the limits;
//! 3. bind the admin endpoint (`admin.listen`), so a taken port fails before any shard
//!    starts; check locked memory, start the [`Node`] with the configured agents, start the
//!    admin thread, print "node ready";
//! 4. wait for a signal, stop the node and the admin thread, join, print each shard's
//!    counters.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::sync::Arc;

use anyhow::Context as _;
use dataplane_control::{Config, IdlePolicy, WasmAgentSpec};
use dataplane_frame::AgentId;
use dataplane_runtime::{AgentFactory, Node, RuntimeConfig, ShardReport};
use dataplane_shard::{owner_shard, Agent, ShardConfig};
use dataplane_topology::{CpuSet, Placement, PlacementRequest, ShardCount, Topology};

use crate::admin::{AdminServer, Service};
use crate::agents::Builtin;
use crate::signals::{self, TerminationSignals};
use crate::wasm::WasmAgents;

/// Everything the node needs to start, computed without side effects from the configuration
/// and the machine.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// Which CPU each shard runs on.
    pub placement: Placement,
    /// The runtime's settings, every field taken from the configuration.
    pub runtime: RuntimeConfig,
    /// The configured agents and their owning shards.
    pub agents: Vec<PlannedAgent>,
    /// Locked memory the node needs, in bytes ([`Config::memlock_bytes_required`]).
    pub memlock_bytes_required: u64,
}

/// One configured agent and where it will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAgent {
    /// The configured name.
    pub name: String,
    /// Its wire id (`AgentId::from_name(name)`).
    pub id: AgentId,
    /// What it runs.
    pub code: AgentCode,
    /// The shard that owns it.
    pub shard: usize,
}

/// What an agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCode {
    /// A native built-in (tests, benchmarks).
    Native(Builtin),
    /// A WASM module, with its configuration and limits.
    Wasm(WasmAgentSpec),
}

impl std::fmt::Display for AgentCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentCode::Native(builtin) => write!(f, "native {builtin:?}"),
            AgentCode::Wasm(spec) => write!(f, "wasm {}", spec.module),
        }
    }
}

/// The placement request for `config` on a process whose affinity mask is `affinity`.
#[must_use]
pub fn placement_request(config: &Config, affinity: CpuSet) -> PlacementRequest {
    let shards = match config.node.shards.exact() {
        Some(count) => ShardCount::Exact(count.get()),
        None => ShardCount::Auto,
    };
    let cpuset = config
        .node
        .cpuset
        .as_ref()
        .map(|list| list.cpus().iter().copied().collect());
    PlacementRequest {
        shards,
        cpuset,
        affinity,
    }
}

/// Places the shards of `config` on `topology`, with an error that says what to change.
pub fn place_shards(
    config: &Config,
    topology: &Topology,
    affinity: CpuSet,
) -> anyhow::Result<Placement> {
    let request = placement_request(config, affinity);
    dataplane_topology::place(topology, &request).with_context(|| {
        format!(
            "cannot place {} shard(s) (node.shards, --shards) on the usable CPUs: use \
             --shards auto, fewer shards, or a wider --cpuset / affinity mask",
            request.shards
        )
    })
}

/// Plans the node: placement, runtime settings, agents and their shards. Pure.
pub fn plan(config: &Config, topology: &Topology, affinity: CpuSet) -> anyhow::Result<NodePlan> {
    let placement = place_shards(config, topology, affinity)?;
    let shards = NonZeroUsize::new(placement.shards.len())
        .context("the placement has no shard (a bug in placement)")?;
    let agents = plan_agents(config, shards.get())?;
    Ok(NodePlan {
        runtime: runtime_config(config, &placement),
        memlock_bytes_required: config.memlock_bytes_required(shards),
        placement,
        agents,
    })
}

fn plan_agents(config: &Config, shards: usize) -> anyhow::Result<Vec<PlannedAgent>> {
    config
        .agents
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let code = match (&spec.wasm, Builtin::from_kind(spec.kind)) {
                (Some(wasm), _) => AgentCode::Wasm(wasm.clone()),
                (None, Some(builtin)) => AgentCode::Native(builtin),
                (None, None) => anyhow::bail!(
                    "agents[{index}].kind = {}: this binary has no such built-in agent",
                    spec.kind
                ),
            };
            let id = AgentId::from_name(spec.id.as_str());
            Ok(PlannedAgent {
                name: spec.id.as_str().to_owned(),
                id,
                code,
                shard: owner_shard(id, shards),
            })
        })
        .collect()
}

/// [`plan_agents`] for the tests of other modules.
#[cfg(test)]
pub(crate) fn plan_agents_for_test(config: &Config, shards: usize) -> Vec<PlannedAgent> {
    plan_agents(config, shards).unwrap()
}

/// The runtime settings for `config` with shards on `placement`'s CPUs.
///
/// Every `node` and `shard` field of the configuration is mapped. Two runtime settings have
/// no configuration key yet: the outbound queue towards each other shard holds as many
/// frames as the ring it feeds (`ring_capacity_frames`), so a full queue means a full ring;
/// and the per-agent burst, park timeout and drain timeout keep the runtime's defaults.
#[must_use]
pub fn runtime_config(config: &Config, placement: &Placement) -> RuntimeConfig {
    let cpus: Vec<usize> = placement.shards.iter().map(|shard| shard.cpu).collect();
    let shard_count = cpus.len().max(1);
    let idle = match config.node.idle {
        IdlePolicy::BusyPoll => dataplane_runtime::IdlePolicy::BusyPoll,
        IdlePolicy::Park => dataplane_runtime::IdlePolicy::Park,
    };
    let limits = &config.shard;
    let mut shard = ShardConfig::new(0, shard_count);
    shard.mailbox_capacity_frames = limits.mailbox_capacity_frames.get();
    shard.outbound_capacity_frames = limits.ring_capacity_frames.get();
    shard.frame_bytes_max = limits.frame_bytes_max.get();
    shard.frame_pool_frames_max = limits.frame_pool_frames_max.get();
    shard.starvation_limit_passes = limits.starvation_limit_passes.get();
    shard.agents_max = limits.agents_max.get();
    let mut runtime = RuntimeConfig::new(cpus, idle);
    runtime.shard = shard;
    runtime.ring_capacity_frames = limits.ring_capacity_frames.get();
    runtime.ring_batch_frames = limits.ring_batch_frames.get();
    runtime.poll_budget_messages = limits.poll_budget_messages.get();
    runtime.io_memory_bytes = config.node.io_memory_bytes;
    runtime.stall_threshold = limits.stall_threshold();
    runtime
}

/// The effective limits on one line, for the start-up report.
#[must_use]
pub fn limits_line(config: &Config, plan: &NodePlan) -> String {
    let runtime = &plan.runtime;
    let shard = &runtime.shard;
    format!(
        "limits: shards={} idle={} ring_capacity_frames={} ring_batch_frames={} \
         outbound_capacity_frames={} mailbox_capacity_frames={} frame_pool_frames_max={} \
         frame_bytes_max={} poll_budget_messages={} starvation_limit_passes={} agents_max={} \
         stall_threshold_us={} io_memory_bytes={} memlock_bytes_required={}",
        runtime.shards(),
        config.node.idle,
        runtime.ring_capacity_frames,
        runtime.ring_batch_frames,
        shard.outbound_capacity_frames,
        shard.mailbox_capacity_frames,
        shard.frame_pool_frames_max,
        shard.frame_bytes_max,
        runtime.poll_budget_messages,
        shard.starvation_limit_passes,
        shard.agents_max,
        config.shard.stall_threshold_us,
        runtime.io_memory_bytes,
        plan.memlock_bytes_required,
    )
}

/// The agents of the plan, one line each: `agent echo (id …) → shard 1 (echo)`.
#[must_use]
pub fn agents_lines(agents: &[PlannedAgent]) -> String {
    let mut out = String::new();
    if agents.is_empty() {
        out.push_str("agents: none\n");
    }
    for agent in agents {
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "agent {} (id {}, {}) → shard {}",
            agent.name, agent.id, agent.code, agent.shard
        );
    }
    out
}

/// Builds each shard's agents on its own thread: only those it owns. WASM agents are
/// created here and instantiated by the shard (in `on_start`), on its own core.
#[must_use]
pub fn agent_factory(agents: &[PlannedAgent], wasm: Option<&WasmAgents>) -> AgentFactory {
    let agents: Vec<(AgentId, AgentCode)> = agents
        .iter()
        .map(|agent| (agent.id, agent.code.clone()))
        .collect();
    let wasm = wasm.cloned();
    Arc::new(move |shard: usize, shards: usize| {
        agents
            .iter()
            .filter(|(id, _)| owner_shard(*id, shards) == shard)
            .filter_map(|(id, code)| -> Option<(AgentId, Box<dyn Agent>)> {
                match code {
                    AgentCode::Native(builtin) => Some((*id, builtin.build())),
                    AgentCode::Wasm(spec) => {
                        wasm.as_ref()?.build(*id, spec).map(|agent| (*id, agent))
                    }
                }
            })
            .collect()
    })
}

/// Per-shard counters as a table, one row per shard.
#[must_use]
pub fn stats_table(reports: &[ShardReport]) -> String {
    let mut out = format!(
        "{:>5} {:>4} {:>12} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8} {:>10}\n",
        "shard",
        "cpu",
        "handled",
        "sent_local",
        "sent_remote",
        "recv_remote",
        "backpressure",
        "stalls",
        "parks",
        "in_flight"
    );
    for report in reports {
        let stats = &report.stats;
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "{:>5} {:>4} {:>12} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8} {:>10}",
            report.shard,
            report.cpu,
            stats.messages_handled,
            stats.sent_local,
            stats.sent_remote,
            stats.received_remote,
            stats.backpressure,
            report.stalls,
            report.parks,
            report.frames_in_flight_at_exit,
        );
    }
    out
}

/// The machine as start-up reads it: topology and affinity mask, before any pinning.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The topology, from hwloc.
    pub topology: Topology,
    /// The CPUs this process may run on.
    pub affinity: CpuSet,
}

impl Machine {
    /// Reads this machine. Call it before any thread is pinned: the affinity mask of a
    /// pinned thread is its one CPU.
    pub fn read() -> anyhow::Result<Machine> {
        let topology = Topology::from_system()
            .context("reading this machine's topology with hwloc (is libhwloc 2.x installed?)")?;
        let affinity = dataplane_topology::current_affinity()
            .context("reading this process's CPU affinity mask")?;
        Ok(Machine { topology, affinity })
    }
}

/// Runs the node until SIGINT or SIGTERM (see the module docs for the order of steps).
/// `signals` must have been blocked before any thread was started.
pub fn run(config: &Config, machine: &Machine, signals: &TerminationSignals) -> anyhow::Result<()> {
    let plan = plan(config, &machine.topology, machine.affinity.clone())?;
    println!("{}", plan.placement);
    print!("{}", agents_lines(&plan.agents));
    println!("{}", limits_line(config, &plan));
    let admin_server = config.admin.listen.map(AdminServer::bind).transpose()?;
    dataplane_runtime::preflight::ensure_memlock(plan.memlock_bytes_required)
        .context("checking locked memory (node.memlock_bytes_min, node.io_memory_bytes)")?;
    let shards = plan.runtime.shards();
    // The WASM epoch ticker runs on the CPUs no shard took (none on a node with a shard
    // on every core: it then preempts a shard for each wake-up).
    let shard_cpus: Vec<usize> = plan.placement.shards.iter().map(|s| s.cpu).collect();
    let spare_cpus: Vec<usize> = machine
        .affinity
        .iter()
        .filter(|cpu| !shard_cpus.contains(cpu))
        .collect();
    let wasm = WasmAgents::prepare(config, shards, spare_cpus, &plan.agents)?;
    let mut runtime = plan.runtime;
    runtime.shard.restart = crate::wasm::restart_policy(config);
    let edge = crate::edge::plan(config, shards)?;
    if let Some(edge) = &edge {
        println!("{}", edge.summary);
    }
    let node = Node::start_with_io(
        runtime,
        agent_factory(&plan.agents, Some(&wasm)),
        edge.as_ref().map(|edge| edge.factory.clone()),
    )
    .context("starting the node's shards")?;
    let admin = match admin_server {
        Some(server) => {
            let addr = server.local_addr();
            let mut service = Service::new(node.handle(), wasm, config.clone(), &plan.agents);
            if let Some(edge) = &edge {
                service = service.with_edge_metrics(edge.metrics.clone());
            }
            match server.start(service) {
                Ok(admin) => {
                    println!("admin: listening on http://{addr}");
                    Some(admin)
                }
                Err(error) => {
                    node.request_stop();
                    // The start-up error is the one to report.
                    let _ = node.join();
                    return Err(error);
                }
            }
        }
        None => None,
    };
    tracing::info!(shards, agents = plan.agents.len(), "node ready");
    println!("node ready: {shards} shard(s); SIGINT or SIGTERM stops it");
    let signal = signals.wait().context("waiting for SIGINT or SIGTERM")?;
    tracing::info!(signal = %signals::name(signal), "stopping");
    // Shards first: a control job the admin thread waits for is then run or refused at
    // once, so the admin thread finishes its request quickly.
    node.request_stop();
    if let Some(admin) = admin {
        admin.stop();
    }
    let reports = node.join().context("stopping the node's shards")?;
    print!("{}", stats_table(&reports));
    Ok(())
}

#[cfg(test)]
mod tests {
    use dataplane_control::Overrides;

    use super::*;

    fn synthetic() -> Topology {
        Topology::from_synthetic("pack:2 numa:2 core:8 pu:2").unwrap()
    }

    fn config(overrides: Overrides) -> Config {
        Config::load(None, &overrides).unwrap()
    }

    #[test]
    fn plan_maps_every_limit() {
        let overrides = Overrides {
            shards: Some("4".parse().unwrap()),
            idle: Some(IdlePolicy::Park),
            ring_capacity_frames: Some(256),
            ring_batch_frames: Some(16),
            mailbox_capacity_frames: Some(128),
            frame_pool_frames_max: Some(4096),
            frame_bytes_max: Some(131_072),
            poll_budget_messages: Some(32),
            starvation_limit_passes: Some(8),
            agents_max: Some(10),
            stall_threshold_us: Some(100),
            io_memory_bytes: Some(1 << 20),
            ..Overrides::default()
        };
        let topology = synthetic();
        let plan = plan(&config(overrides), &topology, topology.cpus()).unwrap();
        let runtime = &plan.runtime;
        assert_eq!(runtime.shards(), 4);
        assert_eq!(runtime.idle, dataplane_runtime::IdlePolicy::Park);
        assert_eq!(
            (runtime.ring_capacity_frames, runtime.ring_batch_frames),
            (256, 16)
        );
        assert_eq!(runtime.poll_budget_messages, 32);
        assert_eq!(runtime.io_memory_bytes, 1 << 20);
        assert_eq!(runtime.stall_threshold.as_micros(), 100);
        let shard = &runtime.shard;
        assert_eq!(shard.shards, 4);
        assert_eq!(shard.mailbox_capacity_frames, 128);
        assert_eq!(shard.outbound_capacity_frames, 256);
        assert_eq!(shard.frame_pool_frames_max, 4096);
        assert_eq!(shard.frame_bytes_max, 131_072);
        assert_eq!(shard.starvation_limit_passes, 8);
        assert_eq!(shard.agents_max, 10);
        assert_eq!(plan.memlock_bytes_required, 8 << 20);
    }

    #[test]
    fn auto_takes_one_shard_per_core_and_memlock_scales() {
        let overrides = Overrides {
            memlock_bytes_min: Some(2 << 20),
            ..Overrides::default()
        };
        let topology = synthetic();
        let plan = plan(&config(overrides), &topology, topology.cpus()).unwrap();
        assert_eq!(plan.placement.shards.len(), 32);
        assert_eq!(plan.memlock_bytes_required, 32 * (2 << 20));
    }

    #[test]
    fn too_many_shards_names_the_count_and_the_cores() {
        let overrides = Overrides {
            shards: Some("99".parse().unwrap()),
            memlock_bytes_min: Some(1 << 30),
            ..Overrides::default()
        };
        let topology = synthetic();
        let error = plan(&config(overrides), &topology, topology.cpus()).unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("99 shards requested"), "{text}");
        assert!(text.contains("only 32 usable physical cores"), "{text}");
    }

    #[test]
    fn the_factory_builds_each_agent_on_its_owner_only() {
        let yaml = "agents:\n  - {id: a, kind: echo}\n  - {id: b, kind: sink}\n  - {id: c, kind: counter}\n  - {id: d, kind: echo}\n";
        let config = Config::from_yaml_str(yaml, "test").unwrap();
        let agents = plan_agents(&config, 2).unwrap();
        let factory = agent_factory(&agents, None);
        let mut built: Vec<AgentId> = Vec::new();
        for shard in 0..2 {
            for (id, _) in factory(shard, 2) {
                assert_eq!(owner_shard(id, 2), shard);
                built.push(id);
            }
        }
        built.sort_unstable();
        let mut expected: Vec<AgentId> = agents.iter().map(|agent| agent.id).collect();
        expected.sort_unstable();
        assert_eq!(built, expected, "every agent exactly once");
    }

    #[test]
    fn stats_table_has_a_row_per_shard() {
        let reports = vec![ShardReport {
            shard: 0,
            cpu: 3,
            stats: Default::default(),
            polls: 10,
            idle_polls: 9,
            parks: 1,
            stalls: 0,
            frames_in_flight_at_exit: 0,
        }];
        let table = stats_table(&reports);
        assert_eq!(table.lines().count(), 2);
        assert!(table.lines().next().unwrap().contains("backpressure"));
    }
}
