"""tetris-train: train Stable-Baselines3 DQN agents to play Tetris."""

from importlib.metadata import PackageNotFoundError, version

from .env import ENV_ID, EnvConfig, TetrisEnv, make_env

try:
    __version__ = version("tetris-train")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "ENV_ID",
    "AgentConfig",
    "EnvConfig",
    "ScheduleConfig",
    "TetrisAgent",
    "TetrisEnv",
    "TrainingConfig",
    "make_env",
    "__version__",
]


def __getattr__(name: str):
    # The training API imports torch and SB3; load it on first use so that the env stays light.
    if name in ("TrainingConfig", "AgentConfig", "ScheduleConfig"):
        from . import config

        return getattr(config, name)
    if name == "TetrisAgent":
        from .agent import TetrisAgent

        return TetrisAgent
    raise AttributeError(f"module 'tetris_train' has no attribute {name!r}")
