"""``python -m tetris_train.evaluate checkpoint=<run or checkpoint folder> [episodes=20] [player=...]``

Greedy games on fixed seeds: prints the statistics and writes ``eval.json`` (and, unless
``video=false``, a GIF of the first game) into Hydra's run folder under ``outputs/evaluations/``.
``player=heuristic`` or ``player=random`` play the very same seeds, as yardsticks. ``replay=true``
shows the first game in the terminal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .cli import bad_input_exits, run_app
from .env import EnvConfig
from .env.games import Games
from .evaluation import PLAY_STRETCH, Policy, advance, evaluate
from .validation import check, is_int, is_number

log = logging.getLogger(__name__)

PLAYERS = ("agent", "heuristic", "random")
VIDEO_FORMATS = ("gif", "mp4")


@dataclass
class EvaluateConfig:
    """What to evaluate and how. ``env`` applies to the fixed players; an agent plays the env it was
    trained on, with only ``env.max_pieces`` taken from here when given on the command line."""

    checkpoint: Optional[str] = None
    player: str = "agent"
    episodes: int = 20
    seed: int = 1_000_000
    env: EnvConfig = field(default_factory=EnvConfig)
    video: bool = True
    video_format: str = "gif"
    video_frames: int = 300
    video_fps: int = 8
    replay: bool = False
    replay_pieces: int = 100
    replay_delay: float = 0.05
    torch_threads: int = 1

    def __post_init__(self) -> None:
        def _check(ok: bool, name: str, allowed: str) -> None:
            check(ok, "EvaluateConfig", name, getattr(self, name), allowed)

        _check(self.player in PLAYERS, "player", f"one of {', '.join(PLAYERS)}")
        _check(
            self.player != "agent" or bool(self.checkpoint),
            "checkpoint",
            "a run folder or checkpoint folder (player=agent needs one)",
        )
        for name in ("episodes", "video_frames", "video_fps", "replay_pieces", "torch_threads"):
            _check(is_int(getattr(self, name)) and getattr(self, name) > 0, name, "an integer > 0")
        _check(is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
        _check(self.video_format in VIDEO_FORMATS, "video_format", f"one of {', '.join(VIDEO_FORMATS)}")
        _check(is_number(self.replay_delay) and self.replay_delay >= 0, "replay_delay", "a number >= 0")


ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def resolve_agent_checkpoint(path: str) -> Path:
    """A checkpoint folder as given, or a run folder's ``best`` checkpoint, else its newest one."""
    from .checkpoints import verify_checkpoint
    from .run_folder import BEST, resolve_checkpoint, run_checkpoint_dir

    folder = Path(path).expanduser()
    for candidate in (folder / BEST, folder / run_checkpoint_dir(folder) / BEST):
        if (candidate / "metadata.json").is_file():
            verify_checkpoint(candidate)
            return candidate
    return resolve_checkpoint(folder, key="checkpoint")


def load_player(config: EvaluateConfig, overrides: list[str]) -> tuple[Callable[[], Policy], EnvConfig, dict[str, Any]]:
    """A maker of the policy to evaluate (a fresh one for each use), the env it plays, and a description."""
    if config.player == "agent":
        import torch

        from .agent import load_model
        from .checkpoints import read_metadata
        from .evaluation import model_policy

        checkpoint = resolve_agent_checkpoint(config.checkpoint)
        metadata = read_metadata(checkpoint)
        env_config = EnvConfig.from_dict(metadata["config"]["env"])
        if any(o.startswith("env.max_pieces=") for o in overrides):
            env_config = dataclasses.replace(env_config, max_pieces=config.env.max_pieces)
        torch.set_num_threads(config.torch_threads)
        model = load_model(checkpoint, device="cpu")
        about = {"player": "agent", "checkpoint": str(checkpoint.resolve()), "timesteps": metadata["num_timesteps"]}
        policy = model_policy(model)
        return lambda: policy, env_config, about
    if config.player == "heuristic":
        from .players import DellacheriePlayer

        heuristic = DellacheriePlayer()
        return lambda: heuristic, config.env, {"player": "heuristic (Dellacherie, as published)"}
    from .players import RandomPlayer

    return lambda: RandomPlayer(config.seed), config.env, {"player": "random"}


def record_game(policy: Policy, env_config: EnvConfig, seed: int, max_frames: int) -> list[np.ndarray]:
    """RGB frames of one game, at most ``max_frames`` (the start of the game, then the last board)."""
    games = Games(env_config, [seed], colors=True)
    frames = [games.render(0, "rgb_array")]
    while len(games.active) and len(frames) < max_frames - 1:
        advance(policy, games)
        frames.append(games.render(0, "rgb_array"))
    if len(games.active):  # the rest of the game unseen, at full speed, for its last board
        while len(games.active):
            advance(policy, games, PLAY_STRETCH)
        frames.append(games.render(0, "rgb_array"))
    return frames


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    import imageio.v3 as iio

    if path.suffix == ".gif":
        iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)
    else:
        iio.imwrite(path, np.stack(frames), fps=fps)
    return path


def replay(policy: Policy, env_config: EnvConfig, seed: int, pieces: int, delay: float) -> None:
    """Play one game in the terminal, redrawing the board after each piece."""
    games = Games(dataclasses.replace(env_config, max_pieces=min(pieces, env_config.max_pieces)), [seed], colors=True)
    while len(games.active):
        advance(policy, games)
        sys.stdout.write("\x1b[H\x1b[2J" + games.render(0, "ansi"))
        sys.stdout.flush()
        time.sleep(delay)


@hydra.main(version_base="1.3", config_path="pkg://tetris_train.conf", config_name="evaluate")
def evaluate_app(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    out = Path(hydra_cfg.runtime.output_dir)
    with bad_input_exits(overrides, EvaluateConfig):
        config: EvaluateConfig = OmegaConf.to_object(cfg)
        make_policy, env_config, about = load_player(config, overrides)
    if config.replay:
        replay(make_policy(), env_config, config.seed, config.replay_pieces, config.replay_delay)
    result = {
        **about,
        "env": env_config.to_dict(),
        **evaluate(make_policy(), env_config, config.episodes, config.seed, progress=None),
    }
    if config.video:
        frames = record_game(make_policy(), env_config, config.seed, config.video_frames)
        result["video"] = str(write_video(frames, out / f"game.{config.video_format}", config.video_fps))
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    low, high = result["mean_lines_95"]
    print(
        f"{about['player']}: {config.episodes} games (seeds {config.seed}-{config.seed + config.episodes - 1}), "
        f"lines mean {result['mean_lines']:,.1f} (95 % interval {low:,.0f} to {high:,.0f}) "
        f"median {result['median_lines']:,.1f} "
        f"min {result['min_lines']:,} max {result['max_lines']:,}, pieces mean {result['mean_pieces']:,.0f}, "
        f"reached the {env_config.max_pieces:,}-piece cap {result['reached_cap']:.0%}, "
        f"{result['placements_per_s']:,.0f} placements/s\nwritten to {out / 'eval.json'}"
    )
    return result["mean_lines"]


def main() -> None:
    run_app(evaluate_app, EvaluateConfig)


if __name__ == "__main__":
    main()
