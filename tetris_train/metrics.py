"""Metric files of a run: ``metrics.csv`` (which survives a resume) and TensorBoard events."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger

from .run_folder import METRICS_FILE

STEP_COLUMN = "time/total_timesteps"


class ResumableCSVOutputFormat(CSVOutputFormat):
    """SB3's CSV writer, but continuing an existing file instead of truncating it.

    Rows logged after ``keep_until_step`` (steps that a resumed run will train again) are dropped.
    """

    def __init__(self, filename: str, keep_until_step: Optional[int] = None):
        path = Path(filename)
        rows: list[list[str]] = []
        header: list[str] = []
        if path.exists() and path.stat().st_size > 0:
            with open(path, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, [])
                rows = list(reader)
            if keep_until_step is not None and STEP_COLUMN in header:
                column = header.index(STEP_COLUMN)
                rows = [r for r in rows if len(r) > column and r[column] != "" and float(r[column]) <= keep_until_step]
            with open(path, "w", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                if header:
                    writer.writerow(header)
                writer.writerows(rows)
        self.file = open(path, "r+t" if path.exists() else "w+t")
        self.file.seek(0, 2)
        self.keys = header
        self.separator = ","
        self.quotechar = '"'


def configure_logger(run_dir: Path, tensorboard: bool, keep_until_step: Optional[int] = None) -> Logger:
    """SB3 logger writing ``metrics.csv`` and, if asked, TensorBoard events under ``tensorboard/``."""
    formats: list[KVWriter] = [ResumableCSVOutputFormat(str(run_dir / METRICS_FILE), keep_until_step)]
    if tensorboard:
        from stable_baselines3.common.logger import TensorBoardOutputFormat

        formats.append(TensorBoardOutputFormat(str(run_dir / "tensorboard")))
    return Logger(str(run_dir), formats)
