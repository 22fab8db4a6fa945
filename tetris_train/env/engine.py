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
# Thiery & Scherrer's (2009) two additions to Dellacherie's features, appended to each afterstate
# row with EnvConfig.hole_features: rows holding a hole, and for each hole the filled cells above it
HOLE_FEATURES: tuple[str, ...] = ("rows_with_holes", "hole_depth")
TOPPED_OUT = -1
SCORE_TABLE = np.array([0, 100, 300, 500, 800], np.int64)  # guideline points for clearing 0-4 lines at once


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
def _hole_features(rows, heights, width, stack_top):
    """HOLE_FEATURES of a board: rows holding at least one hole (an empty cell with a filled one
    above it in its column), and the filled cells above each hole in its column, summed."""
    rows_with_holes = 0
    covered = 0  # columns with a filled cell above the current row
    for i in range(stack_top - 1, -1, -1):
        if covered & ~rows[i]:
            rows_with_holes += 1
        covered |= rows[i]
    depth = 0
    for c in range(width):
        bit = 1 << c
        above = 0
        for i in range(heights[c] - 1, -1, -1):
            if rows[i] & bit:
                above += 1
            else:
                depth += above
    return rows_with_holes, depth


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
def _afterstate_row(rows, heights, width, board_height, stack_top, n_filled, piece, a, preview, scale, tmp, out):
    """Write the scaled features of the board action ``a`` leaves into ``out`` (float32, one row);
    ``tmp`` holds scratch space: float64 ``(n_features,)``, then the rows and heights of a board."""
    feats, tmp_rows, tmp_heights = tmp
    feats[:] = 0.0
    rot = a // width
    x = a - rot * width
    lines, eroded, y, new_top = _drop_and_clear(
        rows, heights, width, board_height, stack_top, piece, rot, x, tmp_rows, tmp_heights
    )
    if lines == TOPPED_OUT:
        _top_out_row(width, board_height, feats)
    else:
        _board_features(tmp_rows, tmp_heights, width, board_height, new_top, n_filled + 4 - width * lines, feats)
        feats[F_LINES] = lines
        feats[F_LANDING] = y + PIECE_HEIGHT[piece, rot] / 2.0
        feats[F_ERODED] = eroded
    base = N_BOARD_FEATURES + width
    for i in range(preview.shape[0]):
        feats[base + N_PIECES * i + preview[i]] = 1.0
    extra = base + N_PIECES * preview.shape[0]
    if out.shape[0] > extra and lines != TOPPED_OUT:  # HOLE_FEATURES, where the layout holds them
        feats[extra], feats[extra + 1] = _hole_features(tmp_rows, tmp_heights, width, new_top)
    for f in range(out.shape[0]):
        out[f] = feats[f] / scale[f]


@njit(cache=True)
def _scratch(width, board_height, n_features):
    return np.empty(n_features, np.float64), np.empty(board_height, np.int64), np.empty(width, np.int64)


@njit(cache=True)
def afterstate_features(rows, heights, width, board_height, n_filled, piece, canonical, distinct, preview, scale):
    """Features of the board each action would leave, one row per action, scaled by ``scale``.

    Row layout: FEATURE_NAMES, then the height of every column, then a one-hot of each preview
    piece (the pieces known in the afterstate), then HOLE_FEATURES where ``scale`` has room for them.
    """
    n_actions = canonical.shape[0]
    result = np.empty((n_actions, scale.shape[0]), np.float32)
    stack_top = _stack_top(heights, width)
    tmp = _scratch(width, board_height, scale.shape[0])
    for k in range(distinct.shape[0]):
        a = distinct[k]
        _afterstate_row(
            rows, heights, width, board_height, stack_top, n_filled, piece, a, preview, scale, tmp, result[a]
        )
    for a in range(n_actions):
        c = canonical[a]
        if c != a:
            result[a] = result[c]
    return result


@njit(cache=True)
def placement_afterstates(rows, heights, width, board_height, n_filled, pieces, actions, preview, scale):
    """The afterstate rows of the placements ``(pieces[k], actions[k])`` on one board, float32
    ``(len(actions), n_features)``, laid out as :func:`afterstate_features` lays out a row."""
    out = np.empty((actions.shape[0], scale.shape[0]), np.float32)
    stack_top = _stack_top(heights, width)
    tmp = _scratch(width, board_height, scale.shape[0])
    for k in range(actions.shape[0]):
        _afterstate_row(
            rows, heights, width, board_height, stack_top, n_filled, pieces[k], actions[k], preview, scale, tmp, out[k]
        )
    return out


@njit(cache=True)
def distinct_afterstates(rows, heights, n_filled, current, preview, games, distinct, n_distinct, board_height, scale):
    """The afterstate rows of the distinct placements only, of several games at once.

    ``rows``, ``heights``, ``n_filled``, ``current`` and ``preview`` hold every game (first axis);
    ``games`` picks the ones to describe; ``distinct[p, :n_distinct[p]]`` lists piece ``p``'s
    distinct actions. Returns the rows, float32 ``(total, n_features)``, game ``games[i]``'s rows
    from ``starts[i]`` to ``starts[i + 1]`` in the order of its distinct actions, and ``starts``.
    """
    width = heights.shape[1]
    starts = np.empty(games.shape[0] + 1, np.int64)
    starts[0] = 0
    for i in range(games.shape[0]):
        starts[i + 1] = starts[i] + n_distinct[current[games[i]]]
    out = np.empty((starts[-1], scale.shape[0]), np.float32)
    tmp = _scratch(width, board_height, scale.shape[0])
    for i in range(games.shape[0]):
        g = games[i]
        piece = current[g]
        stack_top = _stack_top(heights[g], width)
        for k in range(n_distinct[piece]):
            _afterstate_row(
                rows[g],
                heights[g],
                width,
                board_height,
                stack_top,
                n_filled[g],
                piece,
                distinct[piece, k],
                preview[g],
                scale,
                tmp,
                out[starts[i] + k],
            )
    return out, starts


@njit(cache=True)
def first_best(values, starts, games, current, distinct):
    """For each game, the distinct action whose row value is largest (the first of ties: the lowest
    action), from values laid out as :func:`distinct_afterstates` lays out its rows."""
    actions = np.empty(games.shape[0], np.int64)
    for i in range(games.shape[0]):
        best = starts[i]
        for j in range(starts[i] + 1, starts[i + 1]):
            if values[j] > values[best]:
                best = j
        actions[i] = distinct[current[games[i]], best - starts[i]]
    return actions


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
def _dellacherie_row(rows, heights, width, board_height, stack_top, piece, a, tmp_rows, tmp_heights, out):
    """DELLACHERIE_FEATURES of action ``a``'s placement into ``out``; False (``out`` untouched) if
    the placement does not fit. Landing height is Fahey's: the middle of the piece's lowest and
    highest rows, counted from 1 at the floor, before clearing."""
    rot = a // width
    x = a - rot * width
    lines, eroded, y, new_top = _drop_and_clear(
        rows, heights, width, board_height, stack_top, piece, rot, x, tmp_rows, tmp_heights
    )
    if lines == TOPPED_OUT:
        return False
    out[0] = y + (PIECE_HEIGHT[piece, rot] + 1) / 2.0
    out[1] = eroded
    _dellacherie_board(tmp_rows, tmp_heights, width, board_height, new_top, out)
    return True


@njit(cache=True)
def dellacherie_features(rows, heights, width, board_height, piece, canonical, distinct):
    """DELLACHERIE_FEATURES of every action's placement (actions of one placement share a row);
    NaN where the placement does not fit."""
    n_actions = canonical.shape[0]
    out = np.full((n_actions, 6), np.nan)
    stack_top = _stack_top(heights, width)
    tmp_rows = np.empty(board_height, np.int64)
    tmp_heights = np.empty(width, np.int64)
    for k in range(distinct.shape[0]):
        a = distinct[k]
        _dellacherie_row(rows, heights, width, board_height, stack_top, piece, a, tmp_rows, tmp_heights, out[a])
    for a in range(n_actions):
        c = canonical[a]
        if c != a:
            out[a] = out[c]
    return out


@njit(cache=True)
def _dellacherie_best(
    rows, heights, width, board_height, piece, distinct, n_distinct, weights, features, tmp_rows, tmp_heights
):
    """The distinct placement whose DELLACHERIE_FEATURES score best under ``weights``, the first
    of ties (the lowest action), as the published player chooses; 0 when none fits."""
    stack_top = _stack_top(heights, width)
    best, action = -np.inf, 0
    for k in range(n_distinct[piece]):
        a = distinct[piece, k]
        if not _dellacherie_row(
            rows, heights, width, board_height, stack_top, piece, a, tmp_rows, tmp_heights, features
        ):
            continue
        score = 0.0
        for f in range(6):
            score += weights[f] * features[f]
        if score > best:
            best, action = score, a
    return action


@njit(cache=True)
def dellacherie_choices(rows, heights, current, games, distinct, n_distinct, board_height, weights):
    """For each of ``games``, the placement :func:`_dellacherie_best` picks (arrays as in
    :func:`distinct_afterstates`)."""
    width = heights.shape[1]
    actions = np.zeros(games.shape[0], np.int64)
    features = np.empty(6, np.float64)
    tmp_rows, tmp_heights = np.empty(board_height, np.int64), np.empty(width, np.int64)
    for i in range(games.shape[0]):
        g = games[i]
        actions[i] = _dellacherie_best(
            rows[g],
            heights[g],
            width,
            board_height,
            current[g],
            distinct,
            n_distinct,
            weights,
            features,
            tmp_rows,
            tmp_heights,
        )
    return actions


@njit(cache=True)
def mlp_values(x, weights, biases):
    """A ReLU MLP's single output for each input row of ``x`` ``(n, in)``: layer ``l`` maps by
    ``weights[l]`` (``(in, out)``, C-contiguous) plus ``biases[l]``, ReLU between layers. The
    products run through BLAS (numba's ``np.dot``, which SciPy provides)."""
    h = x
    depth = len(weights)
    for layer in range(depth):
        h = np.dot(h, weights[layer])
        b = biases[layer]
        last = layer == depth - 1
        for r in range(h.shape[0]):
            for j in range(h.shape[1]):
                v = h[r, j] + b[j]
                h[r, j] = v if last or v > 0.0 else 0.0
    return h[:, 0]


@njit(cache=True)
def _mlp_best(
    rows,
    heights,
    width,
    board_height,
    n_filled,
    piece,
    preview,
    distinct,
    n_distinct,
    scale,
    weights,
    biases,
    buffer,
    tmp,
):
    """The distinct placement whose afterstate row the MLP values most, the first of ties."""
    stack_top = _stack_top(heights, width)
    n = n_distinct[piece]
    for k in range(n):
        _afterstate_row(
            rows,
            heights,
            width,
            board_height,
            stack_top,
            n_filled,
            piece,
            distinct[piece, k],
            preview,
            scale,
            tmp,
            buffer[k],
        )
    values = mlp_values(buffer[:n], weights, biases)
    best = 0
    for k in range(1, n):
        if values[k] > values[best]:
            best = k
    return distinct[piece, best]


@njit(cache=True)
def place(rows, heights, colors, width, board_height, piece, rot, x):
    """Drop a piece for real: update rows, heights and the colour board in place (an empty
    ``colors``, shape ``(0, 0)``, keeps none).

    Returns the number of lines cleared, or TOPPED_OUT (board unchanged) if the piece does not fit.
    """
    stack_top = _stack_top(heights, width)
    y = _landing_row(heights, piece, rot, x)
    if y + PIECE_HEIGHT[piece, rot] > board_height:
        return TOPPED_OUT
    painted = colors.shape[0] > 0
    for dy in range(PIECE_HEIGHT[piece, rot] if painted else 0):
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
    if lines and painted:
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


@njit(cache=True, inline="always")
def _advance(
    g,
    a,
    rows,
    heights,
    colors,
    n_filled,
    current,
    preview,
    queue,
    queue_pos,
    rotation,
    column,
    max_pieces,
    pieces,
    total_lines,
    score,
    over,
    capped,
):
    """Game ``g`` places its current piece by action ``a``, by the rules of ``TetrisEnv.step``:
    the next piece comes from the preview and the preview's last from ``queue[g, queue_pos[g]]``
    (the pieces dealt ahead). A placement that does not fit ends the game (``over``); reaching
    ``max_pieces`` ends it too (``over`` and ``capped``). ``colors``: that game's cells, or an
    empty ``(0, 0)`` array."""
    board_height, width = rows.shape[1], heights.shape[1]
    piece = current[g]
    lines = place(rows[g], heights[g], colors, width, board_height, piece, rotation[piece, a], column[piece, a])
    if lines == TOPPED_OUT:
        over[g] = True
        return
    pieces[g] += 1
    total_lines[g] += lines
    score[g] += SCORE_TABLE[lines]
    n_filled[g] += 4 - width * lines
    upcoming = queue[g, queue_pos[g]]
    queue_pos[g] += 1
    n_preview = preview.shape[1]
    if n_preview == 0:
        current[g] = upcoming
    else:
        current[g] = preview[g, 0]
        for j in range(n_preview - 1):
            preview[g, j] = preview[g, j + 1]
        preview[g, n_preview - 1] = upcoming
    if pieces[g] >= max_pieces:
        over[g] = True
        capped[g] = True


@njit(cache=True)
def step_games(
    rows,
    heights,
    colors,
    n_filled,
    current,
    preview,
    queue,
    queue_pos,
    rotation,
    column,
    max_pieces,
    pieces,
    total_lines,
    score,
    over,
    capped,
    games,
    actions,
):
    """One placement in each of ``games``, ``actions[i]`` for ``games[i]`` (see :func:`_advance`).
    ``colors`` is ``(n_games, height, width)``, or ``(0, 0, 0)`` to keep no colours."""
    no_colors = np.zeros((0, 0), colors.dtype)
    for i in range(games.shape[0]):
        g = games[i]
        cells = colors[g] if colors.shape[0] > 0 else no_colors
        _advance(
            g,
            actions[i],
            rows,
            heights,
            cells,
            n_filled,
            current,
            preview,
            queue,
            queue_pos,
            rotation,
            column,
            max_pieces,
            pieces,
            total_lines,
            score,
            over,
            capped,
        )


@njit(cache=True)
def play_dellacherie(
    rows,
    heights,
    colors,
    n_filled,
    current,
    preview,
    queue,
    queue_pos,
    rotation,
    column,
    max_pieces,
    pieces,
    total_lines,
    score,
    over,
    capped,
    games,
    budget,
    distinct,
    n_distinct,
    weights,
):
    """Each of ``games`` plays on with Dellacherie's choices (:func:`_dellacherie_best`) until it
    ends or has made ``budget[i]`` placements; returns the placements made."""
    board_height, width = rows.shape[1], heights.shape[1]
    features = np.empty(6, np.float64)
    tmp_rows, tmp_heights = np.empty(board_height, np.int64), np.empty(width, np.int64)
    no_colors = np.zeros((0, 0), colors.dtype)
    placed = 0
    for i in range(games.shape[0]):
        g = games[i]
        cells = colors[g] if colors.shape[0] > 0 else no_colors
        for _ in range(budget[i]):
            if over[g]:
                break
            a = _dellacherie_best(
                rows[g],
                heights[g],
                width,
                board_height,
                current[g],
                distinct,
                n_distinct,
                weights,
                features,
                tmp_rows,
                tmp_heights,
            )
            _advance(
                g,
                a,
                rows,
                heights,
                cells,
                n_filled,
                current,
                preview,
                queue,
                queue_pos,
                rotation,
                column,
                max_pieces,
                pieces,
                total_lines,
                score,
                over,
                capped,
            )
            placed += 1
    return placed


@njit(cache=True)
def play_mlp(
    rows,
    heights,
    colors,
    n_filled,
    current,
    preview,
    queue,
    queue_pos,
    rotation,
    column,
    max_pieces,
    pieces,
    total_lines,
    score,
    over,
    capped,
    games,
    budget,
    distinct,
    n_distinct,
    scale,
    weights,
    biases,
):
    """Each of ``games`` plays on greedily by an afterstate MLP (:func:`mlp_values` of each distinct
    placement's observation row) until it ends or has made ``budget[i]`` placements; returns the
    placements made."""
    board_height, width = rows.shape[1], heights.shape[1]
    buffer = np.empty((distinct.shape[1], scale.shape[0]), np.float32)
    tmp = _scratch(width, board_height, scale.shape[0])
    no_colors = np.zeros((0, 0), colors.dtype)
    placed = 0
    for i in range(games.shape[0]):
        g = games[i]
        cells = colors[g] if colors.shape[0] > 0 else no_colors
        for _ in range(budget[i]):
            if over[g]:
                break
            a = _mlp_best(
                rows[g],
                heights[g],
                width,
                board_height,
                n_filled[g],
                current[g],
                preview[g],
                distinct,
                n_distinct,
                scale,
                weights,
                biases,
                buffer,
                tmp,
            )
            _advance(
                g,
                a,
                rows,
                heights,
                cells,
                n_filled,
                current,
                preview,
                queue,
                queue_pos,
                rotation,
                column,
                max_pieces,
                pieces,
                total_lines,
                score,
                over,
                capped,
            )
            placed += 1
    return placed


def rows_from_colors(colors: np.ndarray) -> np.ndarray:
    """Row bit masks of a colour board (row 0 at the floor)."""
    weights = np.left_shift(np.int64(1), np.arange(colors.shape[1], dtype=np.int64))
    return ((colors != 0).astype(np.int64) * weights).sum(axis=1).astype(np.int64)


def heights_from_colors(colors: np.ndarray) -> np.ndarray:
    """Column heights of a colour board (row 0 at the floor)."""
    filled = colors != 0
    top = colors.shape[0] - np.argmax(filled[::-1], axis=0)
    return np.where(filled.any(axis=0), top, 0).astype(np.int64)


def feature_layout(
    width: int, height: int, preview: int, hole_features: bool = False
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Names, divisors and upper bounds (after division) of an afterstate row's features:
    FEATURE_NAMES, each column's height, a one-hot of each preview piece, then HOLE_FEATURES if asked.

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
    if hole_features:
        names += list(HOLE_FEATURES)
        divisors += [h / 2, 2 * w]
        maxima += [h, w * h * h]
    scale = np.asarray(divisors, np.float64)
    high = (np.asarray(maxima, np.float64) / scale).astype(np.float32)
    return tuple(names), scale, high
