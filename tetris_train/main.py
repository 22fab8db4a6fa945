"""``python -m tetris_train [overrides]``: compose the config with Hydra, train, write the run folder.

Bad input (an unknown key, a value of the wrong type or out of range, an unknown group option, a
resume path without a checkpoint) ends with one line on stderr naming the key, the value and what
is allowed, and exit status 2.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .cli import EXIT_INTERRUPTED, BadInputExit, JobFailed, ResumeError, RunFailed, bad_input_exits, run_app
from .config import TrainingConfig, register_configs

# what a full disk, a quota or a read-only folder raise: the run stops with one line, not a traceback
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)

log = logging.getLogger(__name__)

register_configs()


def register_search_plugin() -> None:
    """Register the ``optuna_search`` sweeper with Hydra directly: Hydra's own scan of the
    ``hydra_plugins`` namespace misses it in an editable install."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.tetris_train_search import OptunaSearch

    Plugins.instance().register(OptunaSearch)


register_search_plugin()


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
        from .run_folder import write_failure

        write_failure(run_dir, error.message)
        raise JobFailed(f"job {run_dir.name}: {error.message}") from None
    except RunFailed as error:
        raise JobFailed(f"job {run_dir.name}: {error.message}") from None
    except Exception as error:
        log.exception("job %s failed", run_dir.name)
        raise JobFailed(f"job {run_dir.name} failed: {type(error).__name__}: {error} (see {run_dir})") from error


def train(overrides: list[str], cfg: DictConfig, run_dir: Path) -> float:
    from .agent import check_device
    from .replay import check_memory
    from .run_folder import RunFolderLock
    from .search import TrialReporter

    lock = RunFolderLock(run_dir)
    with bad_input_exits(overrides):
        config = build_config(cfg, overrides)
        check_memory(config)
        check_device(config)
        trial = TrialReporter.from_hydra()  # this job's trial, in an Optuna search
        # in a sweep, another job may train this folder (the same configuration asked for again,
        # or the same sweep run by two commands): wait for it, then find its run
        lock.acquire(wait=HydraConfig.get().mode == RunMode.MULTIRUN)
    try:
        return train_in_folder(overrides, config, run_dir, trial)
    finally:
        lock.release()


def train_in_folder(overrides: list[str], config: TrainingConfig, run_dir: Path, trial: Any) -> float:
    """Train ``config`` in ``run_dir`` (held by this process), or continue or replay what it holds."""
    from .checkpoints import CheckpointError
    from .run_folder import find_continuation, resume_hint
    from .train import run_training

    with bad_input_exits(overrides):
        continuation = find_continuation(config, run_dir, search_trial=trial is not None)
    if continuation is not None and continuation.finished is not None:
        log.info("%s holds this run, finished: not training it again", run_dir)
        if trial is not None:
            trial.replay(run_dir, continuation.finished, config.schedule)
        return continuation.objective(run_dir, config.schedule)
    if continuation is not None:
        log.info("%s holds this run, unfinished: continuing from %s", run_dir, continuation.checkpoint)
        config = dataclasses.replace(config, resume=str(continuation.checkpoint))
    with bad_input_exits(overrides, kinds=(CheckpointError,)):  # a checkpoint that is whole but unreadable
        try:
            result = run_training(config, run_dir, trial=trial)
        except OSError as error:
            if error.errno not in WRITE_ERRORS:
                raise
            message = (
                f"cannot write {error.filename or run_dir}: {error.strerror}; the run stopped, "
                f"its earlier checkpoints are intact ({resume_hint(run_dir)})"
            )
            print(f"error: {message}", file=sys.stderr)
            raise RunFailed(message) from None
    if result.status == "interrupted":
        if result.requeue is not None:
            result.requeue()  # the cluster launcher requeues the job, which continues from this checkpoint
        raise SystemExit(EXIT_INTERRUPTED)
    return result.objective


def build_config(cfg: DictConfig, overrides: list[str]) -> TrainingConfig:
    """The run's TrainingConfig: the composed one; on resume the checkpoint's, with the command
    line's ``schedule.*`` (and ``agent.device``) overrides on top; on rerun, the run folder's."""
    for override in overrides:
        if override.startswith(("+", "~")):
            raise ResumeError(f"{override}: adding or deleting keys is not supported; set existing keys with key=value")
    if cfg.rerun is not None:
        from .snapshot import rerun_config_from

        return rerun_config_from(cfg, overrides)
    if cfg.resume is not None:
        from .run_folder import resume_config

        return resume_config(cfg, overrides)
    return OmegaConf.to_object(cfg)


def check_training(cfg: DictConfig, overrides: list[str]) -> None:
    """The checks of :func:`build_config`, run before Hydra writes anything (a single run's config,
    or each job's of a grid multirun)."""
    for override in overrides:
        name, _, value = override.partition("=")
        if name.lstrip("+~") == "hparams_search" and value not in ("", "null"):
            raise ResumeError(f"{override}: a search runs as a multirun: python -m tetris_train -m {override} ...")
    build_config(cfg, overrides)


def main() -> None:
    """Console entry point: train, turning bad input into one line and exit status 2."""
    run_app(train_app, check=check_training, usage=usage)


def usage() -> str:
    from .cli import usage_text

    return usage_text(
        "tetris-train: train a Stable-Baselines3 DQN agent to play Tetris.",
        "python -m tetris_train [group=option ...] [key=value ...]",
        TrainingConfig,
        ("agent", "env", "schedule", "hparams_search"),
        "config",
        ("resume=<run folder> continues a run; rerun=<run folder> seed=N repeats its config.",),
    )


if __name__ == "__main__":
    main()
