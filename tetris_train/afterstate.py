"""The afterstate method: DQN on the value of the board each placement leaves.

The observation holds one feature row per action (the board that action would leave); one shared
MLP scores every row, and the row scores are the Q-values. SB3's DQN trains it with its own target
network, TD target and loss. :class:`AfterstateDQN` skips work that cannot change an update: the
online network scores only the taken action's row, and the target network scores only the rows of
distinct placements (several actions can leave the same board). :class:`AfterstateReplayBuffer`
keeps just what that update reads, as small integers: a quarter of SB3's buffer (with expected
targets, every piece's rows of the next board instead: about as much as SB3's).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn
from torch.nn import functional as F

from .replay import AfterstateReplayBuffer


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

    def score_rows(self, rows: th.Tensor) -> th.Tensor:
        """Q-values ``(batch, 1)`` of one afterstate row ``(batch, n_features)`` each, with autograd."""
        return self.q_net(self.extract_features(rows, self.features_extractor))

    @th.no_grad()
    def row_values(self, rows: th.Tensor) -> th.Tensor:
        """Q-values of afterstate rows ``(..., n_features)`` as ``(...)``, without autograd."""
        values = self.extract_features(rows.reshape(-1, rows.shape[-1]), self.features_extractor)
        for layer in self.q_net:  # no autograd, so activations work in place (a Linear comes first)
            values = values.relu_() if isinstance(layer, nn.ReLU) else layer(values)
        return values.reshape(rows.shape[:-1])

    @th.no_grad()
    def mlp_layers(self) -> Optional[tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]]:
        """This network as float32 CPU arrays for compiled play (``engine.play_mlp``): the weights
        ``(in, out)`` and biases of its Linear layers, when it is Linear layers with ReLU between
        them and one output, behind the plain extractor; None otherwise. A copy of the weights now."""
        linear, relus = list(self.q_net)[0::2], list(self.q_net)[1::2]
        plain = (
            type(self.features_extractor) is AfterstateExtractor
            and all(type(m) is nn.Linear for m in linear)
            and all(type(m) is nn.ReLU for m in relus)
            and len(relus) == len(linear) - 1
            and linear[-1].out_features == 1
        )
        if not plain:
            return None
        weights = tuple(np.ascontiguousarray(m.weight.detach().cpu().T.numpy(), np.float32) for m in linear)
        biases = tuple(
            np.zeros(m.out_features, np.float32) if m.bias is None else m.bias.detach().cpu().numpy().astype(np.float32)
            for m in linear
        )
        return weights, biases

    @th.no_grad()
    def max_q_values(self, obs: th.Tensor, masks: Optional[th.Tensor] = None) -> th.Tensor:
        """max_a Q(s, a), ``(batch,)``, scoring only the rows ``masks`` marks (every row without one).

        Unmarked actions must repeat a marked action's row, so the maximum is the same.
        """
        return self._masked_max(obs, masks).values

    @th.no_grad()
    def greedy_actions(self, obs: th.Tensor, masks: Optional[th.Tensor] = None) -> th.Tensor:
        """argmax_a Q(s, a), ``(batch,)``, among the rows ``masks`` marks (every row without one)."""
        return self._masked_max(obs, masks).indices

    def _masked_max(self, obs: th.Tensor, masks: Optional[th.Tensor]) -> Any:
        if masks is None:
            return self.row_values(obs).max(dim=1)
        masks = masks | ~masks.any(dim=1, keepdim=True)  # a state with no marks would make the max -inf
        scores = obs.new_full(masks.shape, -th.inf)
        scores[masks] = self.row_values(obs[masks])
        return scores.max(dim=1)


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


class AfterstateDQN(DQN):
    """SB3's DQN for the afterstate policy.

    ``DQN.train`` scores every action of each sampled state and keeps the one taken; with one row
    per action that is ``n_actions`` times the work the loss needs. This ``train`` is SB3's,
    line for line, except that the online network scores only the taken action's row and the
    target network only the distinct placements of the next state, both read from
    :class:`AfterstateReplayBuffer`. The loss, and so every update, is the same. (With another
    replay buffer and plain targets it is SB3's ``train``.)

    ``double_q``: Double DQN's target (van Hasselt et al., 2016), for either policy: the online
    network picks the next state's action, the target network scores it. With the afterstate
    policy the scoring of the next state's rows moves from the target to the online network, so
    it costs one row per sample.

    ``expected_target``: the next state's value is the mean, over the seven pieces, of its value
    with that piece to place (``AfterstateReplayBuffer(every_piece=True)`` keeps every piece's rows),
    not its value with the piece that came: the TD target no longer samples the randomizer. Exact
    for uniformly drawn pieces without preview.

    ``loss``: ``huber`` (SB3's smooth L1) or ``mse``. Past an error of 1 the Huber loss pulls a value
    toward the median of its targets rather than their mean, which discounts rare outcomes (a
    game lost, a bad run of pieces) when rewards are tens of units.
    """

    def __init__(
        self,
        policy: Any,
        env: Any,
        *args: Any,
        double_q: bool = False,
        loss: str = "huber",
        expected_target: bool = False,
        **kwargs: Any,
    ):
        if policy is AfterstatePolicy:
            kwargs.setdefault("replay_buffer_class", AfterstateReplayBuffer)
        elif expected_target:
            raise ValueError("expected_target needs the afterstate policy")
        self.double_q, self.loss, self.expected_target = double_q, loss, expected_target
        super().__init__(policy, env, *args, **kwargs)

    def _setup_model(self) -> None:
        if self.replay_buffer_class is AfterstateReplayBuffer:
            kwargs = dict(self.replay_buffer_kwargs or {})
            if "feature_scale" not in kwargs:
                kwargs["feature_scale"] = self._feature_scale()
            kwargs["every_piece"] = self.expected_target
            self.replay_buffer_kwargs = kwargs
        super()._setup_model()
        # records go nowhere until the caller sets a logger (a run: metrics.csv and TensorBoard);
        # SB3's own default makes a new folder under the temp directory at every learn()
        self.set_logger(Logger(None, []))
        if self.expected_target and self.env is not None:
            self.env.env_method("report_every_piece", True)

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        super().set_env(env, force_reset)
        if self.expected_target:
            self.env.env_method("report_every_piece", True)

    def _feature_scale(self) -> Optional[np.ndarray]:
        """The environment's feature divisors, which let the replay buffer store rows as integers."""
        try:
            scale = self.env.get_attr("feature_scale")[0] if self.env is not None else None
        except AttributeError:
            return None
        shape = self.observation_space.shape
        if scale is None or len(shape) != 2 or shape[1] != len(scale):
            return None  # not afterstate rows: the policy's feature extractor says so
        return np.asarray(scale, np.float64)

    def load_replay_buffer(self, path: Any, truncate_last_traj: bool = True) -> None:
        """SB3's, and a buffer saved in SB3's or an earlier form comes back as this policy's buffer."""
        super().load_replay_buffer(path, truncate_last_traj)
        if isinstance(self.policy, AfterstatePolicy) and "taken_rows" not in self.replay_buffer.__dict__:
            scale = (self.replay_buffer_kwargs or {}).get("feature_scale")
            self.replay_buffer = AfterstateReplayBuffer.from_replay_buffer(self.replay_buffer, scale)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        lean = isinstance(self.policy, AfterstatePolicy) and isinstance(self.replay_buffer, AfterstateReplayBuffer)
        if self.expected_target and not (lean and self.replay_buffer.every_piece):
            raise ValueError(
                "expected_target needs an AfterstateReplayBuffer with every_piece=True (every piece's rows); "
                f"this model has a {type(self.replay_buffer).__name__} without them"
            )
        if not lean and not self.double_q and self.loss == "huber":
            return super().train(gradient_steps, batch_size)
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)

        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            with th.no_grad():
                next_q_values = self._next_q_values(replay_data, lean).reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            if lean:
                current_q_values = self.q_net.score_rows(replay_data.taken_rows)
            else:
                current_q_values = th.gather(self.q_net(replay_data.observations), 1, replay_data.actions.long())

            if self.loss == "mse":
                loss = F.mse_loss(current_q_values, target_q_values)
            else:
                loss = F.smooth_l1_loss(current_q_values, target_q_values)
            losses.append(loss.item())

            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))

    def _next_q_values(self, replay_data: Any, lean: bool) -> th.Tensor:
        """The next state's value in the TD target: max_a Q_target(s', a), or with ``double_q``
        Q_target(s', argmax_a Q(s', a))."""
        next_obs = replay_data.next_observations
        if not lean:  # SB3's networks: every action scored
            if not self.double_q:
                return self.q_net_target(next_obs).max(dim=1).values
            return self.q_net_target(next_obs).gather(1, self.q_net(next_obs).argmax(dim=1, keepdim=True))
        if self.expected_target:
            return self._expected_next_values(next_obs)
        masks = replay_data.next_action_masks
        if not self.double_q:
            return self.q_net_target.max_q_values(next_obs, masks)
        rows = th.arange(next_obs.shape[0], device=next_obs.device)
        chosen = next_obs[rows, self.q_net.greedy_actions(next_obs, masks)]
        return self.q_net_target.row_values(chosen)

    def _expected_next_values(self, next_rows: th.Tensor) -> th.Tensor:
        """The next board's value averaged over the seven pieces, each piece's value its best
        placement's (chosen as ``_next_q_values`` chooses): ``next_rows`` ``(batch, placements,
        features)`` holds every piece's placements, ``replay_buffer.piece_rows`` which are whose."""
        index = th.as_tensor(self.replay_buffer.piece_rows, device=next_rows.device)  # (pieces, widest)
        chooser = self.q_net if self.double_q else self.q_net_target
        scores = chooser.row_values(next_rows)[:, index]  # (batch, pieces, widest)
        if not self.double_q:
            return scores.max(dim=2).values.mean(dim=1)
        best = index[th.arange(index.shape[0], device=index.device), scores.argmax(dim=2)]  # (batch, pieces)
        chosen = th.gather(next_rows, 1, best.unsqueeze(-1).expand(-1, -1, next_rows.shape[-1]))
        return self.q_net_target.row_values(chosen).mean(dim=1)


POLICY_CLASSES: dict[str, Any] = {"afterstate": AfterstatePolicy, "MlpPolicy": "MlpPolicy"}
