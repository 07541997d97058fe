"""The scipp engine's schedule: Mantid's StartLiveData + MonitorLiveData.

* The first chunk is loaded at start with Replace; then a cycle starts every ``update_every`` seconds measured
  from the start of the previous one (after the first: from its end, as MonitorLiveData does). Cycles never
  overlap; a slow cycle delays the next, whose chunk is then bigger: nothing is dropped.
* After each cycle the listener's run status is checked: at ``EndRun``/``BeginRun``, ``run_transition``
  Restart makes the next chunk replace the accumulation, Rename also keeps the output as ``result_<run>``
  (``result_<run>_post`` for data taken between runs), and Stop ends the engine (the daemon exits 0).
* An error in a cycle (script, accumulation) is logged with its traceback and the engine goes on with the next
  chunk; an error of the source ends the engine with :class:`~livereduce.engines.base.EngineFailed`.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

import psutil

from livereduce.config import Config
from livereduce.engines.base import EngineFailed, EngineFinished, EngineState, Health, Notify
from livereduce.engines.scipp.accumulate import describe
from livereduce.engines.scipp.cycle import OUTPUT_WORKSPACE, CycleResult, LiveDataLoader
from livereduce.engines.scipp.listeners import create_listener
from livereduce.engines.scipp.listeners.base import RunStatus
from livereduce.memory import memory_limit
from livereduce.scripts import ProcessingScripts, ScriptFailed

_log = logging.getLogger("livereduce.MonitorLiveData")


class ScippEngine:
    """Runs the cycle in a thread named ``MonitorLiveData``.

    Raises:
        ConfigError: (constructor) the configured listener is not available or lacks a key.
    """

    name = "scipp"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.listener = create_listener(config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._health = Health()
        self._last_failure = ("", 0, 0)  # (summary, first chunk, repetitions)
        self.loader: LiveDataLoader | None = None

    def start(self, scripts: ProcessingScripts, notify: Notify) -> None:
        """Connect the listener and start cycling in the background.

        Raises:
            SourceError: the listener cannot connect.
        """
        config = self.config
        self.listener.connect()
        self.listener.start(config.start)
        self.loader = LiveDataLoader(self.listener, scripts, config, _reserve_bytes(config))
        _log.info(
            "Starting live data: engine scipp, listener %s, UpdateEvery %g s, AccumulationMethod %s, "
            "PreserveEvents %s, RunTransitionBehavior %s, start %s",
            self.listener.name,
            config.update_every,
            config.accum_method,
            config.preserve_events,
            config.run_transition,
            config.start,
        )
        self._set(state=EngineState.RUNNING, source=self.listener.describe())
        self._thread = threading.Thread(target=self._monitor, args=(notify,), name="MonitorLiveData", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the cycle thread to stop after the current cycle; True if it ended within ``timeout`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        if self._health.state is EngineState.RUNNING:
            self._set(state=EngineState.STOPPED)
        return True

    def health(self) -> Health:
        with self._lock:
            return Health(**vars(self._health))

    # --- the MonitorLiveData loop -----------------------------------------------------------------------------
    def _monitor(self, notify: Notify) -> None:
        try:
            self._loop(notify)
        except BaseException as err:  # noqa: BLE001 - whatever ends the loop is reported to the supervisor
            self._set(state=EngineState.FAILED, last_error=str(err), last_error_time=time.time())
            notify(EngineFailed(err))
        finally:
            self.listener.disconnect()

    def _loop(self, notify: Notify) -> None:
        interval = self.config.update_every
        replace = True
        chunk = 1
        previous_run = 0
        while not self._stop.is_set():
            started = time.monotonic()
            if chunk > 1:
                _log.info("Loading live data chunk %d at %s", chunk, datetime.now().strftime("%H:%M:%S"))
            result = self.loader.run(replace)
            self._record(chunk, result, time.monotonic() - started)
            if result.accumulated:
                replace = False
            transition = result.status in (RunStatus.EndRun, RunStatus.BeginRun)
            if transition:
                run = result.run_number
                if self._transition(result, previous_run):
                    self._set(state=EngineState.FINISHED)
                    notify(EngineFinished(f"run {run} ended (RunTransitionBehavior Stop)"))
                    return
                replace = True
                previous_run = run
            # start-to-start; after the first chunk from its end (MonitorLiveData); a late cycle owes nothing
            next_start = (time.monotonic() if chunk == 1 else started) + interval
            chunk += 1
            self._stop.wait(max(0.0, next_start - time.monotonic()))

    def _transition(self, result: CycleResult, previous_run: int) -> bool:
        """Handle a run transition; True if the engine must stop (RunTransitionBehavior Stop)."""
        run, behaviour = result.run_number, self.config.run_transition
        _log.info("Run #%d ended. RunTransitionBehavior %s.", run, behaviour)
        if behaviour == "Stop":
            return True
        if behaviour == "Rename" and OUTPUT_WORKSPACE in self.loader.workspaces:
            name = (
                f"{OUTPUT_WORKSPACE}_{run}"
                if result.status is RunStatus.EndRun
                else (f"{OUTPUT_WORKSPACE}_{previous_run or ''}_post")
            )
            self.loader.workspaces[name] = self.loader.workspaces[OUTPUT_WORKSPACE]
            _log.info("Output of run #%d kept as '%s'", run, name)
        return False

    def _record(self, chunk: int, result: CycleResult, duration: float) -> None:
        accumulation = self.loader.accumulator.accumulation
        accumulated = self.loader.accumulator.event_count
        with self._lock:
            health = self._health
            health.chunks = chunk
            health.events += result.events
            health.run_number = result.run_number
            health.accumulated_events = accumulated
            health.last_cycle_end = time.time()
            health.last_cycle_duration = duration
            health.source = self.listener.describe()
            if result.error is not None:
                health.errors += 1
                health.last_error = str(result.error)
                health.last_error_time = time.time()
        _log.info(
            "Chunk %d: %d events in %d pulses (run %d, %s)%s; accumulation: %s; %.3f s",
            chunk,
            result.events,
            result.pulses,
            result.run_number,
            result.status.name,
            "" if result.accumulated else " dropped",
            f"{accumulated} events" if accumulated else describe(accumulation),
            duration,
        )
        if result.error is not None:
            self._report(chunk, result.error)
        else:
            self._last_failure = ("", 0, 0)

    def _report(self, chunk: int, error: Exception) -> None:
        """Log a cycle error: the whole traceback once, then one line while the same error repeats."""
        summary, first, repeats = self._last_failure
        if str(error) == summary:
            self._last_failure = (summary, first, repeats + 1)
            _log.error(
                "Chunk %d failed again (same error as chunk %d, %d times in a row): %s",
                chunk,
                first,
                repeats + 1,
                summary,
            )
            return
        self._last_failure = (str(error), chunk, 1)
        details = getattr(error, "details", "") if isinstance(error, ScriptFailed) else ""
        _log.error("Chunk %d failed: %s%s", chunk, error, f"\n{details.rstrip()}" if details else "")

    def _set(self, **values: object) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self._health, key, value)


def _reserve_bytes(config: Config) -> int:
    """Memory an event accumulation may reserve: the memory limit (see :func:`memory_limit`), else all RAM."""
    limit = memory_limit(config)
    return limit if limit is not None else int(psutil.virtual_memory().total)
