#!/usr/bin/env bash
# Fetches the RustSec advisory database at the revision flake.lock pins into target/advisory-db,
# unless $ADVISORY_DB or the offline snapshot (../shared/advisory-db) provides it or the clone is
# already there; says which. $ADVISORY_DB_URL overrides where it is cloned from.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tests/audit/db.bash
. tests/audit/db.bash

source=$(advisory_db_source)
if [ "$source" != "$advisory_db_clone" ]; then
  echo "advisory-db: using $source"
  exit 0
fi
if [ "$(git -C "$advisory_db_clone" rev-parse HEAD 2>/dev/null)" = "$advisory_db_rev" ]; then
  echo "advisory-db: using $advisory_db_clone (revision $advisory_db_rev)"
  exit 0
fi
url=${ADVISORY_DB_URL:-https://github.com/rustsec/advisory-db}
echo "advisory-db: no snapshot at $advisory_db_snapshot and no ADVISORY_DB; fetching revision $advisory_db_rev from $url"
rm -rf "$advisory_db_clone"
mkdir -p "$(dirname "$advisory_db_clone")"
git clone --quiet --no-checkout "$url" "$advisory_db_clone"
if ! git -C "$advisory_db_clone" checkout --quiet --detach "$advisory_db_rev"; then
  rm -rf "$advisory_db_clone"
  echo "advisory-db: $url has no revision $advisory_db_rev (flake.lock's); nothing kept" >&2
  exit 1
fi
echo "advisory-db: $advisory_db_clone is at $advisory_db_rev"
