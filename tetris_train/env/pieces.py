"""The seven tetrominoes, their distinct rotation states, and the lookup tables the engine uses.

Shapes are drawn top row first. Inside the engine rows count from the floor up (row 0 is the bottom)
and bit ``c`` of a row mask is column ``c`` counted from the left.
"""

from __future__ import annotations

import numpy as np

PIECE_NAMES: tuple[str, ...] = ("I", "O", "T", "S", "Z", "J", "L")
N_PIECES = len(PIECE_NAMES)
MAX_ROTATIONS = 4

# Clockwise rotation states, spawn orientation first; only the distinct states are listed.
SHAPES: dict[str, tuple[str, ...]] = {
    "I": ("####", "#\n#\n#\n#"),
    "O": ("##\n##",),
    "T": (".#.\n###", "#.\n##\n#.", "###\n.#.", ".#\n##\n.#"),
    "S": (".##\n##.", "#.\n##\n.#"),
    "Z": ("##.\n.##", ".#\n##\n#."),
    "J": ("#..\n###", "##\n#.\n#.", "###\n..#", ".#\n.#\n##"),
    "L": ("..#\n###", "#.\n#.\n##", "###\n#..", "##\n.#\n.#"),
}

# Guideline colours, RGB, one per piece in PIECE_NAMES order.
PIECE_COLORS = np.array(
    [
        (0, 240, 240),  # I cyan
        (240, 240, 0),  # O yellow
        (160, 0, 240),  # T purple
        (0, 240, 0),  # S green
        (240, 0, 0),  # Z red
        (0, 0, 240),  # J blue
        (240, 160, 0),  # L orange
    ],
    dtype=np.uint8,
)


def shape_cells(shape: str) -> list[tuple[int, int]]:
    """Cells of a drawn shape as (row from the bottom, column from the left)."""
    lines = shape.split("\n")
    height = len(lines)
    return [(height - 1 - r, c) for r, line in enumerate(lines) for c, ch in enumerate(line) if ch == "#"]


def _build_tables() -> dict[str, np.ndarray]:
    n_rot = np.zeros(N_PIECES, np.int64)
    width = np.zeros((N_PIECES, MAX_ROTATIONS), np.int64)
    height = np.zeros((N_PIECES, MAX_ROTATIONS), np.int64)
    low = np.zeros((N_PIECES, MAX_ROTATIONS, 4), np.int64)  # lowest occupied row of each column
    top = np.zeros((N_PIECES, MAX_ROTATIONS, 4), np.int64)  # highest occupied row of each column
    mask = np.zeros((N_PIECES, MAX_ROTATIONS, 4), np.int64)  # row masks at column 0, bottom row first
    for p, name in enumerate(PIECE_NAMES):
        states = SHAPES[name]
        n_rot[p] = len(states)
        for r in range(MAX_ROTATIONS):
            cells = shape_cells(states[r % len(states)])
            w = 1 + max(c for _, c in cells)
            h = 1 + max(y for y, _ in cells)
            width[p, r], height[p, r] = w, h
            for j in range(w):
                rows = [y for y, c in cells if c == j]
                low[p, r, j], top[p, r, j] = min(rows), max(rows)
            for y, c in cells:
                mask[p, r, y] |= 1 << c
    return {"n_rot": n_rot, "width": width, "height": height, "low": low, "top": top, "mask": mask}


TABLES = _build_tables()
N_ROTATIONS: np.ndarray = TABLES["n_rot"]
PIECE_WIDTH: np.ndarray = TABLES["width"]
PIECE_HEIGHT: np.ndarray = TABLES["height"]
COLUMN_LOW: np.ndarray = TABLES["low"]
COLUMN_TOP: np.ndarray = TABLES["top"]
ROW_MASK: np.ndarray = TABLES["mask"]


UNIFORM_BLOCK = 64  # pieces one draw of the uniform randomizer deals


def deal(rng: np.random.Generator, randomizer: str) -> list[int]:
    """The next pieces of a game, in order: a shuffled bag of the seven (``bag``), or
    ``UNIFORM_BLOCK`` pieces drawn independently and uniformly (``uniform``).

    Every game deals its pieces through this, so a seed means the same pieces wherever it is played.
    """
    if randomizer == "bag":
        return [int(p) for p in rng.permutation(N_PIECES)]
    return [int(p) for p in rng.integers(N_PIECES, size=UNIFORM_BLOCK)]


def placement_tables(board_width: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Map every action of ``Discrete(4 * board_width)`` to a legal placement.

    Action ``a`` means rotation ``a // board_width`` (taken modulo the piece's distinct states) with
    the piece's left edge in column ``a % board_width`` (clamped so the piece fits). Returns
    ``canonical[piece, a]`` (the smallest action giving the same placement), ``mask[piece, a]``
    (True for exactly one action per distinct placement) and, per piece, the distinct actions.
    """
    n_actions = MAX_ROTATIONS * board_width
    canonical = np.zeros((N_PIECES, n_actions), np.int64)
    for p in range(N_PIECES):
        for a in range(n_actions):
            r = (a // board_width) % N_ROTATIONS[p]
            x = min(a % board_width, board_width - PIECE_WIDTH[p, r])
            canonical[p, a] = r * board_width + x
    mask = canonical == np.arange(n_actions)[None, :]
    distinct = [np.flatnonzero(mask[p]).astype(np.int64) for p in range(N_PIECES)]
    return canonical, mask, distinct


def every_placement(board_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Every piece's distinct placements on a board ``board_width`` columns wide, as
    two int64 arrays ``(pieces, actions)``: piece 0's distinct actions first, then piece 1's, and
    so on, each piece's in increasing order (the layout of ``info["every_piece_afterstates"]``)."""
    distinct = placement_tables(board_width)[2]
    pieces = np.concatenate([np.full(len(d), p, np.int64) for p, d in enumerate(distinct)])
    return pieces, np.concatenate(distinct).astype(np.int64)


def every_piece_rows(board_width: int) -> np.ndarray:
    """Where each piece's placements lie in :func:`every_placement`'s layout: int64
    ``(N_PIECES, most placements)``, row ``p`` listing piece ``p``'s, padded with its first (a repeat
    changes neither a maximum nor the row an argmax picks)."""
    counts = np.bincount(every_placement(board_width)[0], minlength=N_PIECES)
    starts = np.cumsum(counts) - counts
    k = np.arange(counts.max())
    return np.where(k[None, :] < counts[:, None], starts[:, None] + k[None, :], starts[:, None]).astype(np.int64)
