"""One training run in-process: the files it writes, evaluation and best, stops at awkward moments."""

import csv
import json
import os
import signal

import pytest

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TetrisAgent, TrainingConfig
from tetris_train.checkpoints import CheckpointError, read_metadata
from tetris_train.train import run_training


def config(**schedule) -> TrainingConfig:
    return TrainingConfig(
        agent=AgentConfig(buffer_size=2_000, learning_starts=100, batch_size=32, net_arch=(16,)),
        env=EnvConfig(width=6, height=10, max_pieces=50),
        schedule=ScheduleConfig(
            **{
                "max_timesteps": 800,
                "checkpoint_freq": 400,
                "eval_freq": 200,
                "eval_episodes": 2,
                "log_interval": 100,
                "tensorboard": False,
                "progress_bar": False,
                **schedule,
            }
        ),
    )


def metrics_rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def evaluations(run):
    return [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]


def test_evaluations_best_checkpoint_and_learning_curve(tmp_path):
    result = run_training(config(), tmp_path)
    assert result.status == "finished" and result.stop_reason == "max_timesteps"
    history = evaluations(tmp_path)
    assert [e["timesteps"] for e in history] == [200, 400, 600, 800]  # every eval_freq; the last is the final one
    best = max(history, key=lambda e: e["mean_lines"])
    assert result.objective == best["mean_lines"] == result.summary["best"]["mean_lines"]
    assert result.summary["objective_source"] == "best evaluation"
    best_checkpoint = tmp_path / "checkpoints" / "best"
    assert read_metadata(best_checkpoint)["num_timesteps"] == best["timesteps"]
    assert read_metadata(best_checkpoint)["evaluation"]["mean_lines"] == best["mean_lines"]
    # each evaluation reaches metrics.csv in the row of its own step
    rows = {int(r["time/total_timesteps"]): r for r in metrics_rows(tmp_path)}
    for entry in history[:-1]:
        assert float(rows[entry["timesteps"]]["eval/mean_lines"]) == entry["mean_lines"]
    assert float(rows[800]["eval/mean_lines"]) == history[-1]["mean_lines"]
    assert (tmp_path / "learning_curve.png").stat().st_size > 10_000


def test_best_is_only_replaced_by_a_better_evaluation(tmp_path, monkeypatch):
    from tetris_train import callbacks

    scores = iter([5.0, 9.0, 7.0, 3.0])
    real = callbacks.evaluate

    def scripted(*args, **kwargs):
        return {**real(*args, **kwargs), "mean_lines": next(scores)}

    monkeypatch.setattr(callbacks, "evaluate", scripted)
    result = run_training(config(), tmp_path)
    assert read_metadata(tmp_path / "checkpoints" / "best")["num_timesteps"] == 400
    assert result.objective == 9.0 and result.summary["final_evaluation"]["mean_lines"] == 3.0


def test_final_best_shares_files_with_final(tmp_path, monkeypatch):
    from tetris_train import callbacks

    scores = iter([1.0, 2.0, 3.0, 4.0])
    real = callbacks.evaluate
    monkeypatch.setattr(callbacks, "evaluate", lambda *a, **k: {**real(*a, **k), "mean_lines": next(scores)})
    run_training(config(), tmp_path)
    final, best = tmp_path / "checkpoints" / "final", tmp_path / "checkpoints" / "best"
    assert os.path.samefile(
        final / "replay" / "buffer.json", best / "replay" / "buffer.json"
    )  # linked, not written twice


def test_sigint_after_the_last_boundary_finishes_the_run(tmp_path, monkeypatch):
    """A stop asked for during the last rollout comes too late to matter: the run is complete."""
    real_train = TetrisAgent.train

    def train_then_sigint(self, *args, **kwargs):
        real_train(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(TetrisAgent, "train", train_then_sigint)
    result = run_training(config(), tmp_path)
    assert result.status == "finished" and result.stop_reason == "max_timesteps"
    metadata = read_metadata(result.checkpoint)
    assert metadata["num_timesteps"] == 800 and metadata["stop_reason"] == "max_timesteps"


def test_a_stop_between_rollouts_takes_no_extra_step(tmp_path):
    result = run_training(config(max_timesteps=20_000, target_lines=1, target_window=3), tmp_path)
    assert result.stop_reason == "target_lines"
    stopped_at = result.summary["timesteps"]
    assert stopped_at < 20_000
    assert read_metadata(tmp_path / "checkpoints" / "final")["num_timesteps"] == stopped_at
    assert int(metrics_rows(tmp_path)[-1]["time/total_timesteps"]) == stopped_at
    assert evaluations(tmp_path)[-1]["timesteps"] == stopped_at


def test_resuming_a_finished_run_adds_nothing_twice(tmp_path):
    first = run_training(config(), tmp_path / "first")
    resumed_config = config()
    resumed_config.resume = str(first.checkpoint)
    result = run_training(resumed_config, tmp_path / "again")
    assert result.status == "finished" and result.summary["timesteps"] == 800
    assert [e["timesteps"] for e in evaluations(tmp_path / "again")] == [200, 400, 600, 800]
    steps = [int(r["time/total_timesteps"]) for r in metrics_rows(tmp_path / "again")]
    assert steps == sorted(set(steps)) and steps[-1] == 800
    assert result.objective == first.objective


def test_a_resumed_run_has_the_best_checkpoint_of_the_run_it_continues(tmp_path, monkeypatch):
    from tetris_train import callbacks

    scores = iter([5.0, 9.0, 1.0, 2.0, 3.0])
    real = callbacks.evaluate
    monkeypatch.setattr(callbacks, "evaluate", lambda *a, **k: {**real(*a, **k), "mean_lines": next(scores)})
    first = run_training(config(max_timesteps=400), tmp_path / "first")  # evaluations 5 (200), 9 (400)
    longer = config(max_timesteps=800)
    longer.resume = str(first.checkpoint)
    result = run_training(longer, tmp_path / "second")  # 1, 2 and 3: none better
    best = tmp_path / "second" / "checkpoints" / "best"
    assert read_metadata(best)["num_timesteps"] == 400
    assert os.path.samefile(best / "model.zip", tmp_path / "first" / "checkpoints" / "best" / "model.zip")
    assert result.summary["best"]["checkpoint"] == str(best) and result.objective == 9.0


def test_resume_in_a_new_folder_carries_history_over(tmp_path):
    first = run_training(config(max_timesteps=400), tmp_path / "first")
    longer = config(max_timesteps=800)
    longer.resume = str(first.checkpoint)
    run_training(longer, tmp_path / "second")
    steps = [int(r["time/total_timesteps"]) for r in metrics_rows(tmp_path / "second")]
    assert steps == list(range(100, 801, 100))  # the first run's rows, then the resumed run's, none twice
    assert [e["timesteps"] for e in evaluations(tmp_path / "second")] == [200, 400, 600, 800]


def test_a_failure_before_training_still_writes_the_summary(tmp_path):
    broken = config()
    broken.resume = str(tmp_path / "missing")
    with pytest.raises(CheckpointError):
        run_training(broken, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "missing" in summary["error"]


def test_a_clusters_requeue_signal_checkpoints_at_once_and_owes_the_due_evaluation(tmp_path, monkeypatch):
    """SIGUSR2 under a launcher that requeues on it (submitit on SLURM): the run stops at that
    boundary without the evaluation due there (no time for it), hands back the launcher's handler,
    and the continued run evaluates that step first, ending as an uninterrupted run does."""
    from tetris_train.callbacks import EvalCallback

    requeued = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: requeued.append(signum))  # the launcher's
    real_on_due = EvalCallback._on_due

    def signalled_when_400_is_due(self):
        if self.model.num_timesteps >= 400 and not requeued and "sent" not in self.__dict__:
            self.sent = True
            os.kill(os.getpid(), signal.SIGUSR2)
        real_on_due(self)

    monkeypatch.setattr(EvalCallback, "_on_due", signalled_when_400_is_due)
    try:
        result = run_training(config(), tmp_path)
        assert result.status == "interrupted" and result.requeue is not None
        stopped_at = result.summary["timesteps"]
        assert 400 <= stopped_at < 500 and read_metadata(result.checkpoint)["num_timesteps"] == stopped_at
        assert [e["timesteps"] for e in evaluations(tmp_path)] == [200]  # the one due at 400 was left
        assert signal.getsignal(signal.SIGUSR2) is not None and not requeued
        result.requeue()
        assert requeued == [signal.SIGUSR2]  # the launcher's handler got the signal

        monkeypatch.setattr(EvalCallback, "_on_due", real_on_due)
        resumed = config()
        resumed.resume = str(result.checkpoint)
        finished = run_training(resumed, tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert finished.status == "finished" and finished.requeue is None
    assert [e["timesteps"] for e in evaluations(tmp_path)] == [200, stopped_at, 600, 800]


def test_a_run_folder_is_trained_by_one_process_at_a_time(tmp_path):
    import threading

    from tetris_train.cli import ResumeError
    from tetris_train.run_folder import RunFolderLock, folder_in_use

    run = tmp_path / "run"
    first = RunFolderLock(run)
    first.acquire(wait=False)
    assert folder_in_use(run)
    with pytest.raises(ResumeError, match="is being trained right now: one command per run folder"):
        RunFolderLock(run).acquire(wait=False)
    second = RunFolderLock(run)
    waiting = threading.Thread(target=second.acquire, kwargs={"wait": True})
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # a sweep job waits for the other job
    first.release()
    waiting.join(10)
    assert not waiting.is_alive() and folder_in_use(run)
    second.release()
    assert not folder_in_use(run)
