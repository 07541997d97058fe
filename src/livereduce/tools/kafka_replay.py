"""``livereduce-kafka-replay``: replay a NeXus event file into Kafka as live runs (ESS streaming schemas).

How a site tests its processing scripts against Kafka, and how livereduce's tests produce data::

    livereduce-kafka-replay FILE --broker HOST:PORT [--speed 1] [--loops 1] [--schema ev44|ev42] ...

Each loop is one run on the instrument's topics (``<INSTRUMENT>_runInfo``, ``_events``, ``_sampleEnv``, as
:func:`livereduce.protocols.kafka.topics.topic_names`; ``--topic ROLE=NAME`` overrides):

1. ``pl72`` run start on ``_runInfo``: ``run_name`` = the run number (``--run-number``, else the file's, else 1;
   loop k adds k), ``start_time`` in ms (the first pulse, rounded down), the instrument name, and a
   ``detector_spectrum_map`` whose detector ids are the file's pixel range;
2. the events, pulse by pulse in time order, as ``ev44`` (``--pulses-per-message`` pulses per message) or ``ev42``
   (one pulse per message): ``reference_time`` = the pulse time in ns, ``time_of_flight`` = the file's
   ``event_time_offset`` rounded to whole ns, ``pixel_id`` = ``event_id``; each ``NXlog`` of the file (and the
   per-pulse ``proton_charge``, pC) as ``f144`` values on ``_sampleEnv``, interleaved in time;
3. ``6s4t`` run stop: ``stop_time`` = 1 ms after the last pulse, rounded down to ms.

Files: ISIS (``raw_data_1/detector_1_events``) and SNS (``entry/bankN_events``, merged per pulse) layouts, read
and checked with livereduce's NeXus event reader (:class:`~livereduce.engines.scipp.nexus_events.EventFile`, as the
file source reads them); events it drops (ids outside the file's pixel range) are not sent and are counted on
stderr.

Times. ``--speed S`` > 0 sends a pulse ``(t - t_first) / S`` seconds after the run began and stamps it with
that moment, so the stream's times follow the wall clock (at S = 2 pulses come twice as often). ``--speed 0``
sends as fast as possible and stamps each pulse with the moment it is sent (at least 1 ns after the previous
one): the times stay in the past and successive runs never overlap, but pulses come far faster than in the file.
``--start-time`` keeps the file's pulse spacing from that time on (runs of several loops 1 s apart); with
``--speed 0`` all at once. A log value goes out just before the first pulse at or after it, stamped like it would
be by its own time (at ``--speed 0`` without ``--start-time``: when it is sent). Kafka record timestamps are the
data's times (ms).

Exit codes: 0 done, 2 invalid arguments, 3 the file cannot be read or the broker cannot be reached or did not
take every message (one line on stderr).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import scipp as sc
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from streaming_data_types import serialise_6s4t, serialise_ev42, serialise_ev44, serialise_f144, serialise_pl72
from streaming_data_types.run_start_pl72 import DetectorSpectrumMap

from livereduce.engines.scipp.chunk import PULSE_DIM, flat_events, metadata_of
from livereduce.engines.scipp.nexus_events import EventFile
from livereduce.errors import ConfigError, LiveReduceError, SourceError
from livereduce.protocols.kafka.times import datetime_to_ns, iso, ns_to_ms_floor, tof_us_to_ns
from livereduce.protocols.kafka.topics import ROLES, producer_settings, topic_names

PROG = "livereduce-kafka-replay"
CHUNK_PULSES = 1000
"""Pulses read from the file at a time."""
RUN_GAP_NS = 1_000_000_000
"""Gap between the runs of several loops with ``--start-time``."""
TIMEOUT_S = 30.0
"""Default of ``--timeout``: seconds to wait for the broker's metadata, and for every message to be delivered."""


@dataclass
class Totals:
    """What one run sent."""

    pulses: int = 0
    events: int = 0
    event_messages: int = 0
    log_values: int = 0


@dataclass
class _Run:
    """One run being sent: where, what, and how the file's times become the times sent."""

    topics: dict[str, str]
    instrument: str
    number: int
    job_id: str
    pixels: tuple[int, int]
    wall_start: float  # time.monotonic() when the run began
    origin_ns: int | None  # time sent for the file's first pulse; None: stamp with the send time (--speed 0)
    file_first: int  # the file's first pulse (Unix ns)
    last_sent: int = 0  # time of the last pulse or log value sent (ns)
    totals: Totals = field(default_factory=Totals)
    logs_sent: dict[str, int] = field(default_factory=dict)  # log -> file time of the last value sent


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return Replay(args).run()
    except LiveReduceError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Replay a NeXus event file (ISIS or SNS layout) into Kafka as runs: pl72, ev44/ev42, f144, 6s4t.",
    )
    parser.add_argument("file", type=Path, help="NeXus file with NXevent_data")
    parser.add_argument("--broker", required=True, help="bootstrap servers, host:port[,host:port...]")
    parser.add_argument("--instrument", help="instrument name for the topics and pl72 (default: the file's)")
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help=f"topic of a role ({', '.join(ROLES)}), default <INSTRUMENT>_<role>",
    )
    parser.add_argument("--schema", choices=("ev44", "ev42"), default="ev44", help="event schema (default ev44)")
    parser.add_argument("--speed", type=_speed, default=1.0, help="1 real time, N times faster, 0 at once")
    parser.add_argument("--loops", type=_positive, default=1, help="runs to send, run numbers increasing")
    parser.add_argument("--run-number", type=_natural, help="run number of the first run (default: the file's, or 1)")
    parser.add_argument("--start-time", type=_time, help="ISO-8601 time of the first pulse (UTC if no zone)")
    parser.add_argument("--source-name", default="livereduce_replay", help="ev44/ev42 source_name")
    parser.add_argument("--pulses-per-message", type=_positive, default=1, help="ev44 pulses per message")
    parser.add_argument("--create-topics", action="store_true", help="create missing topics (1 partition)")
    parser.add_argument(
        "--timeout", type=_seconds, default=TIMEOUT_S, help=f"seconds to wait for the broker (default {TIMEOUT_S:g})"
    )
    parser.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE", help="librdkafka producer setting")
    return parser


def _speed(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("expected a number >= 0")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("expected a number of seconds > 0")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("expected an integer >= 1")
    return value


def _natural(text: str) -> int:
    value = int(text)
    if not 0 <= value < 10**18:
        raise argparse.ArgumentTypeError("expected an integer >= 0")
    return value


def _time(text: str) -> int:
    try:
        return datetime_to_ns(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO-8601 time such as 2026-01-31T12:00:00") from None


def _pairs(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} '{item}': expected KEY=VALUE")
        pairs[key] = value
    return pairs


class Replay:
    """One invocation: open the file, check the broker, send the runs.

    Raises:
        ConfigError: invalid ``--topic``/``--kafka`` values, no instrument name.
        SourceError: the file cannot be read, the broker cannot be reached, a topic is missing, or messages
            were not delivered.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        overrides = _pairs(args.topic, "--topic")
        unknown = sorted(set(overrides) - set(ROLES))
        if unknown:
            raise ConfigError(f"--topic: unknown role {', '.join(unknown)} (roles: {', '.join(ROLES)})")
        self.overrides = overrides
        self.settings = producer_settings(args.broker, _pairs(args.kafka, "--kafka"))
        self.failures: list[str] = []
        self.producer: Producer | None = None
        self.stopped_ns = 0
        """Stop time of the run sent last (ns, a whole ms): the next run starts no earlier, so runs never overlap."""

    def run(self) -> int:
        with EventFile(self.args.file) as file:
            if file.n_pulses == 0:
                raise SourceError(f"'{self.args.file}' has no pulses to replay")
            return self._replay(file)

    def _replay(self, file: EventFile) -> int:
        metadata = file.metadata
        instrument = self.args.instrument or metadata.instrument_name
        if not instrument:
            raise ConfigError(f"'{self.args.file}' names no instrument: give --instrument")
        topics = topic_names(instrument, self.overrides)
        first_run = self.args.run_number if self.args.run_number is not None else (metadata.run_number or 1)
        self.producer = self._connect(topics)
        print(
            f"Replaying '{self.args.file}' into {self.args.broker} as {instrument}: {self.args.loops} run(s) from "
            f"run {first_run}, {self.args.schema}, speed {self.args.speed:g}",
            flush=True,
        )
        origin = self.args.start_time
        try:
            for loop in range(self.args.loops):
                last = self._send_run(file, topics, instrument, first_run + loop, origin)
                origin = None if origin is None else last + RUN_GAP_NS
            remaining = self.producer.flush(self.args.timeout)
        finally:
            self.producer = None  # destroyed now, not when the garbage collector finds the callbacks' cycle
        if remaining or self.failures:
            raise SourceError(
                f"{remaining + len(self.failures)} message(s) not delivered to {self.args.broker}"
                + (f": {self.failures[0]}" if self.failures else "")
            )
        return 0

    def _connect(self, topics: dict[str, str]) -> Producer:
        try:
            producer = Producer({**self.settings, "error_cb": self._on_error})
            metadata = producer.list_topics(timeout=self.args.timeout)
        except KafkaException as err:
            raise SourceError(f"Kafka broker {self.args.broker} unreachable: {err.args[0]}") from None
        except (ValueError, TypeError) as err:
            raise ConfigError(f"--kafka: {err}") from None
        needed = [topics[role] for role in ("runInfo", "events", "sampleEnv")]
        missing = [topic for topic in needed if topic not in metadata.topics]
        if missing and self.args.create_topics:
            admin = AdminClient({key: value for key, value in self.settings.items() if key != "message.max.bytes"})
            for topic, future in admin.create_topics([NewTopic(t, 1, 1) for t in missing]).items():
                try:
                    future.result(self.args.timeout)
                except KafkaException as err:
                    if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise SourceError(f"cannot create topic '{topic}': {err.args[0].str()}") from None
            print(f"Created topics: {', '.join(missing)}", flush=True)
        elif missing:
            raise SourceError(f"topic(s) {', '.join(missing)} do not exist on {self.args.broker} (--create-topics)")
        return producer

    def _send_run(
        self, file: EventFile, topics: dict[str, str], instrument: str, run_number: int, origin: int | None
    ) -> int:
        """Send the file (which has pulses) as one run from ``origin`` (ns; None: now at ``--speed`` > 0, send
        times at 0); returns the time of the last pulse sent (ns)."""
        if origin is None and self.args.speed > 0:
            origin = max(time.time_ns(), self.stopped_ns)
        first = int(file.pulse_times[0].astype(np.int64))
        run = _Run(topics, instrument, run_number, uuid.uuid4().hex, file.pixel_range, time.monotonic(), origin, first)
        self._run_start(run)
        for chunk in _chunks(file):
            self._send_chunk(run, chunk, chunk.coords[PULSE_DIM].values.astype(np.int64))
        stop_ms = ns_to_ms_floor(run.last_sent) + 1
        self.stopped_ns = stop_ms * 10**6
        stop = serialise_6s4t(run.job_id, run_name=str(run_number), stop_time=stop_ms)
        self._produce(topics["runInfo"], stop, stop_ms * 10**6)
        totals = run.totals
        print(
            f"run {run_number}: {totals.pulses} pulses, {totals.events} events in {totals.event_messages} "
            f"{self.args.schema} messages, {totals.log_values} f144 values; stop {iso(stop_ms * 10**6)} (6s4t)",
            flush=True,
        )
        return run.last_sent

    def _stamps(self, run: _Run, times: np.ndarray) -> np.ndarray:
        """The times sent (ns) for file times ``times`` (ns), increasing from ``run.last_sent``."""
        if run.origin_ns is None:  # --speed 0: the send time, at least 1 ns after what was sent before
            first = max(time.time_ns(), run.last_sent + 1)
            stamps = first + np.arange(times.size, dtype=np.int64)
        else:
            offsets = times - run.file_first
            if self.args.speed > 0:
                offsets = np.rint(offsets / self.args.speed).astype(np.int64)
            stamps = run.origin_ns + offsets
        if stamps.size:
            run.last_sent = max(run.last_sent, int(stamps[-1]))
        return stamps

    def _run_start(self, run: _Run) -> None:
        first, last = run.pixels
        detectors = np.arange(first, last + 1, dtype=np.int32)
        spectra = DetectorSpectrumMap(np.arange(1, detectors.size + 1, dtype=np.int32), detectors, detectors.size)
        start_ns = run.origin_ns if run.origin_ns is not None else max(time.time_ns(), self.stopped_ns)
        start_ms = ns_to_ms_floor(start_ns)
        run.last_sent = start_ns - 1
        message = serialise_pl72(
            run.job_id,
            self.args.file.name,
            start_time=start_ms,
            run_name=str(run.number),
            instrument_name=run.instrument,
            broker=self.args.broker,
            detector_spectrum_map=spectra,
        )
        self._produce(run.topics["runInfo"], message, start_ms * 10**6)
        print(f"run {run.number}: start {iso(start_ms * 10**6)} (pl72), pixels {first}..{last}", flush=True)

    def _send_chunk(self, run: _Run, chunk: sc.DataArray, times: np.ndarray) -> None:
        """Send the chunk's pulses (paced by ``--speed``), each log value just before the first pulse after it."""
        args = self.args
        events = flat_events(chunk)
        ids = events.coords["event_id"].values.astype(np.int32, copy=False)
        tof = tof_us_to_ns(events.coords["event_time_offset"].to(unit="us", copy=False).values)
        starts = np.concatenate([[0], np.cumsum(chunk.bins.size().values.astype(np.int64))])
        logs = self._log_values(run, chunk, times)
        per_message = 1 if args.schema == "ev42" else args.pulses_per_message
        for first in range(0, times.size, per_message):
            last = min(first + per_message, times.size)
            if args.speed > 0:
                self._wait_until(run.wall_start + (times[first] - run.file_first) / args.speed / 1e9)
            logs = self._send_logs(run, logs, until=int(times[first]))
            stamps = self._stamps(run, times[first:last])
            b, e = int(starts[first]), int(starts[last])
            message_id = run.totals.event_messages
            if args.schema == "ev42":
                pulse = int(stamps[0])
                message = serialise_ev42(args.source_name, message_id, pulse, tof[b:e].astype(np.uint32), ids[b:e])
            else:
                index = (starts[first:last] - b).astype(np.int32)
                message = serialise_ev44(args.source_name, message_id, stamps, index, tof[b:e], ids[b:e])
            self._produce(run.topics["events"], message, int(stamps[0]), key=args.source_name.encode())
            run.totals.event_messages += 1
        self._send_logs(run, logs, until=int(times[-1]))
        run.totals.pulses += times.size
        run.totals.events += int(starts[-1])

    def _log_values(self, run: _Run, chunk: sc.DataArray, times: np.ndarray) -> list[tuple[int, str, object]]:
        """The chunk's numeric NXlog values not sent yet, and its per-pulse proton charge (pC): (file time ns,
        name, value), in time order."""
        logs = dict(metadata_of(chunk).logs)
        if "proton_charge" in chunk.coords and "proton_charge" not in logs:
            logs["proton_charge"] = sc.DataArray(
                chunk.coords["proton_charge"].rename_dims({PULSE_DIM: "time"}),
                coords={"time": sc.array(dims=["time"], values=times.view("datetime64[ns]"), unit="ns")},
            )
        values = []
        for name, log in logs.items():
            if log.values.dtype.kind not in "biuf":
                continue
            stamps = log.coords["time"].to(unit="ns").values.astype(np.int64)
            fresh = stamps > run.logs_sent.get(name, -(2**63))
            if fresh.any():
                run.logs_sent[name] = int(stamps[fresh].max())
                values += [(int(t), name, v) for t, v in zip(stamps[fresh], log.values[fresh], strict=True)]
        return sorted(values, key=lambda value: value[0])

    def _send_logs(self, run: _Run, values: list[tuple[int, str, object]], until: int) -> list[tuple[int, str, object]]:
        """Send the values at or before file time ``until``; returns the rest."""
        due = 0
        while due < len(values) and values[due][0] <= until:
            due += 1
        for file_time, name, value in values[:due]:
            when = int(self._stamps(run, np.array([file_time], np.int64))[0])
            self._produce(run.topics["sampleEnv"], serialise_f144(name, value, when), when)
            run.totals.log_values += 1
        return values[due:]

    def _produce(self, topic: str, value: bytes, time_ns: int, key: bytes | None = None) -> None:
        """Queue one message (record timestamp = ``time_ns`` in ms), waiting while librdkafka's queue is full."""
        while True:
            try:
                self.producer.produce(
                    topic, value, key=key, timestamp=max(0, time_ns // 1_000_000), on_delivery=self._delivered
                )
            except BufferError:
                self.producer.poll(0.1)
                continue
            except KafkaException as err:
                raise SourceError(f"cannot send to '{topic}': {err.args[0].str()}") from None
            self.producer.poll(0)
            return

    def _wait_until(self, deadline: float) -> None:
        while (remaining := deadline - time.monotonic()) > 0:
            self.producer.poll(min(remaining, 0.05))

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failures.append(f"{message.topic()}: {error.str()}")

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.failures.append(error.str())


def _chunks(file: EventFile) -> Iterator[sc.DataArray]:
    """The file's pulses, ``CHUNK_PULSES`` at a time; the events the reader dropped are counted on stderr.

    Raises:
        SourceError: the file cannot be read.
    """
    for chunk, dropped in file.chunks(CHUNK_PULSES):
        if dropped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in dropped.items())
            print(f"{PROG}: events not sent: {reasons}", file=sys.stderr)
        yield chunk


if __name__ == "__main__":
    sys.exit(main())
