{
  description = "A public web API on AWS App Runner reaching private resources in a VPC: Rust services, static OCI images";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    crane.url = "github:ipetkov/crane";
    # Read by `cargo audit` in `nix flake check`; `nix flake update advisory-db` refreshes it.
    advisory-db = {
      url = "github:rustsec/advisory-db";
      flake = false;
    };
  };

  outputs = { self, nixpkgs, crane, advisory-db }:
    let
      # App Runner runs linux/amd64 only; aarch64-linux is kept building because it costs nothing here.
      systems = [ "x86_64-linux" "aarch64-linux" ];
      perSystem = nixpkgs.lib.genAttrs systems (system:
        import ./nix {
          inherit self crane advisory-db;
          pkgs = nixpkgs.legacyPackages.${system};
        });
      output = name: nixpkgs.lib.mapAttrs (_: outputs: outputs.${name}) perSystem;
    in
    {
      packages = output "packages";
      checks = output "checks";
      apps = output "apps";
      devShells = output "devShells";
      formatter = output "formatter";
    };
}
