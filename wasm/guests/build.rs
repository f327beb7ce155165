//! Builds the guest modules into `OUT_DIR`: the Rust SDK as an rlib, then every example
//! agent of `wasm/examples` (Rust with Debian's `rustc`, which has the
//! `wasm32-unknown-unknown` standard library that rustup's toolchain lacks here; C with
//! `clang-14` and `wasm-ld`). The examples are dependency-free single files, so no cargo
//! is involved: each is one compiler invocation, all run in parallel.
//!
//! Overrides: `DATAPLANE_GUEST_RUSTC` (default `/usr/bin/rustc`) and `DATAPLANE_GUEST_CC`
//! (default `clang-14`).

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Rust examples: `wasm/examples/rust/<name>.rs` -> `<name>_rust.wasm`.
const RUST_EXAMPLES: [&str; 5] = ["echo", "counter", "pingpong", "orderbook", "fragile"];
/// C examples: `wasm/examples/c/<name>.c` -> `<name>_c.wasm`.
const C_EXAMPLES: [&str; 3] = ["echo", "counter", "pingpong"];

const TARGET: &str = "wasm32-unknown-unknown";
/// Linear-memory stack of every module: 64 KiB (one page; Rust's default is 1 MiB). The
/// examples need little, and with the stack first an overflow traps instead of
/// overwriting static data.
const STACK_BYTES: u32 = 65536;

const HINT: &str = "the guest toolchains are missing. Install them with `bash tools/setup.sh` \
                    (as root), or `apt-get install -y rustc libstd-rust-dev-wasm32 clang-14 \
                    lld-14`; or point DATAPLANE_GUEST_RUSTC / DATAPLANE_GUEST_CC at a rustc \
                    with the wasm32-unknown-unknown target and a clang with wasm-ld";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wasm = manifest_dir
        .parent()
        .expect("wasm/guests has a parent")
        .to_path_buf();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    let sdk_rust = wasm.join("sdk/rust/dataplane_agent.rs");
    let sdk_c = wasm.join("sdk/c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", sdk_rust.display());
    println!(
        "cargo:rerun-if-changed={}",
        sdk_c.join("dataplane.h").display()
    );
    println!("cargo:rerun-if-env-changed=DATAPLANE_GUEST_RUSTC");
    println!("cargo:rerun-if-env-changed=DATAPLANE_GUEST_CC");
    let rust_sources: Vec<PathBuf> = RUST_EXAMPLES
        .iter()
        .map(|name| wasm.join(format!("examples/rust/{name}.rs")))
        .collect();
    let c_sources: Vec<PathBuf> = C_EXAMPLES
        .iter()
        .map(|name| wasm.join(format!("examples/c/{name}.c")))
        .collect();
    for source in rust_sources.iter().chain(&c_sources) {
        println!("cargo:rerun-if-changed={}", source.display());
    }

    let rustc = env::var_os("DATAPLANE_GUEST_RUSTC").unwrap_or_else(|| "/usr/bin/rustc".into());
    let cc = env::var_os("DATAPLANE_GUEST_CC").unwrap_or_else(|| "clang-14".into());
    check_rustc(&rustc);
    check_cc(&cc, &out);

    // The SDK first: every Rust example links it.
    let rlib = out.join("libdataplane_agent.rlib");
    let mut sdk = Command::new(&rustc);
    sdk.args(["--edition", "2021", "--crate-type", "rlib"])
        .args(["--crate-name", "dataplane_agent", "--target", TARGET])
        .args(rust_codegen_flags())
        .arg("-o")
        .arg(&rlib)
        .arg(&sdk_rust);
    finish("the Rust SDK", spawn(&mut sdk, &rustc));

    // Then all examples at once.
    let mut jobs: Vec<(String, Child)> = Vec::new();
    for (name, source) in RUST_EXAMPLES.iter().zip(&rust_sources) {
        let mut command = Command::new(&rustc);
        command
            .args(["--edition", "2021", "--crate-type", "cdylib"])
            .args(["--crate-name", name, "--target", TARGET])
            .args(rust_codegen_flags())
            .args(["-C", "lto", "-C", "strip=debuginfo"])
            .arg("-C")
            .arg(format!("link-arg=-zstack-size={STACK_BYTES}"))
            .arg("-L")
            .arg(&out)
            .arg("--extern")
            .arg(format!("dataplane_agent={}", rlib.display()))
            .arg("-o")
            .arg(out.join(format!("{name}_rust.wasm")))
            .arg(source);
        jobs.push((format!("{name}.rs"), spawn(&mut command, &rustc)));
    }
    for (name, source) in C_EXAMPLES.iter().zip(&c_sources) {
        let mut command = Command::new(&cc);
        command
            .arg(format!("--target={TARGET}"))
            .args([
                "-O2",
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-nostdlib",
                "-mbulk-memory",
            ])
            .args(["-Wl,--no-entry", "-Wl,--stack-first", "-Wl,--strip-debug"])
            .arg(format!("-Wl,-z,stack-size={STACK_BYTES}"))
            .arg("-I")
            .arg(&sdk_c)
            .arg("-o")
            .arg(out.join(format!("{name}_c.wasm")))
            .arg(source);
        jobs.push((format!("{name}.c"), spawn(&mut command, &cc)));
    }
    let failures: Vec<String> = jobs
        .into_iter()
        .filter_map(|(what, child)| failure(&what, child))
        .collect();
    if !failures.is_empty() {
        panic!(
            "building the guest modules failed:\n{}\nIf a tool is missing: {HINT}",
            failures.join("\n")
        );
    }
}

/// Code generation shared by the SDK and the Rust examples: fast code, aborting panics
/// (wasm has no unwinding), and bulk-memory instructions (`memory.copy`/`memory.fill`
/// for copies; the host enables the feature).
fn rust_codegen_flags() -> [&'static str; 8] {
    [
        "-C",
        "opt-level=3",
        "-C",
        "panic=abort",
        "-C",
        "codegen-units=1",
        "-C",
        "target-feature=+bulk-memory",
    ]
}

/// Starts `command`, or panics with the installation hint if `program` cannot be run.
fn spawn(command: &mut Command, program: &OsString) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {}: {error}; {HINT}",
                Path::new(program).display()
            )
        })
}

/// Waits for `child`; the report if it failed.
fn failure(what: &str, child: Child) -> Option<String> {
    match child.wait_with_output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!("{what}: {}\n{}", output.status, text(&output))),
        Err(error) => Some(format!("{what}: {error}")),
    }
}

/// Waits for `child`, panicking if it failed.
fn finish(what: &str, child: Child) {
    if let Some(report) = failure(what, child) {
        panic!("building {report}");
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `program args` to completion; `None` if it cannot be run or fails.
fn probe(program: &OsString, args: &[&str]) -> Option<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
}

/// `rustc` must run and have the wasm32-unknown-unknown standard library (Debian package
/// `libstd-rust-dev-wasm32`).
fn check_rustc(rustc: &OsString) {
    let shown = Path::new(rustc).display();
    if probe(rustc, &["--version"]).is_none() {
        panic!("cannot run {shown} (the guest Rust compiler); {HINT}");
    }
    let libdir = probe(rustc, &["--print", "target-libdir", "--target", TARGET])
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let has_core = libdir
        .as_deref()
        .and_then(|dir| dir.read_dir().ok())
        .map(|entries| {
            entries.flatten().any(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libcore-") && name.ends_with(".rlib")
            })
        })
        .unwrap_or(false);
    if !has_core {
        panic!("{shown} has no {TARGET} standard library (Debian: libstd-rust-dev-wasm32); {HINT}");
    }
}

/// `clang` must run and link a wasm module (`wasm-ld`, Debian package `lld-14`): tried on a
/// one-line C file.
fn check_cc(cc: &OsString, out: &Path) {
    let shown = Path::new(cc).display();
    if probe(cc, &["--version"]).is_none() {
        panic!("cannot run {shown} (the guest C compiler); {HINT}");
    }
    let source = out.join("probe.c");
    std::fs::write(
        &source,
        "__attribute__((export_name(\"probe\"))) int probe(void) { return 0; }\n",
    )
    .expect("OUT_DIR is writable");
    let output = Command::new(cc)
        .arg(format!("--target={TARGET}"))
        .args(["-nostdlib", "-Wl,--no-entry", "-o"])
        .arg(out.join("probe.wasm"))
        .arg(&source)
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "{shown} cannot build a wasm module (is wasm-ld there? Debian: lld-14): {}\n{HINT}",
            text(&output)
        ),
        Err(error) => panic!("cannot run {shown}: {error}; {HINT}"),
    }
}
