"""``KafkaEventListener``: live neutron events from Kafka (ESS, ISIS), as Mantid's listener of that name.

Topics (:mod:`livereduce.protocols.kafka.topics`): ``<INSTRUMENT>_events`` (ev44/ev42), ``<INSTRUMENT>_runInfo``
(pl72/6s4t), ``<INSTRUMENT>_sampleEnv`` (f144/f142) and ``<INSTRUMENT>_monitors`` (ev44/ev42) if it exists; the
``topics`` key overrides any of them. ``address`` is the broker list (``bootstrap.servers``); the ``kafka`` key adds
librdkafka settings (security, SASL, TLS), whose secret values are never logged.

**Consumer.** One confluent-kafka consumer on a background thread, partitions *assigned* explicitly (no consumer
group join, no offset commits: as Mantid does). The thread decodes each message by its file identifier
(:mod:`livereduce.protocols.kafka.schemas`) and sorts its pulses, monitor events and log values into the bounded
buffer (``source_buffer_mb``): beyond it reading pauses until ``extract()`` frees space. The thread never raises: a
message it cannot use is skipped and counted by reason (``skipped_<reason>`` in :meth:`health`), a broker it
cannot reach is a state ("broker unreachable since ...") while librdkafka reconnects, a gap or a reset of a
partition's offsets is counted and logged; only a bug ends it, and then the next ``extract()`` raises
:class:`~livereduce.errors.SourceError` (recoverable: the daemon restarts the listener with back-off).

**Start** (``start`` key). The broker's answers are only a starting point: timestamp look-ups are approximate
(Kafka answers by record timestamp, which producers may set late or early; the test broker tansu answers by write
time, or offset 0) and "latest" offsets may point into the last batch. So every data partition is sought to
``offsets_for_times(T - SEEK_MARGIN_NS)`` and then pulses are *selected by their own times*: those at or after T.

* ``from_start_of_run``: T is the start of the last run start (pl72) on ``_runInfo`` (found by reading the topic
  backwards from its end); without one, the listener waits for the next.
* ``now``: T is the moment ``start()`` was called; the run current then (the last pl72) supplies the metadata.
* a time: T is that time (Mantid does not offer this); the run current then supplies the metadata.

**Runs.** A pl72 opens a run: ``run_number`` from ``run_name`` (digits, else 0), the start time, the instrument
name, and the pixel range (:meth:`event_id_range`). Pulses at or after its start belong to it. The first run seen
is not a transition (``NoRun`` -> ``Running``). A 6s4t gives the run's stop time; every data partition is then
read until its data passes the stop time (or it has been at its end for ``STOP_LATENCY_S`` with the wall clock past
the stop time): the last chunk of the run has ``EndRun``. A pl72 while a run is still open ends that run just
before the new start: its last chunk has ``BeginRun``. The first chunk of a run has ``data_reset`` (unless it is the
very first chunk handed out), so that it never adds to chunks of another run or of no run.
Pulses outside every known run are held (bounded, ``LIMBO_FRACTION`` of the buffer) until a run start claims them
(a pl72 can arrive after the first data of its run: the topics are read in parallel); pulses no run claims are
dropped and counted (``outside a run``). A run that ended before T is skipped without a transition.

**Chunks.** The same ``NXevent_data`` representation as the other listeners (``chunk.make_chunk``): one pulse per
ev44 reference time (or ev42 pulse), in arrival order, ``event_time_zero`` = the reference time (ns, Unix epoch),
``event_time_offset`` = ``time_of_flight`` / 1000 (ns -> µs, float32), ``event_id`` = the pixel id; ids outside
:meth:`event_id_range` are dropped and counted (``chunk.valid_events``). Metadata: run number, start time and
instrument of the run; ``logs``: each f144/f142 source's values received for the chunk's run since the previous
chunk (the first chunk of a run also gets the value in force at its start), under its ``source_name``, dimension
``time``; ``monitors``: monitor events by ``source_name``; ``properties``: ``run_name``, ``run_start``, ``run_end``
(once known).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import numpy as np
import scipp as sc
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from livereduce.clock import Clock, SystemClock
from livereduce.config import Config
from livereduce.engines.scipp.chunk import EVENT_DIM, MAX_EVENT_ID, MAX_PIXELS, RunMetadata, make_chunk, valid_events
from livereduce.engines.scipp.listeners.base import Extracted, Listener, RunStatus, SourceHealth, StartPosition
from livereduce.errors import ConfigError, SourceError
from livereduce.protocols.kafka.schemas import (
    EVENT_SCHEMAS,
    LOG_SCHEMAS,
    RUN_SCHEMAS,
    Decoded,
    Events,
    LogValue,
    RunStart,
    RunStop,
    Skipped,
    decode,
)
from livereduce.protocols.kafka.times import datetime_to_ns, iso, ns_to_datetime64, tof_ns_to_us
from livereduce.protocols.kafka.topics import (
    MAX_MESSAGE_BYTES,
    REQUIRED_ROLES,
    Role,
    consumer_settings,
    redacted,
    topic_names,
)

_log = logging.getLogger("livereduce.KafkaEventListener")

CONNECT_TIMEOUT_S: Final = 10.0
"""Seconds ``connect()`` waits for the broker's metadata, and each look-up (offsets, run start) waits."""
SEEK_MARGIN_NS: Final = 10_000_000_000
"""Data partitions are sought to ``T`` minus 10 s: producers' record timestamps may be a little early."""
STOP_LATENCY_S: Final = 1.0
"""After a run stop, a partition at its end counts as passed after this long (Mantid waits 1 s too)."""
LIMBO_FRACTION: Final = 0.25
"""Share of ``source_buffer_mb`` that may hold pulses no known run claims yet."""
MAX_SOURCES: Final = 10_000
"""Most log sources and event sources tracked (a hostile stream could name millions)."""
BATCH: Final = 1000
"""Most messages taken from the consumer at once; fewer when the buffer's free space holds fewer (of the mean
size seen so far), so that the buffer overshoots ``source_buffer_mb`` by at most about one message."""
POLL_S: Final = 0.1
CHECK_EVERY_S: Final = 0.5
"""Seconds between the checks of partition offsets against the broker's high watermarks."""
WARN_EVERY_S: Final = 60.0
"""A repeating warning (a skip reason, a broker error) is logged at most once per minute."""
FUTURE_LIMIT_NS: Final = 86_400 * 10**9
"""Pulses or log values more than a day after the wall clock are skipped (``invalid``): one far-future time would
otherwise make its partition look past any run stop."""
FIRST_SCAN: Final = 16
"""Messages read from the end of ``_runInfo`` first when looking for the last run start (then 4x more)."""

_ACCEPTED: Final[dict[str, frozenset[str]]] = {
    "events": EVENT_SCHEMAS,
    "monitors": EVENT_SCHEMAS,
    "runInfo": RUN_SCHEMAS,
    "sampleEnv": LOG_SCHEMAS,
}
_NEVER = -(2**63)
_ALWAYS_COUNTED: Final = ("messages", "bytes", "events", "pulses", "logs", "run_starts", "run_stops", "events_dropped")
"""Counters :meth:`KafkaEventListener.health` reports even when 0 (the others appear once they count)."""


@dataclass
class _Run:
    """A run as the listener knows it."""

    start: RunStart
    id_range: tuple[int, int]
    stop_ns: int | None = None
    stop_known_at: float = 0.0  # time.monotonic() when the stop time became known
    closed: bool = False

    @property
    def number(self) -> int:
        return self.start.run_number

    def covers(self, times: np.ndarray) -> np.ndarray:
        inside = times >= self.start.start_ns
        return inside if self.stop_ns is None else inside & (times < self.stop_ns)


@dataclass
class _Block:
    """Pulses of one message (or a selection of them): times ns (int64, n_pulses), first-event index (int64,
    n_pulses), pixel ids (n_events; empty for monitors), time of flight in ns as the message has it (int32 or
    uint32, n_events; converted to µs when the chunk is built, in the same pass that copies it into the chunk).
    The arrays of a whole message are views of the message's bytes, which ``nbytes`` counts."""

    source: str
    times: np.ndarray
    index: np.ndarray
    ids: np.ndarray
    tof: np.ndarray
    nbytes: int
    message_id: int = -1  # the producer's counter (-1 for a selection)

    @property
    def n_events(self) -> int:
        return int(self.tof.shape[0])

    def take(self, pulses: np.ndarray) -> _Block:
        """The pulses where ``pulses`` (bool, n_pulses) is true, with their events."""
        counts = np.diff(np.append(self.index, self.n_events))[pulses]
        starts = self.index[pulses]
        events = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        index = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        ids = self.ids[events] if self.ids.size else self.ids
        tof = self.tof[events]
        share = (tof.nbytes + ids.nbytes) / max(1, self.tof.nbytes + self.ids.nbytes)
        return _Block(self.source, self.times[pulses], index, ids, tof, int(self.nbytes * share) + 16 * counts.size)


@dataclass
class _Segment:
    """What the buffer holds for one run until ``extract()`` takes it."""

    run: _Run
    reset: bool = True  # its first chunk starts a new accumulation (unless it is the first chunk handed out)
    events: list[_Block] = field(default_factory=list)
    monitors: list[_Block] = field(default_factory=list)
    logs: dict[str, list[tuple[int, np.ndarray | str]]] = field(default_factory=dict)
    seed: dict[str, tuple[int, np.ndarray | str]] = field(default_factory=dict)
    closing: RunStatus | None = None
    seeded: set[str] = field(default_factory=set)  # sources whose value in force at the start went out
    delivered: bool = False  # pulses were taken
    nbytes: int = 0

    def add(self, block: _Block, monitor: bool) -> None:
        (self.monitors if monitor else self.events).append(block)
        self.nbytes += block.nbytes


@dataclass
class _Partition:
    """Read state of one assigned partition."""

    role: Role
    next_offset: int | None = None
    confirmed: bool = False  # a message arrived at next_offset - 1 (else next_offset is where we were sent)
    at_eof: bool = False
    max_time: int = _NEVER  # latest data time seen (ns)
    replay_floor: int = _NEVER  # after an offset reset: data up to this time was seen already
    mark: tuple[int, int, int] | None = None  # (offset, timestamp, CRC-32) of the last message read
    verifying: bool = False  # sought back to ``mark`` after an outage: is the log still the same?


@dataclass
class _Taken:
    """What ``extract()`` detached from the buffer under the lock."""

    run: _Run | None
    status: RunStatus
    reset: bool
    events: list[_Block]
    monitors: list[_Block]
    logs: dict[str, list[tuple[int, np.ndarray | str]]]
    dropped: Counter[str]


class KafkaEventListener(Listener):
    """Live events from Kafka. Config keys: ``address``, ``topics``, ``kafka``, ``start``, ``source_buffer_mb``.

    Raises:
        ConfigError: (constructor) no ``address`` and none known for the instrument.
    """

    name = "KafkaEventListener"

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        info = config.instrument_info()
        address = config.address or info.address
        if not address:
            raise ConfigError(f"listener KafkaEventListener needs the key 'address' (no broker known for {info.name})")
        self.address = address
        self.instrument = info.name
        self.topics = topic_names(info.name, config.topics)
        self._roles: dict[str, Role] = {topic: role for role, topic in self.topics.items()}
        self.buffer_limit = int(config.source_buffer_mb * 2**20)
        self.max_message = min(MAX_MESSAGE_BYTES, self.buffer_limit)
        self._settings = consumer_settings(address, config.kafka, self.buffer_limit // 4 // 1024)
        self._consumer: Consumer | None = None
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._position: StartPosition = "from_start_of_run"
        self._lower: int | None = None  # pulses before this time (ns) are not delivered
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._mean_message = 65536.0  # bytes: a running mean of the messages consumed (consumer thread only)
        # --- guarded by _lock -----------------------------------------------------------------------------------
        self._segments: deque[_Segment] = deque()
        self._limbo: list[tuple[_Block, bool]] = []  # (block, monitor) not claimed by any known run
        self._limbo_bytes = 0
        self._last_run: _Run | None = None
        self._handed_out = False  # extract() was called before
        self._latest_logs: dict[str, tuple[int, np.ndarray | str]] = {}
        self._over: RunStart | None = None  # the run current at the start position, found already stopped
        self._pending_dropped: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()
        self._located = False
        self._failure = ""
        self._unreachable_since: float | None = None
        self._paused = False
        self._id_range = (0, 0)
        # --- consumer thread only -------------------------------------------------------------------------------
        self._message_ids: dict[tuple[str, int, str], int] = {}
        self._verify = False  # the broker was unreachable: check that every partition still holds what we read
        self._reseeked: set[tuple[str, int]] = set()  # partitions sought during this batch (rest of it is stale)
        self._warned: dict[str, float] = {}
        self._last_check = 0.0

    # --- Listener interface -----------------------------------------------------------------------------------
    def connect(self) -> None:
        """Create the consumer and read the broker's metadata: the topics and their partitions.

        Raises:
            ConfigError: librdkafka rejects the settings (the ``kafka`` key).
            SourceError: (recoverable: the daemon retries with back-off) the broker cannot be reached within
                ``CONNECT_TIMEOUT_S``, or the ``events`` or ``runInfo`` topic does not exist.
        """
        self.disconnect()
        _log.info("Connecting to Kafka at %s: %s", self.address, redacted(self._settings))
        try:
            consumer = Consumer({**self._settings, "error_cb": self._on_error, "stats_cb": self._on_stats})
        except (KafkaException, ValueError, TypeError) as err:
            raise ConfigError(f"key 'kafka': librdkafka rejects the consumer settings: {err}") from None
        try:
            metadata = consumer.list_topics(timeout=CONNECT_TIMEOUT_S)
        except KafkaException as err:
            consumer.close()
            raise SourceError(f"Kafka broker {self.address} unreachable: {err.args[0]}", recoverable=True) from None
        partitions: dict[tuple[str, int], _Partition] = {}
        for role, topic in self.topics.items():
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                if role in REQUIRED_ROLES:
                    consumer.close()
                    raise SourceError(
                        f"Kafka topic '{topic}' ({role}) does not exist on {self.address}", recoverable=True
                    )
                _log.info("Kafka topic '%s' (%s) does not exist: not read", topic, role)
                continue
            partitions.update({(topic, p): _Partition(role) for p in sorted(found.partitions)})
        self._consumer, self._partitions = consumer, partitions
        _log.info(
            "Kafka topics: %s",
            ", ".join(
                f"{topic} ({role}, {sum(1 for t, _ in partitions if t == topic)} partitions)"
                for role, topic in self.topics.items()
                if any(t == topic for t, _ in partitions)
            ),
        )

    def start(self, position: StartPosition) -> None:
        """Start the consumer thread from ``position`` (see the module docstring)."""
        self._position = position
        if position == "now":
            self._lower = time.time_ns()
        elif isinstance(position, datetime):
            self._lower = datetime_to_ns(position)
        self._stop.clear()
        self._thread = threading.Thread(target=self._consume, name="KafkaEventListener", daemon=True)
        self._thread.start()

    def extract(self) -> Extracted:
        """Everything buffered for the run at the head of the buffer, with its status and data-reset flag.

        Raises:
            SourceError: the consumer thread failed (a bug; its traceback is in the log).
        """
        with self._lock:
            if self._failure:
                raise SourceError(f"Kafka consumer failed: {self._failure}", recoverable=True)
            taken = self._take()
            self._space.notify_all()
        chunk, dropped = self._chunk(taken)
        with self._lock:
            self._counters["events_dropped"] += sum(dropped.values())
        return Extracted(chunk, taken.status, self._id_range, data_reset=taken.reset, dropped=dict(dropped))

    def disconnect(self) -> None:
        """Stop the consumer thread and close the consumer (safe to call more than once)."""
        self._stop.set()
        with self._lock:
            self._space.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(CONNECT_TIMEOUT_S)
            if thread.is_alive():
                _log.warning("Kafka consumer thread still busy after %g s; closing anyway", CONNECT_TIMEOUT_S)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as err:
                _log.warning("Closing the Kafka consumer: %s", err)

    def health(self) -> SourceHealth:
        """State line and counters: ``messages``, ``bytes``, ``events``, ``pulses``, ``logs``, ``run_starts``,
        ``run_stops``, ``skipped_<reason>`` (``too_short``, ``unknown_schema``, ``unexpected_schema``,
        ``malformed``, ``invalid``, ``too_large``, ``unmatched_stop``, ``stale_run_start``), ``pulses_before_start``,
        ``events_outside_run``, ``events_late``, ``events_replayed``, ``events_dropped``, ``offset_gaps``,
        ``partition_resets``, ``message_id_gaps``, ``broker_errors``, ``reading_paused`` (times the buffer was full)."""
        with self._lock:
            counters = {key: self._counters[key] for key in _ALWAYS_COUNTED} | dict(self._counters)
            if self._failure:
                return SourceHealth(f"consumer failed: {self._failure}", healthy=False, counters=counters)
            if self._unreachable_since is not None:
                since = iso(int(self._unreachable_since * 1e9))
                return SourceHealth(f"broker unreachable since {since} ({self.address})", False, counters)
            run = self._last_run
            if not self._located:
                state = f"locating the run on {self.topics['runInfo']} ({self.address})"
            elif run is None or run.closed:
                state = f"waiting for a run start on {self.topics['runInfo']} ({self.address})"
            elif run.stop_ns is not None:
                state = f"run {run.number} stopping at {iso(run.stop_ns)} ({self.address})"
            else:
                state = f"run {run.number} from {self.address}"
            if self._paused:
                state += f"; reading paused, buffer full ({self.buffer_limit >> 20} MiB)"
            return SourceHealth(state, counters=counters)

    # --- extract --------------------------------------------------------------------------------------------
    def _take(self) -> _Taken:
        """Detach the head segment's data (lock held)."""
        dropped, self._pending_dropped = self._pending_dropped, Counter()
        handed_out, self._handed_out = self._handed_out, True
        if not self._segments:
            return _Taken(None, RunStatus.NoRun, False, [], [], {}, dropped)
        segment = self._segments[0]
        if segment.closing is not None:
            self._segments.popleft()
        status = segment.closing or RunStatus.Running
        logs = segment.logs
        pulses = bool(segment.events or segment.monitors)
        for name in [name for name in segment.seed if pulses or name in logs]:  # the value in force at the start
            logs.setdefault(name, []).insert(0, segment.seed.pop(name))
            segment.seeded.add(name)
        reset = segment.reset and handed_out
        taken = _Taken(segment.run, status, reset, segment.events, segment.monitors, logs, dropped)
        segment.delivered = segment.delivered or pulses
        segment.events, segment.monitors, segment.logs = [], [], {}
        segment.reset, segment.nbytes = False, 0
        return taken

    def _chunk(self, taken: _Taken) -> tuple[sc.DataArray, Counter[str]]:
        """Build the chunk from detached blocks (no lock: the consumer thread goes on meanwhile)."""
        run, dropped = taken.run, taken.dropped
        self._id_range = run.id_range if run is not None else (0, 0)  # no run, no events: no pixels
        metadata = self._metadata(run, taken.logs, taken.monitors)
        blocks = taken.events
        n_events = sum(block.n_events for block in blocks)
        dtype = np.result_type(*(block.ids.dtype for block in blocks)) if blocks else np.dtype(np.int32)
        tof = sc.empty(sizes={EVENT_DIM: n_events}, dtype="float32", unit="us")
        if dtype == np.int32:
            ids: sc.Variable | np.ndarray = sc.empty(sizes={EVENT_DIM: n_events}, dtype="int32", unit=None)
            _concatenate([block.ids for block in blocks], ids.values)
        else:
            ids = np.concatenate([block.ids for block in blocks]) if blocks else np.empty(0, np.int32)
        position = 0
        for block in blocks:  # ns -> µs while copying into the chunk
            tof_ns_to_us(block.tof, out=tof.values[position : position + block.n_events])
            position += block.n_events
        times = np.concatenate([block.times for block in blocks]) if blocks else np.empty(0, np.int64)
        index = np.empty(0, np.int64)
        if blocks:
            starts = np.cumsum([0] + [block.n_events for block in blocks[:-1]])
            index = np.concatenate([block.index + start for block, start in zip(blocks, starts, strict=True)])
        ids, tof, index, invalid = valid_events(ids, tof, index, self._id_range)
        if isinstance(ids, np.ndarray) and ids.dtype != np.int32:  # ev42's uint32, all within 0..2**31-1 now
            ids = ids.astype(np.int32)
        dropped.update(invalid)
        return make_chunk(ids, tof, ns_to_datetime64(times), index, metadata=metadata), dropped

    def _metadata(
        self, run: _Run | None, logs: dict[str, list[tuple[int, np.ndarray | str]]], monitors: list[_Block]
    ) -> RunMetadata:
        if run is None:
            return RunMetadata(instrument_name=self.instrument)
        properties: dict[str, str | int | float | np.datetime64] = {
            "run_name": run.start.run_name,
            "run_start": ns_to_datetime64(run.start.start_ns),
        }
        if run.stop_ns is not None:
            properties["run_end"] = ns_to_datetime64(run.stop_ns)
        series = {name: array for name, entries in logs.items() if (array := _log_series(entries)) is not None}
        return RunMetadata(
            run_number=run.number,
            start_time=ns_to_datetime64(run.start.start_ns),
            instrument_name=run.start.instrument_name or self.instrument,
            logs=series,
            properties=properties,
            monitors=_monitor_events(monitors),
        )

    # --- the consumer thread --------------------------------------------------------------------------------
    def _consume(self) -> None:
        """Thread body: locate, then read until stopped. Never raises (a bug becomes ``_failure``)."""
        try:
            while not self._stop.is_set() and not self._locate_safely():
                self._stop.wait(1.0)
            while not self._stop.is_set():
                self._step()
        except BaseException as err:  # noqa: BLE001 - the thread must not die silently: recorded, raised by extract()
            _log.exception("Kafka consumer thread failed")
            with self._lock:
                self._failure = f"{type(err).__name__}: {err}"

    def _locate_safely(self) -> bool:
        try:
            self._locate()
        except KafkaException as err:
            self._warn("locate", f"Kafka: cannot locate the run yet ({err.args[0]}); retrying")
            return False
        return True

    def _locate(self) -> None:
        """Find the run to start with, seek every partition, and assign them all.

        Raises:
            KafkaException: a look-up failed (broker unreachable): retried by the caller.
        """
        bound = None if self._position == "from_start_of_run" else self._lower
        found: tuple[int, int, RunStart] | None = None
        ends: dict[tuple[str, int], int] = {}
        stops: list[RunStop] = []
        for (topic, partition), state in self._partitions.items():
            if state.role == "runInfo":
                candidate, ends[topic, partition], later = self._last_run_start(topic, partition, bound)
                stops += later
                if candidate is not None and (found is None or candidate[2].start_ns >= found[2].start_ns):
                    found = candidate
        if self._position == "from_start_of_run":
            self._lower = found[2].start_ns if found is not None else None
        if found is not None:
            ended = [stop for stop in stops if _stops(stop, found[2]) and stop.stop_ns <= (self._lower or _NEVER)]
            with self._lock:
                if ended:  # it stopped before the start position: not a run of this listener (Mantid: FromNow)
                    self._over = found[2]
                    _log.info("Kafka: run %s ended before the start position", found[2].run_name)
                else:
                    self._on_run_start(found[2])
        elif self._position == "from_start_of_run":
            _log.info("Kafka: no run start on %s yet; waiting for one", self.topics["runInfo"])
        if self._lower is not None:
            _log.info("Kafka: delivering pulses from %s on", iso(self._lower))
        assignment = self._assignment(found, ends)
        self._consumer.assign(assignment)
        with self._lock:
            for assigned in assignment:
                state = self._partitions[assigned.topic, assigned.partition]
                state.next_offset, state.confirmed = assigned.offset, False
            self._located = True

    def _assignment(
        self, found: tuple[int, int, RunStart] | None, run_info_ends: dict[tuple[str, int], int]
    ) -> list[TopicPartition]:
        """Every partition with its start offset.

        * runInfo: the partition of the run start found from its offset; the others from
          ``offsets_for_times(start - SEEK_MARGIN_NS)`` (its stop may be there); without a run start, from where
          the search ended (a run start written since is then read).
        * data topics: from ``offsets_for_times(T - SEEK_MARGIN_NS)``; without T (waiting for a run) or without a
          later message, from the high watermark now. Never ``OFFSET_END``: librdkafka resolves it later, and what
          is written meanwhile would be missed.

        Raises:
            KafkaException: a look-up failed.
        """
        consumer = self._consumer
        offsets: dict[tuple[str, int], int] = {}
        lookups = []
        for (topic, partition), state in self._partitions.items():
            if state.role == "runInfo":
                if found is not None and found[0] == partition:
                    offsets[topic, partition] = found[1]
                    continue
                offsets[topic, partition] = run_info_ends[topic, partition]
                since = found[2].start_ns if found is not None else None
            else:
                since = self._lower
            if since is not None:
                lookups.append(TopicPartition(topic, partition, max(0, (since - SEEK_MARGIN_NS) // 1_000_000)))
        if lookups:
            for answer in consumer.offsets_for_times(lookups, timeout=CONNECT_TIMEOUT_S):
                if answer.error is not None:
                    raise KafkaException(answer.error)
                if answer.offset >= 0:
                    offsets[answer.topic, answer.partition] = answer.offset
        for topic, partition in self._partitions:
            if (topic, partition) not in offsets:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=CONNECT_TIMEOUT_S)
                offsets[topic, partition] = high
        return [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]

    def _last_run_start(
        self, topic: str, partition: int, bound: int | None
    ) -> tuple[tuple[int, int, RunStart] | None, int, list[RunStop]]:
        """The last pl72 of a runInfo partition that starts at or before ``bound`` (any if None), read backwards
        in growing windows from the end: ((partition, offset, run start) or None, the partition's end offset, the
        run stops after it).

        Raises:
            KafkaException: the broker cannot answer.
        """
        low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=CONNECT_TIMEOUT_S)
        stop, window, first = None, FIRST_SCAN, high
        end = max(high, 0)
        stops: list[tuple[int, RunStop]] = []
        while True:
            first = max(low, first - window)
            messages, reached = self._read_partition(topic, partition, first, stop)
            end = reached if stop is None else end
            best = None
            for offset, value in messages:
                try:
                    decoded = decode(value, RUN_SCHEMAS)
                except Skipped:
                    continue
                if isinstance(decoded, RunStop):
                    stops.append((offset, decoded))
                elif bound is None or decoded.start_ns <= bound:
                    best = (partition, offset, decoded)
            if best is not None or first <= low:
                later = [run_stop for offset, run_stop in stops if best is not None and offset > best[1]]
                return best, end, later
            stop, window = first, window * 4

    def _read_partition(
        self, topic: str, partition: int, first: int, stop: int | None
    ) -> tuple[list[tuple[int, bytes]], int]:
        """Messages of one partition from offset ``first`` up to ``stop`` (exclusive; None: to the partition's
        end), and the offset where reading ended.

        Raises:
            KafkaException: the partition's end was not reached within ``CONNECT_TIMEOUT_S``.
        """
        consumer = self._consumer
        consumer.assign([TopicPartition(topic, partition, first)])
        found: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while time.monotonic() < deadline and not self._stop.is_set():
            for message in consumer.consume(BATCH, POLL_S):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return found, message.offset()
                    raise KafkaException(error)
                if stop is not None and message.offset() >= stop:
                    return found, stop
                found.append((message.offset(), message.value() or b""))
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {topic} [{partition}] from offset {first}"))

    def _step(self) -> None:
        """One round: wait for space if the buffer is full, else consume a batch and sort it in."""
        with self._lock:
            full = self._buffered_bytes() >= self.buffer_limit
            if full != self._paused:
                self._paused = full
                self._counters["reading_paused"] += full
                _log.log(
                    logging.WARNING if full else logging.INFO,
                    "Kafka: buffer %s (%d MiB): reading %s",
                    "full" if full else "has space again",
                    self.buffer_limit >> 20,
                    "paused until the engine takes the next chunk" if full else "resumed",
                )
            if full:
                self._space.wait(POLL_S)
                return
            room = self.buffer_limit - self._buffered_bytes()
        if self._verify:
            self._seek_to_marks()
        messages = self._consumer.consume(max(1, min(BATCH, int(room / self._mean_message))), POLL_S)
        if messages:
            size = sum(len(message.value() or b"") for message in messages) / len(messages)
            self._mean_message = max(64.0, 0.8 * self._mean_message + 0.2 * size)
        decoded = [self._decode(message) for message in messages]
        last = {(m.topic(), m.partition()): m for m in messages if m.error() is None}
        with self._lock:
            self._reseeked = set()
            for message, item in zip(messages, decoded, strict=True):
                if (message.topic(), message.partition()) not in self._reseeked:
                    self._apply(message, item)
            for key, message in last.items():
                state = self._partitions.get(key)
                if state is not None and key not in self._reseeked and state.next_offset == message.offset() + 1:
                    state.mark = _mark(message)
            self._check_stop()
        now = time.monotonic()
        if now - self._last_check >= CHECK_EVERY_S:
            self._last_check = now
            self._check_offsets()

    def _decode(self, message: Message) -> _Block | Decoded | Skipped | KafkaError:
        """Decode one message (no lock): its pulses as a block, a run or log record, a Skipped, or its error."""
        error = message.error()
        if error is not None:
            return error
        value = message.value() or b""
        if len(value) > self.max_message:
            return Skipped("too_large", f"{len(value)} bytes (at most {self.max_message})")
        role = self._roles.get(message.topic(), "events")
        try:
            record = decode(value, _ACCEPTED[role])
        except Skipped as skipped:
            return skipped
        newest = _newest_time(record)
        if newest is not None and newest > time.time_ns() + FUTURE_LIMIT_NS:
            return Skipped("invalid", f"time {newest} ns is more than a day after the wall clock")
        if isinstance(record, Events):
            if role == "events" and record.n_events and not record.has_pixels:
                return Skipped("invalid", f"{record.schema}: events without pixel ids on the events topic")
            return _Block(
                record.source_name,
                record.reference_time,
                record.reference_time_index,
                record.pixel_id,
                record.time_of_flight,
                len(value) + 16 * record.reference_time.size,
                record.message_id,
            )
        return record

    def _apply(self, message: Message, item: _Block | Decoded | Skipped | KafkaError) -> None:
        """Account for one message and sort its content in (lock held)."""
        if isinstance(item, KafkaError):
            self._on_message_error(message, item)
            return
        if self._unreachable_since is not None:
            self._reachable()
        key = (message.topic(), message.partition())
        state = self._partitions.get(key)
        if state is None:
            return
        if state.verifying:
            state.verifying = False
            if state.mark == _mark(message):  # the last message read before the outage: the log is unchanged
                state.next_offset, state.confirmed = message.offset() + 1, True
                return
            self._reset(key, state, "holds other messages since the broker was unreachable")
            return
        self._count_offset(state, message.offset())
        value_size = len(message.value() or b"")
        self._counters["messages"] += 1
        self._counters["bytes"] += value_size
        if isinstance(item, Skipped):
            self._counters[f"skipped_{item.reason}"] += 1
            self._warn(f"skip:{item.reason}", f"Kafka: skipped a message on {message.topic()}: {item}")
            return
        if isinstance(item, _Block):
            self._count_message_id(message.topic(), message.partition(), item)
            self._on_events(state, item, monitor=state.role == "monitors")
        elif isinstance(item, LogValue):
            self._on_log(state, item)
        elif isinstance(item, RunStart):
            self._counters["run_starts"] += 1
            self._on_run_start(item)
        elif isinstance(item, RunStop):
            self._counters["run_stops"] += 1
            self._on_run_stop(item)

    def _on_message_error(self, message: Message, error: KafkaError) -> None:
        key = (message.topic(), message.partition())
        if error.code() == KafkaError._PARTITION_EOF:
            if self._unreachable_since is not None:
                self._reachable()
            state = self._partitions.get(key)
            if state is not None and state.verifying:
                self._reset(key, state, f"ends at offset {message.offset()} since the broker was unreachable")
            elif state is not None:
                state.at_eof = True
            return
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            self._counters["skipped_too_large"] += 1
        else:
            self._counters["broker_errors"] += 1
        self._warn(f"error:{error.code()}", f"Kafka: {message.topic()} [{message.partition()}]: {error.str()}")

    def _count_offset(self, state: _Partition, offset: int) -> None:
        if state.next_offset is not None and offset != state.next_offset:
            if offset > state.next_offset:
                self._counters["offset_gaps"] += offset - state.next_offset
            else:
                self._counters["partition_resets"] += 1
                state.replay_floor = state.max_time
        state.next_offset, state.confirmed = offset + 1, True
        state.at_eof = False

    def _count_message_id(self, topic: str, partition: int, block: _Block) -> None:
        key = (topic, partition, block.source)
        last = self._message_ids.get(key)
        if last is not None and block.message_id != last + 1:
            self._counters["message_id_gaps"] += 1
        if last is not None or len(self._message_ids) < MAX_SOURCES:
            self._message_ids[key] = block.message_id

    # --- sorting data into runs -------------------------------------------------------------------------------
    def _on_events(self, state: _Partition, block: _Block, monitor: bool) -> None:
        """Select by time and route a message's pulses to the runs they belong to (lock held)."""
        self._counters["events"] += block.n_events
        self._counters["pulses"] += block.times.size
        if block.times.size == 0:
            return
        newest = int(block.times.max())
        if newest <= state.replay_floor:
            self._counters["events_replayed"] += block.n_events
            return
        state.max_time = max(state.max_time, newest)
        if self._lower is not None and int(block.times.min()) < self._lower:
            early = block.times < self._lower
            self._counters["pulses_before_start"] += int(early.sum())
            if early.all():
                return
            block = block.take(~early)
        self._route(block, monitor)

    def _route(self, block: _Block, monitor: bool) -> None:
        remaining: _Block | None = block
        for segment in reversed(self._segments):
            inside = segment.run.covers(remaining.times)
            if inside.all():
                segment.add(remaining, monitor)
                return
            if inside.any():
                segment.add(remaining.take(inside), monitor)
                remaining = remaining.take(~inside)
        frontier = self._frontier()
        if frontier is None:
            self._hold(remaining, monitor)
            return
        late = remaining.times < frontier
        if late.any():
            self._counters["events_late"] += remaining.take(late).n_events
            self._pending_dropped["outside a run"] += remaining.take(late).n_events
            if late.all():
                return
            remaining = remaining.take(~late)
        self._hold(remaining, monitor)

    def _frontier(self) -> int | None:
        """Earliest time a run not known yet may claim: the newest run's stop (None: any time)."""
        run = self._last_run
        if run is None:
            return None
        return run.stop_ns if run.stop_ns is not None else run.start.start_ns

    def _hold(self, block: _Block, monitor: bool) -> None:
        """Keep pulses no known run claims, within ``LIMBO_FRACTION`` of the buffer (oldest dropped first)."""
        self._limbo.append((block, monitor))
        self._limbo_bytes += block.nbytes
        budget = self.buffer_limit * LIMBO_FRACTION
        while self._limbo_bytes > budget and self._limbo:
            old, _ = self._limbo.pop(0)
            self._limbo_bytes -= old.nbytes
            self._counters["events_outside_run"] += old.n_events
            self._pending_dropped["outside a run"] += old.n_events

    def _on_log(self, state: _Partition, value: LogValue) -> None:
        """Keep a log value for the run it falls in; remember the latest of each source (lock held)."""
        name = value.source_name
        if name not in self._latest_logs and len(self._latest_logs) >= MAX_SOURCES:
            self._counters["skipped_invalid"] += 1
            self._warn("log-sources", f"Kafka: more than {MAX_SOURCES} log sources; '{name}' ignored")
            return
        self._counters["logs"] += 1
        state.max_time = max(state.max_time, value.time_ns)
        entry = (value.time_ns, value.value)
        latest = self._latest_logs.get(name)
        if latest is None or latest[0] <= value.time_ns:
            self._latest_logs[name] = entry
        size = 16 + (value.value.nbytes if isinstance(value.value, np.ndarray) else len(value.value))
        for segment in reversed(self._segments):
            if segment.run.covers(np.array([value.time_ns]))[0]:
                segment.logs.setdefault(name, []).append(entry)
                segment.nbytes += size
                return
            if value.time_ns < segment.run.start.start_ns and name not in segment.seeded:
                seed = segment.seed.get(name)
                if seed is None or seed[0] <= value.time_ns:
                    segment.seed[name] = entry

    def _on_run_start(self, start: RunStart) -> None:
        """A pl72: open a run, ending the open one (BeginRun), and claim held pulses (lock held)."""
        previous = self._last_run
        if (previous is not None and _same_run(previous.start, start)) or (
            self._over is not None and _same_run(self._over, start)
        ):
            return
        if previous is not None and start.start_ns <= previous.start.start_ns:
            self._counters["skipped_stale_run_start"] += 1
            self._warn("stale", f"Kafka: run start '{start.run_name}' is not after the current run's start: ignored")
            return
        if start.nanosecond_times:
            self._warn("ns", f"Kafka: run start '{start.run_name}' has times in ns (Mantid's reading), not ms")
        if self._lower is not None and start.stop_ns is not None and start.stop_ns <= self._lower:
            _log.info("Kafka: run %s ended before the start position: skipped", start.run_name)
            return
        run = _Run(start, _id_range(start), stop_ns=start.stop_ns, stop_known_at=time.monotonic())
        segment = _Segment(run)
        segment.seed = {name: entry for name, entry in self._latest_logs.items() if entry[0] < start.start_ns}
        if previous is not None and not previous.closed:
            self._close(previous, RunStatus.EndRun if previous.stop_ns is not None else RunStatus.BeginRun)
            if previous.stop_ns is None or previous.stop_ns > start.start_ns:
                previous.stop_ns = start.start_ns
            self._move_beyond_stop(previous, segment)
        self._segments.append(segment)
        self._last_run = run
        held, self._limbo, self._limbo_bytes = self._limbo, [], 0
        for block, monitor in held:
            self._route(block, monitor)
        _log.info(
            "Kafka: run %d (run_name '%s', %s) started %s%s; pixels %d..%d",
            run.number,
            start.run_name,
            start.instrument_name or self.instrument,
            iso(start.start_ns),
            f", stops {iso(start.stop_ns)}" if start.stop_ns is not None else "",
            *run.id_range,
        )

    def _on_run_stop(self, stop: RunStop) -> None:
        """A 6s4t: the open run stops at ``stop_ns`` once every data partition has passed it (lock held)."""
        run = self._last_run
        if run is None and self._over is not None and _stops(stop, self._over):
            return
        if run is None or run.closed or not _stops(stop, run.start):
            self._counters["skipped_unmatched_stop"] += 1
            self._warn("stop", f"Kafka: run stop '{stop.run_name}' matches no open run: ignored")
            return
        if stop.nanosecond_times:
            self._warn("ns", f"Kafka: run stop '{stop.run_name}' has times in ns (Mantid's reading), not ms")
        if self._lower is not None and stop.stop_ns <= self._lower and self._segments:
            segment = self._segments[-1]
            if segment.run is run and not segment.delivered and not segment.events and not segment.monitors:
                self._segments.pop()
                self._last_run = None
                _log.info("Kafka: run %d ended before the start position: skipped", run.number)
                return
        run.stop_ns, run.stop_known_at = stop.stop_ns, time.monotonic()
        _log.info("Kafka: run %d stops at %s", run.number, iso(stop.stop_ns))
        self._move_beyond_stop(run, None)

    def _move_beyond_stop(self, run: _Run, into: _Segment | None) -> None:
        """Buffered pulses of ``run`` at or after its (new) stop go to ``into`` (or are held)."""
        segment = next((s for s in self._segments if s.run is run), None)
        if segment is None or run.stop_ns is None:
            return
        for kind, monitor in ((segment.events, False), (segment.monitors, True)):
            kept = []
            for block in kind:
                beyond = block.times >= run.stop_ns
                if not beyond.any():
                    kept.append(block)
                    continue
                moved = block.take(beyond)
                if into is not None and into.run.covers(moved.times).all():
                    into.add(moved, monitor)
                else:
                    self._hold(moved, monitor)
                segment.nbytes -= block.nbytes
                if not beyond.all():
                    kept.append(block.take(~beyond))
                    segment.nbytes += kept[-1].nbytes
            kind[:] = kept

    def _check_stop(self) -> None:
        """End the stopping run once every data partition has passed its stop time (lock held)."""
        run = self._last_run
        if run is None or run.closed or run.stop_ns is None:
            return
        waited = time.monotonic() - run.stop_known_at >= STOP_LATENCY_S and time.time_ns() >= run.stop_ns
        for state in self._partitions.values():
            if state.role != "runInfo" and state.max_time < run.stop_ns and not (state.at_eof and waited):
                return
        self._close(run, RunStatus.EndRun)
        _log.info("Kafka: run %d ended at %s", run.number, iso(run.stop_ns))

    def _close(self, run: _Run, status: RunStatus) -> None:
        run.closed = True
        for segment in self._segments:
            if segment.run is run:
                segment.closing = status

    def _buffered_bytes(self) -> int:
        return sum(segment.nbytes for segment in self._segments) + self._limbo_bytes

    # --- partitions and the broker --------------------------------------------------------------------------
    def _check_offsets(self) -> None:
        """Compare each partition's position with its high watermark from the fetch responses (exact, unlike the
        broker's "latest" answer, which tansu gives as 1 for an empty partition).

        * Position never confirmed by a message and beyond the end: the start offset was wrong; continue at the end.
        * Position confirmed and beyond the end: the partition lost its log (broker restarted without its data,
          topic re-created): read it again from its beginning (:meth:`_reset`).
        """
        for (topic, partition), state in self._partitions.items():
            if state.next_offset is None:
                continue
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            if high < 0 or state.next_offset <= high:
                continue
            with self._lock:
                if not state.confirmed:
                    self._consumer.seek(TopicPartition(topic, partition, high))
                    state.next_offset = high
                else:
                    self._reset((topic, partition), state, f"now ends at offset {high}, before our position")

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (called from ``consume()`` on the consumer thread)."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            with self._lock:
                if self._unreachable_since is None:
                    self._unreachable_since = time.time()
                    _log.warning("Kafka: broker %s unreachable: %s", self.address, error.str())
            return
        if error.code() != KafkaError._TRANSPORT:
            with self._lock:
                self._counters["broker_errors"] += 1
        self._warn(f"error:{error.code()}", f"Kafka: {error.str()}")

    def _on_stats(self, stats: str) -> None:
        """librdkafka's statistics (every second): a broker in state UP means the cluster is reachable again."""
        try:
            brokers = json.loads(stats).get("brokers", {})
        except ValueError:
            return
        if any(b.get("nodeid", -1) >= 0 and b.get("state") == "UP" for b in brokers.values() if isinstance(b, dict)):
            with self._lock:
                if self._unreachable_since is not None:
                    self._reachable()

    def _reachable(self) -> None:
        """The broker answers again (lock held): check the partitions' logs (a broker may come back without them)."""
        _log.info("Kafka: broker %s reachable again after %.0f s", self.address, time.time() - self._unreachable_since)
        self._unreachable_since = None
        self._verify = True

    def _seek_to_marks(self) -> None:
        """Read every partition's last message again: if it is not the same, the log was replaced (see ``_apply``)."""
        with self._lock:
            self._verify = False
            marked = [(key, state) for key, state in self._partitions.items() if state.mark is not None]
            for (topic, partition), state in marked:
                self._consumer.seek(TopicPartition(topic, partition, state.mark[0]))
                state.verifying, state.next_offset, state.at_eof = True, state.mark[0], False

    def _reset(self, key: tuple[str, int], state: _Partition, why: str) -> None:
        """Read a partition again from its beginning after its log was lost or replaced (lock held); data it
        delivered before is skipped by time (``events_replayed``)."""
        topic, partition = key
        low, _ = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        start = max(low, 0)
        _log.warning("Kafka: %s [%d] %s: reading it again from offset %d", topic, partition, why, start)
        self._consumer.seek(TopicPartition(topic, partition, start))
        self._reseeked.add(key)
        self._counters["partition_resets"] += 1
        state.replay_floor = state.max_time if state.role != "runInfo" else _NEVER
        state.next_offset, state.confirmed, state.at_eof, state.verifying, state.mark = start, False, False, False, None

    def _warn(self, key: str, message: str) -> None:
        """Log a warning, the same kind at most once per ``WARN_EVERY_S``."""
        now = time.monotonic()
        if now - self._warned.get(key, -math.inf) >= WARN_EVERY_S:
            self._warned[key] = now
            _log.warning("%s", message)


def _mark(message: Message) -> tuple[int, int, int]:
    """What identifies a message in its partition: offset, timestamp, CRC-32 of its value."""
    return message.offset(), message.timestamp()[1], zlib.crc32(message.value() or b"")


def _newest_time(record: Decoded) -> int | None:
    """The latest data time of a record (ns), or None for run control messages."""
    if isinstance(record, Events):
        return int(record.reference_time.max()) if record.reference_time.size else None
    if isinstance(record, LogValue):
        return record.time_ns
    return None


def _same_run(a: RunStart, b: RunStart) -> bool:
    return (a.job_id, a.run_name, a.start_ns) == (b.job_id, b.run_name, b.start_ns)


def _stops(stop: RunStop, start: RunStart) -> bool:
    """Whether a 6s4t stops the run of this pl72: its job id or run name matches (or it names none)."""
    if stop.job_id and start.job_id:
        return stop.job_id == start.job_id
    if stop.run_name and start.run_name:
        return stop.run_name == start.run_name
    return True


def _id_range(start: RunStart) -> tuple[int, int]:
    if start.detector_ids is None:
        return 0, MAX_PIXELS - 1
    first, last = start.detector_ids
    return first, min(last, first + MAX_PIXELS - 1, MAX_EVENT_ID)


def _concatenate(parts: Iterable[np.ndarray], out: np.ndarray) -> None:
    parts = list(parts)
    if parts:
        np.concatenate(parts, out=out)


def _log_series(entries: list[tuple[int, np.ndarray | str]]) -> sc.DataArray | None:
    """A log's entries as a DataArray over ``time`` (values of the most common shape; None if nothing usable)."""
    if not entries:
        return None
    entries = sorted(entries, key=lambda entry: entry[0])
    if all(isinstance(value, str) or value.dtype.kind == "U" for _, value in entries):
        values = sc.array(dims=["time"], values=[str(value) for _, value in entries])
        times = [time_ns for time_ns, _ in entries]
    else:
        arrays = [(t, v) for t, v in entries if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"]
        if not arrays:
            return None
        shape = Counter(value.shape for _, value in arrays).most_common(1)[0][0]
        arrays = [(t, v) for t, v in arrays if v.shape == shape]
        stacked = np.stack([value for _, value in arrays])
        dims = ["time"] if not shape else ["time", "value"]
        values = sc.array(dims=dims, values=stacked)
        times = [time_ns for time_ns, _ in arrays]
    coord = sc.array(dims=["time"], values=ns_to_datetime64(np.asarray(times, np.int64)), unit="ns")
    return sc.DataArray(values, coords={"time": coord})


def _monitor_events(blocks: list[_Block]) -> dict[str, sc.DataArray]:
    """Monitor events by source name: coordinates ``event_time_offset`` (float32 µs), ``event_time_zero``."""
    by_source: dict[str, list[_Block]] = {}
    for block in blocks:
        by_source.setdefault(block.source, []).append(block)
    monitors = {}
    for source, parts in by_source.items():
        tof = tof_ns_to_us(np.concatenate([block.tof for block in parts]))
        zero = np.concatenate(
            [np.repeat(block.times, np.diff(np.append(block.index, block.n_events))) for block in parts]
        )
        monitors[source] = sc.DataArray(
            sc.ones(sizes={EVENT_DIM: tof.size}, dtype="float32", unit="counts"),
            coords={
                "event_time_offset": sc.array(dims=[EVENT_DIM], values=tof, unit="us"),
                "event_time_zero": sc.array(dims=[EVENT_DIM], values=ns_to_datetime64(zero), unit="ns"),
            },
        )
    return monitors
