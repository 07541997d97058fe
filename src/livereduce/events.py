"""The supervisor's event queue and the signal handlers that post to it.

Imports only the standard library, so that the entry point can install the handlers before anything else is
imported (:mod:`livereduce.launch`): a signal during start-up is recorded, never fatal.

The queue is a :class:`queue.SimpleQueue`, whose ``put`` is reentrant (safe from a signal handler and from any
thread) and whose ``get`` is woken by signals. Nothing is ever closed: an event posted late, e.g. by a thread that
outlived a stop timeout, lands in a queue nobody reads any more, harmlessly.
"""

from __future__ import annotations

import queue
import signal
from dataclasses import dataclass
from typing import Any

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
"""Signals the daemon handles (see ``docs/operations.md``): stop, stop, reload, stacks, status line, ignored."""


@dataclass(frozen=True)
class SignalReceived:
    """A signal arrived (recorded by the handler, acted on by the supervisor)."""

    signum: int


class EventQueue:
    """Events for the supervisor, posted from threads and signal handlers without a lock."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, event: object) -> None:
        """Post an event (safe from any thread and from a signal handler; never fails)."""
        self._events.put(event)

    def get(self, timeout: float | None = None) -> Any | None:
        """The next event, waiting up to ``timeout`` seconds (None: forever); None on timeout."""
        try:
            return self._events.get(timeout=timeout) if timeout is None or timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return None


def record_signals(events: EventQueue) -> None:
    """From now on, the signals of :data:`HANDLED_SIGNALS` are only recorded on ``events``."""
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, lambda signum, _frame: events.put(SignalReceived(signum)))


def restore_signals() -> None:
    """Give the handled signals their default action again."""
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
