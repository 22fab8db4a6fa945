"""metrics.csv and TensorBoard events across a resume: fixed columns, each step once, rows with their values."""

import csv

import pytest

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TetrisAgent, TrainingConfig
from tetris_train.env import make_env
from tetris_train.metrics import STEP_COLUMN, configure_logger


def write_rows(run_dir, rows, tensorboard=False, keep_until_step=None):
    """Log ``rows`` (dicts with a step under STEP_COLUMN) as a run of SB3 would, then close."""
    logger = configure_logger(run_dir, tensorboard, keep_until_step)
    for row in rows:
        for key, value in row.items():
            logger.record(key, value)
        logger.dump(step=row[STEP_COLUMN])
    logger.close()


def read_csv(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


def test_columns_have_one_fixed_order_across_runs_and_resumes(tmp_path):
    write_rows(tmp_path, [{"train/loss": 1.0, STEP_COLUMN: 100, "rollout/ep_lines_mean": 2.0}])
    write_rows(tmp_path, [{"eval/mean_lines": 5.0, STEP_COLUMN: 200, "train/loss": 0.5}])
    header, rows = read_csv(tmp_path)
    assert header == [STEP_COLUMN, "eval/mean_lines", "rollout/ep_lines_mean", "train/loss"]
    assert rows == [["100", "", "2.0", "1.0"], ["200", "5.0", "", "0.5"]]

    # a resume trims the steps trained again; keys new to the file take their place in the order
    write_rows(tmp_path, [{"time/fps": 9, STEP_COLUMN: 150, "train/loss": 0.7}], keep_until_step=100)
    header, rows = read_csv(tmp_path)
    assert header == [STEP_COLUMN, "eval/mean_lines", "rollout/ep_lines_mean", "time/fps", "train/loss"]
    assert rows == [["100", "", "2.0", "", "1.0"], ["150", "", "", "9", "0.7"]]


def test_a_file_of_an_earlier_version_is_put_in_order_when_continued(tmp_path):
    (tmp_path / "metrics.csv").write_text(f"train/loss,{STEP_COLUMN},eval/mean_lines\n1.0,100,\n0.5,200,3.0\n")
    write_rows(tmp_path, [{STEP_COLUMN: 300, "train/loss": 0.25}], keep_until_step=200)
    assert read_csv(tmp_path) == (
        [STEP_COLUMN, "eval/mean_lines", "train/loss"],
        [["100", "", "1.0"], ["200", "3.0", "0.5"], ["300", "", "0.25"]],
    )


def test_tensorboard_holds_each_step_once_after_a_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_rows(tmp_path, [{STEP_COLUMN: step, "train/loss": 1.0} for step in (100, 200, 300)], tensorboard=True)
    # the first session's file, dated earlier, as a killed run's would be (TensorBoard reads files by name)
    (first,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    first.rename(first.with_name("events.out.tfevents.0000000001.host.1.0"))
    resumed = [{STEP_COLUMN: step, "train/loss": 2.0} for step in (300, 400)]
    write_rows(tmp_path, resumed, tensorboard=True, keep_until_step=200)

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [(s.step, s.value) for s in scalars] == [(100, 1.0), (200, 1.0), (300, 2.0), (400, 2.0)]


def small_config() -> TrainingConfig:
    return TrainingConfig(
        agent=AgentConfig(buffer_size=1_000, learning_starts=50, batch_size=16, net_arch=(8,)),
        env=EnvConfig(width=6, height=10, max_pieces=30),
        schedule=ScheduleConfig(max_timesteps=200, log_interval=100, tensorboard=False, progress_bar=False),
    )


def test_a_row_with_no_training_before_it_carries_the_training_state(tmp_path):
    """The final evaluation's row of a run resumed from its ``final`` checkpoint (nothing left to
    train): SB3 records train/* and the exploration rate only while training."""
    from tetris_train.callbacks import MetricsCallback

    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(200)
    agent.save_checkpoint(tmp_path / "final")
    resumed = TetrisAgent.load_checkpoint(tmp_path / "final", make_env(config.env)())
    resumed.model.set_logger(configure_logger(tmp_path, False, keep_until_step=200))
    resumed.model.logger.record("eval/mean_lines", 1.0)
    MetricsCallback(100, resumed).record()
    resumed.model.logger.close()

    header, rows = read_csv(tmp_path)
    row = dict(zip(header, rows[-1]))
    assert row[STEP_COLUMN] == "200" and row["eval/mean_lines"] == "1.0"
    assert int(row["train/n_updates"]) == agent.model._n_updates > 0
    assert float(row["rollout/exploration_rate"]) == pytest.approx(agent.model.exploration_rate)
    assert row["train/learning_rate"] != ""
