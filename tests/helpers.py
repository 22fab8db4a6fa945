"""Helpers shared by the tests."""

from __future__ import annotations

import numpy as np

from tetris_train.env import PIECE_NAMES, TetrisEnv


def set_board(env: TetrisEnv, drawing: str, current: str = "I", preview: tuple[str, ...] | None = None) -> None:
    """Put a drawn board (top row first, '#' or a piece letter filled, '.' empty) into a reset env."""
    lines = [line.strip() for line in drawing.strip().splitlines()]
    lines = ["." * env.width] * (env.height - len(lines)) + lines
    board = np.array(
        [
            [0 if ch == "." else 1 + (PIECE_NAMES.index(ch) if ch in PIECE_NAMES else 0) for ch in line]
            for line in lines
        ],
        dtype=np.uint8,
    )
    state = env.get_state()
    state.update(board=board, current=PIECE_NAMES.index(current))
    if preview is not None:
        state["preview"] = [PIECE_NAMES.index(p) for p in preview]
    env.set_state(state)
