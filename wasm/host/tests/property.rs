//! A property test over two shards connected by hand: random messages (random sender,
//! addressee among the deployed agents and some unknown ids, performative, priority,
//! reply flag, payload size including over the limits) to a mix of WASM agents (echo and
//! counter in Rust and C, echo with a small `message_bytes_max`, an agent that traps,
//! fails or loops on some payloads, in WAT and in Rust, where it takes its messages in
//! batches) and to native clients.
//!
//! The properties: every accepted message is delivered to its client addressee exactly
//! once, or answered exactly once (with what its addressee's code answers, or with a
//! `failure` that matches what happened to it), or not answered at all where the code
//! never answers (a counter's `inform`, anything flagged `REPLY`); a refused send (a
//! `SendError`) is never delivered nor answered; a counter's totals count exactly the
//! numbers it was sent; at the end every shard is idle and every buffer home.
//!
//! Mailboxes are 8 frames, so sends meet full mailboxes (refused here, kept in the ring
//! there). So that no answer is ever dropped on a client's full mailbox (which the
//! shards count instead of delivering), a client is given no more than 8 messages that
//! will bring it a frame before it has received them: such messages are skipped, not
//! sent.
//!
//! Deterministic: the runner's generator has a fixed seed. The looping agent has a 1 ms
//! limit, and few messages make it loop.

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use common::{
    batching_host, load, name_on_shard, wasm_agent, Inbox, Mesh, Received, FRAGILE, MAX_PAYLOAD,
};
use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_guests::formats::counter::Totals;
use dataplane_shard::{RestartPolicy, SendError};
use dataplane_wasm::{AgentLimits, AgentModule, Host};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const MAILBOX_FRAMES: usize = 8;
const CLIENTS: usize = 4;
const SMALL_MAX: usize = 64;
const TRAP_TEXT: &str = "agent crashed: wasm trap: wasm `unreachable` instruction executed";

/// What an addressee is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client(usize),
    Echo { max: usize },
    Counter,
    Fragile { spins: bool },
    Ghost,
}

/// A generated message; indexes are into the clients and the targets.
#[derive(Debug, Clone)]
struct Msg {
    sender: usize,
    target: usize,
    /// Sent to the burst's hot target instead, so that mailboxes fill up.
    hot: bool,
    performative: usize,
    priority: usize,
    reply: bool,
    size: usize,
    first: u8,
    salt: u64,
}

/// A burst of messages (many of them to one `hot` target), then `steps` delivery rounds
/// of `budget` messages per shard, then the clock moves `advance_ns`.
#[derive(Debug, Clone)]
struct Burst {
    messages: Vec<Msg>,
    hot: usize,
    budget: usize,
    steps: usize,
    advance_ns: u64,
}

fn msg(targets: usize) -> impl Strategy<Value = Msg> {
    let size = prop_oneof![
        3 => Just(0usize),
        6 => Just(8usize),
        6 => 1..100usize,
        3 => 60..70usize,
        1 => Just(MAX_PAYLOAD - 8),
        1 => Just(MAX_PAYLOAD),
        1 => Just(70_000usize),
    ];
    let first = prop_oneof![12 => Just(b'a'), 2 => Just(b'!'), 2 => Just(b'#'), 1 => Just(b'?')];
    (
        0..CLIENTS,
        (0..targets, prop::bool::weighted(0.4)),
        0..Performative::ALL.len(),
        0..Priority::COUNT,
        prop::bool::weighted(0.1),
        size,
        first,
        any::<u64>(),
    )
        .prop_map(
            |(sender, (target, hot), performative, priority, reply, size, first, salt)| Msg {
                sender,
                target,
                hot,
                performative,
                priority,
                reply,
                size,
                first,
                salt,
            },
        )
}

fn bursts(targets: usize) -> impl Strategy<Value = Vec<Burst>> {
    let burst = (
        prop::collection::vec(msg(targets), 1..30),
        0..targets,
        1..10usize,
        0..6usize,
        0..4_000_000u64,
    )
        .prop_map(|(messages, hot, budget, steps, advance_ns)| Burst {
            messages,
            hot,
            budget,
            steps,
            advance_ns,
        });
    prop::collection::vec(burst, 1..6)
}

/// The modules, compiled once for every case.
struct Modules {
    echo_rust: Arc<AgentModule>,
    echo_c: Arc<AgentModule>,
    counter_rust: Arc<AgentModule>,
    counter_c: Arc<AgentModule>,
    fragile: Arc<AgentModule>,
    /// The same rules in Rust: it takes messages in batches (`dp_on_batch`).
    fragile_rust: Arc<AgentModule>,
}

/// The agents of one case.
struct World {
    mesh: Mesh,
    clients: Vec<(AgentId, Inbox)>,
    targets: Vec<(AgentId, Kind)>,
}

fn world(host: &Host, modules: &Modules) -> World {
    let mut mesh = Mesh::new(2, |config| {
        config.mailbox_capacity_frames = MAILBOX_FRAMES;
        config.restart = RestartPolicy {
            max_restarts: 2,
            window_ns: 50_000_000,
            backoff_initial_ns: 1_000_000,
            backoff_max_ns: 4_000_000,
        };
    });
    let clients: Vec<(AgentId, Inbox)> = (0..CLIENTS)
        .map(|n| mesh.client(&name_on_shard(&format!("client{n}"), n / 2, 2)))
        .collect();
    let mut targets: Vec<(AgentId, Kind)> = clients
        .iter()
        .enumerate()
        .map(|(n, (id, _))| (*id, Kind::Client(n)))
        .collect();
    let small = AgentLimits {
        message_bytes_max: SMALL_MAX as u32,
        ..AgentLimits::default()
    };
    let spinner = AgentLimits {
        time_per_message: std::time::Duration::from_millis(1),
        ..AgentLimits::default()
    };
    let wasm: [(&str, usize, &Arc<AgentModule>, AgentLimits, Kind); 11] = [
        (
            "batched",
            0,
            &modules.fragile_rust,
            AgentLimits::default(),
            Kind::Fragile { spins: false },
        ),
        (
            "batched",
            1,
            &modules.fragile_rust,
            AgentLimits::default(),
            Kind::Fragile { spins: false },
        ),
        (
            "echo",
            0,
            &modules.echo_rust,
            AgentLimits::default(),
            Kind::Echo { max: MAX_PAYLOAD },
        ),
        (
            "echo",
            1,
            &modules.echo_c,
            AgentLimits::default(),
            Kind::Echo { max: MAX_PAYLOAD },
        ),
        (
            "counter",
            0,
            &modules.counter_rust,
            AgentLimits::default(),
            Kind::Counter,
        ),
        (
            "counter",
            1,
            &modules.counter_c,
            AgentLimits::default(),
            Kind::Counter,
        ),
        (
            "fragile",
            0,
            &modules.fragile,
            AgentLimits::default(),
            Kind::Fragile { spins: false },
        ),
        (
            "fragile",
            1,
            &modules.fragile,
            AgentLimits::default(),
            Kind::Fragile { spins: false },
        ),
        (
            "small",
            0,
            &modules.echo_c,
            small.clone(),
            Kind::Echo { max: SMALL_MAX },
        ),
        (
            "small",
            1,
            &modules.echo_rust,
            small,
            Kind::Echo { max: SMALL_MAX },
        ),
        (
            "spinner",
            1,
            &modules.fragile,
            spinner,
            Kind::Fragile { spins: true },
        ),
    ];
    for (prefix, shard, module, limits, kind) in wasm {
        let id = AgentId::from_name(&name_on_shard(prefix, shard, 2));
        mesh.deploy(id, wasm_agent(host, id, module, limits, ""))
            .expect("deploy");
        targets.push((id, kind));
    }
    for shard in 0..2 {
        let ghost = AgentId::from_name(&name_on_shard("ghost", shard, 2));
        targets.push((ghost, Kind::Ghost));
    }
    World {
        mesh,
        clients,
        targets,
    }
}

const TARGETS: usize = CLIENTS + 11 + 2;

/// A message that was sent, as it was sent.
struct Sent {
    header: Header,
    payload: Vec<u8>,
    kind: Kind,
    /// Frames it brings to clients: a delivery (to a client) or an answer (to its sender).
    frames: usize,
}

/// How many frames an accepted message brings back to its sender (0 or 1).
fn answers(kind: Kind, header: &Header) -> usize {
    if header.flags.contains(Flags::REPLY) {
        return 0;
    }
    match kind {
        Kind::Client(_) => 0,
        Kind::Counter => usize::from(matches!(
            header.performative,
            Performative::Request | Performative::Query
        )),
        Kind::Echo { .. } | Kind::Fragile { .. } | Kind::Ghost => 1,
    }
}

/// Checks one answer against what the addressee may answer to `sent`.
fn check_answer(sent: &Sent, answer: &Received) -> Result<(), String> {
    let request = &sent.header;
    let expected_header = Header {
        performative: answer.header.performative,
        flags: answer.header.flags,
        ..request.reply_to(Performative::Inform)
    };
    if answer.header != expected_header || !answer.header.flags.contains(Flags::REPLY) {
        return Err(format!("answer header {:?} to {request:?}", answer.header));
    }
    let payload = &sent.payload;
    let text = answer.text();
    let failure = answer.is_failure();
    let ok = match sent.kind {
        Kind::Client(_) => false,
        Kind::Ghost => failure && text == format!("unknown agent {}", request.to),
        Kind::Echo { max } if payload.len() <= max => {
            answer.header.performative == Performative::Inform
                && answer.header.flags == Flags::REPLY
                && answer.payload == *payload
        }
        Kind::Echo { max } => {
            failure && text.contains(&format!("exceeds the agent's message_bytes_max of {max}"))
        }
        Kind::Counter => {
            answer.header.performative == Performative::Inform
                && Totals::decode(&answer.payload).is_some()
        }
        Kind::Fragile { .. } if !failure => {
            let echoed = answer.payload.get(8..) == Some(&payload[..]);
            answer.header.performative == Performative::Inform
                && echoed
                && !matches!(payload.first(), Some(b'!' | b'#' | b'?'))
        }
        Kind::Fragile { .. } => {
            let first = payload.first().copied();
            (first == Some(b'!') && text == TRAP_TEXT)
                || (first == Some(b'#') && text.ends_with(" returned error 5"))
                || (payload.len() + 8 > MAX_PAYLOAD && text.ends_with(" returned error -3"))
                || text.contains("stopped after ")
                // The time limit: the looping payload, or any call the machine stalled.
                || text.contains("wasm trap: interrupt (time_per_message_ms of ")
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} answered {:?} {:?} {:?} to {request:?} with {} bytes",
            sent.kind,
            answer.header.performative,
            answer.header.flags,
            &text[..text.len().min(120)],
            payload.len()
        ))
    }
}

/// What the cases exercised, together.
#[derive(Debug, Default)]
struct Coverage {
    accepted: Cell<u64>,
    refused_full: Cell<u64>,
    refused_unknown: Cell<u64>,
    refused_too_large: Cell<u64>,
    skipped: Cell<u64>,
    crash_answers: Cell<u64>,
    stop_answers: Cell<u64>,
    interrupts: Cell<u64>,
    stalls: Cell<u64>,
    restarts: Cell<u64>,
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get() + by);
}

fn run_case(host: &Host, modules: &Modules, bursts: &[Burst], coverage: &Coverage) {
    let World {
        mut mesh,
        clients,
        targets,
    } = world(host, modules);
    let mut sent: HashMap<u64, Sent> = HashMap::new();
    let mut refused: Vec<u64> = Vec::new();
    // Frames each client is owed (deliveries and answers of accepted messages).
    let mut owed = [0usize; CLIENTS];
    let mut correlation_id = 0u64;
    for burst in bursts {
        for m in &burst.messages {
            correlation_id += 1;
            let (to, kind) = targets[if m.hot { burst.hot } else { m.target }];
            let (from, _) = clients[m.sender];
            let header = Header {
                to,
                from,
                conversation_id: m.salt,
                correlation_id,
                performative: Performative::ALL[m.performative],
                priority: Priority::ALL[m.priority],
                flags: if m.reply { Flags::REPLY } else { Flags::NONE },
            };
            // Only the looping agent is asked to loop (a loop costs its time limit).
            let first = match (m.first, kind) {
                (b'?', Kind::Fragile { spins: true }) => b'?',
                (b'?', _) => b'a',
                (first, _) => first,
            };
            let payload: Vec<u8> = (0..m.size)
                .map(|i| match i {
                    0 => first,
                    _ => (m.salt >> (8 * (i % 8))) as u8 ^ i as u8,
                })
                .collect();
            let frames_to_sender = answers(kind, &header);
            let target_client = match kind {
                Kind::Client(n) => Some(n),
                _ => None,
            };
            let pending =
                |client: usize| owed[client].saturating_sub(clients[client].1.borrow().len());
            let over = pending(m.sender) + frames_to_sender > MAILBOX_FRAMES
                || target_client.is_some_and(|n| pending(n) + 1 > MAILBOX_FRAMES);
            if over {
                bump(&coverage.skipped, 1);
                continue;
            }
            match mesh.send(&header, &payload) {
                Ok(()) => {
                    bump(&coverage.accepted, 1);
                    owed[m.sender] += frames_to_sender;
                    if let Some(n) = target_client {
                        owed[n] += 1;
                    }
                    sent.insert(
                        correlation_id,
                        Sent {
                            header,
                            payload,
                            kind,
                            frames: frames_to_sender + usize::from(target_client.is_some()),
                        },
                    );
                }
                Err(error) => {
                    match error {
                        SendError::MailboxFull { .. } => bump(&coverage.refused_full, 1),
                        SendError::UnknownAgent { to } => {
                            assert_eq!(kind, Kind::Ghost, "{to} is deployed");
                            assert_eq!(mesh.owner(to), mesh.owner(from), "a remote ghost");
                            bump(&coverage.refused_unknown, 1);
                        }
                        SendError::Pool(_) | SendError::Frame(_) => {
                            assert!(m.size > 65_536, "{error}");
                            bump(&coverage.refused_too_large, 1);
                        }
                        other => panic!("unexpected refusal {other}"),
                    }
                    refused.push(correlation_id);
                }
            }
        }
        for _ in 0..burst.steps {
            mesh.step(burst.budget);
        }
        mesh.now_ns += burst.advance_ns;
    }
    mesh.settle();

    // Every frame the clients received, attributed to its message.
    let mut deliveries: HashMap<u64, usize> = HashMap::new();
    let mut answered: HashMap<u64, Vec<Received>> = HashMap::new();
    for (n, (client, inbox)) in clients.iter().enumerate() {
        for frame in inbox.borrow().iter() {
            let id = frame.header.correlation_id;
            let Some(message) = sent.get(&id) else {
                panic!("client {n} got a frame for {id}, which was never accepted: {frame:?}");
            };
            if frame.header == message.header && *client == message.header.to {
                assert_eq!(frame.payload, message.payload, "delivered intact");
                *deliveries.entry(id).or_default() += 1;
            } else {
                answered.entry(id).or_default().push(frame.clone());
            }
        }
    }
    for (id, message) in &sent {
        let delivered = deliveries.get(id).copied().unwrap_or(0);
        let answers_seen = answered.get(id).map_or(&[][..], Vec::as_slice);
        let expected_deliveries = usize::from(matches!(message.kind, Kind::Client(_)));
        assert_eq!(
            delivered, expected_deliveries,
            "message {id} to {:?} delivered {delivered} times",
            message.kind
        );
        assert_eq!(
            answers_seen.len(),
            message.frames - expected_deliveries,
            "message {id} ({:?} {:?}, {} bytes) to {:?}: answers {answers_seen:?}",
            message.header.performative,
            message.header.flags,
            message.payload.len(),
            message.kind
        );
        for answer in answers_seen {
            if let Err(violation) = check_answer(message, answer) {
                panic!("message {id}: {violation}");
            }
            let text = answer.text();
            if text == TRAP_TEXT {
                bump(&coverage.crash_answers, 1);
            }
            if text.contains("stopped after ") {
                bump(&coverage.stop_answers, 1);
            }
            if text.contains("wasm trap: interrupt") {
                bump(&coverage.interrupts, 1);
            }
        }
    }
    for id in &refused {
        assert!(!deliveries.contains_key(id) && !answered.contains_key(id));
    }

    // The counters counted exactly the numbers they were sent.
    for (counter, kind) in &targets {
        if *kind != Kind::Counter {
            continue;
        }
        let mut expected = Totals { count: 0, sum: 0 };
        for message in sent.values() {
            let adds = message.header.to == *counter
                && !message.header.flags.contains(Flags::REPLY)
                && matches!(
                    message.header.performative,
                    Performative::Request | Performative::Inform
                );
            if let (true, Ok(bytes)) = (adds, <[u8; 8]>::try_from(&message.payload[..])) {
                expected.count += 1;
                expected.sum = expected.sum.wrapping_add(i64::from_le_bytes(bytes));
            }
        }
        let (me, inbox) = &clients[0];
        inbox.borrow_mut().clear();
        let query = Header {
            to: *counter,
            from: *me,
            conversation_id: 0,
            correlation_id: u64::MAX,
            performative: Performative::Query,
            priority: Priority::Normal,
            flags: Flags::NONE,
        };
        mesh.send(&query, b"").expect("query");
        mesh.settle();
        let inbox = inbox.borrow();
        assert_eq!(inbox.len(), 1);
        assert_eq!(
            Totals::decode(&inbox[0].payload),
            Some(expected),
            "{counter}"
        );
    }

    for shard in &mesh.shards {
        bump(&coverage.stalls, shard.stats().stalled_deliveries);
        bump(&coverage.restarts, shard.stats().agent_restarts);
    }
    mesh.assert_quiet();
}

#[test]
fn every_accepted_message_is_delivered_or_answered_exactly_once() {
    let host = batching_host();
    let modules = Modules {
        echo_rust: load(&host, "echo_rust", dataplane_guests::ECHO_RUST),
        echo_c: load(&host, "echo_c", dataplane_guests::ECHO_C),
        counter_rust: load(&host, "counter_rust", dataplane_guests::COUNTER_RUST),
        counter_c: load(&host, "counter_c", dataplane_guests::COUNTER_C),
        fragile: load(&host, "fragile", FRAGILE.as_bytes()),
        fragile_rust: load(&host, "fragile_rust", dataplane_guests::FRAGILE_RUST),
    };
    let config = Config {
        // 96: with the two batched agents among 17 targets, 48 cases (the earlier
        // count) met no full mailbox on a local send; 96 meet a few.
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let coverage = Coverage::default();
    // A panic fails the case (proptest catches it, then shrinks the input).
    let result = runner.run(&bursts(TARGETS), |bursts| {
        run_case(&host, &modules, &bursts, &coverage);
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    // The cases must exercise what is under test.
    let c = &coverage;
    eprintln!("{c:?}");
    assert!(c.accepted.get() > 1000, "{c:?}");
    for (what, count) in [
        ("refused (mailbox full)", &c.refused_full),
        ("refused (unknown agent)", &c.refused_unknown),
        ("refused (too large)", &c.refused_too_large),
        ("crash answers", &c.crash_answers),
        ("stop answers", &c.stop_answers),
        ("interrupts", &c.interrupts),
        ("ring stalls", &c.stalls),
        ("restarts", &c.restarts),
    ] {
        assert!(count.get() > 0, "no {what}: {c:?}");
    }
}
