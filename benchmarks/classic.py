"""The literature's Tetris: our agent against Dellacherie's player, random play and the published table.

1. Training, unless ``--runs`` names finished runs: ``python -m tetris_train env=<env>
   agent=<agent> schedule=<schedule> seed=S [overrides]`` for each seed, ``--jobs`` at a time, into
   ``--out``; by default the preset for this game, ``agent=classic schedule=classic``.
2. Evaluation on fresh games (seeds ``--eval-seed`` onwards, not the ones training evaluated on):
   each run's ``best`` checkpoint, Dellacherie's published player and random play, all on the very
   same games, beside the published means (Scherrer et al., JMLR 2015, Table 1; Thiery & Scherrer
   2009; Fahey 2003).

    python benchmarks/classic.py [--env classic_small] [--agent classic] [--schedule classic]
                                 [--seeds 0 1 2] [--jobs 2] [-- overrides]
    python benchmarks/classic.py --runs /tmp/bench/classic/seed_0 /tmp/bench/classic/seed_1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from learning import run_seeds

PUBLISHED = {  # mean lines per game: (10 x 10, 10 x 20)
    "Dellacherie's weights (Fahey 2003)": (None, 660_000),
    "DU / BDU (Thiery & Scherrer 2009)": ("3,800 / 4,200", "31M / 36M"),
    "DT-10 / DT-20 (CBMPI, Scherrer et al. 2015)": ("5,000 / 4,300", "29M / 51M"),
    "lambda-policy iteration": ("350-400", "about 2,500"),
}


def evaluate_all(runs: list[Path], env: str, episodes: int, seed: int, max_pieces: int, jobs: int = 1) -> list[dict]:
    """Every run's ``best`` agent, Dellacherie's player and random play on the same games (the runs'
    own game, or ``env``'s without runs), ``jobs`` controllers at a time (one process each)."""
    from concurrent.futures import ProcessPoolExecutor

    game = players_game(runs, env, max_pieces)
    tasks = [("agent", str(run), episodes, seed, max_pieces, game) for run in runs]
    tasks += [(player, None, episodes, seed, max_pieces, game) for player in ("dellacherie", "random")]
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(_evaluate_one, tasks))
    return [{**row, "width": game["width"], "height": game["height"]} for row in rows]


def players_game(runs: list[Path], env: str, max_pieces: int) -> dict:
    """The game every controller plays, as an EnvConfig dict: the runs' (all must share its rules), or
    ``env``'s when there are no runs."""
    from tetris_train.checkpoints import read_metadata
    from tetris_train.env import EnvConfig
    from tetris_train.evaluate import resolve_agent_checkpoint

    rules = ("width", "height", "randomizer", "preview")
    games = {}
    for run in runs:
        saved = read_metadata(resolve_agent_checkpoint(str(run)))["config"]["env"]
        games[run] = EnvConfig.from_dict({**saved, "max_pieces": max_pieces}).to_dict()
    if not games:
        height = {"classic_small": 10, "classic": 20}[env]
        return EnvConfig(height=height, randomizer="uniform", preview=0, max_pieces=max_pieces).to_dict()
    first = next(iter(games.values()))
    for run, game in games.items():
        if any(game[k] != first[k] for k in rules):
            shown = ", ".join(f"{k}={game[k]}" for k in rules)
            raise SystemExit(f"error: {run} plays another game ({shown}); the runs compared must share one")
    return first


def _evaluate_one(task: tuple) -> dict:
    import torch

    from tetris_train.agent import load_model
    from tetris_train.checkpoints import read_metadata
    from tetris_train.env import EnvConfig
    from tetris_train.evaluate import resolve_agent_checkpoint
    from tetris_train.evaluation import evaluate, model_policy
    from tetris_train.players import DellacheriePlayer, RandomPlayer

    kind, run, episodes, seed, max_pieces, game = task
    torch.set_num_threads(1)
    config = EnvConfig.from_dict(game)
    if kind == "dellacherie":
        return {"name": "Dellacherie (published player)", **evaluate(DellacheriePlayer(), config, episodes, seed)}
    if kind == "random":
        return {"name": "random placements", **evaluate(RandomPlayer(seed), config, episodes, seed)}
    run = Path(run)
    checkpoint = resolve_agent_checkpoint(str(run))
    metadata = read_metadata(checkpoint)
    config = EnvConfig.from_dict({**metadata["config"]["env"], "max_pieces": max_pieces})  # its own rewards too
    result = evaluate(model_policy(load_model(checkpoint, device="cpu")), config, episodes, seed, progress=None)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    return {
        "name": f"agent {run.name} (best at {metadata['num_timesteps']:,} steps)",
        **result,
        "minutes": summary.get("wall_seconds", float("nan")) / 60,
        "timesteps": summary.get("timesteps"),
    }


def print_table(rows: list[dict], episodes: int, seed: int, max_pieces: int, board: str) -> None:
    dellacherie = next(r for r in rows if r["name"].startswith("Dellacherie"))
    print(
        f"\n{board}, uniform pieces, no preview: {episodes} games (seeds {seed}-{seed + episodes - 1}), "
        f"each capped at {max_pieces:,} pieces"
    )
    header = f"{'controller':44} {'mean lines':>11} {'95 % interval':>21} {'median':>9} {'capped':>7}"
    print(f"{header} {'/ Dellacherie':>14}")
    for r in rows:
        low, high = r["mean_lines_95"]
        print(
            f"{r['name'][:44]:44} {r['mean_lines']:>11,.1f} {f'{max(low, 0):,.0f} to {high:,.0f}':>21} "
            f"{r['median_lines']:>9,.0f} {r['reached_cap']:>7.0%} {r['mean_lines'] / dellacherie['mean_lines']:>14.2f}"
        )
    agents = [r for r in rows if r["name"].startswith("agent")]
    if agents:
        beat = sum(r["mean_lines"] > dellacherie["mean_lines"] for r in agents)
        print(f"agents above Dellacherie's mean on these games: {beat} of {len(agents)}")
        for r in agents:
            print(f"  {r['name']}: trained {r['timesteps'] or 0:,} steps in {r['minutes']:.1f} minutes")
    column = 0 if board.startswith("10 x 10") else 1
    print("published means (lines per game, on their implementations of the game):")
    for name, figures in PUBLISHED.items():
        figure = figures[column]
        print(f"  {name:44} {figure if isinstance(figure, str) else (f'{figure:,}' if figure else '-')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="classic_small", choices=("classic_small", "classic"))
    parser.add_argument("--agent", default="classic", help="the agent group's option to train")
    parser.add_argument("--schedule", default="classic", help="the schedule group's option to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench/classic"))
    parser.add_argument("--runs", type=Path, nargs="+", default=None, help="finished runs to evaluate (no training)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--eval-seed", type=int, default=2_000_000)
    parser.add_argument("--max-pieces", type=int, default=10_000_000)
    parser.add_argument("overrides", nargs="*", help="training overrides (after --)")
    args = parser.parse_args()

    runs = args.runs
    if runs is None:
        args.out.mkdir(parents=True, exist_ok=True)
        start = time.time()
        groups = [f"env={args.env}", f"agent={args.agent}", f"schedule={args.schedule}"]
        run_seeds(args.seeds, args.jobs, args.out, [*groups, *args.overrides])
        print(f"trained {len(args.seeds)} seeds in {(time.time() - start) / 60:.1f} minutes", flush=True)
        runs = [args.out / f"seed_{seed}" for seed in args.seeds]
    rows = evaluate_all(runs, args.env, args.episodes, args.eval_seed, args.max_pieces, args.jobs)
    board = f"{rows[-1]['width']} x {rows[-1]['height']}"  # the runs' own game
    print_table(rows, args.episodes, args.eval_seed, args.max_pieces, board)


if __name__ == "__main__":
    sys.exit(main())
