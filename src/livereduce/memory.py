"""The memory monitor: the daemon's resident memory (with its children, psutil) against the limit.

The limit is ``system_mem_limit_perc`` percent of the total RAM and/or ``mem_limit_mb`` (the smaller applies);
checked every ``mem_check_interval_sec`` seconds. Over the limit, :class:`MemoryExceeded` is posted to the
supervisor, which restarts the engine (clearing the accumulation) and exits when restarts do not help.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from livereduce.config import Config

_log = logging.getLogger("livereduce")


@dataclass(frozen=True)
class MemoryExceeded:
    """RSS (bytes) above the limit (bytes), measured at ``when`` (``time.monotonic()``)."""

    rss: int
    limit: int
    when: float


def memory_limit(config: Config) -> int | None:
    """The limit in bytes: the smaller of ``system_mem_limit_perc`` % of total RAM (if > 0) and ``mem_limit_mb``
    MiB (if set); None when neither applies."""
    limits = []
    if config.system_mem_limit_perc > 0:
        limits.append(int(psutil.virtual_memory().total * config.system_mem_limit_perc / 100))
    if config.mem_limit_mb is not None:
        limits.append(int(config.mem_limit_mb * 1024 * 1024))
    return min(limits) if limits else None


def resident_bytes(process: psutil.Process | None = None) -> int:
    """RSS of the process and all its children, in bytes (children that vanish meanwhile are skipped)."""
    process = process or psutil.Process()
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


class MemoryMonitor:
    """Checks RSS every ``interval`` seconds in a thread; posts :class:`MemoryExceeded` while over ``limit``.

    At most one event is outstanding: the next is posted only after the supervisor called :meth:`handled`.
    """

    def __init__(self, limit: int | None, interval: float, post: Callable[[MemoryExceeded], None]) -> None:
        self.limit = limit
        self.rss = resident_bytes()
        self._interval = interval
        self._post = post
        self._outstanding = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="MemoryMonitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def handled(self) -> None:
        """The supervisor acted on the last event; the next check may post again."""
        self._outstanding.clear()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.rss = resident_bytes()
            except psutil.Error as err:  # never let the monitor die silently
                _log.warning("Memory check failed: %s", err)
                continue
            if self.limit is not None and self.rss > self.limit and not self._outstanding.is_set():
                self._outstanding.set()
                self._post(MemoryExceeded(self.rss, self.limit, time.monotonic()))
