//! What the WASM integration tests share: a collecting client agent, a hand-driven mesh
//! of sans-IO shards (rings are plain queues moved by the test, as in
//! `shards/shard/tests/simulation.rs`), module and agent helpers, a WAT agent that
//! crashes on demand, and a log capture for what guests log.
//!
//! Nothing here spawns a thread or reads a clock: time is `Mesh::now_ns`, moved by the
//! test. (The host's epoch ticker is the only thread, and only time limits use it.)

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_shard::{
    owner_shard, Agent, AgentError, AgentStatus, Context, DeployError, Message, RestartPolicy,
    RingItem, SendError, Shard, ShardConfig,
};
use dataplane_wasm::{
    AgentLimits, AgentModule, AgentSpec, Host, HostConfig, TickerPace, WasmAgent,
};

/// One millisecond in nanoseconds.
pub const MS: u64 = 1_000_000;

/// The largest payload with the default limits (`message_bytes_max`).
pub const MAX_PAYLOAD: usize = 64 * 1024 - 80;

/// A message a collecting client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its header.
    pub header: Header,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Received {
    /// The payload as text (failure replies carry UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// Whether it is a `failure` reply with `ERROR` set.
    pub fn is_failure(&self) -> bool {
        self.header.performative == Performative::Failure
            && self.header.flags == Flags(Flags::REPLY.0 | Flags::ERROR.0)
    }
}

/// What a client received, in order.
pub type Inbox = Rc<RefCell<Vec<Received>>>;

/// A native agent that records everything it receives and never answers.
pub struct Collector(pub Inbox);

impl Agent for Collector {
    fn on_message(&mut self, m: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        self.0.borrow_mut().push(Received {
            header: m.header,
            payload: m.payload.to_vec(),
        });
        Ok(())
    }
}

/// A host with a small pool, as the tests need.
pub fn host() -> Host {
    Host::new(HostConfig {
        pool_slots: Some(64),
        ..HostConfig::default()
    })
    .expect("host")
}

/// A small host whose epoch ticker is always fast, so that batches form from the first
/// queued messages (with the adaptive pace they wait for the ticker's next wake-up).
pub fn batching_host() -> Host {
    Host::new(HostConfig {
        pool_slots: Some(64),
        ticker_pace: TickerPace::Fast,
        ..HostConfig::default()
    })
    .expect("host")
}

/// Compiles `bytes` (binary or WAT).
pub fn load(host: &Host, name: &str, bytes: &[u8]) -> Arc<AgentModule> {
    AgentModule::from_bytes(host, name, bytes)
        .unwrap_or_else(|error| panic!("module {name}: {error}"))
}

/// A WASM agent `id` running `module` with `limits` and configuration `config`.
pub fn wasm_agent(
    host: &Host,
    id: AgentId,
    module: &Arc<AgentModule>,
    limits: AgentLimits,
    config: &str,
) -> Box<WasmAgent> {
    let spec = AgentSpec {
        module: Arc::clone(module),
        limits,
        config: Arc::from(config.as_bytes()),
        seed: None,
    };
    Box::new(WasmAgent::new(host, id, spec))
}

/// Limits with `time_per_message` of `ms` milliseconds.
pub fn time_limit_ms(ms: u64) -> AgentLimits {
    AgentLimits {
        time_per_message: std::time::Duration::from_millis(ms),
        ..AgentLimits::default()
    }
}

/// The first name `prefix-N` whose agent lives on `shard` of `shards`.
pub fn name_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|name| owner_shard(AgentId::from_name(name), shards) == shard)
        .expect("some name lands on every shard")
}

/// A header from `from` to `to`.
pub fn header(
    from: AgentId,
    to: AgentId,
    performative: Performative,
    correlation_id: u64,
) -> Header {
    Header {
        to,
        from,
        conversation_id: 1,
        correlation_id,
        performative,
        priority: Priority::Normal,
        flags: Flags::NONE,
    }
}

/// Shards connected by unbounded simulated rings, driven by hand.
pub struct Mesh {
    /// The shards, by index.
    pub shards: Vec<Shard>,
    /// rings[from][to]
    rings: Vec<Vec<VecDeque<RingItem>>>,
    /// Items a shard handed back (mailbox full), per [to]: offered again first.
    stalled: Vec<VecDeque<RingItem>>,
    /// The clock passed to `poll_deliver`.
    pub now_ns: u64,
}

impl Mesh {
    /// `count` shards with the default configuration, changed by `configure`.
    pub fn new(count: usize, configure: impl Fn(&mut ShardConfig)) -> Mesh {
        let shards = (0..count)
            .map(|shard| {
                let mut config = ShardConfig::new(shard, count);
                configure(&mut config);
                Shard::new(config)
            })
            .collect();
        Mesh {
            shards,
            rings: (0..count)
                .map(|_| (0..count).map(|_| VecDeque::new()).collect())
                .collect(),
            stalled: (0..count).map(|_| VecDeque::new()).collect(),
            now_ns: 0,
        }
    }

    /// The shard that owns `id`.
    pub fn owner(&self, id: AgentId) -> usize {
        owner_shard(id, self.shards.len())
    }

    /// The shard of `id`.
    pub fn shard_of(&mut self, id: AgentId) -> &mut Shard {
        let owner = self.owner(id);
        &mut self.shards[owner]
    }

    /// Deploys `agent` as `id` on its shard.
    pub fn deploy(&mut self, id: AgentId, agent: Box<dyn Agent>) -> Result<(), DeployError> {
        let now_ns = self.now_ns;
        self.shard_of(id).deploy(id, agent, now_ns)
    }

    /// Deploys a collecting client `name`; returns its id and inbox.
    pub fn client(&mut self, name: &str) -> (AgentId, Inbox) {
        let id = AgentId::from_name(name);
        let inbox = Inbox::default();
        self.deploy(id, Box::new(Collector(Rc::clone(&inbox))))
            .expect("client");
        (id, inbox)
    }

    /// Sends `header` from the edge of the sender's shard (`header.from`'s owner): a
    /// message for another shard travels through the rings.
    pub fn send(&mut self, header: &Header, payload: &[u8]) -> Result<(), SendError> {
        self.shard_of(header.from).handle_send(header, payload)
    }

    /// The status of `id` on its shard.
    pub fn status(&self, id: AgentId) -> Option<AgentStatus> {
        self.shards[self.owner(id)].agent_status(id)
    }

    /// The earliest back-off deadline on any shard.
    pub fn next_timer_ns(&self) -> Option<u64> {
        self.shards.iter().filter_map(Shard::next_timer_ns).min()
    }

    /// Every shard hands its outbound frames to the rings.
    pub fn transmit(&mut self) -> usize {
        let mut moved = 0;
        for from in 0..self.shards.len() {
            for to in 0..self.shards.len() {
                if from != to {
                    let ring = &mut self.rings[from][to];
                    moved += self.shards[from].poll_transmit(to, |item| {
                        ring.push_back(item);
                        Ok(())
                    });
                }
            }
        }
        moved
    }

    /// Every shard takes what its rings hold, until a full mailbox hands an item back.
    pub fn receive(&mut self) -> usize {
        let mut moved = 0;
        for to in 0..self.shards.len() {
            let stalled = &mut self.stalled[to];
            let mut incoming = std::mem::take(stalled);
            for from in 0..self.shards.len() {
                incoming.extend(self.rings[from][to].drain(..));
            }
            while let Some(item) = incoming.pop_front() {
                match self.shards[to].handle_ring_item(item) {
                    Ok(()) => moved += 1,
                    Err(item) => {
                        // Keep the order: this one, then the rest, are offered again.
                        stalled.push_back(item);
                        stalled.extend(incoming.drain(..));
                    }
                }
            }
        }
        moved
    }

    /// One round: transmit, receive, and let every shard deliver up to `budget`
    /// messages at `now_ns`. Returns how many things moved.
    pub fn step(&mut self, budget: usize) -> usize {
        let mut moved = self.transmit();
        moved += self.receive();
        for shard in &mut self.shards {
            moved += shard.poll_deliver(self.now_ns, budget);
        }
        moved
    }

    /// Rounds at the current time until nothing moves.
    pub fn run(&mut self) -> usize {
        let mut moved = 0;
        loop {
            let n = self.step(usize::MAX);
            if n == 0 {
                return moved;
            }
            moved += n;
        }
    }

    /// Runs until nothing moves and no agent waits out a back-off: the clock jumps to
    /// each back-off deadline in turn.
    pub fn settle(&mut self) {
        loop {
            self.run();
            match self.next_timer_ns() {
                Some(deadline_ns) => self.now_ns = self.now_ns.max(deadline_ns),
                None => return,
            }
        }
    }

    /// Whether every shard is idle, nothing is in a ring and every buffer went home.
    pub fn assert_quiet(&self) {
        for (index, shard) in self.shards.iter().enumerate() {
            assert!(shard.is_idle(), "shard {index} is not idle");
            assert_eq!(
                shard.pool().frames_in_flight(),
                0,
                "shard {index}: buffers not home"
            );
        }
        assert!(self.rings.iter().flatten().all(VecDeque::is_empty));
        assert!(self.stalled.iter().all(VecDeque::is_empty));
    }
}

/// One shard with a client (`tester`) and an echo neighbour written in WAT.
pub struct Bench {
    /// The host.
    pub host: Host,
    /// One shard.
    pub mesh: Mesh,
    /// The client.
    pub me: AgentId,
    /// What it received.
    pub inbox: Inbox,
    /// The echo next door.
    pub neighbour: AgentId,
    /// The correlation id of the next message sent.
    pub next_correlation: u64,
}

impl Bench {
    pub fn new() -> Bench {
        Bench::with(host(), RestartPolicy::DEFAULT)
    }

    /// A bench on `host`, its shard restarting crashed agents by `policy`.
    pub fn with(host: Host, policy: RestartPolicy) -> Bench {
        let mut mesh = Mesh::new(1, |config| config.restart = policy);
        let (me, inbox) = mesh.client("tester");
        let neighbour = AgentId::from_name("neighbour");
        let echo = load(
            &host,
            "echo.wat",
            dataplane_guests::fixtures::ECHO.as_bytes(),
        );
        mesh.deploy(
            neighbour,
            wasm_agent(&host, neighbour, &echo, AgentLimits::default(), ""),
        )
        .expect("neighbour");
        Bench {
            host,
            mesh,
            me,
            inbox,
            neighbour,
            next_correlation: 1,
        }
    }

    pub fn module(&self, name: &str, bytes: &[u8]) -> Arc<AgentModule> {
        load(&self.host, name, bytes)
    }

    pub fn deploy(
        &mut self,
        name: &str,
        module: &Arc<AgentModule>,
        limits: AgentLimits,
        config: &str,
    ) -> Result<AgentId, DeployError> {
        let id = AgentId::from_name(name);
        let agent = wasm_agent(&self.host, id, module, limits, config);
        self.mesh.deploy(id, agent).map(|()| id)
    }

    /// Sends `performative` with `payload` to `to`; returns the correlation id.
    pub fn send_with(&mut self, to: AgentId, header: Header, payload: &[u8]) -> u64 {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let header = Header {
            to,
            from: self.me,
            correlation_id,
            ..header
        };
        self.mesh.send(&header, payload).expect("accepted");
        correlation_id
    }

    pub fn send(&mut self, to: AgentId, performative: Performative, payload: &[u8]) -> u64 {
        self.send_with(to, header(self.me, to, performative, 0), payload)
    }

    pub fn take(&mut self) -> Vec<Received> {
        std::mem::take(&mut *self.inbox.borrow_mut())
    }

    /// Sends, runs, and returns the one answer.
    pub fn ask(&mut self, to: AgentId, performative: Performative, payload: &[u8]) -> Received {
        let correlation_id = self.send(to, performative, payload);
        self.mesh.run();
        let mut seen = self.take();
        assert_eq!(seen.len(), 1, "one answer expected: {seen:?}");
        let answer = seen.remove(0);
        assert_eq!(answer.header.correlation_id, correlation_id);
        assert_eq!(answer.header.from, to);
        assert_eq!(answer.header.to, self.me);
        assert!(answer.header.flags.contains(Flags::REPLY));
        answer
    }

    /// The text of the one answer, which must be a failure.
    pub fn failure(&mut self, to: AgentId, payload: &[u8]) -> String {
        let answer = self.ask(to, Performative::Request, payload);
        assert!(answer.is_failure(), "a failure expected: {answer:?}");
        answer.text()
    }

    /// Sends, runs, and checks that nothing answers.
    pub fn tell(&mut self, to: AgentId, performative: Performative, payload: &[u8]) {
        self.send(to, performative, payload);
        self.mesh.run();
        assert_eq!(self.take(), vec![], "no answer expected");
    }

    pub fn assert_neighbour_serves(&mut self) {
        let neighbour = self.neighbour;
        let answer = self.ask(neighbour, Performative::Request, b"still here");
        assert_eq!(answer.header.performative, Performative::Inform);
        assert_eq!(answer.payload, b"still here");
    }

    /// Moves the clock to the earliest back-off deadline and runs.
    pub fn run_to_next_timer(&mut self) {
        self.mesh.now_ns = self.mesh.next_timer_ns().expect("an agent waits");
        self.mesh.run();
    }
}

/// A WAT agent that counts the messages it handles (not replies) in its memory, at
/// address 0, and by the first payload byte:
/// - `!`: traps (`unreachable`);
/// - `?`: loops forever (the time limit interrupts it);
/// - `#`: returns error 5;
/// - anything else (or empty): replies `inform` with `count u64 LE` then the payload.
///
/// Its reply's code (non-zero on a failed reply) is its return value.
pub const FRAGILE: &str = r#"(module
  (import "dataplane_v1" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $inbox (mut i32) (i32.const 0))
  (func (export "dp_inbox") (param $capacity i32) (result i32)
    (local $old i32)
    (local.set $old
      (memory.grow
        (i32.shr_u (i32.add (local.get $capacity) (i32.const 65535)) (i32.const 16))))
    (if (i32.eq (local.get $old) (i32.const -1))
      (then (return (i32.const 0))))
    (global.set $inbox (i32.shl (local.get $old) (i32.const 16)))
    (global.get $inbox))
  (func (export "dp_init") (param i32) (result i32)
    (i64.store (i32.const 0) (i64.const 0))
    (i32.const 0))
  (func (export "dp_on_message") (param $len i32) (result i32)
    (local $first i32)
    (if (i32.and (i32.load16_u offset=34 (global.get $inbox)) (i32.const 1))
      (then (return (i32.const 0))))
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
    (if (local.get $len)
      (then
        (local.set $first (i32.load8_u offset=48 (global.get $inbox)))
        (if (i32.eq (local.get $first) (i32.const 33)) (then unreachable))
        (if (i32.eq (local.get $first) (i32.const 63)) (then (loop $forever (br $forever))))
        (if (i32.eq (local.get $first) (i32.const 35)) (then (return (i32.const 5))))))
    ;; Page 0 is scratch: the count at 0, the payload after it (a whole payload fits).
    (memory.copy (i32.const 8) (i32.add (global.get $inbox) (i32.const 48)) (local.get $len))
    (call $reply (i32.const 1) (i32.const 0) (i32.add (local.get $len) (i32.const 8)))))"#;

/// Decodes a reply of [`FRAGILE`]: the count and the payload it echoed.
pub fn fragile_reply(payload: &[u8]) -> (u64, &[u8]) {
    let (count, rest) = payload.split_at(8);
    (u64::from_le_bytes(count.try_into().expect("8 bytes")), rest)
}

/// A bench with a fragile agent (`module`: [`FRAGILE`]'s WAT, or the Rust `fragile`
/// example, which takes batches) deployed as `fragile` under `limits`.
pub fn fragile_bench(
    host: Host,
    policy: RestartPolicy,
    module: &[u8],
    limits: AgentLimits,
) -> (Bench, AgentId) {
    let mut bench = Bench::with(host, policy);
    let module = bench.module("fragile", module);
    let fragile = bench
        .deploy("fragile", &module, limits, "")
        .expect("deploy");
    (bench, fragile)
}

/// `(correlation id, count, payload)` of a fragile agent's echo replies, or panics on
/// anything else.
pub fn counted(seen: &[Received]) -> Vec<(u64, u64, String)> {
    seen.iter()
        .map(|m| {
            assert_eq!(m.header.performative, Performative::Inform, "{m:?}");
            assert_eq!(m.header.flags, Flags::REPLY);
            let (count, payload) = fragile_reply(&m.payload);
            (
                m.header.correlation_id,
                count,
                String::from_utf8_lossy(payload).into_owned(),
            )
        })
        .collect()
}

/// What guests logged, captured by [`capture_logs`]: `(level, message)`.
pub type Logs = Arc<Mutex<Vec<(tracing::Level, String)>>>;

struct Capture(Logs);

struct MessageField<'a>(&'a mut String);

impl tracing::field::Visit for MessageField<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() != "dataplane::agent" {
            return;
        }
        let mut message = String::new();
        event.record(&mut MessageField(&mut message));
        self.0
            .lock()
            .expect("log lock")
            .push((*event.metadata().level(), message));
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `f` with the agents' log lines (target `dataplane::agent`) captured on this
/// thread; returns `f`'s result and the lines.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, Vec<(tracing::Level, String)>) {
    let logs = Logs::default();
    let result = tracing::subscriber::with_default(Capture(Arc::clone(&logs)), f);
    let lines = logs.lock().expect("log lock").clone();
    (result, lines)
}
