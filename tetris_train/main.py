"""``python -m tetris_train [overrides]``: compose the config with Hydra, train, write the run folder.

Bad input (an unknown key, a value of the wrong type or out of range, an unknown group option, a
resume path without a checkpoint) ends with one line on stderr naming the key, the value and what
is allowed, and exit status 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .cli import ResumeError, bad_input_exits, run_app
from .config import TrainingConfig, register_configs
from .validation import ConfigError

EXIT_INTERRUPTED = 130
RESUME_CHANGEABLE = ("schedule.", "agent.device")

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://tetris_train.conf", config_name="config")
def train_app(cfg: DictConfig) -> float:
    from .train import run_training

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    with bad_input_exits(overrides):
        config = build_config(cfg, overrides)
        check_memory(config)
    result = run_training(config, Path(hydra_cfg.runtime.output_dir))
    if result.status == "interrupted":
        raise SystemExit(EXIT_INTERRUPTED)
    return result.objective


def check_memory(config: TrainingConfig) -> None:
    """Refuse a replay buffer larger than the machine's memory before allocating it."""
    from .env import TetrisEnv

    env = TetrisEnv(config.env)
    need = 2 * config.agent.buffer_size * int(np.prod(env.observation_space.shape)) * 4  # obs + next obs, float32
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise ConfigError(
            "AgentConfig",
            "buffer_size",
            config.agent.buffer_size,
            f"a buffer that fits in memory: this one needs {need / 2**30:.0f} GiB, "
            f"the machine has {have / 2**30:.0f} GiB",
        )


def build_config(cfg: DictConfig, overrides: list[str]) -> TrainingConfig:
    """The run's TrainingConfig. On resume it is the checkpoint's, with the command line's
    ``schedule.*`` (and ``agent.device``) overrides on top."""
    for override in overrides:
        if override.startswith(("+", "~")):
            raise ResumeError(f"{override}: adding or deleting keys is not supported; set existing keys with key=value")
    if cfg.resume is None:
        return OmegaConf.to_object(cfg)
    from .agent import read_metadata
    from .checkpoints import resolve_checkpoint

    if not str(cfg.resume).strip():
        raise ResumeError("resume= is empty: expected a run folder or checkpoint folder")
    checkpoint = resolve_checkpoint(cfg.resume)
    merged = OmegaConf.merge(OmegaConf.structured(TrainingConfig), read_metadata(checkpoint)["config"])
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "resume":
            continue
        if not key.startswith(RESUME_CHANGEABLE):
            raise ResumeError(
                f"{override}: a resumed run keeps its checkpoint's config; only single keys "
                f"schedule.<key>=value and agent.device=value can change on resume"
            )
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False)
    merged.resume = str(checkpoint.resolve())
    return OmegaConf.to_object(merged)


def main() -> None:
    """Console entry point: train, turning bad input into one line and exit status 2."""
    run_app(train_app)


if __name__ == "__main__":
    main()
