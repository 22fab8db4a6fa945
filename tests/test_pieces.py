import numpy as np
import pytest

from tetris_train.env.pieces import (
    N_ROTATIONS,
    PIECE_HEIGHT,
    PIECE_NAMES,
    PIECE_WIDTH,
    SHAPES,
    placement_tables,
    shape_cells,
)


def normalise(cells):
    min_y = min(y for y, _ in cells)
    min_x = min(x for _, x in cells)
    return frozenset((y - min_y, x - min_x) for y, x in cells)


def rotate_clockwise(cells):
    # (row from bottom, column) -> rotate 90 degrees clockwise: (y, x) -> (-x, y)
    return normalise([(-x, y) for y, x in cells])


@pytest.mark.parametrize("piece, expected", [("O", 1), ("I", 2), ("S", 2), ("Z", 2), ("T", 4), ("J", 4), ("L", 4)])
def test_distinct_rotation_counts(piece, expected):
    assert N_ROTATIONS[PIECE_NAMES.index(piece)] == expected
    assert len(SHAPES[piece]) == expected


@pytest.mark.parametrize("piece", PIECE_NAMES)
def test_rotations_are_clockwise_turns_and_distinct(piece):
    states = [normalise(shape_cells(s)) for s in SHAPES[piece]]
    assert all(len(s) == 4 for s in states)
    assert len(set(states)) == len(states)
    # turning each state clockwise gives the next one, and the last turns back into the first
    for i, state in enumerate(states):
        assert rotate_clockwise(state) == states[(i + 1) % len(states)]


@pytest.mark.parametrize(
    "piece, footprints",
    [
        ("I", [(4, 1), (1, 4)]),
        ("O", [(2, 2)]),
        ("T", [(3, 2), (2, 3), (3, 2), (2, 3)]),
        ("S", [(3, 2), (2, 3)]),
        ("Z", [(3, 2), (2, 3)]),
        ("J", [(3, 2), (2, 3), (3, 2), (2, 3)]),
        ("L", [(3, 2), (2, 3), (3, 2), (2, 3)]),
    ],
)
def test_footprints(piece, footprints):
    p = PIECE_NAMES.index(piece)
    for r in range(4):
        assert (PIECE_WIDTH[p, r], PIECE_HEIGHT[p, r]) == footprints[r % len(footprints)]


@pytest.mark.parametrize("width", [4, 6, 10, 13])
def test_every_action_maps_to_a_legal_placement(width):
    canonical, mask, distinct = placement_tables(width)
    assert canonical.shape == (7, 4 * width)
    for p in range(7):
        expected = sum(width - PIECE_WIDTH[p, r] + 1 for r in range(N_ROTATIONS[p]))
        assert mask[p].sum() == expected == len(distinct[p])
        for a in range(4 * width):
            c = canonical[p, a]
            rot, x = divmod(c, width)
            assert mask[p, c]
            assert rot == (a // width) % N_ROTATIONS[p]
            assert 0 <= x <= width - PIECE_WIDTH[p, rot]
            assert x == min(a % width, width - PIECE_WIDTH[p, rot])
    np.testing.assert_array_equal(mask[PIECE_NAMES.index("O")].sum(), width - 1)


# Spawn orientations written out cell by cell, independently of the drawings in pieces.py:
# (row from the bottom, column from the left).
SPAWN_CELLS = {
    "I": {(0, 0), (0, 1), (0, 2), (0, 3)},
    "O": {(0, 0), (0, 1), (1, 0), (1, 1)},
    "T": {(0, 0), (0, 1), (0, 2), (1, 1)},
    "S": {(0, 0), (0, 1), (1, 1), (1, 2)},
    "Z": {(1, 0), (1, 1), (0, 1), (0, 2)},
    "J": {(1, 0), (0, 0), (0, 1), (0, 2)},
    "L": {(1, 2), (0, 0), (0, 1), (0, 2)},
}


@pytest.mark.parametrize("piece", PIECE_NAMES)
def test_spawn_shapes_are_the_tetrominoes(piece):
    assert normalise(shape_cells(SHAPES[piece][0])) == frozenset(SPAWN_CELLS[piece])
