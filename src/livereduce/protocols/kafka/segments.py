"""What the Kafka run router holds and hands out, without I/O: runs, pulses of messages (blocks), a run's buffered
data (segments), what no run claims yet (held), and what ``take()`` hands out (:class:`Taken`, with the numpy
arrays of the chunk). The rules that move data between them are :mod:`.runs`'s. Each thing remembers the message
it came from (its :data:`Origin`), so that a source position can say which messages are not all handed out yet
(:mod:`.positions`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from livereduce.protocols.kafka.schemas import Events, RunStart
from livereduce.protocols.kafka.times import tof_ns_to_us

Status = Literal["NoRun", "Running", "BeginRun", "EndRun"]
"""Names of :class:`livereduce.engines.scipp.listeners.base.RunStatus` members (no scipp here)."""
Origin = tuple[tuple[str, int], int]
"""Where something was read: ((topic, partition), offset of its message)."""
LogEntry = tuple[int, int | float | str | np.ndarray]
"""A log value: (ns since the Unix epoch, value): a number, a string, or a 1-d array of numbers (a scalar of the
message as a Python number, so that a log's values are typed as ``engines/scipp/chunk.log_series`` expects)."""


@dataclass
class Run:
    """A run as the router knows it: its pl72, its stop (ns, once known: a 6s4t, the pl72's own stop time, or the
    next run's start), when the stop became known (the monotonic time passed in, s), whether a stop of its own was
    given (it ends with ``EndRun``, else ``BeginRun``: the next run began), whether it has ended (its last chunk
    is sealed), and whether it is the one open-ended run of a stream without run information (run number 0; its
    chunks have the status ``NoRun``). Where its pl72 was read (``start_at``), and the lowest offset per partition
    of the run-control messages that opened or stopped it (``messages``): a resume reads them again while the run
    has data to come."""

    start: RunStart
    stop_ns: int | None = None
    stop_known_at: float = 0.0
    stopped: bool = False
    closed: bool = False
    open_ended: bool = False
    start_at: Origin | None = None
    messages: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.start.run_number

    def covers(self, times: np.ndarray) -> np.ndarray:
        """Which ``times`` (int64 ns, shape (n,)) fall in the run: bool, shape (n,)."""
        inside = times >= self.start.start_ns
        return inside if self.stop_ns is None else inside & (times < self.stop_ns)


@dataclass
class Block:
    """Pulses of one message (or a selection of them).

    Attributes:
        source: the message's ``source_name``.
        times: pulse times, ns since the Unix epoch, int64, shape (n_pulses,).
        index: first event of each pulse, int64, shape (n_pulses,), non-decreasing from 0.
        ids: pixel id of each event, shape (n_events,), int32 (ev44) or uint32 (ev42); shape (0,) for monitors.
        tof: time of flight in ns as the message has it, int32 or uint32, shape (n_events,).
        nbytes: what the block costs the buffer: a whole message's arrays are views of its bytes, so the
            message's size plus 16 per pulse; a selection its events' share of the size plus 16 per pulse.
        message_id: the producer's counter (-1 for a selection).
        origin: the message's partition and offset (set when it is read; None: not known).
    """

    source: str
    times: np.ndarray
    index: np.ndarray
    ids: np.ndarray
    tof: np.ndarray
    nbytes: int
    message_id: int = -1
    origin: Origin | None = None

    @classmethod
    def of(cls, events: Events, nbytes: int) -> Block:
        """The pulses of a decoded message (views of its bytes) that costs the buffer ``nbytes``."""
        arrays = (events.reference_time, events.reference_time_index, events.pixel_id, events.time_of_flight)
        return cls(events.source_name, *arrays, nbytes, events.message_id)

    @property
    def n_events(self) -> int:
        return int(self.tof.shape[0])

    def event_time_zero(self) -> np.ndarray:
        """The pulse time of each event (int64 ns, shape (n_events,))."""
        return np.repeat(self.times, np.diff(np.append(self.index, self.n_events)))

    def take(self, pulses: np.ndarray) -> Block:
        """The pulses where ``pulses`` (bool, shape (n_pulses,)) is true, with their events."""
        counts = np.diff(np.append(self.index, self.n_events))[pulses]
        firsts = np.cumsum(counts) - counts
        events = np.repeat(self.index[pulses] - firsts, counts) + np.arange(counts.sum())
        ids = self.ids[events] if self.ids.size else self.ids
        tof = self.tof[events]
        share = (tof.nbytes + ids.nbytes) / max(1, self.tof.nbytes + self.ids.nbytes)
        nbytes = int((self.nbytes - 16 * self.times.size) * share) + 16 * counts.size  # a split costs no more
        return Block(self.source, self.times[pulses], firsts, ids, tof, nbytes, origin=self.origin)


@dataclass
class Segment:
    """What the buffer holds for one run until :meth:`RunRouter.take` takes it.

    Attributes:
        run: the run.
        reset: its next chunk starts a new accumulation (the run's first chunk).
        events, monitors: blocks of detector / monitor pulses, in arrival order.
        logs: source name -> new entries, in arrival order.
        seed: source name -> the value in force at the run's start, until it went out with a chunk.
        closing: how the run's last chunk ends (``EndRun``/``BeginRun``), None while it is open.
        seeded: sources whose seed went out.
        delivered: pulses of the run were taken.
        seedable: after a resume, the only sources that may still get a value in force at its start (those whose
            value had not gone out before the position); None: every source that has not had one.
        nbytes: what the segment costs the buffer (blocks, log entries).
        origins: the lowest offset per partition of the messages whose data it holds (since it was last taken).
    """

    run: Run
    reset: bool = True
    events: list[Block] = field(default_factory=list)
    monitors: list[Block] = field(default_factory=list)
    logs: dict[str, list[LogEntry]] = field(default_factory=dict)
    seed: dict[str, LogEntry] = field(default_factory=dict)
    closing: Status | None = None
    seeded: set[str] = field(default_factory=set)
    delivered: bool = False
    seedable: set[str] | None = None
    nbytes: int = 0
    origins: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, block: Block, monitor: bool) -> None:
        (self.monitors if monitor else self.events).append(block)
        self.nbytes += block.nbytes
        self.came_from(block.origin)

    def came_from(self, origin: Origin | None) -> None:
        """It holds data of the message at ``origin`` now."""
        note(self.origins, origin)

    @property
    def coalescible(self) -> bool:
        """The run has ended without data and nothing of it was taken: it needs no chunk of its own."""
        return self.closing is not None and not (self.delivered or self.events or self.monitors or self.logs)


@dataclass(frozen=True)
class Held:
    """Something no known run claims yet: pulses (``block``, of a monitor or not) or a log value (``log``: source
    name and entry), costing ``nbytes`` of the buffer, read from the message at ``origin``."""

    block: Block | None
    monitor: bool
    log: tuple[str, LogEntry] | None
    nbytes: int
    origin: Origin | None = None


@dataclass(frozen=True)
class Taken:
    """What :meth:`RunRouter.take` hands out: the head run's data since the previous take.

    Attributes:
        run: the run (None: no run known, then nothing else either).
        status: the run status of the chunk.
        reset: the chunk starts a new accumulation.
        events, monitors: blocks in arrival order.
        logs: source name -> entries (the seed first, when it goes out).
        dropped: events dropped since the previous take, by reason (``outside a run``, ``after their run ended``).
    """

    run: Run | None
    status: Status
    reset: bool
    events: list[Block]
    monitors: list[Block]
    logs: dict[str, list[LogEntry]]
    dropped: Counter[str]

    @property
    def n_events(self) -> int:
        return sum(block.n_events for block in self.events)

    def pulses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The chunk's pulses: (times, first event of each, event order).

        Times are int64 ns, ascending, each once: pulses of the same time from several blocks (the detector banks
        of an ESS instrument on several topics, or several sources on one) are one pulse. The first events index
        the events (int64, shape (n_pulses,)) in the order ``order`` gives: None when the blocks' events
        (:meth:`pixel_ids`, :meth:`time_of_flight_us`) are in that order already (the usual case: one source, in
        time order), else the permutation that puts them in it (int64, shape (n_events,)).
        """
        if not self.events:
            return np.empty(0, np.int64), np.empty(0, np.int64), None
        firsts = np.cumsum([0] + [block.n_events for block in self.events[:-1]])
        index = np.concatenate([block.index + first for block, first in zip(self.events, firsts, strict=True)])
        times = np.concatenate([block.times for block in self.events])
        if times.size < 2 or bool(np.all(times[1:] > times[:-1])):
            return times, index, None
        counts = np.diff(np.append(index, self.n_events))
        by_time = np.argsort(times, kind="stable")
        counts, starts = counts[by_time], index[by_time]
        new_starts = np.cumsum(counts) - counts
        order = np.repeat(starts - new_starts, counts) + np.arange(self.n_events)
        unique, first_of_each = np.unique(times[by_time], return_index=True)
        return unique, new_starts[first_of_each], order

    def pixel_ids(self, out: np.ndarray | None = None) -> np.ndarray:
        """All events' pixel ids, shape (n_events,): into ``out`` (int32) when given, else in their common dtype
        (ev42's uint32 ids can exceed int32)."""
        if not self.events:
            return out if out is not None else np.empty(0, np.int32)
        return np.concatenate([block.ids for block in self.events], out=out)

    def time_of_flight_us(self, out: np.ndarray) -> None:
        """All events' time of flight in µs into ``out`` (float32, shape (n_events,)): ns -> µs while copying."""
        position = 0
        for block in self.events:
            tof_ns_to_us(block.tof, out=out[position : position + block.n_events])
            position += block.n_events

    def monitor_events(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Monitor events by source name: (time of flight µs float32, pulse time int64 ns), each shape (n,)."""
        by_source: dict[str, list[Block]] = {}
        for block in self.monitors:
            by_source.setdefault(block.source, []).append(block)
        return {
            source: (
                tof_ns_to_us(np.concatenate([b.tof for b in blocks])),
                np.concatenate([b.event_time_zero() for b in blocks]),
            )
            for source, blocks in by_source.items()
        }


def note(lowest: dict[tuple[str, int], int], origin: Origin | None) -> None:
    """Keep in ``lowest`` (partition -> offset) the lowest offset per partition, with ``origin``'s."""
    if origin is not None:
        key, offset = origin
        if offset < lowest.get(key, offset + 1):
            lowest[key] = offset
