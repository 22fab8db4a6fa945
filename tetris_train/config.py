"""TrainingConfig: the typed schema that Hydra composes from the ``agent``, ``env`` and ``schedule`` groups.

The dataclasses hold every default; the YAML options under ``conf/`` hold only what differs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import PurePosixPath
from typing import Any, Optional

from .env.config import EnvConfig
from .validation import ConfigError, check, is_int, is_number

POLICIES = ("afterstate", "MlpPolicy")
EPISODE_WINDOW = 100  # finished episodes SB3 keeps for its statistics (stats_window_size)
DEVICES = ("auto", "cpu", "cuda")
LOSSES = ("huber", "mse")
OBJECTIVES = ("best", "mean")  # ScheduleConfig.objective; computed in tetris_train/objective.py


@dataclass
class AgentConfig:
    """DQN hyperparameters (Stable-Baselines3 names).

    Defaults are those measured to learn Tetris with the afterstate policy (README, "Defaults that
    learn"); ``agent=seed`` restores the seed plan's set: MlpPolicy, learning_rate 1e-4, batch 64,
    gamma 0.99, exploration 0.2 to 0.05, learning_starts 10,000, net_arch (256, 256), buffer 100,000,
    plain DQN targets (no double_q).

    Attributes:
        policy: afterstate (score each placement's afterstate with one network) or MlpPolicy (SB3's).
        learning_rate: Adam's step size at the start.
        learning_rate_end: step size reached linearly at the last step; null keeps it constant.
        buffer_size: transitions the replay buffer holds.
        batch_size: transitions per gradient step.
        gamma: discount factor of future rewards.
        exploration_fraction: share of training over which epsilon falls to its final value.
        exploration_initial_eps: chance of a random placement at the start.
        exploration_final_eps: chance of a random placement after the decay.
        target_update_interval: steps between target network updates.
        train_freq: environment steps between gradient updates.
        gradient_steps: gradient steps per update.
        learning_starts: steps of play before the first update.
        n_steps: steps of reward in each TD target before the value takes over (1: plain DQN).
        net_arch: hidden layer sizes of the Q-network.
        tau: soft update weight of the target network (1: copy).
        double_q: Double DQN targets (the online network picks, the target network scores).
        loss: the TD loss: huber (SB3's smooth L1, which moves a value toward the median of its
            targets once errors exceed 1) or mse (squared error: toward their mean).
        expected_target: the TD target averages the next board's value over the seven pieces that
            may come (exact with env.randomizer=uniform and env.preview=0, which it needs) instead of
            using the piece that came; about seven times the target's work.
        max_grad_norm: gradient norm clipping.
        device: auto, cpu, cuda or cuda:N.
        torch_threads: CPU threads torch may use.
    """

    policy: str = "afterstate"
    learning_rate: float = 1e-3
    learning_rate_end: Optional[float] = 0.0
    buffer_size: int = 500_000
    batch_size: int = 128
    gamma: float = 0.95
    exploration_fraction: float = 0.002
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.001
    target_update_interval: int = 100
    train_freq: int = 4
    gradient_steps: int = 1
    learning_starts: int = 1_000
    n_steps: int = 1
    net_arch: tuple[int, ...] = (64, 64)
    tau: float = 0.2
    double_q: bool = True
    loss: str = "huber"
    expected_target: bool = False
    max_grad_norm: float = 10.0
    device: str = "auto"
    torch_threads: int = 1

    def __post_init__(self) -> None:
        def _check(ok: bool, name: str, allowed: str) -> None:
            check(ok, "AgentConfig", name, getattr(self, name), allowed)

        _check(self.policy in POLICIES, "policy", f"one of {', '.join(POLICIES)}")
        _check(is_number(self.learning_rate) and self.learning_rate > 0, "learning_rate", "a number > 0")
        _check(
            self.learning_rate_end is None or (is_number(self.learning_rate_end) and self.learning_rate_end >= 0),
            "learning_rate_end",
            "null (constant learning rate) or a number >= 0, reached linearly at schedule.max_timesteps",
        )
        for name in (
            "buffer_size",
            "batch_size",
            "target_update_interval",
            "train_freq",
            "gradient_steps",
            "torch_threads",
            "n_steps",
        ):
            _check(is_int(getattr(self, name)) and getattr(self, name) > 0, name, "an integer > 0")
        _check(is_int(self.learning_starts) and self.learning_starts >= 0, "learning_starts", "an integer >= 0")
        _check(is_number(self.gamma) and 0 < self.gamma <= 1, "gamma", "a number with 0 < gamma <= 1")
        _check(
            is_number(self.exploration_fraction) and 0 < self.exploration_fraction <= 1,
            "exploration_fraction",
            "a number with 0 < exploration_fraction <= 1",
        )
        for name in ("exploration_initial_eps", "exploration_final_eps"):
            value = getattr(self, name)
            _check(is_number(value) and 0 <= value <= 1, name, f"a number with 0 <= {name} <= 1")
        _check(is_number(self.tau) and 0 < self.tau <= 1, "tau", "a number with 0 < tau <= 1")
        _check(isinstance(self.double_q, bool), "double_q", "true or false")
        _check(isinstance(self.expected_target, bool), "expected_target", "true or false")
        _check(self.loss in LOSSES, "loss", f"one of {', '.join(LOSSES)}")
        _check(is_number(self.max_grad_norm) and self.max_grad_norm > 0, "max_grad_norm", "a number > 0")
        sizes = self.net_arch
        _check(
            isinstance(sizes, (list, tuple)) and len(sizes) > 0 and all(is_int(n) and n > 0 for n in sizes),
            "net_arch",
            "a non-empty list of layer sizes > 0, e.g. [256, 256]",
        )
        self.net_arch = tuple(sizes)
        _check(
            isinstance(self.device, str) and (self.device in DEVICES or re.fullmatch(r"cuda:\d+", self.device)),
            "device",
            "auto, cpu, cuda or cuda:N",
        )
        # across fields
        _check(
            self.buffer_size >= self.batch_size,
            "buffer_size",
            f"at least batch_size ({self.batch_size}): a batch is drawn from the buffer",
        )
        _check(
            self.exploration_final_eps <= self.exploration_initial_eps,
            "exploration_final_eps",
            f"at most exploration_initial_eps ({self.exploration_initial_eps}): exploration decays",
        )


@dataclass
class ScheduleConfig:
    """How long to train and what to do along the way: checkpoints, evaluation, logging, stopping.

    Attributes:
        max_timesteps: environment steps (placements) to train in all, a resumed run's included.
        target_lines: stop early once the mean lines of the last target_window training games reach it; null: never.
        target_window: games averaged for target_lines.
        checkpoint_dir: the run folder's checkpoints folder.
        checkpoint_freq: steps between periodic checkpoints.
        keep_last: periodic checkpoints kept (final and best are kept as well).
        eval_freq: steps between greedy evaluations; 0: only at the end.
        eval_episodes: games per evaluation.
        eval_seed: seed of the first evaluation game (the same games every time).
        eval_max_pieces: cap on an evaluation game's pieces, so evaluation cost stays bounded; null: the env's cap.
        log_interval: steps between rows of metrics.csv.
        tensorboard: write TensorBoard event files.
        progress_bar: show a progress bar; null: when the output is a terminal.
        objective: what the run's objective (a search's value to maximise) measures: best (mean lines of
            the best evaluation) or mean (mean of every evaluation's mean lines: the area under the
            learning curve, which rewards learning early).
        stop_at_cap: stop once this many evaluations (in a row or not) played every game to the piece cap,
            where the evaluation games cannot show more; 0: never.
    """

    max_timesteps: int = 500_000
    target_lines: Optional[int] = None
    target_window: int = 10
    checkpoint_dir: str = "checkpoints"
    checkpoint_freq: int = 10_000
    keep_last: int = 2
    eval_freq: int = 25_000
    eval_episodes: int = 20
    eval_seed: int = 1_000_000
    eval_max_pieces: Optional[int] = 100_000
    log_interval: int = 1_000
    tensorboard: bool = True
    progress_bar: Optional[bool] = None
    objective: str = "best"
    stop_at_cap: int = 2

    def __post_init__(self) -> None:
        def _check(ok: bool, name: str, allowed: str) -> None:
            check(ok, "ScheduleConfig", name, getattr(self, name), allowed)

        _check(self.objective in OBJECTIVES, "objective", " or ".join(OBJECTIVES))
        _check(is_int(self.stop_at_cap) and self.stop_at_cap >= 0, "stop_at_cap", "an integer >= 0 (0: never)")

        for name in ("max_timesteps", "checkpoint_freq", "eval_episodes", "log_interval"):
            _check(is_int(getattr(self, name)) and getattr(self, name) > 0, name, "an integer > 0")
        _check(
            is_int(self.target_window) and 1 <= self.target_window <= EPISODE_WINDOW,
            "target_window",
            f"an integer from 1 to {EPISODE_WINDOW} (SB3 keeps the last {EPISODE_WINDOW} episodes)",
        )
        _check(
            self.target_lines is None or (is_int(self.target_lines) and self.target_lines > 0),
            "target_lines",
            "null (no goal) or an integer > 0",
        )
        _check(is_int(self.keep_last) and self.keep_last >= 1, "keep_last", "an integer >= 1")
        _check(is_int(self.eval_freq) and self.eval_freq >= 0, "eval_freq", "an integer >= 0 (0: only at the end)")
        _check(is_int(self.eval_seed) and self.eval_seed >= 0, "eval_seed", "an integer >= 0")
        _check(
            self.eval_max_pieces is None or (is_int(self.eval_max_pieces) and self.eval_max_pieces > 0),
            "eval_max_pieces",
            "null (the env's max_pieces) or an integer > 0",
        )
        path = PurePosixPath(self.checkpoint_dir) if isinstance(self.checkpoint_dir, str) else None
        inside = path is not None and not path.is_absolute() and ".." not in path.parts
        _check(
            inside and self.checkpoint_dir.strip() != "",
            "checkpoint_dir",
            "a folder inside the run folder, e.g. checkpoints (not absolute, no ..)",
        )


# The seed plan named these at the top level; they live in a group now and read through to it.
_FLAT_NAMES = {f.name: "agent" for f in fields(AgentConfig)} | {
    "target_lines": "schedule",
    "max_timesteps": "schedule",
    "checkpoint_dir": "schedule",
    "checkpoint_freq": "schedule",
}


@dataclass
class TrainingConfig:
    """Everything a training run needs.

    Attributes:
        seed: seeds the agent, the environment and exploration.
        resume: a run or checkpoint folder to continue training from.
        rerun: a run folder whose config this run repeats (with another seed=, say).
    """

    agent: AgentConfig = field(default_factory=AgentConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    seed: int = 0
    resume: Optional[str] = None
    rerun: Optional[str] = None

    def __post_init__(self) -> None:
        check(
            is_int(self.seed) and 0 <= self.seed < 2**32,
            "TrainingConfig",
            "seed",
            self.seed,
            "an integer from 0 to 2**32 - 1",
        )
        check(
            self.resume is None or (isinstance(self.resume, str) and self.resume.strip() != ""),
            "TrainingConfig",
            "resume",
            self.resume,
            "null or a run folder or checkpoint folder",
        )
        check(
            self.rerun is None or (isinstance(self.rerun, str) and self.rerun.strip() != ""),
            "TrainingConfig",
            "rerun",
            self.rerun,
            "null or a run folder",
        )
        if self.agent.policy == "afterstate" and self.env.observation != "afterstates":
            raise ConfigError(
                "AgentConfig",
                "policy",
                self.agent.policy,
                f"MlpPolicy with env.observation={self.env.observation} (the afterstate policy needs afterstates)",
            )
        if self.agent.expected_target and (
            self.agent.policy != "afterstate" or self.env.randomizer != "uniform" or self.env.preview != 0
        ):
            raise ConfigError(
                "AgentConfig",
                "expected_target",
                self.agent.expected_target,
                "false, or true with agent.policy=afterstate, env.randomizer=uniform and env.preview=0 (the "
                "next piece any of the seven, equally likely: env=classic_small or env=classic); here "
                f"agent.policy={self.agent.policy}, env.randomizer={self.env.randomizer}, "
                f"env.preview={self.env.preview}",
            )
        # configs built from plain dicts (from_dict, OmegaConf.to_object) arrive as dataclasses already
        if self.agent.learning_starts >= self.schedule.max_timesteps:
            raise ConfigError(
                "AgentConfig",
                "learning_starts",
                self.agent.learning_starts,
                f"fewer than schedule.max_timesteps={self.schedule.max_timesteps}, or the run never learns",
            )

    def __getattr__(self, name: str) -> Any:
        group = _FLAT_NAMES.get(name)
        if group is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(getattr(self, group), name)

    def evaluation_env(self) -> EnvConfig:
        """The game evaluations during training play: the run's, its games ended at
        ``schedule.eval_max_pieces`` pieces where the env's own cap is higher."""
        cap = self.schedule.eval_max_pieces
        if cap is None or cap >= self.env.max_pieces:
            return self.env
        return replace(self.env, max_pieces=cap)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["agent"]["net_arch"] = list(self.agent.net_arch)
        data["env"]["line_rewards"] = list(self.env.line_rewards)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Build from ``to_dict`` output; the seed plan's flat names (``learning_rate=...``) go to their group."""
        groups = {"agent": AgentConfig, "env": EnvConfig, "schedule": ScheduleConfig}
        nested: dict[str, dict[str, Any]] = {name: dict(data.get(name) or {}) for name in groups}
        top: dict[str, Any] = {}
        allowed = sorted({f.name for f in fields(cls)} | set(_FLAT_NAMES))
        for key, value in data.items():
            if key in groups:
                continue
            if key in _FLAT_NAMES:
                nested[_FLAT_NAMES[key]][key] = value
            elif key in {f.name for f in fields(cls)}:
                top[key] = value
            else:
                raise ValueError(f"TrainingConfig has no field {key!r}; allowed: {', '.join(allowed)}")
        built = {}
        for name, klass in groups.items():
            known = {f.name for f in fields(klass)}
            unknown = sorted(set(nested[name]) - known)
            if unknown:
                raise ValueError(f"{name} has no field {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
            built[name] = klass(**nested[name])
        return cls(**built, **top)


# Keys added after runs were first saved, with the value that does what runs saved without them did.
_KEYS_ADDED = {
    "agent": {"learning_rate_end": None, "double_q": False, "n_steps": 1, "loss": "huber", "expected_target": False},
    "env": {"randomizer": "bag", "hole_features": False},
    "schedule": {"eval_max_pieces": None, "objective": "best", "stop_at_cap": 0},
}


def complete_saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A config dict saved by an earlier version (a checkpoint's or a run folder's), with the keys it
    predates set to what that version did, so that it means the run it describes."""
    for group, added in _KEYS_ADDED.items():
        section = saved.get(group)
        if isinstance(section, dict):
            for key, value in added.items():
                section.setdefault(key, value)
    return saved


def register_configs() -> None:
    """Register the dataclasses in Hydra's ConfigStore as the schema of ``conf/``."""
    from hydra.core.config_store import ConfigStore

    from .sweeps import register_resolvers

    store = ConfigStore.instance()
    store.store(name="training_schema", node=TrainingConfig)
    register_resolvers()
