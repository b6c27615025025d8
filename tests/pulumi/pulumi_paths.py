"""Where the programs under test live (imported by the tests; not named conftest so it cannot clash)."""

import pathlib

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
# The App Runner program, and the same system on ECS Express Mode for accounts that cannot use App Runner.
PROGRAM = REPO / "pulumi" / "Pulumi.yaml"
STACK = REPO / "pulumi" / "Pulumi.dev.yaml"
EXPRESS = REPO / "pulumi" / "ecs-express" / "Pulumi.yaml"
EXPRESS_STACK = REPO / "pulumi" / "ecs-express" / "Pulumi.dev.yaml"
# variant id -> (program, sample stack file); the tests of shared invariants run once per variant.
PROGRAMS = {"apprunner": (PROGRAM, STACK), "express": (EXPRESS, EXPRESS_STACK)}
# The pipeline's AWS side (OIDC provider, roles, state bucket and key), made once from a laptop.
CI_PROGRAM = REPO / "pulumi" / "ci" / "Pulumi.yaml"
BROKEN = HERE / "fixtures" / "broken" / "Pulumi.yaml"
