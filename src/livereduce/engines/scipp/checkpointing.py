"""When checkpoints are written and how a start resumes from one (the format is ``checkpoints.py``'s).

* **Resume** (engine start, after ``listener.connect()``, before ``listener.start()``): the committed checkpoint
  is used when what it depends on is unchanged (:func:`~livereduce.engines.scipp.checkpoints.mismatch`) and the
  source can deliver what follows its position (``listener.resume_refusal``); the loader gets its accumulation and
  the listener starts from its position. Otherwise one line says why not and the start is fresh; the checkpoint
  stays until the new accumulation's first one replaces it. A start that must be fresh (SIGHUP, the memory limit:
  upstream's "restart and clear") discards it.
* **Write**: after a cycle, once ``checkpoint_every`` seconds have passed since the last one, the cycle thread takes
  a :class:`~livereduce.engines.scipp.checkpoints.Snapshot` (a view of the pulses added since, or a copy of a
  histogram) and a background thread named ``Checkpoint`` writes it, so the cycle does not wait for the disk. While
  a write is in progress no other starts; the next cycle tries again. At a clean stop the last state is written
  (bounded by the stop timeout).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime

from livereduce.clock import Clock
from livereduce.engines.scipp.accumulate import describe
from livereduce.engines.scipp.checkpoints import (
    CheckpointStore,
    CheckpointUnusable,
    Manifest,
    Snapshot,
    mismatch,
    without_metadata,
)
from livereduce.engines.scipp.cycle import LiveDataLoader
from livereduce.engines.scipp.listeners.base import Listener
from livereduce.errors import AccumulationError

_log = logging.getLogger("livereduce.checkpoint")


class Checkpointer:
    """Checkpoints of one engine start.

    Args:
        store: the checkpoint directory.
        every: ``checkpoint_every`` (seconds, > 0).
        depends: what the accumulation depends on (``checkpoints.depends_on``).
        clock: the engine's clock.
    """

    def __init__(self, store: CheckpointStore, every: float, depends: dict, clock: Clock) -> None:
        self.store = store
        self.every = every
        self.depends = depends
        self.clock = clock
        self._due = clock.monotonic() + every
        self._committed: Manifest | None = None
        self._lineage: tuple[int, bool, str] | None = None  # (generation, events, name) of the accumulation
        self._seq = 0
        self._writing: Future[tuple[Manifest, float]] | None = None
        self._last_error = ""
        self.state = "none written yet"
        """One line for the status: the last checkpoint written (or why it failed)."""

    # --- resume -----------------------------------------------------------------------------------------------
    def resume(self, listener: Listener, loader: LiveDataLoader, fresh: str | None) -> Manifest | None:
        """Restore the loader from the committed checkpoint if it can be used (see the module docstring).

        Args:
            listener: the connected, not yet started source.
            loader: the new loader (its accumulation is replaced).
            fresh: why this start must not resume (the checkpoint is then discarded), or None.

        Returns:
            The checkpoint used (start the listener from its position), or None: start fresh.
        """
        try:
            manifest = self.store.read()
        except CheckpointUnusable as err:
            _log.warning("checkpoint in '%s' not used: %s", self.store.directory, err)
            return None
        if manifest is None:
            return None
        self._seq = manifest.seq
        if fresh is not None:
            _log.info("checkpoint of run %d discarded: %s (a new accumulation)", manifest.run_number, fresh)
            self.store.discard()
            return None
        reason = mismatch(manifest.depends, self.depends) or listener.resume_refusal(manifest.position)
        if reason is None:
            started = self.clock.monotonic()
            try:
                loader.restore(
                    self.store.load_parts(manifest),
                    self.store.load_metadata(manifest),
                    events=manifest.kind == "events",
                    replace_next=manifest.replace_next,
                    previous_run=manifest.previous_run,
                    provenance=manifest.provenance,
                    position=manifest.position,
                    ended=manifest.ended,
                )
            except (CheckpointUnusable, AccumulationError) as err:
                reason = str(err)
            else:
                seconds = self.clock.monotonic() - started
                self._committed = manifest
                self._lineage = (loader.accumulator.generation, manifest.kind == "events", manifest.lineage)
                written = datetime.fromtimestamp(manifest.written).strftime("%Y-%m-%d %H:%M:%S")
                _log.info(
                    "Resuming run %d from the checkpoint of %s: %d chunks, %d events, accumulation %s; position %s; "
                    "%.1f MB loaded in %.2f s",
                    manifest.run_number,
                    written,
                    manifest.provenance.get("chunks", 0),
                    manifest.provenance.get("events", 0),
                    describe(loader.accumulator.accumulation),
                    manifest.position,
                    manifest.nbytes / 1e6,
                    seconds,
                )
                self.state = f"resumed from the checkpoint of {written} (run {manifest.run_number})"
                return manifest
        _log.warning("checkpoint of run %d not used: %s", manifest.run_number, reason)
        return None

    # --- write ------------------------------------------------------------------------------------------------
    def after_cycle(self, loader: LiveDataLoader) -> None:
        """In the cycle thread after a cycle: start a checkpoint if one is due and none is being written."""
        if self.clock.monotonic() < self._due or not self._collect(0):
            return
        self._start(loader)

    def close(self, loader: LiveDataLoader, timeout: float) -> None:
        """At a clean stop: finish the write in progress and write what changed since, within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        if self._collect(timeout) and self._start(loader) and self._writing is not None:
            self._collect(max(0.0, deadline - time.monotonic()))
        if self._writing is not None:
            _log.warning("checkpoint still being written at the stop (stop_timeout_sec); the previous one stays")

    def _collect(self, timeout: float) -> bool:
        """Take the result of the write in progress (waiting up to ``timeout`` s); False while it goes on."""
        writing = self._writing
        if writing is None:
            return True
        try:
            manifest, seconds = writing.result(timeout)
        except TimeoutError:
            return False
        except Exception as err:  # noqa: BLE001 - disk full, a type scipp cannot write, a bug: logged, retried
            self._writing = None
            message = f"checkpoint not written: {err}"
            if message != self._last_error:
                _log.error("%s (the previous checkpoint stays; retrying at the next one)", message)
            self._last_error, self.state = message, message
            return True
        self._writing = None
        self._committed, self._last_error = manifest, ""
        when = datetime.fromtimestamp(manifest.written).strftime("%H:%M:%S")
        self.state = (
            f"written {when} (run {manifest.run_number}, {manifest.provenance.get('chunks', 0)} chunks, "
            f"{manifest.nbytes / 1e6:.1f} MB on disk, {seconds:.2f} s)"
        )
        _log.debug("Checkpoint %d %s: %s", manifest.seq, manifest.lineage, self.state)
        return True

    def _start(self, loader: LiveDataLoader) -> bool:
        """Take a snapshot and write it in the background; False when there is nothing new to write."""
        snapshot = self._snapshot(loader)
        self._due = self.clock.monotonic() + self.every
        if snapshot is None:
            return False
        self._seq += 1
        self._writing = _in_thread(self._write, snapshot, self._seq, self._committed)
        return True

    def _write(self, snapshot: Snapshot, seq: int, previous: Manifest | None) -> tuple[Manifest, float]:
        started = time.monotonic()
        manifest = self.store.write(snapshot, seq, previous)
        return manifest, time.monotonic() - started

    def _snapshot(self, loader: LiveDataLoader) -> Snapshot | None:
        """What to write now (cycle thread), or None: no position yet, or nothing changed since the last one."""
        accumulator = loader.accumulator
        if accumulator.accumulation is None or loader.position is None:
            return None
        provenance = loader.provenance.to_json()
        events = accumulator.n_pulses is not None
        if self._lineage is None or self._lineage[:2] != (accumulator.generation, events):
            self._lineage = (accumulator.generation, events, f"run-{loader.provenance.run_number}-{self._seq + 1}")
        lineage = self._lineage[2]
        committed = self._committed
        same = committed is not None and committed.lineage == lineage
        if same and committed.provenance == provenance and committed.replace_next == loader.replace_next:
            return None
        snapshot = Snapshot(
            lineage=lineage,
            depends=self.depends,
            provenance=provenance,
            position=loader.position,
            metadata=accumulator.metadata,
            replace_next=loader.replace_next,
            previous_run=loader.previous_run,
            ended=loader.ended,
            accumulated_events=accumulator.event_count,
        )
        if events:
            snapshot.first_pulse = committed.n_pulses if same and committed.kind == "events" else 0
            snapshot.events = accumulator.events_since(snapshot.first_pulse)
        else:
            snapshot.accumulation = without_metadata(accumulator.accumulation.copy(), accumulator.metadata)
        return snapshot


def _in_thread(function: Callable[..., tuple[Manifest, float]], *args: object) -> Future[tuple[Manifest, float]]:
    """Run ``function(*args)`` in a daemon thread named ``Checkpoint`` (a process that exits does not wait for it:
    the manifest is committed last, so an unfinished write leaves the previous checkpoint)."""
    future: Future[tuple[Manifest, float]] = Future()

    def run() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as err:  # noqa: BLE001 - handed to the cycle thread, which logs it
            future.set_exception(err)

    threading.Thread(target=run, name="Checkpoint", daemon=True).start()
    return future
