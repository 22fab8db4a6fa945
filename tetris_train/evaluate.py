"""``python -m tetris_train.evaluate checkpoint=<run or checkpoint folder> [episodes=20] [player=...]``

Greedy games on fixed seeds. Prints the checkpoint it loads, the statistics and the files it writes
into Hydra's run folder under ``outputs/evaluations/``: ``eval.json`` and, unless ``video=false``, a
video of the first game with its lines, score and pieces drawn above the board; ``evaluate.log``
there holds the same lines. ``player=heuristic`` or ``player=random`` play the very same seeds, as
yardsticks. ``replay=true`` shows the first game in the terminal.

The fixed players play the game ``env`` describes. An agent plays the game it was trained on, its
checkpoint's ``env``: of the env settings only ``max_pieces`` (where a game stops) and ``randomizer``
(how pieces are dealt) apply to it. Any other env setting the command line gives, directly
(``env.width=10``) or through a preset (``env=classic``), must repeat the checkpoint's value, or the
command is refused: width, height, preview and observation shape the network's input, and the
rewards only shaped its training (an evaluation counts lines and score, not rewards).
"""

from __future__ import annotations

import dataclasses
import functools
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

from .cli import ResumeError, bad_input_exits, run_app
from .env import EnvConfig
from .env.games import Games
from .env.render import game_to_rgb
from .evaluation import PLAY_STRETCH, Policy, advance, evaluate
from .validation import check, is_int, is_number

log = logging.getLogger(__name__)

PLAYERS = ("agent", "heuristic", "random")
VIDEO_FORMATS = ("gif", "mp4")
AGENT_ENV_SETTINGS = ("max_pieces", "randomizer")  # the env settings that apply to an agent (module docstring)
REWARD_SETTINGS = ("piece_reward", "line_rewards", "game_over_penalty")


@dataclass
class EvaluateConfig:
    """What to evaluate and how. ``env`` applies to the fixed players; an agent plays the env it was
    trained on, with only ``env.max_pieces`` and ``env.randomizer`` taken from the command line.

    Attributes:
        checkpoint: a run folder (its best checkpoint, else the newest) or a checkpoint folder.
        player: agent (the checkpoint's), heuristic (Dellacherie's, as published) or random.
        episodes: games to play.
        seed: seed of the first game (the next ones count up): every player gets the same games.
        video: write a video of the first game.
        video_format: gif, or mp4 (needs the video extra).
        video_frames: at most this many placements in the video.
        video_fps: placements per second in the video.
        replay: show the first game in the terminal.
        replay_pieces: placements shown by replay.
        replay_delay: seconds between placements shown by replay.
        torch_threads: CPU threads torch may use.
    """

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


@functools.lru_cache(maxsize=4)
def resolve_agent_checkpoint(path: str) -> Path:
    """A checkpoint folder as given, or a run folder's ``best`` checkpoint, else its newest one.

    Resolved once per process: :func:`check_config` and the evaluation both ask, and resolving
    reads every file of the checkpoint to verify it.
    """
    from .checkpoints import verify_checkpoint
    from .run_folder import BEST, resolve_checkpoint, run_checkpoint_dir

    folder = Path(path).expanduser()
    for candidate in (folder / BEST, folder / run_checkpoint_dir(folder) / BEST):
        if (candidate / "metadata.json").is_file():
            verify_checkpoint(candidate)
            return candidate
    try:
        return resolve_checkpoint(folder, key="checkpoint")
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}; checkpoint= takes a run folder (outputs/runs/<date>/<time>) or a checkpoint folder"
        ) from None


def check_config(cfg: EvaluateConfig, overrides: list[str]) -> None:
    """Refuse what the evaluation cannot do, before anything is loaded or written: for an agent, a
    checkpoint that is missing or damaged, and an env setting it cannot play (module docstring); an
    MP4 video without its encoder. Raises the errors that :func:`~tetris_train.cli.describe_error`
    puts in one line."""
    import importlib.util

    if cfg.video and cfg.video_format == "mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ResumeError(
            "video_format=mp4 needs the video extra (pip install 'tetris-train[video]'); video_format=gif needs nothing"
        )
    if cfg.player != "agent":
        return
    from .checkpoints import read_metadata

    checkpoint = resolve_agent_checkpoint(cfg.checkpoint)
    agent_env(cfg, overrides, EnvConfig.from_dict(read_metadata(checkpoint)["config"]["env"]))


def env_settings_given(cfg: EvaluateConfig, overrides: list[str]) -> dict[str, str]:
    """The env settings the command line sets, each with the override that sets it: ``env.<key>=...``
    sets its key, a preset (``env=<name>``) every key it moves away from the schema's default."""
    given: dict[str, str] = {}
    defaults = EnvConfig()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "env":
            for f in dataclasses.fields(EnvConfig):
                if getattr(cfg.env, f.name) != getattr(defaults, f.name):
                    given.setdefault(f.name, override)
        elif key.startswith("env."):
            given[key[len("env.") :]] = override
    return given


def agent_env(cfg: EvaluateConfig, overrides: list[str], trained: EnvConfig) -> EnvConfig:
    """The env an agent trained on ``trained`` plays: that one, with the command line's
    ``AGENT_ENV_SETTINGS``. Any other env setting given must repeat the trained value (ResumeError)."""
    applied: dict[str, Any] = {}
    for name, override in env_settings_given(cfg, overrides).items():
        value, kept = getattr(cfg.env, name), getattr(trained, name)
        if name in AGENT_ENV_SETTINGS:
            applied[name] = value
        elif value != kept:
            why = (
                "rewards only shaped its training (an evaluation counts lines and score)"
                if name in REWARD_SETTINGS
                else "an agent plays the game it was trained on"
            )
            raise ResumeError(
                f"{override}: the checkpoint's agent was trained with env.{name}={show(kept)}, this command "
                f"gives env.{name}={show(value)}; {why}: of the env settings only "
                f"{' and '.join(f'env.{k}' for k in AGENT_ENV_SETTINGS)} may change"
            )
    return dataclasses.replace(trained, **applied)


def show(value: Any) -> str:
    """A setting's value as the command line writes it."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return "null" if value is None else str(value)


def load_player(config: EvaluateConfig, overrides: list[str]) -> tuple[Callable[[], Policy], EnvConfig, dict[str, Any]]:
    """A maker of the policy to evaluate (a fresh one for each use), the env it plays, and a description."""
    if config.player == "agent":
        import torch

        from .agent import load_model
        from .checkpoints import read_metadata
        from .evaluation import model_policy

        checkpoint = resolve_agent_checkpoint(config.checkpoint)
        metadata = read_metadata(checkpoint)
        env_config = agent_env(config, overrides, EnvConfig.from_dict(metadata["config"]["env"]))
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
    """RGB frames of one game, at most ``max_frames`` (the start of the game, then the last board),
    each with the game's lines, score and pieces above its board."""
    games = Games(env_config, [seed], colors=True)
    frames = [video_frame(games)]
    while len(games.active) and len(frames) < max_frames - 1:
        advance(policy, games)
        frames.append(video_frame(games))
    if len(games.active):  # the rest of the game unseen, at full speed, for its last board
        while len(games.active):
            advance(policy, games, PLAY_STRETCH)
        frames.append(video_frame(games))
    return frames


def video_frame(games: Games) -> np.ndarray:
    """The first game of ``games`` (made with ``colors=True``) as a frame: counters, then the board."""
    return game_to_rgb(games.colors[0, ::-1], games.pieces[0], games.lines[0], games.score[0])


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """Write ``frames`` as a looping GIF or (``.mp4``, with the video extra) an MP4 video."""
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
        check_config(config, overrides)
        make_policy, env_config, about = load_player(config, overrides)
    if "checkpoint" in about:  # lines are logged: conf/evaluate.yaml prints them as they are, evaluate.log keeps them
        log.info("checkpoint %s (trained %s steps)", about["checkpoint"], f"{about['timesteps']:,}")
    if config.replay:
        replay(make_policy(), env_config, config.seed, config.replay_pieces, config.replay_delay)
    result = {
        **about,
        "env": env_config.to_dict(),
        **evaluate(make_policy(), env_config, config.episodes, config.seed, progress=None),
    }
    written = [out / "eval.json"]
    if config.video:
        frames = record_game(make_policy(), env_config, config.seed, config.video_frames)
        written.append(write_video(frames, out / f"game.{config.video_format}", config.video_fps))
        result["video"] = str(written[-1])
    written[0].write_text(json.dumps(result, indent=2) + "\n")
    low, high = result["mean_lines_95"]
    log.info(
        f"{about['player']}: {config.episodes} games (seeds {config.seed}-{config.seed + config.episodes - 1}), "
        f"lines mean {result['mean_lines']:,.1f} (95 % interval {low:,.0f} to {high:,.0f}) "
        f"median {result['median_lines']:,.1f} "
        f"min {result['min_lines']:,} max {result['max_lines']:,}, pieces mean {result['mean_pieces']:,.0f}, "
        f"reached the {env_config.max_pieces:,}-piece cap {result['reached_cap']:.0%}, "
        f"{result['placements_per_s']:,.0f} placements/s"
    )
    log.info("wrote %s", ", ".join(str(path) for path in written))
    return result["mean_lines"]


def check_command_line(cfg: DictConfig, overrides: list[str]) -> None:
    """:func:`check_config` of the composed config, run before Hydra creates the output folder."""
    check_config(OmegaConf.to_object(cfg), overrides)


def main() -> None:
    run_app(evaluate_app, EvaluateConfig, config_name="evaluate", check=check_command_line, usage=usage)


def usage() -> str:
    from .cli import usage_text

    return usage_text(
        "tetris-train evaluate: greedy games on fixed seeds by a trained agent or a fixed player.",
        "python -m tetris_train.evaluate checkpoint=<run or checkpoint folder> [key=value ...]",
        EvaluateConfig,
        ("env",),
        "evaluate",
        (
            "An agent plays the game it was trained on: of the env settings only env.max_pieces and",
            "env.randomizer apply to it; env= and the other env.* keys set the fixed players' game.",
        ),
    )


if __name__ == "__main__":
    main()
