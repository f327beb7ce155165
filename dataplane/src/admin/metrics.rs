//! `GET /metrics`: each shard's counters, read by a control job on the shard itself (no
//! shared counters on the data path), encoded with `prometheus-client` in the OpenMetrics
//! text format, which Prometheus scrapes.
//!
//! Names follow the Prometheus conventions: prefix `dataplane_`, counters end in
//! `_total`, one time series per shard (label `shard`). `docs/admin.md` lists them.

use dataplane_edge::server::{EdgeCounters, EDGE_COUNTERS};
use dataplane_runtime::JobContext;
use dataplane_shard::{Shard, ShardStats};
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One shard's counters at one instant.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    shard: usize,
    stats: ShardStats,
    polls: u64,
    idle_polls: u64,
    parks: u64,
    stalls: u64,
    agents: usize,
    frames_allocated: usize,
    frames_in_flight: usize,
}

/// Reads shard `core`'s counters; runs on the shard as a control job.
pub fn snapshot(core: &mut Shard, ctx: &JobContext) -> ShardSnapshot {
    ShardSnapshot {
        shard: ctx.shard,
        stats: core.stats().clone(),
        polls: ctx.polls,
        idle_polls: ctx.idle_polls,
        parks: ctx.parks,
        stalls: ctx.stalls,
        agents: core.agents(),
        frames_allocated: core.pool().frames_allocated(),
        frames_in_flight: core.pool().frames_in_flight(),
    }
}

type Labels = Vec<(&'static str, String)>;
type Read = fn(&ShardSnapshot) -> u64;

/// Counters: name (before `dataplane_` and `_total`), help, value.
const COUNTERS: [(&str, &str, Read); 19] = [
    ("messages_handled", "Agent handler calls that ran", |s| {
        s.stats.messages_handled
    }),
    (
        "messages_sent_local",
        "Messages queued to an agent on the same shard",
        |s| s.stats.sent_local,
    ),
    (
        "messages_sent_remote",
        "Messages handed to a ring for another shard",
        |s| s.stats.sent_remote,
    ),
    (
        "messages_received_remote",
        "Messages accepted from other shards' rings",
        |s| s.stats.received_remote,
    ),
    (
        "frames_returned",
        "Frame buffers that came home from other shards",
        |s| s.stats.frames_returned,
    ),
    (
        "sends_backpressure",
        "Sends refused because a mailbox or outbound queue was full",
        |s| s.stats.backpressure,
    ),
    (
        "sends_pool_exhausted",
        "Sends refused because the frame pool was exhausted",
        |s| s.stats.pool_exhausted,
    ),
    (
        "messages_unknown_agent",
        "Messages for agents that do not exist",
        |s| s.stats.unknown_agent,
    ),
    (
        "replies_undeliverable",
        "Replies and error replies that could not be delivered",
        |s| s.stats.undeliverable_replies,
    ),
    (
        "deliveries_stalled",
        "Ring frames held back because the addressee's mailbox was full",
        |s| s.stats.stalled_deliveries,
    ),
    (
        "handler_errors",
        "Agent handler calls that returned an error or crashed",
        |s| s.stats.handler_errors,
    ),
    ("handler_panics", "Native agent calls that panicked", |s| {
        s.stats.handler_panics
    }),
    (
        "agent_restarts",
        "Crashed agents restarted successfully",
        |s| s.stats.agent_restarts,
    ),
    (
        "agents_stopped",
        "Agents stopped for crashing too often",
        |s| s.stats.agents_stopped,
    ),
    (
        "agent_batches",
        "Calls in which an agent handled two or more messages at once",
        |s| s.stats.batches,
    ),
    ("shard_polls", "Poll iterations of the shard loop", |s| {
        s.polls
    }),
    (
        "shard_idle_polls",
        "Poll iterations that found no work",
        |s| s.idle_polls,
    ),
    (
        "shard_parks",
        "Times the shard slept on its doorbell",
        |s| s.parks,
    ),
    (
        "shard_stalls",
        "Poll iterations longer than shard.stall_threshold_us",
        |s| s.stalls,
    ),
];

/// Gauges: name (after `dataplane_`), help, value.
const GAUGES: [(&str, &str, Read); 3] = [
    ("agents", "Agents deployed on the shard", |s| {
        s.agents as u64
    }),
    (
        "frame_pool_frames",
        "Frame buffers the shard's pool has allocated",
        |s| s.frames_allocated as u64,
    ),
    (
        "frames_in_flight",
        "The shard's frame buffers currently held by other shards",
        |s| s.frames_in_flight as u64,
    ),
];

/// The OpenMetrics text of `snapshots` and of the QUIC edge's counters, if any, as
/// `dataplane_edge_<name>_total{shard}` (ending in `# EOF`).
pub fn encode(
    snapshots: &[ShardSnapshot],
    edge: Option<&[EdgeCounters]>,
) -> Result<String, std::fmt::Error> {
    let labels =
        |snapshot: &ShardSnapshot| -> Labels { vec![("shard", snapshot.shard.to_string())] };
    let mut registry = Registry::with_prefix("dataplane");
    let shards: Gauge = Gauge::default();
    shards.set(i64::try_from(snapshots.len()).unwrap_or(i64::MAX));
    registry.register("shards", "Shards on the node", shards);
    for (name, help, read) in COUNTERS {
        let family = Family::<Labels, Counter>::default();
        for snapshot in snapshots {
            family
                .get_or_create(&labels(snapshot))
                .inc_by(read(snapshot));
        }
        registry.register(name, help, family);
    }
    for (name, help, read) in GAUGES {
        let family = Family::<Labels, Gauge>::default();
        for snapshot in snapshots {
            let value = i64::try_from(read(snapshot)).unwrap_or(i64::MAX);
            family.get_or_create(&labels(snapshot)).set(value);
        }
        registry.register(name, help, family);
    }
    if let Some(edge) = edge {
        let per_shard: Vec<_> = edge.iter().map(EdgeCounters::values).collect();
        for index in 0..EDGE_COUNTERS {
            let family = Family::<Labels, Counter>::default();
            let (name, help, _) = per_shard.first().map_or(("", "", 0), |v| v[index]);
            for (shard, values) in per_shard.iter().enumerate() {
                family
                    .get_or_create(&vec![("shard", shard.to_string())])
                    .inc_by(values[index].2);
            }
            registry.register(format!("edge_{name}"), help, family);
        }
    }
    let mut out = String::new();
    text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_labelled_by_shard_and_ends_in_total() {
        let snapshot = |shard: usize, handled: u64| ShardSnapshot {
            shard,
            stats: ShardStats {
                messages_handled: handled,
                ..ShardStats::default()
            },
            polls: 10,
            idle_polls: 9,
            parks: 1,
            stalls: 0,
            agents: 2,
            frames_allocated: 64,
            frames_in_flight: 0,
        };
        let edge: Vec<EdgeCounters> = (0..2).map(|_| EdgeCounters::default()).collect();
        edge[1]
            .frames_in
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let text = encode(&[snapshot(0, 5), snapshot(1, 7)], Some(&edge)).unwrap();
        assert!(
            text.contains("dataplane_edge_frames_in_total{shard=\"1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("dataplane_edge_datagrams_in_total{shard=\"0\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("dataplane_messages_handled_total{shard=\"0\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("dataplane_messages_handled_total{shard=\"1\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE dataplane_messages_handled counter"),
            "{text}"
        );
        assert!(text.contains("dataplane_agents{shard=\"1\"} 2"), "{text}");
        assert!(text.contains("dataplane_shards 2"), "{text}");
        for (name, _, _) in COUNTERS {
            assert!(
                text.contains(&format!("dataplane_{name}_total{{shard=\"1\"}}")),
                "{name}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
