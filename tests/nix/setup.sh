#!/usr/bin/env bash
# Installs what tests/nix/check.sh needs, only what is missing; safe to run any number of times.
#   nix-bin (Debian): nix-instantiate --parse and an offline `nix flake metadata`
#   jq (Debian): nix/check-image.sh, which tests/nix/check.sh runs on generated image archives
#   deadnix, nixpkgs-fmt (crates.io, pinned): the Nix linters
set -euo pipefail

export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

debs=()
{ command -v nix-instantiate >/dev/null && command -v nix >/dev/null; } || debs+=(nix-bin)
command -v jq >/dev/null || debs+=(jq)
if [ "${#debs[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${debs[@]}" >/dev/null
fi

crates=()
command -v deadnix >/dev/null || crates+=(deadnix@1.3.1)
command -v nixpkgs-fmt >/dev/null || crates+=(nixpkgs-fmt@1.3.0)
if [ "${#crates[@]}" -gt 0 ]; then
  cargo install --locked --quiet "${crates[@]}"
fi

# Fails here, not later, if anything is still missing (nixpkgs-fmt --version exits 1, so no versions).
command -v nix nix-instantiate jq deadnix nixpkgs-fmt
