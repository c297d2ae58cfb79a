"""requirements.lock: every runtime requirement pinned inside its range, with hashes; standalone.bat installs it."""

import re
import sys
from importlib import metadata

import pytest
from django.conf import settings as django_settings
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from kerasui import bootstrap

ROOT = django_settings.BASE_DIR


def requirements() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in (line.split("#")[0].strip() for line in lines) if line]


def locked() -> dict[str, tuple[str, str, list[str]]]:
    """name -> (version, marker, hashes) from requirements.lock."""
    pins = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = block.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        requirement, _, marker = head.partition(";")
        name, operator, version = requirement.strip().partition("==")
        assert operator, f"not pinned: {head}"
        pins[canonicalize_name(re.sub(r"\[.*\]", "", name))] = (
            version.strip(),
            marker.strip(),
            re.findall(r"--hash=sha256:([0-9a-f]{64})", block),
        )
    return pins


def test_the_lock_pins_every_requirement_inside_its_range():
    pins = locked()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in requirements.txt but not in requirements.lock"
        assert pins[name][0] in requirement.specifier, (requirement, pins[name][0])


def test_every_locked_release_has_hashes():
    pins = locked()
    assert len(pins) > len(requirements())  # dependencies of dependencies are pinned too
    for name, (_version, _marker, hashes) in pins.items():
        assert hashes, f"{name} has no hash"


@pytest.mark.skipif(sys.version_info[:2] != bootstrap.LOCKED_PYTHON, reason="the lock is for Python 3.11")
def test_the_installed_releases_are_the_locked_ones():
    """What the tests run on is what standalone.bat installs."""
    for name, (version, marker, _hashes) in locked().items():
        if marker and not Marker(marker).evaluate():
            continue
        assert metadata.version(name) == version, name


def test_standalone_installs_the_lock_with_hashes_on_the_locked_python():
    commands = bootstrap.install_commands("requirements.txt", python_version=bootstrap.LOCKED_PYTHON)

    assert commands == [
        ["-m", "pip", "install", "--disable-pip-version-check", "-q", "--require-hashes", "-r", str(bootstrap.LOCK)]
    ]


def test_standalone_test_installs_the_lock_then_the_development_tools():
    commands = bootstrap.install_commands("requirements-dev.txt", python_version=bootstrap.LOCKED_PYTHON)

    assert "--require-hashes" in commands[0] and commands[0][-1] == str(bootstrap.LOCK)
    assert commands[1][-1] == str(ROOT / "requirements-dev.txt")


def test_another_python_installs_the_ranges_and_says_so(capsys):
    commands = bootstrap.install_commands("requirements.txt", python_version=(3, 12))

    assert commands == [
        ["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(ROOT / "requirements.txt")]
    ]
    assert "requirements.lock is for Python 3.11" in capsys.readouterr().out


def test_the_test_command_runs_the_suite_in_parallel_unless_the_caller_chose():
    from kerasui.bootstrap import PARALLEL, pytest_arguments

    assert pytest_arguments([]) == PARALLEL
    assert pytest_arguments(["tests/ml", "-k", "fit"]) == [*PARALLEL, "tests/ml", "-k", "fit"]
    assert pytest_arguments(["-n", "0", "tests/ml"]) == ["-n", "0", "tests/ml"]
    assert pytest_arguments(["-p", "no:xdist"]) == ["-p", "no:xdist"]
