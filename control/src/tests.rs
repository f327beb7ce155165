//! Behaviour of the whole configuration: layers, errors, round trip, docs in step.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;

use clap::{CommandFactory, Parser};

use super::*;

fn invalid(text: &str) -> String {
    match Config::from_yaml_str(text, "test.yaml") {
        Ok(config) => panic!("accepted {text:?}: {config:?}"),
        Err(error @ ConfigError::Invalid { .. }) => error.to_string(),
        Err(error) => panic!("{text:?} gave a non-Invalid error: {error}"),
    }
}

fn parse_error(text: &str) -> (u64, u64, String) {
    match Config::from_yaml_str(text, "test.yaml") {
        Err(ConfigError::Parse {
            source_name,
            line,
            column,
            message,
        }) => {
            assert_eq!(source_name, "test.yaml");
            (line, column, message)
        }
        other => panic!("{text:?} gave {other:?}"),
    }
}

#[test]
fn embedded_default_is_valid() {
    let config = Config::embedded_default();
    assert_eq!(config.node.shards, ShardCount::Auto);
    assert_eq!(config.node.cpuset, None);
    assert_eq!(config.node.idle, IdlePolicy::BusyPoll);
    assert_eq!(config.shard.ring_capacity_frames.get(), 1024);
    assert_eq!(config.agents.len(), 1);
    assert_eq!(config.agents[0].id.as_str(), "echo");
    assert_eq!(config.agents[0].kind, AgentKind::Wasm);
    let echo = config.agents[0].wasm.as_ref().unwrap();
    assert_eq!(echo.module, ModuleSource::Builtin("echo".to_owned()));
    assert_eq!(echo.config, "");
    assert_eq!(echo.seed, None);
    assert_eq!(echo.limits, config.wasm.agent_defaults);
    let wasm = &config.wasm;
    assert_eq!(wasm.memory_reservation_bytes, None);
    assert_eq!(wasm.cache_dir, Some(CacheDir::Auto));
    assert_eq!(wasm.profiling, WasmProfiling::None);
    assert_eq!(config.admin.listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(config.log.level, "info");
}

/// default.yaml and the constants in `limits` are two spellings of one set of defaults.
#[test]
fn embedded_default_equals_limits() {
    let default = Config::embedded_default();
    assert_eq!(Config::from_yaml_str("{}", "empty").unwrap(), default);
    assert_eq!(Config::from_yaml_str("", "empty").unwrap(), default);
    assert_eq!(Config::load(None, &Overrides::default()).unwrap(), default);
    let shard = &default.shard;
    let pairs = [
        (default.node.memlock_bytes_min, limits::MEMLOCK_BYTES_MIN),
        (default.node.io_memory_bytes as u64, limits::IO_MEMORY_BYTES),
        (
            shard.ring_capacity_frames.get() as u64,
            limits::RING_CAPACITY_FRAMES,
        ),
        (
            shard.mailbox_capacity_frames.get() as u64,
            limits::MAILBOX_CAPACITY_FRAMES,
        ),
        (
            shard.frame_pool_frames_max.get() as u64,
            limits::FRAME_POOL_FRAMES_MAX,
        ),
        (shard.frame_bytes_max.get() as u64, limits::FRAME_BYTES_MAX),
        (
            shard.poll_budget_messages.get() as u64,
            limits::POLL_BUDGET_MESSAGES,
        ),
        (
            shard.ring_batch_frames.get() as u64,
            limits::RING_BATCH_FRAMES,
        ),
        (
            u64::from(shard.starvation_limit_passes.get()),
            limits::STARVATION_LIMIT_PASSES,
        ),
        (shard.agents_max.get() as u64, limits::AGENTS_MAX),
        (shard.stall_threshold_us.get(), limits::STALL_THRESHOLD_US),
    ];
    let wasm = &default.wasm;
    let (restart, agent) = (&wasm.restart, &wasm.agent_defaults);
    let pairs = pairs.into_iter().chain([
        (
            u64::from(wasm.agents_per_shard_max.get()),
            limits::WASM_AGENTS_PER_SHARD_MAX,
        ),
        (wasm.memory_bytes_max, limits::WASM_MEMORY_BYTES_MAX),
        (wasm.epoch_tick_us.get(), limits::WASM_EPOCH_TICK_US),
        (
            u64::from(restart.max_restarts),
            limits::RESTART_MAX_RESTARTS,
        ),
        (restart.window_ms.get(), limits::RESTART_WINDOW_MS),
        (
            restart.backoff_initial_ms.get(),
            limits::RESTART_BACKOFF_INITIAL_MS,
        ),
        (restart.backoff_max_ms.get(), limits::RESTART_BACKOFF_MAX_MS),
        (agent.memory_bytes_max, limits::AGENT_MEMORY_BYTES_MAX),
        (
            agent.time_per_message_ms.get(),
            limits::AGENT_TIME_PER_MESSAGE_MS,
        ),
        (
            u64::from(agent.message_bytes_max),
            limits::AGENT_MESSAGE_BYTES_MAX,
        ),
        (
            u64::from(agent.sends_per_message_max.get()),
            limits::AGENT_SENDS_PER_MESSAGE_MAX,
        ),
    ]);
    for (value, bounds) in pairs {
        assert_eq!(value, bounds.default, "{bounds:?}");
    }
    assert_eq!(
        wasm.cache_dir.as_ref().map(ToString::to_string).as_deref(),
        Some(limits::WASM_CACHE_DIR_DEFAULT)
    );
}

#[test]
fn partial_file_keeps_other_defaults() {
    let config = Config::from_yaml_str("node:\n  idle: park\nagents: []\n", "f").unwrap();
    assert_eq!(config.node.idle, IdlePolicy::Park);
    assert!(config.agents.is_empty());
    assert_eq!(config.shard, Config::embedded_default().shard);
}

fn every_override() -> Overrides {
    Overrides {
        shards: Some("2".parse().unwrap()),
        cpuset: Some("2-3".parse().unwrap()),
        idle: Some(IdlePolicy::Park),
        memlock_bytes_min: Some(64 << 20),
        io_memory_bytes: Some(1 << 20),
        ring_capacity_frames: Some(4096),
        mailbox_capacity_frames: Some(512),
        frame_pool_frames_max: Some(8192),
        frame_bytes_max: Some(1 << 20),
        poll_budget_messages: Some(128),
        ring_batch_frames: Some(16),
        starvation_limit_passes: Some(8),
        agents_max: Some(1000),
        stall_threshold_us: Some(250),
        agents_per_shard_max: Some(500),
        wasm_cache_dir: Some("/var/cache/dp".parse().unwrap()),
        wasm_cache_disabled: false,
        wasm_profiling: Some(WasmProfiling::PerfMap),
        listen: Some("0.0.0.0:4500".parse().unwrap()),
        edge_disabled: false,
        cert: Some("/etc/dp/cert.pem".into()),
        key: Some("/etc/dp/key.pem".into()),
        client_ca: Some("/etc/dp/clients.pem".into()),
        admin_listen: Some("0.0.0.0:9100".parse().unwrap()),
        admin_disabled: false,
        log_level: Some("debug".to_owned()),
    }
}

#[test]
fn edge_cert_and_key_go_together() {
    let error = Config::from_yaml_str("edge:\n  cert: /etc/dp/cert.pem\n", "f").unwrap_err();
    assert!(error.to_string().contains("edge.key"), "{error}");
    let config = Config::embedded_default();
    assert_eq!(
        config.edge.listen,
        Some("127.0.0.1:4433".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(config.edge.cert, None);
    assert_eq!(config.edge.connections_per_shard_max, 4096);
}

#[test]
fn every_field_override_works() {
    let config = Config::load(None, &every_override()).unwrap();
    let (node, shard) = (&config.node, &config.shard);
    assert_eq!(node.shards.to_string(), "2");
    assert_eq!(node.cpuset.as_ref().map(CpuList::cpus), Some(&[2, 3][..]));
    assert_eq!(node.idle, IdlePolicy::Park);
    assert_eq!(node.memlock_bytes_min, 64 << 20);
    assert_eq!(node.io_memory_bytes, 1 << 20);
    assert_eq!(shard.ring_capacity_frames.get(), 4096);
    assert_eq!(shard.mailbox_capacity_frames.get(), 512);
    assert_eq!(shard.frame_pool_frames_max.get(), 8192);
    assert_eq!(shard.frame_bytes_max.get(), 1 << 20);
    assert_eq!(shard.poll_budget_messages.get(), 128);
    assert_eq!(shard.ring_batch_frames.get(), 16);
    assert_eq!(shard.starvation_limit_passes.get(), 8);
    assert_eq!(shard.agents_max.get(), 1000);
    assert_eq!(shard.stall_threshold_us.get(), 250);
    assert_eq!(
        config.admin.listen,
        Some("0.0.0.0:9100".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(config.log.level, "debug");
    let edge = &config.edge;
    assert_eq!(
        edge.listen,
        Some("0.0.0.0:4500".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        edge.cert.as_deref(),
        Some(std::path::Path::new("/etc/dp/cert.pem"))
    );
    assert_eq!(
        edge.key.as_deref(),
        Some(std::path::Path::new("/etc/dp/key.pem"))
    );
    assert_eq!(
        edge.client_ca.as_deref(),
        Some(std::path::Path::new("/etc/dp/clients.pem"))
    );
    let edge_off = Overrides {
        edge_disabled: true,
        ..Overrides::default()
    };
    assert_eq!(Config::load(None, &edge_off).unwrap().edge.listen, None);

    let off = Overrides {
        admin_disabled: true,
        ..Overrides::default()
    };
    assert_eq!(Config::load(None, &off).unwrap().admin.listen, None);
    let wasm = &config.wasm;
    assert_eq!(wasm.agents_per_shard_max.get(), 500);
    assert_eq!(wasm.cache_dir, Some(CacheDir::Path("/var/cache/dp".into())));
    assert_eq!(wasm.cache_dir_path(), Some("/var/cache/dp".into()));
    assert_eq!(wasm.profiling, WasmProfiling::PerfMap);

    let no_cache = Overrides {
        wasm_cache_disabled: true,
        ..Overrides::default()
    };
    let config = Config::load(None, &no_cache).unwrap();
    assert_eq!(config.wasm.cache_dir, None);
    assert_eq!(config.wasm.cache_dir_path(), None);
}

#[test]
fn overrides_beat_the_file_and_are_validated() {
    let path = std::env::temp_dir().join(format!("dataplane-control-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "shard:\n  ring_capacity_frames: 256\n  ring_batch_frames: 8\n",
    )
    .unwrap();
    let from_file = Config::load(Some(&path), &Overrides::default()).unwrap();
    assert_eq!(from_file.shard.ring_capacity_frames.get(), 256);

    let overrides = Overrides {
        ring_capacity_frames: Some(2048),
        ..Overrides::default()
    };
    let config = Config::load(Some(&path), &overrides).unwrap();
    assert_eq!(config.shard.ring_capacity_frames.get(), 2048);
    assert_eq!(
        config.shard.ring_batch_frames.get(),
        8,
        "the file's other fields stay"
    );

    let overrides = Overrides {
        ring_batch_frames: Some(512),
        ..Overrides::default()
    };
    let error = Config::load(Some(&path), &overrides).unwrap_err();
    assert_eq!(
        error.to_string(),
        "shard.ring_batch_frames = 512: must not exceed shard.ring_capacity_frames (256)"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let path = Path::new("/nonexistent/dataplane.yaml");
    let error = Config::load(Some(path), &Overrides::default()).unwrap_err();
    assert!(matches!(&error, ConfigError::Io { path: p, .. } if p == path));
    assert!(error
        .to_string()
        .starts_with("cannot read configuration file /nonexistent/dataplane.yaml: "));
}

/// One case per class of bad value: the Display string is the user interface.
#[test]
fn invalid_values_name_field_value_and_reason() {
    let cases = [
        ("node: {shards: 0}", "node.shards = 0: must be \"auto\" or a number between 1 and 1024"),
        ("node: {shards: many}", "node.shards = many: must be \"auto\" or a number between 1 and 1024"),
        ("node: {shards: null}", "node.shards = null: a value is required"),
        ("node: {cpuset: '7-2'}", "node.cpuset = 7-2: range `7-2` runs backwards"),
        ("node: {cpuset: ''}", "node.cpuset = : must name at least one CPU, e.g. 2-7,10"),
        ("node: {idle: spin}", "node.idle = spin: must be busy-poll or park"),
        (
            "node: {io_memory_bytes: 4096}",
            "node.io_memory_bytes = 4096: must be a whole number of bytes between 524288 and 1073741824",
        ),
        (
            "node: {io_memory_bytes: 1000000}",
            "node.io_memory_bytes = 1000000: must be a multiple of 4096 bytes (the page size)",
        ),
        (
            "node: {memlock_bytes_min: 1048576, shards: 4}",
            "node.memlock_bytes_min = 1048576: must be at least node.io_memory_bytes (2097152) x 4 shard(s) = 8388608",
        ),
        (
            "node: {shards: 4, cpuset: '2-3'}",
            "node.shards = 4: is more than the 2 CPU(s) in node.cpuset (2-3)",
        ),
        (
            "shard: {ring_capacity_frames: 1000}",
            "shard.ring_capacity_frames = 1000: must be a power of two between 2 and 65536",
        ),
        (
            "shard: {ring_capacity_frames: 131072}",
            "shard.ring_capacity_frames = 131072: must be a power of two between 2 and 65536",
        ),
        (
            "shard: {mailbox_capacity_frames: 0}",
            "shard.mailbox_capacity_frames = 0: must be a whole number of frames between 1 and 1048576",
        ),
        (
            "shard: {mailbox_capacity_frames: -5}",
            "shard.mailbox_capacity_frames = -5: must be a whole number of frames between 1 and 1048576",
        ),
        (
            "shard: {poll_budget_messages: 2.5}",
            "shard.poll_budget_messages = 2.5: must be a whole number of messages between 1 and 65536",
        ),
        (
            "shard: {frame_bytes_max: 2097152}",
            "shard.frame_bytes_max = 2097152: must be a whole number of bytes between 64 and 1048576",
        ),
        (
            "shard: {ring_batch_frames: 2048}",
            "shard.ring_batch_frames = 2048: must not exceed shard.ring_capacity_frames (1024)",
        ),
        (
            "shard: {frame_pool_frames_max: 512}",
            "shard.frame_pool_frames_max = 512: must be at least shard.ring_capacity_frames (1024) and shard.mailbox_capacity_frames (1024)",
        ),
        (
            "shard: {starvation_limit_passes: 99999999999999999999}",
            "shard.starvation_limit_passes = 99999999999999999999: must be a whole number of passes between 1 and 65536",
        ),
        (
            "shard: {stall_threshold_us: 0}",
            "shard.stall_threshold_us = 0: must be a whole number of microseconds between 1 and 60000000",
        ),
        (
            "shard: {agents_max: 1}\nnode: {shards: 1}\nagents: [{id: a, kind: echo}, {id: b, kind: sink}]",
            "agents = 2 agents: more than shard.agents_max x node.shards = 1",
        ),
        ("agents: [{id: '', kind: echo}]", "agents[0].id = : must be 1 to 64 bytes long"),
        ("agents: [{id: 'a b', kind: echo}]", "agents[0].id = a b: may only contain A-Z a-z 0-9 . _ -"),
        (
            "agents: [{id: a, kind: echo}, {id: a, kind: sink}]",
            "agents[1].id = a: is already used by an earlier agent",
        ),
        ("agents: [{id: a, kind: native}]", "agents[0].kind = native: must be one of echo, sink, counter, wasm"),
        ("admin: {listen: 'localhost'}", "admin.listen = localhost: must be IP:PORT, e.g. 127.0.0.1:9090"),
        (
            "log: {level: 'info debug'}",
            "log.level = info debug: must be a tracing filter such as info or warn,dataplane=debug: 1 to 4096 printable ASCII bytes without spaces",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(invalid(text), expected, "input: {text}");
    }
}

#[test]
fn long_agent_id_is_refused() {
    let text = format!("agents: [{{id: {}, kind: echo}}]", "a".repeat(65));
    assert!(invalid(&text).ends_with(": must be 1 to 64 bytes long"));
}

#[test]
fn unknown_field_is_refused_with_its_name() {
    let (line, column, message) = parse_error("shard:\n  ring_capacity: 4096\n");
    assert_eq!((line, column), (2, 3));
    assert!(
        message.contains("unknown field `ring_capacity`"),
        "{message}"
    );

    let (line, _, message) = parse_error("nodes: {}\n");
    assert_eq!(line, 1);
    assert!(message.contains("unknown field `nodes`"), "{message}");

    let (_, _, message) = parse_error("agents: [{id: a, kind: wasm, modul: x.wasm}]\n");
    assert!(message.contains("unknown field `modul`"), "{message}");

    let (line, column, message) = parse_error("wasm:\n  restart:\n    max_restart: 3\n");
    assert_eq!((line, column), (3, 5));
    assert!(message.contains("unknown field `max_restart`"), "{message}");

    let (_, _, message) = parse_error(
        "agents: [{id: a, kind: wasm, module: builtin:echo, limits: {memory_bytes: 65536}}]\n",
    );
    assert!(
        message.contains("unknown field `memory_bytes`"),
        "{message}"
    );

    let (_, _, message) = parse_error("wasm: {agent_defaults: {seed: 1}}\n");
    assert!(message.contains("unknown field `seed`"), "{message}");
}

#[test]
fn syntax_error_gives_line_and_column() {
    let error = Config::from_yaml_str("node:\n  shards: [1\nshard: {}\n", "bad.yaml").unwrap_err();
    let ConfigError::Parse { line, column, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(*line >= 2 && *column >= 1, "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("bad.yaml:{line}:{column}: ")),
        "{error}"
    );
}

#[test]
fn structure_errors_are_parse_errors() {
    let (line, column, message) = parse_error("shard:\n  ring_capacity_frames: [1024]\n");
    assert_eq!((line, column), (2, 25));
    assert_eq!(
        message,
        "expected a single value (number or text), not a list or mapping"
    );
    let (line, _, message) = parse_error("log: {level: a}\nlog: {level: b}\n");
    assert_eq!(line, 2);
    assert!(message.contains("duplicate"), "{message}");
    let (line, _, _) = parse_error("agents: [{id: a}]\n");
    assert_eq!(line, 1);
}

#[test]
fn round_trip_through_yaml() {
    let default = Config::embedded_default();
    assert_eq!(
        Config::from_yaml_str(&default.to_yaml(), "shown").unwrap(),
        default
    );

    let mut overrides = every_override();
    overrides.admin_listen = None;
    overrides.admin_disabled = true;
    let custom = Config::load(None, &overrides).unwrap();
    let text = custom.to_yaml();
    assert_eq!(
        Config::from_yaml_str(&text, "shown").unwrap(),
        custom,
        "{text}"
    );
    assert!(text.contains("ring_capacity_frames: 4096"), "{text}");
}

/// The binary's view: flags parse through clap with the types' own parsers.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
}

#[test]
fn flags_parse_through_clap() {
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "dataplane",
        "--shards",
        "auto",
        "--idle",
        "park",
        "--cpuset",
        "0-3",
        "--ring-capacity-frames",
        "64",
        "--log-level",
        "warn",
    ])
    .unwrap();
    assert_eq!(cli.overrides.shards, Some(ShardCount::Auto));
    assert_eq!(cli.overrides.idle, Some(IdlePolicy::Park));
    assert_eq!(cli.overrides.ring_capacity_frames, Some(64));
    let config = Config::load(None, &cli.overrides).unwrap();
    assert_eq!(config.node.cpuset.unwrap().as_str(), "0-3");

    for bad in [
        ["--shards", "0"],
        ["--idle", "spin"],
        ["--cpuset", "3-1"],
        ["--ring-capacity-frames", "x"],
    ] {
        let error = Cli::try_parse_from(["dataplane", bad[0], bad[1]]).unwrap_err();
        assert!(error.to_string().contains(bad[0]), "{error}");
    }
    assert!(Cli::try_parse_from([
        "dataplane",
        "--admin-disabled",
        "--admin-listen",
        "127.0.0.1:1"
    ])
    .is_err());
}

/// Each flag's help ends with `[field.path; default: VALUE]`, and VALUE is what the embedded
/// default file says.
#[test]
fn flag_help_states_the_embedded_default() {
    let default = serde_json::to_value(Config::embedded_default()).unwrap();
    let command = Cli::command();
    let mut checked = 0;
    for arg in command
        .get_arguments()
        .filter(|arg| arg.get_long().is_some())
    {
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let Some((_, bracket)) = help.rsplit_once('[') else {
            panic!("--{:?}: {help}", arg.get_long())
        };
        let (path, default_text) = bracket
            .trim_end_matches(']')
            .split_once("; default: ")
            .unwrap();
        if matches!(
            arg.get_long(),
            Some("admin-disabled" | "wasm-cache-disabled" | "edge-disabled")
        ) {
            continue;
        }
        let value = path.split('.').fold(&default, |value, key| &value[key]);
        let expected = match value {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Null => "none".to_owned(),
            other => other.to_string(),
        };
        assert!(
            default_text.starts_with(&expected),
            "--{:?}: help says {default_text}, file says {expected}",
            arg.get_long()
        );
        checked += 1;
    }
    assert_eq!(checked, 23);
}

/// docs/configuration.md documents every key of the embedded default.
#[test]
fn configuration_doc_lists_every_field() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let default = serde_json::to_value(Config::embedded_default()).unwrap();
    fn collect(prefix: &str, value: &serde_json::Value, paths: &mut Vec<String>) {
        if let serde_json::Value::Object(fields) = value {
            for (key, value) in fields {
                let path = format!("{prefix}.{key}");
                collect(&path, value, paths);
                paths.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    for (section, fields) in default.as_object().unwrap() {
        collect(section, fields, &mut paths);
        paths.push(section.clone());
    }
    // Every key of an agent entry, from a wasm agent with every optional key set.
    let agent = Config::from_yaml_str(
        "agents: [{id: a, kind: wasm, module: builtin:echo, config: x, seed: 1}]",
        "agent",
    )
    .unwrap();
    let agent = serde_json::to_value(&agent.agents[0]).unwrap();
    collect("agents[]", &agent, &mut paths);
    assert!(paths.contains(&"agents[].seed".to_owned()), "{paths:?}");
    assert!(
        paths.contains(&"agents[].limits.sends_per_message_max".to_owned()),
        "{paths:?}"
    );
    for path in paths {
        assert!(
            doc.contains(&format!("`{path}`")),
            "docs/configuration.md lacks `{path}`"
        );
    }
}

/// The example in docs/configuration.md is a valid file.
#[test]
fn configuration_doc_example_is_valid() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let (_, example) = doc.split_once("```yaml\n").unwrap();
    let (example, _) = example.split_once("```").unwrap();
    let config = Config::from_yaml_str(example, "docs/configuration.md").unwrap();
    assert_eq!(config.node.cpuset.unwrap().len().get(), 6);
    assert!(config.agents.iter().any(|agent| agent.wasm.is_some()));
    assert!(config.agents.iter().any(|agent| agent.kind.is_native()));
}

/// The `wasm:` section and `kind: wasm` agents: one case per class of bad value.
#[test]
fn invalid_wasm_values_name_field_value_and_reason() {
    let cases = [
        (
            "wasm: {agents_per_shard_max: 0}",
            "wasm.agents_per_shard_max = 0: must be a whole number of agents between 1 and 1000000",
        ),
        (
            "wasm: {agents_per_shard_max: 1000001}",
            "wasm.agents_per_shard_max = 1000001: must be a whole number of agents between 1 and 1000000",
        ),
        (
            "wasm: {memory_bytes_max: 32768}",
            "wasm.memory_bytes_max = 32768: must be a whole number of bytes between 65536 and 4294967296",
        ),
        (
            "wasm: {memory_bytes_max: 4295032832}",
            "wasm.memory_bytes_max = 4295032832: must be a whole number of bytes between 65536 and 4294967296",
        ),
        (
            "wasm: {memory_bytes_max: 100000}",
            "wasm.memory_bytes_max = 100000: must be a multiple of 65536 bytes (the WebAssembly page size)",
        ),
        ("wasm: {memory_bytes_max: null}", "wasm.memory_bytes_max = null: a value is required"),
        (
            "wasm: {memory_reservation_bytes: 8589999999}",
            "wasm.memory_reservation_bytes = 8589999999: must be a whole number of bytes between 65536 and 8589934592",
        ),
        (
            "wasm: {memory_reservation_bytes: 1000000}",
            "wasm.memory_reservation_bytes = 1000000: must be a multiple of 65536 bytes (the WebAssembly page size)",
        ),
        (
            "wasm: {memory_reservation_bytes: 8388608}",
            "wasm.memory_reservation_bytes = 8388608: must be at least wasm.memory_bytes_max (16777216)",
        ),
        (
            "wasm: {epoch_tick_us: 9}",
            "wasm.epoch_tick_us = 9: must be a whole number of microseconds between 10 and 100000",
        ),
        (
            "wasm: {epoch_tick_us: 100001}",
            "wasm.epoch_tick_us = 100001: must be a whole number of microseconds between 10 and 100000",
        ),
        ("wasm: {ticker_pace: slow}", "wasm.ticker_pace = slow: must be adaptive or fast"),
        ("wasm: {cache_dir: ''}", "wasm.cache_dir = : must be auto or a directory path"),
        (
            "wasm: {cache_dir: '~/.cache/dp'}",
            "wasm.cache_dir = ~/.cache/dp: `~` is not expanded here: write the full path",
        ),
        ("wasm: {profiling: perf}", "wasm.profiling = perf: must be none, perfmap or jitdump"),
        ("wasm: {profiling: null}", "wasm.profiling = null: a value is required"),
        (
            "wasm: {restart: {max_restarts: 1001}}",
            "wasm.restart.max_restarts = 1001: must be a whole number of restarts between 0 and 1000",
        ),
        (
            "wasm: {restart: {max_restarts: -1}}",
            "wasm.restart.max_restarts = -1: must be a whole number of restarts between 0 and 1000",
        ),
        (
            "wasm: {restart: {window_ms: 0}}",
            "wasm.restart.window_ms = 0: must be a whole number of milliseconds between 1 and 86400000",
        ),
        (
            "wasm: {restart: {backoff_initial_ms: 60001}}",
            "wasm.restart.backoff_initial_ms = 60001: must be a whole number of milliseconds between 1 and 60000",
        ),
        (
            "wasm: {restart: {backoff_max_ms: 600001}}",
            "wasm.restart.backoff_max_ms = 600001: must be a whole number of milliseconds between 1 and 600000",
        ),
        (
            "wasm: {restart: {backoff_initial_ms: 50, backoff_max_ms: 10}}",
            "wasm.restart.backoff_max_ms = 10: must be at least wasm.restart.backoff_initial_ms (50)",
        ),
        (
            "wasm: {agent_defaults: {memory_bytes_max: 0}}",
            "wasm.agent_defaults.memory_bytes_max = 0: must be a whole number of bytes between 65536 and 4294967296",
        ),
        (
            "wasm: {agent_defaults: {memory_bytes_max: 65537}}",
            "wasm.agent_defaults.memory_bytes_max = 65537: must be a multiple of 65536 bytes (the WebAssembly page size)",
        ),
        (
            "wasm: {agent_defaults: {memory_bytes_max: 33554432}}",
            "wasm.agent_defaults.memory_bytes_max = 33554432: must not exceed wasm.memory_bytes_max (16777216)",
        ),
        (
            "wasm: {agent_defaults: {time_per_message_ms: 0}}",
            "wasm.agent_defaults.time_per_message_ms = 0: must be a whole number of milliseconds between 1 and 60000",
        ),
        (
            "wasm: {agent_defaults: {message_bytes_max: 1048497}}",
            "wasm.agent_defaults.message_bytes_max = 1048497: must be a whole number of bytes between 0 and 1048496",
        ),
        (
            "wasm: {agent_defaults: {message_bytes_max: 65457}}",
            "wasm.agent_defaults.message_bytes_max = 65457: must not exceed shard.frame_bytes_max (65536) - 80 = 65456",
        ),
        (
            "shard: {frame_bytes_max: 4096}",
            "wasm.agent_defaults.message_bytes_max = 65456: must not exceed shard.frame_bytes_max (4096) - 80 = 4016",
        ),
        (
            "wasm: {agent_defaults: {sends_per_message_max: 0}}",
            "wasm.agent_defaults.sends_per_message_max = 0: must be a whole number of messages between 1 and 1000000",
        ),
        (
            "wasm: {agent_defaults: {sends_per_message_max: null}}",
            "wasm.agent_defaults.sends_per_message_max = null: a value is required",
        ),
        // Agents of kind wasm: the module is required and its syntax checked.
        (
            "agents: [{id: a, kind: wasm}]",
            "agents[0].module = null: is required for kind: wasm: a file path or builtin:NAME (e.g. builtin:echo)",
        ),
        (
            "agents: [{id: a, kind: echo}, {id: b, kind: wasm, module: null}]",
            "agents[1].module = null: is required for kind: wasm: a file path or builtin:NAME (e.g. builtin:echo)",
        ),
        (
            "agents: [{id: a, kind: wasm, module: 'builtin:Echo'}]",
            "agents[0].module = builtin:Echo: a built-in module name is 1 to 64 bytes of a-z 0-9 _ - (e.g. builtin:echo)",
        ),
        (
            "agents: [{id: a, kind: wasm, module: 'builtin:'}]",
            "agents[0].module = builtin:: a built-in module name is 1 to 64 bytes of a-z 0-9 _ - (e.g. builtin:echo)",
        ),
        (
            "agents: [{id: a, kind: wasm, module: ''}]",
            "agents[0].module = : must be a file path or builtin:NAME (e.g. builtin:echo)",
        ),
        // The wasm keys are refused for native kinds.
        (
            "agents: [{id: a, kind: echo, module: x.wasm}]",
            "agents[0].module = x.wasm: only for kind: wasm (this agent is kind: echo)",
        ),
        (
            "agents: [{id: a, kind: sink, config: hello}]",
            "agents[0].config = 5 bytes: only for kind: wasm (this agent is kind: sink)",
        ),
        (
            "agents: [{id: a, kind: counter, seed: 7}]",
            "agents[0].seed = 7: only for kind: wasm (this agent is kind: counter)",
        ),
        (
            "agents: [{id: a, kind: echo, limits: {time_per_message_ms: 5, sends_per_message_max: 2}}]",
            "agents[0].limits = {time_per_message_ms: 5, sends_per_message_max: 2}: only for kind: wasm (this agent is kind: echo)",
        ),
        (
            "agents: [{id: a, kind: echo, limits: {}}]",
            "agents[0].limits = {}: only for kind: wasm (this agent is kind: echo)",
        ),
        // Seed, config and per-agent limits.
        (
            "agents: [{id: a, kind: wasm, module: builtin:echo, seed: -1}]",
            "agents[0].seed = -1: must be a whole number between 0 and 18446744073709551615",
        ),
        (
            "agents: [{id: a, kind: wasm, module: builtin:echo, seed: 18446744073709551616}]",
            "agents[0].seed = 18446744073709551616: must be a whole number between 0 and 18446744073709551615",
        ),
        (
            "agents: [{id: a, kind: wasm, module: builtin:echo, config: hello, limits: {message_bytes_max: 4}}]",
            "agents[0].config = 5 bytes: must not exceed the agent's message_bytes_max (4 bytes)",
        ),
        (
            "agents: [{id: a, kind: wasm, module: builtin:echo, limits: {time_per_message_ms: 60001}}]",
            "agents[0].limits.time_per_message_ms = 60001: must be a whole number of milliseconds between 1 and 60000",
        ),
        (
            "agents: [{id: a, kind: wasm, module: builtin:echo, limits: {memory_bytes_max: 1000}}]",
            "agents[0].limits.memory_bytes_max = 1000: must be a whole number of bytes between 65536 and 4294967296",
        ),
        (
            "agents: [{id: a, kind: wasm, module: builtin:echo, limits: {sends_per_message_max: 1000001}}]",
            "agents[0].limits.sends_per_message_max = 1000001: must be a whole number of messages between 1 and 1000000",
        ),
        // Cross-checks of an agent's own limits.
        (
            "agents: [{id: a, kind: wasm, module: builtin:echo, limits: {memory_bytes_max: 33554432}}]",
            "agents[0].limits.memory_bytes_max = 33554432: must not exceed wasm.memory_bytes_max (16777216)",
        ),
        (
            "agents: [{id: a, kind: wasm, module: builtin:echo, limits: {message_bytes_max: 70000}}]",
            "agents[0].limits.message_bytes_max = 70000: must not exceed shard.frame_bytes_max (65536) - 80 = 65456",
        ),
        (
            "shard: {frame_bytes_max: 4096}\nwasm: {agent_defaults: {message_bytes_max: 4016}}\n\
             agents: [{id: a, kind: wasm, module: builtin:echo, limits: {message_bytes_max: 4017}}]",
            "agents[0].limits.message_bytes_max = 4017: must not exceed shard.frame_bytes_max (4096) - 80 = 4016",
        ),
        (
            "node: {shards: 1}\nwasm: {agents_per_shard_max: 1}\n\
             agents: [{id: a, kind: wasm, module: builtin:echo}, {id: b, kind: sink}, \
             {id: c, kind: wasm, module: builtin:echo}]",
            "agents = 2 wasm agents: more than wasm.agents_per_shard_max x node.shards = 1",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(invalid(text), expected, "input: {text}");
    }
}

#[test]
fn wasm_section_defaults_and_helpers() {
    let wasm = Config::embedded_default().wasm;
    assert_eq!(wasm.agents_per_shard_max.get(), 4_096);
    assert_eq!(wasm.memory_bytes_max, 16 << 20);
    assert_eq!(wasm.memory_reservation_bytes, None);
    assert_eq!(wasm.epoch_tick_us.get(), 500);
    assert_eq!(wasm.ticker_pace, TickerPace::Adaptive);
    assert_eq!(wasm.epoch_tick(), std::time::Duration::from_micros(500));
    assert_eq!(wasm.cache_dir, Some(CacheDir::Auto));
    assert_eq!(wasm.profiling, WasmProfiling::None);
    assert_eq!(
        wasm.pool_slots(std::num::NonZeroUsize::new(4).unwrap()),
        16_384
    );
    let restart = &wasm.restart;
    assert_eq!(restart.max_restarts, 5);
    assert_eq!(restart.window(), std::time::Duration::from_secs(60));
    assert_eq!(
        restart.backoff_initial(),
        std::time::Duration::from_millis(1)
    );
    assert_eq!(restart.backoff_max(), std::time::Duration::from_secs(1));
    let agent = &wasm.agent_defaults;
    assert_eq!(agent.memory_bytes_max, 16 << 20);
    assert_eq!(
        agent.time_per_message(),
        std::time::Duration::from_millis(10)
    );
    assert_eq!(agent.message_bytes_max, 65_536 - 80);
    assert_eq!(agent.sends_per_message_max.get(), 1024);

    // `auto` resolves from the environment (tested without it in types.rs): whatever
    // HOME and XDG_CACHE_HOME hold here, a resolved directory ends in dataplane/modules.
    if let Some(path) = wasm.cache_dir_path() {
        assert!(path.ends_with("dataplane/modules"), "{}", path.display());
    }

    // The edges of each range are accepted.
    let config = Config::from_yaml_str(
        "wasm:\n  agents_per_shard_max: 1000000\n  memory_bytes_max: 4294967296\n  \
         memory_reservation_bytes: 8589934592\n  epoch_tick_us: 10\n  ticker_pace: fast\n  \
         cache_dir: null\n  \
         profiling: jitdump\n  restart: {max_restarts: 0, window_ms: 86400000, \
         backoff_initial_ms: 60000, backoff_max_ms: 60000}\n  \
         agent_defaults: {memory_bytes_max: 4294967296, time_per_message_ms: 60000, \
         message_bytes_max: 0, sends_per_message_max: 1000000}\n",
        "edges",
    )
    .unwrap();
    let wasm = &config.wasm;
    assert_eq!(wasm.memory_reservation_bytes, Some(8 << 30));
    assert_eq!(wasm.cache_dir, None);
    assert_eq!(wasm.cache_dir_path(), None);
    assert_eq!(wasm.profiling, WasmProfiling::JitDump);
    assert_eq!(wasm.ticker_pace, TickerPace::Fast);
    assert_eq!(wasm.restart.max_restarts, 0);
    assert_eq!(wasm.agent_defaults.message_bytes_max, 0);
    assert_eq!(
        config.agents[0]
            .wasm
            .as_ref()
            .unwrap()
            .limits
            .memory_bytes_max,
        4 << 30
    );
    let config = Config::from_yaml_str(
        "shard: {frame_bytes_max: 64}\nwasm:\n  agent_defaults: {memory_bytes_max: 65536, \
         time_per_message_ms: 1, message_bytes_max: 0, sends_per_message_max: 1}\n  \
         memory_bytes_max: 65536\n  memory_reservation_bytes: 65536\n  epoch_tick_us: 100000\n",
        "edges",
    )
    .unwrap();
    assert_eq!(config.wasm.memory_reservation_bytes, Some(65_536));
}

#[test]
fn agent_limits_merge_over_the_defaults() {
    let config = Config::from_yaml_str(
        "wasm:\n  memory_bytes_max: 67108864\n  agent_defaults:\n    time_per_message_ms: 20\n    \
         sends_per_message_max: 10\n\
         agents:\n  \
         - {id: own, kind: wasm, module: builtin:counter, limits: {time_per_message_ms: 5, memory_bytes_max: 67108864}}\n  \
         - {id: inherits, kind: wasm, module: agents/x.wasm}\n  \
         - {id: nulls, kind: wasm, module: builtin:echo, limits: {time_per_message_ms: null}}\n  \
         - {id: native, kind: counter}\n",
        "merge",
    )
    .unwrap();
    let defaults = config.wasm.agent_defaults;
    assert_eq!(defaults.time_per_message_ms.get(), 20);
    assert_eq!(defaults.sends_per_message_max.get(), 10);
    assert_eq!(
        defaults.memory_bytes_max,
        16 << 20,
        "not set: limits default"
    );

    let own = config.agents[0].wasm.as_ref().unwrap();
    assert_eq!(own.module, ModuleSource::Builtin("counter".to_owned()));
    assert_eq!(own.limits.time_per_message_ms.get(), 5);
    assert_eq!(own.limits.memory_bytes_max, 64 << 20);
    assert_eq!(own.limits.sends_per_message_max.get(), 10, "inherited");
    assert_eq!(own.limits.message_bytes_max, 65_456, "inherited");

    let inherits = config.agents[1].wasm.as_ref().unwrap();
    assert_eq!(inherits.module, ModuleSource::File("agents/x.wasm".into()));
    assert_eq!(inherits.limits, defaults);
    let nulls = config.agents[2].wasm.as_ref().unwrap();
    assert_eq!(nulls.limits, defaults, "null inherits");

    assert_eq!(config.agents[3].kind, AgentKind::Counter);
    assert_eq!(config.agents[3].wasm, None);
}

#[test]
fn wasm_agent_optional_keys() {
    let config = Config::from_yaml_str(
        "agents:\n  \
         - {id: a, kind: wasm, module: builtin:pingpong, config: 'peer=b\nrounds=3', seed: 18446744073709551615}\n  \
         - {id: b, kind: wasm, module: 'builtin:echo-c', config: null, seed: null}\n  \
         - {id: c, kind: wasm, module: builtin:orderbook, config: 42}\n",
        "optional",
    )
    .unwrap();
    let spec = |index: usize| config.agents[index].wasm.clone().unwrap();
    assert_eq!(
        spec(0).config,
        "peer=b rounds=3",
        "a YAML flow scalar folds the line"
    );
    assert_eq!(spec(0).seed, Some(u64::MAX));
    assert_eq!(spec(1).module, ModuleSource::Builtin("echo-c".to_owned()));
    assert_eq!((spec(1).config.as_str(), spec(1).seed), ("", None));
    assert_eq!(spec(2).config, "42", "a number is kept as its text");

    // A config of exactly message_bytes_max bytes is accepted.
    let text = format!(
        "agents: [{{id: a, kind: wasm, module: builtin:echo, config: {}, limits: {{message_bytes_max: 8}}}}]",
        "x".repeat(8)
    );
    assert_eq!(
        Config::from_yaml_str(&text, "t").unwrap().agents[0]
            .wasm
            .as_ref()
            .unwrap()
            .config
            .len(),
        8
    );
}

#[test]
fn round_trip_of_wasm_agents_and_settings() {
    let text = "\
wasm:
  memory_bytes_max: 33554432
  memory_reservation_bytes: 33554432
  cache_dir: /var/cache/dataplane
  profiling: perfmap
  restart: {max_restarts: 0}
agents:
  - {id: a, kind: wasm, module: 'builtin:echo-c', config: \"multi\\nline: yes # no comment\", seed: 0}
  - {id: b, kind: wasm, module: '/opt/agents/my agent.wasm', config: 'true', limits: {memory_bytes_max: 33554432}}
  - {id: c, kind: wasm, module: ./auto, config: '123'}
  - {id: d, kind: wasm, module: 'builtin:x', config: 'null'}
  - {id: e, kind: sink}
";
    let config = Config::from_yaml_str(text, "t").unwrap();
    assert_eq!(
        config.agents[0].wasm.as_ref().unwrap().config,
        "multi\nline: yes # no comment"
    );
    let shown = config.to_yaml();
    assert_eq!(
        Config::from_yaml_str(&shown, "shown").unwrap(),
        config,
        "{shown}"
    );

    // `config show` prints `auto` and `null` as such, and the echo agent in the file's terms.
    let default = Config::embedded_default();
    let shown = default.to_yaml();
    for line in [
        "cache_dir: auto",
        "memory_reservation_bytes: null",
        "profiling: none",
        "kind: wasm",
        "module: builtin:echo",
    ] {
        assert!(shown.contains(line), "{line} missing from:\n{shown}");
    }
    assert!(!shown.contains("seed"), "{shown}");
    let no_cache = Config::from_yaml_str("wasm: {cache_dir: null}", "t").unwrap();
    let shown = no_cache.to_yaml();
    assert!(shown.contains("cache_dir: null"), "{shown}");
    assert_eq!(Config::from_yaml_str(&shown, "shown").unwrap(), no_cache);
}

/// A file that writes every key, as an operator might.
#[test]
fn full_example_file() {
    let text = "\
node:
  shards: 4
  cpuset: 0-3
  idle: park
  memlock_bytes_min: 16777216
  io_memory_bytes: 2097152
shard:
  ring_capacity_frames: 2048
  mailbox_capacity_frames: 512
  frame_pool_frames_max: 131072
  frame_bytes_max: 131072
  poll_budget_messages: 128
  ring_batch_frames: 32
  starvation_limit_passes: 16
  agents_max: 50000
  stall_threshold_us: 250
wasm:
  agents_per_shard_max: 20000
  memory_bytes_max: 67108864
  memory_reservation_bytes: 67108864
  epoch_tick_us: 250
  cache_dir: /var/cache/dataplane/modules
  profiling: perfmap
  restart:
    max_restarts: 3
    window_ms: 10000
    backoff_initial_ms: 5
    backoff_max_ms: 500
  agent_defaults:
    memory_bytes_max: 8388608
    time_per_message_ms: 5
    message_bytes_max: 130000
    sends_per_message_max: 64
agents:
  - id: echo
    kind: wasm
    module: builtin:echo
  - id: book
    kind: wasm
    module: /opt/dataplane/orderbook.wasm
    config: |
      symbol=ACME
      depth=10
    seed: 42
    limits:
      memory_bytes_max: 67108864
      time_per_message_ms: 50
      message_bytes_max: 130992
      sends_per_message_max: 1000
  - id: drop
    kind: sink
admin:
  listen: 0.0.0.0:9100
log:
  level: info,dataplane=debug
";
    let config = Config::from_yaml_str(text, "full.yaml").unwrap();
    let wasm = &config.wasm;
    assert_eq!(wasm.agents_per_shard_max.get(), 20_000);
    assert_eq!(wasm.memory_reservation_bytes, Some(64 << 20));
    assert_eq!(wasm.epoch_tick_us.get(), 250);
    assert_eq!(
        wasm.cache_dir_path(),
        Some("/var/cache/dataplane/modules".into())
    );
    assert_eq!(wasm.profiling, WasmProfiling::PerfMap);
    assert_eq!(wasm.restart.max_restarts, 3);
    assert_eq!(wasm.restart.backoff_max_ms.get(), 500);
    assert_eq!(wasm.agent_defaults.message_bytes_max, 130_000);
    assert_eq!(config.agents.len(), 3);
    let echo = config.agents[0].wasm.as_ref().unwrap();
    assert_eq!(echo.limits, wasm.agent_defaults);
    let book = config.agents[1].wasm.as_ref().unwrap();
    assert_eq!(
        book.module,
        ModuleSource::File("/opt/dataplane/orderbook.wasm".into())
    );
    assert_eq!(book.config, "symbol=ACME\ndepth=10\n");
    assert_eq!(book.seed, Some(42));
    assert_eq!(book.limits.memory_bytes_max, 64 << 20);
    assert_eq!(book.limits.time_per_message().as_millis(), 50);
    assert_eq!(
        book.limits.message_bytes_max, 130_992,
        "frame_bytes_max - 80"
    );
    assert_eq!(book.limits.sends_per_message_max.get(), 1000);
    assert_eq!(config.agents[2].kind, AgentKind::Sink);
    assert_eq!(config.agents[2].wasm, None);
    assert_eq!(
        Config::from_yaml_str(&config.to_yaml(), "shown").unwrap(),
        config
    );
}

#[test]
fn wasm_flags_parse_through_clap() {
    let cli = Cli::try_parse_from([
        "dataplane",
        "--agents-per-shard-max",
        "7",
        "--wasm-cache-dir",
        "auto",
        "--wasm-profiling",
        "jitdump",
    ])
    .unwrap();
    let config = Config::load(None, &cli.overrides).unwrap();
    assert_eq!(config.wasm.agents_per_shard_max.get(), 7);
    assert_eq!(config.wasm.cache_dir, Some(CacheDir::Auto));
    assert_eq!(config.wasm.profiling, WasmProfiling::JitDump);

    let cli = Cli::try_parse_from(["dataplane", "--wasm-profiling", "perfmap"]).unwrap();
    assert_eq!(cli.overrides.wasm_profiling, Some(WasmProfiling::PerfMap));
    let cli = Cli::try_parse_from(["dataplane", "--wasm-cache-disabled"]).unwrap();
    assert_eq!(
        Config::load(None, &cli.overrides).unwrap().wasm.cache_dir,
        None
    );

    for bad in [
        ["--wasm-profiling", "perf-map"],
        ["--wasm-cache-dir", ""],
        ["--wasm-cache-dir", "~/x"],
        ["--agents-per-shard-max", "x"],
    ] {
        let error = Cli::try_parse_from(["dataplane", bad[0], bad[1]]).unwrap_err();
        assert!(error.to_string().contains(bad[0]), "{error}");
    }
    assert!(Cli::try_parse_from([
        "dataplane",
        "--wasm-cache-disabled",
        "--wasm-cache-dir",
        "/tmp/x"
    ])
    .is_err());
    // Out of range values pass clap and are refused by validation, naming the field.
    let cli = Cli::try_parse_from(["dataplane", "--agents-per-shard-max", "0"]).unwrap();
    assert_eq!(
        Config::load(None, &cli.overrides).unwrap_err().to_string(),
        "wasm.agents_per_shard_max = 0: must be a whole number of agents between 1 and 1000000"
    );
}
