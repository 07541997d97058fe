"""The listener interface of the scipp engine: Mantid's ILiveListener, reshaped for sources that push.

The engine drives a listener from its cycle thread: ``connect()``, ``start(position)``, then one ``extract()``
per cycle, ``disconnect()`` at the end. ``extract()`` hands over everything that arrived since the previous
call *together with* the run status, the data-reset flag and the pixel range that belong to it
(:class:`Extracted`): one call, so a status or a range can never be paired with the wrong chunk.

``connect()`` and ``start()`` may wait for a network; :meth:`Listener.interrupt`, called from another thread (the
supervisor stopping the engine), makes them give up promptly (within a fraction of a second) with a
:class:`~livereduce.errors.SourceError`.

A listener may produce data on demand inside ``extract()`` (file replay, demo source) or fill a bounded buffer
from a background thread of its own (network sources: ADARA, Kafka). Such a thread never lets an exception
escape: it turns every fault into a counted event or a state change visible through :meth:`Listener.health`.

Events the source delivers but that cannot be used (an ``event_id`` outside :attr:`Extracted.event_id_range`,
negative or above 2147483647, events of special banks, events discarded while paused) are dropped at this boundary
and reported per chunk in :attr:`Extracted.dropped` by reason; they never reach a script or size an allocation
(see :func:`livereduce.engines.scipp.chunk.valid_events`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any, ClassVar, Literal

import scipp as sc

StartPosition = Literal["from_start_of_run", "now"] | datetime
"""Where to start: the start of the current run, now, or a time (Mantid's FromStartOfRun/FromNow/FromTime)."""

SourcePosition = dict[str, Any]
"""Where a source stands after a chunk, in the source's own terms (never the wall clock), as JSON-serialisable
values: what a checkpoint stores so that a new process asks the source only for what follows. Each listener
documents its own keys:

* ``FileEventDataListener``: ``{"next_pulse": N}``, the index of the next pulse of the file (int);
* ``SNSLiveEventDataListener``: ``{"run_number": R, "last_pulse_ns": T}``, the newest pulse handed out, ns since the
  Unix epoch (int), and its run;
* ``KafkaEventListener``: ``{"offsets": {"topic[partition]": offset}, ...}``, per partition of every topic read the
  offset of the first message with anything not handed out yet (int), with what a resume needs to skip what went
  out and to find the run again (``protocols/kafka/positions.py``).
"""


class RunStatus(IntEnum):
    """Mantid's ``ILiveListener::RunStatus`` (values as in Mantid), as reported with an extracted chunk.

    ``EndRun``: the chunk ends a run. ``BeginRun``: the chunk ends just before a new run begins (data taken
    between runs). Both mean: the next chunk starts a new accumulation.
    """

    NoRun = 0
    BeginRun = 1
    Running = 2
    EndRun = 4

    @property
    def ends_run(self) -> bool:
        """The chunk ended a run (EndRun or BeginRun): the next chunk starts a new accumulation."""
        return self in (RunStatus.EndRun, RunStatus.BeginRun)


@dataclass(frozen=True)
class Extracted:
    """What one ``extract()`` hands over.

    Attributes:
        chunk: the events since the previous call, as an NXevent_data chunk (see ``chunk.py``); may hold no
            pulses.
        status: the run status that goes with this chunk (BeginRun/EndRun are reported once).
        event_id_range: first and last valid ``event_id`` (pixel id) of the chunk's run, inclusive,
            ``0 <= first <= last < 2**31`` and at most ``chunk.MAX_PIXELS`` wide. Histograms made when
            ``preserve_events`` is false span this range, so that chunks add up; ``(0, 0)`` for a chunk of no run.
        data_reset: the source discarded its history before this chunk (e.g. a reconnect that replays the run):
            the accumulation must start afresh with it.
        dropped: events the source delivered for this chunk but dropped at the boundary, by reason (e.g.
            ``{"event_id outside 0..4095": 12}``); empty when none.
        ended: the source will deliver nothing more (a replayed file has been read to its end).
        more_buffered: data beyond this chunk is already buffered (a chunk that ends a run, with the next run's
            data behind it): the engine takes it at once instead of a cycle later.
        position: where the source stands after this chunk (see :data:`SourcePosition`): resuming from it
            delivers exactly what follows the chunk. None from a source that cannot resume.
    """

    chunk: sc.DataArray
    status: RunStatus
    event_id_range: tuple[int, int]
    data_reset: bool = False
    dropped: Mapping[str, int] = field(default_factory=dict)
    ended: bool = False
    more_buffered: bool = False
    position: SourcePosition | None = None

    @property
    def run_number(self) -> int:
        """The chunk's run number (0 when unknown or between runs)."""
        coords = self.chunk.coords
        return int(coords["run_number"].value) if "run_number" in coords else 0


@dataclass(frozen=True)
class SourceHealth:
    """A snapshot of a source's state, for the status file and metrics.

    Attributes:
        state: one line, e.g. ``"receiving from bl11a-daq1.sns.gov:31415"``, ``"reconnecting in 4 s"``.
        healthy: False while the source is not delivering as it should (connection lost, broker unreachable).
        counters: cumulative counts since ``start()``, e.g. ``bytes``, ``packets``, ``events``,
            ``packets_skipped``; names are source-specific, values non-negative integers.
        offset_lag: Kafka: messages between the consumer's position and the end of each partition it reads, by
            ``"topic[partition]"`` (e.g. ``{"SANS2D_events[0]": 12}``); empty for other sources.
    """

    state: str
    healthy: bool = True
    counters: Mapping[str, int] = field(default_factory=dict)
    offset_lag: Mapping[str, int] = field(default_factory=dict)


class Listener(ABC):
    """A data source of the scipp engine. Subclasses are named after the Mantid listener they reproduce.

    Class attributes:
        name: the Mantid listener class name (the ``listener`` configuration value).

    A :class:`~livereduce.errors.SourceError` says itself whether it may heal (``recoverable``: a network source,
    which the daemon restarts with back-off) or not (a file, which fails the same way at the same position again:
    the daemon exits 3).
    """

    name: ClassVar[str] = ""

    @abstractmethod
    def connect(self) -> None:
        """Open the source (a file, a socket, a consumer).

        Raises:
            SourceError: the source cannot be opened, or :meth:`interrupt` was called; the message names the file
                or address.
        """

    @abstractmethod
    def start(self, position: StartPosition, resume: SourcePosition | None = None) -> None:
        """Begin delivering data from ``position`` (background threads, if any, start here).

        Args:
            position: where to start without a checkpoint (the ``start`` key).
            resume: a checkpoint's position (see :data:`SourcePosition`), for which :meth:`resume_refusal` returned
                None: deliver exactly what follows it, in the run it belongs to (``position`` is then ignored).
        """

    @property
    def resumable(self) -> bool:
        """Whether the source can resume from a position at all: it implements :meth:`resume_refusal`."""
        return type(self).resume_refusal is not Listener.resume_refusal

    def resume_refusal(self, position: SourcePosition) -> str | None:
        """Called after :meth:`connect`: why the source cannot deliver what follows ``position`` (a phrase for the
        log line ``checkpoint of run N not used: <phrase>``), or None when it can (default: a source that cannot
        resume says so)."""
        return f"listener {self.name} cannot resume from a position ({sorted(position)})"

    @abstractmethod
    def extract(self) -> Extracted:
        """Everything that arrived since the previous call, with its run status and data-reset flag.

        Raises:
            SourceError: the source broke and cannot deliver any more (file truncated; a network source only
                when it gives up).
        """

    def interrupt(self) -> None:
        """Make a ``connect()`` or ``start()`` in progress on another thread give up promptly (default: nothing
        to interrupt). Thread-safe; the listener is then only fit for :meth:`disconnect`."""
        return

    def on_data_ready(self, callback: Callable[[str], None]) -> None:  # noqa: ARG002 - default: never called
        """Have ``callback(reason)`` called (from the reader thread) when data should be taken before the next
        cycle: the source's buffer is half full, or a run ended; the engine then takes an early chunk (default: a
        source without a buffer never calls it)."""
        return

    def disconnect(self) -> None:
        """Close the source and stop its threads (default: nothing to close). Safe to call more than once."""
        return

    def health(self) -> SourceHealth:
        """The source's state and counters (default: its name, healthy, no counters)."""
        return SourceHealth(self.name)
