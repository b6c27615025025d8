# `nix flake check`: one derivation per property, each named for what it proves.
{ pkgs, rust, testTools, advisory-db, images }:
let
  inherit (pkgs) lib;
  inherit (rust) craneLib src commonArgs workspaceArgs cargoArtifacts;

  nixFiles = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
  };

  rustChecks = {
    # The static release binaries build (and reference no store path).
    inherit (rust) frontend private-service;

    clippy = craneLib.cargoClippy (workspaceArgs // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--all-targets -- --deny warnings";
    });

    rustfmt = craneLib.cargoFmt {
      inherit src;
      inherit (commonArgs) pname version;
    };

    # The whole test suite, integration tests included: PostgreSQL from nixpkgs (the harness runs
    # initdb/pg_ctl as the unprivileged build user, sockets in its temp dir) and moto_server on
    # loopback, which is all the sandbox has; the harness builds the service binaries with cargo.
    # No test group is filtered out today. The sandbox runs as an unprivileged user without
    # network: a test that needs either (e.g. starting a service as uid 65534 needs root) must skip
    # itself there or be excluded here with a filterset, e.g. `-E 'not test(=runs_as_nobody)'`.
    nextest = craneLib.cargoNextest (workspaceArgs // {
      inherit cargoArtifacts;
      nativeBuildInputs = testTools.packages;
      # Whole-system tests may run `cargo build`: it must use the vendored sources, never the network.
      env = testTools.env // { CARGO_NET_OFFLINE = "true"; };
      preCheck = ''
        export HOME="$(mktemp -d)"
      '';
      # The reliability suites (tests/reliability) load the services for seconds at a time and
      # drive schemathesis from a Python venv; they run from tests/run, not in the build sandbox.
      cargoNextestExtraArgs = "--no-tests=fail -E 'not package(reliability-tests)'";
      doInstallCargoArtifacts = false;
    });

    # Known vulnerabilities in Cargo.lock, against the advisory-db revision pinned in flake.lock.
    audit = craneLib.cargoAudit {
      inherit src advisory-db;
      inherit (commonArgs) pname version;
    };

    # No C TLS stack (aws-lc-sys, openssl-sys, native-tls, ...) and crates only from crates.io.
    # Licenses are not judged here: that needs a policy the project has not written.
    deny = craneLib.cargoDeny (commonArgs // {
      cargoDenyChecks = "--config ${./deny.toml} bans sources";
    });
  };

  nixChecks = {
    nix-deadnix = pkgs.runCommand "deadnix" { nativeBuildInputs = [ pkgs.deadnix ]; } ''
      deadnix --fail ${nixFiles}
      touch "$out"
    '';

    nix-fmt = pkgs.runCommand "nixpkgs-fmt" { nativeBuildInputs = [ pkgs.nixpkgs-fmt ]; } ''
      nixpkgs-fmt --check ${nixFiles}
      touch "$out"
    '';
  };

  # What App Runner and the README rely on, read back from the built tarballs: user, port, env,
  # entrypoint, nothing but the binary's and the CA bundle's store paths (no shell, no libc), size.
  imageChecks = lib.optionalAttrs (images != null) {
    images = images.all;

    images-contract =
      let
        expect = name: service: ''
          check_image ${name} ${images.${name}} ${lib.getExe service} \
            ${pkgs.closureInfo { rootPaths = [ service pkgs.cacert ]; }}/store-paths
        '';
      in
      pkgs.runCommand "images-contract" { nativeBuildInputs = [ pkgs.jq ]; } ''
        set -euo pipefail
        fail() { echo "images-contract: $*" >&2; exit 1; }

        check_image() {
          local name=$1 archive=$2 entrypoint=$3 closure=$4
          local dir
          dir=$(mktemp -d)
          tar -xzf "$archive" -C "$dir"

          local size
          size=$(stat -c %s "$archive")
          [ "$size" -le $((20 * 1024 * 1024)) ] || fail "$name: $size bytes, over the 20 MiB budget"

          local config
          config=$dir/$(jq -r '.[0].Config' "$dir/manifest.json")
          jq -e '.config.User == "65534:65534"' "$config" >/dev/null || fail "$name: User is not 65534:65534"
          jq -e '.config.ExposedPorts | has("8080/tcp")' "$config" >/dev/null || fail "$name: 8080/tcp not exposed"
          jq -e '.config.Env | index("PORT=8080") != null' "$config" >/dev/null || fail "$name: no PORT=8080"
          jq -e '.config.Env | any(startswith("SSL_CERT_FILE="))' "$config" >/dev/null || fail "$name: no SSL_CERT_FILE"
          jq -e --arg exe "$entrypoint" '.config.Entrypoint == [$exe]' "$config" >/dev/null \
            || fail "$name: entrypoint is not $entrypoint"

          jq -r '.[0].Layers[]' "$dir/manifest.json" | while read -r layer; do
            tar -tf "$dir/$layer"
          done | sed 's#^\./##' >"$dir/entries"
          if grep -Eq '^(bin|sbin|usr|lib|lib64|etc)(/|$)' "$dir/entries"; then
            fail "$name: files outside /nix/store: $(grep -E '^(bin|sbin|usr|lib|lib64|etc)(/|$)' "$dir/entries" | head -5)"
          fi
          sed -nE 's#^nix/store/([^/]+).*#\1#p' "$dir/entries" | sort -u >"$dir/found"
          xargs -n1 basename <"$closure" | sort -u >"$dir/expected"
          diff -u "$dir/expected" "$dir/found" || fail "$name: store paths differ from the binary + CA bundle closure"
          if grep -Eq -- '-(glibc|musl|bash|coreutils|busybox)-' "$dir/found"; then
            fail "$name: a libc or shell is in the image"
          fi
          echo "$name: $size bytes, $(wc -l <"$dir/found") store paths, contract holds"
        }

        ${expect "frontend" rust.frontend}
        ${expect "private-service" rust.private-service}
        touch "$out"
      '';
  };
in
rustChecks // nixChecks // imageChecks
