"""The pipeline's AWS side (pulumi/ci): what the workflows assume, made once from a laptop.

The offline checker finds nothing in it; each role trusts GitHub's tokens only for STS (`aud`) and only for this
repository's one environment the workflows name (`sub`, exact match); GitHub's provider is for STS only and outlives
the stack; the preview role reads the state and writes nothing; the state bucket is versioned, private, encrypted with the stacks' key and protected; the outputs are the
variables the workflows read. Mutations show each check bites.
"""

import copy

import yaml
from pulumi_paths import CI_PROGRAM, REPO

from yamlcheck import check_program

WORKFLOWS = REPO / ".github" / "workflows"


def load():
    return yaml.safe_load(CI_PROGRAM.read_text(encoding="utf-8"))


def workflow_environment(workflow, job):
    return yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"][job]["environment"]


def trust_problems(program):
    """Each role's trust: one statement, GitHub's provider, STS web identity, aud and sub matched exactly, sub naming
    the environment the workflow's job runs in."""
    found = []
    expected = {
        "preview-role": ("previewTrust", "previewEnvironment", workflow_environment("preview.yml", "preview")),
        "deploy-role": ("deployTrust", "deployEnvironment", workflow_environment("ci.yml", "deploy")),
    }
    for role, (variable, setting, environment) in expected.items():
        if program["resources"][role]["properties"]["assumeRolePolicy"] != f"${{{variable}}}":
            found.append(f"{role}: its trust is not ${{{variable}}}")
            continue
        if program["config"][setting].get("default") != environment:
            found.append(f"{role}: {setting} defaults to {program['config'][setting].get('default')!r}, the workflow runs in {environment!r}")
        statements = program["variables"][variable]["fn::toJSON"]["Statement"]
        if len(statements) != 1:
            found.append(f"{variable}: {len(statements)} statements")
            continue
        statement = statements[0]
        if statement.get("Principal") != {"Federated": "${github-oidc.arn}"}:
            found.append(f"{variable}: trusts {statement.get('Principal')}")
        if statement.get("Action") != "sts:AssumeRoleWithWebIdentity" or statement.get("Effect") != "Allow":
            found.append(f"{variable}: {statement.get('Effect')} {statement.get('Action')}")
        conditions = statement.get("Condition", {})
        if set(conditions) != {"StringEquals"}:
            found.append(f"{variable}: conditions {sorted(conditions)} (only StringEquals: no wildcard subject)")
        equals = conditions.get("StringEquals", {})
        if equals.get("token.actions.githubusercontent.com:aud") != "sts.amazonaws.com":
            found.append(f"{variable}: aud is not sts.amazonaws.com")
        if equals.get("token.actions.githubusercontent.com:sub") != f"${{githubSubject}}:environment:${{{setting}}}":
            found.append(f"{variable}: sub is {equals.get('token.actions.githubusercontent.com:sub')!r}")
    return found


def test_the_checker_finds_nothing():
    assert [str(d) for d in check_program(CI_PROGRAM)] == []


def test_each_role_trusts_only_its_environment_of_this_repository():
    assert trust_problems(load()) == []


def mutated(change):
    program = copy.deepcopy(load())
    change(program)
    return trust_problems(program)


def statement(program, variable):
    return program["variables"][variable]["fn::toJSON"]["Statement"][0]


def test_the_trust_checks_bite():
    def any_ref(program):
        equals = statement(program, "deployTrust")["Condition"].pop("StringEquals")
        statement(program, "deployTrust")["Condition"]["StringLike"] = {
            **equals,
            "token.actions.githubusercontent.com:sub": "${githubSubject}:*",
        }

    assert mutated(any_ref) == [
        "deployTrust: conditions ['StringLike'] (only StringEquals: no wildcard subject)",
        "deployTrust: aud is not sts.amazonaws.com",
        "deployTrust: sub is None",
    ]

    def no_audience(program):
        del statement(program, "previewTrust")["Condition"]["StringEquals"]["token.actions.githubusercontent.com:aud"]

    assert mutated(no_audience) == ["previewTrust: aud is not sts.amazonaws.com"]

    def other_environment(program):
        program["config"]["deployEnvironment"]["default"] = "production"

    assert mutated(other_environment) == [
        "deploy-role: deployEnvironment defaults to 'production', the workflow runs in 'aws'"
    ]

    def any_branch(program):
        statement(program, "deployTrust")["Condition"]["StringEquals"][
            "token.actions.githubusercontent.com:sub"
        ] = "${githubSubject}:ref:refs/heads/main"

    assert mutated(any_branch) == ["deployTrust: sub is '${githubSubject}:ref:refs/heads/main'"]


def preview_grants(program):
    resources = program["resources"]
    inline = [r for r in resources.values() if r["type"] == "aws:iam:RolePolicy" and r["properties"]["role"] == "${preview-role.id}"]
    assert len(inline) == 1
    return inline[0]["properties"]["policy"]["fn::toJSON"]["Statement"]


# What a preview needs of the state backend: list and read the state, decrypt its secrets (the S3 backend takes
# no lock for a preview and saves nothing).
PREVIEW_NEEDS = {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"}


def write_problems(program):
    """The preview role writes nothing: a pull request's workflow must neither rewrite the state the next deploy
    acts on nor leave a lock that stops it."""
    found = []
    for grant in preview_grants(program):
        actions = grant["Action"] if isinstance(grant["Action"], list) else [grant["Action"]]
        found += [f"{action} on {grant['Resource']}" for action in actions if action not in PREVIEW_NEEDS]
    return found


def test_the_preview_role_writes_nothing():
    program = load()
    attached = [r["properties"]["policyArn"] for r in program["resources"].values()
                if r["type"] == "aws:iam:RolePolicyAttachment" and r["properties"]["role"] == "${preview-role.name}"]
    assert attached == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    assert write_problems(program) == []
    lock_writes = copy.deepcopy(program)
    preview_grants(lock_writes).append({"Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
                                        "Resource": "${state-bucket.arn}/.pulumi/locks/*"})
    assert write_problems(lock_writes) == ["s3:PutObject on ${state-bucket.arn}/.pulumi/locks/*",
                                           "s3:DeleteObject on ${state-bucket.arn}/.pulumi/locks/*"]
    encrypts = copy.deepcopy(program)
    preview_grants(encrypts)[-1]["Action"] = ["kms:Decrypt", "kms:GenerateDataKey"]
    assert write_problems(encrypts) == ["kms:GenerateDataKey on ${state-key.arn}"]


def test_githubs_provider_is_for_sts_and_outlives_the_stack():
    """GitHub's issuer, STS the only audience; other GitHub roles of the account may trust the one provider an
    account can have for that URL, so destroying this stack must not delete it."""
    provider = load()["resources"]["github-oidc"]
    assert provider["properties"] == {"url": "https://token.actions.githubusercontent.com",
                                      "clientIdLists": ["sts.amazonaws.com"]}
    assert provider["options"]["retainOnDelete"] is True


def test_the_state_bucket_and_key_are_versioned_private_encrypted_and_protected():
    resources = load()["resources"]
    assert resources["state-bucket"]["options"]["protect"] is True
    assert resources["state-bucket-versioning"]["properties"]["versioningConfiguration"] == {"status": "Enabled"}
    (rule,) = resources["state-bucket-encryption"]["properties"]["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "${state-key.arn}"}
    block = resources["state-bucket-private"]["properties"]
    assert all(block[key] is True for key in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    assert resources["state-key"]["properties"]["enableKeyRotation"] is True
    assert resources["state-key"]["options"]["protect"] is True, "without the key the state's secrets are lost"


def test_the_outputs_are_the_variables_the_workflows_read():
    outputs = load()["outputs"]
    text = "".join(path.read_text() for path in WORKFLOWS.glob("*.yml"))
    for name in ("AWS_REGION", "AWS_PREVIEW_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN", "PULUMI_BACKEND_URL"):
        assert name in outputs and f"vars.{name}" in text, name
    assert outputs["PULUMI_BACKEND_URL"].startswith("s3://${state-bucket.bucket}?region=")
    assert outputs["secretsProvider"].startswith("awskms://${state-key-alias.name}?region=")


def test_its_own_state_stays_on_the_laptop():
    # It creates the backend the other stacks use, so it cannot keep its own state there.
    assert "pulumi login --local" in CI_PROGRAM.read_text(encoding="utf-8")


def test_each_session_the_workflows_ask_for_fits_its_role():
    # configure-aws-credentials asks for 1 hour by OIDC unless role-duration-seconds says otherwise; AWS refuses
    # more than the role's maxSessionDuration.
    resources = load()["resources"]
    asked = {}
    for workflow in WORKFLOWS.glob("*.yml"):
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("aws-actions/configure-aws-credentials@"):
                    role = {"${{ vars.AWS_DEPLOY_ROLE_ARN }}": "deploy-role", "${{ vars.AWS_PREVIEW_ROLE_ARN }}": "preview-role"}[
                        step["with"]["role-to-assume"]]
                    asked[role] = int(step["with"].get("role-duration-seconds", 3600))
    assert asked == {"deploy-role": 7200, "preview-role": 3600}
    for role, seconds in asked.items():
        assert seconds <= resources[role]["properties"]["maxSessionDuration"], role
