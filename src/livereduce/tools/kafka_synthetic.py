"""A synthetic live Kafka stream at a fixed real-time rate: runs of random events as pl72, ev44, 6s4t.

Usage::

    python3 -m livereduce.tools.kafka_synthetic --broker HOST:PORT --rate 1e7 [--pixels 100000] [--pulse-rate 60]
        [--run-seconds 90] [--runs 1] [--start-in 0] [--instrument BENCH] [--tile 0] [--compression none]

The Kafka counterpart of ``livereduce-fake-sms --synthetic`` (the events come from the same
:class:`~livereduce.tools.synthetic.PulsePool`): ``--runs`` runs on the instrument's topics (``<INSTRUMENT>_runInfo``,
``_events``; created if missing, 1 partition), each ``--run-seconds`` long, 1 s apart, the first beginning
``--start-in`` seconds after start. Per run: a ``pl72`` (``run_name`` the run number from ``--run-number``,
``start_time`` its first pulse in ms, a detector-spectrum map over the pixels), one ``ev44`` per pulse sent when the
wall clock reaches the pulse's time and stamped with it (``reference_time`` ns; the record's timestamp in ms; time
of flight in ns), a ``6s4t`` 1 ms after the last pulse. A pulse late against its time (the producer's queue full, the
process starved) is sent as soon as it can be, with its own time: the lateness is reported, never hidden.

Each ev44 is serialised once per pool pulse; sending patches its ``message_id`` and ``reference_time`` and copies
it (one memcpy of the message). ``--tile N`` repeats blocks of N events within a pulse and
``--compression`` sets the producer's codec: a broker that keeps every message in memory (tansu's memory storage)
holds 48 GB for ten minutes at 1e7 events/s uncompressed, about a tenth with ``--tile 16384 --compression zstd``.

Output: one line per run on stdout (``run N: P pulses, E events, at most L s after their time``), then the
producer's CPU time. Exit codes: 0 done (also after SIGTERM/SIGINT, which end the current run with its 6s4t), 2
invalid arguments, 3 the broker cannot be reached or did not take every message (one line on stderr).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from streaming_data_types import serialise_6s4t, serialise_ev44, serialise_pl72
from streaming_data_types.run_start_pl72 import DetectorSpectrumMap

from livereduce.protocols.kafka.topics import producer_settings, topic_names
from livereduce.tools.synthetic import PulsePool, pulse_events

PROG = "kafka_synthetic"
NS_PER_S = 1_000_000_000
RUN_GAP_NS = NS_PER_S
"""Time between a run's 6s4t and the next run's pl72."""
TIMEOUT_S = 30.0
_MARK_ID = 0x0A0B0C0D0E0F1011
_MARK_TIME = 0x1122334455667788
"""Values serialised into the template messages to find where ``message_id`` and ``reference_time`` are stored."""


@dataclass
class Template:
    """One pool pulse as a serialised ev44, and where to patch it."""

    value: bytearray
    id_at: int
    time_at: int

    @classmethod
    def of(cls, source: str, tof_ns: np.ndarray, pixel_id: np.ndarray) -> Template:
        value = bytearray(serialise_ev44(source, _MARK_ID, np.array([_MARK_TIME]), np.array([0]), tof_ns, pixel_id))
        id_at = value.find(_MARK_ID.to_bytes(8, "little"))
        time_at = value.find(_MARK_TIME.to_bytes(8, "little"))
        if min(id_at, time_at) < 0:
            raise AssertionError("ev44 template: message_id or reference_time not found")
        return cls(value, id_at, time_at)

    def stamped(self, message_id: int, pulse_ns: int) -> bytes:
        """The message with ``message_id`` and ``reference_time`` ``pulse_ns`` (Unix ns)."""
        self.value[self.id_at : self.id_at + 8] = message_id.to_bytes(8, "little", signed=True)
        self.value[self.time_at : self.time_at + 8] = pulse_ns.to_bytes(8, "little", signed=True)
        return bytes(self.value)  # confluent-kafka takes bytes only


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="bootstrap servers, host:port")
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--pixels", type=int, default=100_000, help="pixel ids 0..N-1 (default %(default)s)")
    parser.add_argument("--pulse-rate", type=float, default=60.0, help="pulses per second (default %(default)s)")
    parser.add_argument("--run-seconds", type=float, default=90.0, help="length of a run (default %(default)s)")
    parser.add_argument("--runs", type=int, default=1, help="runs to send (default %(default)s)")
    parser.add_argument("--run-number", type=int, default=1, help="number of the first run (default %(default)s)")
    parser.add_argument("--start-in", type=float, default=0.0, help="seconds before the first run (default 0)")
    parser.add_argument("--instrument", default="BENCH", help="instrument of the topics (default %(default)s)")
    parser.add_argument("--source-name", default="livereduce_synthetic", help="ev44 source_name")
    parser.add_argument("--tile", type=int, default=0, help="repeat blocks of N events in a pulse (0: all random)")
    parser.add_argument("--compression", default="none", choices=("none", "lz4", "zstd", "gzip", "snappy"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the producer; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    finite = all(math.isfinite(v) for v in (args.rate, args.pulse_rate, args.run_seconds, args.start_in))
    if not (finite and args.rate >= 0 and args.pulse_rate > 0 and args.run_seconds > 0 and args.start_in >= 0):
        parser.error("--rate and --start-in must be >= 0, --pulse-rate and --run-seconds > 0")
    if args.runs < 1 or args.tile < 0 or not 1 <= args.pixels <= 2**31 or args.run_number < 0:
        parser.error("--runs must be >= 1, --tile >= 0, --pixels within 1..2**31, --run-number >= 0")
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        Stream(args, stopping).run()
    except KafkaException as err:
        print(f"{PROG}: {err.args[0].str() if err.args else err}", file=sys.stderr)
        return 3
    return 0


class Stream:
    """The runs of one invocation."""

    def __init__(self, args: argparse.Namespace, stopping: threading.Event) -> None:
        self.args = args
        self.stopping = stopping
        self.topics = topic_names(args.instrument, None)
        per = pulse_events(args.rate, args.pulse_rate)
        pool = PulsePool.make(per, args.pixels, tile=args.tile)
        self.templates = [
            Template.of(
                args.source_name,
                pool.tof_100ns[j].astype(np.int32) * 100,
                pool.event_id[j].astype(np.int32),
            )
            for j in range(len(pool))
        ]
        self.events_per_pulse = per
        self.period_ns = NS_PER_S / args.pulse_rate
        self.pulses_per_run = max(1, round(args.run_seconds * args.pulse_rate))
        self.failures: list[str] = []
        self.producer = Producer(
            {**producer_settings(args.broker, None), "compression.type": args.compression, "error_cb": self._error}
        )
        self.message_id = 0

    def run(self) -> None:
        """Create the topics if needed, then send the runs; raises KafkaException when the broker fails."""
        self._topics()
        print(
            f"{PROG}: {self.args.runs} run(s) of {self.pulses_per_run} pulses, {self.events_per_pulse} events per "
            f"pulse at {self.args.pulse_rate:g} Hz on {self.topics['events']} (compression {self.args.compression}, "
            f"tile {self.args.tile})",
            flush=True,
        )
        start = time.time_ns() + round(self.args.start_in * NS_PER_S)
        for k in range(self.args.runs):
            if self.stopping.is_set():
                break
            start = self._run(self.args.run_number + k, start) + RUN_GAP_NS
        if self.producer.flush(TIMEOUT_S) or self.failures:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"messages not delivered {self.failures[:1]}"))
        cpu = time.process_time()
        print(f"{PROG}: done; CPU {cpu:.1f} s", flush=True)

    def _topics(self) -> None:
        metadata = self.producer.list_topics(timeout=TIMEOUT_S)
        missing = [self.topics[r] for r in ("runInfo", "events") if self.topics[r] not in metadata.topics]
        if missing:
            admin = AdminClient({"bootstrap.servers": self.args.broker})
            for future in admin.create_topics([NewTopic(t, 1, 1) for t in missing]).values():
                future.result(TIMEOUT_S)

    def _run(self, number: int, start_ns: int) -> int:
        """Send run ``number`` beginning at ``start_ns`` (pl72; Unix ns); returns the time of its 6s4t (ns)."""
        args = self.args
        job = uuid.uuid4().hex
        detectors = np.arange(args.pixels, dtype=np.int32)
        spectra = DetectorSpectrumMap(detectors + 1, detectors, args.pixels)
        start_ms = start_ns // 1_000_000
        self._wait_until(start_ns)
        pl72 = serialise_pl72(job, "synthetic.nxs", start_time=start_ms, run_name=str(number),
                              instrument_name=args.instrument, detector_spectrum_map=spectra)  # fmt: skip
        self._produce(self.topics["runInfo"], pl72, start_ns)
        first = (start_ms + 1) * 1_000_000
        sent, latest = 0, 0
        for i in range(self.pulses_per_run):
            pulse_ns = first + round(i * self.period_ns)
            if not self._wait_until(pulse_ns):
                break
            latest = max(latest, time.time_ns() - pulse_ns)
            value = self.templates[i % len(self.templates)].stamped(self.message_id, pulse_ns)
            self._produce(self.topics["events"], value, pulse_ns, key=args.source_name.encode())
            self.message_id += 1
            sent += 1
        last = first + round(max(sent - 1, 0) * self.period_ns)
        stop_ms = last // 1_000_000 + 1
        stop = serialise_6s4t(job, run_name=str(number), stop_time=stop_ms)
        self._produce(self.topics["runInfo"], stop, stop_ms * 1_000_000)
        self.producer.poll(0)
        print(
            f"run {number}: {sent} pulses, {sent * self.events_per_pulse} events, at most {latest / NS_PER_S:.3f} s "
            f"after their time",
            flush=True,
        )
        return stop_ms * 1_000_000

    def _wait_until(self, unix_ns: int) -> bool:
        """Serve the producer until the wall clock reaches ``unix_ns``; False if stopping."""
        while (remaining := (unix_ns - time.time_ns()) / NS_PER_S) > 0:
            if self.stopping.is_set():
                return False
            self.producer.poll(min(remaining, 0.05))
        return not self.stopping.is_set()

    def _produce(self, topic: str, value: bytes, time_ns: int, key: bytes | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key=key, timestamp=time_ns // 1_000_000, on_delivery=self._sent)
                break
            except BufferError:
                self.producer.poll(0.01)
        self.producer.poll(0)

    def _sent(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failures.append(f"{message.topic()}: {error.str()}")

    def _error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.failures.append(error.str())


if __name__ == "__main__":
    sys.exit(main())
