"""Games in lockstep play exactly the games TetrisEnv plays: same pieces, rules, counters, observations."""

import numpy as np
import pytest

from tetris_train.env import PIECE_NAMES, EnvConfig, TetrisEnv
from tetris_train.env.games import QUEUE, Games


def play_both(config: EnvConfig, seeds: list[int], steps: int, action_seed: int = 0, colors: bool = True):
    """Random actions in Games and in one TetrisEnv per seed, checking every step that they agree."""
    games = Games(config, seeds, colors=colors)
    envs = [TetrisEnv(config) for _ in seeds]
    obs = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]
    rng = np.random.default_rng(action_seed)
    for _ in range(steps):
        if len(games.active) == 0:
            break
        np.testing.assert_array_equal(games.observations(), np.stack([obs[g] for g in games.active]))
        np.testing.assert_array_equal(games.action_masks(), np.stack([envs[g].action_masks() for g in games.active]))
        actions = rng.integers(games.n_actions, size=len(games.active))
        still = []
        for g, a in zip(games.active, actions):
            obs[g], _, terminated, truncated, info = envs[g].step(int(a))
            if not (terminated or truncated):
                still.append(g)
        games.step(actions)
        assert list(games.active) == still
        for g, env in enumerate(envs):
            state = env.get_state()
            assert games.pieces[g] == state["pieces"] and games.lines[g] == state["total_lines"]
            assert games.score[g] == state["score"]
            if colors:
                np.testing.assert_array_equal(games.colors[g, ::-1], state["board"])
            if g in still:
                assert games.current[g] == state["current"] and list(games.preview[g]) == state["preview"]
    return games, envs


@pytest.mark.parametrize(
    "config",
    [
        EnvConfig(width=6, height=8, max_pieces=300),
        EnvConfig(width=5, height=6, preview=0, randomizer="uniform", max_pieces=300),
        EnvConfig(width=6, height=10, preview=3, randomizer="uniform", max_pieces=300),
        EnvConfig(width=6, height=8, observation="board", max_pieces=300),
    ],
    ids=["bag", "uniform-no-preview", "uniform-preview-3", "board-observation"],
)
def test_games_play_the_games_of_the_env(config):
    games, envs = play_both(config, seeds=[0, 1, 7, 123], steps=400)
    assert len(games.active) == 0  # every game ended (random play tops out quickly on small boards)
    for result, env in zip(games.results(), envs):
        assert result["capped"] == (env.get_state()["pieces"] >= config.max_pieces)


def test_the_piece_cap_ends_games_like_truncation():
    games, _ = play_both(EnvConfig(width=10, height=20, max_pieces=5), seeds=[3, 4], steps=10, colors=False)
    assert [r["capped"] for r in games.results()] == [True, True]
    assert [r["pieces"] for r in games.results()] == [5, 5]


def test_pieces_dealt_past_the_queue_still_match_the_env():
    config = EnvConfig(width=10, height=20, preview=2, randomizer="uniform", max_pieces=QUEUE * 3)
    games = Games(config, [11])
    env = TetrisEnv(config)
    env.reset(seed=11)
    empty = np.zeros((20, 10), np.uint8)
    for _ in range(QUEUE * 2 + 40):  # each piece dropped on an emptied board: the game never ends
        assert PIECE_NAMES[games.current[0]] == env.current_piece
        assert tuple(PIECE_NAMES[p] for p in games.preview[0]) == env.preview_pieces
        games.rows[0], games.heights[0], games.n_filled[0] = 0, 0, 0
        env.set_state({**env.get_state(), "board": empty})
        games.step(np.array([0]))
        env.step(0)
    assert games.pieces[0] == QUEUE * 2 + 40


def test_distinct_afterstates_are_the_observation_rows_of_distinct_placements():
    config = EnvConfig(width=8, height=12, preview=1)
    games = Games(config, [5, 6, 7])
    rng = np.random.default_rng(1)
    for _ in range(30):
        if len(games.active) == 0:
            break
        observations, masks = games.observations(), games.action_masks()
        rows, starts = games.distinct_afterstates()
        for i in range(len(games.active)):
            np.testing.assert_array_equal(rows[starts[i] : starts[i + 1]], observations[i][masks[i]])
        values = rng.normal(size=len(rows)).astype(np.float32)
        full = np.full(masks.shape, -np.inf, np.float32)
        full[masks] = values
        np.testing.assert_array_equal(games.best_actions(values, starts), full.argmax(axis=1))
        games.step(rng.integers(games.n_actions, size=len(games.active)))


def test_ties_go_to_the_lowest_action():
    games = Games(EnvConfig(width=6, height=8), [0, 1])
    rows, starts = games.distinct_afterstates()
    actions = games.best_actions(np.zeros(len(rows), np.float32), starts)
    np.testing.assert_array_equal(actions, [0, 0])


@pytest.mark.parametrize("bad", [np.array([0]), np.array([0, 40]), np.array([-1, 0])])
def test_wrong_actions_are_refused(bad):
    games = Games(EnvConfig(), [0, 1])
    with pytest.raises(ValueError, match="actions"):
        games.step(bad)


def test_rendering_matches_the_env():
    config = EnvConfig(width=6, height=8, max_pieces=50)
    games, envs = play_both(config, seeds=[2], steps=3)
    assert len(games.active) == 1
    for mode in ("ansi", "rgb_array"):
        env = TetrisEnv(config, render_mode=mode)
        env.reset()
        env.set_state(envs[0].get_state())
        np.testing.assert_array_equal(games.render(0, mode), env.render())
    with pytest.raises(ValueError, match="colors=True"):
        Games(config, [0]).render(0, "ansi")


def test_evaluation_shows_progress_and_a_confidence_interval(capsys):
    from tetris_train.evaluation import evaluate, mean_interval
    from tetris_train.players import DellacheriePlayer

    result = evaluate(DellacheriePlayer(), EnvConfig(width=6, height=8, max_pieces=400), 3, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "placements" in err
    assert result["mean_lines_95"] == list(mean_interval(result["lines"]))
    low, high = mean_interval([1, 2, 3, 4])
    assert low == pytest.approx(2.5 - 1.96 * np.std([1, 2, 3, 4], ddof=1) / 2) and high == pytest.approx(5 - low)
    assert mean_interval([7]) == (7, 7)
