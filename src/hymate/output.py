"""How much hymate prints: ``--verbose`` reaches the library (and run subprocesses) as an
environment variable, so every module asks the same question the same way."""

from __future__ import annotations

import os
import sys

VERBOSE_ENV = "HYMATE_VERBOSE"


def verbose() -> bool:
    """True under ``--verbose`` (or ``HYMATE_VERBOSE=1``): show what is normally filtered."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def is_terminal(stream=None) -> bool:
    """Whether `stream` (default: stdout, where Lightning's bar draws) is a terminal; False for a
    missing stream (a daemon's)."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())
