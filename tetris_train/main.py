"""``python -m tetris_train [overrides]``: compose the config with Hydra, train, write the run folder.

Bad input (an unknown key, a value of the wrong type or out of range, an unknown group option, a
resume path without a checkpoint) ends with one line on stderr naming the key, the value and what
is allowed, and exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .cli import BadInputExit, JobFailed, ResumeError, bad_input_exits, describe_error, run_app
from .config import TrainingConfig, register_configs
from .validation import ConfigError

EXIT_INTERRUPTED = 130
RESUME_CHANGEABLE = ("schedule.", "agent.device")

log = logging.getLogger(__name__)
# optuna 2.10 (pinned with the Optuna sweeper, see README "Sweeps") warns about SQLAlchemy 2 on import
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://tetris_train.conf", config_name="config")
def train_app(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return train(overrides, cfg, run_dir)
    # in a sweep, a failed job fails alone: the sweep goes on and reports it at the end
    try:
        return train(overrides, cfg, run_dir)
    except BadInputExit as error:
        write_failure(run_dir, error.message)
        raise JobFailed(f"job {run_dir.name}: {error.message}") from None
    except Exception as error:
        log.exception("job %s failed", run_dir.name)
        raise JobFailed(f"job {run_dir.name} failed: {type(error).__name__}: {error} (see {run_dir})") from error


def train(overrides: list[str], cfg: DictConfig, run_dir: Path) -> float:
    from .sweeps import find_continuation
    from .train import run_training

    with bad_input_exits(overrides):
        config = build_config(cfg, overrides)
        check_memory(config)
        continuation = find_continuation(config, run_dir)
    if continuation is not None and continuation.finished is not None:
        log.info("%s holds this run, finished: not training it again", run_dir)
        return continuation.objective
    if continuation is not None:
        log.info("%s holds this run, unfinished: continuing from %s", run_dir, continuation.checkpoint)
        config = dataclasses.replace(config, resume=str(continuation.checkpoint))
    result = run_training(config, run_dir)
    if result.status == "interrupted":
        raise SystemExit(EXIT_INTERRUPTED)
    return result.objective


def write_failure(run_dir: Path, message: str) -> None:
    """A summary for a job that never started training, so that reports show why."""
    from .sweeps import SUMMARY_FILE
    from .train import write_atomic

    if (run_dir / SUMMARY_FILE).exists():
        return  # another run's summary (a folder refused for holding another config) stays as it is
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / SUMMARY_FILE, json.dumps({"status": "failed", "error": message}, indent=2) + "\n")


def check_memory(config: TrainingConfig) -> None:
    """Refuse a replay buffer larger than the machine's memory before allocating it."""
    from .env import TetrisEnv
    from .replay import AfterstateReplayBuffer

    env = TetrisEnv(config.env)
    if config.agent.policy == "afterstate":
        need = config.agent.buffer_size * AfterstateReplayBuffer.transition_bytes(
            env.observation_space, env.action_space, env.feature_scale
        )
    else:
        need = 2 * config.agent.buffer_size * int(np.prod(env.observation_space.shape)) * 4  # SB3's: obs + next obs
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise ConfigError(
            "AgentConfig",
            "buffer_size",
            config.agent.buffer_size,
            f"a buffer that fits in memory: this one needs {need / 2**30:.0f} GiB, "
            f"the machine has {have / 2**30:.0f} GiB",
        )


def build_config(cfg: DictConfig, overrides: list[str]) -> TrainingConfig:
    """The run's TrainingConfig. On resume it is the checkpoint's, with the command line's
    ``schedule.*`` (and ``agent.device``) overrides on top; on rerun, the run folder's."""
    for override in overrides:
        if override.startswith(("+", "~")):
            raise ResumeError(f"{override}: adding or deleting keys is not supported; set existing keys with key=value")
    if cfg.rerun is not None:
        return rerun(cfg, overrides)
    if cfg.resume is None:
        return OmegaConf.to_object(cfg)
    from .agent import read_metadata
    from .checkpoints import resolve_checkpoint

    if not str(cfg.resume).strip():
        raise ResumeError("resume= is empty: expected a run folder or checkpoint folder")
    checkpoint = resolve_checkpoint(cfg.resume)
    merged = OmegaConf.merge(OmegaConf.structured(TrainingConfig), read_metadata(checkpoint)["config"])
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "resume":
            continue
        if not key.startswith(RESUME_CHANGEABLE):
            raise ResumeError(
                f"{override}: a resumed run keeps its checkpoint's config; only single keys "
                f"schedule.<key>=value and agent.device=value can change on resume"
            )
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False)
    merged.resume = str(checkpoint.resolve())
    return OmegaConf.to_object(merged)


def rerun(cfg: DictConfig, overrides: list[str]) -> TrainingConfig:
    from .snapshot import RERUN_CHANGEABLE, rerun_config

    changes = {}
    for override in overrides:
        key = override.split("=", 1)[0]
        if key == "rerun":
            continue
        if key not in RERUN_CHANGEABLE:
            raise ResumeError(
                f"{override}: rerun= trains the run's own config again; only "
                f"{' and '.join(RERUN_CHANGEABLE)} can change (for other changes, start a new run)"
            )
        changes[key] = OmegaConf.select(cfg, key)
    try:
        return OmegaConf.to_object(rerun_config(str(cfg.rerun), changes))
    except (ResumeError, FileNotFoundError):
        raise
    except Exception as error:
        message = describe_error(error) or " ".join(str(error).split())
        raise ResumeError(f"rerun={cfg.rerun}: its config.yaml does not fit the schema: {message}") from None


def main() -> None:
    """Console entry point: train, turning bad input into one line and exit status 2."""
    run_app(train_app)


if __name__ == "__main__":
    main()
