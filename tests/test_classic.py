"""The literature's game: pieces drawn uniformly, no preview, env=classic and env=classic_small."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TetrisAgent, TrainingConfig
from tetris_train.env import PIECE_NAMES, TetrisEnv, make_env
from tetris_train.players import HeuristicPlayer

from .test_config import compose_config


def pieces_dealt(env: TetrisEnv, n: int, seed: int) -> list[int]:
    """The sequence of current pieces over ``n`` placements (the heuristic keeps games going)."""
    player = HeuristicPlayer(env)
    obs, info = env.reset(seed=seed)
    dealt = []
    for _ in range(n):
        dealt.append(PIECE_NAMES.index(env.current_piece))
        action = int(player(obs[None], info["action_mask"][None])[0])
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            obs, info = env.reset()
    return dealt


def uniform(**overrides) -> EnvConfig:
    return EnvConfig(randomizer="uniform", preview=0, **overrides)


def test_uniform_pieces_are_seeded():
    first = pieces_dealt(TetrisEnv(uniform()), 300, seed=4)
    assert pieces_dealt(TetrisEnv(uniform()), 300, seed=4) == first
    assert pieces_dealt(TetrisEnv(uniform()), 300, seed=5) != first


def test_uniform_pieces_are_drawn_independently_and_evenly():
    dealt = np.array(pieces_dealt(TetrisEnv(uniform(width=8, height=12)), 7_000, seed=0))
    counts = np.bincount(dealt, minlength=7)
    expected = len(dealt) / 7
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 22.5, counts  # 6 degrees of freedom: p = 0.001
    # a bag deals each piece once in every 7; independent draws repeat a piece within a bag's span
    windows = [len(set(dealt[i : i + 7])) for i in range(0, len(dealt) - 7, 7)]
    assert np.mean(windows) < 5.5  # expected distinct of 7 draws from 7: 7 * (1 - (6/7)^7) = 4.6
    bag = np.array(pieces_dealt(TetrisEnv(EnvConfig(width=8, height=12)), 700, seed=0))
    assert len(set(bag[0:7])) == len(set(bag[7:14])) == 7  # the 7-bag, for contrast


def test_a_uniform_game_state_round_trips():
    env = TetrisEnv(uniform())
    pieces_dealt(env, 57, seed=2)
    state = env.get_state()
    state = json.loads(json.dumps({**state, "board": state["board"].tolist()}))  # as plain data, like state.json
    expected = pieces_dealt_from(env, 200)
    twin = TetrisEnv(uniform())
    twin.reset(seed=99)
    twin.set_state({**state, "board": np.asarray(state["board"], np.uint8)})
    assert pieces_dealt_from(twin, 200) == expected


def pieces_dealt_from(env: TetrisEnv, n: int) -> list[int]:
    player = HeuristicPlayer(env)
    obs, info = env.observe(), {"action_mask": env.action_masks()}
    dealt = []
    for _ in range(n):
        dealt.append(PIECE_NAMES.index(env.current_piece))
        obs, _, terminated, truncated, info = env.step(int(player(obs[None], info["action_mask"][None])[0]))
        if terminated or truncated:
            obs, info = env.reset()
    return dealt


@pytest.mark.parametrize("option, height", [("classic", 20), ("classic_small", 10)])
def test_the_classic_options_compose(option, height):
    config = compose_config(f"env={option}")
    assert (config.env.width, config.env.height) == (10, height)
    assert config.env.randomizer == "uniform" and config.env.preview == 0 and config.env.max_pieces >= 10**9
    assert config.evaluation_env().max_pieces == config.schedule.eval_max_pieces == 100_000
    assert TrainingConfig().evaluation_env() == TrainingConfig().env  # the default game's own cap is lower


def test_preview_0_trains_checkpoints_and_resumes_exactly(tmp_path):
    config = TrainingConfig(
        agent=AgentConfig(buffer_size=1_000, learning_starts=100, batch_size=16, net_arch=(16,)),
        env=uniform(width=6, height=10, max_pieces=60),
        schedule=ScheduleConfig(max_timesteps=600),
        seed=1,
    )
    one_go = TetrisAgent(make_env(config.env)(), config)
    one_go.train(600)
    half = TetrisAgent(make_env(config.env)(), config)
    half.train(300)
    half.save_checkpoint(tmp_path / "half")
    resumed = TetrisAgent.load_checkpoint(tmp_path / "half", make_env(config.env)())
    assert resumed.config.env.randomizer == "uniform"
    resumed.train(300)
    for a, b in zip(one_go.model.policy.parameters(), resumed.model.policy.parameters(), strict=True):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())


def test_evaluate_plays_the_classic_small_game(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tetris_train.evaluate", "player=heuristic", "env=classic_small", "episodes=2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    found = list((tmp_path / "outputs" / "evaluations").glob("*/*/eval.json"))
    assert len(found) == 1
    report = json.loads(found[0].read_text())
    assert report["env"]["randomizer"] == "uniform" and report["env"]["height"] == 10
    assert report["episodes"] == 2 and report["mean_lines"] > 0


def test_uniform_pieces_dealt_in_blocks_are_the_pieces_of_one_draw_each():
    from gymnasium.utils import seeding

    from tetris_train.env.pieces import UNIFORM_BLOCK, deal

    blocks, single = seeding.np_random(5)[0], seeding.np_random(5)[0]
    dealt = [p for _ in range(3) for p in deal(blocks, "uniform")]
    assert len(dealt) == 3 * UNIFORM_BLOCK
    assert dealt == [int(single.integers(7)) for _ in dealt]
    assert blocks.bit_generator.state == single.bit_generator.state
