//! WASM agents in the binary: the built-in modules, the host built from `wasm:`, and the
//! modules of the configured agents compiled (or mapped from the cache) before the
//! shards start, so that no shard ever compiles on its data path.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use anyhow::Context as _;
use dataplane_control::{Config, ModuleSource, WasmAgentSpec, WasmProfiling};
use dataplane_frame::AgentId;
use dataplane_shard::{Agent, RestartPolicy};
use dataplane_wasm::{AgentLimits, AgentModule, AgentSpec, Host, HostConfig, Profiling, WasmAgent};

use crate::node::{AgentCode, PlannedAgent};

/// Modules compiled into the binary: `builtin:<name>` in the configuration.
pub const BUILTIN_MODULES: [(&str, &[u8]); 7] = [
    ("echo", dataplane_guests::ECHO_RUST),
    ("echo-c", dataplane_guests::ECHO_C),
    ("pingpong", dataplane_guests::PINGPONG_RUST),
    ("pingpong-c", dataplane_guests::PINGPONG_C),
    ("counter", dataplane_guests::COUNTER_RUST),
    ("counter-c", dataplane_guests::COUNTER_C),
    ("orderbook", dataplane_guests::ORDERBOOK_RUST),
];

/// The bytes of built-in module `name`.
#[must_use]
pub fn builtin_module(name: &str) -> Option<&'static [u8]> {
    BUILTIN_MODULES
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, bytes)| *bytes)
}

/// Mappings a live instance costs the kernel (its memory and table each split the pool's
/// reservation), plus what the rest of the process uses.
const MAPS_PER_INSTANCE: u64 = 2;
const MAPS_BASE: u64 = 4096;

/// The host settings of `config` for a node of `shards` shards.
/// The epoch ticker is pinned to `ticker_cpus` (empty: unpinned).
pub fn host_config(
    config: &Config,
    shards: usize,
    ticker_cpus: Vec<usize>,
) -> anyhow::Result<HostConfig> {
    let wasm = &config.wasm;
    let shards = NonZeroUsize::new(shards).context("a node has at least one shard")?;
    let slots = u32::try_from(wasm.pool_slots(shards))
        .context("wasm.agents_per_shard_max x shards exceeds 4294967295 pool slots")?;
    Ok(HostConfig {
        pool_slots: Some(slots),
        memory_bytes_max: wasm.memory_bytes_max,
        memory_reservation_bytes: wasm.memory_reservation_bytes,
        epoch_tick_us: wasm.epoch_tick_us.get(),
        ticker_pace: match wasm.ticker_pace {
            dataplane_control::TickerPace::Fast => dataplane_wasm::TickerPace::Fast,
            _ => dataplane_wasm::TickerPace::Adaptive,
        },
        cache_dir: wasm.cache_dir_path(),
        profiling: match wasm.profiling {
            WasmProfiling::PerfMap => Profiling::PerfMap,
            WasmProfiling::JitDump => Profiling::JitDump,
            _ => Profiling::None,
        },
        shards: shards.get(),
        ticker_cpus,
    })
}

/// Refuses a pool the kernel's `vm.max_map_count` cannot map, saying what to do.
pub fn check_max_map_count(slots: u32) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string("/proc/sys/vm/max_map_count") else {
        return Ok(());
    };
    let Ok(limit) = text.trim().parse::<u64>() else {
        return Ok(());
    };
    let needed = u64::from(slots) * MAPS_PER_INSTANCE + MAPS_BASE;
    if needed > limit {
        anyhow::bail!(
            "vm.max_map_count is {limit}, but {slots} WASM agent slots (wasm.agents_per_shard_max \
             x shards) need about {needed} memory mappings: run `sysctl -w \
             vm.max_map_count={}` as root (tools/setup.sh does), or lower \
             wasm.agents_per_shard_max",
            needed.next_power_of_two().max(262_144)
        );
    }
    Ok(())
}

/// The shard's restart policy from `wasm.restart`.
#[must_use]
pub fn restart_policy(config: &Config) -> RestartPolicy {
    let restart = &config.wasm.restart;
    let ns = |duration: std::time::Duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    RestartPolicy {
        max_restarts: restart.max_restarts,
        window_ns: ns(restart.window()),
        backoff_initial_ns: ns(restart.backoff_initial()),
        backoff_max_ns: ns(restart.backoff_max()),
    }
}

/// The host's agent limits from the configuration's resolved limits.
#[must_use]
pub fn agent_limits(limits: &dataplane_control::AgentLimits) -> AgentLimits {
    AgentLimits {
        memory_bytes_max: limits.memory_bytes_max,
        time_per_message: limits.time_per_message(),
        message_bytes_max: limits.message_bytes_max,
        sends_per_message_max: limits.sends_per_message_max.get(),
    }
}

/// The host and every configured module, ready for the shards to instantiate agents.
#[derive(Debug, Clone)]
pub struct WasmAgents {
    host: Host,
    modules: Arc<HashMap<ModuleSource, Arc<AgentModule>>>,
}

impl WasmAgents {
    /// Builds the host and loads the modules of `agents`. The host exists even when no
    /// configured agent is WASM: the admin endpoint deploys WASM agents at run time.
    /// `vm.max_map_count` too low for a full pool is an error when configured agents are
    /// WASM, else a warning (deploys may then fail once many agents are alive).
    pub fn prepare(
        config: &Config,
        shards: usize,
        ticker_cpus: Vec<usize>,
        agents: &[PlannedAgent],
    ) -> anyhow::Result<WasmAgents> {
        let sources: Vec<&ModuleSource> = agents
            .iter()
            .filter_map(|agent| match &agent.code {
                AgentCode::Wasm(spec) => Some(&spec.module),
                AgentCode::Native(_) => None,
            })
            .collect();
        let host_config = host_config(config, shards, ticker_cpus)?;
        if let Err(error) = check_max_map_count(host_config.pool_slots.unwrap_or(0)) {
            if !sources.is_empty() {
                return Err(error);
            }
            tracing::warn!("{error:#}");
        }
        let host = Host::new(host_config).context("starting the WASM host (wasm:)")?;
        let mut modules = HashMap::new();
        for source in sources {
            if !modules.contains_key(source) {
                modules.insert(source.clone(), load_module(&host, source)?);
            }
        }
        Ok(WasmAgents {
            host,
            modules: Arc::new(modules),
        })
    }

    /// The host.
    #[must_use]
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The module of `source` if [`WasmAgents::prepare`] loaded it.
    #[must_use]
    pub fn module(&self, source: &ModuleSource) -> Option<Arc<AgentModule>> {
        self.modules.get(source).cloned()
    }

    /// A (not yet instantiated) agent `id` of `spec`; `None` if its module was not
    /// loaded by [`WasmAgents::prepare`].
    #[must_use]
    pub fn build(&self, id: AgentId, spec: &WasmAgentSpec) -> Option<Box<dyn Agent>> {
        let module = Arc::clone(self.modules.get(&spec.module)?);
        let spec = AgentSpec {
            module,
            limits: agent_limits(&spec.limits),
            config: Arc::from(spec.config.as_bytes()),
            seed: spec.seed,
        };
        Some(Box::new(WasmAgent::new(&self.host, id, spec)))
    }
}

/// Loads a module: a built-in by name, or a file.
pub fn load_module(host: &Host, source: &ModuleSource) -> anyhow::Result<Arc<AgentModule>> {
    match source {
        ModuleSource::Builtin(name) => {
            let bytes = builtin_module(name).with_context(|| {
                let known: Vec<&str> = BUILTIN_MODULES.iter().map(|(name, _)| *name).collect();
                format!(
                    "no built-in module {name:?}; built-in modules: {}",
                    known.join(", ")
                )
            })?;
            AgentModule::from_bytes(host, name, bytes).map_err(Into::into)
        }
        ModuleSource::File(path) => AgentModule::from_file(host, path).map_err(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_module_loads_and_a_missing_one_is_named() {
        let host = Host::new(HostConfig {
            pool_slots: Some(4),
            ..HostConfig::default()
        })
        .unwrap();
        for (name, _) in BUILTIN_MODULES {
            load_module(&host, &ModuleSource::Builtin(name.to_owned())).unwrap();
        }
        let error = load_module(&host, &ModuleSource::Builtin("nope".into())).unwrap_err();
        assert!(format!("{error:#}").contains("built-in modules: echo, echo-c"));
    }

    #[test]
    fn the_default_config_plans_a_wasm_echo() {
        let config = Config::embedded_default();
        let shards = 2;
        let agents = crate::node::plan_agents_for_test(&config, shards);
        let wasm = WasmAgents::prepare(&config, shards, Vec::new(), &agents).unwrap();
        let AgentCode::Wasm(spec) = &agents[0].code else {
            panic!("echo is wasm")
        };
        assert!(wasm.build(agents[0].id, spec).is_some());
    }
}
