"""The data of an ADARA client between two hand-overs: a :class:`Segment` of pulses, events (decoded as they
arrive into :class:`EventArrays`), monitors and logs, and how it ended (:class:`Transition`).

Memory follows what was received: a segment's event arrays start at :data:`DEFAULT_SEGMENT_EVENTS` (a segment that
continues one just taken: at that one's events and a quarter more) and double when full; :attr:`Segment.nbytes`
counts what it holds (:data:`SEGMENT_BYTES` before any data).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from livereduce.protocols.adara import decode

LogValue = int | float | str | np.ndarray
"""One value of a process variable or annotation log."""
PULSE_BYTES = 40
"""Bookkeeping per pulse in a segment: time, charge, flags, veto, event count."""
SEGMENT_BYTES = 1024
"""What a segment costs in :attr:`ClientState.pending_bytes` before any data (its Python objects)."""
DEFAULT_SEGMENT_EVENTS = 1 << 16
"""Events a segment's arrays are allocated for at first (they double when needed)."""

Allocate = Callable[[int], tuple[np.ndarray, np.ndarray, object]]
"""``allocate(n)`` -> (pixel ids int32 (n,), TOFs float32 (n,), their owner): writable arrays for n events, e.g.
the memory of scipp variables (the owner) that a chunk can use without a copy."""


def numpy_arrays(n: int) -> tuple[np.ndarray, np.ndarray, object]:
    """The default :data:`Allocate`: plain numpy arrays, no owner."""
    return np.empty(n, np.int32), np.empty(n, np.float32), None


class EventArrays:
    """A segment's events, decoded as they arrive: pixel id (int32; ids of 2**31 and more read as negative, see
    :meth:`pixel_ids`) and TOF in µs (float32, ``(tof + offset) / 10``) [NP 5.1].

    The arrays are allocated once for ``capacity`` events (untouched memory costs nothing until written) and
    grow (doubling, with a copy) only if a segment holds more. Decoding here, in the reader thread, with numpy
    (which releases the GIL) leaves the engine's cycle only the chunk to build.
    """

    def __init__(self, allocate: Allocate = numpy_arrays, capacity: int = DEFAULT_SEGMENT_EVENTS) -> None:
        self._allocate = allocate
        self.capacity = capacity
        self.count = 0
        self.pixel: np.ndarray | None = None
        self.tof: np.ndarray | None = None
        self.owner: object = None

    def append(self, payload: memoryview, sections: list[tuple[int, int, int, int]]) -> None:
        """Decode the events of a BANKED_EVENT payload's regular bank sections, ``(byte offset, event count, TOF
        offset in 100 ns (0 with COR set), bank id)`` as :func:`~livereduce.protocols.adara.decode.walk_banked_events`
        gives them, vectorised over the packet."""
        n = sum(section[1] for section in sections)
        if not n:
            return
        if self.pixel is None or self.count + n > self.pixel.size:
            self._grow(self.count + n)
        words = np.frombuffer(payload, "<u4")
        if len(sections) == 1:
            at, count, _, _ = sections[0]
            pairs = words[at // 4 : at // 4 + 2 * count]
        else:
            pairs = np.concatenate([words[at // 4 : at // 4 + 2 * count] for at, count, _, _ in sections])
        runs, first = [], 0
        for _, count, offset, _ in sections:
            if offset:
                runs.append((first, count, offset))
            first += count
        end = self.count + n
        pixel, _ = decode.event_arrays(pairs, runs or None, out=self.tof[self.count : end])
        np.copyto(self.pixel[self.count : end].view(np.uint32), pixel)  # the words as they are: no cast
        self.count = end

    def _grow(self, needed: int) -> None:
        size = max(needed, self.capacity if self.pixel is None else 2 * self.pixel.size)
        pixel, tof, owner = self._allocate(size)
        if self.pixel is not None:
            pixel[: self.count], tof[: self.count] = self.pixel[: self.count], self.tof[: self.count]
        self.pixel, self.tof, self.owner = pixel, tof, owner

    def pixel_ids(self) -> np.ndarray:
        """The pixel ids as the protocol's u32 (a view): ids of 2**31 and more are not negative here."""
        return self.pixel[: self.count].view(np.uint32) if self.pixel is not None else np.zeros(0, np.uint32)


class Transition(Enum):
    """How a sealed segment ends: a run ended (END_RUN), or a new run began after it (NEW_RUN)."""

    END_RUN = "EndRun"
    BEGIN_RUN = "BeginRun"


@dataclass
class Segment:
    """Data received between two run transitions or two :meth:`ClientState.take` calls.

    Attributes:
        run_number: run of the data (0: between runs).
        run_start_ns: start of the run, Unix ns, or None.
        id_range: pixel range in force (first, last), or None before any GEOMETRY.
        events: the regular banks' events, decoded.
        pulse_ns: pulse times (Unix ns), one per BANKED_EVENT packet.
        charge_pc: pulse charge in pC (the packet's 10 pC units x 10) [NP 5.1].
        flags: pulse flags; veto: veto flags (v1) [NP 5.2].
        pulse_events: events kept per pulse.
        monitors: monitor id -> (pulse times Unix ns, TOFs µs), one array pair per packet.
        logs: log name -> new (Unix ns, value) entries, in arrival order.
        initial_logs: log name -> the (Unix ns, value) in force when the segment began, of the logs that changed
            in it (recorded at their first change).
        every_log: the segment starts an accumulation: its chunk holds every log's value in force
            (:meth:`ClientState.logs_for` finds them when it is taken; nothing is copied per segment).
        properties: run properties with Mantid's names (``run_title``, ``experiment_identifier``, ``run_start``,
            ``run_end`` as Unix ns).
        dropped: events dropped at this boundary, by reason.
        transition: how the segment was sealed, None while open.
        data_reset: the SMS replays the run after a reconnect: the accumulation must restart with this data.
    """

    run_number: int = 0
    run_start_ns: int | None = None
    id_range: tuple[int, int] | None = None
    events: EventArrays = field(default_factory=EventArrays)
    pulse_ns: array = field(default_factory=lambda: array("q"))
    charge_pc: array = field(default_factory=lambda: array("d"))
    flags: array = field(default_factory=lambda: array("q"))
    veto: array = field(default_factory=lambda: array("q"))
    pulse_events: array = field(default_factory=lambda: array("q"))
    monitors: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    logs: dict[str, list[tuple[int, LogValue]]] = field(default_factory=dict)
    initial_logs: dict[str, tuple[int, LogValue]] = field(default_factory=dict)
    every_log: bool = False
    properties: dict[str, str | int] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    transition: Transition | None = None
    data_reset: bool = False
    nbytes: int = SEGMENT_BYTES

    @property
    def pulses(self) -> int:
        return len(self.pulse_ns)

    @property
    def has_data(self) -> bool:
        """Pulses or monitor events arrived in it."""
        return bool(self.pulses or self.monitors)

    @property
    def event_count(self) -> int:
        return self.events.count
