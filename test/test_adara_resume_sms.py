"""Resuming SNSLiveEventDataListener from a source position against the fake SMS (``livereduce-fake-sms`` serving
the real SANS2D file, a subprocess): a listener takes part of the run and stops; a new listener resumes from the
last chunk's position (through JSON, as a checkpoint keeps it). The SMS starts at the chunk-file boundary before the
position's second, so it replays pulses the first listener handed out: they are dropped as ``already accumulated``,
and the two parts together are the file's run exactly, pulse by pulse."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from conftest import SANS2D_EVENTS, FakeSms, Sans2dReference, poll_until
from livereduce.config import Config
from livereduce.engines.scipp.chunk import flat_events
from livereduce.engines.scipp.listeners.adara import SNSLiveEventDataListener
from livereduce.engines.scipp.listeners.base import Extracted, RunStatus
from livereduce.protocols.adara.client import ALREADY_ACCUMULATED
from livereduce.protocols.adara.packets import EPICS_EPOCH_OFFSET_S, NS_PER_S
from test_adara import quantised

EOF_EVERY = 50
"""Pulses per chunk file of the fake SMS: the boundary the SMS starts at lies inside the run."""


@pytest.fixture
def listeners() -> Iterator[Callable[..., SNSLiveEventDataListener]]:
    made: list[SNSLiveEventDataListener] = []

    def make(port: int, **keys: object) -> SNSLiveEventDataListener:
        listener = SNSLiveEventDataListener(Config.model_validate({"address": f"127.0.0.1:{port}", **keys}))
        made.append(listener)
        listener.connect()
        return listener

    yield make
    for listener in made:
        listener.disconnect()


def extract_until(listener: SNSLiveEventDataListener, done: Callable[[list[Extracted]], bool]) -> list[Extracted]:
    """Extract as the engine's cycles do until ``done(everything so far)``."""
    got: list[Extracted] = []

    def step() -> bool:
        got.append(listener.extract())
        return done(got)

    poll_until(step, lambda: f"{len(got)} chunks; health {listener.health()}", timeout=60, interval=0.01)
    return got


def pulses(got: list[Extracted]) -> int:
    return sum(item.chunk.sizes["event_time_zero"] for item in got)


def ended(got: list[Extracted]) -> bool:
    return got[-1].status is RunStatus.EndRun


def flattened(got: list[Extracted]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pulse times (int64 ns), events per pulse, event ids and TOFs (µs) of the chunks, in order."""
    times = [item.chunk.coords["event_time_zero"].values.astype(np.int64) for item in got]
    counts = [item.chunk.bins.size().values.astype(np.int64) for item in got]
    events = [flat_events(item.chunk) for item in got]
    ids = [e.coords["event_id"].values.astype(np.int64) for e in events]
    tofs = [e.coords["event_time_offset"].values for e in events]
    return tuple(np.concatenate(parts) for parts in (times, counts, ids, tofs))


def connections(sms: FakeSms) -> int:
    """Client connections the fake SMS accepted (one ``client HOST:PORT connected`` line each)."""
    return len(re.findall(r"INFO: client \S+ connected$", sms.output(), re.M))


def first_part(sms: FakeSms, listeners: Callable[..., SNSLiveEventDataListener]) -> list[Extracted]:
    """A listener from the start of the run takes chunks until at least 60 pulses were handed out, and stops (the
    SMS at speed 10 sends the 300 pulses over 3 s; the chunk-file boundary before the last pulse's second is then
    pulse 50 or later, inside the run)."""
    listener = listeners(sms.port)
    listener.start("from_start_of_run")
    got = extract_until(listener, lambda got: pulses(got) >= 60)
    listener.disconnect()
    assert not ended(got)
    return got


def test_a_resumed_listener_gets_exactly_what_follows_the_position(
    fake_sms, listeners, sans2d_reference: Sans2dReference
):
    sms = fake_sms("--speed", "10", "--eof-every", str(EOF_EVERY))
    before = first_part(sms, listeners)
    position = json.loads(json.dumps(before[-1].position))  # what a checkpoint file holds
    times = sans2d_reference.pulse_times.astype(np.int64)
    last = int(np.searchsorted(times, position["last_pulse_ns"]))  # index of the position's pulse
    assert position == {"run_number": 1, "last_pulse_ns": int(times[last])}
    assert last + 1 == pulses(before) < 300

    listener = listeners(sms.port)
    assert listener.resume_refusal(position) is None
    listener.start("from_start_of_run", resume=position)
    after = extract_until(listener, ended)

    whole = flattened([*before, *after])
    np.testing.assert_array_equal(whole[0], times)
    np.testing.assert_array_equal(whole[1], np.diff(np.append(sans2d_reference.event_index, SANS2D_EVENTS)))
    np.testing.assert_array_equal(whole[2], sans2d_reference.event_id)
    np.testing.assert_array_equal(whole[3], quantised(sans2d_reference.event_time_offset))
    assert after[-1].position == {"run_number": 1, "last_pulse_ns": int(times[-1])}

    # the hello asked for the position's second (Mantid's encoding) while the run went on; the SMS started at the
    # chunk-file boundary before it and replayed pulses boundary..last, which were dropped, every event counted
    second = position["last_pulse_ns"] // NS_PER_S
    hello = re.findall(r"hello v0 start (\d+) at pulse \d+ of run 1: serving run 1 from pulse (\d+)", sms.output())[-1]
    boundary = int(np.searchsorted(times, second * NS_PER_S)) // EOF_EVERY * EOF_EVERY
    assert (int(hello[0]), int(hello[1])) == (second - EPICS_EPOCH_OFFSET_S, boundary)
    replayed = sans2d_reference.pulses(boundary, last + 1)
    assert sum(item.dropped.get(ALREADY_ACCUMULATED, 0) for item in after) == replayed.stop - replayed.start > 0
    assert not any(item.data_reset for item in after)
    assert {item.status for item in after[:-1]} == {RunStatus.Running}
    counters = listener.health().counters
    assert counters["skipped_already_accumulated"] == last + 1 - boundary
    assert counters["events_dropped"] == replayed.stop - replayed.start
    assert counters["reconnects"] == 0
    assert connections(sms) == 2


def test_a_resume_when_the_sms_serves_another_run_ends_the_checkpoints_run(
    fake_sms, listeners, sans2d_reference: Sans2dReference, caplog
):
    """The daemon was away while run 5 ended: the SMS (here restarted) serves run 6. The checkpoint's run ends with
    an empty EndRun chunk (the engine ends its accumulation), and run 6 comes whole from where the SMS serves it,
    nothing dropped as already accumulated."""
    position = first_part(fake_sms("--speed", "10", "--run-number", "5"), listeners)[-1].position
    sms = fake_sms("--speed", "0", "--eof-every", str(EOF_EVERY), "--run-number", "6")  # run 6 at the position
    listener = listeners(sms.port)
    assert listener.resume_refusal(position) is None
    with caplog.at_level("WARNING", "livereduce.SNSLiveEventDataListener"):
        listener.start("from_start_of_run", resume=position)
        got = extract_until(listener, lambda got: sum(ended([item]) for item in got) == 2)
    first = got[0]
    assert (first.status, first.run_number, first.chunk.sizes["event_time_zero"]) == (RunStatus.EndRun, 5, 0)
    assert first.position == position
    rest = got[1:]
    assert {item.run_number for item in rest} == {6}
    assert not any(item.dropped for item in rest)
    served = int(re.findall(r"serving run 6 from pulse (\d+)", sms.output())[-1])
    assert served >= EOF_EVERY
    np.testing.assert_array_equal(flattened(rest)[0], sans2d_reference.pulse_times.astype(np.int64)[served:])
    assert rest[-1].status is RunStatus.EndRun
    assert [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()] == [
        "Run 5 of the checkpoint is over: the SMS serves run 6 now; run 5 ends at the checkpoint (its pulses after "
        "it are not served any more) and a new accumulation starts"
    ]


def test_a_malformed_position_is_refused_and_the_listener_starts_afresh(fake_sms, listeners):
    sms = fake_sms("--speed", "0")
    listener = listeners(sms.port)
    for position, phrase in (
        ({"next_pulse": 12}, "is not {'run_number': R, 'last_pulse_ns': T}"),
        ({"run_number": 1, "last_pulse_ns": "1460429935040000000"}, "last_pulse_ns is not an integer"),
        ({"run_number": 1.0, "last_pulse_ns": 1460429935040000000}, "run_number is not an integer"),
    ):
        refusal = listener.resume_refusal(position)
        assert refusal is not None
        assert phrase in refusal
    listener.start("from_start_of_run")
    got = extract_until(listener, ended)
    assert pulses(got) == 300
    assert not any(item.dropped for item in got)
