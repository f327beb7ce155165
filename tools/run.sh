#!/usr/bin/env bash
# Run a dataplane node on its embedded default configuration, one shard per usable core:
#
#   sudo bash tools/run.sh                       # or, as root: bash tools/run.sh
#   bash tools/run.sh --config node.yaml         # extra arguments go to `dataplane`
#
# Root (or CAP_IPC_LOCK) lets glommio register its io_uring buffers; see tools/setup.sh.
# Environment: CARGO_TARGET_DIR (default ./target).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

# Without root, setup.sh changes nothing: it reports, and fails only if packages are missing.
bash tools/setup.sh
cargo build --release --locked -p dataplane --bin dataplane
exec "$CARGO_TARGET_DIR/release/dataplane" --shards auto "$@"
