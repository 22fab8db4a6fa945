"""Does pruning pay? The Optuna search with its pruner against the same search without one.

For each sampler seed, two searches run at once (one core each) with the same settings and seed:

    python -m tetris_train -m hparams_search=dqn_optuna seed=S hydra.sweeper.n_trials=N \\
        schedule.max_timesteps=T schedule.eval_freq=E [extra overrides]          # pruned (the preset's pruner)
    ... the same with hydra/sweeper/pruner=none                                  # unpruned

and from each stored study and job folder: the best objective, the environment steps trained over
all trials (each job folder's timesteps: a configuration proposed twice is trained once), the wall
time and the trials pruned. Printed side by side, with the ratios pruned / unpruned. Targets: best
objective >= 0.95 x the unpruned search's, environment steps <= 0.40 x.

    python benchmarks/search.py [--seeds 0] [--trials 16] [--timesteps 100000] [--eval-freq 12500]
                                [--out DIR] [--pruner OVERRIDE ...] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_OBJECTIVE = 0.95
TARGET_STEPS = 0.40


def start(sweep: Path, seed: int, args: argparse.Namespace, extra: list[str]) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "tetris_train",
        "-m",
        "hparams_search=dqn_optuna",
        f"seed={seed}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"schedule.max_timesteps={args.timesteps}",
        f"schedule.eval_freq={args.eval_freq}",
        "schedule.progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        *extra,
    ]
    print("$", " ".join(command[1:]), flush=True)
    sweep.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, stdout=open(sweep.with_suffix(".log"), "w"), stderr=subprocess.STDOUT)


def outcome(sweep: Path, wall: float) -> dict:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="dqn_tetris", storage=f"sqlite:///{sweep}/optuna.db")
    trials = study.get_trials(deepcopy=False)
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    return {
        "best": study.best_value,
        "best_params": study.best_params,
        "steps": sum(int(s.get("timesteps", 0)) for s in summaries),
        "runs": len(summaries),
        "wall": wall,
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
    }


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--eval-freq", type=int, default=12_500)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/search"))
    parser.add_argument("--pruner", nargs="*", default=[], help="overrides for the pruned search only")
    parser.add_argument("extra", nargs="*", help="more overrides for both searches")
    args = parser.parse_args()

    results = []
    for seed in args.seeds:
        folders = {"unpruned": args.out / f"seed{seed}_unpruned", "pruned": args.out / f"seed{seed}_pruned"}
        started = time.perf_counter()
        processes = {
            "unpruned": start(folders["unpruned"], seed, args, [*args.extra, "hydra/sweeper/pruner=none"]),
            "pruned": start(folders["pruned"], seed, args, [*args.extra, *args.pruner]),
        }
        walls = {}
        while len(walls) < len(processes):
            for name, process in processes.items():
                if name not in walls and process.poll() is not None:
                    if process.returncode:
                        sys.exit(f"the {name} search failed: see {folders[name].with_suffix('.log')}")
                    walls[name] = time.perf_counter() - started
            time.sleep(1)
        results.append({name: outcome(folders[name], walls[name]) for name in processes})

    print(
        f"\n{args.trials} trials of hparams_search=dqn_optuna, {args.timesteps:,} steps each at most, "
        f"evaluations every {args.eval_freq:,}; sampler seeds {args.seeds}; both searches of a seed side by side"
    )
    header = f"{'seed':>4}  {'search':<10}{'best objective':>16}{'env steps':>12}{'runs':>6}{'wall':>8}"
    print(header + f"{'complete':>10}{'pruned':>8}{'failed':>8}")
    ratios: dict[str, list[float]] = {"best": [], "steps": [], "wall": []}
    for seed, result in zip(args.seeds, results):
        for name in ("unpruned", "pruned"):
            r = result[name]
            print(
                f"{seed:>4}  {name:<10}{r['best']:>16,.1f}{r['steps']:>12,}{r['runs']:>6}{minutes(r['wall']):>8}"
                f"{r['complete']:>10}{r['pruned']:>8}{r['failed']:>8}"
            )
        for key in ratios:
            ratios[key].append(result["pruned"][key] / result["unpruned"][key])
        print(f"{'':>4}  best unpruned: {result['unpruned']['best_params']}")
        print(f"{'':>4}  best pruned:   {result['pruned']['best_params']}")

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"

    print(f"pruned / unpruned: best objective {spread(ratios['best'])}; env steps {spread(ratios['steps'])};")
    print(f"                   wall time {spread(ratios['wall'])}")
    met_best = all(r >= TARGET_OBJECTIVE for r in ratios["best"])
    met_steps = all(r <= TARGET_STEPS for r in ratios["steps"])
    print(
        f"targets, for every seed: best objective >= {TARGET_OBJECTIVE} x unpruned: {met_best}; "
        f"env steps <= {TARGET_STEPS} x unpruned: {met_steps}"
    )


if __name__ == "__main__":
    main()
