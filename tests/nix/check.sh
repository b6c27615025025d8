#!/usr/bin/env bash
# Offline checks of the Nix build, runnable on a machine without nixpkgs, a binary cache or GitHub
# (tests/nix/setup.sh installs the tools). Exits non-zero when any check fails.
#
#   1. nix-parse     every .nix file in the repository parses (nix-instantiate --parse)
#   2. flake-lock    flake.lock matches the inputs declared in flake.nix (nix flake metadata, offline,
#                    never re-locking)
#   3. deadnix       no unused bindings or arguments (deadnix --fail)
#   4. nix-fmt       every .nix file is formatted by nixpkgs-fmt (the flake's `formatter`)
#   5. no-c-tls      Cargo.lock has no C TLS crate (aws-lc-sys, aws-lc-rs, openssl-sys, openssl,
#                    native-tls): the static musl images depend on it
#   6. no-c-tls-bites  the same assertion rejects a lock file that has one, so it cannot pass vacuously
#
# Usage: tests/nix/check.sh            (from anywhere inside the repository)
#        CARGO_LOCK=path tests/nix/check.sh   to assert a different lock file in step 5
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 2
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
export NIX_CONFIG=$'experimental-features = nix-command flakes\nflake-registry = \nsubstituters ='

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
check() {
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    echo "FAIL  $name"
    sed 's/^/      /' "$work/out"
  fi
}

for tool in nix nix-instantiate deadnix nixpkgs-fmt; do
  if ! command -v "$tool" >/dev/null; then
    echo "FAIL  $tool is not installed (run tests/nix/setup.sh)"
    failed=$((failed + 1))
  fi
done

# Tracked and new (not ignored) files, so a file that is not committed yet is checked too.
mapfile -t nix_files < <(git ls-files --cached --others --exclude-standard -- '*.nix' | sort -u)

parse_all() {
  [ "${#nix_files[@]}" -gt 0 ] || { echo "no .nix files found"; return 1; }
  local file status=0
  for file in "${nix_files[@]}"; do
    nix-instantiate --parse "$file" >/dev/null || status=1
  done
  return "$status"
}

# Only flake.nix's `inputs` and flake.lock matter here; a copy keeps Nix from reading the work tree
# (target/ included) and works before the files are committed.
lock_matches() {
  local flake=$work/flake
  mkdir -p "$flake"
  cp flake.nix flake.lock "$flake/"
  cp -r nix "$flake/"
  nix flake metadata --no-update-lock-file "path:$flake" || {
    echo "=> flake.lock does not match the inputs of flake.nix (Nix tried to lock them anew)"
    return 1
  }
}

# Cargo.lock lists each package as `name = "..."`; any of these names is a C TLS stack.
no_c_tls() {
  local lock=$1
  [ -f "$lock" ] || { echo "$lock does not exist"; return 1; }
  grep -q '^\[\[package\]\]' "$lock" || { echo "$lock has no [[package]] entries"; return 1; }
  if grep -nE '^name = "(aws-lc-sys|aws-lc-rs|openssl-sys|openssl|native-tls)"$' "$lock"; then
    echo "$lock contains a C TLS crate (above); use rustls with the ring provider"
    return 1
  fi
}

rejects_c_tls() {
  printf '%s\n' 'version = 4' '' '[[package]]' 'name = "aws-lc-sys"' 'version = "0.30.0"' >"$work/bad.lock"
  ! no_c_tls "$work/bad.lock"
}

check nix-parse parse_all
check flake-lock lock_matches
check deadnix deadnix --fail "${nix_files[@]}"
check nix-fmt nixpkgs-fmt --check "${nix_files[@]}"
check no-c-tls no_c_tls "${CARGO_LOCK:-Cargo.lock}"
check no-c-tls-bites rejects_c_tls

echo "nix: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
