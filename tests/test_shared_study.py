"""Several sweep commands (workers, as on several machines) sharing one Optuna study stored in a
real PostgreSQL server, started here on loopback from Debian's postgresql packages.

Two workers seeded alike search at once; one is killed (SIGKILL) in the middle of a trial. The
other finishes the search: the killed trial is run again from its checkpoint once its heartbeat is
stale, the study holds exactly n_trials, and every configuration is trained once."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

N_TRIALS = 4
STUDY = "shared"


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))  # Debian's layout
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"],
            check=True,
            capture_output=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert found, "PostgreSQL's server is not installed: apt-get install postgresql (.ci/run does)"
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of its own, on loopback, for this module's tests: its database URL."""
    bindir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="tetris-train-pg-"))  # not under pytest's root-only folder
    data, port = folder / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: as Debian's postgres user
        postgres = pwd.getpwnam("postgres")
        os.chown(folder, postgres.pw_uid, postgres.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*command: str) -> None:
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{' '.join(command)}: {result.stderr[-2000:]}"

    run(str(bindir / "initdb"), "-D", str(data), "-U", "tetris", "-A", "trust", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o", options, "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tetris", "optuna")
        yield f"postgresql+psycopg://tetris@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def worker(cwd: Path, sweep: Path, url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tetris_train",
        "-m",
        "hparams_search=dqn_optuna",
        "schedule=smoke",
        "schedule.max_timesteps=4000",
        "hydra/sweeper/pruner=none",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.study_name={STUDY}",
        f"hydra.sweeper.n_trials={N_TRIALS}",
        "hydra.sweeper.heartbeat_s=2",
        "hydra.sweeper.sampler.seed=0",  # both alike: they must not run the same trials
    ]


def training_of(process: subprocess.Popen, sweep: Path) -> Path | None:
    """A run folder that ``process`` trains right now and has checkpointed."""
    for summary_file in sweep.glob("*/summary.json"):
        try:
            summary = json.loads(summary_file.read_text())
        except ValueError:
            continue
        run = summary_file.parent
        if (
            summary.get("pid") == process.pid
            and summary.get("status") == "running"
            and any((run / "checkpoints").glob("step_*"))
        ):
            return run
    return None


def test_workers_share_one_study_and_finish_a_killed_workers_trial(tmp_path, postgres_url):
    import optuna

    sweep = tmp_path / "sweep"
    command = worker(tmp_path, sweep, postgres_url)
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while (killed := training_of(first, sweep)) is None:
            assert time.monotonic() < deadline and first.poll() is None, "the first worker never got to train"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)  # a machine lost mid-trial: no chance to tidy up
        first.wait(timeout=60)
        _, errors = second.communicate(timeout=600)
    finally:
        first.kill()
        second.kill()
    assert second.returncode == 0, errors[-3000:]

    study = optuna.load_study(study_name=STUDY, storage=postgres_url)
    trials = study.get_trials()
    ran = [t for t in trials if "not_run" not in t.user_attrs]
    counted = [t for t in ran if "retry_of" not in t.user_attrs]
    assert len(counted) == N_TRIALS, [(t.number, t.state.name, t.user_attrs) for t in trials]
    [retry] = [t for t in ran if "retry_of" in t.user_attrs]  # the killed worker's trial, run again
    cut = trials[retry.user_attrs["replaces"]]
    assert cut.state == optuna.trial.TrialState.FAIL and retry.user_attrs["retry_of"] == cut.number
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == cut.params
    complete = [t for t in ran if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == N_TRIALS

    # every configuration trained once, in its own folder; the killed one continued from its checkpoint
    runs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(runs) == len({tuple(sorted(t.params.items())) for t in complete})
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished", (run.name, summary)
        log = (run / "main.log").read_text()
        stretches = log.count("training ")
        if run == killed:
            assert stretches == 2 and "unfinished: continuing from" in log and summary["resumed_from"]
        else:
            assert stretches == 1, f"{run.name} was trained {stretches} times"

    # the killed worker's command again: the budget is used up, nothing is trained
    before = {run: (run / "summary.json").read_bytes() for run in runs}
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {run: (run / "summary.json").read_bytes() for run in runs} == before
    assert len([t for t in study.get_trials() if "not_run" not in t.user_attrs]) == len(ran)
