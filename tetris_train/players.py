"""Fixed players that need no training: yardsticks for agents, and the demo.

A player maps a batch of observations and action masks to a batch of actions, like
:func:`tetris_train.evaluation.model_policy`, or reads lockstep games (:class:`Games`) through its
``choose``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import numpy as np

from .env import TetrisEnv
from .env.engine import DELLACHERIE_FEATURES, dellacherie_choices, play_dellacherie
from .env.games import Games

# Pierre Dellacherie's hand-set weights (Fahey 2003; Thiery & Scherrer 2009).
DELLACHERIE_WEIGHTS: Mapping[str, float] = {
    "landing_height": -1.0,
    "eroded_cells": 1.0,
    "row_transitions": -1.0,
    "column_transitions": -1.0,
    "holes": -4.0,
    "cumulative_wells": -1.0,
}


class RandomPlayer:
    """Picks uniformly among the distinct placements of the current piece."""

    def __init__(self, seed: Optional[int] = None):
        self._rng = np.random.default_rng(seed)

    def __call__(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        return np.array([self._rng.choice(np.flatnonzero(mask)) for mask in action_masks])

    def choose(self, games: Games) -> np.ndarray:
        """The same choice, from the masks alone (no observation is computed)."""
        return self(None, games.action_masks())


class HeuristicPlayer:
    """Greedy one-piece player: the placement whose afterstate scores best under linear weights."""

    def __init__(self, env: TetrisEnv, weights: Mapping[str, float] = DELLACHERIE_WEIGHTS):
        if env.config.observation != "afterstates":
            raise ValueError(
                f"HeuristicPlayer needs EnvConfig.observation='afterstates', got {env.config.observation!r}"
            )
        names = list(env.feature_names)
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r} in heuristic weights; allowed: {', '.join(names)}")
        self._weights = np.zeros(len(names))
        for name, weight in weights.items():
            self._weights[names.index(name)] = weight
        self._weights *= env.feature_scale  # undo the observation's scaling
        self._top_out = names.index("top_out")

    def __call__(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        scores = observations.astype(np.float64) @ self._weights
        scores[(observations[..., self._top_out] > 0) | ~action_masks] = -np.inf
        return scores.argmax(axis=-1)


class DellacheriePlayer:
    """Pierre Dellacherie's one-piece player as published: the six features computed on the board
    by the published definitions (``engine.DELLACHERIE_FEATURES``; :meth:`TetrisEnv.dellacherie_features`
    shows them), his weights, and ties kept by the first placement in rotation-then-column order,
    as Thiery and Scherrer's code does.

    It reads the games themselves, not the observation (whose features are defined differently):
    :func:`~tetris_train.evaluation.evaluate` hands it the games, and it plays them on in compiled
    code (:meth:`play`), or chooses one placement in each (:meth:`choose`).
    """

    def __init__(self, weights: Mapping[str, float] = DELLACHERIE_WEIGHTS):
        unknown = sorted(set(weights) - set(DELLACHERIE_FEATURES))
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r}; allowed: {', '.join(DELLACHERIE_FEATURES)}")
        self._weights = np.array([weights.get(name, 0.0) for name in DELLACHERIE_FEATURES])

    def play(self, games: Games, placements: int) -> int:
        """Play every active game on, up to ``placements`` placements each, in one compiled call."""
        return games.play(play_dellacherie, games.distinct, games.n_distinct, self._weights, placements=placements)

    def choose(self, games: Games) -> np.ndarray:
        """The placement of each active game's current piece."""
        return dellacherie_choices(
            games.rows, games.heights, games.current, games.active, games.distinct, games.n_distinct, games.height,
            self._weights,
        )  # fmt: skip
