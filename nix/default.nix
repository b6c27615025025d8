# Every flake output for one system, assembled from the files beside this one.
{ self, crane, advisory-db, pkgs }:
let
  inherit (pkgs) lib;

  rust = import ./rust.nix { inherit pkgs crane; };

  # App Runner pulls linux/amd64 images only, so images (and pushing them) exist on x86_64-linux only:
  # an arm64 image in ECR would deploy and then fail to start.
  imagesSupported = pkgs.stdenv.hostPlatform.system == "x86_64-linux";
  images = import ./images.nix {
    inherit pkgs self;
    services = { inherit (rust) frontend private-service; };
  };
  push-images = import ./push-images.nix { inherit pkgs images; };

  testTools = import ./test-tools.nix { inherit pkgs; };
in
{
  packages = {
    inherit (rust) frontend private-service;
    default = pkgs.symlinkJoin {
      name = "apprunner-vpc-services-${rust.version}";
      paths = [ rust.frontend rust.private-service ];
    };
  } // lib.optionalAttrs imagesSupported {
    images = images.all;
  };

  apps = lib.optionalAttrs imagesSupported {
    push-images = {
      type = "app";
      program = lib.getExe push-images;
      meta.description = "Push both images to ECR (<account>.dkr.ecr.<region>.amazonaws.com[/<namespace>]) and print their digests";
    };
  };

  checks = import ./checks.nix {
    inherit pkgs rust testTools advisory-db;
    images = if imagesSupported then images else null;
  };

  devShells.default = import ./shell.nix { inherit pkgs rust testTools; };

  # The style every .nix file here follows; `nix fmt` applies it to the whole flake (`nix fmt --
  # FILE...` to some files), checks.nix-fmt enforces it. Not bare nixpkgs-fmt: `nix fmt` passes no
  # path, and nixpkgs-fmt alone would then wait for standard input (see nixpkgs-fmt-tree.sh).
  formatter = pkgs.writeShellApplication {
    name = "nixpkgs-fmt-tree";
    runtimeInputs = [ pkgs.nixpkgs-fmt ];
    text = builtins.readFile ./nixpkgs-fmt-tree.sh;
  };
}
