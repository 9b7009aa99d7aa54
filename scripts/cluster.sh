#!/usr/bin/env bash
# A local three-node raftmq broker group on loopback, for trying things out and for
# chaos by hand.
#
#   scripts/cluster.sh up              build (unless RAFTMQ_BIN_DIR is set), start 3 nodes,
#                                      wait for a leader, print the endpoints
#   scripts/cluster.sh status          each node's pid and addresses, then `raftmq cluster status`
#   scripts/cluster.sh kill-leader     kill -9 the current leader
#   scripts/cluster.sh restart N       (stop and) start node N again with the same flags
#   scripts/cluster.sh logs N [-f]     the last lines of node N's log (-f: follow)
#   scripts/cluster.sh down [--purge]  stop the nodes (SIGTERM, SIGKILL after 10 s);
#                                      --purge also removes the cluster folder and its data
#
# Environment (read by `up`, recorded in cluster.env for the other commands):
#   RAFTMQ_CLUSTER_DIR       folder for data, logs and pid files  (default target/cluster)
#   RAFTMQ_CLIENT_PORT_BASE  client (gRPC) port of node 1; node N uses base+N-1  (8081)
#   RAFTMQ_RAFT_PORT_BASE    Raft port of node 1; node N uses base+N-1          (9081)
#   RAFTMQ_GROUP             broker group name                                   (g1)
#   RAFTMQ_BIN_DIR           folder with prebuilt raftmq-broker and raftmq; skips the build
#   RAFTMQ_BROKER_CONFIG     a broker config file passed as --config to every node
#   RAFTMQ_WAIT_SECS         how long `up` and `restart` wait for the group    (30)
#   RUST_LOG                 broker log filter                                   (info)
#
# Only processes whose pids this script recorded (and whose command line still names
# raftmq-broker) are ever signalled.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_DIR="${RAFTMQ_CLUSTER_DIR:-$REPO/target/cluster}"
ENV_FILE="$CLUSTER_DIR/cluster.env"
NODES=(1 2 3)
HOST=127.0.0.1

# Settings a running cluster was started with win over the environment, so that
# `status` and friends talk to the right ports.
if [[ -f "$ENV_FILE" && "${1:-}" != up ]]; then
    # shellcheck source=/dev/null
    source "$ENV_FILE"
fi
CLIENT_BASE="${RAFTMQ_CLIENT_PORT_BASE:-8081}"
RAFT_BASE="${RAFTMQ_RAFT_PORT_BASE:-9081}"
GROUP="${RAFTMQ_GROUP:-g1}"
WAIT_SECS="${RAFTMQ_WAIT_SECS:-30}"
BROKER_CONFIG="${RAFTMQ_BROKER_CONFIG:-}"
if [[ -n "${RAFTMQ_BIN_DIR:-}" ]]; then
    BIN_DIR="$RAFTMQ_BIN_DIR"
    BUILD=0
else
    BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
    BUILD=1
fi
BROKER="$BIN_DIR/raftmq-broker"
CLI="$BIN_DIR/raftmq"

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

client_addr() { echo "$HOST:$((CLIENT_BASE + $1 - 1))"; }
raft_addr() { echo "$HOST:$((RAFT_BASE + $1 - 1))"; }
node_dir() { echo "$CLUSTER_DIR/node-$1"; }
pid_file() { echo "$CLUSTER_DIR/node-$1.pid"; }
log_file() { echo "$CLUSTER_DIR/node-$1.log"; }

all_client_addrs() {
    local n out=()
    for n in "${NODES[@]}"; do out+=("$(client_addr "$n")"); done
    local IFS=,
    echo "${out[*]}"
}

check_node_arg() {
    if ! [[ "${1:-}" =~ ^[0-9]+$ ]] || ((${1} < 1 || ${1} > ${#NODES[@]})); then
        die "expected a node number 1..${#NODES[@]}, got '${1:-}'"
    fi
}

# True if PID is alive and is a raftmq-broker (pids get reused).
is_broker_pid() {
    local pid=$1 cmdline
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *raftmq-broker* ]]
}

# Prints node N's pid if it is running, else nothing; returns 1 when not running.
node_pid() {
    local f pid
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    pid="$(<"$f")"
    is_broker_pid "$pid" || return 1
    echo "$pid"
}

port_in_use() {
    # A successful connect means something listens there already.
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

ensure_binaries() {
    if ((BUILD)); then
        echo "building release binaries (no-op when fresh)..."
        (cd "$REPO" && cargo build --release -p raftmq-broker -p raftmq-cli)
    fi
    [[ -x "$BROKER" ]] || die "no broker binary at $BROKER"
    [[ -x "$CLI" ]] || die "no CLI binary at $CLI"
}

write_env() {
    mkdir -p "$CLUSTER_DIR"
    {
        echo "# written by scripts/cluster.sh up on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'RAFTMQ_CLIENT_PORT_BASE=%q\n' "$CLIENT_BASE"
        printf 'RAFTMQ_RAFT_PORT_BASE=%q\n' "$RAFT_BASE"
        printf 'RAFTMQ_GROUP=%q\n' "$GROUP"
        printf 'RAFTMQ_BROKER_CONFIG=%q\n' "$BROKER_CONFIG"
        ((BUILD)) || printf 'RAFTMQ_BIN_DIR=%q\n' "$BIN_DIR"
        local n
        for n in "${NODES[@]}"; do
            printf 'NODE%s_CLIENT_ADDR=%q\n' "$n" "$(client_addr "$n")"
            printf 'NODE%s_RAFT_ADDR=%q\n' "$n" "$(raft_addr "$n")"
        done
        printf 'RAFTMQ_SERVER=%q\n' "$(all_client_addrs)"
    } >"$ENV_FILE"
}

start_node() {
    local n=$1 pid args=() p
    mkdir -p "$(node_dir "$n")/data"
    [[ -n "$BROKER_CONFIG" ]] && args+=(--config "$BROKER_CONFIG")
    args+=(--node-id "$n" --group "$GROUP" --data-dir "$(node_dir "$n")/data"
        --client-addr "$(client_addr "$n")" --raft-addr "$(raft_addr "$n")")
    for p in "${NODES[@]}"; do
        args+=(--peer "$p=$(raft_addr "$p")/$(client_addr "$p")")
    done
    echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) starting node $n: $BROKER ${args[*]}" >>"$(log_file "$n")"
    RUST_LOG="${RUST_LOG:-info}" nohup "$BROKER" "${args[@]}" </dev/null >>"$(log_file "$n")" 2>&1 &
    pid=$!
    echo "$pid" >"$(pid_file "$n")"
    echo "node $n: pid $pid, client $(client_addr "$n"), raft $(raft_addr "$n"), log $(log_file "$n")"
}

# Stops node N: SIGTERM, then SIGKILL after GRACE seconds. No-op if not running.
stop_node() {
    local n=$1 grace=${2:-10} pid i
    pid="$(node_pid "$n")" || {
        rm -f "$(pid_file "$n")"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        is_broker_pid "$pid" || break
        sleep 0.1
    done
    if is_broker_pid "$pid"; then
        echo "node $n (pid $pid) did not stop within ${grace}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pid_file "$n")"
}

# `raftmq cluster status --json` from the first node that answers; fails if none does.
status_json() {
    local n
    for n in "${NODES[@]}"; do
        node_pid "$n" >/dev/null || continue
        if "$CLI" --server "$(client_addr "$n")" --timeout-secs 3 cluster status --json 2>/dev/null; then
            return 0
        fi
    done
    return 1
}

# Prints the leader's node id, or fails when no live node knows a leader.
leader_id() {
    local json id
    json="$(status_json)" || return 1
    id="$(sed -n 's/.*"leader_id"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' <<<"$json" | head -n 1)"
    [[ -n "$id" ]] || return 1
    echo "$id"
}

wait_for_leader() {
    local deadline=$((SECONDS + WAIT_SECS)) n id
    while ((SECONDS < deadline)); do
        for n in "${NODES[@]}"; do
            if [[ -f "$(pid_file "$n")" ]] && ! node_pid "$n" >/dev/null; then
                echo "node $n exited; last lines of $(log_file "$n"):" >&2
                tail -n 20 "$(log_file "$n")" >&2 || true
                return 1
            fi
        done
        if id="$(leader_id)"; then
            echo "$id"
            return 0
        fi
        sleep 0.5
    done
    echo "no leader within ${WAIT_SECS}s" >&2
    return 1
}

cmd_up() {
    local n pid running=() leader
    for n in "${NODES[@]}"; do
        if pid="$(node_pid "$n")"; then running+=("node $n (pid $pid)"); fi
    done
    ((${#running[@]} == 0)) ||
        die "already running: ${running[*]}; use 'status', 'restart N' or 'down' first"
    for n in "${NODES[@]}"; do
        port_in_use "$((CLIENT_BASE + n - 1))" && die "port $((CLIENT_BASE + n - 1)) is in use"
        port_in_use "$((RAFT_BASE + n - 1))" && die "port $((RAFT_BASE + n - 1)) is in use"
    done
    ensure_binaries
    write_env
    for n in "${NODES[@]}"; do start_node "$n"; done
    echo "waiting up to ${WAIT_SECS}s for a leader..."
    if ! leader="$(wait_for_leader)"; then
        echo "the cluster did not come up; stopping what was started" >&2
        cmd_down
        exit 1
    fi
    echo
    echo "cluster '$GROUP' is up in $CLUSTER_DIR"
    for n in "${NODES[@]}"; do
        echo "  node $n: client $(client_addr "$n")$([[ "$n" == "$leader" ]] && echo "  (leader)")"
    done
    echo
    echo "  export RAFTMQ_SERVER=$(all_client_addrs)"
    echo "  $CLI topic create demo --queues 8"
    echo "  $0 status | kill-leader | restart N | logs N | down [--purge]"
}

cmd_status() {
    local n pid state
    [[ -f "$ENV_FILE" ]] || echo "(no $ENV_FILE: showing defaults)"
    for n in "${NODES[@]}"; do
        if pid="$(node_pid "$n")"; then state="running (pid $pid)"; else state="not running"; fi
        printf 'node %s: %-22s client %s  raft %s\n' "$n" "$state" "$(client_addr "$n")" "$(raft_addr "$n")"
    done
    echo
    if [[ -x "$CLI" ]]; then
        "$CLI" --server "$(all_client_addrs)" cluster status || echo "(cluster status failed)"
    else
        echo "(no CLI at $CLI)"
    fi
}

cmd_kill_leader() {
    local id pid
    id="$(leader_id)" || die "no leader known to any running node"
    pid="$(node_pid "$id")" || die "leader is node $id but it has no live pid file"
    kill -KILL "$pid"
    echo "killed the leader: node $id (pid $pid, client $(client_addr "$id"))"
    rm -f "$(pid_file "$id")"
    echo "bring it back with: $0 restart $id"
}

cmd_restart() {
    local n=$1 deadline
    check_node_arg "$n"
    [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE: run '$0 up' first"
    [[ -x "$BROKER" ]] || die "no broker binary at $BROKER"
    if node_pid "$n" >/dev/null; then
        echo "node $n is running: stopping it first"
        stop_node "$n" 10
    fi
    start_node "$n"
    # Bounded wait until the node answers the admin service again.
    deadline=$((SECONDS + WAIT_SECS))
    until "$CLI" --server "$(client_addr "$n")" --timeout-secs 3 cluster status >/dev/null 2>&1; do
        node_pid "$n" >/dev/null || {
            tail -n 20 "$(log_file "$n")" >&2
            die "node $n exited"
        }
        ((SECONDS < deadline)) || die "node $n does not answer after ${WAIT_SECS}s"
        sleep 0.5
    done
    echo "node $n is back"
}

cmd_down() {
    local purge=0 n pid pids=() i
    [[ "${1:-}" == --purge ]] && purge=1
    for n in "${NODES[@]}"; do
        if pid="$(node_pid "$n")"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$n:$pid")
            echo "node $n (pid $pid): SIGTERM"
        fi
        true
    done
    for ((i = 0; i < 100; i++)); do
        local alive=0 entry
        for entry in "${pids[@]}"; do
            is_broker_pid "${entry#*:}" && alive=1
        done
        ((alive)) || break
        sleep 0.1
    done
    for entry in "${pids[@]}"; do
        if is_broker_pid "${entry#*:}"; then
            echo "node ${entry%%:*} (pid ${entry#*:}) still running after 10s: SIGKILL"
            kill -KILL "${entry#*:}" 2>/dev/null || true
        fi
    done
    for n in "${NODES[@]}"; do rm -f "$(pid_file "$n")"; done
    if ((purge)); then
        # Only remove a folder that looks like ours.
        if [[ -f "$ENV_FILE" || -d "$CLUSTER_DIR/node-1" ]] && [[ "$CLUSTER_DIR" != / && "$CLUSTER_DIR" != "$HOME" ]]; then
            rm -rf "$CLUSTER_DIR"
            echo "removed $CLUSTER_DIR"
        else
            echo "not removing $CLUSTER_DIR: it does not look like a cluster folder"
        fi
    else
        echo "stopped; data kept in $CLUSTER_DIR ('$0 down --purge' removes it)"
    fi
}

cmd_logs() {
    local n=$1
    check_node_arg "$n"
    if [[ "${2:-}" == -f ]]; then
        exec tail -n 100 -f "$(log_file "$n")"
    fi
    tail -n "${LOG_LINES:-100}" "$(log_file "$n")"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
up) cmd_up ;;
status) cmd_status ;;
kill-leader) cmd_kill_leader ;;
restart) cmd_restart "${2:-}" ;;
logs) cmd_logs "${2:-}" "${3:-}" ;;
down) cmd_down "${2:-}" ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
