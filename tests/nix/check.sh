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
#   7. images-*      nix/check-image.sh (checks.images-contract) against docker-archives laid out
#                    as nixpkgs' stream_layered_image.py + buildLayeredImage lay them out
#                    (tests/nix/image_archive.py, from a fake store whose paths are named as a real
#                    build names them: tests/nix/store-names.nix, checked against real nixpkgs store
#                    names and Cargo.toml): it accepts a correct image, both services' on both
#                    systems (<pname>-static-<triple>-<version>), and rejects, each with its own
#                    message, an extra file (in /bin or beside the store), an extra store path, a
#                    missing CA bundle, a root user, a wrong port, a missing mimalloc option, an
#                    oversize or uncompressed archive, a libc or shell by package name (native,
#                    pkgsStatic's, cross, any output, glibc's variants; not look-alikes), a path
#                    not named like a store path
#   8. nix-fmt-tree  the flake's formatter (nix/nixpkgs-fmt-tree.sh) with no arguments and stdin closed
#                    formats the whole tree and returns; paths and flags are passed through
#
# Usage: tests/nix/check.sh            (from anywhere inside the repository)
#        CARGO_LOCK=path tests/nix/check.sh   to assert a different lock file in step 5
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 2
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
export NIX_CONFIG=$'experimental-features = nix-command flakes\nflake-registry = \nsubstituters ='

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT  # the fake store is read-only

# shellcheck source=tests/checks.bash
. "$root/tests/checks.bash"

for tool in nix nix-instantiate deadnix nixpkgs-fmt python3 jq tar timeout; do
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

# --- images-contract: nix/check-image.sh on archives shaped like the real ones ---
# Store path names as a real build makes them, never made up: tests/nix/store-names.nix evaluates
# nix/rust.nix with nixpkgs' and crane's naming rules (pkgsStatic: <pname>-static-<triple>-<version>).
# images-store-names checks those rules against store names real nixpkgs builds have, and
# images-fixture-names the names below against Cargo.toml.
store_names() {
  nix-instantiate --eval --strict --json -E "with import ./tests/nix/store-names.nix; $1"
}
# A stand-in store hash for NAME: 32 characters of Nix's base-32 alphabet (0-9, a-z but e o t u),
# fixed per name so the archives are reproducible; /nix/store/<hash>-NAME is its store path.
fake_hash() { printf '%s' "$1" | sha256sum | head -c 32 | tr e g; }
store_path() { printf '%s/%s-%s\n' "$store" "$(fake_hash "$1")" "$1"; }

# A fake store standing in for /nix/store: the static binary, the CA bundle, and paths that must
# never be in an image (a shell, something unrelated; rejects_libc_and_shell adds libcs and shells).
# Modes as in the store (0555/0444).
# Images exist on x86_64-linux only (nix/default.nix), so the fixture is that system's frontend.
image_root=$work/image-root
store=/nix/store
store_names '{ services = services "x86_64-linux"; cacert = cacert "x86_64-linux"; }' \
  >"$work/store-names.json" || echo '{}' >"$work/store-names.json"
name_of() { jq -r "$1 // \"\"" "$work/store-names.json"; }
frontend_path=$(store_path "$(name_of .services.frontend.name)")
cacert_path=$(store_path "$(name_of .cacert)")
busybox_path=$(store_path busybox-1.37.0)
tzdata_path=$(store_path tzdata-2025b)
entrypoint=$frontend_path/bin/$(name_of .services.frontend.mainProgram)
# The Env entries nix/images.nix adds to the frontend's image (mimallocEnv), read from the file so
# the fixture and checks.images-contract's arguments cannot drift from it.
# nixpkgs-fmt keeps the list one entry per line, which the sed relies on; an empty result fails every
# images-* check below rather than letting them pass without the entries.
mapfile -t frontend_extra_env < <(sed -n '/mimallocEnv = \[/,/\];/s/^ *"\(.*\)"$/\1/p' nix/images.nix)
ca_bundle=$cacert_path/etc/ssl/certs/ca-bundle.crt
image_budget=$((20 * 1024 * 1024))

make_image_fixture() {
  local r=$image_root
  mkdir -p "$r$frontend_path/bin" "$r$cacert_path/etc/ssl/certs" "$r$busybox_path/bin" \
    "$r$tzdata_path/share/zoneinfo"
  printf '\177ELF static binary stand-in\n' >"$r$entrypoint"
  printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' >"$r$ca_bundle"
  ln -s ca-bundle.crt "$r$cacert_path/etc/ssl/certs/ca-certificates.crt"
  printf 'busybox\n' >"$r$busybox_path/bin/busybox"
  ln -s busybox "$r$busybox_path/bin/sh"
  printf 'UTC\n' >"$r$tzdata_path/share/zoneinfo/UTC"
  chmod 0555 "$r$entrypoint" "$r$busybox_path/bin/busybox"
  chmod 0444 "$r$ca_bundle" "$r$tzdata_path/share/zoneinfo/UTC"
  find "$r$store" -mindepth 1 -type d -exec chmod 0555 {} +

  # The image's `config` as nix/images.nix sets it, and closureInfo's store-paths for it.
  jq -n --arg exe "$entrypoint" --arg ca "$ca_bundle" '{
    Entrypoint: [$exe], User: "65534:65534", ExposedPorts: {"8080/tcp": {}},
    Env: (["PORT=8080", "SSL_CERT_FILE=\($ca)"] + $ARGS.positional),
    Labels: {"org.opencontainers.image.title": "frontend", "org.opencontainers.image.version": "0.1.0"}
  }' --args "${frontend_extra_env[@]}" >"$work/image-config.json"
  printf '%s\n' "$cacert_path" "$frontend_path" >"$work/image-closure"
}

# image_archive [generator args...]: $work/image.tar.gz from the fixture, the right image by default,
# tagged as dockerTools tags it without `tag`: with a store hash.
image_archive() {
  local config=$work/image-config.json
  if [ -n "${config_edit:-}" ]; then
    jq "$config_edit" "$work/image-config.json" >"$work/image-config-edited.json"
    config=$work/image-config-edited.json
  fi
  python3 tests/nix/image_archive.py --root "$image_root" --config "$config" \
    --repo-tag "${image_name:-frontend}:$(fake_hash "${image_name:-frontend}.tar.gz")" "$@" "$work/image.tar.gz"
}

run_contract() {
  [ "${#frontend_extra_env[@]}" -ge 1 ] || { echo "no mimallocEnv entries found in nix/images.nix"; return 1; }
  bash nix/check-image.sh "${image_name:-frontend}" "$work/image.tar.gz" "$entrypoint" \
    "${closure:-$work/image-closure}" "${budget:-$image_budget}" "${frontend_extra_env[@]}"
}

contract_accepts() {
  image_archive --layer "$frontend_path" --layer "$cacert_path" || return 1
  run_contract
}

# contract_rejects MESSAGE [generator args...]: the check fails, saying MESSAGE.
contract_rejects() {
  local expected=$1
  shift
  image_archive "$@" || return 1
  if run_contract >"$work/contract-out" 2>&1; then
    cat "$work/contract-out"
    echo "=> accepted; expected a failure saying: $expected"
    return 1
  fi
  cat "$work/contract-out"
  grep -qF -- "$expected" "$work/contract-out" || { echo "=> expected: $expected"; return 1; }
}

# The premise of the listing: layer members are absolute (/nix/store/...), the customisation layer
# holds `./`. If the generator ever wrote relative names, the tests above could not catch the
# original images-contract bug (it stripped only ./ and so never matched /nix/store).
archive_layout() {
  image_archive --layer "$frontend_path" --layer "$cacert_path" || return 1
  local dir=$work/layout
  mkdir -p "$dir"
  tar -xzf "$work/image.tar.gz" -C "$dir" || return 1
  jq -r '.[0].Layers[]' "$dir/manifest.json" | while read -r layer; do
    tar -tf "$dir/$layer"
  done >"$dir/entries"
  cat "$dir/entries"
  grep -qx '/nix/' "$dir/entries" && grep -qx '/nix/store/' "$dir/entries" \
    && grep -qx "$entrypoint" "$dir/entries" && grep -qx './' "$dir/entries" \
    && ! grep -q '^nix/' "$dir/entries" || return 1
  # The history names the customisation layer as streamLayeredImage does: <hash>-<image name>-customisation-layer.
  jq -e '.history[-1].comment | test("^store paths: \\[.[/]nix[/]store[/][0-9a-df-np-sv-z]{32}-frontend-customisation-layer.\\]$")' \
    "$dir/$(jq -r '.[0].Config' "$dir/manifest.json")"
}

rejects_extra_file() {
  mkdir -p "$work/contents/bin"
  ln -sf "$busybox_path/bin/sh" "$work/contents/bin/sh"
  contract_rejects "files outside /nix/store: bin bin/sh" \
    --layer "$frontend_path" --layer "$cacert_path" --contents "$work/contents"
}
rejects_file_beside_the_store() {
  # Not only /bin and /etc: anything but /nix/store, e.g. the Nix database that
  # buildLayeredImageWithNixDb adds under /nix/var.
  mkdir -p "$work/contents-db/nix/var/nix/db"
  printf 'sqlite\n' >"$work/contents-db/nix/var/nix/db/db.sqlite"
  contract_rejects "files outside /nix/store: nix/var nix/var/nix nix/var/nix/db nix/var/nix/db/db.sqlite" \
    --layer "$frontend_path" --layer "$cacert_path" --contents "$work/contents-db"
}
rejects_extra_store_path() {
  contract_rejects "store paths differ from the binary + CA bundle closure (- missing, + extra): +${tzdata_path#"$store"/}" \
    --layer "$frontend_path" --layer "$cacert_path" --layer "$tzdata_path"
}
rejects_missing_ca_bundle() {
  contract_rejects "SSL_CERT_FILE=$ca_bundle is not in the image" --layer "$frontend_path"
}
rejects_root_user() {
  config_edit='.User = "0:0"' contract_rejects 'User is "0:0", not "65534:65534"' \
    --layer "$frontend_path" --layer "$cacert_path"
}
rejects_no_user() {
  config_edit='del(.User)' contract_rejects 'User is null, not "65534:65534"' \
    --layer "$frontend_path" --layer "$cacert_path"
}
rejects_wrong_port() {
  config_edit='.ExposedPorts = {"8081/tcp": {}} | .Env |= map(if . == "PORT=8080" then "PORT=8081" else . end)' \
    contract_rejects 'exposed ports are ["8081/tcp"], not ["8080/tcp"]' \
    --layer "$frontend_path" --layer "$cacert_path" || return 1
  grep -qF 'Env has no PORT=8080 (["PORT=8081"])' "$work/contract-out"
}
rejects_missing_mimalloc_option() {
  local dropped=${frontend_extra_env[0]}
  config_edit=".Env -= [\"$dropped\"]" contract_rejects "Env has no $dropped" \
    --layer "$frontend_path" --layer "$cacert_path"
}
rejects_oversize() {
  # The budget is a parameter: one byte under this archive's size stands in for 20 MiB.
  image_archive --layer "$frontend_path" --layer "$cacert_path" || return 1
  local size
  size=$(stat -c %s "$work/image.tar.gz")
  budget=$((size - 1)) contract_rejects "$size bytes, over the budget of $((size - 1)) bytes" \
    --layer "$frontend_path" --layer "$cacert_path"
}
rejects_uncompressed() {
  contract_rejects "is not gzip-compressed" --layer "$frontend_path" --layer "$cacert_path" --uncompressed
}

# Every libc and shell as nixpkgs names their store paths (native, pkgsStatic's, a musl cross
# build's, other outputs; glibc's pnames with -nolibgcc and -gd, glibc_multi's <name>-multi-<version>,
# uutils-coreutils), and look-alikes that are neither (the services' own static names,
# bash-completion, glibc-locales, musl-fts), all in one image whose closure lists them, so only the
# libc/shell rule can object. It must name exactly the libcs and shells, each with its package.
#   system host pname version output libc-or-shell?
libc_corpus='
x86_64-linux  native     glibc            2.42-67 out    yes
x86_64-linux  native     glibc            2.42-67 bin    yes
x86_64-linux  native     glibc            2.42-67 getent yes
x86_64-linux  native     glibc-nolibgcc   2.42-67 out    yes
x86_64-linux  native     glibc-gd         2.42-67 out    yes
x86_64-linux  native     glibc-multi      2.42-67 out    yes
x86_64-linux  native     glibc-multi      2.42-67 bin    yes
x86_64-linux  native     musl             1.2.5   out    yes
x86_64-linux  static     musl             1.2.5   out    yes
aarch64-linux static     musl             1.2.5   dev    yes
x86_64-linux  cross-musl musl             1.2.5   out    yes
x86_64-linux  native     bash             5.3p9   out    yes
x86_64-linux  static     bash             5.3p9   out    yes
x86_64-linux  native     bash-interactive 5.3p9   out    yes
x86_64-linux  native     dash             0.5.13  out    yes
x86_64-linux  native     coreutils        9.11    out    yes
x86_64-linux  native     coreutils-full   9.11    out    yes
x86_64-linux  native     uutils-coreutils 0.2.2   out    yes
aarch64-linux static     coreutils        9.11    out    yes
x86_64-linux  native     busybox          1.37.0  out    yes
x86_64-linux  static     busybox          1.37.0  out    yes
x86_64-linux  static     frontend         0.1.0   out    no
aarch64-linux static     private-service  0.1.0   out    no
x86_64-linux  native     bash-completion  2.16.0  out    no
x86_64-linux  native     glibc-locales    2.42-67 out    no
x86_64-linux  static     musl-fts         1.2.7   out    no
'
rejects_libc_and_shell() {
  local system host pname version output libc expr='[' name path i=0
  local -a pnames verdicts paths
  while read -r system host pname version output libc; do
    [ -n "$system" ] || continue
    expr+=" (package { system = \"$system\"; host = \"$host\"; pname = \"$pname\"; version = \"$version\"; output = \"$output\"; })"
    pnames+=("$pname")
    verdicts+=("$libc")
  done <<<"$libc_corpus"
  # Each name, and the name Nix's builtins.parseDrvName reads from it: the pname and, at most, the
  # `-static` marker and the host triple the checker strips.
  store_names "map (name: { inherit name; drvName = (builtins.parseDrvName name).name; }) $expr ]" \
    | jq -r '.[] | "\(.name) \(.drvName)"' >"$work/corpus-names" || return 1
  : >"$work/expected-libc"
  while read -r name drv_name; do
    if [[ ! ${drv_name#"${pnames[i]}"} =~ ^(-static)?(-[a-z0-9_]+-unknown-linux-[a-z0-9_]+)?$ ]]; then
      echo "parseDrvName reads $drv_name from $name: not ${pnames[i]} with a marker or triple"
      return 1
    fi
    path=$(store_path "$name")
    mkdir -p "$image_root$path"
    printf '%s\n' "$name" >"$image_root$path/name"
    paths+=("$path")
    if [ "${verdicts[i]}" = yes ]; then
      echo "$name (${pnames[i]})" >>"$work/expected-libc"
    fi
    i=$((i + 1))
  done <"$work/corpus-names"
  [ "$i" -eq "${#pnames[@]}" ] || { echo "store-names.nix gave $i names for ${#pnames[@]} packages"; return 1; }

  printf '%s\n' "$cacert_path" "$frontend_path" "${paths[@]}" >"$work/image-closure-libc"
  local layers
  layers=$(IFS=,; echo "${paths[*]}")
  closure=$work/image-closure-libc contract_rejects "a libc or shell is in the image: " \
    --layer "$frontend_path" --layer "$cacert_path" --layer "$layers" || return 1
  # Nothing but the libc/shell rule objected, and it named exactly the libcs and shells.
  [ "$(grep -c '^images-contract:' "$work/contract-out")" -eq 1 ] || { echo "=> more than one problem"; return 1; }
  grep -F 'a libc or shell is in the image: ' "$work/contract-out" \
    | grep -oE '[0-9a-df-np-sv-z]{32}-[^ ]+ \([^)]*\)' | cut -c34- | sort >"$work/reported-libc"
  sort -o "$work/expected-libc" "$work/expected-libc"
  diff -u "$work/expected-libc" "$work/reported-libc" || { echo "=> - not reported, + reported wrongly"; return 1; }
}

# A store path whose name is not <32 nix-base32 characters>-<name> (no hash; e, o, t, u are not in
# Nix's alphabet) is no store path Nix makes, and its package name cannot be read: rejected.
rejects_not_a_store_path_name() {
  local bare=$store/musl-1.2.5 bad_hash
  bad_hash=$store/$(printf 'e%.0s' {1..32})-bash-5.3p9
  mkdir -p "$image_root$bare" "$image_root$bad_hash"
  printf '%s\n' "$cacert_path" "$frontend_path" "$bare" "$bad_hash" >"$work/image-closure-names"
  closure=$work/image-closure-names contract_rejects \
    "not a store path name (<32 nix-base32 characters>-<name>): ${bad_hash#"$store"/}" \
    --layer "$frontend_path" --layer "$cacert_path" --layer "$bare" --layer "$bad_hash" || return 1
  grep -qF "not a store path name (<32 nix-base32 characters>-<name>): musl-1.2.5" "$work/contract-out"
}

# The naming rules store-names.nix models give the names real nixpkgs builds have (store paths in
# public build logs and store listings): pkgsStatic's musl, its dev output and busybox on
# x86_64-linux, an output of an aarch64-linux pkgsStatic package, native packages (no suffix).
store_names_are_nixpkgs_names() {
  store_names '[
    (package { system = "x86_64-linux"; host = "static"; pname = "musl"; version = "1.2.5"; })
    (package { system = "x86_64-linux"; host = "static"; pname = "musl"; version = "1.2.5"; output = "dev"; })
    (package { system = "x86_64-linux"; host = "static"; pname = "busybox"; version = "1.37.0"; })
    (package { system = "aarch64-linux"; host = "static"; pname = "e2fsprogs"; version = "1.47.4"; output = "bin"; })
    (package { system = "x86_64-linux"; pname = "bash-interactive"; version = "5.3p9"; })
    (package { system = "x86_64-linux"; pname = "nss-cacert"; version = "3.115"; })
  ]' | jq -r '.[]' >"$work/model-names" || return 1
  printf '%s\n' musl-static-x86_64-unknown-linux-musl-1.2.5 musl-static-x86_64-unknown-linux-musl-1.2.5-dev \
    busybox-static-x86_64-unknown-linux-musl-1.37.0 e2fsprogs-static-aarch64-unknown-linux-musl-1.47.4-bin \
    bash-interactive-5.3p9 nss-cacert-3.115 >"$work/real-names"
  diff -u "$work/real-names" "$work/model-names"
}

# The services' store names, as store-names.nix reads them from nix/rust.nix, are what the naming
# rule gives for Cargo's package names: <name>-static-<arch>-unknown-linux-musl-<version> on both
# systems, the version the frontend's (rust.nix versions both services by it), the program the
# package name; the fixture uses them, and nss-cacert-<version> for the CA bundle. A fixture named
# like frontend-0.1.0 fails here.
fixture_names() {
  local system service package version expected got status=0
  store_names '{ x86_64-linux = services "x86_64-linux"; aarch64-linux = services "aarch64-linux"; }' \
    >"$work/services.json" || return 1
  version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' crates/frontend/Cargo.toml)
  for system in x86_64-linux aarch64-linux; do
    for service in frontend private-service; do
      package=$(sed -n '/^\[package\]/,/^\[/s/^name = "\(.*\)"$/\1/p' "crates/$service/Cargo.toml")
      expected="$package-static-${system%%-*}-unknown-linux-musl-$version $package"
      got=$(jq -r --arg s "$system" --arg p "$service" '.[$s][$p] | "\(.name) \(.mainProgram)"' "$work/services.json")
      echo "$system $service: $got"
      [ "$got" = "$expected" ] || { echo "=> expected $expected"; status=1; }
    done
  done
  expected=$(jq -r '."x86_64-linux".frontend | "\(.name)/bin/\(.mainProgram)"' "$work/services.json")
  [ "${entrypoint#"$store"/*-}" = "$expected" ] || { echo "fixture entrypoint $entrypoint is not <hash>-$expected"; status=1; }
  [[ ${cacert_path#"$store"/} =~ ^[0-9a-df-np-sv-z]{32}-nss-cacert-[0-9][0-9.]*$ ]] \
    || { echo "fixture CA bundle $cacert_path is not <hash>-nss-cacert-<version>"; status=1; }
  return "$status"
}

# Each service's image on each system, under its real name, passes (the images are built on
# x86_64-linux only today; the rule must not depend on it).
accepts_every_service_name() {
  local system service name program path entrypoint status=0
  store_names '{ x86_64-linux = services "x86_64-linux"; aarch64-linux = services "aarch64-linux"; }' \
    >"$work/services.json" || return 1
  for system in x86_64-linux aarch64-linux; do
    for service in frontend private-service; do
      name=$(jq -r --arg s "$system" --arg p "$service" '.[$s][$p].name' "$work/services.json")
      program=$(jq -r --arg s "$system" --arg p "$service" '.[$s][$p].mainProgram' "$work/services.json")
      path=$(store_path "$name")
      entrypoint=$path/bin/$program
      if [ ! -e "$image_root$entrypoint" ]; then
        mkdir -p "$image_root$path/bin"
        printf '\177ELF static binary stand-in\n' >"$image_root$entrypoint"
      fi
      printf '%s\n' "$cacert_path" "$path" >"$work/image-closure-$service"
      image_name=$service config_edit=".Entrypoint = [\"$entrypoint\"]" image_archive --layer "$path" \
        --layer "$cacert_path" || return 1
      echo -n "$system "
      image_name=$service closure=$work/image-closure-$service run_contract 2>&1 || status=1
    done
  done
  return "$status"
}

# --- the flake's formatter ---
# A tree with a mis-formatted file at the top and in a subdirectory, and ones nixpkgs-fmt must leave
# alone: a hidden directory, a git-ignored target/, a result symlink.
fmt_tree() {
  local tree=$work/fmt-tree bad='{ a = 1;   b=2; }' good
  good=$(printf '%s\n' "$bad" | nixpkgs-fmt)
  mkdir -p "$tree/sub/deeper" "$tree/.hidden" "$tree/target" "$work/fmt-outside"
  for file in top.nix sub/deeper/nested.nix .hidden/skip.nix target/skip.nix; do
    printf '%s\n' "$bad" >"$tree/$file"
  done
  printf '%s\n' "$bad" >"$work/fmt-outside/linked.nix"
  ln -s "$work/fmt-outside" "$tree/result"
  printf '/target\n/result\n' >"$tree/.gitignore"
  git -C "$tree" init -q || return 1

  # From a subdirectory with PRJ_ROOT set (Nix >= 2.30), then plain from the root: no arguments,
  # stdin closed, bounded in time, so a wrapper that reads stdin fails here instead of hanging.
  (cd "$tree/sub" && PRJ_ROOT=$tree timeout 30 bash "$root/nix/nixpkgs-fmt-tree.sh" </dev/null) || return 1
  for file in top.nix sub/deeper/nested.nix; do
    [ "$(cat "$tree/$file")" = "$good" ] || { echo "$file was not formatted"; return 1; }
  done
  for file in .hidden/skip.nix target/skip.nix; do
    [ "$(cat "$tree/$file")" = "$bad" ] || { echo "$file was formatted"; return 1; }
  done
  [ "$(cat "$work/fmt-outside/linked.nix")" = "$bad" ] || { echo "the result symlink was followed"; return 1; }

  printf '%s\n' "$bad" >"$tree/top.nix"
  (cd "$tree" && env -u PRJ_ROOT timeout 30 bash "$root/nix/nixpkgs-fmt-tree.sh" </dev/null) || return 1
  [ "$(cat "$tree/top.nix")" = "$good" ] || { echo "top.nix was not formatted without PRJ_ROOT"; return 1; }

  # Flags alone still mean the whole tree (--check names the bad file, changing nothing); a path
  # limits it to that path.
  printf '%s\n' "$bad" >"$tree/top.nix"
  printf '%s\n' "$bad" >"$tree/sub/other.nix"
  if (cd "$tree" && timeout 30 bash "$root/nix/nixpkgs-fmt-tree.sh" --check </dev/null >"$work/fmt-check"); then
    echo "--check without a path passed on a mis-formatted tree"
    return 1
  fi
  if ! { grep -q 'top\.nix$' "$work/fmt-check" && [ "$(cat "$tree/top.nix")" = "$bad" ]; }; then
    echo "--check without a path did not check the tree"
    cat "$work/fmt-check"
    return 1
  fi
  (cd "$tree" && timeout 30 bash "$root/nix/nixpkgs-fmt-tree.sh" sub/other.nix </dev/null) || return 1
  if ! { [ "$(cat "$tree/sub/other.nix")" = "$good" ] && [ "$(cat "$tree/top.nix")" = "$bad" ]; }; then
    echo "a path argument was not passed through as the only target"
    return 1
  fi
}

check nix-parse parse_all
check flake-lock lock_matches
check deadnix deadnix --fail "${nix_files[@]}"
check nix-fmt nixpkgs-fmt --check "${nix_files[@]}"
check no-c-tls no_c_tls "${CARGO_LOCK:-Cargo.lock}"
check no-c-tls-bites rejects_c_tls
check images-store-names store_names_are_nixpkgs_names
make_image_fixture
check images-fixture-names fixture_names
check images-archive-layout archive_layout
check images-contract-accepts contract_accepts
check images-contract-accepts-every-service-name accepts_every_service_name
check images-contract-rejects-extra-file rejects_extra_file
check images-contract-rejects-file-beside-the-store rejects_file_beside_the_store
check images-contract-rejects-extra-store-path rejects_extra_store_path
check images-contract-rejects-missing-ca-bundle rejects_missing_ca_bundle
check images-contract-rejects-root-user rejects_root_user
check images-contract-rejects-no-user rejects_no_user
check images-contract-rejects-wrong-port rejects_wrong_port
check images-contract-rejects-missing-mimalloc-option rejects_missing_mimalloc_option
check images-contract-rejects-oversize rejects_oversize
check images-contract-rejects-uncompressed rejects_uncompressed
check images-contract-rejects-libc-and-shell rejects_libc_and_shell
check images-contract-rejects-not-a-store-path-name rejects_not_a_store_path_name
check nix-fmt-tree fmt_tree

summary nix
