"""Stopping a run at a clean point: on request from a callback, or on SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Optional

log = logging.getLogger(__name__)


class StopControl:
    """Why the run should stop at the next clean point, if it should. The first reason wins."""

    def __init__(self) -> None:
        self.reason: Optional[str] = None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


class stop_on_signals:
    """Context manager: the first SIGINT or SIGTERM asks ``control`` to stop (reason
    ``interrupted``); a second SIGINT interrupts at once."""

    def __init__(self, control: StopControl):
        self.control = control
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.control.reason == "interrupted" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning(
            "%s received: saving a checkpoint at the next step, then stopping (Ctrl-C again to abort at once)",
            signal.Signals(signum).name,
        )
        self.control.request("interrupted")

    def __enter__(self) -> stop_on_signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
