"""Afterstate features against boards worked out by hand."""

import numpy as np
import pytest

from tetris_train.env import FEATURE_NAMES, EnvConfig, TetrisEnv
from tetris_train.env.engine import HOLE_FEATURES

from .helpers import set_board


def unscaled_row(env, obs, action):
    return dict(zip(env.feature_names, (obs[action].astype(np.float64) * env.feature_scale).round(6)))


def test_features_of_a_placement_without_clears():
    env = TetrisEnv(EnvConfig(width=6, height=6, hole_features=True))
    env.reset(seed=0)
    set_board(
        env,
        """
        #.....
        #.##..
        ##.###
    """,
        current="I",
        preview=("T",),
    )
    obs = env.observe()
    row = unscaled_row(env, obs, 1 * 6 + 1)  # vertical I in column 1
    expected = {
        "lines_cleared": 0,
        "holes": 1,
        "bumpiness": 6,
        "aggregate_height": 14,
        "max_height": 5,
        "landing_height": 3.0,
        "eroded_cells": 0,
        "row_transitions": 14,
        "column_transitions": 8,
        "cumulative_wells": 3,
        "top_out": 0,
        "height_0": 3,
        "height_1": 5,
        "height_2": 2,
        "height_3": 2,
        "height_4": 1,
        "height_5": 1,
        "preview_0_T": 1,
        "preview_0_I": 0,
        "rows_with_holes": 1,
        "hole_depth": 1,
    }
    assert {k: row[k] for k in expected} == expected


def test_features_of_a_double_clear():
    env = TetrisEnv(width=4, height=6)
    env.reset(seed=0)
    set_board(
        env,
        """
        #...
        ##.#
        ##.#
    """,
        current="I",
    )
    row = unscaled_row(env, env.observe(), 1 * 4 + 2)  # vertical I into the gap
    expected = {
        "lines_cleared": 2,
        "holes": 0,
        "bumpiness": 5,
        "aggregate_height": 3,
        "max_height": 2,
        "landing_height": 2.0,
        "eroded_cells": 4,
        "row_transitions": 8,
        "column_transitions": 4,
        "cumulative_wells": 4,
        "top_out": 0,
        "height_0": 1,
        "height_1": 0,
        "height_2": 2,
        "height_3": 0,
    }
    assert {k: row[k] for k in expected} == expected
    _, _, _, _, info = env.step(1 * 4 + 2)
    assert info["lines_cleared"] == 2
    assert env.board[-2:].tolist() == [[0, 0, 1, 0], [1, 0, 1, 0]]


def test_hole_features_count_rows_with_holes_and_the_cells_above_each_hole():
    env = TetrisEnv(EnvConfig(width=5, height=8, hole_features=True))
    env.reset(seed=0)
    set_board(
        env,
        """
        .#...
        ##.#.
        #..#.
        .#.#.
    """,
        current="I",
    )
    row = unscaled_row(env, env.observe(), 1 * 5 + 4)  # vertical I in the empty right column
    # holes: column 0 at the floor (2 filled cells above), column 1 one row up (2 above)
    assert row["holes"] == 2 and row["rows_with_holes"] == 2 and row["hole_depth"] == 4


def test_hole_features_are_appended_to_the_rows_without_them():
    with_holes, without = TetrisEnv(EnvConfig(preview=0, hole_features=True)), TetrisEnv(EnvConfig(preview=0))
    assert with_holes.feature_names == (*without.feature_names, *HOLE_FEATURES)
    a, _ = with_holes.reset(seed=3)
    b, _ = without.reset(seed=3)
    np.testing.assert_array_equal(a[:, : b.shape[1]], b)


def test_empty_board_features():
    env = TetrisEnv(width=10, height=20)
    env.reset(seed=0)
    set_board(env, "", current="O")
    row = unscaled_row(env, env.observe(), 0)  # O flat in the left corner
    assert row["holes"] == 0 and row["aggregate_height"] == 4 and row["max_height"] == 2
    assert row["bumpiness"] == 2 and row["row_transitions"] == 4 and row["column_transitions"] == 10
    assert row["cumulative_wells"] == 0 and row["landing_height"] == 1.0


def test_top_out_row_never_looks_like_a_good_board():
    env = TetrisEnv(width=6, height=8)
    env.reset(seed=0)
    set_board(env, "..#...\n..#...\n" + "\n".join(["##.###"] * 5), current="I")
    obs = env.observe()
    vertical_in_gap = 1 * 6 + 2  # column 2 is 7 tall: a standing I needs 11 rows
    flag = env.feature_names.index("top_out")
    assert obs[vertical_in_gap, flag] == 1.0
    row = unscaled_row(env, obs, vertical_in_gap)
    assert row["max_height"] == env.height and row["aggregate_height"] == env.width * env.height
    assert all(row[f"height_{c}"] == env.height for c in range(env.width))
    # every real afterstate of this board is lower than the top-out row
    live = obs[:, flag] == 0
    assert live.any()
    aggregate = env.feature_names.index("aggregate_height")
    max_height = env.feature_names.index("max_height")
    assert (obs[live, aggregate] < obs[vertical_in_gap, aggregate]).all()
    assert (obs[live, max_height] <= obs[vertical_in_gap, max_height]).all()


def test_equivalent_actions_have_equal_rows():
    env = TetrisEnv()
    obs, info = env.reset(seed=4)
    canonical = env._canonical[env._current]
    np.testing.assert_array_equal(obs, obs[canonical])


@pytest.mark.parametrize(
    "width, height, preview, holes", [(10, 20, 1, False), (4, 4, 0, True), (7, 12, 3, False), (32, 30, 2, True)]
)
def test_observation_layout_and_bounds(width, height, preview, holes):
    env = TetrisEnv(EnvConfig(width=width, height=height, preview=preview, hole_features=holes))
    obs, _ = env.reset(seed=0)
    n_features = len(FEATURE_NAMES) + width + 7 * preview + len(HOLE_FEATURES) * holes
    assert obs.shape == (4 * width, n_features) == env.observation_space.shape
    assert obs.dtype == np.float32
    assert len(env.feature_names) == n_features
    assert env.observation_space.contains(obs)
    high = env.observation_space.high[0]
    assert (high >= 1.0 - 1e-6).all()
