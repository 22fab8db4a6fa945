"""SB3 callbacks for checkpoints, evaluation, metrics and the lines goal.

They all act between rollouts (``on_rollout_start``): there the previous rollout's transitions are
in the replay buffer, its gradient steps are done and the observation in flight matches the game,
so a checkpoint taken there resumes exactly. Stopping works the same way: a stop request is
served at the next such point, after the checkpoint is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from .agent import StopTraining, TetrisAgent
from .env import EnvConfig
from .evaluation import evaluate, model_policy
from .run_folder import BEST, FINAL, CheckpointStore, read_history
from .stopping import StopControl

log = logging.getLogger(__name__)


class BoundaryCallback(BaseCallback):
    """A callback whose work happens between rollouts, every ``every`` steps (0: never)."""

    def __init__(self, every: int = 0):
        super().__init__()
        self.every = every
        self._next_due: Optional[int] = None

    def _on_training_start(self) -> None:
        if self.every:
            self._next_due = (self.model.num_timesteps // self.every + 1) * self.every

    def _on_rollout_start(self) -> None:
        if self._next_due is not None and self.model.num_timesteps >= self._next_due:
            self._next_due = (self.model.num_timesteps // self.every + 1) * self.every
            self._on_due()
        self._on_boundary()

    def _on_due(self) -> None:
        """Work done every ``every`` steps."""

    def _on_boundary(self) -> None:
        """Work done between every two rollouts."""

    def _on_step(self) -> bool:
        return True


def recent_episodes(model: Any, key: str, window: int) -> list[float]:
    """``key`` of the last ``window`` finished training episodes (SB3 keeps the last 100)."""
    buffer = list(model.ep_info_buffer or [])[-window:]
    return [float(info[key]) for info in buffer if key in info]


class MetricsCallback(BoundaryCallback):
    """Writes a row of metrics every ``every`` steps: SB3's own plus lines, pieces and score."""

    def __init__(self, every: int, agent: TetrisAgent, window: int = 100):
        super().__init__(every)
        self.agent, self.window = agent, window

    def _on_due(self) -> None:
        self.record()

    def _on_boundary(self) -> None:
        if any(key.startswith("eval/") for key in self.agent.model.logger.name_to_value):
            self.record()  # an evaluation was just recorded: give it its row now

    def record(self) -> None:
        model = self.agent.model
        for key, name in (("total_lines", "lines"), ("pieces", "pieces"), ("score", "score")):
            values = recent_episodes(model, key, self.window)
            if values:
                model.logger.record(f"rollout/ep_{name}_mean", float(np.mean(values)))
        # the training state, known at any step: a row with no gradient step since the previous one
        # (the final evaluation of a run resumed at its final checkpoint) carries it too
        model.logger.record("train/n_updates", model._n_updates, exclude="tensorboard")
        model.logger.record("train/learning_rate", model.policy.optimizer.param_groups[0]["lr"])
        model.logger.record("rollout/exploration_rate", model.exploration_rate)
        model.dump_logs()


class EvalCallback(BoundaryCallback):
    """Greedy evaluation games on fixed seeds every ``every`` steps.

    Each evaluation is logged under ``eval/`` and appended to ``history_file`` (JSON lines); an
    evaluation better than every earlier one saves the agent as the ``best`` checkpoint, so the
    peak of a run that later collapses is kept.
    """

    def __init__(
        self,
        every: int,
        agent: TetrisAgent,
        store: CheckpointStore,
        history_file: Path,
        env_config: EnvConfig,
        episodes: int,
        seed: int,
        control: Optional[StopControl] = None,
    ):
        super().__init__(every)
        self.agent, self.store, self.history_file = agent, store, history_file
        self.env_config, self.episodes, self.seed = env_config, episodes, seed
        self.control = control
        self.history = read_history(history_file)
        self.owed = False  # an evaluation that was due when the run stopped to be requeued

    def _on_training_start(self) -> None:
        super()._on_training_start()
        steps = self.model.num_timesteps
        last_due = steps // self.every * self.every if self.every else 0
        if last_due > 0 and not any(e["timesteps"] >= last_due for e in self.history):
            self.owed = True  # the run it continues stopped for a requeue before that evaluation

    def _on_due(self) -> None:
        if self.control is not None and self.control.requeue is not None:
            # the job's time is nearly up: checkpoint first, the requeued job evaluates this step
            log.info("step %d: evaluation left to the requeued job", self.model.num_timesteps)
            return
        self.owed = False
        self.evaluate_now()

    def _on_boundary(self) -> None:
        if self.owed and (self.control is None or self.control.requeue is None):
            self.owed = False
            self.evaluate_now()

    @property
    def best(self) -> Optional[dict[str, Any]]:
        return max(self.history, key=lambda e: e["mean_lines"], default=None)

    def evaluate_now(self) -> dict[str, Any]:
        """Evaluate the agent as it is (reusing an evaluation of this very step, if there is one)."""
        model = self.agent.model
        steps = int(model.num_timesteps)
        if self.history and self.history[-1]["timesteps"] == steps:
            return self.history[-1]
        result = evaluate(model_policy(model), self.env_config, self.episodes, self.seed)
        entry = {"timesteps": steps, **{k: v for k, v in result.items() if k not in ("lines", "pieces")}}
        for key in ("mean_lines", "median_lines", "min_lines", "max_lines", "mean_pieces", "reached_cap"):
            model.logger.record(f"eval/{key}", result[key])
        best = self.best
        if best is None or result["mean_lines"] > best["mean_lines"]:
            path = self.store.save_named(self.agent, BEST, evaluation=entry)
            entry["checkpoint"] = str(path)
        self.history.append(entry)
        with open(self.history_file, "a") as f:
            f.write(json.dumps(entry) + "\n")
        log.info(
            "step %d: evaluation mean lines %.1f over %d games%s",
            entry["timesteps"],
            entry["mean_lines"],
            self.episodes,
            " (best so far)" if "checkpoint" in entry else "",
        )
        return result


class TargetLinesCallback(BoundaryCallback):
    """Asks to stop once the mean lines of the last ``window`` training episodes reach ``target``."""

    def __init__(self, target: int, window: int, control: StopControl):
        super().__init__()
        self.target, self.window, self.control = target, window, control

    def _on_boundary(self) -> None:
        lines = recent_episodes(self.model, "total_lines", self.window)
        if len(lines) == self.window and np.mean(lines) >= self.target:
            log.info(
                "mean lines %.1f over the last %d episodes reached the goal of %d",
                np.mean(lines),
                self.window,
                self.target,
            )
            self.control.request("target_lines")


class CapCallback(BoundaryCallback):
    """Asks to stop once ``evaluations`` of the run's evaluations (in a row or not) played every game
    to the piece cap: the best checkpoint is then all the evaluation games can show, and later
    training adds nothing they can measure."""

    def __init__(self, evaluation: EvalCallback, evaluations: int, control: StopControl):
        super().__init__()
        self.evaluation, self.evaluations, self.control = evaluation, evaluations, control
        self.seen = 0  # evaluations looked at: the check runs once per new evaluation, not every rollout

    def _on_boundary(self) -> None:
        if len(self.evaluation.history) == self.seen:
            return
        self.seen = len(self.evaluation.history)
        capped = [entry for entry in self.evaluation.history if entry.get("reached_cap") == 1.0]
        if len(capped) >= self.evaluations and self.control.reason is None:
            log.info("step %d: %d evaluations at the piece cap: stopping", capped[-1]["timesteps"], len(capped))
            self.control.request("capped")


class PruningCallback(BoundaryCallback):
    """Reports the run's objective so far to its search trial after each evaluation, and asks to
    stop (as ``pruned``) when the study's pruner says the trial cannot catch up. A run already
    stopping for another reason (at the cap, say) only reports: it is finished, not pruned. A
    study that cannot be reached (a busy database) costs the check, not the run."""

    def __init__(self, evaluation: EvalCallback, reporter: Any, objective: str, control: StopControl):
        super().__init__()
        self.evaluation, self.reporter, self.objective, self.control = evaluation, reporter, objective, control
        self.reported = 0

    def _on_boundary(self) -> None:
        self.report(ask=self.control.reason is None)

    def report(self, ask: bool) -> None:
        """Report the evaluations not reported yet (the final one, once training ended: ``ask`` False)."""
        history = self.evaluation.history
        if len(history) == self.reported:
            return
        start, self.reported = self.reported, len(history)
        try:  # from the first evaluation, for a continued run: its new trial learns the whole run
            prune = self.reporter.report_history(history, self.objective, start=start, ask=ask)
        except Exception as error:  # the study's database: an SQLAlchemy error, or the like
            log.warning("cannot report to the search's study (%s: %s); training goes on", type(error).__name__, error)
            return
        if prune:
            step = history[-1]["timesteps"]
            log.info("step %d: the search's pruner stops this trial", step)
            self.reporter.mark_pruned(step)
            self.control.request("pruned")


class CheckpointCallback(BoundaryCallback):
    """Periodic checkpoints every ``every`` steps; on a stop request, one last checkpoint, then
    :class:`StopTraining`.

    A run stopped by ``interrupted`` gets a periodic checkpoint, to be resumed; any other stop
    reason ends the run and writes ``final``. Keep this callback last in the list, so that stop
    requests made at the same point by the callbacks before it are served at once.
    """

    def __init__(self, agent: TetrisAgent, store: CheckpointStore, every: int, control: StopControl):
        super().__init__(every)
        self.agent, self.store, self.control = agent, store, control
        self.stopped_at: Optional[Path] = None

    def _on_due(self) -> None:
        if self.control.reason is None:
            self.store.save_periodic(self.agent)

    def _on_boundary(self) -> None:
        if self.control.reason is None or self.stopped_at is not None:
            return
        with self.control.writing():
            if self.control.reason == "interrupted":
                self.stopped_at = self.store.save_periodic(self.agent, stop_reason="interrupted")
            else:
                self.stopped_at = self.store.save_named(self.agent, FINAL, stop_reason=self.control.reason)
        raise StopTraining
