#!/usr/bin/env bash
# Installs what the benchmark needs and this machine lacks: wrk (HTTP load), PostgreSQL with pgbench
# (Debian's `postgresql` package brings the server, initdb and pgbench), and the seed's Python venv:
# tests/bench/seed/requirements.txt installed into target/bench-seed-venv (or $BENCH_SEED_VENV).
# Idempotent: a venv holding exactly the pinned set is left alone, one holding anything else is
# made anew.
#
#   tests/bench/setup.sh              everything for a quick run (apt-get needs root)
#   tests/bench/setup.sh --musl       also what the static musl build needs (full runs)
#   tests/bench/setup.sh --seed-venv  only the venv (no root: what the seed's own test needs)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${BENCH_SEED_VENV:-$root/target/bench-seed-venv}"
requirements="$root/tests/bench/seed/requirements.txt"

pinned() { grep -Ev '^[[:space:]]*(#|$)' "$requirements" | LC_ALL=C sort; }
installed() { "$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | LC_ALL=C sort; }

seed_venv() {
    if [ -x "$venv/bin/python" ] && [ "$(installed)" = "$(pinned)" ]; then
        echo "bench setup: seed venv holds the pinned set ($venv)"
        return
    fi
    echo "bench setup: installing the seed's pinned packages into $venv"
    # --clear: packages of an older pin set must not linger beside the new ones.
    python3 -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    if [ "$(installed)" != "$(pinned)" ]; then
        echo "bench setup: $venv differs from the pins in $requirements (< pinned, > installed):" >&2
        diff <(pinned) <(installed) >&2 || true
        exit 1
    fi
}

if [ "${1:-}" = "--seed-venv" ]; then
    seed_venv
    exit 0
fi
with_musl=false
[ "${1:-}" = "--musl" ] && with_musl=true

have_pgbench() {
    compgen -G '/usr/lib/postgresql/*/bin/pgbench' >/dev/null || { [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/pgbench" ]; }
}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
have_pgbench || missing+=(postgresql)
command -v runuser >/dev/null || missing+=(util-linux)
# Debian's python3 makes venvs only with python3-venv (which brings ensurepip).
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# The static musl build of the frontend (the images' C library) needs musl's C compiler for ring
# and mimalloc, and Rust's musl target.
if $with_musl; then
    command -v musl-gcc >/dev/null || missing+=(musl-tools)
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "bench setup: wrk, pgbench and python3 -m venv present"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench setup: missing ${missing[*]}: install with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "bench setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if $with_musl && ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "bench setup: adding Rust's x86_64-unknown-linux-musl target"
    rustup target add x86_64-unknown-linux-musl
fi
seed_venv
echo "bench setup: done"
