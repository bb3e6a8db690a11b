"""The exceptions the CLI turns into a clean message and an exit code (no traceback)."""

from __future__ import annotations

import signal
from pathlib import Path


class TLIError(ValueError):
    """Bad input or an unsupported combination; the message says what to do instead."""


class RunInterrupted(BaseException):
    """A run stopped by SIGINT or SIGTERM (exit code 128 + the signal's number).

    A ``BaseException``, like ``KeyboardInterrupt``: raised from a signal handler, it must not be
    swallowed by library code that catches ``Exception``.
    """

    def __init__(self, signum: int, checkpoint: Path | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.checkpoint = checkpoint  # the checkpoint saved on the way out, if any

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
