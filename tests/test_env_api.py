import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import tetris_train
from tetris_train.env import ENV_ID, EnvConfig, TetrisEnv, make_env
from tetris_train.env.pieces import PIECE_COLORS


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("width", 3, "from 4 to 32"),
        ("width", 33, "from 4 to 32"),
        ("width", 10.0, "integer"),
        ("height", 3, ">= 4"),
        ("preview", -1, ">= 0"),
        ("max_pieces", -5, ">= 1"),
        ("max_pieces", 0, ">= 1"),
        ("observation", "pixels", "afterstates, board"),
        ("line_rewards", (0, 1, 2), "5 numbers"),
        ("line_rewards", (0, 1, 2, 3, "x"), "5 numbers"),
        ("piece_reward", "one", "a number"),
        ("game_over_penalty", -1.0, ">= 0"),
        ("render_mode", "human", "ansi, rgb_array"),
    ],
)
def test_invalid_config_names_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ValueError) as err:
        EnvConfig(**{field: value})
    message = str(err.value)
    assert f"EnvConfig.{field}=" in message and repr(value) in message
    assert allowed in message
    assert "\n" not in message


def test_unknown_override_is_refused():
    with pytest.raises(ValueError, match="no field 'colour'.*allowed: .*width"):
        TetrisEnv(colour="red")


def test_config_round_trip():
    config = EnvConfig(width=8, preview=2, line_rewards=(0, 1, 3, 5, 8))
    assert EnvConfig.from_dict(config.to_dict()) == config


def test_registered_with_gymnasium():
    env = gym.make(ENV_ID, width=8, render_mode="ansi")
    assert env.unwrapped.width == 8
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, len(env.unwrapped.feature_names))
    assert tetris_train.ENV_ID == ENV_ID


@pytest.mark.parametrize("kwargs", [{}, {"observation": "board"}, {"width": 6, "height": 10, "preview": 0}])
def test_gymnasium_env_checker_passes(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(ENV_ID, **kwargs).unwrapped, skip_render_check=True)
    for mode in ("ansi", "rgb_array"):
        check_env(gym.make(ENV_ID, render_mode=mode, **kwargs).unwrapped)


def test_board_observation_layout():
    env = TetrisEnv(observation="board", width=6, height=8, preview=2)
    obs, _ = env.reset(seed=0)
    set_cells = env.board.ravel()
    assert obs.shape == (6 * 8 + 7 * 3,) and env.observation_space.contains(obs)
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs[:48], env.board.ravel())
    assert set_cells.sum() == 0
    one_hots = obs[48:].reshape(3, 7)
    names = [env.current_piece, *env.preview_pieces]
    assert [tetris_train.env.PIECE_NAMES[i] for i in one_hots.argmax(axis=1)] == names
    assert one_hots.sum() == 3


def test_action_mask_in_info_and_method():
    env = TetrisEnv()
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["action_mask"], env.action_masks())
    expected = {"I": 17, "O": 9, "T": 34, "S": 17, "Z": 17, "J": 34, "L": 34}[env.current_piece]
    assert info["action_mask"].sum() == expected
    info["action_mask"][:] = False  # a copy: mutating it must not change the env
    assert env.action_masks().sum() == expected


def test_info_keys():
    env = TetrisEnv()
    _, info = env.reset(seed=0)
    assert {"lines_cleared", "total_lines", "pieces", "score", "action_mask"} <= set(info)


def test_ansi_render_shows_board_and_counters():
    env = TetrisEnv(width=6, height=8, render_mode="ansi")
    env.reset(seed=0)
    piece = env.current_piece
    env.step(0)
    text = env.render()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) == 8 and all(len(r) == 8 for r in rows)
    assert rows[-1].count(piece) >= 1
    assert "pieces 1" in text and "lines 0" in text


def test_rgb_render_colours_cells():
    env = TetrisEnv(width=6, height=8, render_mode="rgb_array")
    env.reset(seed=0)
    piece = env.current_piece
    env.step(0)
    frame = env.render()
    assert frame.shape == (8 * 16, 6 * 16, 3) and frame.dtype == np.uint8
    colour = PIECE_COLORS[tetris_train.env.PIECE_NAMES.index(piece)]
    colours = env.board_colors
    for row, col in zip(*colours.nonzero()):  # every filled cell shows its piece's colour
        centre = frame[row * 16 + 8, col * 16 + 8]
        assert (centre == colour).all()
    empty_row, empty_col = next(zip(*(colours == 0).nonzero()))
    assert not (frame[empty_row * 16 + 8, empty_col * 16 + 8] == colour).all()


def test_make_env_wraps_for_sb3_and_reports_episodes():
    from stable_baselines3.common.monitor import Monitor

    env = make_env(EnvConfig(render_mode=None, max_pieces=30))()
    assert isinstance(env, Monitor)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    while True:
        _, _, terminated, truncated, info = env.step(int(rng.integers(40)))
        if terminated or truncated:
            break
    episode = info["episode"]
    assert episode["l"] == info["pieces"] + (1 if terminated else 0)
    assert episode["total_lines"] == info["total_lines"] and "score" in episode


def test_make_env_works_with_sb3_vec_env():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(make_env(EnvConfig()), n_envs=2, seed=0)
    obs = venv.reset()
    assert obs.shape == (2, 40, 28)  # 11 board features, 10 heights, 7 for the preview
    obs, rewards, dones, infos = venv.step(np.array([0, 1]))
    assert rewards.shape == (2,)
