# `nix develop`: everything the README's commands need, with the same PostgreSQL and moto as checks.nextest.
{ pkgs, rust, testTools }:
rust.craneLib.devShell (testTools.env // {
  packages = testTools.packages ++ [
    pkgs.cargo-nextest
    pkgs.cargo-audit
    pkgs.cargo-deny
    pkgs.skopeo
    pkgs.awscli2
    pkgs.pulumi-bin
    pkgs.oha
    pkgs.wrk
    pkgs.jq
    pkgs.nixpkgs-fmt
    pkgs.deadnix
  ];
})
