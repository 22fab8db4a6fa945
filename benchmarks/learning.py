"""Does the default training run learn Tetris? Measured over several training seeds.

1. Speed, in one process before any run starts: training env-steps/s of the default config against
   SB3's DQN on CartPole-v1 with the same batch size, network, train frequency and buffer, timed in
   interleaved rounds after learning starts; the median ratio with its spread. Target: ratio >= 0.6.
2. Learning: ``python -m tetris_train seed=S`` for each seed (``--jobs`` at a time), then from each
   run's ``evaluations.jsonl``: the step where the evaluation mean first reaches 1,000 lines
   (target: within 50k steps), whether the best evaluation played every game to the piece cap
   (target: yes, for every seed) and whether evaluations after first reaching the cap stayed at
   >= 90 % of the cap's lines (no collapse), and where the run stopped (by default, once two
   evaluations played every game to the cap: schedule.stop_at_cap).

    python benchmarks/learning.py [--seeds 0 1 2] [--jobs 2] [--timesteps 500000] [-- extra overrides]
    python benchmarks/learning.py --speed-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_SPEED_RATIO = 0.6
TARGET_FIRST_1000 = 50_000
COLLAPSE_FRACTION = 0.9


def timed_learn(model, steps: int) -> float:
    """Env-steps/s of ``learn`` over ``steps`` more steps."""
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def speed_comparison(steps: int, rounds: int) -> dict[str, list[float]]:
    """Both models are built and their buffers filled first (untimed); then ``rounds`` interleaved
    rounds of ``steps`` steps each, ours then CartPole's, so that a noisy machine slows both alike."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN

    from tetris_train import TetrisAgent, TrainingConfig
    from tetris_train.agent import dqn_arguments
    from tetris_train.env import make_env

    config = TrainingConfig()
    torch.set_num_threads(config.agent.torch_threads)
    same = dqn_arguments(config)  # every hyperparameter the same, the network included
    ours = TetrisAgent(make_env(config.env)(), config).model
    cartpole = DQN("MlpPolicy", gym.make("CartPole-v1"), **same)
    for model in (ours, cartpole):
        model.learn(model.learning_starts + 1)  # fill the buffer first: untimed
    speeds: dict[str, list[float]] = {"tetris_train": [], "sb3_cartpole": [], "ratio": []}
    for _ in range(rounds):
        speeds["tetris_train"].append(timed_learn(ours, steps))
        speeds["sb3_cartpole"].append(timed_learn(cartpole, steps))
        speeds["ratio"].append(speeds["tetris_train"][-1] / speeds["sb3_cartpole"][-1])
    return speeds


def spread(values: list[float], digits: int = 0) -> str:
    """Median with the lowest and highest value."""
    return f"{statistics.median(values):.{digits}f} (min {min(values):.{digits}f}, max {max(values):.{digits}f})"


def run_seeds(seeds: list[int], jobs: int, out: Path, overrides: list[str]) -> None:
    pending = list(seeds)
    running: list[tuple[int, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            log = open(out / f"seed_{seed}.log", "w")
            command = [
                sys.executable,
                "-m",
                "tetris_train",
                f"seed={seed}",
                f"hydra.run.dir={out / f'seed_{seed}'}",
                "schedule.progress_bar=false",
                *overrides,
            ]
            running.append((seed, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(5)
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                print(f"seed {item[0]}: exit status {item[1].returncode}", flush=True)


def learning_report(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    entries = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines() if line.strip()]
    import yaml

    env = yaml.safe_load((run / "config.yaml").read_text())["env"]
    cap_lines = env["max_pieces"] * 4 // env["width"]
    first_1000 = next((e["timesteps"] for e in entries if e["mean_lines"] >= 1000), None)
    first_cap = next((i for i, e in enumerate(entries) if e["reached_cap"] == 1.0), None)
    after_cap = entries[first_cap:] if first_cap is not None else []
    return {
        "evaluations": len(entries),
        "first_1000_lines_at": first_1000,
        "best_mean_lines": summary["best"]["mean_lines"],
        "best_all_capped": summary["best"]["reached_cap"] == 1.0,
        "best_at": summary["best"]["timesteps"],
        "first_all_capped_at": entries[first_cap]["timesteps"] if first_cap is not None else None,
        "min_after_cap": min((e["mean_lines"] for e in after_cap), default=None),
        "no_collapse": bool(after_cap) and min(e["mean_lines"] for e in after_cap) >= COLLAPSE_FRACTION * cap_lines,
        "final_mean_lines": summary["final_evaluation"]["mean_lines"],
        "stopped_at": f"{summary['timesteps']} {summary['stop_reason']}",
        "steps_per_s": summary["steps_per_s"],
        "wall_minutes": round(summary["wall_seconds"] / 60, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="training runs at once")
    parser.add_argument("--timesteps", type=int, default=None, help="schedule.max_timesteps (default: the config's)")
    parser.add_argument("--speed-steps", type=int, default=5_000, help="steps per speed round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved speed rounds")
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/benchmarks") / time.strftime("learning-%Y%m%d-%H%M%S")
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true", help="measure the speed comparison, train nothing")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if not args.skip_speed:
        speed = speed_comparison(args.speed_steps, args.rounds)
        print(
            f"training speed, {args.rounds} interleaved rounds of {args.speed_steps} steps after learning starts, "
            f"same batch/net/train_freq (median, min, max):"
        )
        print(f"  tetris-train default config   {spread(speed['tetris_train'])} env-steps/s")
        print(f"  SB3 DQN on CartPole-v1        {spread(speed['sb3_cartpole'])} env-steps/s")
        ratio = statistics.median(speed["ratio"])
        verdict = "meets" if ratio >= TARGET_SPEED_RATIO else "MISSES"
        print(f"  ratio {spread(speed['ratio'], 2)} ({verdict} the {TARGET_SPEED_RATIO} target)", flush=True)
    if args.speed_only:
        return

    overrides = list(args.overrides)
    if args.timesteps:
        overrides.append(f"schedule.max_timesteps={args.timesteps}")
    run_seeds(args.seeds, args.jobs, args.out, overrides)

    print(f"\nlearning, {len(args.seeds)} training seeds, runs in {args.out}:")
    header = (
        "seed",
        "1000 lines at",
        "all capped at",
        "best",
        "best capped",
        "min after cap",
        "no collapse",
        "final",
        "stopped at",
        "steps/s",
        "minutes",
    )
    print("  ".join(f"{h:>13s}" for h in header))
    reports = {}
    for seed in args.seeds:
        try:
            r = reports[seed] = learning_report(args.out / f"seed_{seed}")
        except (FileNotFoundError, KeyError, TypeError) as error:
            print(f"{seed:>13d}  run incomplete: {error}")
            continue
        cells = (
            seed,
            r["first_1000_lines_at"],
            r["first_all_capped_at"],
            r["best_mean_lines"],
            r["best_all_capped"],
            r["min_after_cap"],
            r["no_collapse"],
            r["final_mean_lines"],
            r["stopped_at"],
            r["steps_per_s"],
            r["wall_minutes"],
        )
        print("  ".join(f"{str(c):>13s}" for c in cells))
    done = list(reports.values())
    if done:
        early = all((r["first_1000_lines_at"] or 10**12) <= TARGET_FIRST_1000 for r in done)
        capped = all(r["best_all_capped"] for r in done)
        stable = all(r["no_collapse"] for r in done)
        print(
            f"targets, for every seed: 1000 lines within {TARGET_FIRST_1000:,} steps: {early}; "
            f"best plays every game to the cap: {capped}; no collapse: {stable}"
        )
    (args.out / "report.json").write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
