"""Writes the checkpoints of earlier formats that tests/test_checkpoints.py loads.

They were made with tetris-train at commit 7507b01 (checkpoint format 3, pickled files), with
torch 2.13.0 and numpy 2.4: ``python tests/data/make_legacy_checkpoints.py tests/data/legacy``.
Each folder holds a checkpoint taken after ``FIRST`` steps and, in ``expected_parameters.npy``,
the network's parameters after ``SECOND`` more steps trained from it by that version: a converted
checkpoint must continue to exactly these.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TetrisAgent, TrainingConfig
from tetris_train import agent as agent_module
from tetris_train.afterstate import AfterstateDQN
from tetris_train.env import make_env

FIRST, SECOND = 300, 200


def config(policy: str = "afterstate", observation: str = "afterstates") -> TrainingConfig:
    return TrainingConfig(
        agent=AgentConfig(
            policy=policy,
            buffer_size=400,
            learning_starts=100,
            batch_size=16,
            net_arch=(16,),
            target_update_interval=50,
        ),
        env=EnvConfig(width=6, height=12, max_pieces=40, observation=observation),
        schedule=ScheduleConfig(max_timesteps=FIRST + SECOND),
        seed=5,
    )


class SB3BufferDQN(AfterstateDQN):
    """The afterstate model as format 1 saved it: with SB3's ReplayBuffer of whole observations."""

    def __init__(self, policy, env, *args, **kwargs):
        kwargs["replay_buffer_class"] = ReplayBuffer
        super().__init__(policy, env, *args, **kwargs)


def parameters(agent: TetrisAgent) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in agent.model.policy.parameters()]).numpy()


def make(folder: Path, cfg: TrainingConfig, form: int) -> None:
    if form == 1:
        cfg.agent.learning_rate_end = None
        cfg.agent.double_q = False
        agent_module.AfterstateDQN = SB3BufferDQN
    try:
        agent = TetrisAgent(make_env(cfg.env)(), cfg)
    finally:
        agent_module.AfterstateDQN = AfterstateDQN
    agent.train(FIRST)
    checkpoint = agent.save_checkpoint(folder / "checkpoint")
    if form == 1:
        metadata = json.loads((checkpoint / "metadata.json").read_text())
        metadata["format"] = 1
        del metadata["config"]["agent"]["learning_rate_end"], metadata["config"]["agent"]["double_q"]
        (checkpoint / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    loaded = TetrisAgent.load_checkpoint(checkpoint, make_env(cfg.env)())
    loaded.train(SECOND)
    np.save(folder / "expected_parameters.npy", parameters(loaded))


if __name__ == "__main__":
    root = Path(sys.argv[1])
    shutil.rmtree(root, ignore_errors=True)
    make(root / "format3", config(), 3)
    make(root / "format3_mlp", config("MlpPolicy", "board"), 3)
    make(root / "format1", config(), 1)
