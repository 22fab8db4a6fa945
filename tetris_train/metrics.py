"""Metric files of a run: ``metrics.csv`` (which survives a resume) and TensorBoard events."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from stable_baselines3.common.logger import (
    CSVOutputFormat,
    KVWriter,
    Logger,
    TensorBoardOutputFormat,
    filter_excluded_keys,
)

from .run_folder import METRICS_FILE, write_atomic

STEP_COLUMN = "time/total_timesteps"


def column_order(keys: Iterable[str]) -> list[str]:
    """The step first, then the rest by name (so grouped by prefix: eval/, rollout/, time/, train/).

    The same keys always give the same order, whichever row brought them first and in whichever
    process: SB3 appends new keys in set order, which differs between runs.
    """
    return sorted(set(keys), key=lambda key: (key != STEP_COLUMN, key))


class ResumableCSVOutputFormat(CSVOutputFormat):
    """SB3's CSV writer, but continuing an existing file instead of truncating it, with the columns
    in :func:`column_order`.

    Rows logged after ``keep_until_step`` (steps that a resumed run will train again) are dropped.
    """

    def __init__(self, filename: str, keep_until_step: Optional[int] = None):
        self.path = Path(filename)
        header: list[str] = []
        rows: list[list[str]] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, [])
                rows = list(reader)
            if keep_until_step is not None and STEP_COLUMN in header:
                column = header.index(STEP_COLUMN)
                rows = [r for r in rows if len(r) > column and r[column] != "" and float(r[column]) <= keep_until_step]
        self.keys: list[str] = []
        self.separator = ","
        self.quotechar = '"'
        self.file = None
        self._rewrite(header, rows, column_order(header))

    def _rewrite(self, header: list[str], rows: list[list[str]], keys: list[str]) -> None:
        """Write the file anew with the columns ``keys`` (rows laid out by ``header``), in one step."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if keys:
            writer.writerow(keys)
            positions = [header.index(key) if key in header else None for key in keys]
            for row in rows:
                writer.writerow(["" if i is None or i >= len(row) else row[i] for i in positions])
        if self.file is not None:
            self.file.close()
        write_atomic(self.path, text.getvalue())
        self.file = open(self.path, "r+", newline="")
        self.file.seek(0, 2)
        self.keys = keys

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        """Append a row; a key the file has no column for yet gets its place in the order first."""
        new = filter_excluded_keys(key_values, key_excluded, "csv").keys() - set(self.keys)
        if new:
            self.file.seek(0)
            reader = csv.reader(self.file)
            header = next(reader, [])
            self._rewrite(header, list(reader), column_order([*self.keys, *new]))
        super().write(key_values, key_excluded, step)


class ResumableTensorBoardOutputFormat(TensorBoardOutputFormat):
    """SB3's TensorBoard writer, whose events after ``keep_until_step`` (written before a resume, for
    steps trained again) are hidden: TensorBoard shows each step once, as ``metrics.csv`` does."""

    def __init__(self, folder: str, keep_until_step: Optional[int] = None):
        # SB3's __init__ opens a writer without purge_step (an extra, empty event file): build it here
        from torch.utils.tensorboard import SummaryWriter

        purge_step = None if keep_until_step is None else keep_until_step + 1
        self.writer = SummaryWriter(log_dir=folder, purge_step=purge_step)
        self._is_closed = False


def configure_logger(run_dir: Path, tensorboard: bool, keep_until_step: Optional[int] = None) -> Logger:
    """SB3 logger writing ``metrics.csv`` and, if asked, TensorBoard events under ``tensorboard/``.

    ``keep_until_step`` (on a resume: the checkpoint's step) drops what both hold for later steps.
    """
    formats: list[KVWriter] = [ResumableCSVOutputFormat(str(run_dir / METRICS_FILE), keep_until_step)]
    if tensorboard:
        formats.append(ResumableTensorBoardOutputFormat(str(run_dir / "tensorboard"), keep_until_step))
    return Logger(str(run_dir), formats)
