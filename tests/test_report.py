"""The sweep report on a fixture sweep: finished, failed, running and dead jobs."""

import csv
import io
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml
from rich.console import Console

from tetris_train.report import report


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
    make_job(sweep, [common, "agent.gamma=0.5", "seed=1"], alive, [(1000, 5.0)])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    make_job(sweep, [common, "agent.gamma=0.5", "seed=2"], {**alive, "pid": dead.pid})
    (sweep / "multirun.yaml").write_text("{}")
    return sweep


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
    assert "150.0 ± 70.7" in text and "every job: schedule=smoke" in text
    assert "failed: ValueError: boom" in text

    rows = list(csv.DictReader(open(sweep / "report.csv")))
    assert len(rows) == 6 and rows[0]["configuration"] == "agent.gamma=0.99"
    assert {r["status"] for r in rows} == {"finished", "failed", "running", "stopped"}
    configs = list(csv.DictReader(open(sweep / "report_configs.csv")))
    assert [c["configuration"] for c in configs] == [g["configuration"] for g in groups]
    markdown = (sweep / "report.md").read_text()
    assert "| agent.gamma=0.9 | 2 | 2 finished | 150.0 ± 70.7 |" in markdown
    assert (sweep / "learning_curves.png").stat().st_size > 10_000


def test_report_command_line(sweep, tmp_path):
    out = tmp_path / "elsewhere"
    done = subprocess.run(
        [sys.executable, "-m", "tetris_train.report", str(sweep), "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"report.csv", "report_configs.csv", "report.md", "learning_curves.png"}
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
