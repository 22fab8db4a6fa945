"""make_env: build the environment wrapped for Stable-Baselines3."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import gymnasium as gym

from .config import EnvConfig
from .tetris_env import TetrisEnv

EPISODE_INFO_KEYS = ("total_lines", "pieces", "score")


def make_env(config: Optional[EnvConfig] = None) -> Callable[[], gym.Env]:
    """A thunk that builds a :class:`TetrisEnv` inside SB3's ``Monitor``.

    The monitor puts each finished episode's reward, length and ``EPISODE_INFO_KEYS`` (lines,
    pieces, score) into ``info["episode"]``, where SB3's logger and callbacks read them.
    """
    config = config if config is not None else EnvConfig()

    def _init() -> gym.Env:
        from stable_baselines3.common.monitor import Monitor

        return Monitor(TetrisEnv(config), info_keywords=EPISODE_INFO_KEYS)

    return _init
