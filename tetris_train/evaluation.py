"""Evaluation games on fixed seeds, so every agent and player is measured on the very same games.

All games advance in lockstep (:class:`~tetris_train.env.games.Games`) and the policy chooses for all
of them at once: one network call per step, whatever the number of games.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Optional

import numpy as np

from .env import EnvConfig
from .env.engine import play_mlp
from .env.games import Games

# (observations (n, ...), action masks (n, n_actions)) -> actions (n,); or an object whose
# choose(games: Games) -> actions (one per active game) reads what it needs from the games; or
# whose play(games, placements) -> placements made plays them on in compiled code
Policy = Any

PROGRESS_EVERY_S = 0.5
PLAY_STRETCH = 2_000  # placements per game a compiled player makes between progress updates


def evaluate(
    policy: Policy, env_config: EnvConfig, episodes: int, seed: int, progress: Optional[bool] = False
) -> dict[str, Any]:
    """Play ``episodes`` games seeded ``seed, seed + 1, ...`` to their end (or ``env_config.max_pieces``);
    return their statistics. ``progress``: a progress bar (``None``: only on a terminal)."""
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: evaluation needs at least one game")
    config = dataclasses.replace(env_config, render_mode=None)
    games = Games(config, [seed + i for i in range(episodes)])
    if getattr(policy, "play", None) is not None:
        policy.play(Games(config, [seed]), 1)  # load its compiled code before the clock starts
    start = time.perf_counter()
    with _Progress(games, progress) as bar:
        while len(games.active):
            advance(policy, games, PLAY_STRETCH)
            bar.update()
    elapsed = time.perf_counter() - start
    placements = int(games.pieces.sum())  # the pieces placed (a game's last, failed placement not counted)
    results = games.results()
    lines = [r["lines"] for r in results]
    low, high = mean_interval(lines)
    return {
        "episodes": episodes,
        "seed": seed,
        "mean_lines": float(np.mean(lines)),
        "mean_lines_95": [low, high],
        "median_lines": float(np.median(lines)),
        "min_lines": int(np.min(lines)),
        "max_lines": int(np.max(lines)),
        "mean_pieces": float(np.mean([r["pieces"] for r in results])),
        "mean_score": float(np.mean([r["score"] for r in results])),
        "max_pieces": env_config.max_pieces,
        "reached_cap": float(np.mean([r["capped"] for r in results])),
        "placements": placements,
        "placements_per_s": placements / max(elapsed, 1e-9),
        "lines": lines,
        "pieces": [r["pieces"] for r in results],
    }


def mean_interval(values: list[float]) -> tuple[float, float]:
    """A 95 % interval of the mean: mean ± 1.96 standard errors (the normal approximation; game
    lengths are heavy-tailed, so with few games it is a rough guide), never below 0, as lines and
    pieces are not. One value: the value itself."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean
    half = 1.96 * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return max(mean - half, 0.0), mean + half


def advance(policy: Policy, games: Games, placements: int = 1) -> None:
    """Move the active games on by the policy: up to ``placements`` placements each for a player
    that plays in compiled code (its ``play``), one for any other."""
    play = getattr(policy, "play", None)
    if play is not None:
        play(games, placements)
    else:
        games.step(choose_actions(policy, games))


def choose_actions(policy: Policy, games: Games) -> np.ndarray:
    """The policy's actions in the active games: from the games themselves for a player with
    ``choose``, else from their observations and action masks."""
    choose = getattr(policy, "choose", None)
    if choose is not None:
        return choose(games)
    return policy(games.observations(), games.action_masks())


class GreedyPolicy:
    """The greedy policy of an SB3 DQN: ``model.predict(obs, deterministic=True)``, calling the
    Q-network directly (the per-call checks of ``predict`` cost more than the network itself here).
    In games, the afterstate network scores only the distinct placements' rows, every game's in one
    network call per step.
    """

    def __init__(self, model: Any):
        self.q_net = model.policy.q_net
        self.rows_only = hasattr(self.q_net, "row_values")  # the afterstate network: one value per row

    def __call__(self, observations: np.ndarray, action_masks: Optional[np.ndarray] = None) -> np.ndarray:
        import torch as th

        self.q_net.set_training_mode(False)
        with th.no_grad():
            q_values = self.q_net(th.as_tensor(observations, device=self.q_net.device))
        return q_values.argmax(dim=1).cpu().numpy()

    def choose(self, games: Games) -> np.ndarray:
        if not self.rows_only or games.config.observation != "afterstates":
            return self(games.observations(), games.action_masks())
        import torch as th

        rows, starts = games.distinct_afterstates()
        self.q_net.set_training_mode(False)
        values = self.q_net.row_values(th.as_tensor(rows, device=self.q_net.device))
        return games.best_actions(values.cpu().numpy(), starts)


class CompiledGreedyPolicy(GreedyPolicy):
    """The greedy policy of an afterstate network that is a plain ReLU MLP on the CPU, playing games
    on in compiled code (:meth:`play`): float32 like torch, its sums in another order, so only a
    near tie between two placements can go the other way."""

    def __init__(self, model: Any, layers: tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]):
        super().__init__(model)
        self.layers = layers

    def play(self, games: Games, placements: int) -> int:
        """Play every active game on, up to ``placements`` placements each, in one compiled call."""
        weights, biases = self.layers
        if games.config.observation != "afterstates" or len(games.feature_names) != weights[0].shape[0]:
            raise ValueError(
                f"this network reads afterstate rows of {weights[0].shape[0]} features; these games have "
                f"observation={games.config.observation}, preview={games.config.preview}, width={games.width}"
            )
        return games.play(
            play_mlp, games.distinct, games.n_distinct, games.feature_scale, weights, biases, placements=placements
        )


def model_policy(model: Any) -> GreedyPolicy:
    """The greedy policy of an SB3 DQN, for observations or for :class:`Games`: compiled where the
    network allows it (:meth:`AfterstateQNetwork.mlp_layers`)."""
    mlp_layers = getattr(model.policy.q_net, "mlp_layers", None)
    layers = mlp_layers() if mlp_layers is not None else None
    return CompiledGreedyPolicy(model, layers) if layers is not None else GreedyPolicy(model)


class _Progress:
    """A progress bar over finished games, with placements and their rate; redrawn at most every
    PROGRESS_EVERY_S seconds, so it costs nothing per step."""

    def __init__(self, games: Games, enabled: Optional[bool]):
        self.games, self.enabled, self.bar = games, enabled, None
        self.next_draw = 0.0

    def __enter__(self) -> _Progress:
        if self.enabled is not False:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.games.over), unit="game", disable=None if self.enabled is None else False)
            self.start = time.perf_counter()
        return self

    def update(self) -> None:
        if self.bar is None:
            return
        now = time.perf_counter()
        if now < self.next_draw and len(self.games.active):
            return
        self.next_draw = now + PROGRESS_EVERY_S
        placements = int(self.games.pieces.sum())
        self.bar.n = int(self.games.over.sum())
        running = self.games.active
        self.bar.set_postfix_str(
            f"{placements:,} placements, {placements / max(now - self.start, 1e-9):,.0f}/s, "
            f"longest game {int(self.games.pieces[running].max(initial=0)):,} pieces",
            refresh=False,
        )
        self.bar.refresh()

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
