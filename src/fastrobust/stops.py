"""Stopping a run cleanly: Ctrl-C and SIGTERM end training the same way.

SIGTERM is what SLURM and most schedulers send before they kill a job. Inside
:func:`stop_on_signals` both SIGINT and SIGTERM raise :class:`Stopped` (a KeyboardInterrupt,
so code that already handles Ctrl-C handles both); the trainer catches it, keeps the last
completed epoch's ``last.pt`` and returns. Work that must not be cut in half (recording an
epoch: ``best.pt``, ``last.pt``, metrics) runs inside :func:`held`, which delays a stop to the
end of the block. The command line exits with ``128 + signal number`` (130, 143), as shells do.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: the signals that stop a run
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop requested by a signal (``signum``: 2 for Ctrl-C, 15 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


_holding = 0
_pending: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _holding:
        _pending.append(signum)
        return
    raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` inside the block (main thread only;
    elsewhere the block runs unchanged); the previous handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _pending.clear()


@contextmanager
def held() -> Iterator[None]:
    """Delay a stop signal that arrives inside the block to its end (then raise Stopped)."""
    global _holding
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
    if not _holding and _pending:
        signum = _pending[0]
        _pending.clear()
        raise Stopped(signum)


def exit_status(signum: int) -> int:
    """The conventional exit status of a process stopped by ``signum`` (130, 143)."""
    return 128 + int(signum)
