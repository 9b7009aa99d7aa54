#!/usr/bin/env bash
# Creates (or reuses) the Python venv the official-client tests run in and prints the
# path of its python on stdout (everything else goes to stderr).
#
#   RAFTMQ_PY_VENV   where the venv lives  (default ~/.cache/raftmq-ci/venv)
#   PYTHON           the interpreter that creates it  (default python3)
#
# Packages come from tests/python/requirements.txt and are installed only when one is
# missing or has another version. If `python3 -m venv` fails because ensurepip is
# missing (Debian's python3 without python3-venv), python3-venv is installed with
# apt-get when running as root.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RAFTMQ_PY_VENV:-$HOME/.cache/raftmq-ci/venv}"
PY="${PYTHON:-python3}"
REQS="$REPO/tests/python/requirements.txt"

log() { echo "python_env: $*" >&2; }

create_venv() {
    if "$PY" -m venv "$VENV" >&2 2>&1; then
        return 0
    fi
    rm -rf "$VENV"
    if "$PY" -c 'import ensurepip' 2>/dev/null; then
        log "'$PY -m venv' failed"
        return 1
    fi
    if [[ $(id -u) -ne 0 ]]; then
        log "ensurepip is missing: install python3-venv (needs root) and rerun"
        return 1
    fi
    local minor
    minor="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    log "ensurepip is missing: installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2 ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "python$minor-venv" >&2
    "$PY" -m venv "$VENV" >&2
}

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    log "creating venv $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    create_venv
fi

# Installed only if some pinned requirement is missing or at another version.
if ! "$VENV/bin/python" - "$REQS" <<'PYEOF' >&2; then
import sys
from importlib.metadata import version, PackageNotFoundError
ok = True
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        print(f"python_env: {name}: have {have}, want {want}")
        ok = False
sys.exit(0 if ok else 1)
PYEOF
    log "installing $(grep -v '^#' "$REQS" | tr '\n' ' ')"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" >&2
fi

echo "$VENV/bin/python"
