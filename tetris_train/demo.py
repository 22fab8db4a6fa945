"""``python -m tetris_train.demo [player=heuristic] [pieces=500] [seed=0] [delay=0.05] [env=<preset>] [env.<key>=...]``

Watch a fixed player play one seeded game: on a terminal the board is redrawn in place after each
placement, with its pieces, lines and score; elsewhere (a pipe, a file) only the final board and the
summary line are printed. Arguments are ``key=value``, as for the other commands, and Hydra's
override grammar parses them (``env.line_rewards=[0,1,2,3,4]``); bad input ends with one line.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, TextIO

from .env import EnvConfig
from .env.games import Games
from .evaluation import advance
from .players import DellacheriePlayer, RandomPlayer
from .validation import check, is_int, is_number

PLAYERS = ("heuristic", "random")
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


@dataclass
class DemoConfig:
    """What the demo plays.

    Attributes:
        player: heuristic (Dellacherie's player) or random.
        pieces: placements after which the game stops (the cap; env.max_pieces is not used).
        seed: the game's seed (the pieces dealt).
        delay: seconds between placements when the board is redrawn on a terminal.
    """

    player: str = "heuristic"
    pieces: int = 500
    seed: int = 0
    delay: float = 0.05
    env: EnvConfig = field(default_factory=EnvConfig)

    def __post_init__(self) -> None:
        def _check(ok: bool, name: str, allowed: str) -> None:
            check(ok, "DemoConfig", name, getattr(self, name), allowed)

        _check(self.player in PLAYERS, "player", f"one of {', '.join(PLAYERS)}")
        _check(is_int(self.pieces) and self.pieces >= 1, "pieces", "an integer >= 1")
        _check(is_int(self.seed) and 0 <= self.seed < 2**32, "seed", "an integer from 0 to 2**32 - 1")
        _check(is_number(self.delay) and self.delay >= 0, "delay", "a number >= 0 (seconds)")


def play(
    player: str = "heuristic",
    pieces: int = 500,
    seed: int = 0,
    env: Optional[EnvConfig] = None,
    watch: Optional[Callable[[Games], None]] = None,
) -> dict[str, Any]:
    """Play one seeded game of at most ``pieces`` placements on ``env`` (default: the standard
    game); return its result and final board. ``watch``, if given, sees the games after each
    placement (one at a time then; without it, a compiled player plays the game in one call)."""
    config = dataclasses.replace(env or EnvConfig(), max_pieces=pieces)
    games = Games(config, [seed], colors=True)
    agent = DellacheriePlayer() if player == "heuristic" else RandomPlayer(seed)
    start = time.perf_counter()
    while len(games.active):
        advance(agent, games, 1 if watch is not None else pieces)
        if watch is not None:
            watch(games)
    elapsed = time.perf_counter() - start
    result = games.results()[0]
    return {**result, "terminated": not result["capped"], "seconds": elapsed, "board": games.render(0, "ansi")}


def parse_arguments(argv: Sequence[str]) -> DemoConfig:
    """The DemoConfig of ``key=value`` arguments; bad input raises the errors that
    :func:`~tetris_train.cli.describe_error` puts in one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .cli import ResumeError, allowed_keys, group_options

    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].partition("=")[0]
            raise ResumeError(f"{arg}: the demo takes key=value arguments ({name}=..., not --{name}); see --help")
    values: dict[str, Any] = {}
    env: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(list(argv)):
        key, value = override.key_or_group, override.value()
        if override.input_line.startswith(("+", "~")) or override.package is not None:
            raise ResumeError(f"{override.input_line}: expected key=value")
        if override.is_sweep_override():
            raise ResumeError(f"{override.input_line}: the demo plays one game: one value per key")
        if key == "env":
            if value not in group_options("env"):
                raise ResumeError(f"env={value}: no such option; available: {', '.join(group_options('env'))}")
            env.update(env_preset(str(value)))
        elif key.startswith("env."):
            name = key[len("env.") :]
            if name not in {f.name for f in dataclasses.fields(EnvConfig)}:
                raise ResumeError(
                    f"{key}={argument(override)}: no such key; allowed keys of env: {allowed_keys('env')}"
                )
            if name == "max_pieces":
                raise ResumeError(
                    f"{key}={argument(override)}: the demo's game stops after pieces=N placements: "
                    f"set pieces={argument(override)}"
                )
            env[name] = value
        elif key in {f.name for f in dataclasses.fields(DemoConfig)} - {"env"}:
            values[key] = value
        else:
            keys = ", ".join([*(f.name for f in dataclasses.fields(DemoConfig) if f.name != "env"), "env", "env.<key>"])
            raise ResumeError(f"{key}={argument(override)}: no such key; allowed keys: {keys}")
    return DemoConfig(**values, env=EnvConfig(**env))


def argument(override: Any) -> str:
    """An override's value as the command line gave it."""
    return override.input_line.partition("=")[2]


def env_preset(name: str) -> dict[str, Any]:
    """The env settings of the preset ``conf/env/<name>.yaml``."""
    from importlib.resources import files

    import yaml

    text = (files("tetris_train.conf") / "env" / f"{name}.yaml").read_text()
    settings = yaml.safe_load(text) or {}
    if "@package _global_" in text:  # a preset that sets other groups too: its env part
        settings = settings.get("env") or {}
    return dict(settings)


class LiveBoard:
    """Draws a game's board on a terminal after each placement, in place: back up to the board's
    first line, each line cleared to its end; then waits ``delay`` seconds."""

    def __init__(self, out: TextIO, delay: float):
        self.out, self.delay, self.drawn = out, delay, 0

    def __call__(self, games: Games) -> None:
        board = games.render(0, "ansi")
        self.out.write((f"\x1b[{self.drawn}F" if self.drawn else "") + board.replace("\n", "\x1b[K\n"))
        self.out.flush()
        self.drawn = board.count("\n")
        if self.delay:
            time.sleep(self.delay)


def run_command(argv: Optional[Sequence[str]] = None) -> int:
    """The demo command: the game, redrawn as it plays on a terminal, then its summary line."""
    from .cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, describe_error

    argv = list(sys.argv[1:] if argv is None else argv)
    if {"--help", "-h"} & set(argv):
        print(usage())
        return 0
    try:
        config = parse_arguments(argv)
    except Exception as error:
        message = describe_error(error, argv, DemoConfig)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = sys.stdout
    live = out.isatty()
    try:
        if live:
            out.write(HIDE_CURSOR)
        result = play(
            config.player, config.pieces, config.seed, config.env, LiveBoard(out, config.delay) if live else None
        )
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if live:
            out.write(SHOW_CURSOR)
            out.flush()
    if not live:
        print(result["board"])
    ending = "topped out" if result["terminated"] else "reached the piece cap"
    rate = f" ({result['pieces'] / max(result['seconds'], 1e-9):,.0f} placements/s)" if not live else ""
    print(
        f"{config.player} player, seed {config.seed}: {ending} after {result['pieces']} pieces, "
        f"{result['lines']} lines, score {result['score']}{rate}"
    )
    return 0


def usage() -> str:
    """``--help``: the keys with their defaults and meanings, and the env presets."""
    from .cli import group_options, key_lines

    return "\n".join(
        [
            (__doc__ or "").strip(),
            "",
            "keys (key=value, shown with their defaults):",
            *key_lines(DemoConfig, ""),
            "  env=default".ljust(40) + f" the game: {', '.join(group_options('env'))}",
            "  env.<key>=value".ljust(40) + " one setting of the game (python -m tetris_train --help lists them)",
        ]
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point; output cut short by a closed pipe (``| head``) ends it quietly."""
    from .cli import closed_pipe_exits

    with closed_pipe_exits():
        return run_command(argv)


if __name__ == "__main__":
    from .cli import interrupted_exits

    with interrupted_exits():
        raise SystemExit(main())
