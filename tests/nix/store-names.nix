# Store path names as a real build of this flake makes them, for tests/nix/check.sh. nixpkgs cannot
# be evaluated here (Nix 2.8, no nixpkgs tree), so this evaluates nix/rust.nix itself with stand-ins
# for nixpkgs and crane that keep their naming rules and nothing else:
#
# - nixpkgs pkgs/stdenv/generic/make-derivation.nix (read at recent revisions; the pinned one is not
#   available here): name = "${pname}${staticMarker}${hostSuffix}-${version}", or name + hostSuffix
#   when `name` is given; staticMarker = "-static" when hostPlatform.isStatic; hostSuffix =
#   "-${hostPlatform.config}" when hostPlatform != buildPlatform, unless the stdenv has no C compiler
#   or a fixed-output derivation has only native inputs (neither applies here).
# - nixpkgs pkgs/top-level/stage.nix: pkgsStatic's host is the build system's triple with musl as
#   its libc and isStatic = true: x86_64-unknown-linux-musl on x86_64-linux, aarch64-... on aarch64.
# - crane lib/buildPackage.nix and lib/mkCargoDerivation.nix (rev 2c71e19, as flake.lock pins it):
#   pname = args.pname (else the crate's), version = args.version (else the crate's), passed on to
#   the stdenv's mkDerivation; buildDepsOnly adds the pnameSuffix "-deps".
# - Nix: output `out` of a derivation named N is stored as <hash>-N, any other output o as <hash>-N-o.
#
# Use: nix-instantiate --eval --strict --json -E 'with import ./tests/nix/store-names.nix; ...'
let
  # nixpkgs' platform triples (hostPlatform.config) for the flake's systems.
  platforms = {
    x86_64-linux = { gnu = "x86_64-unknown-linux-gnu"; musl = "x86_64-unknown-linux-musl"; };
    aarch64-linux = { gnu = "aarch64-unknown-linux-gnu"; musl = "aarch64-unknown-linux-musl"; };
  };

  optionalString = cond: string: if cond then string else "";

  # make-derivation.nix's naming, for a stdenv with a C compiler (every one used here).
  stdenvFor = { buildPlatform, hostPlatform }: {
    mkDerivation = attrs:
      let
        hostSuffix = optionalString (hostPlatform != buildPlatform) "-${hostPlatform.config}";
        staticMarker = optionalString hostPlatform.isStatic "-static";
      in
      attrs // {
        name =
          if attrs ? name
          then attrs.name + hostSuffix
          else "${attrs.pname}${staticMarker}${hostSuffix}-${attrs.version}";
      };
  };

  # The hosts a build on `system` uses: pkgs (native), pkgsStatic (static) and a non-static cross
  # set to musl (cross-musl, pkgsCross.musl64 on x86_64-linux).
  hostsFor = system:
    let
      build = { config = platforms.${system}.gnu; isStatic = false; };
    in
    {
      inherit build;
      native = build;
      static = { config = platforms.${system}.musl; isStatic = true; };
      cross-musl = { config = platforms.${system}.musl; isStatic = false; };
    };

  stdenvOn = system: host:
    let
      hosts = hostsFor system;
    in
    stdenvFor { buildPlatform = hosts.build; hostPlatform = hosts.${host}; };

  # Only what nix/rust.nix uses of nixpkgs' lib; the source filtering does not matter to names.
  lib = {
    fileset = {
      toSource = _: "source";
      unions = _: null;
      maybeMissing = _: null;
    };
    inherit optionalString;
    inherit (builtins) concatStringsSep;
  };

  crane.mkLib = pkgs: {
    crateNameFromCargoToml = { cargoToml }:
      let
        toml = builtins.fromTOML (builtins.readFile cargoToml);
      in
      { pname = toml.package.name; inherit (toml.package) version; };
    buildDepsOnly = args: pkgs.stdenv.mkDerivation (args // {
      pname = "${args.pname}-deps";
    });
    # Without them crane reads the root Cargo.toml, a workspace: rust.nix always passes both.
    buildPackage = args: pkgs.stdenv.mkDerivation (args // {
      pname = args.pname or (throw "buildPackage without pname");
      version = args.version or (throw "buildPackage without version");
    });
  };

  pkgsFor = system: {
    inherit lib;
    stdenv = stdenvOn system "native";
    pkgsStatic.stdenv = stdenvOn system "static";
  };

  storeName = drv: output: if output == "out" then drv.name else "${drv.name}-${output}";
in
rec {
  # Any package by pname and version, built for `system` by `host` (native, static, cross-musl).
  package = { system, host ? "native", pname, version, output ? "out" }:
    storeName ((stdenvOn system host).mkDerivation { inherit pname version; }) output;

  # The two services as nix/rust.nix builds them: store name, and the program lib.getExe runs.
  services = system:
    let
      rust = import ../../nix/rust.nix { pkgs = pkgsFor system; inherit crane; };
      service = drv: { name = storeName drv "out"; inherit (drv.meta) mainProgram; };
    in
    {
      frontend = service rust.frontend;
      private-service = service rust.private-service;
    };

  # pkgs.cacert (pname nss-cacert, native stdenv) as images.nix puts it in both images. The version
  # is nixpkgs' (pkgs/by-name/ca/cacert/package.nix, srcVersion): 3.119.1 in the newest revision of
  # that file readable here, not necessarily the pinned nixos-26.05's.
  cacert = system: package { inherit system; pname = "nss-cacert"; version = "3.119.1"; };
}
