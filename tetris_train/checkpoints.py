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
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable
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
    chunks: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> entry with "path"
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

    def put(name: str, data: bytes) -> None:
        target = tmp / name
        target.parent.mkdir(exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if replay_files is not None and _is_chunk(name):
            replay_files.written_bytes += len(data)

    put(MODEL_FILE, _model_archive(model))
    tree, arrays = split_arrays({**state, "model": {name: getattr(model, name, None) for name in MODEL_STATE}})
    put(STATE_FILE, (json.dumps(tree) + "\n").encode())
    put(STATE_ARRAYS_FILE, _npz_bytes(arrays))
    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None:
        _write_replay(buffer, int(model.num_timesteps), tmp, put, files, replay_files)
    full_metadata = {"format": FORMAT, **metadata, "files": files}
    (tmp / METADATA_FILE).write_text(json.dumps(full_metadata, indent=2) + "\n")
    _fsync_tree(tmp)
    _replace_dir(tmp, path)
    if replay_files is not None and buffer is not None:
        replay_files.chunks = {name: {**files[name], "path": str(path / name)} for name in files if _is_chunk(name)}
    return path


def _write_replay(
    buffer: Any,
    steps: int,
    folder: Path,
    put: Callable[[str, bytes], None],
    files: dict[str, dict[str, Any]],
    record: Optional[ReplayFiles],
) -> None:
    kind = type(buffer).__name__ if type(buffer).__name__ in REPLAY_ARRAYS else None
    if kind is None or getattr(buffer, "optimize_memory_usage", False):
        raise TypeError(f"checkpoints hold AfterstateReplayBuffer or SB3's ReplayBuffer, got {type(buffer).__name__}")
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
    unchanged = record.unchanged_chunks(buffer, steps) if record is not None else set()
    compressor = _zstd().ZstdCompressor(level=ZSTD_LEVEL)
    for index in range(-(-filled // CHUNK)):
        rows = slice(index * CHUNK, min((index + 1) * CHUNK, filled))
        for name in names:
            file_name = chunk_name(name, index)
            known = record.chunks.get(file_name) if record is not None and index in unchanged else None
            if known is not None and _link(Path(known["path"]), folder / file_name, known["size"]):
                files[file_name] = {"size": known["size"], "sha256": known["sha256"]}
                continue
            array = np.ascontiguousarray(getattr(buffer, name)[rows])
            put(file_name, compressor.compress(_npy_bytes(array)))
    if record is not None:
        record.buffer_id, record.steps, record.pos, record.full = id(buffer), steps, buffer.pos, buffer.full


def chunk_name(array: str, index: int) -> str:
    return f"{REPLAY_DIR}/{array}.{index:05d}.npy.zst"


def _is_chunk(name: str) -> bool:
    return name.startswith(f"{REPLAY_DIR}/") and name.endswith(".npy.zst")


def _link(source: Path, target: Path, size: int) -> bool:
    """Hard-link an unchanged file; False where the source is gone or links are impossible."""
    try:
        if source.stat().st_size != size:
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
    """A checkpoint at ``path`` of the same state as ``source``: every file hard-linked (copied
    where links are impossible), the metadata updated with ``metadata``. Written like a checkpoint."""
    source, path = Path(source), Path(path)
    merged = {**{k: v for k, v in read_metadata(source).items() if k in STANDARD_METADATA}, **metadata}
    tmp = _fresh_tmp(path)
    for file in sorted(source.rglob("*")):
        relative = file.relative_to(source)
        if file.is_dir() or str(relative) == METADATA_FILE:
            continue
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(file, tmp / relative)
        except OSError:
            shutil.copy2(file, tmp / relative)
            with open(tmp / relative, "rb") as f:
                os.fsync(f.fileno())
    (tmp / METADATA_FILE).write_text(json.dumps(merged, indent=2) + "\n")
    _fsync_tree(tmp)
    _replace_dir(tmp, path)
    return path


# -- reading --------------------------------------------------------------------------------------


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint folder, with its config completed to the current schema; a
    clear error for anything that is not a checkpoint. Files are checked when they are read."""
    from .config import complete_saved_config

    path = Path(path)
    if not (path / METADATA_FILE).is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder: it has no {METADATA_FILE}")
    try:
        metadata = json.loads((path / METADATA_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path / METADATA_FILE} is unreadable: {error}") from None
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if found not in range(1, FORMAT + 1):
        raise CheckpointError(f"{path}: checkpoint format {found!r}; this version reads 1 to {FORMAT}")
    expected = list(metadata.get("files") or {}) if found >= 4 else list(LEGACY_FILES)
    if found >= 4 and not isinstance(metadata.get("files"), dict):
        raise CheckpointError(f"{path / METADATA_FILE} lists no files")
    missing = [name for name in expected if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint: {', '.join(missing)} missing")
    if not isinstance(metadata.get("config"), dict):
        raise CheckpointError(f"{path / METADATA_FILE} holds no config")
    complete_saved_config(metadata["config"])
    return metadata


def verify_checkpoint(path: PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint whose every file has its recorded size and checksum."""
    checkpoint = Checkpoint(path)
    for name in checkpoint.metadata.get("files") or {}:
        checkpoint.read_file(name)
    return checkpoint.metadata


class Checkpoint:
    """One checkpoint folder, read file by file; each file is checked before it is used."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.format = int(self.metadata["format"])
        self._legacy_model: Optional[dict[str, Any]] = None

    def read_file(self, name: str) -> bytes:
        """A file's bytes, checked against the size and SHA-256 in the metadata (format 4)."""
        file = self.path / name
        try:
            data = file.read_bytes()
        except OSError as error:
            raise CheckpointError(f"{file} is unreadable: {error.strerror or error}") from None
        if self.format >= 4:
            entry = self.metadata["files"].get(name)
            if entry is None:
                raise CheckpointError(f"{file} is not listed in {METADATA_FILE}")
            if len(data) != entry.get("size"):
                raise CheckpointError(f"{file} is damaged: {len(data)} bytes, {entry.get('size')} recorded")
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                raise CheckpointError(f"{file} is damaged: its checksum differs from the one recorded")
        return data

    # the model

    def load_model(self, algorithm: Any, objects: dict[str, Any], env: Any = None, device: str = "auto") -> Any:
        """``algorithm.load`` of model.zip, with ``objects`` (built from the config) in place of
        every entry SB3 would unpickle, and the training state set from state.json / state.npz."""
        data = self.read_file(MODEL_FILE)
        custom = self._custom_objects(data, objects)
        try:
            model = algorithm.load(io.BytesIO(data), env=env, device=device, custom_objects=custom, force_reset=False)
        except (zipfile.BadZipFile, KeyError, EOFError, pickle.UnpicklingError) as error:
            raise CheckpointError(f"{self.path / MODEL_FILE} is unreadable: {error}") from None
        saved = self.training_state()["model"]
        for name in MODEL_STATE:
            value = saved.get(name)
            if name in ("ep_info_buffer", "ep_success_buffer"):
                value = collections.deque(value or [], maxlen=model._stats_window_size)
            setattr(model, name, value)
        return model

    def _custom_objects(self, data: bytes, objects: dict[str, Any]) -> dict[str, Any]:
        """What SB3's load uses instead of unpickling: ``objects``, or for the training state of
        earlier formats, values read by the data-only unpickler. Anything else pickled is refused."""
        import torch as th

        file = self.path / MODEL_FILE
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                entries = json.loads(archive.read("data"))
                for name in archive.namelist():
                    if name.endswith(".pth"):  # SB3 reads them weights-only too: here for a one-line error
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")  # torch's notes on a foreign pickle protocol
                            th.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged or hostile archive: whatever zip, JSON or torch raise
            raise CheckpointError(f"{file} is unreadable: {_one_line(error)}") from None
        if not isinstance(entries, dict):
            raise CheckpointError(f"{file} is unreadable: its data entry is not a JSON object")
        custom, legacy = {}, {}
        for name, value in entries.items():
            pickled = isinstance(value, dict) and ":serialized:" in value
            if name in objects:
                custom[name] = objects[name]
            elif pickled and name in MODEL_STATE and self.format < 4:
                legacy[name] = _legacy_loads(value[":serialized:"], f"{file} entry {name}", base64=True)
                custom[name] = None
            elif pickled:
                raise CheckpointError(f"{file} entry {name!r} is a pickled object, which this version never loads")
        self._legacy_model = legacy
        return custom

    # the training state

    def training_state(self) -> dict[str, Any]:
        """RNG states, games in progress and SB3's training state: ``{"envs", "rng", "model"}``."""
        if self.format < 4:
            state = _legacy_load(self.read_file("training_state.pkl"), self.path / "training_state.pkl")
            if not isinstance(state, dict) or not {"envs", "rng"} <= set(state):
                raise CheckpointError(f"{self.path / 'training_state.pkl'} holds no training state")
            if self._legacy_model is None:
                self._custom_objects(self.read_file(MODEL_FILE), {name: None for name in FROM_CONFIG})
            return {**state, "model": dict(self._legacy_model or {})}
        try:
            tree = json.loads(self.read_file(STATE_FILE))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{self.path / STATE_FILE} is unreadable: {error}") from None
        try:
            with np.load(io.BytesIO(self.read_file(STATE_ARRAYS_FILE)), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            return join_arrays(tree, arrays)
        except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError) as error:
            raise CheckpointError(f"{self.path / STATE_ARRAYS_FILE} is unreadable: {error}") from None

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
            kind, size, n_envs = layout["class"], int(layout["buffer_size"]), int(layout["n_envs"])
            pos, full, chunk, arrays = int(layout["pos"]), bool(layout["full"]), int(layout["chunk"]), layout["arrays"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{file} is unreadable: {error}") from None
        if kind != type(buffer).__name__ or size != buffer.buffer_size or n_envs != buffer.n_envs:
            raise CheckpointError(
                f"{file}: a {kind} of {size} transitions; this config builds a "
                f"{type(buffer).__name__} of {buffer.buffer_size}"
            )
        if set(arrays) != set(REPLAY_ARRAYS[kind]) or not 0 <= pos < size or chunk <= 0:
            raise CheckpointError(f"{file}: an array layout this version does not read")
        filled = size if full else pos
        decompressor = _zstd().ZstdDecompressor()
        record = ReplayFiles(buffer_id=id(buffer), pos=pos, full=full)
        for index in range(-(-filled // chunk)):
            rows = slice(index * chunk, min((index + 1) * chunk, filled))
            for name in REPLAY_ARRAYS[kind]:
                file_name = f"{REPLAY_DIR}/{name}.{index:05d}.npy.zst"
                target = getattr(buffer, name)
                try:
                    values = np.load(io.BytesIO(decompressor.decompress(self.read_file(file_name))), allow_pickle=False)
                except CheckpointError:
                    raise
                except Exception as error:  # zstd and numpy errors of a damaged file
                    raise CheckpointError(f"{self.path / file_name} is unreadable: {error}") from None
                if values.dtype != target.dtype or values.shape != target[rows].shape:
                    raise CheckpointError(
                        f"{self.path / file_name}: {values.dtype}{list(values.shape)}, "
                        f"expected {target.dtype}{list(target[rows].shape)}"
                    )
                target[rows] = values
                if chunk == CHUNK:
                    entry = self.metadata["files"][file_name]
                    record.chunks[file_name] = {**entry, "path": str(self.path / file_name)}
        buffer.pos, buffer.full = pos, full
        record.steps = int(self.metadata["num_timesteps"])
        return record

    def _load_legacy_replay(self, buffer: Any, feature_scale: Optional[np.ndarray]) -> None:
        from .replay import AfterstateReplayBuffer

        file = self.path / "replay_buffer.pkl"
        saved = _legacy_load(self.read_file("replay_buffer.pkl"), file)
        try:
            if isinstance(buffer, AfterstateReplayBuffer) and "taken_rows" not in saved.__dict__:
                saved = AfterstateReplayBuffer.from_replay_buffer(saved, feature_scale)
            for name in REPLAY_ARRAYS[type(buffer).__name__]:
                getattr(buffer, name)[...] = getattr(saved, name)
            buffer.pos, buffer.full = int(saved.pos), bool(saved.full)
        except Exception as error:  # a buffer of another shape or class
            raise CheckpointError(f"{file} does not fit this config's replay buffer: {error}") from None


# -- earlier formats: the data-only unpickler -----------------------------------------------------


def _safe_load_from_bytes(data: bytes) -> Any:
    import torch as th

    return th.load(io.BytesIO(data), weights_only=True)


def _global(module: str, name: str) -> Callable[[], Any]:
    def get() -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)

    return get


_DATA_GLOBALS: dict[str, Callable[[], Any]] = {
    f"{module}.{name}": _global(module, name)
    for module, name in (
        ("collections", "OrderedDict"),
        ("collections", "deque"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
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
        ("torch._utils", "_rebuild_tensor_v2"),
    )
}
# numpy 1.x pickles name numpy.core; torch pickles storages as nested torch.save data, read weights-only
_DATA_GLOBALS.update(
    {key.replace("numpy._core", "numpy.core"): get for key, get in _DATA_GLOBALS.items() if "numpy._core" in key}
)
_DATA_GLOBALS["torch.storage._load_from_bytes"] = lambda: _safe_load_from_bytes


class _DataUnpickler(pickle.Unpickler):
    """Builds only the data types earlier checkpoints hold; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        get = _DATA_GLOBALS.get(f"{module}.{name}")
        if get is None:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a checkpoint never holds")
        return get()


def _legacy_load(data: bytes, file: Path) -> Any:
    return _legacy_loads(data, str(file))


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


def _fresh_tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
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
