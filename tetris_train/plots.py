"""Learning curves as PNG: evaluation lines and training-episode lines against timesteps."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

STEP = "time/total_timesteps"
TRAINING_LINES = "rollout/ep_lines_mean"
# above this many lines the y axis turns logarithmic (linear up to 10): Tetris results span orders of magnitude
LOG_SCALE_ABOVE = 1_000


def new_figure(width: float, height: float) -> Figure:
    """A figure outside pyplot (no GUI backend, nothing to close) whose layout makes room for a
    legend outside the axes."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def style_lines_axes(ax: Axes, values: Iterable[float]) -> None:
    """Lines per game against timesteps, with plain tick labels.

    The y axis starts at 0 and reaches at least 1, so that constant or tiny values get ordinary
    ticks; it turns symlog past :data:`LOG_SCALE_ABOVE`. Labels are plain numbers (no offset, no
    powers of ten); timesteps are written 500k, 1M.
    """
    from matplotlib.ticker import EngFormatter, ScalarFormatter

    top = max(values, default=0.0)
    if top > LOG_SCALE_ABOVE:
        ax.set_yscale("symlog", linthresh=10)
    plain = ScalarFormatter(useOffset=False)
    plain.set_scientific(False)
    ax.yaxis.set_major_formatter(plain)
    ax.set_ylim(0, max(1.0, top * 1.05))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("timesteps")
    ax.grid(True, alpha=0.3)


def legend_columns(labels: list[str], width: float) -> int:
    """How many legend entries fit side by side under axes ``width`` inches wide (small font)."""
    longest = max((len(label) for label in labels), default=1)
    return max(1, min(len(labels), 4, int(width * 14 // (longest + 6))))


def legend_below(fig: Figure, ax: Axes, title: Optional[str] = None) -> None:
    """The legend under the axes, where it covers no data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ncols = legend_columns(labels, fig.get_figwidth())
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small", title=title)


def learning_curve_figure(metrics_csv: Path, evaluations_jsonl: Path, title: str = "") -> Figure:
    """The run's curves: evaluation mean lines with their min-max range, and the mean lines of
    recent training episodes."""
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    values: list[float] = []
    if metrics_csv.is_file():
        with open(metrics_csv, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get(STEP) and r.get(TRAINING_LINES)]
        if rows:
            training = [float(r[TRAINING_LINES]) for r in rows]
            values += training
            ax.plot(
                [float(r[STEP]) for r in rows], training, color="tab:gray", label="training episodes (mean of last 100)"
            )
    if evaluations_jsonl.is_file():
        entries = [json.loads(line) for line in evaluations_jsonl.read_text().splitlines() if line.strip()]
        if entries:
            steps = [e["timesteps"] for e in entries]
            values += [e["max_lines"] for e in entries]
            ax.fill_between(
                steps,
                [e["min_lines"] for e in entries],
                [e["max_lines"] for e in entries],
                color="tab:blue",
                alpha=0.2,
                label="evaluation min-max",
            )
            ax.plot(steps, [e["mean_lines"] for e in entries], "o-", color="tab:blue", label="evaluation mean")
    style_lines_axes(ax, values)
    ax.set_ylabel("lines per game")
    ax.set_title(title or "learning curve")
    legend_below(fig, ax)
    return fig


def plot_learning_curve(metrics_csv: Path, evaluations_jsonl: Path, out: Path, title: str = "") -> Path:
    """Draw :func:`learning_curve_figure` into ``out``."""
    fig = learning_curve_figure(metrics_csv, evaluations_jsonl, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
