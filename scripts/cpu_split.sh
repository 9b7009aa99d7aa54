#!/usr/bin/env bash
# Where the CPU goes during one raftmq benchmark run: on-CPU time of every thread of the
# benchmark client and of the three brokers, summed by thread name, over a window of the
# measured phase. Read from /proc/<pid>/task/<tid>/schedstat (exact run time), not from a
# sampling profiler: on this VM `perf record -p` undersamples threads that run in short
# bursts (see docs/BENCHMARKS.md, "Per-operation costs").
#
#   scripts/cpu_split.sh BIN_DIR [WORKLOAD] [EXTRA raftmq-bench ARGS...]
#
# BIN_DIR holds release builds of raftmq-bench, raftmq-broker and raftmq-namesrv.
# WORKLOAD defaults to 1KiB-w1024-max; e.g. `rate --fixed-rate 1000` for a fixed rate.
# Prints "pid thread-name ms-on-cpu share-of-a-core" per process and name, then the run's
# result line. Everything it starts stops with the benchmark (at most about a minute).
set -euo pipefail

bin_dir=${1:?usage: cpu_split.sh BIN_DIR [WORKLOAD] [EXTRA ARGS...]}
workload=${2:-1KiB-w1024-max}
shift $(($# >= 2 ? 2 : 1))
data_dir=${RAFTMQ_BENCH_DATA:-/tmp}
settle=${SETTLE_SECS:-3.5} # startup and warm-up of a full-length run
window=${WINDOW_SECS:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

RAFTMQ_BIN_DIR=$bin_dir "$bin_dir/raftmq-bench" --systems raftmq --only "$workload" \
    --reps 1 --data-dir "$data_dir" "$@" >"$out/bench.txt" 2>&1 &
bench=$!

snapshot() {
    local p t
    for p in $bench $(pgrep -P "$bench" || true); do
        for t in /proc/"$p"/task/*; do
            [ -r "$t/schedstat" ] || continue
            printf '%s %s %s %s\n' "$p" "${t##*/}" "$(tr ' ' '_' <"$t/comm")" \
                "$(cut -d' ' -f1 "$t/schedstat")"
        done
    done 2>/dev/null
}

sleep "$settle"
snapshot >"$out/a"
sleep "$window"
snapshot >"$out/b"
wait "$bench" || true

awk -v secs="$window" '
    NR == FNR { start[$1 " " $2] = $4; next }
    ($1 " " $2) in start { ns[$1 " " $3] += $4 - start[$1 " " $2] }
    END {
        for (k in ns) if (ns[k] > 0) printf "%s %.0f %.2f\n", k, ns[k] / 1e6, ns[k] / 1e9 / secs
    }' "$out/a" "$out/b" | sort -k1,1n -k3,3nr
grep -E '^system |^raftmq  ' "$out/bench.txt" | tail -2
