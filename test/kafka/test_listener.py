"""KafkaEventListener in process against the real broker: start positions, runs, logs, monitors, bounds, faults."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from streaming_data_types import serialise_f144, serialise_pl72

from conftest import SANS2D_EVENTS, Sans2dReference, poll_until
from livereduce.engines.scipp.chunk import PULSE_DIM
from livereduce.engines.scipp.listeners import kafka as kafka_module
from livereduce.engines.scipp.listeners.base import RunStatus
from livereduce.errors import ConfigError, SourceError
from livereduce.protocols.kafka.f142 import serialise_f142
from livereduce.protocols.kafka.times import datetime_to_ns, iso

from .conftest import Broker, free_port
from .helpers import (
    SECOND,
    drain,
    events_total,
    flat,
    listener,
    pulse_times,
    pulses,
    replay,
    run_start,
    run_stop,
    send,
    statuses,
    until_events,
)

TOF_EDGES = np.linspace(0.0, 100_000.0, 1001)


def file_offsets(reference: Sans2dReference) -> np.ndarray:
    """Pulse times of the file relative to its first pulse (ns)."""
    times = reference.pulse_times.astype(np.int64)
    return times - times[0]


# --- a whole run ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schema", ["ev44", "ev42"])
def test_whole_run_equals_the_file(kafka_broker: Broker, kafka_topics, sans2d: Path, sans2d_reference, schema: str):
    topics = kafka_topics()
    start = datetime(2026, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)
    replay(kafka_broker, topics, "--speed=0", f"--schema={schema}", "--run-number=4711",
           f"--start-time={start.isoformat()}", file=str(sans2d))  # fmt: skip
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    try:
        got = drain(source)
    finally:
        source.disconnect()

    ids, tof, times = flat(got)
    assert ids.size == SANS2D_EVENTS
    np.testing.assert_array_equal(ids, sans2d_reference.event_id)
    np.testing.assert_allclose(tof, sans2d_reference.event_time_offset, atol=1e-3, rtol=1e-6)  # ns resolution
    expected_tof = np.histogram(sans2d_reference.event_time_offset, TOF_EDGES)[0]
    np.testing.assert_array_equal(np.histogram(tof, TOF_EDGES)[0], expected_tof)
    np.testing.assert_array_equal(times - times[0], file_offsets(sans2d_reference))
    assert times[0] == datetime_to_ns(start)
    assert {e.run_number for e in got if e.chunk.sizes[PULSE_DIM]} == {4711}
    assert got[-1].status is RunStatus.EndRun
    before_the_run = [e.status for e in got[:-1] if not e.run_number]
    in_the_run = [e.status for e in got[:-1] if e.run_number]
    assert set(before_the_run) <= {RunStatus.NoRun}
    assert set(in_the_run) == {RunStatus.Running}
    assert [e.status for e in got[:-1]] == before_the_run + in_the_run
    first = next(i for i, e in enumerate(got) if e.run_number)
    assert [e.data_reset for e in got] == [i == first and first > 0 for i in range(len(got))]  # replaces NoRun chunks
    pixels = (int(sans2d_reference.event_id.min()), int(sans2d_reference.event_id.max()))
    assert {e.event_id_range for e in got if e.run_number} == {pixels}
    counters = source.health().counters
    assert counters["events"] == SANS2D_EVENTS
    assert counters["run_starts"] == 1
    assert counters["run_stops"] == 1
    assert not [key for key in counters if key.startswith("skipped")]
    chunk = next(e.chunk for e in got if e.chunk.sizes[PULSE_DIM])
    assert chunk.coords["run_start"].value == np.datetime64(start.replace(tzinfo=None), "ns")
    assert chunk.coords["instrument_name"].value == "SANS2D"


def test_from_start_of_run_started_mid_run_gets_the_whole_run(kafka_broker: Broker, kafka_topics, sans2d: Path):
    topics = kafka_topics()
    producer = threading.Thread(target=replay, args=(kafka_broker, topics, "--speed=10"), kwargs={"file": str(sans2d)})
    producer.start()
    try:
        consumer = Consumer({"bootstrap.servers": kafka_broker.address, "group.id": "probe"})
        events = TopicPartition(topics["events"], 0)

        def written() -> int:
            return consumer.get_watermark_offsets(events, timeout=10)[1]

        poll_until(lambda: written() >= 50, lambda: f"the replay to start: {written()} of 50 messages", timeout=30)
        consumer.close()
        source = listener(kafka_broker, topics)
        source.start("from_start_of_run")
        try:
            got = drain(source)
        finally:
            source.disconnect()
    finally:
        producer.join()

    assert events_total(got) == SANS2D_EVENTS
    assert got[-1].status is RunStatus.EndRun


def test_a_start_time_delivers_exactly_the_pulses_from_it(
    kafka_broker: Broker, kafka_topics, sans2d: Path, sans2d_reference: Sans2dReference
):
    topics = kafka_topics()
    start = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    replay(kafka_broker, topics, "--speed=0", f"--start-time={start.isoformat()}", file=str(sans2d))
    first = 123
    pulse_ns = datetime_to_ns(start) + int(file_offsets(sans2d_reference)[first])
    when = datetime.fromtimestamp(pulse_ns // 10**9, UTC).replace(microsecond=(pulse_ns % 10**9) // 1000)
    assert pulse_ns - 1000 < datetime_to_ns(when) <= pulse_ns  # a datetime has µs: just not after the pulse
    source = listener(kafka_broker, topics)
    source.start(when)
    try:
        got = drain(source)
    finally:
        source.disconnect()

    ids, _, times = flat(got)
    expected = sans2d_reference.pulses(first, 300)
    np.testing.assert_array_equal(ids, sans2d_reference.event_id[expected])
    assert times.size == 300 - first
    assert source.health().counters["pulses_before_start"] == first


def test_now_delivers_only_what_follows(kafka_broker: Broker, kafka_topics, sans2d: Path):
    topics = kafka_topics()
    replay(kafka_broker, topics, "--speed=0", "--run-number=1", file=str(sans2d))  # ended before the start
    source = listener(kafka_broker, topics)
    source.start("now")
    try:
        started = time.time_ns()
        drain(source, until=lambda got: source.health().state.startswith("waiting for a run start"))
        later = datetime.fromtimestamp((started + SECOND) / 1e9, UTC).isoformat()
        replay(kafka_broker, topics, "--speed=0", "--run-number=2", f"--start-time={later}", file=str(sans2d))
        got = drain(source, until=until_events(SANS2D_EVENTS))
    finally:
        source.disconnect()

    assert events_total(got) == SANS2D_EVENTS  # run 2 complete: it would have seen run 1's the same way
    assert {e.run_number for e in got if e.chunk.sizes[PULSE_DIM]} == {2}
    # run 1 ended before the start: no transition
    assert not [e for e in got if e.status in (RunStatus.EndRun, RunStatus.BeginRun)]


# --- runs -------------------------------------------------------------------------------------------------------
def test_two_runs_back_to_back(kafka_broker: Broker, kafka_topics, sans2d: Path):
    topics = kafka_topics()
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    try:
        drain(source, until=lambda got: source.health().state.startswith("waiting for a run start"))
        replay(kafka_broker, topics, "--speed=0", "--loops=2", "--run-number=7", file=str(sans2d))
        got = drain(source, until=lambda got: [e.status for e in got].count(RunStatus.EndRun) == 2)
    finally:
        source.disconnect()

    seen = statuses(got)
    ends = [i for i, (status, *_) in enumerate(seen) if status == "EndRun"]
    assert [seen[i][1] for i in ends] == [7, 8]
    first_of_run_8 = next(s for s in seen[ends[0] + 1 :] if s[1] == 8)
    assert first_of_run_8[1:3] == (8, True)  # data reset with the new run's first chunk
    assert [s[1] for s in seen if s[2]] == [7, 8]  # and with no other
    per_run = {run: sum(e.chunk.bins.size().sum().value for e in got if e.run_number == run) for run in (7, 8)}
    assert per_run == {7: SANS2D_EVENTS, 8: SANS2D_EVENTS}


def test_a_consumer_that_lags_by_several_runs_delivers_every_event_of_every_run(
    kafka_broker: Broker, kafka_topics, sans2d: Path
):
    """Issue 15: three runs written before the listener starts at the first one's start, with a 1 MiB buffer. Its
    run-info topic is read at once, three runs ahead of the events (which come 1 MiB per extract); the old router
    ended each run at the next run start and dropped the rest of its events as late."""
    topics = kafka_topics()
    start = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    replay(kafka_broker, topics, "--speed=0", "--loops=3", "--run-number=7", f"--start-time={start.isoformat()}",
           file=str(sans2d))  # fmt: skip
    source = listener(kafka_broker, topics, source_buffer_mb=1)
    source.start(start)
    ahead = []  # chunks of run 7 taken while the listener had read run 9's start already
    try:

        def ended_run_9(got: list) -> bool:
            if got[-1].run_number == 7 and got[-1].chunk.sizes[PULSE_DIM]:
                ahead.append(source.health().state.startswith("reading run 9"))
            return got[-1].status is RunStatus.EndRun and got[-1].run_number == 9

        got = drain(source, until=ended_run_9)
        lag = poll_until(lambda: source.health().offset_lag, "the offset lags", timeout=10)
    finally:
        source.disconnect()

    assert any(ahead)  # the run-info topic was read runs ahead of the events
    per_run = {run: sum(e.chunk.bins.size().sum().value for e in got if e.run_number == run) for run in (7, 8, 9)}
    assert per_run == {7: SANS2D_EVENTS, 8: SANS2D_EVENTS, 9: SANS2D_EVENTS}
    assert [(s[0], s[1]) for s in statuses(got) if s[0] == "EndRun"] == [("EndRun", 7), ("EndRun", 8), ("EndRun", 9)]
    assert [s[1] for s in statuses(got) if s[2]] == [8, 9]  # the first chunk of each later run starts afresh
    runs = [e.run_number for e in got if e.chunk.sizes[PULSE_DIM]]
    assert runs == sorted(runs)  # each run in its own chunks, in order
    counters = source.health().counters
    assert not any(e.dropped for e in got)
    assert counters["events_dropped"] == counters.get("events_late", 0) == counters.get("events_outside_run", 0) == 0
    assert set(lag) == {f"{topic}[0]" for topic in topics.values()}
    assert counters["offset_lag"] == sum(source.health().offset_lag.values())


def test_two_event_partitions_read_runs_behind_their_run_starts_deliver_every_run_whole(
    kafka_broker: Broker, kafka_topics, caplog: pytest.LogCaptureFixture
):
    """Two event partitions, three runs written before the listener starts, 1 MiB of buffer for 7 MB of events: a
    partition past the stop the oldest run waits for is paused (and sought back to where it is) until the other has
    passed it too; nothing is lost or read twice across the pauses."""
    caplog.set_level(logging.DEBUG, "livereduce.KafkaEventListener")
    topics = {**kafka_topics(("runInfo", "sampleEnv")), **kafka_topics(("events",), partitions=2)}
    t0 = (time.time_ns() // SECOND - 120) * SECOND
    starts = [run_start(t0 + 10 * n * SECOND, run=str(n + 1), job=f"j{n}") for n in range(3)]
    send(kafka_broker, topics["runInfo"], [*starts, run_stop(t0 + 30 * SECOND, run="3", job="j2")])
    step = SECOND // 100
    for partition in (0, 1):  # 10 pulses of 300 events per message, partition 1 5 ms after partition 0
        times = [t0 + partition * step // 2 + i * step for i in range(3000)]
        messages = [pulses(times[i : i + 10], per_pulse=300, message_id=i // 10) for i in range(0, 3000, 10)]
        send(kafka_broker, topics["events"], messages, partition=partition)
    source = listener(kafka_broker, topics, source_buffer_mb=1)
    source.start(datetime.fromtimestamp(t0 / SECOND, UTC))
    try:
        got = drain(source, until=lambda got: got[-1].status is RunStatus.EndRun and got[-1].run_number == 3)
    finally:
        source.disconnect()

    per_run = {run: sum(e.chunk.bins.size().sum().value for e in got if e.run_number == run) for run in (1, 2, 3)}
    assert per_run == {1: 600_000, 2: 600_000, 3: 600_000}  # 1000 pulses of 300 events per partition and run
    ends = [(status, run) for status, run, *_ in statuses(got) if status != "Running"]
    assert ends == [("BeginRun", 1), ("BeginRun", 2), ("EndRun", 3)]  # runs 1 and 2 ended by the next start
    for run in (1, 2, 3):
        times = pulse_times([e for e in got if e.run_number == run])
        assert np.unique(times).size == times.size == 2000
        assert times.min() >= t0 + 10 * (run - 1) * SECOND
        assert times.max() < t0 + 10 * run * SECOND
    counters = source.health().counters
    assert counters["events_dropped"] == counters.get("events_late", 0) == counters.get("events_outside_run", 0) == 0
    assert counters["back_pressure_pauses"] >= 1
    assert any("partitions paused [('" in record.getMessage() for record in caplog.records)
    assert counters.get("partition_resets", 0) == counters.get("offset_gaps", 0) == 0  # resumed where it was


def test_a_run_start_while_a_run_is_open_is_begin_run(kafka_broker: Broker, kafka_topics):
    topics = kafka_topics()
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["runInfo"], [run_start(t0, run="1", job="a")])
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    try:
        send(kafka_broker, topics["events"], [pulses([t0 + i * 10**8 for i in range(10)])])  # run 1: 0.0 .. 0.9 s
        first = drain(source, until=until_events(30))
        send(kafka_broker, topics["runInfo"], [run_start(t0 + 2 * SECOND, run="2", job="b")])
        send(kafka_broker, topics["events"], [pulses([t0 + SECOND + i * 10**8 for i in range(20)], message_id=1)])
        got = first + drain(source, until=lambda got: events_total(got) >= 60)
    finally:
        source.disconnect()

    seen = statuses(got)
    begin = [i for i, s in enumerate(seen) if s[0] == "BeginRun"]
    assert len(begin) == 1
    assert seen[begin[0]][1] == 1
    run_1 = np.concatenate([pulse_times([e]) for e in got if e.run_number == 1])
    run_2 = np.concatenate([pulse_times([e]) for e in got if e.run_number == 2])
    assert run_1.size == 20  # 1.0 .. 1.9 s belong to run 1 as well
    assert run_1.max() < t0 + 2 * SECOND
    assert run_2.size == 10
    assert run_2.min() >= t0 + 2 * SECOND
    assert next(s for s in seen[begin[0] + 1 :] if s[1] == 2)[1:3] == (2, True)
    # the first chunk of run 2; run 1's is the first chunk handed out (start() waits until the run is located)
    assert [s[1] for s in seen if s[2]] == [2]


def test_run_stop_waits_for_every_partition(kafka_broker: Broker, kafka_topics):
    """Two event partitions: the run ends once both have passed the stop time (one by data, one at its end)."""
    topics = kafka_topics(partitions=2)
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["runInfo"], [run_start(t0)])
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    try:
        send(kafka_broker, topics["events"], [pulses([t0 + i * 10**8 for i in range(5)])], partition=0)
        send(kafka_broker, topics["events"], [pulses([t0 + 10**7 + i * 10**8 for i in range(5)])], partition=1)
        send(kafka_broker, topics["runInfo"], [run_stop(t0 + SECOND)])
        send(kafka_broker, topics["events"], [pulses([t0 + 2 * SECOND], message_id=1)], partition=0)  # passes the stop
        got = drain(source)
    finally:
        source.disconnect()

    assert events_total(got) == 30
    assert got[-1].status is RunStatus.EndRun
    assert pulse_times(got).max() < t0 + SECOND
    assert source.health().counters.get("events_outside_run", 0) == 0  # the pulse after the stop is held for a next run


def test_a_stop_that_matches_no_run_is_ignored_and_counted(kafka_broker: Broker, kafka_topics):
    topics = kafka_topics()
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["runInfo"], [run_start(t0, job="mine")])
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    try:
        send(kafka_broker, topics["runInfo"], [run_stop(t0 + SECOND, job="other")])
        send(kafka_broker, topics["events"], [pulses([t0 + 2 * SECOND])])
        got = drain(source, until=until_events(3))
    finally:
        source.disconnect()

    assert source.health().counters["skipped_unmatched_stop"] == 1
    assert all(e.status is not RunStatus.EndRun for e in got)


# --- logs, monitors, pixel range -------------------------------------------------------------------------------------
def test_f144_and_f142_logs_become_time_series_per_source(kafka_broker: Broker, kafka_topics):
    topics = kafka_topics()
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["sampleEnv"], [serialise_f144("temperature", 280.0, t0 - 5 * SECOND)])  # in force
    send(kafka_broker, topics["runInfo"], [run_start(t0)])
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    try:
        send(kafka_broker, topics["sampleEnv"], [
            serialise_f144("temperature", 290.5, t0 + SECOND),
            serialise_f144("temperature", 300.0, t0 + 2 * SECOND),
            serialise_f144("motor", np.array([1.0, 2.0, 3.0]), t0 + SECOND),
            serialise_f142(7, "counter", t0 + SECOND),
            serialise_f142("open", "shutter", t0 + SECOND),
        ])  # fmt: skip
        send(kafka_broker, topics["events"], [pulses([t0 + 3 * SECOND])])
        got = drain(source, until=lambda got: source.health().counters.get("logs", 0) >= 5 and events_total(got) >= 3)
        got += [source.extract()]
    finally:
        source.disconnect()

    logs: dict[str, list] = {}
    for e in got:
        for name in ("temperature", "motor", "counter", "shutter"):
            if name in e.chunk.coords:
                logs.setdefault(name, []).append(e.chunk.coords[name].value)
    temperature = logs["temperature"][0]
    assert temperature.dims == ("time",)
    np.testing.assert_array_equal(temperature.values, [280.0, 290.5, 300.0])
    assert temperature.coords["time"].values[0] == np.datetime64(t0 - 5 * SECOND, "ns")
    assert logs["motor"][0].values[0].values.tolist() == [1.0, 2.0, 3.0]  # an array per time: one bin of values
    assert logs["counter"][0].values.tolist() == [7]
    assert list(logs["shutter"][0].values) == ["open"]


def test_monitor_events_in_the_metadata(kafka_broker: Broker, kafka_topics):
    from streaming_data_types import serialise_ev44

    topics = kafka_topics(("events", "runInfo", "monitors"))
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["runInfo"], [run_start(t0)])
    send(kafka_broker, topics["monitors"], [serialise_ev44("monitor_1", 0, [t0 + 10], [0], [5000, 6000], [])])
    send(kafka_broker, topics["events"], [pulses([t0 + 10])])
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    try:
        got = drain(source, until=lambda got: any("monitors" in e.chunk.coords for e in got))
    finally:
        source.disconnect()

    monitor = next(e.chunk.coords["monitors"].value for e in got if "monitors" in e.chunk.coords)["monitor_1"]
    np.testing.assert_array_equal(monitor.coords["event_time_offset"].values, [5.0, 6.0])
    assert str(monitor.coords["event_time_offset"].unit) == "µs"


def test_event_ids_outside_the_run_are_dropped_and_counted(kafka_broker: Broker, kafka_topics):
    from streaming_data_types import serialise_ev42, serialise_ev44

    topics = kafka_topics()
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["runInfo"], [run_start(t0, ids=(10, 19))])
    send(kafka_broker, topics["events"], [
        serialise_ev44("bank", 0, [t0 + 1], [0], [1, 2, 3, 4], [10, 25, -3, 19]),
        serialise_ev42("old", 0, t0 + 2, np.array([5, 6, 7], np.uint32), np.array([15, 2**31 + 5, 2**32 - 1])),
    ])  # fmt: skip
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    try:
        got = drain(source, until=until_events(3))
    finally:
        source.disconnect()

    ids, _, _ = flat(got)
    np.testing.assert_array_equal(ids, [10, 19, 15])
    dropped = {key: value for e in got for key, value in e.dropped.items()}
    # ev42's detector ids are uint32: above int32 they are dropped by name (no Kafka schema has ids of 2**32 on)
    assert dropped == {"event_id negative": 1, "event_id outside 10..19": 1, "event_id above 2147483647": 2}
    assert {e.event_id_range for e in got if e.run_number} == {(10, 19)}


# --- bounds and faults ----------------------------------------------------------------------------------------------
def test_a_full_buffer_pauses_reading_and_loses_nothing(kafka_broker: Broker, kafka_topics, sans2d: Path):
    topics = kafka_topics()
    replay(kafka_broker, topics, "--speed=0", file=str(sans2d))  # 2.9 MB of messages
    source = listener(kafka_broker, topics, source_buffer_mb=1)
    source.start("from_start_of_run")
    try:
        poll_until(lambda: source.health().counters.get("back_pressure_pauses", 0), "the buffer to fill", timeout=30)
        got = drain(source)
    finally:
        source.disconnect()

    assert events_total(got) == SANS2D_EVENTS
    assert source.health().counters["back_pressure_pauses"] >= 1


def test_unreachable_broker_and_missing_topics_are_source_errors(
    kafka_broker: Broker, kafka_topics, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(kafka_module, "CONNECT_TIMEOUT_S", 1.0)
    nowhere = Broker(kafka_broker.binary, free_port(), kafka_broker.log_path)
    with pytest.raises(SourceError, match=f"Kafka broker {nowhere.address} unreachable") as unreachable:
        listener(nowhere, {"events": "x", "runInfo": "y"})
    with pytest.raises(SourceError, match=r"Kafka topic 'nosuch_runInfo' \(runInfo\) does not exist") as missing:
        listener(kafka_broker, {"events": kafka_topics(("events",))["events"], "runInfo": "nosuch_runInfo"})
    assert unreachable.value.recoverable  # the daemon retries with back-off: the broker or the topic may come
    assert missing.value.recoverable
    with pytest.raises(ConfigError, match="key 'kafka': librdkafka rejects the consumer settings"):
        listener(kafka_broker, {"events": "x", "runInfo": "y"}, kafka={"no.such.setting": 1})


def test_a_failed_consumer_thread_is_reported_by_extract(
    kafka_broker: Broker, kafka_topics, monkeypatch: pytest.MonkeyPatch
):
    topics = kafka_topics()
    source = listener(kafka_broker, topics)
    calls = []

    def broken_step() -> None:
        calls.append(1)
        raise RuntimeError("bug in the consumer")

    monkeypatch.setattr(source, "_step", broken_step)

    def stepped() -> bool:
        if calls:
            return True
        source.extract()  # fine until the thread has failed
        return False

    source.start("now")
    try:
        poll_until(stepped, lambda: f"the consumer thread's first step; health {source.health()}", 30, 0.02)
        poll_until(lambda: not source.health().healthy, lambda: f"an unhealthy source: {source.health()}", 10, 0.02)
        with pytest.raises(
            SourceError, match=r"KafkaEventListener: reading .* failed: RuntimeError: bug in the consumer"
        ):
            source.extract()
    finally:
        source.disconnect()
    health = source.health()
    assert health.state == f"reader failed: RuntimeError: bug in the consumer ({source.address})"
    assert health.counters["internal_errors"] == 1


def test_broker_restart_is_reported_and_survived(private_broker: Broker, kafka_topics, sans2d: Path):
    topics = kafka_topics(broker=private_broker)
    replay(private_broker, topics, "--speed=0", "--run-number=1", file=str(sans2d))
    source = listener(private_broker, topics)
    source.start("from_start_of_run")
    try:
        got = drain(source)
        private_broker.stop()
        drain(source, until=lambda _: source.health().state.startswith("broker unreachable since"), timeout=60)
        assert not source.health().healthy
        private_broker.start()  # memory storage: the restarted broker has no topics and no data
        private_broker.create_topics(topics.values())
        replay(private_broker, topics, "--speed=0", "--run-number=2", file=str(sans2d))
        got += drain(source, timeout=90)  # to run 2's EndRun
    finally:
        source.disconnect()

    assert source.health().healthy
    per_run = {run: sum(e.chunk.bins.size().sum().value for e in got if e.run_number == run) for run in (1, 2)}
    assert per_run == {1: SANS2D_EVENTS, 2: SANS2D_EVENTS}
    # the first chunk of run 2 starts a new accumulation; it may come before run 2's pulses, which wait until
    # runInfo has been read again after the lost connection
    assert next(e for e in got if e.run_number == 2).data_reset
    assert sum(e.data_reset for e in got if e.run_number == 2) == 1
    assert source.health().counters["partition_resets"] >= 2  # events and runInfo were read again from offset 0


def test_health_names_the_state(kafka_broker: Broker, kafka_topics):
    topics = kafka_topics(("events", "runInfo"))
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["runInfo"], [run_start(t0, run="12")])
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    try:
        drain(source, until=lambda _: source.health().state == f"reading run 12 from {kafka_broker.address}")
        send(kafka_broker, topics["runInfo"], [run_stop(t0 + 3600 * SECOND, run="12")])  # an hour ahead
        stopping = f"reading run 12 up to its stop at {iso(t0 + 3600 * SECOND)} ({kafka_broker.address})"
        drain(source, until=lambda _: source.health().state == stopping)
        send(kafka_broker, topics["events"], [pulses([t0 + 3601 * SECOND])])  # data passes the stop
        drain(source, until=lambda got: got[-1].status is RunStatus.EndRun)
        assert source.health().state == f"waiting for a run start on {topics['runInfo']} ({kafka_broker.address})"
    finally:
        source.disconnect()
    assert iso(t0).endswith("Z")


def test_a_message_too_large_and_a_message_id_gap_are_counted_not_fatal(kafka_broker: Broker, kafka_topics):
    topics = kafka_topics()
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["runInfo"], [run_start(t0)])
    huge = pulses([t0 + 1], per_pulse=300_000)  # 3.6 MB: above the 1 MiB limit of source_buffer_mb 1
    send(kafka_broker, topics["events"], [huge, pulses([t0 + 2], message_id=1), pulses([t0 + 3], message_id=5)])
    source = listener(kafka_broker, topics, source_buffer_mb=1)
    source.start("from_start_of_run")
    try:
        got = drain(source, until=until_events(6))  # the messages after it still arrive
    finally:
        source.disconnect()

    assert len(huge) > 2**20
    assert events_total(got) == 6
    counters = source.health().counters
    assert counters["skipped_too_large"] == 1
    assert counters["message_id_gaps"] == 1  # 1 -> 5: messages of that source were lost upstream
    assert source.health().healthy


def test_a_broker_restarted_empty_and_refilled_during_a_run_is_read_again(private_broker: Broker, kafka_topics):
    """Defect 8: tansu restarts at once (memory storage: empty) during run 1, the topics are re-created and run 2
    written before the listener notices: the lost connection alone makes it verify its partitions, so run 2 is
    a new run (before: run 2's stop matched no open run and its events were added to run 1)."""
    topics = kafka_topics(broker=private_broker)
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(private_broker, topics["runInfo"], [run_start(t0, run="1", job="a")])
    send(private_broker, topics["events"], [pulses([t0 + i * 10**8 for i in range(10)])])
    source = listener(private_broker, topics)
    source.start("from_start_of_run")
    try:
        got = drain(source, until=until_events(30))
        private_broker.stop()
        private_broker.start()
        private_broker.create_topics(topics.values())
        send(private_broker, topics["runInfo"], [run_start(t0 + 10 * SECOND, run="2", job="b"),
                                                 run_stop(t0 + 12 * SECOND, run="2", job="b")])  # fmt: skip
        send(private_broker, topics["events"], [
            pulses([t0 + 10 * SECOND + i * 10**8 for i in range(5 * k, 5 * k + 5)], pixel=7, message_id=k)
            for k in range(4)
        ])  # fmt: skip
        got += drain(source, until=lambda got: got[-1].status is RunStatus.EndRun)
    finally:
        source.disconnect()

    seen = [(status, run) for status, run, _, _ in statuses(got) if status in ("BeginRun", "EndRun")]
    assert seen == [("BeginRun", 1), ("EndRun", 2)]
    per_run = {run: sum(e.chunk.bins.size().sum().value for e in got if e.run_number == run) for run in (1, 2)}
    assert per_run == {1: 30, 2: 60}
    ids, _, times = flat([e for e in got if e.run_number == 2])
    assert set(ids.tolist()) == {7}
    np.testing.assert_array_equal(times, [t0 + 10 * SECOND + i * 10**8 for i in range(20)])
    # the first chunk of run 2 starts a new accumulation; it may come before run 2's pulses, which wait until
    # runInfo has been read again after the lost connection
    assert next(e for e in got if e.run_number == 2).data_reset
    assert sum(e.data_reset for e in got if e.run_number == 2) == 1


def test_run_times_far_from_the_record_time_are_refused_and_counted(kafka_broker: Broker, kafka_topics):
    """Defect 7: a pl72 start_time of 2**64-1 (before: OverflowError in extract()) and a run start in the year 2200
    (before: accepted, and every later run ignored as stale) are skipped; run 2 after them is read as usual."""
    topics = kafka_topics()
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["runInfo"], [run_start(t0, run="1", job="a")])
    send(kafka_broker, topics["events"], [pulses([t0 + SECOND])])
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")
    year_2200 = datetime(2200, 1, 1, tzinfo=UTC)
    try:
        got = drain(source, until=until_events(3))
        send(kafka_broker, topics["runInfo"], [
            serialise_pl72("x", "f.nxs", start_time=2**64 - 1, run_name="3", instrument_name="TEST"),
            run_start(datetime_to_ns(year_2200), run="4", job="c"),
            run_stop(datetime_to_ns(year_2200), run="1", job="a"),
            run_start(t0 + 2 * SECOND, run="2", job="b"),
        ])  # fmt: skip
        send(kafka_broker, topics["events"], [pulses([t0 + 3 * SECOND], message_id=1)])
        got += drain(source, until=lambda got: events_total(got) >= 3 and got[-1].run_number == 2)
    finally:
        source.disconnect()

    assert [(status, run) for status, run, *_ in statuses(got) if status != "Running"] == [("BeginRun", 1)]
    assert [e.run_number for e in got if e.chunk.sizes[PULSE_DIM]] == [1, 2]
    assert source.health().counters["skipped_implausible_time"] == 3


def test_disconnect_ends_the_search_for_the_run_promptly(private_broker: Broker, kafka_topics):
    """Defect 6: the consumer thread asks the broker for the run in slices of SLICE_S, so a stop while it locates
    the run ends within half a second, even when the broker holds the connection and never answers (tansu
    stopped by SIGSTOP); before, a look-up waited its 10 s."""
    topics = kafka_topics(broker=private_broker)
    source = listener(private_broker, topics)
    os.kill(private_broker.process.pid, signal.SIGSTOP)
    try:
        source.start("from_start_of_run")
        assert source.health().state.startswith("locating the run on")
        began = time.monotonic()
        source.disconnect()
        assert time.monotonic() - began < 0.5
    finally:
        os.kill(private_broker.process.pid, signal.SIGCONT)
