"""The user's CI (.github/workflows), checked offline: zizmor finds nothing at medium or above,
every `run:` block passes shellcheck, and the invariants the README promises hold — every action
pinned to a full commit SHA, permissions stated per job and least needed, AWS only by OIDC,
`pulumi up` only from main in an environment, the README's commands the workflows' own. Each check
is also shown to bite on a mutated copy."""

import copy
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ZIZMOR = pathlib.Path(__file__).resolve().parents[2] / ".venv" / "bin" / "zizmor"


def load(path):
    # PyYAML reads the key `on` as True; the workflows' triggers are not what these checks read.
    return yaml.safe_load(path.read_text())


def workflows():
    return {path.name: load(path) for path in sorted(WORKFLOWS.glob("*.yml"))}


def steps(workflow):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, job, step


# ---------------------------------------------------------------- invariants

SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"@[0-9a-f]{40} # v\d+(\.\d+)*$")


def unpinned(name, text, workflow):
    """Every `uses:` is owner/action@<40 hex> with its version in a comment."""
    found = []
    for job_name, _, step in steps(workflow):
        uses = step.get("uses")
        if uses is None:
            continue
        if not SHA_PIN.match(uses):
            found.append(f"{name}/{job_name}: {uses} is not pinned to a full commit SHA")
        elif not any(VERSION_COMMENT.search(line) for line in text.splitlines() if uses in line):
            found.append(f"{name}/{job_name}: {uses} has no '# vX.Y.Z' comment")
    return found


def assumes_a_role(job):
    return any(step.get("uses", "").startswith("aws-actions/configure-aws-credentials@") for step in job.get("steps", []))


def permission_problems(name, workflow):
    """`permissions: {}` at the top, a `permissions:` in every job, `id-token: write` exactly
    where a role is assumed, nothing written but what the job needs."""
    found = []
    if workflow.get("permissions") != {}:
        found.append(f"{name}: the workflow does not start from `permissions: {{}}`")
    allowed_writes = {"id-token", "pull-requests"}
    for job_name, job in workflow["jobs"].items():
        permissions = job.get("permissions")
        if not isinstance(permissions, dict):
            found.append(f"{name}/{job_name}: no `permissions:` of its own")
            continue
        writes = {scope for scope, level in permissions.items() if level == "write"}
        if writes - allowed_writes:
            found.append(f"{name}/{job_name}: writes {sorted(writes - allowed_writes)}")
        if ("id-token" in writes) != assumes_a_role(job):
            found.append(f"{name}/{job_name}: id-token: write without assuming a role, or a role without it")
        if "pull-requests" in writes and not any(
            step.get("with", {}).get("comment-on-pr") for step in job.get("steps", [])
        ):
            found.append(f"{name}/{job_name}: pull-requests: write without a preview comment")
    return found


def credential_problems(name, workflow):
    """AWS only by OIDC (`role-to-assume`, never keys); no checkout keeps its token."""
    found = []
    for job_name, _, step in steps(workflow):
        uses = step.get("uses", "")
        inputs = step.get("with", {})
        if uses.startswith("aws-actions/configure-aws-credentials@"):
            if "role-to-assume" not in inputs or {"aws-access-key-id", "aws-secret-access-key"} & inputs.keys():
                found.append(f"{name}/{job_name}: AWS credentials not by role-to-assume alone")
        if uses.startswith("actions/checkout@") and inputs.get("persist-credentials") is not False:
            found.append(f"{name}/{job_name}: checkout without persist-credentials: false")
    text = yaml.safe_dump(workflow)
    if re.search(r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY)", text):
        found.append(f"{name}: mentions stored AWS keys")
    return found


def deploy_problems(name, workflow):
    """`pulumi up` (or destroy) only on a push to main, in an environment, after the checks,
    one at a time and never cancelled; no job creates a stack."""
    found = []
    for job_name, job, step in steps(workflow):
        if not step.get("uses", "").startswith("pulumi/actions@"):
            continue
        command = step.get("with", {}).get("command")
        if step.get("with", {}).get("upsert"):
            found.append(f"{name}/{job_name}: creates a stack (upsert): a mistyped PULUMI_STACK would deploy a second copy")
        if command == "preview":
            continue
        where = f"{name}/{job_name} ({command})"
        if job.get("if") != "github.event_name == 'push' && github.ref == 'refs/heads/main'":
            found.append(f"{where}: not limited to a push to main")
        if not job.get("environment"):
            found.append(f"{where}: not in an environment a reviewer can guard")
        if not job.get("needs"):
            found.append(f"{where}: does not wait for the checks")
        if job.get("concurrency", {}).get("cancel-in-progress") is not False:
            found.append(f"{where}: may run beside or cancel another deploy")
    return found


# Actions that download and run code no SHA pins: magic-nix-cache fetches its daemon from
# install.determinate.systems and starts it with the job's environment, OIDC request token included;
# install-nix-action runs Nix's installer from releases.nixos.org.
FETCHES_AT_RUN_TIME = ("DeterminateSystems/magic-nix-cache-action@", "cachix/install-nix-action@")
PULUMI_PIN = re.compile(r"^pulumi==(\S+)$", re.M)


def token_exposure_problems(name, workflow):
    """A job that can mint an OIDC token for an AWS role runs nothing fetched unpinned at run time."""
    found = []
    for job_name, job in workflow["jobs"].items():
        if (job.get("permissions") or {}).get("id-token") != "write":
            continue
        for step in job.get("steps", []):
            if step.get("uses", "").startswith(FETCHES_AT_RUN_TIME):
                found.append(f"{name}/{job_name}: {step['uses'].split('@')[0]} runs beside the OIDC token")
    return found


def pulumi_version_problems(name, workflow):
    """Every Pulumi run uses the CLI version the offline checks pin (pulumi/actions would take any ^3)."""
    pinned = PULUMI_PIN.search((ROOT / "tests" / "pulumi" / "requirements.txt").read_text()).group(1)
    return [f"{name}/{job_name}: pulumi-version is not {pinned}" for job_name, _, step in steps(workflow)
            if step.get("uses", "").startswith("pulumi/actions@")
            and str(step.get("with", {}).get("pulumi-version")) != pinned]


def all_problems(files):
    found = []
    for name, (text, workflow) in files.items():
        found += unpinned(name, text, workflow)
        found += permission_problems(name, workflow)
        found += credential_problems(name, workflow)
        found += deploy_problems(name, workflow)
        found += token_exposure_problems(name, workflow)
        found += pulumi_version_problems(name, workflow)
    return found


def real_files():
    return {path.name: (path.read_text(), load(path)) for path in sorted(WORKFLOWS.glob("*.yml"))}


def test_the_workflows_keep_every_invariant():
    files = real_files()
    assert set(files) == {"ci.yml", "preview.yml"}
    assert all_problems(files) == []


def mutated(change):
    files = copy.deepcopy(real_files())
    change(files)
    return all_problems(files)


def first_step(files, workflow, job, prefix):
    return next(s for s in files[workflow][1]["jobs"][job]["steps"] if s.get("uses", "").startswith(prefix))


def test_the_invariants_bite():
    def tag(files):
        first_step(files, "ci.yml", "tests", "actions/checkout@")["uses"] = "actions/checkout@v7"

    assert mutated(tag) == ["ci.yml/tests: actions/checkout@v7 is not pinned to a full commit SHA"]

    def keys(files):
        step = first_step(files, "ci.yml", "deploy", "aws-actions/")
        step["with"] = {"aws-access-key-id": "x", "aws-secret-access-key": "y", "aws-region": "us-east-1"}

    assert "ci.yml/deploy: AWS credentials not by role-to-assume alone" in mutated(keys)

    def token_kept(files):
        del first_step(files, "preview.yml", "network", "actions/checkout@")["with"]["persist-credentials"]

    assert mutated(token_kept) == ["preview.yml/network: checkout without persist-credentials: false"]

    def oidc_everywhere(files):
        files["ci.yml"][1]["jobs"]["tests"]["permissions"]["id-token"] = "write"

    assert mutated(oidc_everywhere) == [
        "ci.yml/tests: id-token: write without assuming a role, or a role without it"
    ]

    def any_branch(files):
        job = files["ci.yml"][1]["jobs"]["deploy"]
        del job["if"], job["environment"]

    def upsert(files):
        first_step(files, "preview.yml", "preview", "pulumi/actions@")["with"]["upsert"] = True

    assert mutated(upsert) == [
        "preview.yml/preview: creates a stack (upsert): a mistyped PULUMI_STACK would deploy a second copy"
    ]

    assert mutated(any_branch) == [
        "ci.yml/deploy (up): not limited to a push to main",
        "ci.yml/deploy (up): not in an environment a reviewer can guard",
    ]

    def nix_cache_beside_the_token(files):
        cache = first_step(files, "preview.yml", "images", "DeterminateSystems/magic-nix-cache-action@")
        files["ci.yml"][1]["jobs"]["deploy"]["steps"].insert(1, copy.deepcopy(cache))

    assert mutated(nix_cache_beside_the_token) == [
        "ci.yml/deploy: DeterminateSystems/magic-nix-cache-action runs beside the OIDC token"
    ]

    def any_pulumi(files):
        del first_step(files, "preview.yml", "preview", "pulumi/actions@")["with"]["pulumi-version"]

    assert mutated(any_pulumi) == ["preview.yml/preview: pulumi-version is not 3.272.0"]


# ---------------------------------------------------------------- zizmor, shellcheck


def zizmor(folder):
    return subprocess.run(
        [str(ZIZMOR), "--offline", "--min-severity=medium", "--no-progress", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_zizmor_finds_nothing_at_medium_or_above():
    result = zizmor(WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_bites_on_a_pull_request_title_in_a_script(tmp_path):
    text = (WORKFLOWS / "preview.yml").read_text()
    injected = text.replace("run: |\n          status=0\n", 'run: |\n          echo "${{ github.event.pull_request.title }}"\n          status=0\n', 1)
    assert injected != text
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "preview.yml").write_text(injected)
    result = zizmor(folder)
    assert result.returncode != 0 and "template-injection" in result.stdout, result.stdout + result.stderr


def run_blocks():
    for name, workflow in workflows().items():
        for job_name, _, step in steps(workflow):
            if "run" in step:
                yield f"{name}/{job_name}/{step.get('name', step['run'].splitlines()[0])}", step["run"]


def shellcheck(script, tmp_path):
    # GitHub runs a step as `bash --noprofile --norc -eo pipefail {0}`.
    path = tmp_path / "step.sh"
    path.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + script)
    return subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def have_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck is not installed (tests/setup installs it)"


def test_every_run_block_passes_shellcheck(tmp_path, have_shellcheck):
    blocks = list(run_blocks())
    assert len(blocks) >= 5
    for where, script in blocks:
        assert "${{" not in script, f"{where}: an expression inside a script (pass it through env:)"
        result = shellcheck(script, tmp_path)
        assert result.returncode == 0, f"{where}:\n{result.stdout}"


def test_shellcheck_bites_on_an_unquoted_variable(tmp_path, have_shellcheck):
    where, script = next((w, s) for w, s in run_blocks() if '>>"$GITHUB_STEP_SUMMARY"' in s)
    result = shellcheck(script.replace('>>"$GITHUB_STEP_SUMMARY"', ">>$GITHUB_STEP_SUMMARY"), tmp_path)
    assert result.returncode != 0 and "SC2086" in result.stdout, where


# ---------------------------------------------------------------- the README


def test_the_readme_names_the_commands_the_workflows_run():
    section = (WORKFLOWS / "README.md").read_text()
    commands = ["nix flake check -L", "nix build -L .#images", "tests/setup && tests/run"]
    for command in commands:
        assert any(command in script for _, script in run_blocks()), f"no workflow runs {command}"
        assert command in section, f"the README's CI section does not name {command}"
    assert "reach --check" in section or "--check" in section
    for variable in ["AWS_REGION", "AWS_PREVIEW_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN", "PULUMI_STACK", "PULUMI_BACKEND_URL"]:
        used = any(f"vars.{variable}" in path.read_text() for path in WORKFLOWS.glob("*.yml"))
        assert used and variable in section, f"{variable}: used by the workflows and explained in the README"
