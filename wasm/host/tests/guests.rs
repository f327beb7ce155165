//! The built guests of `dataplane-guests` (Rust and C) and every WAT fixture, end to end
//! through sans-IO shards driven by hand: what `wasm/README.md` says each one does, it
//! does, whatever the language it was written in.

mod common;

use std::time::{Duration, Instant};

use common::{
    capture_logs, header, host, load, name_on_shard, time_limit_ms, wasm_agent, Bench, Collector,
    Inbox, Mesh, Received, MAX_PAYLOAD, MS,
};
use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_guests::formats::counter::{self, Totals};
use dataplane_guests::formats::orderbook::{Best, Execution, Fill, Order, Side};
use dataplane_guests::{fixtures, formats};
use dataplane_shard::{AgentState, DeployError, Shard};
use dataplane_wasm::{AgentLimits, AgentModule, Host, WasmError};

/// Limits for fixtures that do a lot in one call (grow memory page by page, send 100000
/// times): a time limit no loaded machine reaches, so the outcome never depends on it.
fn patient() -> AgentLimits {
    time_limit_ms(10_000)
}

// --- echo -----------------------------------------------------------------------------

const ECHOES: [(&str, &[u8]); 3] = [
    ("echo_rust", dataplane_guests::ECHO_RUST),
    ("echo_c", dataplane_guests::ECHO_C),
    ("echo.wat", fixtures::ECHO.as_bytes()),
];

#[test]
fn echo_round_trips_every_payload_size_in_rust_c_and_wat() {
    let mut bench = Bench::new();
    for (name, bytes) in ECHOES {
        let module = bench.module(name, bytes);
        let echo = bench
            .deploy(name, &module, AgentLimits::default(), "")
            .expect("deploy");
        for (n, size) in [0usize, 1, 1000, MAX_PAYLOAD].into_iter().enumerate() {
            let payload: Vec<u8> = (0..size).map(|i| (i * 7 + n) as u8).collect();
            let priority = Priority::ALL[n % Priority::COUNT];
            let request = Header {
                conversation_id: 1000 + n as u64,
                priority,
                ..header(bench.me, echo, Performative::Request, 0)
            };
            let correlation_id = bench.send_with(echo, request, &payload);
            bench.mesh.run();
            let seen = bench.take();
            assert_eq!(seen.len(), 1, "{name} {size}: {seen:?}");
            let reply = &seen[0];
            assert_eq!(
                reply.header,
                Header {
                    to: bench.me,
                    from: echo,
                    conversation_id: 1000 + n as u64,
                    correlation_id,
                    performative: Performative::Inform,
                    priority,
                    flags: Flags::REPLY,
                },
                "{name} {size}"
            );
            assert!(reply.payload == payload, "{name}: payload of {size} bytes");
        }
        // Every performative that is not a reply is echoed; a reply is not answered.
        for performative in Performative::ALL {
            let answer = bench.ask(echo, performative, b"p");
            assert_eq!(answer.header.performative, Performative::Inform, "{name}");
            assert_eq!(answer.payload, b"p");
        }
        let reply = Header {
            flags: Flags::REPLY,
            ..header(bench.me, echo, Performative::Inform, 0)
        };
        bench.send_with(echo, reply, b"a reply");
        bench.mesh.run();
        assert_eq!(bench.take(), vec![], "{name} answered a reply");

        // One byte over the limit is refused before the guest sees it; the agent runs on.
        let text = bench.failure(echo, &vec![0; MAX_PAYLOAD + 1]);
        assert!(
            text.contains("65457 bytes exceeds the agent's message_bytes_max of 65456"),
            "{name}: {text}"
        );
        assert_eq!(bench.ask(echo, Performative::Request, b"ok").payload, b"ok");
        assert_eq!(
            bench.mesh.status(echo).expect("deployed").state,
            AgentState::Running
        );
    }
    bench.assert_neighbour_serves();
    bench.mesh.assert_quiet();
}

#[test]
fn echo_honours_a_small_message_limit() {
    let mut bench = Bench::new();
    for (name, bytes) in ECHOES {
        let module = bench.module(name, bytes);
        let limits = AgentLimits {
            message_bytes_max: 100,
            ..AgentLimits::default()
        };
        let echo = bench.deploy(name, &module, limits, "").expect("deploy");
        let answer = bench.ask(echo, Performative::Request, &[9; 100]);
        assert_eq!(answer.payload, vec![9; 100], "{name}");
        let text = bench.failure(echo, &[9; 101]);
        assert!(
            text.contains("exceeds the agent's message_bytes_max of 100"),
            "{name}: {text}"
        );
        let answer = bench.ask(echo, Performative::Request, &[8; 3]);
        assert_eq!(answer.payload, vec![8; 3], "{name}");
    }
}

// --- counter --------------------------------------------------------------------------

fn totals(answer: &Received) -> Totals {
    assert_eq!(answer.header.performative, Performative::Inform);
    assert_eq!(answer.header.flags, Flags::REPLY);
    Totals::decode(&answer.payload).expect("16-byte totals")
}

#[test]
fn counters_in_rust_and_c_add_count_and_answer_totals() {
    let mut bench = Bench::new();
    for (name, bytes) in [
        ("counter_rust", dataplane_guests::COUNTER_RUST),
        ("counter_c", dataplane_guests::COUNTER_C),
    ] {
        let module = bench.module(name, bytes);
        let a = bench
            .deploy(&format!("{name}-a"), &module, AgentLimits::default(), "")
            .expect("deploy");
        let b = bench
            .deploy(&format!("{name}-b"), &module, AgentLimits::default(), "")
            .expect("deploy");
        let fresh = Totals { count: 0, sum: 0 };
        assert_eq!(totals(&bench.ask(a, Performative::Query, b"")), fresh);

        // inform adds silently; request adds and answers; query answers.
        bench.tell(a, Performative::Inform, &counter::number(5));
        bench.tell(a, Performative::Inform, &counter::number(-12));
        let t = totals(&bench.ask(a, Performative::Request, &counter::number(100)));
        assert_eq!(t, Totals { count: 3, sum: 93 }, "{name}");
        // A request that is not a number adds nothing and still answers.
        let t = totals(&bench.ask(a, Performative::Request, b"seven"));
        assert_eq!(t, Totals { count: 3, sum: 93 }, "{name}");
        // An inform that is not a number, other performatives and replies: ignored.
        bench.tell(a, Performative::Inform, b"1234567");
        bench.tell(a, Performative::Propose, &counter::number(1));
        bench.tell(a, Performative::Refuse, &counter::number(1));
        let reply = Header {
            flags: Flags::REPLY,
            ..header(bench.me, a, Performative::Inform, 0)
        };
        bench.send_with(a, reply, &counter::number(1000));
        bench.mesh.run();
        assert_eq!(bench.take(), vec![]);
        assert_eq!(
            totals(&bench.ask(a, Performative::Query, b"")),
            Totals { count: 3, sum: 93 },
            "{name}"
        );
        // The sum wraps.
        bench.tell(a, Performative::Inform, &counter::number(i64::MAX));
        let t = totals(&bench.ask(a, Performative::Request, &counter::number(i64::MAX)));
        assert_eq!(
            t,
            Totals {
                count: 5,
                sum: 93i64.wrapping_add(i64::MAX).wrapping_add(i64::MAX)
            },
            "{name}"
        );

        // State is per instance: b saw nothing of a's numbers.
        assert_eq!(totals(&bench.ask(b, Performative::Query, b"")), fresh);
        // Many messages, state kept across all of them.
        let mut sum = 0i64;
        for value in -500i64..500 {
            bench.send(b, Performative::Inform, &counter::number(value * 3));
            sum += value * 3;
        }
        bench.mesh.run();
        let t = totals(&bench.ask(b, Performative::Query, b""));
        assert_eq!(t, Totals { count: 1000, sum }, "{name}");
    }
    bench.assert_neighbour_serves();
}

// --- pingpong -------------------------------------------------------------------------

const PINGPONGS: [(&str, &[u8]); 2] = [
    ("pingpong_rust", dataplane_guests::PINGPONG_RUST),
    ("pingpong_c", dataplane_guests::PINGPONG_C),
];

#[test]
fn pingpong_pongs_and_refuses_a_bad_configuration() {
    let mut bench = Bench::new();
    for (name, bytes) in PINGPONGS {
        let module = bench.module(name, bytes);
        let pong = bench
            .deploy(name, &module, AgentLimits::default(), "")
            .expect("deploy");
        let answer = bench.ask(pong, Performative::Request, b"ping!");
        assert_eq!(answer.header.performative, Performative::Inform);
        assert_eq!(answer.payload, b"ping!");
        // Without a peer, a kick and a pong are ignored.
        bench.tell(pong, Performative::Inform, b"kick");
        bench.tell(pong, Performative::Query, b"?");

        // Whitespace around the configuration is ignored.
        let pinger = bench
            .deploy(
                &format!("{name}-spaced"),
                &module,
                AgentLimits::default(),
                " \tpeer=neighbour\n",
            )
            .expect("a padded configuration is fine");
        assert!(bench.mesh.shard_of(pinger).hosts(pinger));

        for config in ["bogus", "peer=", "peer", "pear=echo"] {
            let error = bench
                .deploy(
                    &format!("{name}-bad"),
                    &module,
                    AgentLimits::default(),
                    config,
                )
                .expect_err("refused");
            let text = error.to_string();
            assert!(
                text.contains("dp_init returned 1"),
                "{name} {config:?}: {text}"
            );
            assert!(!bench.mesh.shards[0].hosts(AgentId::from_name(&format!("{name}-bad"))));
        }
    }
}

/// The peers a pinger rallies against.
const PEERS: [(&str, &[u8]); 4] = [
    ("echo_rust", dataplane_guests::ECHO_RUST),
    ("echo_c", dataplane_guests::ECHO_C),
    ("pingpong_rust", dataplane_guests::PINGPONG_RUST),
    ("pingpong_c", dataplane_guests::PINGPONG_C),
];

fn handled(mesh: &Mesh) -> u64 {
    mesh.shards
        .iter()
        .map(|shard| shard.stats().messages_handled)
        .sum()
}

/// Kicks a pinger (peer = the peer) and lets `rounds` pings and pongs go by, one message
/// per poll, then swaps the peer for a collector that catches the next ping: its
/// correlation id, payload, conversation and priority prove the rally went `rounds`
/// rounds intact.
fn rally(host: &Host, shards: usize, pinger: (&str, &[u8]), peer: (&str, &[u8]), rounds: u64) {
    let context = format!("{} -> {} on {shards} shard(s)", pinger.0, peer.0);
    let mut mesh = Mesh::new(shards, |_| {});
    let (me, inbox) = mesh.client("tester");
    let pinger_id = AgentId::from_name(&name_on_shard("pinger", 0, shards));
    let peer_name = name_on_shard("peer", shards - 1, shards);
    let peer_id = AgentId::from_name(&peer_name);
    let peer_module = load(host, peer.0, peer.1);
    mesh.deploy(
        peer_id,
        wasm_agent(host, peer_id, &peer_module, AgentLimits::default(), ""),
    )
    .expect("peer");
    let pinger_module = load(host, pinger.0, pinger.1);
    mesh.deploy(
        pinger_id,
        wasm_agent(
            host,
            pinger_id,
            &pinger_module,
            AgentLimits::default(),
            &format!("peer={peer_name}"),
        ),
    )
    .expect("pinger");

    let kick = Header {
        conversation_id: 77,
        priority: Priority::High,
        ..header(me, pinger_id, Performative::Inform, 0)
    };
    mesh.send(&kick, b"the ball").expect("kick");
    // The kick, then `rounds` pings and pongs: one message is in flight at any time.
    let mut steps = 0;
    while handled(&mesh) < 1 + 2 * rounds {
        let before = handled(&mesh);
        mesh.step(1);
        assert!(
            handled(&mesh) <= before + 1,
            "{context}: one message at a time"
        );
        steps += 1;
        assert!(steps < 10 * (rounds + 2), "{context}: the rally stopped");
    }
    assert_eq!(handled(&mesh), 1 + 2 * rounds);

    // Ping `rounds + 1` is on its way to the peer: catch it.
    let caught = Inbox::default();
    let now_ns = mesh.now_ns;
    let old = mesh
        .shard_of(peer_id)
        .replace(peer_id, Box::new(Collector(caught.clone())), now_ns);
    assert!(old.is_ok(), "{context}: swap the peer");
    mesh.run();
    let caught = caught.borrow();
    assert_eq!(caught.len(), 1, "{context}: {caught:?}");
    assert_eq!(
        caught[0].header,
        Header {
            to: peer_id,
            from: pinger_id,
            conversation_id: 77,
            correlation_id: rounds + 1,
            performative: Performative::Request,
            priority: Priority::High,
            flags: Flags::NONE,
        },
        "{context}"
    );
    assert_eq!(caught[0].payload, b"the ball", "{context}");
    assert_eq!(inbox.borrow().len(), 0, "{context}: nothing for the tester");
    mesh.assert_quiet();
}

#[test]
fn pingpong_rallies_on_one_shard_for_every_pair_of_languages() {
    let host = host();
    for pinger in PINGPONGS {
        for peer in PEERS {
            rally(&host, 1, pinger, peer, 60);
        }
    }
}

#[test]
fn pingpong_rallies_across_two_shards_for_every_pair_of_languages() {
    let host = host();
    for pinger in PINGPONGS {
        for peer in PEERS {
            rally(&host, 2, pinger, peer, 60);
        }
    }
}

#[test]
fn pingpong_stops_at_a_failure_and_reports_an_unknown_local_peer() {
    let host = host();
    for (name, bytes) in PINGPONGS {
        let module = load(&host, name, bytes);
        // A peer on the other shard that is not deployed: the shard there answers the
        // ping with a failure, which ends the rally (no ping in a loop).
        let mut mesh = Mesh::new(2, |_| {});
        let (me, inbox) = mesh.client("tester");
        let pinger = AgentId::from_name(&name_on_shard("pinger", 0, 2));
        let ghost = name_on_shard("ghost", 1, 2);
        mesh.deploy(
            pinger,
            wasm_agent(
                &host,
                pinger,
                &module,
                AgentLimits::default(),
                &format!("peer={ghost}"),
            ),
        )
        .expect("pinger");
        let ((), logs) = capture_logs(|| {
            mesh.send(&header(me, pinger, Performative::Inform, 1), b"ball")
                .expect("kick");
            mesh.run();
        });
        assert_eq!(inbox.borrow().len(), 0, "{name}");
        assert_eq!(
            handled(&mesh),
            2,
            "{name}: the kick and the failure, nothing more"
        );
        assert!(
            logs.iter()
                .any(|(level, text)| *level == tracing::Level::WARN
                    && text.contains("failure reply, rally stopped")),
            "{name}: {logs:?}"
        );
        mesh.assert_quiet();

        // A peer that would be on the pinger's own shard and is not deployed: send
        // returns -4 and the kick is answered with that error.
        let mut bench = Bench::new();
        let module = bench.module(name, bytes);
        let lonely = bench
            .deploy(
                "lonely",
                &module,
                AgentLimits::default(),
                "peer=nobody-here",
            )
            .expect("deploy");
        assert_eq!(bench.mesh.owner(AgentId::from_name("nobody-here")), 0);
        let answer = bench.ask(lonely, Performative::Inform, b"kick");
        assert!(answer.is_failure(), "{name}: {answer:?}");
        assert!(
            answer.text().contains("returned error -4"),
            "{name}: {}",
            answer.text()
        );
    }
}

// --- orderbook ------------------------------------------------------------------------

fn order(order_id: u64, side: Side, price: i64, qty: u32) -> [u8; 24] {
    Order {
        order_id,
        price,
        qty,
        side,
    }
    .encode()
}

fn fill(maker_order_id: u64, price: i64, qty: u32) -> Fill {
    Fill {
        maker_order_id,
        price,
        qty,
    }
}

struct Book {
    bench: Bench,
    book: AgentId,
}

impl Book {
    fn new() -> Book {
        let mut bench = Bench::new();
        let module = bench.module("orderbook_rust", dataplane_guests::ORDERBOOK_RUST);
        let book = bench
            .deploy("book", &module, AgentLimits::default(), "")
            .expect("deploy");
        Book { bench, book }
    }

    fn execute(&mut self, order: [u8; 24]) -> Execution {
        let answer = self.bench.ask(self.book, Performative::Request, &order);
        assert_eq!(answer.header.performative, Performative::Inform);
        Execution::decode(&answer.payload).expect("an execution")
    }

    fn best(&mut self) -> Best {
        let answer = self.bench.ask(self.book, Performative::Query, b"");
        assert_eq!(answer.header.performative, Performative::Inform);
        Best::decode(&answer.payload).expect("best levels")
    }
}

fn execution(filled_qty: u32, remaining_qty: u32, fills: Vec<Fill>) -> Execution {
    Execution {
        filled_qty,
        remaining_qty,
        fills,
    }
}

fn best(bid: (i64, u64), ask: (i64, u64)) -> Best {
    Best {
        bid_price: bid.0,
        bid_qty: bid.1,
        ask_price: ask.0,
        ask_qty: ask.1,
    }
}

#[test]
fn orderbook_matches_with_price_time_priority() {
    use Side::{Buy, Sell};
    let mut b = Book::new();
    assert_eq!(b.best(), best((0, 0), (0, 0)), "an empty book");

    // Resting orders.
    assert_eq!(b.execute(order(1, Buy, 100, 10)), execution(0, 10, vec![]));
    assert_eq!(b.execute(order(2, Buy, 100, 5)), execution(0, 5, vec![]));
    assert_eq!(b.execute(order(3, Buy, 99, 7)), execution(0, 7, vec![]));
    assert_eq!(b.execute(order(4, Sell, 101, 4)), execution(0, 4, vec![]));
    assert_eq!(b.execute(order(5, Sell, 102, 6)), execution(0, 6, vec![]));
    assert_eq!(b.best(), best((100, 15), (101, 4)));

    // A sell that crosses: the oldest order at the best bid first, then the next; all at
    // the resting price; a partial fill of order 2.
    assert_eq!(
        b.execute(order(6, Sell, 99, 12)),
        execution(12, 0, vec![fill(1, 100, 10), fill(2, 100, 2)])
    );
    assert_eq!(b.best(), best((100, 3), (101, 4)));
    // Through two levels: what was left of 2 at 100, then 3 at 99.
    assert_eq!(
        b.execute(order(7, Sell, 98, 10)),
        execution(10, 0, vec![fill(2, 100, 3), fill(3, 99, 7)])
    );
    assert_eq!(b.best(), best((0, 0), (101, 4)), "the bid side is empty");
    // A buy that sweeps the asks and rests the remainder at its price.
    assert_eq!(
        b.execute(order(8, Buy, 102, 20)),
        execution(10, 10, vec![fill(4, 101, 4), fill(5, 102, 6)])
    );
    assert_eq!(b.best(), best((102, 10), (0, 0)));

    // Time priority within a level, price priority across levels.
    b.execute(order(10, Sell, 110, 3));
    b.execute(order(11, Sell, 110, 5));
    b.execute(order(12, Sell, 109, 2));
    assert_eq!(b.best(), best((102, 10), (109, 2)));
    assert_eq!(
        b.execute(order(13, Buy, 110, 9)),
        execution(
            9,
            0,
            vec![fill(12, 109, 2), fill(10, 110, 3), fill(11, 110, 4)]
        )
    );
    assert_eq!(b.best(), best((102, 10), (110, 1)));
    // A buy that does not reach the ask rests; a sell below the bid trades at the bid.
    assert_eq!(b.execute(order(14, Buy, 105, 1)), execution(0, 1, vec![]));
    assert_eq!(
        b.execute(order(15, Sell, 1, 2)),
        execution(2, 0, vec![fill(14, 105, 1), fill(8, 102, 1)])
    );
    assert_eq!(b.best(), best((102, 9), (110, 1)));
    // Negative prices are prices.
    assert_eq!(
        b.execute(order(16, Sell, -5, 9)),
        execution(9, 0, vec![fill(8, 102, 9)])
    );
    assert_eq!(b.execute(order(17, Sell, -5, 1)), execution(0, 1, vec![]));
    assert_eq!(b.best(), best((0, 0), (-5, 1)));
    b.bench.assert_neighbour_serves();
}

#[test]
fn orderbook_refuses_malformed_orders_and_leaves_the_book_alone() {
    let mut b = Book::new();
    b.execute(order(1, Side::Buy, 100, 10));
    b.execute(order(2, Side::Sell, 105, 3));
    let before = b.best();
    let mut zero_qty = order(3, Side::Sell, 90, 0);
    let mut bad_side = order(4, Side::Sell, 90, 5);
    bad_side[20] = 2;
    let long = [order(5, Side::Sell, 90, 5).as_slice(), &[0]].concat();
    for malformed in [
        &order(5, Side::Sell, 90, 5)[..23],
        &long[..],
        &zero_qty[..],
        &bad_side[..],
        &[][..],
    ] {
        let answer = b.bench.ask(b.book, Performative::Request, malformed);
        assert_eq!(
            answer.header.performative,
            Performative::Refuse,
            "{malformed:?}"
        );
        assert_eq!(answer.header.flags, Flags::REPLY, "handled, not an error");
        assert_eq!(answer.payload, b"");
    }
    // Anything else that is not a reply is not understood.
    for performative in [
        Performative::Inform,
        Performative::Propose,
        Performative::Agree,
    ] {
        let answer = b
            .bench
            .ask(b.book, performative, &order(6, Side::Sell, 90, 5));
        assert_eq!(answer.header.performative, Performative::NotUnderstood);
        assert_eq!(answer.payload, b"");
    }
    // A reply is ignored.
    let reply = Header {
        flags: Flags::REPLY,
        ..header(b.bench.me, b.book, Performative::Request, 0)
    };
    b.bench
        .send_with(b.book, reply, &order(7, Side::Sell, 90, 5));
    b.bench.mesh.run();
    assert_eq!(b.bench.take(), vec![]);
    assert_eq!(b.best(), before, "the book is unchanged");
    zero_qty[16] = 1;
    assert_eq!(
        b.execute(zero_qty),
        execution(1, 0, vec![fill(1, 100, 1)]),
        "the same bytes with qty 1 trade"
    );
}

/// A plain reference book: resting orders `(price, arrival, order_id, qty)`.
#[derive(Default)]
struct ReferenceBook {
    bids: Vec<(i64, u64, u64, u32)>,
    asks: Vec<(i64, u64, u64, u32)>,
    arrivals: u64,
}

impl ReferenceBook {
    fn execute(&mut self, order_id: u64, side: Side, price: i64, qty: u32) -> Execution {
        let mut left = qty;
        let mut fills = Vec::new();
        loop {
            let opposite = match side {
                Side::Buy => &mut self.asks,
                Side::Sell => &mut self.bids,
            };
            // The best crossing resting order, oldest first at its price.
            let best = opposite
                .iter()
                .enumerate()
                .filter(|(_, o)| match side {
                    Side::Buy => o.0 <= price,
                    Side::Sell => o.0 >= price,
                })
                .min_by_key(|(_, o)| match side {
                    Side::Buy => (o.0, o.1),
                    Side::Sell => (-o.0, o.1),
                })
                .map(|(index, _)| index);
            let Some(index) = best.filter(|_| left > 0) else {
                break;
            };
            let resting = &mut opposite[index];
            let traded = resting.3.min(left);
            resting.3 -= traded;
            left -= traded;
            fills.push(fill(resting.2, resting.0, traded));
            if resting.3 == 0 {
                opposite.remove(index);
            }
        }
        if left > 0 {
            self.arrivals += 1;
            let own = match side {
                Side::Buy => &mut self.bids,
                Side::Sell => &mut self.asks,
            };
            own.push((price, self.arrivals, order_id, left));
        }
        execution(qty - left, left, fills)
    }

    fn best(&self) -> Best {
        let level = |orders: &[(i64, u64, u64, u32)], price: Option<i64>| match price {
            Some(price) => (
                price,
                orders
                    .iter()
                    .filter(|o| o.0 == price)
                    .map(|o| u64::from(o.3))
                    .sum(),
            ),
            None => (0, 0),
        };
        best(
            level(&self.bids, self.bids.iter().map(|o| o.0).max()),
            level(&self.asks, self.asks.iter().map(|o| o.0).min()),
        )
    }
}

#[test]
fn orderbook_agrees_with_a_reference_book_on_a_seeded_order_stream() {
    let mut b = Book::new();
    let mut reference = ReferenceBook::default();
    let mut rng = 0x5eed_u64;
    let mut next = || {
        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        dataplane_shard::routing::mix64(rng)
    };
    let mut fills = 0;
    for order_id in 1..=1500u64 {
        let side = if next() % 2 == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = 95 + (next() % 11) as i64;
        let qty = 1 + (next() % 25) as u32;
        let expected = reference.execute(order_id, side, price, qty);
        fills += expected.fills.len();
        assert_eq!(
            b.execute(order(order_id, side, price, qty)),
            expected,
            "order {order_id}"
        );
        if order_id % 50 == 0 {
            assert_eq!(b.best(), reference.best(), "after order {order_id}");
        }
    }
    assert!(fills > 500, "the stream must trade: {fills} fills");
}

// --- fixtures -------------------------------------------------------------------------

/// Every fixture has a test below.
const TESTED_FIXTURES: [&str; 17] = [
    "loop",
    "memory_bomb",
    "memory_bomb_error",
    "trap",
    "huge_send",
    "unknown_import",
    "wrong_module",
    "missing_export",
    "bad_signature",
    "send_storm",
    "init_fails",
    "echo",
    "start_loop",
    "big_memory",
    "inbox_zero",
    "no_memory",
    "shared_memory",
];

#[test]
fn every_fixture_has_a_test() {
    for (name, _) in fixtures::ALL {
        assert!(
            TESTED_FIXTURES.contains(&name),
            "fixture {name} is not tested"
        );
    }
    assert_eq!(TESTED_FIXTURES.len(), fixtures::ALL.len());
}

fn refusal(host: &Host, name: &str, bytes: &[u8]) -> WasmError {
    match AgentModule::from_bytes(host, name, bytes) {
        Ok(_) => panic!("{name} was accepted"),
        Err(error) => error,
    }
}

#[test]
fn fixtures_with_bad_imports_or_exports_are_refused_naming_them() {
    let host = host();
    let cases: [(&str, &[&str]); 7] = [
        ("unknown_import", &["imports dataplane_v1.launch_missiles"]),
        ("wrong_module", &["imports wasi_snapshot_preview1.fd_write"]),
        (
            "missing_export",
            &["does not export dp_on_message", "func (i32) -> (i32)"],
        ),
        (
            "bad_signature",
            &[
                "exports dp_on_message as func (i64) -> (i32)",
                "needs func (i32) -> (i32)",
            ],
        ),
        ("no_memory", &["does not export memory"]),
        // Over the pool's memory size (the default 16 MiB): refused when compiled.
        (
            "big_memory",
            &["memory has a minimum byte size of 33554432 which exceeds the limit"],
        ),
        ("shared_memory", &["memory"]),
    ];
    for (name, expected) in cases {
        let wat = dataplane_guests::fixture(name).expect("fixture");
        let error = refusal(&host, name, wat.as_bytes());
        let text = error.to_string();
        assert!(text.contains(&format!("module {name}")), "{text}");
        for part in expected {
            assert!(text.contains(part), "{name}: {text}");
        }
    }
    // The shared memory is refused as such: by validation, or by the ABI check.
    let text = refusal(&host, "shared_memory", fixtures::SHARED_MEMORY.as_bytes()).to_string();
    assert!(
        text.contains("unshared") || text.contains("shared") || text.contains("threads"),
        "{text}"
    );
    let text = refusal(&host, "not_wasm", fixtures::NOT_WASM).to_string();
    assert!(
        text.contains("module not_wasm is not valid WebAssembly"),
        "{text}"
    );
}

#[test]
fn fixtures_that_fail_to_start_refuse_the_deploy() {
    let mut bench = Bench::new();
    let cases: [(&str, &str, AgentLimits, &[&str]); 3] = [
        (
            "init_fails",
            fixtures::INIT_FAILS,
            AgentLimits::default(),
            &["module init_fails: dp_init returned 3"],
        ),
        (
            "inbox_zero",
            fixtures::INBOX_ZERO,
            AgentLimits::default(),
            &["dp_inbox(65504) returned 0x0"],
        ),
        (
            "start_loop",
            fixtures::START_LOOP,
            time_limit_ms(5),
            &["module start_loop trapped while starting: wasm trap: interrupt"],
        ),
    ];
    for (name, wat, limits, expected) in cases {
        let module = bench.module(name, wat.as_bytes());
        let started = Instant::now();
        let error = bench
            .deploy(name, &module, limits, "")
            .expect_err("refused");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}");
        assert!(
            matches!(error, DeployError::Start { .. }),
            "{name}: {error:?}"
        );
        let text = error.to_string();
        for part in expected {
            assert!(text.contains(part), "{name}: {text}");
        }
        assert!(!bench.mesh.shards[0].hosts(AgentId::from_name(name)));
    }
    // The refused instances give their pool slots back: more refusals than slots, and
    // each is still the module's own, not a full pool.
    let module = bench.module("init_fails", fixtures::INIT_FAILS.as_bytes());
    for n in 0..70 {
        let error = bench
            .deploy(&format!("again-{n}"), &module, AgentLimits::default(), "")
            .expect_err("refused");
        assert!(error.to_string().contains("dp_init returned 3"), "{error}");
    }
    bench.assert_neighbour_serves();
}

#[test]
fn big_memory_fits_under_a_larger_limit() {
    // 32 MiB initial memory: refused under the default 16 MiB, accepted by a host and an
    // agent allowed 64 MiB. So the refusal above is the limit, not the module.
    let host = Host::new(dataplane_wasm::HostConfig {
        pool_slots: Some(4),
        memory_bytes_max: 64 << 20,
        ..dataplane_wasm::HostConfig::default()
    })
    .expect("host");
    let module = load(&host, "big_memory", fixtures::BIG_MEMORY.as_bytes());
    let mut shard = Shard::new(dataplane_shard::ShardConfig::new(0, 1));
    let id = AgentId::from_name("big");
    let small = wasm_agent(&host, id, &module, AgentLimits::default(), "");
    let error = shard.deploy(id, small, 0).expect_err("over 16 MiB");
    assert!(
        error
            .to_string()
            .contains("module big_memory: memory minimum size of 512 pages exceeds memory limits"),
        "{error}"
    );
    let limits = AgentLimits {
        memory_bytes_max: 64 << 20,
        ..AgentLimits::default()
    };
    let big = wasm_agent(&host, id, &module, limits, "");
    shard.deploy(id, big, 0).expect("under 64 MiB");
}

#[test]
fn loop_fixture_is_interrupted_at_its_time_limit_and_restarted() {
    let mut bench = Bench::new();
    let module = bench.module("loop", fixtures::LOOP.as_bytes());
    let spinner = bench
        .deploy("spinner", &module, time_limit_ms(5), "")
        .expect("deploy");
    let started = Instant::now();
    let text = bench.failure(spinner, b"spin");
    let took = started.elapsed();
    assert!(
        text.contains("agent crashed: wasm trap: interrupt (time_per_message_ms of 5 ms exceeded)"),
        "{text}"
    );
    assert!(
        took >= Duration::from_millis(5),
        "interrupted after {took:?}"
    );
    assert_eq!(
        bench.mesh.status(spinner).expect("deployed").state,
        AgentState::Restarting { until_ns: MS }
    );
    bench.assert_neighbour_serves();
    bench.run_to_next_timer();
    let status = bench.mesh.status(spinner).expect("deployed");
    assert_eq!((status.state, status.restarts), (AgentState::Running, 1));
    bench.assert_neighbour_serves();
}

#[test]
fn memory_bomb_stops_at_the_limit_traps_and_restarts_with_fresh_memory() {
    let mut bench = Bench::new();
    let module = bench.module("memory_bomb", fixtures::MEMORY_BOMB.as_bytes());
    for (name, memory_bytes_max) in [("bomb-1m", 1u64 << 20), ("bomb-16m", 16 << 20)] {
        let limits = AgentLimits {
            memory_bytes_max,
            ..patient()
        };
        let bomb = bench.deploy(name, &module, limits, "").expect("deploy");
        for round in 1..=3 {
            // `unreachable` runs only after memory.grow returned -1: the limit held
            // inside the guest (no host error, no process abort).
            let text = bench.failure(bomb, b"boom");
            assert!(
                text.contains("agent crashed: wasm trap: wasm `unreachable` instruction executed"),
                "{name}: {text}"
            );
            bench.assert_neighbour_serves();
            bench.run_to_next_timer();
            let status = bench.mesh.status(bomb).expect("deployed");
            assert_eq!(
                (status.state, status.restarts),
                (AgentState::Running, round)
            );
        }
    }
}

#[test]
fn memory_bomb_error_fails_the_message_and_keeps_running() {
    let mut bench = Bench::new();
    let module = bench.module("memory_bomb_error", fixtures::MEMORY_BOMB_ERROR.as_bytes());
    let limits = AgentLimits {
        memory_bytes_max: 2 << 20,
        ..patient()
    };
    let bomb = bench.deploy("bomb", &module, limits, "").expect("deploy");
    for _ in 0..3 {
        let text = bench.failure(bomb, b"boom");
        assert!(
            text.contains(&format!("agent {bomb} returned error 7")),
            "{text}"
        );
        let status = bench.mesh.status(bomb).expect("deployed");
        assert_eq!((status.state, status.restarts), (AgentState::Running, 0));
    }
    assert_eq!(bench.mesh.next_timer_ns(), None, "not a crash");
    bench.assert_neighbour_serves();
}

#[test]
fn trap_fixture_fails_the_message_naming_the_trap_and_restarts() {
    let mut bench = Bench::new();
    let module = bench.module("trap", fixtures::TRAP.as_bytes());
    let trap = bench
        .deploy("trap", &module, AgentLimits::default(), "")
        .expect("deploy");
    let text = bench.failure(trap, b"x");
    assert_eq!(
        text,
        "agent crashed: wasm trap: wasm `unreachable` instruction executed"
    );
    // A reply that traps is not answered, but it is still a crash.
    bench.run_to_next_timer();
    let reply = Header {
        flags: Flags::REPLY,
        ..header(bench.me, trap, Performative::Inform, 0)
    };
    bench.send_with(trap, reply, b"x");
    bench.mesh.run();
    assert_eq!(bench.take(), vec![]);
    let status = bench.mesh.status(trap).expect("deployed");
    assert!(matches!(status.state, AgentState::Restarting { .. }));
    assert_eq!((status.restarts, status.crashes_in_window), (1, 2));
    bench.assert_neighbour_serves();
}

#[test]
fn huge_send_gets_too_large() {
    let mut bench = Bench::new();
    let module = bench.module("huge_send", fixtures::HUGE_SEND.as_bytes());
    for (name, memory_bytes_max) in [("huge-16m", 16u64 << 20), ("huge-1m", 1 << 20)] {
        let limits = AgentLimits {
            memory_bytes_max,
            ..patient()
        };
        let huge = bench.deploy(name, &module, limits, "").expect("deploy");
        let handled_before = bench.mesh.shards[0].stats().messages_handled;
        let answer = bench.ask(huge, Performative::Request, b"go");
        assert_eq!(answer.header.performative, Performative::Inform);
        assert_eq!(answer.payload, (-3i32).to_le_bytes(), "{name}");
        assert_eq!(
            bench.mesh.shards[0].stats().messages_handled - handled_before,
            2,
            "{name}: the request and its reply; nothing was sent to itself"
        );
    }
    bench.assert_neighbour_serves();
}

#[test]
fn send_storm_is_bounded_by_the_mailbox_and_the_send_limit() {
    let mut bench = Bench::new();
    let module = bench.module("send_storm", fixtures::SEND_STORM.as_bytes());
    let storm = bench
        .deploy("storm", &module, patient(), "")
        .expect("deploy");
    let wide = bench
        .deploy(
            "wide-storm",
            &module,
            AgentLimits {
                sends_per_message_max: 3000,
                ..patient()
            },
            "",
        )
        .expect("deploy");

    // A small storm: every send succeeds, and so does the reply with the counts.
    bench.send(storm, Performative::Request, &10u32.to_le_bytes());
    bench.mesh.run();
    let seen = bench.take();
    assert_eq!(seen.len(), 11);
    let informs = seen
        .iter()
        .filter(|m| m.header.flags == Flags::NONE)
        .count();
    assert_eq!(informs, 10);
    let counts = seen
        .iter()
        .find(|m| m.header.flags == Flags::REPLY)
        .and_then(|m| formats::storm_counts(&m.payload))
        .expect("counts");
    assert_eq!(counts, [10, 0, 0, 0, 0, 0, 0, 0]);

    // The default storm: 1024 sends (the per-call limit, which is also the tester's
    // mailbox), then SEND_LIMIT; the reply is over the limit too.
    let cases = [
        (storm, 100_000u32, [1024, 0, 0, 0, 0, 0, 100_000 - 1024, 0]),
        // A wider limit: the tester's mailbox (1024 frames) pushes back first.
        (wide, 5000, [1024, 0, 3000 - 1024, 0, 0, 0, 2000, 0]),
    ];
    for (agent, n, expected) in cases {
        bench.send(agent, Performative::Request, &n.to_le_bytes());
        bench.mesh.run();
        let seen = bench.take();
        assert_eq!(seen.len(), 1024, "every accepted send delivered, no reply");
        assert!(seen
            .iter()
            .all(|m| m.header.from == agent && m.header.flags == Flags::NONE));
        let answer = bench.ask(agent, Performative::Query, b"");
        assert_eq!(
            formats::storm_counts(&answer.payload).expect("counts"),
            expected
        );
    }
    bench.assert_neighbour_serves();
}

#[test]
fn echo_fixture_runs_dp_on_stop_on_undeploy_and_on_replace() {
    let mut bench = Bench::new();
    let module = bench.module("echo.wat", fixtures::ECHO.as_bytes());
    let echo = bench
        .deploy("echo", &module, AgentLimits::default(), "")
        .expect("deploy");
    assert_eq!(bench.ask(echo, Performative::Request, b"hi").payload, b"hi");
    let stopped = |logs: &[(tracing::Level, String)]| {
        logs.iter()
            .filter(|(level, text)| *level == tracing::Level::INFO && text == "echo.wat: stop")
            .count()
    };

    let (old, logs) = capture_logs(|| {
        let fresh = wasm_agent(&bench.host, echo, &module, AgentLimits::default(), "");
        bench.mesh.shards[0].replace(echo, fresh, 0)
    });
    assert!(old.is_ok());
    assert_eq!(stopped(&logs), 1, "the replaced instance stopped: {logs:?}");
    assert_eq!(bench.ask(echo, Performative::Request, b"hi").payload, b"hi");

    let (existed, logs) = capture_logs(|| bench.mesh.shards[0].undeploy(echo, 0));
    assert!(existed);
    assert_eq!(stopped(&logs), 1, "undeploy stopped it: {logs:?}");
    let (_, logs) = capture_logs(|| bench.mesh.shards[0].stop_all(0));
    assert_eq!(stopped(&logs), 1, "the neighbour, once: {logs:?}");
}
