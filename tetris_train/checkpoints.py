"""Where checkpoints live in a run folder: naming, finding the newest, keeping disk use bounded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

from .agent import METADATA_FILE, PathLike, TetrisAgent, read_metadata

PERIODIC_PREFIX = "step_"
FINAL = "final"


def find_checkpoints(folder: PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints directly inside ``folder``, oldest first, as (num_timesteps, path).

    Hidden folders (a checkpoint being written, or swapped out) are never listed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or not (path / METADATA_FILE).is_file():
            continue
        try:
            steps = int(read_metadata(path)["num_timesteps"])
        except (ValueError, KeyError):
            continue
        found.append((steps, path.stat().st_mtime, path))
    return [(steps, path) for steps, _, path in sorted(found)]


def resolve_checkpoint(path: PathLike) -> Path:
    """The checkpoint that ``resume=path`` means: the folder itself if it is a checkpoint, else the
    newest checkpoint in it (a checkpoints folder) or in its subfolders (a run folder)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"resume={path}: no such file or folder")
    if (path / METADATA_FILE).is_file():
        return path
    candidates = find_checkpoints(path)
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        candidates += find_checkpoints(sub)
    if not candidates:
        raise FileNotFoundError(f"resume={path}: no checkpoint there (a checkpoint folder holds {METADATA_FILE})")
    return max(candidates, key=lambda item: (item[0], item[1].stat().st_mtime))[1]


class CheckpointStore:
    """The checkpoints folder of one run: periodic ``step_N`` checkpoints, of which the newest
    ``keep_last`` are kept, and named ones (``final``, ``best``) that are kept until replaced."""

    def __init__(self, run_dir: PathLike, checkpoint_dir: str, keep_last: int):
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / checkpoint_dir
        self.keep_last = keep_last

    def save_periodic(self, agent: TetrisAgent, **metadata: Any) -> Path:
        name = f"{PERIODIC_PREFIX}{agent.model.num_timesteps:010d}"
        path = agent.save_checkpoint(self.folder / name, run_dir=str(self.run_dir), **metadata)
        self.prune()
        return path

    def save_named(self, agent: TetrisAgent, name: str, **metadata: Any) -> Path:
        return agent.save_checkpoint(self.folder / name, run_dir=str(self.run_dir), **metadata)

    def newest(self) -> Optional[Path]:
        found = find_checkpoints(self.folder)
        return found[-1][1] if found else None

    def prune(self) -> None:
        periodic = [path for _, path in find_checkpoints(self.folder) if path.name.startswith(PERIODIC_PREFIX)]
        for path in periodic[: -self.keep_last]:
            shutil.rmtree(path)
        for leftover in self.folder.glob(".*.tmp-*"):  # from a process killed while writing
            if not leftover.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(leftover, ignore_errors=True)
