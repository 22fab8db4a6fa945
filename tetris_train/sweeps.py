"""Sweeps that survive interruption.

Each multirun job writes into a folder named after its overrides (``agent.learning_rate=0.001,seed=1``),
so running the same sweep command into the same sweep folder finds every job's folder again, where
the job continues its run (:func:`tetris_train.run_folder.find_continuation`). A stored Optuna study
is resumed the same way (:class:`ResumeOptunaStudy`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)

MAX_FOLDER_NAME = 240  # bytes; file systems allow 255
INTERRUPTED = "interrupted"  # user attribute of an Optuna trial cut off by an interruption


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


class SweepFolderCallback(Callback):
    """A Hydra callback that names the sweep folder when a multirun ends, with the report command."""

    folder: Optional[str] = None  # the current multirun's, for a message when the sweep fails

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepFolderCallback.folder = str(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = config.hydra.sweep.dir
        log.info("sweep folder: %s (tables and plots: python -m tetris_train.report %s)", folder, folder)


class ResumeOptunaStudy(Callback):
    """A Hydra callback that makes an Optuna search with a stored study resumable.

    Before the sweeper starts, it counts the trials the study has already finished against
    ``hydra.sweeper.n_trials`` and queues again the parameters of trials that were running when
    the search stopped; those jobs then find their run folders and continue from their checkpoints.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        storage, study_name = stored_study(sweeper)
        if storage is None:
            return
        make_sqlite_folder(storage)
        done, again = resume_study(storage, study_name)
        sampler = sweeper.get("sampler")
        if (done or again) and sampler is not None and sampler.get("seed") is not None:
            # a sampler seeded as before would propose the first trials' parameters again
            with read_write(sampler), open_dict(sampler):
                sampler.seed = int(sampler.seed) + done + again
        if done or again:
            log.info(
                "study %s already holds %d finished trials of %d; interrupted trials to run again: %d",
                study_name,
                done,
                sweeper.n_trials,
                again,
            )
        with read_write(sweeper), open_dict(sweeper):
            sweeper.n_trials = max(int(sweeper.n_trials) - done, 0)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        storage, study_name = stored_study(config.hydra.sweeper)
        if storage is None:
            return
        import optuna
        from optuna.trial import TrialState

        trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
        failed = [t.number for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED)]
        if failed:  # the search itself went through: a warning, not a failure
            log.warning(
                "%d of %d trials failed (numbers %s); their job folders' summary.json say why",
                len(failed),
                len(trials),
                ", ".join(map(str, failed)),
            )


def stored_study(sweeper: DictConfig) -> tuple[Optional[str], str]:
    """(storage, study name) of an Optuna sweeper with a stored, named study; (None, "") otherwise."""
    storage, study_name = sweeper.get("storage"), sweeper.get("study_name")
    if "optuna" not in str(sweeper.get("_target_", "")).lower() or not storage or not study_name:
        return None, ""
    return str(storage), str(study_name)


def make_sqlite_folder(storage: str) -> None:
    """SQLite creates the database file but not the folders above it (the sweep folder, at first)."""
    prefix = "sqlite:///"
    if storage.startswith(prefix):
        Path(storage[len(prefix) :]).expanduser().parent.mkdir(parents=True, exist_ok=True)


def resume_study(storage: str, study_name: str) -> tuple[int, int]:
    """(trials finished, trials queued again) of a stored study; (0, 0) if there is none yet.

    A trial still marked running was cut off: it is marked failed and ``interrupted`` (so it does
    not count as finished) and its parameters are queued to be asked for again.
    """
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0, 0
    done = again = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING:
            study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
            study._storage.set_trial_state(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(dict(trial.params))
            again += 1
        elif trial.state.is_finished() and not trial.user_attrs.get(INTERRUPTED):
            done += 1
    return done, again
