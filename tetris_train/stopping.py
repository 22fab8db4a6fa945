"""Stopping a run at a clean point: on request from a callback, on SIGINT/SIGTERM, or on the signal
a cluster sends before a job's time limit (then the job is requeued once its checkpoint is saved)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Optional

log = logging.getLogger(__name__)

# what SLURM sends a job signal_delay_s before its time limit, or on preemption (submitit's choice)
REQUEUE_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)


class StopControl:
    """Why the run should stop at the next clean point, if it should. The first reason wins."""

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self.signals = 0
        self._writing = False
        self._abort_after_writing = False
        self.requeue: Optional[Callable[[], None]] = None  # the launcher's requeue, once it signalled

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """While a checkpoint is written, a second Ctrl-C waits for it instead of discarding it."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._abort_after_writing:
            raise KeyboardInterrupt

    def on_signal(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.warning(
                "%s received: saving a checkpoint at the next step, then stopping (Ctrl-C again to abort at once)", name
            )
            self.request("interrupted")
        elif signum == signal.SIGINT:
            if self._writing:
                log.warning("SIGINT: aborting once the checkpoint being written is complete")
                self._abort_after_writing = True
            else:
                raise KeyboardInterrupt
        else:
            log.warning("%s received: already stopping", name)


class stop_on_signals:
    """Context manager: the first SIGINT or SIGTERM asks ``control`` to stop (reason ``interrupted``);
    a second SIGINT interrupts at once, but not in the middle of writing a checkpoint.

    In a job of a cluster launcher that requeues on :data:`REQUEUE_SIGNAL` (submitit on SLURM), that
    signal too stops the run at the next step, and ``control.requeue`` then hands the job back to the
    launcher's handler, which requeues it: the requeued job continues from that very step.
    """

    def __init__(self, control: StopControl):
        self.control = control
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.control.on_signal(signum)

    def _handle_requeue(self, signum: int, frame: Optional[FrameType]) -> None:
        launcher_handler = self._previous[signum]
        if self.control.requeue is None:
            log.warning(
                "%s received (the job's time limit is near, or it is preempted): saving a checkpoint at the "
                "next step, then requeueing the job",
                signal.Signals(signum).name,
            )
            self.control.requeue = lambda: launcher_handler(signum, None)  # type: ignore[operator]
        self.control.request("interrupted")

    def __enter__(self) -> stop_on_signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
            launcher_handler = signal.getsignal(REQUEUE_SIGNAL)
            if callable(launcher_handler) and REQUEUE_SIGNAL not in self._previous:  # a launcher's, not the default
                self._previous[REQUEUE_SIGNAL] = signal.signal(REQUEUE_SIGNAL, self._handle_requeue)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
