//! The admin endpoint as an operator uses it: a real node (`dataplane run`, two parked
//! shards, the admin endpoint on a free loopback port), driven by the binary's own client
//! subcommands (`agents`, `deploy`, `swap`, `undeploy`) and by plain HTTP for the rest:
//! deploy, duplicate, invalid modules named in the error, hot swap, a failed swap that
//! leaves the old code running, undeploy, bad requests, metrics; then SIGTERM, exit 0.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dataplane::admin::api::AgentInfo;

/// How long a node may take to print "node ready".
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A minimal valid agent in WebAssembly text: two pages of memory, the inbox at 64 KiB.
const NOOP_WAT: &str = r#"(module
  (memory (export "memory") 2)
  (func (export "dp_inbox") (param i32) (result i32) (i32.const 65536))
  (func (export "dp_init") (param i32) (result i32) (i32.const 0))
  (func (export "dp_on_message") (param i32) (result i32) (i32.const 0)))"#;

/// Imports a function the host does not provide.
const UNKNOWN_IMPORT_WAT: &str = r#"(module
  (import "env" "launch_missiles" (func (param i64) (result i32)))
  (memory (export "memory") 2)
  (func (export "dp_inbox") (param i32) (result i32) (i32.const 65536))
  (func (export "dp_init") (param i32) (result i32) (i32.const 0))
  (func (export "dp_on_message") (param i32) (result i32) (i32.const 0)))"#;

/// Valid, but refuses to start.
const INIT_FAILS_WAT: &str = r#"(module
  (memory (export "memory") 2)
  (func (export "dp_inbox") (param i32) (result i32) (i32.const 65536))
  (func (export "dp_init") (param i32) (result i32) (i32.const 7))
  (func (export "dp_on_message") (param i32) (result i32) (i32.const 0)))"#;

/// A directory of its own in the temp directory, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("dataplane-admin-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir is writable");
        TempDir(path)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("temp dir is writable");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running node; killed if the test fails before stopping it.
struct RunningNode {
    child: Child,
    admin: String,
    lines: mpsc::Receiver<String>,
}

impl RunningNode {
    fn start(cache: &TempDir) -> RunningNode {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .args([
                "run",
                "--shards",
                "2",
                "--idle",
                "park",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env_remove("RUST_LOG")
            .env("XDG_CACHE_HOME", &cache.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the dataplane binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = RunningNode {
            child,
            admin: String::new(),
            lines,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = node
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no \"node ready\" in {seen:?}"));
            if let Some(url) = line.strip_prefix("admin: listening on http://") {
                node.admin = url.trim().to_owned();
            }
            if line.starts_with("node ready") {
                break;
            }
            seen.push(line);
        }
        assert!(!node.admin.is_empty(), "admin address printed: {seen:?}");
        node
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Runs `dataplane ARGS --admin ADDR` from `dir`.
    fn cli(&self, dir: &TempDir, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .args(args)
            .args(["--admin", &self.admin])
            .current_dir(&dir.0)
            .env_remove("RUST_LOG")
            .output()
            .expect("the dataplane binary runs")
    }

    fn agents(&self) -> Vec<AgentInfo> {
        let (status, body) = http(&self.url("/agents"), "GET", None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("a JSON list of agents")
    }

    fn agent(&self, name: &str) -> Option<AgentInfo> {
        self.agents().into_iter().find(|agent| agent.id == name)
    }

    fn terminate(mut self) -> Vec<String> {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not stop within {STOP_TIMEOUT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "exit status {status}");
        self.lines.try_iter().collect()
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request; the status and body, whatever the status.
fn http(url: &str, method: &str, body: Option<&str>) -> (u16, String) {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let response = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        ("POST", Some(body)) => agent.post(url).send(body),
        ("PUT", Some(body)) => agent.put(url).send(body),
        _ => panic!("unsupported {method}"),
    };
    let mut response = response.unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("a text answer");
    (status, body)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `output` failed and that its error says `expected`.
fn assert_fails_with(output: &Output, expected: &str) {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "should fail with {expected:?}; stdout: {}",
        text(&output.stdout)
    );
    assert!(
        stderr.contains(expected),
        "{expected:?} not in stderr: {stderr}"
    );
}

fn assert_succeeds(output: &Output) -> String {
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
fn deploy_swap_undeploy_through_the_admin_endpoint() {
    let dir = TempDir::new("work");
    let node = RunningNode::start(&dir);

    // The configured echo is listed, by name, with its module.
    let table = assert_succeeds(&node.cli(&dir, &["agents"]));
    assert!(table.starts_with("ID"), "{table}");
    let echo = node.agent("echo").expect("echo is listed");
    assert_eq!(echo.state, "running");
    assert_eq!(echo.module.as_deref(), Some("builtin:echo"));
    assert!(
        table.lines().any(|line| line.starts_with("echo ")),
        "{table}"
    );

    // Deploy, then the same id again.
    let deployed = assert_succeeds(&node.cli(
        &dir,
        &[
            "deploy",
            "--id",
            "counter",
            "--module",
            "builtin:counter",
            "--seed",
            "1",
        ],
    ));
    assert!(deployed.starts_with("deployed counter"), "{deployed}");
    let counter = node.agent("counter").expect("counter is listed");
    assert_eq!(counter.state, "running");
    assert_eq!(counter.module.as_deref(), Some("builtin:counter"));
    assert_fails_with(
        &node.cli(
            &dir,
            &["deploy", "--id", "counter", "--module", "builtin:counter"],
        ),
        "agent counter",
    );
    assert_fails_with(
        &node.cli(
            &dir,
            &["deploy", "--id", "counter", "--module", "builtin:counter"],
        ),
        "is already deployed",
    );

    // A relative module path, made absolute by the client.
    dir.file("noop.wat", NOOP_WAT.as_bytes());
    let deployed =
        assert_succeeds(&node.cli(&dir, &["deploy", "--id", "noop", "--module", "noop.wat"]));
    let absolute = dir.0.join("noop.wat");
    assert!(
        deployed.contains(absolute.to_str().expect("UTF-8 path")),
        "{deployed}"
    );

    // Modules the host refuses, named in the error.
    let garbage = dir.file("garbage.wasm", b"\0asm this is not a module");
    let garbage = garbage.to_str().expect("UTF-8 path");
    let output = node.cli(&dir, &["deploy", "--id", "bad", "--module", garbage]);
    assert_fails_with(&output, "module garbage is not valid WebAssembly");
    let unknown = dir.file("unknown_import.wat", UNKNOWN_IMPORT_WAT.as_bytes());
    let output = node.cli(
        &dir,
        &[
            "deploy",
            "--id",
            "bad",
            "--module",
            unknown.to_str().expect("UTF-8"),
        ],
    );
    assert_fails_with(&output, "env.launch_missiles");
    let output = node.cli(&dir, &["deploy", "--id", "bad", "--module", "builtin:nope"]);
    assert_fails_with(&output, "no built-in module \"nope\"");
    assert_fails_with(
        &node.cli(
            &dir,
            &["deploy", "--id", "bad", "--module", "/no/such/file.wasm"],
        ),
        "/no/such/file.wasm",
    );
    // Limits are checked with the configuration's bounds.
    assert_fails_with(
        &node.cli(
            &dir,
            &[
                "deploy",
                "--id",
                "bad",
                "--module",
                "builtin:echo",
                "--memory-bytes-max",
                "1000",
            ],
        ),
        "limits.memory_bytes_max = 1000",
    );
    assert!(node.agent("bad").is_none(), "nothing refused was deployed");

    // Hot swap: same id, new module.
    let swapped = assert_succeeds(&node.cli(
        &dir,
        &["swap", "--id", "echo", "--module", "builtin:echo-c"],
    ));
    assert!(swapped.starts_with("swapped echo"), "{swapped}");
    let echo = node.agent("echo").expect("echo is still listed");
    assert_eq!(echo.state, "running");
    assert_eq!(echo.module.as_deref(), Some("builtin:echo-c"));

    // Failed swaps: the old code keeps running.
    assert_fails_with(
        &node.cli(&dir, &["swap", "--id", "echo", "--module", garbage]),
        "not valid WebAssembly",
    );
    let init_fails = dir.file("init_fails.wat", INIT_FAILS_WAT.as_bytes());
    assert_fails_with(
        &node.cli(
            &dir,
            &[
                "swap",
                "--id",
                "echo",
                "--module",
                init_fails.to_str().expect("UTF-8"),
            ],
        ),
        "dp_init returned 7",
    );
    let echo = node.agent("echo").expect("echo is still listed");
    assert_eq!(echo.state, "running");
    assert_eq!(echo.module.as_deref(), Some("builtin:echo-c"));
    assert_fails_with(
        &node.cli(&dir, &["swap", "--id", "ghost", "--module", "builtin:echo"]),
        "agent ghost",
    );

    // Undeploy.
    let undeployed = assert_succeeds(&node.cli(&dir, &["undeploy", "--id", "counter"]));
    assert!(undeployed.starts_with("undeployed counter"), "{undeployed}");
    assert!(node.agent("counter").is_none(), "counter is gone");
    assert_fails_with(
        &node.cli(&dir, &["undeploy", "--id", "counter"]),
        "is not deployed",
    );

    // Plain HTTP: health, metrics, bad requests.
    let (status, _) = http(&node.url("/health"), "GET", None);
    assert_eq!(status, 200);
    let (status, metrics) = http(&node.url("/metrics"), "GET", None);
    assert_eq!(status, 200);
    for name in [
        "dataplane_messages_handled_total{shard=\"0\"}",
        "dataplane_messages_handled_total{shard=\"1\"}",
        "dataplane_agents{shard=\"1\"}",
        "dataplane_shard_parks_total",
    ] {
        assert!(metrics.contains(name), "{name} not in {metrics}");
    }
    let agents_url = node.url("/agents");
    for (body, status, expected) in [
        ("{", 400, "invalid request body"),
        (
            r#"{"id":"x","module":"builtin:echo","mdule":1}"#,
            400,
            "unknown field `mdule`",
        ),
        (r#"{"module":"builtin:echo"}"#, 400, "id: required"),
        (r#"{"id":"x","module":"rel/x.wasm"}"#, 400, "absolute path"),
    ] {
        let (got, answer) = http(&agents_url, "POST", Some(body));
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer.contains(expected), "{body}: {answer}");
    }
    let huge = format!(
        r#"{{"id":"x","module":"builtin:echo","config":"{}"}}"#,
        "a".repeat(2 << 20)
    );
    let (status, answer) = http(&agents_url, "POST", Some(&huge));
    assert_eq!(status, 413, "{answer}");
    let (status, _) = http(&node.url("/nope"), "GET", None);
    assert_eq!(status, 404);
    let (status, _) = http(&node.url("/agents/echo"), "POST", Some("{}"));
    assert_eq!(status, 405);
    let (status, answer) = http(&node.url("/agents/echo"), "GET", None);
    assert_eq!(status, 200, "{answer}");

    // The node is still healthy after all that, and stops cleanly.
    assert_eq!(
        node.agent("echo").map(|echo| echo.state),
        Some("running".into())
    );
    let rest = node.terminate();
    assert!(
        rest.iter().any(|line| line.contains("backpressure")),
        "per-shard stats printed: {rest:?}"
    );
}

#[test]
fn the_client_names_an_unreachable_endpoint() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let output = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(["agents", "--admin", &format!("127.0.0.1:{port}")])
        .output()
        .expect("the dataplane binary runs");
    assert_fails_with(&output, "cannot reach the admin endpoint");
}

#[test]
fn the_client_commands_have_help() {
    for command in ["agents", "deploy", "swap", "undeploy"] {
        let output = Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .args([command, "--help"])
            .output()
            .expect("the dataplane binary runs");
        let help = assert_succeeds(&output);
        assert!(help.contains("--admin"), "{command}: {help}");
        assert!(help.contains("127.0.0.1:9090"), "{command}: {help}");
    }
}
