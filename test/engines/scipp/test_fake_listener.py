"""Tests of FakeEventDataListener: synthetic runs at 60 Hz, run transitions, logs and proton charge."""

from __future__ import annotations

import numpy as np
import pytest
import scipp as sc

from conftest import FakeClock, poll_until
from livereduce.config import Config
from livereduce.engines.scipp.chunk import PULSE_DIM
from livereduce.engines.scipp.listeners.base import RunStatus
from livereduce.engines.scipp.listeners.fake import FakeEventDataListener

PULSE_NS = 1e9 / 60
WALL_ORIGIN = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(now=500.0, wall_origin=WALL_ORIGIN - 500.0)


def _listener(clock: FakeClock | None = None, **keys: object) -> FakeEventDataListener:
    listener = FakeEventDataListener(Config(listener="FakeEventDataListener", **keys), clock)
    listener.connect()
    listener.start("now")
    return listener


def _check_chunk(chunk: sc.DataArray) -> None:
    """Properties every non-empty chunk of the fake source has."""
    assert chunk.dims == (PULSE_DIM,)
    n = chunk.sizes[PULSE_DIM]
    events = chunk.bins.concat().value
    low, high = 0, 4095
    ids = events.coords["event_id"].values
    assert ids.dtype == np.int32
    assert ids.size > 0
    assert ids.min() >= low
    assert ids.max() <= high
    tof = events.coords["event_time_offset"]
    assert tof.unit == sc.Unit("us")
    assert tof.dtype == sc.DType.float32
    assert tof.values.min() >= 0
    assert tof.values.max() < 16_667
    charge = chunk.coords["proton_charge"]
    assert charge.unit == sc.Unit("pC")
    assert charge.sizes == {PULSE_DIM: n}
    assert np.all(charge.values > 0)
    times = chunk.coords[PULSE_DIM].values
    assert times.dtype == np.dtype("datetime64[ns]")
    if n > 1:
        np.testing.assert_allclose(np.diff(times).astype(np.int64), PULSE_NS, atol=1000)
    log = chunk.coords["temperature"].value
    assert isinstance(log, sc.DataArray)
    assert not chunk.coords["temperature"].aligned
    assert log.dims == ("time",)
    assert log.unit == sc.Unit("K")
    assert log.sizes["time"] >= 1
    assert np.all((log.values > 295) & (log.values < 305))
    stamps = log.coords["time"].to(unit="ns").values
    assert stamps[0] <= times[0]
    assert stamps[-1] <= times[-1]
    assert chunk.coords["instrument_name"].value == "ADARA_FakeEvent"


# --- deterministic clock -------------------------------------------------------------------------------------------
def test_runs_end_every_n_pulses_and_chunks_never_span_runs(clock: FakeClock) -> None:
    listener = _listener(clock, end_run_every=0.1)  # 6 pulses per run
    assert listener.run_number() == 1
    clock.now = 500.0 + 0.35  # pulses 0..21 available
    got = []
    for _ in range(4):
        extracted = listener.extract()
        chunk = extracted.chunk
        assert extracted.event_id_range == (0, 4095)
        got.append((chunk.sizes[PULSE_DIM], extracted.status, int(chunk.coords["run_number"].value)))
        _check_chunk(chunk)
    assert got == [
        (6, RunStatus.EndRun, 1),
        (6, RunStatus.EndRun, 2),
        (6, RunStatus.EndRun, 3),
        (4, RunStatus.Running, 4),
    ]
    assert listener.run_number() == 4


def test_pulse_times_and_run_start_times(clock: FakeClock) -> None:
    listener = _listener(clock, end_run_every=0.1)
    chunks = []
    for step in range(1, 15):
        clock.now = 500.0 + step * 0.05  # 3 new pulses per step
        chunks.append(listener.extract().chunk)
    times = np.concatenate([chunk.coords[PULSE_DIM].values for chunk in chunks])
    assert times.size >= 36
    origin = np.datetime64(int(WALL_ORIGIN), "s").astype("datetime64[ns]")
    expected = origin + np.round(np.arange(times.size) * PULSE_NS).astype("timedelta64[ns]")
    np.testing.assert_allclose((times - expected).astype(np.int64), 0, atol=1000)
    for chunk in chunks:
        first = int(np.round((chunk.coords[PULSE_DIM].values[0] - origin).astype(np.int64) / PULSE_NS))
        run = first // 6 + 1
        assert chunk.coords["run_number"].value == run
        assert (first + chunk.sizes[PULSE_DIM] - 1) // 6 + 1 == run, "a chunk spans two runs"
        start = chunk.coords["start_time"].value
        assert abs(int((start - expected[(run - 1) * 6]).astype(np.int64))) <= 1000


def test_without_end_run_every_the_run_never_ends(clock: FakeClock) -> None:
    listener = _listener(clock)
    for step in range(1, 6):
        clock.now = 500.0 + step * 10.0
        extracted = listener.extract()
        chunk = extracted.chunk
        assert extracted.status == RunStatus.Running
        assert chunk.coords["run_number"].value == 1
        assert chunk.sizes[PULSE_DIM] == (600 if step > 1 else 601)
    assert listener.run_number() == 1


def test_event_rate(clock: FakeClock) -> None:
    listener = _listener(clock, event_rate=6000)
    clock.now = 500.0 + 10.0
    chunk = listener.extract().chunk
    _check_chunk(chunk)
    # 601 pulses x Poisson(100): mean 60,100, sigma ~245
    assert abs(int(chunk.bins.size().sum().value) - 60_100) < 2_000


def test_extract_without_new_pulses_gives_an_empty_chunk(clock: FakeClock) -> None:
    listener = _listener(clock, end_run_every=0.1)
    clock.now = 500.0 + 0.01
    first = listener.extract().chunk
    assert first.sizes[PULSE_DIM] == 1
    extracted = listener.extract()  # same instant: nothing new
    empty = extracted.chunk
    assert empty.sizes[PULSE_DIM] == 0
    assert empty.bins is not None
    assert extracted.status == RunStatus.Running
    assert empty.coords["run_number"].value == 1


def test_very_short_end_run_every_still_ends_runs(clock: FakeClock) -> None:
    """end_run_every > 0 but below one pulse (1/60 s): every pulse is a run rather than runs never ending."""
    listener = _listener(clock, end_run_every=0.005)
    statuses = []
    for step in range(1, 6):
        clock.now = 500.0 + step * 0.1
        statuses.append(listener.extract().status)
    assert RunStatus.EndRun in statuses
    assert listener.run_number() > 1


# --- real clock ----------------------------------------------------------------------------------------------------
def test_real_time_runs_with_end_of_run() -> None:
    listener = _listener(end_run_every=0.1)
    seen: list[tuple[sc.DataArray, RunStatus]] = []

    def two_runs_ended() -> bool:
        run_before = listener.run_number()
        extracted = listener.extract()
        chunk, status = extracted.chunk, extracted.status
        seen.append((chunk, status))
        if chunk.sizes[PULSE_DIM]:
            _check_chunk(chunk)
            assert chunk.coords["run_number"].value == run_before
        if status == RunStatus.EndRun:
            assert listener.run_number() == run_before + 1
        return sum(s == RunStatus.EndRun for _, s in seen) >= 2

    poll_until(two_runs_ended, lambda: f"2 EndRun; statuses so far: {[s for _, s in seen]}", timeout=20)
    pulses_per_run = 6
    total = 0
    for chunk, status in seen:
        total += chunk.sizes[PULSE_DIM]
        if status == RunStatus.EndRun:
            assert total % pulses_per_run == 0, "EndRun not at a run boundary"
    times = np.concatenate([chunk.coords[PULSE_DIM].values for chunk, _ in seen])
    np.testing.assert_allclose(np.diff(times).astype(np.int64), PULSE_NS, atol=1000)
    runs = [int(chunk.coords["run_number"].value) for chunk, _ in seen if chunk.sizes[PULSE_DIM]]
    assert runs == sorted(runs)
    assert runs[0] == 1
    assert runs[-1] == 2
