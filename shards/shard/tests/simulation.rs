//! Deterministic simulation of a whole node's shards in one thread.
//!
//! Shards exchange ring items through simulated bounded rings; a seeded random schedule
//! decides which shard receives, delivers or transmits next, and with which batch size.
//! Mailboxes, outbound queues and rings are tiny so that back-pressure happens all the
//! time. The checks: every accepted send is handled exactly once, in order per
//! (sender, receiver) pair, and every frame buffer goes home to its pool.
//!
//! A second run adds crashes: about half the agents only receive, and crash at random
//! (seeded) while handling a message or restarting, under a random restart policy, while
//! a simulated clock moves. Then every accepted send is delivered to its addressee's
//! handler exactly once, in order, or answered with exactly one `failure` because the
//! addressee was stopped, never both. A `failure` reply can meet a full mailbox, so the
//! check is exact up to the replies the shards counted as undeliverable: the senders
//! never crash, so those are the refusals and crash replies that were dropped, and the
//! dropped crash replies are known (crashes minus crash replies received).
//!
//! Both runs also have one client per shard, as the network edge has them: a sink on that
//! shard (agents send to it, and it refuses one delivery in four) and frames it sends
//! into the shard with `handle_incoming`, offered again while the shard says busy. The
//! same checks hold for the clients' sends and for what reaches the sinks.
//!
//! A failure prints its seed; replay it with `SIM_SEED=<seed> cargo test -p
//! dataplane-shard --test simulation` (add `SIM_CRASHES=1` for the second run).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use dataplane_frame::{encode_into, encoded_len, AgentId, Flags, Header, Performative, Priority};
use dataplane_shard::{
    id_on_shard, Agent, AgentError, Context, Incoming, IncomingFrame, Message, RestartPolicy,
    RingItem, Shard, ShardConfig, Sink, SinkFull,
};

/// splitmix64: a tiny seeded generator, good enough for schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        dataplane_shard::routing::mix64(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

type Pair = (u64, u64);

#[derive(Default)]
struct Ledger {
    /// Sends accepted, per (from, to).
    accepted: HashMap<Pair, u64>,
    /// Sequence numbers delivered to the addressee's handler, in delivery order, per
    /// (from, to); crashing calls included.
    handled: HashMap<Pair, Vec<u64>>,
    /// Sequence numbers answered with `failure` because the addressee was stopped.
    refused: HashMap<Pair, Vec<u64>>,
    /// Sequence numbers answered with `failure` because the addressee's handler crashed.
    crash_replies: HashMap<Pair, Vec<u64>>,
    /// Messages handled by an agent that had been restarted.
    handled_after_restart: u64,
    /// Handler calls on a numbered message that crashed (each owes a crash reply).
    crashed_on: u64,
    violations: Vec<String>,
}

/// An agent that, when kicked, sends a few numbered messages to random agents and
/// records what it receives, and the `failure` replies it gets back, in the ledger.
/// With `crash_one_in > 0` it crashes on one message in `crash_one_in` (after recording
/// it) and fails one restart in four.
struct Peer {
    id: AgentId,
    peers: Rc<Vec<AgentId>>,
    ledger: Rc<RefCell<Ledger>>,
    rng: Rng,
    /// Next sequence number per destination (the test's bookkeeping, kept across
    /// restarts: a real agent would start from scratch).
    next_seq: HashMap<u64, u64>,
    crash_one_in: usize,
    restarts: u64,
    /// Crashed and not restarted since: nothing may be delivered to it.
    crashed: bool,
}

/// Records a reply that reached `me` (agent or client): only `failure`s are expected.
fn record_failure(me: AgentId, ledger: &RefCell<Ledger>, message: &Message<'_>) {
    let text = String::from_utf8_lossy(message.payload);
    let pair = (me.0, message.from().0);
    let seq = message.header.correlation_id;
    let mut ledger = ledger.borrow_mut();
    if message.performative() != Performative::Failure
        || !message.header.flags.contains(Flags::ERROR)
    {
        ledger
            .violations
            .push(format!("{me}: unexpected reply {text:?}"));
    } else if text.starts_with("agent crashed: ") {
        ledger.crash_replies.entry(pair).or_default().push(seq);
    } else if text.contains(" stopped after ") {
        ledger.refused.entry(pair).or_default().push(seq);
    } else {
        ledger
            .violations
            .push(format!("{me}: unexpected failure {text:?}"));
    }
}

/// Records a numbered message that reached `me`.
fn record_handled(me: AgentId, ledger: &RefCell<Ledger>, message: &Message<'_>) -> u64 {
    let seq = u64::from_le_bytes(message.payload.try_into().expect("8-byte payload"));
    let pair = (message.from().0, me.0);
    ledger
        .borrow_mut()
        .handled
        .entry(pair)
        .or_default()
        .push(seq);
    seq
}

/// A client's end inside its shard: records what reaches it, refusing one delivery in
/// four (back-pressure, as a connection whose client does not read).
struct ClientSink {
    id: AgentId,
    ledger: Rc<RefCell<Ledger>>,
    rng: Rng,
}

impl Sink for ClientSink {
    fn deliver(&mut self, header: &Header, payload: &[u8]) -> Result<(), SinkFull> {
        if self.rng.below(4) == 0 {
            return Err(SinkFull { capacity_bytes: 0 });
        }
        let message = &Message {
            header: *header,
            payload,
        };
        if message.is_reply() {
            record_failure(self.id, &self.ledger, message);
        } else {
            record_handled(self.id, &self.ledger, message);
        }
        Ok(())
    }
}

/// A client's sending side: numbered frames into its shard, as the edge reads them.
struct Client {
    id: AgentId,
    shard: usize,
    next_seq: HashMap<u64, u64>,
    /// The frame the shard said busy to, with its addressee: offered again before any
    /// new one, so the client's order holds.
    pending: Option<(IncomingFrame, AgentId)>,
}

impl Agent for Peer {
    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        if self.crashed {
            let violation = format!("{}: a message reached it before its restart", self.id);
            self.ledger.borrow_mut().violations.push(violation);
        }
        let crash = self.crash_one_in > 0 && self.rng.below(self.crash_one_in) == 0;
        self.crashed = crash;
        let result = if crash {
            Err(AgentError::Crashed("sim crash".into()))
        } else {
            Ok(())
        };
        if message.is_reply() {
            record_failure(self.id, &self.ledger, message);
            return result;
        }
        if message.payload.is_empty() {
            for _ in 0..1 + self.rng.below(4) {
                let to = self.peers[self.rng.below(self.peers.len())];
                let seq = *self.next_seq.get(&to.0).unwrap_or(&0);
                let priority = Priority::Normal;
                let header = Header {
                    to,
                    from: self.id,
                    conversation_id: 0,
                    correlation_id: seq,
                    performative: Performative::Inform,
                    priority,
                    flags: Flags::NONE,
                };
                match ctx.send_with(header, &seq.to_le_bytes()) {
                    Ok(()) => {
                        self.next_seq.insert(to.0, seq + 1);
                        *self
                            .ledger
                            .borrow_mut()
                            .accepted
                            .entry((self.id.0, to.0))
                            .or_default() += 1;
                    }
                    Err(error) if error.is_backpressure() => {}
                    Err(error) => panic!("unexpected send error {error}"),
                }
            }
            return result;
        }
        record_handled(self.id, &self.ledger, message);
        let mut ledger = self.ledger.borrow_mut();
        if self.restarts > 0 {
            ledger.handled_after_restart += 1;
        }
        if crash {
            ledger.crashed_on += 1;
        }
        result
    }

    fn restart(&mut self, _: &mut Context<'_>) -> Result<(), AgentError> {
        if self.rng.below(4) == 0 {
            return Err(AgentError::Crashed("sim restart crash".into()));
        }
        self.restarts += 1;
        self.crashed = false;
        Ok(())
    }
}

struct Sim {
    rng: Rng,
    /// The clock, in nanoseconds, and the generator that moves it (apart from `rng`, so
    /// that the run without crashes keeps its schedules).
    now_ns: u64,
    clock_rng: Rng,
    shards: Vec<Shard>,
    /// rings[from][to]
    rings: Vec<Vec<VecDeque<RingItem>>>,
    /// Items a shard could not take yet, per [to][from].
    stalled: Vec<Vec<VecDeque<RingItem>>>,
    ring_capacity: usize,
    /// The agents that are kicked (they send): all of them, or the ones that never crash.
    senders: Vec<AgentId>,
    /// Everything a client may send to: the agents and the clients.
    targets: Rc<Vec<AgentId>>,
    clients: Vec<Client>,
    ledger: Rc<RefCell<Ledger>>,
}

impl Sim {
    fn new(seed: u64, ledger: &Rc<RefCell<Ledger>>, crashes: bool) -> Sim {
        let mut rng = Rng(seed);
        let mut crash_rng = Rng(seed ^ 0x5eed_c0de);
        let shard_count = 1 + rng.below(5);
        let agents_per_shard = 1 + rng.below(4);
        let ring_capacity = 1 + rng.below(6);
        // Back-offs of 1 to 200 µs, against a clock that moves 10 µs a step on average.
        let backoff_initial_ns = 1_000 * (1 + crash_rng.below(200) as u64);
        let policy = RestartPolicy {
            max_restarts: crash_rng.below(5) as u32,
            window_ns: 100_000 * (1 + crash_rng.below(100) as u64),
            backoff_initial_ns,
            backoff_max_ns: backoff_initial_ns * (1 + crash_rng.below(16) as u64),
        };
        let mut shards: Vec<Shard> = (0..shard_count)
            .map(|shard| {
                let mut config = ShardConfig::new(shard, shard_count);
                config.mailbox_capacity_frames = 1 + rng.below(8);
                config.outbound_capacity_frames = 1 + rng.below(8);
                config.agent_burst_messages = 1 + rng.below(4);
                config.frame_pool_frames_max = 64 + rng.below(64);
                config.restart = policy;
                Shard::new(config)
            })
            .collect();
        let mut ids = Vec::new();
        for shard in 0..shard_count {
            for agent in 0..agents_per_shard {
                ids.push(id_on_shard(1000 * (agent as u64 + 1), shard, shard_count));
            }
        }
        let clients: Vec<Client> = (0..shard_count)
            .map(|shard| Client {
                id: id_on_shard(7, shard, shard_count),
                shard,
                next_seq: HashMap::new(),
                pending: None,
            })
            .collect();
        for client in &clients {
            let sink = ClientSink {
                id: client.id,
                ledger: Rc::clone(ledger),
                rng: Rng(seed ^ client.id.0),
            };
            shards[client.shard]
                .deploy_sink(client.id, Box::new(sink))
                .expect("deploy the client's sink");
        }
        let agents = Rc::new(ids.clone());
        let targets = Rc::new(
            ids.into_iter()
                .chain(clients.iter().map(|c| c.id))
                .collect(),
        );
        let mut senders = Vec::new();
        for (n, &id) in agents.iter().enumerate() {
            let shard = dataplane_shard::owner_shard(id, shard_count);
            // About half the agents (never the first) only receive, and crash on one
            // message in 8 to 64.
            let crash_one_in = match crashes && n > 0 && crash_rng.below(2) == 0 {
                true => 8 + crash_rng.below(57),
                false => 0,
            };
            if crash_one_in == 0 {
                senders.push(id);
            }
            let peer = Peer {
                id,
                peers: Rc::clone(&targets),
                ledger: Rc::clone(ledger),
                rng: Rng(seed ^ (n as u64 + 1)),
                next_seq: HashMap::new(),
                crash_one_in,
                restarts: 0,
                crashed: false,
            };
            shards[shard].deploy(id, Box::new(peer), 0).expect("deploy");
        }
        let empty = || {
            (0..shard_count)
                .map(|_| VecDeque::new())
                .collect::<Vec<_>>()
        };
        Sim {
            rings: (0..shard_count).map(|_| empty()).collect(),
            stalled: (0..shard_count).map(|_| empty()).collect(),
            rng,
            now_ns: 0,
            clock_rng: crash_rng,
            shards,
            ring_capacity,
            senders,
            targets,
            clients,
            ledger: Rc::clone(ledger),
        }
    }

    /// Client `c` offers its pending frame again, or sends a new numbered one to a random
    /// target. Returns whether the shard took a frame.
    fn client_send(&mut self, c: usize) -> bool {
        let client = &mut self.clients[c];
        let shard = &mut self.shards[client.shard];
        let (frame, to) = match client.pending.take() {
            Some(pending) => pending,
            None => {
                let to = self.targets[self.rng.below(self.targets.len())];
                let seq = *client.next_seq.get(&to.0).unwrap_or(&0);
                let Ok(mut frame) = shard.alloc_incoming(encoded_len(8)) else {
                    return false; // pool exhausted: the edge would wait too
                };
                let header = Header {
                    to,
                    from: AgentId(0),
                    conversation_id: 0,
                    correlation_id: seq,
                    performative: Performative::Inform,
                    priority: Priority::Normal,
                    flags: Flags::NONE,
                };
                encode_into(&header, &seq.to_le_bytes(), frame.buffer_mut()).expect("fits");
                (frame, to)
            }
        };
        match shard.handle_incoming(frame, client.id, self.now_ns) {
            Incoming::Accepted(_) => {
                *client.next_seq.entry(to.0).or_default() += 1;
                *self
                    .ledger
                    .borrow_mut()
                    .accepted
                    .entry((client.id.0, to.0))
                    .or_default() += 1;
                true
            }
            Incoming::Busy(frame) => {
                client.pending = Some((frame, to));
                false
            }
            other => {
                let violation = format!("{}: frame to {to} refused: {other:?}", client.id);
                self.ledger.borrow_mut().violations.push(violation);
                false
            }
        }
    }

    fn kick(&mut self) {
        let to = self.senders[self.rng.below(self.senders.len())];
        let shard = dataplane_shard::owner_shard(to, self.shards.len());
        let header = Header {
            to,
            from: AgentId(0),
            conversation_id: 0,
            correlation_id: 0,
            performative: Performative::Request,
            priority: Priority::Low,
            flags: Flags::NONE,
        };
        // A full mailbox refuses the kick: that is fine, kicks are not counted.
        let _ = self.shards[shard].handle_send(&header, &[]);
    }

    fn receive(&mut self, to: usize, from: usize, budget: usize) -> usize {
        let mut moved = 0;
        for _ in 0..budget {
            // A one-item take of a fresh frame is what the driver calls a lone frame.
            let (item, lone) = match self.stalled[to][from].pop_front() {
                Some(item) => (item, false),
                None => match self.rings[from][to].pop_front() {
                    Some(item) => (item, budget == 1),
                    None => break,
                },
            };
            let handled = if lone {
                self.shards[to].handle_lone_ring_item(item, self.now_ns)
            } else {
                self.shards[to].handle_ring_item(item)
            };
            match handled {
                Ok(()) => moved += 1,
                Err(item) => {
                    self.stalled[to][from].push_front(item);
                    break;
                }
            }
        }
        moved
    }

    fn transmit(&mut self, from: usize, to: usize) -> usize {
        let capacity = self.ring_capacity;
        let ring = &mut self.rings[from][to];
        self.shards[from].poll_transmit(to, |item| {
            if ring.len() >= capacity {
                return Err(item);
            }
            ring.push_back(item);
            Ok(())
        })
    }

    fn step(&mut self, kicking: bool) -> usize {
        let n = self.shards.len();
        let shard = self.rng.below(n);
        let other = self.rng.below(n);
        self.now_ns += self.clock_rng.below(20_000) as u64;
        match self.rng.below(if kicking { 5 } else { 3 }) {
            0 => self.shards[shard].poll_deliver(self.now_ns, 1 + self.rng.below(8)),
            1 if shard != other => {
                let budget = 1 + self.rng.below(8);
                self.receive(shard, other, budget)
            }
            2 if shard != other => self.transmit(shard, other),
            3 => {
                self.kick();
                1
            }
            4 => usize::from(self.client_send(shard)),
            _ => 0,
        }
    }

    fn settle(&mut self) {
        // Round-robin everything until a full pass moves nothing and no agent waits for a
        // restart (the clock jumps to the next back-off deadline).
        loop {
            let n = self.shards.len();
            let mut moved = 0;
            for c in 0..self.clients.len() {
                if self.clients[c].pending.is_some() {
                    moved += usize::from(self.client_send(c));
                }
            }
            for a in 0..n {
                moved += self.shards[a].poll_deliver(self.now_ns, usize::MAX);
                for b in 0..n {
                    if a != b {
                        moved += self.transmit(a, b);
                        moved += self.receive(b, a, usize::MAX);
                    }
                }
            }
            // A sink refuses at random, so a pass can move nothing while a frame for it
            // still waits: try again (each try succeeds with probability 3/4).
            let waiting = self.clients.iter().any(|c| c.pending.is_some())
                || self.stalled.iter().flatten().any(|queue| !queue.is_empty());
            if moved == 0 {
                match self.shards.iter().filter_map(Shard::next_timer_ns).min() {
                    Some(deadline_ns) => self.now_ns = self.now_ns.max(deadline_ns),
                    None if waiting => {}
                    None => return,
                }
            }
        }
    }
}

/// What one run exercised.
#[derive(Debug, Default)]
struct Totals {
    backpressure: u64,
    stalled: u64,
    restarts: u64,
    stopped: u64,
    refused: u64,
    crash_replies: u64,
    handled_after_restart: u64,
    /// Sends from clients that their shard took.
    from_clients: u64,
    /// Numbered messages that reached a client's sink.
    to_sinks: u64,
}

fn check_pair(pair: Pair, accepted: u64, ledger: &Ledger, crashes: bool) -> Result<u64, String> {
    let empty = Vec::new();
    let handled = ledger.handled.get(&pair).unwrap_or(&empty);
    let refused = ledger.refused.get(&pair).unwrap_or(&empty);
    let crash_replies = ledger.crash_replies.get(&pair).unwrap_or(&empty);
    if !crashes {
        let expected: Vec<u64> = (0..accepted).collect();
        if *handled != expected || !refused.is_empty() || !crash_replies.is_empty() {
            return Err(format!(
                "pair {pair:?} lost, duplicated or reordered messages: handled {handled:?} of {accepted}, refused {refused:?}"
            ));
        }
        return Ok(0);
    }
    if handled.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "pair {pair:?}: delivered out of order or twice: {handled:?}"
        ));
    }
    let mut answered: Vec<u64> = refused.clone();
    answered.sort_unstable();
    if answered.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("pair {pair:?}: answered twice: {refused:?}"));
    }
    if let Some(seq) = answered
        .iter()
        .find(|seq| handled.binary_search(seq).is_ok())
    {
        return Err(format!("pair {pair:?}: {seq} both delivered and answered"));
    }
    if let Some(seq) = handled
        .iter()
        .chain(&answered)
        .find(|&&seq| seq >= accepted)
    {
        return Err(format!("pair {pair:?}: {seq} was never accepted"));
    }
    let mut crashed: Vec<u64> = crash_replies.clone();
    crashed.sort_unstable();
    if crashed.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!(
            "pair {pair:?}: crash answered twice: {crash_replies:?}"
        ));
    }
    if let Some(seq) = crashed
        .iter()
        .find(|seq| handled.binary_search(seq).is_err())
    {
        return Err(format!(
            "pair {pair:?}: crash reply for {seq}, never delivered"
        ));
    }
    Ok(accepted - handled.len() as u64 - answered.len() as u64)
}

fn run(seed: u64, crashes: bool) -> Totals {
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    let mut sim = Sim::new(seed, &ledger, crashes);
    let steps = 2000 + sim.rng.below(3000);
    for _ in 0..steps {
        sim.step(true);
    }
    sim.settle();
    let ledger = ledger.borrow();
    assert!(
        ledger.violations.is_empty(),
        "seed {seed}: {:?}",
        ledger.violations
    );
    let mut pairs: Vec<Pair> = ledger.accepted.keys().copied().collect();
    pairs.extend(ledger.handled.keys().chain(ledger.refused.keys()));
    pairs.sort_unstable();
    pairs.dedup();
    let mut unanswered = 0;
    for pair in pairs {
        let accepted = ledger.accepted.get(&pair).copied().unwrap_or(0);
        match check_pair(pair, accepted, &ledger, crashes) {
            Ok(missing) => unanswered += missing,
            Err(violation) => panic!("seed {seed}: {violation}"),
        }
    }
    let sum = |f: fn(&Shard) -> u64| sim.shards.iter().map(f).sum::<u64>();
    let received_crash_replies: u64 = ledger.crash_replies.values().map(|v| v.len() as u64).sum();
    let dropped_crash_replies = ledger.crashed_on as i64 - received_crash_replies as i64;
    let dropped_refusals = sum(|s| s.stats().undeliverable_replies) as i64 - dropped_crash_replies;
    assert_eq!(
        unanswered as i64, dropped_refusals,
        "seed {seed}: sends neither delivered nor answered, against refusals dropped"
    );
    for shard in &sim.shards {
        assert!(
            shard.is_idle(),
            "seed {seed}: shard {} not idle",
            shard.id()
        );
        assert_eq!(
            shard.pool().frames_in_flight(),
            0,
            "seed {seed}: buffers not home"
        );
    }
    Totals {
        backpressure: sum(|s| s.stats().backpressure),
        stalled: sum(|s| s.stats().stalled_deliveries),
        restarts: sum(|s| s.stats().agent_restarts),
        stopped: sum(|s| s.stats().agents_stopped),
        refused: ledger.refused.values().map(|v| v.len() as u64).sum(),
        crash_replies: received_crash_replies,
        handled_after_restart: ledger.handled_after_restart,
        from_clients: sim
            .clients
            .iter()
            .map(|c| c.next_seq.values().sum::<u64>())
            .sum(),
        to_sinks: ledger
            .handled
            .iter()
            .filter(|((_, to), _)| sim.clients.iter().any(|c| c.id.0 == *to))
            .map(|(_, seqs)| seqs.len() as u64)
            .sum(),
    }
}

fn replay_seed() -> Option<u64> {
    std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok())
}

fn replay_crashes() -> bool {
    std::env::var_os("SIM_CRASHES").is_some()
}

#[test]
fn random_schedules_deliver_exactly_once_in_order() {
    if let Some(seed) = replay_seed() {
        run(seed, replay_crashes());
        return;
    }
    let (mut backpressure, mut stalled, mut from_clients, mut to_sinks) = (0, 0, 0, 0);
    for seed in 0..200 {
        let totals = run(seed, false);
        assert_eq!(totals.restarts + totals.stopped, 0);
        backpressure += totals.backpressure;
        stalled += totals.stalled;
        from_clients += totals.from_clients;
        to_sinks += totals.to_sinks;
    }
    assert!(from_clients > 10_000, "clients rarely sent: {from_clients}");
    assert!(to_sinks > 10_000, "sinks rarely received: {to_sinks}");
    // The schedule must actually exercise the paths under test.
    assert!(
        backpressure > 1000,
        "senders rarely saw back-pressure: {backpressure}"
    );
    assert!(
        stalled > 100,
        "rings rarely stalled on full mailboxes: {stalled}"
    );
}

#[test]
fn random_crashes_deliver_or_answer_each_send_once() {
    if replay_seed().is_some() {
        return; // replayed by the test above
    }
    let mut all = Totals::default();
    for seed in 0..200 {
        let totals = run(seed, true);
        all.backpressure += totals.backpressure;
        all.stalled += totals.stalled;
        all.restarts += totals.restarts;
        all.stopped += totals.stopped;
        all.refused += totals.refused;
        all.crash_replies += totals.crash_replies;
        all.handled_after_restart += totals.handled_after_restart;
        all.from_clients += totals.from_clients;
        all.to_sinks += totals.to_sinks;
    }
    // The schedule must actually exercise the paths under test.
    assert!(all.restarts > 500, "{all:?}");
    assert!(all.stopped > 50, "{all:?}");
    assert!(all.handled_after_restart > 1000, "{all:?}");
    assert!(all.refused > 100, "{all:?}");
    assert!(all.crash_replies > 100, "{all:?}");
    assert!(all.backpressure > 1000, "{all:?}");
    assert!(all.stalled > 100, "{all:?}");
    assert!(all.from_clients > 10_000, "{all:?}");
    assert!(all.to_sinks > 10_000, "{all:?}");
}
