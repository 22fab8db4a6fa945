"""Sweeps that survive interruption.

Each multirun job writes into a folder named after its overrides (``agent.learning_rate=0.001,seed=1``),
so running the same sweep command into the same sweep folder finds every job's folder again, where
the job continues its run (:func:`tetris_train.run_folder.find_continuation`). A stored Optuna study
is resumed by the search itself (:mod:`tetris_train.search`).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

MAX_FOLDER_NAME = 240  # bytes; file systems allow 255


def job_folder(override_dirname: str, num: Any, task_overrides: Any = None) -> str:
    """A multirun job's folder name: its overrides, or ``job<num>`` for a job without any.

    Long decimals (an Optuna trial's 0.00064664227174145) are shortened to 4 significant digits for
    reading; whenever the name is not the exact overrides (shortened, cut, or with keys left out by
    ``hydra.job.config.override_dirname.exclude_keys``), a hash of all of them is appended, so that
    every job keeps its own folder.
    """
    exact = str(override_dirname)
    every = ",".join(sorted(str(o) for o in task_overrides)) if task_overrides is not None else exact
    if not every:
        return f"job{num}"
    items = [shorten_number(item) for item in split_overrides(exact)] if exact else []
    name = ",".join(items).replace("/", "_").replace("\\", "_")
    if name != exact or ",".join(sorted(split_overrides(exact))) != every or len(name.encode()) > MAX_FOLDER_NAME:
        digest = hashlib.sha1(every.encode()).hexdigest()[:8]
        name = name.encode()[: MAX_FOLDER_NAME - 9].decode(errors="ignore") + "-" + digest
    return name


def split_overrides(text: str) -> list[str]:
    """``a=1,b=[64,64]`` -> ``["a=1", "b=[64,64]"]``: commas inside brackets stay."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


def shorten_number(item: str) -> str:
    key, sep, value = item.partition("=")
    if sep and len(value) > 8 and any(c in value for c in ".eE"):
        try:
            return f"{key}={float(value):.4g}"
        except ValueError:
            pass
    return item


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("job_folder"):
        OmegaConf.register_new_resolver("job_folder", job_folder)


class SacctWarningOnce(logging.Filter):
    """submitit asks ``sacct`` for its SLURM jobs' states; on a cluster that keeps no accounting every
    poll fails with a warning. The first one passes, saying what it means; the repeats are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Bypassing sacct error" not in message:
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg = (
            f"{message} (the cluster keeps no job accounting: the sweep learns that a job ended from its "
            f"result file; repeats of this warning are not shown)"
        )
        record.args = ()
        return True


def quiet_sacct_warnings() -> None:
    submitit_log = logging.getLogger("submitit")
    if not any(isinstance(f, SacctWarningOnce) for f in submitit_log.filters):
        submitit_log.addFilter(SacctWarningOnce())


def check_time_limit(launcher: DictConfig) -> None:
    """A cluster job is signalled ``signal_delay_s`` before its time limit to checkpoint and be
    requeued: a signal due before the job starts would requeue it at once, again and again, with
    nothing trained. Refused (one line, exit status 2) before any job is submitted."""
    timeout_min, delay_s = launcher.get("timeout_min"), launcher.get("signal_delay_s")
    if timeout_min is None or delay_s is None or delay_s < timeout_min * 60:
        return
    from .cli import refuse

    raise refuse(
        f"hydra.launcher.signal_delay_s={delay_s}: a job is signalled that many seconds before its time "
        f"limit, hydra.launcher.timeout_min={timeout_min} ({timeout_min * 60} s), so it would stop before "
        f"training anything; allowed: fewer seconds than timeout_min x 60 (leave minutes for training)"
    )


class SweepFolderCallback(Callback):
    """A Hydra callback that checks the launcher's time limit when a multirun starts (before any
    job is submitted) and names the sweep folder when it ends, with the report command."""

    folder: Optional[str] = None  # the current multirun's, for a message when the sweep fails

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_time_limit(config.hydra.launcher)
        SweepFolderCallback.folder = str(config.hydra.sweep.dir)
        quiet_sacct_warnings()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = config.hydra.sweep.dir
        log.info("sweep folder: %s (tables and plots: python -m tetris_train.report %s)", folder, folder)
