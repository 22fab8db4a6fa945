"""The training progress bar: steps of the whole run, with log lines printed above it."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

from stable_baselines3.common.callbacks import BaseCallback


class ProgressBarCallback(BaseCallback):
    """A tqdm bar counting the run's steps as the log does (a resumed run starts where it stopped,
    the end is ``schedule.max_timesteps``). While it shows, log records go through tqdm's own
    writer, which prints them above the bar instead of gluing them to its line."""

    def __init__(self, total: int):
        super().__init__()
        self.total = total
        self.bar: Optional[Any] = None
        self._redirect: Optional[contextlib.ExitStack] = None

    def _on_training_start(self) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._redirect = contextlib.ExitStack()
        self._redirect.enter_context(logging_redirect_tqdm())
        self.bar = tqdm(
            total=self.total, initial=self.model.num_timesteps, unit="step", unit_scale=True, dynamic_ncols=True
        )

    def _on_step(self) -> bool:
        assert self.bar is not None
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar and give the log its console back (also when training ends by an exception)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None
