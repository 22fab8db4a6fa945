"""What the command-line apps share: bad input becomes one line on stderr and exit status 2."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

from .config import AgentConfig, ScheduleConfig, TrainingConfig
from .env import EnvConfig
from .validation import ConfigError

EXIT_BAD_INPUT = 2
EXIT_JOBS_FAILED = 1
GROUPS: dict[str, Any] = {"agent": AgentConfig, "env": EnvConfig, "schedule": ScheduleConfig}


def run_app(app: Callable[[], Any], schema: Any = TrainingConfig) -> None:
    """Run a ``@hydra.main`` app; a config that cannot be composed ends with one line and exit status 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report
    try:
        app()
    except JobFailed as error:  # a multirun re-raises its first failed job's error once every job ran
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_JOBS_FAILED)
    except ValueError as error:
        if str(error) != "Record does not exist.":  # optuna's study.best_trial when no trial completed
            raise
        print("error: no trial of the search finished; the job folders' summary.json say why", file=sys.stderr)
        sys.exit(EXIT_JOBS_FAILED)
    except (HydraException, OmegaConfBaseException) as error:
        message = describe_error(error, sys.argv[1:], schema)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


class BadInputExit(SystemExit):
    """Exit status 2 for bad input, carrying the one-line ``message`` already printed."""

    def __init__(self, message: str):
        super().__init__(EXIT_BAD_INPUT)
        self.message = message


class JobFailed(Exception):
    """A multirun job that failed. The sweep goes on with its other jobs (a sweeper counts it as a
    failed trial); the command ends with this one-line message and exit status 1."""


@contextlib.contextmanager
def bad_input_exits(
    overrides: Sequence[str], schema: Any = TrainingConfig, kinds: tuple[type[Exception], ...] = (Exception,)
) -> Iterator[None]:
    """Inside a Hydra job: bad input (of ``kinds``) exits at once (a failed job would add Hydra's own report)."""
    try:
        yield
    except kinds as error:
        message = describe_error(error, overrides, schema)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise BadInputExit(message) from None


class ResumeError(ValueError):
    pass


def describe_error(error: BaseException, overrides: Sequence[str] = (), schema: Any = TrainingConfig) -> Optional[str]:
    """One line for an error in the user's input, or None for anything else (a real failure)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if str(error).startswith("BasicSweeper does not support sweep type"):
        return (
            f"{error}: interval(), tag() and the like need an Optuna search "
            f"(hparams_search=dqn_optuna or hydra/sweeper=optuna)"
        )
    if isinstance(error, ConfigError):
        prefix = {"AgentConfig": "agent.", "EnvConfig": "env.", "ScheduleConfig": "schedule."}.get(error.owner, "")
        return f"{prefix}{error.field}={error.value!r} is invalid: expected {error.allowed}"
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, name = str(error.missing_cfg_file).rpartition("/")
        return f"{group}={name}: no such option; available: {', '.join(sorted(error.options))}"
    from .checkpoints import CheckpointError

    if isinstance(error, (ResumeError, CheckpointError, FileNotFoundError, MemoryError)):
        return " ".join(str(error).split())
    cause = error.__cause__ if isinstance(error, ConfigCompositionException) else error
    key = getattr(cause, "full_key", None)
    given = given_value(key, overrides) if key else None
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key and str(key).startswith("hydra."):
        return f"{key}={given}: no such key in Hydra's settings; see them with: python -m tetris_train --cfg hydra"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
        group = key.rpartition(".")[0]
        where = f"keys of {group}" if group else "top-level keys"
        return f"{key}={given}: no such key; allowed {where}: {allowed_keys(group, schema)}"
    if isinstance(cause, OmegaConfBaseException) and key:
        expected = expected_type(key, schema)
        if given is not None and expected is not None:
            return f"{key}={given} is invalid: expected {expected}"
        return f"{key}: {str(getattr(cause, 'msg', cause)).splitlines()[0]}"
    if isinstance(error, (OverrideParseException, ConfigCompositionException, OmegaConfBaseException)):
        return " ".join(str(error).split())
    return None


def given_value(key: str, overrides: Sequence[str]) -> Optional[str]:
    """The value the command line gave for ``key``, as typed."""
    for override in overrides:
        name, sep, value = override.partition("=")
        if sep and name.lstrip("+~") == key:
            return value
    return None


def allowed_keys(group: str, schema: Any = TrainingConfig) -> str:
    klass = GROUPS.get(group, schema)
    return ", ".join(f.name for f in dataclasses.fields(klass))


def expected_type(full_key: str, schema: Any = TrainingConfig) -> Optional[str]:
    group, _, name = full_key.rpartition(".")
    klass = GROUPS.get(group, schema if not group else None)
    fields = {f.name: f.type for f in dataclasses.fields(klass)} if klass else {}
    kind: Any = fields.get(name)
    if kind is None:
        return None
    names = {
        "float": "a number",
        "int": "an integer",
        "bool": "true or false",
        "str": "a string",
        "tuple[int, ...]": "a list of integers, e.g. [64, 64]",
        "tuple[float, ...]": "a list of numbers, e.g. [0, 10, 40, 90, 160]",
    }
    if str(kind) in names:
        return names[str(kind)]
    kind = str(kind).replace("Optional[", "null or ").rstrip("]") if str(kind).startswith("Optional[") else str(kind)
    return " ".join(names.get(word, word) for word in kind.split(" "))
