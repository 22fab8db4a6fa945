"""One training run, top to bottom: environment, agent, callbacks, training, final checkpoint,
final evaluation, learning curve, summary. Everything it writes goes into ``run_dir``."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf

from .agent import CheckpointError, TetrisAgent, link_checkpoint, package_versions, read_metadata
from .callbacks import (
    CheckpointCallback,
    EvalCallback,
    MetricsCallback,
    TargetLinesCallback,
    read_history,
    recent_episodes,
)
from .checkpoints import BEST, FINAL, CheckpointStore
from .config import TrainingConfig
from .env import make_env
from .metrics import METRICS_FILE, configure_logger
from .plots import plot_learning_curve
from .snapshot import write_snapshot
from .stopping import StopControl, stop_on_signals
from .sweeps import CONFIG_FILE, SUMMARY_FILE

log = logging.getLogger(__name__)

EVALUATIONS_FILE = "evaluations.jsonl"


@dataclass
class RunResult:
    status: str  # finished | interrupted
    stop_reason: str  # max_timesteps | target_lines | interrupted
    objective: float  # mean lines of the best evaluation (nan if interrupted)
    checkpoint: Path
    summary: dict[str, Any]


def run_training(config: TrainingConfig, run_dir: Path) -> RunResult:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    schedule = config.schedule
    write_atomic(run_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(config.to_dict())))
    write_snapshot(run_dir)
    store = CheckpointStore(run_dir, schedule.checkpoint_dir, schedule.keep_last)

    started = time.perf_counter()
    summary: dict[str, Any] = {
        "status": "running",
        "resumed_from": config.resume,
        "seed": config.seed,
        "started": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    summary["status"] = "failed"  # until it finishes or stops
    agent: Optional[TetrisAgent] = None
    env = make_env(config.env)()
    try:
        if config.resume:
            agent = TetrisAgent.load_checkpoint(config.resume, env, device=config.agent.device)
            agent.config = config  # the schedule may have been changed on the command line
            carry_over_history(Path(config.resume), run_dir)
            log.info("resuming from %s at step %d", config.resume, agent.timesteps_trained)
        else:
            agent = TetrisAgent(env, config)
        first_step = agent.timesteps_trained
        history_file = run_dir / EVALUATIONS_FILE
        trim_history(history_file, first_step)  # evaluations of steps about to be trained again
        adopt_best(history_file, store)
        agent.model.set_logger(configure_logger(run_dir, schedule.tensorboard, keep_until_step=first_step))

        control = StopControl()
        evaluation = EvalCallback(
            schedule.eval_freq, agent, store, history_file, config.env, schedule.eval_episodes, schedule.eval_seed
        )
        metrics = MetricsCallback(schedule.log_interval, agent)  # after evaluation: its row carries eval/*
        goal = []
        if schedule.target_lines:
            goal.append(TargetLinesCallback(schedule.target_lines, schedule.target_window, control))
        checkpoints = CheckpointCallback(agent, store, schedule.checkpoint_freq, control)  # last: serves stops

        progress_bar = sys.stdout.isatty() if schedule.progress_bar is None else schedule.progress_bar
        remaining = schedule.max_timesteps - first_step
        with stop_on_signals(control):
            if remaining > 0:
                log.info("training %d steps (to %d) in %s", remaining, schedule.max_timesteps, run_dir)
                agent.train(
                    remaining, [evaluation, metrics, *goal, checkpoints], progress_bar=progress_bar, log_interval=None
                )
            train_seconds = time.perf_counter() - started
            if checkpoints.stopped_at is not None:
                checkpoint, reason = checkpoints.stopped_at, control.reason
            else:  # ran to max_timesteps (a stop asked for during the last rollout came too late to matter)
                with control.writing():
                    checkpoint = store.save_named(agent, FINAL, stop_reason="max_timesteps")
                reason = "max_timesteps"
        metadata = read_metadata(checkpoint)
        trained_to = metadata["num_timesteps"]
        summary.update(
            stop_reason=reason,
            timesteps=trained_to,
            episodes=metadata["episodes"],
            checkpoint=str(checkpoint),
            train_seconds=round(train_seconds, 3),
            steps_per_s=round((trained_to - first_step) / max(train_seconds, 1e-9), 1),
            training_lines=lines_statistics(agent.model),
        )
        if reason == "interrupted":
            summary.update(status="interrupted", objective=None, best=evaluation.best)
            log.warning("interrupted at step %d; %s", trained_to, resume_hint(run_dir))
        else:
            evaluated = len(evaluation.history)
            final = evaluation.evaluate_now()
            if len(evaluation.history) > evaluated:
                metrics.record()  # the new evaluation's row
            best = evaluation.best
            summary.update(
                status="finished",
                objective=best["mean_lines"],
                objective_source="best evaluation",
                best=best,
                final_evaluation=final,
            )
            log.info(
                "finished (%s) at step %d: final evaluation %.1f lines, best %.1f (step %d), %d games each",
                reason,
                trained_to,
                final["mean_lines"],
                best["mean_lines"],
                best["timesteps"],
                schedule.eval_episodes,
            )
        plot_learning_curve(run_dir / METRICS_FILE, history_file, run_dir / "learning_curve.png")
    except BaseException as error:
        summary.update(error=f"{type(error).__name__}: {error}")
        raise
    finally:
        summary.update(
            wall_seconds=round(time.perf_counter() - started, 3), ended=time.time(), versions=package_versions()
        )
        write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        logger = getattr(agent.model, "_logger", None) if agent is not None else None
        if logger is not None:
            logger.close()
        env.close()
    objective = summary["objective"] if summary["objective"] is not None else float("nan")
    return RunResult(summary["status"], summary["stop_reason"], objective, checkpoint, summary)


def resume_hint(run_dir: Path) -> str:
    """How to continue an interrupted run: the sweep command again for a multirun job, else resume=."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"to continue it, run the same sweep command again with hydra.sweep.dir={run_dir.parent}"
    path = str(run_dir)
    if not re.search(r"[=,'\"\s\[\](){}$`\\]", path):
        argument = f"resume={path}"
    elif not re.search(r"['\"$`\\]", path):
        argument = f"\"resume='{path}'\""  # quoted for Hydra inside, for the shell outside
    else:
        argument = shlex.quote(f"resume='{path}'")
    return f"resume with: python -m tetris_train {argument}"


def lines_statistics(model: Any) -> dict[str, Any]:
    lines = recent_episodes(model, "total_lines", 100)
    if not lines:
        return {"episodes": int(model._episode_num), "recent_episodes": 0}
    return {
        "episodes": int(model._episode_num),
        "recent_episodes": len(lines),
        "recent_mean": float(np.mean(lines)),
        "recent_max": float(np.max(lines)),
    }


def carry_over_history(checkpoint: Path, run_dir: Path) -> None:
    """Start a resumed run's metrics and evaluations with those of the run it continues."""
    source = read_metadata(checkpoint).get("run_dir")
    if source is None:
        return
    for name in (METRICS_FILE, EVALUATIONS_FILE):
        source_file, target_file = Path(source) / name, run_dir / name
        if source_file.is_file() and not target_file.exists():
            shutil.copyfile(source_file, target_file)


def trim_history(history_file: Path, until_step: int) -> None:
    if history_file.is_file():
        kept = read_history(history_file, until_step)
        write_atomic(history_file, "".join(json.dumps(entry) + "\n" for entry in kept))


def adopt_best(history_file: Path, store: CheckpointStore) -> None:
    """Give a resumed run the best checkpoint of the run it continues (linked, not copied).

    If that checkpoint no longer holds the evaluated state, the entry loses its checkpoint: the
    next better evaluation saves a new one.
    """
    history = read_history(history_file)
    best = max(history, key=lambda e: e["mean_lines"], default=None)
    if best is None or "checkpoint" not in best:
        return
    source, target = Path(best["checkpoint"]), store.folder / BEST
    try:
        same_state = read_metadata(source)["num_timesteps"] == best["timesteps"]
    except (CheckpointError, KeyError):
        same_state = False
    if not same_state:
        del best["checkpoint"]
    elif source.resolve() != target.resolve():
        best["checkpoint"] = str(link_checkpoint(source, target, run_dir=str(store.run_dir), evaluation=best))
    write_atomic(history_file, "".join(json.dumps(entry) + "\n" for entry in history))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
