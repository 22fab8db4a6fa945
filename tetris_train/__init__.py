"""tetris-train: train Stable-Baselines3 DQN agents to play Tetris."""

from importlib.metadata import PackageNotFoundError, version

from .env import ENV_ID, EnvConfig, TetrisEnv, make_env

try:
    __version__ = version("tetris-train")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["ENV_ID", "EnvConfig", "TetrisEnv", "make_env", "__version__"]
