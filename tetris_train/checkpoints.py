"""Where checkpoints live in a run folder: naming, finding the newest, keeping disk use bounded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

from .agent import CheckpointError, PathLike, TetrisAgent, link_checkpoint, read_metadata

PERIODIC_PREFIX = "step_"
FINAL = "final"
BEST = "best"


def find_checkpoints(folder: PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints directly inside ``folder``, oldest first, as (num_timesteps, path).

    A checkpoint being written is hidden and never listed. One swapped out to be replaced
    (``.NAME.old-PID``) is listed only while NAME itself is missing, that is, when the process
    died between the two renames of the replacement.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith("."):
            name = path.name[1:].rpartition(".old-")[0]
            if not name or (folder / name).exists():
                continue
        try:
            steps = int(read_metadata(path)["num_timesteps"])
        except (CheckpointError, KeyError, ValueError):
            continue
        found.append((steps, path.stat().st_mtime, path))
    return [(steps, path) for steps, _, path in sorted(found)]


def resolve_checkpoint(path: PathLike) -> Path:
    """The checkpoint that ``resume=path`` means: the folder itself if it is a checkpoint, else the
    newest complete checkpoint in it (a checkpoints folder) or in its checkpoints folder (a run folder)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"resume={path}: no such file or folder")
    if (path / "metadata.json").is_file():
        read_metadata(path)  # a clear error if it is incomplete or unreadable
        return path
    candidates = find_checkpoints(path) + find_checkpoints(path / run_checkpoint_dir(path))
    if not candidates:
        raise FileNotFoundError(
            f"resume={path}: no complete checkpoint there (a checkpoint folder holds "
            f"metadata.json, model.zip, replay_buffer.pkl and training_state.pkl)"
        )
    return max(candidates, key=lambda item: (item[0], item[1].stat().st_mtime))[1]


def run_checkpoint_dir(run_dir: Path) -> str:
    """The checkpoints folder a run folder's config.yaml names (``checkpoints`` if it names none)."""
    try:
        import yaml

        return str(yaml.safe_load((run_dir / "config.yaml").read_text())["schedule"]["checkpoint_dir"])
    except (OSError, KeyError, TypeError, ValueError):
        return "checkpoints"


class CheckpointStore:
    """The checkpoints folder of one run: periodic ``step_N`` checkpoints, of which the newest
    ``keep_last`` are kept, and named ones (``final``, ``best``) that are kept until replaced."""

    def __init__(self, run_dir: PathLike, checkpoint_dir: str, keep_last: int):
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / checkpoint_dir
        self.keep_last = keep_last
        self._last_written: Optional[tuple[tuple[int, ...], Path]] = None

    def save_periodic(self, agent: TetrisAgent, **metadata: Any) -> Path:
        path = self._write(agent, f"{PERIODIC_PREFIX}{agent.model.num_timesteps:010d}", metadata)
        self.prune()
        return path

    def save_named(self, agent: TetrisAgent, name: str, **metadata: Any) -> Path:
        return self._write(agent, name, metadata)

    def _write(self, agent: TetrisAgent, name: str, metadata: dict[str, Any]) -> Path:
        """Save a checkpoint; if this very state was just saved under another name, link its files."""
        model = agent.model
        state = (id(model), model.num_timesteps, model._n_updates, model._episode_num)
        path, metadata = self.folder / name, {"run_dir": str(self.run_dir), **metadata}
        previous = self._last_written
        if previous is not None and previous[0] == state and previous[1] != path and previous[1].is_dir():
            link_checkpoint(previous[1], path, **metadata)
        else:
            agent.save_checkpoint(path, **metadata)
        self._last_written = (state, path)
        return path

    def prune(self) -> None:
        periodic = [path for _, path in find_checkpoints(self.folder) if path.name.startswith(PERIODIC_PREFIX)]
        for path in periodic[: -self.keep_last]:
            shutil.rmtree(path)
        for leftover in self.folder.glob(".*.tmp-*"):  # from a process killed while writing
            if not leftover.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(leftover, ignore_errors=True)
        for swapped in self.folder.glob(".*.old-*"):  # from a process killed while replacing
            name = swapped.name[1:].rpartition(".old-")[0]
            if (self.folder / name).exists():
                shutil.rmtree(swapped, ignore_errors=True)
