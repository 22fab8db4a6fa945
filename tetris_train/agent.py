"""TetrisAgent: SB3 DQN with checkpoints that hold the whole training state and resume exactly.

A checkpoint folder holds ``model.zip`` (weights, optimizer, counters, the observation in flight),
``replay_buffer.pkl``, ``training_state.pkl`` (RNG states, the games in progress) and
``metadata.json``. It is written to a hidden temporary folder and renamed into place, so a crash
never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Union

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ProgressBarCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule

from .afterstate import POLICY_CLASSES, AfterstateDQN
from .config import TrainingConfig, complete_saved_config
from .env import TetrisEnv

MODEL_FILE = "model.zip"
BUFFER_FILE = "replay_buffer.pkl"
STATE_FILE = "training_state.pkl"
METADATA_FILE = "metadata.json"
CHECKPOINT_FILES = (MODEL_FILE, BUFFER_FILE, STATE_FILE, METADATA_FILE)
STANDARD_METADATA = ("format", "timesteps_trained", "num_timesteps", "episodes", "config", "versions", "time")
CHECKPOINT_FORMAT = 3  # 2: learning_rate_end (format 1: a constant rate); 3: double_q (before: plain targets)
_MONITOR_FIELDS = ("rewards", "needs_reset", "episode_returns", "episode_lengths", "episode_times", "total_steps")

PathLike = Union[str, os.PathLike]


class StopTraining(Exception):
    """Raised by a callback between rollouts to end ``TetrisAgent.train`` there.

    SB3 only lets a callback stop training from ``on_step``, after the environment has already
    taken the next step; stopping between rollouts keeps the agent's state whole.
    """


class _PlannedHorizon(BaseCallback):
    """Measure SB3's training progress against the whole planned run, not against one learn() call.

    SB3 computes progress (which drives the ε and learning-rate schedules) as num_timesteps over
    the current learn() call's target, so training in two calls would restart the ε decay.
    """

    def __init__(self, horizon: int):
        super().__init__()
        self.horizon = horizon

    def _on_training_start(self) -> None:
        self.model._total_timesteps = max(self.horizon, 1)

    def _on_step(self) -> bool:
        return True


class TetrisAgent:
    """SB3 ``DQN`` built from a :class:`TrainingConfig`, with full checkpoints."""

    def __init__(self, env: gym.Env, config: TrainingConfig):
        self.config = config
        agent = config.agent
        th.set_num_threads(agent.torch_threads)
        self.model = AfterstateDQN(POLICY_CLASSES[agent.policy], env, double_q=agent.double_q, **dqn_arguments(config))
        self._total_timesteps_trained = 0
        self._learning_from: Optional[tuple[int, int]] = None  # (num_timesteps, trained) when learn() began

    @property
    def timesteps_trained(self) -> int:
        """Environment steps trained so far, over every session of this run (live during train())."""
        if self._learning_from is not None:
            steps, trained = self._learning_from
            return trained + self.model.num_timesteps - steps
        return self._total_timesteps_trained

    def train(
        self,
        total_timesteps: int,
        callback: Optional[Union[BaseCallback, list[BaseCallback]]] = None,
        *,
        progress_bar: bool = False,
        log_interval: Optional[int] = 4,
    ) -> TetrisAgent:
        """Train ``total_timesteps`` more steps, continuing counters and schedules.

        A callback may end training early, between rollouts, by raising :class:`StopTraining`.
        """
        callbacks: list[BaseCallback] = [_PlannedHorizon(self.config.schedule.max_timesteps)]
        if isinstance(callback, CallbackList):
            callbacks += callback.callbacks
        elif isinstance(callback, BaseCallback):
            callbacks.append(callback)
        elif callback is not None:
            callbacks += list(callback)
        bar = ProgressBarCallback() if progress_bar else None
        if bar is not None:
            callbacks.append(bar)
        self._learning_from = (self.model.num_timesteps, self._total_timesteps_trained)
        try:
            self.model.learn(total_timesteps, callback=callbacks, log_interval=log_interval, reset_num_timesteps=False)
        except StopTraining:
            if bar is not None:
                bar.on_training_end()
        finally:
            self._total_timesteps_trained = self.timesteps_trained
            self._learning_from = None
        return self

    def predict(self, observation: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        return self.model.predict(observation, deterministic=deterministic)

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, path: PathLike, **extra_metadata: Any) -> Path:
        """Write a complete checkpoint folder at ``path`` (replacing one that is there)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        self.model.save(tmp / MODEL_FILE)
        self.model.save_replay_buffer(tmp / BUFFER_FILE)
        with open(tmp / STATE_FILE, "wb") as f:
            pickle.dump(self._capture_state(), f, protocol=pickle.HIGHEST_PROTOCOL)
        metadata = {
            "format": CHECKPOINT_FORMAT,
            "timesteps_trained": self.timesteps_trained,
            "num_timesteps": int(self.model.num_timesteps),
            "episodes": int(self.model._episode_num),
            "config": self.config.to_dict(),
            "versions": package_versions(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra_metadata,
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        _fsync_tree(tmp)
        _replace_dir(tmp, path)
        return path

    @classmethod
    def load_checkpoint(cls, path: PathLike, env: gym.Env, device: Optional[str] = None) -> TetrisAgent:
        """Restore an agent, its replay buffer, RNGs and the game in progress from a checkpoint.

        ``device`` overrides the checkpoint's ``agent.device``.
        """
        path = Path(path)
        metadata = read_metadata(path)
        agent = cls.__new__(cls)
        agent.config = TrainingConfig.from_dict(metadata["config"])
        th.set_num_threads(agent.config.agent.torch_threads)
        device = device or agent.config.agent.device
        # force_reset=False keeps the observation in flight; _restore_state puts the game back under it
        agent.model = AfterstateDQN.load(path / MODEL_FILE, env=env, device=device, force_reset=False)
        agent.model.double_q = agent.config.agent.double_q  # a model saved before the option trained without it
        agent.model.load_replay_buffer(path / BUFFER_FILE)
        with open(path / STATE_FILE, "rb") as f:
            agent._restore_state(pickle.load(f))
        agent._total_timesteps_trained = int(metadata["timesteps_trained"])
        agent._learning_from = None
        return agent

    def _training_envs(self) -> list[tuple[Monitor, TetrisEnv]]:
        vec_env = self.model.get_env()
        envs = getattr(vec_env, "envs", None)
        if envs is None:
            raise TypeError(f"checkpoints need a DummyVecEnv, got {type(vec_env).__name__}")
        pairs = []
        for env in envs:
            monitor, inner = None, env
            while isinstance(inner, gym.Wrapper):
                if isinstance(inner, Monitor):
                    monitor = inner
                inner = inner.env
            if not isinstance(inner, TetrisEnv) or monitor is None:
                raise TypeError(f"checkpoints need TetrisEnv inside SB3's Monitor, got {env}")
            pairs.append((monitor, inner))
        return pairs

    def _capture_state(self) -> dict[str, Any]:
        return {
            "envs": [
                {
                    "game": game.get_state(),
                    "monitor": {name: copy.deepcopy(getattr(monitor, name)) for name in _MONITOR_FIELDS},
                }
                for monitor, game in self._training_envs()
            ],
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": th.get_rng_state(),
                "cuda": th.cuda.get_rng_state_all() if th.cuda.is_available() else None,
                "action_space": copy.deepcopy(self.model.action_space.np_random.bit_generator.state),
            },
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        # DQN.load re-seeds everything from the run's seed, as if starting over; undo that.
        self.model.get_env()._reset_seeds()
        pairs = self._training_envs()
        if len(pairs) != len(state["envs"]):
            raise ValueError(f"checkpoint holds {len(state['envs'])} environments; this agent has {len(pairs)}")
        for (monitor, game), saved in zip(pairs, state["envs"]):
            game.set_state(saved["game"])
            for name, value in saved["monitor"].items():
                setattr(monitor, name, copy.deepcopy(value))
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        th.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and th.cuda.is_available():
            th.cuda.set_rng_state_all(rng["cuda"])
        self.model.action_space.np_random.bit_generator.state = copy.deepcopy(rng["action_space"])


def dqn_arguments(config: TrainingConfig) -> dict[str, Any]:
    """SB3 ``DQN`` keyword arguments (all but the policy and the env) from a TrainingConfig."""
    agent = config.agent
    return dict(
        learning_rate=learning_rate_schedule(agent.learning_rate, agent.learning_rate_end),
        buffer_size=agent.buffer_size,
        learning_starts=agent.learning_starts,
        batch_size=agent.batch_size,
        tau=agent.tau,
        gamma=agent.gamma,
        train_freq=agent.train_freq,
        gradient_steps=agent.gradient_steps,
        target_update_interval=agent.target_update_interval,
        exploration_fraction=agent.exploration_fraction,
        exploration_initial_eps=agent.exploration_initial_eps,
        exploration_final_eps=agent.exploration_final_eps,
        max_grad_norm=agent.max_grad_norm,
        policy_kwargs=dict(net_arch=list(agent.net_arch)),
        seed=config.seed,
        device=agent.device,
        verbose=0,
    )


def learning_rate_schedule(start: float, end: Optional[float]) -> Union[float, Any]:
    """A constant rate, or a linear one from ``start`` to ``end`` over the planned run."""
    if end is None or end == start:
        return start
    return LinearSchedule(start, end, 1.0)


def link_checkpoint(source: PathLike, path: PathLike, **metadata: Any) -> Path:
    """A checkpoint at ``path`` of the same state as ``source``: its files hard-linked (copied where
    links are impossible), its metadata updated with ``metadata``. Written like save_checkpoint."""
    source, path = Path(source), Path(path)
    merged = {**{k: v for k, v in read_metadata(source).items() if k in STANDARD_METADATA}, **metadata}
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in (MODEL_FILE, BUFFER_FILE, STATE_FILE):
        try:
            os.link(source / name, tmp / name)
        except OSError:
            shutil.copy2(source / name, tmp / name)
    (tmp / METADATA_FILE).write_text(json.dumps(merged, indent=2) + "\n")
    _fsync_tree(tmp)
    _replace_dir(tmp, path)
    return path


class CheckpointError(ValueError):
    """A folder that is not a complete, readable checkpoint."""


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The metadata of a complete checkpoint folder; a clear error for anything else."""
    path = Path(path)
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if METADATA_FILE in missing:
        raise CheckpointError(f"{path} is not a checkpoint folder: it has no {METADATA_FILE}")
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint: {', '.join(missing)} missing")
    try:
        metadata = json.loads((path / METADATA_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path / METADATA_FILE} is unreadable: {error}") from None
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if found not in range(1, CHECKPOINT_FORMAT + 1):
        raise CheckpointError(f"{path}: checkpoint format {found!r}; this version reads 1 to {CHECKPOINT_FORMAT}")
    complete_saved_config(metadata["config"])
    return metadata


def package_versions() -> dict[str, str]:
    import stable_baselines3

    from . import __version__

    return {
        "tetris_train": __version__,
        "stable_baselines3": stable_baselines3.__version__,
        "torch": th.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _fsync_tree(folder: Path) -> None:
    for file in folder.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move a finished folder into place; an existing folder there is swapped out, then deleted."""
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old)
    else:
        os.rename(tmp, path)
    _fsync_dir(path.parent)
