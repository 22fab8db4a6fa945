"""Greedy evaluation games on fixed seeds, so every agent is measured on the very same games."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .env import EnvConfig, TetrisEnv

Policy = Callable[[np.ndarray, np.ndarray], int]  # (observation, action mask) -> action


def evaluate(policy: Policy, env_config: EnvConfig, episodes: int, seed: int) -> dict[str, Any]:
    """Play ``episodes`` games with seeds ``seed, seed + 1, ...``; return their statistics."""
    env = TetrisEnv(dataclasses.replace(env_config, render_mode=None))
    lines, pieces, scores, capped = [], [], [], []
    steps = 0
    start = time.perf_counter()
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        terminated = truncated = False
        while not (terminated or truncated):
            obs, _, terminated, truncated, info = env.step(policy(obs, info["action_mask"]))
            steps += 1
        lines.append(info["total_lines"])
        pieces.append(info["pieces"])
        scores.append(info["score"])
        capped.append(bool(truncated))
    elapsed = time.perf_counter() - start
    return {
        "episodes": episodes,
        "seed": seed,
        "mean_lines": float(np.mean(lines)),
        "median_lines": float(np.median(lines)),
        "min_lines": int(np.min(lines)),
        "max_lines": int(np.max(lines)),
        "mean_pieces": float(np.mean(pieces)),
        "mean_score": float(np.mean(scores)),
        "reached_cap": float(np.mean(capped)),
        "placements_per_s": steps / max(elapsed, 1e-9),
        "lines": lines,
    }


def model_policy(model: Any) -> Policy:
    """The greedy policy of an SB3 model."""

    def act(obs: np.ndarray, action_mask: np.ndarray) -> int:
        action, _ = model.predict(obs, deterministic=True)
        return int(action)

    return act
