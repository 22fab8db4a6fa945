"""``tetris-train-report <sweep folder>``: tables of a sweep's configurations and jobs, best first.

Jobs whose overrides differ only by ``seed`` form one configuration, reported as mean ± std over its
seeds. Prints the tables and writes ``report.csv`` (one row per job), ``report_configs.csv`` (one row
per configuration), ``report.md`` (both tables) and ``learning_curves.png`` (evaluation lines against
timesteps, one curve per configuration), then the paths it wrote. Works on a sweep that is still
running or partly failed: a job is reported with what its folder holds so far.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .objective import SOURCES, objective_of
from .run_folder import folder_in_use, read_summary
from .sweeps import shorten_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console
    from rich.table import Table

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
    "timing",
    "error",
)
STATISTICS = ("objective", "best_mean_lines", "final_mean_lines", "steps_per_s", "wall_seconds")
# the stop reason a status has unless something else stopped the run: not repeated in the tables
USUAL_STOP = {"finished": "max_timesteps", "interrupted": "interrupted"}
LAST_STRETCH = "last stretch"  # timing of a resumed job whose summary has no totals over its stretches
LAST_STRETCH_MARK = "*"
LABELLED_CURVES = 10  # configurations named in the learning curves' legend (the best ones)


@dataclass
class Job:
    folder: Path
    overrides: list[str]
    summary: dict[str, Any]
    evaluations: list[dict[str, Any]]
    row: dict[str, Any] = field(default_factory=dict)

    varying: tuple[str, ...] = ()  # the override keys whose values differ between the sweep's jobs

    @property
    def objective(self) -> str:
        """The run's schedule.objective, from its config.yaml (best where it is unreadable)."""
        import yaml

        try:
            config = yaml.safe_load((self.folder / "config.yaml").read_text())
            kind = config["schedule"].get("objective", "best")
        except (OSError, yaml.YAMLError, TypeError, KeyError, AttributeError):
            return "best"
        return kind if kind in SOURCES else "best"

    @property
    def configuration_overrides(self) -> list[str]:
        """The overrides that vary in the sweep, but the seed: jobs that share them differ only by seed."""
        return [o for o in self.overrides if key_of(o) in self.varying and key_of(o) != SEED_KEY]

    @property
    def configuration(self) -> str:
        return " ".join(self.configuration_overrides) or "(all alike)"

    def label(self, prefix: str = "") -> str:
        """The configuration for reading: long decimals to 4 significant digits, ``prefix`` left out
        of every key that starts with it."""
        kept = [shorten_number(without_prefix(o, prefix)) for o in self.configuration_overrides]
        return " ".join(kept) or "(all alike)"


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def without_prefix(override: str, prefix: str) -> str:
    """``agent.gamma=0.9`` without ``agent.``: ``gamma=0.9`` (a leading ``+`` or ``~`` kept)."""
    body = override.lstrip("+~")
    sign = override[: len(override) - len(body)]
    return sign + body[len(prefix) :] if prefix and key_of(body).startswith(prefix) else override


def shared_prefix(overrides: list[str]) -> str:
    """The dotted prefix all these overrides' keys start with (``agent.``), or ``""``: printed once
    above the configuration column rather than in each of its rows."""
    groups = [key_of(o).split(".")[:-1] for o in overrides]
    shared: list[str] = []
    for parts in zip(*groups):
        if len(set(parts)) > 1:
            break
        shared.append(parts[0])
    return "".join(f"{part}." for part in shared) if groups else ""


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
    """finished | interrupted | failed | pruned | running | stopped (died without a word) | pending;
    any other status as its summary writes it, ``unknown`` for one that is not a word."""
    status = job.summary.get("status")
    if status == "running":
        return "running" if folder_in_use(job.folder) else "stopped"
    if status is None:
        return "pending"
    return status.strip() if isinstance(status, str) and status.strip() else "unknown"


def timing_of(summary: dict[str, Any]) -> tuple[Any, Any, Optional[str]]:
    """(steps/s, wall seconds, what they cover) of a job: over every stretch of a resumed job where its
    summary has the totals (``steps_per_s_total``, ``wall_seconds_total``), else of its last stretch."""
    steps_per_s, wall = summary.get("steps_per_s_total"), summary.get("wall_seconds_total")
    if is_number(steps_per_s) or is_number(wall):
        return steps_per_s, wall, "whole run"
    steps_per_s, wall = summary.get("steps_per_s"), summary.get("wall_seconds")
    if steps_per_s is None and wall is None:
        return None, None, None
    return steps_per_s, wall, LAST_STRETCH if summary.get("resumed_from") else "whole run"


def job_row(job: Job) -> dict[str, Any]:
    summary, evaluations = job.summary, job.evaluations
    best = as_dict(summary.get("best")) or max(evaluations, key=lambda e: e["mean_lines"], default={})
    final = as_dict(summary.get("final_evaluation"))
    seed = next((o.split("=", 1)[1] for o in job.overrides if o.split("=", 1)[0] == SEED_KEY), summary.get("seed"))
    objective = summary.get("objective")
    if objective is None and evaluations and job_status(job) != "interrupted":
        objective = objective_of(evaluations, job.objective)  # so far, for a job still running
    steps_per_s, wall_seconds, timing = timing_of(summary)
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
        "steps_per_s": steps_per_s,
        "wall_seconds": wall_seconds,
        "timing": timing,
        "error": summary.get("error"),
    }


def configurations(jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per configuration: mean and std over its jobs, best objective first."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.configuration, []).append(job)
    rows = []
    for name, members in groups.items():
        row: dict[str, Any] = {"configuration": name, "label": members[0].label(), "jobs": len(members)}
        row["overrides"] = members[0].configuration_overrides
        row["seeds"] = " ".join(str(j.row["seed"]) for j in members)
        statuses = [j.row["status"] for j in members]
        row["status"] = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
        for key in STATISTICS:
            values = [float(j.row[key]) for j in members if is_number(j.row[key])]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        row["timing"] = LAST_STRETCH if any(j.row["timing"] == LAST_STRETCH for j in members) else None
        rows.append(row)
    rows.sort(key=lambda r: -r["objective"] if r["objective"] is not None else math.inf)
    return rows


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def fmt_lines(value: Any, std: Any = None) -> str:
    """Lines per game: one decimal below 100, none from 100 on (where it is noise) or for a count;
    ``± std`` alike."""
    if not is_number(value):
        return fmt(value)
    digits = 1 if abs(value) < 100 and not isinstance(value, int) else 0
    text = f"{value:,.{digits}f}"
    return f"{text} ± {std:,.{digits}f}" if is_number(std) else text


def fmt_rate(value: Any) -> str:
    return f"{value:,.0f}" if is_number(value) else fmt(value)


def fmt_duration(seconds: Any) -> str:
    """``h:mm:ss``, as wall times of hours read at a glance."""
    if not is_number(seconds):
        return fmt(seconds)
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def timing_cells(row: dict[str, Any]) -> list[str]:
    """steps/s and wall time, marked where they cover only a resumed job's last stretch."""
    mark = LAST_STRETCH_MARK if row["timing"] == LAST_STRETCH else ""
    return [fmt_rate(row["steps_per_s"]) + mark, fmt_duration(row["wall_seconds"]) + mark]


def status_text(row: dict[str, Any]) -> str:
    """The status, with the stop reason where it is not the usual one and the error of a failure."""
    text, reason = row["status"], row["stop_reason"]
    if reason is not None and str(reason) not in (USUAL_STOP.get(text), text):
        text += f" ({reason})"
    return text + (f": {row['error']}" if row["error"] else "")


def objective_column(jobs: list[Job]) -> str:
    """``best`` where every job's objective is its best evaluation (the default), else ``objective``."""
    sources = {j.summary.get("objective_source") for j in jobs} - {None}
    return "best" if sources <= {SOURCES["best"]} else "objective"


def objective_legend(jobs: list[Job]) -> str:
    column = objective_column(jobs)
    if column == "best":
        return "best: mean lines of the best evaluation (the objective)"
    sources = sorted({str(j.summary.get("objective_source")) for j in jobs if j.summary.get("objective_source")})
    return f"objective: {' / '.join(sources)} (schedule.objective), in mean lines"


def search_results(sweep: Path) -> Optional[str]:
    """The Optuna search's outcome from ``optimization_results.yaml``: its best trial and the
    command that trains that configuration again; None for a sweep without one."""
    import yaml

    try:
        results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(results, dict) or "best_value" not in results:
        return None
    counts = as_dict(results.get("trials"))
    tally = ", ".join(f"{counts[k]} {k}" for k in ("complete", "pruned", "failed") if counts.get(k))
    text = f"search: best trial {results.get('best_trial', '?')}, objective {fmt_lines(results['best_value'])}"
    text += f" ({tally})" if tally else ""
    if results.get("command"):
        text += f"; to train it again: {results['command']}"
    return text


def config_header(prefix: str) -> str:
    return f"{prefix}*" if prefix else "config"


def config_table(
    rows: list[dict[str, Any]], prefix: str = "", objective: str = "best"
) -> tuple[list[str], list[list[str]]]:
    header = [config_header(prefix), "status", objective, "final", "steps/s", "wall"]
    body = [
        [
            " ".join(shorten_number(without_prefix(o, prefix)) for o in r["overrides"]) or r["label"],
            r["status"],
            fmt_lines(r["objective"], r["objective_std"]),
            fmt_lines(r["final_mean_lines"], r["final_mean_lines_std"]),
            *timing_cells(r),
        ]
        for r in rows
    ]
    return header, body


def job_table(jobs: list[Job], order: list[str], prefix: str = "") -> tuple[list[str], list[list[str]]]:
    header = [config_header(prefix), "seed", "status", objective_column(jobs), "final (min-max)", "steps/s", "wall"]
    ranked = sorted(jobs, key=lambda j: (order.index(j.configuration), str(j.row["seed"])))
    body = []
    for job in ranked:
        r = job.row
        final = fmt_lines(r["final_mean_lines"])
        if r["final_min_lines"] is not None:
            final += f" ({fmt_lines(r['final_min_lines'])}-{fmt_lines(r['final_max_lines'])})"
        cells = [job.label(prefix), fmt(r["seed"]), status_text(r), fmt_lines(r["objective"]), final]
        body.append(cells + timing_cells(r))
    return header, body


# columns whose cells may wrap (at spaces) on a narrow terminal; the others never wrap
WRAPPING = {"status", "final (min-max)"}
TEXT_COLUMNS = {"status"}  # left-aligned, as the configuration; the rest are figures, right-aligned
OVERRIDE_START = re.compile(r" (?=[+~]?[\w.-]+=)")  # the space before each override of a configuration


def rich_table(title: str, header: list[str], body: list[list[str]], width: Optional[int]) -> Table:
    """A light table (a rule under the header, no borders), one line per row where it fits in
    ``width`` columns (None: any width, for output that is not a terminal, where nothing wraps).

    Where it does not fit, the configuration column shows one override per line and statuses wrap
    between words, so that a typical sweep's tables fit 80 columns without a word broken.
    """
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table

    def build(narrow: bool) -> Table:
        table = Table(
            title=title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        for i, name in enumerate(header):
            wraps = narrow and name in WRAPPING  # the configuration is already one override per line
            justify = "left" if i == 0 or name in TEXT_COLUMNS else "right"
            table.add_column(name, no_wrap=not wraps, overflow="fold", justify=justify)
        for cells in body:
            first = OVERRIDE_START.sub("\n", cells[0]) if narrow else cells[0]
            table.add_row(escape(first), *(escape(cell) for cell in cells[1:]))
        return table

    table = build(narrow=False)
    measuring = Console(width=1_000_000)
    natural = max(Measurement.get(measuring, measuring.options, table).maximum, len(title))
    if width is None:
        table.width = natural  # wider than the console: printed uncropped
    elif natural > width:
        table = build(narrow=True)
    return table


def markdown(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, body)]) + "\n"


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def curves_figure(jobs: list[Job], order: list[str]) -> Optional[Figure]:
    """Evaluation mean lines against timesteps per configuration: mean over its jobs, ± std band;
    None where no job has an evaluation yet. Labels leave out the prefix all overrides share."""
    import numpy as np

    from .plots import legend_below, legend_columns, new_figure, style_lines_axes

    curves = []
    for name in order:
        by_step: dict[int, list[float]] = {}
        members = [j for j in jobs if j.configuration == name]
        for job in members:
            for entry in job.evaluations:
                by_step.setdefault(int(entry["timesteps"]), []).append(float(entry["mean_lines"]))
        if by_step:
            steps = sorted(by_step)
            mean = np.array([np.mean(by_step[s]) for s in steps])
            std = np.array([np.std(by_step[s]) for s in steps])
            curves.append((members[0], steps, mean, std))
    if not curves:
        return None
    prefix = shared_prefix([o for job, *_ in curves for o in job.configuration_overrides])
    labels = [job.label(prefix) for job, *_ in curves]
    labels = [label if len(label) <= 80 else label[:77] + "..." for label in labels]
    named = labels[:LABELLED_CURVES]  # the best configurations; the others are drawn thin and grey
    rows = math.ceil((len(named) + (len(labels) > len(named))) / legend_columns(named, 9))
    fig = new_figure(9, 4.5 + 0.25 * rows)
    ax = fig.add_subplot()
    for n, (label, (job, steps, mean, std)) in enumerate(zip(labels, curves)):
        style = "--" if job.row["status"] == "pruned" else "-"
        if n >= LABELLED_CURVES:
            others = f"{len(labels) - n} more configurations" if n == LABELLED_CURVES else None
            ax.plot(steps, mean, style, color="0.6", linewidth=0.8, label=others)
            continue
        (line,) = ax.plot(steps, mean, "o" + style, markersize=3, label=label)
        ax.fill_between(steps, np.maximum(mean - std, 0), mean + std, color=line.get_color(), alpha=0.15)
    style_lines_axes(ax, [float(v) for _, _, mean, std in curves for v in mean + std])
    ax.set_ylabel("evaluation mean lines")
    pruned = " (dashed: pruned trials)" if any(job.row["status"] == "pruned" for job, *_ in curves) else ""
    ax.set_title(f"learning curves by configuration, best first (mean ± std over seeds){pruned}")
    legend_below(fig, ax, title=f"{prefix}*" if prefix else None)
    return fig


def plot_curves(jobs: list[Job], order: list[str], out: Path) -> Optional[Path]:
    """Draw :func:`curves_figure` into ``out``; None (and no file) where there is nothing to draw."""
    fig = curves_figure(jobs, order)
    if fig is None:
        return None
    fig.savefig(out)
    return out


def report(sweep: Path, out: Optional[Path] = None, console: Optional[Console] = None) -> dict[str, Any]:
    """Build the report of ``sweep`` into ``out`` (the sweep folder by default); returns what it
    found and the files it wrote (``files``)."""
    from rich.console import Console
    from rich.text import Text

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
    common = " ".join(common_overrides(jobs)) or "none"
    prefix = shared_prefix([o for g in groups for o in g["overrides"]])

    console = console or Console()
    width = console.width if console.is_terminal else None

    def say(text: str) -> None:  # a line that the terminal may wrap, never broken by rich
        console.print(Text(text), soft_wrap=True)

    say(f"{sweep}: {len(jobs)} jobs, {len(groups)} configurations")
    say(f"every job: {common}")
    tables = {
        "configurations, best first (lines per game: mean ± std over seeds)": config_table(
            groups, prefix, objective_column(jobs)
        ),
        "jobs": job_table(jobs, order, prefix),
    }
    for title, (header, body) in tables.items():
        console.print(rich_table(title, header, body, width), crop=width is not None)
    say(f"{objective_legend(jobs)}; final: of the final evaluation")
    search = search_results(sweep)
    if search is not None:
        say(search)
    if any(j.row["timing"] == LAST_STRETCH for j in jobs):
        say(f"{LAST_STRETCH_MARK} resumed job: steps/s and wall time of its last stretch only")

    files = [out / "report.csv", out / "report_configs.csv", out / "report.md"]
    write_csv(files[0], [j.row for j in sorted(jobs, key=lambda j: order.index(j.configuration))], list(JOB_COLUMNS))
    config_columns = ["configuration", "jobs", "seeds", "status"] + [c for k in STATISTICS for c in (k, f"{k}_std")]
    write_csv(files[1], groups, config_columns + ["timing"])
    text = (
        f"# Sweep report: {sweep}\n\nBest configuration first; {objective_legend(jobs)}. "
        f"Overrides of every job: `{common}`.\n"
    )
    if search is not None:
        text += f"\n{search}\n"
    text += "\n## Configurations (mean ± std over seeds)\n\n" + markdown(
        *config_table(groups, objective=objective_column(jobs))
    )
    text += "\n## Jobs\n\n" + markdown(*job_table(jobs, order))
    files[2].write_text(text)
    curves = plot_curves(jobs, order, out / "learning_curves.png")
    if curves is not None:
        files.append(curves)
    say("wrote:")
    for path in files:
        say(f"  {path}")
    return {"jobs": [j.row for j in jobs], "configurations": groups, "curves": curves, "out": out, "files": files}


def run_command(argv: Optional[list[str]] = None) -> int:
    """The report command (``tetris-train-report``, ``python -m tetris_train.report``): exit status
    0, or 2 with one line on stderr for a folder that is missing or holds no jobs."""
    invoked = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(
        prog=invoked if invoked.startswith("tetris-train-report") else "python -m tetris_train.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep", type=Path, help="a sweep folder (outputs/sweeps/<date>/<time>)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the files (default: the sweep folder)")
    args = parser.parse_args(argv)
    try:
        report(args.sweep, args.out)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry point; output cut short by a closed pipe (``| head``) ends it quietly."""
    from .cli import closed_pipe_exits

    with closed_pipe_exits():
        return run_command(argv)


if __name__ == "__main__":
    sys.exit(main())
