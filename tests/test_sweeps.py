"""Sweeps as a user runs them: real `-m` multiruns into tmp_path, with the basic, joblib and submitit
launchers and the Optuna sweeper; interrupted and resumed sweeps; reruns from a snapshot."""

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_cli import run_cli, wait_for

# jobs of a few seconds (schedule=smoke: 2,000 steps, a checkpoint and an evaluation every 1,000)
TINY = ["schedule=smoke"]


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def start_multirun(cwd: Path, command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tetris_train", "-m", *command],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt_when(process: subprocess.Popen, condition, timeout: float) -> int:
    """Ctrl-C the sweep once ``condition()`` holds; its exit status."""
    try:
        wait_for(condition, timeout=timeout)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode


def overlapping(a: dict, b: dict) -> bool:
    return a["started"] < b["ended"] and b["started"] < a["ended"]


def test_grid_multirun_runs_each_job_into_a_folder_named_by_its_overrides(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        tmp_path,
        "-m",
        *TINY,
        "schedule.max_timesteps=600",
        "agent.gamma=0.9,0.95",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    done = summaries(sweep)
    assert len(done) == 4 and all(s["status"] == "finished" for s in done.values())
    for gamma in (0.9, 0.95):
        for seed in (0, 1):
            [folder] = [sweep / name for name in done if f"agent.gamma={gamma}," in name and f"seed={seed}" in name]
            config = yaml.safe_load((folder / "config.yaml").read_text())
            assert config["agent"]["gamma"] == gamma and config["seed"] == seed
            assert (folder / "checkpoints" / "final" / "model.zip").is_file()
    assert (sweep / "multirun.yaml").is_file()


def test_a_failed_job_does_not_stop_the_others(tmp_path):
    # a value out of range is refused before any job starts; a buffer larger than the machine's
    # memory is found by the job itself
    sweep = tmp_path / "sweep"
    result = run_cli(
        tmp_path,
        "-m",
        *TINY,
        "schedule.max_timesteps=600",
        "agent.buffer_size=100000000000,1000",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job agent.buffer_size=") and "a buffer that fits in memory" in last
    assert "Traceback" not in result.stderr
    status = {s["status"]: name for name, s in summaries(sweep).items()}
    assert set(status) == {"failed", "finished"} and status["finished"].startswith("agent.buffer_size=1000,")


def test_an_interrupted_sweep_resumes_without_training_anything_again(tmp_path):
    sweep = tmp_path / "sweep"
    command = [*TINY, "schedule.max_timesteps=600,8000", f"hydra.sweep.dir={sweep}"]
    process = start_multirun(tmp_path, command)

    def long_job_logging() -> bool:
        metrics = list(sweep.glob("*max_timesteps=8000*/metrics.csv"))
        return bool(metrics) and len(metrics[0].read_text().splitlines()) >= 3

    assert interrupt_when(process, long_job_logging, timeout=120) == 130
    first = summaries(sweep)
    [short] = [name for name in first if "max_timesteps=600" in name]
    [long] = [name for name in first if "max_timesteps=8000" in name]
    assert first[short]["status"] == "finished" and first[long]["status"] == "interrupted"
    stopped_at = first[long]["timesteps"]
    assert 0 < stopped_at < 8000

    result = run_cli(tmp_path, "-m", *command)
    assert result.returncode == 0, result.stderr
    second = summaries(sweep)
    assert second[short] == first[short]  # skipped: its run folder was not touched
    assert "finished: not training it again" in result.stdout + result.stderr
    assert second[long]["status"] == "finished" and second[long]["timesteps"] == 8000
    assert Path(second[long]["resumed_from"]).parent.parent == sweep / long  # its own checkpoint, in place
    steps = [int(r["time/total_timesteps"]) for r in csv.DictReader(open(sweep / long / "metrics.csv"))]
    assert steps == list(range(500, 8001, 500))  # one history, no step trained twice


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_run_two_jobs_at_once(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    settings = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    result = run_cli(
        tmp_path,
        "-m",
        f"hydra/launcher={launcher}",
        *settings,
        *TINY,
        "schedule.max_timesteps=2000",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    done = list(summaries(sweep).values())
    assert len(done) == 2 and all(s["status"] == "finished" for s in done)
    assert done[0]["pid"] != done[1]["pid"] and overlapping(*done)


def optuna_trials(sweep: Path) -> list:
    import optuna

    return optuna.load_study(study_name="dqn_tetris", storage=f"sqlite:///{sweep}/optuna.db").get_trials()


def test_optuna_search_with_a_stored_study_resumes_after_an_interruption(tmp_path):
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    command = [
        "hparams_search=dqn_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        *TINY,
        "schedule.max_timesteps=4000",
        f"hydra.sweep.dir={sweep}",
    ]
    process = start_multirun(tmp_path, command)

    def second_trial_running() -> bool:
        done = summaries(sweep)
        running = [p for p in sweep.glob("*/metrics.csv") if done.get(p.parent.name, {}).get("status") == "running"]
        finished = [s for s in done.values() if s["status"] == "finished"]
        return len(finished) == 1 and any(len(p.read_text().splitlines()) >= 4 for p in running)

    assert interrupt_when(process, second_trial_running, timeout=180) == 130
    first = summaries(sweep)
    [interrupted] = [name for name, s in first.items() if s["status"] == "interrupted"]
    # the sweeper marks the trial it stops as cut off and queues its parameters again
    trials = optuna_trials(sweep)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs == {"interrupted": True}
    assert trials[2].user_attrs == {"retry_of": 1, "replaces": 1}

    result = run_cli(tmp_path, "-m", *command)
    assert result.returncode == 0, result.stderr
    trials = optuna_trials(sweep)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[2].params == trials[1].params  # the interrupted trial, asked for again
    before = sorted(trials[1].intermediate_values)
    assert before and sorted(trials[2].intermediate_values) == list(range(1000, 4001, 1000))  # its whole run
    assert trials[3].params != trials[0].params  # the sampler does not replay the first session's draws
    second = summaries(sweep)
    assert len(second) == 3 and all(s["status"] == "finished" for s in second.values())
    assert Path(second[interrupted]["resumed_from"]).parent.parent == sweep / interrupted
    for name, summary in first.items():
        if summary["status"] == "finished":
            assert second[name] == summary  # not trained again
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] == max(
        t.value for t in trials if t.state == TrialState.COMPLETE
    )


def test_a_failed_optuna_trial_does_not_abort_the_search(tmp_path):

    sweep = tmp_path / "sweep"
    result = run_cli(
        tmp_path,
        "-m",
        "hparams_search=dqn_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.params=null",
        "agent.exploration_final_eps=choice(2.0,0.01)",  # TPE's seed 0 draws 2.0 (invalid) once
        *TINY,
        "schedule.max_timesteps=600",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr  # the search went through
    assert "1 of 3 trials failed (numbers 1)" in result.stdout + result.stderr
    states = sorted(t.state.name for t in optuna_trials(sweep))
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]
    status = {name.split(",")[0]: s["status"] for name, s in summaries(sweep).items()}
    assert status == {"agent.exploration_final_eps=2.0": "failed", "agent.exploration_final_eps=0.01": "finished"}


def test_rerun_from_the_snapshot_reproduces_the_metrics(tmp_path):
    run, again = tmp_path / "run", tmp_path / "again"
    assert run_cli(tmp_path, *TINY, "seed=3", f"hydra.run.dir={run}").returncode == 0
    snapshot = json.loads((run / "snapshot.json").read_text())
    assert {"torch", "stable_baselines3", "numpy"} <= set(snapshot["versions"])
    assert "git" in snapshot and "seed=3" in snapshot["overrides"]

    result = run_cli(tmp_path, f"rerun={run}", f"hydra.run.dir={again}")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((again / "config.yaml").read_text())["rerun"] == str(run.resolve())

    def metrics(folder):
        rows = list(csv.DictReader(open(folder / "metrics.csv")))
        return [
            {k: v for k, v in row.items() if not k.startswith("time/") or k == "time/total_timesteps"} for row in rows
        ]

    def evaluations(folder):
        return [
            {k: v for k, v in json.loads(line).items() if k not in ("placements_per_s", "checkpoint")}
            for line in (folder / "evaluations.jsonl").read_text().splitlines()
        ]

    assert len(metrics(run)) == 4 and metrics(again) == metrics(run)
    assert evaluations(again) == evaluations(run)


@pytest.mark.parametrize(
    "override, must_say",
    [
        ("agent.learning_rate=0.1", "only agent.device and schedule.progress_bar can change"),
        ("agent=small", "only agent.device and schedule.progress_bar can change"),
    ],
)
def test_rerun_refuses_changes_to_the_config(tmp_path, override, must_say):
    run = tmp_path / "run"
    assert run_cli(tmp_path, *TINY, "schedule.max_timesteps=600", f"hydra.run.dir={run}").returncode == 0
    result = run_cli(tmp_path, f"rerun={run}", override)
    assert result.returncode == 2 and must_say in result.stderr and "Traceback" not in result.stderr


def test_rerun_of_a_folder_without_a_run_says_so(tmp_path):
    result = run_cli(tmp_path, f"rerun={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: rerun={tmp_path}: no run folder there (a run folder holds config.yaml)"


def test_a_run_folder_of_another_config_is_not_continued(tmp_path):
    run = tmp_path / "run"
    assert run_cli(tmp_path, *TINY, "schedule.max_timesteps=600", f"hydra.run.dir={run}").returncode == 0
    result = run_cli(tmp_path, *TINY, "schedule.max_timesteps=600", "agent.gamma=0.5", f"hydra.run.dir={run}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "already holds a run with agent.gamma=0.95, this job has agent.gamma=0.5" in result.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"  # left as it was


def test_the_resume_hint_quotes_what_hydra_would_misread(tmp_path):
    from tetris_train.run_folder import resume_hint

    assert resume_hint(tmp_path / "plain") == f"resume with: python -m tetris_train resume={tmp_path / 'plain'}"
    odd = tmp_path / "agent.gamma=0.9,seed=1"
    assert resume_hint(odd) == f"resume with: python -m tetris_train \"resume='{odd}'\""


def test_job_folder_names(tmp_path):
    from tetris_train.sweeps import MAX_FOLDER_NAME, job_folder

    assert job_folder("agent.gamma=0.9,seed=1", 3) == "agent.gamma=0.9,seed=1"
    assert job_folder("", 3) == "job3"
    assert job_folder("resume=/a/b", 0).startswith("resume=_a_b-")  # changed for the file system: hashed
    assert job_folder("agent.gamma=0.97123456,agent.net_arch=[64,64]", 0).startswith(
        "agent.gamma=0.9712,agent.net_arch=[64,64]-"
    )
    assert job_folder("agent.gamma=0.97123456", 0) != job_folder("agent.gamma=0.97123457", 0)
    # keys left out of the name (hydra.job.config.override_dirname.exclude_keys) still tell jobs apart
    a, b = (job_folder("agent.gamma=0.9", 0, ["agent.gamma=0.9", f"schedule.eval_episodes={n}"]) for n in (1, 3))
    assert a != b and a.startswith("agent.gamma=0.9-")
    assert job_folder("agent.gamma=0.9,seed=1", 0, ["seed=1", "agent.gamma=0.9"]) == "agent.gamma=0.9,seed=1"
    long = job_folder("x" * 300, 0)
    assert len(long.encode()) <= MAX_FOLDER_NAME and long != job_folder("x" * 299 + "y", 0)
    (tmp_path / long).mkdir()  # the file system takes it


def test_a_job_folder_saved_before_double_q_continues_a_job_with_plain_targets(tmp_path):
    from tetris_train import AgentConfig, TrainingConfig
    from tetris_train.cli import ResumeError
    from tetris_train.run_folder import CONFIG_FILE, find_continuation

    plain = TrainingConfig(agent=AgentConfig(double_q=False))
    saved = plain.to_dict()
    del saved["agent"]["double_q"]  # a folder written before the option existed trained plain targets
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(saved))
    assert find_continuation(plain, tmp_path) is None  # the same run, nothing saved yet: start it
    with pytest.raises(ResumeError, match="agent.double_q=False"):
        find_continuation(TrainingConfig(), tmp_path)
