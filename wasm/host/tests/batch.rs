//! Messages delivered in batches (`dp_on_batch`, which the Rust SDK exports): each message
//! is answered by its own reply, in order; an error or a trap inside a batch fails that
//! message only, and the messages after it are kept and delivered once; the time limit
//! and the send budget apply to each message, not to the batch. The agent is the Rust
//! `fragile` example (the rules of the WAT fixture `FRAGILE`).

mod common;

use std::time::{Duration, Instant};

use common::{batching_host, counted, fragile_bench, time_limit_ms, Bench};
use dataplane_frame::{AgentId, Performative};
use dataplane_shard::{AgentState, RestartPolicy};
use dataplane_wasm::{AgentLimits, Host, HostConfig};

const TRAP_TEXT: &str = "agent crashed: wasm trap: wasm `unreachable` instruction executed";

fn fragile(limits: AgentLimits) -> (Bench, AgentId) {
    fragile_bench(
        batching_host(),
        RestartPolicy::DEFAULT,
        dataplane_guests::FRAGILE_RUST,
        limits,
    )
}

fn batches(bench: &mut Bench) -> u64 {
    bench.mesh.shard_of(bench.me).stats().batches
}

#[test]
fn a_batch_answers_each_message_with_its_own_reply_in_order() {
    let (mut b, fragile) = fragile(AgentLimits::default());
    let sent: Vec<(u64, String)> = (0..70)
        .map(|n| {
            let payload = format!("m{n}");
            (
                b.send(fragile, Performative::Request, payload.as_bytes()),
                payload,
            )
        })
        .collect();
    b.mesh.run();
    let expected: Vec<(u64, u64, String)> = sent
        .into_iter()
        .zip(1..)
        .map(|((correlation, payload), count)| (correlation, count, payload))
        .collect();
    assert_eq!(counted(&b.take()), expected);
    assert!(batches(&mut b) >= 2, "70 queued messages went in batches");
    b.assert_neighbour_serves();
}

/// The C SDK's batch walk (`dp_batch_start`/`dp_batch_next`, used by the C echo): every
/// message of every batch is answered once, in order, with its own payload and
/// correlation id.
#[test]
fn the_c_echo_answers_each_message_of_its_batches_in_order() {
    let (mut b, echo) = fragile_bench(
        batching_host(),
        RestartPolicy::DEFAULT,
        dataplane_guests::ECHO_C,
        AgentLimits::default(),
    );
    // Payload lengths 0..70 exercise the padding between messages in the inbox.
    let sent: Vec<(u64, Vec<u8>)> = (0..70u8)
        .map(|n| {
            let payload = vec![n; usize::from(n)];
            (b.send(echo, Performative::Request, &payload), payload)
        })
        .collect();
    b.mesh.run();
    let got: Vec<(u64, Vec<u8>)> = b
        .take()
        .into_iter()
        .map(|m| {
            assert_eq!(m.header.performative, Performative::Inform, "{m:?}");
            (m.header.correlation_id, m.payload)
        })
        .collect();
    assert_eq!(got, sent);
    assert!(batches(&mut b) >= 2, "70 queued messages went in batches");
    b.assert_neighbour_serves();
}

#[test]
fn an_error_inside_a_batch_fails_that_message_only() {
    let (mut b, fragile) = fragile(AgentLimits::default());
    let a = b.send(fragile, Performative::Request, b"a");
    let bb = b.send(fragile, Performative::Request, b"b");
    let failing = b.send(fragile, Performative::Request, b"#no");
    let c = b.send(fragile, Performative::Request, b"c");
    let d = b.send(fragile, Performative::Request, b"d");
    b.mesh.run();
    let seen = b.take();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(
        counted(&seen[..2]),
        [(a, 1, "a".into()), (bb, 2, "b".into())]
    );
    assert!(seen[2].is_failure(), "{:?}", seen[2]);
    assert_eq!(seen[2].header.correlation_id, failing);
    assert!(
        seen[2].text().ends_with("returned error 5"),
        "{}",
        seen[2].text()
    );
    // Not a crash: the same instance goes on (the failing message was counted too).
    assert_eq!(
        counted(&seen[3..]),
        [(c, 4, "c".into()), (d, 5, "d".into())]
    );
    let status = b.mesh.status(fragile).expect("deployed");
    assert_eq!((status.state, status.restarts), (AgentState::Running, 0));
    assert!(batches(&mut b) >= 2);
}

#[test]
fn a_trap_inside_a_batch_restarts_the_agent_and_keeps_the_messages_after_it() {
    let (mut b, fragile) = fragile(AgentLimits::default());
    let a = b.send(fragile, Performative::Request, b"a");
    let bb = b.send(fragile, Performative::Request, b"b");
    let trap = b.send(fragile, Performative::Request, b"!boom");
    let c = b.send(fragile, Performative::Request, b"c");
    let d = b.send(fragile, Performative::Request, b"d");
    b.mesh.run();
    let seen = b.take();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        counted(&seen[..2]),
        [(a, 1, "a".into()), (bb, 2, "b".into())]
    );
    assert!(seen[2].is_failure());
    assert_eq!(seen[2].header.correlation_id, trap);
    assert_eq!(seen[2].text(), TRAP_TEXT);
    let status = b.mesh.status(fragile).expect("deployed");
    assert!(matches!(status.state, AgentState::Restarting { .. }));
    assert_eq!(
        status.queued_frames, 2,
        "the messages after the trap are kept"
    );
    b.assert_neighbour_serves();

    b.run_to_next_timer();
    // A fresh instance: its count starts again. Each kept message once, in order.
    assert_eq!(counted(&b.take()), [(c, 1, "c".into()), (d, 2, "d".into())]);
    let status = b.mesh.status(fragile).expect("deployed");
    assert_eq!((status.state, status.restarts), (AgentState::Running, 1));
}

#[test]
fn a_loop_inside_a_batch_is_interrupted_at_its_own_limit() {
    let (mut b, fragile) = fragile(time_limit_ms(5));
    let a = b.send(fragile, Performative::Request, b"a");
    let spin = b.send(fragile, Performative::Request, b"?spin");
    let after = b.send(fragile, Performative::Request, b"after");
    let started = Instant::now();
    b.mesh.run();
    let took = started.elapsed();
    // Never early; how late is the interrupt suite's business, not a timed test's.
    assert!(
        took >= Duration::from_millis(5),
        "interrupted after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "interrupted after {took:?}");
    let seen = b.take();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(counted(&seen[..1]), [(a, 1, "a".into())]);
    assert!(seen[1].is_failure());
    assert_eq!(seen[1].header.correlation_id, spin);
    assert_eq!(
        seen[1].text(),
        "agent crashed: wasm trap: interrupt (time_per_message_ms of 5 ms exceeded)"
    );
    b.assert_neighbour_serves();
    b.run_to_next_timer();
    assert_eq!(counted(&b.take()), [(after, 1, "after".into())]);
}

#[test]
fn each_message_of_a_batch_has_its_own_send_budget() {
    // One send per message: a budget shared by the batch would refuse the second reply.
    let (mut b, fragile) = fragile(AgentLimits {
        sends_per_message_max: 1,
        ..AgentLimits::default()
    });
    let sent: Vec<u64> = (0..10)
        .map(|n| b.send(fragile, Performative::Request, format!("{n}").as_bytes()))
        .collect();
    b.mesh.run();
    let seen = counted(&b.take());
    assert_eq!(seen.len(), 10);
    for ((correlation, count, payload), (n, sent)) in seen.into_iter().zip(sent.iter().enumerate())
    {
        assert_eq!(
            (correlation, count, payload),
            (*sent, n as u64 + 1, n.to_string())
        );
    }
    assert!(batches(&mut b) >= 1);
}

/// A batch agent that lies about its progress: before replying it writes index 99 (past
/// the batch) at the inbox, then returns the reply's code.
const LIAR: &str = r#"(module
  (import "dataplane_v1" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "dp_inbox") (param i32) (result i32) (i32.const 65536))
  (func (export "dp_init") (param i32) (result i32) (i32.const 0))
  (func (export "dp_on_message") (param i32) (result i32) (i32.const 0))
  (func (export "dp_on_batch") (param i32) (result i32)
    (i32.store (i32.const 65536) (i32.const 99))
    (call $reply (i32.const 1) (i32.const 0) (i32.const 0))))"#;

#[test]
fn a_progress_index_outside_the_batch_is_refused_and_loses_nothing() {
    let mut b = Bench::with(batching_host(), RestartPolicy::DEFAULT);
    let module = b.module("liar", LIAR.as_bytes());
    let liar = b
        .deploy("liar", &module, AgentLimits::default(), "")
        .expect("deploy");
    let sent: Vec<u64> = (0..3)
        .map(|n| b.send(liar, Performative::Request, &[n]))
        .collect();
    b.mesh.run();
    let seen = b.take();
    // The reply is refused (-1, invalid), so the call fails; the host clamps the index
    // to the batch's last message, which gets the failure. The earlier ones count as
    // handled (the agent chose not to answer them). Each message once, none lost.
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].is_failure());
    assert_eq!(seen[0].header.correlation_id, sent[2]);
    assert!(
        seen[0].text().ends_with("returned error -1"),
        "{}",
        seen[0].text()
    );
    let status = b.mesh.status(liar).expect("deployed");
    assert_eq!(
        (status.state, status.queued_frames),
        (AgentState::Running, 0)
    );
    b.assert_neighbour_serves();
}

/// With the adaptive pace an idle ticker is slow: messages queued after a quiet spell run
/// one call each (a later message of a batch could not be timed to its limit), and the
/// shard asks the ticker for its fast pace. Batches form once the ticker has woken.
#[test]
fn batches_wait_for_the_ticker_to_be_fast_and_lose_nothing_meanwhile() {
    // A 100 ms tick: the ticker wakes every 100 ms, so it turns fast during the first
    // round (a few microseconds) only by a very unlikely coincidence.
    let slow = Host::new(HostConfig {
        pool_slots: Some(64),
        epoch_tick_us: 100_000,
        ..HostConfig::default()
    })
    .expect("host");
    let (mut b, fragile) = fragile_bench(
        slow,
        RestartPolicy::DEFAULT,
        dataplane_guests::FRAGILE_RUST,
        AgentLimits::default(),
    );
    let mut expected = Vec::new();
    let mut count = 0;
    let mut round = |b: &mut Bench| {
        for _ in 0..4 {
            count += 1;
            let payload = format!("m{count}");
            let correlation = b.send(fragile, Performative::Request, payload.as_bytes());
            expected.push((correlation, count, payload));
        }
        b.mesh.run();
    };
    round(&mut b);
    assert_eq!(batches(&mut b), 0, "the idle ticker is slow: no batch yet");
    // The ticker wakes (within 100 ms here) and turns fast; the wait is generous for a
    // loaded machine, and no timing is asserted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while batches(&mut b) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        round(&mut b);
    }
    assert!(batches(&mut b) > 0, "batches never formed");
    assert_eq!(counted(&b.take()), expected);
    b.assert_neighbour_serves();
}
