"""The supervisor: one loop on the main thread that owns the engine's lifecycle.

Every trigger becomes an event on one queue and only this loop acts on it: there is no restart from a side
thread and no lifecycle work in a signal handler. A signal handler only records the signal (an ``append`` and
a byte on a pipe: no lock, so it cannot deadlock with the code it interrupts); the file watcher, the memory
monitor and the engine's thread post the same way. See ``docs/architecture.md`` for the state diagram.

| event | action |
|---|---|
| SIGTERM, SIGINT | stop the engine (bounded by ``stop_timeout_sec``), exit 0 |
| SIGHUP | reload: re-read the scripts and restart the engine |
| SIGQUIT | dump every thread's stack to the log, exit 7 |
| configuration file content changed | stop, exit 0 (systemd restarts with the new configuration) |
| script changed/created/deleted | validate; restart with the new set, keep the last good one, or wait for one |
| memory above the limit | restart the engine (clears the accumulation); exit 5 if that keeps happening |
| engine finished (run_transition Stop) | stop, exit 0 |
| engine failed | log the cause; restart with exponential back-off (1 s doubling to 60 s) |
| tick (every second) | status file, sd_notify STATUS/READY/WATCHDOG |
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from livereduce import __version__
from livereduce.config import LoadedConfig
from livereduce.engines.base import Engine, EngineFailed, EngineFinished, EngineState
from livereduce.errors import (
    EXIT_MEMORY,
    EXIT_OK,
    EXIT_SIGQUIT,
    EXIT_STOP_TIMEOUT,
    LiveReduceError,
    ScriptError,
)
from livereduce.memory import MemoryExceeded, MemoryMonitor, memory_limit
from livereduce.scripts import NoScripts, ProcessingScripts, load_scripts, script_paths
from livereduce.status import Notifier, StatusFile, default_status_file, summary
from livereduce.watch import FilesChanged, FileWatcher, content_hash

_log = logging.getLogger("livereduce")
_manager_log = logging.getLogger("livereduce.LiveDataManager")
_events_log = logging.getLogger("livereduce.EventHandler")

TICK_SECONDS = 1.0
"""Period of status updates and systemd watchdog pings."""
BACKOFF_MAX_SECONDS = 60.0
"""Longest wait before restarting a failed engine (the wait doubles from 1 s; it starts again from 1 s after an
engine that ran this long before failing)."""
MEMORY_RESTARTS = 3
"""In-process restarts for memory within :data:`MEMORY_WINDOW_SECONDS` before the daemon exits (code 5)."""
MEMORY_WINDOW_SECONDS = 600.0


@dataclass(frozen=True)
class SignalReceived:
    """A signal arrived (recorded by the handler, acted on by the loop)."""

    signum: int


@dataclass(frozen=True)
class FromEngine:
    """An engine's event, tagged with the start it belongs to (events of a replaced engine are ignored)."""

    generation: int
    event: EngineFinished | EngineFailed


Event = SignalReceived | FromEngine | FilesChanged | MemoryExceeded


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


HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def record_signals(events: EventQueue) -> None:
    """From now on, SIGTERM/SIGINT/SIGHUP/SIGQUIT are only recorded on ``events`` (called first thing, so that
    a signal during start-up is handled, not fatal)."""
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, lambda signum, _frame: events.put(SignalReceived(signum)))


class _Exit(Exception):
    """Ends the loop with an exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Supervisor:
    """Owns the engine: starts it, restarts it on script changes, memory and failures, stops it.

    Args:
        loaded: the configuration (its path and hash are watched).
        make_engine: builds a new, unstarted engine (called for every start).
        scripts: the scripts validated at start-up.
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        make_engine: Callable[[], Engine],
        scripts: ProcessingScripts,
        events: EventQueue | None = None,
    ) -> None:
        config = loaded.config
        self.loaded = loaded
        self.make_engine = make_engine
        self.scripts: ProcessingScripts | None = scripts
        self.stop_timeout = config.stop_timeout_sec
        self.events = events or EventQueue()
        info = config.instrument_info()
        self.script_dir = config.resolved_script_dir()
        self.short_name = info.short_name
        watched = list(script_paths(self.script_dir, self.short_name).values())
        if loaded.path is not None:
            watched.append(loaded.path)
        self.watcher = FileWatcher(watched, self.events.put, config.poll_interval_sec)
        self.memory = MemoryMonitor(memory_limit(config), config.mem_check_interval_sec, self.events.put)
        self.notifier = Notifier()
        self.status_file = StatusFile(
            Path(config.status_file).absolute() if config.status_file else default_status_file()
        )
        self.engine: Engine | None = None
        self.state = "starting"
        self.started = time.time()
        self.engine_started = 0.0
        self.restarts = {"scripts": 0, "memory": 0, "failures": 0, "signals": 0}
        self._failures_in_a_row = 0
        self._restart_at: float | None = None
        self._memory_restarts: collections.deque[float] = collections.deque()
        self._ready = False
        self._last_error = ("", None)
        self._last_cycle_end: float | None = None  # kept across engine restarts
        self._generation = 0  # counts engine starts

    # --- the loop -------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until a stop; returns the process exit code.

        Raises:
            LiveReduceError: the engine could not start the first time (e.g. a source error, exit 3).
        """
        record_signals(self.events)
        try:
            while (early := self.events.get(timeout=0)) is not None:  # signals during start-up
                self._handle(early)
            self._start_engine()
            self.watcher.start()
            self.memory.start()
            return self._loop()
        except _Exit as done:
            self._publish()
            return done.code
        finally:
            self.watcher.stop()
            self.memory.stop()
            for sig in HANDLED_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            self.events.close()

    def _loop(self) -> int:
        next_tick = time.monotonic()
        while True:
            event = self.events.get(timeout=max(0.0, next_tick - time.monotonic()))
            try:
                if event is not None:
                    self._handle(event)
                if time.monotonic() >= next_tick:
                    self._tick()
                    next_tick = time.monotonic() + TICK_SECONDS
            except _Exit as done:
                self._publish()
                return done.code

    # --- events ---------------------------------------------------------------------------------------------
    def _handle(self, event: Event) -> None:
        if isinstance(event, SignalReceived):
            self._on_signal_event(event.signum)
        elif isinstance(event, FilesChanged):
            self._on_files_changed(event.paths)
        elif isinstance(event, MemoryExceeded):
            self._on_memory(event)
        elif isinstance(event, FromEngine) and event.generation == self._generation:
            if isinstance(event.event, EngineFinished):
                _log.info("Live data finished: %s", event.event.reason)
                self._stop_and_exit(EXIT_OK)
            self._on_engine_failed(event.event.error)

    def _on_signal_event(self, signum: int) -> None:
        _log.info("received %s(%d)", signal.Signals(signum).name, signum)
        if signum == signal.SIGHUP:
            self.restarts["signals"] += 1
            self.notifier.reloading()
            self._reload(force=True)
            self.notifier.ready()
            return
        if signum == signal.SIGQUIT:
            _log.error("Thread stacks at SIGQUIT:\n%s", thread_stacks())
            self.state = "stopped"
            raise _Exit(EXIT_SIGQUIT)
        self._stop_and_exit(EXIT_OK)

    def _on_files_changed(self, paths: frozenset) -> None:
        config_path = self.loaded.path
        if config_path is not None and config_path in paths:
            if content_hash(config_path) != self.loaded.sha256:
                _events_log.warning("Modifying configuration file is not supported- shutting down")
                self._stop_and_exit(EXIT_OK)
        for path in sorted(paths - {config_path}):
            _events_log.info('Processing script "%s" changed - restarting "StartLiveData"', path)
        if paths - {config_path}:
            self._reload(force=False)

    def _reload(self, force: bool) -> None:
        """Validate the scripts as they are now and restart with them; keep the last good set on errors."""
        try:
            scripts = load_scripts(self.script_dir, self.short_name)
        except NoScripts as err:
            _log.error("%s: no processing script left, live data stopped until one appears", err)
            self._stop_engine()
            self.scripts = None
            self.state = "waiting for scripts"
            self._publish()
            return
        except ScriptError as err:
            _log.error("%s; the last good version keeps running", err)
            self._last_error = (f"{err} (the last good version keeps running)", None)  # not a failed cycle
            return
        running = None if self.scripts is None else {s.role: s.sha256 for s in self.scripts}
        if not force and self.engine is not None and running == {s.role: s.sha256 for s in scripts}:
            for script in scripts:
                _events_log.info('Processing script "%s" has not changed md5sum - continuing', script.path)
            return
        self.scripts = scripts
        if not force:
            self.restarts["scripts"] += 1
        self._restart("scripts reloaded")

    def _on_memory(self, event: MemoryExceeded) -> None:
        try:
            if event.when < self.engine_started or self.engine is None:
                return  # measured before the last restart
            _log.error("Memory usage %.2f MB exceeds limit (%.2f MB)", event.rss / 1048576, event.limit / 1048576)
            now = time.monotonic()
            while self._memory_restarts and now - self._memory_restarts[0] > MEMORY_WINDOW_SECONDS:
                self._memory_restarts.popleft()
            if len(self._memory_restarts) >= MEMORY_RESTARTS:
                _log.error(
                    "Memory still above the limit after %d restarts within %g s: exiting so that a fresh "
                    "process starts",
                    len(self._memory_restarts),
                    MEMORY_WINDOW_SECONDS,
                )
                self._stop_and_exit(EXIT_MEMORY)
            self._memory_restarts.append(now)
            self.restarts["memory"] += 1
            self._restart("memory limit")
        finally:
            self.memory.handled()

    def _on_engine_failed(self, error: BaseException) -> None:
        if isinstance(error, LiveReduceError):
            _log.error("Live data failed: %s", error)
        else:
            _log.error("Live data failed with an internal error", exc_info=error)
        self._last_error = (str(error), time.time())
        if time.monotonic() - self.engine_started > BACKOFF_MAX_SECONDS:
            self._failures_in_a_row = 0  # it ran well for a while: start the back-off afresh
        self._stop_engine()
        self._schedule_restart()

    # --- engine lifecycle -----------------------------------------------------------------------------------
    def _start_engine(self) -> None:
        """Build and start an engine with the current scripts (raises what ``start`` raises)."""
        for script in self.scripts:
            _log.info("Using %s '%s'", script.property_name, script.path)
            self.watcher.accept(script.path, script.sha256)
        engine = self.make_engine()
        self.engine_started = time.monotonic()
        self._generation += 1
        generation = self._generation
        engine.start(self.scripts, lambda event: self.events.put(FromEngine(generation, event)))
        self.engine = engine
        self.state = "running"
        self._publish()

    def _restart(self, reason: str) -> None:
        _manager_log.info("Restarting Live Data and clearing workspaces (%s)", reason)
        self.state = "reloading"
        self._stop_engine()
        self._restart_at = None
        try:
            self._start_engine()
        except LiveReduceError as err:
            _log.error("Live data could not start: %s", err)
            self._last_error = (str(err), time.time())
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        self._failures_in_a_row += 1
        self.restarts["failures"] += 1
        delay = min(2.0 ** (self._failures_in_a_row - 1), BACKOFF_MAX_SECONDS)
        _manager_log.info("Restarting live data in %g s (failure %d in a row)", delay, self._failures_in_a_row)
        self._restart_at = time.monotonic() + delay
        self.state = "failed"

    def _stop_engine(self) -> None:
        """Stop the engine within the timeout; exit 6 if it does not stop (never hang)."""
        if self.engine is None:
            return
        _manager_log.info("stopping live data processing")
        engine, self.engine = self.engine, None
        if not engine.stop(self.stop_timeout):
            _manager_log.error(
                "live data processing did not stop within %g s (stop_timeout_sec); exiting", self.stop_timeout
            )
            _log.error("Thread stacks:\n%s", thread_stacks())
            self.state = "failed"
            raise _Exit(EXIT_STOP_TIMEOUT)

    def _stop_and_exit(self, code: int) -> None:
        self.state = "stopping"
        self.notifier.stopping()
        self._stop_engine()
        self.state = "stopped"
        raise _Exit(code)

    # --- periodic work --------------------------------------------------------------------------------------
    def _tick(self) -> None:
        if self._restart_at is not None and time.monotonic() >= self._restart_at and self.scripts is not None:
            self._restart("back-off after a failure")
        health = self.engine.health() if self.engine is not None else None
        if health is not None and health.chunks > 0 and not self._ready:
            self._ready = True
            self.notifier.ready()
        status = self._publish()
        if self._alive(health):
            self.notifier.watchdog()
        self.notifier.status(summary(status))

    def _alive(self, health: object) -> bool:
        """Whether to send WATCHDOG=1: cycles complete, or the daemon is deliberately idle (waiting, back-off)."""
        if self.state in ("waiting for scripts", "failed", "reloading"):
            return True
        if health is None or health.last_cycle_end is None:
            return time.monotonic() - self.engine_started < 2 * self.loaded.config.update_every + 30
        return time.time() - health.last_cycle_end < 2 * self.loaded.config.update_every + 30

    def _publish(self) -> dict[str, object]:
        """Write the status file; returns the status."""
        status = self.status()
        self.status_file.write(status)
        return status

    def status(self) -> dict[str, object]:
        """The daemon's status (see :mod:`livereduce.status` for the keys)."""
        health = self.engine.health() if self.engine is not None else None
        if health is not None and health.last_cycle_end is not None:
            self._last_cycle_end = health.last_cycle_end
        engine = {
            "name": getattr(self.engine, "name", ""),
            "state": health.state.value if health else EngineState.STOPPED.value,
            "source": health.source if health else "",
            "run_number": health.run_number if health else 0,
            "chunks": health.chunks if health else 0,
            "events": health.events if health else 0,
            "accumulated_events": health.accumulated_events if health else 0,
            "last_cycle_end": self._last_cycle_end,
            "last_cycle_duration": health.last_cycle_duration if health else None,
            "last_error": (health.last_error if health and health.last_error else self._last_error[0]),
            "last_error_time": health.last_error_time if health and health.last_error else self._last_error[1],
            "errors": health.errors if health else 0,
        }
        scripts = {role: None for role in ("proc", "post_proc")}
        for script in self.scripts or ():
            scripts[script.role] = {"path": str(script.path), "sha256": script.sha256}
        return {
            "pid": os.getpid(),
            "version": __version__,
            "state": self.state,
            "updated": time.time(),
            "started": self.started,
            "update_every": self.loaded.config.update_every,
            "config": {"path": str(self.loaded.path) if self.loaded.path else None, "sha256": self.loaded.sha256},
            "scripts": scripts,
            "engine": engine,
            "restarts": dict(self.restarts),
            "rss_bytes": self.memory.rss,
            "memory_limit_bytes": self.memory.limit,
        }


def thread_stacks() -> str:
    """Every thread's current stack, as text (for SIGQUIT and stop timeouts)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"Thread {names.get(ident, '?')} ({ident}):\n{''.join(traceback.format_stack(frame))}")
    return "\n".join(parts)
