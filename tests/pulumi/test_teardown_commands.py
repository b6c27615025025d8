"""The teardown commands of both programs, run for real: each `delete` script taken from the program, run by
`/bin/sh -c` as pulumi-command runs it, with the environment the program gives it, calling the real AWS CLI
against moto (EC2, Elastic Load Balancing, CloudWatch Logs) on loopback.

The VPC is laid out as AWS leaves it while it tears a frontend down: Fargate task and load balancer network
interfaces (described "ELB app/<name>/<id>", as Elastic Load Balancing names them), the NAT gateway's ("Interface for
NAT Gateway nat-…", which stays), an Express-managed security group tagged AmazonECSManaged, a load balancer and
its target group; App Runner's log groups named /aws/apprunner/<service>/<id>/{application,service}.
"""

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from pulumi_paths import PROGRAMS

from yamlcheck import parse_interpolation
from yamlcheck.program import Ref

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
REGION = "us-east-1"
POLL_SECONDS = 1


def load(variant):
    return yaml.safe_load(PROGRAMS[variant][0].read_text())


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory):
    """The environment of a command run by pulumi-command, with the AWS CLI pointed at a fresh moto server."""
    for tool in ("moto_server", "aws"):
        if not (VENV_BIN / tool).exists():
            pytest.fail(f"{VENV_BIN / tool} is missing: run tests/setup (it installs tests/*/requirements.txt)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    server = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path_factory.mktemp("home")),
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def aws(env, *args) -> str:
    result = subprocess.run([str(VENV_BIN / "aws"), *args, "--output", "text"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def render(value, values: dict[str, str | list[str]]):
    """A command's environment value with each `${...}` replaced by what the deployment would give it."""
    if isinstance(value, dict):
        (separator, items), = value.values()  # fn::join
        return separator.join(render(items, values))
    parts, error = parse_interpolation(value)
    assert error is None, value
    if len(parts) == 1 and isinstance(parts[0], Ref):
        return values[parts[0].text[2:-1]]
    return "".join(values[p.text[2:-1]] if isinstance(p, Ref) else p for p in parts)


def command_env(program, command, values, **overrides) -> dict[str, str]:
    environment = program["resources"][command]["properties"]["environment"]
    rendered = {k: render(v, values) for k, v in environment.items()}
    return rendered | {"POLL_SECONDS": str(POLL_SECONDS)} | overrides


def delete_script(program, command) -> str:
    script = program["resources"][command]["properties"]["delete"]
    if script.startswith("${") and script.endswith("}"):  # a script kept in `variables`
        script = program["variables"][script[2:-1]]
    return script


class Vpc:
    """A VPC in moto with two subnets and the groups a frontend uses."""

    def __init__(self, env, cidr):
        self.env = env
        self.id = aws(env, "ec2", "create-vpc", "--cidr-block", f"{cidr}.0.0/16", "--query", "Vpc.VpcId")
        self.subnets = [aws(env, "ec2", "create-subnet", "--vpc-id", self.id, "--cidr-block", f"{cidr}.{i}.0/24",
                            "--availability-zone", f"{REGION}{zone}", "--query", "Subnet.SubnetId")
                        for i, zone in ((0, "a"), (1, "b"))]

    def group(self, name, *tags):
        tagging = ["--tag-specifications", f"ResourceType=security-group,Tags=[{','.join(tags)}]"] if tags else []
        return aws(self.env, "ec2", "create-security-group", "--group-name", name, "--description", name,
                   "--vpc-id", self.id, *tagging, "--query", "GroupId")

    def interface(self, subnet, group, description=""):
        return aws(self.env, "ec2", "create-network-interface", "--subnet-id", subnet, "--groups", group,
                   "--description", description, "--query", "NetworkInterface.NetworkInterfaceId")

    def delete_interface(self, eni):
        aws(self.env, "ec2", "delete-network-interface", "--network-interface-id", eni)


def waiting(what, load_balancers, target_groups, interfaces, groups) -> str:
    return (f"{what}: waiting (load balancers {load_balancers}, target groups {target_groups}, network interfaces "
            f"{interfaces}, ECS-managed security groups {groups})")


class Running:
    """A delete script run in the background, as `pulumi destroy` runs it; its stderr collected line by line."""

    def __init__(self, script, env):
        self.process = subprocess.Popen(["/bin/sh", "-c", script], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.reader.start()

    def next_round(self) -> str:
        """What it says after two more rounds of asking AWS (the second began after anything the test changed
        before this call), or its last line if it ended meanwhile."""
        seen = len(self.lines)
        deadline = time.monotonic() + 60
        while self.process.poll() is None and len(self.lines) < seen + 2:
            assert time.monotonic() < deadline, "no new round of asking AWS within 60 s"
            time.sleep(0.1)
        self.process.poll() is None or self.reader.join(timeout=10)
        return self.lines[-1].rstrip()

    def result(self, within: float) -> tuple[int, str]:
        try:
            self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"still running after {within} s; stderr:\n{''.join(self.lines)}")
        self.reader.join(timeout=10)
        return self.process.returncode, "".join(self.lines)


# variant -> the command waiting for the frontend's network, and the outputs its environment names
WAITS = {"express": ("frontend-teardown-finished", "vpc.publicSubnetIds", "frontend-sg.id"),
         "apprunner": ("connector-network-released", "vpc.privateSubnetIds", "connector-sg.id")}


def start_wait(running, aws_env, variant, vpc: Vpc, group: str, **overrides) -> Running:
    """The program's wait for the frontend's network, as destroy runs it, watching this VPC and group."""
    program = load(variant)
    command, subnets, group_output = WAITS[variant]
    values = {"aws:region": REGION, "vpc.vpcId": vpc.id, subnets: vpc.subnets, group_output: group}
    return running(delete_script(program, command), aws_env | command_env(program, command, values, **overrides))


@pytest.fixture
def running():
    started = []

    def start(script, env):
        started.append(Running(script, env))
        return started[-1]

    yield start
    for r in started:
        if r.process.poll() is None:
            r.process.kill()
            r.process.wait()


def test_express_destroy_waits_until_ecs_has_torn_the_frontend_down(aws_env, running):
    vpc = Vpc(aws_env, "10.1")
    frontend_sg = vpc.group("frontend-sg")
    managed_sg = vpc.group("express-service-sg", "{Key=AmazonECSManaged,Value=true}")
    lb_sg = vpc.group("express-lb-sg", "{Key=AmazonECSManaged,Value=true}")
    lb = aws(aws_env, "elbv2", "create-load-balancer", "--name", "ecs-express-gateway-alb-1a2b3c4d", "--subnets",
             *vpc.subnets, "--security-groups", lb_sg, "--query", "LoadBalancers[0].LoadBalancerArn")
    target_group = aws(aws_env, "elbv2", "create-target-group", "--name", "ecs-gateway-tg-1a2b3c4d", "--protocol",
                       "HTTP", "--port", "8080", "--target-type", "ip", "--vpc-id", vpc.id,
                       "--query", "TargetGroups[0].TargetGroupArn")
    task = vpc.interface(vpc.subnets[0], frontend_sg, "arn:aws:ecs:us-east-1:123456789012:attachment/0f3c")
    lb_node = vpc.interface(vpc.subnets[1], lb_sg, f"ELB app/ecs-express-gateway-alb-1a2b3c4d/{lb[-16:]}")
    vpc.interface(vpc.subnets[0], vpc.group("nat-like"), "Interface for NAT Gateway nat-0123456789abcdef0")
    wait = start_wait(running, aws_env, "express", vpc, frontend_sg)

    # ECS takes the pieces down one after another; each is counted, and until the last is gone destroy waits.
    what = "the Express frontend's tasks, load balancer and security groups"
    assert wait.next_round() == waiting(what, 1, 1, 2, 2)
    for remove, then in (
            (lambda: vpc.delete_interface(task), waiting(what, 1, 1, 1, 2)),
            (lambda: aws(aws_env, "elbv2", "delete-load-balancer", "--load-balancer-arn", lb),
             waiting(what, 0, 1, 1, 2)),
            (lambda: aws(aws_env, "elbv2", "delete-target-group", "--target-group-arn", target_group),
             waiting(what, 0, 0, 1, 2)),
            (lambda: vpc.delete_interface(lb_node), waiting(what, 0, 0, 0, 2)),
            (lambda: aws(aws_env, "ec2", "delete-security-group", "--group-id", lb_sg), waiting(what, 0, 0, 0, 1)),
            (lambda: aws(aws_env, "ec2", "delete-security-group", "--group-id", managed_sg), f"{what}: released")):
        remove()
        assert wait.next_round() == then
    code, stderr = wait.result(within=30)
    assert code == 0, stderr


def test_apprunner_destroy_waits_for_the_connectors_interfaces_only(aws_env, running):
    vpc = Vpc(aws_env, "10.2")
    connector_sg = vpc.group("connector-sg")
    hyperplane = [vpc.interface(subnet, connector_sg) for subnet in vpc.subnets]
    vpc.interface(vpc.subnets[0], vpc.group("private-service-sg"), "arn:aws:ecs:us-east-1:123456789012:attachment/1")
    vpc.interface(vpc.subnets[1], vpc.group("db-sg"), "RDSNetworkInterface")
    wait = start_wait(running, aws_env, "apprunner", vpc, connector_sg)
    what = "the App Runner VPC connector's network interfaces"
    assert wait.next_round() == waiting(what, 0, 0, 2, 0)
    vpc.delete_interface(hyperplane[0])
    assert wait.next_round() == waiting(what, 0, 0, 1, 0)
    vpc.delete_interface(hyperplane[1])
    assert wait.next_round() == f"{what}: released"
    code, stderr = wait.result(within=30)
    assert code == 0, stderr


def test_the_wait_gives_up_with_what_is_left_and_what_to_do(aws_env, running):
    vpc = Vpc(aws_env, "10.3")
    connector_sg = vpc.group("connector-sg")
    vpc.interface(vpc.subnets[0], connector_sg)
    code, stderr = start_wait(running, aws_env, "apprunner", vpc, connector_sg, WAIT_SECONDS="3").result(within=30)
    assert code == 1
    assert (f"still in {vpc.id} after 3 s (load balancers 0, target groups 0, network interfaces 1, "
            "ECS-managed security groups 0)") in stderr
    assert "run pulumi destroy again once these are gone" in stderr


@pytest.mark.parametrize("variant,command", [("express", "frontend-teardown-finished"),
                                             ("apprunner", "apprunner-log-groups-removal")])
def test_a_command_that_cannot_ask_aws_fails(aws_env, running, variant, command):
    """Never "released", never a clean exit that leaves log groups billed: destroy stops and says why."""
    program = load(variant)
    values = {"aws:region": REGION, "vpc.vpcId": "vpc-0123456789abcdef0", "vpc.publicSubnetIds": ["subnet-1"],
              "frontend-sg.id": "sg-1", "pulumi.stack": "dev"}
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = aws_env | command_env(program, command, values) | {"AWS_ENDPOINT_URL": closed, "AWS_MAX_ATTEMPTS": "1"}
    code, stderr = running(delete_script(program, command), env).result(within=60)
    assert code != 0 and "released" not in stderr
    assert "Could not connect to the endpoint URL" in stderr


def test_apprunner_destroy_removes_the_services_log_groups_and_no_others(aws_env, running):
    program = load("apprunner")
    mine = ["/aws/apprunner/frontend-dev/0123456789abcdef0123456789abcdef/application",
            "/aws/apprunner/frontend-dev/0123456789abcdef0123456789abcdef/service"]
    others = ["/aws/apprunner/frontend-dev2/fedcba9876543210fedcba9876543210/application",
              "/aws/apprunner/frontend-devx/0123456789abcdef0123456789abcdef/service", "/ecs/private-service"]
    for group in mine + others:
        aws(aws_env, "logs", "create-log-group", "--log-group-name", group)
    env = aws_env | command_env(program, "apprunner-log-groups-removal", {"aws:region": REGION, "pulumi.stack": "dev"})
    script = delete_script(program, "apprunner-log-groups-removal")
    code, stderr = running(script, env).result(within=60)
    assert code == 0, stderr
    assert sorted(aws(aws_env, "logs", "describe-log-groups", "--query", "logGroups[].logGroupName").split()) == \
        sorted(others)
    assert all(f"deleted App Runner's log group {group}" in stderr for group in mine)
    # a second destroy (after one that failed later) finds nothing to delete and succeeds
    code, stderr = running(script, env).result(within=60)
    assert code == 0 and stderr == "", stderr
