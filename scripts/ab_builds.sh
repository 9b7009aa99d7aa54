#!/usr/bin/env bash
# Two broker builds, one after the other, round by round, on one raftmq workload: the way
# to compare a change against the build before it on a disk whose speed swings from
# minute to minute (a swing then hits both builds alike).
#
#   scripts/ab_builds.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [WORKLOAD] [EXTRA raftmq-bench ARGS...]
#
# Each BIN_DIR holds release builds of raftmq-broker and raftmq-namesrv; the benchmark
# program is NEW_BIN_DIR's raftmq-bench unless RAFTMQ_BENCH names one, or is each
# BIN_DIR's own with RAFTMQ_BENCH=own (to compare changes to the client library, which
# the benchmark program is built with). ROUNDS defaults to
# 5, WORKLOAD to 1KiB-w1024-max (e.g. `rate --fixed-rate 30000` for a fixed rate, where
# CPU per message compares builds with less noise). Data goes to $RAFTMQ_BENCH_DATA
# (default /tmp). Prints each run's result line (msgs/s ... cpu_s/M cli_cpu/M rss),
# labelled old/new and round. Every run stops by itself (raftmq-bench's own bounds).
set -euo pipefail

old=${1:?usage: ab_builds.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [WORKLOAD] [EXTRA ARGS...]}
new=${2:?usage: ab_builds.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [WORKLOAD] [EXTRA ARGS...]}
rounds=${3:-5}
workload=${4:-1KiB-w1024-max}
shift $(($# >= 4 ? 4 : $#))
bench=${RAFTMQ_BENCH:-$new/raftmq-bench}
progs=("$bench")
[[ $bench == own ]] && progs=("$old/raftmq-bench" "$new/raftmq-bench")
for b in "${progs[@]}"; do
    if [[ ! -x $b ]]; then
        echo "ab_builds.sh: no benchmark program at $b (copy raftmq-bench there or set RAFTMQ_BENCH)" >&2
        exit 2
    fi
done
data_dir=${RAFTMQ_BENCH_DATA:-/tmp}
mkdir -p "$data_dir"

for round in $(seq 1 "$rounds"); do
    for label in old new; do
        dir=$old
        [[ $label == new ]] && dir=$new
        prog=$bench
        [[ $bench == own ]] && prog=$dir/raftmq-bench
        line=$(RAFTMQ_BIN_DIR=$dir "$prog" --systems raftmq --only "$workload" --reps 1 \
            --data-dir "$data_dir" "$@" 2>&1 | grep -E '^raftmq +[0-9]' || true)
        echo "$label round $round: ${line:-no result (run the command by hand to see why)}"
    done
done
