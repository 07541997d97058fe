"""What the daemon's page shows, as JSON, from the status the supervisor publishes (no I/O, no web framework).

:func:`page_state` turns a :class:`~livereduce.status.Status` into the object the page's script renders: the
same ``key: value`` rows and health words as ``livereduce --status`` (:func:`livereduce.status_text.status_rows`),
and the figures of a small dashboard: run, chunks, events, lag, source health, memory against the limit, the last
error, and the event rate over the last :data:`RATE_WINDOW_S` seconds (:class:`RateHistory`).
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Final

from livereduce.status import EngineStatus, Status, health
from livereduce.status_text import status_rows

RATE_WINDOW_S: Final = 600.0
"""Seconds of event-rate history the page shows (10 minutes)."""
MAX_SAMPLES: Final = 1200
"""Most samples kept (the supervisor publishes about once a second, and at every change of state)."""


class RateHistory:
    """The event rate over time, from the totals of successive statuses (events/s).

    The totals grow once a cycle (every ``update_every``), while statuses come about once a second, so the rate is
    taken between two successive *changes* of the total, at the later one's time; a total that stays the same for
    more than twice the last interval between changes adds a rate of 0 (the data stopped).

    Args:
        window: seconds of history kept.
    """

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self._changes: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)  # (time s, events total)
        self._latest: tuple[float, int] | None = None

    def add(self, when: float, events: int) -> None:
        """A status published at ``when`` (Unix seconds) with ``events`` received in total. A sample not after the
        newest is ignored; a total that went down (another process wrote the status) starts the history again."""
        if self._latest is not None and when <= self._latest[0]:
            return
        if self._latest is not None and events < self._latest[1]:
            self._changes.clear()
        self._latest = (when, events)
        if not self._changes or events != self._changes[-1][1]:
            self._changes.append((when, events))
        while len(self._changes) > 2 and self._changes[1][0] < when - self.window:
            self._changes.popleft()

    def series(self) -> list[tuple[float, float]]:
        """``(time, events/s)`` between each two changes of the total, at the later one's time (Unix seconds), and
        ``(now, 0)`` when the total has not changed for more than twice the last interval."""
        changes = list(self._changes)
        points = [(t1, (e1 - e0) / (t1 - t0)) for (t0, e0), (t1, e1) in itertools.pairwise(changes) if t1 > t0]
        if len(changes) >= 2 and self._latest is not None:
            last_interval = changes[-1][0] - changes[-2][0]
            if self._latest[0] - changes[-1][0] > 2 * last_interval:
                points.append((self._latest[0], 0.0))
        return points


def page_state(instrument: str, status: Status | None, history: RateHistory, now: float) -> dict[str, Any]:
    """The page's JSON object.

    Keys: ``instrument``; ``healthy`` (bool) and ``health`` (the verdict's words, as ``--status``); ``state``;
    ``rows`` (``[[key, value], ...]`` as ``--status``); ``run``, ``chunks``, ``events`` (ints); ``first_pulse``
    (ISO-8601 or ""); ``lag`` (s or
    null), ``lagging`` (cause or ""); ``source``, ``source_healthy``, ``source_counters``; ``rss_bytes``,
    ``memory_limit_bytes`` (bytes or null); ``last_error`` and ``last_error_time`` (Unix s or null) while the error
    is current (no cycle has succeeded since; ``rows`` keep the last one); ``rate``
    (``[[time s, events/s], ...]`` over :data:`RATE_WINDOW_S`); ``updated`` (Unix s of the status or null).
    """
    if status is None:
        return {"instrument": instrument, "healthy": False, "health": "starting", "state": "starting", "rows": []}
    healthy, reason = health(status, now)
    engine = status.engine
    state: dict[str, Any] = {
        "instrument": instrument,
        "healthy": healthy,
        "health": f"{'OK' if healthy else 'UNHEALTHY'}: {reason}",
        "state": status.state or "unknown",
        "rows": [list(row) for row in status_rows(status, now)],
        "rss_bytes": status.rss_bytes,
        "memory_limit_bytes": status.memory_limit_bytes,
        "rate": [list(point) for point in history.series()],
        "updated": status.updated,
    }
    if engine is not None:
        current_error = _current_error(engine)
        state |= {
            "run": engine.run_number,
            "first_pulse": engine.first_pulse,
            "chunks": engine.chunks,
            "events": engine.events,
            "lag": engine.lag,
            "lagging": engine.lagging,
            "source": engine.source,
            "source_healthy": engine.source_healthy,
            "source_counters": engine.source_counters,
            "last_error": engine.last_error if current_error else "",
            "last_error_time": engine.last_error_time if current_error else None,
        }
    return state


def _current_error(engine: EngineStatus) -> bool:
    """Whether the last error is newer than the last cycle's end (a failed cycle records its error after its end;
    a cycle that succeeded since ends after it)."""
    if not engine.last_error or engine.last_error_time is None:
        return False
    return engine.last_cycle_end is None or engine.last_error_time >= engine.last_cycle_end
