"""The Tetris environment: rules, placement actions, afterstate features, rendering."""

import gymnasium as gym

from .config import EnvConfig
from .engine import FEATURE_NAMES
from .factory import make_env
from .pieces import PIECE_NAMES
from .tetris_env import SCORE_TABLE, TetrisEnv

ENV_ID = "tetris_train/Tetris-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="tetris_train.env.tetris_env:TetrisEnv")

__all__ = ["ENV_ID", "EnvConfig", "FEATURE_NAMES", "PIECE_NAMES", "SCORE_TABLE", "TetrisEnv", "make_env"]
