"""The run folder's lifecycle: what a run folder holds, where its checkpoints live, which checkpoint a
run continues from (``resume=``, or the same folder again), what it carries over from the run it
continues, and its summary.

A run folder holds ``config.yaml``, ``summary.json``, ``metrics.csv``, ``evaluations.jsonl`` and a
checkpoints folder of ``step_N`` checkpoints (the newest ``keep_last``), ``final`` and ``best``.
The checkpoint format itself is :mod:`tetris_train.checkpoints`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .checkpoints import CheckpointError, PathLike, link_checkpoint, read_metadata, verify_checkpoint
from .cli import ResumeError
from .config import TrainingConfig, complete_saved_config

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from .agent import TetrisAgent

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
EVALUATIONS_FILE = "evaluations.jsonl"
METRICS_FILE = "metrics.csv"
LOCK_FILE = ".lock"  # held by the process that trains the run folder
PERIODIC_PREFIX = "step_"
FINAL = "final"
BEST = "best"
# keys that may change when a run continues (resume=, or the same run folder again)
RESUME_CHANGEABLE = ("schedule.", "agent.device")
CONTINUABLE_DIFFERENCES = (*RESUME_CHANGEABLE, "resume", "rerun")


def write_atomic(path: Path, text: str) -> None:
    """Replace a run folder's file in one step: readers see the old text or the new, never a part.
    A write that fails (a full disk, say) leaves the old file and no temporary file, and names ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json``. Where the disk has no room for a second copy, the file is overwritten
    in place (within the space it already holds), so that a run failing for a full disk says so."""
    path = Path(run_dir) / SUMMARY_FILE
    text = json.dumps(summary, indent=2) + "\n"
    try:
        write_atomic(path, text)
    except OSError:
        if not path.is_file():
            raise
        with open(path, "r+b") as f:
            f.write(text.encode())
            f.truncate()


def remove_leftovers(folder: Path) -> None:
    """Remove the temporary files and folders that killed or failed processes left in ``folder``
    (``.<name>.tmp-PID``, ``.<name>.del-PID``), this process's own excepted."""
    for leftover in [*folder.glob(".*.tmp-*"), *folder.glob(".*.del-*")]:
        if leftover.name.endswith(f"-{os.getpid()}"):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


# -- checkpoints in a run folder ------------------------------------------------------------------


def find_checkpoints(folder: PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints directly inside ``folder``, oldest first, as (num_timesteps, path).

    A checkpoint being written is hidden and never listed. One swapped out to be replaced
    (``.NAME.old-PID``) is listed only while NAME itself is missing, that is, when the process
    died between the two renames of the replacement. Files are not checked here (see
    :func:`resolve_checkpoint`).
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
        except (CheckpointError, KeyError, ValueError, TypeError):
            continue
        found.append((steps, path.stat().st_mtime, path))
    return [(steps, path) for steps, _, path in sorted(found)]


def resolve_checkpoint(path: PathLike, key: str = "resume") -> Path:
    """The checkpoint that ``key=path`` means, with every file checked: the folder itself if it is
    a checkpoint, else the newest intact checkpoint in it (a checkpoints folder) or in its
    checkpoints folder (a run folder). A damaged newer checkpoint is passed over with a warning
    and left where it is."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{key}={path}: no such file or folder")
    if (path / "metadata.json").is_file():
        verify_checkpoint(path)
        return path
    candidates = find_checkpoints(path) + find_checkpoints(path / run_checkpoint_dir(path))
    if not candidates:
        raise FileNotFoundError(
            f"{key}={path}: no complete checkpoint there (a checkpoint folder holds metadata.json and "
            f"the files it lists)"
        )
    damaged: list[str] = []
    for _, candidate in sorted(candidates, key=lambda item: (item[0], item[1].stat().st_mtime), reverse=True):
        try:
            verify_checkpoint(candidate)
        except CheckpointError as error:
            damaged.append(str(error))
            continue
        for problem in damaged:
            log.warning("%s; continuing from %s, the newest intact checkpoint", problem, candidate)
        return candidate
    raise CheckpointError(f"{key}={path}: no intact checkpoint there; the newest: {damaged[0]}")


def run_checkpoint_dir(run_dir: Path) -> str:
    """The checkpoints folder a run folder's config.yaml names (``checkpoints`` if it names none)."""
    try:
        import yaml

        return str(yaml.safe_load((run_dir / CONFIG_FILE).read_text())["schedule"]["checkpoint_dir"])
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
        # wall time of the run's earlier stretches (None: unknown, a checkpoint from before it was
        # recorded) and when this one started, with the store: each checkpoint records the total
        self.seconds_before: Optional[float] = 0.0
        self.started = time.perf_counter()

    def wall_seconds_total(self) -> Optional[float]:
        """Wall time of the whole run so far, every stretch of it; None where an earlier one is unknown."""
        if self.seconds_before is None:
            return None
        return round(self.seconds_before + time.perf_counter() - self.started, 3)

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
        total = self.wall_seconds_total()
        if total is not None:
            metadata["wall_seconds_total"] = total
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
            doomed = path.with_name(f".{path.name}.del-{os.getpid()}")
            os.rename(path, doomed)  # hidden at once: a kill while deleting leaves nothing listed
            shutil.rmtree(doomed)
        self.remove_leftovers()

    def remove_leftovers(self) -> None:
        """What killed or failed processes left behind in the run folder and its checkpoints folder."""
        remove_leftovers(self.run_dir)
        if not self.folder.is_dir():
            return
        remove_leftovers(self.folder)
        for swapped in self.folder.glob(".*.old-*"):  # from a process killed while replacing
            name = swapped.name[1:].rpartition(".old-")[0]
            if (self.folder / name).exists():
                shutil.rmtree(swapped, ignore_errors=True)


# -- continuing a run -----------------------------------------------------------------------------


def resume_config(cfg: DictConfig, overrides: list[str]) -> TrainingConfig:
    """The config of ``resume=<checkpoint or run folder>``: the checkpoint's, with the command
    line's ``schedule`` (and ``agent.device``) overrides on top. Other overrides may only repeat
    the checkpoint's values (a command recalled from history, with ``resume=`` added)."""
    from omegaconf import OmegaConf

    if not str(cfg.resume).strip():
        raise ResumeError("resume= is empty: expected a run folder or checkpoint folder")
    checkpoint = resolve_checkpoint(cfg.resume)
    metadata = read_metadata(checkpoint)
    merged = OmegaConf.merge(OmegaConf.structured(TrainingConfig), metadata["config"])
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "resume":
            continue
        given = OmegaConf.select(cfg, key)
        if key == "schedule" or key.startswith(RESUME_CHANGEABLE):
            OmegaConf.update(merged, key, given, merge=False)
            continue
        kept = OmegaConf.select(merged, key)
        plain = [OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in (kept, given)]
        changes = [change for change in diff(*plain, prefix=f"{key}.") if not change[0].startswith(RESUME_CHANGEABLE)]
        if changes:
            name, old, new = changes[0]
            raise ResumeError(
                f"{override}: the checkpoint has {name}={old!r}, this command {name}={new!r}; a resumed run keeps "
                f"its checkpoint's config except schedule.* and agent.device (start a new run to change the rest)"
            )
    merged.resume = str(checkpoint.resolve())
    config: TrainingConfig = OmegaConf.to_object(merged)
    trained = int(metadata["num_timesteps"])
    if trained >= config.schedule.max_timesteps:
        raise ResumeError(
            f"resume={cfg.resume}: this run is finished, trained to {trained:,} steps "
            f"(schedule.max_timesteps={config.schedule.max_timesteps}); to train it longer, "
            f"add schedule.max_timesteps=<a number above {trained}>"
        )
    if metadata.get("stop_reason") == "target_lines" and config.schedule.target_lines == metadata["config"].get(
        "schedule", {}
    ).get("target_lines"):
        raise ResumeError(
            f"resume={cfg.resume}: this run is finished, it reached schedule.target_lines="
            f"{config.schedule.target_lines}; to train it further, add schedule.target_lines=null or a higher target"
        )
    return config


@dataclass
class Continuation:
    """What a run folder already holds for a job: a finished run (``summary``) or a checkpoint."""

    finished: Optional[dict[str, Any]] = None
    checkpoint: Optional[Path] = None

    def objective(self, run_dir: Path, schedule: Any) -> float:
        """The finished run's objective as ``schedule`` defines it (which may differ from the
        ``schedule.objective`` it ran with), from its evaluations."""
        from .objective import run_objective

        summary = self.finished or {}
        value = run_objective(read_history(Path(run_dir) / EVALUATIONS_FILE), schedule, summary.get("stop_reason"))
        return float(value) if value is not None else math.nan


def find_continuation(config: TrainingConfig, run_dir: Path, search_trial: bool = False) -> Optional[Continuation]:
    """How to continue ``config`` in ``run_dir``; None where the folder holds no run of it yet.

    A pruned run is over for a search (``search_trial``); elsewhere it continues from its checkpoint.
    Raises ResumeError if the folder holds a run of another config.
    """
    run_dir = Path(run_dir)
    if config.resume or not (run_dir / CONFIG_FILE).is_file():
        return None
    import yaml

    try:
        previous = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    except yaml.YAMLError as error:
        raise ResumeError(
            f"{run_dir / CONFIG_FILE} is unreadable ({' '.join(str(error).split())}): choose another folder"
        ) from None
    if not isinstance(previous, dict):
        raise ResumeError(f"{run_dir / CONFIG_FILE} holds no config: choose another folder")
    differences = [
        (key, old, new)
        for key, old, new in diff(complete_saved_config(previous), config.to_dict())
        if not key.startswith(CONTINUABLE_DIFFERENCES)
    ]
    if differences:
        key, old, new = differences[0]
        raise ResumeError(
            f"{run_dir} already holds a run with {key}={old!r}, this job has {key}={new!r}: "
            f"choose another folder (hydra.run.dir=... for a run, hydra.sweep.dir=... for a sweep)"
        )
    summary = read_summary(run_dir)
    if (summary.get("status") == "pruned" and search_trial) or (
        summary.get("status") == "finished"
        and (
            summary.get("timesteps", 0) >= config.schedule.max_timesteps
            or any(
                summary.get("stop_reason") == reason
                and previous_schedule(previous, key) == getattr(config.schedule, key)
                for reason, key in EARLY_STOPS.items()
            )
        )
    ):
        return Continuation(finished=summary)
    try:
        return Continuation(checkpoint=resolve_checkpoint(run_dir))
    except FileNotFoundError:
        return None  # nothing saved yet: start again


# a run stopped early for these reasons is finished as long as the setting that stopped it is unchanged
EARLY_STOPS = {"target_lines": "target_lines", "capped": "stop_at_cap"}


def previous_schedule(previous: dict[str, Any], key: str) -> Any:
    return (complete_saved_config(previous).get("schedule") or {}).get(key)


def diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        old, new = list(old), list(new)
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def resume_hint(run_dir: Path) -> str:
    """How to continue an interrupted run: the sweep command again for a multirun job, else resume=."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"to continue it, run the same sweep command again with hydra.sweep.dir={run_dir.parent}"
    path = str(run_dir)
    if not re.search(r"[=,'\"\s\[\](){}$`\\]", path):
        argument = f"resume={path}"
    elif not re.search(r"['\"$`\\]", path):
        argument = f"\"resume='{path}'\""  # quoted for Hydra inside, for the shell outside
    else:
        argument = shlex.quote(f"resume='{path}'")
    return f"resume with: python -m tetris_train {argument}"


# -- what a continued run carries over ------------------------------------------------------------


def read_history(path: Path, until_step: Optional[int] = None) -> list[dict[str, Any]]:
    """Evaluations recorded in a JSON-lines file (those after ``until_step`` left out)."""
    if not path.is_file():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if until_step is None or e["timesteps"] <= until_step]


def carry_over_history(checkpoint: Path, run_dir: Path) -> None:
    """Start a resumed run's metrics and evaluations with those of the run it continues."""
    source = read_metadata(checkpoint).get("run_dir")
    if source is None:
        return
    for name in (METRICS_FILE, EVALUATIONS_FILE):
        source_file, target_file = Path(source) / name, run_dir / name
        if source_file.is_file() and not target_file.exists():
            shutil.copyfile(source_file, target_file)


def trim_history(history_file: Path, until_step: int) -> None:
    if history_file.is_file():
        kept = read_history(history_file, until_step)
        write_atomic(history_file, "".join(json.dumps(entry) + "\n" for entry in kept))


def adopt_best(history_file: Path, store: CheckpointStore) -> None:
    """Give a resumed run the best checkpoint of the run it continues (linked, not copied).

    If that checkpoint no longer holds the evaluated state, the entry loses its checkpoint: the
    next better evaluation saves a new one.
    """
    history = read_history(history_file)
    best = max(history, key=lambda e: e["mean_lines"], default=None)
    if best is None or "checkpoint" not in best:
        return
    source, target = Path(best["checkpoint"]), store.folder / BEST
    try:
        same_state = verify_checkpoint(source)["num_timesteps"] == best["timesteps"]  # whole, and that state
    except (CheckpointError, KeyError):
        same_state = False
    if not same_state:
        del best["checkpoint"]
    elif source.resolve() != target.resolve():
        best["checkpoint"] = str(link_checkpoint(source, target, run_dir=str(store.run_dir), evaluation=best))
    write_atomic(history_file, "".join(json.dumps(entry) + "\n" for entry in history))


# -- summaries ------------------------------------------------------------------------------------


def read_summary(run_dir: Path) -> dict[str, Any]:
    try:
        summary = json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def write_failure(run_dir: Path, message: str) -> None:
    """A summary for a job that never started training, so that reports show why."""
    if (run_dir / SUMMARY_FILE).exists():
        return  # another run's summary (a folder refused for holding another config) stays as it is
    run_dir.mkdir(parents=True, exist_ok=True)
    write_summary(run_dir, {"status": "failed", "error": message})


class RunFolderLock:
    """One process trains a run folder at a time: it holds an exclusive lock (``flock``) on the
    folder's ``.lock`` file from before it reads what the folder holds until the run ends. The lock
    goes with the process, however it ends; it holds across machines on a shared file system that
    supports locks (NFSv4, Lustre with flock, BeeGFS, GPFS)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.handle: Optional[Any] = None

    def acquire(self, wait: bool) -> None:
        """Take the lock; if another process holds it, wait for it (``wait``) or raise ResumeError."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.run_dir / LOCK_FILE, "a")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if not isinstance(error, BlockingIOError):  # a file system without locks (NFSv3 with nolock, ...)
                handle.close()
                log.warning(
                    "%s: its file system does not lock files (%s); nothing keeps a second process from "
                    "training this folder at the same time",
                    self.run_dir,
                    error.strerror,
                )
                return
            if not wait:
                handle.close()
                summary = read_summary(self.run_dir)
                by = f" by process {summary.get('pid')} on {summary.get('host')}" if "pid" in summary else ""
                raise ResumeError(
                    f"{self.run_dir} is being trained right now{by}: one command per run folder at a time"
                ) from None
            log.info("%s is being trained by another job (the same configuration): waiting for it", self.run_dir)
            fcntl.flock(handle, fcntl.LOCK_EX)
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file releases the lock
            self.handle = None


def folder_in_use(run_dir: Path) -> bool:
    """Whether a process trains ``run_dir`` right now (holds its lock)."""
    try:
        with open(Path(run_dir) / LOCK_FILE) as handle:  # read only: looking writes nothing
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no lock file: never trained by this version, or not readable
        return False
    return False
