"""Play one game with a fixed player and print the board: a look at the environment."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Optional

from .env import EnvConfig
from .env.games import Games
from .evaluation import advance
from .players import DellacheriePlayer, RandomPlayer


def play(player: str = "heuristic", pieces: int = 500, seed: int = 0) -> dict:
    """Play one seeded game of at most ``pieces`` placements; return its result and final board."""
    games = Games(EnvConfig(max_pieces=pieces), [seed], colors=True)
    agent = DellacheriePlayer() if player == "heuristic" else RandomPlayer(seed)
    start = time.perf_counter()
    while len(games.active):
        advance(agent, games, pieces)
    elapsed = time.perf_counter() - start
    result = games.results()[0]
    return {**result, "terminated": not result["capped"], "seconds": elapsed, "board": games.render(0, "ansi")}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tetris_train.demo", description=__doc__)
    parser.add_argument("--player", choices=("heuristic", "random"), default="heuristic")
    parser.add_argument("--pieces", type=int, default=500, help="cap on placements (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.pieces < 1:
        parser.error(f"--pieces={args.pieces} is invalid: expected an integer >= 1")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed={args.seed} is invalid: expected an integer from 0 to 2**32 - 1")
    result = play(args.player, args.pieces, args.seed)
    print(result["board"])
    ending = "topped out" if result["terminated"] else "reached the piece cap"
    rate = result["pieces"] / max(result["seconds"], 1e-9)
    print(
        f"{args.player} player, seed {args.seed}: {ending} after {result['pieces']} pieces, "
        f"{result['lines']} lines, score {result['score']} ({rate:,.0f} placements/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
