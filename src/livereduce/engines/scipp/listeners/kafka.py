"""``KafkaEventListener``: live neutron events from Kafka (ESS, ISIS), as Mantid's listener of that name, from the
topics of :mod:`~livereduce.protocols.kafka.topics` on the brokers ``address`` names.

This module is the I/O: connecting (every request in slices of ``SLICE_S``, :mod:`~livereduce.protocols.kafka.broker`,
so :meth:`KafkaEventListener.interrupt` ends it), locating the run and the start offsets, the consumer thread, the
seeks, and the chunks (scipp). What the
messages mean is decided without I/O in :mod:`livereduce.protocols.kafka`: decoding and time checks (``schemas``),
runs (``runs``), offsets, marks and their verification after a lost connection (``partitions``), per message
(``reading``). The thread, the buffer bound and back-pressure, counters, health, warnings and the interruptible
waits are the shared core of network listeners
(:class:`~livereduce.engines.scipp.listeners.buffered.BufferedSource`): a fault is a counter or a state; a bug
ends the thread, and the next ``extract()`` raises a recoverable ``SourceError``. Semantics:
``docs/architecture.md``, "Kafka (ESS, ISIS)"; the chunks: ``docs/processing-scripts.md``, "Kafka".

Source positions (:attr:`Extracted.position`): per partition of every topic read, the offset of the first message
with anything not handed out yet, with what a resume skips in the messages it reads again and the run's pl72
(:mod:`~livereduce.protocols.kafka.positions` has the format and its reasons). A resume reads that pl72 again where
the position says (:meth:`KafkaEventListener.resume_refusal`), seeks every partition to its offset (sampleEnv from
the run's start minus ``SEEK_MARGIN_NS`` for the values in force) and reads run control to its end before data: no
seek to a time, and nothing goes out twice.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Final

import numpy as np
import scipp as sc
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, Message, TopicPartition

from livereduce.clock import Clock, SystemClock
from livereduce.config import Config
from livereduce.engines.scipp import chunk
from livereduce.engines.scipp.listeners.base import (
    Extracted,
    Listener,
    RunStatus,
    SourceHealth,
    SourcePosition,
    StartPosition,
)
from livereduce.engines.scipp.listeners.buffered import BufferedSource
from livereduce.engines.scipp.listeners.sizing import buffer_bound
from livereduce.errors import ConfigError, SourceError
from livereduce.protocols.kafka.broker import BATCH, POLL_S, Broker, Stopped
from livereduce.protocols.kafka.partitions import Key, mark
from livereduce.protocols.kafka.positions import Position, label, parse, refusal
from livereduce.protocols.kafka.reading import ReadState
from livereduce.protocols.kafka.schemas import Decoded, Events, RunStart, RunStop, Skipped, decode_checked
from livereduce.protocols.kafka.segments import Block, Taken
from livereduce.protocols.kafka.times import NS_PER_MS, datetime_to_ns, iso, ns_to_datetime64
from livereduce.protocols.kafka.topics import (
    MAX_MESSAGE_BYTES,
    REQUIRED_ROLES,
    Role,
    broker_states,
    consumer_settings,
    redacted,
    topic_lists,
)

_log = logging.getLogger("livereduce.KafkaEventListener")

CONNECT_TIMEOUT_S: Final = 10.0
"""Seconds ``connect()`` waits for the broker's metadata, and each look-up (offsets, run start) waits."""
SEEK_MARGIN_NS: Final = 10_000_000_000
"""Data partitions are sought to ``T`` minus 10 s: producers' record timestamps may be a little early."""
CHECK_EVERY_S: Final = 0.5
"""Seconds between the checks of partition offsets against the broker's high watermarks."""


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
        self.topics = topic_lists(info.name, config.topics)
        self._roles: dict[str, Role] = {topic: role for role, topics in self.topics.items() for topic in topics}
        self._run_info = ", ".join(self.topics["runInfo"])  # "": the stream has no run information
        bound = buffer_bound(config)
        self.max_message = min(MAX_MESSAGE_BYTES, bound.limit)
        self._site = dict(config.kafka or {})
        self._settings = consumer_settings(address, self._site, bound.limit // 4 // 1024)
        self._consumer: Consumer | None = None
        self._position: StartPosition = "from_start_of_run"
        self._lower: int | None = None  # pulses before this time (ns) are not delivered
        self._resume: tuple[Position, RunStart | None] | None = None  # the position resumed, its run's pl72
        self._checked: tuple[SourcePosition, Position, RunStart | None] | None = None  # by resume_refusal()
        self._feed = BufferedSource(self.name, address, "the Kafka broker", bound=bound, clock=self.clock, log=_log)
        self._broker = Broker(
            self._feed.stopping,
            self.clock,
            lambda: CONNECT_TIMEOUT_S,
            lambda: self._state.losses,
            lambda message: self._decode(message, "runInfo"),
        )
        self._mean_message = 65536.0  # bytes: a running mean of the messages consumed (consumer thread only)
        # --- guarded by the core's lock -------------------------------------------------------------------------
        self._state = ReadState({}, bound.limit, self._feed.warn)
        self._located = False
        self._unreachable_since: float | None = None
        # --- consumer thread only -------------------------------------------------------------------------------
        self._reseeked: set[Key] = set()  # partitions sought during this batch (rest of it is stale)
        self._paused: set[Key] = set()  # partitions paused (ReadState.paused)
        self._holding = False  # the data partitions are paused until run control is settled
        self._last_check = 0.0

    # --- Listener interface -----------------------------------------------------------------------------------
    def connect(self) -> None:
        """Create the consumer and read the broker's metadata: the topics and their partitions.

        Raises:
            ConfigError: librdkafka rejects the settings (the ``kafka`` key).
            SourceError: (recoverable: the daemon retries with back-off) the broker cannot be reached within
                ``CONNECT_TIMEOUT_S``, the ``events`` or ``runInfo`` topic does not exist, or :meth:`interrupt`.
        """
        self._close_consumer()
        _log.info("Connecting to Kafka at %s%s", self.address, f" ({redacted(self._site)})" if self._site else "")
        try:
            consumer = Consumer({**self._settings, "error_cb": self._on_error, "stats_cb": self._on_stats})
        except (KafkaException, ValueError, TypeError) as err:
            raise ConfigError(f"key 'kafka': librdkafka rejects the consumer settings: {err}") from None
        partitions: dict[Key, Role] = {}
        try:
            for topic, role in self._roles.items():
                found = self._broker.patiently(lambda s, t=topic: consumer.list_topics(t, timeout=s))
                found = found.topics.get(topic)
                if found is None or found.error is not None or not found.partitions:
                    if role in REQUIRED_ROLES:
                        raise SourceError(
                            f"Kafka topic '{topic}' ({role}) does not exist on {self.address}", recoverable=True
                        )
                    _log.info("Kafka topic '%s' (%s) does not exist: not read", topic, role)
                    continue
                partitions.update({(topic, p): role for p in sorted(found.partitions)})
        except KafkaException as err:
            consumer.close()
            raise SourceError(f"Kafka broker {self.address} unreachable: {err.args[0]}", recoverable=True) from None
        except Stopped:
            consumer.close()
            raise SourceError(f"connecting to Kafka at {self.address}: interrupted", recoverable=True) from None
        except SourceError:
            consumer.close()
            raise
        self._consumer = self._broker.consumer = consumer
        with self._feed.lock:
            self._state.assign(partitions)
        counts = Counter(topic for topic, _ in partitions)
        _log.info("Kafka topics: %s", ", ".join(f"{t} ({self._roles[t]}, {n} partitions)" for t, n in counts.items()))

    def resume_refusal(self, position: SourcePosition) -> str | None:
        """None when ``position`` can be resumed: well formed, of the partitions read now, none of its offsets (nor
        its run's pl72) deleted by retention, and that pl72 still where it was read; else why not (see
        :func:`~livereduce.protocols.kafka.positions.parse` and ``refusal``).

        Raises:
            SourceError: (recoverable) the broker does not answer within ``CONNECT_TIMEOUT_S``, or :meth:`interrupt`.
        """
        parsed = parse(position)
        if isinstance(parsed, str):
            return parsed
        with self._feed.lock:
            roles = {key: state.role for key, state in self._state.partitions.states.items()}
        try:
            low = {key: self._broker.watermarks(key)[0] for key in roles.keys() & parsed.offsets.keys()}
            why, start = refusal(parsed, roles, low), None
            if why is None and parsed.run is not None and (start := self._broker.run_start_at(parsed.run)) is None:
                run = parsed.run
                why = f"the run start of run '{run.run_name}' is no longer at offset {run.offset} of {label(run.key)}"
        except (KafkaException, Stopped) as err:
            why = err.args[0] if isinstance(err, KafkaException) else "interrupted"
            raise SourceError(f"Kafka at {self.address}: checking a position: {why}", recoverable=True) from None
        self._checked = None if why else (position, parsed, start)
        return why

    def start(self, position: StartPosition, resume: SourcePosition | None = None) -> None:
        """Start the consumer thread from ``position`` (see the module docstring), or after ``resume``, and wait
        up to ``CONNECT_TIMEOUT_S`` until it has located the run, so that the first chunk knows it (a broker slower
        than that is no error: the thread goes on looking).

        Raises:
            ValueError: ``resume`` is refused by :meth:`resume_refusal` (the caller's mistake).
            SourceError: :meth:`interrupt` was called.
        """
        feed = self._feed
        if feed.stopping.is_set():
            raise SourceError(f"starting to read Kafka at {self.address}: interrupted", recoverable=True)
        self._position, self._resume = position, None
        if resume is not None:
            if (self._checked is None or self._checked[0] != resume) and (why := self.resume_refusal(resume)):
                raise ValueError(f"KafkaEventListener cannot resume: {why}")
            self._resume = self._checked[1:]
            self._lower = self._resume[0].from_ns
        elif position == "now":
            self._lower = self._now_ns()
        elif isinstance(position, datetime):
            self._lower = datetime_to_ns(position)
        feed.start(self._consume)
        feed.wait_until(lambda: self._located, CONNECT_TIMEOUT_S)
        if feed.stopping.is_set():
            raise SourceError(f"starting to read Kafka at {self.address}: interrupted", recoverable=True)

    def extract(self) -> Extracted:
        """Everything buffered for the run at the head of the buffer, with its status and data-reset flag.

        Raises:
            SourceError: the consumer thread failed (a bug; its traceback is in the log).
        """
        feed = self._feed
        feed.check()
        with feed.lock:
            router = self._state.router
            held = router.buffered_bytes
            taken = router.take()
            feed.taken(held - router.buffered_bytes)  # later runs' data stays
            router.buffer_limit = feed.buffer_bytes  # the automatic bound may have grown
            more = router.pulses_waiting
            position = self._state.position()
        id_range = (0, 0)  # no run, no events: no pixels
        if taken.run is not None:  # the run start's detector ids, else the widest range
            id_range = chunk.capped_range(*(taken.run.start.detector_ids or (0, chunk.MAX_PIXELS - 1)))
        data, dropped = self._chunk(taken, id_range)
        feed.count("events_dropped", sum(dropped.values()))
        status = RunStatus[taken.status]
        return Extracted(
            data,
            status,
            id_range,
            data_reset=taken.reset,
            dropped=dict(dropped),
            more_buffered=more,
            position=position and position.to_json(),
        )

    def interrupt(self) -> None:
        """End a ``connect()`` or ``start()`` in progress, and every wait of the consumer thread, within
        ``SLICE_S``."""
        self._feed.interrupt()

    def on_data_ready(self, callback: Callable[[str], None]) -> None:
        self._feed.on_ready = callback

    def disconnect(self) -> None:
        """Stop the consumer thread and close the consumer (safe to call more than once)."""
        self._feed.stop()
        self._close_consumer()

    def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as err:
                _log.warning("Closing the Kafka consumer: %s", err)

    def health(self) -> SourceHealth:
        """State line and counters (the core's, the read state's, ``broker_errors``, ``skipped_too_large``; names in
        ``docs/architecture.md``, Kafka "Faults"); ``offset_lag``: messages from each partition's position to its high
        watermark in the last fetch response (no broker request), and their sum as the counter ``offset_lag``."""
        with self._feed.lock:
            extra = self._state.counts()
            extra["buffered_bytes"] = self._state.router.buffered_bytes
            lags = self._state.partitions.offset_lag()
            extra["offset_lag"] = sum(lags.values())
            run = self._state.router.current
            healthy = self._unreachable_since is None
            if not healthy:
                state = f"broker unreachable since {iso(int(self._unreachable_since * 1e9))} ({self.address})"
            elif not self._located:
                state = f"locating the run on {self._run_info} ({self.address})"
            elif run is not None and run.open_ended:
                state = f"reading (no run information) from {self.address}"
            elif run is None or run.closed:
                state = f"waiting for a run start on {self._run_info} ({self.address})"
            elif run.stop_ns is not None:
                state = f"reading run {run.number} up to its stop at {iso(run.stop_ns)} ({self.address})"
            else:
                state = f"reading run {run.number} from {self.address}"
        return dataclasses.replace(self._feed.health(state, extra, healthy=healthy), offset_lag=lags)

    # --- extract --------------------------------------------------------------------------------------------
    def _chunk(self, taken: Taken, id_range: tuple[int, int]) -> tuple[sc.DataArray, Counter[str]]:
        """Build the chunk from detached blocks (no lock: the consumer thread goes on meanwhile): one copy of the
        pixel ids, the time of flight converted to µs in the same pass, straight into the chunk's variables; one
        more copy of both when pulses must be merged or put in time order (:meth:`Taken.pulses`)."""
        tof = sc.empty(sizes={chunk.EVENT_DIM: taken.n_events}, dtype="float32", unit="us")
        taken.time_of_flight_us(out=tof.values)
        if all(block.ids.dtype == np.int32 for block in taken.events):
            ids: sc.Variable | np.ndarray = sc.empty(sizes={chunk.EVENT_DIM: taken.n_events}, dtype="int32", unit=None)
            taken.pixel_ids(out=ids.values)
        else:
            ids = taken.pixel_ids()
        times, index, order = taken.pulses()
        if order is not None:  # pulses of the same time from several topics or sources: one pulse each
            ids, tof = (ids.values if isinstance(ids, sc.Variable) else ids)[order], tof.values[order]
        ids, tof, index, invalid = chunk.valid_events(ids, tof, index, id_range)
        if isinstance(ids, np.ndarray) and ids.dtype != np.int32:  # ev42's uint32, all within 0..2**31-1 now
            ids = ids.astype(np.int32)
        data = chunk.make_chunk(ids, tof, ns_to_datetime64(times), index, metadata=self._metadata(taken))
        return data, taken.dropped + Counter(invalid)

    def _metadata(self, taken: Taken) -> chunk.RunMetadata:
        """Run number, start, instrument, properties; logs over ``time``; monitor events by source."""
        run = taken.run
        if run is None:
            return chunk.RunMetadata(instrument_name=self.instrument)
        properties: dict[str, str | int | float | np.datetime64] = {
            "run_name": run.start.run_name,
            "run_start": ns_to_datetime64(run.start.start_ns),
        }
        if run.stop_ns is not None:
            properties["run_end"] = ns_to_datetime64(run.stop_ns)
        monitors = {name: chunk.monitor_events(zero, tof) for name, (tof, zero) in taken.monitor_events().items()}
        logs = {name: chunk.log_series(sorted(entries, key=lambda e: e[0])) for name, entries in taken.logs.items()}
        return chunk.RunMetadata(
            run_number=run.number,
            start_time=ns_to_datetime64(run.start.start_ns),
            instrument_name=run.start.instrument_name or self.instrument,
            logs=logs,
            properties=properties,
            monitors=monitors,
        )

    # --- the consumer thread --------------------------------------------------------------------------------
    def _consume(self) -> None:
        """Thread body: locate, then read until stopped (a bug escapes to the core's failure policy)."""
        feed = self._feed
        try:
            while not feed.stopping.is_set() and not self._locate_safely():
                feed.sleep(feed.backoff.failed())
            feed.connected_well()
            while not feed.stopping.is_set():
                self._step()
        except Stopped:
            return

    def _locate_safely(self) -> bool:
        try:
            self._locate()
        except KafkaException as err:
            self._feed.warn("locate", f"Kafka: cannot locate the run yet ({err.args[0]}); retrying")
            return False
        return True

    def _locate(self) -> None:
        """Find the run to start with (the last run start on runInfo, read backwards from the end in growing
        windows; after a resume, the position's), the start offsets, and assign every partition.

        Raises:
            KafkaException: a look-up failed (broker unreachable): retried by the caller.
            Stopped: the listener is being stopped.
        """
        if self._resume is not None:
            position, run = self._resume  # the values in force: sampleEnv from the run's start - the margin
            ms = 0 if run is None else max(0, (run.start_ns - SEEK_MARGIN_NS) // NS_PER_MS)
            values = {key: ms for key, s in self._state.partitions.states.items() if s.role == "sampleEnv" and run}
            _log.info("Kafka: resuming at %s", position.to_json())
            self._assign(
                dict(position.offsets),
                values,
                lambda sought, now: self._state.resume(position, run, sought, now, open_ended=not self._run_info),
            )
            return
        bound = None if self._position == "from_start_of_run" else self._lower
        found: tuple[Key, int, RunStart] | None = None
        ends: dict[Key, int] = {}
        stops: list[RunStop] = []
        for key, state in self._state.partitions.states.items():
            if state.role == "runInfo":
                candidate, ends[key], later = self._broker.last_run_start(key, bound)
                if candidate is not None and (found is None or candidate[1].start_ns >= found[2].start_ns):
                    found, stops = (key, *candidate), later
        if self._position == "from_start_of_run":
            self._lower = found[2].start_ns if found is not None else None
            if found is None:
                _log.info("Kafka: no run start on %s yet; waiting for one", self._run_info)
        if self._lower is not None:
            _log.info("Kafka: delivering pulses from %s on", iso(self._lower))
        offsets, times = self._state.partitions.start_offsets(
            (found[0], found[1], found[2].start_ns) if found is not None else None, ends, self._lower, SEEK_MARGIN_NS
        )

        def begin(sought: dict[Key, int], monotonic: float) -> None:
            at = (found[0], found[1]) if found else None
            run = found[2] if found else None
            self._state.router.begin(self._lower, run, stops, monotonic, open_ended=not self._run_info, at=at)
            self._state.partitions.assigned(sought)

        self._assign(offsets, times, begin)

    def _assign(
        self, offsets: dict[Key, int], times: dict[Key, int], begin: Callable[[dict[Key, int], float], None]
    ) -> None:
        """Assign every partition from ``offsets``, or from the offset of its time in ``times`` (ms) when that is
        lower, else from its high watermark; ``begin(offsets, monotonic)`` (lock held) starts the router there.

        Raises:
            KafkaException: a look-up failed (broker unreachable).
            Stopped: the listener is being stopped.
        """
        for key, offset in (self._broker.offsets_for_times(times) if times else {}).items():
            offsets[key] = min(offsets.get(key, offset), offset)
        for key in self._state.partitions.states.keys() - offsets.keys():
            offsets[key] = self._broker.watermarks(key)[1]  # never OFFSET_END: the client would resolve it later
        self._consumer.assign(
            [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        )
        with self._feed.changed:
            begin(offsets, self.clock.monotonic())
            self._located = True
            self._feed.changed.notify_all()

    def _step(self) -> None:
        """One round: wait for space if the buffer is full (back-pressure), else consume a batch and sort it in."""
        feed = self._feed
        if feed.wait_for_room(lambda: self._state.router.pending_bytes):
            return
        with feed.lock:
            room = feed.buffer_bytes - self._state.router.pending_bytes
            losses = self._state.losses
            closed = self._state.router.runs_closed
            for (topic, partition), offset in self._state.to_verify():  # seek back to each partition's mark
                self._consumer.seek(TopicPartition(topic, partition, offset))
            self._pause()
        messages = self._consumer.consume(max(1, min(BATCH, int(room / self._mean_message))), POLL_S)
        if messages:
            size = sum(len(message.value() or b"") for message in messages) / len(messages)
            self._mean_message = max(64.0, 0.8 * self._mean_message + 0.2 * size)
        decoded = [self._decode(message) for message in messages]
        last = {(m.topic(), m.partition()): m for m in messages if m.error() is None}
        with feed.changed:
            if self._state.losses != losses:  # read across a lost connection: verify the partitions, then read it again
                return
            self._reseeked = set()
            if messages and self._unreachable_since is not None:  # a message or an end: the broker answers
                self._reachable()
            for message, item in zip(messages, decoded, strict=True):
                if (message.topic(), message.partition()) not in self._reseeked:
                    self._apply(message, item)
            for key, message in last.items():
                if key in self._state.partitions.states and key not in self._reseeked:
                    self._state.partitions.read(key, _mark(message))
            self._state.router.check_stop(self._state.partitions.data(), self._now_ns(), self.clock.monotonic())
            self._pause()
            feed.changed.notify_all()
            ended = self._state.router.runs_closed > closed
        if ended:
            feed.run_ended()
        now = self.clock.monotonic()
        if now - self._last_check >= CHECK_EVERY_S:
            self._last_check = now
            self._check_offsets()

    def _decode(self, message: Message, role: Role | None = None) -> Block | Decoded | Skipped | KafkaError:
        """Decode one message (no lock): its pulses as a block, a run or log record, a Skipped, or its error. Times
        are checked against its record timestamp, else the wall clock."""
        error = message.error()
        if error is not None:
            return error
        role = role or self._roles.get(message.topic(), "events")
        value = message.value() or b""
        now_ns = self._now_ns()
        kind, stamp = message.timestamp()
        record_ns = stamp * NS_PER_MS if kind != TIMESTAMP_NOT_AVAILABLE and stamp > 0 else now_ns
        try:
            record = decode_checked(value, role, record_ns, now_ns, self.max_message)
        except Skipped as skipped:
            return skipped
        return Block.of(record, len(value) + 16 * record.reference_time.size) if isinstance(record, Events) else record

    def _apply(self, message: Message, item: Block | Decoded | Skipped | KafkaError) -> None:
        """Account for one message and sort its content in (lock held)."""
        if isinstance(item, KafkaError):
            self._on_message_error(message, item)
            return
        key = (message.topic(), message.partition())
        if key not in self._state.partitions.states:
            return
        size, monotonic = len(message.value() or b""), self.clock.monotonic()
        if self._state.message(key, message.offset(), lambda: _mark(message), item, monotonic, size=size):
            self._reset(key, "holds other messages since a broker connection was lost")

    def _on_message_error(self, message: Message, error: KafkaError) -> None:
        key = (message.topic(), message.partition())
        if error.code() == KafkaError._PARTITION_EOF:
            if key in self._state.partitions.states and self._state.partitions.ended(key):
                self._reset(key, f"ends at offset {message.offset()} since a broker connection was lost")
            return
        too_large = error.code() == KafkaError.MSG_SIZE_TOO_LARGE
        self._feed.counters["skipped_too_large" if too_large else "broker_errors"] += 1
        self._feed.warn(f"error:{error.code()}", f"Kafka: {message.topic()} [{message.partition()}]: {error.str()}")

    # --- partitions and the broker --------------------------------------------------------------------------
    def _check_offsets(self) -> None:
        """Compare each partition's position with its high watermark from the fetch responses (exact, unlike the
        broker's "latest" answer, which tansu gives as 1 for an empty partition): :meth:`Partitions.high_watermark`."""
        for topic, partition in self._state.partitions.states:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            with self._feed.lock:
                action = self._state.partitions.high_watermark((topic, partition), high)
                if action == "end":
                    self._consumer.seek(TopicPartition(topic, partition, high))
                elif action == "reset":
                    self._reset((topic, partition), f"now ends at offset {high}, before our position")

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (called from ``consume()`` on the consumer thread)."""
        code = error.code()
        with self._feed.lock:
            if code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
                self._state.connection_lost()
            else:
                self._feed.counters["broker_errors"] += 1
            if code == KafkaError._ALL_BROKERS_DOWN:
                if self._unreachable_since is None:
                    self._unreachable_since = self.clock.time()
                    _log.warning("Kafka: broker %s unreachable: %s", self.address, error.str())
                return
        self._feed.warn(f"error:{code}", f"Kafka: {error.str()}")

    def _on_stats(self, stats: str) -> None:
        """librdkafka's statistics (every second): one more ``disconnects`` of a broker is a lost connection (also
        one no error reported); a broker ``UP`` means the cluster is reachable again."""
        disconnects, up = broker_states(stats)
        with self._feed.lock:
            self._state.disconnects(disconnects)
            if up and self._unreachable_since is not None:
                self._reachable()

    def _reachable(self) -> None:
        """The broker answers again (lock held)."""
        _log.info(
            "Kafka: broker %s reachable again after %.0f s", self.address, self.clock.time() - self._unreachable_since
        )
        self._unreachable_since = None

    def _reset(self, key: Key, why: str) -> None:
        """Read a partition again from its beginning after its log was lost or replaced (lock held); data it
        delivered before is skipped by time (``events_replayed``)."""
        low, _ = self._consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
        start = self._state.partitions.reset(key, low)
        _log.warning("Kafka: %s [%d] %s: reading it again from offset %d", *key, why, start)
        self._consumer.seek(TopicPartition(*key, start))
        self._reseeked.add(key)
        self._pause()

    def _pause(self) -> None:
        """Pause the partitions :meth:`ReadState.paused` names (while run control is not settled, the data
        partitions; those past the stop the oldest run waits for; runInfo while too many runs wait for their data),
        each sought back to where it is (what it fetched is read again), and resume the others (lock held)."""
        wanted = self._state.paused()
        pause, resume = wanted - self._paused, self._paused - wanted
        if not pause and not resume:
            return
        for key in pause:
            offset = self._state.partitions.states[key].next_offset
            try:
                if offset is not None:
                    self._consumer.seek(TopicPartition(*key, offset))
            except KafkaException as err:  # not fetching yet (just assigned: a resume holds data back): nothing to
                if err.args[0].code() != KafkaError._STATE:  # read again, and the pause comes before any fetch
                    raise
            self._reseeked.add(key)
        if pause:
            self._consumer.pause([TopicPartition(*key) for key in sorted(pause)])
        if resume:
            self._consumer.resume([TopicPartition(*key) for key in sorted(resume)])
        self._paused = wanted
        hold = not self._state.partitions.run_control_settled()
        if hold != self._holding:
            self._holding = hold
            _log.info("Kafka: data partitions %s until run control is read to its end", "held" if hold else "released")
        else:
            _log.debug("Kafka: partitions paused %s, resumed %s", sorted(pause), sorted(resume))

    def _now_ns(self) -> int:
        return int(self.clock.time() * 1e9)


def _mark(message: Message) -> tuple[int, int, int]:
    return mark(message.offset(), message.timestamp()[1], message.value())
