#!/usr/bin/env bash
# Local raftmq broker groups (three nodes each) and name servers on loopback, for trying
# things out and for chaos by hand.
#
#   scripts/cluster.sh up [--groups N] [--namesrv M]
#                                      build (unless RAFTMQ_BIN_DIR is set), start M name
#                                      servers (default 1; 0: none) and N broker groups
#                                      g1..gN (default 1) of 3 nodes each, every node
#                                      registered with every name server; wait for each
#                                      group's leader; print the endpoints
#   scripts/cluster.sh status          name servers and nodes with pids and addresses, then
#                                      `raftmq namesrv groups` and each group's `raftmq cluster status`
#   scripts/cluster.sh kill-leader [gK]      kill -9 the leader of group K (default g1)
#   scripts/cluster.sh restart NODE          (stop and) start a node again with the same flags
#   scripts/cluster.sh logs NODE|nsI [-f]    the last lines of a node's (or name server I's)
#                                            log (-f: follow)
#   scripts/cluster.sh stop-group gK         SIGTERM every node of group K (SIGKILL after 10 s)
#   scripts/cluster.sh start-group gK        start the stopped nodes of group K, wait for a leader
#   scripts/cluster.sh kill-namesrv I        kill -9 name server I (1..M)
#   scripts/cluster.sh start-namesrv I       start name server I again
#   scripts/cluster.sh down [--purge]        stop every node and name server (SIGTERM, SIGKILL
#                                            after 10 s); --purge also removes the cluster
#                                            folder and its data
#
# NODE is N (node N of group 1, N = 1..3) or gK.N (node N of group K, e.g. g2.3); a group's
# name may stand for gK (e.g. broker-a.2 when RAFTMQ_GROUP=broker-a).
#
# Ports: group K's node N listens for clients on CLIENT_BASE + 10*(K-1) + N-1 and for Raft
# on RAFT_BASE + 10*(K-1) + N-1 (g1: 8081-8083 / 9081-9083, g2: 8091-8093 / 9091-9093, ...);
# name server I on NAMESRV_BASE + I-1 (9876, 9877, ...).
#
# Environment (read by `up`, recorded in cluster.env for the other commands):
#   RAFTMQ_CLUSTER_DIR        folder for data, logs and pid files  (default target/cluster)
#   RAFTMQ_CLIENT_PORT_BASE   client (gRPC) port of g1's node 1                  (8081)
#   RAFTMQ_RAFT_PORT_BASE     Raft port of g1's node 1                           (9081)
#   RAFTMQ_NAMESRV_PORT_BASE  port of name server 1                              (9876)
#   RAFTMQ_NUM_GROUPS         broker groups when `up` has no --groups            (1)
#   RAFTMQ_NUM_NAMESRV        name servers when `up` has no --namesrv            (1)
#   RAFTMQ_GROUP              name of the group when there is only one           (g1)
#   RAFTMQ_BIN_DIR            folder with prebuilt raftmq-broker, raftmq-namesrv and raftmq;
#                             skips the build
#   RAFTMQ_BROKER_CONFIG      a broker config file passed as --config to every node
#   RAFTMQ_NAMESRV_CONFIG     a name server config file passed as --config to every name server
#   RAFTMQ_WAIT_SECS          how long `up`, `restart` and `start-*` wait        (30)
#   RUST_LOG                  log filter of nodes and name servers               (info)
# cluster.env also records RAFTMQ_SERVER (g1's client addresses), RAFTMQ_NAMESRV (every
# name server, comma-separated) and each group's addresses (G<K>_NAME, G<K>_SERVER).
#
# Files in the cluster folder: g1's node N is node-N/ (data), node-N.log, node-N.pid;
# group K's (K > 1) gK-node-N/, gK-node-N.log, gK-node-N.pid; name server I's
# namesrv-I.log, namesrv-I.pid.
#
# Only processes whose pids this script recorded (and whose command line still runs
# raftmq-broker, or raftmq-namesrv for a name server) are ever signalled.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_DIR="${RAFTMQ_CLUSTER_DIR:-$REPO/target/cluster}"
ENV_FILE="$CLUSTER_DIR/cluster.env"
NODES=(1 2 3)
HOST=127.0.0.1
# Port distance between consecutive groups.
GROUP_PORT_STRIDE=10
MAX_GROUPS=50
MAX_NAMESRV=9

# Settings a running cluster was started with win over the environment, so that
# `status` and friends talk to the right ports.
ENV_LOADED=0
if [[ -f "$ENV_FILE" && "${1:-}" != up ]]; then
    # shellcheck source=/dev/null
    source "$ENV_FILE"
    ENV_LOADED=1
fi
CLIENT_BASE="${RAFTMQ_CLIENT_PORT_BASE:-8081}"
RAFT_BASE="${RAFTMQ_RAFT_PORT_BASE:-9081}"
NAMESRV_BASE="${RAFTMQ_NAMESRV_PORT_BASE:-9876}"
GROUP="${RAFTMQ_GROUP:-g1}"
NUM_GROUPS="${RAFTMQ_NUM_GROUPS:-1}"
# A cluster.env written before name servers existed records none.
if ((ENV_LOADED)); then
    NUM_NAMESRV="${RAFTMQ_NUM_NAMESRV:-0}"
else
    NUM_NAMESRV="${RAFTMQ_NUM_NAMESRV:-1}"
fi
WAIT_SECS="${RAFTMQ_WAIT_SECS:-30}"
BROKER_CONFIG="${RAFTMQ_BROKER_CONFIG:-}"
NAMESRV_CONFIG="${RAFTMQ_NAMESRV_CONFIG:-}"
if [[ -n "${RAFTMQ_BIN_DIR:-}" ]]; then
    BIN_DIR="$RAFTMQ_BIN_DIR"
    BUILD=0
else
    BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
    BUILD=1
fi
BROKER="$BIN_DIR/raftmq-broker"
NAMESRV_BIN="$BIN_DIR/raftmq-namesrv"
CLI="$BIN_DIR/raftmq"

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------
# Names, ports and files
# ---------------------------------------------------------------------------

# Every process is a "unit": G.N is node N of group G, ns.I is name server I.

group_name() {
    if ((NUM_GROUPS == 1)); then echo "$GROUP"; else echo "g$1"; fi
}

client_port() { echo "$((CLIENT_BASE + GROUP_PORT_STRIDE * ($1 - 1) + $2 - 1))"; }
raft_port() { echo "$((RAFT_BASE + GROUP_PORT_STRIDE * ($1 - 1) + $2 - 1))"; }
namesrv_port() { echo "$((NAMESRV_BASE + $1 - 1))"; }
client_addr() { echo "$HOST:$(client_port "$1" "$2")"; }
raft_addr() { echo "$HOST:$(raft_port "$1" "$2")"; }
namesrv_addr() { echo "$HOST:$(namesrv_port "$1")"; }

# How a node is named on the command line: N in group 1 of a one-group cluster, else gK.N.
node_ref() {
    if (($1 == 1 && NUM_GROUPS == 1)); then echo "$2"; else echo "g$1.$2"; fi
}

unit_base() {
    local u=$1 g n
    if [[ "$u" == ns.* ]]; then
        echo "$CLUSTER_DIR/namesrv-${u#ns.}"
        return
    fi
    g="${u%%.*}" n="${u#*.}"
    if ((g == 1)); then echo "$CLUSTER_DIR/node-$n"; else echo "$CLUSTER_DIR/g$g-node-$n"; fi
}
pid_file() { echo "$(unit_base "$1").pid"; }
log_file() { echo "$(unit_base "$1").log"; }
unit_bin() { if [[ "$1" == ns.* ]]; then echo raftmq-namesrv; else echo raftmq-broker; fi; }
unit_label() {
    if [[ "$1" == ns.* ]]; then
        echo "namesrv ${1#ns.}"
    else
        echo "node $(node_ref "${1%%.*}" "${1#*.}")"
    fi
}

group_units() {
    local n
    for n in "${NODES[@]}"; do echo "$1.$n"; done
}
broker_units() {
    local g
    for ((g = 1; g <= NUM_GROUPS; g++)); do group_units "$g"; done
}
namesrv_units() {
    local i
    for ((i = 1; i <= NUM_NAMESRV; i++)); do echo "ns.$i"; done
}

join_commas() {
    local IFS=,
    echo "$*"
}

group_client_addrs() {
    local n out=()
    for n in "${NODES[@]}"; do out+=("$(client_addr "$1" "$n")"); done
    join_commas "${out[@]}"
}

all_namesrv_addrs() {
    local i out=()
    for ((i = 1; i <= NUM_NAMESRV; i++)); do out+=("$(namesrv_addr "$i")"); done
    join_commas "${out[@]+"${out[@]}"}"
}

# ---------------------------------------------------------------------------
# Command-line references: NODE, gK, I
# ---------------------------------------------------------------------------

# Sets REF_G to the group index of gK or of a group name.
parse_group_ref() {
    local ref=${1:-} g
    if [[ "$ref" =~ ^g([0-9]{1,4})$ ]]; then
        g=$((10#${BASH_REMATCH[1]}))
        if ((g >= 1 && g <= NUM_GROUPS)); then
            REF_G=$g
            return
        fi
    fi
    for ((g = 1; g <= NUM_GROUPS; g++)); do
        if [[ -n "$ref" && "$ref" == "$(group_name "$g")" ]]; then
            REF_G=$g
            return
        fi
    done
    die "expected a group g1..g$NUM_GROUPS, got '$ref'"
}

# Sets REF_G and REF_N from N (group 1) or gK.N.
parse_node_ref() {
    local ref=${1:-} n
    if [[ "$ref" == *.* ]]; then
        parse_group_ref "${ref%.*}"
        n="${ref##*.}"
    else
        REF_G=1
        n="$ref"
    fi
    if ! [[ "$n" =~ ^[0-9]{1,4}$ ]] || ((10#$n < 1 || 10#$n > ${#NODES[@]})); then
        die "expected a node N or gK.N (N = 1..${#NODES[@]}, K = 1..$NUM_GROUPS), got '$ref'"
    fi
    REF_N=$((10#$n))
}

# Sets REF_I to a name server number 1..NUM_NAMESRV.
parse_namesrv_ref() {
    local ref=${1:-}
    ((NUM_NAMESRV > 0)) || die "this cluster has no name servers"
    if ! [[ "$ref" =~ ^[0-9]{1,4}$ ]] || ((10#$ref < 1 || 10#$ref > NUM_NAMESRV)); then
        die "expected a name server number 1..$NUM_NAMESRV, got '$ref'"
    fi
    REF_I=$((10#$ref))
}

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

# True if PID is alive and runs BIN (pids get reused): the command's first word, or the
# second after nohup, is BIN.
is_pid_of() {
    local pid=$1 bin=$2 args=()
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    mapfile -d '' -t args <"/proc/$pid/cmdline" 2>/dev/null || return 1
    ((${#args[@]} > 0)) || return 1
    [[ "${args[0]##*/}" == nohup ]] && args=("${args[@]:1}")
    ((${#args[@]} > 0)) && [[ "${args[0]##*/}" == "$bin" ]]
}
is_broker_pid() { is_pid_of "$1" raftmq-broker; }
is_namesrv_pid() { is_pid_of "$1" raftmq-namesrv; }

# Prints a unit's pid if it is running, else nothing; returns 1 when not running.
unit_pid() {
    local f pid
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    pid="$(<"$f")"
    is_pid_of "$pid" "$(unit_bin "$1")" || return 1
    echo "$pid"
}

# Tells why a unit exited: its log's error lines (a backtrace can push them out of the
# tail), then the last lines.
explain_exit() {
    local u=$1 log
    log="$(log_file "$u")"
    echo "$(unit_label "$u") exited; from $log:" >&2
    grep -E '^(Error|thread .* panicked)' "$log" 2>/dev/null | tail -n 3 >&2 || true
    echo "--- last lines:" >&2
    tail -n 20 "$log" >&2 || true
}

port_in_use() {
    # A successful connect means something listens there already.
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# Runs a unit's command in the background with its log and pid file; waits until the
# process runs the binary (not the forked shell), so that pid checks right after hold.
launch() {
    local u=$1 pid i
    shift
    echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) starting $(unit_label "$u"): $*" >>"$(log_file "$u")"
    RUST_LOG="${RUST_LOG:-info}" nohup "$@" </dev/null >>"$(log_file "$u")" 2>&1 &
    pid=$!
    echo "$pid" >"$(pid_file "$u")"
    for ((i = 0; i < 50; i++)); do
        is_pid_of "$pid" "$(unit_bin "$u")" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    LAUNCHED_PID=$pid
}

start_node() {
    local g=$1 n=$2 args=() p ns
    mkdir -p "$(unit_base "$g.$n")/data"
    [[ -n "$BROKER_CONFIG" ]] && args+=(--config "$BROKER_CONFIG")
    args+=(--node-id "$n" --group "$(group_name "$g")" --data-dir "$(unit_base "$g.$n")/data"
        --client-addr "$(client_addr "$g" "$n")" --raft-addr "$(raft_addr "$g" "$n")")
    for p in "${NODES[@]}"; do
        args+=(--peer "$p=$(raft_addr "$g" "$p")/$(client_addr "$g" "$p")")
    done
    for ((ns = 1; ns <= NUM_NAMESRV; ns++)); do
        args+=(--namesrv "$(namesrv_addr "$ns")")
    done
    launch "$g.$n" "$BROKER" "${args[@]}"
    echo "node $(node_ref "$g" "$n") ($(group_name "$g")): pid $LAUNCHED_PID, client $(client_addr "$g" "$n"), raft $(raft_addr "$g" "$n"), log $(log_file "$g.$n")"
}

start_namesrv() {
    local i=$1 args=()
    mkdir -p "$CLUSTER_DIR"
    [[ -n "$NAMESRV_CONFIG" ]] && args+=(--config "$NAMESRV_CONFIG")
    args+=(--listen "$(namesrv_addr "$i")")
    launch "ns.$i" "$NAMESRV_BIN" "${args[@]}"
    echo "namesrv $i: pid $LAUNCHED_PID, listen $(namesrv_addr "$i"), log $(log_file "ns.$i")"
}

# Waits until name server I accepts connections; fails if it exits or does not.
wait_for_namesrv() {
    local i=$1 deadline=$((SECONDS + WAIT_SECS))
    until port_in_use "$(namesrv_port "$i")"; do
        if ! unit_pid "ns.$i" >/dev/null; then
            explain_exit "ns.$i"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "namesrv $i does not accept connections after ${WAIT_SECS}s" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Stops units: SIGTERM to all, SIGKILL to those still running after GRACE seconds.
# Units not running are skipped; their pid files are removed.
stop_units() {
    local grace=$1 u pid entries=() entry i alive
    shift
    for u in "$@"; do
        if pid="$(unit_pid "$u")"; then
            kill -TERM "$pid" 2>/dev/null || true
            entries+=("$u|$pid")
            echo "$(unit_label "$u") (pid $pid): SIGTERM"
        fi
    done
    for ((i = 0; i < grace * 10; i++)); do
        alive=0
        for entry in "${entries[@]+"${entries[@]}"}"; do
            is_pid_of "${entry#*|}" "$(unit_bin "${entry%%|*}")" && alive=1
        done
        ((alive)) || break
        sleep 0.1
    done
    for entry in "${entries[@]+"${entries[@]}"}"; do
        u="${entry%%|*}" pid="${entry#*|}"
        if is_pid_of "$pid" "$(unit_bin "$u")"; then
            echo "$(unit_label "$u") (pid $pid) still running after ${grace}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for u in "$@"; do rm -f "$(pid_file "$u")"; done
}

# ---------------------------------------------------------------------------
# Asking the cluster
# ---------------------------------------------------------------------------

# `raftmq cluster status --json` from group G's first node that answers.
status_json() {
    local g=$1 n
    for n in "${NODES[@]}"; do
        unit_pid "$g.$n" >/dev/null || continue
        if "$CLI" --server "$(client_addr "$g" "$n")" --timeout-secs 3 cluster status --json 2>/dev/null; then
            return 0
        fi
    done
    return 1
}

# Prints group G's leader's node id, or fails when no live node knows a leader.
leader_id() {
    local json id
    json="$(status_json "$1")" || return 1
    id="$(sed -n 's/.*"leader_id"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' <<<"$json" | head -n 1)"
    [[ -n "$id" ]] || return 1
    echo "$id"
}

# Waits for group G's leader and prints its id; fails if a started node exits.
wait_for_leader() {
    local g=$1 deadline=$((SECONDS + WAIT_SECS)) n id
    while ((SECONDS < deadline)); do
        for n in "${NODES[@]}"; do
            if [[ -f "$(pid_file "$g.$n")" ]] && ! unit_pid "$g.$n" >/dev/null; then
                explain_exit "$g.$n"
                return 1
            fi
        done
        if id="$(leader_id "$g")"; then
            echo "$id"
            return 0
        fi
        sleep 0.5
    done
    echo "group $(group_name "$g"): no leader within ${WAIT_SECS}s" >&2
    return 1
}

running_namesrv_addrs() {
    local i out=()
    for ((i = 1; i <= NUM_NAMESRV; i++)); do
        unit_pid "ns.$i" >/dev/null && out+=("$(namesrv_addr "$i")")
    done
    join_commas "${out[@]+"${out[@]}"}"
}

# Waits (bounded) until a name server lists every group; only warns when it does not.
wait_for_registration() {
    local deadline=$((SECONDS + WAIT_SECS)) json g missing
    while true; do
        missing=()
        json="$("$CLI" --namesrv "$(all_namesrv_addrs)" --timeout-secs 3 namesrv groups --json 2>/dev/null)" || json=""
        for ((g = 1; g <= NUM_GROUPS; g++)); do
            grep -q "\"group\": \"$(group_name "$g")\"" <<<"$json" || missing+=("$(group_name "$g")")
        done
        ((${#missing[@]} == 0)) && return 0
        if ((SECONDS >= deadline)); then
            echo "warning: after ${WAIT_SECS}s the name servers do not list: ${missing[*]}" >&2
            return 0
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

ensure_binaries() {
    if ((BUILD)); then
        local pkgs=(-p raftmq-broker -p raftmq-cli)
        ((NUM_NAMESRV > 0)) && pkgs+=(-p raftmq-namesrv)
        echo "building release binaries (no-op when fresh)..."
        (cd "$REPO" && cargo build --release "${pkgs[@]}")
    fi
    [[ -x "$BROKER" ]] || die "no broker binary at $BROKER"
    [[ -x "$CLI" ]] || die "no CLI binary at $CLI"
    if ((NUM_NAMESRV > 0)) && [[ ! -x "$NAMESRV_BIN" ]]; then
        die "no name server binary at $NAMESRV_BIN"
    fi
    return 0
}

write_env() {
    mkdir -p "$CLUSTER_DIR"
    local g n i
    {
        echo "# written by scripts/cluster.sh up on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'RAFTMQ_CLIENT_PORT_BASE=%q\n' "$CLIENT_BASE"
        printf 'RAFTMQ_RAFT_PORT_BASE=%q\n' "$RAFT_BASE"
        printf 'RAFTMQ_NAMESRV_PORT_BASE=%q\n' "$NAMESRV_BASE"
        printf 'RAFTMQ_GROUP=%q\n' "$GROUP"
        printf 'RAFTMQ_NUM_GROUPS=%q\n' "$NUM_GROUPS"
        printf 'RAFTMQ_NUM_NAMESRV=%q\n' "$NUM_NAMESRV"
        printf 'RAFTMQ_BROKER_CONFIG=%q\n' "$BROKER_CONFIG"
        printf 'RAFTMQ_NAMESRV_CONFIG=%q\n' "$NAMESRV_CONFIG"
        ((BUILD)) || printf 'RAFTMQ_BIN_DIR=%q\n' "$BIN_DIR"
        # Group 1's nodes as before name servers and several groups existed.
        for n in "${NODES[@]}"; do
            printf 'NODE%s_CLIENT_ADDR=%q\n' "$n" "$(client_addr 1 "$n")"
            printf 'NODE%s_RAFT_ADDR=%q\n' "$n" "$(raft_addr 1 "$n")"
        done
        for ((g = 1; g <= NUM_GROUPS; g++)); do
            printf 'G%s_NAME=%q\n' "$g" "$(group_name "$g")"
            printf 'G%s_SERVER=%q\n' "$g" "$(group_client_addrs "$g")"
        done
        for ((i = 1; i <= NUM_NAMESRV; i++)); do
            printf 'NAMESRV%s_ADDR=%q\n' "$i" "$(namesrv_addr "$i")"
        done
        printf 'RAFTMQ_SERVER=%q\n' "$(group_client_addrs 1)"
        printf 'RAFTMQ_NAMESRV=%q\n' "$(all_namesrv_addrs)"
    } >"$ENV_FILE"
}

parse_up_args() {
    while (($#)); do
        case "$1" in
        --groups)
            (($# >= 2)) || die "up: --groups needs a number"
            NUM_GROUPS=$2
            shift
            ;;
        --groups=*) NUM_GROUPS="${1#*=}" ;;
        --namesrv)
            (($# >= 2)) || die "up: --namesrv needs a number"
            NUM_NAMESRV=$2
            shift
            ;;
        --namesrv=*) NUM_NAMESRV="${1#*=}" ;;
        *) die "up: unknown argument '$1' (expected --groups N, --namesrv M)" ;;
        esac
        shift
    done
    if ! [[ "$NUM_GROUPS" =~ ^[0-9]{1,4}$ ]] || ((10#$NUM_GROUPS < 1 || 10#$NUM_GROUPS > MAX_GROUPS)); then
        die "--groups: expected 1..$MAX_GROUPS, got '$NUM_GROUPS'"
    fi
    if ! [[ "$NUM_NAMESRV" =~ ^[0-9]{1,4}$ ]] || ((10#$NUM_NAMESRV > MAX_NAMESRV)); then
        die "--namesrv: expected 0..$MAX_NAMESRV, got '$NUM_NAMESRV'"
    fi
    NUM_GROUPS=$((10#$NUM_GROUPS))
    NUM_NAMESRV=$((10#$NUM_NAMESRV))
}

# Every port the cluster would use, one per line.
all_ports() {
    local g n i
    for ((i = 1; i <= NUM_NAMESRV; i++)); do namesrv_port "$i"; done
    for ((g = 1; g <= NUM_GROUPS; g++)); do
        for n in "${NODES[@]}"; do
            client_port "$g" "$n"
            raft_port "$g" "$n"
        done
    done
}

check_ports() {
    local ports dup p
    ports="$(all_ports)"
    dup="$(sort -n <<<"$ports" | uniq -d | head -n 1)"
    [[ -z "$dup" ]] || die "port $dup would be used twice: set RAFTMQ_*_PORT_BASE further apart"
    while read -r p; do
        ((p >= 1 && p <= 65535)) || die "port $p is out of range"
        port_in_use "$p" && die "port $p is in use"
    done <<<"$ports"
    return 0
}

# Fails if any process recorded in the cluster folder still runs.
check_nothing_running() {
    local f pid running=()
    for f in "$CLUSTER_DIR"/*.pid; do
        [[ -f "$f" ]] || continue
        pid="$(<"$f")"
        if is_broker_pid "$pid" || is_namesrv_pid "$pid"; then
            running+=("$(basename "$f" .pid) (pid $pid)")
        fi
    done
    ((${#running[@]} == 0)) ||
        die "already running: ${running[*]}; use 'status', 'restart NODE' or 'down' first"
}

cmd_up() {
    local g i n leader failed=0
    parse_up_args "$@"
    check_nothing_running
    check_ports
    ensure_binaries
    write_env
    for ((i = 1; i <= NUM_NAMESRV; i++)); do start_namesrv "$i"; done
    for ((i = 1; i <= NUM_NAMESRV; i++)); do wait_for_namesrv "$i" || failed=1; done
    if ((failed)); then
        echo "a name server did not come up; stopping what was started" >&2
        cmd_down
        exit 1
    fi
    for ((g = 1; g <= NUM_GROUPS; g++)); do
        for n in "${NODES[@]}"; do start_node "$g" "$n"; done
    done
    echo "waiting up to ${WAIT_SECS}s for each group's leader..."
    local leaders=()
    for ((g = 1; g <= NUM_GROUPS; g++)); do
        if ! leader="$(wait_for_leader "$g")"; then
            echo "group $(group_name "$g") did not come up; stopping what was started" >&2
            cmd_down
            exit 1
        fi
        leaders+=("$leader")
    done
    if ((NUM_NAMESRV > 0)); then
        echo "waiting for the groups to register with the name servers..."
        wait_for_registration
    fi
    echo
    echo "cluster is up in $CLUSTER_DIR"
    for ((i = 1; i <= NUM_NAMESRV; i++)); do
        echo "  namesrv $i: $(namesrv_addr "$i")"
    done
    for ((g = 1; g <= NUM_GROUPS; g++)); do
        echo "  group $(group_name "$g"):"
        for n in "${NODES[@]}"; do
            echo "    node $(node_ref "$g" "$n"): client $(client_addr "$g" "$n")$([[ "$n" == "${leaders[g - 1]}" ]] && echo "  (leader)")"
        done
    done
    echo
    echo "  export RAFTMQ_SERVER=$(group_client_addrs 1)"
    if ((NUM_NAMESRV > 0)); then
        echo "  export RAFTMQ_NAMESRV=$(all_namesrv_addrs)"
        echo "  $CLI namesrv groups"
        echo "  $CLI topic create demo --queues 8 --groups all"
    else
        echo "  $CLI topic create demo --queues 8"
    fi
    echo "  $0 status | kill-leader [gK] | restart NODE | logs NODE | stop-group gK | down [--purge]"
}

cmd_status() {
    local g n i pid state addrs
    [[ -f "$ENV_FILE" ]] || echo "(no $ENV_FILE: showing defaults)"
    for ((i = 1; i <= NUM_NAMESRV; i++)); do
        if pid="$(unit_pid "ns.$i")"; then state="running (pid $pid)"; else state="not running"; fi
        printf 'namesrv %s: %-22s listen %s\n' "$i" "$state" "$(namesrv_addr "$i")"
    done
    for ((g = 1; g <= NUM_GROUPS; g++)); do
        for n in "${NODES[@]}"; do
            if pid="$(unit_pid "$g.$n")"; then state="running (pid $pid)"; else state="not running"; fi
            printf 'node %-5s %-8s %-22s client %s  raft %s\n' "$(node_ref "$g" "$n"):" "$(group_name "$g")" \
                "$state" "$(client_addr "$g" "$n")" "$(raft_addr "$g" "$n")"
        done
    done
    if [[ ! -x "$CLI" ]]; then
        echo "(no CLI at $CLI)"
        return 0
    fi
    addrs="$(running_namesrv_addrs)"
    if [[ -n "$addrs" ]]; then
        echo
        echo "== name server view ($addrs)"
        "$CLI" --namesrv "$addrs" --timeout-secs 3 namesrv groups || echo "(namesrv groups failed)"
    fi
    for ((g = 1; g <= NUM_GROUPS; g++)); do
        echo
        echo "== group $(group_name "$g")"
        "$CLI" --server "$(group_client_addrs "$g")" --timeout-secs 3 cluster status || echo "(cluster status failed)"
    done
}

cmd_kill_leader() {
    local g id pid
    parse_group_ref "${1:-g1}"
    g=$REF_G
    id="$(leader_id "$g")" || die "group $(group_name "$g"): no leader known to any running node"
    pid="$(unit_pid "$g.$id")" || die "group $(group_name "$g"): the leader is node $(node_ref "$g" "$id") but it has no live pid file"
    kill -KILL "$pid"
    echo "killed the leader of group $(group_name "$g"): node $(node_ref "$g" "$id") (pid $pid, client $(client_addr "$g" "$id"))"
    rm -f "$(pid_file "$g.$id")"
    echo "bring it back with: $0 restart $(node_ref "$g" "$id")"
}

# Waits until node G.N answers the admin service again.
wait_for_node() {
    local g=$1 n=$2 deadline=$((SECONDS + WAIT_SECS))
    until "$CLI" --server "$(client_addr "$g" "$n")" --timeout-secs 3 cluster status >/dev/null 2>&1; do
        unit_pid "$g.$n" >/dev/null || {
            explain_exit "$g.$n"
            die "node $(node_ref "$g" "$n") exited"
        }
        ((SECONDS < deadline)) || die "node $(node_ref "$g" "$n") does not answer after ${WAIT_SECS}s"
        sleep 0.5
    done
}

cmd_restart() {
    local g n
    parse_node_ref "${1:-}"
    g=$REF_G n=$REF_N
    [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE: run '$0 up' first"
    [[ -x "$BROKER" ]] || die "no broker binary at $BROKER"
    if unit_pid "$g.$n" >/dev/null; then
        echo "node $(node_ref "$g" "$n") is running: stopping it first"
        stop_units 10 "$g.$n"
    fi
    start_node "$g" "$n"
    wait_for_node "$g" "$n"
    echo "node $(node_ref "$g" "$n") is back"
}

cmd_stop_group() {
    local g units
    parse_group_ref "${1:-}"
    g=$REF_G
    mapfile -t units < <(group_units "$g")
    stop_units 10 "${units[@]}"
    echo "group $(group_name "$g") stopped; start it again with: $0 start-group g$g"
}

cmd_start_group() {
    local g n started=0 leader
    parse_group_ref "${1:-}"
    g=$REF_G
    [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE: run '$0 up' first"
    [[ -x "$BROKER" ]] || die "no broker binary at $BROKER"
    for n in "${NODES[@]}"; do
        if unit_pid "$g.$n" >/dev/null; then
            echo "node $(node_ref "$g" "$n") is already running"
        else
            start_node "$g" "$n"
            started=1
        fi
    done
    ((started)) || return 0
    leader="$(wait_for_leader "$g")" || die "group $(group_name "$g") has no leader"
    echo "group $(group_name "$g") is up; leader: node $(node_ref "$g" "$leader")"
}

cmd_kill_namesrv() {
    local i pid
    parse_namesrv_ref "${1:-}"
    i=$REF_I
    pid="$(unit_pid "ns.$i")" || die "namesrv $i is not running"
    kill -KILL "$pid"
    rm -f "$(pid_file "ns.$i")"
    echo "killed namesrv $i (pid $pid, $(namesrv_addr "$i")); bring it back with: $0 start-namesrv $i"
}

cmd_start_namesrv() {
    local i pid
    parse_namesrv_ref "${1:-}"
    i=$REF_I
    [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE: run '$0 up' first"
    [[ -x "$NAMESRV_BIN" ]] || die "no name server binary at $NAMESRV_BIN"
    if pid="$(unit_pid "ns.$i")"; then
        echo "namesrv $i is already running (pid $pid)"
        return 0
    fi
    port_in_use "$(namesrv_port "$i")" && die "port $(namesrv_port "$i") is in use"
    start_namesrv "$i"
    wait_for_namesrv "$i" || die "namesrv $i did not come up"
    echo "namesrv $i is back; brokers register with it within their registration interval"
}

cmd_down() {
    local purge=0 brokers namesrvs
    [[ "${1:-}" == --purge ]] && purge=1
    mapfile -t brokers < <(broker_units)
    mapfile -t namesrvs < <(namesrv_units)
    stop_units 10 "${brokers[@]}"
    ((${#namesrvs[@]} == 0)) || stop_units 10 "${namesrvs[@]}"
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
    local ref=${1:-} u
    if [[ "$ref" =~ ^ns([0-9]+)$ ]]; then
        parse_namesrv_ref "${BASH_REMATCH[1]}"
        u="ns.$REF_I"
    else
        parse_node_ref "$ref"
        u="$REF_G.$REF_N"
    fi
    if [[ "${2:-}" == -f ]]; then
        exec tail -n 100 -f "$(log_file "$u")"
    fi
    tail -n "${LOG_LINES:-100}" "$(log_file "$u")"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
up)
    shift
    cmd_up "$@"
    ;;
status) cmd_status ;;
kill-leader) cmd_kill_leader "${2:-}" ;;
restart) cmd_restart "${2:-}" ;;
logs) cmd_logs "${2:-}" "${3:-}" ;;
stop-group) cmd_stop_group "${2:-}" ;;
start-group) cmd_start_group "${2:-}" ;;
kill-namesrv) cmd_kill_namesrv "${2:-}" ;;
start-namesrv) cmd_start_namesrv "${2:-}" ;;
down) cmd_down "${2:-}" ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
