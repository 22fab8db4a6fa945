"""python -m tetris_train.evaluate as a user runs it."""

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TetrisAgent, TrainingConfig, make_env
from tetris_train.checkpoints import CheckpointError
from tetris_train.cli import ResumeError
from tetris_train.env.render import COUNTERS_PX, MIN_FRAME_PX
from tetris_train.evaluate import EvaluateConfig, agent_env, check_config
from tetris_train.train import run_training


def run_evaluate(cwd, *args):
    return subprocess.run(
        [sys.executable, "-m", "tetris_train.evaluate", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def only_output(tmp_path, name):
    found = list((tmp_path / "outputs" / "evaluations").glob(f"*/*/{name}"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short training run on a 6 x 10 board, its checkpoints in ``ckpts``."""
    folder = tmp_path_factory.mktemp("trained") / "run"
    config = TrainingConfig(
        agent=AgentConfig(buffer_size=1_000, learning_starts=100, batch_size=32, net_arch=(16,)),
        env=EnvConfig(width=6, height=10, max_pieces=40),
        schedule=ScheduleConfig(
            max_timesteps=400,
            eval_freq=200,
            eval_episodes=2,
            tensorboard=False,
            progress_bar=False,
            checkpoint_dir="ckpts",
        ),
    )
    run_training(config, folder)
    return folder


def test_agent_evaluation_writes_eval_json_and_a_video(tmp_path, run):
    result = run_evaluate(tmp_path, f"checkpoint={run}", "episodes=3", "video_frames=30")
    assert result.returncode == 0, result.stderr
    report = json.loads(only_output(tmp_path, "eval.json").read_text())
    assert report["player"] == "agent" and report["checkpoint"] == str(run / "ckpts" / "best")
    assert report["episodes"] == 3 and len(report["lines"]) == 3
    assert report["env"]["width"] == 6  # the board the agent was trained on
    for key in (
        "mean_lines",
        "median_lines",
        "min_lines",
        "max_lines",
        "mean_pieces",
        "mean_score",
        "reached_cap",
        "placements_per_s",
    ):
        assert key in report
    frames = iio.imread(report["video"], index=None)
    # the counters above the board; a 6-wide board (96 pixels) is as wide as the narrowest frame
    assert 2 <= frames.shape[0] <= 30 and frames.shape[1:] == (COUNTERS_PX + 10 * 16, max(6 * 16, MIN_FRAME_PX), 3)
    assert not np.array_equal(frames[0, :COUNTERS_PX], frames[-1, :COUNTERS_PX])  # the counters change
    # what it printed: the checkpoint, the statistics and the files written; evaluate.log holds the same
    log = only_output(tmp_path, "evaluate.log").read_text()
    for said in (
        f"checkpoint {report['checkpoint']}",
        "lines mean",
        str(only_output(tmp_path, "eval.json")),
        report["video"],
    ):
        assert said in result.stdout and said in log, said


def test_a_bad_checkpoint_names_the_checkpoint_key_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "notes.txt").write_text("hello\n")
    for path in (tmp_path / "missing", tmp_path / "empty", tmp_path / "not_a_run"):
        result = run_evaluate(tmp_path, f"checkpoint={path}")
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: checkpoint={path}: ") and "resume" not in result.stderr
        assert "a run folder" in result.stderr and "checkpoint folder" in result.stderr  # what it takes
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made an output folder


def test_env_settings_an_agent_cannot_play_are_refused(tmp_path, run):
    def config(**env):
        return EvaluateConfig(checkpoint=str(run), env=EnvConfig(**env))

    with pytest.raises(ResumeError, match=r"^env.width=10: .* env.width=6, this command gives env.width=10; "):
        check_config(config(width=10), ["env.width=10"])
    with pytest.raises(ResumeError, match=r"^env=classic: .*env.preview=1, this command gives env.preview=0"):
        check_config(config(randomizer="uniform", preview=0, max_pieces=10**9), ["env=classic"])
    with pytest.raises(ResumeError, match="env.piece_reward=2.0; rewards only shaped its training"):
        check_config(config(piece_reward=2.0), ["env.piece_reward=2"])
    check_config(config(width=6, height=10), ["env.width=6", "env.height=10"])  # the checkpoint's own values
    # what applies to an agent: where a game stops and how pieces are dealt
    trained = EnvConfig(width=6, height=10, max_pieces=40)
    played = agent_env(
        config(max_pieces=7, randomizer="uniform"), ["env.max_pieces=7", "env.randomizer=uniform"], trained
    )
    assert (played.width, played.height, played.max_pieces, played.randomizer) == (6, 10, 7, "uniform")
    assert agent_env(config(), [], trained) == trained
    # on the command line: one line, and no output folder
    result = run_evaluate(tmp_path, f"checkpoint={run}", "env.width=10")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: env.width=10: ") and not (tmp_path / "outputs").exists()


def test_loading_a_checkpoint_into_another_board_names_the_settings(run):
    with pytest.raises(CheckpointError) as raised:
        TetrisAgent.load_checkpoint(run / "ckpts" / "final", make_env(EnvConfig(width=8, height=10, preview=0))())
    message = str(raised.value)
    assert "\n" not in message and "Box(" not in message
    assert message.endswith("trained with env.width=6, env.preview=1, this env has env.width=8, env.preview=0")


def test_yardsticks_play_the_same_seeds(tmp_path):
    (tmp_path / "h").mkdir()
    (tmp_path / "r").mkdir()
    heuristic = run_evaluate(tmp_path / "h", "player=heuristic", "episodes=2", "env.max_pieces=200", "video=false")
    random = run_evaluate(
        tmp_path / "r",
        "player=random",
        "episodes=2",
        "env.max_pieces=200",
        "video=false",
        "replay=true",
        "replay_pieces=5",
        "replay_delay=0",
    )
    assert heuristic.returncode == 0 and random.returncode == 0, heuristic.stderr + random.stderr
    h = json.loads(only_output(tmp_path / "h", "eval.json").read_text())
    r = json.loads(only_output(tmp_path / "r", "eval.json").read_text())
    assert h["seed"] == r["seed"] == 1_000_000
    assert h["reached_cap"] == 1.0 and h["min_lines"] >= 70 and r["mean_lines"] == 0
    assert "\x1b[2J" in random.stdout  # the terminal replay redraws the board


def test_bad_input_is_one_line(tmp_path):
    result = run_evaluate(tmp_path, "player=agent")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "checkpoint=null" in result.stderr and "player=agent needs one" in result.stderr
    result = run_evaluate(tmp_path, "player=expert")
    assert result.returncode == 2 and "agent, heuristic, random" in result.stderr


def test_an_mp4_video_without_its_encoder_is_refused_before_the_games(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "imageio_ffmpeg" else find_spec(name))
    with pytest.raises(ResumeError, match=r"^video_format=mp4 needs the video extra \(pip install"):
        check_config(EvaluateConfig(player="heuristic", video_format="mp4"), ["video_format=mp4"])
    check_config(EvaluateConfig(player="heuristic", video_format="mp4", video=False), ["video_format=mp4"])


def test_help_names_evaluates_own_keys_not_trainings(tmp_path):
    result = run_evaluate(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "checkpoint=null" in result.stdout and "player=agent" in result.stdout
    assert "env.max_pieces" in result.stdout and "python -m tetris_train.demo" in result.stdout
    assert "agent: default" not in result.stdout and "schedule." not in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_the_interval_of_mean_lines_never_goes_below_zero():
    from tetris_train.evaluation import mean_interval

    low, high = mean_interval([0, 0, 0, 40])
    assert low == 0.0 and high > 10
    assert mean_interval([10, 12]) == pytest.approx((9.04, 12.96))  # 11 ± 1.96 standard errors of 1
