"""TetrisAgent: SB3 DQN with checkpoints that hold the whole training state and resume exactly.

What the training state is lives here (the model, its replay buffer, the games in progress, the
RNGs); how a checkpoint folder stores it lives in :mod:`tetris_train.checkpoints`.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, Optional, Union

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv

from .afterstate import POLICY_CLASSES, AfterstateDQN
from .checkpoints import Checkpoint, CheckpointError, PathLike, ReplayFiles, timestamp, write_checkpoint
from .config import TrainingConfig
from .env import EnvConfig, TetrisEnv
from .progress import ProgressBarCallback
from .versions import package_versions

_MONITOR_FIELDS = ("rewards", "needs_reset", "episode_returns", "episode_lengths", "episode_times", "total_steps")


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
        self.model = AfterstateDQN(
            POLICY_CLASSES[agent.policy],
            env,
            double_q=agent.double_q,
            loss=agent.loss,
            expected_target=agent.expected_target,
            **dqn_arguments(config),
        )
        self.replay_files = ReplayFiles()  # replay chunks already on disk, linked by the next checkpoint
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
        bar = ProgressBarCallback(self.model.num_timesteps + total_timesteps) if progress_bar else None
        if bar is not None:
            callbacks.append(bar)
        self._learning_from = (self.model.num_timesteps, self._total_timesteps_trained)
        try:
            self.model.learn(total_timesteps, callback=callbacks, log_interval=log_interval, reset_num_timesteps=False)
        except StopTraining:
            pass
        finally:
            if bar is not None:
                bar.close()
            self._total_timesteps_trained = self.timesteps_trained
            self._learning_from = None
        return self

    def predict(self, observation: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        return self.model.predict(observation, deterministic=deterministic)

    # -- checkpoints (the format: checkpoints.py) -------------------------------------------------

    def save_checkpoint(self, path: PathLike, **extra_metadata: Any) -> Path:
        """Write a complete checkpoint folder at ``path`` (replacing one that is there): model,
        optimizer, replay buffer, RNG states and the game in progress, and ``metadata.json``."""
        metadata = {
            "timesteps_trained": self.timesteps_trained,
            "num_timesteps": int(self.model.num_timesteps),
            "episodes": int(self.model._episode_num),
            "config": self.config.to_dict(),
            "versions": package_versions(),
            "time": timestamp(),
            **extra_metadata,
        }
        return write_checkpoint(path, self.model, self._capture_state(), metadata, self.replay_files)

    @classmethod
    def load_checkpoint(cls, path: PathLike, env: gym.Env, device: Optional[str] = None) -> TetrisAgent:
        """Restore an agent, its replay buffer, RNGs and the game in progress from a checkpoint.

        ``device`` overrides the checkpoint's ``agent.device``. A damaged or foreign file raises
        :class:`CheckpointError` naming it; nothing in a checkpoint is unpickled.
        """
        checkpoint = Checkpoint(path)
        agent = cls.__new__(cls)
        agent.config = TrainingConfig.from_dict(checkpoint.metadata["config"])
        th.set_num_threads(agent.config.agent.torch_threads)
        agent.model = load_model(checkpoint, device or agent.config.agent.device, env)
        scale = (agent.model.replay_buffer_kwargs or {}).get("feature_scale")
        agent.replay_files = checkpoint.load_replay(agent.model.replay_buffer, scale)
        state = checkpoint.training_state()
        try:
            agent._restore_state(state)
        except Exception as error:  # a state of another game, or malformed
            message = " ".join(str(error).split()) or type(error).__name__
            raise CheckpointError(f"{checkpoint.path / checkpoint.state_file}: {message}") from None
        agent._total_timesteps_trained = int(checkpoint.metadata["timesteps_trained"])
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
        """The training state outside SB3's model, as JSON values and numpy arrays."""
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
                "numpy": np.random.get_state(legacy=False),
                "torch": th.get_rng_state().numpy(),
                "cuda": [s.numpy() for s in th.cuda.get_rng_state_all()] if th.cuda.is_available() else None,
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
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        np.random.set_state(rng["numpy"])
        th.set_rng_state(_byte_tensor(rng["torch"]))
        if rng["cuda"] is not None and th.cuda.is_available():
            th.cuda.set_rng_state_all([_byte_tensor(s) for s in rng["cuda"]])
        self.model.action_space.np_random.bit_generator.state = copy.deepcopy(rng["action_space"])


def _byte_tensor(value: Any) -> th.Tensor:
    """An RNG state as torch wants it, from an array (format 4) or a tensor (earlier formats)."""
    return th.as_tensor(np.asarray(value, dtype=np.uint8)).clone()


def model_objects(config: TrainingConfig) -> dict[str, Any]:
    """What ``DQN.load`` takes from a model archive besides weights and counters, built from the
    config instead: the hyperparameters, and what SB3 would unpickle (spaces, classes, schedules)."""
    policy = POLICY_CLASSES[config.agent.policy]
    fresh = AfterstateDQN(
        policy,
        None,
        double_q=config.agent.double_q,
        loss=config.agent.loss,
        expected_target=config.agent.expected_target,
        _init_setup_model=False,
        **dqn_arguments(config),
    )
    excluded = set(fresh._excluded_save_params())
    objects = {name: value for name, value in vars(fresh).items() if name not in excluded}
    game = TetrisEnv(config.env)
    afterstate = config.agent.policy == "afterstate"
    scale = game.feature_scale if afterstate and len(game.observation_space.shape) == 2 else None
    objects.update(
        policy_class=fresh.policy_class,
        observation_space=game.observation_space,
        action_space=game.action_space,
        replay_buffer_class=replay_buffer_class(config),
        replay_buffer_kwargs=replay_buffer_kwargs(config, scale),
        train_freq=config.agent.train_freq,
    )
    return objects


def load_model(
    checkpoint: Union[PathLike, Checkpoint], device: str = "auto", env: Optional[gym.Env] = None
) -> AfterstateDQN:
    """The SB3 model of a checkpoint (without its replay contents: see load_checkpoint). An ``env``
    whose spaces differ from the checkpoint's is refused by :func:`check_env_fits`."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint(checkpoint)
    config = TrainingConfig.from_dict(checkpoint.metadata["config"])
    if env is not None:
        check_env_fits(checkpoint, config.env, env)
    model = checkpoint.load_model(AfterstateDQN, model_objects(config), env=env, device=device)
    model.double_q = config.agent.double_q  # a model saved before the option trained without it
    model.loss = config.agent.loss
    return model


# the env settings that make the observation and action spaces, which a model and its env must share
SPACE_SETTINGS = ("width", "height", "preview", "observation")


def check_env_fits(checkpoint: Checkpoint, trained: EnvConfig, env: Union[gym.Env, VecEnv]) -> None:
    """Refuse an env whose board, preview or observation differ from the checkpoint's, in one line that
    names the settings and both values (SB3 would dump both observation spaces, array by array). An env
    that is no TetrisEnv is left to SB3's own check."""
    envs = env.get_attr("config") if isinstance(env, VecEnv) else [getattr(env.unwrapped, "config", None)]
    for given in envs:
        if not isinstance(given, EnvConfig):
            continue
        differ = [name for name in SPACE_SETTINGS if getattr(given, name) != getattr(trained, name)]
        if differ:
            raise CheckpointError(
                f"{checkpoint.path}: observation spaces do not match: the checkpoint was trained with "
                + ", ".join(f"env.{name}={getattr(trained, name)}" for name in differ)
                + ", this env has "
                + ", ".join(f"env.{name}={getattr(given, name)}" for name in differ)
            )


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
        **n_step_arguments(config),
    )


def check_device(config: TrainingConfig) -> None:
    """Refuse ``agent.device=cuda[:N]`` where there is no such CUDA device (SB3 would train on the
    CPU without a word)."""
    from .validation import ConfigError

    device = config.agent.device
    if not device.startswith("cuda"):
        return
    index = int(device.partition(":")[2] or 0)
    count = th.cuda.device_count() if th.cuda.is_available() else 0
    if index >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise ConfigError("AgentConfig", "device", device, f"auto or cpu: this machine has {have}")


def n_step_arguments(config: TrainingConfig) -> dict[str, Any]:
    """n-step returns: SB3 sets them up for its own buffer; the afterstate buffer takes them itself."""
    agent = config.agent
    if agent.n_steps == 1:
        return {}
    if agent.policy == "afterstate":
        return {"replay_buffer_kwargs": {"n_steps": agent.n_steps, "gamma": agent.gamma}}
    return {"n_steps": agent.n_steps}


def replay_buffer_class(config: TrainingConfig) -> Optional[type]:
    """The afterstate policy's compact buffer, else SB3's (None: SB3's n-step buffer, which SB3 sets
    up itself from ``n_steps``, as in training)."""
    from stable_baselines3.common.buffers import ReplayBuffer

    from .replay import AfterstateReplayBuffer

    if config.agent.policy == "afterstate":
        return AfterstateReplayBuffer
    return None if config.agent.n_steps > 1 else ReplayBuffer


def replay_buffer_kwargs(config: TrainingConfig, feature_scale: Optional[np.ndarray]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if feature_scale is not None:
        kwargs["feature_scale"] = np.asarray(feature_scale, np.float64)
    if config.agent.policy == "afterstate":
        kwargs.update(n_step_arguments(config).get("replay_buffer_kwargs", {}))
    return kwargs


def learning_rate_schedule(start: float, end: Optional[float]) -> Union[float, Any]:
    """A constant rate, or a linear one from ``start`` to ``end`` over the planned run."""
    if end is None or end == start:
        return start
    return LinearSchedule(start, end, 1.0)
