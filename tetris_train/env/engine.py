"""Compiled core of the environment: dropping pieces, clearing lines and afterstate features.

The board is held as one int64 bit mask per row, row 0 at the floor, bit ``c`` for column ``c``,
so a line clear is an integer comparison and transitions are popcounts. numba compiles these
kernels on first use and caches the machine code next to this file.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .pieces import COLUMN_LOW, COLUMN_TOP, N_PIECES, PIECE_HEIGHT, PIECE_WIDTH, ROW_MASK

FEATURE_NAMES: tuple[str, ...] = (
    "lines_cleared",
    "holes",
    "bumpiness",
    "aggregate_height",
    "max_height",
    "landing_height",
    "eroded_cells",
    "row_transitions",
    "column_transitions",
    "cumulative_wells",
    "top_out",
)
N_BOARD_FEATURES = len(FEATURE_NAMES)
(
    F_LINES,
    F_HOLES,
    F_BUMPINESS,
    F_AGGREGATE,
    F_MAX_HEIGHT,
    F_LANDING,
    F_ERODED,
    F_ROW_TRANS,
    F_COL_TRANS,
    F_WELLS,
    F_TOP_OUT,
) = range(N_BOARD_FEATURES)
TOPPED_OUT = -1


@njit(cache=True, inline="always")
def _popcount(x):
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((x * 0x0101010101010101) >> 56) & 0xFF


@njit(cache=True, inline="always")
def _stack_top(heights, width):
    """The height of the highest column."""
    top = 0
    for c in range(width):
        if heights[c] > top:
            top = heights[c]
    return top


@njit(cache=True, inline="always")
def _landing_row(heights, piece, rot, x):
    """Row of the piece's bottom edge after a hard drop with its left edge in column ``x``."""
    y = 0
    for j in range(PIECE_WIDTH[piece, rot]):
        v = heights[x + j] - COLUMN_LOW[piece, rot, j]
        if v > y:
            y = v
    return y


@njit(cache=True)
def _drop_and_clear(rows, heights, width, board_height, stack_top, piece, rot, x, out_rows, out_heights):
    """Drop a piece onto a copy of the board and clear full lines.

    Writes the resulting board into ``out_rows``/``out_heights`` (rows valid below the returned
    stack top) and returns ``(lines, eroded_cells, landing_row, new_stack_top)``; ``lines`` is TOPPED_OUT when the
    piece does not fit inside the board, in which case the outputs are left untouched.
    """
    h = PIECE_HEIGHT[piece, rot]
    y = _landing_row(heights, piece, rot, x)
    if y + h > board_height:
        return TOPPED_OUT, 0, y, stack_top
    full = (1 << width) - 1
    for i in range(stack_top):
        out_rows[i] = rows[i]
    for i in range(stack_top, y + h):
        out_rows[i] = 0
    lines = 0
    piece_cells_cleared = 0
    for dy in range(h):
        out_rows[y + dy] |= ROW_MASK[piece, rot, dy] << x
        if out_rows[y + dy] == full:
            lines += 1
            piece_cells_cleared += _popcount(ROW_MASK[piece, rot, dy])
    limit = max(stack_top, y + h)
    if lines == 0:
        for c in range(width):
            out_heights[c] = heights[c]
        for j in range(PIECE_WIDTH[piece, rot]):
            t = y + COLUMN_TOP[piece, rot, j] + 1
            if t > out_heights[x + j]:
                out_heights[x + j] = t
        return 0, 0, y, limit
    dst = y
    for src in range(y, limit):
        if out_rows[src] != full:
            out_rows[dst] = out_rows[src]
            dst += 1
    for i in range(dst, limit):
        out_rows[i] = 0
    new_top = limit - lines
    for c in range(width):
        out_heights[c] = 0
    seen = 0
    for i in range(new_top - 1, -1, -1):
        fresh = out_rows[i] & ~seen
        if fresh:
            for c in range(width):
                if (fresh >> c) & 1:
                    out_heights[c] = i + 1
            seen |= fresh
            if seen == full:
                break
    return lines, lines * piece_cells_cleared, y, new_top


@njit(cache=True)
def _board_features(rows, heights, width, board_height, stack_top, n_filled, out):
    """Fill the surface and structure features of a board (unscaled) into ``out``."""
    aggregate = 0
    max_h = 0
    bumpiness = 0
    wells = 0
    for c in range(width):
        hc = heights[c]
        aggregate += hc
        if hc > max_h:
            max_h = hc
        if c + 1 < width:
            bumpiness += abs(hc - heights[c + 1])
        left = heights[c - 1] if c > 0 else board_height
        right = heights[c + 1] if c + 1 < width else board_height
        depth = min(left, right) - hc
        if depth > 0:
            wells += depth * (depth + 1) // 2
    walls = 1 | (1 << (width + 1))
    span = (1 << (width + 1)) - 1
    row_trans = 0
    col_trans = 0
    below = (1 << width) - 1  # the floor counts as filled
    for i in range(stack_top):
        row = rows[i]
        v = (row << 1) | walls
        row_trans += _popcount((v ^ (v >> 1)) & span)
        col_trans += _popcount(row ^ below)
        below = row
    if stack_top < board_height:
        col_trans += _popcount(below)  # each column's top against the empty space above
    out[F_HOLES] = aggregate - n_filled
    out[F_BUMPINESS] = bumpiness
    out[F_AGGREGATE] = aggregate
    out[F_MAX_HEIGHT] = max_h
    out[F_ROW_TRANS] = row_trans
    out[F_COL_TRANS] = col_trans
    out[F_WELLS] = wells
    for c in range(width):
        out[N_BOARD_FEATURES + c] = heights[c]


@njit(cache=True)
def _top_out_row(width, board_height, out):
    """A top-out reads as a full board with the top-out flag set: never like a good board."""
    for k in range(out.shape[0]):
        out[k] = 0.0
    out[F_TOP_OUT] = 1.0
    out[F_MAX_HEIGHT] = board_height
    out[F_AGGREGATE] = width * board_height
    for c in range(width):
        out[N_BOARD_FEATURES + c] = board_height


@njit(cache=True)
def afterstate_features(rows, heights, width, board_height, n_filled, piece, canonical, distinct, preview, scale):
    """Features of the board each action would leave, one row per action, scaled by ``scale``.

    Row layout: FEATURE_NAMES, then the height of every column, then a one-hot of each preview
    piece (the pieces known in the afterstate).
    """
    n_actions = canonical.shape[0]
    n_features = scale.shape[0]
    out = np.zeros((n_actions, n_features), np.float64)
    stack_top = _stack_top(heights, width)
    tmp_rows = np.empty(board_height, np.int64)
    tmp_heights = np.empty(width, np.int64)
    for k in range(distinct.shape[0]):
        a = distinct[k]
        rot = a // width
        x = a - rot * width
        row = out[a]
        lines, eroded, y, new_top = _drop_and_clear(
            rows, heights, width, board_height, stack_top, piece, rot, x, tmp_rows, tmp_heights
        )
        if lines == TOPPED_OUT:
            _top_out_row(width, board_height, row)
            continue
        _board_features(tmp_rows, tmp_heights, width, board_height, new_top, n_filled + 4 - width * lines, row)
        row[F_LINES] = lines
        row[F_LANDING] = y + PIECE_HEIGHT[piece, rot] / 2.0
        row[F_ERODED] = eroded
    base = N_BOARD_FEATURES + width
    for a in range(n_actions):
        c = canonical[a]
        if c != a:
            out[a, :base] = out[c, :base]
        for i in range(preview.shape[0]):
            out[a, base + N_PIECES * i + preview[i]] = 1.0
    result = np.empty((n_actions, n_features), np.float32)
    for a in range(n_actions):
        for f in range(n_features):
            result[a, f] = out[a, f] / scale[f]
    return result


# Pierre Dellacherie's six features as published: Fahey's implementation (2003), formalised by
# Thiery & Scherrer (2009; their code, MDPTetris, computes the same). Unscaled, one row per placement.
DELLACHERIE_FEATURES: tuple[str, ...] = (
    "landing_height",
    "eroded_cells",
    "row_transitions",
    "column_transitions",
    "holes",
    "cumulative_wells",
)


@njit(cache=True)
def _dellacherie_board(rows, heights, width, board_height, stack_top, out):
    """The four board features of the published definitions, of a board after its clears, into
    ``out[2:6]``: row transitions over every row (both walls filled, so an empty row counts 2),
    column transitions (floor filled, the space above the board empty), holes (empty cells under
    a filled one), and wells (each cell whose left and right neighbours are filled, the walls
    filled, adds the run of empty cells from it down: a well of depth d adds 1 + 2 + ... + d)."""
    walls = 1 | (1 << (width + 1))
    span = (1 << (width + 1)) - 1
    row_trans = 2 * (board_height - stack_top)
    col_trans = 0
    below = (1 << width) - 1
    for i in range(stack_top):
        row = rows[i]
        v = (row << 1) | walls
        row_trans += _popcount((v ^ (v >> 1)) & span)
        col_trans += _popcount(row ^ below)
        below = row
    col_trans += _popcount(below)
    holes = 0
    wells = 0
    for c in range(width):
        bit = 1 << c
        for i in range(heights[c]):
            if not rows[i] & bit:
                holes += 1
        for i in range(stack_top):
            if rows[i] & bit:
                continue
            left = c == 0 or (rows[i] >> (c - 1)) & 1
            right = c == width - 1 or (rows[i] >> (c + 1)) & 1
            if left and right:
                k = i
                while k >= 0 and not rows[k] & bit:
                    wells += 1
                    k -= 1
    out[2] = row_trans
    out[3] = col_trans
    out[4] = holes
    out[5] = wells


@njit(cache=True)
def dellacherie_features(rows, heights, width, board_height, piece, canonical, distinct):
    """DELLACHERIE_FEATURES of every action's placement (actions of one placement share a row);
    NaN where the placement does not fit. Landing height is Fahey's: the middle of the piece's
    lowest and highest rows, counted from 1 at the floor, before clearing."""
    n_actions = canonical.shape[0]
    out = np.full((n_actions, 6), np.nan)
    stack_top = _stack_top(heights, width)
    tmp_rows = np.empty(board_height, np.int64)
    tmp_heights = np.empty(width, np.int64)
    for k in range(distinct.shape[0]):
        a = distinct[k]
        rot = a // width
        x = a - rot * width
        lines, eroded, y, new_top = _drop_and_clear(
            rows, heights, width, board_height, stack_top, piece, rot, x, tmp_rows, tmp_heights
        )
        if lines == TOPPED_OUT:
            continue
        out[a, 0] = y + (PIECE_HEIGHT[piece, rot] + 1) / 2.0
        out[a, 1] = eroded
        _dellacherie_board(tmp_rows, tmp_heights, width, board_height, new_top, out[a])
    for a in range(n_actions):
        c = canonical[a]
        if c != a:
            out[a] = out[c]
    return out


@njit(cache=True)
def place(rows, heights, colors, width, board_height, piece, rot, x):
    """Drop a piece for real: update rows, heights and the colour board in place.

    Returns the number of lines cleared, or TOPPED_OUT (board unchanged) if the piece does not fit.
    """
    stack_top = _stack_top(heights, width)
    y = _landing_row(heights, piece, rot, x)
    if y + PIECE_HEIGHT[piece, rot] > board_height:
        return TOPPED_OUT
    for dy in range(PIECE_HEIGHT[piece, rot]):
        m = ROW_MASK[piece, rot, dy]
        for j in range(PIECE_WIDTH[piece, rot]):
            if (m >> j) & 1:
                colors[y + dy, x + j] = piece + 1
    new_rows = np.empty(board_height, np.int64)
    new_heights = np.empty(width, np.int64)
    lines, _, _, new_top = _drop_and_clear(
        rows, heights, width, board_height, stack_top, piece, rot, x, new_rows, new_heights
    )
    rows[:new_top] = new_rows[:new_top]
    rows[new_top:] = 0
    heights[:] = new_heights
    if lines:
        dst = 0
        for src in range(board_height):
            keep = False
            for c in range(width):
                if colors[src, c] == 0:
                    keep = True
                    break
            if keep:
                if dst != src:
                    colors[dst, :] = colors[src, :]
                dst += 1
        colors[dst:, :] = 0
    return lines


def rows_from_colors(colors: np.ndarray) -> np.ndarray:
    """Row bit masks of a colour board (row 0 at the floor)."""
    weights = np.left_shift(np.int64(1), np.arange(colors.shape[1], dtype=np.int64))
    return ((colors != 0).astype(np.int64) * weights).sum(axis=1).astype(np.int64)


def heights_from_colors(colors: np.ndarray) -> np.ndarray:
    """Column heights of a colour board (row 0 at the floor)."""
    filled = colors != 0
    top = colors.shape[0] - np.argmax(filled[::-1], axis=0)
    return np.where(filled.any(axis=0), top, 0).astype(np.int64)


def feature_layout(width: int, height: int, preview: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Names, divisors and upper bounds (after division) of an afterstate row's features.

    Divisors put a board in ordinary play within about [0, 1]; the upper bounds are exact maxima,
    so every observation lies inside the observation space.
    """
    w, h = width, height
    # feature: (divisor, largest unscaled value)
    board = {
        "lines_cleared": (4, 4),
        "holes": (2 * w, w * h),
        "bumpiness": (2 * w, (w - 1) * h),
        "aggregate_height": (w * h, w * h),
        "max_height": (h, h),
        "landing_height": (h, h),
        "eroded_cells": (16, 16),
        "row_transitions": (w * h / 4, h * (w + 1)),
        "column_transitions": (2 * w, w * (h + 1)),
        "cumulative_wells": (2 * w, w * h * (h + 1) / 2),
        "top_out": (1, 1),
    }
    assert tuple(board) == FEATURE_NAMES
    names = list(FEATURE_NAMES) + [f"height_{c}" for c in range(w)]
    divisors = [d for d, _ in board.values()] + [h] * w
    maxima = [m for _, m in board.values()] + [h] * w
    from .pieces import PIECE_NAMES

    for i in range(preview):
        names += [f"preview_{i}_{p}" for p in PIECE_NAMES]
        divisors += [1] * N_PIECES
        maxima += [1] * N_PIECES
    scale = np.asarray(divisors, np.float64)
    high = (np.asarray(maxima, np.float64) / scale).astype(np.float32)
    return tuple(names), scale, high
