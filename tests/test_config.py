"""The config schema, Hydra composition of every group option, and overrides."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TrainingConfig
from tetris_train.config import complete_saved_config, register_configs
from tetris_train.validation import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
SEED_DEFAULTS = {
    "learning_rate": 1e-4,
    "buffer_size": 100_000,
    "batch_size": 64,
    "gamma": 0.99,
    "exploration_fraction": 0.2,
    "exploration_initial_eps": 1.0,
    "exploration_final_eps": 0.05,
    "target_update_interval": 1000,
    "train_freq": 4,
    "gradient_steps": 1,
    "learning_starts": 10_000,
    "net_arch": (256, 256),
    "double_q": False,
}


def compose_config(*overrides: str) -> TrainingConfig:
    register_configs()
    with initialize_config_module(version_base="1.3", config_module="tetris_train.conf"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


def group_options():
    return [
        (group.name, option.stem)
        for group in sorted(CONF.iterdir())
        if group.is_dir()
        for option in sorted(group.glob("*.yaml"))
    ]


def test_schedule_defaults_are_the_seed_plans():
    config = TrainingConfig()
    assert config.schedule.target_lines is None and config.target_lines is None
    assert config.schedule.max_timesteps == 500_000 and config.max_timesteps == 500_000
    assert config.schedule.checkpoint_freq == 10_000
    assert not Path(config.schedule.checkpoint_dir).is_absolute()


def test_seed_plan_names_read_through_to_their_group():
    config = TrainingConfig()
    for name in SEED_DEFAULTS:
        assert getattr(config, name) == getattr(config.agent, name), name


def test_defaults_that_differ_from_the_seed_plan_are_the_documented_ones():
    agent = AgentConfig()
    changed = {name for name, value in SEED_DEFAULTS.items() if getattr(agent, name) != value}
    readme = (CONF.parent / "README.md").read_text()
    for name in changed | {"policy"}:
        assert f"`{name}`" in readme, f"README does not explain the default of {name}"


def test_default_composition_equals_the_schema():
    assert compose_config() == TrainingConfig()


def test_every_group_has_a_default_and_an_alternative():
    options = group_options()
    for group in ("agent", "env", "schedule"):
        names = [name for g, name in options if g == group]
        assert "default" in names and len(names) >= 2, group


# options made for one game, composed with it
PARTNERS = {("agent", "classic"): ["env=classic_small"]}


@pytest.mark.parametrize("group, option", group_options())
def test_every_group_option_composes(group, option):
    config = compose_config(f"{group}={option}", *PARTNERS.get((group, option), []))
    assert isinstance(config, TrainingConfig)
    assert isinstance(config.agent, AgentConfig) and isinstance(config.env, EnvConfig)


def test_seed_option_pins_the_seed_plan():
    agent = compose_config("agent=seed").agent
    for name, value in SEED_DEFAULTS.items():
        assert getattr(agent, name) == value, name


def test_smoke_schedule_is_short_and_learns():
    config = compose_config("schedule=smoke")
    assert config.schedule.max_timesteps <= 5_000
    assert config.agent.learning_starts < config.schedule.max_timesteps


def test_overrides_reach_the_dataclasses():
    config = compose_config(
        "agent.learning_rate=3e-4", "agent.net_arch=[64,32]", "env.width=8", "schedule.target_lines=100", "seed=7"
    )
    assert config.agent.learning_rate == 3e-4 and config.agent.net_arch == (64, 32)
    assert config.env.width == 8 and config.schedule.target_lines == 100 and config.seed == 7


def test_to_dict_from_dict_round_trip():
    config = TrainingConfig(
        agent=AgentConfig(net_arch=(32,), gamma=0.9),
        env=EnvConfig(width=6, preview=2),
        schedule=ScheduleConfig(target_lines=100),
        seed=5,
    )
    data = config.to_dict()
    assert data["agent"]["net_arch"] == [32]
    assert TrainingConfig.from_dict(data) == config
    assert OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainingConfig), data)) == config


def test_from_dict_takes_the_seed_plans_flat_names():
    config = TrainingConfig.from_dict(
        {"target_lines": 100, "learning_rate": 3e-4, "max_timesteps": 1000, "learning_starts": 10}
    )
    assert config.target_lines == 100 and config.schedule.target_lines == 100
    assert config.agent.learning_rate == 3e-4 and config.schedule.max_timesteps == 1000
    with pytest.raises(ValueError, match="no field 'learnin_rate'"):
        TrainingConfig.from_dict({"learnin_rate": 1})
    with pytest.raises(AttributeError):
        _ = TrainingConfig().learnin_rate


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: AgentConfig(gamma=0), "gamma"),
        (lambda: AgentConfig(gamma=1.5), "gamma"),
        (lambda: AgentConfig(exploration_final_eps=-0.1), "exploration_final_eps"),
        (lambda: AgentConfig(exploration_initial_eps=1.1), "exploration_initial_eps"),
        (lambda: AgentConfig(buffer_size=0), "buffer_size"),
        (lambda: AgentConfig(batch_size=-1), "batch_size"),
        (lambda: AgentConfig(learning_starts=-1), "learning_starts"),
        (lambda: AgentConfig(learning_rate=0), "learning_rate"),
        (lambda: AgentConfig(net_arch=()), "net_arch"),
        (lambda: AgentConfig(policy="CnnPolicy"), "policy"),
        (lambda: AgentConfig(device="tpu"), "device"),
        (lambda: ScheduleConfig(max_timesteps=0), "max_timesteps"),
        (lambda: ScheduleConfig(keep_last=0), "keep_last"),
        (lambda: ScheduleConfig(target_lines=0), "target_lines"),
        (lambda: TrainingConfig(seed=-1), "seed"),
        (lambda: TrainingConfig(schedule=ScheduleConfig(max_timesteps=100)), "learning_starts"),
    ],
)
def test_ranges_are_checked(make, field):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.field == field
    assert f".{field}=" in str(err.value) and "expected" in str(err.value)


def test_configs_saved_before_a_key_existed_mean_what_they_did():
    saved = TrainingConfig().to_dict()
    del saved["agent"]["double_q"], saved["agent"]["learning_rate_end"], saved["agent"]["loss"]
    completed = TrainingConfig.from_dict(complete_saved_config(saved)).agent
    assert completed.double_q is False and completed.learning_rate_end is None  # plain targets, a constant rate
    assert completed.loss == "huber"
    kept = TrainingConfig().to_dict()
    assert complete_saved_config(kept)["agent"]["double_q"] is True  # a saved value stays
