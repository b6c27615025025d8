# `nix run .#push-images -- <account>.dkr.ecr.<region>.amazonaws.com`
#
# Pushes both images to the ECR repositories `frontend` and `private-service` under their content
# tags and prints one `<repository>=<registry>/<repository>@<digest>` line per image on stdout
# (progress goes to stderr). Credentials come from the AWS CLI's usual chain; the registry token
# goes through a pipe into a private auth file, never onto a command line.
{ pkgs, images }:
pkgs.writeShellApplication {
  name = "push-images";
  runtimeInputs = [ pkgs.awscli2 pkgs.skopeo pkgs.coreutils ];
  text = ''
    if [ "$#" -ne 1 ]; then
      echo "usage: push-images <account>.dkr.ecr.<region>.amazonaws.com" >&2
      exit 2
    fi
    registry=$1
    if [[ ! $registry =~ ^[0-9]{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com$ ]]; then
      echo "push-images: '$registry' is not an ECR registry (<account>.dkr.ecr.<region>.amazonaws.com)" >&2
      exit 2
    fi
    region=''${BASH_REMATCH[1]}

    workdir=$(mktemp -d)
    trap 'rm -rf "$workdir"' EXIT
    authfile=$workdir/auth.json

    aws ecr get-login-password --region "$region" |
      skopeo login --authfile "$authfile" --username AWS --password-stdin "$registry" >&2

    push() {
      local repository=$1 archive=$2 tag=$3
      skopeo copy --dest-authfile "$authfile" --digestfile "$workdir/$repository.digest" \
        "docker-archive:$archive" "docker://$registry/$repository:$tag" >&2
      echo "$repository=$registry/$repository@$(cat "$workdir/$repository.digest")"
    }

    push frontend ${images.frontend} ${images.frontend.imageTag}
    push private-service ${images.private-service} ${images.private-service.imageTag}
  '';
}
