"""The SLURM launcher on a real single-node SLURM cluster, brought up by scripts/slurm-local.sh
(Debian's slurm-wlm and munge, installed by the script where missing; needs root).

A sweep whose jobs outlive their time limit: each job is signalled before the limit, saves a
checkpoint at that step, is requeued by SLURM and continues from that checkpoint, ending exactly
where an uninterrupted run ends. Running the sweep command again trains nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tetris_train.agent import load_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
# about a minute of training per job (the jobs and an uninterrupted reference run share the cores
# of a small machine) under a 2-minute limit signalled 75 s before it: SLURM checks limits every
# 30 s and signals once less than signal_delay_s + 30 s remain, so each stretch is signalled 15 to
# 45 s in; a requeued job waits cred_expire (10 s) to start again
STEPS = 50_000
JOB = [
    "schedule=smoke",
    f"schedule.max_timesteps={STEPS}",
    "schedule.eval_freq=25000",
    "schedule.checkpoint_freq=25000",
    "agent.torch_threads=1",
]
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.timeout_min=2",
    "hydra.launcher.signal_delay_s=75",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
]


@pytest.fixture(scope="module")
def slurm_env():
    """The environment that points SLURM's commands at the local cluster (started for these tests
    and stopped after them, unless it already ran)."""
    env = dict(os.environ)
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, f"the local SLURM cluster did not start: {up.stderr[-2000:]}"
    match = re.search(r"export SLURM_CONF=(\S+)", up.stdout)
    assert match, up.stdout
    env["SLURM_CONF"] = match.group(1)
    yield env
    if "already up" not in up.stderr:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)


def sweep_command(sweep: Path) -> list[str]:
    return [sys.executable, "-m", "tetris_train", "-m", *LAUNCHER, *JOB, f"hydra.sweep.dir={sweep}", "seed=0,1"]


def snapshot(sweep: Path) -> dict[str, bytes]:
    """Every file of the runs (not the submitit folder), with its bytes."""
    return {
        str(p.relative_to(sweep)): p.read_bytes()
        for p in sorted(sweep.glob("*seed=*/**/*"))
        if p.is_file() and not {"tensorboard", ".hydra"} & set(p.parts) and p.name != "main.log"
    }


def network(checkpoint: Path) -> np.ndarray:
    model = load_model(checkpoint, device="cpu")
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()]).numpy()


def test_jobs_past_their_time_limit_are_requeued_and_continue_exactly(tmp_path, slurm_env):
    sweep, reference = tmp_path / "sweep", tmp_path / "reference"
    # beside the sweep, the same configuration as seed=0 trained in one go, here
    local = subprocess.Popen(
        [sys.executable, "-m", "tetris_train", *JOB, "seed=0", f"hydra.run.dir={reference}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        result = subprocess.run(
            sweep_command(sweep), cwd=tmp_path, env=slurm_env, capture_output=True, text=True, timeout=900
        )
        local_errors = local.communicate(timeout=600)[1]
    finally:
        local.kill()
    assert result.returncode == 0, result.stderr[-3000:]
    assert local.returncode == 0, local_errors[-2000:]
    # the missing job accounting of the local cluster is said once, not at every poll
    assert 1 <= result.stderr.count("Bypassing sacct error") <= 3  # one record: submitit's 2 handlers, Hydra's

    runs = sorted(sweep.glob("*seed=*"))
    assert [r.name[-6:] for r in runs] == ["seed=0", "seed=1"]
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["timesteps"] == STEPS, summary
        log = (run / "main.log").read_text()
        stops = [int(s) for s in re.findall(r"stopped at step (\d+) to be requeued", log)]
        resumes = [int(s) for s in re.findall(r"resuming from \S+ at step (\d+)", log)]
        assert stops, f"{run.name} was never signalled before its time limit:\n{log}"
        assert resumes == stops, (stops, resumes)  # each stretch starts where the previous one stopped
        evaluations = [json.loads(line)["timesteps"] for line in (run / "evaluations.jsonl").read_text().splitlines()]
        assert evaluations == [25_000, 50_000]
        steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
        assert steps == sorted(set(steps)), "a step logged twice or out of order"

    # the requeued run ends with the very network that the run trained in one go ends with
    assert np.array_equal(network(runs[0] / "checkpoints" / "final"), network(reference / "checkpoints" / "final"))

    # the same command again: both jobs find their finished runs and train nothing
    before = snapshot(sweep)
    again = subprocess.run(
        sweep_command(sweep), cwd=tmp_path, env=slurm_env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert snapshot(sweep) == before
    for run in runs:
        assert "holds this run, finished: not training it again" in (run / "main.log").read_text()
