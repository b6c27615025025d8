#!/usr/bin/env bash
# Installs what the benchmark needs and this machine lacks: wrk (HTTP load) and PostgreSQL with
# pgbench (Debian's `postgresql` package brings the server, initdb and pgbench). Idempotent.
set -euo pipefail

have_pgbench() {
    compgen -G '/usr/lib/postgresql/*/bin/pgbench' >/dev/null || { [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/pgbench" ]; }
}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
have_pgbench || missing+=(postgresql)
command -v runuser >/dev/null || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
    echo "bench setup: wrk and pgbench present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "bench setup: missing ${missing[*]}: install with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "bench setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
echo "bench setup: done"
