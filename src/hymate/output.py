"""How much hymate prints: ``--verbose`` reaches the library (and run subprocesses) as an
environment variable, so every module asks the same question the same way."""

from __future__ import annotations

import os

VERBOSE_ENV = "HYMATE_VERBOSE"


def verbose() -> bool:
    """True under ``--verbose`` (or ``HYMATE_VERBOSE=1``): show what is normally filtered."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")
