import pytest

from tetris_train.env import TetrisEnv


@pytest.fixture
def small_env():
    env = TetrisEnv(width=6, height=8)
    env.reset(seed=0)
    return env
