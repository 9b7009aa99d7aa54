#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy (warnings are errors), all Rust tests
# (unit, storage conformance, crash and real-process tests) and the official RocketMQ
# Python client's tests against real brokers. Installs what the tests need on a fresh
# Debian machine when run as root (libclang-dev for RocksDB; python3-venv and the pinned
# client in a venv under ~/.cache/raftmq-ci).
#
#   scripts/test.sh              everything
#   scripts/test.sh --deps-only  only the system packages (used by scripts/demo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the build or the tests need: RocksDB's bindings are generated with
# libclang; the chaos tests cut links between nodes in network namespaces with iproute2
# and iptables; jemalloc (the brokers' allocator) is built from source with make.
APT_PACKAGES=(libclang-dev iproute2 iptables make)

ensure_apt() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            echo "need root to install ${missing[*]}; install them and rerun" >&2
            exit 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
}

ensure_apt
if [[ "${1:-}" == "--deps-only" ]]; then
    exit 0
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
# As root, the tests that cut links in network namespaces must run, not skip.
if [[ $(id -u) -eq 0 ]]; then
    export RAFTMQ_REQUIRE_NETNS=1
fi
status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast || status=$?
else
    cargo test --workspace --locked --no-fail-fast || status=$?
fi
echo "== official Python client against real brokers"
# Against the binaries the Rust tests just built (debug; integration tests build their
# package's binaries with the same features, so nothing is rebuilt here). The venv is
# created or reused.
tests/python/run.sh || status=$?
exit "$status"
