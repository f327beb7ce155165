//! The restart policy with WASM agents: a trap answers its sender with a failure, the
//! agent comes back after its back-off as a fresh instance and gets the messages kept for
//! it, in order; a trap storm stops it; a loop is interrupted. The clock is the test's:
//! `poll_deliver` is driven at chosen times, up to `Shard::next_timer_ns`. A neighbour on
//! the same shard is checked at every step.

mod common;

use std::time::{Duration, Instant};

use common::{
    counted, fragile_bench, fragile_reply, header, host, load, time_limit_ms, wasm_agent, Bench,
    Mesh, Received, FRAGILE, MS,
};
use dataplane_frame::{AgentId, Performative};
use dataplane_guests::fixtures;
use dataplane_shard::{AgentState, RestartPolicy};
use dataplane_wasm::{AgentLimits, Host, HostConfig};

const TRAP_TEXT: &str = "agent crashed: wasm trap: wasm `unreachable` instruction executed";

fn policy(max_restarts: u32, window_ns: u64) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        window_ns,
        backoff_initial_ns: MS,
        backoff_max_ns: 1000 * MS,
    }
}

#[test]
fn a_trap_answers_the_sender_and_the_fresh_instance_gets_the_kept_messages_in_order() {
    let (mut b, fragile) = fragile_bench(
        host(),
        RestartPolicy::DEFAULT,
        FRAGILE.as_bytes(),
        AgentLimits::default(),
    );
    let a = b.send(fragile, Performative::Request, b"a");
    let bb = b.send(fragile, Performative::Request, b"b");
    b.mesh.run();
    assert_eq!(
        counted(&b.take()),
        [(a, 1, "a".into()), (bb, 2, "b".into())],
        "the count is kept across messages"
    );

    // The trap, with two messages queued behind it.
    let boom = b.send(fragile, Performative::Request, b"!boom");
    let c = b.send(fragile, Performative::Request, b"c");
    let d = b.send(fragile, Performative::Request, b"d");
    b.mesh.run();
    let seen = b.take();
    assert_eq!(
        seen.len(),
        1,
        "only the trapping message is answered: {seen:?}"
    );
    assert!(seen[0].is_failure());
    assert_eq!(seen[0].header.correlation_id, boom);
    assert_eq!(seen[0].header.from, fragile);
    assert_eq!(seen[0].text(), TRAP_TEXT);
    let status = b.mesh.status(fragile).expect("deployed");
    assert_eq!(status.state, AgentState::Restarting { until_ns: MS });
    assert_eq!(
        (
            status.restarts,
            status.crashes_in_window,
            status.queued_frames
        ),
        (0, 1, 2)
    );
    assert_eq!(b.mesh.next_timer_ns(), Some(MS));
    b.assert_neighbour_serves();

    // During the back-off: kept, not delivered.
    let e = b.send(fragile, Performative::Request, b"e");
    b.mesh.now_ns = MS - 1;
    b.mesh.run();
    assert_eq!(b.take(), vec![]);
    assert_eq!(b.mesh.status(fragile).expect("deployed").queued_frames, 3);
    b.assert_neighbour_serves();

    // The back-off ends: a fresh instance (its count starts over) gets c, d, e in order.
    b.mesh.now_ns = b.mesh.next_timer_ns().expect("a timer");
    assert_eq!(b.mesh.now_ns, MS);
    b.mesh.run();
    assert_eq!(
        counted(&b.take()),
        [(c, 1, "c".into()), (d, 2, "d".into()), (e, 3, "e".into())]
    );
    let status = b.mesh.status(fragile).expect("deployed");
    assert_eq!(status.state, AgentState::Running);
    assert_eq!(
        (
            status.restarts,
            status.crashes_in_window,
            status.queued_frames
        ),
        (1, 1, 0)
    );
    assert_eq!(b.mesh.next_timer_ns(), None);
    b.assert_neighbour_serves();
    b.mesh.assert_quiet();
}

#[test]
fn an_error_code_is_not_a_crash() {
    let (mut b, fragile) = fragile_bench(
        host(),
        RestartPolicy::DEFAULT,
        FRAGILE.as_bytes(),
        AgentLimits::default(),
    );
    b.send(fragile, Performative::Request, b"a");
    let failing = b.send(fragile, Performative::Request, b"#nope");
    b.send(fragile, Performative::Request, b"b");
    b.mesh.run();
    let seen = b.take();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].header.correlation_id, failing);
    assert_eq!(
        seen[1].text(),
        format!("agent failed: agent {fragile} returned error 5")
    );
    assert_eq!(
        counted(&[seen[2].clone()])[0].1,
        3,
        "state kept: no restart"
    );
    assert_eq!(b.mesh.next_timer_ns(), None);
}

#[test]
fn a_trap_storm_stops_the_agent_and_answers_everything_exactly_once() {
    let mut b = Bench::with(host(), policy(3, 1000 * MS));
    let module = b.module("trap", fixtures::TRAP.as_bytes());
    let trap = b
        .deploy("trap", &module, AgentLimits::default(), "")
        .expect("deploy");
    let sent: Vec<u64> = (0..10)
        .map(|n| b.send(trap, Performative::Request, format!("m{n}").as_bytes()))
        .collect();
    let mut answers: Vec<Received> = Vec::new();
    let mut restart_times = Vec::new();
    loop {
        b.mesh.run();
        answers.extend(b.take());
        b.assert_neighbour_serves();
        let Some(deadline) = b.mesh.next_timer_ns() else {
            break;
        };
        // Nothing happens a nanosecond early.
        let queued = b.mesh.status(trap).expect("deployed").queued_frames;
        b.mesh.now_ns = deadline - 1;
        b.mesh.run();
        assert_eq!(b.take(), vec![]);
        assert_eq!(b.mesh.status(trap).expect("deployed").queued_frames, queued);
        b.mesh.now_ns = deadline;
        restart_times.push(deadline);
    }
    // Back-offs 1, 2 and 4 ms: restarts at 1, 3 and 7 ms; the fourth crash stops it.
    assert_eq!(restart_times, [MS, 3 * MS, 7 * MS]);
    let status = b.mesh.status(trap).expect("deployed");
    assert_eq!(status.state, AgentState::Stopped);
    assert_eq!(
        (
            status.restarts,
            status.crashes_in_window,
            status.queued_frames
        ),
        (3, 4, 0)
    );
    let stop_reason = format!("agent {trap} stopped after 4 crashes in 1 s: {TRAP_TEXT}");
    assert_eq!(answers.len(), sent.len(), "{answers:?}");
    for (n, (answer, &correlation_id)) in answers.iter().zip(&sent).enumerate() {
        assert!(answer.is_failure(), "{answer:?}");
        assert_eq!(answer.header.correlation_id, correlation_id, "in order");
        assert_eq!(answer.header.from, trap);
        let expected = if n < 4 { TRAP_TEXT } else { &stop_reason };
        assert_eq!(answer.text(), expected, "message {n}");
    }
    // Later messages are answered with the same reason, once each.
    for _ in 0..3 {
        let text = b.failure(trap, b"anyone?");
        assert_eq!(text, stop_reason);
    }
    let stats = b.mesh.shards[0].stats();
    assert_eq!((stats.agent_restarts, stats.agents_stopped), (3, 1));
    b.assert_neighbour_serves();
    b.mesh.assert_quiet();
}

#[test]
fn a_looping_agent_is_interrupted_restarted_and_its_neighbour_keeps_serving() {
    let (mut b, fragile) = fragile_bench(
        host(),
        RestartPolicy::DEFAULT,
        FRAGILE.as_bytes(),
        time_limit_ms(5),
    );
    let a = b.send(fragile, Performative::Request, b"a");
    let spin = b.send(fragile, Performative::Request, b"?spin");
    let after = b.send(fragile, Performative::Request, b"after");
    let started = Instant::now();
    b.mesh.run();
    let took = started.elapsed();
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
    let status = b.mesh.status(fragile).expect("deployed");
    assert_eq!(status.state, AgentState::Restarting { until_ns: MS });
    assert_eq!(status.queued_frames, 1);
    b.assert_neighbour_serves();

    b.run_to_next_timer();
    assert_eq!(counted(&b.take()), [(after, 1, "after".into())]);
    let status = b.mesh.status(fragile).expect("deployed");
    assert_eq!((status.state, status.restarts), (AgentState::Running, 1));
    b.assert_neighbour_serves();

    // A loop on every message: the default policy stops it after 6 loops in the window.
    let module = b.module("loop", fixtures::LOOP.as_bytes());
    let spinner = b
        .deploy("spinner", &module, time_limit_ms(2), "")
        .expect("deploy");
    for n in 0..8 {
        b.send(spinner, Performative::Request, format!("{n}").as_bytes());
    }
    let mut answers = Vec::new();
    loop {
        b.mesh.run();
        answers.extend(b.take());
        b.assert_neighbour_serves();
        match b.mesh.next_timer_ns() {
            Some(deadline) => b.mesh.now_ns = deadline,
            None => break,
        }
    }
    assert_eq!(answers.len(), 8);
    assert!(answers.iter().all(Received::is_failure));
    let interrupts = answers
        .iter()
        .filter(|m| {
            m.text()
                .contains("interrupt (time_per_message_ms of 2 ms exceeded)")
        })
        .count();
    assert_eq!(
        interrupts, 8,
        "6 interrupts, then 2 refusals quoting the last"
    );
    assert_eq!(
        answers
            .iter()
            .filter(|m| m.text().contains("stopped after 6 crashes in 60 s"))
            .count(),
        2
    );
    let status = b.mesh.status(spinner).expect("deployed");
    assert_eq!((status.state, status.restarts), (AgentState::Stopped, 5));
    b.assert_neighbour_serves();
}

/// The fragile agent whose `dp_init` traps when started between 1 and 3 ms (the host's
/// `now_ns` is the shard's clock): its first restart fails, the next one works.
const MOODY: &str = r#"(module
  (import "dataplane_v1" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (import "dataplane_v1" "now_ns" (func $now (result i64)))
  (memory (export "memory") 1)
  (global $inbox (mut i32) (i32.const 0))
  (func (export "dp_inbox") (param $capacity i32) (result i32)
    (global.set $inbox
      (i32.shl
        (memory.grow (i32.shr_u (i32.add (local.get $capacity) (i32.const 65535)) (i32.const 16)))
        (i32.const 16)))
    (global.get $inbox))
  (func (export "dp_init") (param i32) (result i32)
    (if (i64.ge_u (call $now) (i64.const 1000000))
      (then (if (i64.lt_u (call $now) (i64.const 3000000)) (then unreachable))))
    (i32.const 0))
  (func (export "dp_on_message") (param $len i32) (result i32)
    (if (i32.eq (i32.load8_u offset=48 (global.get $inbox)) (i32.const 33)) (then unreachable))
    (call $reply (i32.const 1) (i32.add (global.get $inbox) (i32.const 48)) (local.get $len))))"#;

#[test]
fn a_restart_whose_init_traps_is_another_crash_with_a_longer_backoff() {
    let mut b = Bench::with(host(), RestartPolicy::DEFAULT);
    let module = b.module("moody", MOODY.as_bytes());
    let moody = b
        .deploy("moody", &module, AgentLimits::default(), "")
        .expect("deploy at 0 ns");
    assert_eq!(b.failure(moody, b"!"), TRAP_TEXT);
    let kept = b.send(moody, Performative::Request, b"kept");
    // At 1 ms the restart's dp_init traps: a second crash, back-off 2 ms.
    b.run_to_next_timer();
    assert_eq!(b.take(), vec![]);
    let status = b.mesh.status(moody).expect("deployed");
    assert_eq!(status.state, AgentState::Restarting { until_ns: 3 * MS });
    assert_eq!(
        (
            status.restarts,
            status.crashes_in_window,
            status.queued_frames
        ),
        (0, 2, 1)
    );
    b.assert_neighbour_serves();
    // At 3 ms it starts, and gets what was kept.
    b.run_to_next_timer();
    let seen = b.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].header.correlation_id, &seen[0].payload[..]),
        (kept, &b"kept"[..])
    );
    let status = b.mesh.status(moody).expect("deployed");
    assert_eq!((status.state, status.restarts), (AgentState::Running, 1));
}

#[test]
fn crashes_spread_wider_than_the_window_never_stop_the_agent() {
    let (mut b, fragile) = fragile_bench(
        host(),
        policy(1, 10 * MS),
        FRAGILE.as_bytes(),
        AgentLimits::default(),
    );
    for round in 1..=5u32 {
        b.mesh.now_ns += 20 * MS;
        assert_eq!(b.failure(fragile, b"!"), TRAP_TEXT);
        let status = b.mesh.status(fragile).expect("deployed");
        assert_eq!(status.crashes_in_window, 1, "round {round}");
        // A success in between, so the back-off starts over at 1 ms.
        assert_eq!(
            status.state,
            AgentState::Restarting {
                until_ns: b.mesh.now_ns + MS
            }
        );
        b.run_to_next_timer();
        let answer = b.ask(fragile, Performative::Request, b"ok");
        assert_eq!(fragile_reply(&answer.payload), (1, &b"ok"[..]));
        assert_eq!(b.mesh.status(fragile).expect("deployed").restarts, round);
    }
    b.assert_neighbour_serves();
}

#[test]
fn restarts_give_the_pool_slot_back() {
    // Three slots: the neighbour, the fragile agent, and one spare. A restart that leaked
    // its old instance's slot would find the pool full by the third crash.
    let host = Host::new(HostConfig {
        pool_slots: Some(3),
        ..HostConfig::default()
    })
    .expect("host");
    let (mut b, fragile) = fragile_bench(
        host,
        policy(1000, 1000 * MS),
        FRAGILE.as_bytes(),
        AgentLimits::default(),
    );
    for round in 1..=40u32 {
        assert_eq!(b.failure(fragile, b"!"), TRAP_TEXT);
        b.run_to_next_timer();
        let answer = b.ask(fragile, Performative::Request, b"x");
        assert_eq!(
            fragile_reply(&answer.payload),
            (1, &b"x"[..]),
            "round {round}"
        );
        let status = b.mesh.status(fragile).expect("deployed");
        assert_eq!(
            (status.state, status.restarts),
            (AgentState::Running, round)
        );
    }
    b.assert_neighbour_serves();
}

#[test]
fn a_trap_storm_on_another_shard_is_answered_across_the_rings() {
    // The client on one shard, the trapping agent on the other: the failures and the
    // stop's refusals travel back through the rings, once each.
    let host = host();
    let mut mesh = Mesh::new(2, |config| config.restart = policy(2, 1000 * MS));
    let me_name = common::name_on_shard("client", 0, 2);
    let (me, inbox) = mesh.client(&me_name);
    let trap = AgentId::from_name(&common::name_on_shard("trap", 1, 2));
    let module = load(&host, "trap", fixtures::TRAP.as_bytes());
    mesh.deploy(
        trap,
        wasm_agent(&host, trap, &module, AgentLimits::default(), ""),
    )
    .expect("deploy");
    for n in 0..6 {
        mesh.send(&header(me, trap, Performative::Request, n), b"x")
            .expect("accepted");
    }
    mesh.settle();
    let seen = inbox.borrow();
    let correlations: Vec<u64> = seen.iter().map(|m| m.header.correlation_id).collect();
    assert_eq!(correlations, [0, 1, 2, 3, 4, 5], "each once, in order");
    assert!(seen.iter().all(Received::is_failure));
    assert!(seen[..3].iter().all(|m| m.text() == TRAP_TEXT));
    assert!(seen[3..].iter().all(|m| m
        .text()
        .starts_with(&format!("agent {trap} stopped after 3 crashes"))));
    let status = mesh.status(trap).expect("deployed");
    assert_eq!((status.state, status.restarts), (AgentState::Stopped, 2));
    mesh.assert_quiet();
}

#[test]
fn a_time_limit_is_never_enforced_early() {
    // Real time, as the limit is: every loop runs at least its limit, whether it starts
    // while the epoch ticker idles (after a pause with no guest code running) or ticks.
    let mut b = Bench::with(host(), policy(1000, 1000 * MS));
    let module = b.module("loop", fixtures::LOOP.as_bytes());
    for ms in [1u64, 2, 3] {
        let spinner = b
            .deploy(&format!("spinner-{ms}"), &module, time_limit_ms(ms), "")
            .expect("deploy");
        for round in 0..8 {
            if round % 2 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
            b.send(spinner, Performative::Request, b"spin");
            let started = Instant::now();
            b.mesh.run();
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(ms),
                "{ms} ms limit, round {round}: interrupted after {took:?}"
            );
            let seen = b.take();
            assert_eq!(seen.len(), 1);
            assert!(seen[0].text().contains("interrupt"), "{:?}", seen[0].text());
            b.run_to_next_timer();
        }
    }
    b.assert_neighbour_serves();
}
