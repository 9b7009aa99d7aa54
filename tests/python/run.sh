#!/usr/bin/env bash
# Runs the official RocketMQ Python client against real raftmq brokers: every test file
# starts its own three-node group on ports picked at run time, with data in a temp
# folder, and stops the processes it started when it ends (also on failure).
#
#   tests/python/run.sh                 all tests
#   tests/python/run.sh -k failover     extra arguments go to pytest
#
#   RAFTMQ_BIN_DIR   folder with raftmq-broker, raftmq-namesrv and raftmq
#                    (default ${CARGO_TARGET_DIR:-target}/debug; built there when missing)
#   RAFTMQ_PY_VENV   the venv (default ~/.cache/raftmq-ci/venv; see scripts/python_env.sh)
#   RAFTMQ_TEST_KEEP set to 1 to keep the nodes' data of passing test files too (logs
#                    are always kept in pytest's temp folder, which keeps the last 3 runs)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

if [[ -z "${RAFTMQ_BIN_DIR:-}" ]]; then
    RAFTMQ_BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/debug"
    if [[ ! -x "$RAFTMQ_BIN_DIR/raftmq-broker" || ! -x "$RAFTMQ_BIN_DIR/raftmq"
          || ! -x "$RAFTMQ_BIN_DIR/raftmq-namesrv" ]]; then
        echo "run.sh: building raftmq-broker, raftmq-namesrv and raftmq (debug)"
        (cd "$REPO" && cargo build -p raftmq-namesrv -p raftmq-broker -p raftmq-cli)
    fi
fi
export RAFTMQ_BIN_DIR
for b in raftmq-broker raftmq-namesrv raftmq; do
    [[ -x "$RAFTMQ_BIN_DIR/$b" ]] || {
        echo "run.sh: no $b in $RAFTMQ_BIN_DIR" >&2
        exit 1
    }
done

PY="$("$REPO/scripts/python_env.sh")"
cd "$REPO/tests/python"
# -s: the tests print what they measured (failover gap, duplicates, codes returned).
exec "$PY" -m pytest -v -s -ra "$@"
