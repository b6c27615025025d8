"""Shared fixtures: the program under test, parsed once, and its checker diagnostics."""

import pathlib
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # `yamlcheck`, `pulumi_paths`, any rootdir

from pulumi_paths import PROGRAM  # noqa: E402
from yamlcheck import check_program  # noqa: E402


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
