#!/usr/bin/env bash
# The images contract, read back from one image tarball as dockerTools.buildLayeredImage writes it:
# user 65534:65534, port 8080, PORT and SSL_CERT_FILE set, the binary as entrypoint, nothing in the
# image but the store paths of the binary's and the CA bundle's closure (no shell, no libc, no
# /bin or /etc), and the archive within its size budget. checks.images-contract runs it for both
# images; tests/nix/check.sh runs it against archives laid out the same way (tests/nix/image_archive.py).
#
# Usage: check-image.sh NAME ARCHIVE ENTRYPOINT CLOSURE MAX_BYTES [ENV_ENTRY...]
#   NAME        image name, for messages
#   ARCHIVE     the .tar.gz docker-archive
#   ENTRYPOINT  absolute path of the binary the image must start
#   CLOSURE     file with one store path per line (closureInfo's store-paths): exactly these may
#               be in the image
#   MAX_BYTES   size budget of the archive
#   ENV_ENTRY   NAME=VALUE the image's Env must hold as well (e.g. the frontend's mimalloc options)
# Needs bash, GNU tar (with gzip), jq and coreutils. Exits 1 with one line per broken promise.
set -euo pipefail

[ "$#" -ge 5 ] || { echo "usage: $0 NAME ARCHIVE ENTRYPOINT CLOSURE MAX_BYTES [ENV_ENTRY...]" >&2; exit 2; }
name=$1 archive=$2 entrypoint=$3 closure=$4 max_bytes=$5
shift 5

problems=()
problem() { problems+=("images-contract: $name: $*"); }
fatal() { echo "images-contract: $name: $*" >&2; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# buildLayeredImage pipes the stream through gzip (pigz); the flake's result names it *.tar.gz.
[ "$(od -An -tx1 -N2 "$archive" | tr -d ' \n')" = 1f8b ] || fatal "$archive is not gzip-compressed"
size=$(stat -c %s "$archive")
[ "$size" -le "$max_bytes" ] || problem "$size bytes, over the budget of $max_bytes bytes"

tar -xzf "$archive" -C "$dir" || fatal "cannot unpack $archive"
[ -f "$dir/manifest.json" ] || fatal "no manifest.json"
jq -e 'length == 1' "$dir/manifest.json" >/dev/null || fatal "manifest.json does not describe exactly one image"
config=$dir/$(jq -r '.[0].Config' "$dir/manifest.json")
[ -f "$config" ] || fatal "the config named in manifest.json is missing"

jq -e '.config.User == "65534:65534"' "$config" >/dev/null \
  || problem "User is $(jq -c '.config.User' "$config"), not \"65534:65534\""
jq -e '.config.ExposedPorts // {} | keys == ["8080/tcp"]' "$config" >/dev/null \
  || problem "exposed ports are $(jq -c '.config.ExposedPorts // {} | keys' "$config"), not [\"8080/tcp\"]"
jq -e '.config.Env // [] | index("PORT=8080") != null' "$config" >/dev/null \
  || problem "Env has no PORT=8080 ($(jq -c '[.config.Env // [] | .[] | select(startswith("PORT="))]' "$config"))"
jq -e --arg exe "$entrypoint" '.config.Entrypoint == [$exe]' "$config" >/dev/null \
  || problem "Entrypoint is $(jq -c '.config.Entrypoint' "$config"), not [\"$entrypoint\"]"
for entry in "$@"; do
  jq -e --arg entry "$entry" '.config.Env // [] | index($entry) != null' "$config" >/dev/null \
    || problem "Env has no $entry"
done
ca_bundle=$(jq -r '.config.Env // [] | map(select(startswith("SSL_CERT_FILE="))) | first // "" | ltrimstr("SSL_CERT_FILE=")' "$config")
[ -n "$ca_bundle" ] || problem "Env has no SSL_CERT_FILE"

# Every entry of every layer, as a path relative to the image root. nixpkgs' stream_layered_image.py
# names store-layer members absolutely (/nix/store/…, which `tar -t` lists as written) and the
# customisation layer is a GNU tar of `.` (./…): strip either prefix, and the trailing / of
# directories, so `/nix/store/x/`, `./nix/store/x` and `nix/store/x` all read nix/store/x.
jq -r '.[0].Layers[]' "$dir/manifest.json" >"$dir/layers"
[ -s "$dir/layers" ] || fatal "manifest.json lists no layers"
while read -r layer; do
  [ -f "$dir/$layer" ] || fatal "layer $layer named in manifest.json is missing"
  # --absolute-names: list as stored, without the "Removing leading /" warning per layer.
  tar --absolute-names -tf "$dir/$layer" || fatal "cannot list layer $layer"
done <"$dir/layers" | sed -E 's#^(\./|/)+##; s#/+$##' >"$dir/entries"

# Only the root, /nix, /nix/store and what is inside store paths may be in the image.
if grep -Ev '^(|nix|nix/store|nix/store/.+)$' "$dir/entries" >"$dir/outside"; then
  problem "files outside /nix/store: $(sort -u "$dir/outside" | head -5 | paste -sd ' ')"
fi

in_image() { grep -qxF -- "${1#/}" "$dir/entries"; }
in_image "$entrypoint" || problem "the entrypoint $entrypoint is not in the image"
if [ -n "$ca_bundle" ] && ! in_image "$ca_bundle"; then
  problem "SSL_CERT_FILE=$ca_bundle is not in the image"
fi

sed -nE 's#^nix/store/([^/]+).*#\1#p' "$dir/entries" | sort -u >"$dir/found"
xargs -r -n1 basename <"$closure" | sort -u >"$dir/expected"
[ -s "$dir/found" ] || problem "no store paths in the image"
if ! diff -u "$dir/expected" "$dir/found" >"$dir/diff"; then
  problem "store paths differ from the binary + CA bundle closure (- missing, + extra): $(grep -E '^[-+][^-+]' "$dir/diff" | paste -sd ' ')"
fi

# A libc or a shell, judged by the store path's package name, never by a substring of the whole
# name: a real build's frontend is `<hash>-frontend-static-x86_64-unknown-linux-musl-0.1.0`.
# A store path name is `<32 nix-base32 characters>-<name>`. The package name is what Nix's
# builtins.parseDrvName calls the name: everything before the first dash not followed by a letter
# (the version, and any output name after it, follow: glibc-2.42-67-bin is glibc). What nixpkgs'
# make-derivation.nix appends to a pname before the version, `-static` for a static host and
# `-<config>` when host and build differ (`${pname}${staticMarker}${hostSuffix}-${version}`), is
# not part of the package either: musl-static-x86_64-unknown-linux-musl-1.2.5 (pkgsStatic's) is
# musl. nixpkgs names bashInteractive bash-interactive and coreutils-full coreutils-full; both are
# that shell and those tools. glibc's pname gains `-gd` (withGd) and then `-nolibgcc` (built by GCC
# without libgcc), and glibc_multi is named `<glibc's name>-multi-<version>`: all of them glibc
# (glibc-locales is not). uutils-coreutils is rejected as coreutils is: the same tools, in Rust.
libc_or_shell='^(glibc(-gd)?(-nolibgcc)?(-multi)?|musl|bash|bash-interactive|dash|coreutils|coreutils-full|uutils-coreutils|busybox)(-static)?(-[a-z0-9_]+-unknown-linux-[a-z0-9_]+)?$'
libc=()
while read -r found; do
  if [[ ! $found =~ ^[0-9a-df-np-sv-z]{32}-(.+)$ ]]; then
    problem "not a store path name (<32 nix-base32 characters>-<name>): $found"
    continue
  fi
  package=${BASH_REMATCH[1]%%-[^A-Za-z]*}
  if [[ $package =~ $libc_or_shell ]]; then
    libc+=("$found (${BASH_REMATCH[1]})")
  fi
done <"$dir/found"
if [ "${#libc[@]}" -gt 0 ]; then
  problem "a libc or shell is in the image: $(printf '%s\n' "${libc[@]}" | paste -sd ' ')"
fi

if [ "${#problems[@]}" -gt 0 ]; then
  printf '%s\n' "${problems[@]}" >&2
  exit 1
fi
echo "$name: $size bytes, $(wc -l <"$dir/found") store paths, contract holds"
