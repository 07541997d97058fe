"""The scipp engine's schedule: Mantid's StartLiveData + MonitorLiveData.

* ``start()`` returns at once: the cycle thread opens the source (``connect``, ``start``; a network source may take
  seconds, and :meth:`ScippEngine.stop` interrupts it), posts :class:`~livereduce.engines.base.EngineStarted`, and
  cycles. A source that cannot be opened ends the engine with :class:`~livereduce.engines.base.EngineFailed`
  (``at_start``), recoverable as the :class:`~livereduce.errors.LiveReduceError` says.
* The first chunk is loaded at start (StartLiveData's chunk); then a cycle starts every ``update_every`` seconds
  measured from the start of the previous one (after the first: from its end, as MonitorLiveData does), each
  announced as Mantid does: ``Loading live data chunk N at HH:MM:SS`` with N from 0. Cycles never overlap; a slow
  cycle delays the next, whose chunk is then bigger: nothing is dropped.
* What a chunk and a run transition do to the accumulation is decided by the cycle
  (:class:`~livereduce.engines.scipp.cycle.LiveDataLoader`); the engine only schedules, stops and reports. At
  ``run_transition`` Stop the engine ends (:class:`~livereduce.engines.base.EngineFinished`, the daemon exits 0).
* An error in a cycle (script, accumulation) is logged and the engine goes on with the next chunk; an error of the
  source ends the engine with :class:`~livereduce.engines.base.EngineFailed`, recoverable when the
  :class:`~livereduce.errors.SourceError` says so (a network source), and always for a bug.
* When the source has ended (a replayed file was read to its end), the engine stops cycling and waits to be
  stopped: idle costs nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from datetime import datetime

import numpy as np
import psutil
import scipp as sc

from livereduce.clock import Clock, SystemClock
from livereduce.config import Config
from livereduce.engines.base import (
    CycleCompleted,
    EngineFailed,
    EngineFinished,
    EngineStarted,
    EngineState,
    Health,
    Notify,
)
from livereduce.engines.scipp.accumulate import describe
from livereduce.engines.scipp.checkpointing import Checkpointer
from livereduce.engines.scipp.checkpoints import CheckpointStore, Manifest, depends_on
from livereduce.engines.scipp.cycle import CycleResult, LiveDataLoader
from livereduce.engines.scipp.lag import CycleLag, LagMeter
from livereduce.engines.scipp.listeners import create_listener
from livereduce.engines.scipp.listeners.base import Listener, RunStatus
from livereduce.errors import LiveReduceError
from livereduce.memory import memory_limit
from livereduce.provenance import origin
from livereduce.scripts import ProcessingScripts, ScriptFailed

_log = logging.getLogger("livereduce.MonitorLiveData")


class ScippEngine:
    """Runs the cycles in a thread named ``MonitorLiveData``.

    Args:
        config: the validated configuration.
        listener: the source (default: built from the configuration).
        clock: time source (tests inject one that does not sleep).

    Raises:
        ConfigError: (constructor) the configured listener is not available or lacks a key.
    """

    name = "scipp"

    def __init__(self, config: Config, listener: Listener | None = None, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.listener = listener if listener is not None else create_listener(config, self.clock)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and by a source asking for an early chunk
        self._ready_reason = ""
        self._early_parts = (0, 0)  # early parts since the last output: (count, events)
        self._lag = LagMeter(config.update_every, self._buffer_hint)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._health = Health()
        self._last_failure = ("", "", 0)  # (summary, first chunk's label, repetitions)
        self._loader: LiveDataLoader | None = None
        self._checkpoints: Checkpointer | None = None
        self._resumed: Manifest | None = None
        self._early_wanted = False
        self._new_scripts: ProcessingScripts | None = None  # a post_proc edit, applied by the cycle thread

    def start(self, scripts: ProcessingScripts, notify: Notify, *, fresh: str | None = None) -> None:
        """Start the cycle thread, which opens the source (resuming the checkpoint unless ``fresh`` says why not)
        and then cycles; returns at once (see the module)."""
        self._set(state=EngineState.CONNECTING, source=self.listener.health().state)
        self._thread = threading.Thread(
            target=self._monitor, args=(scripts, notify, fresh), name="MonitorLiveData", daemon=True
        )
        self._thread.start()

    def reload_post_proc(self, scripts: ProcessingScripts) -> bool:
        """Use ``scripts`` (same proc script, another post_proc) without touching the accumulation or the source:
        the cycle thread swaps them and runs post_proc on the accumulation at once. Always True (the mantid
        engine cannot)."""
        with self._lock:
            self._new_scripts = scripts
        self._wake.set()
        return True

    def stop(self, timeout: float) -> bool:
        """Ask the cycle thread to stop after the current cycle (interrupting a source that is being opened);
        True if it ended within ``timeout`` seconds."""
        self._stop.set()
        self._wake.set()
        self.listener.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        else:
            self.listener.disconnect()
        with self._lock:
            if self._health.state in (EngineState.CONNECTING, EngineState.RUNNING, EngineState.IDLE):
                self._health.state = EngineState.STOPPED
        return True

    def health(self) -> Health:
        with self._lock:
            health = self._health
            copy = dataclasses.replace(health, dropped_events=dict(health.dropped_events))
        source = self.listener.health()
        copy.source, copy.source_healthy, copy.source_counters = source.state, source.healthy, dict(source.counters)
        copy.offset_lag = dict(source.offset_lag)
        return copy

    def _buffer_hint(self) -> str:
        """How the source's buffer is bounded now, for the lag warning."""
        limit = self.listener.health().counters.get("buffer_limit_bytes", 0) / 2**20
        if self.config.source_buffer_mb is not None:
            return f"{limit:.0f} MiB, source_buffer_mb"
        return f"{limit:.0f} MiB, automatic within the memory limit"

    # --- the MonitorLiveData loop -----------------------------------------------------------------------------
    def _monitor(self, scripts: ProcessingScripts, notify: Notify, fresh: str | None) -> None:
        started = False
        try:
            self._open(scripts, fresh)
            if self._stop.is_set():
                return
            started = True
            self._set(state=EngineState.RUNNING)
            notify(EngineStarted())
            if self._resumed is None or self._post_process_now(notify, "Resumed accumulation"):
                self._loop(notify)
        except BaseException as err:  # noqa: BLE001 - whatever ends the loop is reported to the supervisor
            if self._stop.is_set() and not started:
                return  # interrupted while opening the source: a stop, not a failure
            self._set(state=EngineState.FAILED, last_error=str(err), last_error_time=self.clock.time())
            recoverable = err.recoverable if isinstance(err, LiveReduceError) else True
            notify(EngineFailed(err, recoverable=recoverable, at_start=not started))
        finally:
            self.listener.disconnect()
            self._checkpoint(now=True)

    def _open(self, scripts: ProcessingScripts, fresh: str | None) -> None:
        """Connect the listener, resume the checkpoint if it can be used, start the listener (interruptible by
        :meth:`stop`); build the cycle.

        Raises:
            LiveReduceError: the source cannot be opened (``SourceError``), the configuration does not suit it, or
                ``checkpoint_dir`` cannot be used (``ConfigError``).
        """
        config = self.config
        self.listener.connect()
        versions = {"scipp": sc.__version__, "numpy": np.__version__}
        provenance = origin(config, self.name, versions, self.listener.name)
        self._loader = loader = LiveDataLoader(self.listener, scripts, config, _reserve_bytes(config), provenance)
        if config.checkpoint_every > 0 and not self.listener.resumable:
            _log.info("Listener %s cannot resume from a position: no checkpoints", self.listener.name)
        elif config.checkpoint_every > 0:
            store = CheckpointStore(config.resolved_checkpoint_dir())
            depends = depends_on(loader.provenance)
            self._checkpoints = Checkpointer(store, config.checkpoint_every, depends, self.clock)
            self._resumed = self._checkpoints.resume(self.listener, loader, fresh)
            self._set(checkpoint=self._checkpoints.state)
        self.listener.start(config.start, resume=None if self._resumed is None else self._resumed.position)
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

    def _loop(self, notify: Notify) -> None:
        interval, clock = self.config.update_every, self.clock
        if self.config.accum_method == "Add" and self.config.early_chunks:
            self.listener.on_data_ready(self._ready)
        number: int | None = None  # None: StartLiveData's initial chunk; then MonitorLiveData's 0, 1, 2, ...
        while not self._stop.is_set():
            started = clock.monotonic()
            if number is not None:
                _log.info("Loading live data chunk %d at %s", number, datetime.now().strftime("%H:%M:%S"))
            result = self._cycle(notify, "Initial chunk" if number is None else f"Chunk {number}", started)
            if result is None:
                return
            # start-to-start; after the first chunk from its end (MonitorLiveData); a late cycle owes nothing; a
            # chunk that ended a run with the next run's data behind it: that data at once
            next_start = (clock.monotonic() if number is None else started) + interval
            if result.transition and result.more_buffered:
                next_start = clock.monotonic()
            number = 0 if number is None else number + 1
            if not self._wait_taking_early_chunks(notify, next_start, number):
                return

    def _ready(self, reason: str) -> None:
        """The source asks for an early chunk (its buffer is half full, or a run ended): wake the cycle thread."""
        self._ready_reason = reason
        self._early_wanted = True
        self._wake.set()

    def _post_process_now(self, notify: Notify, label: str) -> bool:
        """Run post_proc on the accumulation as it is (after a resume or a post_proc edit) and report it like a
        cycle; False when the engine must end (the resumed source had ended already: idle until stopped)."""
        loader, clock = self._loader, self.clock
        started = clock.monotonic()
        error = loader.post_process_now() if loader.accumulator.accumulation is not None else None
        duration = clock.monotonic() - started
        _log.info(
            "%s: post_proc on the accumulation (run %d, %s) without new data; %.3f s%s",
            label,
            loader.provenance.run_number,
            loader.accumulation_description,
            duration,
            "" if error is None else ", failed",
        )
        with self._lock:
            health = self._health
            health.chunks += 1
            health.run_number = loader.provenance.run_number
            health.accumulated_events = loader.accumulator.event_count
            health.accumulation = describe(loader.accumulator.accumulation)
            health.last_cycle_end, health.last_cycle_duration = clock.time(), duration
            if error is not None:
                health.errors += 1
                health.last_error, health.last_error_time = str(error), clock.time()
        if error is not None:
            self._report(label, error)
        notify(CycleCompleted(duration, None if error is None else "post_proc", self._lag.seconds))
        if label != "Resumed accumulation":
            return True
        if loader.replace_next and self.config.run_transition == "Stop":  # as the run that was interrupted did
            reason = f"run {loader.provenance.run_number} had ended (RunTransitionBehavior Stop)"
            self._set(state=EngineState.FINISHED)
            notify(EngineFinished(reason))
            return False
        if loader.ended:
            _log.info("The source had ended before the checkpoint: live data stays idle until it is stopped")
            self._set(state=EngineState.IDLE)
            clock.wait(self._stop, None)
            return False
        return True

    def _swap_scripts(self, notify: Notify) -> None:
        """Apply a post_proc edit waiting for the cycle thread: the new scripts, post_proc on the accumulation."""
        with self._lock:
            scripts, self._new_scripts = self._new_scripts, None
        if scripts is None or self._loader is None:
            return
        self._loader.replace_scripts(scripts)
        if self._loader.accumulator.accumulation is not None:
            self._post_process_now(notify, "Post-processing script reloaded")

    def _wait_taking_early_chunks(self, notify: Notify, until: float, number: int) -> bool:
        """Wait until the monotonic time ``until``; each time the source asks meanwhile (Add with ``early_chunks``:
        its buffer is half full, or a run ended), take an early chunk. An early chunk that ended a run with the next
        run's data behind it ends the wait at once, so that data's first cycle follows (as in :meth:`_loop`). False
        when the engine must end (stopped, finished, source ended)."""
        clock, part = self.clock, 0
        while not self._stop.is_set():
            left = until - clock.monotonic()
            if left <= 0 or not clock.wait(self._wake, left):
                return not self._stop.is_set()
            self._wake.clear()
            if self._stop.is_set():
                return False
            self._swap_scripts(notify)
            if not self._early_wanted:
                continue
            self._early_wanted = False
            part += 1
            result = self._cycle(notify, f"Chunk {number}, early part {part} ({self._ready_reason})", early=True)
            if result is None:
                return False
            if result.transition and result.more_buffered:
                return True
        return False

    def _cycle(
        self, notify: Notify, label: str, started: float | None = None, *, early: bool = False
    ) -> CycleResult | None:
        """Run one cycle (or an early chunk) and report it; None when the engine must end."""
        clock = self.clock
        started = clock.monotonic() if started is None else started
        self._swap_scripts(notify)
        result = self._loader.run(early=early)
        duration = clock.monotonic() - started
        lag = self._lag.seconds
        if result.post_processed:  # the lag of what the scientist sees: at an output, not at an early part
            pressure = self.listener.health().counters.get("back_pressure_ms", 0)
            lag = self._lag.cycle(CycleLag(result.newest_pulse_s, clock.time(), duration, pressure))
        self._record(label, result, duration)
        self._checkpoint(now=False)
        notify(CycleCompleted(duration, result.failed, lag))
        if result.finished is not None:
            self._set(state=EngineState.FINISHED)
            notify(EngineFinished(result.finished))
            return None
        if result.ended:
            _log.info("The source has ended: no more data; live data stays idle until it is stopped")
            self._set(state=EngineState.IDLE)
            self._checkpoint(now=True)  # the whole run, at once (not only at the stop)
            clock.wait(self._stop, None)
            return None
        return result

    def _checkpoint(self, *, now: bool) -> None:
        """After a cycle: a checkpoint if one is due (``now``: what changed since the last one, waiting up to half
        of ``stop_timeout_sec``: the source ended, the engine ends); the status shows the outcome."""
        if self._checkpoints is None or self._loader is None:
            return
        if now:
            self._checkpoints.close(self._loader, self.config.stop_timeout_sec / 2)
        else:
            self._checkpoints.after_cycle(self._loader)
        self._set(checkpoint=self._checkpoints.state)

    def _record(self, label: str, result: CycleResult, duration: float) -> None:
        with self._lock:
            health = self._health
            health.chunks += result.post_processed
            health.lag, health.lag_basis, health.lagging = self._lag.seconds, self._lag.basis, self._lag.lagging
            health.events += result.events
            health.run_number = result.run_number
            health.first_pulse = (self._loader.provenance.first_pulse or "") if self._loader is not None else ""
            health.accumulated_events = result.accumulated_events
            health.accumulation = result.accumulation
            for reason, count in result.dropped.items():
                health.dropped_events[reason] = health.dropped_events.get(reason, 0) + count
            health.last_cycle_end = self.clock.time()
            health.last_cycle_duration = duration
            if result.error is not None:
                health.errors += 1
                health.last_error = str(result.error)
                health.last_error_time = self.clock.time()
        if result.error is not None:
            self._report(label, result.error)
        else:
            self._last_failure = ("", "", 0)
        if result.dropped:
            _log.warning(
                "%s: %d events dropped at the source: %s",
                label,
                sum(result.dropped.values()),
                ", ".join(f"{count} {reason}" for reason, count in result.dropped.items()),
            )
        held = f"{result.accumulated_events} events" if result.accumulated_events else result.accumulation
        run = "no run" if result.status is RunStatus.NoRun else f"run {result.run_number}, {result.status.name}"
        parts = ""
        if result.post_processed and self._early_parts[0]:
            parts = f" (and {self._early_parts[1]} events in {self._early_parts[0]} early parts before)"
            self._early_parts = (0, 0)
        elif not result.post_processed:  # an early part: one DEBUG line, summed in the cycle's line
            self._early_parts = (self._early_parts[0] + 1, self._early_parts[1] + result.events)
        _log.log(
            logging.INFO if result.post_processed else logging.DEBUG,
            "%s: %d events in %d pulses (%s)%s%s; accumulation: %s; %.3f s%s",
            label,
            result.events,
            result.pulses,
            run,
            parts,
            "" if result.accumulated else ", not accumulated",
            held,
            duration,
            "" if self._lag.seconds is None else f"; lag {self._lag.seconds:.1f} s",
        )

    def _report(self, label: str, error: Exception) -> None:
        """Log a cycle error: the whole traceback once, then one line while the same error repeats."""
        summary, first, repeats = self._last_failure
        if str(error) == summary:
            self._last_failure = (summary, first, repeats + 1)
            _log.error("%s failed again (same error as %s, %d times in a row): %s", label, first, repeats + 1, summary)
            return
        self._last_failure = (str(error), label.lower(), 1)
        details = error.details if isinstance(error, ScriptFailed) else ""
        _log.error("%s failed: %s%s", label, error, f"\n{details.rstrip()}" if details else "")

    def _set(self, **values: object) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self._health, key, value)


def _reserve_bytes(config: Config) -> int:
    """Memory an event accumulation may reserve: the memory limit (see :func:`memory_limit`), else all RAM."""
    limit = memory_limit(config)
    return limit if limit is not None else int(psutil.virtual_memory().total)
