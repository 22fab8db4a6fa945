"""The sweep report on fixture sweeps (finished, failed, running, dead, pruned and resumed jobs) and the
learning-curve plots."""

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from tetris_train.report import main, report
from tetris_train.run_folder import RunFolderLock


def make_job(sweep, overrides, summary=None, evaluations=()):
    folder = sweep / ",".join(sorted(overrides))
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    lines = [json.dumps({"timesteps": step, "mean_lines": lines}) for step, lines in evaluations]
    (folder / "evaluations.jsonl").write_text("\n".join(lines) + "\n" + ('{"timesteps": 9' if lines else ""))
    return folder


def finished(objective, final, steps_per_s=1000.0):
    return {
        "status": "finished",
        "stop_reason": "max_timesteps",
        "objective": objective,
        "best": {"mean_lines": objective, "timesteps": 2000},
        "final_evaluation": {"mean_lines": final, "min_lines": 0, "max_lines": 2 * final},
        "timesteps": 2000,
        "steps_per_s": steps_per_s,
        "wall_seconds": 10.0,
    }


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "sweep"
    common = "schedule=smoke"
    make_job(sweep, [common, "agent.gamma=0.9", "seed=0"], finished(100.0, 90.0), [(1000, 50.0), (2000, 100.0)])
    make_job(sweep, [common, "agent.gamma=0.9", "seed=1"], finished(200.0, 150.0), [(1000, 70.0), (2000, 200.0)])
    make_job(sweep, [common, "agent.gamma=0.99", "seed=0"], finished(300.0, 300.0), [(1000, 300.0)])
    make_job(sweep, [common, "agent.gamma=0.5", "seed=0"], {"status": "failed", "error": "ValueError: boom"})
    alive = {"status": "running", "host": socket.gethostname(), "pid": os.getpid()}
    running = RunFolderLock(make_job(sweep, [common, "agent.gamma=0.5", "seed=1"], alive, [(1000, 5.0)]))
    running.acquire(wait=False)  # as the process training it holds it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stopped = make_job(sweep, [common, "agent.gamma=0.5", "seed=2"], {**alive, "pid": dead.pid})
    dead_lock = RunFolderLock(stopped)  # taken by a process that died: let go with it
    dead_lock.acquire(wait=False)
    dead_lock.release()
    (sweep / "multirun.yaml").write_text("{}")
    yield sweep
    running.release()


def test_report_groups_seeds_ranks_configurations_and_writes_its_files(sweep, tmp_path):
    out = io.StringIO()
    result = report(sweep, console=Console(file=out, width=200))
    text = out.getvalue()

    groups = result["configurations"]
    assert [g["configuration"] for g in groups] == ["agent.gamma=0.99", "agent.gamma=0.9", "agent.gamma=0.5"]
    assert groups[1]["jobs"] == 2 and groups[1]["objective"] == 150.0
    assert groups[1]["objective_std"] == pytest.approx(70.71, abs=0.01)
    assert groups[2]["status"] == "1 failed, 1 running, 1 stopped"
    assert groups[2]["objective"] == 5.0  # the running job's best evaluation so far
    assert "150 ± 71" in text and "every job: schedule=smoke" in text
    assert "failed: ValueError: boom" in text

    rows = list(csv.DictReader(open(sweep / "report.csv")))
    assert len(rows) == 6 and rows[0]["configuration"] == "agent.gamma=0.99"
    assert {r["status"] for r in rows} == {"finished", "failed", "running", "stopped"}
    configs = list(csv.DictReader(open(sweep / "report_configs.csv")))
    assert [c["configuration"] for c in configs] == [g["configuration"] for g in groups]
    markdown = (sweep / "report.md").read_text()
    assert "| agent.gamma=0.9 | 2 finished | 150 ± 71 |" in markdown
    assert (sweep / "learning_curves.png").stat().st_size > 10_000


def test_report_command_line(sweep, tmp_path):
    out = tmp_path / "elsewhere"
    done = subprocess.run(
        [sys.executable, "-m", "tetris_train.report", str(sweep), "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    written = {"report.csv", "report_configs.csv", "report.md", "learning_curves.png"}
    assert {p.name for p in out.iterdir()} == written
    # it names every file it wrote, last, one whole path a line (the output is a pipe here)
    tail = done.stdout.splitlines()[-5:]
    assert tail[0] == "wrote:" and sorted(tail[1:]) == sorted(f"  {out / name}" for name in written)
    missing = subprocess.run(
        [sys.executable, "-m", "tetris_train.report", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {tmp_path / 'nope'}: no such folder"


def test_report_survives_odd_job_folders(tmp_path):
    sweep = tmp_path / "sweep"
    odd = make_job(sweep, ["seed=0"], {"status": "failed", "error": "boom [/x] [bold]", "best": [1]})
    (odd / "evaluations.jsonl").write_text('{"timesteps": 1000, "mean_lines": null}\n{"mean_lines": 3}\n[]\n')
    make_job(sweep, ["seed=1"], finished(10.0, 10.0), [(1000, 10.0)])
    (sweep / "no_record").mkdir()
    (sweep / "no_record" / "config.yaml").write_text("seed: 2\n")
    out = io.StringIO()
    result = report(sweep, console=Console(file=out, width=200))
    assert "boom [/x] [bold]" in out.getvalue()
    assert len(result["jobs"]) == 3 and [g["objective"] for g in result["configurations"]] == [10.0]


@pytest.fixture
def wide_sweep(tmp_path):
    """Two hyperparameters of agent.* by two seeds, a failed job and an aborted one."""
    sweep = tmp_path / "sweep"
    common = "schedule.max_timesteps=20000"
    for rate in ("0.0001", "0.000316227766"):
        for gamma in ("0.9", "0.99"):
            for seed in (0, 1):
                make_job(
                    sweep,
                    [common, f"agent.learning_rate={rate}", f"agent.gamma={gamma}", f"seed={seed}"],
                    finished(1234.0 + 2 * seed, 1200.0),
                    [(1000, 10.0), (2000, 1234.0)],
                )
    failed = {"status": "failed", "error": "ValueError: learning rate out of range"}
    make_job(sweep, [common, "agent.learning_rate=0.1", "agent.gamma=0.9", "seed=0"], failed)
    aborted = {"status": "interrupted", "stop_reason": "aborted", "timesteps": 1000}
    make_job(sweep, [common, "agent.learning_rate=0.1", "agent.gamma=0.9", "seed=1"], aborted, [(1000, 3.0)])
    return sweep


WORDS = (
    "learning_rate=0.0003162",
    "learning_rate=0.0001",
    "gamma=0.99",
    "finished",
    "interrupted",
    "(aborted)",
    "ValueError:",
    "1,235 ± 1",
    "steps/s",
    "status",
)


def table_lines(text):
    """The tables' lines: after the heading lines (the sweep folder, what every job shares), before
    the notes; those the terminal may wrap itself, as any long line of text."""
    return text.split("best: mean lines")[0].splitlines()[2:]


def test_tables_fit_80_columns_of_a_terminal_without_breaking_words(wide_sweep):
    out = io.StringIO()
    report(wide_sweep, console=Console(file=out, width=80, force_terminal=True, color_system=None))
    text = out.getvalue()
    assert all(len(line) <= 80 for line in table_lines(text)), text
    for word in WORDS:
        assert word in text, f"{word!r} broken or missing:\n{text}"
    # "agent." is said once, above the configuration column, not in every row
    assert "agent.*" in text and "agent.learning_rate" not in text
    assert "every job: schedule.max_timesteps=20000" in text


def test_piped_tables_keep_each_row_on_one_line(wide_sweep):
    out = io.StringIO()  # not a terminal: rich would wrap at 80 columns
    report(wide_sweep, console=Console(file=out, width=80))
    rows = [line for line in table_lines(out.getvalue()) if "learning_rate=" in line]
    assert len(rows) == 5 + 10  # configurations, then jobs
    assert any(
        re.search(r"learning_rate=0\.0003162 gamma=0\.99 +1 +finished +1,236 +1,200 \(0-2,400\) +1,000 +0:00:10", row)
        for row in rows
    )
    assert any("interrupted (aborted)" in row for row in rows)
    assert any("failed: ValueError: learning rate out of range" in row for row in rows)


def test_pruned_and_unknown_statuses_are_shown_as_they_are(tmp_path):
    sweep = tmp_path / "sweep"
    pruned = {"status": "pruned", "stop_reason": "pruned", "objective": None, "timesteps": 1000}
    make_job(sweep, ["agent.gamma=0.9", "seed=0"], pruned, [(1000, 7.0)])
    make_job(sweep, ["agent.gamma=0.9", "seed=1"], finished(20.0, 20.0), [(1000, 20.0)])
    make_job(sweep, ["agent.gamma=0.5", "seed=0"], {"status": 3})
    make_job(sweep, ["agent.gamma=0.7", "seed=0"], {"status": "queued"})
    out = io.StringIO()
    result = report(sweep, console=Console(file=out, width=200))
    statuses = {row["job"]: row["status"] for row in result["jobs"]}
    assert sorted(statuses.values()) == ["finished", "pruned", "queued", "unknown"]
    assert result["configurations"][0]["status"] == "1 pruned, 1 finished"
    assert result["configurations"][0]["objective"] == 13.5  # the pruned job's best evaluation counts
    lines = out.getvalue().splitlines()
    assert any(re.search(r"gamma=0\.9 +0 +pruned +7\.0", line) for line in lines)  # "(pruned)" not repeated


def test_a_resumed_job_reports_its_whole_run_or_says_it_cannot(tmp_path):
    sweep = tmp_path / "sweep"
    stretch = {
        **finished(10.0, 10.0, steps_per_s=2000.0),
        "resumed_from": "x/checkpoints/step_1000",
        "wall_seconds": 60,
    }
    make_job(sweep, ["agent.gamma=0.9", "seed=0"], stretch)
    totals = {**stretch, "wall_seconds_total": 7265.0, "steps_per_s_total": 500.0}
    make_job(sweep, ["agent.gamma=0.5", "seed=0"], totals)
    out = io.StringIO()
    result = report(sweep, console=Console(file=out, width=200))
    rows = {row["configuration"]: row for row in result["jobs"]}
    assert rows["agent.gamma=0.5"]["wall_seconds"] == 7265.0 and rows["agent.gamma=0.5"]["steps_per_s"] == 500.0
    assert rows["agent.gamma=0.5"]["timing"] == "whole run"
    assert rows["agent.gamma=0.9"]["wall_seconds"] == 60 and rows["agent.gamma=0.9"]["timing"] == "last stretch"
    text = out.getvalue()
    assert re.search(r"gamma=0\.5 .* 500 +2:01:05", text) and re.search(r"gamma=0\.9 .* 2,000\* +0:01:00\*", text)
    assert "* resumed job: steps/s and wall time of its last stretch only" in text
    assert list(csv.DictReader(open(sweep / "report.csv")))[0]["timing"] in ("whole run", "last stretch")


def test_console_script_names_itself(sweep):
    script = Path(sys.executable).parent / "tetris-train-report"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: tetris-train-report"), done.stdout
    assert main([str(sweep)]) == 0


# -- plots: tick labels and legends, read from matplotlib's objects -------------------------------


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures saved to files while the test runs."""
    from matplotlib.figure import Figure

    saved, real = [], Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def check_plain_axes_and_outside_legend(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    # plain numbers from 0 up: no offset, no powers of ten, nothing below 0 for lines per game
    assert labels and all(float(label.replace(",", "")) >= 0 for label in labels), labels
    assert ax.yaxis.get_offset_text().get_text() == "" and ax.xaxis.get_offset_text().get_text() == ""
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1
    legends = [legend for legend in [*fig.legends, ax.get_legend()] if legend is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not box.overlaps(ax.get_window_extent(renderer))  # covers no data
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1  # and is not cut off


@pytest.mark.parametrize("lines", [(0.0, 0.0), (0.05, 0.1), (3.0, 52_000.0)])
def test_learning_curve_has_plain_ticks_and_a_legend_off_the_data(tmp_path, saved_figures, lines):
    from tetris_train.plots import plot_learning_curve

    metrics, evaluations = tmp_path / "metrics.csv", tmp_path / "evaluations.jsonl"
    metrics.write_text("time/total_timesteps,rollout/ep_lines_mean\n500000,0.5\n1000000,0.0\n")
    entries = [
        {"timesteps": (i + 1) * 500_000, "mean_lines": v, "min_lines": v, "max_lines": v} for i, v in enumerate(lines)
    ]
    evaluations.write_text("".join(json.dumps(e) + "\n" for e in entries))
    plot_learning_curve(metrics, evaluations, tmp_path / "curve.png")
    check_plain_axes_and_outside_legend(saved_figures[-1])


@pytest.mark.parametrize("lines", [(0.0, 0.0), (0.05, 0.1), (3.0, 52_000.0)])
def test_report_curves_have_plain_ticks_and_a_legend_off_the_data(tmp_path, saved_figures, lines):
    sweep = tmp_path / "sweep"
    for rate in ("0.0001", "0.000316227766"):
        for gamma in ("0.9", "0.99"):
            overrides = [f"agent.learning_rate={rate}", f"agent.gamma={gamma}", "seed=0"]
            make_job(sweep, overrides, finished(lines[-1], lines[-1]), [(1000, lines[0]), (2000, lines[-1])])
    report(sweep, console=Console(file=io.StringIO()))
    check_plain_axes_and_outside_legend(saved_figures[-1])
