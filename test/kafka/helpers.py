"""Helpers of the Kafka tests: producing messages, replaying a file, draining a listener."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import scipp as sc
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from streaming_data_types import serialise_6s4t, serialise_ev44, serialise_pl72
from streaming_data_types.run_start_pl72 import DetectorSpectrumMap

from conftest import poll_until
from livereduce.config import Config
from livereduce.engines.scipp.chunk import PULSE_DIM
from livereduce.engines.scipp.listeners.base import Extracted, RunStatus
from livereduce.engines.scipp.listeners.kafka import KafkaEventListener
from livereduce.tools import kafka_replay

from .conftest import Broker

SECOND = 1_000_000_000


def send(broker: Broker, topic: str, messages: Iterable[bytes], partition: int | None = None) -> None:
    """Produce messages in order and wait until the broker has them all."""
    producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 5, "message.max.bytes": 25_000_000})
    for message in messages:
        if partition is None:
            producer.produce(topic, message)
        else:
            producer.produce(topic, message, partition=partition)
        producer.poll(0)
    assert producer.flush(30) == 0


def replay(broker: Broker, topics: dict[str, str], *arguments: str, file: str) -> None:
    """``livereduce-kafka-replay FILE --broker ... --topic ...`` in this process; asserts exit 0."""
    options = [f"--topic={role}={name}" for role, name in topics.items()]
    assert kafka_replay.main([file, "--broker", broker.address, *options, *arguments]) == 0


def listener(broker: Broker, topics: dict[str, str], **keys: object) -> KafkaEventListener:
    """A connected KafkaEventListener on ``topics`` (instrument SANS2D)."""
    config = Config(instrument="SANS2D", listener="KafkaEventListener", address=broker.address, topics=topics, **keys)
    source = KafkaEventListener(config)
    source.connect()
    return source


def listener_in_a_run(broker: Broker, topics: dict[str, str], **keys: object) -> tuple[KafkaEventListener, int]:
    """A run start written on ``topics["runInfo"]`` for a run that began a minute ago (whole seconds), and a
    listener started ``from_start_of_run``: (the listener, the run's start in ns)."""
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(broker, topics["runInfo"], [run_start(t0)])
    source = listener(broker, topics, **keys)
    source.start("from_start_of_run")
    return source, t0


def drain(
    source: KafkaEventListener,
    until: Callable[[list[Extracted]], bool] = lambda got: got[-1].status is RunStatus.EndRun,
    timeout: float = 60.0,
) -> list[Extracted]:
    """Extract every 20 ms until ``until(extracted so far)`` holds; fails after ``timeout`` seconds."""
    got: list[Extracted] = []

    def done() -> bool:
        got.append(source.extract())
        return until(got)

    def so_far() -> str:
        chunks = [(e.status.name, e.chunk.sizes[PULSE_DIM]) for e in got if e.chunk.sizes[PULSE_DIM]]
        return f"until() of drain to hold; (status, pulses) so far: {chunks}, health {source.health()}"

    poll_until(done, so_far, timeout, interval=0.02)
    return got


def events_total(got: Sequence[Extracted]) -> int:
    return sum(int(e.chunk.bins.size().sum().value) for e in got)


def until_events(count: int) -> Callable[[list[Extracted]], bool]:
    return lambda got: events_total(got) >= count


def flat(got: Sequence[Extracted]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All events in order: (event_id, event_time_offset µs, pulse time ns of each pulse)."""
    chunks = [e.chunk for e in got if e.chunk.sizes[PULSE_DIM]]
    if not chunks:
        return np.empty(0, np.int32), np.empty(0, np.float32), np.empty(0, np.int64)
    events = [chunk.bins.concat().value for chunk in chunks]
    ids = np.concatenate([table.coords["event_id"].values for table in events])
    tof = np.concatenate([table.coords["event_time_offset"].values for table in events])
    pulses = np.concatenate([chunk.coords["event_time_zero"].values.astype(np.int64) for chunk in chunks])
    return ids, tof, pulses


def run_start(start_ns: int, run: str = "1", job: str = "job", ids: tuple[int, int] | None = (0, 99)) -> bytes:
    spectrum_map = None
    if ids is not None:
        detectors = np.arange(ids[0], ids[1] + 1)
        spectrum_map = DetectorSpectrumMap(np.arange(1, detectors.size + 1), detectors, detectors.size)
    start_ms = start_ns // 10**6
    return serialise_pl72(
        job, "f.nxs", start_time=start_ms, run_name=run, instrument_name="TEST", detector_spectrum_map=spectrum_map
    )


def run_stop(stop_ns: int, run: str = "1", job: str = "job") -> bytes:
    return serialise_6s4t(job, run_name=run, stop_time=stop_ns // 10**6)


def pulses(times_ns: Sequence[int], per_pulse: int = 3, pixel: int = 5, message_id: int = 0) -> bytes:
    """One ev44 message: ``per_pulse`` events per pulse, all on ``pixel``, TOF 1000 ns, 2000 ns, ..."""
    times = np.asarray(times_ns, np.int64)
    n = times.size * per_pulse
    tof = np.tile(np.arange(1, per_pulse + 1) * 1000, times.size)
    return serialise_ev44(
        "bank", message_id, times, np.arange(times.size) * per_pulse, tof, np.full(n, pixel, np.int32)
    )


def pulse_times(got: Sequence[Extracted]) -> np.ndarray:
    return np.concatenate(
        [e.chunk.coords["event_time_zero"].values.astype(np.int64) for e in got] or [np.empty(0, np.int64)]
    )


def statuses(got: Sequence[Extracted]) -> list[tuple[str, int, bool, int]]:
    """(status, run number, data_reset, pulses) of every extraction that is not an empty Running/NoRun."""
    return [
        (e.status.name, e.run_number, e.data_reset, e.chunk.sizes[PULSE_DIM])
        for e in got
        if e.chunk.sizes[PULSE_DIM] or e.status not in (RunStatus.Running, RunStatus.NoRun) or e.data_reset
    ]


def scalar_log(chunk: sc.DataArray, name: str) -> sc.DataArray:
    return chunk.coords[name].value


ZONE_OFFSET = "2026-01-01T00:00:00-05:00"
"""event_time_zero offset of the synthetic SNS file (05:00 UTC)."""


def sns_file(path: Path, pulses: int = 20, seed: int = 7) -> dict[str, object]:
    """An SNS-layout file: two banks (µs/s units), 60 Hz, run 12345 of SNAP, a SampleTemp NXlog every 0.1 s
    from -0.05 s, and a per-pulse proton_charge log. Returns what was written: ``times`` (s), ``events`` (per
    pulse: merged rows of (event_id, tof µs) of both banks), ``temperature`` ((s, K) rows), ``charge`` (pC)."""
    import h5py

    rng = np.random.default_rng(seed)
    times = np.arange(pulses) / 60.0
    events = [[] for _ in range(pulses)]
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("run_number", data=b"12345")
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        instrument.create_dataset("name", data=b"SNAP")
        for bank, first_pixel in (("bank1_events", 0), ("bank2_events", 1000)):
            counts = rng.integers(0, 50, pulses)
            ids = rng.integers(first_pixel, first_pixel + 1000, counts.sum())
            tof = np.round(rng.uniform(0, 16_000, counts.sum()), 3).astype(np.float32)
            group = entry.create_group(bank)
            group.attrs["NX_class"] = "NXevent_data"
            group.create_dataset("event_id", data=ids.astype(np.uint32))
            group.create_dataset("event_time_offset", data=tof).attrs["units"] = "microsecond"
            etz = group.create_dataset("event_time_zero", data=times)
            etz.attrs["units"], etz.attrs["offset"] = "second", ZONE_OFFSET
            group.create_dataset("event_index", data=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.uint64))
            for pulse, (b, e) in enumerate(zip(np.cumsum(counts) - counts, np.cumsum(counts), strict=True)):
                events[pulse] += list(zip(ids[b:e].tolist(), tof[b:e].tolist(), strict=True))
        logs = entry.create_group("DASlogs")
        logs.attrs["NX_class"] = "NXcollection"
        stamps = np.arange(-0.05, times[-1], 0.1)
        temperature = 300.0 + np.arange(stamps.size)
        charge = rng.uniform(1e6, 5e6, pulses).round()
        for name, when, values, unit in (
            ("SampleTemp", stamps, temperature, "K"),
            ("proton_charge", times, charge, "picoCoulomb"),
        ):
            log = logs.create_group(name)
            log.attrs["NX_class"] = "NXlog"
            stamp = log.create_dataset("time", data=when)
            stamp.attrs["units"], stamp.attrs["start"] = "second", ZONE_OFFSET
            log.create_dataset("value", data=values).attrs["units"] = unit
    return {
        "times": times,
        "events": [sorted(rows) for rows in events],
        "temperature": np.stack([stamps, temperature], axis=1),
        "charge": charge,
    }


def read_messages(broker: Broker, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every message of a topic's partition 0, from the beginning to its end (partition EOF); fails after
    ``timeout`` seconds."""
    consumer = Consumer(
        {"bootstrap.servers": broker.address, "group.id": "read", "enable.partition.eof": True, "fetch.wait.max.ms": 50}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        messages: list[Message] = []

        def at_end() -> bool:
            message = consumer.poll(0.1)  # waits up to 100 ms itself
            if message is None:
                return False
            if message.error():
                return True
            messages.append(message)
            return False

        poll_until(at_end, lambda: f"the end of partition 0 of {topic} ({len(messages)} messages read)", timeout, 0)
        return messages
    finally:
        consumer.close()


def read_topic(broker: Broker, topic: str, timeout: float = 30.0) -> list[bytes]:
    """The values of :func:`read_messages`."""
    return [message.value() for message in read_messages(broker, topic, timeout)]
