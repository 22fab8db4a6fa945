"""The checkpoint format: replay chunks written once and shared, nothing unpickled, damage found
and survived, earlier formats read and continued exactly."""

import base64
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tetris_train import AgentConfig, EnvConfig, ScheduleConfig, TetrisAgent, TrainingConfig, checkpoints
from tetris_train.checkpoints import CheckpointError, read_metadata, verify_checkpoint
from tetris_train.env import make_env
from tetris_train.run_folder import CheckpointStore, resolve_checkpoint

LEGACY = Path(__file__).parent / "data" / "legacy"


def small_config(policy: str = "afterstate", buffer_size: int = 1_000, **schedule) -> TrainingConfig:
    return TrainingConfig(
        agent=AgentConfig(
            policy=policy,
            buffer_size=buffer_size,
            learning_starts=100,
            batch_size=16,
            net_arch=(16,),
            target_update_interval=50,
        ),
        env=EnvConfig(
            width=6, height=12, max_pieces=40, observation="afterstates" if policy == "afterstate" else "board"
        ),
        schedule=ScheduleConfig(max_timesteps=2_000, **schedule),
        seed=2,
    )


def parameters(agent: TetrisAgent) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in agent.model.policy.parameters()]).numpy()


def replay_arrays(agent: TetrisAgent) -> dict[str, np.ndarray]:
    buffer = agent.model.replay_buffer
    return {name: getattr(buffer, name).copy() for name in checkpoints.REPLAY_ARRAYS[type(buffer).__name__]}


def chunk_files(path: Path) -> list[Path]:
    return sorted((path / "replay").glob("*.npy.zst"))


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(checkpoints, "CHUNK", 64)


# -- replay chunks: written once, shared by link ----------------------------------------------------


@pytest.mark.parametrize("policy", ["afterstate", "MlpPolicy"])
def test_unchanged_chunks_are_linked_and_every_checkpoint_loads_whole(tmp_path, small_chunks, policy):
    config = small_config(policy, buffer_size=300)  # wraps around: 700 steps into 300 places
    agent = TetrisAgent(make_env(config.env)(), config)
    saved = []
    for step in range(5):
        agent.train(140)
        path = agent.save_checkpoint(tmp_path / f"c{step}")
        buffer = agent.model.replay_buffer
        saved.append((path, replay_arrays(agent), parameters(agent), (buffer.pos, buffer.full)))
    # between two checkpoints 140 transitions land in at most 4 of the 5 chunks of 64: one is linked
    previous, last = chunk_files(saved[-2][0]), chunk_files(saved[-1][0])
    shared = [a for a, b in zip(previous, last, strict=True) if os.path.samefile(a, b)]
    assert len(previous) == len(last) == 5 * len(checkpoints.REPLAY_ARRAYS[type(agent.model.replay_buffer).__name__])
    assert 0 < len(shared) < len(last)
    assert saved[-1][3][1]  # the last ones after the buffer wrapped around
    for path, arrays, params, position in saved:  # every checkpoint still holds its own state
        loaded = TetrisAgent.load_checkpoint(path, make_env(config.env)())
        assert (loaded.model.replay_buffer.pos, loaded.model.replay_buffer.full) == position
        for name, values in arrays.items():
            np.testing.assert_array_equal(getattr(loaded.model.replay_buffer, name), values, err_msg=name)
        np.testing.assert_array_equal(parameters(loaded), params)


def test_a_resumed_agent_links_the_chunks_it_loaded(tmp_path, small_chunks):
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(400)
    first = agent.save_checkpoint(tmp_path / "first")
    loaded = TetrisAgent.load_checkpoint(first, make_env(config.env)())
    loaded.train(20)  # lands in the chunk at 400 only
    second = loaded.save_checkpoint(tmp_path / "second")
    linked = [a.name for a, b in zip(chunk_files(first), chunk_files(second)) if os.path.samefile(a, b)]
    assert {name.split(".")[1] for name in linked} == {f"{i:05d}" for i in range(6)}  # chunks 0-5 of 0-6
    assert len(chunk_files(second)) == 7 * len(checkpoints.REPLAY_ARRAYS["AfterstateReplayBuffer"])


def test_store_checkpoints_share_files_and_the_run_writes_each_transition_about_once(tmp_path, small_chunks):
    config = small_config(buffer_size=2_000)
    agent = TetrisAgent(make_env(config.env)(), config)
    store = CheckpointStore(tmp_path, "checkpoints", keep_last=2)
    for _ in range(10):
        agent.train(100)
        store.save_periodic(agent)
    store.save_named(agent, "final")
    buffer_bytes = sum(
        entry["size"]
        for name, entry in read_metadata(tmp_path / "checkpoints" / "final")["files"].items()
        if name.endswith(".npy.zst")
    )
    replay_written = agent.replay_files.written_bytes
    # each transition is written once, and each checkpoint rewrites the chunk it ends in: 10 x 64 of 1,000
    assert buffer_bytes < replay_written < 1.8 * buffer_bytes
    on_disk = {(f.stat().st_ino) for f in (tmp_path / "checkpoints").rglob("*.npy.zst")}
    assert len(on_disk) < 1.3 * len(chunk_files(tmp_path / "checkpoints" / "final"))


# -- nothing in a checkpoint runs ---------------------------------------------------------------


class Payload:
    """Unpickling this creates the marker file: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload_bytes(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def rewrite_checksums(path: Path) -> None:
    """What an attacker would do: make metadata.json agree with the planted files."""
    metadata = json.loads((path / "metadata.json").read_text())
    for name, entry in metadata["files"].items():
        data = (path / name).read_bytes()
        entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (path / "metadata.json").write_text(json.dumps(metadata))


def plant(path: Path, name: str, marker: Path) -> None:
    """A payload in place of (or, in model.zip, inside) one file of a checkpoint."""
    target = path / name
    if name == "model.zip":
        with zipfile.ZipFile(target) as archive:
            entries = {n: archive.read(n) for n in archive.namelist()}
        data = json.loads(entries["data"])
        serialized = {":type:": "<class 'x'>", ":serialized:": base64.b64encode(payload_bytes(marker)).decode()}
        data["observation_space"] = serialized  # an entry SB3 would unpickle
        data["extra_entry"] = serialized
        entries["data"] = json.dumps(data).encode()
        with zipfile.ZipFile(target, "w") as archive:
            for entry, content in entries.items():
                archive.writestr(entry, content)
    elif name.endswith(".pth"):
        raise AssertionError
    elif name.endswith(".npy.zst"):
        import zstandard

        buffer = io.BytesIO()
        np.save(buffer, np.array([Payload(marker)], dtype=object), allow_pickle=True)
        target.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    elif name.endswith(".npz"):
        buffer = io.BytesIO()
        np.savez(buffer, a0=np.array([Payload(marker)], dtype=object))
        target.write_bytes(buffer.getvalue())
    else:
        target.write_bytes(payload_bytes(marker))


def plant_in_weights(path: Path, marker: Path) -> None:
    with zipfile.ZipFile(path / "model.zip") as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    entries["policy.pth"] = payload_bytes(marker)  # a pickle where torch's weights belong
    with zipfile.ZipFile(path / "model.zip", "w") as archive:
        for entry, content in entries.items():
            archive.writestr(entry, content)


def test_a_planted_payload_in_any_file_runs_nothing(tmp_path):
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(200)
    clean = agent.save_checkpoint(tmp_path / "clean")
    names = [*read_metadata(clean)["files"], "policy.pth"]
    assert len(names) > 10
    for i, name in enumerate(names):
        path, marker = tmp_path / f"planted{i}", tmp_path / f"ran{i}"
        shutil.copytree(clean, path)
        plant_in_weights(path, marker) if name == "policy.pth" else plant(path, name, marker)
        for checksums in ("as planted", "rewritten"):
            if checksums == "rewritten":
                rewrite_checksums(path)
            with pytest.raises((CheckpointError, ValueError)) as error:
                TetrisAgent.load_checkpoint(path, make_env(config.env)())
            assert not marker.exists(), f"{name}: the payload ran"
            assert "\n" not in str(error.value) and (
                name.split("/")[-1] in str(error.value)
                or "policy.pth" in str(error.value)
                or "model.zip" in str(error.value)
            ), str(error.value)
            assert error.type is CheckpointError, f"{name} ({checksums}): {error.value}"


@pytest.mark.parametrize("name", ["replay_buffer.pkl", "training_state.pkl", "model.zip"])
def test_earlier_formats_are_read_without_running_a_payload(tmp_path, name):
    path = tmp_path / "legacy"
    shutil.copytree(LEGACY / "format3" / "checkpoint", path)
    marker = tmp_path / "ran"
    if name == "model.zip":
        with zipfile.ZipFile(path / name) as archive:
            entries = {n: archive.read(n) for n in archive.namelist()}
        data = json.loads(entries["data"])
        data["_last_obs"] = {":serialized:": base64.b64encode(payload_bytes(marker)).decode()}  # read from old files
        entries["data"] = json.dumps(data).encode()
        with zipfile.ZipFile(path / name, "w") as archive:
            for entry, content in entries.items():
                archive.writestr(entry, content)
    else:
        (path / name).write_bytes(payload_bytes(marker))
    config = TrainingConfig.from_dict(read_metadata(path)["config"])
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as error:
        TetrisAgent.load_checkpoint(path, make_env(config.env)())
    assert not marker.exists() and "posix.system" in str(error.value) or "os.system" in str(error.value)


# -- damage ----------------------------------------------------------------------------------------


def test_every_damaged_file_is_named(tmp_path):
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(200)
    clean = agent.save_checkpoint(tmp_path / "clean")
    for i, name in enumerate(read_metadata(clean)["files"]):
        for damage in ("truncated", "flipped"):
            path = tmp_path / f"{damage}{i}"
            shutil.copytree(clean, path)
            data = bytearray((path / name).read_bytes())
            if damage == "truncated":
                data = data[: len(data) // 2]
            else:
                data[len(data) // 2] ^= 0xFF
            (path / name).write_bytes(bytes(data))
            with pytest.raises(CheckpointError, match=f"{name}.* is damaged"):
                verify_checkpoint(path)
            with pytest.raises(CheckpointError, match=f"{name}.* is damaged"):
                TetrisAgent.load_checkpoint(path, make_env(config.env)())


def test_a_run_folder_falls_back_to_its_newest_intact_checkpoint(tmp_path, caplog):
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    store = CheckpointStore(tmp_path, "checkpoints", keep_last=3)
    for _ in range(3):
        agent.train(100)
        store.save_periodic(agent)
    newest = tmp_path / "checkpoints" / "step_0000000300"
    (newest / "state.json").write_text("{}")
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_0000000200"
    assert "step_0000000300/state.json is damaged" in caplog.text and "newest intact" in caplog.text
    assert newest.is_dir()  # nothing is deleted
    with pytest.raises(CheckpointError, match="is damaged"):
        resolve_checkpoint(newest)  # named explicitly: refused, not replaced by another one
    for path in (tmp_path / "checkpoints").iterdir():
        (path / "model.zip").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no intact checkpoint there"):
        resolve_checkpoint(tmp_path)


def test_the_command_line_says_so_in_one_line(tmp_path):
    run = tmp_path / "run"
    args = ["schedule=smoke", "schedule.max_timesteps=600", "schedule.checkpoint_freq=200", f"hydra.run.dir={run}"]
    done = subprocess.run([sys.executable, "-m", "tetris_train", *args], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    final = run / "checkpoints" / "final"
    (final / "model.zip").write_bytes((final / "model.zip").read_bytes()[:100])
    result = subprocess.run(
        [sys.executable, "-m", "tetris_train", f"resume={final}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "model.zip is damaged" in result.stderr and "Traceback" not in result.stderr
    # a hostile file whose checksum was made to agree passes the check, and is still refused in one line
    step = run / "checkpoints" / "step_0000000400"
    plant(step, "state.npz", tmp_path / "ran")
    rewrite_checksums(step)
    result = subprocess.run(
        [sys.executable, "-m", "tetris_train", f"resume={step}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2 and "state.npz is unreadable" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "ran").exists()


# -- earlier formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["format1", "format3", "format3_mlp"])
def test_an_earlier_checkpoint_continues_exactly_as_its_version_did(tmp_path, form):
    """The folders were written by the version before format 4, with the parameters that version
    reached training on from them (tests/data/make_legacy_checkpoints.py)."""
    source = LEGACY / form / "checkpoint"
    config = TrainingConfig.from_dict(read_metadata(source)["config"])
    agent = TetrisAgent.load_checkpoint(source, make_env(config.env)())
    assert agent.timesteps_trained == 300
    if form == "format1":
        assert agent.config.agent.double_q is False and agent.config.agent.learning_rate_end is None
    # saved again, it is a format 4 checkpoint that continues the same way
    resaved = agent.save_checkpoint(tmp_path / "resaved")
    assert read_metadata(resaved)["format"] == checkpoints.FORMAT
    expected = np.load(LEGACY / form / "expected_parameters.npy")
    agent.train(200)
    continued = parameters(agent)
    # the same samples and updates; the fixture's floats come from another processor, whose torch
    # kernels may round the last bit differently (a wrong sample or state moves them far more)
    np.testing.assert_allclose(continued, expected, rtol=1e-5, atol=1e-7)
    again = TetrisAgent.load_checkpoint(resaved, make_env(config.env)())  # restores the global RNGs too
    again.train(200)
    np.testing.assert_array_equal(parameters(again), continued)


@pytest.mark.slow
def test_kill_9_at_random_moments_always_resumes(tmp_path):
    """8 times: train in a run folder, SIGKILL the process at a random moment of its training
    (checkpoints are written about every half second, so many kills land inside one), check that
    every listed checkpoint is whole, and continue in the same folder from the newest."""
    from tetris_train.run_folder import find_checkpoints

    run = tmp_path / "run"
    settings = ["schedule=smoke", "schedule.checkpoint_freq=500", "schedule.keep_last=3", "schedule.eval_freq=0"]

    def command(steps: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tetris_train",
            *settings,
            f"schedule.max_timesteps={steps}",
            f"hydra.run.dir={run}",
        ]

    rng = np.random.default_rng(7)
    reached = 0
    for _ in range(8):
        process = subprocess.Popen(
            command(1_000_000), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        seen, deadline = [], time.monotonic() + 300
        for line in process.stdout:  # however long the start takes, the kill lands in training
            seen.append(line)
            if "steps (to" in line or time.monotonic() > deadline:
                break
        time.sleep(float(rng.uniform(0.0, 3.0)))
        process.kill()
        output = "".join(seen) + process.communicate(timeout=60)[0]
        assert process.returncode == -9, output
        if reached:
            assert "continuing from" in output, output
        listed = find_checkpoints(run / "checkpoints")
        for _, path in listed:
            verify_checkpoint(path)  # whole: every file as recorded
        if listed:
            newest = read_metadata(resolve_checkpoint(run))["num_timesteps"]
            assert newest >= reached
            reached = newest
    assert reached > 0
    config = TrainingConfig.from_dict(read_metadata(resolve_checkpoint(run))["config"])
    TetrisAgent.load_checkpoint(resolve_checkpoint(run), make_env(config.env)())
    done = subprocess.run(command(reached + 500), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


# -- what a hostile or broken file cannot do ----------------------------------------------------------


def saved_checkpoint(tmp_path: Path, steps: int = 200) -> tuple[TrainingConfig, Path]:
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(steps)
    return config, agent.save_checkpoint(tmp_path / "clean")


def test_an_earlier_pickle_cannot_forge_objects_or_patch_classes(tmp_path):
    from stable_baselines3.common.buffers import ReplayBuffer

    class Forged:
        def __reduce__(self):
            from numpy._core.numeric import _frombuffer

            return (_frombuffer, (b"\0" * 8, np.dtype("O"), (1,), "C"))

    add = ReplayBuffer.add
    patching = b"cstable_baselines3.common.buffers\nReplayBuffer\n(N}S'add'\nI1\nstb."
    for payload in (pickle.dumps(np.array([1, "a"], dtype=object)), pickle.dumps(Forged()), patching):
        path = tmp_path / f"legacy{len(payload)}"
        shutil.copytree(LEGACY / "format3" / "checkpoint", path)
        (path / "training_state.pkl").write_bytes(payload)
        config = TrainingConfig.from_dict(read_metadata(path)["config"])
        with pytest.raises(CheckpointError, match="training_state.pkl is unreadable"):
            TetrisAgent.load_checkpoint(path, make_env(config.env)())
    assert ReplayBuffer.add is add


def test_the_archive_gives_weights_and_counters_only(tmp_path):
    config, clean = saved_checkpoint(tmp_path)
    for change, refused in (({"gamma": 0.5}, False), ({"evil": 1}, True), ({"_n_updates": "x"}, True)):
        path = tmp_path / f"archive{len(list(tmp_path.iterdir()))}"
        shutil.copytree(clean, path)
        with zipfile.ZipFile(path / "model.zip") as archive:
            entries = {n: archive.read(n) for n in archive.namelist()}
        entries["data"] = json.dumps({**json.loads(entries["data"]), **change}).encode()
        with zipfile.ZipFile(path / "model.zip", "w") as archive:
            for entry, content in entries.items():
                archive.writestr(entry, content)
        rewrite_checksums(path)
        if refused:
            with pytest.raises(CheckpointError, match=f"model.zip entry '{next(iter(change))}'"):
                TetrisAgent.load_checkpoint(path, make_env(config.env)())
        else:
            assert TetrisAgent.load_checkpoint(path, make_env(config.env)()).model.gamma == config.agent.gamma
    path = tmp_path / "extra"
    shutil.copytree(clean, path)
    with zipfile.ZipFile(path / "model.zip", "a") as archive:
        archive.writestr("pytorch_variables.pth", (path / "state.npz").read_bytes())
    rewrite_checksums(path)
    with pytest.raises(CheckpointError, match="holds pytorch_variables.pth, unlike a model archive"):
        TetrisAgent.load_checkpoint(path, make_env(config.env)())


def test_files_outside_the_folder_and_links_are_refused(tmp_path):
    config, clean = saved_checkpoint(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for checkpoints")
    outside = tmp_path / "outside"
    shutil.copytree(clean, outside)
    metadata = json.loads((outside / "metadata.json").read_text())
    metadata["files"]["../secret.txt"] = {"size": secret.stat().st_size, "sha256": "0" * 64}
    (outside / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match="lists '../secret.txt', which is no file of a checkpoint"):
        verify_checkpoint(outside)
    linked = tmp_path / "linked"
    shutil.copytree(clean, linked)
    (linked / "state.json").unlink()
    (linked / "state.json").symlink_to(clean / "state.json")
    with pytest.raises(CheckpointError, match="state.json is a symbolic link"):
        verify_checkpoint(linked)
    with pytest.raises(CheckpointError, match="symbolic link"):
        checkpoints.link_checkpoint(linked, tmp_path / "best")


@pytest.mark.parametrize(
    "damage, file",
    [
        (lambda m: m.pop("timesteps_trained"), "metadata.json"),
        (lambda m: m["files"].update({"state.json": 5}), "metadata.json"),
        (lambda m: m["config"]["agent"].update({"gamma": 7}), "metadata.json"),
        (lambda m: m["config"].update({"nonsense": 1}), "metadata.json"),
    ],
)
def test_a_broken_metadata_file_is_one_clear_error(tmp_path, damage, file):
    config, clean = saved_checkpoint(tmp_path)
    metadata = json.loads((clean / "metadata.json").read_text())
    damage(metadata)
    (clean / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match=file):
        TetrisAgent.load_checkpoint(clean, make_env(config.env)())


@pytest.mark.parametrize("text", ["[]", '{"envs": [], "rng": {}, "model": {}}', '{"envs": {"__array__": [1]}}'])
def test_a_broken_state_file_is_one_clear_error(tmp_path, text):
    config, clean = saved_checkpoint(tmp_path)
    (clean / "state.json").write_text(text)
    rewrite_checksums(clean)
    with pytest.raises(CheckpointError, match="state.json"):
        TetrisAgent.load_checkpoint(clean, make_env(config.env)())


def test_a_failed_or_replaced_write_is_never_linked(tmp_path, small_chunks, monkeypatch):
    config = small_config()
    agent = TetrisAgent(make_env(config.env)(), config)
    agent.train(300)
    first = agent.save_checkpoint(tmp_path / "first")
    agent.train(100)
    original = checkpoints._fsync_tree
    monkeypatch.setattr(checkpoints, "_fsync_tree", lambda folder: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(OSError):
        agent.save_checkpoint(tmp_path / "failed")
    assert not list(tmp_path.glob(".failed*"))  # no half-written folder left behind
    monkeypatch.setattr(checkpoints, "_fsync_tree", original)
    # a chunk of the first checkpoint replaced by other bytes of the same size is not linked either
    chunk = chunk_files(first)[0]
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.unlink()
    chunk.write_bytes(bytes(data))
    agent.train(20)
    second = agent.save_checkpoint(tmp_path / "second")
    verify_checkpoint(second)
    loaded = TetrisAgent.load_checkpoint(second, make_env(config.env)())
    for name, values in replay_arrays(agent).items():
        np.testing.assert_array_equal(getattr(loaded.model.replay_buffer, name), values, err_msg=name)
