"""ESS streams as they are (issue 16), against the real broker: several topics per role, a stream without run
information, log values read before their run start."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from streaming_data_types import serialise_6s4t, serialise_ev44, serialise_f144

from livereduce.engines.scipp.listeners.base import RunStatus

from .conftest import Broker
from .helpers import (
    SECOND,
    drain,
    events_total,
    flat,
    listener,
    listener_in_a_run,
    run_start,
    run_stop,
    send,
    until_events,
)


def bank(times_ns: list[int], pixel: int, per_pulse: int = 2, message_id: int = 0) -> bytes:
    """One ev44 of a detector bank: ``per_pulse`` events per pulse on ``pixel``, TOF 1000 ns, 2000 ns, ..."""
    times = np.asarray(times_ns, np.int64)
    tof = np.tile(np.arange(1, per_pulse + 1) * 1000, times.size)
    return serialise_ev44(
        f"bank{pixel}",
        message_id,
        times,
        np.arange(times.size) * per_pulse,
        tof,
        np.full(times.size * per_pulse, pixel, np.int32),
    )


def log_values(got: list, name: str) -> list[float]:
    return [v for e in got if name in e.chunk.coords for v in e.chunk.coords[name].value.values.tolist()]


def test_several_topics_per_role_are_one_stream_and_pulses_of_the_same_time_one_pulse(
    kafka_broker: Broker, kafka_topics
):
    banks = [kafka_topics(("events",))["events"] for _ in range(3)]
    logs = [kafka_topics(("sampleEnv",))["sampleEnv"] for _ in range(2)]
    run_info = kafka_topics(("runInfo",))["runInfo"]
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    pulse_times = [t0 + i * SECOND // 14 for i in range(1, 8)]
    send(kafka_broker, run_info, [run_start(t0)])
    source = listener(kafka_broker, {"events": banks, "runInfo": run_info, "sampleEnv": logs})
    source.start("from_start_of_run")
    try:
        for pixel, topic in enumerate(banks):  # every bank sees every pulse, as LOKI's nine banks do
            send(kafka_broker, topic, [bank(pulse_times, pixel=10 + pixel)])
        send(kafka_broker, logs[0], [serialise_f144("motion", 1.5, t0 + SECOND // 10)])
        send(kafka_broker, logs[1], [serialise_f144("chopper", 14.0, t0 + SECOND // 5)])
        send(kafka_broker, run_info, [run_stop(t0 + SECOND)])
        got = drain(source)
    finally:
        source.disconnect()
    ids, _, pulses = flat(got)
    assert np.bincount(ids, minlength=13)[10:].tolist() == [14, 14, 14]  # every event of the three banks
    assert sorted(pulses.tolist()) == pulse_times  # 7 pulses, not 21
    assert log_values(got, "motion") == [1.5]
    assert log_values(got, "chopper") == [14.0]
    assert got[-1].status is RunStatus.EndRun


def test_log_values_written_before_their_run_start_is_read_reach_the_run(kafka_broker: Broker, kafka_topics):
    topics = kafka_topics()
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    source = listener(kafka_broker, topics)
    source.start("from_start_of_run")  # no run start yet: it waits for one, reading the other topics meanwhile
    try:
        send(kafka_broker, topics["sampleEnv"], [
            serialise_f144("temperature", 290.5, t0 + SECOND),
            serialise_f144("temperature", 300.0, t0 + 2 * SECOND),
        ])  # fmt: skip
        drain(source, until=lambda got: source.health().counters.get("logs", 0) >= 2)  # read before the pl72
        send(kafka_broker, topics["runInfo"], [run_start(t0)])
        send(kafka_broker, topics["events"], [bank([t0 + 3 * SECOND], pixel=5)])
        send(kafka_broker, topics["runInfo"], [run_stop(t0 + 4 * SECOND)])
        got = drain(source)
    finally:
        source.disconnect()
    assert events_total(got) == 2
    assert log_values(got, "temperature") == [290.5, 300.0]  # (were lost: only pulses were held for a run start)


@pytest.mark.parametrize("position", ["now", "a start time"])
def test_a_stream_without_run_information_is_one_open_ended_run_number_0(
    kafka_broker: Broker, kafka_topics, position: str
):
    topics = kafka_topics(("events", "sampleEnv"))
    t0 = time.time_ns()
    send(kafka_broker, topics["events"], [bank([t0 - 30 * SECOND], pixel=3)])  # before the start: not delivered
    start = "now" if position == "now" else datetime.fromtimestamp((t0 - SECOND) / 1e9, UTC)
    source = listener(kafka_broker, {**topics, "runInfo": None}, start=start if start == "now" else start.isoformat())
    source.start(start)
    t1 = time.time_ns()  # after the start position, whichever it is
    try:
        send(kafka_broker, topics["events"], [bank([t1 + i * SECOND // 14 for i in range(1, 5)], pixel=7)])
        send(kafka_broker, topics["sampleEnv"], [serialise_f144("temperature", 4.2, t1 + SECOND)])
        got = drain(source, until=until_events(8))
        got += drain(source, until=lambda more: source.health().counters.get("logs", 0) >= 1 and bool(more))
    finally:
        health = source.health()
        source.disconnect()
    ids, _, _ = flat(got)
    assert ids.tolist() == [7] * 8
    assert {(e.status, e.run_number) for e in got} == {(RunStatus.NoRun, 0)}
    assert log_values(got, "temperature") == [4.2]
    assert health.state.startswith("reading (no run information)")
    assert health.counters.get("events_outside_run", 0) == 0  # (were all dropped: "waiting for a run start")


def test_a_run_stop_with_stop_time_0_ends_the_run_at_its_message_time(kafka_broker: Broker, kafka_topics):
    topics = kafka_topics()
    source, t0 = listener_in_a_run(kafka_broker, topics)
    try:
        send(kafka_broker, topics["events"], [bank([t0 + SECOND, t0 + 2 * SECOND], pixel=5)])
        send(kafka_broker, topics["runInfo"], [serialise_6s4t("job", run_name="1", stop_time=0)])  # "stop now"
        got = drain(source)
    finally:
        counters = source.health().counters
        source.disconnect()
    assert events_total(got) == 4
    assert got[-1].status is RunStatus.EndRun  # (was: skipped as invalid; the run never ended)
    assert counters.get("skipped_invalid", 0) == 0


def test_events_without_pixel_ids_on_the_events_topic_are_skipped_with_their_own_reason(
    kafka_broker: Broker, kafka_topics
):
    topics = kafka_topics()
    source, t0 = listener_in_a_run(kafka_broker, topics)
    monitor_like = serialise_ev44("cbm1", 0, [t0 + SECOND], [0], [1000, 2000], [])  # implicit pixel: a monitor
    try:
        send(kafka_broker, topics["events"], [monitor_like, bank([t0 + 2 * SECOND], pixel=5)])
        got = drain(source, until=until_events(2))
    finally:
        counters = source.health().counters
        source.disconnect()
    assert flat(got)[0].tolist() == [5, 5]  # the detector's events; none invented for the monitor's
    assert counters["skipped_no_pixel_ids"] == 1
