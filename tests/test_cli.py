"""The entry point as a user runs it: python -m tetris_train in a subprocess, into tmp_path."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tetris_train.checkpoints import read_metadata

SMOKE = ["schedule=smoke", "schedule.tensorboard=true"]


def run_cli(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tetris_train", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def start_cli(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tetris_train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_smoke_run_writes_the_run_folder(tmp_path):
    result = run_cli(tmp_path, *SMOKE, "agent.learning_rate=3e-4")
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "outputs" / "runs").glob("*/*"))
    assert len(runs) == 1
    run = runs[0]
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "main.log",
        "checkpoints/final/model.zip",
        "checkpoints/final/replay/buffer.json",
        "checkpoints/step_0000001000/metadata.json",
    ):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["agent"]["learning_rate"] == 3e-4 and config["schedule"]["max_timesteps"] == 2000
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["stop_reason"] == "max_timesteps"
    assert summary["timesteps"] == 2000 and summary["steps_per_s"] > 0 and summary["wall_seconds"] > 0
    assert summary["objective"] == summary["best"]["mean_lines"] >= summary["final_evaluation"]["mean_lines"]
    assert summary["final_evaluation"]["episodes"] == 2
    for name in ("evaluations.jsonl", "learning_curve.png", "checkpoints/best/model.zip"):
        assert (run / name).exists(), name
    assert {"episodes", "recent_episodes"} <= set(summary["training_lines"])
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["time/total_timesteps"]) for r in rows] == [500, 1000, 1500, 2000]
    assert "rollout/exploration_rate" in rows[0] and "rollout/ep_lines_mean" in rows[0]
    assert float(rows[-1]["eval/mean_lines"]) == summary["final_evaluation"]["mean_lines"]
    assert rows[1]["eval/mean_lines"] != ""  # the evaluation at step 1000, in its own row
    assert read_metadata(run / "checkpoints" / "final")["stop_reason"] == "max_timesteps"


@pytest.mark.parametrize(
    "override, must_say",
    [
        ("agent.learning_rate=abc", ["agent.learning_rate=abc", "expected a number"]),
        ("agent.gamma=2", ["agent.gamma=2", "0 < gamma <= 1"]),
        ("agent.no_such_key=1", ["agent.no_such_key=1", "no such key", "learning_rate"]),
        ("schedule=no_such_option", ["schedule=no_such_option", "available", "smoke"]),
        ("env.width=2", ["env.width=2", "from 4 to 32"]),
        ("resume=nowhere", ["resume=nowhere", "no such file"]),
        ("hydra.job.chdirr=true", ["hydra.job.chdirr=true", "no such key in Hydra's settings"]),
        ("-m agent.gamma=interval(0.9,0.99)", ["INTERVAL_SWEEP", "hparams_search=dqn_optuna"]),
        ("agent.buffer_size=100", ["agent.buffer_size=100", "at least batch_size (128)"]),
        (
            "agent.exploration_initial_eps=0.5 agent.exploration_final_eps=0.9",
            ["agent.exploration_final_eps=0.9", "at most exploration_initial_eps"],
        ),
        ("agent.net_arch=[64,", ["agent.net_arch=[64,", "cannot parse"]),
        ("agent.gamma=2.0 --cfg job", ["agent.gamma=2.0", "0 < gamma <= 1"]),
        ("resume=nowhere agent.gamma=0.9", ["resume=nowhere", "no such file"]),
        ("-m schedule=smoke agent.gamma=0.9,2", ["agent.gamma=2 is invalid", "0 < gamma <= 1"]),
        ("-m schedule=smoke,fast", ["schedule=fast: no such option"]),
        ("hparams_search=dqn_optuna", ["hparams_search=dqn_optuna: a search runs as a multirun", "-m"]),
        ("-m --cfg job", ["Only one of --run, --multirun, --cfg"]),
        ("-m hparams_search=dqn_optuna hydra.sweeper.n_trials=0", ["hydra.sweeper.n_trials=0", "integer >= 1"]),
        ("-m hparams_search=dqn_optuna hydra/sweeper/pruner=gone", ["hydra/sweeper/pruner=gone", "median"]),
        (
            "-m hydra/launcher=slurm hydra.launcher.timeout_min=2 schedule=smoke seed=0,1",
            ["hydra.launcher.signal_delay_s=120", "timeout_min=2 (120 s)", "fewer seconds than timeout_min x 60"],
        ),
        (
            "-m hparams_search=dqn_optuna hydra/launcher=slurm hydra.launcher.timeout_min=1 schedule=smoke",
            ["hydra.launcher.signal_delay_s=120", "timeout_min=1 (60 s)"],
        ),
    ],
)
def test_bad_input_gives_one_line_and_exit_status_2(tmp_path, override, must_say):
    result = run_cli(tmp_path, *override.split(" "))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for words in must_say:
        assert words in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # refused before anything is written (each job of a grid)


def test_a_cuda_device_that_is_not_there_is_refused(tmp_path):
    result = run_cli(tmp_path, *SMOKE, "agent.device=cuda:7")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "agent.device=cuda:7 is invalid: expected auto or cpu: this machine has" in lines[0]


def test_help_says_what_each_key_does_and_names_the_other_commands(tmp_path):
    result = run_cli(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for words in (
        "agent.gamma=0.95",
        "discount factor",
        "env.randomizer=bag",
        "schedule.max_timesteps=500000",
        "schedule: classic, default*, search, smoke",
        "python -m tetris_train.evaluate",
        "python -m tetris_train.report",
        "python -m tetris_train.demo",
    ):
        assert words in result.stdout, words
    assert not (tmp_path / "outputs").exists()


def test_a_missing_plugin_names_the_extra_to_install():
    from hydra.errors import MissingConfigException

    from tetris_train.cli import describe_error

    error = MissingConfigException("missing", missing_cfg_file="hydra/launcher/joblib", options=["basic"])
    message = describe_error(error)
    assert message.startswith("hydra/launcher=joblib: no such option") and "tetris-train[sweep]" in message


def test_target_lines_stops_the_run_and_says_why(tmp_path):
    run = tmp_path / "run"
    result = run_cli(
        tmp_path,
        *SMOKE,
        "env.width=4",
        "env.height=12",
        "schedule.target_lines=1",
        "schedule.target_window=5",
        "schedule.max_timesteps=20000",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "target_lines" and summary["status"] == "finished"
    assert summary["timesteps"] < 20000
    assert read_metadata(run / "checkpoints" / "final")["stop_reason"] == "target_lines"


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.2)


def interrupt(process: subprocess.Popen, ready, sigints: int) -> None:
    """Once ``ready()``, press Ctrl-C ``sigints`` times, 50 ms apart; the process must stop with
    status 130, no traceback and the command that resumes it."""
    try:
        wait_for(ready, timeout=120)
        for _ in range(sigints):
            process.send_signal(signal.SIGINT)
            time.sleep(0.05)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "resume with" in stdout + stderr


def test_sigint_saves_a_checkpoint_that_resumes(tmp_path):
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    process = start_cli(
        tmp_path, *SMOKE, "schedule.max_timesteps=1000000", "schedule.log_interval=100", f"hydra.run.dir={run}"
    )
    metrics = run / "metrics.csv"
    interrupt(process, lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 4, sigints=1)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stop_reason"] == "interrupted"
    stopped_at = summary["timesteps"]
    checkpoint = Path(summary["checkpoint"])
    assert read_metadata(checkpoint)["num_timesteps"] == stopped_at and stopped_at % 4 == 0

    target = stopped_at + 400
    result = run_cli(tmp_path, f"resume={run}", f"schedule.max_timesteps={target}", f"hydra.run.dir={resumed}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["timesteps"] == target
    assert summary["resumed_from"] == str(checkpoint.resolve())
    assert summary["wall_seconds_total"] > summary["wall_seconds"]  # the first stretch counts too
    assert 0 < summary["steps_per_s_total"]
    steps = [int(r["time/total_timesteps"]) for r in csv.DictReader(open(resumed / "metrics.csv"))]
    assert steps[0] == 100 and steps == sorted(steps) and steps[-1] == target  # history carried over
    # the original run folder is left as it was
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"


def test_resume_takes_the_runs_own_overrides_and_refuses_real_changes(tmp_path):
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    command = [*SMOKE, "agent.learning_starts=100", "env=small"]
    assert run_cli(tmp_path, *command, "schedule.max_timesteps=600", f"hydra.run.dir={run}").returncode == 0
    # the same command recalled, with resume= and a longer schedule added
    result = run_cli(tmp_path, *command, "schedule.max_timesteps=800", f"resume={run}", f"hydra.run.dir={resumed}")
    assert result.returncode == 0, result.stderr
    assert json.loads((resumed / "summary.json").read_text())["timesteps"] == 800

    for change, says in (
        (
            ["agent.learning_rate=0.5"],
            "the checkpoint has agent.learning_rate=0.001, this command agent.learning_rate=0.5",
        ),
        (["env=default"], "the checkpoint has env.height=12, this command env.height=20"),
        ([], "this run is finished, trained to 800 steps"),
    ):
        result = run_cli(tmp_path, f"resume={resumed}", "schedule.max_timesteps=800", *change)
        assert result.returncode == 2 and says in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert "schedule.max_timesteps=<a number above 800>" in result.stderr
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a run folder


def test_a_sweep_names_its_folder_at_the_end(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(tmp_path, "-m", *SMOKE, "schedule.max_timesteps=600", "seed=0", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    assert f"sweep folder: {sweep}" in result.stdout + result.stderr
    assert f"python -m tetris_train.report {sweep}" in result.stdout + result.stderr


def test_a_second_sigint_stops_at_once_without_a_traceback(tmp_path):
    run = tmp_path / "run"
    process = start_cli(tmp_path, *SMOKE, "schedule.max_timesteps=1000000", f"hydra.run.dir={run}")
    interrupt(process, lambda: (run / "checkpoints" / "step_0000001000").is_dir(), sigints=2)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "error" not in summary
    assert not list(run.glob("**/.*tmp-*"))
    result = run_cli(tmp_path, f"resume={run}", "schedule.max_timesteps=3000", f"hydra.run.dir={tmp_path / 'more'}")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_installed_package_runs_from_any_folder(tmp_path):
    """pip install . (not editable): Hydra must still find conf/ inside the installed package."""
    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(root),
        ],
        check=True,
        timeout=600,
    )
    assert (target / "tetris_train" / "conf" / "schedule" / "smoke.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "tetris_train", *SMOKE, "schedule.max_timesteps=600", "agent.learning_starts=100"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert list((work / "outputs" / "runs").glob("*/*/summary.json"))


def test_every_console_script_names_a_function():
    from importlib.metadata import distribution

    scripts = {e.name: e for e in distribution("tetris-train").entry_points if e.group == "console_scripts"}
    assert {"tetris-train", "tetris-train-evaluate", "tetris-train-report", "tetris-train-demo"} <= set(scripts)
    for entry in scripts.values():
        assert callable(entry.load()), entry.value


def test_a_run_folder_that_another_process_trains_is_refused_in_one_line(tmp_path):
    from tetris_train.run_folder import RunFolderLock

    run = tmp_path / "run"
    lock = RunFolderLock(run)
    lock.acquire(wait=False)  # as the process training it holds it
    try:
        result = run_cli(tmp_path, *SMOKE, f"hydra.run.dir={run}")
    finally:
        lock.release()
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == f"error: {run} is being trained right now: one command per run folder at a time"


def test_interrupted_exit_status_survives_a_keyboard_interrupt_inside_a_string_eval(tmp_path):
    """Under ``python -m``, CPython turns any exit into death by SIGINT once a KeyboardInterrupt ended
    a string eval (as when Ctrl-C lands in typing's or OmegaConf's), unless the apps clear it."""
    (tmp_path / "interrupted_app.py").write_text(
        "from tetris_train.cli import run_app\n"
        "def interrupt():\n"
        "    raise KeyboardInterrupt\n"
        "run_app(lambda: eval('interrupt()'))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "interrupted_app"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "error: interrupted"
