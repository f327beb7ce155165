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
    assert_eq!(config.agents[0].kind, AgentKind::Echo);
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
    for (value, bounds) in pairs {
        assert_eq!(value, bounds.default, "{bounds:?}");
    }
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
        admin_listen: Some("0.0.0.0:9100".parse().unwrap()),
        admin_disabled: false,
        log_level: Some("debug".to_owned()),
    }
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

    let off = Overrides {
        admin_disabled: true,
        ..Overrides::default()
    };
    assert_eq!(Config::load(None, &off).unwrap().admin.listen, None);
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
        ("agents: [{id: a, kind: wasm}]", "agents[0].kind = wasm: must be one of echo, sink, counter"),
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

    let (_, _, message) = parse_error("agents: [{id: a, kind: echo, module: x.wasm}]\n");
    assert!(message.contains("unknown field `module`"), "{message}");
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
        if arg.get_long() == Some("admin-disabled") {
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
    assert_eq!(checked, 16);
}

/// docs/configuration.md documents every key of the embedded default.
#[test]
fn configuration_doc_lists_every_field() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let default = serde_json::to_value(Config::embedded_default()).unwrap();
    let mut paths = Vec::new();
    for (section, fields) in default.as_object().unwrap() {
        match fields {
            serde_json::Value::Object(fields) => {
                paths.extend(fields.keys().map(|key| format!("{section}.{key}")));
            }
            _ => paths.push(section.clone()),
        }
    }
    paths.extend(["agents[].id".to_owned(), "agents[].kind".to_owned()]);
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
}
