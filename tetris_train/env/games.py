"""Games: many games of one configuration, played in lockstep by the compiled engine.

Evaluation plays long games (a good player places millions of pieces), where a Python call per game
and step would cost more than the rules themselves. :class:`Games` holds every game's board and
pieces as arrays and advances all of them with one kernel call per step; a game seeded ``s`` deals
the pieces of ``TetrisEnv.reset(seed=s)`` and follows the same rules, so both play the same game.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from . import engine
from .config import EnvConfig
from .pieces import MAX_ROTATIONS, N_PIECES, UNIFORM_BLOCK, deal, placement_tables
from .render import board_to_rgb, game_to_text

QUEUE = 4096  # pieces dealt ahead for each game; topped up as they are used


class Games:
    """Games of one :class:`EnvConfig`, game ``i`` seeded ``seeds[i]``, advanced together.

    ``active`` lists the games still going; :meth:`step` takes one action for each, in that order.
    Policies read what they need: :meth:`observations` and :meth:`action_masks` (exactly
    ``TetrisEnv``'s), :meth:`distinct_afterstates` (the same rows, of distinct placements only),
    or the boards themselves (``rows``, ``heights``, ``current``). ``colors=True`` keeps each
    game's cells coloured by piece, for rendering.
    """

    def __init__(self, config: EnvConfig, seeds: Sequence[int], colors: bool = False):
        n = len(seeds)
        self.config = config
        self.width, self.height = config.width, config.height
        self.n_actions = MAX_ROTATIONS * self.width
        canonical, self._masks, distinct = placement_tables(self.width)
        self.rotation, self.column = canonical // self.width, canonical % self.width
        self.n_distinct = np.array([len(d) for d in distinct], np.int64)
        self.distinct = np.zeros((N_PIECES, self.n_distinct.max()), np.int64)
        for p, actions in enumerate(distinct):
            self.distinct[p, : len(actions)] = actions
        self.feature_names, self.feature_scale, _ = engine.feature_layout(
            self.width, self.height, config.preview, config.hole_features and config.observation == "afterstates"
        )

        self.rows = np.zeros((n, self.height), np.int64)
        self.heights = np.zeros((n, self.width), np.int64)
        self.colors = np.zeros((n, self.height, self.width) if colors else (0, 0, 0), np.uint8)
        self.n_filled = np.zeros(n, np.int64)
        self.current = np.zeros(n, np.int64)
        self.preview = np.zeros((n, config.preview), np.int64)
        self.pieces = np.zeros(n, np.int64)
        self.lines = np.zeros(n, np.int64)
        self.score = np.zeros(n, np.int64)
        self.over = np.zeros(n, bool)
        self.capped = np.zeros(n, bool)

        self._rngs = [seeding.np_random(int(seed))[0] for seed in seeds]
        self._queue = np.zeros((n, QUEUE + config.preview + max(N_PIECES, UNIFORM_BLOCK)), np.int64)
        self._queue_pos = np.zeros(n, np.int64)
        self._queue_end = np.zeros(n, np.int64)
        self.active = np.arange(n, dtype=np.int64)
        self._top_up(self.active)
        for g in range(n):  # the current piece, then the preview, as TetrisEnv.reset deals them
            self.current[g] = self._queue[g, 0]
            self.preview[g] = self._queue[g, 1 : 1 + config.preview]
        self._queue_pos[:] = 1 + config.preview
        self._spare = self._least_room()

    def step(self, actions: np.ndarray) -> None:
        """Place one piece in each active game (``actions[i]`` for ``active[i]``, each in
        ``[0, n_actions)``); games that end leave ``active``."""
        actions = np.asarray(actions, np.int64)
        if actions.shape != self.active.shape:
            raise ValueError(f"expected {self.active.shape[0]} actions (one per active game), got {actions.shape}")
        if actions.size and (actions.min() < 0 or actions.max() >= self.n_actions):
            raise ValueError(f"actions must lie in [0, {self.n_actions}); got {actions.min()} to {actions.max()}")
        if self._spare < 1:
            self._top_up(self.active)
            self._spare = self._least_room()
        engine.step_games(*self._state(), self.active, actions)
        self._spare -= 1
        self._drop_finished()

    def play(self, kernel: Callable[..., int], *params: Any, placements: int = 10_000) -> int:
        """Let a compiled player play every active game on, up to ``placements`` placements each:
        ``kernel(*game state, games, budget, *params)`` as ``engine.play_dellacherie`` and
        ``engine.play_mlp`` take them. Returns the placements made."""
        self._top_up(self.active[self._room() < placements])
        budget = np.minimum(self._room(), placements)
        placed = kernel(*self._state(), self.active, budget, *params)
        self._drop_finished()
        self._spare = self._least_room()
        return placed

    def observations(self) -> np.ndarray:
        """The active games' observations, as ``TetrisEnv`` would return them."""
        if self.config.observation == "afterstates":
            if not len(self.active):
                return np.zeros((0, self.n_actions, len(self.feature_names)), np.float32)
            canonical = self.rotation * self.width + self.column
            return np.stack(
                [
                    engine.afterstate_features(
                        self.rows[g],
                        self.heights[g],
                        self.width,
                        self.height,
                        self.n_filled[g],
                        self.current[g],
                        canonical[self.current[g]],
                        self.distinct[self.current[g], : self.n_distinct[self.current[g]]],
                        self.preview[g],
                        self.feature_scale,
                    )  # fmt: skip
                    for g in self.active
                ]
            ).reshape(len(self.active), self.n_actions, len(self.feature_names))
        cells = self.width * self.height
        obs = np.zeros((len(self.active), cells + N_PIECES * (1 + self.config.preview)), np.float32)
        bits = (self.rows[self.active, ::-1, None] >> np.arange(self.width)) & 1  # top row first
        obs[:, :cells] = bits.reshape(len(self.active), cells)
        obs[np.arange(len(self.active)), cells + self.current[self.active]] = 1.0
        for i in range(self.config.preview):
            obs[np.arange(len(self.active)), cells + N_PIECES * (1 + i) + self.preview[self.active, i]] = 1.0
        return obs

    def action_masks(self) -> np.ndarray:
        """One True per distinct placement of each active game's current piece."""
        return self._masks[self.current[self.active]]

    def distinct_afterstates(self) -> tuple[np.ndarray, np.ndarray]:
        """The observation rows of the active games' distinct placements, float32 ``(total,
        n_features)``, and ``starts``: game ``active[i]``'s rows are ``starts[i]:starts[i + 1]``,
        in the order of its distinct actions (see :meth:`best_actions`)."""
        return engine.distinct_afterstates(
            self.rows, self.heights, self.n_filled, self.current, self.preview, self.active, self.distinct,
            self.n_distinct, self.height, self.feature_scale,
        )  # fmt: skip

    def best_actions(self, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Each active game's action of highest value, from values of :meth:`distinct_afterstates`'s
        rows; the first of ties, the lowest action, as an argmax over the whole observation gives."""
        values = np.asarray(values)
        if values.shape != (starts[-1],):
            raise ValueError(f"expected {starts[-1]} values (one per row of distinct_afterstates), got {values.shape}")
        return engine.first_best(values, starts, self.active, self.current, self.distinct)

    def results(self) -> list[dict]:
        """Each game's lines, pieces, score, and whether it ended at ``max_pieces``."""
        return [
            {"lines": int(lines), "pieces": int(pieces), "score": int(score), "capped": bool(capped)}
            for lines, pieces, score, capped in zip(self.lines, self.pieces, self.score, self.capped)
        ]

    def render(self, game: int, mode: str) -> str | np.ndarray:
        """Game ``game`` as TetrisEnv renders it (``ansi`` or ``rgb_array``); needs ``colors=True``."""
        if self.colors.shape[0] == 0:
            raise ValueError("rendering needs Games(..., colors=True)")
        cells = self.colors[game, ::-1]
        if mode == "rgb_array":
            return board_to_rgb(cells)
        return game_to_text(
            cells, self.current[game], self.preview[game], self.pieces[game], self.lines[game], self.score[game]
        )

    def _state(self) -> tuple:
        """The arrays the engine's game kernels take, in their order."""
        return (
            self.rows, self.heights, self.colors, self.n_filled, self.current, self.preview, self._queue,
            self._queue_pos, self.rotation, self.column, self.config.max_pieces, self.pieces, self.lines, self.score,
            self.over, self.capped,
        )  # fmt: skip

    def _drop_finished(self) -> None:
        if self.over[self.active].any():
            self.active = self.active[~self.over[self.active]]

    def _top_up(self, games: np.ndarray) -> None:
        """Deal each game's next pieces until QUEUE are waiting, keeping the ones not yet used."""
        for g in games:
            waiting = list(self._queue[g, self._queue_pos[g] : self._queue_end[g]])
            while len(waiting) < QUEUE + self.config.preview:
                waiting += deal(self._rngs[g], self.config.randomizer)
            self._queue[g, : len(waiting)] = waiting
            self._queue_pos[g], self._queue_end[g] = 0, len(waiting)

    def _room(self) -> np.ndarray:
        """Pieces dealt ahead and not yet used, of each active game."""
        return self._queue_end[self.active] - self._queue_pos[self.active]

    def _least_room(self) -> int:
        return int(self._room().min(initial=QUEUE))
