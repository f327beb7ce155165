//! The ABI and the limits, end to end through a real (sans-IO) shard: inline WAT modules
//! exercise each host function, error code and refusal of docs/agent-abi.md.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_shard::{Agent, AgentError, Context, DeployError, Message, Shard, ShardConfig};
use dataplane_wasm::{AgentLimits, AgentModule, AgentSpec, Host, HostConfig, WasmAgent, WasmError};

/// What the collecting agent saw: (performative, flags, payload).
type Seen = Rc<RefCell<Vec<(Performative, Flags, Vec<u8>)>>>;

struct Collector(Seen);

impl Agent for Collector {
    fn on_message(&mut self, m: &Message<'_>, _: &mut Context<'_>) -> Result<(), AgentError> {
        self.0
            .borrow_mut()
            .push((m.performative(), m.header.flags, m.payload.to_vec()));
        Ok(())
    }
}

const ME: AgentId = AgentId::from_name("tester");

/// Imports, memory, an inbox at 1024 and an `dp_init` returning 0; `body` adds the rest.
fn module(body: &str) -> String {
    format!(
        r#"(module
  (import "dataplane_v1" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "dataplane_v1" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (import "dataplane_v1" "now_ns" (func $now (result i64)))
  (import "dataplane_v1" "self_id" (func $self (result i64)))
  (import "dataplane_v1" "random" (func $random (result i64)))
  (memory (export "memory") 2)
  (func (export "dp_inbox") (param i32) (result i32) i32.const 1024)
  {body})"#
    )
}

const INIT_OK: &str = r#"(func (export "dp_init") (param i32) (result i32) i32.const 0)"#;

/// Replies `inform` with the payload, unless the message is a reply.
const ECHO: &str = r#"
  (func (export "dp_init") (param i32) (result i32) i32.const 0)
  (func (export "dp_on_message") (param $len i32) (result i32)
    (if (i32.and (i32.load16_u (i32.const 1058)) (i32.const 1)) (then (return (i32.const 0))))
    (drop (call $reply (i32.const 1) (i32.const 1072) (local.get $len)))
    i32.const 0)"#;

struct Bench {
    host: Host,
    shard: Shard,
    seen: Seen,
    now_ns: u64,
}

impl Bench {
    fn new() -> Bench {
        Bench::with_host(HostConfig {
            pool_slots: Some(64),
            ..HostConfig::default()
        })
    }

    fn with_host(config: HostConfig) -> Bench {
        let host = Host::new(config).expect("host");
        let mut shard = Shard::new(ShardConfig::new(0, 1));
        let seen = Seen::default();
        shard
            .deploy(ME, Box::new(Collector(Rc::clone(&seen))), 0)
            .expect("collector");
        Bench {
            host,
            shard,
            seen,
            now_ns: 0,
        }
    }

    fn load(&self, wat: &str) -> Result<Arc<AgentModule>, WasmError> {
        AgentModule::from_bytes(&self.host, "test", wat.as_bytes())
    }

    fn deploy_with(
        &mut self,
        name: &str,
        wat: &str,
        limits: AgentLimits,
    ) -> Result<(), DeployError> {
        let module = self.load(wat).expect("module");
        let spec = AgentSpec {
            module,
            limits,
            config: Arc::from(&b"cfg"[..]),
            seed: Some(7),
        };
        let id = AgentId::from_name(name);
        let agent = WasmAgent::new(&self.host, id, spec);
        self.shard.deploy(id, Box::new(agent), self.now_ns)
    }

    fn deploy(&mut self, name: &str, wat: &str) {
        self.deploy_with(name, wat, AgentLimits::default())
            .expect("deploy");
    }

    fn request(&mut self, to: &str, payload: &[u8]) {
        let header = Header {
            to: AgentId::from_name(to),
            from: ME,
            conversation_id: 3,
            correlation_id: 4,
            performative: Performative::Request,
            priority: Priority::Normal,
            flags: Flags::NONE,
        };
        self.shard.handle_send(&header, payload).expect("accepted");
    }

    fn run(&mut self) {
        for _ in 0..8 {
            self.now_ns += 1_000;
            self.shard.poll_deliver(self.now_ns, 1024);
        }
    }

    fn take(&mut self) -> Vec<(Performative, Flags, Vec<u8>)> {
        std::mem::take(&mut *self.seen.borrow_mut())
    }

    fn error_text(&mut self) -> String {
        let seen = self.take();
        assert_eq!(seen.len(), 1, "one answer expected: {seen:?}");
        let (performative, flags, payload) = &seen[0];
        assert_eq!(*performative, Performative::Failure);
        assert!(flags.contains(Flags::ERROR));
        String::from_utf8_lossy(payload).into_owned()
    }

    /// The neighbour `echo` still answers at once.
    fn assert_echo_serves(&mut self) {
        self.request("echo", b"still here");
        self.run();
        let seen = self.take();
        assert_eq!(
            seen,
            vec![(Performative::Inform, Flags::REPLY, b"still here".to_vec())]
        );
    }
}

#[test]
fn echo_round_trip() {
    let mut bench = Bench::new();
    bench.deploy("echo", &module(ECHO));
    for size in [0usize, 1, 48, 1000, 65_456] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        bench.request("echo", &payload);
        bench.run();
        assert_eq!(
            bench.take(),
            vec![(Performative::Inform, Flags::REPLY, payload)]
        );
    }
}

#[test]
fn header_reaches_the_guest() {
    // Replies with the 48 header bytes it received.
    let wat = module(&format!(
        r#"{INIT_OK}
  (func (export "dp_on_message") (param $len i32) (result i32)
    (drop (call $reply (i32.const 1) (i32.const 1024) (i32.const 48)))
    i32.const 0)"#
    ));
    let mut bench = Bench::new();
    bench.deploy("hdr", &wat);
    bench.request("hdr", b"xyz");
    bench.run();
    let seen = bench.take();
    let bytes = &seen[0].2;
    assert_eq!(&bytes[0..8], &AgentId::from_name("hdr").0.to_le_bytes());
    assert_eq!(&bytes[8..16], &ME.0.to_le_bytes());
    assert_eq!(&bytes[16..24], &3u64.to_le_bytes());
    assert_eq!(&bytes[24..32], &4u64.to_le_bytes());
    assert_eq!(bytes[32], 0, "request");
    assert_eq!(bytes[33], 2, "normal");
    assert_eq!(&bytes[36..40], &3u32.to_le_bytes());
}

#[test]
fn config_self_id_and_random_reach_the_guest() {
    // dp_init copies its config to 512; on_message replies config ++ self_id ++ random.
    let wat = module(
        r#"
  (global $cfg_len (mut i32) (i32.const 0))
  (func (export "dp_init") (param $len i32) (result i32)
    (memory.copy (i32.const 512) (i32.const 1024) (local.get $len))
    (global.set $cfg_len (local.get $len))
    i32.const 0)
  (func (export "dp_on_message") (param i32) (result i32)
    (i64.store (i32.add (i32.const 512) (global.get $cfg_len)) (call $self))
    (i64.store (i32.add (i32.const 520) (global.get $cfg_len)) (call $random))
    (drop (call $reply (i32.const 1) (i32.const 512) (i32.add (global.get $cfg_len) (i32.const 16))))
    i32.const 0)"#,
    );
    let mut bench = Bench::new();
    bench.deploy("cfg", &wat);
    bench.request("cfg", b"");
    bench.request("cfg", b"");
    bench.run();
    let seen = bench.take();
    assert_eq!(&seen[0].2[..3], b"cfg");
    assert_eq!(
        &seen[0].2[3..11],
        &AgentId::from_name("cfg").0.to_le_bytes()
    );
    assert_ne!(seen[0].2[11..19], seen[1].2[11..19], "random advances");
}

#[test]
fn guest_error_code_becomes_a_failure_reply_and_the_agent_keeps_running() {
    let wat = module(&format!(
        r#"{INIT_OK}
  (func (export "dp_on_message") (param i32) (result i32) i32.const 42)"#
    ));
    let mut bench = Bench::new();
    bench.deploy("grumpy", &wat);
    bench.request("grumpy", b"a");
    bench.run();
    assert!(bench.error_text().contains("returned error 42"));
    bench.request("grumpy", b"b");
    bench.run();
    assert!(bench.error_text().contains("returned error 42"));
}

/// Sends to the agent id in the first 8 payload bytes, with the rest of the payload at
/// address `len` of its header... simpler: builds a header at 0 from the inbox header
/// and replies with the code `send` returned.
fn sender(payload_len: &str) -> String {
    module(&format!(
        r#"{INIT_OK}
  (func (export "dp_on_message") (param $len i32) (result i32)
    ;; header at 0: to = first 8 payload bytes, performative inform, priority normal
    (i64.store (i32.const 0) (i64.load (i32.const 1072)))
    (i32.store8 (i32.const 32) (i32.const 1))
    (i32.store8 (i32.const 33) (i32.const 2))
    (i32.store (i32.const 100) (call $send (i32.const 0) (i32.const 1072) {payload_len}))
    (drop (call $reply (i32.const 1) (i32.const 100) (i32.const 4)))
    i32.const 0)"#
    ))
}

fn code_of(seen: &[(Performative, Flags, Vec<u8>)]) -> i32 {
    let reply = seen
        .iter()
        .find(|(p, f, payload)| {
            *p == Performative::Inform && f.contains(Flags::REPLY) && payload.len() == 4
        })
        .expect("a code reply");
    i32::from_le_bytes(reply.2[..4].try_into().expect("4 bytes"))
}

#[test]
fn send_reaches_its_addressee() {
    let mut bench = Bench::new();
    bench.deploy("sender", &sender("(local.get $len)"));
    bench.request("sender", &ME.0.to_le_bytes());
    bench.run();
    let seen = bench.take();
    assert_eq!(code_of(&seen), 0);
    assert!(seen.iter().any(|(p, f, payload)| *p == Performative::Inform
        && *f == Flags::NONE
        && payload == &ME.0.to_le_bytes()));
}

#[test]
fn huge_send_is_refused_with_too_large() {
    let mut bench = Bench::new();
    bench.deploy("sender", &sender("(i32.const 16777216)"));
    bench.deploy("echo", &module(ECHO));
    bench.request("sender", &ME.0.to_le_bytes());
    bench.run();
    assert_eq!(code_of(&bench.take()), -3);
    bench.assert_echo_serves();
}

#[test]
fn out_of_bounds_send_is_invalid() {
    let mut bench = Bench::new();
    bench.deploy("sender", &sender("(i32.const 200000)"));
    bench
        .deploy_with(
            "sender2",
            &sender("(i32.const 65000)"),
            AgentLimits::default(),
        )
        .expect("deploy");
    bench.request("sender", &ME.0.to_le_bytes());
    bench.run();
    // 200000 > message_bytes_max: too large before any memory is read.
    assert_eq!(code_of(&bench.take()), -3);
    bench.request("sender2", &ME.0.to_le_bytes());
    bench.run();
    // 1072 + 65000 fits in 2 pages (131072): valid.
    assert_eq!(code_of(&bench.take()), 0);
}

#[test]
fn send_to_unknown_local_agent_is_refused() {
    let mut bench = Bench::new();
    bench.deploy("sender", &sender("(i32.const 8)"));
    bench.deploy("echo", &module(ECHO));
    bench.request("sender", &AgentId::from_name("nobody").0.to_le_bytes());
    bench.run();
    assert_eq!(code_of(&bench.take()), -4);
    bench.assert_echo_serves();
}

#[test]
fn send_storm_hits_the_send_limit_and_the_mailbox_bound() {
    // Sends 100000 messages to the collector, counting codes 0, -2 and -6.
    let wat = module(&format!(
        r#"{INIT_OK}
  (func (export "dp_on_message") (param $len i32) (result i32)
    (local $i i32) (local $code i32)
    ;; An empty message asks for the counts of the last storm (whose own reply was
    ;; refused: it is a send too, over the limit).
    (if (i32.eqz (local.get $len)) (then
      (drop (call $reply (i32.const 1) (i32.const 200) (i32.const 12)))
      (return (i32.const 0))))
    (i64.store (i32.const 0) (i64.load (i32.const 1072)))
    (i32.store8 (i32.const 32) (i32.const 1))
    (i32.store8 (i32.const 33) (i32.const 2))
    (i64.store (i32.const 200) (i64.const 0))
    (i64.store (i32.const 208) (i64.const 0))
    (i64.store (i32.const 216) (i64.const 0))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.const 100000)))
      (local.set $code (call $send (i32.const 0) (i32.const 1072) (i32.const 8)))
      (if (i32.eqz (local.get $code)) (then (i32.store (i32.const 200) (i32.add (i32.load (i32.const 200)) (i32.const 1)))))
      (if (i32.eq (local.get $code) (i32.const -2)) (then (i32.store (i32.const 204) (i32.add (i32.load (i32.const 204)) (i32.const 1)))))
      (if (i32.eq (local.get $code) (i32.const -6)) (then (i32.store (i32.const 208) (i32.add (i32.load (i32.const 208)) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.store (i32.const 100) (i32.load (i32.const 200)))
    (drop (call $reply (i32.const 1) (i32.const 200) (i32.const 12)))
    i32.const 0)"#
    ));
    let mut bench = Bench::new();
    bench
        .deploy_with(
            "storm",
            &wat,
            AgentLimits {
                sends_per_message_max: 5000,
                // 100,000 host calls: far past the default 10 ms in an unoptimised build.
                // This test is about the send limit and the mailbox bound, not time.
                time_per_message: std::time::Duration::from_secs(10),
                ..AgentLimits::default()
            },
        )
        .expect("deploy");
    bench.deploy("echo", &module(ECHO));
    let target = AgentId::from_name("target");
    let delivered = Seen::default();
    bench
        .shard
        .deploy(target, Box::new(Collector(Rc::clone(&delivered))), 0)
        .expect("target");
    bench.request("storm", &target.0.to_le_bytes());
    bench.run();
    bench.request("storm", b"");
    bench.run();
    let seen = bench.take();
    let counts = seen
        .iter()
        .find(|(_, f, payload)| f.contains(Flags::REPLY) && payload.len() == 12)
        .unwrap_or_else(|| panic!("counts: {seen:?}"));
    let word = |at: usize| u32::from_le_bytes(counts.2[at..at + 4].try_into().expect("4"));
    let (ok, backpressure, limited) = (word(0), word(4), word(8));
    // The target's mailbox holds 1024 frames.
    assert_eq!(ok, 1024, "accepted up to the mailbox bound");
    assert_eq!(backpressure, 5000 - 1024, "then back-pressure");
    assert_eq!(limited, 100_000 - 5000, "then the per-call send limit");
    // Every accepted message was delivered: none lost.
    assert_eq!(delivered.borrow().len(), 1024);
    bench.assert_echo_serves();
}

#[test]
fn looping_agent_is_interrupted_within_its_bound_and_neighbours_keep_serving() {
    let wat = module(&format!(
        r#"{INIT_OK}
  (func (export "dp_on_message") (param i32) (result i32)
    (loop $forever (br $forever))
    i32.const 0)"#
    ));
    let mut bench = Bench::new();
    let limit = Duration::from_millis(20);
    bench
        .deploy_with(
            "spinner",
            &wat,
            AgentLimits {
                time_per_message: limit,
                ..AgentLimits::default()
            },
        )
        .expect("deploy");
    bench.deploy("echo", &module(ECHO));
    bench.request("spinner", b"spin");
    let start = Instant::now();
    bench.run();
    let took = start.elapsed();
    let text = bench.error_text();
    assert!(text.contains("interrupt"), "{text}");
    assert!(text.contains("time_per_message_ms of 20 ms"), "{text}");
    // Never early. (How late is measured by `dataplane bench interrupt`, not by a timed
    // test; this only rules out a missing interrupt.)
    assert!(
        took >= limit,
        "interrupted after {took:?}, before the limit"
    );
    assert!(took < Duration::from_secs(5), "interrupted after {took:?}");
    bench.assert_echo_serves();
}

#[test]
fn memory_bomb_fails_inside_the_guest() {
    // Grows one page at a time until memory.grow fails, then reports the pages it has.
    let wat = module(&format!(
        r#"{INIT_OK}
  (func (export "dp_on_message") (param i32) (result i32)
    (block $full (loop $grow
      (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $grow)))
    (i32.store (i32.const 100) (memory.size))
    (drop (call $reply (i32.const 1) (i32.const 100) (i32.const 4)))
    i32.const 0)"#
    ));
    let mut bench = Bench::new();
    bench
        .deploy_with(
            "bomb",
            &wat,
            AgentLimits {
                memory_bytes_max: 1 << 20,
                ..AgentLimits::default()
            },
        )
        .expect("deploy");
    bench.deploy("echo", &module(ECHO));
    bench.request("bomb", b"boom");
    bench.run();
    assert_eq!(code_of(&bench.take()), 16, "1 MiB = 16 pages, not one more");
    bench.assert_echo_serves();
}

#[test]
fn trap_becomes_a_failure_reply_naming_it() {
    let wat = module(&format!(
        r#"{INIT_OK}
  (func (export "dp_on_message") (param i32) (result i32) unreachable)"#
    ));
    let mut bench = Bench::new();
    bench.deploy("trapper", &wat);
    bench.deploy("echo", &module(ECHO));
    bench.request("trapper", b"x");
    bench.run();
    let text = bench.error_text();
    assert!(text.contains("wasm trap"), "{text}");
    bench.assert_echo_serves();
}

#[test]
fn reply_outside_a_message_is_refused() {
    // dp_init replies; the code is stored and reported on the first message.
    let wat = module(
        r#"
  (func (export "dp_init") (param i32) (result i32)
    (i32.store (i32.const 100) (call $reply (i32.const 1) (i32.const 0) (i32.const 0)))
    i32.const 0)
  (func (export "dp_on_message") (param i32) (result i32)
    (drop (call $reply (i32.const 1) (i32.const 100) (i32.const 4)))
    i32.const 0)"#,
    );
    let mut bench = Bench::new();
    bench.deploy("early", &wat);
    bench.request("early", b"");
    bench.run();
    assert_eq!(code_of(&bench.take()), -5);
}

fn refusal(wat: &str) -> String {
    let bench = Bench::new();
    bench.load(wat).expect_err("refused").to_string()
}

#[test]
fn invalid_modules_are_refused_naming_the_problem() {
    let text = refusal("this is not wasm");
    assert!(text.contains("not valid WebAssembly"), "{text}");

    let text = refusal(&module(INIT_OK));
    assert!(text.contains("does not export dp_on_message"), "{text}");

    let text = refusal(
        r#"(module (import "dataplane_v1" "launch_missiles" (func))
             (memory (export "memory") 1))"#,
    );
    assert!(text.contains("dataplane_v1.launch_missiles"), "{text}");

    let text = refusal(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1))"#,
    );
    assert!(text.contains("wasi_snapshot_preview1.fd_write"), "{text}");

    let text = refusal(
        r#"(module (import "dataplane_v1" "send" (func (param i32) (result i32)))
             (memory (export "memory") 1))"#,
    );
    assert!(
        text.contains("imports dataplane_v1.send as func (i32) -> (i32)"),
        "{text}"
    );

    let text = refusal(&module(&format!(
        r#"{INIT_OK} (func (export "dp_on_message") (param i64) (result i32) i32.const 0)"#
    )));
    assert!(
        text.contains("exports dp_on_message as func (i64) -> (i32)"),
        "{text}"
    );

    let text =
        refusal(r#"(module (func (export "dp_inbox") (param i32) (result i32) i32.const 0))"#);
    assert!(text.contains("does not export memory"), "{text}");
}

#[test]
fn failing_init_and_bad_inbox_refuse_the_deploy() {
    let mut bench = Bench::new();
    let wat = module(
        r#"(func (export "dp_init") (param i32) (result i32) i32.const 3)
           (func (export "dp_on_message") (param i32) (result i32) i32.const 0)"#,
    );
    let error = bench
        .deploy_with("init3", &wat, AgentLimits::default())
        .expect_err("refused");
    assert!(error.to_string().contains("dp_init returned 3"), "{error}");
    assert!(!bench.shard.hosts(AgentId::from_name("init3")));

    // An inbox that does not fit in one page of memory.
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "dp_inbox") (param i32) (result i32) i32.const 1024)
        (func (export "dp_init") (param i32) (result i32) i32.const 0)
        (func (export "dp_on_message") (param i32) (result i32) i32.const 0))"#;
    let error = bench
        .deploy_with("small", wat, AgentLimits::default())
        .expect_err("refused");
    assert!(error.to_string().contains("dp_inbox"), "{error}");
}

#[test]
fn a_full_pool_is_back_pressure_not_a_crash() {
    let mut bench = Bench::with_host(HostConfig {
        pool_slots: Some(2),
        ..HostConfig::default()
    });
    bench.deploy("a", &module(ECHO));
    bench.deploy("b", &module(ECHO));
    let error = bench
        .deploy_with("c", &module(ECHO), AgentLimits::default())
        .expect_err("pool full");
    assert!(error.to_string().contains("pool is full"), "{error}");
    bench.shard.undeploy(AgentId::from_name("a"), 0);
    bench.deploy("c", &module(ECHO));
}

#[test]
fn compiled_modules_are_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("dataplane-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = HostConfig {
        pool_slots: Some(4),
        cache_dir: Some(dir.clone()),
        ..HostConfig::default()
    };
    let wat = module(ECHO);
    {
        let host = Host::new(config.clone()).expect("host");
        let module = AgentModule::from_bytes(&host, "echo", wat.as_bytes()).expect("module");
        assert_eq!(
            module.cache_outcome(),
            dataplane_wasm::CacheOutcome::Compiled
        );
    }
    let host = Host::new(config).expect("host");
    let module = AgentModule::from_bytes(&host, "echo", wat.as_bytes()).expect("module");
    assert_eq!(module.cache_outcome(), dataplane_wasm::CacheOutcome::Hit);
    // The entry is mapped while the module lives: truncating it then would be a SIGBUS
    // (the cache itself only ever replaces entries by rename).
    drop(module);
    // A corrupt entry is replaced, not trusted.
    for entry in std::fs::read_dir(&dir).expect("dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("write");
    }
    let module = AgentModule::from_bytes(&host, "echo", wat.as_bytes()).expect("module");
    assert_eq!(
        module.cache_outcome(),
        dataplane_wasm::CacheOutcome::Compiled
    );
    let _ = std::fs::remove_dir_all(&dir);
}
