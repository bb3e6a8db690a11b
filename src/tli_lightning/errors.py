"""The exceptions the CLI turns into a clean message and an exit code (no traceback)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import NoReturn


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


def usage_error(prog: str, message: str) -> NoReturn:
    """A command-line mistake as one line (not the whole usage block), with where the options are listed."""
    prog = prog.replace(" [options]", "")
    message = " ".join(message.split())  # jsonargparse's messages span lines
    sys.stderr.write(f"error: {message} (every option: {prog} --help)\n")
    raise SystemExit(2)


class OneLineArgumentParser(argparse.ArgumentParser):
    """``argparse`` reporting a mistake as one ``error:`` line."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)
