"""Placements per second of the environment with random actions and afterstate observations.

Measures, in one process and one run, tetris-train's TetrisEnv (bare and as make_env wraps it for
SB3) and, when tetris-gymnasium is installed (``pip install -e .[bench]``), its nearest equivalent:
GroupedActionsObservations + FeatureVectorObservation. Rounds alternate between the two so that
machine noise hits both alike; the median round is reported with the ratio.

    python benchmarks/env_speed.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from tetris_train.env import EnvConfig, TetrisEnv, make_env

TARGET_RATIO = 100.0


def placements_per_second(env, pick: Callable, seconds: float, seed: int = 0) -> float:
    """Step with ``pick(info, rng)`` actions for ``seconds``; resets count against the time."""
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    steps = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            _, _, terminated, truncated, info = env.step(pick(info, rng))
            steps += 1
            if terminated or truncated:
                _, info = env.reset()
    return steps / (time.perf_counter() - start)


def uniform_action(n_actions: int) -> Callable:
    return lambda info, rng: int(rng.integers(n_actions))  # every action is a legal placement


def legal_action(info, rng) -> int:
    return int(rng.choice(np.flatnonzero(info["action_mask"])))  # illegal actions end the peer's game


def make_peer():
    try:
        import gymnasium as gym
        from tetris_gymnasium.envs import Tetris  # noqa: F401  (registers the env)
        from tetris_gymnasium.wrappers.grouped import GroupedActionsObservations
        from tetris_gymnasium.wrappers.observation import FeatureVectorObservation
    except ImportError:
        return None
    env = gym.make("tetris_gymnasium/Tetris", render_mode=None)
    return GroupedActionsObservations(env, observation_wrappers=[FeatureVectorObservation(env)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    ours = TetrisEnv(EnvConfig())
    wrapped = make_env(EnvConfig())()
    peer = make_peer()
    ours.reset(seed=0)  # compile (or load the cached kernels) before timing
    pick = uniform_action(ours.n_actions)

    results: dict[str, list[float]] = {"tetris-train TetrisEnv": [], "tetris-train make_env (Monitor)": []}
    if peer is not None:
        results["tetris-gymnasium Grouped+FeatureVector"] = []
    for r in range(args.rounds):
        results["tetris-train TetrisEnv"].append(placements_per_second(ours, pick, args.seconds, seed=r))
        results["tetris-train make_env (Monitor)"].append(placements_per_second(wrapped, pick, args.seconds, seed=r))
        if peer is not None:
            results["tetris-gymnasium Grouped+FeatureVector"].append(
                placements_per_second(peer, legal_action, args.seconds, seed=r)
            )

    print(f"10x20 board, random placements, afterstate features; median of {args.rounds} rounds x {args.seconds:g} s")
    print(f"{'environment':42s} {'placements/s':>14s}")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name:42s} {value:14,.0f}")
    if peer is None:
        print("tetris-gymnasium is not installed (pip install -e '.[bench]'): no reference to compare with")
        return
    reference = medians["tetris-gymnasium Grouped+FeatureVector"]
    for name in ("tetris-train TetrisEnv", "tetris-train make_env (Monitor)"):
        ratio = medians[name] / reference
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        print(f"ratio {name} / tetris-gymnasium: {ratio:,.0f}x ({verdict} the {TARGET_RATIO:.0f}x target)")


if __name__ == "__main__":
    main()
