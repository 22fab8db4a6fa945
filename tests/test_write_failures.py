"""A run on a disk that fills up, or into a folder it may not write: one line, the run recorded as
failed, earlier checkpoints intact, no temporary files left. On a real (tmpfs) file system."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tetris_train.run_folder import find_checkpoints

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")

SMOKE = ["schedule=smoke", "schedule.max_timesteps=8000", "agent.buffer_size=10000"]


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB file system: room for the run folder and a few checkpoints, not for eight."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tetris_train", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name or ".del-" in p.name]


def test_a_full_disk_stops_the_run_with_one_line(tmp_path, small_disk):
    run = small_disk / "run"
    result = train(tmp_path, *SMOKE, f"hydra.run.dir={run}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {run}"), result.stderr
    assert "No space left on device" in lines[0] and "resume with" in lines[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert find_checkpoints(run / "checkpoints"), "earlier checkpoints stay"
    assert not leftovers(run)

    # with room again, the run continues from its newest checkpoint
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    result = train(tmp_path, *SMOKE, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["timesteps"] == 8000
    assert not leftovers(run)


def test_a_read_only_checkpoints_folder_stops_the_run_with_one_line(tmp_path, small_disk):
    run = tmp_path / "run"
    (run / "checkpoints").parent.mkdir()
    os.symlink(small_disk, run / "checkpoints")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = train(tmp_path, *SMOKE, f"hydra.run.dir={run}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {run / 'checkpoints'}"), result.stderr
    assert "Read-only file system" in lines[0]
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
