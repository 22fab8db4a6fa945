"""Pierre Dellacherie's features as published (Fahey 2003; Thiery & Scherrer 2009), on boards
worked out by hand, and the player that uses them."""

import numpy as np
import pytest

from tetris_train.env import PIECE_NAMES, EnvConfig, TetrisEnv
from tetris_train.env.engine import DELLACHERIE_FEATURES
from tetris_train.env.games import Games
from tetris_train.evaluation import evaluate
from tetris_train.players import DELLACHERIE_WEIGHTS, DellacheriePlayer

from .helpers import set_board


def features(env: TetrisEnv, action: int) -> dict[str, float]:
    return dict(zip(DELLACHERIE_FEATURES, env.dellacherie_features()[action].tolist()))


def test_the_published_definitions_without_a_clear():
    env = TetrisEnv(width=6, height=6)
    env.reset(seed=0)
    set_board(
        env,
        """
        #.....
        #.##..
        ##.###
        """,
        current="I",
    )
    # vertical I in column 1, resting on row 1: rows 2 to 5 counted from 1 at the floor
    assert features(env, 1 * 6 + 1) == {
        "landing_height": 3.5,
        "eroded_cells": 0,
        "row_transitions": 16,  # 2 + 2 + 2 + 4 + 4 over the stack, 2 for the empty top row
        "column_transitions": 8,  # columns 0, 1, 3, 4, 5 one each, column 2 three
        "holes": 1,
        "cumulative_wells": 4,  # column 0: depth 2 (1 + 2), column 2: the cell under the overhang (1)
    }


def test_the_published_definitions_with_two_lines_cleared():
    env = TetrisEnv(width=4, height=5)
    env.reset(seed=0)
    set_board(
        env,
        """
        #..#
        #.##
        #.##
        """,
        current="I",
    )
    assert features(env, 1 * 4 + 1) == {
        "landing_height": 2.5,  # before the clear: rows 1 to 4
        "eroded_cells": 4,  # 2 lines x 2 of the piece's cells in them
        "row_transitions": 12,  # "##.#" 2, ".#.." 4, three empty rows 2 each
        "column_transitions": 4,
        "holes": 0,
        "cumulative_wells": 2,
    }


def test_a_placement_without_room_has_no_features():
    env = TetrisEnv(width=4, height=4)
    env.reset(seed=0)
    set_board(env, "#...\n#...\n#...", current="I")
    rows = env.dellacherie_features()
    assert np.isnan(rows[1 * 4 + 0]).all()  # vertical I on top of column 0 sticks out
    assert not np.isnan(rows[0]).any()  # flat I on top of column 0: in the top row, it fits
    assert env.dellacherie_features().shape == (env.n_actions, len(DELLACHERIE_FEATURES))


def test_the_player_takes_the_best_and_keeps_the_first_of_ties():
    env = TetrisEnv(width=6, height=8)
    env.reset(seed=0)
    set_board(env, "......", current="O")  # an empty board: every column of O scores the same but walls
    player = DellacheriePlayer()
    weights = np.array([DELLACHERIE_WEIGHTS[name] for name in DELLACHERIE_FEATURES])
    scores = env.dellacherie_features() @ weights
    scores[~env.action_masks()] = -np.inf
    best = np.flatnonzero(scores == scores.max())
    games = Games(env.config, [0])
    games.rows[0], games.heights[0] = env._rows, env._heights  # the same board and piece as the env
    games.current[0] = PIECE_NAMES.index(env.current_piece)
    assert player.choose(games)[0] == best[0]


def test_the_compiled_choice_is_the_best_of_the_env_features_all_game_long():
    config = EnvConfig(width=8, height=10, randomizer="uniform", preview=0, max_pieces=600)
    weights = np.array([DELLACHERIE_WEIGHTS[name] for name in DELLACHERIE_FEATURES])
    games, player = Games(config, [3]), DellacheriePlayer()
    env = TetrisEnv(config)
    env.reset(seed=3)
    while len(games.active):
        scores = env.dellacherie_features() @ weights
        scores[np.isnan(scores) | ~env.action_masks()] = -np.inf
        expected = int(np.argmax(scores))
        action = player.choose(games)
        assert action[0] == expected
        games.step(action)
        _, _, terminated, truncated, _ = env.step(expected)
        assert (terminated or truncated) == (len(games.active) == 0)
    assert games.pieces[0] == env.get_state()["pieces"] > 100


def test_the_published_player_plays_far_better_than_the_observation_weights():
    from tetris_train.players import HeuristicPlayer

    config = EnvConfig(width=10, height=10, randomizer="uniform", preview=0, max_pieces=100_000)
    published = evaluate(DellacheriePlayer(), config, episodes=4, seed=0)
    ours = evaluate(HeuristicPlayer(TetrisEnv(config)), config, episodes=4, seed=0)
    assert published["mean_lines"] > 2 * ours["mean_lines"], (published["lines"], ours["lines"])


@pytest.mark.parametrize("bad", [{"holes": -4.0, "bumpiness": 1.0}])
def test_unknown_weights_are_refused(bad):
    with pytest.raises(ValueError, match="bumpiness"):
        DellacheriePlayer(bad)


class OneStepAtATime:
    """The same player, choosing one placement per call instead of playing games on in compiled code."""

    def __init__(self, player: DellacheriePlayer):
        self.choose = player.choose


def test_compiled_play_plays_the_games_of_step_by_step_choices():
    config = EnvConfig(width=8, height=10, randomizer="uniform", preview=0, max_pieces=5_000)
    played = evaluate(DellacheriePlayer(), config, episodes=5, seed=40)
    stepped = evaluate(OneStepAtATime(DellacheriePlayer()), config, episodes=5, seed=40)
    assert played["lines"] == stepped["lines"] and played["pieces"] == stepped["pieces"]
    assert played["placements"] == sum(played["pieces"]) == sum(stepped["pieces"])


def test_compiled_play_follows_the_env_past_the_dealt_pieces_to_the_cap():
    from tetris_train.env.games import QUEUE
    from tetris_train.evaluation import PLAY_STRETCH

    config = EnvConfig(randomizer="uniform", preview=2, max_pieces=2 * QUEUE + 100)
    games = Games(config, [8], colors=True)
    while len(games.active):
        DellacheriePlayer().play(games, PLAY_STRETCH)
    env = TetrisEnv(config)
    env.reset(seed=8)
    weights = np.array([DELLACHERIE_WEIGHTS[name] for name in DELLACHERIE_FEATURES])
    truncated = terminated = False
    while not (terminated or truncated):
        scores = env.dellacherie_features() @ weights
        scores[np.isnan(scores) | ~env.action_masks()] = -np.inf
        _, _, terminated, truncated, _ = env.step(int(np.argmax(scores)))
    state = env.get_state()
    assert truncated and games.capped[0] and games.pieces[0] == state["pieces"] == config.max_pieces
    assert games.lines[0] == state["total_lines"] and games.score[0] == state["score"]
    np.testing.assert_array_equal(games.colors[0, ::-1], state["board"])
    assert games.current[0] == PIECE_NAMES.index(env.current_piece)
