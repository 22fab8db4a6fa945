"""One training run, top to bottom: environment, agent, callbacks, training, final checkpoint,
final evaluation, learning curve, summary. Everything it writes goes into ``run_dir``."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf

from .agent import TetrisAgent
from .callbacks import (
    CapCallback,
    CheckpointCallback,
    EvalCallback,
    MetricsCallback,
    PruningCallback,
    TargetLinesCallback,
    recent_episodes,
)
from .checkpoints import read_metadata
from .config import TrainingConfig
from .env import make_env
from .metrics import configure_logger
from .objective import SOURCES, run_objective
from .plots import plot_learning_curve
from .run_folder import (
    CONFIG_FILE,
    EVALUATIONS_FILE,
    FINAL,
    METRICS_FILE,
    CheckpointStore,
    adopt_best,
    carry_over_history,
    find_checkpoints,
    resume_hint,
    trim_history,
    write_atomic,
    write_summary,
)
from .snapshot import write_snapshot
from .stopping import StopControl, stop_on_signals
from .versions import package_versions

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    status: str  # finished | pruned | interrupted
    stop_reason: str  # max_timesteps | target_lines | capped | pruned | interrupted
    objective: float  # schedule.objective of the run's evaluations (nan if interrupted)
    checkpoint: Path
    summary: dict[str, Any]
    requeue: Optional[Callable[[], None]] = None  # interrupted by a cluster's requeue signal: requeue the job


def run_training(config: TrainingConfig, run_dir: Path, trial: Any = None) -> RunResult:
    """Train ``config`` in ``run_dir``; ``trial`` (a :class:`tetris_train.search.TrialReporter`)
    receives the objective after each evaluation and may stop the run as pruned."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    schedule = config.schedule
    write_atomic(run_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(config.to_dict())))
    write_snapshot(run_dir)
    store = CheckpointStore(run_dir, schedule.checkpoint_dir, schedule.keep_last)
    store.remove_leftovers()

    started = store.started  # this stretch of the run
    summary: dict[str, Any] = {
        "status": "running",
        "resumed_from": config.resume,
        "seed": config.seed,
        "started": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    write_summary(run_dir, summary)
    summary["status"] = "failed"  # until it finishes or stops
    agent: Optional[TetrisAgent] = None
    control = StopControl()
    signals = contextlib.ExitStack()
    env = make_env(config.env)()
    try:
        if config.resume:
            agent = TetrisAgent.load_checkpoint(config.resume, env, device=config.agent.device)
            store.seconds_before = read_metadata(config.resume).get("wall_seconds_total")
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

        evaluation = EvalCallback(
            schedule.eval_freq,
            agent,
            store,
            history_file,
            config.evaluation_env(),
            schedule.eval_episodes,
            schedule.eval_seed,
            control,
        )
        metrics = MetricsCallback(schedule.log_interval, agent)  # after evaluation: its row carries eval/*
        stops = []  # callbacks that ask the run to stop early
        if schedule.target_lines:
            stops.append(TargetLinesCallback(schedule.target_lines, schedule.target_window, control))
        if schedule.stop_at_cap:
            stops.append(CapCallback(evaluation, schedule.stop_at_cap, control))
        pruning = PruningCallback(evaluation, trial, schedule.objective, control) if trial is not None else None
        if pruning is not None:
            stops.append(pruning)
        checkpoints = CheckpointCallback(agent, store, schedule.checkpoint_freq, control)  # last: serves stops

        progress_bar = sys.stdout.isatty() if schedule.progress_bar is None else schedule.progress_bar
        remaining = schedule.max_timesteps - first_step
        # until the final evaluation is written: a signal then asks for nothing more, and a cluster's
        # requeue signal cannot end the job halfway through it
        signals.enter_context(stop_on_signals(control))
        if remaining > 0:
            log.info("training %d steps (to %d) in %s", remaining, schedule.max_timesteps, run_dir)
            agent.train(
                remaining, [evaluation, metrics, *stops, checkpoints], progress_bar=progress_bar, log_interval=None
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
        if store.seconds_before is not None:
            summary["steps_per_s_total"] = round(
                metadata["timesteps_trained"] / max(store.seconds_before + train_seconds, 1e-9), 1
            )
        if reason == "interrupted":
            summary.update(status="interrupted", objective=None, best=evaluation.best)
            if control.requeue is not None:
                log.warning("stopped at step %d to be requeued: the requeued job continues from here", trained_to)
            else:
                log.warning("interrupted at step %d; %s", trained_to, resume_hint(run_dir))
        else:
            evaluated = len(evaluation.history)
            final = evaluation.evaluate_now()
            if len(evaluation.history) > evaluated:
                metrics.record()  # the new evaluation's row
            if pruning is not None:
                pruning.report(ask=False)  # the final evaluation, to the search's trial
            best = evaluation.best
            summary.update(
                status="pruned" if reason == "pruned" else "finished",
                objective=run_objective(evaluation.history, schedule, reason),
                objective_source=SOURCES[schedule.objective],
                best=best,
                final_evaluation=final,
            )
            log.info(
                "%s (%s) at step %d: final evaluation %.1f lines, best %.1f (step %d), %d games each",
                summary["status"],
                reason,
                trained_to,
                final["mean_lines"],
                best["mean_lines"],
                best["timesteps"],
                schedule.eval_episodes,
            )
        plot_learning_curve(run_dir / METRICS_FILE, history_file, run_dir / "learning_curve.png")
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, the newest checkpoint resumes
        summary.update(status="interrupted", stop_reason="aborted", objective=None)
        saved = find_checkpoints(store.folder)
        if saved:
            summary.update(timesteps=saved[-1][0], checkpoint=str(saved[-1][1]))
            log.warning("aborted at step %d; %s", saved[-1][0], resume_hint(run_dir))
        else:
            log.warning("aborted before the first checkpoint: nothing to resume, run the command again")
        raise
    except BaseException as error:
        summary.update(error=f"{type(error).__name__}: {error}")
        raise
    finally:
        signals.close()
        summary.update(
            wall_seconds=round(time.perf_counter() - started, 3), ended=time.time(), versions=package_versions()
        )
        if store.seconds_before is not None:
            summary["wall_seconds_total"] = store.wall_seconds_total()
        write_summary(run_dir, summary)
        logger = getattr(agent.model, "_logger", None) if agent is not None else None
        if logger is not None:
            logger.close()
        env.close()
    objective = summary["objective"] if summary["objective"] is not None else float("nan")
    return RunResult(summary["status"], summary["stop_reason"], objective, checkpoint, summary, control.requeue)


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
