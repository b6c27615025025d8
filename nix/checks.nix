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
    # The sandbox runs as an unprivileged user without network: a test that needs either must
    # adapt itself there (the runtime-contract tests drop to uid 65534 only as root) or be
    # excluded by the filterset below.
    nextest = craneLib.cargoNextest (workspaceArgs // {
      inherit cargoArtifacts;
      nativeBuildInputs = testTools.packages;
      # Whole-system tests may run `cargo build`: it must use the vendored sources, never the network.
      env = testTools.env // { CARGO_NET_OFFLINE = "true"; };
      preCheck = ''
        export HOME="$(mktemp -d)"
      '';
      # Run from tests/run, not in the build sandbox: the reliability suites (they load the
      # services for seconds at a time and drive schemathesis from a Python venv), the VPC twin
      # (network namespaces need root; its unit tests read pulumi/, which is not in `src`),
      # local-stack's start-twice test (a release build in the user's target directory), and the
      # benchmark's seed test (the original Python frontend, from a venv tests/setup installs).
      cargoNextestExtraArgs = "--no-tests=fail -E 'not package(reliability-tests) & not package(vpc-twin) & not test(a_second_start_compiles_nothing) & not test(the_seed_registers_a_visit_lists_it_and_dies_with_its_handle)'";
      doInstallCargoArtifacts = false;
    });

    # Known vulnerabilities in Cargo.lock, against the advisory-db revision pinned in flake.lock.
    audit = craneLib.cargoAudit {
      inherit advisory-db;
      inherit (commonArgs) pname version;
      # Only what cargo audit reads: the lock file and the ignores with their reasons. Kept out
      # of the shared `src`, so editing the ignores rebuilds no binary (and no image).
      src = lib.fileset.toSource {
        root = ../.;
        fileset = lib.fileset.unions [ ../Cargo.lock ../.cargo/audit.toml ];
      };
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

  # What App Runner and the README rely on, read back from the built tarballs: user, port, env
  # (the frontend's mimalloc options too), entrypoint, nothing but the binary's and the CA
  # bundle's store paths (no shell, no libc), size.
  imageChecks = lib.optionalAttrs (images != null) {
    images = images.all;

    # The checker is its own script (nix/check-image.sh) so tests/nix/check.sh can run the same
    # file against archives laid out as nixpkgs' stream_layered_image.py lays them out.
    images-contract =
      let
        maxBytes = 20 * 1024 * 1024;
        expect = name: service: ''
          bash ${./check-image.sh} ${name} ${images.${name}} ${lib.getExe service} \
            ${pkgs.closureInfo { rootPaths = [ service pkgs.cacert ]; }}/store-paths ${toString maxBytes} \
            ${lib.escapeShellArgs images.extraEnv.${name}}
        '';
      in
      # stdenv has all but jq already; listed so the script's needs are stated where it runs.
      pkgs.runCommand "images-contract"
        {
          nativeBuildInputs = with pkgs; [ bash jq gnutar gzip coreutils gnused gnugrep diffutils findutils ];
        } ''
        set -euo pipefail
        ${expect "frontend" rust.frontend}
        ${expect "private-service" rust.private-service}
        touch "$out"
      '';
  };
in
rustChecks // nixChecks // imageChecks
