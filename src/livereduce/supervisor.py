"""The supervisor: one loop on the main thread that owns the engine's lifecycle.

Every trigger becomes an event on one queue and only this loop acts on it: there is no restart from a side
thread and no lifecycle work in a signal handler. A signal handler only records the signal
(:mod:`livereduce.events`); the file watcher, the memory monitor and the engine's thread post the same way. The
loop never waits for a data source: an engine's ``start`` returns at once and the engine reports
:class:`~livereduce.engines.base.EngineStarted` (state ``connecting`` until then) or
:class:`~livereduce.engines.base.EngineFailed`, so a signal is acted on at any moment.

The supervisor is a state machine (:mod:`livereduce.states`): every change of state goes through
:meth:`Supervisor._enter`, which refuses a transition the table does not list, logs the change (``state: running
-> reloading: scripts reloaded``), publishes the status and tells systemd. At most one engine exists at any moment
by construction: an engine is only built by :meth:`Supervisor._start_engine`, which refuses to run while one
exists, and every path to it stops the previous one first.

| event | action |
|---|---|
| SIGTERM, SIGINT | stop the engine (bounded by ``stop_timeout_sec``), exit 0 |
| SIGHUP | reload: re-read the scripts and restart the engine |
| SIGQUIT | dump every thread's stack to the log, exit 7 |
| SIGUSR1 | log the status summary; SIGUSR2: logged and ignored |
| configuration file content changed | stop, exit 0 (systemd restarts with the new configuration) |
| script changed/created/deleted | validate; post_proc alone: to the engine (scipp); else restart, keep the last good |
| memory above the limit | restart the engine (clears the accumulation); exit 5 if that keeps happening |
| engine started (its source is open) | ``connecting`` -> ``running`` |
| engine finished (run_transition Stop) | stop, exit 0 |
| engine failed or could not start, recoverable | log the cause; restart after a back-off delay (``Backoff``) |
| engine failed, not recoverable (a corrupt file) | stop, exit with the error's code (3) |
| tick (every second) | status file, sd_notify STATUS/READY/WATCHDOG, watcher health, back-off restarts |
"""

from __future__ import annotations

import collections
import logging
import os
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from livereduce import __version__, logs
from livereduce.backoff import Backoff
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
from livereduce.processes import thread_stacks
from livereduce.scripts import NoScripts, ProcessingScripts, load_scripts, script_paths
from livereduce.states import IllegalTransition, State, check_transition
from livereduce.status import EngineTotals, ExitRecord, FileRecord, Status, process_created
from livereduce.status_file import StatusFile, status_location
from livereduce.status_text import summary
from livereduce.systemd_notify import Notifier
from livereduce.watch import FilesChanged, FileWatcher, content_hash
from livereduce.web import web_server

_log = logging.getLogger("livereduce")
_manager_log = logging.getLogger("livereduce.LiveDataManager")
_events_log = logging.getLogger("livereduce.EventHandler")

TICK_SECONDS = 1.0
"""Period of status updates and systemd watchdog pings."""
MEMORY_RESTARTS = 3
"""In-process restarts for memory within :data:`MEMORY_WINDOW_SECONDS` before the daemon exits (code 5)."""
MEMORY_WINDOW_SECONDS = 600.0


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

    Raises:
        ConfigError: (constructor) the per-user status directory cannot be created or is not safe.
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
        self.status_file = StatusFile(status_location(loaded))
        self.status_file.prepare()
        self.watcher = watcher or self._new_watcher()
        self.memory = MemoryMonitor(memory_limit(config), config.mem_check_interval_sec, self.events.put)
        self.notifier = Notifier()
        self.engine: Engine | None = None
        self.engine_name = ""  # of the last engine started
        self.state = State.STARTING
        self.started = self.state_since = self.clock.time()
        self._created = process_created()
        self.engine_started = 0.0
        self.restarts = {"scripts": 0, "memory": 0, "failures": 0, "signals": 0, "watcher": 0}
        self.reloads = {"post_proc": 0}  # script edits applied without a restart
        self._fresh: str | None = None  # why the next engine start must not resume a checkpoint
        self.backoff = Backoff()
        self._restart_at: float | None = None
        self._memory_restarts: collections.deque[float] = collections.deque()
        self._ready = False  # READY=1 was sent (after the first chunk)
        self._totals = EngineTotals()
        self._generation = 0  # counts engine starts
        self._first_start = True  # until an engine has opened its source
        self._logged_scripts: dict[str, str] = {}  # role -> sha256 of the scripts last logged as 'Using ...'
        self.exit: ExitRecord | None = None  # once decided
        self.web = web_server(config, info.name)

    # --- the loop -------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until a stop; returns the process exit code.

        Raises:
            LiveReduceError: the first engine could not start with an error that cannot heal (e.g. a configuration
                the engine refuses, exit 2; a file source that cannot be opened, exit 3).
        """
        record_signals(self.events)
        self.notifier.main_pid(os.getpid())
        try:
            while (early := self.events.get(timeout=0)) is not None:  # what arrived while starting up
                self._handle(early)
            if self.web is not None and (where := self.loaded.config.web_server) is not None:
                self.web.serve(*where)
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
        """Stop the watcher, the memory monitor and the web server (idempotent)."""
        self.watcher.stop()
        self.memory.stop()
        if self.web is not None:
            self.web.close()

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
        self.exit = ExitRecord(done.code, done.reason, self.clock.time())
        status = self._publish()
        last_error = ""
        if status.engine is not None and status.engine.last_error:
            when = datetime.fromtimestamp(status.engine.last_error_time or self.clock.time()).strftime("%H:%M:%S")
            last_error = f"; last error at {when}: {status.engine.last_error}"
        _log.info("livereduce stopped: exit %d (%s); %s%s", done.code, done.reason, summary(status), last_error)
        return done.code

    # --- states ---------------------------------------------------------------------------------------------
    def _enter(self, state: State, reason: str) -> None:
        """The one place where the state changes: checked against :data:`~livereduce.states.TRANSITIONS` (another
        transition is a bug), logged as one line, published (status file, ``STATUS=``), and told to systemd:
        ``STOPPING=1`` when a stop begins; once the daemon is ready, ``RELOADING=1`` when a restart of live data
        begins and ``READY=1`` when it is done.

        Raises:
            IllegalTransition: the table does not allow this transition.
        """
        check_transition(self.state, state)
        previous, self.state = self.state, state
        self.state_since = self.clock.time()
        _log.info("state: %s -> %s: %s", previous, state, reason)
        if state is State.STOPPING:
            self.notifier.stopping()
        elif state is State.RELOADING and self._ready:
            self.notifier.reloading()
        elif previous is State.RELOADING and self._ready:
            self.notifier.ready()
        self._publish()

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
            self._on_engine(event.event)

    def _on_engine(self, event: EngineEvent) -> None:
        if isinstance(event, CycleCompleted):
            if self.web is not None:
                self.web.metrics.cycle(event)
        elif isinstance(event, EngineStarted):
            self._first_start = False
            self._enter(State.RUNNING, "the data source is open")
        elif isinstance(event, EngineFinished):
            _log.info("Live data finished: %s", event.reason)
            self._stop_and_exit(EXIT_OK, event.reason)
        elif isinstance(event, EngineFailed):
            self._failed(event.error, recoverable=event.recoverable, at_start=event.at_start)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGUSR2:
            _log.info("received %s(%d): ignored (SIGHUP reloads, SIGTERM stops)", name, signum)
            return
        _log.info("received %s(%d)", name, signum)
        if signum == signal.SIGUSR1:
            _log.info("status: %s", summary(self.status()))
        elif signum == signal.SIGHUP:
            if self.state is State.STARTING:
                _log.info("reload requested while starting: the start loads the scripts as they are now")
                self.scripts = self._load_or_keep() or self.scripts
                return
            self.restarts["signals"] += 1
            self._reload(None)
        elif signum == signal.SIGQUIT:
            _log.error("Thread stacks at SIGQUIT:\n%s", thread_stacks())
            self._enter(State.STOPPING, name)
            self._enter(State.STOPPED, f"exit {EXIT_SIGQUIT}")
            raise _Exit(EXIT_SIGQUIT, name)
        else:
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
            self._totals.error(f"{err} (the last good version keeps running)", self.clock.time())
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
            if self.state is not State.WAITING_FOR_SCRIPTS:
                self._stop_engine()
                self.scripts = None
                self._restart_at = None
                self._enter(State.WAITING_FOR_SCRIPTS, "no processing script left")
            return
        if scripts is None:
            return
        change = "proc" if self.scripts is None or self.engine is None else self.scripts.change_to(scripts)
        if changed is not None and change == "none":
            for path in changed:
                _events_log.info('Processing script "%s" has not changed md5sum - continuing', path)
            return
        if changed is not None and change == "post_proc" and self.engine.reload_post_proc(scripts):
            self._post_proc_reloaded(scripts)
            return
        self.scripts = scripts
        if changed is not None:
            self.restarts["scripts"] += 1
            for path in changed:
                _events_log.info('Processing script "%s" changed - restarting "StartLiveData"', path)
        else:
            self._fresh = "SIGHUP"
        self._restart("scripts reloaded")

    def _post_proc_reloaded(self, scripts: ProcessingScripts) -> None:
        """The running engine took a new post_proc script (or its deletion) without a restart: log and count it."""
        new, path = scripts.post_proc, (scripts.post_proc or self.scripts.post_proc).path
        self.scripts = scripts
        self.reloads["post_proc"] += 1
        if new is None:
            what = "removed - the accumulation is the output"
        else:
            self.watcher.accept(new.path, new.sha256)
            what = f"changed (md5 {new.md5}) - post-processing the accumulation with it"
        _events_log.info('Processing script "%s" %s, without restarting "StartLiveData"', path, what)

    def _on_memory(self, event: MemoryExceeded) -> None:
        try:
            if event.when < self.engine_started or self.state is not State.RUNNING:
                return  # measured before the last restart, or no accumulation to clear
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
            self._fresh = "memory limit, which a checkpoint would bring back"
            self._restart("memory limit")
        finally:
            self.memory.handled()

    def _failed(self, error: BaseException, *, recoverable: bool, at_start: bool) -> None:
        """Live data failed (``at_start``: it could not start): exit with the error's code if it cannot heal,
        else back off and start again later. One ERROR line, then the state line.

        Raises:
            LiveReduceError: ``error`` itself, when the first engine could not start and cannot heal: the daemon
                ends as if the start had raised it (one line, its exit code).
            _Exit: the error cannot heal.
        """
        code = error.exit_code if isinstance(error, LiveReduceError) else EXIT_INTERNAL
        if at_start and self._first_start and not recoverable and isinstance(error, LiveReduceError):
            self.exit = ExitRecord(code, str(error), self.clock.time())
            self._enter(State.STOPPING, "live data could not start")
            self._stop_engine(log=False)
            self._enter(State.STOPPED, f"exit {code}")
            raise error
        if isinstance(error, LiveReduceError):
            _log.error("Live data %s: %s", "could not start" if at_start else "failed", error)
        else:
            _log.error("Live data failed with an internal error", exc_info=error)
        self._totals.error(str(error), self.clock.time())
        if not recoverable:
            if not at_start:
                _log.error("The data source cannot recover from this error: live data stopped")
            self._stop_and_exit(
                code, str(error), change="live data could not start" if at_start else "live data failed"
            )
        self._stop_engine(log=False)  # it has ended by itself: nothing to announce
        delay = self.backoff.failed(lasted=self.clock.monotonic() - self.engine_started)
        self.restarts["failures"] += 1
        self._restart_at = self.clock.monotonic() + delay
        self._enter(
            State.BACKING_OFF, f"Restarting live data in {delay:g} s (failure {self.backoff.failures} in a row)"
        )

    # --- engine lifecycle -----------------------------------------------------------------------------------
    def _start_first(self) -> None:
        """The first start (unless a stop came first): errors that cannot heal end the daemon with their code."""
        if self.state is State.STARTING:
            self._start("starting live data")

    def _start(self, reason: str) -> None:
        """Start an engine: ``connecting`` until it reports that its source is open (or that it failed)."""
        self._restart_at = None
        self._enter(State.CONNECTING, reason)
        try:
            self._start_engine()
        except LiveReduceError as err:  # an engine that opens its source in start() itself (mantid)
            self._failed(err, recoverable=err.recoverable, at_start=True)

    def _start_engine(self) -> None:
        """Build and start an engine with the current scripts (raises what ``start`` raises).

        Raises:
            IllegalTransition: an engine exists already (only one may exist at any moment).
        """
        if self.engine is not None:
            raise IllegalTransition("supervisor: an engine is running already; stop it before starting another")
        scripts = {script.role: script.sha256 for script in self.scripts}
        for script in self.scripts:
            if scripts != self._logged_scripts:  # once per set of scripts, not at every retry
                _log.info("Using %s '%s'", script.property_name, script.path)
            self.watcher.accept(script.path, script.sha256)
        self._logged_scripts = scripts
        engine = self.make_engine()
        self.engine_name = engine.name
        self.engine_started = self.clock.monotonic()
        self._generation += 1
        generation = self._generation
        self.engine = engine  # owned from now on, also if start fails (stop() is called on it)
        try:
            fresh, self._fresh = self._fresh, None
            engine.start(self.scripts, lambda event: self.events.put(FromEngine(generation, event)), fresh=fresh)
        except BaseException:
            self.engine = None
            self._totals.ended(engine.health())
            raise

    def _restart(self, reason: str) -> None:
        """Stop the engine (if any) and start a new one; upstream's line only when one with an accumulation ran."""
        if self.state is State.RUNNING:
            _manager_log.info("Restarting Live Data and clearing workspaces (%s)", reason)
        self._enter(State.RELOADING, reason)
        self._stop_engine()
        self._start("starting live data")

    def _stop_engine(self, *, log: bool = True) -> None:
        """Stop the engine within the timeout; exit 6 if it does not stop (never hang).

        Args:
            log: announce it (upstream's ``stopping live data processing``); not for an engine that has ended.
        """
        if self.engine is None:
            return
        if log:
            _manager_log.info("stopping live data processing")
        engine, self.engine = self.engine, None
        stopped = engine.stop(self.stop_timeout)
        self._totals.ended(engine.health())
        if not stopped:
            _manager_log.error(
                "live data processing did not stop within %g s (stop_timeout_sec); exiting", self.stop_timeout
            )
            _log.error("Thread stacks:\n%s", thread_stacks())
            self._enter(State.STOP_TIMED_OUT, f"exit {EXIT_STOP_TIMEOUT}")
            raise _Exit(EXIT_STOP_TIMEOUT, f"stop timed out after {self.stop_timeout:g} s")

    def _stop_and_exit(self, code: int, reason: str, *, change: str | None = None) -> None:
        """Stop the engine and exit with ``code``; ``reason`` for the final line and the status, ``change`` for the
        state line when it differs (an error, said once in its own line already).

        Raises:
            _Exit: always.
        """
        self._enter(State.STOPPING, change or reason)
        self._stop_engine()
        self._enter(State.STOPPED, f"exit {code}")
        raise _Exit(code, reason)

    # --- periodic work --------------------------------------------------------------------------------------
    def tick(self) -> None:
        """The once-a-second work: back-off restarts, watcher health, status file, sd_notify."""
        if (
            self.state is State.BACKING_OFF
            and self._restart_at is not None
            and self.clock.monotonic() >= self._restart_at
        ):
            self._start("the back-off delay has passed")
        self._check_watcher()
        health = self.engine.health() if self.engine is not None else None
        if health is not None and health.chunks > 0 and not self._ready:
            self._ready = True
            self.notifier.ready()
        self._publish()
        if self._alive(health):
            self.notifier.watchdog()

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

    def _publish(self) -> Status:
        """Write the status file, show it on the page and send ``STATUS=``; returns the status."""
        status = self.status()
        self.status_file.write(status)
        if self.web is not None:
            self.web.publish(status)
        self.notifier.status(summary(status))
        return status

    def status(self) -> Status:
        """The daemon's status (see :mod:`livereduce.status`)."""
        current = self.engine.health() if self.engine is not None else None
        scripts: dict[str, FileRecord | None] = {"proc": None, "post_proc": None}
        for script in self.scripts or ():
            scripts[script.role] = FileRecord(str(script.path), script.sha256)
        return Status(
            pid=os.getpid(),
            pid_created=self._created,
            version=__version__,
            state=self.state.value,
            state_since=self.state_since,
            updated=self.clock.time(),
            started=self.started,
            update_every=self.loaded.config.update_every,
            config=FileRecord(str(self.loaded.path) if self.loaded.path else None, self.loaded.sha256),
            scripts=scripts,
            engine=self._totals.status(self.engine_name, current),
            restarts=dict(self.restarts),
            reloads=dict(self.reloads),
            rss_bytes=self.memory.rss,
            memory_limit_bytes=self.memory.limit,
            log_records_lost=logs.lost_records(),
            http_url=self.web.url if self.web is not None else None,
            exit=self.exit,
        )
