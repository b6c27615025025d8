#!/usr/bin/env bash
# cargo audit, offline, against the RustSec advisory database at the revision flake.lock pins: the
# database `checks.audit` of `nix flake check` reads, so a new advisory or a dependency bump shows
# up here rather than on a user's machine. Exits non-zero when any check fails.
#
#   1. pinned-db      the snapshot is flake.lock's advisory-db revision (its NAR hash, or its git HEAD)
#   2. audit          `cargo audit` finds nothing beyond what .cargo/audit.toml ignores, with a reason
#   3. audit-bites    without those ignores it reports exactly the ignored advisories: each ignore is
#                     still needed, and the scan really read the database
#
# The database: $ADVISORY_DB, else the offline snapshot beside the repository, else the clone
# tests/setup fetches (tests/audit/db.bash says where each is).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 2
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=tests/audit/db.bash
. tests/audit/db.bash || exit 2
rev=$advisory_db_rev
nar_hash=$(lock_field narHash) || exit 2

snapshot=$(advisory_db_source)
if [ ! -e "$snapshot" ]; then
  echo "FAIL  no advisory-db at $snapshot: run tests/setup (it fetches revision $rev), or set ADVISORY_DB" >&2
  exit 1
fi
if [ -d "$snapshot" ]; then
  db=$(cd "$snapshot" && pwd) || exit 2 # absolute: audit-bites runs cargo audit from another folder
else
  tar -xzf "$snapshot" -C "$work" || exit 1
  db=$work/advisory-db
fi

# shellcheck source=tests/checks.bash
. "$root/tests/checks.bash"

pinned_db() {
  if [ -d "$db/.git" ]; then
    local head
    head=$(git -C "$db" rev-parse HEAD)
    [ "$head" = "$rev" ] || { echo "$db is at $head; flake.lock pins $rev"; return 1; }
  else
    local found
    found=$(NIX_CONFIG='experimental-features = nix-command' nix hash path "$db") || return 1
    [ "$found" = "$nar_hash" ] || { echo "$db hashes to $found; flake.lock pins $nar_hash ($rev)"; return 1; }
  fi
}

# The ids .cargo/audit.toml ignores, one a line.
ignored_ids() {
  python3 -c 'import tomllib; print("\n".join(sorted(tomllib.load(open(".cargo/audit.toml","rb"))["advisories"]["ignore"])))'
}

# cargo audit reads .cargo/audit.toml from the folder it runs in: from the root it applies the
# ignores, from an empty folder with a copy of the lock file it does not.
audit() {
  cargo audit --no-fetch --db "$db" --file "$root/Cargo.lock"
}

audit_bites() {
  mkdir -p "$work/bare"
  cp Cargo.lock "$work/bare/"
  (cd "$work/bare" && cargo audit --no-fetch --db "$db" --json --file Cargo.lock) >"$work/report.json"
  local status=$?
  [ "$status" -ne 0 ] || { echo "cargo audit without the ignores passed: the ignores are not needed or the scan read nothing"; return 1; }
  local found expected
  found=$(python3 -c 'import json,sys; print("\n".join(sorted(v["advisory"]["id"] for v in json.load(sys.stdin)["vulnerabilities"]["list"])))' <"$work/report.json") || return 1
  expected=$(ignored_ids) || return 1
  [ "$found" = "$expected" ] || { printf 'without the ignores cargo audit reports:\n%s\nbut .cargo/audit.toml ignores:\n%s\n' "$found" "$expected"; return 1; }
}

if ! command -v cargo-audit >/dev/null; then
  echo "FAIL  cargo-audit is not installed (run tests/setup)"
  exit 1
fi
check pinned-db pinned_db
check audit audit
check audit-bites audit_bites

summary audit
