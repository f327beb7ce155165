//! Hot swap of WASM agents (`Shard::replace`) under load: requests keep coming while the
//! agent's code changes at random (seeded) points, and none is lost: each gets exactly
//! one reply, from the code that was in place when it was handled, and what was queued
//! (or on its way from another shard) at the swap goes to the new code. A swap that
//! fails leaves the old version running with its state.

mod common;

use std::sync::Arc;

use common::{header, host, load, name_on_shard, time_limit_ms, wasm_agent, Bench, Mesh, MS};
use dataplane_frame::{AgentId, Flags, Performative};
use dataplane_guests::formats::counter::{self, Totals};
use dataplane_guests::{fixtures, COUNTER_C, COUNTER_RUST, ECHO_C, ECHO_RUST};
use dataplane_shard::{AgentState, DeployError, RestartPolicy};
use dataplane_wasm::{AgentLimits, AgentModule, Host};

/// splitmix64, for the schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        dataplane_shard::routing::mix64(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Echo,
}

/// The codes a swap installs: name, module, kind.
struct Codes(Vec<(&'static str, Arc<AgentModule>, Kind)>);

impl Codes {
    fn new(host: &Host) -> Codes {
        let codes = [
            ("counter_rust", COUNTER_RUST, Kind::Counter),
            ("counter_c", COUNTER_C, Kind::Counter),
            ("echo_rust", ECHO_RUST, Kind::Echo),
            ("echo_c", ECHO_C, Kind::Echo),
        ];
        Codes(
            codes
                .into_iter()
                .map(|(name, bytes, kind)| (name, load(host, name, bytes), kind))
                .collect(),
        )
    }
}

/// A request the test sent and the shard accepted.
struct Sent {
    correlation_id: u64,
    performative: Performative,
    payload: Vec<u8>,
}

/// What `code` of `kind` answers to `sent`, given the requests its instance handled
/// before (from its start).
fn expected(kind: Kind, handled: &[Sent], sent: &Sent) -> Vec<u8> {
    match kind {
        Kind::Echo => sent.payload.clone(),
        Kind::Counter => {
            let mut totals = Totals { count: 0, sum: 0 };
            for request in handled.iter().chain(std::iter::once(sent)) {
                if request.performative == Performative::Request {
                    if let Ok(bytes) = <[u8; 8]>::try_from(&request.payload[..]) {
                        totals.count += 1;
                        totals.sum = totals.sum.wrapping_add(i64::from_le_bytes(bytes));
                    }
                }
            }
            let mut out = totals.count.to_le_bytes().to_vec();
            out.extend_from_slice(&totals.sum.to_le_bytes());
            out
        }
    }
}

/// What one run exercised.
#[derive(Debug, Default)]
struct Exercised {
    swaps: usize,
    swaps_with_queue: usize,
    swaps_in_flight: usize,
    requests: usize,
}

/// One seeded run: `x` (counter_rust at first) gets a stream of requests from a client
/// on shard 0, `x` lives on the last shard; the schedule interleaves sends, partial
/// delivery and swaps to random code.
fn stream(host: &Host, codes: &Codes, shards: usize, seed: u64) -> Exercised {
    let mut rng = Rng(seed);
    let mut mesh = Mesh::new(shards, |_| {});
    let (me, inbox) = mesh.client(&name_on_shard("client", 0, shards));
    let x = AgentId::from_name(&name_on_shard("x", shards - 1, shards));
    let x_shard = mesh.owner(x);
    let same_shard = mesh.owner(me) == x_shard;
    mesh.deploy(
        x,
        wasm_agent(host, x, &codes.0[0].1, AgentLimits::default(), ""),
    )
    .expect("x");
    let context = format!("seed {seed}, {shards} shard(s)");

    let mut sent: Vec<Sent> = Vec::new();
    let mut refused = Vec::new();
    // (index of the first request the version handles, kind, code name)
    let mut versions = vec![(0usize, Kind::Counter, "counter_rust")];
    let mut exercised = Exercised::default();
    let handled_by_x = |mesh: &Mesh, replies: usize| {
        let handled = mesh.shards[x_shard].stats().messages_handled as usize;
        // The client handles the replies, on x's shard when it is there.
        if same_shard {
            handled - replies
        } else {
            handled
        }
    };
    for correlation_id in 1..=1500u64 {
        match rng.below(100) {
            0..=54 => {
                let (performative, payload) = match rng.below(10) {
                    0 => (Performative::Query, Vec::new()),
                    1 => (Performative::Request, b"not a number".to_vec()),
                    _ => (
                        Performative::Request,
                        counter::number(rng.next() as i64 >> 8).to_vec(),
                    ),
                };
                let request = header(me, x, performative, correlation_id);
                match mesh.send(&request, &payload) {
                    Ok(()) => sent.push(Sent {
                        correlation_id,
                        performative,
                        payload,
                    }),
                    Err(error) => refused.push((correlation_id, error)),
                }
            }
            55..=96 => {
                mesh.step(1 + rng.below(8) as usize);
            }
            _ => {
                let (name, module, kind) = &codes.0[rng.below(codes.0.len() as u64) as usize];
                let agent = wasm_agent(host, x, module, AgentLimits::default(), "");
                let now_ns = mesh.now_ns;
                // Everything not handled yet, queued or in flight, goes to the new code.
                let boundary = handled_by_x(&mesh, inbox.borrow().len());
                let queued = mesh.status(x).expect("x").queued_frames;
                let old = mesh.shards[x_shard].replace(x, agent, now_ns);
                assert!(old.is_ok(), "{context}: swap to {name}");
                versions.push((boundary, *kind, name));
                exercised.swaps += 1;
                exercised.swaps_with_queue += usize::from(queued > 0);
                exercised.swaps_in_flight += usize::from(boundary + queued < sent.len());
                let status = mesh.status(x).expect("x");
                assert_eq!(
                    (status.state, status.restarts, status.queued_frames),
                    (AgentState::Running, 0, queued)
                );
            }
        }
    }
    mesh.run();
    assert_eq!(refused, vec![], "{context}: the mailboxes had room");
    assert_eq!(handled_by_x(&mesh, inbox.borrow().len()), sent.len());

    let replies = inbox.borrow();
    assert_eq!(
        replies.len(),
        sent.len(),
        "{context}: one reply per request"
    );
    for (index, (reply, request)) in replies.iter().zip(&sent).enumerate() {
        assert_eq!(
            reply.header.correlation_id, request.correlation_id,
            "{context}: replies in order, none lost or doubled"
        );
        assert_eq!(reply.header.from, x);
        assert_eq!(reply.header.performative, Performative::Inform);
        assert_eq!(reply.header.flags, Flags::REPLY);
        // The version that handled it: the last one installed at or before it.
        let &(start, kind, name) = versions
            .iter()
            .rev()
            .find(|(start, _, _)| *start <= index)
            .expect("the first version starts at 0");
        let want = expected(kind, &sent[start..index], request);
        assert!(
            reply.payload == want,
            "{context}: request {index} (correlation {}) should be answered by {name} \
             installed at {start}: got {:?}, want {want:?}",
            request.correlation_id,
            reply.payload
        );
    }
    for shard in &mesh.shards {
        assert_eq!(shard.stats().undeliverable_replies, 0, "{context}");
    }
    mesh.assert_quiet();
    exercised.requests = sent.len();
    exercised
}

#[test]
fn hot_swaps_under_load_lose_nothing_and_switch_code_at_the_swap() {
    let host = host();
    let codes = Codes::new(&host);
    let mut all = Exercised::default();
    for shards in [1, 2] {
        for seed in 0..6 {
            let run = stream(&host, &codes, shards, seed);
            all.swaps += run.swaps;
            all.swaps_with_queue += run.swaps_with_queue;
            all.swaps_in_flight += run.swaps_in_flight;
            all.requests += run.requests;
        }
    }
    // The schedule must exercise what is under test.
    assert!(all.swaps > 200, "{all:?}");
    assert!(all.swaps_with_queue > 100, "{all:?}");
    assert!(all.swaps_in_flight > 20, "{all:?}");
    assert!(all.requests > 8000, "{all:?}");
}

#[test]
fn a_failed_swap_leaves_the_old_version_running_with_its_state() {
    let mut b = Bench::new();
    let counter = b.module("counter_rust", COUNTER_RUST);
    let x = b
        .deploy("x", &counter, AgentLimits::default(), "")
        .expect("deploy");
    for value in 1..=10 {
        b.send(x, Performative::Inform, &counter::number(value));
    }
    b.mesh.run();
    // Two requests queued when the swaps are tried.
    let first = b.send(x, Performative::Request, &counter::number(100));
    let second = b.send(x, Performative::Query, b"");

    let refusals: [(&str, &str, AgentLimits, &str); 3] = [
        (
            "init_fails",
            fixtures::INIT_FAILS,
            AgentLimits::default(),
            "module init_fails: dp_init returned 3",
        ),
        (
            "start_loop",
            fixtures::START_LOOP,
            time_limit_ms(5),
            "module start_loop trapped while starting: wasm trap: interrupt",
        ),
        (
            "inbox_zero",
            fixtures::INBOX_ZERO,
            AgentLimits::default(),
            "dp_inbox(65504) returned 0x0",
        ),
    ];
    for (name, wat, limits, reason) in refusals {
        let module = b.module(name, wat.as_bytes());
        let agent = wasm_agent(&b.host, x, &module, limits, "");
        let now_ns = b.mesh.now_ns;
        let Err(error) = b.mesh.shards[0].replace(x, agent, now_ns) else {
            panic!("the swap to {name} succeeded");
        };
        assert!(
            matches!(error.error, DeployError::Start { agent, .. } if agent == x),
            "{error:?}"
        );
        assert!(error.to_string().contains(reason), "{name}: {error}");
        let status = b.mesh.status(x).expect("deployed");
        assert_eq!(
            (status.state, status.restarts, status.queued_frames),
            (AgentState::Running, 0, 2)
        );
    }

    // The old counter handles what was queued, with its state.
    b.mesh.run();
    let seen = b.take();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header.correlation_id, first);
    assert_eq!(seen[1].header.correlation_id, second);
    for reply in &seen {
        assert_eq!(
            Totals::decode(&reply.payload),
            Some(Totals {
                count: 11,
                sum: 155
            })
        );
    }

    // A good swap still works afterwards, and starts from scratch.
    let counter_c = b.module("counter_c", COUNTER_C);
    let agent = wasm_agent(&b.host, x, &counter_c, AgentLimits::default(), "");
    let now_ns = b.mesh.now_ns;
    assert!(b.mesh.shards[0].replace(x, agent, now_ns).is_ok());
    let answer = b.ask(x, Performative::Request, &counter::number(-4));
    assert_eq!(
        Totals::decode(&answer.payload),
        Some(Totals { count: 1, sum: -4 })
    );
    b.assert_neighbour_serves();
}

#[test]
fn a_swap_ends_a_backoff_and_revives_a_stopped_agent() {
    let mut b = Bench::with(host(), RestartPolicy::DEFAULT);
    let trap = b.module("trap", fixtures::TRAP.as_bytes());
    let echo = b.module("echo_c", ECHO_C);

    // In back-off: the kept messages go to the new code, the timer is gone.
    let backing_off = b
        .deploy("backing-off", &trap, AgentLimits::default(), "")
        .expect("deploy");
    b.failure(backing_off, b"crash");
    let kept: Vec<u64> = ["k1", "k2"]
        .iter()
        .map(|k| b.send(backing_off, Performative::Request, k.as_bytes()))
        .collect();
    b.mesh.run();
    assert_eq!(b.take(), vec![]);
    assert_eq!(b.mesh.next_timer_ns(), Some(MS));
    let agent = wasm_agent(&b.host, backing_off, &echo, AgentLimits::default(), "");
    assert!(b.mesh.shards[0].replace(backing_off, agent, 0).is_ok());
    assert_eq!(b.mesh.next_timer_ns(), None);
    b.mesh.run();
    let seen = b.take();
    let answered: Vec<(u64, &[u8])> = seen
        .iter()
        .map(|m| (m.header.correlation_id, &m.payload[..]))
        .collect();
    assert_eq!(answered, [(kept[0], &b"k1"[..]), (kept[1], &b"k2"[..])]);
    let status = b.mesh.status(backing_off).expect("deployed");
    assert_eq!(
        (status.state, status.restarts, status.crashes_in_window),
        (AgentState::Running, 0, 0)
    );

    // Stopped (no restarts allowed): revived by a swap.
    let mut b = Bench::with(host(), RestartPolicy::NEVER);
    let trap = b.module("trap", fixtures::TRAP.as_bytes());
    let echo = b.module("echo_rust", ECHO_RUST);
    let stopped = b
        .deploy("stopped", &trap, AgentLimits::default(), "")
        .expect("deploy");
    b.failure(stopped, b"crash");
    assert_eq!(
        b.mesh.status(stopped).expect("deployed").state,
        AgentState::Stopped
    );
    assert!(b.failure(stopped, b"hello?").contains("restarts disabled"));
    let agent = wasm_agent(&b.host, stopped, &echo, AgentLimits::default(), "");
    assert!(b.mesh.shards[0].replace(stopped, agent, 0).is_ok());
    assert_eq!(
        b.ask(stopped, Performative::Request, b"back").payload,
        b"back"
    );
    assert_eq!(
        b.mesh.status(stopped).expect("deployed").state,
        AgentState::Running
    );
    b.assert_neighbour_serves();
}
