"""The afterstate method: DQN on the value of the board each placement leaves.

The observation holds one feature row per action (the board that action would leave); one shared
MLP scores every row, and the row scores are the Q-values. SB3's DQN trains it with its own target
network, TD target and loss. :class:`AfterstateDQN` skips work that cannot change an update: the
online network scores only the taken action's row, and the target network scores only the rows of
distinct placements (several actions can leave the same board), which
:class:`AfterstateReplayBuffer` records.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn
from torch.nn import functional as F


class AfterstateExtractor(BaseFeaturesExtractor):
    """Leaves the ``(n_actions, n_features)`` observation as it is: each row is scored on its own."""

    def __init__(self, observation_space: spaces.Box):
        if len(observation_space.shape) != 2:
            raise ValueError(
                f"the afterstate policy needs observations of shape (n_actions, n_features), "
                f"got {observation_space.shape}: use env.observation=afterstates"
            )
        super().__init__(observation_space, features_dim=int(observation_space.shape[1]))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return observations


class AfterstateQNetwork(QNetwork):
    """Q(s, a) = MLP(row a of the observation), with one MLP shared by all actions."""

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ) -> None:
        if observation_space.shape[0] != action_space.n:
            raise ValueError(
                f"the afterstate policy needs one observation row per action: "
                f"{observation_space.shape[0]} rows for {action_space.n} actions"
            )
        # QNetwork.__init__ would build a head with one output per action; this one has a single output.
        BasePolicy.__init__(
            self,
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        self.net_arch = net_arch if net_arch is not None else [64, 64]
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        self.q_net = nn.Sequential(*create_mlp(features_dim, 1, self.net_arch, activation_fn))

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.q_net(self.extract_features(obs, self.features_extractor)).squeeze(-1)

    def q_values_of(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """Q(s, a) for one action per observation, ``(batch, 1)``: only those rows are scored."""
        rows = obs[th.arange(obs.shape[0], device=obs.device), actions.reshape(-1)]
        return self.q_net(self.extract_features(rows, self.features_extractor))

    @th.no_grad()
    def row_values(self, rows: th.Tensor) -> th.Tensor:
        """Q-values of afterstate rows ``(..., n_features)`` as ``(...)``, without autograd."""
        values = self.extract_features(rows.reshape(-1, rows.shape[-1]), self.features_extractor)
        for layer in self.q_net:  # no autograd, so activations work in place (a Linear comes first)
            values = values.relu_() if isinstance(layer, nn.ReLU) else layer(values)
        return values.reshape(rows.shape[:-1])

    @th.no_grad()
    def max_q_values(self, obs: th.Tensor, masks: Optional[th.Tensor] = None) -> th.Tensor:
        """max_a Q(s, a), ``(batch,)``, scoring only the rows ``masks`` marks (every row without one).

        Unmarked actions must repeat a marked action's row, so the maximum is the same.
        """
        if masks is None:
            return self.row_values(obs).max(dim=1).values
        masks = masks | ~masks.any(dim=1, keepdim=True)  # a state with no marks would make the max -inf
        scores = obs.new_full(masks.shape, -th.inf)
        scores[masks] = self.row_values(obs[masks])
        return scores.max(dim=1).values


class AfterstatePolicy(DQNPolicy):
    """DQN policy whose Q-network scores each action's afterstate row with one shared MLP."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", AfterstateExtractor)
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> AfterstateQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return AfterstateQNetwork(**net_args).to(self.device)

    def set_training_mode(self, mode: bool) -> None:
        # SB3 switches modes around every predict and update; walking the modules each time is
        # a noticeable share of a step, and the mode only changes when it differs.
        if mode != self.training or mode != self.q_net.training:
            super().set_training_mode(mode)

    def _mode_matters(self) -> bool:
        """Whether the Q-network behaves differently in training mode (dropout, batch norm): if not,
        predict need not switch modes. Worked out once; the network's layers do not change."""
        if getattr(self, "_mode_matters_cache", None) is None:
            plain = (nn.Linear, nn.ReLU, nn.Sequential, nn.Identity, BaseFeaturesExtractor, QNetwork)
            self._mode_matters_cache = any(not isinstance(m, plain) for m in self.q_net.modules())
        return self._mode_matters_cache

    def predict(
        self,
        observation: Any,
        state: Optional[tuple[np.ndarray, ...]] = None,
        episode_start: Optional[np.ndarray] = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Optional[tuple[np.ndarray, ...]]]:
        """Greedy actions; SB3's predict, without its checks and conversions on the common path."""
        shape = self.observation_space.shape
        if not isinstance(observation, np.ndarray) or observation.shape[-len(shape) :] != shape:
            return super().predict(observation, state, episode_start, deterministic)
        if self._mode_matters():
            self.set_training_mode(False)
        with th.no_grad():
            obs = th.as_tensor(observation, dtype=th.float32, device=self.device).reshape(-1, *shape)
            actions = self.q_net.row_values(obs).argmax(dim=1).cpu().numpy()
        return (actions if observation.ndim > len(shape) else actions.reshape(())), state


class AfterstateReplayBufferSamples(NamedTuple):
    """SB3's ``ReplayBufferSamples`` plus the distinct placements of each next state."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: Optional[th.Tensor] = None
    next_action_masks: Optional[th.Tensor] = None


class AfterstateReplayBuffer(ReplayBuffer):
    """SB3's ``ReplayBuffer`` that also keeps ``info["action_mask"]`` of each next state, and samples
    without copying the batch twice. Samples are drawn with the same random numbers as SB3's."""

    def __init__(
        self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Discrete, *args, **kwargs
    ):
        super().__init__(buffer_size, observation_space, action_space, *args, **kwargs)
        self.next_action_masks = np.ones((self.buffer_size, self.n_envs, int(action_space.n)), dtype=bool)

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        pos = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        for i, info in enumerate(infos):
            mask = info.get("action_mask")
            self.next_action_masks[pos, i] = True if mask is None else mask

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> AfterstateReplayBufferSamples:
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        if self.optimize_memory_usage:
            next_obs = self.observations[(batch_inds + 1) % self.buffer_size, env_indices, :]
        else:
            next_obs = self.next_observations[batch_inds, env_indices, :]
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            self._normalize_obs(next_obs, env),
            (self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        tensors = [th.from_numpy(np.ascontiguousarray(x)).to(self.device) for x in data]
        masks = th.from_numpy(self.next_action_masks[batch_inds, env_indices]).to(self.device)
        return AfterstateReplayBufferSamples(*tensors, next_action_masks=masks)


class AfterstateDQN(DQN):
    """SB3's DQN for the afterstate policy.

    ``DQN.train`` scores every action of each sampled state and keeps the one taken; with one row
    per action that is ``n_actions`` times the work the loss needs. This ``train`` is SB3's,
    line for line, except that the online network scores only the taken action's row and the
    target network only the distinct placements of the next state (when the replay buffer knows
    them). The loss, and so every update, is the same.
    """

    def __init__(self, policy: Any, env: Any, *args: Any, **kwargs: Any):
        if policy is AfterstatePolicy:
            kwargs.setdefault("replay_buffer_class", AfterstateReplayBuffer)
        super().__init__(policy, env, *args, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        if not isinstance(self.policy, AfterstatePolicy):
            return super().train(gradient_steps, batch_size)
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)

        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            with th.no_grad():
                masks = getattr(replay_data, "next_action_masks", None)
                next_q_values = self.q_net_target.max_q_values(replay_data.next_observations, masks)
                next_q_values = next_q_values.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            current_q_values = self.q_net.q_values_of(replay_data.observations, replay_data.actions.long())

            loss = F.smooth_l1_loss(current_q_values, target_q_values)
            losses.append(loss.item())

            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))


POLICY_CLASSES: dict[str, Any] = {"afterstate": AfterstatePolicy, "MlpPolicy": "MlpPolicy"}
