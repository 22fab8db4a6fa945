"""Expected TD targets (agent.expected_target): every piece's afterstates, stored and averaged."""

import copy

import numpy as np
import pytest
import torch

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TetrisAgent, TrainingConfig
from tetris_train.env import TetrisEnv, make_env
from tetris_train.env.pieces import N_PIECES, every_piece_rows, every_placement
from tetris_train.validation import ConfigError

from .test_config import compose_config


def uniform(**overrides) -> EnvConfig:
    return EnvConfig(randomizer="uniform", preview=0, **overrides)


def played(env: TetrisEnv, steps: int, seed: int):
    """The env after ``steps`` random placements (a new game where one ends), and the last info."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if terminated or truncated:
            obs, info = env.reset()
    return info


@pytest.mark.parametrize("hole_features", [False, True])
def test_every_piece_afterstates_are_the_rows_each_piece_would_be_shown(hole_features):
    env = TetrisEnv(uniform(width=10, height=12, hole_features=hole_features))
    pieces, actions = every_placement(env.width)
    assert len(pieces) == 162 and sorted(np.bincount(pieces)) == [9, 17, 17, 17, 34, 34, 34]
    for seed in range(4):
        played(env, 25 + 10 * seed, seed)
        rows = env.every_piece_afterstates()
        state = env.get_state()
        for piece in range(N_PIECES):
            env.set_state({**state, "current": piece})
            shown = env.observe()
            assert np.array_equal(rows[pieces == piece], shown[actions[pieces == piece]])


def test_each_step_reports_every_piece_only_when_asked():
    env = TetrisEnv(uniform(height=10))
    assert "every_piece_afterstates" not in played(env, 5, 0)
    env.report_every_piece()
    info = played(env, 5, 0)
    assert np.array_equal(info["every_piece_afterstates"], env.every_piece_afterstates())
    for game in (EnvConfig(randomizer="uniform", preview=1), EnvConfig(preview=0)):  # a preview; the 7-bag
        with pytest.raises(ValueError, match="env.preview=0 and env.randomizer=uniform"):
            TetrisEnv(game).report_every_piece()


def test_piece_rows_list_each_pieces_placements_padded_with_a_repeat():
    pieces = every_placement(10)[0]
    index = every_piece_rows(10)
    assert index.shape == (N_PIECES, 34)
    for piece in range(N_PIECES):
        own = np.flatnonzero(pieces == piece)
        assert np.array_equal(np.unique(index[piece]), own)
        assert np.array_equal(index[piece, : len(own)], own) and (index[piece, len(own) :] == own[0]).all()


def small_config(expected_target=True, double_q=True, n_steps=1, **env) -> TrainingConfig:
    return TrainingConfig(
        agent=AgentConfig(
            buffer_size=1_000,
            learning_starts=100,
            batch_size=32,
            net_arch=(16,),
            expected_target=expected_target,
            double_q=double_q,
            n_steps=n_steps,
        ),
        env=uniform(width=10, height=10, max_pieces=60, **env),
        schedule=ScheduleConfig(max_timesteps=2_000),
        seed=3,
    )


def test_the_buffer_keeps_every_pieces_rows_exactly_and_needs_the_env_to_report_them():
    agent = TetrisAgent(make_env(small_config().env)(), small_config()).train(300)
    buffer = agent.model.replay_buffer
    env = agent.model.get_env().envs[0].unwrapped
    n_features = env.observation_space.shape[1]
    assert buffer.every_piece and buffer.next_observations.shape[2:] == (162, n_features)
    sample = buffer.sample(64)
    assert sample.next_observations.shape == (64, 162, n_features) and sample.next_action_masks.shape == (64, 0)
    # the rows stored are the env's, decoded bit for bit: the last transition's board is the env's now
    last = (buffer.pos - 1) % buffer.buffer_size
    assert not buffer.dones[last, 0] and env.get_state()["pieces"] > 0
    stored = buffer.decode(buffer.next_observations[last, 0])
    assert np.array_equal(stored, env.every_piece_afterstates()) and stored.any()
    with pytest.raises(ValueError, match="report_every_piece"):
        obs = env.observe()
        buffer.add(obs[None], obs[None], np.array([[0]]), np.array([0.0]), np.array([False]), [{}])


def expected_update_by_hand(twin, batch, double_q):
    """One update of ``twin`` with the expected target computed piece by piece, row by row."""
    pieces = torch.as_tensor(every_placement(10)[0])
    with torch.no_grad():
        values = []
        for piece in range(N_PIECES):
            rows = batch.next_observations[:, pieces == piece]  # (batch, placements, features)
            online = twin.q_net.q_net(rows).squeeze(-1)
            target = twin.q_net_target.q_net(rows).squeeze(-1)
            if double_q:
                values.append(target.gather(1, online.argmax(dim=1, keepdim=True)).squeeze(1))
            else:
                values.append(target.max(dim=1).values)
        values = torch.stack(values, dim=1)  # (batch, pieces)
        assert not torch.allclose(values[:, 0], values[:, 4])  # the pieces' values differ: the mean matters
        discounts = twin.gamma if batch.discounts is None else batch.discounts
        target = batch.rewards + (1 - batch.dones) * discounts * values.mean(dim=1, keepdim=True)
    current = twin.q_net.q_net(batch.taken_rows)
    error = torch.nn.functional.smooth_l1_loss(current, target)
    twin.policy.optimizer.zero_grad()
    error.backward()
    torch.nn.utils.clip_grad_norm_(twin.policy.parameters(), twin.max_grad_norm)
    twin.policy.optimizer.step()


@pytest.mark.parametrize("double_q, n_steps", [(True, 1), (False, 1), (True, 3)])
def test_the_expected_target_is_the_mean_over_pieces_of_each_pieces_best_placement(double_q, n_steps):
    config = small_config(double_q=double_q, n_steps=n_steps)
    model = TetrisAgent(make_env(config.env)(), config).train(400).model
    with torch.no_grad():  # make the two networks disagree
        for p in model.q_net_target.parameters():
            p.add_(0.5 * torch.randn_like(p))
    twin = copy.deepcopy(model)
    state = np.random.get_state()
    model.train(gradient_steps=1, batch_size=64)
    np.random.set_state(state)
    expected_update_by_hand(twin, twin.replay_buffer.sample(64), double_q)
    for a, b in zip(model.policy.parameters(), twin.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_expected_targets_resume_exactly(tmp_path):
    config = small_config()
    one_go = TetrisAgent(make_env(config.env)(), config).train(600)
    half = TetrisAgent(make_env(config.env)(), config).train(300)
    half.save_checkpoint(tmp_path / "half")
    resumed = TetrisAgent.load_checkpoint(tmp_path / "half", make_env(config.env)())
    assert resumed.model.expected_target and resumed.model.replay_buffer.every_piece
    resumed.train(300)
    for a, b in zip(one_go.model.policy.parameters(), resumed.model.policy.parameters(), strict=True):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())


def test_a_buffer_without_every_pieces_rows_is_refused_in_one_line():
    config = small_config()
    model = TetrisAgent(make_env(config.env)(), config).train(200).model
    model.replay_buffer.every_piece = False
    with pytest.raises(ValueError, match="every_piece=True"):
        model.train(gradient_steps=1, batch_size=16)


def test_a_checkpoint_trained_with_expected_targets_plays_without_an_env(tmp_path):
    from tetris_train.agent import load_model
    from tetris_train.evaluation import evaluate, model_policy

    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config).train(300)
    agent.save_checkpoint(tmp_path / "ckpt")
    model = load_model(tmp_path / "ckpt", device="cpu")
    assert model.expected_target and model.get_env() is None
    obs = TetrisEnv(config.env).reset(seed=0)[0]
    assert np.array_equal(model.predict(obs)[0], agent.model.predict(obs)[0])
    assert evaluate(model_policy(model), config.env, 2, seed=5)["episodes"] == 2


@pytest.mark.parametrize(
    "overrides, named",
    [
        ((), "env.randomizer=bag"),  # the default game: 7-bag, a preview
        (("env=classic_small", "env.preview=1"), "env.preview=1"),
        (("env=classic_small", "agent.policy=MlpPolicy", "env.observation=board"), "agent.policy=MlpPolicy"),
    ],
)
def test_expected_targets_need_uniform_pieces_without_preview(overrides, named):
    with pytest.raises(ConfigError, match="expected_target") as error:
        compose_config("agent.expected_target=true", *overrides)
    assert named in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("env", ["classic", "classic_small"])
def test_the_classic_preset_composes_with_the_classic_games(env):
    config = compose_config(f"env={env}", "agent=classic", "schedule=classic")
    assert config.agent.expected_target and config.env.randomizer == "uniform" and config.env.preview == 0
    assert config.env.line_rewards == (0, 10, 20, 30, 40)  # one reward per line
    assert config.agent.double_q == compose_config().agent.double_q  # otherwise the default agent
