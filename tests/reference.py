"""A slow, independent Tetris model in plain Python, to check the compiled engine against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tetris_train.env.pieces import PIECE_NAMES, SHAPES, shape_cells


def rotations(piece: str) -> list[list[tuple[int, int]]]:
    return [shape_cells(s) for s in SHAPES[piece]]


def resolve_action(piece: str, action: int, width: int) -> tuple[int, int]:
    """(rotation, left column) that an action means, per the documented mapping."""
    states = rotations(piece)
    rot = (action // width) % len(states)
    piece_width = 1 + max(c for _, c in states[rot])
    return rot, min(action % width, width - piece_width)


@dataclass
class Placement:
    board: np.ndarray  # top row first, 0/1
    lines: int
    eroded: int
    landing_height: float


def place(board: np.ndarray, piece: str, rot: int, x: int) -> Placement | None:
    """Drop a piece from above the board; None if it does not fit (top-out)."""
    height, width = board.shape
    cells = rotations(piece)[rot]
    # cells as (row from bottom, column); lower the piece until it would overlap or leave the board
    y = height  # bottom of the piece, counted from the floor

    def fits(base: int) -> bool:
        for dy, dx in cells:
            row = base + dy
            if row < 0:
                return False
            if row < height and board[height - 1 - row, x + dx]:
                return False
        return True

    while fits(y - 1):
        y -= 1
    piece_height = 1 + max(dy for dy, _ in cells)
    if y + piece_height > height:
        return None
    new = board.copy()
    for dy, dx in cells:
        new[height - 1 - (y + dy), x + dx] = 1
    full_rows = [r for r in range(height) if new[r].all()]
    eroded_piece_cells = sum(1 for dy, _ in cells if (height - 1 - (y + dy)) in full_rows)
    kept = [new[r] for r in range(height) if r not in full_rows]
    cleared = np.array([np.zeros(width, new.dtype)] * len(full_rows) + kept, dtype=new.dtype).reshape(height, width)
    return Placement(cleared, len(full_rows), len(full_rows) * eroded_piece_cells, y + piece_height / 2)


def column_heights(board: np.ndarray) -> list[int]:
    height, width = board.shape
    heights = []
    for c in range(width):
        filled = [r for r in range(height) if board[r, c]]
        heights.append(height - filled[0] if filled else 0)
    return heights


def board_features(board: np.ndarray) -> dict[str, float]:
    """Surface and structure features of a board, by their textbook definitions."""
    height, width = board.shape
    heights = column_heights(board)
    bottom_up = board[::-1]
    holes = sum(1 for c in range(width) for r in range(heights[c]) if not bottom_up[r, c])
    bumpiness = sum(abs(heights[c] - heights[c + 1]) for c in range(width - 1))
    stack = max(heights)
    row_transitions = 0
    for r in range(stack):  # rows holding cells; the walls count as filled
        line = [1] + list(bottom_up[r]) + [1]
        row_transitions += sum(line[i] != line[i + 1] for i in range(width + 1))
    column_transitions = 0
    for c in range(width):  # the floor counts as filled, nothing above the board
        column = [1] + list(bottom_up[:, c])
        column_transitions += sum(column[i] != column[i + 1] for i in range(height))
    wells = 0
    for c in range(width):
        left = heights[c - 1] if c > 0 else height
        right = heights[c + 1] if c < width - 1 else height
        depth = min(left, right) - heights[c]
        if depth > 0:
            wells += depth * (depth + 1) // 2
    features = {
        "holes": holes,
        "bumpiness": bumpiness,
        "aggregate_height": sum(heights),
        "max_height": stack,
        "row_transitions": row_transitions,
        "column_transitions": column_transitions,
        "cumulative_wells": wells,
        "top_out": 0,
    }
    features.update({f"height_{c}": h for c, h in enumerate(heights)})
    return features


def afterstate_row(board: np.ndarray, piece: str, action: int, preview: list[str]) -> dict[str, float] | None:
    """Unscaled features the env promises for ``action``; None if the action tops out."""
    rot, x = resolve_action(piece, action, board.shape[1])
    result = place(board, piece, rot, x)
    if result is None:
        return None
    features = board_features(result.board)
    features.update(lines_cleared=result.lines, eroded_cells=result.eroded, landing_height=result.landing_height)
    for i, name in enumerate(preview):
        for other in PIECE_NAMES:
            features[f"preview_{i}_{other}"] = 1 if other == name else 0
    return features
