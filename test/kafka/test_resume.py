"""KafkaEventListener resumes from a source position on the real broker (tansu): a listener reads part of a run
whose stop is known while one event partition lags, so that the position is taken mid-run with the next run's data
of several partitions buffered; it disconnects, the lagging partition gets the rest of its data, and a NEW
listener resumes from the position and reads on to the end of the next run. Both parts together are exactly what
was produced (events, monitor events, log values; numpy against the produced arrays). Then the refusals."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from streaming_data_types import serialise_ev44, serialise_f144

from conftest import poll_until
from livereduce.engines.scipp.chunk import PULSE_DIM
from livereduce.engines.scipp.listeners.base import Extracted, RunStatus

from .conftest import Broker
from .helpers import SECOND, drain, events_total, listener, run_start, run_stop, send

HALF = SECOND // 2


def bank(first: int, count: int, per_pulse: int, pixel0: int) -> tuple[bytes, np.ndarray]:
    """An ev44 of pulses ``first`` .. ``first + count - 1`` (pulse i at ``T0 + i/2 s`` plus the bank's offset, see
    :func:`produced`): event k of pulse i on pixel ``(pixel0 + 3 i + k) % 100``, TOF ``1000 (k + 1) + i`` ns; and
    its events as rows (pulse index, pixel, TOF ns)."""
    pulse = np.repeat(np.arange(first, first + count), per_pulse)
    k = np.tile(np.arange(per_pulse), count)
    ids, tof = (pixel0 + 3 * pulse + k) % 100, 1000 * (k + 1) + pulse
    return (ids.astype(np.int32), tof.astype(np.int32)), np.stack([pulse, ids, tof], axis=1)


def produced(t0: int) -> dict[str, object]:
    """The stream: run 1 [T0, T0 + 20 s) stopped by its 6s4t, run 2 [T0 + 20 s, T0 + 40 s); events every 0.5 s to
    T0 + 45 s on two partitions (partition 1 0.25 s later; 7 and 5 pulses a message, so that messages straddle the
    boundaries), monitor pulses every 2.5 s, a temperature every 3 s from T0 + 1 s and one in force before T0.

    Returns: ``run_info``, ``events`` (partition -> messages), ``monitors``, ``logs`` (messages), and what they
    hold: ``rows`` (pulse ns, pixel, TOF ns) of every event, ``monitor_rows`` (pulse ns, TOF ns),
    ``log_rows`` (time ns, value)."""
    messages: dict[int, list[bytes]] = {0: [], 1: []}
    rows = []
    for partition, (per_message, per_pulse, shift) in enumerate(((7, 3, 0), (5, 2, HALF // 2))):
        for first in range(0, 90, per_message):
            count = min(per_message, 90 - first)
            (ids, tof), events = bank(first, count, per_pulse, 50 * partition)
            times = t0 + shift + np.arange(first, first + count) * HALF
            index = np.arange(count) * per_pulse
            messages[partition].append(serialise_ev44(f"bank{partition}", first, times, index, tof, ids))
            rows.append(np.stack([t0 + shift + events[:, 0] * HALF, events[:, 1], events[:, 2]], axis=1))
    monitor_times = t0 + np.arange(18) * 5 * HALF
    monitors = [
        serialise_ev44("monitor_1", i, monitor_times[i : i + 3], np.arange(3), 7000 + np.arange(i, i + 3), [])
        for i in range(0, 18, 3)
    ]
    log_rows = [(t0 - SECOND, 0.0)] + [(t0 + SECOND + 3 * i * SECOND, float(i + 1)) for i in range(15)]
    return {
        "run_info": [
            run_start(t0, run="1", job="a"),
            run_stop(t0 + 20 * SECOND, run="1", job="a"),
            run_start(t0 + 20 * SECOND, run="2", job="b"),
            run_stop(t0 + 40 * SECOND, run="2", job="b"),
        ],
        "events": messages,
        "monitors": monitors,
        "logs": [serialise_f144("temperature", value, when) for when, value in log_rows],
        "rows": np.concatenate(rows),
        "monitor_rows": np.stack([monitor_times, 7000 + np.arange(18)], axis=1),
        "log_rows": np.array(log_rows),
    }


def event_rows(got: Sequence[Extracted]) -> np.ndarray:
    """Every event of the chunks as rows (pulse ns, pixel, TOF ns), sorted."""
    parts = [np.empty((0, 3), np.int64)]
    for e in got:
        chunk = e.chunk
        if not chunk.sizes[PULSE_DIM]:
            continue
        events = chunk.bins.concat().value
        zero = np.repeat(chunk.coords["event_time_zero"].values.astype(np.int64), chunk.bins.size().values)
        tof = np.rint(events.coords["event_time_offset"].values.astype(np.float64) * 1000).astype(np.int64)
        parts.append(np.stack([zero, events.coords["event_id"].values, tof], axis=1))
    return _sorted(np.concatenate(parts))


def monitor_rows(got: Sequence[Extracted]) -> np.ndarray:
    """Every monitor event of the chunks as rows (pulse ns, TOF ns), sorted."""
    parts = [np.empty((0, 2), np.int64)]
    for e in got:
        if "monitors" in e.chunk.coords:
            monitor = e.chunk.coords["monitors"].value["monitor_1"]
            zero = monitor.coords["event_time_zero"].values.astype(np.int64)
            tof = np.rint(monitor.coords["event_time_offset"].values.astype(np.float64) * 1000).astype(np.int64)
            parts.append(np.stack([zero, tof], axis=1))
    return _sorted(np.concatenate(parts))


def log_rows(got: Sequence[Extracted]) -> np.ndarray:
    """Every temperature value of the chunks as rows (time ns, value), in the order they came."""
    parts = [np.empty((0, 2))]
    for e in got:
        if "temperature" in e.chunk.coords:
            log = e.chunk.coords["temperature"].value
            parts.append(np.stack([log.coords["time"].values.astype(np.int64), log.values], axis=1))
    return np.concatenate(parts)


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])] if rows.size else rows


def within(rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    return _sorted(rows[(rows[:, 0] >= start) & (rows[:, 0] < stop)])


def test_a_new_listener_resumes_mid_run_and_both_parts_are_exactly_the_stream(kafka_broker: Broker, kafka_topics):
    topics = {**kafka_topics(("runInfo", "sampleEnv", "monitors")), **kafka_topics(("events",), partitions=2)}
    t0 = (time.time_ns() // SECOND - 2) * SECOND  # run 1 stops in the future: a partition at its end does not pass it
    stream = produced(t0)
    send(kafka_broker, topics["runInfo"], stream["run_info"])
    send(kafka_broker, topics["monitors"], stream["monitors"])
    send(kafka_broker, topics["events"], stream["events"][0], partition=0)
    send(kafka_broker, topics["events"], stream["events"][1][:4], partition=1)  # to T0 + 9.75 s: run 1 goes on
    first = listener(kafka_broker, topics)
    first.start(datetime.fromtimestamp(t0 / SECOND, UTC))
    in_run_1 = 40 * 3 + 20 * 2  # partition 0 to its stop, partition 1 all it has
    try:  # log values once the runs are known (a value read before its run's stop stays in the run)
        poll_until(lambda: first.health().counters.get("run_stops", 0) == 2, "both run stops read", 10)
        send(kafka_broker, topics["sampleEnv"], stream["logs"])
        before = drain(
            first,
            until=lambda got: events_total(got) >= in_run_1 and len((got[-1].position or {}).get("replay", ())) > 1,
        )
    finally:
        first.disconnect()
    position = json.loads(json.dumps(before[-1].position))  # as a checkpoint stores it
    assert {e.status for e in before} <= {RunStatus.Running}  # mid-run: run 1 has not ended
    assert position["run"]["run_name"] == "1"
    assert position["run"]["continued"]
    assert set(position["replay"]) >= {f"{topics['events']}[0]", f"{topics['monitors']}[0]"}  # run 2's data read

    send(kafka_broker, topics["events"], stream["events"][1][4:], partition=1)
    second = listener(kafka_broker, topics)
    try:
        assert second.resume_refusal(position) is None
        second.start("from_start_of_run", resume=position)
        after = drain(second, until=lambda got: got[-1].status is RunStatus.EndRun and got[-1].run_number == 2)
        counters = second.health().counters
    finally:
        second.disconnect()

    run_1 = [e for e in before + after if e.run_number == 1]
    run_2 = [e for e in after if e.run_number == 2]
    rows, runs = stream["rows"], ((run_1, t0, t0 + 20 * SECOND), (run_2, t0 + 20 * SECOND, t0 + 40 * SECOND))
    for got, start, stop in runs:
        np.testing.assert_array_equal(event_rows(got), within(rows, start, stop))
        np.testing.assert_array_equal(monitor_rows(got), within(stream["monitor_rows"], start, stop))
    logs, values_1 = stream["log_rows"], log_rows(run_1)
    if values_1[0, 0] < t0:  # the value in force at its start, if read before its first pulses went out
        np.testing.assert_array_equal(values_1[0], logs[0])
        values_1 = values_1[1:]
    np.testing.assert_array_equal(values_1, logs[(logs[:, 0] >= t0) & (logs[:, 0] < t0 + 20 * SECOND)])
    in_run_2 = (logs[:, 0] >= t0 + 19 * SECOND) & (logs[:, 0] < t0 + 40 * SECOND)  # from the value in force
    np.testing.assert_array_equal(log_rows(run_2), logs[in_run_2])
    assert event_rows(before + after).shape[0] == within(rows, t0, t0 + 40 * SECOND).shape[0]  # nothing else
    with_pulses = [(e.run_number, e.data_reset, e.status.name) for e in after if e.chunk.sizes[PULSE_DIM]]
    assert with_pulses[0][:2] == (1, False)  # run 1 goes on in its accumulation
    assert next(s for s in with_pulses if s[0] == 2)[1]  # run 2 is a new one
    assert [(e.status.name, e.run_number) for e in after if e.status.ends_run] == [("EndRun", 1), ("EndRun", 2)]
    assert counters["events_replayed"] > 0  # read again below the replay offsets, not delivered again
    assert counters.get("events_late", 0) == counters.get("events_outside_run", 0) == 0


def test_a_malformed_foreign_or_lost_position_is_refused(kafka_broker: Broker, kafka_topics):
    topics = kafka_topics(("events", "runInfo"))
    t0 = (time.time_ns() // SECOND - 60) * SECOND
    send(kafka_broker, topics["runInfo"], [run_start(t0, run="7"), run_stop(t0 + SECOND, run="7")])
    source = listener(kafka_broker, topics)
    try:
        events, info = f"{topics['events']}[0]", f"{topics['runInfo']}[0]"
        run = {"at": info, "offset": 0, "run_name": "7", "start_ns": t0, "continued": True, "unseeded": []}
        good = {"offsets": {events: 0, info: 0}, "replay": {}, "before_ns": None, "run": run, "from_ns": None}
        assert source.resume_refusal(good) is None
        assert "not a mapping" in source.resume_refusal({"next_pulse": 3})
        assert "offsets" in source.resume_refusal({**good, "offsets": {events: "0", info: 0}})
        foreign = {**good, "offsets": {"other_events[0]": 0, info: 0}}
        assert source.resume_refusal(foreign) == (
            f"the Kafka partitions read differ from the position's (new: {events}; not read now: other_events[0])"
        )
        moved = {**good, "run": {**run, "offset": 1}}  # the 6s4t is there
        assert source.resume_refusal(moved) == f"the run start of run '7' is no longer at offset 1 of {info}"
        other = {**good, "run": {**run, "start_ns": t0 + SECOND}}  # a topic created again holds another run there
        assert "no longer at offset 0" in source.resume_refusal(other)
        with pytest.raises(ValueError, match="cannot resume: the run start of run '7' is no longer"):
            source.start("from_start_of_run", resume=moved)
    finally:
        source.disconnect()
