"""Where the program under test lives (imported by the tests; not named conftest so it cannot clash)."""

import pathlib

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROGRAM = REPO / "pulumi" / "Pulumi.yaml"
STACK = REPO / "pulumi" / "Pulumi.dev.yaml"
BROKEN = HERE / "fixtures" / "broken" / "Pulumi.yaml"
