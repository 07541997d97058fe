"""Time as the supervisor and the engines see it, injectable so that their logic runs in tests without waiting.

:class:`SystemClock` is the real one. Tests pass a clock whose ``wait`` advances its own time instead of sleeping,
which makes schedules and back-off deterministic and instant.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the supervisor and the scipp engine need of time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals and deadlines)."""

    def time(self) -> float:
        """Wall-clock time, seconds since the Unix epoch (for logs and the status file)."""

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds pass (None: no limit); True if it is set."""


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``Event.wait``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(timeout)
