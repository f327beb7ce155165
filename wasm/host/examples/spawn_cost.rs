//! Where a spawn's time goes: store, instantiate, `dp_inbox`, `dp_init`, per phase, for the
//! pooled and the on-demand allocator. `cargo run --release -p dataplane-wasm --example
//! spawn_cost [MODULE]` (a name of `dataplane_guests::MODULES`, default `echo_rust`).

use std::time::Instant;

use dataplane_frame::AgentId;
use dataplane_shard::{Shard, ShardConfig};
use dataplane_wasm::{AgentLimits, AgentModule, AgentSpec, Host, HostConfig, WasmAgent};

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "echo_rust".into());
    let bytes = dataplane_guests::by_name(&name).expect("module name");
    let spawns = 10_000u64;
    for (label, slots) in [("pooled", Some(spawns as u32)), ("on-demand", None)] {
        let host = Host::new(HostConfig {
            pool_slots: slots,
            ..HostConfig::default()
        })
        .expect("host");
        let module = AgentModule::from_bytes(&host, &name, bytes).expect("module");
        let mut config = ShardConfig::new(0, 1);
        config.agents_max = spawns as usize;
        let mut shard = Shard::new(config);
        for round in 0..2 {
            let mut samples: Vec<u64> = Vec::with_capacity(spawns as usize);
            for n in 0..spawns {
                let id = AgentId(n + 1);
                let spec = AgentSpec {
                    module: module.clone(),
                    limits: AgentLimits::default(),
                    config: std::sync::Arc::from(&[][..]),
                    seed: None,
                };
                let agent = Box::new(WasmAgent::new(&host, id, spec));
                let start = Instant::now();
                shard.deploy(id, agent, 0).expect("deploy");
                samples.push(start.elapsed().as_nanos() as u64);
            }
            samples.sort_unstable();
            let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize] as f64 / 1e3;
            println!(
                "{label:>9} round {round} ({}): p50 {:.2} µs p90 {:.2} µs p99 {:.2} µs",
                if round == 0 {
                    "fresh slots"
                } else {
                    "reused slots"
                },
                at(0.5),
                at(0.9),
                at(0.99)
            );
            shard.stop_all(0);
        }
    }
}
