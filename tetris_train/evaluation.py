"""Evaluation games on fixed seeds, so every agent and player is measured on the very same games.

All games advance in lockstep and the policy chooses for all of them at once: one network call
per step instead of one per game.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from .env import EnvConfig, TetrisEnv

# (observations (n, ...), action masks (n, n_actions)) -> actions (n,); or an object whose
# choose(games) -> actions (n,) reads the games themselves
Policy = Any


def evaluate(policy: Policy, env_config: EnvConfig, episodes: int, seed: int) -> dict[str, Any]:
    """Play ``episodes`` games seeded ``seed, seed + 1, ...``; return their statistics."""
    config = dataclasses.replace(env_config, render_mode=None)
    envs = [TetrisEnv(config) for _ in range(episodes)]
    observations, masks = [], []
    for i, env in enumerate(envs):
        obs, info = env.reset(seed=seed + i)
        observations.append(obs)
        masks.append(info["action_mask"])
    results: list[dict[str, Any]] = [{} for _ in envs]
    active = list(range(episodes))
    steps = 0
    start = time.perf_counter()
    while active:
        actions = choose_actions(
            policy, [envs[i] for i in active], [observations[i] for i in active], [masks[i] for i in active]
        )
        still_active = []
        for i, action in zip(active, actions):
            obs, _, terminated, truncated, info = envs[i].step(int(action))
            steps += 1
            if terminated or truncated:
                results[i] = {
                    "lines": info["total_lines"],
                    "pieces": info["pieces"],
                    "score": info["score"],
                    "capped": bool(truncated),
                }
            else:
                observations[i], masks[i] = obs, info["action_mask"]
                still_active.append(i)
        active = still_active
    elapsed = time.perf_counter() - start
    lines = [r["lines"] for r in results]
    return {
        "episodes": episodes,
        "seed": seed,
        "mean_lines": float(np.mean(lines)),
        "median_lines": float(np.median(lines)),
        "min_lines": int(np.min(lines)),
        "max_lines": int(np.max(lines)),
        "mean_pieces": float(np.mean([r["pieces"] for r in results])),
        "mean_score": float(np.mean([r["score"] for r in results])),
        "reached_cap": float(np.mean([r["capped"] for r in results])),
        "placements_per_s": steps / max(elapsed, 1e-9),
        "lines": lines,
    }


def choose_actions(policy: Policy, games: list[TetrisEnv], observations: list[np.ndarray], masks: list[np.ndarray]):
    """The policy's actions in these games: from the batched observations and masks, or, for a
    player that reads the games themselves (its ``choose``), from the games."""
    choose = getattr(policy, "choose", None)
    if choose is not None:
        return choose(games)
    return policy(np.stack(observations), np.stack(masks))


def model_policy(model: Any) -> Policy:
    """The greedy policy of an SB3 DQN, for a batch of observations.

    The same as ``model.predict(obs, deterministic=True)``, calling the Q-network directly: the
    per-call checks of ``predict`` cost more than the network itself on these small batches.
    """
    import torch as th

    q_net = model.policy.q_net

    def act(observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        q_net.set_training_mode(False)
        with th.no_grad():
            q_values = q_net(th.as_tensor(observations, device=q_net.device))
        return q_values.argmax(dim=1).cpu().numpy()

    return act
