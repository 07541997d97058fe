"""The supervisor: one loop on the main thread that owns the engine's lifecycle.

Every trigger becomes an event on one queue and only this loop acts on it: there is no restart from a side
thread and no lifecycle work in a signal handler. A signal handler only records the signal
(:mod:`livereduce.events`); the file watcher, the memory monitor and the engine's thread post the same way.

The supervisor is a state machine (:class:`State`, :data:`TRANSITIONS`): every change of state goes through
:meth:`Supervisor._enter`, which refuses a transition the table does not list (a bug the tests catch). At most
one engine exists at any moment by construction: an engine is only built by :meth:`Supervisor._start_engine`,
which refuses to run while one exists, and every path to it stops the previous one first.

| event | action |
|---|---|
| SIGTERM, SIGINT | stop the engine (bounded by ``stop_timeout_sec``), exit 0 |
| SIGHUP | reload: re-read the scripts and restart the engine |
| SIGQUIT | dump every thread's stack to the log, exit 7 |
| SIGUSR1 | log the status summary; SIGUSR2: logged and ignored |
| configuration file content changed | stop, exit 0 (systemd restarts with the new configuration) |
| script changed/created/deleted | validate; restart with the new set, keep the last good one, or wait for one |
| memory above the limit | restart the engine (clears the accumulation); exit 5 if that keeps happening |
| engine finished (run_transition Stop) | stop, exit 0 |
| engine failed, recoverable | log the cause; restart with exponential back-off (1 s doubling to 60 s) |
| engine failed, not recoverable (a corrupt file) | stop, exit with the error's code (3) |
| tick (every second) | status file, sd_notify STATUS/READY/WATCHDOG, watcher health, back-off restarts |
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import psutil

from livereduce import __version__, logs
from livereduce.clock import Clock, SystemClock
from livereduce.config import LoadedConfig
from livereduce.engines.base import (
    CycleCompleted,
    Engine,
    EngineEvent,
    EngineFailed,
    EngineFinished,
    EngineStarted,
    EngineState,
    Health,
)
from livereduce.errors import (
    EXIT_INTERNAL,
    EXIT_MEMORY,
    EXIT_OK,
    EXIT_SIGQUIT,
    EXIT_STOP_TIMEOUT,
    LiveReduceError,
    ScriptError,
)
from livereduce.events import EventQueue, SignalReceived, record_signals, restore_signals
from livereduce.memory import MemoryExceeded, MemoryMonitor, memory_limit
from livereduce.metrics import Metrics
from livereduce.scripts import NoScripts, ProcessingScripts, load_scripts, script_paths
from livereduce.status import Notifier, StatusFile, default_status_file, process_created, summary
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
CHILD_GRACE_SECONDS = 2.0
"""Seconds the processes started by scripts get after SIGTERM at the daemon's stop before they are killed."""


class State(StrEnum):
    """The daemon's states (the ``state`` of the status file)."""

    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    """Stopping the engine to start it again (script change, SIGHUP, memory, the end of a back-off)."""
    BACKING_OFF = "backing off"
    """The engine failed; it is restarted when the back-off delay has passed."""
    WAITING_FOR_SCRIPTS = "waiting for scripts"
    STOPPING = "stopping"
    STOPPED = "stopped"
    STOP_TIMED_OUT = "stop timed out"
    """The engine did not stop within ``stop_timeout_sec``: the daemon exits 6."""


_WITH_ENGINE = (State.STARTING, State.RUNNING, State.RELOADING, State.STOPPING)
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.RUNNING, State.BACKING_OFF, State.STOPPING}),
    State.RUNNING: frozenset(
        {State.RELOADING, State.BACKING_OFF, State.WAITING_FOR_SCRIPTS, State.STOPPING, State.STOP_TIMED_OUT}
    ),
    State.RELOADING: frozenset(
        {State.RUNNING, State.BACKING_OFF, State.WAITING_FOR_SCRIPTS, State.STOPPING, State.STOP_TIMED_OUT}
    ),
    State.BACKING_OFF: frozenset({State.RELOADING, State.WAITING_FOR_SCRIPTS, State.STOPPING}),
    State.WAITING_FOR_SCRIPTS: frozenset({State.RELOADING, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED, State.STOP_TIMED_OUT}),
    State.STOPPED: frozenset(),
    State.STOP_TIMED_OUT: frozenset(),
}
"""The legal transitions; anything else raises :class:`IllegalTransition`."""


class IllegalTransition(RuntimeError):
    """A transition :data:`TRANSITIONS` does not allow, or a second engine: a bug in the supervisor."""


class FromEngine:
    """An engine's event, tagged with the start it belongs to (events of a replaced engine are ignored)."""

    __slots__ = ("event", "generation")

    def __init__(self, generation: int, event: EngineEvent) -> None:
        self.generation = generation
        self.event = event


class _Exit(Exception):
    """Ends the loop with an exit code and a reason (for the final log line and status)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code)
        self.code = code
        self.reason = reason


class Supervisor:
    """Owns the engine: starts it, restarts it on script changes, memory and failures, stops it.

    Args:
        loaded: the configuration (its path and hash are watched).
        make_engine: builds a new, unstarted engine (called for every start).
        scripts: the scripts validated at start-up.
        events: the queue the signal handlers already post to (default: a new one, handlers installed by
            :meth:`run`).
        clock: time source (tests inject one).
        watcher: the file watcher (default: scripts and configuration, see :class:`FileWatcher`).
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        make_engine: Callable[[], Engine],
        scripts: ProcessingScripts,
        events: EventQueue | None = None,
        *,
        clock: Clock | None = None,
        watcher: FileWatcher | None = None,
    ) -> None:
        config = loaded.config
        self.loaded = loaded
        self.make_engine = make_engine
        self.scripts: ProcessingScripts | None = scripts
        self.stop_timeout = config.stop_timeout_sec
        self.events = events or EventQueue()
        self.clock = clock or SystemClock()
        info = config.instrument_info()
        self.script_dir = config.resolved_script_dir()
        self.short_name = info.short_name
        self.strict_permissions = config.strict_permissions
        self.watcher = watcher or self._new_watcher()
        self.memory = MemoryMonitor(memory_limit(config), config.mem_check_interval_sec, self.events.put)
        self.notifier = Notifier()
        self.status_file = StatusFile(
            Path(config.status_file).absolute() if config.status_file else default_status_file()
        )
        self.engine: Engine | None = None
        self.engine_name = ""  # of the last engine started
        self.state = State.STARTING
        self.started = self.clock.time()
        self._created = process_created()
        self.engine_started = 0.0
        self.restarts = {"scripts": 0, "memory": 0, "failures": 0, "signals": 0, "watcher": 0}
        self._failures_in_a_row = 0
        self._restart_at: float | None = None
        self._memory_restarts: collections.deque[float] = collections.deque()
        self._ready = False
        self._last_error: tuple[str, float | None] = ("", None)
        self._finished = Health()  # the counts of the engines that ended (status shows totals since the start)
        self._last_health: Health | None = None  # the last engine's final health, shown while none runs
        self._generation = 0  # counts engine starts
        self._first_start = True  # until the first engine has opened its source
        self.exit: tuple[int, str] | None = None  # (exit code, reason) once decided
        self.last_status: dict[str, object] = {}  # as last published (read by the metrics endpoint's thread)
        self.metrics = Metrics(lambda: self.last_status, info.name) if config.metrics_port is not None else None

    # --- the loop -------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until a stop; returns the process exit code.

        Raises:
            LiveReduceError: the engine could not start the first time with an error that cannot heal (e.g. a
                configuration the engine refuses, exit 2; a file source that cannot be opened, exit 3).
        """
        record_signals(self.events)
        self.notifier.main_pid(os.getpid())
        try:
            while (early := self.events.get(timeout=0)) is not None:  # what arrived while starting up
                self._handle(early)
            if self.metrics is not None:
                self.metrics.serve(self.loaded.config.metrics_address, self.loaded.config.metrics_port)
            self.watcher.start()
            self.memory.start()
            self._start_first()
            return self._loop()
        except _Exit as done:
            return self._finish(done)
        finally:
            self._stop_helpers()
            restore_signals()

    def _stop_helpers(self) -> None:
        """Stop the watcher, the memory monitor and the metrics endpoint (idempotent)."""
        self.watcher.stop()
        self.memory.stop()
        if self.metrics is not None:
            self.metrics.close()

    def _loop(self) -> int:
        next_tick = self.clock.monotonic()
        while True:
            event = self.events.get(timeout=max(0.0, next_tick - self.clock.monotonic()))
            try:
                if event is not None:
                    self._handle(event)
                if self.clock.monotonic() >= next_tick:
                    self.tick()
                    next_tick = self.clock.monotonic() + TICK_SECONDS
            except _Exit as done:
                return self._finish(done)

    def _finish(self, done: _Exit) -> int:
        self._stop_helpers()  # before the final line, so that nothing they log comes after it
        self.exit = (done.code, done.reason)
        status = self._publish()
        engine = status["engine"]
        last_error = ""
        if engine["last_error"]:
            when = datetime.fromtimestamp(engine["last_error_time"] or self.clock.time()).strftime("%H:%M:%S")
            last_error = f"; last error at {when}: {engine['last_error']}"
        _log.info("livereduce stopped: exit %d (%s); %s%s", done.code, done.reason, summary(status), last_error)
        return done.code

    # --- states ---------------------------------------------------------------------------------------------
    def _enter(self, state: State) -> None:
        """Change state; a transition :data:`TRANSITIONS` does not allow is a bug."""
        if state is not self.state and state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"supervisor: illegal transition {self.state} -> {state}")
        self.state = state

    # --- events ---------------------------------------------------------------------------------------------
    def handle(self, event: object) -> None:
        """Act on one event (the loop's step; public for in-process tests).

        Raises:
            _Exit: the daemon must exit (the loop returns its code).
        """
        self._handle(event)

    def _handle(self, event: object) -> None:
        if isinstance(event, SignalReceived):
            self._on_signal(event.signum)
        elif isinstance(event, FilesChanged):
            self._on_files_changed(event.paths)
        elif isinstance(event, MemoryExceeded):
            self._on_memory(event)
        elif isinstance(event, FromEngine) and event.generation == self._generation and self.engine is not None:
            if isinstance(event.event, CycleCompleted):
                if self.metrics is not None:
                    self.metrics.cycle(event.event)
                return
            if isinstance(event.event, EngineStarted):
                self._first_start = False
                return
            if isinstance(event.event, EngineFinished):
                _log.info("Live data finished: %s", event.event.reason)
                self._stop_and_exit(EXIT_OK, event.event.reason)
            self._on_engine_failed(event.event)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGUSR2:
            _log.info("received %s(%d): ignored (SIGHUP reloads, SIGTERM stops)", name, signum)
            return
        _log.info("received %s(%d)", name, signum)
        if signum == signal.SIGUSR1:
            _log.info("status: %s", summary(self.status()))
            return
        if signum == signal.SIGHUP:
            if self.state is State.STARTING:
                _log.info("reload requested while starting: the start loads the scripts as they are now")
                self.scripts = self._load_or_keep() or self.scripts
                return
            self.restarts["signals"] += 1
            self.notifier.reloading()
            self._reload(None)
            self.notifier.ready()
            return
        if signum == signal.SIGQUIT:
            _log.error("Thread stacks at SIGQUIT:\n%s", thread_stacks())
            self._enter(State.STOPPING)
            self._enter(State.STOPPED)
            raise _Exit(EXIT_SIGQUIT, "SIGQUIT")
        self._stop_and_exit(EXIT_OK, name)

    def _on_files_changed(self, paths: frozenset[Path]) -> None:
        config_path = self.loaded.path
        if config_path is not None and config_path in paths:
            if content_hash(config_path) != self.loaded.sha256:
                _events_log.warning("Modifying configuration file is not supported- shutting down")
                self._stop_and_exit(EXIT_OK, "configuration changed")
        changed = sorted(paths - {config_path})
        if changed and self.state is not State.STARTING:
            self._reload(changed)

    def _load_or_keep(self) -> ProcessingScripts | None:
        """The scripts as they are now, or None (logged) when they cannot replace the running ones.

        Raises:
            NoScripts: neither script exists any more.
        """
        try:
            return load_scripts(self.script_dir, self.short_name, strict=self.strict_permissions)
        except NoScripts:
            raise
        except ScriptError as err:
            _log.error("%s; the last good version keeps running", err)
            self._last_error = (f"{err} (the last good version keeps running)", self.clock.time())
            return None

    def _reload(self, changed: list[Path] | None) -> None:
        """Validate the scripts as they are now and restart with them; keep the last good set on errors.

        Args:
            changed: the script files that changed (upstream's messages name them); None for SIGHUP, which
                restarts even when nothing changed.
        """
        try:
            scripts = self._load_or_keep()
        except NoScripts as err:
            _log.error("%s: no processing script left, live data stopped until one appears", err)
            self._stop_engine()
            self.scripts = None
            self._restart_at = None
            self._enter(State.WAITING_FOR_SCRIPTS)
            self._publish()
            return
        if scripts is None:
            return
        running = None if self.scripts is None else {s.role: s.sha256 for s in self.scripts}
        if changed is not None and self.engine is not None and running == {s.role: s.sha256 for s in scripts}:
            for path in changed:
                _events_log.info('Processing script "%s" has not changed md5sum - continuing', path)
            return
        self.scripts = scripts
        if changed is not None:
            self.restarts["scripts"] += 1
            for path in changed:
                _events_log.info('Processing script "%s" changed - restarting "StartLiveData"', path)
        self._restart("scripts reloaded")

    def _on_memory(self, event: MemoryExceeded) -> None:
        try:
            if event.when < self.engine_started or self.engine is None:
                return  # measured before the last restart
            _log.error("Memory usage %.2f MB exceeds limit (%.2f MB)", event.rss / 1048576, event.limit / 1048576)
            now = self.clock.monotonic()
            while self._memory_restarts and now - self._memory_restarts[0] > MEMORY_WINDOW_SECONDS:
                self._memory_restarts.popleft()
            if len(self._memory_restarts) >= MEMORY_RESTARTS:
                _log.error(
                    "Memory still above the limit after %d restarts within %g s: exiting so that a fresh "
                    "process starts",
                    len(self._memory_restarts),
                    MEMORY_WINDOW_SECONDS,
                )
                self._stop_and_exit(EXIT_MEMORY, "memory limit")
            self._memory_restarts.append(now)
            self.restarts["memory"] += 1
            self._restart("memory limit")
        finally:
            self.memory.handled()

    def _on_engine_failed(self, failed: EngineFailed) -> None:
        error = failed.error
        if failed.at_start and self._first_start and isinstance(error, LiveReduceError) and not error.recoverable:
            self._enter(State.STOPPING)  # as if the first start had raised it: one line and its exit code
            self._stop_engine()
            self._enter(State.STOPPED)
            raise error
        if isinstance(error, LiveReduceError):
            _log.error("Live data %s: %s", "could not start" if failed.at_start else "failed", error)
        else:
            _log.error("Live data failed with an internal error", exc_info=error)
        self._last_error = (str(error), self.clock.time())
        if not failed.recoverable:
            code = error.exit_code if isinstance(error, LiveReduceError) else EXIT_INTERNAL
            _log.error("The data source cannot recover from this error: live data stopped")
            self._stop_and_exit(code, str(error))
        if self.clock.monotonic() - self.engine_started > BACKOFF_MAX_SECONDS:
            self._failures_in_a_row = 0  # it ran well for a while: start the back-off afresh
        self._stop_engine()
        self._schedule_restart()

    # --- engine lifecycle -----------------------------------------------------------------------------------
    def _start_first(self) -> None:
        """The first start: errors that cannot heal end the daemon with their exit code."""
        if self.state is not State.STARTING:
            return
        try:
            self._start_engine()
        except LiveReduceError as err:
            if not err.recoverable:
                raise
            self._start_failed(err)
            return
        self._enter(State.RUNNING)
        self._publish()

    def _start_engine(self) -> None:
        """Build and start an engine with the current scripts (raises what ``start`` raises).

        Raises:
            IllegalTransition: an engine exists already (only one may exist at any moment).
        """
        if self.engine is not None:
            raise IllegalTransition("supervisor: an engine is running already; stop it before starting another")
        for script in self.scripts:
            _log.info("Using %s '%s'", script.property_name, script.path)
            self.watcher.accept(script.path, script.sha256)
        engine = self.make_engine()
        self.engine_name = engine.name
        self.engine_started = self.clock.monotonic()
        self._generation += 1
        generation = self._generation
        self.engine = engine  # owned from now on, also if start fails (stop() is called on it)
        try:
            engine.start(self.scripts, lambda event: self.events.put(FromEngine(generation, event)))
        except BaseException:
            self.engine = None
            self._remember(engine)
            raise

    def _start_failed(self, err: LiveReduceError) -> None:
        _log.error("Live data could not start: %s", err)
        self._last_error = (str(err), self.clock.time())
        self._schedule_restart()

    def _restart(self, reason: str) -> None:
        _manager_log.info("Restarting Live Data and clearing workspaces (%s)", reason)
        self._enter(State.RELOADING)
        self._stop_engine()
        self._restart_at = None
        try:
            self._start_engine()
        except LiveReduceError as err:
            if not err.recoverable:  # e.g. the replayed file is gone: it will not come back by waiting
                _log.error("Live data could not start: %s", err)
                self._last_error = (str(err), self.clock.time())
                self._stop_and_exit(err.exit_code, str(err))
            self._start_failed(err)
            return
        self._enter(State.RUNNING)
        self._publish()

    def _schedule_restart(self) -> None:
        self._failures_in_a_row += 1
        self.restarts["failures"] += 1
        delay = min(2.0 ** (self._failures_in_a_row - 1), BACKOFF_MAX_SECONDS)
        _manager_log.info("Restarting live data in %g s (failure %d in a row)", delay, self._failures_in_a_row)
        self._restart_at = self.clock.monotonic() + delay
        self._enter(State.BACKING_OFF)
        self._publish()

    def _stop_engine(self) -> None:
        """Stop the engine within the timeout; exit 6 if it does not stop (never hang)."""
        if self.engine is None:
            return
        _manager_log.info("stopping live data processing")
        engine, self.engine = self.engine, None
        stopped = engine.stop(self.stop_timeout)
        self._remember(engine)
        if not stopped:
            _manager_log.error(
                "live data processing did not stop within %g s (stop_timeout_sec); exiting", self.stop_timeout
            )
            _log.error("Thread stacks:\n%s", thread_stacks())
            self._enter(State.STOP_TIMED_OUT)
            raise _Exit(EXIT_STOP_TIMEOUT, f"stop timed out after {self.stop_timeout:g} s")

    def _remember(self, engine: Engine) -> None:
        """Keep what a finished engine counted: the status shows totals since the daemon started."""
        final = engine.health()
        finished = self._finished
        finished.chunks += final.chunks
        finished.events += final.events
        finished.errors += final.errors
        for reason, count in final.dropped_events.items():
            finished.dropped_events[reason] = finished.dropped_events.get(reason, 0) + count
        self._last_health = final

    def _stop_and_exit(self, code: int, reason: str) -> None:
        self._enter(State.STOPPING)
        self.notifier.stopping()
        self._stop_engine()
        self._enter(State.STOPPED)
        raise _Exit(code, reason)

    # --- periodic work --------------------------------------------------------------------------------------
    def tick(self) -> None:
        """The once-a-second work: back-off restarts, watcher health, status file, sd_notify."""
        if (
            self.state is State.BACKING_OFF
            and self._restart_at is not None
            and self.clock.monotonic() >= self._restart_at
        ):
            self._restart("back-off after a failure")
        self._check_watcher()
        health = self.engine.health() if self.engine is not None else None
        if health is not None and health.chunks > 0 and not self._ready:
            self._ready = True
            self.notifier.ready()
        status = self._publish()
        if self._alive(health):
            self.notifier.watchdog()
        self.notifier.status(summary(status))

    def _new_watcher(self) -> FileWatcher:
        watched = list(script_paths(self.script_dir, self.short_name).values())
        if self.loaded.path is not None:
            watched.append(self.loaded.path)
        return FileWatcher(watched, self.events.put, self.loaded.config.poll_interval_sec)

    def _check_watcher(self) -> None:
        """A watcher that died or stalls is replaced (change detection must never silently stop)."""
        problem = self.watcher.problem()
        if problem is None:
            return
        _log.error("File watcher %s: starting a new one", problem)
        self.restarts["watcher"] += 1
        old = self.watcher
        old.stop(timeout=0)
        self.watcher = self._new_watcher()
        for script in self.scripts or ():
            self.watcher.accept(script.path, script.sha256)
        self.watcher.start()

    def _alive(self, health: Health | None) -> bool:
        """Whether to send WATCHDOG=1: cycles complete, or the daemon is deliberately idle (waiting, back-off)."""
        if self.state in (State.WAITING_FOR_SCRIPTS, State.BACKING_OFF, State.RELOADING):
            return True
        if health is not None and health.state is EngineState.IDLE:
            return True
        limit = 2 * self.loaded.config.update_every + 30
        if health is None or health.last_cycle_end is None:
            return self.clock.monotonic() - self.engine_started < limit
        return self.clock.time() - health.last_cycle_end < limit

    def _publish(self) -> dict[str, object]:
        """Write the status file; returns the status."""
        status = self.status()
        self.status_file.write(status)
        self.last_status = status
        return status

    def status(self) -> dict[str, object]:
        """The daemon's status (see :mod:`livereduce.status` for the keys)."""
        current = self.engine.health() if self.engine is not None else None
        shown = current or self._last_health
        done = self._finished
        running = current or Health()
        dropped = dict(done.dropped_events)
        for reason, count in running.dropped_events.items():
            dropped[reason] = dropped.get(reason, 0) + count
        last_error, last_error_time = self._last_error
        if shown is not None and shown.last_error and (last_error_time or 0) <= (shown.last_error_time or 0):
            last_error, last_error_time = shown.last_error, shown.last_error_time
        engine = {
            "name": self.engine_name,
            "state": shown.state.value if shown else EngineState.STOPPED.value,
            "source": shown.source if shown else "",
            "source_healthy": shown.source_healthy if shown else True,
            "source_counters": dict(shown.source_counters) if shown else {},
            "run_number": shown.run_number if shown else 0,
            "chunks": done.chunks + running.chunks,
            "events": done.events + running.events,
            "accumulated_events": shown.accumulated_events if shown else 0,
            "accumulation": shown.accumulation if shown else "",
            "dropped_events": dropped,
            "last_cycle_end": shown.last_cycle_end if shown else None,
            "last_cycle_duration": shown.last_cycle_duration if shown else None,
            "last_error": last_error,
            "last_error_time": last_error_time,
            "errors": done.errors + running.errors,
        }
        scripts = {role: None for role in ("proc", "post_proc")}
        for script in self.scripts or ():
            scripts[script.role] = {"path": str(script.path), "sha256": script.sha256}
        status: dict[str, object] = {
            "pid": os.getpid(),
            "pid_created": self._created,
            "version": __version__,
            "state": self.state.value,
            "updated": self.clock.time(),
            "started": self.started,
            "update_every": self.loaded.config.update_every,
            "config": {"path": str(self.loaded.path) if self.loaded.path else None, "sha256": self.loaded.sha256},
            "scripts": scripts,
            "engine": engine,
            "restarts": dict(self.restarts),
            "rss_bytes": self.memory.rss,
            "memory_limit_bytes": self.memory.limit,
            "log_records_lost": logs.lost_records(),
        }
        if self.metrics is not None and self.metrics.url is not None:
            status["metrics_url"] = self.metrics.url
        if self.exit is not None:
            status["exit"] = {"code": self.exit[0], "reason": self.exit[1], "time": self.clock.time()}
        return status


def terminate_children(grace: float = CHILD_GRACE_SECONDS) -> None:
    """Stop the processes this process started (scripts may start some): SIGTERM, then SIGKILL after ``grace`` s.

    Each is logged; children that are gone already are skipped.
    """
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    if not children:
        return
    for child in children:
        try:
            _log.warning("Terminating process %d (%s) started by a processing script", child.pid, child.name())
            child.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            _log.warning("Killing process %d: still running %g s after SIGTERM", child.pid, grace)
            child.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=grace)


def thread_stacks() -> str:
    """Every thread's current stack, as text (for SIGQUIT and stop timeouts)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"Thread {names.get(ident, '?')} ({ident}):\n{''.join(traceback.format_stack(frame))}")
    return "\n".join(parts)
