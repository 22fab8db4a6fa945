"""The Optuna search (hydra/sweeper=optuna_search): its search space, its refusals, pruning as real
`-m` searches run it, stopping at the piece cap, and the objective."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_cli import run_cli
from tests.test_sweeps import optuna_trials, summaries
from tetris_train.objective import objective_of, planned_evaluations
from tetris_train.search import OPTUNA_MISSING

TINY = ["schedule=smoke"]  # 2,000 steps, an evaluation of 2 games every 1,000
DATA = Path(__file__).parent / "data"


def search(sweep: Path, *extra: str) -> list[str]:
    return ["-m", "hparams_search=dqn_optuna", *TINY, f"hydra.sweep.dir={sweep}", *extra]


# --- the search space ------------------------------------------------------------------------


def test_search_space_reads_hydra_sweep_expressions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from tetris_train.search import search_space

    space, fixed = search_space(
        [
            "agent.learning_rate=tag(log, interval(1e-4, 1e-2))",
            "agent.gamma=interval(0.9, 0.99)",
            "agent.batch_size=choice(64, 128)",
            "agent.net_arch=choice('[32,32]', '[64,64]')",
            "agent.target_update_interval=range(100, 1000, 300)",
            "agent.train_freq=int(interval(1, 8))",
            "schedule=smoke",
            "seed=3",
        ]
    )
    assert space["agent.learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["agent.gamma"] == FloatDistribution(0.9, 0.99)
    assert space["agent.batch_size"] == CategoricalDistribution([64, 128])
    assert space["agent.net_arch"] == CategoricalDistribution(["[32,32]", "[64,64]"])
    assert space["agent.target_update_interval"] == IntDistribution(100, 700, step=300)  # Hydra's stop is exclusive
    assert space["agent.train_freq"] == IntDistribution(1, 8)
    assert fixed == ["schedule=smoke", "seed=3"]

    space, fixed = search_space(
        ["agent.batch_size=choice(64, 128)", "agent.gamma=interval(0.9, 0.99)", "agent.batch_size=32"]
    )
    assert list(space) == ["agent.gamma"] and fixed == ["agent.batch_size=32"]  # a fixed value wins over the preset's


@pytest.mark.parametrize(
    "argument, must_say",
    [
        ("agent.gamma=interval(0.99, 0.9)", "expected start < end"),
        ("agent.learning_rate=tag(log, interval(0, 1))", "start > 0 on a log scale"),
        ("agent.batch_size=range(8, 8)", "the range holds no value"),
        ("agent.gamma=interval(0.9,", "agent.gamma=interval(0.9,"),
    ],
)
def test_a_search_space_that_cannot_be_sampled_is_refused(argument, must_say, capsys):
    from tetris_train.cli import BadInputExit
    from tetris_train.search import search_space

    with pytest.raises(BadInputExit):
        search_space([argument])
    assert must_say in capsys.readouterr().err


def test_no_pruner_means_no_pruning():
    from optuna.pruners import MedianPruner, NopPruner

    from tetris_train.search import build

    # a study given no pruner would prune with Optuna's median pruner
    assert isinstance(build("pruner", {}), NopPruner) and isinstance(build("pruner", None), NopPruner)
    assert isinstance(build("pruner", {"_target_": "optuna.pruners.MedianPruner"}), MedianPruner)
    assert build("sampler", {}) is None  # Optuna's default sampler (TPE)


def test_samplers_and_pruners_come_only_from_optuna(tmp_path):
    result = run_cli(tmp_path, *search(tmp_path / "sweep", "hydra.sweeper.sampler._target_=os.system"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: hydra.sweeper.sampler._target_=os.system: expected a class of optuna.samplers"
    ]
    assert not (tmp_path / "sweep").exists() or not any((tmp_path / "sweep").glob("*/summary.json"))


def test_a_search_without_optuna_installed_names_the_extra(tmp_path):
    script = (
        "import runpy, sys; sys.modules['optuna'] = None; "  # as where the sweep extra is not installed
        f"sys.argv = ['tetris_train', '-m', 'hparams_search=dqn_optuna', 'hydra.sweep.dir={tmp_path / 'sweep'}']; "
        "runpy.run_module('tetris_train', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {OPTUNA_MISSING}"]
    assert "pip install 'tetris-train[sweep]'" in OPTUNA_MISSING


def test_pruning_without_a_stored_study_is_refused(tmp_path):
    result = run_cli(tmp_path, *search(tmp_path / "sweep", "hydra.sweeper.storage=null"))
    assert result.returncode == 2
    assert "pruning needs a stored study" in result.stderr and "hydra/sweeper/pruner=none" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "override, must_say",
    [
        ("hydra.sweeper.storage=nowhere", "hydra.sweeper.storage=nowhere: "),
        ("hydra.sweeper.storage=postgresql://localhost/x", "hydra.sweeper.storage=postgresql://localhost/x: "),
        ("hydra.sweeper.study_name=null", "a stored study needs a name"),
    ],
)
def test_a_study_that_cannot_open_is_refused_in_one_line(tmp_path, override, must_say):
    result = run_cli(tmp_path, *search(tmp_path / "sweep", override))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and must_say in line


def test_trials_proposing_one_configuration_at_once_train_it_once(tmp_path):
    sweep = tmp_path / "sweep"
    command = search(
        sweep,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.params=null",
        "schedule.max_timesteps=choice(2000)",  # every trial proposes the same run
    )
    result = run_cli(tmp_path, *command)
    assert result.returncode == 0, result.stderr
    trials = optuna_trials(sweep)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"] and trials[0].value == trials[1].value
    [summary] = summaries(sweep).values()
    assert summary["status"] == "finished" and summary["timesteps"] == 2000
    assert "finished: not training it again" in result.stdout + result.stderr


# --- workers sharing a study (the real thing, two processes on PostgreSQL: test_shared_study.py) ---


def searcher(n_trials: int):
    from tetris_train.search import OptunaSearchImpl

    return OptunaSearchImpl(n_trials=n_trials, n_jobs=1)


def test_a_study_gives_out_n_trials_in_all_and_past_that_nothing():
    import optuna
    from optuna.distributions import FloatDistribution

    from tetris_train.search import NOT_RUN

    study = optuna.create_study(direction="maximize")
    space = {"agent.gamma": FloatDistribution(0.9, 0.99)}
    impl = searcher(n_trials=2)
    assert impl.ask(study, space, []) is not None and impl.ask(study, space, []) is not None
    assert impl.ask(study, space, []) is None and len(study.trials) == 2  # nothing asked past the budget
    # a trial another worker queued after the budget was used up: asked for, then told it is past it
    study.enqueue_trial({"agent.gamma": 0.95})
    assert impl.ask(study, space, []) is None
    late = study.trials[-1]
    assert late.state == optuna.trial.TrialState.FAIL and late.user_attrs[NOT_RUN] == "over_budget"


def test_a_proposal_another_worker_is_running_is_set_aside():
    import optuna
    from optuna.distributions import CategoricalDistribution

    from tetris_train.search import NOT_RUN

    study = optuna.create_study(direction="maximize")
    space = {"agent.batch_size": CategoricalDistribution([64])}  # every proposal the same
    running = study.ask(space)  # another worker's trial
    impl = searcher(n_trials=10)
    trial = impl.ask(study, space, [], attempts=3)
    # set aside twice, then taken: its run folder's lock makes it wait for the other worker's run
    assert [t.user_attrs.get(NOT_RUN) for t in study.trials] == [None, "duplicate", "duplicate", None]
    assert trial.number == 3 and trial.params == running.params
    # within one worker's own batch a repeated proposal is not set aside (the batch runs it in turn)
    study.tell(running, 1.0)
    assert impl.ask(study, space, [trial]).number == 4


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the lost worker's ask, made here by hand
def test_a_dead_workers_trial_is_failed_once_its_heartbeat_is_stale_and_runs_again(tmp_path):
    import time

    import optuna
    from optuna.distributions import FloatDistribution

    from tetris_train.search import RETRY_OF, budget, open_study, retry_stale_trials

    url = f"sqlite:///{tmp_path}/study.db"
    study = open_study(url, "s", "maximize", None, None, heartbeat_s=1)
    space = {"agent.gamma": FloatDistribution(0.9, 0.99)}
    lost = study.ask(space)
    study._storage.record_heartbeat(lost._trial_id)  # then its worker dies
    retry_stale_trials(study)
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING  # not stale yet
    time.sleep(3)
    retry_stale_trials(open_study(url, "s", "maximize", None, None, heartbeat_s=1))  # another worker
    first, again = study.get_trials()
    assert first.state == optuna.trial.TrialState.FAIL
    assert again.state == optuna.trial.TrialState.WAITING and again.params == {}
    assert again.user_attrs == {RETRY_OF: 0, "replaces": 0}
    assert budget(study) == (1, 1)  # the retry keeps the lost trial's slot
    retried = searcher(n_trials=1).ask(study, space, [])
    assert retried.number == 1 and retried.params == lost.params


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_live_workers_heartbeat_keeps_its_trial_and_a_late_tell_is_harmless(tmp_path):
    import time

    import optuna
    from optuna.distributions import FloatDistribution

    from tetris_train.search import Heartbeat, OptunaSearchImpl, open_study, retry_stale_trials

    url = f"sqlite:///{tmp_path}/study.db"
    study = open_study(url, "s", "maximize", None, None, heartbeat_s=1)
    other = open_study(url, "s", "maximize", None, None, heartbeat_s=1)  # another worker's view
    trial = study.ask({"agent.gamma": FloatDistribution(0.9, 0.99)})
    with Heartbeat(study, every_s=1) as heartbeat:
        heartbeat.add(trial)
        time.sleep(3)  # more than the 2 s grace period
        retry_stale_trials(other)
        assert study.trials[0].state == optuna.trial.TrialState.RUNNING  # alive: left alone
    time.sleep(3)  # the worker stops beating (it stalled): the other fails the trial and queues it
    retry_stale_trials(other)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    retry_stale_trials(other)  # failing it again queues no second retry
    assert len(study.get_trials()) == 2
    OptunaSearchImpl.tell(study, trial, 5.0, optuna.trial.TrialState.COMPLETE)  # the stalled worker's result
    assert study.get_trials()[0].state == optuna.trial.TrialState.FAIL


def test_workers_of_a_study_keep_one_heartbeat_interval(tmp_path, capsys):
    from tetris_train.cli import BadInputExit
    from tetris_train.search import check_heartbeat, open_study

    study = open_study(f"sqlite:///{tmp_path}/study.db", "s", "maximize", None, None, heartbeat_s=60)
    check_heartbeat(study, 60)
    check_heartbeat(study, 60)
    with pytest.raises(BadInputExit):
        check_heartbeat(study, 10)
    assert (
        "hydra.sweeper.heartbeat_s=10: study s is searched with hydra.sweeper.heartbeat_s=60" in capsys.readouterr().err
    )


def test_a_study_interrupted_under_an_earlier_version_counts_each_trial_once():
    import optuna
    from optuna.distributions import FloatDistribution

    from tetris_train.search import budget

    study = optuna.create_study(direction="maximize")
    cut = study.ask({"agent.gamma": FloatDistribution(0.9, 0.99)})
    study.set_user_attr("objective", "best")
    study._storage.set_trial_user_attr(cut._trial_id, "interrupted", True)
    study.tell(cut, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(dict(cut.params))  # that version's retry: no marks
    assert budget(study) == (1, 1)


def test_a_study_stored_by_optuna_2_is_refused_with_the_upgrade_command(tmp_path):
    # tests/data/optuna-2.10.db: a 2-trial study written by optuna 2.10.1 (the version this project used before)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copy(DATA / "optuna-2.10.db", sweep / "optuna.db")
    before = (sweep / "optuna.db").read_bytes()
    result = run_cli(tmp_path, *search(sweep))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "stored by another Optuna version" in line and "2.10.1" in line
    assert f"optuna storage upgrade --storage sqlite:///{sweep}/optuna.db" in line
    assert (sweep / "optuna.db").read_bytes() == before  # left as it was
    assert sorted(p.name for p in sweep.iterdir()) == ["optuna.db"]

    upgrade = Path(sys.executable).parent / "optuna"  # the command the line names
    storage = f"sqlite:///{sweep}/optuna.db"
    subprocess.run([str(upgrade), "storage", "upgrade", "--storage", storage], check=True, capture_output=True)
    resumed = run_cli(tmp_path, *search(sweep, "hydra.sweeper.n_trials=3", "schedule.max_timesteps=1000"))
    assert resumed.returncode == 0, resumed.stderr
    assert "already holds 2 of 3 trials" in resumed.stdout + resumed.stderr
    assert [t.state.name for t in optuna_trials(sweep)] == ["COMPLETE", "COMPLETE", "COMPLETE"]
    # its trials rank runs by their best evaluation: trials of another objective are not mixed in
    other = run_cli(tmp_path, *search(sweep, "hydra.sweeper.n_trials=4", "schedule.objective=mean"))
    assert other.returncode == 2
    assert "ranks trials by schedule.objective=best" in other.stderr and len(other.stderr.strip().splitlines()) == 1


# --- pruning -----------------------------------------------------------------------------------


def test_a_pruned_trial_stops_is_recorded_as_pruned_and_is_never_resumed(tmp_path):
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    command = search(
        sweep,
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.params=null",
        "schedule.max_timesteps=choice(2000,6000)",
        # prunes every trial that reports at or past 3,000 steps: only the longer trials get there
        "hydra/sweeper/pruner=none",
        "+hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=1000000",
        "+hydra.sweeper.pruner.n_warmup_steps=3000",
    )
    result = run_cli(tmp_path, *command)
    assert result.returncode == 0, result.stderr
    trials = optuna_trials(sweep)
    assert len(trials) == 4
    lengths = {t.number: t.params["schedule.max_timesteps"] for t in trials}
    assert set(lengths.values()) == {2000, 6000}  # this seed draws both
    for trial in trials:
        if lengths[trial.number] == 6000:
            assert trial.state == TrialState.PRUNED
            assert sorted(trial.intermediate_values) == [1000, 2000, 3000]
            assert trial.user_attrs["pruned_at"] == 3000
        else:
            assert trial.state == TrialState.COMPLETE and trial.value is not None
    runs = summaries(sweep)
    for name, summary in runs.items():
        if "max_timesteps=6000" in name:
            assert (summary["status"], summary["stop_reason"], summary["timesteps"]) == ("pruned", "pruned", 3000)
        else:
            assert (summary["status"], summary["timesteps"]) == ("finished", 2000)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    pruned = sum(length == 6000 for length in lengths.values())
    assert results["trials"] == {"complete": 4 - pruned, "pruned": pruned, "failed": 0}
    assert results["command"] == "python -m tetris_train schedule=smoke schedule.max_timesteps=2000"
    assert "hparams_search" not in results["command"]

    report = subprocess.run([sys.executable, "-m", "tetris_train.report", str(sweep)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert report.stdout.count("pruned") >= pruned
    assert f"search: best trial {results['best_trial']}" in report.stdout
    assert f"to train it again: {results['command']}" in report.stdout

    again = run_cli(tmp_path, *command)  # the same search again: every trial counts, nothing is trained
    assert again.returncode == 0, again.stderr
    assert "already holds 4 of 4 trials" in again.stdout + again.stderr
    assert len(optuna_trials(sweep)) == 4
    assert summaries(sweep) == runs


# --- stopping at the piece cap and the objective ---------------------------------------------


def test_a_run_stops_once_its_evaluations_reach_the_piece_cap(tmp_path):
    run = tmp_path / "run"
    command = [
        *TINY,
        "schedule.max_timesteps=6000",
        "env.max_pieces=5",  # every evaluation game reaches the cap
        "schedule.stop_at_cap=2",
        "schedule.objective=mean",
        f"hydra.run.dir={run}",
    ]
    result = run_cli(tmp_path, *command)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["stop_reason"], summary["timesteps"]) == ("finished", "capped", 2000)
    evaluations = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [e["reached_cap"] for e in evaluations] == [1.0, 1.0]
    assert summary["objective"] == pytest.approx(objective_of(evaluations, "mean", planned=6))
    assert summary["objective_source"] == "mean of evaluations"

    again = run_cli(tmp_path, *command)  # finished: not trained again
    assert again.returncode == 0 and "finished: not training it again" in again.stdout + again.stderr
    later = run_cli(tmp_path, *command[:-2], "schedule.stop_at_cap=0", f"hydra.run.dir={run}")
    assert later.returncode == 0, later.stderr  # without the stop, the run goes on to max_timesteps
    assert json.loads((run / "summary.json").read_text())["timesteps"] == 6000


def test_the_objective_of_evaluations():
    history = [{"mean_lines": v} for v in (10.0, 40.0, 30.0)]
    assert objective_of(history, "best") == 40.0
    assert objective_of(history, "mean") == pytest.approx(80 / 3)
    assert objective_of(history, "mean", planned=5) == pytest.approx((80 + 60) / 5)  # carried at its last value
    assert objective_of(history, "best", planned=5) == 40.0
    assert objective_of([], "mean") is None
    assert planned_evaluations(500_000, 25_000) == 20
    assert planned_evaluations(6_000, 4_000) == 2  # one at 4,000, one at the end
    assert planned_evaluations(6_000, 0) == 1


@pytest.mark.parametrize(
    "override, must_say",
    [
        ("schedule.objective=area", "schedule.objective=area is invalid: expected best or mean"),
        ("schedule.stop_at_cap=-1", "schedule.stop_at_cap=-1 is invalid: expected an integer >= 0"),
    ],
)
def test_bad_early_stop_settings_are_refused(tmp_path, override, must_say):
    result = run_cli(tmp_path, override)
    assert result.returncode == 2 and must_say in result.stderr
