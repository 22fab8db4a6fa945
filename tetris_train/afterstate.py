"""The afterstate method: DQN on the value of the board each placement leaves.

The observation holds one feature row per action (the board that action would leave); one shared
MLP scores every row, and the row scores are the Q-values. SB3's DQN trains it with its own target
network, TD target, loss and replay buffer; :class:`AfterstateDQN` only skips scoring the rows of
actions that were not taken.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
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


class AfterstatePolicy(DQNPolicy):
    """DQN policy whose Q-network scores each action's afterstate row with one shared MLP."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", AfterstateExtractor)
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> AfterstateQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return AfterstateQNetwork(**net_args).to(self.device)


class AfterstateDQN(DQN):
    """SB3's DQN for the afterstate policy.

    ``DQN.train`` scores every action of each sampled state and keeps the one taken; with one row
    per action that is ``n_actions`` times the work the loss needs. This ``train`` is SB3's,
    line for line, except that the online network scores only the taken action's row. The loss,
    and so every update, is the same.
    """

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
                next_q_values = self.q_net_target(replay_data.next_observations)
                next_q_values, _ = next_q_values.max(dim=1)
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
