"""Architecture policy of pulumi/Pulumi.yaml (App Runner) and pulumi/ecs-express/Pulumi.yaml (ECS Express Mode):
the invariants the design depends on, read from the programs themselves.

Each test names one invariant. They look at resources by type and follow `${...}` references, so renaming a
resource does not break them, while rewiring one (a port opened to the world, a secret grant widened, a service
left on a mutable tag) does. Tests that take `program`/`resources`/`frontend` run for both programs (the shared
invariants); the App Runner and Express sections hold what only one of them has. The frontend differs between
the two, so `Frontend` reads the same facts (its security group, subnets, identity, environment, image, health
check) from either.
"""

import copy
import re

import pytest
import yaml
from policy import (Frontend, as_list, assert_check_bites, config_default, depends_on, of_type, only, ref, ref_to,
                    statements)
from pulumi_paths import PROGRAMS, REPO

from yamlcheck import names as aws_names
from yamlcheck import parse_interpolation, refs_in
from yamlcheck import sdkschema as S


@pytest.fixture(scope="module")
def sg_rules(resources):
    rules = []
    for kind, token in (("ingress", "aws:vpc:SecurityGroupIngressRule"), ("egress", "aws:vpc:SecurityGroupEgressRule")):
        for name, r in of_type(resources, token).items():
            p = r["properties"]
            rules.append((kind, name, ref(p["securityGroupId"]).root, p))
    return rules


@pytest.fixture(scope="module")
def frontend(program) -> Frontend:
    return Frontend.of(program)


@pytest.fixture(scope="module")
def env(frontend):
    return frontend.env


@pytest.fixture(scope="module")
def apprunner(apprunner_program):
    return only(apprunner_program["resources"], "aws:apprunner:Service")[1]["properties"]


def private_cluster(resources):
    """The cluster the private service (the one aws:ecs:Service) runs in; the Express program has two."""
    _, svc = only(resources, "aws:ecs:Service")
    r = ref(svc["properties"]["cluster"])
    assert r.accessors == ("arn",)
    return r.root


# ---------------------------------------------------------------- network


def test_vpc_has_public_and_private_subnets_dns_and_nat(program, resources):
    _, vpc = only(resources, "awsx:ec2:Vpc")
    p = vpc["properties"]
    assert p["enableDnsSupport"] is True and p["enableDnsHostnames"] is True  # Cloud Map private DNS
    assert {s["type"] for s in p["subnetSpecs"]} == {"Public", "Private"}
    assert ref_to(p["natGateways"]["strategy"], "natStrategy")
    assert config_default(program, "natStrategy") == "Single"


def test_vpc_zones_are_two_named_zones_that_can_be_excluded_by_id(program, resources):
    """awsx 3.11 throws when both availabilityZoneNames and numberOfAvailabilityZones are given, and takes an
    empty name list as zero zones: so the names are always given, picked from the region's available zones."""
    p = only(resources, "awsx:ec2:Vpc")[1]["properties"]
    assert "numberOfAvailabilityZones" not in p
    picks = [z["fn::select"] for z in p["availabilityZoneNames"]]
    assert [i for i, _ in picks] == [0, 1]
    (source,) = {ref(lst).root for _, lst in picks}
    invoke = program["variables"][source]["fn::invoke"]
    assert invoke["function"] == "aws:getAvailabilityZones" and invoke["return"] == "names"
    args = invoke["arguments"]
    check_zones_ignore_state(program)
    assert {"name": "opt-in-status", "values": ["opt-in-not-required"]} in args["filters"]  # no Local Zones
    assert ref_to(args["excludeZoneIds"], "excludedAvailabilityZoneIds")
    assert config_default(program, "excludedAvailabilityZoneIds") == []


def check_zones_ignore_state(program):
    """No state filter (awsx's own getDefaultAzs has none either): a zone that turns `constrained` or `unavailable`
    must not change the two names, or awsx would replace the subnets (create-only), then the DB subnet group and
    the App Runner connector, and fail while their network interfaces are attached."""
    invokes = [v["fn::invoke"] for v in program.get("variables", {}).values()
               if isinstance(v, dict) and isinstance(v.get("fn::invoke"), dict)
               and v["fn::invoke"].get("function") == "aws:getAvailabilityZones"]
    assert invokes
    for invoke in invokes:
        assert "state" not in invoke.get("arguments", {}), invoke


def test_everything_private_sits_in_private_subnets(resources):
    def private_subnets(v):
        return ref_to(v, "vpc", "privateSubnetIds")

    assert private_subnets(only(resources, "aws:rds:SubnetGroup")[1]["properties"]["subnetIds"])
    net = only(resources, "aws:ecs:Service")[1]["properties"]["networkConfiguration"]
    assert private_subnets(net["subnets"]) and net["assignPublicIp"] is False
    assert only(resources, "aws:rds:ClusterInstance")[1]["properties"]["publiclyAccessible"] is False


def check_frontend_is_public(program):
    """App Runner's connector sits in private subnets (its public endpoint is App Runner's, outside the VPC).
    Express Mode's load balancer sits in the tasks' subnets and is internet-facing only if they are public
    ("If you provide custom public subnets, Express Mode will provision an internet-facing ALB and turn on
    assignPublicIP for your tasks. If you provide private subnets ... an internal ALB": ECS developer guide,
    express-service-work.html); the tasks' group then admits nothing itself (see the security group tests)."""
    frontend = Frontend.of(program)
    expected = {"apprunner": "privateSubnetIds", "express": "publicSubnetIds"}[frontend.kind]
    assert ref_to(frontend.subnets, "vpc", expected), frontend.subnets
    if frontend.kind == "apprunner":
        assert frontend.resource["properties"]["networkConfiguration"]["ingressConfiguration"][
            "isPubliclyAccessible"] is True


def test_the_frontend_is_public(program):
    check_frontend_is_public(program)


def test_no_inline_security_group_rules(resources):
    """Rules live in their own resources, so each one is visible and the SG never mixes the two styles."""
    for name, sg in of_type(resources, "aws:ec2:SecurityGroup").items():
        assert not {"ingress", "egress"} & set(sg.get("properties", {})), name


@pytest.mark.parametrize("port,target", [(5432, "aws:rds:Cluster"), (8080, "aws:ecs:Service")])
def test_private_ports_open_only_to_the_frontend(resources, sg_rules, frontend, port, target):
    # The security group the target actually uses...
    props = only(resources, target)[1]["properties"]
    sgs = props.get("vpcSecurityGroupIds") or props["networkConfiguration"]["securityGroups"]
    (target_sg,) = [ref(s).root for s in sgs]
    ingress = [(n, p) for kind, n, sg, p in sg_rules if kind == "ingress" and sg == target_sg]
    # ...admits exactly one rule, on exactly this port, from the frontend's SG and from no address range.
    assert len(ingress) == 1, ingress
    _, p = ingress[0]
    assert (p["ipProtocol"], p["fromPort"], p["toPort"]) == ("tcp", port, port)
    assert ref_to(p["referencedSecurityGroupId"], frontend.sg, "id")
    assert not {"cidrIpv4", "cidrIpv6", "prefixListId"} & set(p)


def test_nothing_is_open_to_the_internet(sg_rules):
    for kind, name, _, p in sg_rules:
        if kind == "ingress":
            assert p.get("cidrIpv4") is None and p.get("cidrIpv6") is None, name


def test_frontend_group_is_egress_only_and_its_egress_is_explicit(sg_rules, frontend):
    """App Runner: nothing connects to the connector. Express: the only ingress to the tasks is the rule Express
    Mode adds itself from its load balancer's group, so the program declares none."""
    mine = [(kind, p) for kind, _, sg, p in sg_rules if sg == frontend.sg]
    assert {kind for kind, _ in mine} == {"egress"}
    ports = {(p["fromPort"], p["toPort"]) for _, p in mine}
    assert ports == {(5432, 5432), (8080, 8080), (443, 443)}
    # 5432 and 8080 go to the DB and private-service SGs only; only HTTPS may go anywhere (Secrets Manager via NAT).
    for _, p in mine:
        if p["fromPort"] != 443:
            assert "referencedSecurityGroupId" in p and "cidrIpv4" not in p


def test_every_security_group_states_its_egress(sg_rules, resources):
    with_egress = {sg for kind, _, sg, _ in sg_rules if kind == "egress"}
    db_sg = ref(only(resources, "aws:rds:Cluster")[1]["properties"]["vpcSecurityGroupIds"][0]).root
    for name in of_type(resources, "aws:ec2:SecurityGroup"):
        # The database initiates nothing: no egress rule is the explicit choice for it alone.
        assert name in with_egress or name == db_sg, name


# ---------------------------------------------------------------- data


def test_aurora_is_serverless_v2_with_a_managed_secret(program, resources):
    name, cluster = only(resources, "aws:rds:Cluster")
    p = cluster["properties"]
    assert p["engine"] == "aurora-postgresql" and p["engineMode"] == "provisioned"
    assert "scalingConfiguration" not in p  # the Serverless v1 block
    assert p["manageMasterUserPassword"] is True and "masterPassword" not in p
    assert p["storageEncrypted"] is True
    assert p["databaseName"] == "apprunnerdemo"
    assert ref_to(p["skipFinalSnapshot"], "dbSkipFinalSnapshot")
    assert ref_to(p["deletionProtection"], "dbDeletionProtection")
    _, inst = only(resources, "aws:rds:ClusterInstance")
    assert inst["properties"]["instanceClass"] == "db.serverless"
    assert ref_to(inst["properties"]["clusterIdentifier"], name, "id")


def test_aurora_can_pause_at_zero(program, resources):
    scaling = only(resources, "aws:rds:Cluster")[1]["properties"]["serverlessv2ScalingConfiguration"]
    assert ref_to(scaling["minCapacity"], "dbMinAcu") and config_default(program, "dbMinAcu") == 0
    assert 300 <= config_default(program, "dbSecondsUntilAutoPause") <= 86400
    assert config_default(program, "dbMaxAcu") >= 1
    # 0 ACU needs 13.15 / 14.12 / 15.7 / 16.3 or later (aws.md).
    major, minor = map(int, config_default(program, "dbEngineVersion").split(".")[:2])
    minimum = {13: 15, 14: 12, 15: 7, 16: 3}
    assert major >= 17 or (major in minimum and minor >= minimum[major])


# ---------------------------------------------------------------- IAM


def test_frontend_may_read_exactly_the_one_db_secret(resources, frontend, env):
    role = frontend.role
    policies = [r for r in of_type(resources, "aws:iam:RolePolicy").values()
                if ref_to(r["properties"]["role"], role, "id")]
    attachments = [r for r in of_type(resources, "aws:iam:RolePolicyAttachment").values()
                   if ref(r["properties"]["role"]).root == role]
    assert len(policies) == 1 and attachments == []
    assert "managedPolicyArns" not in resources[role]["properties"]
    assert "inlinePolicies" not in resources[role]["properties"]
    (stmt,) = statements(policies[0])
    assert stmt["Effect"] == "Allow"
    assert as_list(stmt["Action"]) == ["secretsmanager:GetSecretValue"]
    db = only(resources, "aws:rds:Cluster")[0]
    assert ref_to(stmt["Resource"], db, "masterUserSecrets", 0, "secretArn")
    assert env["DBSECRETSNAME"] == stmt["Resource"]


def principal(resources, role):
    (stmt,) = resources[role]["properties"]["assumeRolePolicy"]["fn::toJSON"]["Statement"]
    assert stmt["Effect"] == "Allow" and stmt["Action"] == "sts:AssumeRole"
    return stmt["Principal"]["Service"]


def test_role_trust_matches_its_principal(resources, frontend):
    task = only(resources, "aws:ecs:TaskDefinition")[1]["properties"]
    assert principal(resources, ref(task["executionRoleArn"]).root) == "ecs-tasks.amazonaws.com"
    expected = {"apprunner": "tasks.apprunner.amazonaws.com", "express": "ecs-tasks.amazonaws.com"}
    assert principal(resources, frontend.role) == expected[frontend.kind]


def test_apprunner_role_trust(apprunner_program, apprunner):
    resources = apprunner_program["resources"]
    access = ref(apprunner["sourceConfiguration"]["authenticationConfiguration"]["accessRoleArn"]).root
    assert principal(resources, access) == "build.apprunner.amazonaws.com"


def test_no_wildcard_grants(resources):
    for name, r in of_type(resources, "aws:iam:RolePolicy").items():
        for stmt in statements(r):
            actions = set(as_list(stmt["Action"]))
            assert not any(a == "*" or a.endswith(":*") for a in actions), name
            assert stmt["Resource"] != "*", (name, actions)


def check_ecs_exec_is_off(program):
    """The images have no shell (nix/images.nix): ECS Exec would have nothing to run, and its SSM agent costs CPU."""
    resources = program["resources"]
    _, svc = only(resources, "aws:ecs:Service")
    assert svc["properties"].get("enableExecuteCommand", False) is False
    text = yaml.safe_dump(program)
    assert "ssmmessages:" not in text  # no grant for the SSM message channels, anywhere
    for name, cluster in of_type(resources, "aws:ecs:Cluster").items():
        assert "executeCommandConfiguration" not in (cluster["properties"].get("configuration") or {}), name
        assert any(s["name"] == "containerInsights" for s in cluster["properties"]["settings"]), name
    # The private service calls no AWS API: no task role at all.
    assert "taskRoleArn" not in only(resources, "aws:ecs:TaskDefinition")[1]["properties"]


def test_ecs_exec_is_off(program):
    check_ecs_exec_is_off(program)


# ---------------------------------------------------------------- ECS private service


def capacity_providers_of(resources, cluster_name):
    (found,) = [(n, c) for n, c in of_type(resources, "aws:ecs:ClusterCapacityProviders").items()
                if ref_to(c["properties"]["clusterName"], cluster_name, "name")]
    return found


def test_private_service_runs_on_fargate_spot_after_the_association(resources):
    cluster_name = private_cluster(resources)
    assert resources[cluster_name]["type"] == "aws:ecs:Cluster"
    cap_name, cap = capacity_providers_of(resources, cluster_name)
    assert "FARGATE_SPOT" in cap["properties"]["capacityProviders"]
    _, svc = only(resources, "aws:ecs:Service")
    p = svc["properties"]
    assert ref_to(p["cluster"], cluster_name, "arn")
    assert [s["capacityProvider"] for s in p["capacityProviderStrategies"]] == ["FARGATE_SPOT"]
    assert "launchType" not in p  # a launch type and a capacity provider strategy exclude each other
    assert cap_name in depends_on(svc)  # no data edge exists: without it the service can race the association


def test_private_service_waits_for_its_iam_and_image(resources):
    _, svc = only(resources, "aws:ecs:Service")
    task = only(resources, "aws:ecs:TaskDefinition")[1]["properties"]
    roles = {ref(task[k]).root for k in ("taskRoleArn", "executionRoleArn") if k in task}
    iam = {n for t in ("aws:iam:RolePolicy", "aws:iam:RolePolicyAttachment") for n, r in of_type(resources, t).items()
           if ref(r["properties"]["role"]).root in roles}
    assert iam and iam <= depends_on(svc)
    assert set(of_type(resources, "command:local:Command")) & depends_on(svc)


def test_task_definition_is_fargate_awsvpc_on_8080_with_awslogs(resources):
    p = only(resources, "aws:ecs:TaskDefinition")[1]["properties"]
    assert p["networkMode"] == "awsvpc" and p["requiresCompatibilities"] == ["FARGATE"]
    assert p["runtimePlatform"] == {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"}
    (container,) = p["containerDefinitions"]["fn::toJSON"]
    assert [m["containerPort"] for m in container["portMappings"]] == [8080]
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    log_group = ref(container["logConfiguration"]["options"]["awslogs-group"]).root
    assert resources[log_group]["type"] == "aws:cloudwatch:LogGroup"


def test_cloud_map_names_match_the_frontend_setting(resources, env):
    ns_name, ns = only(resources, "aws:servicediscovery:PrivateDnsNamespace")
    sd_name, sd = only(resources, "aws:servicediscovery:Service")
    assert ns["properties"]["name"] == "apprunner.demo" and sd["properties"]["name"] == "privateservice"
    assert ref_to(sd["properties"]["dnsConfig"]["namespaceId"], ns_name, "id")
    assert [r["type"] for r in sd["properties"]["dnsConfig"]["dnsRecords"]] == ["A"]
    # ECSPRIVATESERVICE is built from the two names, so it cannot drift from them.
    expected = f"http://${{{sd_name}.name}}.${{{ns_name}.name}}:8080"
    assert env["ECSPRIVATESERVICE"] == expected
    rendered = expected.replace(f"${{{sd_name}.name}}", sd["properties"]["name"]).replace(
        f"${{{ns_name}.name}}", ns["properties"]["name"])
    assert rendered == "http://privateservice.apprunner.demo:8080"
    _, svc = only(resources, "aws:ecs:Service")
    assert ref_to(svc["properties"]["serviceRegistries"]["registryArn"], sd_name, "arn")
    assert ref_to(ns["properties"]["vpc"], "vpc", "vpcId")


# ---------------------------------------------------------------- App Runner


def test_apprunner_health_check_is_http_on_health(apprunner):
    hc = apprunner["healthCheckConfiguration"]
    assert hc["protocol"] == "HTTP" and hc["path"] == "/health"


def test_frontend_health_check_is_on_health(frontend):
    assert frontend.health_path == "/health"


def test_apprunner_egress_goes_through_the_vpc_connector(apprunner_program, apprunner):
    resources = apprunner_program["resources"]
    net = apprunner["networkConfiguration"]
    assert net["egressConfiguration"]["egressType"] == "VPC"
    connector = only(resources, "aws:apprunner:VpcConnector")[0]
    assert ref_to(net["egressConfiguration"]["vpcConnectorArn"], connector, "arn")
    assert net["ingressConfiguration"]["isPubliclyAccessible"] is True


def test_apprunner_listens_on_8080(apprunner_program, apprunner):
    image = apprunner["sourceConfiguration"]["imageRepository"]
    assert image["imageConfiguration"]["port"] == "8080"
    assert image["imageRepositoryType"] == "ECR"
    assert ref(apprunner["autoScalingConfigurationArn"]).root in of_type(
        apprunner_program["resources"], "aws:apprunner:AutoScalingConfigurationVersion")


def test_frontend_gets_the_same_settings_on_both_platforms(program, resources, env):
    db = only(resources, "aws:rds:Cluster")[0]
    assert set(env) == {"APPRUNNERSERVICE", "DBSECRETSNAME", "DB_HOST", "DB_PORT", "DB_NAME", "DB_SSLMODE",
                        "ECSPRIVATESERVICE"}  # no DB_SSLROOTCERT: the RDS CA bundle is compiled into the frontend
    assert not any(k.startswith("AWSAPPRUNNER") for k in env)  # App Runner rejects these names
    # The frontend reads APPRUNNERSERVICE as "deployed in AWS" (DB_SSLMODE then defaults to verify-full), so the
    # Express program sets it too.
    assert env["APPRUNNERSERVICE"] == "true"
    assert ref_to(env["DB_HOST"], db, "endpoint")
    assert ref_to(env["DB_PORT"], db, "port")
    assert ref_to(env["DB_NAME"], db, "databaseName")
    check_db_tls_is_verified(program)


def check_db_tls_is_verified(program):
    env = Frontend.of(program).env
    assert env.get("APPRUNNERSERVICE") == "true"  # without it the frontend's own default is `disable`
    assert ref_to(env["DB_SSLMODE"], "dbSslMode") and config_default(program, "dbSslMode") == "verify-full"
    assert "DB_SSLROOTCERT" not in env and "dbSslRootCert" not in program["config"]


def test_apprunner_waits_for_iam_image_database_and_private_service(apprunner_program, apprunner):
    resources = apprunner_program["resources"]
    _, svc = only(resources, "aws:apprunner:Service")
    needs = depends_on(svc)
    access = ref(apprunner["sourceConfiguration"]["authenticationConfiguration"]["accessRoleArn"]).root
    instance = ref(apprunner["instanceConfiguration"]["instanceRoleArn"]).root
    iam = {n for t in ("aws:iam:RolePolicy", "aws:iam:RolePolicyAttachment") for n, r in of_type(resources, t).items()
           if ref(r["properties"]["role"]).root in (access, instance)}
    assert len(iam) == 2 and iam <= needs
    assert only(resources, "aws:rds:ClusterInstance")[0] in needs
    assert only(resources, "aws:ecs:Service")[0] in needs
    push = ref(apprunner["sourceConfiguration"]["imageRepository"]["imageIdentifier"].split("@")[1]).root
    assert push in needs


# ---------------------------------------------------------------- images by digest


@pytest.fixture(scope="module")
def image_refs(resources, frontend):
    task = only(resources, "aws:ecs:TaskDefinition")[1]["properties"]
    return {
        "frontend": frontend.image,
        "private-service": task["containerDefinitions"]["fn::toJSON"][0]["image"],
    }


@pytest.mark.parametrize("image", ["frontend", "private-service"])
def test_images_are_referenced_by_the_pushed_digest(program, program_path, resources, image_refs, image):
    value = image_refs[image]
    parts, error = parse_interpolation(value)
    assert error is None
    # exactly <repo>.repositoryUrl "@" <push>.stdout: a digest, never a tag
    assert len(parts) == 3 and parts[1] == "@", value
    repo, push = parts[0], parts[2]
    assert resources[repo.root]["type"] == "aws:ecr:Repository" and repo.accessors == ("repositoryUrl",)
    # <project>-<stack>/<image>: what `nix run .#push-images -- <registry>/<project>-<stack>` pushes to
    assert resources[repo.root]["properties"]["name"] == f"${{pulumi.project}}-${{pulumi.stack}}/{image}"
    assert resources[push.root]["type"] == "command:local:Command" and push.accessors == ("stdout",)
    cmd = resources[push.root]
    p = cmd["properties"]
    # The push command pushes this archive to this repository...
    archive_cfg = ref(p["environment"]["ARCHIVE"]).root
    # relative to the program's folder, where pulumi-command runs the script: <repo>/result/<image>.tar.gz
    default = config_default(program, archive_cfg)
    assert not default.startswith("/") and default.endswith(f"result/{image}.tar.gz")
    assert (program_path.parent / default).resolve() == REPO / "result" / f"{image}.tar.gz"
    assert ref_to(p["environment"]["REPOSITORY"], repo.root, "repositoryUrl")
    # ...re-runs (replacement, so `create`) when the archive content or the repository changes...
    assert {"fn::filebase64sha256": f"${{{archive_cfg}}}"} in p["triggers"]
    assert f"${{{repo.root}.repositoryUrl}}" in p["triggers"]
    assert cmd["options"]["replaceOnChanges"] == ["triggers"]
    # ...and otherwise (the script or a path changed; the pushed image did not) only re-prints its digest.
    assert p["update"] == "printf '%s' \"$PULUMI_COMMAND_STDOUT\""
    check_push_inputs_are_stable(program)


def check_push_inputs_are_stable(program):
    """No push command input may change from run to run (a fresh ECR token did): pulumi-command 1.2.1 marks every
    output unknown in preview when any input changed, so the digest, the task definition and both services would
    show as changing on every `pulumi preview`, and `--expect-no-changes` could never pass."""
    resources = program["resources"]
    for name, cmd in of_type(resources, "command:local:Command").items():
        p = cmd["properties"]
        if p.get("create") == "${push-script}":
            assert set(p["environment"]) == {"ARCHIVE", "REPOSITORY", "REGION"}, name
        assert ref_to(p["environment"]["REGION"], "aws:region")
        text = yaml.safe_dump(p)
        assert "fn::secret" not in text and "fn::invoke" not in text, name
        for r in refs_in(p):
            target = program.get("variables", {}).get(r.root)
            assert not (isinstance(target, dict) and "fn::invoke" in target), (name, r.text)
    check_push_inputs_are_machine_independent(program)


def check_push_inputs_are_machine_independent(program):
    """No push command input may depend on where the checkout is: `dir: ${pulumi.cwd}` made the absolute path an
    input, so a second checkout or a CI runner saw an update, the digest unknown in preview, and both services
    changing. Without `dir`, pulumi-command 1.2.1 runs in the provider's working directory (os.Getwd()), which the
    Pulumi CLI sets to the folder of Pulumi.yaml for every plugin it starts, so ../result/... still resolves."""
    config = program.get("config", {})
    for name, cmd in of_type(program["resources"], "command:local:Command").items():
        p = cmd["properties"]
        assert "dir" not in p, name
        for r in refs_in(p):
            assert not (r.root == "pulumi" and r.accessors[:1] in (("cwd",), ("rootDirectory",))), (name, r.text)
            if r.root in config:
                assert not str(config[r.root].get("default", "")).startswith("/"), (name, r.text)


def check_push_script(script: str):
    assert "--digestfile" in script and "docker-archive:$ARCHIVE" in script and ">&2" in script
    # The script logs in itself; the password goes through a pipe into a 0600 auth file, never into argv.
    assert 'aws ecr get-login-password --region "$REGION"' in script and "--password-stdin" in script
    assert "--dest-authfile" in script and "umask 077" in script
    # skopeo refuses to copy without a trust policy, and a host may have none: the script brings its own.
    assert "skopeo --insecure-policy copy" in script or re.search(r"skopeo --policy \S+ copy", script)
    assert "tls-verify" not in script and "--dest-cert-dir" not in script  # TLS to ECR stays verified
    assert "${" not in script  # Pulumi would interpolate it
    assert "sha256:" + "?" * 64 in script


def test_push_script_logs_in_itself_brings_its_policy_and_prints_only_a_checked_digest(program):
    check_push_script(program["variables"]["push-script"])


def test_push_images_script_uses_the_same_steps():
    text = (REPO / "nix" / "push-images.sh").read_text()
    assert "skopeo --insecure-policy copy" in text and "--password-stdin" in text and "--dest-authfile" in text
    assert "builtins.readFile ./push-images.sh" in (REPO / "nix" / "push-images.nix").read_text()


def check_names_are_stack_scoped(program):
    """Every name AWS keeps per account and region embeds the stack, so a second stack cannot collide."""
    checked = 0
    for name, r in program["resources"].items():
        schema = S.resource(r["type"])
        for prop, value in (r.get("properties") or {}).items():
            if schema is not None and aws_names.rule_for(schema.token, prop) is not None:
                checked += 1
                assert "${pulumi.stack}" in str(value), f"{name}.{prop} = {value!r} is the same for every stack"
    assert checked >= 4  # two ECR repositories, the task family, the final snapshot (+3 App Runner names)


def test_names_are_stack_scoped(program):
    check_names_are_stack_scoped(program)


# Each mistake this issue fixed, put back into the program: the check for it must fail.
POLICY_MUTATIONS = [
    ("fixed ECR name", check_names_are_stack_scoped,
     lambda prog: prog["resources"]["frontend-repo"]["properties"].update(name="frontend")),
    ("ECR token as a secret input of the push", check_push_inputs_are_stable,
     lambda prog: prog["resources"]["push-frontend"]["properties"]["environment"].update(
         ECR_AUTH={"fn::secret": "${ecr-token.authorizationToken}"})),
    ("push command run in ${pulumi.cwd}", check_push_inputs_are_stable,
     lambda prog: prog["resources"]["push-frontend"]["properties"].update(dir="${pulumi.cwd}")),
    ("push archive under ${pulumi.rootDirectory}", check_push_inputs_are_stable,
     lambda prog: prog["resources"]["push-private-service"]["properties"]["environment"].update(
         ARCHIVE="${pulumi.rootDirectory}/../result/private-service.tar.gz")),
    ("archive default made absolute", check_push_inputs_are_stable,
     lambda prog: prog["config"]["frontendArchive"].update(default="/home/me/src/demo/result/frontend.tar.gz")),
    ("zones filtered by state again", check_zones_ignore_state,
     lambda prog: prog["variables"]["availability-zones"]["fn::invoke"]["arguments"].update(state="available")),
    ("ECS Exec on", check_ecs_exec_is_off,
     lambda prog: prog["resources"]["private-service"]["properties"].update(enableExecuteCommand=True)),
    ("dbSslMode default require", check_db_tls_is_verified,
     lambda prog: prog["config"]["dbSslMode"].update(default="require")),
    ("DB_SSLROOTCERT set again", check_db_tls_is_verified,
     lambda prog: set_env(prog, "DB_SSLROOTCERT", "/etc/ssl/certs/rds-global-bundle.pem")),
    ("APPRUNNERSERVICE left out", check_db_tls_is_verified,
     lambda prog: del_env(prog, "APPRUNNERSERVICE")),
    ("push without its own policy", lambda prog: check_push_script(prog["variables"]["push-script"]),
     lambda prog: prog["variables"].update(
         {"push-script": prog["variables"]["push-script"].replace("--insecure-policy ", "")})),
]


def set_env(prog, key, value):
    svc = Frontend.of(prog).resource["properties"]
    if "primaryContainer" in svc:
        svc["primaryContainer"]["environments"].append({"name": key, "value": value})
    else:
        svc["sourceConfiguration"]["imageRepository"]["imageConfiguration"]["runtimeEnvironmentVariables"][key] = value


def del_env(prog, key):
    svc = Frontend.of(prog).resource["properties"]
    if "primaryContainer" in svc:
        envs = svc["primaryContainer"]["environments"]
        envs[:] = [e for e in envs if e["name"] != key]
    else:
        del svc["sourceConfiguration"]["imageRepository"]["imageConfiguration"]["runtimeEnvironmentVariables"][key]


@pytest.mark.parametrize("name,check,mutate", POLICY_MUTATIONS, ids=[m[0] for m in POLICY_MUTATIONS])
def test_policy_check_bites(program, name, check, mutate):
    assert_check_bites(program, check, mutate)


def test_no_mutable_tags_anywhere(program):
    text = yaml.safe_dump(program)
    assert ":latest" not in text


def test_apprunner_does_not_deploy_on_its_own(apprunner):
    assert apprunner["sourceConfiguration"]["autoDeploymentsEnabled"] is False


# ---------------------------------------------------------------- configuration and outputs


def test_config_is_typed_described_and_defaulted(program):
    for name, decl in program["config"].items():
        assert {"type", "default", "description"} <= set(decl), name


def test_sample_stack_sets_only_the_region(stack_path):
    stack = yaml.safe_load(stack_path.read_text())
    # `pulumi stack init` may add its secrets keys locally; the committed file holds the region only.
    assert set(stack) - {"encryptionsalt", "secretsprovider", "encryptedkey"} == {"config"}
    assert list(stack["config"]) == ["aws:region"]


def test_provider_is_pinned_default_and_regional(resources):
    name, provider = only(resources, "pulumi:providers:aws")
    assert provider["defaultProvider"] is True
    assert re.fullmatch(r"\d+\.\d+\.\d+", provider["options"]["version"])
    assert ref_to(provider["properties"]["region"], "aws:region")
    for other, r in resources.items():  # no resource opts out of it
        assert "provider" not in (r.get("options") or {}), other


def test_outputs(program, resources, frontend):
    out = program["outputs"]
    if frontend.kind == "apprunner":
        assert out["serviceUrl"] == f"https://${{{frontend.name}.serviceUrl}}"  # serviceUrl is a bare host name
    else:
        assert ref_to(out["serviceEndpoint"], frontend.name, "ingressPaths", 0, "endpoint")
        assert ref_to(out["serviceAccessType"], frontend.name, "ingressPaths", 0, "accessType")
    db = only(resources, "aws:rds:Cluster")[0]
    assert ref_to(out["dbEndpoint"], db, "endpoint")
    assert ref_to(out["dbSecretArn"], db, "masterUserSecrets", 0, "secretArn")
    assert out["privateServiceUrl"].startswith("http://") and out["privateServiceUrl"].endswith(":8080")
    assert {r.accessors[-1] for r in refs_in([out["frontendImage"], out["privateServiceImage"]])} == {
        "repositoryUrl", "stdout"}


# ---------------------------------------------------------------- ECS Express Mode (pulumi/ecs-express)

EXECUTION_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
# The AWS-managed policy the ECS developer guide names for Express Mode's infrastructure role.
INFRASTRUCTURE_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonECSInfrastructureRoleforExpressGatewayServices"


def grants_of(resources, role):
    """(managed policy ARNs, inline policy resources) attached to a role, wherever they are declared."""
    attached = [r["properties"]["policyArn"] for r in of_type(resources, "aws:iam:RolePolicyAttachment").values()
                if ref(r["properties"]["role"]).root == role]
    inline = [r for r in of_type(resources, "aws:iam:RolePolicy").values()
              if ref(r["properties"]["role"]).root == role]
    props = resources[role]["properties"]
    assert "managedPolicyArns" not in props and "inlinePolicies" not in props, role
    return attached, inline


def check_express_roles(program):
    """Execution role: ECR pull and logs (AmazonECSTaskExecutionRolePolicy), trusted by ecs-tasks. Infrastructure
    role: the Express Mode managed policy, trusted by ecs.amazonaws.com. Each has exactly that and nothing else."""
    resources = program["resources"]
    p = only(resources, "aws:ecs:ExpressGatewayService")[1]["properties"]
    execution = ref(p["executionRoleArn"]).root
    infrastructure = ref(p["infrastructureRoleArn"]).root
    task = ref(p["taskRoleArn"]).root
    assert len({execution, infrastructure, task}) == 3  # three identities, none doubling as another
    for role in (execution, infrastructure, task):
        assert resources[role]["type"] == "aws:iam:Role", role
    assert ref(p["executionRoleArn"]).accessors == ("arn",) and ref(p["infrastructureRoleArn"]).accessors == ("arn",)
    assert principal(resources, execution) == "ecs-tasks.amazonaws.com"
    assert grants_of(resources, execution) == ([EXECUTION_POLICY], [])
    assert principal(resources, infrastructure) == "ecs.amazonaws.com"
    assert grants_of(resources, infrastructure) == ([INFRASTRUCTURE_POLICY], [])
    assert principal(resources, task) == "ecs-tasks.amazonaws.com"


def test_express_execution_and_infrastructure_roles(express_program):
    check_express_roles(express_program)


def check_express_task_role(program):
    """The task role holds one inline statement: GetSecretValue on the database's managed secret; no managed
    policy (the shared secret test checks the same through the Frontend view)."""
    resources = program["resources"]
    p = only(resources, "aws:ecs:ExpressGatewayService")[1]["properties"]
    attached, inline = grants_of(resources, ref(p["taskRoleArn"]).root)
    assert attached == [] and len(inline) == 1
    (stmt,) = statements(inline[0])
    assert stmt == {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                    "Resource": "${db.masterUserSecrets[0].secretArn}"}


def test_express_task_role_reads_only_the_one_secret(express_program):
    check_express_task_role(express_program)


def check_express_container(program):
    p = only(program["resources"], "aws:ecs:ExpressGatewayService")[1]["properties"]
    assert p.get("healthCheckPath") == "/health"  # Express Mode's default is `/`, which touches the database
    c = p["primaryContainer"]
    assert c.get("containerPort") == 8080  # Express Mode's default is 80
    assert "commands" not in c and "repositoryCredentials" not in c and "secrets" not in c
    image = parse_interpolation(c["image"])[0]
    assert len(image) == 3 and image[1] == "@"  # <frontend-repo.repositoryUrl>@<push-frontend.stdout>
    assert image[0].accessors == ("repositoryUrl",) and image[2].accessors == ("stdout",)
    (logs,) = c["awsLogsConfigurations"]
    assert program["resources"][ref(logs["logGroup"]).root]["type"] == "aws:cloudwatch:LogGroup"


def test_express_container_health_check_port_and_image(express_program):
    check_express_container(express_program)


def check_express_scaling_is_config(program):
    p = only(program["resources"], "aws:ecs:ExpressGatewayService")[1]["properties"]
    (target,) = p["scalingTargets"]
    assert ref_to(target["minTaskCount"], "frontendMinTasks") and ref_to(target["maxTaskCount"], "frontendMaxTasks")
    assert ref_to(target["autoScalingMetric"], "frontendScalingMetric")
    assert ref_to(target["autoScalingTargetValue"], "frontendScalingTarget")
    assert 1 <= config_default(program, "frontendMinTasks") <= config_default(program, "frontendMaxTasks")
    # the values the SDK documents for autoScalingMetric
    assert config_default(program, "frontendScalingMetric") in {"AVERAGE_CPU", "AVERAGE_MEMORY",
                                                               "REQUEST_COUNT_PER_TARGET"}
    assert ref_to(p["cpu"], "frontendCpu") and ref_to(p["memory"], "frontendMemory")


def test_express_autoscaling_bounds_are_config(express_program):
    check_express_scaling_is_config(express_program)


def check_express_runs_on_demand_in_its_own_cluster(program):
    """Not the private service's cluster (whose default strategy is FARGATE_SPOT) and not the account's `default`
    cluster (Express Mode's default, owned by no stack); on-demand Fargate, associated before the service."""
    resources = program["resources"]
    name, svc = only(resources, "aws:ecs:ExpressGatewayService")
    cluster = ref(svc["properties"]["cluster"]).root
    assert resources[cluster]["type"] == "aws:ecs:Cluster" and cluster != private_cluster(resources)
    cap_name, cap = capacity_providers_of(resources, cluster)
    assert cap["properties"]["capacityProviders"] == ["FARGATE"]
    assert [s["capacityProvider"] for s in cap["properties"]["defaultCapacityProviderStrategies"]] == ["FARGATE"]
    assert cap_name in depends_on(svc)


def test_express_runs_on_demand_in_its_own_cluster(express_program):
    check_express_runs_on_demand_in_its_own_cluster(express_program)


def check_express_waits_for_iam_image_database_and_private_service(program):
    """pulumi-aws: without dependsOn on its IAM attachments the policies can be deleted first and the service
    stays DRAINING; the push, database and private service must exist before the first task starts."""
    resources = program["resources"]
    name, svc = only(resources, "aws:ecs:ExpressGatewayService")
    p = svc["properties"]
    roles = {ref(p[k]).root for k in ("executionRoleArn", "infrastructureRoleArn", "taskRoleArn")}
    iam = {n for t in ("aws:iam:RolePolicy", "aws:iam:RolePolicyAttachment") for n, r in of_type(resources, t).items()
           if ref(r["properties"]["role"]).root in roles}
    needs = depends_on(svc)
    assert len(iam) == 3 and iam <= needs
    assert parse_interpolation(p["primaryContainer"]["image"])[0][2].root in needs
    assert only(resources, "aws:rds:ClusterInstance")[0] in needs
    assert only(resources, "aws:ecs:Service")[0] in needs
    assert p["waitForSteadyState"] is True


def test_express_waits_for_iam_image_database_and_private_service(express_program):
    check_express_waits_for_iam_image_database_and_private_service(express_program)


def test_express_declares_no_load_balancer_of_its_own(express_program):
    """Express Mode makes the ALB, listener, rules, target group, certificate and scaling policy itself; declaring
    any of them here would make a second, unused one (and a second fixed monthly cost)."""
    types = {r["type"].split(":")[1].split("/")[0] for r in express_program["resources"].values()}
    assert not types & {"lb", "alb", "elb", "appautoscaling", "acm", "apprunner"}


# The shared part: same resources, same order, same properties, so `diff` shows only the frontend.

# Resources of the App Runner program that exist only there (its frontend and the connector's group), and of
# the Express program that exist only there (its frontend and the tasks' group).
APPRUNNER_ONLY = {"connector-sg", "connector-to-db", "connector-to-private-service", "connector-https-out",
                  "db-from-connector", "private-service-from-connector", "apprunner-access-role",
                  "apprunner-access-policy", "apprunner-instance-role", "apprunner-instance-policy", "vpc-connector",
                  "connector-network-released", "apprunner-log-groups-removal", "autoscaling", "frontend"}
EXPRESS_ONLY = {"frontend-sg", "frontend-to-db", "frontend-to-private-service", "frontend-https-out",
                "db-from-frontend", "private-service-from-frontend", "frontend-cluster",
                "frontend-cluster-capacity-providers", "frontend-logs", "frontend-execution-role",
                "frontend-execution-role-policy", "frontend-infrastructure-role", "frontend-infrastructure-role-policy",
                "frontend-task-role", "frontend-task-policy", "frontend-teardown-finished", "frontend"}
# Where the frontend's group has another name, the rules that name it differ only by that name.
RENAMED = {"connector-sg": "frontend-sg", "connector-to-db": "frontend-to-db",
           "connector-to-private-service": "frontend-to-private-service", "connector-https-out": "frontend-https-out",
           "db-from-connector": "db-from-frontend", "private-service-from-connector": "private-service-from-frontend"}
# Descriptions that say who the frontend is; nothing else in the shared part may differ.
DESCRIPTIONS = {"db-sg", "private-service-sg"}


def shared_part_differences(apprunner_program, express_program):
    a, e = apprunner_program["resources"], express_program["resources"]
    problems = []
    if set(a) - set(e) != APPRUNNER_ONLY - {"frontend"}:
        problems.append(("only in the App Runner program", sorted(set(a) - set(e))))
    if set(e) - set(a) != EXPRESS_ONLY - {"frontend"}:
        problems.append(("only in the Express program", sorted(set(e) - set(a))))
    shared = [n for n in a if n in e and n != "frontend"]
    if shared != [n for n in e if n in a and n != "frontend"]:
        problems.append(("order differs", shared))
    for n in shared:
        pa, pe = copy.deepcopy(a[n]), copy.deepcopy(e[n])
        if n in DESCRIPTIONS:
            pa["properties"].pop("description"), pe["properties"].pop("description")
        if pa != pe:
            problems.append(("differs", n))
    # The rules of the frontend's group: the same rule, with the connector's name replaced by the tasks'.
    for old, new in RENAMED.items():
        text = yaml.safe_dump({k: v for k, v in a[old].items()})
        for o, nn in RENAMED.items():
            text = text.replace(f"${{{o}.", f"${{{nn}.")
        renamed, theirs = yaml.safe_load(text), copy.deepcopy(e[new])
        for r in (renamed, theirs):
            r["properties"].pop("description", None)
        if renamed != theirs:
            problems.append(("rule differs beyond its name", old, new))
    if apprunner_program["variables"] != express_program["variables"]:
        problems.append(("variables differ (push script, zones)",))
    return problems


def test_shared_part_is_the_same_in_both_programs(apprunner_program, express_program):
    assert shared_part_differences(apprunner_program, express_program) == []
    # and the shared settings mean the same in both (only the archive paths, one folder deeper, and texts differ)
    ca, ce = apprunner_program["config"], express_program["config"]
    for key in set(ca) & set(ce):
        da, de = dict(ca[key]), dict(ce[key])
        da.pop("description"), de.pop("description")
        if key.endswith("Archive"):
            assert de["default"] == "../" + da["default"], key
        else:
            assert da == de, key
    assert {k for k in ca if k not in ce} == {k for k in ca if k.startswith("appRunner")}


def test_push_commands_are_the_same_in_both_programs(apprunner_program, express_program):
    """The same script and the same inputs: one push behaviour, tested for real once in test_push.py per program."""
    for name in ("push-frontend", "push-private-service"):
        assert apprunner_program["resources"][name] == express_program["resources"][name]
    assert "skopeo --insecure-policy copy" in express_program["variables"]["push-script"]


def check_shared_part(express_program):
    apprunner_program = yaml.safe_load(PROGRAMS["apprunner"][0].read_text())
    assert shared_part_differences(apprunner_program, express_program) == []


def _express(prog):
    return only(prog["resources"], "aws:ecs:ExpressGatewayService")[1]["properties"]


def _swap_policy(prog, role_attachment, arn):
    prog["resources"][role_attachment]["properties"]["policyArn"] = arn


EXPRESS_MUTATIONS = [
    ("infrastructure role without the Express Mode policy", check_express_roles,
     lambda prog: _swap_policy(prog, "frontend-infrastructure-role-policy",
                               "arn:aws:iam::aws:policy/service-role/AmazonECSInfrastructureRolePolicyForVolumes")),
    ("infrastructure role trusting ecs-tasks", check_express_roles,
     lambda prog: prog["resources"]["frontend-infrastructure-role"]["properties"]["assumeRolePolicy"]["fn::toJSON"][
         "Statement"][0]["Principal"].update(Service="ecs-tasks.amazonaws.com")),
    ("execution role doubling as infrastructure role", check_express_roles,
     lambda prog: _express(prog).update(infrastructureRoleArn="${frontend-execution-role.arn}")),
    ("extra admin policy on the execution role", check_express_roles,
     lambda prog: prog["resources"].update({"extra": {"type": "aws:iam:RolePolicyAttachment", "properties": {
         "role": "${frontend-execution-role.name}", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}}})),
    ("task role reads every secret", check_express_task_role,
     lambda prog: prog["resources"]["frontend-task-policy"]["properties"]["policy"]["fn::toJSON"]["Statement"][0]
     .update(Resource="*")),
    ("task role with a managed policy", check_express_task_role,
     lambda prog: prog["resources"].update({"extra": {"type": "aws:iam:RolePolicyAttachment", "properties": {
         "role": "${frontend-task-role.name}", "policyArn": "arn:aws:iam::aws:policy/SecretsManagerReadWrite"}}})),
    ("health check on the default path", check_express_container,
     lambda prog: _express(prog).pop("healthCheckPath")),
    ("container port left at 80", check_express_container,
     lambda prog: _express(prog)["primaryContainer"].pop("containerPort")),
    ("frontend image by tag", check_express_container,
     lambda prog: _express(prog)["primaryContainer"].update(
         image="${frontend-repo.repositoryUrl}:nix-0123456789abcdef")),
    ("frontend in private subnets (an internal load balancer)", check_frontend_is_public,
     lambda prog: _express(prog)["networkConfigurations"][0].update(subnets="${vpc.privateSubnetIds}")),
    ("fixed task count", check_express_scaling_is_config,
     lambda prog: _express(prog)["scalingTargets"][0].update(maxTaskCount=20)),
    ("frontend in the Spot cluster", check_express_runs_on_demand_in_its_own_cluster,
     lambda prog: _express(prog).update(cluster="${cluster.name}")),
    ("frontend on Spot in its cluster", check_express_runs_on_demand_in_its_own_cluster,
     lambda prog: prog["resources"]["frontend-cluster-capacity-providers"]["properties"][
         "defaultCapacityProviderStrategies"][0].update(capacityProvider="FARGATE_SPOT")),
    ("no dependsOn on the infrastructure policy", check_express_waits_for_iam_image_database_and_private_service,
     lambda prog: prog["resources"]["frontend"]["options"]["dependsOn"].remove(
         "${frontend-infrastructure-role-policy}")),
    ("APPRUNNERSERVICE left out", check_db_tls_is_verified, lambda prog: del_env(prog, "APPRUNNERSERVICE")),
    ("shared database changed in one program only", check_shared_part,
     lambda prog: prog["resources"]["db"]["properties"].update(backupRetentionPeriod=7)),
    ("shared rule retargeted in one program only", check_shared_part,
     lambda prog: prog["resources"]["frontend-to-db"]["properties"].update(fromPort=5433)),
    ("push script changed in one program only", check_shared_part,
     lambda prog: prog["variables"].update({"push-script": prog["variables"]["push-script"].replace("umask 077", "")})),
]


@pytest.mark.parametrize("name,check,mutate", EXPRESS_MUTATIONS, ids=[m[0] for m in EXPRESS_MUTATIONS])
def test_express_check_bites(express_program, name, check, mutate):
    assert_check_bites(express_program, check, mutate)


# Shared security-group invariants, mutated in either program: each must fail.
def _open_frontend_to_the_world(prog):
    sg = Frontend.of(prog).sg
    prog["resources"]["world-in"] = {"type": "aws:vpc:SecurityGroupIngressRule", "properties": {
        "securityGroupId": f"${{{sg}.id}}", "ipProtocol": "tcp", "fromPort": 8080, "toPort": 8080,
        "cidrIpv4": "0.0.0.0/0"}}


def _db_from_private_service(prog):
    (name,) = [n for n, r in of_type(prog["resources"], "aws:vpc:SecurityGroupIngressRule").items()
               if r["properties"]["fromPort"] == 5432]
    prog["resources"][name]["properties"]["referencedSecurityGroupId"] = "${private-service-sg.id}"


def check_security_groups(program):
    resources = program["resources"]
    rules = [(kind, n, ref(r["properties"]["securityGroupId"]).root, r["properties"])
             for kind, t in (("ingress", "aws:vpc:SecurityGroupIngressRule"),
                             ("egress", "aws:vpc:SecurityGroupEgressRule"))
             for n, r in of_type(resources, t).items()]
    test_nothing_is_open_to_the_internet(rules)
    fe = Frontend.of(program)
    for port, target in ((5432, "aws:rds:Cluster"), (8080, "aws:ecs:Service")):
        test_private_ports_open_only_to_the_frontend(resources, rules, fe, port, target)
    test_frontend_group_is_egress_only_and_its_egress_is_explicit(rules, fe)


SG_MUTATIONS = [("frontend open to the world", _open_frontend_to_the_world),
                ("database open to the private service", _db_from_private_service)]


@pytest.mark.parametrize("name,mutate", SG_MUTATIONS, ids=[m[0] for m in SG_MUTATIONS])
def test_security_group_checks_bite(program, name, mutate):
    assert_check_bites(program, check_security_groups, mutate)
