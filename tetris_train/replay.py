"""The replay buffer of the afterstate update: what the update reads, stored as small integers.

Per transition the update reads the taken action's afterstate row, every row of the next state and
which of those rows are distinct placements; SB3's ``ReplayBuffer`` keeps every row of both states
as float32. Each feature is a half-integer count over the environment's divisor
(``TetrisEnv.feature_scale``), so a row is stored exactly as integer codes and decoded with the
environment's own float64 division: samples equal the observations bit for bit.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import torch as th
from gymnasium import spaces
from numba import njit
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer

from .env.pieces import MAX_ROTATIONS, every_piece_rows, every_placement


class AfterstateReplayBufferSamples(NamedTuple):
    """A batch for the afterstate update.

    ``taken_rows`` holds only the afterstate row of the action taken in each sampled state (all the
    online network scores); ``next_observations`` every row of the next state, and
    ``next_action_masks`` its distinct placements.
    """

    taken_rows: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    next_action_masks: th.Tensor
    discounts: Optional[th.Tensor] = None


def feature_codes(observation_space: spaces.Box, feature_scale: Optional[np.ndarray]) -> tuple[np.dtype, np.ndarray]:
    """How :class:`AfterstateReplayBuffer` stores feature rows: an integer dtype and the divisor
    that turns a code back into the feature, or float32 and None when the features are not known
    to be ``k / (2 * scale)`` (half-integers over the environment's divisors)."""
    if feature_scale is None:
        return np.dtype(np.float32), None
    divisor = 2.0 * np.asarray(feature_scale, np.float64)
    if divisor.shape != observation_space.shape[-1:]:
        raise ValueError(f"feature_scale has {divisor.shape[0]} divisors for rows of {observation_space.shape[-1]}")
    largest = float(np.max(np.asarray(observation_space.high, np.float64) * divisor))
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest < np.iinfo(dtype).max:
            return np.dtype(dtype), divisor
    return np.dtype(np.float32), None


class AfterstateReplayBuffer(ReplayBuffer):
    """The replay buffer of the afterstate update, a quarter of the size of SB3's ``ReplayBuffer``.

    It keeps per transition only what the update reads: the taken action's afterstate row (not all
    of the state's rows), every row of the next state, and ``info["action_mask"]`` of the next state.
    With ``feature_scale`` (``TetrisEnv.feature_scale``) rows are stored as small integers, exactly:
    each feature is a half-integer count over its divisor, and decoding repeats the environment's own
    float64 division, so samples equal the observations bit for bit (checked on every ``add``).
    Samples are drawn with the same random numbers as SB3's. A checkpoint holds only the filled part.

    ``every_piece``: for expected TD targets (``agent.expected_target``), ``next_observations`` holds
    the next board's rows for every piece instead of the drawn one's (``info["every_piece_afterstates"]``,
    ``TetrisEnv.report_every_piece``), and ``piece_rows`` says which rows are whose; there are no masks.
    """

    _ARRAYS = ("taken_rows", "next_observations", "next_action_masks", "actions", "rewards", "dones", "timeouts")

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        feature_scale: Optional[np.ndarray] = None,
        n_steps: int = 1,
        gamma: float = 0.99,
        every_piece: bool = False,
    ):
        if optimize_memory_usage or not handle_timeout_termination:
            raise ValueError("AfterstateReplayBuffer always handles timeouts and needs no optimize_memory_usage")
        # ReplayBuffer.__init__ would allocate full float32 observations; this buffer keeps its own arrays.
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)
        self.optimize_memory_usage = False
        self.handle_timeout_termination = True
        self.n_steps, self.gamma = int(n_steps), float(gamma)
        self.code_dtype, self.code_divisor = feature_codes(observation_space, feature_scale)
        self.every_piece = bool(every_piece)
        self.piece_rows = every_piece_rows(int(action_space.n) // MAX_ROTATIONS) if every_piece else None
        layout = self._layout(observation_space, action_space, feature_scale, every_piece)
        for name, (shape, dtype) in layout.items():
            fill = np.ones if name == "next_action_masks" else np.zeros  # no mask: every row counts
            setattr(self, name, fill((self.buffer_size, n_envs, *shape), dtype))

    @staticmethod
    def _layout(
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        feature_scale: Optional[np.ndarray],
        every_piece: bool = False,
    ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape and dtype of each array's entry for one transition (of one environment)."""
        n_rows, n_features = observation_space.shape
        codes = feature_codes(observation_space, feature_scale)[0]
        if every_piece:  # every piece's distinct placements instead; no masks needed
            n_rows = len(every_placement(int(action_space.n) // MAX_ROTATIONS)[0])
        return {
            "taken_rows": ((n_features,), codes),
            "next_observations": ((n_rows, n_features), codes),
            "next_action_masks": ((0 if every_piece else int(action_space.n),), np.dtype(bool)),
            "actions": ((1,), np.dtype(ReplayBuffer._maybe_cast_dtype(action_space.dtype))),
            "rewards": ((), np.dtype(np.float32)),
            "dones": ((), np.dtype(np.float32)),
            "timeouts": ((), np.dtype(np.float32)),
        }

    @classmethod
    def transition_bytes(
        cls,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        feature_scale: Optional[np.ndarray],
        every_piece: bool = False,
    ) -> int:
        """Memory one transition takes (per environment)."""
        layout = cls._layout(observation_space, action_space, feature_scale, every_piece).values()
        return sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in layout)

    def encode(self, rows: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Feature rows as stored (into ``out`` if given); a clear error if storing them would change them."""
        rows = np.ascontiguousarray(rows, np.float32)
        if out is None:
            out = np.empty(rows.shape, self.code_dtype)
        if self.code_divisor is None:
            out[...] = rows
        elif not _encode_rows(rows.reshape(-1, rows.shape[-1]), self.code_divisor, out.reshape(-1, rows.shape[-1])):
            raise ValueError(
                "AfterstateReplayBuffer: an observation is not a half-integer count over feature_scale, "
                "so it cannot be stored exactly; build the buffer with feature_scale=None"
            )
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Stored rows as float32 features, as the environment computed them (float64 division)."""
        if self.code_divisor is None:
            return codes
        return (codes / self.code_divisor).astype(np.float32)

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        action = np.asarray(action).reshape((self.n_envs, self.action_dim))
        obs = np.asarray(obs).reshape((self.n_envs, *self.obs_shape))
        pos = self.pos
        self.encode(obs[np.arange(self.n_envs), action[:, 0]], out=self.taken_rows[pos])
        if self.every_piece:
            for i, info in enumerate(infos):
                if "every_piece_afterstates" not in info:
                    raise ValueError(
                        "AfterstateReplayBuffer(every_piece=True) needs info['every_piece_afterstates'] "
                        "from each step: call TetrisEnv.report_every_piece() on the training envs"
                    )
                self.encode(info["every_piece_afterstates"], out=self.next_observations[pos, i])
        else:
            self.encode(np.asarray(next_obs).reshape(obs.shape), out=self.next_observations[pos])
            for i, info in enumerate(infos):
                mask = info.get("action_mask")
                self.next_action_masks[pos, i] = True if mask is None else mask
        self.actions[pos] = action
        self.rewards[pos] = np.asarray(reward)
        self.dones[pos] = np.asarray(done)
        self.timeouts[pos] = np.array([info.get("TimeLimit.truncated", False) for info in infos])
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> AfterstateReplayBufferSamples:
        if env is not None:
            raise ValueError("AfterstateReplayBuffer does not support VecNormalize")
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        if self.n_steps > 1:
            return self._n_step_samples(batch_inds, env_indices)
        data = (
            self.decode(self.taken_rows[batch_inds, env_indices]),
            self.actions[batch_inds, env_indices],
            self.decode(self.next_observations[batch_inds, env_indices]),
            (self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])).reshape(-1, 1),
            self.rewards[batch_inds, env_indices].reshape(-1, 1),
            self.next_action_masks[batch_inds, env_indices],
        )
        return AfterstateReplayBufferSamples(*(th.from_numpy(np.ascontiguousarray(x)).to(self.device) for x in data))

    def _n_step_samples(self, batch_inds: np.ndarray, env_indices: np.ndarray) -> AfterstateReplayBufferSamples:
        """Transitions of up to ``n_steps`` steps, as SB3's ``NStepReplayBuffer`` makes them: the
        discounted rewards until the game ends or is cut off, the state there, and the discount
        ``gamma ** steps`` of its value. A sequence never runs past the newest transition."""
        newest = self.pos - 1
        kept = self.timeouts[newest].copy()
        self.timeouts[newest] = np.logical_or(kept, np.logical_not(self.dones[newest]))
        try:
            indices = (batch_inds[:, None] + np.arange(self.n_steps)[None, :]) % self.buffer_size
            columns = env_indices[:, None]
            ends = np.logical_or(self.dones[indices, columns], self.timeouts[indices, columns])
            last = np.where(ends.any(axis=1), ends.argmax(axis=1), self.n_steps - 1)
            mask = np.arange(self.n_steps)[None, :] <= last[:, None]
            powers = self.gamma ** np.arange(self.n_steps, dtype=np.float32)[None, :]
            rewards = (self.rewards[indices, columns] * powers * mask).sum(axis=1, keepdims=True)
            discounts = (self.gamma ** mask.sum(axis=1, keepdims=True)).astype(np.float32)
            at = (batch_inds + last) % self.buffer_size
            dones = (self.dones[at, env_indices] * (1 - self.timeouts[at, env_indices])).reshape(-1, 1)
            data = (
                self.decode(self.taken_rows[batch_inds, env_indices]),
                self.actions[batch_inds, env_indices],
                self.decode(self.next_observations[at, env_indices]),
                dones,
                rewards.astype(np.float32),
                self.next_action_masks[at, env_indices],
                discounts,
            )
        finally:
            self.timeouts[newest] = kept
        return AfterstateReplayBufferSamples(*(th.from_numpy(np.ascontiguousarray(x)).to(self.device) for x in data))

    @classmethod
    def from_replay_buffer(
        cls, old: ReplayBuffer, feature_scale: Optional[np.ndarray] = None
    ) -> AfterstateReplayBuffer:
        """This buffer holding the transitions of SB3's ``ReplayBuffer`` (or of this buffer's earlier,
        full-observation form), at the same positions: how checkpoints written before it load."""
        new = cls(
            old.buffer_size * old.n_envs,
            old.observation_space,
            old.action_space,
            old.device,
            old.n_envs,
            feature_scale=feature_scale,
        )
        filled = old.buffer_size if old.full else old.pos
        if old.optimize_memory_usage:
            raise ValueError("cannot convert a replay buffer with optimize_memory_usage")
        actions = old.actions[:filled].reshape(filled, old.n_envs, -1)
        rows = np.take_along_axis(old.observations[:filled], actions[..., None].astype(np.int64), axis=2)
        new.encode(rows[:, :, 0], out=new.taken_rows[:filled])
        new.encode(old.next_observations[:filled], out=new.next_observations[:filled])
        masks = old.__dict__.get("next_action_masks")
        if masks is not None:
            new.next_action_masks[:filled] = masks[:filled]
        for name in ("actions", "rewards", "dones", "timeouts"):
            getattr(new, name)[:filled] = getattr(old, name)[:filled]
        new.pos, new.full = old.pos, old.full
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if not self.full and "taken_rows" in state:  # the empty rest is not worth writing
            for name in self._ARRAYS:
                state[name] = state[name][: self.pos]  # a view: pickled without a copy
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {"every_piece": False, "piece_rows": None, **state}  # saved before every_piece existed
        self.__dict__.update(state)
        if "taken_rows" not in state:
            return  # the earlier form, with full observations: AfterstateDQN.load_replay_buffer converts it
        for name in self._ARRAYS:
            array = state[name]
            if array.shape[0] < self.buffer_size:
                grown = np.ones if name == "next_action_masks" else np.zeros
                whole = grown((self.buffer_size, *array.shape[1:]), array.dtype)
                whole[: array.shape[0]] = array
                setattr(self, name, whole)


@njit(cache=True)
def _encode_rows(rows, divisor, out):
    """Codes of ``rows`` into ``out``; False (``out`` partly written) if a row would not decode to itself."""
    top = np.iinfo(out.dtype).max
    for i in range(rows.shape[0]):
        for f in range(rows.shape[1]):
            code = np.rint(np.float64(rows[i, f]) * divisor[f])
            if not 0 <= code <= top or np.float32(code / divisor[f]) != rows[i, f]:
                return False
            out[i, f] = code
    return True


def check_memory(config: Any) -> None:
    """Refuse a replay buffer larger than the machine's memory (a TrainingConfig's) before allocating it."""
    import os

    from .env import TetrisEnv
    from .validation import ConfigError

    env = TetrisEnv(config.env)
    if config.agent.policy == "afterstate":
        need = config.agent.buffer_size * AfterstateReplayBuffer.transition_bytes(
            env.observation_space, env.action_space, env.feature_scale, config.agent.expected_target
        )
    else:
        need = 2 * config.agent.buffer_size * int(np.prod(env.observation_space.shape)) * 4  # SB3's: obs + next obs
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
