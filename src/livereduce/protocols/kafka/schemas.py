"""Decoding Kafka messages by their FlatBuffers file identifier, with ``ess-streaming-data-types``.

A FlatBuffers message names its schema in bytes 4..8 (the "file identifier"). :func:`decode` reads it, checks
that the schema is one the caller accepts, deserialises with the package's ``deserialise_<id>`` (never by hand),
validates what it got, and returns a plain record:

| identifier | schema (ess-dmsc/streaming-data-types) | record |
|---|---|---|
| ``ev44`` | ``Event44Message``: several pulses per message | :class:`Events` |
| ``ev42`` | ``EventMessage``: one pulse per message (older, the one Mantid reads) | :class:`Events` |
| ``pl72`` | ``RunStart`` | :class:`RunStart` |
| ``6s4t`` | ``RunStop`` | :class:`RunStop` |
| ``f144`` | ``f144_LogData`` | :class:`LogValue` |
| ``f142`` | ``LogData`` (older; needs :mod:`.f142` under NumPy 2) | :class:`LogValue` |

A message that cannot be used raises :class:`Skipped` with a reason from :data:`SKIP_REASONS`; the listener
counts it. A hostile buffer can make the generated FlatBuffers accessors raise almost anything (IndexError,
struct.error, UnicodeDecodeError, TypeError, ...): all of it becomes ``Skipped("malformed")``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Final

import numpy as np
from streaming_data_types import (
    deserialise_6s4t,
    deserialise_ev42,
    deserialise_ev44,
    deserialise_f144,
    deserialise_pl72,
)

from livereduce.protocols.kafka.f142 import deserialise_f142
from livereduce.protocols.kafka.times import run_time_ns
from livereduce.protocols.kafka.topics import Role
from livereduce.protocols.log_values import LOG_DROP_REASONS, UnusableLog, check_log_value

EVENT_SCHEMAS: Final = frozenset({"ev44", "ev42"})
RUN_SCHEMAS: Final = frozenset({"pl72", "6s4t"})
LOG_SCHEMAS: Final = frozenset({"f144", "f142"})
KNOWN_SCHEMAS: Final = EVENT_SCHEMAS | RUN_SCHEMAS | LOG_SCHEMAS
ROLE_SCHEMAS: Final[dict[Role, frozenset[str]]] = {
    "events": EVENT_SCHEMAS,
    "monitors": EVENT_SCHEMAS,
    "runInfo": RUN_SCHEMAS,
    "sampleEnv": LOG_SCHEMAS,
}
"""The schemas each topic role carries (Mantid's KafkaEventListener reads the same per topic)."""

SKIP_REASONS: Final = (
    "too_short",
    "unknown_schema",
    "unexpected_schema",
    "malformed",
    "invalid",
    "implausible_time",
    "too_large",
    "no_pixel_ids",
    *LOG_DROP_REASONS,
)
"""Why a message is skipped: shorter than a FlatBuffers header (8 bytes); an identifier livereduce does not read;
a schema this topic does not carry (e.g. f144 on the events topic); the library cannot decode it; its content
is inconsistent (lengths, indices, a missing time, events without pixel ids where detector events belong); a time
no real message has (:func:`check_times`); larger than the reader's limit (:func:`decode_checked`); events
without pixel ids on the events topic (ev44 schema: "can be empty ... if the pixel_id is implicit (e.g.
single-pixel detector)": a monitor, which belongs on the monitors topic; esslivedata refuses it on detector topics
too, and inventing a pixel would put counts on a real one); a log value no chunk can hold exactly
(:data:`livereduce.protocols.log_values.LOG_DROP_REASONS`)."""

TIME_WINDOW_NS: Final = 86_400 * 10**9
"""One day: how far a run's times may be from its message's record timestamp, and any time beyond the wall clock
(:func:`check_times`). Runs are announced when they start and stop, give or take a schedule of hours; a producer's
clock is off by seconds, not days; ``livereduce-kafka-replay`` stamps records with the data's own times."""

MAX_EVENT_ID: Final = 2**31 - 1


class Skipped(Exception):
    """A message that is not used.

    Attributes:
        reason: one of :data:`SKIP_REASONS` (a fixed vocabulary, so counters stay few).
        detail: one line for the log (the identifier, the inconsistency), never message content in bulk.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Events:
    """The events of one ev44 or ev42 message.

    Attributes:
        schema: ``ev44`` or ``ev42``.
        source_name: the producer's name (detector bank, monitor).
        message_id: the producer's message counter.
        reference_time: pulse times, ns since the Unix epoch, int64, shape (n_pulses,).
        reference_time_index: index of each pulse's first event, int64, shape (n_pulses,): starts at 0,
            non-decreasing, at most n_events.
        time_of_flight: ns since the pulse, shape (n_events,), int32 (ev44) or uint32 (ev42).
        pixel_id: pixel of each event, shape (n_events,), int32 (ev44) or uint32 (ev42); shape (0,) when the
            message has none (a monitor).
    """

    schema: str
    source_name: str
    message_id: int
    reference_time: np.ndarray
    reference_time_index: np.ndarray
    time_of_flight: np.ndarray
    pixel_id: np.ndarray

    @property
    def n_events(self) -> int:
        return int(self.time_of_flight.shape[0])

    @property
    def has_pixels(self) -> bool:
        """True when every event has a pixel id (detector data); False for monitor-style messages."""
        return self.pixel_id.shape[0] == self.time_of_flight.shape[0]


@dataclass(frozen=True)
class RunStart:
    """A pl72 run start.

    Attributes:
        run_name: the run's name; Mantid requires digits (the run number).
        instrument_name: as the producer spells it ("" if not given).
        start_ns: start, ns since the Unix epoch.
        stop_ns: stop announced with the start (ns), or None (pl72 ``stop_time`` 0).
        job_id: the file writer's job id (pairs a 6s4t with its pl72).
        filename: the file the run is written to.
        detector_ids: first and last detector id of the run (inclusive), from ``detector_spectrum_map``, else
            from ``detector_number`` datasets in ``nexus_structure``; None when the message has neither.
        nanosecond_times: the times were nanoseconds (a producer following Mantid), not the schema's ms.
    """

    run_name: str
    instrument_name: str
    start_ns: int
    stop_ns: int | None
    job_id: str
    filename: str
    detector_ids: tuple[int, int] | None
    nanosecond_times: bool = False

    @property
    def run_number(self) -> int:
        """``run_name`` as a number when it is all digits (as Mantid requires), else 0."""
        name = self.run_name.strip()
        return int(name) if name.isascii() and name.isdigit() and len(name) <= 18 else 0


STOP_NOW: Final = 0
"""A 6s4t ``stop_time`` of 0: "stop now" (ess-dmsc/streaming-data-types ``6s4t_run_stop.fbs``). :func:`decode`
gives it as ``stop_ns`` 0; :func:`decode_checked` replaces it with the message's record timestamp (the wall clock
when it has none)."""


@dataclass(frozen=True)
class RunStop:
    """A 6s4t run stop: ``stop_ns`` ns since the Unix epoch; ``run_name``/``job_id`` name the run it stops;
    ``stop_now``: the message said "stop now" (``stop_time`` 0) and ``stop_ns`` is its record timestamp."""

    run_name: str
    job_id: str
    stop_ns: int
    nanosecond_times: bool = False
    stop_now: bool = False


@dataclass(frozen=True)
class LogValue:
    """One f144/f142 value, as the schema's union allows it (ess-streaming-data-types 0.27.0 ``logdata_f144`` /
    ``logdata_f142``), checked by :func:`livereduce.protocols.log_values.check_log_value`.

    Attributes:
        source_name: the log's name (e.g. an EPICS PV).
        time_ns: ns since the Unix epoch.
        value: a number as a 0-d array (int64, uint64 or float64: the package reads a scalar of any width as a
            Python number), a 1-d array as sent (int8 .. int64, uint8 .. uint64, float32, float64; at most
            :data:`livereduce.protocols.log_values.MAX_LOG_ELEMENTS` elements), or (f142 only) a string or a 1-d
            array of strings.
    """

    source_name: str
    time_ns: int
    value: np.ndarray | str


Decoded = Events | RunStart | RunStop | LogValue


def schema_of(buffer: bytes) -> str:
    """The file identifier of a FlatBuffers message (bytes 4..8).

    Raises:
        Skipped: ``too_short`` below 8 bytes; ``unknown_schema`` when the identifier is not 4 printable ASCII
            characters.
    """
    if len(buffer) < 8:
        raise Skipped("too_short", f"{len(buffer)} bytes, a FlatBuffers message has at least 8")
    identifier = bytes(buffer[4:8])
    if not all(32 < byte < 127 for byte in identifier):
        raise Skipped("unknown_schema", f"identifier {identifier!r}")
    return identifier.decode("ascii")


def decode(buffer: bytes, accepted: frozenset[str]) -> Decoded:
    """Decode and validate one message.

    Args:
        buffer: the message's value (bytes; numpy arrays in the result may view it, so keep it alive).
        accepted: identifiers the topic carries (e.g. :data:`EVENT_SCHEMAS`).

    Raises:
        Skipped: the message is not used (reason in :data:`SKIP_REASONS`).
    """
    schema = schema_of(buffer)
    if schema not in accepted:
        if schema in KNOWN_SCHEMAS:
            raise Skipped("unexpected_schema", f"{schema} on a topic for {', '.join(sorted(accepted))}")
        raise Skipped("unknown_schema", f"identifier {schema!r}")
    try:
        return _DECODERS[schema](buffer)
    except Skipped:
        raise
    except Exception as err:  # noqa: BLE001 - hostile bytes can make the generated accessors raise anything
        raise Skipped("malformed", f"{schema}: {type(err).__name__}: {str(err)[:200]}") from None


def decode_checked(buffer: bytes, role: Role, record_ns: int, now_ns: int, max_bytes: int) -> Decoded:
    """:func:`decode` for a topic of ``role`` (:data:`ROLE_SCHEMAS`), and what takes more than the bytes: the
    reader's size limit ``max_bytes``, the times (:func:`check_times`, ``record_ns`` and ``now_ns`` as there), and
    a pixel id for every event on the ``events`` topic (monitors may have none).

    Raises:
        Skipped: the message is not used (reason in :data:`SKIP_REASONS`).
    """
    if len(buffer) > max_bytes:
        raise Skipped("too_large", f"{len(buffer)} bytes (at most {max_bytes})")
    record = decode(buffer, ROLE_SCHEMAS[role])
    if isinstance(record, RunStop) and record.stop_now:  # 6s4t "stop NOW": at the message's own time
        record = dataclasses.replace(record, stop_ns=record_ns)
    check_times(record, record_ns, now_ns)
    if role == "events" and isinstance(record, Events) and record.n_events and not record.has_pixels:
        raise Skipped(
            "no_pixel_ids",
            f"{record.schema} of source '{record.source_name[:100]}': events without pixel ids (a single-pixel "
            "detector, i.e. a monitor: give its topic the role 'monitors')",
        )
    return record


def check_times(record: Decoded, record_ns: int, now_ns: int) -> None:
    """Refuse a message whose times cannot be real (a hostile or broken producer).

    * a pl72 ``start_time``/``stop_time`` or 6s4t ``stop_time`` more than :data:`TIME_WINDOW_NS` from
      ``record_ns``, or a pl72 stop before its start: a run start in the year 2200 would otherwise make every
      later run look stale, a stop there would never pass;
    * any time (pulses, log values, run times) more than :data:`TIME_WINDOW_NS` after ``now_ns``: one far-future
      pulse would make its partition look past every run stop (a producer can set its record timestamps too).

    Args:
        record: a decoded message.
        record_ns: the message's record timestamp (ns since the Unix epoch; the wall clock when it has none).
        now_ns: the wall clock, ns since the Unix epoch.

    Raises:
        Skipped: ``implausible_time``.
    """
    if isinstance(record, Events):
        times = [int(record.reference_time.max())] if record.reference_time.size else []
    elif isinstance(record, LogValue):
        times = [record.time_ns]
    else:
        times = [record.start_ns, record.stop_ns] if isinstance(record, RunStart) else [record.stop_ns]
        times = [t for t in times if t is not None]
        far = [t for t in times if abs(t - record_ns) > TIME_WINDOW_NS]
        if far:
            raise Skipped("implausible_time", f"run time {far[0]} ns is more than a day from the record's {record_ns}")
        if isinstance(record, RunStart) and record.stop_ns is not None and record.stop_ns < record.start_ns:
            raise Skipped("implausible_time", f"pl72 '{record.run_name}' stops before it starts")
    if times and max(times) > now_ns + TIME_WINDOW_NS:
        raise Skipped("implausible_time", f"time {max(times)} ns is more than a day after the wall clock")


def _vector(value: object, kind: str, name: str) -> np.ndarray:
    """A FlatBuffers vector as a 1-d array (an absent vector reads as the integer 0: empty)."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in kind:
        return value
    if isinstance(value, int) and value == 0:
        return np.empty(0, np.int32)
    raise Skipped("invalid", f"{name} is not a vector of integers")


def _events(
    schema: str, source: str, message_id: int, *, times: np.ndarray, index: np.ndarray, tof: object, pixels: object
) -> Events:
    """Validate the pieces of an event message (shared by ev44 and ev42)."""
    tof = _vector(tof, "iu", "time_of_flight")
    pixels = _vector(pixels, "iu", "pixel_id")
    n_events = tof.shape[0]
    if pixels.shape[0] not in (0, n_events):
        raise Skipped("invalid", f"{schema}: {pixels.shape[0]} pixel ids for {n_events} events")
    if times.shape != index.shape:
        raise Skipped("invalid", f"{schema}: {times.shape[0]} reference times but {index.shape[0]} indices")
    if n_events and (index.size == 0 or index[0] != 0):
        raise Skipped("invalid", f"{schema}: {n_events} events but the first pulse does not start at event 0")
    if index.size and (index.min() < 0 or index.max() > n_events or np.any(np.diff(index) < 0)):
        raise Skipped("invalid", f"{schema}: reference_time_index not non-decreasing within 0..{n_events}")
    return Events(schema, source, message_id, times, index, tof, pixels)


def _ev44(buffer: bytes) -> Events:
    data = deserialise_ev44(buffer)
    times = _vector(data.reference_time, "i", "reference_time").astype(np.int64, copy=False)
    index = _vector(data.reference_time_index, "i", "reference_time_index").astype(np.int64)
    return _events(
        "ev44",
        data.source_name,
        int(data.message_id),
        times=times,
        index=index,
        tof=data.time_of_flight,
        pixels=data.pixel_id,
    )


def _ev42(buffer: bytes) -> Events:
    data = deserialise_ev42(buffer)
    pulse = int(data.pulse_time)
    if pulse > np.iinfo(np.int64).max:
        raise Skipped("invalid", f"ev42: pulse_time {pulse} ns is beyond the year 2262")
    times = np.array([pulse], np.int64)
    index = np.zeros(1, np.int64)
    return _events(
        "ev42",
        data.source_name,
        int(data.message_id),
        times=times,
        index=index,
        tof=data.time_of_flight,
        pixels=data.detector_id,
    )


def _pl72(buffer: bytes) -> RunStart:
    data = deserialise_pl72(buffer)
    if data.start_time <= 0:
        raise Skipped("invalid", "pl72 without start_time")
    start, start_in_ns = run_time_ns(data.start_time)
    stop, stop_in_ns = run_time_ns(data.stop_time) if data.stop_time > 0 else (None, False)
    return RunStart(
        run_name=data.run_name,
        instrument_name=data.instrument_name,
        start_ns=start,
        stop_ns=stop,
        job_id=data.job_id,
        filename=data.filename,
        detector_ids=_detector_ids(data.detector_spectrum_map, data.nexus_structure),
        nanosecond_times=start_in_ns or stop_in_ns,
    )


def _6s4t(buffer: bytes) -> RunStop:
    data = deserialise_6s4t(buffer)
    if data.stop_time <= 0:  # the schema: 'When set to 0, will trigger a "stop NOW" code path in the file writer'
        return RunStop(run_name=data.run_name, job_id=data.job_id, stop_ns=STOP_NOW, stop_now=True)
    stop, in_ns = run_time_ns(data.stop_time)
    return RunStop(run_name=data.run_name, job_id=data.job_id, stop_ns=stop, nanosecond_times=in_ns)


def _log(source: str, timestamp: int, value: object, schema: str) -> LogValue:
    """A decoded value as :class:`LogValue`; one no chunk can hold exactly is skipped with its reason."""
    try:
        check_log_value(value)
    except UnusableLog as err:
        raise Skipped(err.reason, f"{schema} '{source[:100]}': {err.detail}") from None
    return LogValue(source, int(timestamp), value if isinstance(value, str) else np.asarray(value))


def _f144(buffer: bytes) -> LogValue:
    data = deserialise_f144(buffer)
    return _log(data.source_name, data.timestamp_unix_ns, data.value, "f144")


def _f142(buffer: bytes) -> LogValue:
    data = deserialise_f142(buffer)
    return _log(data.source_name, data.timestamp_unix_ns, data.value, "f142")


_DECODERS = {"ev44": _ev44, "ev42": _ev42, "pl72": _pl72, "6s4t": _6s4t, "f144": _f144, "f142": _f142}


def _detector_ids(spectrum_map: object, nexus_structure: str) -> tuple[int, int] | None:
    """First and last detector id of a run start (see :class:`RunStart`); ids beyond 0..2**31-1 are ignored."""
    if spectrum_map is not None:
        ids = np.asarray(spectrum_map.detector_ids)
        ids = ids[(ids >= 0) & (ids <= MAX_EVENT_ID)] if ids.dtype.kind in "iu" else ids[:0]
        if ids.size:
            return int(ids.min()), int(ids.max())
    if "detector_number" not in nexus_structure:
        return None
    try:
        tree = json.loads(nexus_structure)
    except (ValueError, RecursionError):
        return None
    found = [bounds for bounds in _detector_numbers(tree) if bounds is not None]
    if not found:
        return None
    return min(low for low, _ in found), max(high for _, high in found)


def _detector_numbers(node: object) -> list[tuple[int, int] | None]:
    """Bounds of every ``detector_number`` dataset in a nexus_structure tree (file-writer JSON, both the
    ``{"module": "dataset", "config": {...}}`` form and the older ``{"type": "dataset", ...}`` form)."""
    found: list[tuple[int, int] | None] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(child for child in item if isinstance(child, dict | list))
        elif isinstance(item, dict):
            if item.get("name") == "detector_number" and "values" in item:
                found.append(_bounds(item["values"]))
            stack.extend(value for key, value in item.items() if key != "values" and isinstance(value, dict | list))
    return found


def _bounds(values: object) -> tuple[int, int] | None:
    try:
        ids = np.asarray(values)
    except (ValueError, TypeError):
        return None
    if ids.dtype.kind not in "iu" or ids.size == 0:
        return None
    ids = ids[(ids >= 0) & (ids <= MAX_EVENT_ID)]
    return (int(ids.min()), int(ids.max())) if ids.size else None
