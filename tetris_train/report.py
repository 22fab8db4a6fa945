"""``python -m tetris_train.report <sweep folder>``: tables of a sweep's configurations and jobs, best first.

Jobs whose overrides differ only by ``seed`` form one configuration, reported as mean ± std over its
seeds. Prints the tables and writes ``report.csv`` (one row per job), ``report_configs.csv`` (one row
per configuration), ``report.md`` (both tables) and ``learning_curves.png`` (evaluation lines against
timesteps, one curve per configuration). Works on a sweep that is still running or partly failed:
a job is reported with what its folder holds so far.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .run_folder import process_alive, read_summary
from .sweeps import shorten_number

SEED_KEY = "seed"
JOB_COLUMNS = (
    "job",
    "configuration",
    "seed",
    "status",
    "stop_reason",
    "objective",
    "best_mean_lines",
    "final_mean_lines",
    "final_min_lines",
    "final_max_lines",
    "training_mean_lines",
    "timesteps",
    "steps_per_s",
    "wall_seconds",
    "error",
)
STATISTICS = ("objective", "best_mean_lines", "final_mean_lines", "steps_per_s", "wall_seconds")


@dataclass
class Job:
    folder: Path
    overrides: list[str]
    summary: dict[str, Any]
    evaluations: list[dict[str, Any]]
    row: dict[str, Any] = field(default_factory=dict)

    varying: tuple[str, ...] = ()  # the override keys whose values differ between the sweep's jobs

    @property
    def configuration(self) -> str:
        """The overrides that vary in the sweep, but the seed: jobs that share it differ only by seed."""
        kept = [o for o in self.overrides if key_of(o) in self.varying and key_of(o) != SEED_KEY]
        return " ".join(kept) or "(all alike)"

    @property
    def label(self) -> str:
        """The configuration for reading: long decimals to 4 significant digits."""
        return " ".join(shorten_number(o) for o in self.configuration.split(" "))


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def common_overrides(jobs: list[Job]) -> list[str]:
    """Overrides every job of the sweep has, with the same value (jobs without a record aside)."""
    known = [job for job in jobs if job.overrides]
    shared = set(known[0].overrides) if known else set()
    for job in known[1:]:
        shared &= set(job.overrides)
    return [o for o in known[0].overrides if o in shared] if known else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def find_jobs(sweep: Path) -> list[Job]:
    """Every job folder of a sweep: a folder holding Hydra's record or a run's config."""
    jobs = []
    for folder in sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not ((folder / ".hydra").is_dir() or (folder / "config.yaml").is_file()):
            continue
        jobs.append(Job(folder, read_overrides(folder), read_summary(folder), read_evaluations(folder)))
    common = set(common_overrides(jobs))
    varying = tuple(dict.fromkeys(key_of(o) for job in jobs for o in job.overrides if o not in common))
    for job in jobs:
        job.varying = varying
        job.row = job_row(job)
    return jobs


def read_overrides(folder: Path) -> list[str]:
    try:
        import yaml

        return [str(o) for o in yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or []]
    except (OSError, ValueError, TypeError):
        return []


def read_evaluations(folder: Path) -> list[dict[str, Any]]:
    try:
        lines = (folder / "evaluations.jsonl").read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(entry, dict) and is_number(entry.get("timesteps")) and is_number(entry.get("mean_lines")):
            entries.append(entry)
    return entries


def job_status(job: Job) -> str:
    """finished | interrupted | failed | running | stopped (died without a word) | pending."""
    status = job.summary.get("status")
    if status == "running":
        return "running" if process_alive(job.summary) else "stopped"
    return status or "pending"


def job_row(job: Job) -> dict[str, Any]:
    summary, evaluations = job.summary, job.evaluations
    best = as_dict(summary.get("best")) or max(evaluations, key=lambda e: e["mean_lines"], default={})
    final = as_dict(summary.get("final_evaluation"))
    seed = next((o.split("=", 1)[1] for o in job.overrides if o.split("=", 1)[0] == SEED_KEY), summary.get("seed"))
    objective = summary.get("objective")
    if objective is None and best:
        objective = best.get("mean_lines")  # so far, for a job still running
    return {
        "job": job.folder.name,
        "configuration": job.configuration,
        "seed": seed,
        "status": job_status(job),
        "stop_reason": summary.get("stop_reason"),
        "objective": objective,
        "best_mean_lines": best.get("mean_lines"),
        "final_mean_lines": final.get("mean_lines"),
        "final_min_lines": final.get("min_lines"),
        "final_max_lines": final.get("max_lines"),
        "training_mean_lines": as_dict(summary.get("training_lines")).get("recent_mean"),
        "timesteps": summary.get("timesteps", evaluations[-1]["timesteps"] if evaluations else None),
        "steps_per_s": summary.get("steps_per_s"),
        "wall_seconds": summary.get("wall_seconds"),
        "error": summary.get("error"),
    }


def configurations(jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per configuration: mean and std over its jobs, best objective first."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.configuration, []).append(job)
    rows = []
    for name, members in groups.items():
        row: dict[str, Any] = {"configuration": name, "label": members[0].label, "jobs": len(members)}
        row["seeds"] = " ".join(str(j.row["seed"]) for j in members)
        statuses = [j.row["status"] for j in members]
        row["status"] = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
        for key in STATISTICS:
            values = [float(j.row[key]) for j in members if is_number(j.row[key])]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    rows.sort(key=lambda r: -r["objective"] if r["objective"] is not None else math.inf)
    return rows


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, std: Any = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.1f}"
        return f"{text} ± {std:,.1f}" if std is not None else text
    return str(value)


def config_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["configuration", "jobs", "status", "objective", "best lines", "final lines", "steps/s", "wall s"]
    body = [
        [
            r["label"],
            str(r["jobs"]),
            r["status"],
            fmt(r["objective"], r["objective_std"]),
            fmt(r["best_mean_lines"], r["best_mean_lines_std"]),
            fmt(r["final_mean_lines"], r["final_mean_lines_std"]),
            fmt(r["steps_per_s"]),
            fmt(r["wall_seconds"]),
        ]
        for r in rows
    ]
    return header, body


def job_table(jobs: list[Job], order: list[str]) -> tuple[list[str], list[list[str]]]:
    header = [
        "configuration",
        "seed",
        "status",
        "stop reason",
        "objective",
        "final lines (min-max)",
        "steps/s",
        "wall s",
    ]
    ranked = sorted(jobs, key=lambda j: (order.index(j.configuration), str(j.row["seed"])))
    body = []
    for job in ranked:
        r = job.row
        final = fmt(r["final_mean_lines"])
        if r["final_min_lines"] is not None:
            final += f" ({r['final_min_lines']}-{r['final_max_lines']})"
        status = r["status"] + (f": {r['error']}" if r["error"] else "")
        body.append(
            [job.label, fmt(r["seed"]), status, fmt(r["stop_reason"]), fmt(r["objective"]), final]
            + [fmt(r["steps_per_s"]), fmt(r["wall_seconds"])]
        )
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, body)]) + "\n"


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(jobs: list[Job], order: list[str], out: Path) -> Optional[Path]:
    """Evaluation mean lines against timesteps per configuration: mean over its jobs, ± std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    for name in order:
        by_step: dict[int, list[float]] = {}
        members = [j for j in jobs if j.configuration == name]
        label = members[0].label if members else name
        for job in members:
            for entry in job.evaluations:
                by_step.setdefault(int(entry["timesteps"]), []).append(float(entry["mean_lines"]))
        if not by_step:
            continue
        steps = sorted(by_step)
        mean = np.array([np.mean(by_step[s]) for s in steps])
        std = np.array([np.std(by_step[s]) for s in steps])
        (line,) = ax.plot(steps, mean, "o-", markersize=3, label=label if len(label) <= 80 else label[:77] + "...")
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    if not ax.get_legend_handles_labels()[0]:
        plt.close(fig)
        return None
    ax.set_xlabel("timesteps")
    ax.set_ylabel("evaluation mean lines")
    ax.set_yscale("symlog", linthresh=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    ax.set_title("learning curves by configuration (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def report(sweep: Path, out: Optional[Path] = None, console: Any = None) -> dict[str, Any]:
    """Build the report of ``sweep`` into ``out`` (the sweep folder by default); returns what it wrote."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    sweep = Path(sweep)
    if not sweep.is_dir():
        raise FileNotFoundError(f"{sweep}: no such folder")
    jobs = find_jobs(sweep)
    if not jobs:
        raise FileNotFoundError(
            f"{sweep}: no job folders in it (a sweep folder holds one folder per job, each with .hydra/ or config.yaml)"
        )
    out = Path(out) if out is not None else sweep
    out.mkdir(parents=True, exist_ok=True)
    groups = configurations(jobs)
    order = [g["configuration"] for g in groups]
    tables = {"configurations": config_table(groups), "jobs": job_table(jobs, order)}
    common = " ".join(common_overrides(jobs)) or "none"

    console = console or Console()
    for title, (header, body) in tables.items():
        table = Table(title=f"{sweep}: {title}", caption=f"every job: {common}", title_justify="left")
        for name in header:
            table.add_column(name, overflow="fold")
        for cells in body:
            table.add_row(*(escape(cell) for cell in cells))
        console.print(table)

    write_csv(
        out / "report.csv", [j.row for j in sorted(jobs, key=lambda j: order.index(j.configuration))], list(JOB_COLUMNS)
    )
    config_columns = ["configuration", "jobs", "seeds", "status"] + [c for k in STATISTICS for c in (k, f"{k}_std")]
    write_csv(out / "report_configs.csv", groups, config_columns)
    text = (
        f"# Sweep report: {sweep}\n\nBest configuration first; objective = mean lines of each run's best "
        f"evaluation. Overrides of every job: `{common}`.\n"
    )
    text += "\n## Configurations (mean ± std over seeds)\n\n" + markdown(*tables["configurations"])
    text += "\n## Jobs\n\n" + markdown(*tables["jobs"])
    (out / "report.md").write_text(text)
    curves = plot_curves(jobs, order, out / "learning_curves.png")
    return {"jobs": [j.row for j in jobs], "configurations": groups, "curves": curves, "out": out}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tetris_train.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep", type=Path, help="a sweep folder (outputs/sweeps/<date>/<time>)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the files (default: the sweep folder)")
    args = parser.parse_args(argv)
    try:
        report(args.sweep, args.out)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
