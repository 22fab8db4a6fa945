"""TetrisAgent: checkpoints that hold the whole training state, crash-safe, resuming exactly."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TetrisAgent, TrainingConfig
from tetris_train.checkpoints import CheckpointError, read_metadata
from tetris_train.env import make_env
from tetris_train.replay import AfterstateReplayBuffer
from tetris_train.run_folder import CheckpointStore, find_checkpoints, resolve_checkpoint

N = 1200  # steps of the short runs below: a multiple of train_freq


def small_config(**schedule) -> TrainingConfig:
    return TrainingConfig(
        agent=AgentConfig(
            buffer_size=2_000,
            learning_starts=200,
            batch_size=32,
            net_arch=(32, 32),
            target_update_interval=100,
            exploration_fraction=0.8,
        ),
        env=EnvConfig(max_pieces=60),
        schedule=ScheduleConfig(max_timesteps=N, **schedule),
        seed=3,
    )


def parameters(agent: TetrisAgent) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in agent.model.policy.parameters()]).numpy()


def optimizer_moments(agent: TetrisAgent) -> list[np.ndarray]:
    state = agent.model.policy.optimizer.state_dict()["state"]
    return [v.numpy().copy() for s in state.values() for k, v in sorted(s.items()) if torch.is_tensor(v)]


def test_training_as_a_library_writes_nothing_outside_its_run(tmp_path, monkeypatch):
    """Without a logger of the caller's, records go nowhere: no folder under the temp directory,
    where SB3's default logger makes one at every learn(), for an agent new or loaded."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    (tmp_path / "temp").mkdir()
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config).train(300)
    saved = agent.save_checkpoint(tmp_path / "checkpoint")
    TetrisAgent.load_checkpoint(saved, make_env(config.env)()).train(300)
    assert [p.name for p in (tmp_path / "temp").glob("SB3-*")] == []


def test_agent_builds_dqn_from_the_config():
    from stable_baselines3 import DQN

    from tetris_train.afterstate import AfterstatePolicy

    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    model = agent.model
    assert isinstance(model, DQN) and isinstance(model.policy, AfterstatePolicy)
    assert model.gamma == config.agent.gamma
    # the learning rate falls linearly from learning_rate to learning_rate_end over the planned run
    assert model.lr_schedule(1.0) == config.agent.learning_rate and model.lr_schedule(0.0) == 0.0
    assert model.buffer_size == 2_000 and model.batch_size == 32 and model.learning_starts == 200
    assert model.target_update_interval == 100 and model.train_freq.frequency == 4
    sizes = [m.out_features for m in model.q_net.q_net if isinstance(m, torch.nn.Linear)]
    assert sizes == [32, 32, 1]  # one shared MLP scoring each action's row
    assert agent.timesteps_trained == 0
    action, _ = agent.predict(make_env(config.env)().reset(seed=0)[0])
    assert 0 <= int(action) < 40


def test_mlp_policy_on_the_board_observation():
    config = small_config()
    config.agent.policy = "MlpPolicy"
    config.env.observation = "board"
    agent = TetrisAgent(make_env(config.env)(), config)
    sizes = [m.out_features for m in agent.model.q_net.q_net if isinstance(m, torch.nn.Linear)]
    assert sizes == [32, 32, 40]  # SB3's stock network: one output per action
    agent.train(300)
    assert agent.timesteps_trained == 300


def test_checkpoint_round_trip(tmp_path):
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(600)
    path = agent.save_checkpoint(tmp_path / "ckpt")
    names = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    chunks = [f"replay/{a}.00000.npy.zst" for a in AfterstateReplayBuffer._ARRAYS]  # 600 of a 4,096 chunk
    assert names == sorted(["metadata.json", "model.zip", "state.json", "state.npz", "replay/buffer.json", *chunks])
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["timesteps_trained"] == metadata["num_timesteps"] == 600
    assert TrainingConfig.from_dict(metadata["config"]) == config
    assert {"tetris_train", "stable_baselines3", "torch", "gymnasium"} <= set(metadata["versions"])
    assert "time" in metadata

    loaded = TetrisAgent.load_checkpoint(path, make_env(config.env)())
    assert loaded.config == config and loaded.timesteps_trained == 600
    np.testing.assert_array_equal(parameters(loaded), parameters(agent))
    for a, b in zip(optimizer_moments(loaded), optimizer_moments(agent), strict=True):
        np.testing.assert_array_equal(a, b)
    old, new = agent.model.replay_buffer, loaded.model.replay_buffer
    assert new.pos == old.pos == 600 and new.full == old.full
    for field in ("taken_rows", "next_observations", "next_action_masks", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(new, field)[:600], getattr(old, field)[:600])
    np.testing.assert_array_equal(loaded.model._last_obs, agent.model._last_obs)


def test_resume_continues_timesteps_and_exploration(tmp_path):
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(400)
    eps_at_400 = agent.model.exploration_rate
    assert config.agent.exploration_final_eps < eps_at_400 < 1.0  # still decaying: 80 % of 1200 steps
    agent.save_checkpoint(tmp_path / "ckpt")
    loaded = TetrisAgent.load_checkpoint(tmp_path / "ckpt", make_env(config.env)())
    assert loaded.model.num_timesteps == 400 and loaded.model.exploration_rate == eps_at_400
    episodes = loaded.model._episode_num
    loaded.train(400)
    assert loaded.timesteps_trained == loaded.model.num_timesteps == 800
    assert loaded.model._episode_num > episodes
    # ε carries on down its schedule over the planned 1200 steps instead of restarting at 1.0
    a = config.agent
    expected = a.exploration_initial_eps + (a.exploration_final_eps - a.exploration_initial_eps) * 800 / (0.8 * N)
    assert loaded.model.exploration_rate == pytest.approx(expected, abs=1e-6)


SECOND_HALF = textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from tetris_train import TetrisAgent
    from tetris_train.env import make_env
    from tetris_train.checkpoints import CheckpointError, read_metadata
    from tetris_train.config import TrainingConfig
    config = TrainingConfig.from_dict(read_metadata(sys.argv[1])["config"])
    agent = TetrisAgent.load_checkpoint(sys.argv[1], make_env(config.env)())
    agent.train(int(sys.argv[2]))
    np.save(sys.argv[3], torch.cat([p.detach().flatten() for p in agent.model.policy.parameters()]).numpy())
    """
)


def test_split_training_in_a_new_process_is_bit_identical(tmp_path):
    config = small_config()
    one_go = TetrisAgent(make_env(config.env)(), config)
    one_go.train(N)

    first_half = TetrisAgent(make_env(config.env)(), config)
    first_half.train(N // 2)
    first_half.save_checkpoint(tmp_path / "half")
    script = tmp_path / "second_half.py"
    script.write_text(SECOND_HALF)
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "half"), str(N // 2), str(tmp_path / "p.npy")],
        check=True,
        timeout=300,
    )
    split = np.load(tmp_path / "p.npy")
    assert split.shape == parameters(one_go).shape
    assert np.array_equal(split, parameters(one_go)), f"max difference {np.abs(split - parameters(one_go)).max()}"


KILLED_WHILE_WRITING = textwrap.dedent(
    """
    import os, signal, sys
    from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TetrisAgent, TrainingConfig
    from tetris_train.env import make_env
    config = TrainingConfig(agent=AgentConfig(buffer_size=500, learning_starts=50, net_arch=(16,)),
                            env=EnvConfig(max_pieces=40), schedule=ScheduleConfig(max_timesteps=400))
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(100)
    agent.save_checkpoint(sys.argv[1])
    agent.train(100)
    from tetris_train import checkpoints
    original = checkpoints._write_replay
    def die_halfway(*args):
        original(*args)
        os.kill(os.getpid(), signal.SIGKILL)
    checkpoints._write_replay = die_halfway
    agent.save_checkpoint(sys.argv[2])
    """
)


@pytest.mark.parametrize("same_name", [False, True])
def test_sigkill_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path, same_name):
    folder = tmp_path / "checkpoints"
    first, second = folder / "step_0000000100", folder / ("step_0000000100" if same_name else "step_0000000200")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_WHILE_WRITING)
    result = subprocess.run([sys.executable, str(script), str(first), str(second)], timeout=300)
    assert result.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".") for p in folder.iterdir())  # the half-written one, hidden
    assert [p for _, p in find_checkpoints(folder)] == [first]
    assert resolve_checkpoint(tmp_path) == first
    assert read_metadata(first)["num_timesteps"] == 100
    config = TrainingConfig.from_dict(read_metadata(first)["config"])
    agent = TetrisAgent.load_checkpoint(first, make_env(config.env)())
    assert agent.timesteps_trained == 100
    # the next save cleans up what the killed process left
    CheckpointStore(tmp_path, "checkpoints", keep_last=2).save_periodic(agent)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_store_keeps_the_newest_periodic_checkpoints_and_named_ones(tmp_path):
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    store = CheckpointStore(tmp_path, "checkpoints", keep_last=2)
    for _ in range(4):
        agent.train(100)
        store.save_periodic(agent)
    store.save_named(agent, "final")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["final", "step_0000000300", "step_0000000400"]
    assert read_metadata(tmp_path / "checkpoints" / "final")["run_dir"] == str(tmp_path)


def test_resolve_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint there"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        TetrisAgent.load_checkpoint(tmp_path, make_env()())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        resolve_checkpoint(broken)
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.save_checkpoint(broken)
    (broken / "state.npz").unlink()
    with pytest.raises(CheckpointError, match="state.npz missing"):
        resolve_checkpoint(broken)


def test_loading_into_a_different_env_is_refused(tmp_path):
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.save_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="[Oo]bservation spaces do not match"):
        TetrisAgent.load_checkpoint(tmp_path / "ckpt", make_env(EnvConfig(width=8))())


def test_a_checkpoint_swapped_out_by_a_killed_replace_is_still_found(tmp_path):
    """Replacing ``final`` renames it aside before moving the new one in; a crash between the two
    renames must not lose it."""
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(100)
    store = CheckpointStore(tmp_path, "checkpoints", keep_last=2)
    final = store.save_named(agent, "final")
    aside = final.parent / f".final.old-{os.getpid() + 1}"
    os.rename(final, aside)  # the state a crash between the renames leaves
    assert [p for _, p in find_checkpoints(final.parent)] == [aside]
    assert resolve_checkpoint(tmp_path) == aside
    TetrisAgent.load_checkpoint(aside, make_env(config.env)())
    # once final exists again, the swapped-out copy is no longer listed, and the next save removes it
    shutil.copytree(aside, final)
    assert [p for _, p in find_checkpoints(final.parent)] == [final]
    store.save_periodic(agent)
    assert not aside.exists()


def test_resume_can_change_the_device(tmp_path, monkeypatch):
    from tetris_train.afterstate import AfterstateDQN

    config = small_config()
    TetrisAgent(make_env(config.env)(), config).save_checkpoint(tmp_path / "ckpt")
    seen = {}
    original = AfterstateDQN.load.__func__

    def spy(cls, *args, **kwargs):
        seen["device"] = kwargs.get("device")
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AfterstateDQN, "load", classmethod(spy))
    TetrisAgent.load_checkpoint(tmp_path / "ckpt", make_env(config.env)(), device="cpu")
    assert seen["device"] == "cpu"
    TetrisAgent.load_checkpoint(tmp_path / "ckpt", make_env(config.env)())
    assert seen["device"] == config.agent.device


def test_the_memory_check_counts_the_afterstate_buffer(monkeypatch):
    from tetris_train.replay import check_memory
    from tetris_train.validation import ConfigError

    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2 * 2**30 // 4096}  # a 2 GiB machine
    monkeypatch.setattr("os.sysconf", lambda name: pages[name])
    check_memory(TrainingConfig())  # the default 500,000 transitions: 1.2 GB (SB3's buffer: 4.2 GiB)
    with pytest.raises(ConfigError, match="buffer_size"):
        check_memory(TrainingConfig(agent=AgentConfig(buffer_size=1_000_000)))
