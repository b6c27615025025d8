"""Shared fixtures: the programs under test, parsed once, and their checker diagnostics.

`program`, `resources` and `program_diagnostics` are parametrised over both programs (ids `apprunner` and
`express`), so a test that uses them states an invariant both must keep. Tests of one program use
`apprunner_program` or `express_program`.
"""

import pathlib
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # `yamlcheck`, `pulumi_paths`, any rootdir

from pulumi_paths import EXPRESS, PROGRAM, PROGRAMS  # noqa: E402
from yamlcheck import check_program  # noqa: E402


def _load(path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session", params=list(PROGRAMS))
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def program_path(variant):
    return PROGRAMS[variant][0]


@pytest.fixture(scope="session")
def stack_path(variant):
    return PROGRAMS[variant][1]


@pytest.fixture(scope="session")
def program(program_path) -> dict:
    return _load(program_path)


@pytest.fixture(scope="session")
def resources(program) -> dict:
    return program["resources"]


@pytest.fixture(scope="session")
def program_diagnostics(program_path):
    return check_program(program_path)


@pytest.fixture(scope="session")
def apprunner_program() -> dict:
    return _load(PROGRAM)


@pytest.fixture(scope="session")
def express_program() -> dict:
    return _load(EXPRESS)


def pytest_configure(config):
    # Importing SDK modules emits their own deprecation notices (for resources this program does not use).
    for module in ("pulumi_aws", "pulumi_awsx", "pulumi_command"):
        config.addinivalue_line("filterwarnings", rf"ignore::DeprecationWarning:{module}(\..*)?")
