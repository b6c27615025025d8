"""AWS name rules for names built from the stack and project name (diagnostic code `aws-name`).

Pulumi allows stack names of `[A-Za-z0-9_.-]` (up to 100 characters); AWS allows far less in most names,
and often only finds out during `pulumi up`, after other resources were created. For every name property
listed in RULES whose value is a literal or uses only `${pulumi.stack}` / `${pulumi.project}` and the outputs
in OUTPUT_SAMPLES, the checker renders it for each stack name it knows (the stack files beside the program,
plus any given) and reports the names AWS would reject. Sources: the AWS API references of each create call (CreateService,
CreateVpcConnector, CreateAutoScalingConfiguration, CreateDBCluster, CreateRepository,
RegisterTaskDefinition, CreateCluster, CreateLogGroup).
"""

from __future__ import annotations

import dataclasses
import re

APP_RUNNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
RDS_IDENTIFIER = re.compile(r"[A-Za-z](?!.*--)[A-Za-z0-9-]*(?<!-)")
# CreateRepository's repositoryName, as botocore's ECR model states it (RepositoryName, 2-256 characters):
#   [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
# Components separated by '/'; inside one, runs of lowercase alphanumerics joined by '.', '_', '__' or any
# number of '-'. nix/push-images.sh checks its namespace argument with the same pattern.
_ECR_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
ECR_REPOSITORY = re.compile(rf"{_ECR_COMPONENT}(?:/{_ECR_COMPONENT})*")
ECS_NAME = re.compile(r"[A-Za-z0-9_-]+")
LOG_GROUP = re.compile(r"[.\-_/#A-Za-z0-9]+")
# What Pulumi itself accepts as a stack name.
PULUMI_STACK = re.compile(r"[A-Za-z0-9_.-]{1,100}")


@dataclasses.dataclass(frozen=True)
class Rule:
    minimum: int
    maximum: int
    pattern: re.Pattern
    says: str

    def problem(self, value: str) -> str | None:
        if not self.minimum <= len(value) <= self.maximum:
            return f"{len(value)} characters, allowed {self.minimum}-{self.maximum}"
        if not self.pattern.fullmatch(value):
            return self.says
        return None


_AR = "App Runner allows letters, digits, '-' and '_' only, starting with a letter or digit"
RULES: dict[tuple[str, str], Rule] = {
    ("aws:apprunner:service", "serviceName"): Rule(4, 40, APP_RUNNER, _AR),
    ("aws:apprunner:vpcconnector", "vpcConnectorName"): Rule(4, 40, APP_RUNNER, _AR),
    ("aws:apprunner:autoscalingconfigurationversion", "autoScalingConfigurationName"): Rule(4, 32, APP_RUNNER, _AR),
    # Checked by RDS even with skipFinalSnapshot: true. DeleteDBCluster allows 255 characters for it, but
    # CreateDBClusterSnapshot, which names every other cluster snapshot, 63: the stricter holds.
    ("aws:rds:cluster", "finalSnapshotIdentifier"): Rule(
        1, 63, RDS_IDENTIFIER, "RDS allows letters, digits and single hyphens, starting with a letter, "
                                "not ending with a hyphen"),
    ("aws:rds:cluster", "clusterIdentifier"): Rule(
        1, 63, RDS_IDENTIFIER, "RDS allows letters, digits and single hyphens, starting with a letter, "
                               "not ending with a hyphen"),
    ("aws:ecr:repository", "name"): Rule(
        2, 256, ECR_REPOSITORY, "ECR allows lowercase letters and digits, separated by '/', '.', '_', '__' "
                                "or hyphens, not at the start or end of a component"),
    ("aws:ecs:taskdefinition", "family"): Rule(1, 255, ECS_NAME, "ECS allows letters, digits, '-' and '_' only"),
    ("aws:ecs:cluster", "name"): Rule(1, 255, ECS_NAME, "ECS allows letters, digits, '-' and '_' only"),
    ("aws:cloudwatch:loggroup", "name"): Rule(1, 512, LOG_GROUP, "CloudWatch Logs allows letters, digits and "
                                                                 "'.-_/#' only"),
}


# Resource outputs a name may carry, as the longest value AWS gives them: names using them are checked with these.
OUTPUT_SAMPLES: dict[tuple[str, str], str] = {
    ("awsx:ec2:vpc", "vpcId"): "vpc-0123456789abcdef0",  # vpc- and 17 hexadecimal digits
}


def rule_for(canonical_token: str, prop: str) -> Rule | None:
    """`aws:apprunner/service:Service` + `serviceName` -> its rule."""
    parts = canonical_token.split(":")
    if len(parts) != 3:
        return None
    key = f"{parts[0]}:{parts[1].split('/')[0]}:{parts[2]}".lower()
    return RULES.get((key, prop))
