#!/usr/bin/env bash
# End to end on a local three-node broker group: build, start a name server and the
# group, create a topic, show the name server's view of the group and the topic's route,
# send a few messages, receive and acknowledge them, show the group's status, kill the
# leader, send again through the new leader, and stop everything it started.
#
#   scripts/demo.sh           the whole tour, then `cluster.sh down`
#   scripts/demo.sh --keep    leave the cluster running afterwards (stop: scripts/cluster.sh down)
#
# Uses scripts/cluster.sh (ports 8081-8083 / 9081-9083 and 9876 for the name server unless
# RAFTMQ_*_PORT_BASE say otherwise; data under target/cluster).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1

"$REPO/scripts/test.sh" --deps-only
CLUSTER="$REPO/scripts/cluster.sh"
cleanup() {
    if [[ $KEEP -eq 0 ]]; then
        "$CLUSTER" down --purge || true
    fi
}
trap cleanup EXIT

"$CLUSTER" up
# shellcheck source=/dev/null
source "${RAFTMQ_CLUSTER_DIR:-$REPO/target/cluster}/cluster.env"
BIN="${RAFTMQ_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/release}"
export RAFTMQ_SERVER="127.0.0.1:${RAFTMQ_CLIENT_PORT_BASE:-8081},127.0.0.1:$((${RAFTMQ_CLIENT_PORT_BASE:-8081} + 1)),127.0.0.1:$((${RAFTMQ_CLIENT_PORT_BASE:-8081} + 2))"
cli() {
    echo "+ raftmq $*"
    "$BIN/raftmq" "$@"
}

cli topic create demo --queues 8 || true
cli topic list
if [[ -n "${RAFTMQ_NAMESRV:-}" ]]; then
    export RAFTMQ_NAMESRV
    cli namesrv groups
    # A group registers a topic change with the name server at once; allow a moment.
    for _ in $(seq 1 25); do
        "$BIN/raftmq" namesrv route demo >/dev/null 2>&1 && break
        sleep 0.2
    done
    cli namesrv route demo
fi
cli send --topic demo --tag TagA --key order-1 --count 5 "hello from raftmq"
cli receive --topic demo --group demo-consumers --max 16 --wait-secs 5
cli cluster status

echo "+ killing the leader"
"$CLUSTER" kill-leader
for _ in $(seq 1 50); do
    if "$BIN/raftmq" send --topic demo --count 1 "sent after the failover" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
cli receive --topic demo --group demo-consumers --max 16 --wait-secs 5
cli cluster status
echo "demo finished"
