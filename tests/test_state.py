import pickle

import numpy as np

from tetris_train.env import TetrisEnv


def play(env, actions):
    trace = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        trace.append((obs, reward, terminated, truncated, {k: v for k, v in info.items() if k != "action_mask"}))
        if terminated or truncated:
            env.reset()
    return trace


def assert_same(trace_a, trace_b):
    assert len(trace_a) == len(trace_b)
    for (o1, *rest1), (o2, *rest2) in zip(trace_a, trace_b):
        np.testing.assert_array_equal(o1, o2)
        assert rest1 == rest2


def test_restored_state_continues_the_game_exactly():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 40, size=300)  # random play tops out often: resets are part of the run
    env = TetrisEnv()
    env.reset(seed=11)
    play(env, actions[:37])
    state = pickle.loads(pickle.dumps(env.get_state()))
    expected = play(env, actions[37:])

    fresh = TetrisEnv()
    fresh.set_state(state)
    assert_same(play(fresh, actions[37:]), expected)


def test_state_is_a_snapshot_not_a_view():
    env = TetrisEnv()
    env.reset(seed=1)
    env.step(0)
    state = env.get_state()
    board = state["board"].copy()
    env.step(5)
    env.step(9)
    np.testing.assert_array_equal(state["board"], board)


def test_state_of_a_finished_game_stays_finished():
    env = TetrisEnv(max_pieces=2)
    env.reset(seed=0)
    env.step(0)
    env.step(0)
    state = env.get_state()
    other = TetrisEnv(max_pieces=2)
    other.set_state(state)
    try:
        other.step(0)
    except RuntimeError as err:
        assert "reset" in str(err)
    else:
        raise AssertionError("stepping a restored finished game should raise")


def test_state_from_another_board_size_is_refused():
    env = TetrisEnv()
    env.reset(seed=0)
    small = TetrisEnv(width=6)
    try:
        small.set_state(env.get_state())
    except ValueError as err:
        assert "shape" in str(err)
    else:
        raise AssertionError("a 10-wide state must not load into a 6-wide env")
