import numpy as np
import pytest

from tetris_train.env import PIECE_NAMES, SCORE_TABLE, EnvConfig, TetrisEnv
from tetris_train.players import HeuristicPlayer

from .helpers import set_board


def action(env, rotation, column):
    return rotation * env.width + column


def test_hard_drop_on_empty_board_lands_on_the_floor(small_env):
    set_board(small_env, "", current="I")
    small_env.step(action(small_env, 0, 1))
    assert small_env.board[-1].tolist() == [0, 1, 1, 1, 1, 0]
    assert small_env.board[:-1].sum() == 0


def test_piece_rests_on_the_highest_column_under_it(small_env):
    set_board(
        small_env,
        """
        ..#...
        ..#...
        ###...
    """,
        current="O",
    )
    small_env.step(action(small_env, 0, 1))  # O over columns 1-2: column 2 is 3 tall
    board = small_env.board
    assert board[-5, 1:3].tolist() == [1, 1] and board[-4, 1:3].tolist() == [1, 1]
    assert board[-3:-1, 1].tolist() == [0, 0]  # the drop leaves the cells under the overhang empty


def test_piece_cannot_slide_under_an_overhang(small_env):
    set_board(
        small_env,
        """
        ###...
        ......
    """,
        current="I",
    )
    small_env.step(action(small_env, 1, 1))  # vertical I in column 1 stops on the overhang
    assert small_env.board[:, 1].tolist() == [0, 0, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("lines", [1, 2, 3, 4])
def test_line_clears_reward_and_score(lines):
    env = TetrisEnv(width=6, height=8)
    env.reset(seed=0)
    full = "#####.\n" * lines
    set_board(env, "......\n" + full, current="I")
    _, reward, terminated, _, info = env.step(action(env, 1, 5))  # vertical I into the well
    assert not terminated
    assert info["lines_cleared"] == lines and info["total_lines"] == lines
    assert info["score"] == SCORE_TABLE[lines]
    assert reward == pytest.approx(1 + 10 * lines**2)
    # what is left: the part of the I that stuck out above the cleared lines
    assert env.board[:, 5].sum() == 4 - lines
    assert env.board.sum() == 4 - lines


def test_rows_above_a_clear_fall_down(small_env):
    set_board(
        small_env,
        """
        #.....
        .#....
        ##.###
    """,
        current="I",
    )
    _, _, _, _, info = small_env.step(action(small_env, 1, 2))
    assert info["lines_cleared"] == 1
    assert small_env.board[-3:].tolist() == [
        [0, 0, 1, 0, 0, 0],
        [1, 0, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
    ]


def test_placement_that_does_not_fit_ends_the_game():
    env = TetrisEnv(width=6, height=8)
    env.reset(seed=0)
    set_board(env, "..#...\n..#...\n" + "\n".join(["##.###"] * 5), current="I")
    before = env.board
    obs, reward, terminated, truncated, info = env.step(action(env, 1, 2))  # 7 rows + 4 > 8
    assert terminated and not truncated
    assert reward == -env.config.game_over_penalty
    assert info["pieces"] == 0
    np.testing.assert_array_equal(env.board, before)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_max_pieces_truncates():
    env = TetrisEnv(max_pieces=25)
    player = HeuristicPlayer(env)
    obs, info = env.reset(seed=3)
    for i in range(25):
        obs, _, terminated, truncated, info = env.step(int(player(obs[None], info["action_mask"][None])[0]))
        assert not terminated
        assert truncated == (i == 24)
    assert info["pieces"] == 25


def piece_sequence(seed, n, preview=1):
    env = TetrisEnv(preview=preview, max_pieces=n + 10)
    player = HeuristicPlayer(env)
    obs, info = env.reset(seed=seed)
    pieces = []
    for _ in range(n):
        pieces.append(env.current_piece)
        obs, _, terminated, _, info = env.step(int(player(obs[None], info["action_mask"][None])[0]))
        assert not terminated
    return pieces


def test_every_bag_holds_all_seven_pieces():
    pieces = piece_sequence(seed=5, n=700)
    for start in range(0, 700, 7):
        assert sorted(pieces[start : start + 7]) == sorted(PIECE_NAMES)


def test_equal_seeds_give_equal_games_and_zero_is_a_seed():
    assert piece_sequence(0, 70) == piece_sequence(0, 70)
    assert piece_sequence(0, 70) != piece_sequence(1, 70)
    # seeding with 0 must differ from an unseeded reset, which would be random every time
    unseeded = [piece_sequence(None, 70) for _ in range(2)]
    assert unseeded[0] != unseeded[1]


def test_preview_shows_the_coming_pieces():
    env = TetrisEnv(preview=3)
    obs, info = env.reset(seed=2)
    player = HeuristicPlayer(env)
    for _ in range(20):
        coming = env.preview_pieces
        obs, _, _, _, info = env.step(int(player(obs[None], info["action_mask"][None])[0]))
        assert env.current_piece == coming[0]
        assert env.preview_pieces[:2] == coming[1:]


def test_preview_zero_works():
    env = TetrisEnv(preview=0)
    obs, info = env.reset(seed=0)
    assert env.preview_pieces == ()
    obs, *_ = env.step(0)
    assert obs.shape == (40, len(env.feature_names))


def test_action_rotation_is_modulo_and_column_clamped():
    env = TetrisEnv(width=6, height=8)
    env.reset(seed=0)
    boards = []
    for a in (action(env, 0, 4), action(env, 1, 5), action(env, 2, 4), action(env, 3, 5)):  # all the same O
        set_board(env, "#.....", current="O")
        env.step(a)
        boards.append(env.board)
    for board in boards[1:]:
        np.testing.assert_array_equal(board, boards[0])
    assert boards[0][-1].tolist() == [1, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("bad", [-1, 40, 10_000])
def test_action_outside_the_space_raises(bad):
    env = TetrisEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside Discrete\\(40\\)"):
        env.step(bad)


@pytest.mark.parametrize("bad", [1.5, "3", None, [1, 2]])
def test_non_integer_action_raises(bad):
    env = TetrisEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not an integer"):
        env.step(bad)


def test_numpy_integer_actions_are_accepted():
    env = TetrisEnv()
    env.reset(seed=0)
    env.step(np.int64(3))
    env.step(np.array(5))
    assert env.get_state()["pieces"] == 2


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="reset"):
        TetrisEnv().step(0)


def test_custom_rewards():
    env = TetrisEnv(EnvConfig(width=6, height=8, piece_reward=0.5, line_rewards=(0, 1, 3, 5, 8), game_over_penalty=2))
    env.reset(seed=0)
    set_board(env, "#####.\n#####.", current="I")
    _, reward, *_ = env.step(action(env, 1, 5))
    assert reward == pytest.approx(0.5 + 3)
