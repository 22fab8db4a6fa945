"""Drawing a colour board as text or as an RGB image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .pieces import PIECE_COLORS, PIECE_NAMES

EMPTY_RGB = np.array((24, 24, 24), np.uint8)
GRID_RGB = np.array((48, 48, 48), np.uint8)
TEXT_RGB = (230, 230, 230)
LINE_PX = 12  # the height of a line of the counters' text (Pillow's default font is about 11 pixels tall)
COUNTERS_PX = 48  # the strip above the board (lines, score, pieces): a multiple of 16, as video encoders want
MIN_FRAME_PX = 96  # narrow boards are centred in a frame this wide, so that the counters fit
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


def game_to_rgb(board: np.ndarray, pieces: int, lines: int, score: int, cell: int = 16) -> np.ndarray:
    """A game as an RGB image: a strip with its lines cleared, score and pieces above the board.

    The image is ``COUNTERS_PX + height * cell`` pixels tall and ``max(width * cell, MIN_FRAME_PX)``
    wide, the same for every frame of a game, as a video needs.
    """
    from PIL import Image, ImageDraw, ImageFont  # Pillow: a requirement of imageio and matplotlib

    picture = board_to_rgb(board, cell)
    width = max(picture.shape[1], MIN_FRAME_PX)
    frame = np.empty((COUNTERS_PX + picture.shape[0], width, 3), np.uint8)
    frame[:] = EMPTY_RGB
    left = (width - picture.shape[1]) // 2
    frame[COUNTERS_PX:, left : left + picture.shape[1]] = picture
    image = Image.fromarray(frame)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    for row, (name, value) in enumerate((("lines", lines), ("score", score), ("pieces", pieces))):
        draw.text((4, 6 + row * LINE_PX), f"{name} {short_count(int(value))}", fill=TEXT_RGB, font=font)
    return np.asarray(image)


def short_count(n: int) -> str:
    """``n`` with thousands separators; in millions above ten million, to fit a narrow frame."""
    return f"{n:,}" if n < 10_000_000 else f"{n / 1_000_000:,.0f}M"
