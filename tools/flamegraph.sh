#!/usr/bin/env bash
# Profile a command and render a flame graph (SVG).
#
#   bash tools/flamegraph.sh [-o OUT.svg] [-F HZ] -- COMMAND [ARGS...]
#
# Example: the cross-shard bench for 5 seconds, release build:
#   cargo build --release -p dataplane
#   bash tools/flamegraph.sh -o cross-shard.svg -- \
#       target/release/dataplane bench cross-shard --seconds 5
#
# How: `perf record -e cpu-clock -F 999 -g --call-graph dwarf` (software sampling: this VM
# exposes no hardware counters), then `perf script | inferno-collapse-perf |
# inferno-flamegraph`. Release builds keep line tables (Cargo.toml: debug =
# "line-tables-only"), enough for function names; dwarf unwinding needs no frame pointers.
# DWARF stacks are large (about 8 KiB per sample): keep runs to seconds, not minutes.
#
# Needs perf (`bash tools/setup.sh --profiling` installs linux-perf) and inferno (installed
# here with `cargo install inferno --locked` when missing). Run as root, or lower
# /proc/sys/kernel/perf_event_paranoid. perf.data goes to a temporary folder, removed after.
set -euo pipefail

out="flamegraph.svg"
frequency_hz=999
while [ $# -gt 0 ]; do
    case "$1" in
        -o) out="$2"; shift 2 ;;
        -F) frequency_hz="$2"; shift 2 ;;
        --) shift; break ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) break ;;
    esac
done
if [ $# -eq 0 ]; then
    echo "flamegraph: no command given (try --help)" >&2
    exit 2
fi

if ! command -v perf >/dev/null 2>&1; then
    echo "flamegraph: perf not found; run: bash tools/setup.sh --profiling" >&2
    exit 1
fi
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
    echo "flamegraph: installing inferno (cargo install inferno --locked)"
    cargo install inferno --locked --quiet
fi

work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

echo "flamegraph: recording: $*"
# The command's own exit status is reported but does not stop the rendering.
status=0
perf record -e cpu-clock -F "$frequency_hz" -g --call-graph dwarf \
    -o "$work_dir/perf.data" -- "$@" || status=$?
echo "flamegraph: rendering $out"
perf script -i "$work_dir/perf.data" 2>/dev/null |
    inferno-collapse-perf >"$work_dir/stacks.folded"
inferno-flamegraph --title "$*" <"$work_dir/stacks.folded" >"$out"
echo "flamegraph: wrote $out ($(wc -l <"$work_dir/stacks.folded") distinct stacks)"
if [ "$status" -ne 0 ]; then
    echo "flamegraph: note: the command exited with status $status" >&2
fi
exit "$status"
