"""What `pulumi destroy` and a second `pulumi up` rely on, read from both programs (issue 23).

`pulumi destroy` deletes a resource only after every resource that depends on it, and gives each delete the inputs
of the last `up`. So a command whose `delete` waits runs exactly between the resources that depend on it and those
it depends on: these tests check that each such command sits where AWS needs it, that what the teardown reads
from state is named in the settings, and that the program leaves nothing for a second `up` to change. The commands
themselves run against moto in test_teardown_commands.py. Each check is shown to bite on a mutated program.
"""

import pytest
from policy import Frontend, assert_check_bites, depends_on, of_type, only, ref, ref_to

from yamlcheck import parse_interpolation, refs_in
from yamlcheck.program import Ref

WAIT = "${network-release-wait-script}"
COMMAND = "command:local:Command"


def commands_deleting_with(resources, script_marker) -> list[str]:
    return [n for n, c in of_type(resources, COMMAND).items() if script_marker in c["properties"].get("delete", "")]


def the_one(found: list[str], what: str) -> str:
    assert len(found) == 1, f"expected one {what}, found {found}"
    return found[0]


def owner_of_the_frontends_interfaces(resources, frontend: Frontend) -> str:
    """What puts network interfaces with the frontend's group into the VPC: App Runner's connector, or the Express
    service (its tasks and load balancer)."""
    if frontend.kind == "apprunner":
        return only(resources, "aws:apprunner:VpcConnector")[0]
    return frontend.name


def check_the_frontends_network_is_released_before_its_group_and_subnets(program):
    resources = program["resources"]
    frontend = Frontend.of(program)
    wait = the_one(commands_deleting_with(resources, WAIT), "command waiting for the frontend's network")
    command = resources[wait]
    env = command["properties"]["environment"]
    # runs after the owner's delete...
    assert wait in depends_on(resources[owner_of_the_frontends_interfaces(resources, frontend)])
    # ...and before the group's, the subnets' and the VPC's (its inputs), watching exactly those
    assert ref_to(env["SECURITY_GROUP"], frontend.sg, "id")
    assert env["SUBNETS"] == {"fn::join": [",", frontend.subnets]}
    assert ref_to(env["VPC"], only(resources, "awsx:ec2:Vpc")[0], "vpcId")
    assert ref_to(env["REGION"], "aws:region")
    # longer than the provider's own DependencyViolation retries (15 minutes for a group, 20 for a subnet)
    assert int(env["WAIT_SECONDS"]) >= 30 * 60 and 0 < int(env["POLL_SECONDS"]) <= 60
    assert "create" not in command["properties"] and "update" not in command["properties"]  # nothing runs on `up`


def check_express_roles_and_cluster_outlast_the_teardown(program):
    """ECS deletes the load balancer, target group and security groups with the infrastructure role, after the
    service's delete has returned, while the tasks drain: the role and everything else the service uses must
    still be there."""
    resources = program["resources"]
    name, svc = only(resources, "aws:ecs:ExpressGatewayService")
    p = svc["properties"]
    wait = the_one([n for n in depends_on(svc) if resources[n]["properties"].get("delete") == WAIT],
                   "teardown wait the service depends on")
    roles = {ref(p[k]).root for k in ("executionRoleArn", "infrastructureRoleArn", "taskRoleArn")}
    grants = {n for kind in ("aws:iam:RolePolicy", "aws:iam:RolePolicyAttachment")
              for n, r in of_type(resources, kind).items() if ref(r["properties"]["role"]).root in roles}
    cluster = ref(p["cluster"]).root
    capacity = {n for n, r in of_type(resources, "aws:ecs:ClusterCapacityProviders").items()
                if ref(r["properties"]["clusterName"]).root == cluster}
    logs = {ref(c["logGroup"]).root for c in p["primaryContainer"]["awsLogsConfigurations"]}
    assert len(grants) == 3 and capacity and logs
    assert grants | capacity | logs <= depends_on(resources[wait]), "the teardown wait must run before these go"


def check_apprunner_log_groups_go_after_the_service(program):
    """App Runner neither deletes the service's log groups nor lets them expire."""
    resources = program["resources"]
    _, svc = only(resources, "aws:apprunner:Service")
    removals = commands_deleting_with(resources, "aws logs delete-log-group")
    cleanup = the_one([n for n in depends_on(svc) if n in removals], "log group removal the service depends on")
    command = resources[cleanup]["properties"]
    assert command["environment"]["LOG_GROUP_PREFIX"] == f"/aws/apprunner/{svc['properties']['serviceName']}/"
    assert "create" not in command and "update" not in command


def check_final_snapshot_name_is_new_for_each_stack_instance(program):
    """A fixed name collides when a stack made again is destroyed again with a final snapshot
    (DBClusterSnapshotAlreadyExistsFault): the name carries an id AWS gives a resource of this stack instance."""
    _, db = only(program["resources"], "aws:rds:Cluster")
    parts, error = parse_interpolation(db["properties"]["finalSnapshotIdentifier"])
    assert error is None
    refs = [r for r in parts if isinstance(r, Ref)]
    assert any(r.root == "pulumi" and r.accessors == ("stack",) for r in refs)
    assert any(r.root in program["resources"] for r in refs), "no resource id: the same name for every instance"
    for setting in ("dbSkipFinalSnapshot", "dbDeletionProtection"):  # read by destroy from the last `up`
        assert "run `pulumi up`" in program["config"][setting]["description"], setting


def check_express_environment_is_sorted_by_name(program):
    """The API returns the environment sorted by name (terraform-provider-aws#45792): in any other order a
    provider without the fix shows a change on every `up`."""
    _, svc = only(program["resources"], "aws:ecs:ExpressGatewayService")
    names = [e["name"] for e in svc["properties"]["primaryContainer"]["environments"]]
    assert names == sorted(names)


def check_zone_names_reach_awsx_as_plain_values(program):
    """awsx reads availabilityZoneNames as a plain string[]. pulumi-yaml sends an invoke's result plain when it is
    known, not secret and depends on no resource; a secret or a resource output among the invoke's arguments
    would reach awsx as Output objects (pulumi-yaml run.go, the Node SDK's deserializeInputs)."""
    p = only(program["resources"], "awsx:ec2:Vpc")[1]["properties"]
    (source,) = {ref(z["fn::select"][1]).root for z in p["availabilityZoneNames"]}
    invoke = program["variables"][source]["fn::invoke"]
    assert "fn::secret" not in str(invoke) and "options" not in invoke
    for r in refs_in(invoke["arguments"]):
        declared = program["config"].get(r.root)
        assert declared is not None, f"{r.text}: only config and literals may choose the zones"
        assert not declared.get("secret"), f"{r.root} is secret: the zone names would reach awsx as Outputs"


def check_wait_script_is_left_to_the_shell(program):
    script = program["variables"]["network-release-wait-script"]
    assert "${" not in script  # Pulumi would interpolate it
    assert "set -eu" in script and "exit 1" in script


def test_the_frontends_network_is_released_before_its_group_and_subnets(program):
    check_the_frontends_network_is_released_before_its_group_and_subnets(program)
    check_wait_script_is_left_to_the_shell(program)


def test_express_roles_and_cluster_outlast_the_teardown(express_program):
    check_express_roles_and_cluster_outlast_the_teardown(express_program)


def test_apprunner_log_groups_go_after_the_service(apprunner_program):
    check_apprunner_log_groups_go_after_the_service(apprunner_program)


def test_final_snapshot_name_is_new_for_each_stack_instance(program):
    check_final_snapshot_name_is_new_for_each_stack_instance(program)


def test_express_environment_is_sorted_by_name(express_program):
    check_express_environment_is_sorted_by_name(express_program)


def test_zone_names_reach_awsx_as_plain_values(program):
    check_zone_names_reach_awsx_as_plain_values(program)


# ---------------------------------------------------------------- each check bites: today's mistakes put back


def _drop_dependency(resource, name):
    resource["options"]["dependsOn"].remove(f"${{{name}}}")


MUTATIONS = {
    "apprunner": [
        ("connector deleted without waiting", check_the_frontends_network_is_released_before_its_group_and_subnets,
         lambda prog: _drop_dependency(prog["resources"]["vpc-connector"], "connector-network-released")),
        ("wait watching the database's group", check_the_frontends_network_is_released_before_its_group_and_subnets,
         lambda prog: prog["resources"]["connector-network-released"]["properties"]["environment"].update(
             SECURITY_GROUP="${db-sg.id}")),
        ("wait as long as the provider's own retries",
         check_the_frontends_network_is_released_before_its_group_and_subnets,
         lambda prog: prog["resources"]["connector-network-released"]["properties"]["environment"].update(
             WAIT_SECONDS="900")),
        ("log groups left behind", check_apprunner_log_groups_go_after_the_service,
         lambda prog: _drop_dependency(prog["resources"]["frontend"], "apprunner-log-groups-removal")),
        ("log groups of another service", check_apprunner_log_groups_go_after_the_service,
         lambda prog: prog["resources"]["apprunner-log-groups-removal"]["properties"]["environment"].update(
             LOG_GROUP_PREFIX="/aws/apprunner/frontend/")),
    ],
    "express": [
        ("service deleted without waiting", check_the_frontends_network_is_released_before_its_group_and_subnets,
         lambda prog: _drop_dependency(prog["resources"]["frontend"], "frontend-teardown-finished")),
        ("infrastructure role deleted before the teardown ends", check_express_roles_and_cluster_outlast_the_teardown,
         lambda prog: _drop_dependency(prog["resources"]["frontend-teardown-finished"],
                                       "frontend-infrastructure-role-policy")),
        ("cluster deleted before the teardown ends", check_express_roles_and_cluster_outlast_the_teardown,
         lambda prog: _drop_dependency(prog["resources"]["frontend-teardown-finished"],
                                       "frontend-cluster-capacity-providers")),
        ("environment in the program's old order", check_express_environment_is_sorted_by_name,
         lambda prog: only(prog["resources"], "aws:ecs:ExpressGatewayService")[1]["properties"]["primaryContainer"][
             "environments"].reverse()),
    ],
    "both": [
        ("fixed final snapshot name", check_final_snapshot_name_is_new_for_each_stack_instance,
         lambda prog: prog["resources"]["db"]["properties"].update(
             finalSnapshotIdentifier="${pulumi.project}-${pulumi.stack}-final")),
        ("settings read from state not explained", check_final_snapshot_name_is_new_for_each_stack_instance,
         lambda prog: prog["config"]["dbDeletionProtection"].update(description="Refuse to delete the cluster.")),
        ("zone exclusions made secret", check_zone_names_reach_awsx_as_plain_values,
         lambda prog: prog["config"]["excludedAvailabilityZoneIds"].update(secret=True)),
        ("zones chosen from a resource output", check_zone_names_reach_awsx_as_plain_values,
         lambda prog: prog["variables"]["availability-zones"]["fn::invoke"]["arguments"].update(
             excludeZoneIds=["${db-subnets.name}"])),
        ("wait script with a shell default Pulumi would interpolate", check_wait_script_is_left_to_the_shell,
         lambda prog: prog["variables"].update({"network-release-wait-script": prog["variables"][
             "network-release-wait-script"].replace("$WAIT_SECONDS", "${WAIT_SECONDS:-2700}")})),
    ],
}


@pytest.mark.parametrize("name,check,mutate", MUTATIONS["both"], ids=[m[0] for m in MUTATIONS["both"]])
def test_teardown_check_bites(program, name, check, mutate):
    assert_check_bites(program, check, mutate)


@pytest.mark.parametrize("name,check,mutate", MUTATIONS["apprunner"], ids=[m[0] for m in MUTATIONS["apprunner"]])
def test_apprunner_teardown_check_bites(apprunner_program, name, check, mutate):
    assert_check_bites(apprunner_program, check, mutate)


@pytest.mark.parametrize("name,check,mutate", MUTATIONS["express"], ids=[m[0] for m in MUTATIONS["express"]])
def test_express_teardown_check_bites(express_program, name, check, mutate):
    assert_check_bites(express_program, check, mutate)
