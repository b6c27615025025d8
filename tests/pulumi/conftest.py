"""Shared fixtures: the program under test, parsed once, and its checker diagnostics."""

import pathlib
import sys

import pytest
import yaml

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # makes `yamlcheck` importable whatever pytest's rootdir is

from yamlcheck import check_program  # noqa: E402

REPO = HERE.parent.parent
PROGRAM = REPO / "pulumi" / "Pulumi.yaml"
STACK = REPO / "pulumi" / "Pulumi.dev.yaml"


@pytest.fixture(scope="session")
def program() -> dict:
    return yaml.safe_load(PROGRAM.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def resources(program) -> dict:
    return program["resources"]


@pytest.fixture(scope="session")
def program_diagnostics():
    return check_program(PROGRAM)


def pytest_configure(config):
    # Importing SDK modules emits their own deprecation notices (for resources this program does not use).
    for module in ("pulumi_aws", "pulumi_awsx", "pulumi_command"):
        config.addinivalue_line("filterwarnings", rf"ignore::DeprecationWarning:{module}(\..*)?")
