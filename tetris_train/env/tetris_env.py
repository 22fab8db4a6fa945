"""TetrisEnv: Tetris as a Gymnasium environment where one step places one piece."""

from __future__ import annotations

import copy
import operator
from typing import Any, Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from . import engine
from .config import EnvConfig
from .pieces import MAX_ROTATIONS, N_PIECES, PIECE_NAMES, deal, every_placement, placement_tables
from .render import board_to_rgb, game_to_text

SCORE_TABLE: tuple[int, ...] = tuple(int(points) for points in engine.SCORE_TABLE)  # for clearing 0-4 lines


class TetrisEnv(gym.Env):
    """Tetris with placement actions, 7-bag (or uniformly drawn) pieces and afterstate features.

    Action ``a`` in ``Discrete(4 * width)`` places the current piece with rotation ``a // width``
    (modulo its distinct states) and its left edge in column ``a % width`` (clamped so it fits),
    hard-dropped from above the stack. Every action is a legal placement; a placement that does
    not fit inside the board ends the game. ``info["action_mask"]`` marks one action per distinct
    placement.

    Observations (``EnvConfig.observation``):

    * ``afterstates``: float32 ``(4 * width, n_features)``, row ``a`` describing the board that
      action ``a`` would leave (see :attr:`feature_names`);
    * ``board``: flat float32 cells (top row first), then one-hots of the current and preview pieces.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 8}

    def __init__(self, config: Optional[EnvConfig] = None, render_mode: Optional[str] = None, **overrides: Any):
        config = config if config is not None else EnvConfig()
        if render_mode is not None:
            overrides["render_mode"] = render_mode
        if overrides:
            config = EnvConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        self.render_mode = config.render_mode
        self.width, self.height = config.width, config.height
        self.n_actions = MAX_ROTATIONS * self.width
        self.action_space = spaces.Discrete(self.n_actions)

        canonical, mask, distinct = placement_tables(self.width)
        self._canonical, self._mask, self._distinct = canonical, mask, distinct
        self._rotation = canonical // self.width
        self._column = canonical % self.width

        self.feature_names, self.feature_scale, high = engine.feature_layout(
            self.width, self.height, config.preview, config.hole_features and config.observation == "afterstates"
        )
        if config.observation == "afterstates":
            high = np.broadcast_to(high, (self.n_actions, high.shape[0]))
            self.observation_space = spaces.Box(0.0, high, dtype=np.float32)
        else:
            size = self.width * self.height + N_PIECES * (1 + config.preview)
            self.observation_space = spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32)

        self._every_placement = every_placement(self.width)
        self._reports_every_piece = False

        self._line_rewards = tuple(config.line_rewards)
        self._colors = np.zeros((self.height, self.width), np.uint8)  # row 0 at the floor
        self._rows = np.zeros(self.height, np.int64)
        self._heights = np.zeros(self.width, np.int64)
        self._n_filled = 0
        self._bag: list[int] = []
        self._bag_pos = 0
        self._current = 0
        self._preview = np.zeros(config.preview, np.int64)
        self._pieces = 0
        self._total_lines = 0
        self._score = 0
        self._episode_over = True

    # -- Gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._colors[:] = 0
        self._rows[:] = 0
        self._heights[:] = 0
        self._n_filled = 0
        self._bag, self._bag_pos = [], 0
        self._current = self._draw()
        for i in range(self._preview.shape[0]):
            self._preview[i] = self._draw()
        self._pieces = self._total_lines = self._score = 0
        self._episode_over = False
        return self._observe(), self._info(0)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = self._check_action(action)
        piece = self._current
        lines = engine.place(
            self._rows,
            self._heights,
            self._colors,
            self.width,
            self.height,
            piece,
            self._rotation[piece, a],
            self._column[piece, a],
        )
        terminated = lines == engine.TOPPED_OUT
        if terminated:
            lines = 0
            reward = -self.config.game_over_penalty
        else:
            self._pieces += 1
            self._total_lines += lines
            self._score += SCORE_TABLE[lines]
            self._n_filled += 4 - self.width * lines
            reward = self.config.piece_reward + self._line_rewards[lines]
            self._advance_queue()
        truncated = not terminated and self._pieces >= self.config.max_pieces
        self._episode_over = terminated or truncated
        info = self._info(lines)
        if self._reports_every_piece:
            info["every_piece_afterstates"] = self.every_piece_afterstates()
        return self._observe(), reward, terminated, truncated, info

    def render(self) -> Optional[str | np.ndarray]:
        if self.render_mode == "ansi":
            return game_to_text(
                self.board_colors, self._current, self._preview, self._pieces, self._total_lines, self._score
            )
        if self.render_mode == "rgb_array":
            return board_to_rgb(self.board_colors)
        return None

    def action_masks(self) -> np.ndarray:
        """One True per distinct placement of the current piece (the convention of sb3-contrib)."""
        return self._mask[self._current].copy()

    # -- Board and state -----------------------------------------------------------------------

    @property
    def board(self) -> np.ndarray:
        """Occupancy, uint8 ``(height, width)``, top row first, 1 for a filled cell."""
        return (self._colors[::-1] != 0).astype(np.uint8)

    @property
    def board_colors(self) -> np.ndarray:
        """Cells, uint8 ``(height, width)``, top row first: 0 empty, else the id of the piece + 1."""
        return self._colors[::-1].copy()

    @property
    def current_piece(self) -> str:
        return PIECE_NAMES[self._current]

    @property
    def preview_pieces(self) -> tuple[str, ...]:
        return tuple(PIECE_NAMES[p] for p in self._preview)

    def get_state(self) -> dict[str, Any]:
        """Everything that decides the rest of the game, as plain picklable values."""
        return {
            "board": self.board_colors,
            "current": int(self._current),
            "preview": [int(p) for p in self._preview],
            "bag": [int(p) for p in self._bag[self._bag_pos :]],
            "rng": copy.deepcopy(self.np_random.bit_generator.state),
            "pieces": self._pieces,
            "total_lines": self._total_lines,
            "score": self._score,
            "episode_over": self._episode_over,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state`; the next step continues that game exactly."""
        board = np.asarray(state["board"], dtype=np.uint8)
        if board.shape != (self.height, self.width):
            raise ValueError(f"state board has shape {board.shape}; this env needs {(self.height, self.width)}")
        if len(state["preview"]) != self._preview.shape[0]:
            raise ValueError(
                f"state has {len(state['preview'])} preview pieces; this env shows {self._preview.shape[0]}"
            )
        if board.max(initial=0) > N_PIECES:
            raise ValueError(f"state board holds cell value {board.max()}; allowed 0 (empty) to {N_PIECES}")
        self._colors[:] = board[::-1]
        self._rows[:] = engine.rows_from_colors(self._colors)
        self._heights[:] = engine.heights_from_colors(self._colors)
        self._n_filled = int(np.count_nonzero(self._colors))
        self._current = int(state["current"])
        self._preview[:] = state["preview"]
        self._bag, self._bag_pos = [int(p) for p in state["bag"]], 0
        self.np_random.bit_generator.state = copy.deepcopy(state["rng"])
        self._pieces = int(state["pieces"])
        self._total_lines = int(state["total_lines"])
        self._score = int(state["score"])
        self._episode_over = bool(state["episode_over"])

    def dellacherie_features(self) -> np.ndarray:
        """Pierre Dellacherie's six features (``engine.DELLACHERIE_FEATURES``, the published
        definitions) of the placement each action makes, float64 ``(n_actions, 6)``; NaN rows for
        placements that do not fit. For the published player: the observation's own features differ."""
        piece = self._current
        return engine.dellacherie_features(
            self._rows, self._heights, self.width, self.height, piece, self._canonical[piece], self._distinct[piece]
        )

    def report_every_piece(self, on: bool = True) -> None:
        """Whether each step's info carries ``every_piece_afterstates``: the afterstate rows of every
        piece's distinct placements on the board the step left (layout: ``pieces.every_placement``).
        With uniform pieces and no preview they give the exact expectation of the next state's
        value over the piece to come (``agent.expected_target``). Off by default: it costs about
        seven observations per step."""
        config = self.config
        if on and (config.observation != "afterstates" or config.preview != 0 or config.randomizer != "uniform"):
            raise ValueError(
                "every piece's afterstates need env.observation=afterstates, env.preview=0 and "
                f"env.randomizer=uniform, not {config.observation}, {config.preview} and {config.randomizer}"
            )
        self._reports_every_piece = bool(on)

    def every_piece_afterstates(self) -> np.ndarray:
        """The afterstate rows, float32 ``(n_placements, n_features)``, of every piece's distinct
        placements on the board as it is, whatever the current piece: the rows the observation
        would hold if each piece were the current one (with the preview as it is)."""
        pieces, actions = self._every_placement
        return engine.placement_afterstates(
            self._rows,
            self._heights,
            self.width,
            self.height,
            self._n_filled,
            pieces,
            actions,
            self._preview,
            self.feature_scale,
        )

    def observe(self) -> np.ndarray:
        """The observation of the current state (what the last reset or step returned)."""
        return self._observe()

    # -- internals -----------------------------------------------------------------------------

    def _draw(self) -> int:
        if self._bag_pos == len(self._bag):
            self._bag = deal(self.np_random, self.config.randomizer)
            self._bag_pos = 0
        piece = self._bag[self._bag_pos]
        self._bag_pos += 1
        return piece

    def _advance_queue(self) -> None:
        if self._preview.shape[0] == 0:
            self._current = self._draw()
            return
        self._current = int(self._preview[0])
        self._preview[:-1] = self._preview[1:]
        self._preview[-1] = self._draw()

    def _observe(self) -> np.ndarray:
        piece = self._current
        if self.config.observation == "afterstates":
            return engine.afterstate_features(
                self._rows,
                self._heights,
                self.width,
                self.height,
                self._n_filled,
                piece,
                self._canonical[piece],
                self._distinct[piece],
                self._preview,
                self.feature_scale,
            )
        cells = self.width * self.height
        obs = np.zeros(self.observation_space.shape, np.float32)
        obs[:cells] = (self._colors[::-1] != 0).ravel()
        obs[cells + piece] = 1.0
        for i, p in enumerate(self._preview):
            obs[cells + N_PIECES * (1 + i) + p] = 1.0
        return obs

    def _info(self, lines: int) -> dict[str, Any]:
        return {
            "lines_cleared": lines,
            "total_lines": self._total_lines,
            "pieces": self._pieces,
            "score": self._score,
            "action_mask": self._mask[self._current].copy(),
        }

    def _check_action(self, action: Any) -> int:
        if self._episode_over:
            raise RuntimeError("step() called on a finished or never-started game: call reset() first")
        try:
            a = operator.index(action)
        except TypeError:
            raise ValueError(f"action {action!r} is not an integer; expected 0 <= action < {self.n_actions}") from None
        if not 0 <= a < self.n_actions:
            raise ValueError(
                f"action {a} is outside Discrete({self.n_actions}); expected 0 <= action < {self.n_actions}"
            )
        return a
