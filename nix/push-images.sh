# Body of `nix run .#push-images` (nix/push-images.nix runs it with bash under `set -euo pipefail`
# and sets FRONTEND_ARCHIVE and PRIVATE_SERVICE_ARCHIVE to the image tarballs; tests/pulumi/test_push.py
# runs it the same way against a local registry).
#
#   push-images <account>.dkr.ecr.<region>.amazonaws.com[.cn][/<namespace>]
#
# Pushes both images to <namespace>/frontend and <namespace>/private-service (or to frontend and
# private-service without a namespace) under the tag nix-<first 16 hex of the archive's sha256>, and
# prints `<repository>=<registry>/<repository>@<digest>` per image on stdout (progress goes to stderr).
# The repositories must exist; a Pulumi stack's are <project>-<stack>/..., e.g.
# `push-images 123456789012.dkr.ecr.us-east-1.amazonaws.com/apprunner-vpc-demo-dev`.
# Credentials come from the AWS CLI's usual chain; the registry password goes through a pipe into a
# private auth file, never onto a command line.

usage="usage: push-images <account>.dkr.ecr.<region>.amazonaws.com[.cn][/<namespace>]"
if [ "$#" -ne 1 ]; then
  echo "$usage" >&2
  exit 2
fi
# ECR repository names (botocore's RepositoryName): components separated by '/', each lowercase
# alphanumerics joined by '.', '_', '__' or a run of '-'. China regions' registries end in .amazonaws.com.cn.
component='[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*'
if [[ ! $1 =~ ^([0-9]{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?)(/($component(/$component)*))?$ ]]; then
  echo "push-images: '$1' is not an ECR registry with an optional repository namespace" >&2
  echo "$usage" >&2
  exit 2
fi
registry=${BASH_REMATCH[1]}
region=${BASH_REMATCH[2]}
namespace=${BASH_REMATCH[5]:+${BASH_REMATCH[5]}/}

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
umask 077
authfile=$workdir/auth.json

aws ecr get-login-password --region "$region" |
  skopeo login --authfile "$authfile" --username AWS --password-stdin "$registry" >&2

push() {
  local name=$1 archive=$2 repository tag
  repository=$registry/$namespace$name
  tag=nix-$(sha256sum "$archive" | cut -c1-16)
  # skopeo reads a trust policy only from ~/.config/containers/policy.json or
  # /etc/containers/policy.json and refuses to copy without one; nixpkgs' skopeo brings none.
  # Pushing verifies no signatures, so say so (as nix2container's copyToRegistry does).
  skopeo --insecure-policy copy --dest-authfile "$authfile" --digestfile "$workdir/$name.digest" \
    "docker-archive:$archive" "docker://$repository:$tag" >&2
  echo "$namespace$name=$repository@$(cat "$workdir/$name.digest")"
}

push frontend "$FRONTEND_ARCHIVE"
push private-service "$PRIVATE_SERVICE_ARCHIVE"
