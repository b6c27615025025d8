# Where the advisory scan finds the RustSec database at the revision flake.lock pins; sourced by
# tests/audit/check.sh and tests/audit/fetch-db.sh, from the repository root.
#
#   1. $ADVISORY_DB: a folder (a git clone, or an extracted tree) or a .tar.gz of the tree
#   2. ../shared/advisory-db/advisory-db-<rev, 7 hex>.tar.gz beside the repository: the offline snapshot
#   3. target/advisory-db: the clone tests/setup fetches from GitHub when neither is at hand

lock_field() {
  python3 -c 'import json,sys; print(json.load(open("flake.lock"))["nodes"]["advisory-db"]["locked"][sys.argv[1]])' "$1"
}

advisory_db_rev=$(lock_field rev) || return 2
advisory_db_snapshot=../shared/advisory-db/advisory-db-${advisory_db_rev:0:7}.tar.gz
advisory_db_clone=target/advisory-db

# The database to read, by the order above (the clone even when it is missing: the caller says so).
advisory_db_source() {
  if [ -n "${ADVISORY_DB:-}" ]; then
    echo "$ADVISORY_DB"
  elif [ -e "$advisory_db_snapshot" ]; then
    echo "$advisory_db_snapshot"
  else
    echo "$advisory_db_clone"
  fi
}
