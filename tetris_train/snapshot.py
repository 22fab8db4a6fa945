"""What it takes to run a run again: its config (``config.yaml``) and ``snapshot.json``, which records
the command, the package versions and the git commit of the code.

``python -m tetris_train rerun=<run folder>`` trains that config again, validated by the schema,
into a new run folder; on CPU with the same code and versions it reproduces the run's metrics.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .cli import ResumeError
from .run_folder import CONFIG_FILE, write_atomic
from .versions import package_versions

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "snapshot.json"
RERUN_CHANGEABLE = ("agent.device", "schedule.progress_bar")


def code_version() -> Optional[dict[str, Any]]:
    """The git commit of this package's source tree (and whether it has uncommitted changes);
    None when the package is not running from a git checkout."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None  # an installed copy inside some other repository
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return None


def snapshot(overrides: Optional[list[str]] = None) -> dict[str, Any]:
    return {
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "overrides": list(overrides) if overrides is not None else None,
        "versions": package_versions(),
        "git": code_version(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_snapshot(run_dir: Path) -> None:
    """Record this session in ``run_dir``; a run continued in its folder keeps its earlier sessions."""
    path = Path(run_dir) / SNAPSHOT_FILE
    record = snapshot(task_overrides())
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = None
    if isinstance(earlier, dict):
        record["earlier"] = [*earlier.pop("earlier", []), earlier]
    write_atomic(path, json.dumps(record, indent=2) + "\n")


def task_overrides() -> Optional[list[str]]:
    """The command line's overrides when running under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def rerun_config(run_dir: str, changes: dict[str, Any]) -> Any:
    """The TrainingConfig (an OmegaConf node of the schema) of the run in ``run_dir``, with ``changes``
    (dotted keys from RERUN_CHANGEABLE) on top. Warns where the code or the versions differ from the run's."""
    from omegaconf import OmegaConf

    from .config import TrainingConfig, complete_saved_config

    folder = Path(run_dir).expanduser()
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"rerun={run_dir}: no run folder there (a run folder holds {CONFIG_FILE})")
    import yaml

    try:
        saved = yaml.safe_load((folder / CONFIG_FILE).read_text())
    except yaml.YAMLError as error:
        raise ResumeError(f"rerun={run_dir}: {CONFIG_FILE} is unreadable: {' '.join(str(error).split())}") from None
    if not isinstance(saved, dict):
        raise ResumeError(f"rerun={run_dir}: {CONFIG_FILE} holds no config")
    config = OmegaConf.merge(OmegaConf.structured(TrainingConfig), complete_saved_config(saved))
    for key, value in changes.items():
        OmegaConf.update(config, key, value, merge=False)
    config.rerun = str(folder.resolve())
    config.resume = None  # a run that was resumed or continued is trained again from its first step
    warn_if_different(folder)
    return config


def warn_if_different(run_dir: Path) -> None:
    try:
        recorded = json.loads((run_dir / SNAPSHOT_FILE).read_text())
    except (OSError, ValueError):
        log.warning("%s has no %s: the code and versions it ran with are unknown", run_dir, SNAPSHOT_FILE)
        return
    now = snapshot()
    changed = [
        f"{name} {(recorded.get('versions') or {}).get(name)} -> {version}"
        for name, version in now["versions"].items()
        if (recorded.get("versions") or {}).get(name) != version
    ]
    if (recorded.get("git") or {}).get("commit") != (now["git"] or {}).get("commit"):
        changed.append(f"git commit {(recorded.get('git') or {}).get('commit')} -> {(now['git'] or {}).get('commit')}")
    if changed:
        log.warning("re-running with other code than the run had, results may differ: %s", "; ".join(changed))


def rerun_config_from(cfg: Any, overrides: list[str]) -> Any:
    """The TrainingConfig of ``rerun=<run folder>`` on the command line: the run's own config, with
    only the RERUN_CHANGEABLE keys of the command line on top."""
    from omegaconf import OmegaConf

    from .cli import describe_error

    changes = {}
    for override in overrides:
        key = override.split("=", 1)[0]
        if key == "rerun":
            continue
        if key not in RERUN_CHANGEABLE:
            raise ResumeError(
                f"{override}: rerun= trains the run's own config again; only "
                f"{' and '.join(RERUN_CHANGEABLE)} can change (for other changes, start a new run)"
            )
        changes[key] = OmegaConf.select(cfg, key)
    try:
        return OmegaConf.to_object(rerun_config(str(cfg.rerun), changes))
    except (ResumeError, FileNotFoundError):
        raise
    except Exception as error:
        message = describe_error(error) or " ".join(str(error).split())
        raise ResumeError(f"rerun={cfg.rerun}: its config.yaml does not fit the schema: {message}") from None
