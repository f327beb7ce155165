#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script):
#
#   1. tools/setup.sh                 packages, limits (idempotent)
#   2. cargo fmt --check              formatting (rustfmt.toml)
#   3. cargo clippy -D warnings       lints (Cargo.toml [workspace.lints], clippy.toml)
#   4. cargo test --workspace --profile ci  unit, property, simulation and end-to-end tests
#                                     (release optimisation, no LTO: Cargo.toml [profile.ci])
#   5. cargo fuzz, 30 s per target    frame validation and the edge's frame reader under
#                                     libFuzzer (needs nightly)
#   6. loom models of the ring        --cfg loom, own target dir
#
# Plain `cargo test` (not nextest): it runs test binaries one after another, and the tests
# that start a node pin two shards to cores 0-1, so they must never overlap with another
# binary's node. Inside one binary they take turns through a mutex.
#
# Exits non-zero on the first failure. Environment:
#   CARGO_TARGET_DIR    build directory (default: ./target); fuzz and loom use subfolders
#   FUZZ_SECONDS        fuzz smoke length (default 30; 0 skips it)
#   SKIP_SETUP=1        do not run tools/setup.sh (e.g. without root, already set up)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
fuzz_seconds="${FUZZ_SECONDS:-30}"

summary=()
current_step=""
step_started=0
start_step() {
    current_step="$1"
    step_started=$SECONDS
    echo
    echo "==> $current_step"
}
end_step() {
    local result="$1"
    summary+=("$(printf '%-34s %-8s %4ds' "$current_step" "$result" $((SECONDS - step_started)))")
    current_step=""
}
print_summary() {
    echo
    echo "==> summary (target dir: $CARGO_TARGET_DIR)"
    local line
    for line in "${summary[@]}"; do echo "    $line"; done
}
on_exit() {
    local code=$?
    if [ -n "$current_step" ]; then
        end_step "FAILED"
    fi
    print_summary
    if [ "$code" -ne 0 ]; then
        echo "==> FAILED (exit $code)"
    else
        echo "==> all steps passed in $((SECONDS / 60))m$((SECONDS % 60))s"
    fi
}
trap on_exit EXIT

# 1. Machine set-up.
start_step "setup"
if [ "${SKIP_SETUP:-0}" = 1 ]; then
    echo "SKIP_SETUP=1: not running tools/setup.sh"
    end_step "skipped"
else
    bash tools/setup.sh
    end_step "ok"
fi

# 2. Formatting.
start_step "cargo fmt --check"
if ! cargo fmt --all -- --check; then
    echo "Not formatted: run 'cargo fmt --all' (or 'cargo fmt -p CRATE') and commit the result."
    exit 1
fi
end_step "ok"

# 3. Lints: every target (tests, examples, benches) of every crate.
start_step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
end_step "ok"

# 4. The test suite, release build: the end-to-end tests move 1M messages through pinned
# shards; measured on 2 cores, release builds in ~4 min and runs everything in ~15 s, while a
# debug build (~2 min) did not get through them in 4 min (the 120 s deadlines ran out).
start_step "cargo test --workspace --profile ci"
cargo test --workspace --profile ci --locked
end_step "ok"

# 5. Fuzz smoke: libFuzzer on frame validation and on the edge's stream frame reader,
# seeded from the committed seeds.
fuzz_reason=""
if [ "$fuzz_seconds" = 0 ]; then
    fuzz_reason="FUZZ_SECONDS=0"
elif ! cargo +nightly --version >/dev/null 2>&1; then
    fuzz_reason="no nightly toolchain (cargo +nightly)"
elif ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found: cargo install cargo-fuzz --locked"
    if ! cargo install cargo-fuzz --locked --quiet; then
        fuzz_reason="cargo install cargo-fuzz failed"
    fi
fi
for target in "shards/frame validate" "shards/edge reader"; do
    set -- $target
    crate_dir="$1"
    fuzz_target="$2"
    start_step "fuzz smoke: $fuzz_target (${fuzz_seconds}s)"
    if [ -n "$fuzz_reason" ]; then
        echo "SKIPPED: $fuzz_reason"
        end_step "skipped"
        continue
    fi
    fuzz_corpus="$CARGO_TARGET_DIR/fuzz/corpus/$fuzz_target"
    mkdir -p "$fuzz_corpus"
    (
        cd "$crate_dir"
        # New inputs go to the first corpus folder (in the target dir, not the tree); the
        # committed seeds are read only.
        cargo +nightly fuzz run --target-dir "$CARGO_TARGET_DIR/fuzz" "$fuzz_target" \
            "$fuzz_corpus" "fuzz/seeds/$fuzz_target" -- -max_total_time="$fuzz_seconds"
    )
    end_step "ok"
done

# 6. Loom: exhaustive interleavings of the ring's atomics. A different cfg rebuilds
# everything, so it gets its own target dir and does not evict the main build.
start_step "loom models of the ring"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$CARGO_TARGET_DIR/loom" \
    cargo test -p dataplane-ring --release --locked --lib loom
end_step "ok"
