"""A run's objective: the one number a search ranks runs by, from the run's evaluations.

``best``: the mean lines of the best evaluation (the peak the run reached). ``mean``: the mean, over
the run's evaluations, of their mean lines; with evaluations every ``eval_freq`` steps this is the
area under the learning curve divided by its length, so a run that learns sooner scores higher even
when every run ends at the piece cap. A run stopped at the cap (``schedule.stop_at_cap``) counts its
remaining evaluations at its last value, as if it had gone on to ``max_timesteps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

SOURCES = {"best": "best evaluation", "mean": "mean of evaluations"}  # summary.json's objective_source


def objective_of(history: Sequence[dict[str, Any]], kind: str, planned: Optional[int] = None) -> Optional[float]:
    """The objective of evaluations ``history`` (None without any). ``planned``: the number of
    evaluations a run to ``max_timesteps`` makes, for a run stopped at the cap."""
    values = [float(entry["mean_lines"]) for entry in history]
    if not values:
        return None
    if kind == "best":
        return max(values)
    if kind == "mean":
        if planned is not None and planned > len(values):
            values += [values[-1]] * (planned - len(values))
        return sum(values) / len(values)
    raise ValueError(f"unknown objective {kind!r}")


def run_objective(history: Sequence[dict[str, Any]], schedule: Any, stop_reason: Optional[str]) -> Optional[float]:
    """The objective (``schedule.objective``) of a run that ended for ``stop_reason`` with these
    evaluations: the one number its summary, its search trial and a repeat of it report."""
    planned = planned_evaluations(schedule.max_timesteps, schedule.eval_freq) if stop_reason == "capped" else None
    return objective_of(history, schedule.objective, planned)


def planned_evaluations(max_timesteps: int, eval_freq: int) -> int:
    """Evaluations of a run to ``max_timesteps``: one every ``eval_freq`` steps and one at the end."""
    if not eval_freq:
        return 1
    return max_timesteps // eval_freq + (max_timesteps % eval_freq != 0)
