# The Cargo workspace, built with crane.
#
# Two toolchains on purpose:
# - `craneLib` (the host toolchain, dev profile) compiles the workspace once for clippy and the test
#   suite; the whole-system tests may run `cargo build` themselves and then reuse those artifacts.
# - `craneLibStatic` (nixpkgs' pkgsStatic: x86_64-unknown-linux-musl on x86_64-linux,
#   aarch64-unknown-linux-musl on aarch64-linux) builds the release binaries that go into the images.
#   They link statically and must not reference any store path (`allowedReferences = [ ]`), so an
#   image holds the binary and nothing of a libc. This only works because the workspace uses rustls
#   with ring, never aws-lc-sys or openssl (see nix/deny.toml and tests/nix/check.sh).
{ pkgs, crane }:
let
  inherit (pkgs) lib;

  craneLib = crane.mkLib pkgs;
  craneLibStatic = crane.mkLib pkgs.pkgsStatic;

  # Only what cargo reads: Cargo.toml files, Cargo.lock, the crates and test crates with any fixtures
  # they include. pulumi/, nix/ and docs stay out, so editing them rebuilds nothing here.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      ../tests/bench
      ../tests/harness
      ../tests/reliability
      ../tests/system
      ../tests/vpc
      (lib.fileset.maybeMissing ../.cargo/config.toml)
      (lib.fileset.maybeMissing ../.config/nextest.toml)
      (lib.fileset.maybeMissing ../rustfmt.toml)
      (lib.fileset.maybeMissing ../clippy.toml)
    ];
  };

  inherit (craneLib.crateNameFromCargoToml { cargoToml = ../crates/frontend/Cargo.toml; }) version;

  commonArgs = {
    inherit src version;
    pname = "apprunner-vpc";
    strictDeps = true;
  };

  # Host toolchain, whole workspace, dev profile: shared by clippy and nextest.
  workspaceArgs = commonArgs // {
    CARGO_PROFILE = "dev";
    cargoExtraArgs = "--locked --workspace";
  };
  cargoArtifacts = craneLib.buildDepsOnly workspaceArgs;

  # Static release build of the two services; the test suite runs in checks.nextest instead.
  # The frontend links mimalloc instead of musl's malloc (feature `mimalloc`; the measurement is in
  # crates/frontend/src/main.rs, its options in the image's environment, images.nix). The
  # dependency build compiles it too, so the services' own builds reuse it.
  staticArgs = commonArgs // {
    doCheck = false;
    cargoExtraArgs = "--locked --package frontend --package private-service --features frontend/mimalloc";
  };
  staticArtifacts = craneLibStatic.buildDepsOnly staticArgs;

  staticService = { name, features ? [ ] }: craneLibStatic.buildPackage (staticArgs // {
    pname = name;
    cargoArtifacts = staticArtifacts;
    cargoExtraArgs = "--locked --package ${name}"
      + lib.optionalString (features != [ ]) " --features ${lib.concatStringsSep "," features}";
    # A static binary needs nothing from the store at run time; this fails the build if it does.
    allowedReferences = [ ];
    meta.mainProgram = name;
  });
in
{
  inherit craneLib src version commonArgs workspaceArgs cargoArtifacts;
  frontend = staticService { name = "frontend"; features = [ "mimalloc" ]; };
  private-service = staticService { name = "private-service"; };
}
