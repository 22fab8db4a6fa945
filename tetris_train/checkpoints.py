"""The checkpoint format: what a checkpoint folder holds, and how it is written, verified, read,
linked and converted from earlier formats. Nothing here unpickles what a checkpoint holds.

Format 4::

    metadata.json        format, counters, config, versions, time, and ``files``: the size and
                         SHA-256 of every other file, checked before the file is used
    model.zip            SB3's model archive (``DQN.save``'s layout, read by ``DQN.load``): network
                         and optimizer state as tensors (read weights-only), hyperparameters and
                         counters as JSON. SB3 would pickle the spaces, classes and schedules: they
                         are rebuilt from the config instead (``custom_objects``), and the training
                         state SB3 keeps in it is in state.json / state.npz
    state.json           the rest of the training state: RNG states, the games in progress, SB3's
    state.npz            episode records, the observation in flight (arrays as .npy, no pickle)
    replay/buffer.json   the replay buffer: class, position, the layout of its arrays
    replay/NAME.CCCCC.npy.zst   its arrays in chunks of ``CHUNK`` transitions, zstd-compressed .npy

Every file is written once and never changed, so checkpoints share files by hard link: a chunk
that no transition was written to since the previous checkpoint is linked, not written again,
and ``best``, ``final`` and periodic checkpoints of one run share what they have in common.
A checkpoint is written into a hidden folder and renamed into place: a crash at any moment leaves
every listed checkpoint whole.

Formats 1-3 (pickled ``replay_buffer.pkl`` and ``training_state.pkl``, pickled entries in
``model.zip``) are read through an unpickler that builds only known data types (numpy arrays,
gymnasium spaces, SB3's replay buffer, torch tensors read weights-only) and refuses anything else.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import threading
import time
import warnings
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]

FORMAT = 4  # 4: pickle-free, chunked replay, checksums; 3: double_q; 2: learning_rate_end
METADATA_FILE = "metadata.json"
MODEL_FILE = "model.zip"
STATE_FILE = "state.json"
STATE_ARRAYS_FILE = "state.npz"
REPLAY_DIR = "replay"
BUFFER_FILE = f"{REPLAY_DIR}/buffer.json"
LEGACY_FILES = (MODEL_FILE, "replay_buffer.pkl", "training_state.pkl")
STANDARD_METADATA = ("format", "timesteps_trained", "num_timesteps", "episodes", "config", "versions", "time", "files")
CHUNK = 4096  # transitions per replay chunk: about 10 MB of the default buffer before compression
ZSTD_LEVEL = 3

# SB3 attributes that DQN.save would pickle: rebuilt from the config on load (custom_objects)
FROM_CONFIG = (
    "policy_class",
    "observation_space",
    "action_space",
    "learning_rate",
    "lr_schedule",
    "exploration_schedule",
    "replay_buffer_class",
    "replay_buffer_kwargs",
    "train_freq",
)
# SB3 attributes that are training state: kept in state.json / state.npz, set after DQN.load
MODEL_STATE = ("_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer", "ep_success_buffer")
_FROM_CONFIG_MARK = {"rebuilt from": "metadata.json config"}
# the arrays of each replay buffer class, in the order they are written
REPLAY_ARRAYS = {
    "AfterstateReplayBuffer": (
        "taken_rows",
        "next_observations",
        "next_action_masks",
        "actions",
        "rewards",
        "dones",
        "timeouts",
    ),
    "ReplayBuffer": ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"),
}
REPLAY_ARRAYS["NStepReplayBuffer"] = REPLAY_ARRAYS["ReplayBuffer"]  # the same arrays, sampled n steps at once


class CheckpointError(ValueError):
    """A folder that is not a complete, intact, readable checkpoint; the message names the file."""


# -- JSON trees that carry arrays -----------------------------------------------------------------


def split_arrays(tree: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """``tree`` as JSON-ready values, its numpy arrays replaced by ``{"__array__": key}``."""
    arrays: dict[str, np.ndarray] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError("an array of Python objects has no plain array form")
            key = f"a{len(arrays)}"
            arrays[key] = value
            return {"__array__": key}
        if isinstance(value, dict):
            return {str(k): walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, collections.deque)):
            return [walk(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    return walk(tree), arrays


def join_arrays(tree: Any, arrays: Any) -> Any:
    """The inverse of :func:`split_arrays` (sequences come back as lists)."""
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: join_arrays(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_arrays(v, arrays) for v in tree]
    return tree


# -- writing --------------------------------------------------------------------------------------


@dataclass
class ReplayFiles:
    """The replay chunks of one buffer that are already on disk, so that the next checkpoint of the
    same buffer links those that did not change instead of writing them again."""

    buffer_id: Optional[int] = None
    steps: int = 0  # model.num_timesteps when they were written
    pos: int = 0
    full: bool = False
    chunks: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> entry with path and inode
    written_bytes: int = 0  # bytes of replay chunks written (not linked) so far, for measurements

    def unchanged_chunks(self, buffer: Any, steps: int) -> set[int]:
        """Chunks of ``buffer`` that no transition was written to since these files were written."""
        if self.buffer_id != id(buffer) or steps < self.steps:
            return set()
        added, size = (steps - self.steps) // buffer.n_envs, buffer.buffer_size
        if (self.pos + added) % size != buffer.pos or added >= size:
            return set()
        written = np.unique((self.pos + np.arange(added)) % size // CHUNK)
        return set(range(-(-size // CHUNK))) - set(written.tolist())

    def forget(self) -> None:
        """After a failed write: link nothing next time."""
        self.buffer_id, self.chunks = None, {}


def write_checkpoint(
    path: PathLike,
    model: Any,
    state: dict[str, Any],
    metadata: dict[str, Any],
    replay_files: Optional[ReplayFiles] = None,
) -> Path:
    """Write a checkpoint folder at ``path`` (replacing one that is there).

    ``state`` is the training state outside SB3's model (JSON values and numpy arrays);
    ``replay_files`` records which replay chunks are on disk and is updated to this checkpoint's.
    """
    path = Path(path)
    tmp = _fresh_tmp(path)
    files: dict[str, dict[str, Any]] = {}
    inodes: dict[str, tuple[int, int]] = {}
    written = 0

    def put(name: str, data: bytes) -> None:
        nonlocal written
        target = tmp / name
        target.parent.mkdir(exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            stat = os.fstat(f.fileno())
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        inodes[name] = (stat.st_dev, stat.st_ino)
        written += len(data) if _is_chunk(name) else 0

    buffer = getattr(model, "replay_buffer", None)
    steps = int(model.num_timesteps)
    try:
        put(MODEL_FILE, _model_archive(model))
        tree, arrays = split_arrays({**state, "model": {name: getattr(model, name, None) for name in MODEL_STATE}})
        put(STATE_FILE, (json.dumps(tree) + "\n").encode())
        put(STATE_ARRAYS_FILE, _npz_bytes(arrays))
        if buffer is not None:
            unchanged = replay_files.unchanged_chunks(buffer, steps) if replay_files is not None else set()
            known = replay_files.chunks if replay_files is not None else {}
            _write_replay(buffer, tmp, put, files, inodes, {n: e for n, e in known.items() if _index(n) in unchanged})
        full_metadata = {"format": FORMAT, **metadata, "files": files}
        (tmp / METADATA_FILE).write_text(json.dumps(full_metadata, indent=2) + "\n")
        _fsync_tree(tmp)
        _replace_dir(tmp, path)
    except BaseException as error:
        if replay_files is not None:
            replay_files.forget()
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_naming(error, path)
    if replay_files is not None and buffer is not None:
        replay_files.buffer_id, replay_files.steps = id(buffer), steps
        replay_files.pos, replay_files.full = int(buffer.pos), bool(buffer.full)
        replay_files.chunks = {
            name: {**files[name], "path": str(path / name), "inode": inodes[name]} for name in files if _is_chunk(name)
        }
        replay_files.written_bytes += written
    return path


def _write_replay(
    buffer: Any,
    folder: Path,
    put: Callable[[str, bytes], None],
    files: dict[str, dict[str, Any]],
    inodes: dict[str, tuple[int, int]],
    linkable: dict[str, dict[str, Any]],
) -> None:
    """The buffer's layout and chunks; those in ``linkable`` (unchanged since written) are linked."""
    kind = type(buffer).__name__ if type(buffer).__name__ in REPLAY_ARRAYS else None
    if kind is None or getattr(buffer, "optimize_memory_usage", False):
        raise TypeError(
            f"checkpoints hold AfterstateReplayBuffer or SB3's (N-step) ReplayBuffer, not {type(buffer).__name__}"
        )
    names = REPLAY_ARRAYS[kind]
    filled = buffer.buffer_size if buffer.full else buffer.pos
    layout = {
        "class": kind,
        "buffer_size": int(buffer.buffer_size),
        "n_envs": int(buffer.n_envs),
        "pos": int(buffer.pos),
        "full": bool(buffer.full),
        "chunk": CHUNK,
        "arrays": {
            name: {"dtype": getattr(buffer, name).dtype.str, "shape": list(getattr(buffer, name).shape[1:])}
            for name in names
        },
    }
    put(BUFFER_FILE, (json.dumps(layout, indent=2) + "\n").encode())
    compressor = _zstd().ZstdCompressor(level=ZSTD_LEVEL)
    for index in range(-(-filled // CHUNK)):
        rows = slice(index * CHUNK, min((index + 1) * CHUNK, filled))
        for name in names:
            file_name = chunk_name(name, index)
            known = linkable.get(file_name)
            if known is not None and _link(known, folder / file_name):
                files[file_name] = {"size": known["size"], "sha256": known["sha256"]}
                inodes[file_name] = tuple(known["inode"])
                continue
            array = np.ascontiguousarray(getattr(buffer, name)[rows])
            put(file_name, compressor.compress(_npy_bytes(array)))


def chunk_name(array: str, index: int) -> str:
    return f"{REPLAY_DIR}/{array}.{index:05d}.npy.zst"


def _is_chunk(name: str) -> bool:
    return name.startswith(f"{REPLAY_DIR}/") and name.endswith(".npy.zst")


def _index(name: str) -> int:
    return int(name.split(".")[-3])


def _link(known: dict[str, Any], target: Path) -> bool:
    """Hard-link a file written (or read) earlier, if it is still that very file; False where it
    is gone or replaced, or links are impossible."""
    try:
        source = Path(known["path"])
        stat = source.lstat()
        if (stat.st_dev, stat.st_ino) != tuple(known["inode"]) or stat.st_size != known["size"]:
            return False
        target.parent.mkdir(exist_ok=True)
        os.link(source, target)
        return True
    except OSError:
        return False


def _model_archive(model: Any) -> bytes:
    """SB3's model archive as ``DQN.save`` writes it, without any pickled entry."""
    from stable_baselines3.common.save_util import save_to_zip_file

    data = model.__dict__.copy()
    exclude = set(model._excluded_save_params()) | set(MODEL_STATE)
    state_dicts, torch_variables = model._get_torch_save_params()
    exclude |= {name.split(".")[0] for name in state_dicts + torch_variables}
    for name in exclude:
        data.pop(name, None)
    for name in FROM_CONFIG:
        if name in data:
            data[name] = _FROM_CONFIG_MARK
    for name, value in data.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise TypeError(f"model attribute {name} ({type(value).__name__}) has no JSON form") from None
    variables = {name: _attribute(model, name) for name in torch_variables} or None
    archive = io.BytesIO()
    save_to_zip_file(archive, data=data, params=model.get_parameters(), pytorch_variables=variables)
    return archive.getvalue()


def _attribute(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, **arrays)
    return out.getvalue()


def link_checkpoint(source: PathLike, path: PathLike, **metadata: Any) -> Path:
    """A checkpoint at ``path`` of the same state as ``source``: its files hard-linked (copied
    where links are impossible), the metadata updated with ``metadata``. Written like a checkpoint."""
    source, path = Path(source), Path(path)
    original = read_metadata(source)
    merged = {**{k: v for k, v in original.items() if k in STANDARD_METADATA}, **metadata}
    tmp = _fresh_tmp(path)
    try:
        for name in checkpoint_files(original):
            file = source / name
            if file.is_symlink() or file.parent.is_symlink():
                raise CheckpointError(f"{file} is a symbolic link; a checkpoint holds plain files")
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(file, tmp / name)
            except OSError:
                shutil.copy2(file, tmp / name)
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
        (tmp / METADATA_FILE).write_text(json.dumps(merged, indent=2) + "\n")
        _fsync_tree(tmp)
        _replace_dir(tmp, path)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_naming(error, path)
    return path


def checkpoint_files(metadata: dict[str, Any]) -> list[str]:
    """The files of a checkpoint besides metadata.json, as its metadata lists them."""
    return list(metadata["files"]) if metadata["format"] >= 4 else list(LEGACY_FILES)


# -- reading --------------------------------------------------------------------------------------


_FILE_NAMES = re.compile(r"model\.zip|state\.json|state\.npz|replay/buffer\.json|replay/[a-z_]+\.\d{5}\.npy\.zst")
_COUNTS = ("num_timesteps", "timesteps_trained", "episodes")
# entries of model.zip: its JSON data, the state dicts of the policy and its optimizer, SB3's notes;
# pytorch_variables.pth (an empty dict for DQN) in earlier formats
_ARCHIVE_ENTRIES = ("data", "policy.pth", "policy.optimizer.pth", "_stable_baselines3_version", "system_info.txt")
# model.zip's JSON entries that are the training's counters; every other entry is rebuilt from the config
_MODEL_COUNTERS = {
    "num_timesteps": int,
    "_n_updates": int,
    "_episode_num": int,
    "_n_calls": int,
    "_num_timesteps_at_start": int,
    "_total_timesteps": int,
    "start_time": float,
    "n_envs": int,
    "_current_progress_remaining": float,
    "exploration_rate": float,
}
_REBUILT_BY_SETUP = ("lr_schedule", "exploration_schedule", "batch_norm_stats", "batch_norm_stats_target")


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint folder, with its config completed to the current schema; a
    clear error for anything that is not a checkpoint. Files are checked when they are read."""
    from .config import TrainingConfig, complete_saved_config

    path = Path(path)
    file = path / METADATA_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder: it has no {METADATA_FILE}")
    try:
        metadata = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file} is unreadable: {error}") from None
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if found not in range(1, FORMAT + 1) or isinstance(found, bool):
        raise CheckpointError(f"{path}: checkpoint format {found!r}; this version reads 1 to {FORMAT}")
    if found >= 4:
        listed = metadata.get("files")
        if not isinstance(listed, dict) or not {MODEL_FILE, STATE_FILE, STATE_ARRAYS_FILE} <= set(listed):
            raise CheckpointError(f"{file} does not list the files of a checkpoint")
        for name, entry in listed.items():
            if not isinstance(name, str) or not _FILE_NAMES.fullmatch(name):
                raise CheckpointError(f"{file} lists {name!r}, which is no file of a checkpoint")
            if (
                not isinstance(entry, dict)
                or not _is_count(entry.get("size"))
                or not isinstance(entry.get("sha256"), str)
            ):
                raise CheckpointError(f"{file}: the entry of {name} has no size and checksum")
    for key in _COUNTS:
        if not _is_count(metadata.get(key)):
            raise CheckpointError(f"{file}: {key} is {metadata.get(key)!r}, expected an integer >= 0")
    missing = [name for name in checkpoint_files(metadata) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint: {', '.join(missing)} missing")
    if not isinstance(metadata.get("config"), dict):
        raise CheckpointError(f"{file} holds no config")
    try:
        complete_saved_config(metadata["config"])
        TrainingConfig.from_dict(metadata["config"])
    except Exception as error:  # an unknown key or a value out of range: the schema says which
        raise CheckpointError(f"{file}: its config does not fit this version: {_one_line(error)}") from None
    return metadata


class _Anything(dict):
    """Objects for every entry: when only the training state of an earlier model.zip is wanted."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: Any) -> None:
        return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def verify_checkpoint(path: PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint whose every file has its recorded size and checksum."""
    checkpoint = Checkpoint(path)
    for name in checkpoint_files(checkpoint.metadata) if checkpoint.format >= 4 else ():
        checkpoint.read_file(name)
    return checkpoint.metadata


class Checkpoint:
    """One checkpoint folder, read file by file; each file is checked before it is used, and any
    file that cannot be used raises :class:`CheckpointError` naming it."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.format = int(self.metadata["format"])
        self._legacy_model: Optional[dict[str, Any]] = None
        self._inodes: dict[str, tuple[int, int]] = {}

    @property
    def state_file(self) -> str:
        return STATE_FILE if self.format >= 4 else "training_state.pkl"

    def read_file(self, name: str) -> bytes:
        """A file's bytes, checked against the size and SHA-256 in the metadata (format 4)."""
        file = self.path / name
        if name not in checkpoint_files(self.metadata):
            raise CheckpointError(f"{file} is not listed in {METADATA_FILE}")
        if file.is_symlink() or file.parent.is_symlink():
            raise CheckpointError(f"{file} is a symbolic link; a checkpoint holds plain files")
        try:
            stat = file.stat()
            entry = self.metadata["files"][name] if self.format >= 4 else None
            if entry is not None and stat.st_size != entry["size"]:
                raise CheckpointError(f"{file} is damaged: {stat.st_size} bytes, {entry['size']} recorded")
            data = file.read_bytes()
        except OSError as error:
            raise CheckpointError(f"{file} is unreadable: {error.strerror or error}") from None
        if entry is not None and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckpointError(f"{file} is damaged: its checksum differs from the one recorded")
        self._inodes[name] = (stat.st_dev, stat.st_ino)
        return data

    # the model

    def load_model(self, algorithm: Any, objects: dict[str, Any], env: Any = None, device: str = "auto") -> Any:
        """``algorithm.load`` of model.zip. Only the weights and the counters come from the archive:
        ``objects`` (built from the config) stand in for every other entry, so nothing is unpickled
        and no hyperparameter of the archive overrides the config. The training state SB3 keeps in
        the model is set from state.json / state.npz."""
        file = self.path / MODEL_FILE
        data = self.read_file(MODEL_FILE)
        custom = self._custom_objects(data, objects)
        try:
            model = algorithm.load(io.BytesIO(data), env=env, device=device, custom_objects=custom, force_reset=False)
        except CheckpointError:
            raise
        except Exception as error:  # weights of another shape, a space of another game, ...
            raise CheckpointError(f"{file} cannot be loaded: {_one_line(error)}") from None
        saved = self.training_state()["model"]
        where = self.path / (STATE_FILE if self.format >= 4 else MODEL_FILE)
        try:
            for name in MODEL_STATE:
                value = saved.get(name)
                if name in ("ep_info_buffer", "ep_success_buffer"):
                    if not all(isinstance(item, (dict, bool, float, int)) for item in value or []):
                        raise TypeError(f"{name} holds something other than episode records")
                    value = collections.deque(value or [], maxlen=model._stats_window_size)
                elif value is not None and not isinstance(value, np.ndarray):
                    raise TypeError(f"{name} is not an array")
                setattr(model, name, value)
        except Exception as error:
            raise CheckpointError(f"{where}: {_one_line(error)}") from None
        return model

    def _custom_objects(self, data: bytes, objects: dict[str, Any]) -> dict[str, Any]:
        """What SB3's load takes instead of the archive's entries: ``objects`` for everything but the
        counters (type-checked) and, in earlier formats, the training state, read by the data-only
        unpickler. An entry or file this version does not write is refused."""
        import torch as th

        file = self.path / MODEL_FILE
        allowed = set(_ARCHIVE_ENTRIES) | ({"pytorch_variables.pth"} if self.format < 4 else set())
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = archive.namelist()
                unknown = sorted(set(names) - allowed)
                if unknown or "data" not in names:
                    raise CheckpointError(
                        f"{file} holds {unknown[0] if unknown else 'no data'}, unlike a model archive"
                    )
                entries = json.loads(archive.read("data"))
                for name in names:
                    if name.endswith(".pth"):  # SB3 reads them weights-only too: here for a one-line error
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")  # torch's notes on a foreign pickle protocol
                            loaded = th.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
                        if not isinstance(loaded, dict) or (name == "pytorch_variables.pth" and loaded):
                            raise CheckpointError(f"{file} entry {name} holds no state dict")
        except CheckpointError:
            raise
        except Exception as error:  # a damaged or hostile archive: whatever zip, JSON or torch raise
            raise CheckpointError(f"{file} is unreadable: {_one_line(error)}") from None
        if not isinstance(entries, dict):
            raise CheckpointError(f"{file} is unreadable: its data entry is not a JSON object")
        custom, legacy = {}, {}
        for name, value in entries.items():
            pickled = isinstance(value, dict) and ":serialized:" in value
            if name in _MODEL_COUNTERS:
                kind = _MODEL_COUNTERS[name]
                if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
                    raise CheckpointError(f"{file} entry {name!r} is {value!r}, expected a number")
            elif name in MODEL_STATE and pickled and self.format < 4:
                legacy[name] = _legacy_loads(value[":serialized:"], f"{file} entry {name}", base64=True)
                custom[name] = None
            elif name in _REBUILT_BY_SETUP:
                custom[name] = None
            elif name in objects:
                custom[name] = objects[name]
            else:
                what = "a pickled object" if pickled else "an entry this version does not write"
                raise CheckpointError(f"{file} entry {name!r} is {what}; refused")
        self._legacy_model = legacy
        return custom

    # the training state

    def training_state(self) -> dict[str, Any]:
        """RNG states, games in progress and SB3's training state: ``{"envs", "rng", "model"}``."""
        if self.format < 4:
            file = self.path / "training_state.pkl"
            state = _legacy_loads(self.read_file("training_state.pkl"), str(file))
            if not isinstance(state, dict) or not {"envs", "rng"} <= set(state):
                raise CheckpointError(f"{file} holds no training state")
            if self._legacy_model is None:  # the model's part of the training state: from model.zip
                self._custom_objects(self.read_file(MODEL_FILE), _Anything())
            return {**state, "model": dict(self._legacy_model or {})}
        try:
            tree = json.loads(self.read_file(STATE_FILE))
            if not isinstance(tree, dict) or not {"envs", "rng", "model"} <= set(tree):
                raise ValueError("it holds no training state")
        except CheckpointError:
            raise
        except Exception as error:
            raise CheckpointError(f"{self.path / STATE_FILE} is unreadable: {_one_line(error)}") from None
        try:
            with np.load(io.BytesIO(self.read_file(STATE_ARRAYS_FILE)), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except CheckpointError:
            raise
        except Exception as error:  # numpy and zip errors of a damaged or foreign file
            raise CheckpointError(f"{self.path / STATE_ARRAYS_FILE} is unreadable: {_one_line(error)}") from None
        try:
            return join_arrays(tree, arrays)
        except Exception as error:
            raise CheckpointError(
                f"{self.path / STATE_FILE} names arrays state.npz lacks: {_one_line(error)}"
            ) from None

    # the replay buffer

    def load_replay(self, buffer: Any, feature_scale: Optional[np.ndarray] = None) -> ReplayFiles:
        """Fill ``buffer`` (of the class and size the config builds) with the saved transitions;
        the returned record lets the next checkpoint link the chunks it read."""
        if self.format < 4:
            self._load_legacy_replay(buffer, feature_scale)
            return ReplayFiles()
        file = self.path / BUFFER_FILE
        try:
            layout = json.loads(self.read_file(BUFFER_FILE))
            kind, size, n_envs = str(layout["class"]), int(layout["buffer_size"]), int(layout["n_envs"])
            pos, full, chunk = int(layout["pos"]), bool(layout["full"]), int(layout["chunk"])
            arrays = set(layout["arrays"])
        except CheckpointError:
            raise
        except Exception as error:
            raise CheckpointError(f"{file} is unreadable: {_one_line(error)}") from None
        if kind != type(buffer).__name__ or size != buffer.buffer_size or n_envs != buffer.n_envs:
            raise CheckpointError(
                f"{file}: a {kind} of {size} transitions; this config builds a "
                f"{type(buffer).__name__} of {buffer.buffer_size}"
            )
        if arrays != set(REPLAY_ARRAYS[kind]) or not 0 <= pos < size or chunk <= 0:
            raise CheckpointError(f"{file}: an array layout this version does not read")
        filled = size if full else pos
        record = ReplayFiles(buffer_id=id(buffer), pos=pos, full=full)
        jobs = [
            (chunk_name(name, index), getattr(buffer, name)[index * chunk : min((index + 1) * chunk, filled)])
            for index in range(-(-filled // chunk))
            for name in REPLAY_ARRAYS[kind]
        ]

        def read(job: tuple[str, np.ndarray]) -> None:
            file_name, rows = job
            _read_npy_into(self.read_file(file_name), rows, self.path / file_name)

        # zstd and SHA-256 release the GIL: chunks are read side by side, each into its own rows
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(read, jobs))
        if chunk == CHUNK:
            for file_name, _ in jobs:
                entry, path = self.metadata["files"][file_name], str(self.path / file_name)
                record.chunks[file_name] = {**entry, "path": path, "inode": self._inodes[file_name]}
        buffer.pos, buffer.full = pos, full
        record.steps = int(self.metadata["num_timesteps"])
        return record

    def _load_legacy_replay(self, buffer: Any, feature_scale: Optional[np.ndarray]) -> None:
        from stable_baselines3.common.buffers import ReplayBuffer

        from .replay import AfterstateReplayBuffer

        file = self.path / "replay_buffer.pkl"
        saved = _legacy_loads(self.read_file("replay_buffer.pkl"), str(file))
        try:
            if not isinstance(saved, ReplayBuffer):
                raise TypeError(f"it holds a {type(saved).__name__}")
            if (saved.buffer_size, saved.n_envs) != (buffer.buffer_size, buffer.n_envs):
                raise ValueError(f"{saved.buffer_size} places for {saved.n_envs} environments")
            if isinstance(buffer, AfterstateReplayBuffer) and "taken_rows" not in saved.__dict__:
                saved = AfterstateReplayBuffer.from_replay_buffer(saved, feature_scale)
            for name in REPLAY_ARRAYS[type(buffer).__name__]:
                getattr(buffer, name)[...] = getattr(saved, name)
            pos, full = saved.pos, saved.full
            if not _is_count(pos) or pos >= buffer.buffer_size or not isinstance(full, bool):
                raise ValueError(f"position {pos!r}, full {full!r}")
            buffer.pos, buffer.full = pos, full
        except Exception as error:  # a buffer of another shape or class
            raise CheckpointError(f"{file} does not fit this config's replay buffer: {_one_line(error)}") from None


_HEADER_LOCK = threading.Lock()


def _read_npy_into(data: bytes, target: np.ndarray, file: Path) -> None:
    """Decompress a chunk's .npy straight into ``target`` (a contiguous slice of the buffer), after
    checking that its header describes exactly that slice; never an object array."""
    from numpy.lib import format as npy

    try:
        with _zstd().ZstdDecompressor().stream_reader(data) as stream:
            version = npy.read_magic(stream)
            header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            with _HEADER_LOCK:  # numpy parses it with ast, which is not thread-safe before CPython 3.12.1
                shape, fortran, dtype = header(stream)
            if dtype.hasobject or fortran or dtype != target.dtype or tuple(shape) != target.shape:
                raise CheckpointError(f"{file}: {dtype}{list(shape)}, expected {target.dtype}{list(target.shape)}")
            view, done = (memoryview(target).cast("B") if target.nbytes else memoryview(b"")), 0  # an empty entry
            while done < len(view):
                got = stream.readinto(view[done:])
                if not got:
                    break
                done += got
            if done != len(view) or stream.read(1):
                raise CheckpointError(f"{file} is unreadable: it holds more or less data than its header says")
    except CheckpointError:
        raise
    except Exception as error:  # zstd and numpy errors of a damaged file
        raise CheckpointError(f"{file} is unreadable: {_one_line(error)}") from None


# -- earlier formats: the data-only unpickler -----------------------------------------------------


def _global(module: str, name: str) -> Callable[[], Any]:
    def get() -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)

    return get


def _refuse_objects(dtype: Any) -> Any:
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("an array of Python objects, which a checkpoint never holds")
    return dtype


def _checked_dtype(*args: Any) -> Any:
    return _refuse_objects(np.dtype(*args))


def _checked_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> Any:
    from numpy._core.numeric import _frombuffer

    return _frombuffer(buffer, _refuse_objects(dtype), shape, order)


def _checked_scalar(dtype: Any, *args: Any) -> Any:
    from numpy._core.multiarray import scalar

    return scalar(_refuse_objects(dtype), *args)


def _checked_rebuild_tensor(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, *rest: Any
) -> Any:
    from torch._utils import _rebuild_tensor_v2

    if hooks:
        raise pickle.UnpicklingError("a tensor with backward hooks, which a checkpoint never holds")
    return _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, collections.OrderedDict(), *rest)


def _weights_only_bytes(data: bytes) -> Any:
    """torch pickles a storage as nested torch.save data: read it weights-only."""
    import torch as th

    return th.load(io.BytesIO(data), weights_only=True)


_DATA_GLOBALS: dict[str, Callable[[], Any]] = {
    f"{module}.{name}": _global(module, name)
    for module, name in (
        ("collections", "OrderedDict"),
        ("collections", "deque"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("gymnasium.spaces.box", "Box"),
        ("gymnasium.spaces.discrete", "Discrete"),
        ("stable_baselines3.common.buffers", "ReplayBuffer"),
        ("tetris_train.replay", "AfterstateReplayBuffer"),
        ("torch", "device"),
    )
}
for _numpy in ("numpy._core", "numpy.core"):  # numpy 2 and numpy 1 names
    _DATA_GLOBALS[f"{_numpy}.numeric._frombuffer"] = lambda: _checked_frombuffer
    _DATA_GLOBALS[f"{_numpy}.multiarray.scalar"] = lambda: _checked_scalar
_DATA_GLOBALS["numpy.dtype"] = lambda: _checked_dtype
_DATA_GLOBALS["torch._utils._rebuild_tensor_v2"] = lambda: _checked_rebuild_tensor
_DATA_GLOBALS["torch.storage._load_from_bytes"] = lambda: _weights_only_bytes


def _buildable() -> tuple[type, ...]:
    """The only objects whose state a pickle may set (BUILD): instances of the data types."""
    from gymnasium.spaces import Space
    from stable_baselines3.common.buffers import ReplayBuffer

    return (ReplayBuffer, Space, np.dtype, np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)


class _DataUnpickler(pickle._Unpickler):
    """Builds only the data types earlier checkpoints hold: numpy arrays of numbers, gymnasium
    spaces, SB3's replay buffer, torch tensors read weights-only. Any other global, an array of
    Python objects, and setting the state of anything but those data types are refused. (The
    Python implementation of the unpickler, whose BUILD step can be checked.)"""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        get = _DATA_GLOBALS.get(f"{module}.{name}")
        if get is None:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a checkpoint never holds")
        return get()

    def load_build(self) -> None:
        target = self.stack[-2]
        if isinstance(target, type) or not isinstance(target, _buildable()):
            raise pickle.UnpicklingError(f"it sets the state of a {type(target).__name__}, which is no data")
        super().load_build()
        if isinstance(target, np.dtype):
            _refuse_objects(target)

    dispatch[pickle.BUILD[0]] = load_build


def _legacy_loads(data: Any, where: str, base64: bool = False) -> Any:
    try:
        if base64:
            import base64 as b64

            data = b64.b64decode(str(data).encode())
        return _DataUnpickler(io.BytesIO(data)).load()
    except Exception as error:  # whatever a damaged or hostile pickle raises
        raise CheckpointError(f"{where} is unreadable: {_one_line(error)}") from None


# -- files and folders ----------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _zstd() -> Any:
    import zstandard

    return zstandard


def _raise_naming(error: BaseException, path: Path) -> None:
    """Raise ``error`` again; an OSError (a full disk, a read-only folder) names the checkpoint, not
    the temporary folder it was written in."""
    if isinstance(error, OSError):
        raise OSError(error.errno, error.strerror, str(path)) from None
    raise error


def _fresh_tmp(path: Path) -> Path:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as error:
        _raise_naming(error, path)
    return tmp


def _fsync_tree(folder: Path) -> None:
    """Make a written folder durable: its files (new ones were synced as written) and folders."""
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        _fsync_dir(sub)
    with open(folder / METADATA_FILE, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move a finished folder into place; an existing folder there is swapped out, then deleted."""
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old)
    else:
        os.rename(tmp, path)
    _fsync_dir(path.parent)


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
