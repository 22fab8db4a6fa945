import os

import pytest

from tetris_train.env import TetrisEnv


@pytest.fixture
def small_env():
    env = TetrisEnv(width=6, height=8)
    env.reset(seed=0)
    return env


# optuna 2.10 (pinned with the Optuna sweeper) warns about SQLAlchemy 2 on import; the app silences it too
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
