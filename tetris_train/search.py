"""Optuna searches: the Hydra sweeper that asks a stored study for trials, and the job's side of a
trial (reporting its evaluations, stopping when the pruner says so).

The sweeper (``hydra/sweeper=optuna_search``, the plugin in ``hydra_plugins/tetris_train_search``)
reads its search space in Hydra's override grammar (``choice``, ``range``, ``interval``,
``tag(log, ...)``), as Hydra's own Optuna sweeper does, and runs each batch of trials through the
configured launcher. Each job learns its trial number from ``hydra.sweeper.trial``, reports every
evaluation's objective so far to the study, and stops as ``pruned`` when the study's pruner says so.
A search is resumable: trials cut off by an interruption are asked for again with the same
parameters (their jobs continue from their checkpoints), finished and pruned ones count.

Several sweep commands (workers, e.g. on several machines) may share one stored study: they draw
on one budget of ``n_trials``, each keeps its running trials alive with a heartbeat, and the trials
of a worker that died are failed once their heartbeat is stale and asked for again by any worker.

Nothing here imports optuna at module level: Hydra imports every sweeper plugin on each command.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from .cli import JobFailed, refuse, unparsable_override

log = logging.getLogger(__name__)

SWEEPER_TARGET = "hydra_plugins.tetris_train_search.OptunaSearch"
INTERRUPTED = "interrupted"  # user attribute of a trial cut off by an interruption
RETRY_OF = "retry_of"  # user attribute of a trial that runs an interrupted trial's parameters again
REPLACES = "replaces"  # ... and the number of the trial it replaces
NOT_RUN = "not_run"  # user attribute of a trial asked for but not run: over_budget or duplicate
PRUNED_AT = "pruned_at"  # user attribute: the step at which the job stopped as pruned
# what a sampler's or pruner's _target_ may name: nothing from a config file runs other code
ALLOWED_TARGETS = {"sampler": "optuna.samplers.", "pruner": "optuna.pruners."}
OPTUNA_MISSING = "an Optuna search needs optuna: pip install 'tetris-train[sweep]'"


@dataclass
class OptunaSearchConfig:
    """Settings of ``hydra/sweeper=optuna_search`` (``hydra.sweeper.*``).

    Attributes:
        sampler: Optuna sampler, as ``_target_`` (a class in ``optuna.samplers``) and its arguments.
        pruner: Optuna pruner fed by the trials' evaluations (a class in ``optuna.pruners``); null: none.
        direction: maximize or minimize the jobs' objective.
        storage: database URL of the study (sqlite:///..., postgresql://...); null keeps it in memory.
        study_name: name of the study in the storage.
        n_trials: trials of the whole search, counting those a resumed search already ran.
        n_jobs: trials launched together in one batch (run at once by a parallel launcher).
        max_failure_rate: fraction of a batch's trials that may fail before the search stops.
        params: search space, key: Hydra sweep expression (choice, range, interval, tag(log, ...)).
        heartbeat_s: seconds between a worker's signs of life for its running trials in a stored
            study; after twice that without one, another worker fails them and runs them again.
        trial: set by the search in each job (the job's trial number); leave unset.
    """

    _target_: str = SWEEPER_TARGET
    _recursive_: bool = False  # sampler and pruner reach the sweeper as configs; build() makes them
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = None
    pruner: Any = None
    direction: str = "maximize"
    storage: Optional[str] = None
    study_name: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.0
    params: Optional[dict[str, str]] = None
    heartbeat_s: int = 60
    trial: Optional[int] = None


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise refuse(OPTUNA_MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def build(kind: str, spec: Any) -> Any:
    """The sampler or pruner a config describes (``_target_`` in optuna's own modules only). No
    pruner is Optuna's NopPruner: given none, Optuna would prune with its median pruner."""
    spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec or {})
    if not spec:  # hydra/sweeper/pruner=none leaves an empty node
        if kind == "pruner":
            from optuna.pruners import NopPruner

            return NopPruner()
        return None
    target = spec.pop("_target_", None)
    prefix = ALLOWED_TARGETS[kind]
    if not isinstance(target, str) or not target.startswith(prefix):
        raise refuse(f"hydra.sweeper.{kind}._target_={target}: expected a class of {prefix.rstrip('.')}")
    import importlib

    module_name, _, class_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise refuse(f"hydra.sweeper.{kind}._target_={target}: no such class in {module_name}") from None
    try:
        return cls(**spec)
    except (TypeError, ValueError) as error:
        raise refuse(f"hydra.sweeper.{kind} ({target}): {error}") from None


# --- the search space --------------------------------------------------------------------------


def search_space(arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Optuna distributions of the sweep expressions among ``arguments``, and the other overrides
    (fixed for every trial). ``agent.lr=tag(log, interval(1e-4, 1e-2))`` -> FloatDistribution(log)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
    except HydraException as error:
        raise refuse(unparsable_override(arguments) or " ".join(str(error).split())) from None
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in parsed:
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:  # a fixed value, e.g. on the command line, takes the key out of the preset's space
            space.pop(override.get_key_element(), None)
            fixed.append(override.input_line)
    return space, fixed


def distribution(override: Any) -> Any:
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, sweep = override.get_key_element(), override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and sweep.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise refuse(f"{override.input_line}: the range holds no value")
        if all(isinstance(v, int) for v in values):
            step = values[1] - values[0] if len(values) > 1 else 1
            return IntDistribution(min(values), max(values), step=abs(step))
        return CategoricalDistribution([float(v) for v in values])  # float steps: exactly Hydra's values
    if override.is_interval_sweep():
        log_scale = "log" in sweep.tags
        start, end = sweep.start, sweep.end
        if start >= end or (log_scale and start <= 0):
            raise refuse(f"{override.input_line}: expected start < end{' and start > 0 on a log scale' * log_scale}")
        if isinstance(start, int) and isinstance(end, int):
            return IntDistribution(start, end, log=log_scale)
        return FloatDistribution(float(start), float(end), log=log_scale)
    raise refuse(f"{key}: {override.input_line} is not a sweep an Optuna search can sample")


def trial_overrides(params: dict[str, Any], fixed: list[str]) -> list[str]:
    return [f"{name}={value}" for name, value in params.items()] + fixed


def reproduce_command(params: dict[str, Any], fixed: list[str], schedule: Optional[str] = None) -> str:
    """The single-run command that trains a trial's configuration again, without the search: its
    parameters, the other overrides and the trial's ``schedule`` option (the search preset's)."""
    import shlex

    keys = ("hparams_search", "schedule") if schedule else ("hparams_search",)
    kept = [o for o in trial_overrides(params, fixed) if o.split("=", 1)[0].lstrip("+~") not in keys]
    if schedule:
        kept.insert(0, f"schedule={schedule}")
    return " ".join(["python -m tetris_train", *map(shlex.quote, kept)])


# --- the stored study --------------------------------------------------------------------------


SQLITE_BUSY_TIMEOUT_S = 60  # parallel jobs write to one SQLite study: wait for the lock, do not fail


def storage_of(url: Optional[str], heartbeat_s: Optional[int] = None) -> Any:
    """Optuna's storage for a database URL (None: in memory); SQLite waits for a busy database.
    With ``heartbeat_s`` (the sweeper's), running trials whose heartbeat is older than twice that
    can be failed by :func:`retry_stale_trials` and run again."""
    if not url:
        return None
    import optuna

    heartbeat: dict[str, Any] = {}
    if heartbeat_s:
        heartbeat = dict(heartbeat_interval=heartbeat_s, heartbeat_stale_trial_callback=retry_interrupted)
    engine_kwargs = None
    if url.startswith("sqlite:"):
        make_sqlite_folder(url)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental (since Optuna 2.9)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        except (IntegrityError, ProgrammingError) as error:  # workers creating a new database's tables at once
            if "already exists" not in str(error) or attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))  # the other worker's tables are there by then
    raise AssertionError("unreachable")


def open_study(
    storage: Optional[str],
    study_name: Optional[str],
    direction: str,
    sampler: Any,
    pruner: Any,
    heartbeat_s: Optional[int] = None,
) -> Any:
    """Create or load the study; a database of another Optuna version, a URL that does not open
    and the like are refused with one line."""
    optuna = import_optuna()
    from sqlalchemy.exc import SQLAlchemyError

    if direction not in ("maximize", "minimize"):
        raise refuse(f"hydra.sweeper.direction={direction}: expected maximize or minimize")
    if storage and not study_name:
        raise refuse("hydra.sweeper.study_name=null: a stored study needs a name, so that a search resumes it")
    try:
        return optuna.create_study(
            storage=storage_of(storage, heartbeat_s),
            study_name=study_name,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except RuntimeError as error:
        if "table schema" not in str(error) and "upgrade" not in str(error):
            raise
        raise refuse(
            f"hydra.sweeper.storage={storage}: the study was stored by another Optuna version "
            f"({' '.join(str(error).split()).split(' Please')[0]}); back it up, then upgrade it in place: "
            f"optuna storage upgrade --storage {storage}"
        ) from None
    except (ValueError, ImportError, OSError, SQLAlchemyError) as error:  # a direction unlike the stored one,
        reason = " ".join(str(error).split()).split(" (Background on this error")[0]  # no driver, a bad URL
        raise refuse(f"hydra.sweeper.storage={storage}: {reason}") from None


def make_sqlite_folder(storage: str) -> None:
    """SQLite creates the database file but not the folders above it (the sweep folder, at first)."""
    prefix = "sqlite:///"
    if storage.startswith(prefix):
        Path(storage[len(prefix) :]).expanduser().parent.mkdir(parents=True, exist_ok=True)


def retry_interrupted(study: Any, trial: Any) -> None:
    """A failed trial that was cut off (its worker stopped, or died and its heartbeat went stale):
    its parameters are queued again, so that the trial that runs them finds its run folder and
    continues from its checkpoint. The retry keeps the first trial's budget slot and names the trial
    it replaces (a finished trial takes no more attributes)."""
    if any(t.user_attrs.get(REPLACES) == trial.number for t in study.get_trials(deepcopy=False)):
        return  # another worker queued it already
    original = trial.user_attrs.get(RETRY_OF, trial.number)
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: original, REPLACES: trial.number})
    log.info("trial %d was cut off: its parameters are queued to run again", trial.number)


def interrupt(study: Any, trials: list[Any]) -> None:
    """This worker's trials that it stops before they ended: failed and queued again."""
    from optuna.trial import TrialState

    for trial in trials:
        try:
            if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                retry_interrupted(study, study._storage.get_trial(trial._trial_id))
        except Exception as error:  # failed as lost by another worker meanwhile, or the database is gone
            log.warning("trial %d not queued again here: %s", trial.number, error)


def cut_off(trials: list[Any]) -> set[int]:
    """Numbers of the trials that were cut off and replaced by a retry."""
    return {t.number for t in trials if t.user_attrs.get(INTERRUPTED)} | {
        t.user_attrs[REPLACES] for t in trials if REPLACES in t.user_attrs
    }


def retry_stale_trials(study: Any) -> None:
    """Fail the running trials of workers whose heartbeat stopped; their retries are queued."""
    import optuna

    with warnings.catch_warnings():  # experimental since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def slot_takers(trials: list[Any]) -> list[Any]:
    """The trials that count against ``n_trials``: retries take their first trial's slot, trials
    asked for but never run take none, and so does a trial marked interrupted by an earlier version,
    whose retry carries no mark and counts itself."""
    replaced = {t.user_attrs[REPLACES] for t in trials if REPLACES in t.user_attrs}
    return [
        t
        for t in trials
        if RETRY_OF not in t.user_attrs
        and NOT_RUN not in t.user_attrs
        and (not t.user_attrs.get(INTERRUPTED) or t.number in replaced)
    ]


def budget(study: Any) -> tuple[int, int]:
    """(slots of n_trials taken, trials queued to run again) of a study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return len(slot_takers(trials)), sum(t.state == TrialState.WAITING for t in trials)


class Heartbeat:
    """A thread that records a heartbeat for this worker's running trials every ``every_s`` seconds,
    so that other workers leave them alone until this one dies."""

    def __init__(self, study: Any, every_s: float):
        self.storage, self.every_s = study._storage, every_s
        self.enabled = bool(getattr(self.storage, "get_heartbeat_interval", lambda: None)())
        self.trial_ids: set[int] = set()
        self.seen: set[int] = set()  # running trials given one heartbeat by once()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="trial-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()

    def add(self, trial: Any) -> None:
        with self.lock:
            self.trial_ids.add(trial._trial_id)
        self.beat([trial._trial_id])

    def once(self, trials: list[Any]) -> None:
        """One heartbeat for running trials this worker has not seen yet: a trial whose worker died
        before its first heartbeat (or a study from before heartbeats) never goes stale otherwise.
        A live worker's trial only gets one beat more."""
        self.seen.update(self.beat([t._trial_id for t in trials if t._trial_id not in self.seen]))

    def remove(self, trial: Any) -> None:
        with self.lock:
            self.trial_ids.discard(trial._trial_id)

    def beat(self, trial_ids: list[int]) -> list[int]:
        """Record a heartbeat for each trial; the ids recorded."""
        if not self.enabled:
            return []
        recorded = []
        for trial_id in trial_ids:
            try:
                self.storage.record_heartbeat(trial_id)
                recorded.append(trial_id)
            except Exception as error:  # a database hiccup must not stop the search
                log.warning("heartbeat of trial id %d not recorded: %s", trial_id, error)
        return recorded

    def _run(self) -> None:
        while not self.stopped.wait(self.every_s):
            with self.lock:
                trial_ids = list(self.trial_ids)
            self.beat(trial_ids)


OBJECTIVE_ATTR = "objective"  # the study's user attribute: the schedule.objective its trials report


def check_objective(study: Any, objective: str) -> None:
    """A study ranks one kind of objective: refuse to add trials of another (a study stored before
    the attribute existed holds ``best`` values)."""
    from optuna.trial import TrialState

    stored = study.user_attrs.get(OBJECTIVE_ATTR)
    if stored is None and any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        stored = "best"
    if stored is not None and stored != objective:
        raise refuse(
            f"schedule.objective={objective}: study {study.study_name} ranks trials by schedule.objective={stored}; "
            f"resume it with schedule.objective={stored}, or start another study (hydra.sweep.dir=...)"
        )
    study.set_user_attr(OBJECTIVE_ATTR, objective)


HEARTBEAT_ATTR = "heartbeat_s"  # the study's user attribute: its workers' heartbeat interval


def check_heartbeat(study: Any, heartbeat_s: int) -> None:
    """Every worker of a study judges the others' heartbeats by its own interval: one interval per
    study, or a worker beating slowly would have its live trials failed by a faster one."""
    stored = study.user_attrs.get(HEARTBEAT_ATTR)
    if stored is not None and stored != heartbeat_s:
        raise refuse(
            f"hydra.sweeper.heartbeat_s={heartbeat_s}: study {study.study_name} is searched with "
            f"hydra.sweeper.heartbeat_s={stored}; use the same for every worker"
        )
    study.set_user_attr(HEARTBEAT_ATTR, heartbeat_s)


def reseeded(spec: Any, offset: int) -> Any:
    """A seeded sampler config moved on by ``offset`` (the trials the study holds): seeded as
    before, a resumed search would propose the first session's parameters again."""
    if spec is None or not offset or spec.get("seed") is None:
        return spec
    spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
    spec["seed"] = int(spec["seed"]) + offset
    return spec


# --- the sweeper -------------------------------------------------------------------------------


class OptunaSearchImpl:
    """The body of the ``optuna_search`` Hydra sweeper (the plugin class only forwards to it)."""

    def __init__(self, **settings: Any):
        self.settings = OptunaSearchConfig(**{k: v for k, v in settings.items() if k != "defaults"})
        self.job_idx = 0

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        s = self.settings
        if not (isinstance(s.n_trials, int) and s.n_trials >= 1):
            raise refuse(f"hydra.sweeper.n_trials={s.n_trials}: expected an integer >= 1")
        if not (isinstance(s.n_jobs, int) and s.n_jobs >= 1):
            raise refuse(f"hydra.sweeper.n_jobs={s.n_jobs}: expected an integer >= 1")
        if not 0 <= s.max_failure_rate <= 1:
            raise refuse(f"hydra.sweeper.max_failure_rate={s.max_failure_rate}: expected a number in [0, 1]")
        if s.pruner and not s.storage:
            raise refuse(
                "hydra.sweeper.storage=null: pruning needs a stored study that the jobs report to "
                "(e.g. hydra.sweeper.storage=sqlite:///${hydra.sweep.dir}/optuna.db), or hydra/sweeper/pruner=none"
            )
        import_optuna()
        from optuna.trial import TrialState

        space, fixed = search_space([f"{k}={v}" for k, v in (s.params or {}).items()] + list(arguments))
        heartbeat_s = s.heartbeat_s if s.storage else None
        if heartbeat_s is not None and not (isinstance(heartbeat_s, int) and heartbeat_s >= 1):
            raise refuse(f"hydra.sweeper.heartbeat_s={heartbeat_s}: expected an integer >= 1 (seconds)")
        study = open_study(
            s.storage, s.study_name, s.direction, build("sampler", s.sampler), build("pruner", s.pruner), heartbeat_s
        )
        check_objective(study, str(self.config.schedule.objective))
        if s.storage:
            check_heartbeat(study, heartbeat_s)
            retry_stale_trials(study)
        taken, again = budget(study)
        study.sampler = build("sampler", reseeded(s.sampler, len(study.get_trials(deepcopy=False))))
        if taken:
            log.info(
                "study %s already holds %d of %d trials (finished, running or failed); cut off, to run again: %d",
                study.study_name,
                taken,
                s.n_trials,
                again,
            )
        log.info(
            "study %s in %s: new trials to run: %d", study.study_name, s.storage or "memory", max(s.n_trials - taken, 0)
        )
        waiting_for: list[int] = []
        with Heartbeat(study, heartbeat_s or 1) as heartbeat:
            heartbeat.once(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            while True:
                if s.storage:
                    retry_stale_trials(study)
                trials = self.ask_batch(study, space, heartbeat)
                if not trials:
                    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if not running:
                        break
                    numbers = [t.number for t in running]
                    if numbers != waiting_for:  # trials of other workers: one of them may die and need a retry
                        log.info("no trial left to start; waiting for trials %s of other workers", numbers)
                        waiting_for = numbers
                        heartbeat.once(running)
                    time.sleep(heartbeat_s or 1)
                    continue
                try:
                    returns = self.launch(trials, fixed)
                except BaseException:  # interrupted: the trials run again when the search resumes
                    interrupt(study, trials)
                    raise
                failures = []
                for trial, result in zip(trials, returns):
                    state, value = self.outcome(study, trial, result)
                    if state == TrialState.FAIL:
                        failures.append((trial, result))
                    heartbeat.remove(trial)
                    self.tell(study, trial, value, state)
                if failures and len(failures) / len(returns) > s.max_failure_rate:
                    trial, result = failures[0]
                    error = result._return_value
                    if not isinstance(error, BaseException):
                        error = JobFailed(f"trial {trial.number} gave no objective")
                    raise error
        self.finish(study, fixed)

    def ask_batch(self, study: Any, space: dict[str, Any], heartbeat: Heartbeat) -> list[Any]:
        """Up to ``n_jobs`` trials to run now: queued retries first, then new ones while the budget
        of ``n_trials`` lasts; none when it is used up."""
        batch: list[Any] = []
        while len(batch) < self.settings.n_jobs:
            trial = self.ask(study, space, batch)
            if trial is None:
                break
            heartbeat.add(trial)
            batch.append(trial)
        return batch

    def ask(self, study: Any, space: dict[str, Any], batch: list[Any], attempts: int = 20) -> Optional[Any]:
        """One trial to run, or None once the study's budget is used up.

        Several workers may ask at once: a new trial numbered past the budget is told failed and
        ``not_run`` (over_budget); a proposal equal to a trial another worker is running is told
        ``not_run`` (duplicate) and asked again from a reseeded sampler.
        """
        from optuna.trial import TrialState

        taken, waiting = budget(study)
        if taken >= self.settings.n_trials and not waiting:
            return None
        for attempt in range(attempts):
            with warnings.catch_warnings():  # this sweeper keeps the heartbeats that Study.optimize would
                warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
                trial = study.ask(space)
            stored = study._storage.get_trial(trial._trial_id)
            if RETRY_OF in stored.user_attrs:
                return trial
            others = study.get_trials(deepcopy=False)
            if sum(t.number < trial.number for t in slot_takers(others)) >= self.settings.n_trials:
                self.not_run(study, trial, "over_budget")
                return None
            mine = {t.number for t in batch} | {trial.number}
            duplicate = any(
                t.state == TrialState.RUNNING and t.number not in mine and t.params == trial.params for t in others
            )
            if not duplicate or attempt == attempts - 1:  # the last one waits for the other's run folder
                return trial
            self.not_run(study, trial, "duplicate")
            study.sampler.reseed_rng()  # two workers seeded alike part ways
        return None

    @staticmethod
    def tell(study: Any, trial: Any, value: Optional[float], state: Any) -> None:
        """Record how a trial ended, unless another worker failed it as lost meanwhile (its heartbeat
        came too late): then its retry replays the run this trial finished."""
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            log.warning("trial %d was failed as lost by another worker; its retry replays its run", trial.number)
        study.tell(trial, value, state=state, skip_if_finished=True)

    @staticmethod
    def not_run(study: Any, trial: Any, why: str) -> None:
        from optuna.trial import TrialState

        study._storage.set_trial_user_attr(trial._trial_id, NOT_RUN, why)
        study.tell(trial, state=TrialState.FAIL)

    def launch(self, trials: list[Any], fixed: list[str]) -> list[Any]:
        """Run the trials' jobs; trials with the same parameters (one run folder) one after another,
        so that the later one finds the earlier one's run instead of training beside it."""
        jobs = [trial_overrides(t.params, fixed) for t in trials]
        returns: list[Any] = [None] * len(trials)
        pending = list(range(len(trials)))
        while pending:
            batch, seen = [], set()
            for i in pending:
                if tuple(jobs[i]) not in seen:
                    seen.add(tuple(jobs[i]))
                    batch.append(i)
            overrides = [jobs[i] + [f"hydra.sweeper.trial={trials[i].number}"] for i in batch]
            for i, result in zip(batch, self.launcher.launch(overrides, initial_job_idx=self.job_idx)):
                returns[i] = result
            self.job_idx += len(batch)
            pending = [i for i in pending if i not in batch]
        return returns

    @staticmethod
    def outcome(study: Any, trial: Any, result: Any) -> tuple[Any, Optional[float]]:
        """How a job ended, as the study records it: complete (with its objective), pruned or failed."""
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        if result.status != JobStatus.COMPLETED:
            log.warning("trial %d failed: %s", trial.number, result._return_value)
            return TrialState.FAIL, None
        stored = study._storage.get_trial(trial._trial_id)
        if PRUNED_AT in stored.user_attrs:
            return TrialState.PRUNED, None
        value = result.return_value
        if not isinstance(value, (int, float)) or math.isnan(value):
            log.warning("trial %d returned no objective (%r)", trial.number, value)
            return TrialState.FAIL, None
        return TrialState.COMPLETE, float(value)

    def finish(self, study: Any, fixed: list[str]) -> None:
        """Name the failed trials, write ``optimization_results.yaml`` and log the best trial."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        replaced = cut_off(trials)
        failed = [
            t.number
            for t in trials
            if t.state == TrialState.FAIL and t.number not in replaced and NOT_RUN not in t.user_attrs
        ]
        if failed:  # the search itself went through: a warning, not a failure
            log.warning(
                "%d of %d trials failed (numbers %s); their job folders' summary.json say why",
                len(failed),
                len(trials),
                ", ".join(map(str, failed)),
            )
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise JobFailed("no trial of the search finished; the job folders' summary.json say why")
        best = study.best_trial
        results = {
            "name": "optuna_search",
            "study_name": study.study_name,
            "storage": self.settings.storage,
            "best_value": best.value,
            "best_params": dict(best.params),
            "best_trial": best.number,
            "trials": {"complete": len(complete), "pruned": pruned, "failed": len(failed)},
            "command": reproduce_command(best.params, fixed, self.config.hydra.runtime.choices.get("schedule")),
        }
        from .run_folder import write_atomic

        # several workers may finish one after another: each writes the whole study's results
        write_atomic(
            Path(self.config.hydra.sweep.dir) / "optimization_results.yaml",
            OmegaConf.to_yaml(OmegaConf.create(results)),
        )
        log.info("best trial %d: objective %.1f; %s", best.number, best.value, results["command"])


# --- the job's side of a trial -----------------------------------------------------------------


class TrialReporter:
    """A job's trial in a stored study: reports the run's objective so far after each evaluation
    and answers whether the study's pruner stops it."""

    def __init__(self, trial: Any):
        self.trial = trial

    @classmethod
    def from_hydra(cls) -> Optional[TrialReporter]:
        """The trial of this job if it runs in an ``optuna_search`` sweep with a stored study."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        sweeper = HydraConfig.get().sweeper
        if sweeper.get("_target_") != SWEEPER_TARGET or sweeper.get("trial") is None or not sweeper.get("storage"):
            return None
        optuna = import_optuna()
        pruner = build("pruner", sweeper.get("pruner"))
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage_of(sweeper.storage), pruner=pruner)
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(sweeper.trial))
        return cls(optuna.trial.Trial(study, trial_id))

    def report(self, step: int, value: float) -> None:
        if step not in self.trial.storage.get_trial(self.trial._trial_id).intermediate_values:
            self.trial.report(value, step)

    def report_history(self, history: list[dict[str, Any]], objective: str, start: int = 0, ask: bool = True) -> bool:
        """Report the objective after each evaluation of ``history`` from index ``start`` on and, with
        ``ask``, ask the pruner after each one, as if they came one at a time; True if it says to prune."""
        from .objective import objective_of

        for n in range(start, len(history)):
            self.report(history[n]["timesteps"], objective_of(history[: n + 1], objective))
            if ask and self.should_prune():
                return True
        return False

    def replay(self, run_dir: Path, summary: dict[str, Any], schedule: Any) -> None:
        """A trial whose parameters were already run to the end in ``run_dir`` (the sampler proposed
        them again): the study learns that run's evaluations, and that it was pruned if it was."""
        from .run_folder import EVALUATIONS_FILE, read_history

        self.report_history(read_history(Path(run_dir) / EVALUATIONS_FILE), schedule.objective, ask=False)
        if summary.get("status") == "pruned":
            self.mark_pruned(int(summary.get("timesteps", 0)))

    def should_prune(self) -> bool:
        return self.trial.should_prune()

    def mark_pruned(self, step: int) -> None:
        self.trial.set_user_attr(PRUNED_AT, step)
