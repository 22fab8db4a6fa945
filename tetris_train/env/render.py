"""Drawing a colour board as text or as an RGB image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .pieces import PIECE_COLORS, PIECE_NAMES

EMPTY_RGB = np.array((24, 24, 24), np.uint8)
GRID_RGB = np.array((48, 48, 48), np.uint8)
_PALETTE = np.vstack([EMPTY_RGB, PIECE_COLORS])


def board_to_text(board: np.ndarray) -> str:
    """Board (top row first, 0 empty, piece id + 1 filled) as lines of piece letters and dots."""
    symbols = np.array(["."] + list(PIECE_NAMES))
    body = "\n".join("|" + "".join(symbols[row]) + "|" for row in board)
    return body + "\n+" + "-" * board.shape[1] + "+"


def game_to_text(board: np.ndarray, current: int, preview: Sequence[int], pieces: int, lines: int, score: int) -> str:
    """A game as text: a line with its pieces and counters, then the board."""
    upcoming = " ".join(PIECE_NAMES[p] for p in preview)
    header = f"piece {PIECE_NAMES[current]}  next {upcoming or '-'}  pieces {pieces}  lines {lines}  score {score}\n"
    return header + board_to_text(board) + "\n"


def board_to_rgb(board: np.ndarray, cell: int = 16) -> np.ndarray:
    """Board as an ``(height * cell, width * cell, 3)`` uint8 image with a one-pixel grid."""
    image = np.repeat(np.repeat(_PALETTE[board], cell, axis=0), cell, axis=1)
    image[::cell, :] = GRID_RGB
    image[:, ::cell] = GRID_RGB
    return image
