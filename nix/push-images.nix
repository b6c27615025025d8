# `nix run .#push-images -- <account>.dkr.ecr.<region>.amazonaws.com[/<namespace>]`
#
# Pushes both images to ECR; the script is nix/push-images.sh (usage and output described there,
# tested against a local registry by tests/pulumi/test_push.py).
{ pkgs, images }:
pkgs.writeShellApplication {
  name = "push-images";
  runtimeInputs = [ pkgs.awscli2 pkgs.skopeo pkgs.coreutils ];
  runtimeEnv = {
    FRONTEND_ARCHIVE = "${images.frontend}";
    PRIVATE_SERVICE_ARCHIVE = "${images.private-service}";
  };
  text = builtins.readFile ./push-images.sh;
}
