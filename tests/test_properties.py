"""Property-based checks over random games against the reference model in tests/reference.py."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tetris_train.env import TetrisEnv

from . import reference

games = st.fixed_dictionaries(
    {
        "width": st.integers(4, 10),
        "height": st.integers(4, 14),
        "preview": st.integers(0, 2),
        "seed": st.integers(0, 2**32 - 1),
        "actions": st.lists(st.integers(0, 10_000), min_size=1, max_size=60),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(games)
def test_random_games_match_the_reference_model(game):
    env = TetrisEnv(width=game["width"], height=game["height"], preview=game["preview"])
    obs, info = env.reset(seed=game["seed"])
    names = env.feature_names
    for raw in game["actions"]:
        a = raw % env.n_actions
        board_before = env.board
        piece = env.current_piece
        known_after = list(env.preview_pieces)
        promised = reference.afterstate_row(board_before, piece, a, known_after)
        assert env.observation_space.contains(obs)

        obs_next, reward, terminated, truncated, info = env.step(a)
        board = env.board
        assert set(np.unique(board)) <= {0, 1}
        assert board.sum() == 4 * info["pieces"] - env.width * info["total_lines"]

        row = dict(zip(names, obs[a].astype(np.float64) * env.feature_scale))
        if promised is None:
            assert terminated and row["top_out"] == 1
            np.testing.assert_array_equal(board, board_before)
            break
        assert not terminated and row["top_out"] == 0
        # the board the reference builds is the board the env reached
        rot, x = reference.resolve_action(piece, a, env.width)
        np.testing.assert_array_equal(board, reference.place(board_before, piece, rot, x).board)
        assert info["lines_cleared"] == promised["lines_cleared"]
        for name, value in promised.items():
            assert np.isclose(row[name], value, atol=1e-4), (name, row[name], value)
        # the pieces the afterstate knew about are the ones now current and in preview
        if known_after:
            assert [env.current_piece, *env.preview_pieces[:-1]] == known_after
        obs = obs_next
