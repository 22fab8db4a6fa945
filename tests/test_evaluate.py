"""python -m tetris_train.evaluate as a user runs it."""

import json
import subprocess
import sys

import imageio.v3 as iio

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TrainingConfig
from tetris_train.train import run_training


def run_evaluate(cwd, *args):
    return subprocess.run(
        [sys.executable, "-m", "tetris_train.evaluate", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def only_output(tmp_path, name):
    found = list((tmp_path / "outputs" / "evaluations").glob(f"*/*/{name}"))
    assert len(found) == 1, found
    return found[0]


def test_agent_evaluation_writes_eval_json_and_a_video(tmp_path):
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
    run_training(config, tmp_path / "run")
    result = run_evaluate(tmp_path, f"checkpoint={tmp_path / 'run'}", "episodes=3", "video_frames=30")
    assert result.returncode == 0, result.stderr
    report = json.loads(only_output(tmp_path, "eval.json").read_text())
    assert report["player"] == "agent" and report["checkpoint"] == str(tmp_path / "run" / "ckpts" / "best")
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
    assert 2 <= frames.shape[0] <= 30 and frames.shape[1:] == (10 * 16, 6 * 16, 3)
    assert "lines mean" in result.stdout


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
    assert "checkpoint=None" in result.stderr and "player=agent needs one" in result.stderr
    result = run_evaluate(tmp_path, "player=expert")
    assert result.returncode == 2 and "agent, heuristic, random" in result.stderr
