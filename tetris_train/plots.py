"""Learning curves as PNG: evaluation lines and training-episode lines against timesteps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

STEP = "time/total_timesteps"
TRAINING_LINES = "rollout/ep_lines_mean"


def plot_learning_curve(metrics_csv: Path, evaluations_jsonl: Path, out: Path, title: str = "") -> Path:
    """Draw the run's curves into ``out``: evaluation mean lines with their min-max range, and the
    mean lines of recent training episodes (a log scale, as Tetris results span orders of magnitude)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if metrics_csv.is_file():
        with open(metrics_csv, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get(STEP) and r.get(TRAINING_LINES)]
        if rows:
            ax.plot(
                [float(r[STEP]) for r in rows],
                [float(r[TRAINING_LINES]) for r in rows],
                color="tab:gray",
                label="training episodes (mean of last 100)",
            )
    if evaluations_jsonl.is_file():
        entries = [json.loads(line) for line in evaluations_jsonl.read_text().splitlines() if line.strip()]
        if entries:
            steps = [e["timesteps"] for e in entries]
            ax.fill_between(
                steps,
                [e["min_lines"] for e in entries],
                [e["max_lines"] for e in entries],
                color="tab:blue",
                alpha=0.2,
                label="evaluation min-max",
            )
            ax.plot(steps, [e["mean_lines"] for e in entries], "o-", color="tab:blue", label="evaluation mean")
    ax.set_xlabel("timesteps")
    ax.set_ylabel("lines per game")
    ax.set_yscale("symlog", linthresh=10)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    ax.set_title(title or "learning curve")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
