#!/usr/bin/env bash
# Installs what tests/pulumi/test_push.py needs, only what is missing (needs root for apt-get):
#   skopeo           the push scripts' copy tool (Debian 12: 1.9.3)
#   docker-registry  CNCF distribution 2.8.2: the local registry the pushes go to
#   apache2-utils    htpasswd, for the registry's bcrypt password file
#   openssl          the throwaway CA and server certificate of that registry
#   iproute2         `ip link set lo up` inside the test's network namespace (unshare is in util-linux)
set -euo pipefail

packages=()
command -v skopeo >/dev/null || packages+=(skopeo)
command -v docker-registry >/dev/null || packages+=(docker-registry)
command -v htpasswd >/dev/null || packages+=(apache2-utils)
command -v openssl >/dev/null || packages+=(openssl)
command -v ip >/dev/null || packages+=(iproute2)
if [ "${#packages[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${packages[@]}" >/dev/null
fi
