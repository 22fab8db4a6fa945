"""One training run, top to bottom: environment, agent, callbacks, training, final checkpoint,
evaluation, summary. Everything it writes goes into ``run_dir``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf

from .agent import TetrisAgent, package_versions, read_metadata
from .callbacks import CheckpointCallback, EvalCallback, MetricsCallback, TargetLinesCallback, recent_episodes
from .checkpoints import FINAL, CheckpointStore
from .config import TrainingConfig
from .env import make_env
from .evaluation import evaluate, model_policy
from .metrics import configure_logger
from .stopping import StopControl, stop_on_signals

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


@dataclass
class RunResult:
    status: str  # finished | interrupted
    stop_reason: str  # max_timesteps | target_lines | interrupted
    objective: float  # mean lines of the final evaluation (nan if interrupted)
    checkpoint: Path
    summary: dict[str, Any]


def run_training(config: TrainingConfig, run_dir: Path) -> RunResult:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    schedule = config.schedule
    write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config.to_dict())))
    store = CheckpointStore(run_dir, schedule.checkpoint_dir, schedule.keep_last)

    env = make_env(config.env)()
    if config.resume:
        agent = TetrisAgent.load_checkpoint(config.resume, env)
        agent.config = config  # the schedule may have been changed on the command line
        carry_over_metrics(Path(config.resume), run_dir)
        log.info("resuming from %s at step %d", config.resume, agent.timesteps_trained)
    else:
        agent = TetrisAgent(env, config)
    first_step = agent.timesteps_trained
    agent.model.set_logger(configure_logger(run_dir, schedule.tensorboard, keep_until_step=first_step))

    control = StopControl()
    metrics = MetricsCallback(schedule.log_interval)
    evaluation = EvalCallback(schedule.eval_freq, config.env, schedule.eval_episodes, schedule.eval_seed)
    goal = (
        [TargetLinesCallback(schedule.target_lines, schedule.target_window, control)] if schedule.target_lines else []
    )
    checkpoints = CheckpointCallback(agent, store, schedule.checkpoint_freq, control)  # last: serves stop requests

    progress_bar = sys.stdout.isatty() if schedule.progress_bar is None else schedule.progress_bar
    remaining = schedule.max_timesteps - first_step
    started = time.perf_counter()
    summary: dict[str, Any] = {"status": "failed", "resumed_from": config.resume, "seed": config.seed}
    try:
        with stop_on_signals(control):
            if remaining > 0:
                log.info("training %d steps (to %d) in %s", remaining, schedule.max_timesteps, run_dir)
                agent.train(
                    remaining,
                    [metrics, evaluation, *goal, checkpoints],
                    progress_bar=progress_bar,
                    log_interval=None,
                )
        train_seconds = time.perf_counter() - started
        if control.reason is None:
            control.request("max_timesteps")
            checkpoint = store.save_named(agent, FINAL, stop_reason="max_timesteps")
        else:
            checkpoint = checkpoints.stopped_at
        trained_to = read_metadata(checkpoint)["num_timesteps"]
        summary.update(
            stop_reason=control.reason,
            timesteps=trained_to,
            episodes=read_metadata(checkpoint)["episodes"],
            checkpoint=str(checkpoint),
            train_seconds=round(train_seconds, 3),
            steps_per_s=round((trained_to - first_step) / max(train_seconds, 1e-9), 1),
            training_lines=lines_statistics(agent.model),
            evaluations=[{k: v for k, v in e.items() if k != "lines"} for e in evaluation.history],
        )
        if control.reason == "interrupted":
            summary.update(status="interrupted", objective=None)
            log.warning("interrupted at step %d; resume with: python -m tetris_train resume=%s", trained_to, run_dir)
        else:
            final = evaluate(model_policy(agent.model), config.env, schedule.eval_episodes, schedule.eval_seed)
            evaluation.log(final)
            metrics.record()
            summary.update(
                status="finished", objective=final["mean_lines"], objective_source="final evaluation", evaluation=final
            )
            log.info(
                "finished (%s) at step %d: evaluation mean lines %.1f over %d games",
                control.reason,
                trained_to,
                final["mean_lines"],
                schedule.eval_episodes,
            )
    except BaseException as error:
        summary.update(error=f"{type(error).__name__}: {error}")
        raise
    finally:
        summary.update(wall_seconds=round(time.perf_counter() - started, 3), versions=package_versions())
        write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        agent.model.logger.close()
        env.close()
    objective = summary["objective"] if summary["objective"] is not None else float("nan")
    return RunResult(summary["status"], summary["stop_reason"], objective, checkpoint, summary)


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


def carry_over_metrics(checkpoint: Path, run_dir: Path) -> None:
    """Start a resumed run's metrics.csv with the rows of the run it continues."""
    source = read_metadata(checkpoint).get("run_dir")
    if source is None:
        return
    source_csv, target_csv = Path(source) / "metrics.csv", run_dir / "metrics.csv"
    if source_csv.is_file() and source_csv.resolve() != target_csv.resolve() and not target_csv.exists():
        shutil.copyfile(source_csv, target_csv)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_summary(run_dir: Path) -> Optional[dict[str, Any]]:
    file = Path(run_dir) / SUMMARY_FILE
    return json.loads(file.read_text()) if file.is_file() else None
