"""``python -m tetris_train [overrides]``: compose the config with Hydra, train, write the run folder.

Bad input (an unknown key, a value of the wrong type or out of range, an unknown group option, a
resume path without a checkpoint) ends with one line on stderr naming the key, the value and what
is allowed, and exit status 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import AgentConfig, ScheduleConfig, TrainingConfig, register_configs
from .env import EnvConfig
from .validation import ConfigError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
GROUPS = {"agent": AgentConfig, "env": EnvConfig, "schedule": ScheduleConfig}
RESUME_CHANGEABLE = ("schedule.", "agent.device")

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://tetris_train.conf", config_name="config")
def train_app(cfg: DictConfig) -> float:
    from .train import run_training

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    try:
        config = build_config(cfg, overrides)
    except Exception as error:
        message = describe_error(error, overrides)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None  # a failed job would add Hydra's multi-line report
    result = run_training(config, Path(hydra_cfg.runtime.output_dir))
    if result.status == "interrupted":
        raise SystemExit(EXIT_INTERRUPTED)
    return result.objective


def build_config(cfg: DictConfig, overrides: list[str]) -> TrainingConfig:
    """The run's TrainingConfig. On resume it is the checkpoint's, with the command line's
    ``schedule.*`` (and ``agent.device``) overrides on top."""
    if cfg.resume is None:
        return OmegaConf.to_object(cfg)
    from .agent import read_metadata
    from .checkpoints import resolve_checkpoint

    checkpoint = resolve_checkpoint(cfg.resume)
    merged = OmegaConf.merge(OmegaConf.structured(TrainingConfig), read_metadata(checkpoint)["config"])
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "resume":
            continue
        if not key.startswith(RESUME_CHANGEABLE):
            raise ResumeError(
                f"{override}: a resumed run keeps its checkpoint's config; "
                f"only schedule.* and agent.device can change on resume"
            )
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False)
    merged.resume = str(checkpoint.resolve())
    return OmegaConf.to_object(merged)


class ResumeError(ValueError):
    pass


def describe_error(error: BaseException, overrides: Sequence[str] = ()) -> Optional[str]:
    """One line for an error in the user's input, or None for anything else (a real failure)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(error, ConfigError):
        prefix = {"AgentConfig": "agent.", "EnvConfig": "env.", "ScheduleConfig": "schedule."}.get(error.owner, "")
        return f"{prefix}{error.field}={error.value!r} is invalid: expected {error.allowed}"
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, name = str(error.missing_cfg_file).rpartition("/")
        return f"{group}={name}: no such option; available: {', '.join(sorted(error.options))}"
    if isinstance(error, (ResumeError, FileNotFoundError)):
        return str(error)
    cause = error.__cause__ if isinstance(error, ConfigCompositionException) else error
    key = getattr(cause, "full_key", None)
    given = given_value(key, overrides) if key else None
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
        group = key.rpartition(".")[0]
        where = f"keys of {group}" if group else "top-level keys"
        return f"{key}={given}: no such key; allowed {where}: {allowed_keys(group)}"
    if isinstance(cause, OmegaConfBaseException) and key:
        expected = expected_type(key)
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


def allowed_keys(group: str) -> str:
    klass = GROUPS.get(group, TrainingConfig)
    return ", ".join(f.name for f in dataclasses.fields(klass))


def expected_type(full_key: str) -> Optional[str]:
    group, _, name = full_key.rpartition(".")
    klass = GROUPS.get(group, TrainingConfig if not group else None)
    fields = {f.name: f.type for f in dataclasses.fields(klass)} if klass else {}
    kind: Any = fields.get(name)
    if kind is None:
        return None
    names = {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string"}
    kind = str(kind).replace("Optional[", "null or ").rstrip("]") if str(kind).startswith("Optional[") else str(kind)
    return " ".join(names.get(word, word) for word in kind.split(" "))


def main() -> None:
    """Console entry point: run the Hydra app, turning bad input into one line and exit status 2."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report
    try:
        train_app()
    except Exception as error:  # noqa: BLE001
        message = describe_error(error, sys.argv[1:])
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
