"""The image push, run for real: the push commands of pulumi/Pulumi.yaml and pulumi/ecs-express/Pulumi.yaml (each
test that takes `program` runs once per program) and `nix run .#push-images`' script
against a local registry that looks like ECR (see pushbox.py), on a host without a containers trust policy.

Needs root and skopeo, docker-registry, htpasswd (tests/pulumi/setup.sh installs them); fails, never skips,
without them.

The archives are the .tar.gz files laid out and gzip-wrapped as nixpkgs writes them (tests/nix/image_archive.py),
pushed after `gzip -dc`: Debian's skopeo 1.9.3 pins klauspost/pgzip v1.2.5, whose Reader.WriteTo loses data after
a Read (klauspost/pgzip#50, containers/podman#15944), so it cannot read any gzip docker-archive; skopeo >= 1.10,
nixpkgs' included, can. test_this_skopeo_and_the_gzip_archive pins down which case this host is in.
"""

import hashlib
import pathlib
import re
import subprocess
import time

import pytest
import yaml
from pulumi_paths import PROGRAMS, REPO, STACK
from pushbox import CN_HOST, HOST, PushBox, make_archive, missing_prerequisites

from yamlcheck import parse_interpolation
from yamlcheck.program import Ref

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
PUSH_IMAGES = REPO / "nix" / "push-images.sh"
STACK_NAME = STACK.name.split(".")[1]  # Pulumi.dev.yaml -> dev


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    problem = missing_prerequisites()
    if problem:
        pytest.fail(problem)
    root = tmp_path_factory.mktemp("push")
    b = PushBox(root)
    # What `nix build .#images` writes (result/<image>.tar.gz), and its `gzip -dc` that this skopeo pushes.
    b.frontend_gz, b.private_gz = root / "frontend.tar.gz", root / "private-service.tar.gz"
    b.frontend = make_archive(root, "frontend", b"frontend binary v1\n" * 1000, b.frontend_gz)
    b.private = make_archive(root, "private-service", b"private binary v1\n" * 1000, b.private_gz)
    return b


@pytest.fixture(scope="module", params=list(PROGRAMS))
def program(request):
    return yaml.safe_load(PROGRAMS[request.param][0].read_text())


def paths_of(program):
    """(program file, sample stack file) of a parsed program, found by its project name."""
    (found,) = [paths for paths in PROGRAMS.values() if yaml.safe_load(paths[0].read_text())["name"] == program["name"]]
    assert found[1].name == STACK.name  # both sample stacks are `dev`, which render() stands in for
    return found


def render(template: str, program) -> str:
    """A name template with only ${pulumi.project} / ${pulumi.stack} in it, for the sample stack."""
    parts, error = parse_interpolation(template)
    assert error is None
    values = {("pulumi", ("project",)): program["name"], ("pulumi", ("stack",)): STACK_NAME}
    return "".join(p if isinstance(p, str) else values[(p.root, p.accessors)] for p in parts)


def pulumi_push(program, resource: str, archive: pathlib.Path) -> tuple[str, dict[str, str]]:
    """The `create` script of a push command and the environment pulumi-command would give it.

    Every `${...}` in the environment must be one this function knows how to stand in for, so a new input
    of the command makes this test fail instead of being silently left out.
    """
    res = program["resources"][resource]
    assert res["type"] == "command:local:Command"
    # No `dir`, no interpreter: the script runs under /bin/sh in the program's folder (run_pulumi_push).
    assert set(res["properties"]) == {"create", "update", "environment", "triggers", "logging"}, resource
    create = res["properties"]["create"]
    (ref,) = [p for p in parse_interpolation(create)[0] if isinstance(p, Ref)]
    script = program["variables"][ref.root]
    region = yaml.safe_load(paths_of(program)[1].read_text())["config"]["aws:region"]
    env = {}
    for key, value in res["properties"]["environment"].items():
        assert isinstance(value, str), (key, value)  # a secret or built-in here would need handling
        parts, error = parse_interpolation(value)
        assert error is None and len(parts) == 1 and isinstance(parts[0], Ref), (key, value)
        r = parts[0]
        if r.root in program.get("config", {}) and r.root.endswith("Archive"):
            env[key] = str(archive)
            env["__cwd"] = str(paths_of(program)[0].parent)  # not passed on: where pulumi-command runs
        elif r.root == "aws:region":
            env[key] = region
        elif program["resources"].get(r.root, {}).get("type") == "aws:ecr:Repository" and r.accessors == (
                "repositoryUrl",):
            # what ECR reports: <account>.dkr.ecr.<region>.amazonaws.com/<name>
            env[key] = f"{HOST}/{render(program['resources'][r.root]['properties']['name'], program)}"
        else:
            pytest.fail(f"{resource}.environment.{key} = {value!r}: no stand-in for this input")
    return script, env


def run_pulumi_push(box, script, env):
    # pulumi-command 1.2.1 runs `/bin/sh -c <create>` with its own environment plus `environment`, in `dir` or,
    # as here without one, in its own working directory: the folder of Pulumi.yaml, where the CLI starts plugins.
    env = dict(env)
    cwd = env.pop("__cwd")
    return box.run(["/bin/sh", "-c", script], box.env(**env), cwd=cwd)


def manifest_digest(box, reference) -> str:
    raw = box.inspect_raw(reference)
    assert raw.returncode == 0, raw.stderr
    return "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest()


# ---------------------------------------------------------------- the Pulumi push commands


@pytest.mark.parametrize("resource,archive", [("push-frontend", "frontend"), ("push-private-service", "private")])
def test_pulumi_push_command_pushes_and_prints_only_the_digest(box, program, resource, archive):
    script, env = pulumi_push(program, resource, getattr(box, archive))
    started = time.monotonic()
    first = run_pulumi_push(box, script, env)
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert DIGEST.fullmatch(first.stdout), repr(first.stdout)  # stdout is the digest and nothing else
    again = run_pulumi_push(box, script, env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout  # same archive, same digest
    # The digest names what the registry holds: the manifest it serves hashes to it.
    assert manifest_digest(box, f"{env['REPOSITORY']}@{first.stdout}") == first.stdout
    assert env["REPOSITORY"].startswith(f"{HOST}/{program['name']}-{STACK_NAME}/")
    print(f"{resource}: first push {took:.1f} s")


def test_pulumi_push_needs_its_own_policy_flag(box, program):
    """Mutation: without --insecure-policy the same script fails here — the hidden policy file matters."""
    script, env = pulumi_push(program, "push-frontend", box.frontend)
    assert script.count("skopeo --insecure-policy copy") == 1
    mutated = run_pulumi_push(box, script.replace("--insecure-policy ", ""), env)
    assert mutated.returncode != 0
    assert "policy.json" in mutated.stderr, mutated.stderr
    assert mutated.stdout == ""


def test_pulumi_push_fails_loudly_when_login_fails(box, program):
    script, env = pulumi_push(program, "push-frontend", box.frontend)
    env["REGION"] = "eu-north-1"  # the stub answers us-east-1 only, like a credential for another region
    failed = run_pulumi_push(box, script, env)
    assert failed.returncode != 0 and failed.stdout == ""


# ---------------------------------------------------------------- nix run .#push-images


def run_push_images(box, script_text, *args):
    script = box.root / "push-images.sh"
    script.write_text(script_text)
    # writeShellApplication runs its text with bash under errexit, nounset and pipefail.
    env = box.env(FRONTEND_ARCHIVE=str(box.frontend), PRIVATE_SERVICE_ARCHIVE=str(box.private))
    return box.run(["bash", "-o", "errexit", "-o", "nounset", "-o", "pipefail", str(script), *args], env)


def test_push_images_pushes_both_into_the_stack_namespace(box, program):
    namespace = f"{program['name']}-{STACK_NAME}"
    done = run_push_images(box, PUSH_IMAGES.read_text(), f"{HOST}/{namespace}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("=")[0] for line in lines] == [f"{namespace}/frontend", f"{namespace}/private-service"]
    for line in lines:
        name, ref = line.split("=", 1)
        repository, digest = ref.split("@")
        assert repository == f"{HOST}/{name}" and DIGEST.fullmatch(digest)
        assert manifest_digest(box, ref) == digest
    # The same repositories and digests the Pulumi push commands use for the same archives.
    for resource, archive, line in (("push-frontend", box.frontend, lines[0]),
                                    ("push-private-service", box.private, lines[1])):
        script, env = pulumi_push(program, resource, archive)
        assert line.split("=", 1)[1] == f"{env['REPOSITORY']}@{run_pulumi_push(box, script, env).stdout}"


def test_push_images_without_namespace_and_usage(box):
    done = run_push_images(box, PUSH_IMAGES.read_text(), HOST)
    assert done.returncode == 0, done.stderr
    assert [line.split("=")[0] for line in done.stdout.splitlines()] == ["frontend", "private-service"]
    # Namespaces follow ECR's repository name rule (yamlcheck/names.py): '__' and runs of '-' are allowed,
    # '___', a separator at either end of a component, '//' and upper case are not.
    for bad in ([], [f"https://{HOST}"], [f"{HOST}/Upper"], [f"{HOST}/a___b"], [f"{HOST}/a-"], [f"{HOST}/-a"],
                [f"{HOST}//a"], [f"{HOST}/a/"], [f"{HOST}.evil.example"], [f"{HOST}.cn.evil.example"],
                ["123456789012.dkr.ecr.us-east-1.amazonaws.cn"], ["127.0.0.1:5000"], [HOST, HOST]):
        refused = run_push_images(box, PUSH_IMAGES.read_text(), *bad)
        assert refused.returncode == 2 and "usage: push-images" in refused.stderr, (bad, refused.stderr)


def test_push_images_accepts_every_ecr_namespace_form(box):
    done = run_push_images(box, PUSH_IMAGES.read_text(), f"{HOST}/team--a__b.c/x-1")
    assert done.returncode == 0, done.stderr
    assert [line.split("=")[0] for line in done.stdout.splitlines()] == [
        "team--a__b.c/x-1/frontend", "team--a__b.c/x-1/private-service"]


def test_push_images_to_a_china_region_registry(box, program):
    """China regions' registries are <account>.dkr.ecr.<region>.amazonaws.com.cn; login uses that region."""
    namespace = f"{program['name']}-{STACK_NAME}"
    done = run_push_images(box, PUSH_IMAGES.read_text(), f"{CN_HOST}/{namespace}")
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        name, ref = line.split("=", 1)
        assert ref.startswith(f"{CN_HOST}/{name}@") and manifest_digest(box, ref) == ref.split("@")[1]


def test_push_images_needs_its_own_policy_flag(box):
    text = PUSH_IMAGES.read_text()
    assert text.count("skopeo --insecure-policy copy") == 1
    mutated = run_push_images(box, text.replace("--insecure-policy ", ""), HOST)
    assert mutated.returncode != 0 and "policy.json" in mutated.stderr, mutated.stderr


# ---------------------------------------------------------------- the .tar.gz as nix build writes it


def skopeo_version() -> tuple[int, ...]:
    out = subprocess.run(["skopeo", "--version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(x) for x in re.search(r"(\d+)\.(\d+)\.(\d+)", out).groups())


def test_this_skopeo_and_the_gzip_archive(box):
    """The push tests push `gzip -dc` of the .tar.gz; this says why, for the skopeo on this host.

    skopeo < 1.10 (Debian's 1.9.3) pins klauspost/pgzip v1.2.5, whose Reader.WriteTo drops what a preceding
    Read decoded (klauspost/pgzip#50, containers/podman#15944): reading manifest.json from the gzip stream
    ends early. skopeo >= 1.10 (nixpkgs' 1.22.x) decompresses through compression.AutoDecompress: there the
    .tar.gz itself must push, to the same digest as its decompressed tar.
    """
    def push(archive, tag):
        digest = box.root / f"gz-check-{tag}.digest"
        done = box.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-creds", f"AWS:{box.password}",
                        "--digestfile", str(digest), f"docker-archive:{archive}",
                        f"docker://{HOST}/gz-check/frontend:{tag}"], box.env())
        return done, (digest.read_text() if done.returncode == 0 else None)

    with open(box.frontend_gz, "rb") as gz:
        assert gz.read(2) == b"\x1f\x8b"  # the archive under test really is the gzip-wrapped one
    plain, plain_digest = push(box.frontend, "tar")
    assert plain.returncode == 0, plain.stderr
    gzipped, gz_digest = push(box.frontend_gz, "targz")
    if skopeo_version() < (1, 10):
        assert gzipped.returncode != 0 and "unexpected EOF" in gzipped.stderr, gzipped.stderr
    else:
        assert gzipped.returncode == 0, gzipped.stderr
        assert gz_digest == plain_digest
