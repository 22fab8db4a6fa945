"""Which objective ranks configurations? ``best`` against ``mean``, on one grid of runs.

A grid of configurations x training seeds is trained once (a real multirun); both objectives are
computed from each run's ``evaluations.jsonl`` (tetris_train.objective), so they see the same runs.
For each objective it prints every configuration's value per seed, mean ± std over seeds, and:

- separation: the spread of the configurations' means (max - min) over the mean std between seeds of
  one configuration; above 1, configurations differ by more than seeds of one configuration do.
- concordance: Kendall's W of the seeds' rankings of the configurations (1: every seed ranks them
  the same; 0: no agreement); ties count as tied ranks.

    python benchmarks/objective.py [--jobs 2] [--sweep DIR] [-- grid overrides]
    python benchmarks/objective.py --sweep DIR --no-train     # analyse a grid already trained

Default grid: agent.learning_rate=1e-4,3e-4,1e-3 x seed=0,1,2 on the default game, 200,000 steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from tetris_train.objective import SOURCES, objective_of, planned_evaluations

GRID = ["agent.learning_rate=1e-4,3e-4,1e-3", "seed=0,1,2", "schedule.max_timesteps=200000"]


def train(sweep: Path, jobs: int, overrides: list[str]) -> None:
    command = [sys.executable, "-m", "tetris_train", "-m", *overrides, "schedule.progress_bar=false"]
    command += [f"hydra.sweep.dir={sweep}", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def runs(sweep: Path) -> dict[str, dict[str, tuple[list[dict], int | None]]]:
    """configuration -> seed -> (evaluations, planned evaluations of a run stopped at the cap, else
    None), from each job folder of the sweep."""
    import yaml

    found: dict[str, dict[str, tuple[list[dict], int | None]]] = {}
    folders = sorted(p for p in sweep.iterdir() if (p / "evaluations.jsonl").is_file())
    shared = set.intersection(*(set(f.name.split(",")) for f in folders)) if folders else set()
    for folder in folders:
        overrides = folder.name.split(",")
        seed = next((o.split("=")[1] for o in overrides if o.startswith("seed=")), "0")
        configuration = ",".join(o for o in overrides if not o.startswith("seed=") and o not in shared)
        history = [json.loads(line) for line in (folder / "evaluations.jsonl").read_text().splitlines() if line]
        summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
        schedule = yaml.safe_load((folder / "config.yaml").read_text())["schedule"]
        planned = None
        if summary.get("stop_reason") == "capped":
            planned = planned_evaluations(schedule["max_timesteps"], schedule["eval_freq"])
        found.setdefault(configuration, {})[seed] = (history, planned)
    return found


def ranks(values: list[float]) -> list[float]:
    """Ranks from 1 (highest), tied values sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and abs(values[order[j + 1]] - values[order[i]]) < 1.0:  # within a line: tied
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def kendall_w(table: list[list[float]]) -> float:
    """Kendall's W of ``table[seed][configuration]`` (no tie correction)."""
    m, n = len(table), len(table[0])
    if n < 2:
        return float("nan")
    rank_sums = [sum(ranks(row)[c] for row in table) for c in range(n)]
    mean = m * (n + 1) / 2
    s = sum((r - mean) ** 2 for r in rank_sums)
    return 12 * s / (m**2 * (n**3 - n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", type=Path, default=Path("outputs/benchmarks/objective"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-train", action="store_true", help="analyse the runs already in --sweep")
    parser.add_argument("overrides", nargs="*", help=f"the grid (default: {' '.join(GRID)})")
    args = parser.parse_args()
    if not args.no_train:
        train(args.sweep, args.jobs, args.overrides or GRID)
    grid = runs(args.sweep)
    seeds = sorted({s for per_seed in grid.values() for s in per_seed})
    configurations = [c for c in grid if all(s in grid[c] for s in seeds)]
    print(f"{len(configurations)} configurations x {len(seeds)} seeds from {args.sweep}")
    for kind, description in SOURCES.items():
        values = {c: [objective_of(grid[c][s][0], kind, grid[c][s][1]) for s in seeds] for c in configurations}
        print(f"\nobjective {kind}: {description}")
        print(f"  {'configuration':<48}" + "".join(f"{'seed ' + s:>10}" for s in seeds) + f"{'mean ± std':>20}")
        for c in sorted(configurations, key=lambda c: -statistics.fmean(values[c])):
            mean, std = statistics.fmean(values[c]), statistics.stdev(values[c]) if len(seeds) > 1 else 0.0
            cells = "".join(f"{v:>10.1f}" for v in values[c])
            print(f"  {c[:48]:<48}{cells}{f'{mean:,.1f} ± {std:,.1f}':>20}")
        means = [statistics.fmean(values[c]) for c in configurations]
        within = statistics.fmean(statistics.stdev(values[c]) for c in configurations) if len(seeds) > 1 else 0.0
        separation = (max(means) - min(means)) / within if within else float("inf")
        table = [[values[c][i] for c in configurations] for i in range(len(seeds))]
        concordance = kendall_w(table)
        print(f"  separation {separation:.2f} (spread of means / mean std over seeds); Kendall's W {concordance:.2f}")


if __name__ == "__main__":
    main()
