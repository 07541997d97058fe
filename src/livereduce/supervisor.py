"""The supervisor: one loop on the main thread that owns the engine's lifecycle.

Every trigger becomes an event on one queue and only this loop acts on it. A signal handler only records the
signal (an ``append`` and a byte on a pipe: no lock, so it cannot deadlock with the thread it interrupts);
engine threads report the same way.

States: ``starting`` (scripts validated, engine connecting) -> ``running`` -> ``stopping`` -> exit.

| event | action | exit code |
|-------|--------|-----------|
| SIGTERM, SIGINT | stop the engine (bounded by ``stop_timeout``) | 0 (1 if the engine did not stop in time) |
| engine finished (run_transition Stop) | stop | 0 |
| engine failed (source error) | log the cause, stop | the error's exit code (3 for a source) |
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
from dataclasses import dataclass
from types import FrameType

from livereduce.engines.base import Engine, EngineFailed, EngineFinished
from livereduce.errors import EXIT_INTERNAL, EXIT_OK, LiveReduceError
from livereduce.scripts import ProcessingScripts

_log = logging.getLogger("livereduce")
_manager_log = logging.getLogger("livereduce.LiveDataManager")

STOP_TIMEOUT = 30.0
"""Seconds the engine gets to stop before the daemon gives up waiting and exits non-zero."""


@dataclass(frozen=True)
class SignalReceived:
    """A signal arrived (recorded by the handler, acted on by the loop)."""

    signum: int


Event = SignalReceived | EngineFinished | EngineFailed


class EventQueue:
    """A queue that threads and signal handlers can post to without taking a lock.

    ``collections.deque.append`` is atomic; a byte on a pipe wakes the waiting loop.
    """

    def __init__(self) -> None:
        self._events: collections.deque[Event] = collections.deque()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def put(self, event: Event) -> None:
        """Post an event (safe from any thread and from a signal handler)."""
        self._events.append(event)
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to ``timeout`` seconds (None: forever); None on timeout."""
        while not self._events:
            ready, _, _ = select.select([self._read], [], [], timeout)
            if not ready:
                return None
            os.read(self._read, 4096)
        return self._events.popleft()

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


class Supervisor:
    """Starts the engine with the scripts and reacts to events until the daemon must exit."""

    def __init__(self, engine: Engine, scripts: ProcessingScripts, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.engine = engine
        self.scripts = scripts
        self.stop_timeout = stop_timeout
        self.events = EventQueue()

    def run(self) -> int:
        """Run until a stop; returns the process exit code.

        Raises:
            LiveReduceError: the engine could not start (e.g. :class:`~livereduce.errors.SourceError`).
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for script in self.scripts:
                _log.info("Using %s '%s'", script.property_name, script.path)
            self.engine.start(self.scripts, self.events.put)
            while True:
                event = self.events.get()
                code = self._handle(event)
                if code is not None:
                    return code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.events.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002 - signal API
        self.events.put(SignalReceived(signum))

    def _handle(self, event: Event | None) -> int | None:
        """Act on one event; an exit code ends the loop."""
        if isinstance(event, SignalReceived):
            _log.info("received %s(%d)", signal.Signals(event.signum).name, event.signum)
            return self._stop(EXIT_OK)
        if isinstance(event, EngineFinished):
            _log.info("Live data finished: %s", event.reason)
            return self._stop(EXIT_OK)
        if isinstance(event, EngineFailed):
            error = event.error
            if isinstance(error, LiveReduceError):
                _log.error("Live data failed: %s", error)
                return self._stop(error.exit_code)
            _log.error("Live data failed with an internal error", exc_info=error)
            return self._stop(EXIT_INTERNAL)
        return None

    def _stop(self, code: int) -> int:
        _manager_log.info("stopping live data processing")
        if not self.engine.stop(self.stop_timeout):
            _manager_log.error("live data processing did not stop within %g s; exiting anyway", self.stop_timeout)
            return code or EXIT_INTERNAL
        return code
