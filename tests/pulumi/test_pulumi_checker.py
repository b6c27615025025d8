"""The offline checker: it passes the real program, and it bites.

- Both real programs (App Runner, pulumi/Pulumi.yaml; ECS Express Mode, pulumi/ecs-express/Pulumi.yaml) have no
  diagnostics at all (errors or warnings).
- The broken fixture yields exactly the expected set of errors (no more, no fewer).
- Single mutations of the real program, each a mistake seen in practice, are each reported with their code.
- The schema source is the pinned SDKs, and the program pins the same provider versions.
"""

import copy
import pathlib
import re
from importlib import metadata

import pytest
import yaml
from pulumi_paths import BROKEN, EXPRESS, EXPRESS_STACK, HERE, PROGRAM, REPO

from yamlcheck import Checker, check_program, parse_interpolation
from yamlcheck import names as aws_names
from yamlcheck.program import Ref


def test_program_has_no_diagnostics(program_diagnostics):
    assert [str(d) for d in program_diagnostics] == []


# (code, path) of every error the broken fixture must produce; each is marked BROKEN in the fixture.
EXPECTED_BROKEN = {
    ("toplevel", "unknownTopLevel"),
    ("config", "config.replicas.default"),
    ("config", "config.sizes"),
    ("config", "config.ratio.type"),
    ("enum", "resources.vpc.properties.natGateways.strategy"),
    ("plain", "resources.vpc.properties.numberOfAvailabilityZones"),
    ("type-mismatch", "resources.vpc.properties.numberOfAvailabilityZones"),
    ("type-mismatch", "resources.sg.properties.ingress[0].fromPort"),
    ("type-mismatch", "resources.sg.properties.ingress[0].cidrBlocks"),
    ("missing-required", "resources.sg.properties.ingress[0]"),
    ("option", "resources.sg.protect"),
    ("unknown-type", "resources.bucket.type"),
    ("unknown-property",
     "resources.service.properties.sourceConfiguration.imageRepository.imageConfiguration.runtimeEnvironmentVariabels"),
    ("type-mismatch", "resources.service.properties.healthCheckConfiguration.interval"),
    ("reference", "resources.service.properties.networkConfiguration.egressConfiguration.vpcConnectorArn"),
    ("reference", "resources.service.options.dependsOn[0]"),
    ("option", "resources.service.options.protcet"),
    ("enum", "resources.db-instance.properties.engine"),
    ("reference", "resources.policy.properties.role"),
    ("reference", "resources.policy.properties.policy.fn::toJSON.Statement[0].Resource"),
    ("type-mismatch", "resources.task.properties.serviceRegistries"),
    ("type-mismatch", "resources.task.properties.networkConfiguration.assignPublicIp"),
    ("interpolation", "resources.cmd.properties.create"),
    ("enum", "resources.cmd.properties.logging"),
    ("cycle", "resources.vpc"),
    ("cycle", "resources.loop-b"),
    ("invoke", "resources.nested-invoke.properties.name"),
    ("option", "resources.bad-version.options.version"),
    ("unknown-property", "variables.region.fn::invoke.arguments.nmae"),
    ("invoke", "variables.region.fn::invoke.return"),
    ("unknown-type", "variables.token.fn::invoke.function"),
    ("type-mismatch", "variables.joined.fn::join[1]"),
    ("builtin", "variables.mystery.fn::frobnicate"),
    ("reference", "outputs.missing"),
}


def test_broken_fixture_reports_exactly_the_planted_errors():
    diags = check_program(BROKEN, stack_files=[])
    got = {(d.code, d.path) for d in diags if d.severity == "error"}
    assert sorted(EXPECTED_BROKEN - got) == [], "planted errors the checker missed"
    assert sorted(got - EXPECTED_BROKEN) == [], "errors reported that were not planted"


def test_broken_fixture_marks_every_planted_error():
    """Keeps the fixture honest: one BROKEN marker per planted mistake (some mistakes yield two errors)."""
    markers = BROKEN.read_text().count("# BROKEN")
    assert markers == len(EXPECTED_BROKEN) - 2  # the plain input and the two-resource cycle yield two errors each


def test_broken_fixture_messages_name_the_fix():
    by_path = {d.path: d.message for d in check_program(BROKEN, stack_files=[])}
    assert "did you mean 'runtimeEnvironmentVariables'" in by_path[
        "resources.service.properties.sourceConfiguration.imageRepository.imageConfiguration.runtimeEnvironmentVariabels"]
    assert "did you mean 'arn'" in by_path[
        "resources.service.properties.networkConfiguration.egressConfiguration.vpcConnectorArn"]
    assert "move it under options" in by_path["resources.sg.protect"]
    assert "index it" in by_path["resources.policy.properties.policy.fn::toJSON.Statement[0].Resource"]


# ---------------------------------------------------------------- mutations of the real program


def _set(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


_DELETE = object()
R = "resources"
AR = (R, "frontend", "properties")

MUTATIONS = [
    # (id, [(path, new value)], expected code, expected path)
    ("desiredCount as string", [((R, "private-service", "properties", "desiredCount"), "1")],
     "type-mismatch", "resources.private-service.properties.desiredCount"),
    ("serviceRegistries as list", [((R, "private-service", "properties", "serviceRegistries"),
                                    [{"registryArn": "${private-service-discovery.arn}"}])],
     "type-mismatch", "resources.private-service.properties.serviceRegistries"),
    ("Serverless v1 block", [((R, "db", "properties", "scalingConfiguration"), {"minCapacity": 0, "maxCapacity": 2,
                                                                              "autoPauze": True})],
     "unknown-property", "resources.db.properties.scalingConfiguration.autoPauze"),
    ("instance class missing", [((R, "db-instance", "properties", "instanceClass"), _DELETE)],
     "missing-required", "resources.db-instance.properties"),
    ("secret ARN path typo", [((R, "apprunner-instance-policy", "properties", "policy", "fn::toJSON", "Statement", 0,
                                "Resource"), "${db.masterUserSecret[0].secretArn}")],
     "reference", "resources.apprunner-instance-policy.properties.policy.fn::toJSON.Statement[0].Resource"),
    ("egress config at the wrong depth", [(AR + ("networkConfiguration", "egressType"), "VPC")],
     "unknown-property", "resources.frontend.properties.networkConfiguration.egressType"),
    ("dependsOn outside options", [((R, "frontend", "dependsOn"), ["${db-instance}"])],
     "option", "resources.frontend.dependsOn"),
    ("dependsOn on a missing resource", [((R, "private-service", "options", "dependsOn", 0), "${capacity-providers}")],
     "reference", "resources.private-service.options.dependsOn[0]"),
    ("component given provider", [((R, "vpc", "options", "provider"), "${aws-provider}")],
     "option", "resources.vpc.options.provider"),
    ("plain input from an output", [((R, "vpc", "properties", "natGateways", "strategy"), "${db.engine}")],
     "plain", "resources.vpc.properties.natGateways.strategy"),
    ("NAT strategy enum", [(("config", "natStrategy", "default"), "Shared")],
     "enum", "resources.vpc.properties.natGateways.strategy"),
    ("vpc connector name missing", [((R, "vpc-connector", "properties", "vpcConnectorName"), _DELETE)],
     "missing-required", "resources.vpc-connector.properties"),
    ("ignoreChanges of no input", [((R, "db", "options"), {"ignoreChanges": ["engineVersions"]})],
     "option", "resources.db.options.ignoreChanges[0]"),
    ("config type float", [(("config", "dbMaxAcu", "type"), "number")], "config", "config.dbMaxAcu.type"),
    ("health check port as object", [(AR + ("healthCheckConfiguration", "path"), {"value": "/health"})],
     "type-mismatch", "resources.frontend.properties.healthCheckConfiguration.path"),
    ("variable typo", [((R, "push-frontend", "properties", "create"), "${push-scirpt}")],
     "reference", "resources.push-frontend.properties.create"),
    ("cycle through a rule", [((R, "connector-sg", "properties", "description"), "${connector-to-db.id}")],
     "cycle", None),
    ("name too long for the sample stack", [((R, "autoscaling", "properties", "autoScalingConfigurationName"),
                                             "${pulumi.project}-${pulumi.stack}-autoscaling")],
     "aws-name", "resources.autoscaling.properties.autoScalingConfigurationName"),
    ("fixed ECR name with an upper-case letter", [((R, "frontend-repo", "properties", "name"), "Frontend")],
     "aws-name", "resources.frontend-repo.properties.name"),
]


EX = (R, "frontend", "properties")

# Mistakes in the Express frontend, as the SDK's shapes make likely: each must be reported with its code.
EXPRESS_MUTATIONS = [
    ("networkConfigurations as an object", [(EX + ("networkConfigurations",),
                                             {"subnets": "${vpc.privateSubnetIds}", "securityGroups": []})],
     "type-mismatch", "resources.frontend.properties.networkConfigurations"),
    ("assignPublicIp copied from aws:ecs:Service", [(EX + ("networkConfigurations", 0, "assignPublicIp"), False)],
     "unknown-property", "resources.frontend.properties.networkConfigurations[0].assignPublicIp"),
    ("environment as a map", [(EX + ("primaryContainer", "environments"), {"APPRUNNERSERVICE": "true"})],
     "type-mismatch", "resources.frontend.properties.primaryContainer.environments"),
    ("environment key `environment`", [(EX + ("primaryContainer", "environment"), []),
                                       (EX + ("primaryContainer", "environments"), _DELETE)],
     "unknown-property", "resources.frontend.properties.primaryContainer.environment"),
    ("container port as a string", [(EX + ("primaryContainer", "containerPort"), "8080")],
     "type-mismatch", "resources.frontend.properties.primaryContainer.containerPort"),
    ("scaling target missing its metric", [(EX + ("scalingTargets", 0, "autoScalingMetric"), _DELETE)],
     "missing-required", "resources.frontend.properties.scalingTargets[0]"),
    ("infrastructure role missing", [(EX + ("infrastructureRoleArn",), _DELETE)],
     "missing-required", "resources.frontend.properties"),
    ("health check path misspelt", [(EX + ("healthCheckPaths",), "/health")],
     "unknown-property", "resources.frontend.properties.healthCheckPaths"),
    ("endpoint read from a missing output", [(("outputs", "serviceEndpoint"), "${frontend.ingressPath[0].endpoint}")],
     "reference", "outputs.serviceEndpoint"),
    ("log configuration without its prefix", [(EX + ("primaryContainer", "awsLogsConfigurations", 0,
                                                      "logStreamPrefix"), _DELETE)],
     "missing-required", "resources.frontend.properties.primaryContainer.awsLogsConfigurations[0]"),
]


def _load(path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def base_tree():
    return _load(PROGRAM)


def _check_mutated(tmp_path, base, stack_file, changes):
    tree = copy.deepcopy(base)
    for p, v in changes:
        _set(tree, p, v)
    target = tmp_path / "Pulumi.yaml"
    target.write_text(yaml.safe_dump(tree, sort_keys=False))
    (tmp_path / "Pulumi.dev.yaml").write_text(stack_file.read_text())
    return [d for d in check_program(target) if d.severity == "error"]


@pytest.mark.parametrize("name,changes,code,path", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutation_is_reported(tmp_path: pathlib.Path, base_tree, name, changes, code, path):
    errors = _check_mutated(tmp_path, base_tree, REPO / "pulumi" / "Pulumi.dev.yaml", changes)
    assert any(d.code == code and (path is None or d.path == path) for d in errors), [str(d) for d in errors]


@pytest.mark.parametrize("name,changes,code,path", EXPRESS_MUTATIONS, ids=[m[0] for m in EXPRESS_MUTATIONS])
def test_express_mutation_is_reported(tmp_path: pathlib.Path, name, changes, code, path):
    errors = _check_mutated(tmp_path, _load(EXPRESS), EXPRESS_STACK, changes)
    assert any(d.code == code and (path is None or d.path == path) for d in errors), [str(d) for d in errors]


# ---------------------------------------------------------------- AWS name rules for stack names

# The rule pulumi/README.md states: lowercase letters, digits and single hyphens, no hyphen first or last, <= 23 chars.
GOOD_STACKS = ["dev", "prod-eu", "staging2", "a" * 23, "1st"]
BAD_STACKS = {
    "my_stack": {"resources.db.properties.finalSnapshotIdentifier"},
    "prod.eu": {"resources.db.properties.finalSnapshotIdentifier", "resources.private-service-task.properties.family",
                "resources.vpc-connector.properties.vpcConnectorName",
                "resources.autoscaling.properties.autoScalingConfigurationName",
                "resources.frontend.properties.serviceName"},
    "Dev": {"resources.frontend-repo.properties.name", "resources.private-service-repo.properties.name"},
    "a" * 24: {"resources.autoscaling.properties.autoScalingConfigurationName"},
    "abcdefghijklmnopqrstuvwxyz1234": {"resources.autoscaling.properties.autoScalingConfigurationName"},
    "prod-": {"resources.db.properties.finalSnapshotIdentifier", "resources.frontend-repo.properties.name",
              "resources.private-service-repo.properties.name"},
    # ECR allows '--' (any run of hyphens); RDS does not.
    "prod--eu": {"resources.db.properties.finalSnapshotIdentifier"},
}


# botocore's ECR RepositoryName: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*, 2-256.
GOOD_ECR_NAMES = ["ab", "frontend", "apprunner-vpc-demo-dev/frontend", "a--b", "a---b/c", "a__b", "a_b.c-d",
                  "ns/sub/private-service", "1/2", "a" * 256]
BAD_ECR_NAMES = ["a", "Frontend", "a___b", "a..b", "a-_b", "-a", "a-", "a_", ".a", "/a", "a/", "a//b", "a/-b",
                 "a b", "a:b", "a" * 257]


@pytest.mark.parametrize("name", GOOD_ECR_NAMES)
def test_ecr_rule_accepts_what_ecr_accepts(name):
    assert aws_names.rule_for("aws:ecr/repository:Repository", "name").problem(name) is None


@pytest.mark.parametrize("name", BAD_ECR_NAMES)
def test_ecr_rule_refuses_what_ecr_refuses(name):
    assert aws_names.rule_for("aws:ecr/repository:Repository", "name").problem(name) is not None


# The Express program has no App Runner names (and its service name is generated), so long names pass there.
EXPRESS_BAD_STACKS = {
    "my_stack": {"resources.db.properties.finalSnapshotIdentifier"},
    "prod.eu": {"resources.db.properties.finalSnapshotIdentifier", "resources.private-service-task.properties.family"},
    "Dev": {"resources.frontend-repo.properties.name", "resources.private-service-repo.properties.name"},
    "prod-": {"resources.db.properties.finalSnapshotIdentifier", "resources.frontend-repo.properties.name",
              "resources.private-service-repo.properties.name"},
    "prod--eu": {"resources.db.properties.finalSnapshotIdentifier"},
    # final-<stack>-<VPC id>: 64 characters with the longest VPC id, one over CreateDBClusterSnapshot's 63
    "a" * 36: {"resources.db.properties.finalSnapshotIdentifier"},
}


@pytest.mark.parametrize("stack", GOOD_STACKS)
def test_good_stack_names_pass_the_aws_name_rules(program_path, stack):
    assert [str(d) for d in check_program(program_path, stack_names=[stack]) if d.code == "aws-name"] == []


@pytest.mark.parametrize("program_path,stack,paths",
                         [(PROGRAM, s, p) for s, p in BAD_STACKS.items()]
                         + [(EXPRESS, s, p) for s, p in EXPRESS_BAD_STACKS.items()],
                         ids=[f"apprunner-{s}" for s in BAD_STACKS] + [f"express-{s}" for s in EXPRESS_BAD_STACKS])
def test_bad_stack_names_are_reported_where_they_break_a_name(program_path, stack, paths):
    diags = [d for d in check_program(program_path, stack_names=[stack]) if d.code == "aws-name"]
    assert {d.path for d in diags} == paths
    assert all(repr(stack) in d.message for d in diags)


def test_stack_file_names_are_checked(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text(PROGRAM.read_text())
    (tmp_path / "Pulumi.my_stack.yaml").write_text("config:\n  aws:region: eu-west-1\n")
    assert {(d.code, d.path) for d in check_program(tmp_path / "Pulumi.yaml")} == {
        ("aws-name", "resources.db.properties.finalSnapshotIdentifier")}


def test_undeclared_stack_setting_is_reported(tmp_path):
    stack = tmp_path / "Pulumi.prod.yaml"
    stack.write_text("config:\n  aws:regoin: us-east-1\n  apprunner-vpc-demo:dbMaxAcu: two\n  natStrat: Single\n")
    errors = {(d.code, d.path) for d in check_program(PROGRAM, stack_files=[stack])}
    assert ("config", "Pulumi.prod.yaml:config.aws:regoin") in errors
    assert ("config", "Pulumi.prod.yaml:config.apprunner-vpc-demo:dbMaxAcu") in errors
    assert ("config", "Pulumi.prod.yaml:config.natStrat") in errors


def test_duplicate_keys_are_reported(tmp_path):
    text = PROGRAM.read_text().replace("      databaseName: apprunnerdemo\n",
                                       "      databaseName: apprunnerdemo\n      databaseName: other\n")
    target = tmp_path / "Pulumi.yaml"
    target.write_text(text)
    assert ("duplicate-key", "resources.db.properties.databaseName") in {
        (d.code, d.path) for d in check_program(target, stack_files=[])}


# ---------------------------------------------------------------- interpolation grammar


@pytest.mark.parametrize("text,parts", [
    ("plain", ["plain"]),
    ("$${HOME}", ["${HOME}"]),
    ("${a.b[0].c}", [Ref("a", ("b", 0, "c"), "${a.b[0].c}")]),
    ('${a["x.y"].z}', [Ref("a", ("x.y", "z"), '${a["x.y"].z}')]),
    ("https://${svc.serviceUrl}/x", ["https://", Ref("svc", ("serviceUrl",), "${svc.serviceUrl}"), "/x"]),
    ("${aws:region}", [Ref("aws:region", (), "${aws:region}")]),
])
def test_interpolation_parses(text, parts):
    got, error = parse_interpolation(text)
    assert error is None
    assert got == parts


@pytest.mark.parametrize("text", ["${a", "${a[x]}", "${}", '${a["x}'])
def test_malformed_interpolation_is_an_error(text):
    _, error = parse_interpolation(text)
    assert error


# ---------------------------------------------------------------- one schema for deploy and test


def _pins() -> dict[str, str]:
    text = (HERE / "requirements.txt").read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", text, re.M))


def test_installed_sdks_are_the_pinned_ones():
    for dist, version in _pins().items():
        assert metadata.version(dist) == version, dist


def test_program_pins_the_checked_provider_versions(resources):
    pins = _pins()
    assert resources["aws-provider"]["options"]["version"] == pins["pulumi-aws"]
    for name, res in resources.items():
        pkg = res["type"].split(":")[0]
        if pkg == "awsx":
            assert res["options"]["version"] == pins["pulumi-awsx"], name
        if pkg == "command":
            assert res["options"]["version"] == pins["pulumi-command"], name


def test_checker_uses_a_fresh_schema_per_token():
    """Tokens resolve case-insensitively and in every accepted spelling, as pulumi-yaml does."""
    from yamlcheck import sdkschema as S

    assert S.resource("aws:apprunner:Service").token == "aws:apprunner/service:Service"
    assert S.resource("aws:apprunner/service:Service").token == "aws:apprunner/service:Service"
    assert S.resource("aws:ecs:clustercapacityproviders").token.endswith(":ClusterCapacityProviders")
    assert S.function("aws:getRegion").token == "aws:index/getRegion:getRegion"
    assert S.resource("aws:apprunner:Servic") is None
    assert Checker  # exported for tooling
