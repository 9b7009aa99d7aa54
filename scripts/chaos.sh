#!/usr/bin/env bash
# A chaos run (jepsen-like/): builds raftmq-broker, raftmq-namesrv and raftmq-chaos, runs
# `raftmq-chaos run` with the given arguments against a cluster it starts on loopback
# (two name servers, one or more groups of three nodes, data in a temporary folder),
# and keeps the history, the processes' logs and the printed report under
# target/chaos/<UTC time>/.
#
#   scripts/chaos.sh --duration 10m                  debug build, random seed (printed)
#   scripts/chaos.sh --release --duration 10m --seed 42 --groups 2
#   scripts/chaos.sh --duration 2m --faults pause-leader
#
# Every other argument goes to `raftmq-chaos run` (see `raftmq-chaos run --help`).
# Re-check a kept history: target/debug/raftmq-chaos check --history <dir>/history.jsonl
# Exit status is raftmq-chaos's: 0 pass, 1 check failed, 2 error, 130 interrupted.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"

PROFILE=debug
BUILD_FLAGS=()
ARGS=()
HAS_HISTORY=0
for arg in "$@"; do
    case "$arg" in
        --release)
            PROFILE=release
            BUILD_FLAGS=(--release)
            ;;
        --history | --history=*)
            HAS_HISTORY=1
            ARGS+=("$arg")
            ;;
        *) ARGS+=("$arg") ;;
    esac
done

cd "$REPO"
cargo build "${BUILD_FLAGS[@]}" -p raftmq-broker -p raftmq-namesrv -p raftmq-chaos --bins

OUT="$TARGET/chaos/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
if [[ $HAS_HISTORY -eq 0 ]]; then
    ARGS=(--history "$OUT/history.jsonl" "${ARGS[@]}")
fi
export RAFTMQ_BIN_DIR="$TARGET/$PROFILE"

# tee -i survives Ctrl-C, so the runner can still print while it heals and tears down.
set +e
"$TARGET/$PROFILE/raftmq-chaos" run "${ARGS[@]}" 2>&1 | tee -i "$OUT/output.txt"
status=${PIPESTATUS[0]}
set -e
echo "kept in $OUT (exit status $status)"
exit "$status"
