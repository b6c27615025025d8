"""A private ECR look-alike for running the real push scripts: registry, TLS, DNS name, `aws` stub.

`PushBox(tmp)` prepares, and `box.run(argv, env)` runs a command inside a fresh mount + network
namespace (`unshare --mount --net`, so root is needed) in which:

- `docker-registry` (CNCF distribution) serves HTTPS on 127.0.0.1:443 with htpasswd auth (user AWS)
  and filesystem storage under tmp (kept across runs, so a second run sees the first run's pushes);
- the host names 123456789012.dkr.ecr.us-east-1.amazonaws.com and, for China regions,
  123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn resolve to it (a private /etc/hosts), so the scripts
  get exactly the repository URL ECR would give them and need no test switch;
- its certificate is signed by a throwaway CA that containers/image trusts through
  /etc/containers/certs.d/<host>/ca.crt: TLS stays verified, as it is against real ECR;
- /etc/containers is an empty directory apart from that CA: no policy.json, no registries.conf,
  as on a host that only has nixpkgs' skopeo;
- `aws` on PATH is a stub that prints the registry password for `aws ecr get-login-password` in those
  two regions;
- HOME is an empty directory (no ~/.config/containers/policy.json, no auth files).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
REGION = "us-east-1"
CN_HOST = "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
CN_REGION = "cn-north-1"
HOSTS = {HOST: REGION, CN_HOST: CN_REGION}
TOOLS = ("skopeo", "docker-registry", "htpasswd", "openssl", "unshare", "ip", "mount", "gzip")
SETUP_HINT = "run tests/pulumi/setup.sh (as root) to install skopeo, docker-registry and apache2-utils"
# The docker-archive generator another suite uses for nix/check-image.sh; one generator, shared.
IMAGE_ARCHIVE = pathlib.Path(__file__).resolve().parent.parent / "nix" / "image_archive.py"


def missing_prerequisites() -> str | None:
    """Why the push tests cannot run here, or None. They must fail (not skip) when this is not None."""
    if os.geteuid() != 0:
        return "the push tests need root (unshare --mount --net, a registry on port 443, bind mounts)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}: {SETUP_HINT}"
    if not IMAGE_ARCHIVE.is_file():
        return f"{IMAGE_ARCHIVE} (the docker-archive generator) is missing"
    return None


@dataclasses.dataclass
class PushBox:
    root: pathlib.Path
    password: str = "ecr-password-for-the-test"

    def __post_init__(self):
        r = self.root
        for d in ("data", "home", "bin", "etc-containers", "tls", *(f"etc-containers/certs.d/{h}" for h in HOSTS)):
            (r / d).mkdir(parents=True, exist_ok=True)
        self._tls()
        htpasswd = subprocess.run(["htpasswd", "-Bbn", "AWS", self.password], check=True, capture_output=True,
                                  text=True).stdout
        (r / "htpasswd").write_text(htpasswd)
        (r / "config.yml").write_text(json.dumps({  # JSON is YAML
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(r / "data")}, "delete": {"enabled": True}},
            "http": {"addr": "127.0.0.1:443", "tls": {"certificate": str(r / "tls/server.crt"),
                                                       "key": str(r / "tls/server.key")}},
            "auth": {"htpasswd": {"realm": "ecr-look-alike", "path": str(r / "htpasswd")}},
        }))
        (r / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {h}\n" for h in HOSTS))
        aws = r / "bin" / "aws"
        aws.write_text(
            "#!/bin/sh\n"
            "# Stub of the AWS CLI: only `aws ecr get-login-password --region <region>`.\n"
            'if [ "$1 $2 $3" = "ecr get-login-password --region" ]; then\n'
            '  case "$4" in\n'
            f"    {'|'.join(HOSTS.values())}) printf '%s\\n' '{self.password}'; exit 0 ;;\n"
            "  esac\n"
            "fi\n"
            'echo "aws stub: unexpected arguments: $*" >&2\n'
            "exit 1\n")
        aws.chmod(0o755)
        (r / "sandbox.sh").write_text(_SANDBOX)

    def _tls(self):
        t = self.root / "tls"

        def openssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=t)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=push test CA",
                "-keyout", "ca.key", "-out", "ca.crt")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={HOST}", "-keyout", "server.key",
                "-out", "server.csr")
        san = ",".join(f"DNS:{h}" for h in HOSTS)
        (t / "ext.cnf").write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")
        for h in HOSTS:
            shutil.copy(t / "ca.crt", self.root / f"etc-containers/certs.d/{h}/ca.crt")

    def env(self, **extra) -> dict[str, str]:
        """A clean environment: the stub `aws` first on PATH, an empty HOME, no container settings."""
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.root / "home"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.root),
        }
        env.update(extra)
        return env

    def run(self, argv: list[str], env: dict[str, str], cwd: str | os.PathLike | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """Run argv in the sandbox; stdout/stderr are the command's, the registry's log is in root/registry.log."""
        return subprocess.run(
            ["unshare", "--mount", "--net", "--fork", "bash", str(self.root / "sandbox.sh"), str(self.root),
             *argv],
            env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)

    def inspect_raw(self, reference: str) -> subprocess.CompletedProcess:
        """`skopeo inspect --raw docker://<reference>` with the registry credentials (test side only)."""
        return self.run(["skopeo", "inspect", "--raw", "--creds", f"AWS:{self.password}", f"docker://{reference}"],
                        self.env())


# Runs inside the new namespaces: loopback up, private /etc/containers and /etc/hosts, registry up, then argv.
_SANDBOX = r"""
set -eu
root=$1
shift
ip link set lo up
mount --bind "$root/etc-containers" /etc/containers
mount --bind "$root/hosts" /etc/hosts
docker-registry serve "$root/config.yml" >>"$root/registry.log" 2>&1 &
for _ in $(seq 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/443) 2>/dev/null; then break; fi
  sleep 0.05
done
status=0
"$@" || status=$?
kill %1 2>/dev/null || true
wait 2>/dev/null || true
exit "$status"
"""


def make_archive(root: pathlib.Path, name: str, payload: bytes, out: pathlib.Path) -> pathlib.Path:
    """A docker-archive as `nix build .#images` writes it, and the file this test's skopeo can push.

    tests/nix/image_archive.py writes `out` (a .tar.gz): nixpkgs' stream_layered_image.py layout,
    gzip-wrapped as buildLayeredImage's `pigz -nTR` does. Returned is `gzip -dc` of exactly that file, so the
    push reads the same tar nixpkgs produces, minus only the outer gzip.

    Why not the .tar.gz itself: Debian's skopeo 1.9.3 fails on every gzip-compressed docker-archive
    ("loading tar component manifest.json: unexpected EOF"). The cause is klauspost/pgzip v1.2.5, which
    skopeo 1.9.3 pins: Reader.WriteTo loses the block a preceding Read prepared (containers/podman#15944,
    fixed by klauspost/pgzip#50 in v1.2.6). skopeo >= 1.10, as in nixpkgs (1.22.x), reads gzip
    docker-archives through compression.AutoDecompress, so users push the .tar.gz directly.
    test_push.py::test_this_skopeo_and_the_gzip_archive checks which case this host is in.
    """
    store = f"/nix/store/{'a' * 32}-{name}"
    fake = root / f"fake-root-{name}"
    binary = fake / store.lstrip("/") / "bin" / name
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_bytes(payload)
    binary.chmod(0o555)
    config = root / f"{name}-config.json"
    config.write_text(json.dumps({
        "Entrypoint": [f"{store}/bin/{name}"], "User": "65534:65534", "ExposedPorts": {"8080/tcp": {}},
        "Env": ["PORT=8080"],
    }))
    assert out.name.endswith(".tar.gz"), out
    subprocess.run([sys.executable, str(IMAGE_ARCHIVE), "--root", str(fake), "--layer", store, "--config",
                    str(config), "--repo-tag", f"{name}:{'b' * 32}", str(out)], check=True)
    tar = out.with_suffix("")  # x.tar.gz -> x.tar
    with open(tar, "wb") as plain:
        subprocess.run(["gzip", "-dc", str(out)], stdout=plain, check=True)
    return tar
