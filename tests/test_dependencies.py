"""One tested dependency set: constraints.txt pins every requirement, holds no pre-release, and is
what this environment runs; plain commands print no deprecation warnings."""

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CONSTRAINTS = Path(__file__).parent.parent / "constraints.txt"


def pins() -> dict[str, Version]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line} is not pinned with =="
            found[canonicalize_name(name)] = Version(version)
    return found


def requirements(name: str, extras: frozenset = frozenset(), seen: set | None = None) -> set[str]:
    """The distributions ``name`` (with ``extras``) needs, transitively, as installed here."""
    seen = set() if seen is None else seen
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": extra}) for extra in extras | {""}):
            continue
        key = canonicalize_name(requirement.name)
        if key == canonicalize_name(name):  # tetris-train[sweep] inside [dev]
            requirements(name, frozenset(requirement.extras), seen)
        elif key not in seen:
            seen.add(key)
            requirements(requirement.name, frozenset(requirement.extras), seen)
    return seen


def test_constraints_pin_every_requirement_of_the_project_and_its_dev_extra():
    needed = requirements("tetris-train", frozenset({"dev"}))
    assert {"optuna", "hydra-core", "stable-baselines3", "sqlalchemy", "torch"} <= needed
    missing = sorted(needed - set(pins()))
    assert not missing, f"add to constraints.txt: {missing}"


def test_constraints_hold_no_pre_release():
    assert not [f"{name}=={v}" for name, v in pins().items() if v.is_prerelease or v.is_devrelease]


def test_this_environment_is_the_constrained_set():
    differ = []
    for name, version in pins().items():
        installed = Version(metadata.version(name))
        if installed.public != version.public:  # torch 2.13.0+cpu is torch 2.13.0
            differ.append(f"{name} {installed} (constraints.txt: {version})")
    assert not differ, "installed without -c constraints.txt? " + ", ".join(differ)


def test_a_plain_run_and_a_search_print_no_warnings(tmp_path):
    commands = [
        ["schedule=smoke", f"hydra.run.dir={tmp_path / 'run'}"],
        ["-m", "hparams_search=dqn_optuna", "hydra.sweeper.n_trials=1", "schedule=smoke"],
    ]
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-W", "default", "-m", "tetris_train", *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert not re.search(r"warning", result.stdout + result.stderr, re.IGNORECASE), result.stderr
