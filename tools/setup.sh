#!/usr/bin/env bash
# Prepare a Debian 12 machine (the project's kind: 2 cores, root, registries only) to build,
# test and run dataplane. Idempotent: every step checks first and says what it found or did.
#
#   bash tools/setup.sh               # as root: packages, limits, sysctl, rust components
#   bash tools/setup.sh --profiling   # also linux-perf (for tools/flamegraph.sh)
#
# Without root it changes nothing on the system: it reports what is missing and the command
# that fixes it, and fails only if a package the build needs is missing.
set -euo pipefail

profiling=false
for arg in "$@"; do
    case "$arg" in
        --profiling) profiling=true ;;
        -h | --help)
            sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

say() { echo "setup: $*"; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# ---------------------------------------------------------------------------------------------
# Debian packages.
#   cmake         BoringSSL (quiche's boring-sys), later issue
#   libclang-dev  bindgen (with only libclang1 it fails on 'stddef.h')
#   libhwloc-dev  hwloc2 links the system library (no vendored feature)
#   hwloc         lstopo/hwloc-calc, to inspect the topology the node sees
#   pkg-config    how hwloc2's build script finds libhwloc
# WASM guest toolchains (wasm/guests builds the example agents with them):
#   rustc, libstd-rust-dev-wasm32   Debian's rustc (1.63, /usr/bin/rustc) and its
#                                   wasm32-unknown-unknown standard library, which rustup's
#                                   toolchain lacks here; rustup's proxies stay first on PATH
#   clang-14, lld-14                the C guests (clang-14 --target=wasm32-unknown-unknown,
#                                   wasm-ld); lld-14 also links the Rust guests
packages=(cmake libclang-dev libhwloc-dev hwloc pkg-config iproute2)
packages+=(rustc libstd-rust-dev-wasm32 clang-14 lld-14)
if $profiling; then
    packages+=(linux-perf)
fi
# --- QUIC (quiche/BoringSSL) toolchain: added with the transport issue. ----------------------

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    say "packages: all present (${packages[*]})"
elif is_root; then
    say "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    say "packages: installed ${missing[*]}"
else
    say "packages: MISSING ${missing[*]}; the build needs them. As root run:" >&2
    say "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------------
# Locked memory. glommio registers io_memory (10 MiB per executor by default) with io_uring;
# beyond RLIMIT_MEMLOCK it runs without registered buffers, below 512 KiB it cannot start.
# CAP_IPC_LOCK lifts the limit. A script cannot raise the limit of the shell that called it,
# so it reports, and writes limits.d for future logins.
memlock=$(awk '/^Max locked memory/ { print $4 }' /proc/self/limits)
cap_effective=$(awk '/^CapEff/ { print $2 }' /proc/self/status)
if (((0x$cap_effective >> 14) & 1)); then
    say "memlock: limit ${memlock} bytes, CAP_IPC_LOCK held: the limit does not apply"
elif [ "$memlock" = unlimited ]; then
    say "memlock: unlimited"
else
    say "memlock: limit ${memlock} bytes and no CAP_IPC_LOCK: glommio runs without registered" \
        "buffers beyond it; raise it (ulimit -l) or run as root"
fi
limits_file=/etc/security/limits.d/dataplane.conf
limits_text='# dataplane: glommio registers io_uring buffers (locked memory) per shard.
*    soft memlock unlimited
*    hard memlock unlimited
root soft memlock unlimited
root hard memlock unlimited'
if [ -f "$limits_file" ] && [ "$(cat "$limits_file")" = "$limits_text" ]; then
    say "memlock: $limits_file already in place (applies to new logins)"
elif is_root; then
    mkdir -p "$(dirname "$limits_file")"
    printf '%s\n' "$limits_text" >"$limits_file"
    say "memlock: wrote $limits_file (memlock unlimited for new logins)"
else
    say "memlock: not root, so $limits_file is not written"
fi

# ---------------------------------------------------------------------------------------------
# vm.max_map_count: each live wasmtime instance uses about 2 mappings, so the default 65530
# stops a process near 32k agents (WASM issue). Harmless before that.
map_count_wanted=262144
map_count=$(cat /proc/sys/vm/max_map_count)
if [ "$map_count" -ge "$map_count_wanted" ]; then
    say "vm.max_map_count: $map_count (>= $map_count_wanted)"
elif is_root && { sysctl -q -w vm.max_map_count="$map_count_wanted" ||
    echo "$map_count_wanted" >/proc/sys/vm/max_map_count; } >/dev/null 2>&1; then
    say "vm.max_map_count: raised $map_count -> $map_count_wanted (until reboot)"
else
    say "vm.max_map_count: $map_count; could not raise it to $map_count_wanted" \
        "(needs root: sysctl -w vm.max_map_count=$map_count_wanted)"
fi

# ---------------------------------------------------------------------------------------------
# Rust components that tools/test.sh uses. rustup fetches components from its own server,
# which this kind of machine cannot reach, so a missing one is reported, not fatal here
# (test.sh then fails at the fmt/clippy step with cargo's own message).
if command -v rustup >/dev/null 2>&1; then
    installed_components=$(rustup component list --installed 2>/dev/null || true)
    for component in rustfmt clippy; do
        if grep -q "^$component" <<<"$installed_components"; then
            say "rust: $component present"
        elif timeout 120 rustup component add "$component" >/dev/null 2>&1; then
            say "rust: added $component"
        else
            say "rust: $component MISSING and 'rustup component add $component' failed" \
                "(rustup's server is not reachable from this machine)"
        fi
    done
else
    say "rust: rustup not found; expected cargo, rustfmt and clippy on PATH"
fi

say "done"
