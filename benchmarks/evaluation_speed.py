"""Placements per second of evaluation on one core: lockstep games against one TetrisEnv per game.

Both sides play the same seeded games with the same player, in one process:

* ``lockstep``: ``tetris_train.evaluation.evaluate``, games held as arrays and played on by compiled
  code (Dellacherie's player and the afterstate network on the CPU);
* ``per-env``: the previous evaluation, one ``TetrisEnv`` per game stepped from Python, the player
  called once per step for all games (one network call per step).

Players: Dellacherie's published player, and the default network (the agent defaults' layers).
The network comes from ``--checkpoint`` (a run or checkpoint folder), or is built with the
default layers and weights that make it play like the observation-weighted heuristic (its output is
that heuristic's score; the other units carry random weights, so every layer costs what a trained
network's does), so that its games last. Games: the literature's game on 10 x 10 by default
(``--board 10x20`` for the tall board), 20 games, each capped at ``--max-pieces``. Rounds
interleave the two sides; the median round is reported, with min and max, and the ratio.

    python benchmarks/evaluation_speed.py [--rounds 5] [--max-pieces 3000] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from tetris_train.config import AgentConfig
from tetris_train.env import EnvConfig, TetrisEnv
from tetris_train.evaluation import evaluate, model_policy
from tetris_train.players import DELLACHERIE_WEIGHTS, DellacheriePlayer

TARGET = 50_000  # placements per second on one core


def per_env(player, config: EnvConfig, episodes: int, seed: int) -> tuple[list[int], float]:
    """The previous evaluation: one TetrisEnv per game, all stepped from Python, one player call per step."""
    envs = [TetrisEnv(config) for _ in range(episodes)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    lines = [0] * episodes
    active = list(range(episodes))
    steps = 0
    start = time.perf_counter()
    while active:
        actions = player([envs[i] for i in active], np.stack([obs[i] for i in active]))
        still = []
        for i, action in zip(active, actions):
            obs[i], _, terminated, truncated, info = envs[i].step(int(action))
            steps += 1
            if terminated or truncated:
                lines[i] = info["total_lines"]
            else:
                still.append(i)
        active = still
    return lines, steps / (time.perf_counter() - start)


def per_env_dellacherie(envs, observations) -> np.ndarray:
    weights = np.array(list(DELLACHERIE_WEIGHTS.values()))
    actions = []
    for env in envs:
        scores = env.dellacherie_features() @ weights
        scores[np.isnan(scores) | ~env.action_masks()] = -np.inf
        actions.append(int(np.argmax(scores)))
    return np.array(actions)


def per_env_network(q_net):
    def act(envs, observations) -> np.ndarray:
        with torch.no_grad():
            return q_net(torch.as_tensor(observations)).argmax(dim=1).numpy()

    return act


def heuristic_network(config: EnvConfig, seed: int = 0):
    """The default layers, weighted so that the output is the observation-weighted heuristic's score
    (Dellacherie's weights on the observation's features; a top-out scores -1000); the other
    units get random weights, so that the network costs what a trained one does."""
    from tetris_train.afterstate import AfterstatePolicy

    env = TetrisEnv(config)
    layers = list(AgentConfig().net_arch)
    policy = AfterstatePolicy(env.observation_space, env.action_space, lambda _: 1e-3, net_arch=layers)
    names = list(env.feature_names)
    w = np.zeros(len(names), np.float32)
    for name, weight in DELLACHERIE_WEIGHTS.items():
        w[names.index(name)] = weight * env.feature_scale[names.index(name)]
    w[names.index("top_out")] = -1000.0
    rng = np.random.default_rng(seed)
    linear = [m for m in policy.q_net.q_net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for m in linear:
            m.weight.copy_(torch.as_tensor(rng.normal(0, 1 / np.sqrt(m.in_features), m.weight.shape)))
            m.bias.zero_()
        linear[0].weight[0], linear[0].weight[1] = torch.as_tensor(w), torch.as_tensor(-w)
        for m in linear[1:-1]:  # pass the two units on: relu(s) and relu(-s)
            m.weight[:2] = 0.0
            m.weight[0, 0] = m.weight[1, 1] = 1.0
        linear[-1].weight.zero_()
        linear[-1].weight[0, 0], linear[-1].weight[0, 1] = 1.0, -1.0
    return SimpleNamespace(policy=policy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--max-pieces", type=int, default=3_000)
    parser.add_argument("--board", default="10x10", help="WIDTHxHEIGHT of the literature's game (10x10 or 10x20)")
    parser.add_argument("--checkpoint", default=None, help="a run or checkpoint folder whose network to time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.board.split("x"))

    if args.checkpoint:  # the network plays the game it was trained on
        from tetris_train.agent import load_model
        from tetris_train.checkpoints import read_metadata
        from tetris_train.evaluate import resolve_agent_checkpoint

        checkpoint = resolve_agent_checkpoint(args.checkpoint)
        network, about = load_model(checkpoint, device="cpu"), f"trained, {checkpoint}"
        config = EnvConfig.from_dict(read_metadata(checkpoint)["config"]["env"])
        width, height = config.width, config.height
    else:
        config = EnvConfig(width=width, height=height, randomizer="uniform", preview=0)
        network, about = heuristic_network(config), f"default layers {list(AgentConfig().net_arch)}, heuristic weights"
    config = EnvConfig.from_dict({**config.to_dict(), "max_pieces": args.max_pieces})
    seed = 1_000_000
    players = {
        "Dellacherie (published)": (DellacheriePlayer(), per_env_dellacherie),
        f"network ({about})": (model_policy(network), per_env_network(network.policy.q_net)),
    }
    evaluate(DellacheriePlayer(), config, 2, seed)  # compile the kernels before timing
    evaluate(model_policy(network), config, 2, seed)

    print(
        f"{args.episodes} games of {width}x{height}, {config.randomizer} pieces, preview {config.preview}, "
        f"each capped at {args.max_pieces:,} pieces; one core; {args.rounds} interleaved rounds"
    )
    print(f"{'player':58} {'lockstep/s':>11} {'per-env/s':>10} {'ratio':>6}  {'min-max lockstep':>17}  same games")
    for name, (lockstep_player, env_player) in players.items():
        fast, slow, same = [], [], True
        for _ in range(args.rounds):
            result = evaluate(lockstep_player, config, args.episodes, seed)
            lines, rate = per_env(env_player, config, args.episodes, seed)
            fast.append(result["placements_per_s"])
            slow.append(rate)
            same &= result["lines"] == lines
        f, s = statistics.median(fast), statistics.median(slow)
        print(
            f"{name[:58]:58} {f:>11,.0f} {s:>10,.0f} {f / s:>6.1f}  {min(fast):>8,.0f}-{max(fast):<8,.0f}  {same}"
            f"   (mean lines {result['mean_lines']:,.1f}, {result['placements']:,} placements a round)"
        )
        print(f"  target {TARGET:,} placements/s on one core: {'met' if f >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
