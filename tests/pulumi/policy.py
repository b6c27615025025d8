"""Reading the Pulumi programs in the policy tests: resources by type, `${...}` references, dependencies, the
frontend of either program, and the proof that a check bites."""

import copy
import dataclasses

import pytest

from yamlcheck import parse_interpolation
from yamlcheck.program import Ref


def of_type(resources, token):
    return {name: r for name, r in resources.items() if r["type"] == token}


def only(resources, token):
    found = of_type(resources, token)
    assert len(found) == 1, f"expected exactly one {token}, found {sorted(found)}"
    return next(iter(found.items()))


def ref(value) -> Ref | None:
    """The reference a value consists of, when it is exactly one `${...}`."""
    if not isinstance(value, str):
        return None
    parts, error = parse_interpolation(value)
    return parts[0] if not error and len(parts) == 1 and isinstance(parts[0], Ref) else None


def ref_to(value, root, *accessors) -> bool:
    r = ref(value)
    return r is not None and r.root == root and r.accessors == tuple(accessors)


def depends_on(res) -> set[str]:
    return {ref(v).root for v in (res.get("options") or {}).get("dependsOn", [])}


def config_default(program, name):
    return program["config"][name]["default"]


def statements(policy_resource):
    doc = policy_resource["properties"]["policy"]["fn::toJSON"]
    return doc["Statement"]


def as_list(v):
    return v if isinstance(v, list) else [v]


@dataclasses.dataclass
class Frontend:
    """The public frontend of either program, as the shared invariants see it."""

    kind: str  # "apprunner" | "express"
    name: str  # its resource
    resource: dict
    sg: str  # the security group its traffic into the VPC carries (connector's / tasks')
    subnets: object  # the subnets that traffic leaves from
    role: str  # the IAM role the running code has (instance role / task role)
    env: dict  # name -> value
    image: str
    health_path: str

    @classmethod
    def of(cls, program) -> "Frontend":
        resources = program["resources"]
        if of_type(resources, "aws:apprunner:Service"):
            name, svc = only(resources, "aws:apprunner:Service")
            p = svc["properties"]
            _, connector = only(resources, "aws:apprunner:VpcConnector")
            (sg,) = connector["properties"]["securityGroups"]
            image = p["sourceConfiguration"]["imageRepository"]
            return cls("apprunner", name, svc, ref(sg).root, connector["properties"]["subnets"],
                       ref(p["instanceConfiguration"]["instanceRoleArn"]).root,
                       image["imageConfiguration"]["runtimeEnvironmentVariables"], image["imageIdentifier"],
                       p["healthCheckConfiguration"]["path"])
        name, svc = only(resources, "aws:ecs:ExpressGatewayService")
        p = svc["properties"]
        (net,) = p["networkConfigurations"]
        (sg,) = net["securityGroups"]
        container = p["primaryContainer"]
        env = {e["name"]: e["value"] for e in container.get("environments", [])}
        assert len(env) == len(container.get("environments", [])), "an environment variable is set twice"
        return cls("express", name, svc, ref(sg).root, net["subnets"], ref(p["taskRoleArn"]).root, env,
                   container["image"], p.get("healthCheckPath", "/"))


def assert_check_bites(program, check, mutate):
    """`check` holds for the real program and fails for a copy that `mutate` broke."""
    check(program)
    mutated = copy.deepcopy(program)
    mutate(mutated)
    with pytest.raises(AssertionError):
        check(mutated)
