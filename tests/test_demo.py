"""python -m tetris_train.demo: key=value arguments, a board redrawn as it plays, one-line errors."""

import io
import subprocess
import sys

import pytest

from tetris_train.demo import main, play
from tetris_train.env import EnvConfig


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_key_value_arguments_and_a_pipe_gets_the_final_board_only():
    result = subprocess.run(
        [sys.executable, "-m", "tetris_train.demo", "player=heuristic", "pieces=200", "seed=3", "delay=0.05"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("+----------+") == 1 and "\x1b[" not in result.stdout  # one board, no redrawing
    assert (
        result.stdout.rstrip()
        .splitlines()[-1]
        .startswith("heuristic player, seed 3: reached the piece cap after 200 pieces")
    )


def test_a_terminal_sees_the_board_after_each_placement(monkeypatch):
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    assert main(["player=random", "pieces=4", "seed=1", "delay=0", "env=small"]) == 0
    shown = screen.getvalue()
    assert shown.count("+------+") == 4  # the 6-wide board of env=small, drawn after each of the 4 pieces
    assert shown.count("\x1b[14F") == 3  # each redraw goes back up to the board's first line (header + 12 rows + floor)
    for pieces in range(1, 5):
        assert f"pieces {pieces}  lines" in shown
    assert shown.startswith("\x1b[?25l")  # the cursor hidden while the board is redrawn, then shown again:
    assert shown.rstrip().splitlines()[-1].startswith("\x1b[?25hrandom player, seed 1: ")


@pytest.mark.parametrize(
    "argument, message",
    [
        ("pieces=0", "pieces=0 is invalid: expected an integer >= 1"),
        ("seed=-1", "seed=-1 is invalid: expected an integer from 0 to 2**32 - 1"),
        ("delay=soon", "delay=soon is invalid: expected a number >= 0"),
        ("player=expert", "player=expert is invalid: expected one of heuristic, random"),
        ("colour=red", "colour=red: no such key; allowed keys: player, pieces, seed, delay, env"),
        ("env=huge", "env=huge: no such option; available: board, classic"),
        ("env.width=2", "env.width=2 is invalid: expected an integer from 4 to 32"),
        ("env.depth=3", "env.depth=3: no such key; allowed keys of env: width, height"),
        ("--pieces", "--pieces: the demo takes key=value arguments (pieces=..., not --pieces)"),
    ],
)
def test_bad_input_is_one_line(capsys, argument, message):
    assert main([argument]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {message}"), err


def test_play_from_python_with_an_env_and_a_watcher():
    seen = []
    result = play("heuristic", 30, seed=2, env=EnvConfig(width=6, height=12), watch=lambda games: seen.append(1))
    assert result["pieces"] == 30 and len(seen) == 30 and result["board"].count("|......|") >= 1
    assert play("heuristic", 30, seed=2, env=EnvConfig(width=6, height=12))["lines"] == result["lines"]
