#!/usr/bin/env bash
# Installs what tests/nix/check.sh needs, only what is missing; safe to run any number of times.
#   nix-bin (Debian): nix-instantiate --parse and an offline `nix flake metadata`
#   deadnix, nixpkgs-fmt (crates.io, pinned): the Nix linters
set -euo pipefail

export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

if ! command -v nix-instantiate >/dev/null || ! command -v nix >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nix-bin >/dev/null
fi

crates=()
command -v deadnix >/dev/null || crates+=(deadnix@1.3.1)
command -v nixpkgs-fmt >/dev/null || crates+=(nixpkgs-fmt@1.3.0)
if [ "${#crates[@]}" -gt 0 ]; then
  cargo install --locked --quiet "${crates[@]}"
fi

# Fails here, not later, if anything is still missing (nixpkgs-fmt --version exits 1, so no versions).
command -v nix nix-instantiate deadnix nixpkgs-fmt
