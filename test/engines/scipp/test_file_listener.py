"""Tests of FileEventDataListener: replaying the NXevent_data of a NeXus file (ISIS and SNS layouts); and of the
reader it replays with, ``EventFile``, on its own (as the tools use it, without a daemon configuration)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipp as sc

from conftest import poll_until
from livereduce.config import Config
from livereduce.engines.scipp.chunk import PULSE_DIM
from livereduce.engines.scipp.listeners.base import Extracted, RunStatus
from livereduce.engines.scipp.listeners.file import FileEventDataListener
from livereduce.engines.scipp.nexus_events import EventFile
from livereduce.errors import ConfigError, SourceError
from livereduce.tools.sms_stream import load_run

SANS2D = Path("/work/shared/data/SANS2D_minimal.nxs")
needs_sans2d = pytest.mark.skipif(not SANS2D.is_file(), reason=f"real data file {SANS2D} is not available")

ZONE_OFFSET = "2026-01-01T00:00:00-05:00"
"""event_time_zero offset of the synthetic SNS files: midnight in UTC-5, i.e. 05:00 UTC."""
UTC_ORIGIN = np.datetime64("2026-01-01T05:00:00", "ns")


# --- helpers -----------------------------------------------------------------------------------------------------
def _listener(path: Path, **keys: object) -> FileEventDataListener:
    values: dict[str, object] = {"replay_speed": 0, "replay_chunk_pulses": 50} | keys
    return FileEventDataListener(Config(listener="FileEventDataListener", filename=str(path), **values))


def _drain(listener: FileEventDataListener, limit: int = 10_000) -> list[Extracted]:
    """Extract (replay_speed 0) until the source has ended; the last extraction must be the one with EndRun."""
    out = []
    for _ in range(limit):
        out.append(listener.extract())
        if out[-1].ended:
            assert out[-1].status == RunStatus.EndRun
            assert all(not x.ended and x.status == RunStatus.Running for x in out[:-1])
            return out
    raise AssertionError(f"no EndRun after {limit} extractions")


def _poll(listener: FileEventDataListener, timeout: float) -> list[Extracted]:
    """Extract until the source has ended (replay_speed > 0); fails after ``timeout`` seconds."""
    out = []

    def ended() -> bool:
        out.append(listener.extract())
        return out[-1].ended

    poll_until(ended, lambda: f"EndRun; pulses so far: {sum(x.chunk.sizes[PULSE_DIM] for x in out)}", timeout)
    return out


def _events(chunk: sc.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """All events of a chunk in pulse order: (event_id, event_time_offset in µs)."""
    if chunk.sizes[PULSE_DIM] == 0:
        return np.empty(0, np.int32), np.empty(0, np.float32)
    flat = chunk.bins.concat().value
    return flat.coords["event_id"].values, flat.coords["event_time_offset"].to(unit="us").values


def _pulse_events(chunk: sc.DataArray, i: int) -> np.ndarray:
    """Events of pulse i as sorted (event_id, tof) rows."""
    events = chunk[PULSE_DIM, i].value
    rows = np.stack([events.coords["event_id"].values, events.coords["event_time_offset"].to(unit="us").values], 1)
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))] if rows.size else rows.reshape(0, 2)


def _write_bank(
    parent: h5py.Group,
    name: str,
    pulses: list[tuple[float, np.ndarray, np.ndarray]],
    *,
    tof_units: str | None = "microsecond",
    etz_units: str | None = "second",
    offset: str | None = ZONE_OFFSET,
) -> None:
    """An NXevent_data group from (pulse seconds, event ids, tof values in ``tof_units``) per pulse."""
    group = parent.create_group(name)
    group.attrs["NX_class"] = "NXevent_data"
    counts = [len(ids) for _, ids, _ in pulses]
    group.create_dataset("event_id", data=np.concatenate([p[1] for p in pulses]).astype(np.uint32))
    tof = group.create_dataset("event_time_offset", data=np.concatenate([p[2] for p in pulses]).astype(np.float32))
    etz = group.create_dataset("event_time_zero", data=np.array([p[0] for p in pulses], dtype=np.float64))
    group.create_dataset("event_index", data=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.uint64))
    if tof_units is not None:
        tof.attrs["units"] = tof_units
    if etz_units is not None:
        etz.attrs["units"] = etz_units
    if offset is not None:
        etz.attrs["offset"] = offset


def _sns_entry(file: h5py.File) -> h5py.Group:
    entry = file.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    return entry


def _random_pulse(rng: np.random.Generator, seconds: float, scale: float = 1.0) -> tuple[float, np.ndarray, np.ndarray]:
    n = int(rng.integers(0, 30))
    return seconds, rng.integers(0, 500, n), rng.integers(0, 16_000, n).astype(np.float32) * scale


def _simple_file(path: Path, seconds: list[float], **bank: object) -> Path:
    """SNS file with one bank, one event per pulse (event_id = pulse number)."""
    with h5py.File(path, "w") as f:
        pulses = [(s, np.array([i]), np.array([100.0 + i])) for i, s in enumerate(seconds)]
        _write_bank(_sns_entry(f), "bank1_events", pulses, **bank)
    return path


# --- ISIS layout: the real SANS2D file -----------------------------------------------------------------------------
@needs_sans2d
def test_sans2d_replay_in_chunks_of_50_pulses() -> None:
    with h5py.File(SANS2D, "r") as f:
        group = f["raw_data_1/detector_1_events"]
        ids, tof = group["event_id"][()], group["event_time_offset"][()]
        etz, index = group["event_time_zero"][()], group["event_index"][()]
        offset = group["event_time_zero"].attrs["offset"]
    offset = offset.decode() if isinstance(offset, bytes) else str(offset)

    listener = _listener(SANS2D)
    listener.connect()
    listener.start("from_start_of_run")
    replay = _drain(listener)
    assert [x.status for x in replay] == [RunStatus.Running] * 5 + [RunStatus.EndRun]
    assert all(x.dropped == {} and not x.data_reset for x in replay)
    chunks = [x.chunk for x in replay]
    assert [chunk.sizes[PULSE_DIM] for chunk in chunks] == [50] * 6

    got = [_events(chunk) for chunk in chunks]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), ids.astype(np.int64))
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), tof)

    times = np.concatenate([chunk.coords[PULSE_DIM].values for chunk in chunks])
    assert times.dtype == np.dtype("datetime64[ns]")
    expected = np.datetime64(offset, "ns") + np.round(etz * 1e9).astype("timedelta64[ns]")
    np.testing.assert_array_equal(times, expected)

    counts = np.concatenate([chunk.bins.size().values for chunk in chunks])
    np.testing.assert_array_equal(counts, np.diff(np.append(index, ids.size)))

    for chunk in chunks:
        assert chunk.dims == (PULSE_DIM,)
        assert chunk.coords[PULSE_DIM].unit == sc.Unit("ns")
        events = chunk.bins.constituents["data"]
        assert events.coords["event_time_offset"].unit == sc.Unit("us")
        assert events.coords["event_time_offset"].dtype == sc.DType.float32
        assert events.coords["event_id"].dtype == sc.DType.int32
        assert events.coords["event_id"].unit is None
        assert chunk.coords["instrument_name"].value == "SANS2D"
        assert not chunk.coords["instrument_name"].aligned
    assert listener.pixel_range == (int(ids.min()), int(ids.max()))
    health = listener.health()
    assert health.state == f"'{SANS2D}': pulse 300 of 300, ended"
    assert health.healthy
    assert health.counters == {"pulses": 300, "events": ids.size, "events_dropped": 0}
    listener.disconnect()
    listener.disconnect()  # safe twice


@needs_sans2d
def test_sans2d_after_end_of_run_empty_chunks_with_no_run() -> None:
    listener = _listener(SANS2D)
    listener.connect()
    listener.start("from_start_of_run")
    _drain(listener)
    for _ in range(2):
        extracted = listener.extract()
        after = extracted.chunk
        assert extracted.status == RunStatus.NoRun
        assert extracted.ended
        assert after.sizes[PULSE_DIM] == 0
        assert after.bins is not None
        assert int(after.bins.size().sum().value) == 0


@needs_sans2d
def test_sans2d_one_chunk_without_pulse_limit() -> None:
    listener = _listener(SANS2D, replay_chunk_pulses=None)
    listener.connect()
    listener.start("now")
    extracted = listener.extract()
    chunk = extracted.chunk
    assert extracted.status == RunStatus.EndRun
    assert extracted.ended
    assert chunk.sizes[PULSE_DIM] == 300
    assert int(chunk.bins.size().sum().value) == 237_078


# --- SNS layout: several banks -------------------------------------------------------------------------------------
def _multibank_file(path: Path) -> dict[int, np.ndarray]:
    """Three banks; returns the reference: union pulse number -> sorted (event_id, tof µs) rows of all banks.

    bank1: pulses 0..9, tof in nanoseconds; bank2: pulses 0..9 without 2, 5 and 6; bank10: pulses 0..10 (pulse
    10 only here) with the same instants expressed with a UTC offset, some pulses empty.
    """
    rng = np.random.default_rng(7)
    seconds = [i / 60 for i in range(11)]
    reference: dict[int, list[np.ndarray]] = {i: [] for i in range(11)}

    def pulses(numbers: list[int], scale: float, empty: tuple[int, ...] = ()) -> list:
        out = []
        for i in numbers:
            s, ids, tof = _random_pulse(rng, seconds[i], scale)
            if i in empty:
                ids, tof = ids[:0], tof[:0]
            out.append((s, ids, tof))
            reference[i].append(np.stack([ids.astype(np.float64), tof.astype(np.float64) / scale], 1))
        return out

    with h5py.File(path, "w") as f:
        entry = _sns_entry(f)
        _write_bank(entry, "bank1_events", pulses(list(range(10)), 1000.0), tof_units="nanosecond")
        _write_bank(entry, "bank2_events", pulses([0, 1, 3, 4, 7, 8, 9], 1.0))
        _write_bank(
            entry,
            "bank10_events",
            pulses(list(range(11)), 1.0, empty=(3, 4)),
            tof_units="microsecond",
            offset="2026-01-01T05:00:00Z",
        )
    result = {}
    for i, parts in reference.items():
        rows = np.concatenate(parts)
        result[i] = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    return result


def test_sns_banks_are_merged_pulse_by_pulse(tmp_path: Path) -> None:
    reference = _multibank_file(tmp_path / "sns.nxs")
    listener = _listener(tmp_path / "sns.nxs", replay_chunk_pulses=4)
    listener.connect()
    listener.start("from_start_of_run")
    replay = _drain(listener)
    assert [x.status for x in replay] == [RunStatus.Running, RunStatus.Running, RunStatus.EndRun]
    chunks = [x.chunk for x in replay]
    assert [chunk.sizes[PULSE_DIM] for chunk in chunks] == [4, 4, 3]

    times = np.concatenate([chunk.coords[PULSE_DIM].values for chunk in chunks])
    expected_times = UTC_ORIGIN + np.round(np.arange(11) / 60 * 1e9).astype("timedelta64[ns]")
    np.testing.assert_array_equal(times, expected_times)

    pulse = 0
    for chunk in chunks:
        for i in range(chunk.sizes[PULSE_DIM]):
            got = _pulse_events(chunk, i)
            want = reference[pulse]
            assert got.shape == want.shape, f"pulse {pulse}: {got.shape[0]} events, expected {want.shape[0]}"
            np.testing.assert_array_equal(got[:, 0], want[:, 0], err_msg=f"event_id of pulse {pulse}")
            np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-6, err_msg=f"tof of pulse {pulse}")
            pulse += 1
        events = chunk.bins.constituents["data"]
        assert events.coords["event_time_offset"].unit == sc.Unit("us")
        assert events.coords["event_time_offset"].dtype == sc.DType.float32
        assert events.coords["event_id"].dtype == sc.DType.int32
    assert pulse == 11
    all_ids = np.concatenate([rows[:, 0] for rows in reference.values()])
    assert listener.pixel_range == (int(all_ids.min()), int(all_ids.max()))


def test_nanosecond_event_time_offset_converted_to_microseconds(tmp_path: Path) -> None:
    path = tmp_path / "ns.nxs"
    with h5py.File(path, "w") as f:
        pulses = [(0.0, np.array([1, 2]), np.array([1_500_000.0, 16_000_000.0]))]
        _write_bank(_sns_entry(f), "bank1_events", pulses, tof_units="nanosecond")
    listener = _listener(path)
    listener.connect()
    listener.start("from_start_of_run")
    ids, tof = _events(listener.extract().chunk)
    np.testing.assert_array_equal(ids, [1, 2])
    np.testing.assert_allclose(tof, [1500.0, 16000.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("offset", "utc"),
    [
        ("2026-01-01T00:00:00-05:00", "2026-01-01T05:00:00"),
        ("2026-01-01T07:30:00+02:30", "2026-01-01T05:00:00"),
        ("2026-01-01T05:00:00Z", "2026-01-01T05:00:00"),
        ("2026-01-01T05:00:00", "2026-01-01T05:00:00"),
    ],
)
def test_pulse_times_are_utc(tmp_path: Path, offset: str, utc: str) -> None:
    path = _simple_file(tmp_path / "zone.nxs", [0.0, 1.5], offset=offset)
    listener = _listener(path)
    listener.connect()
    listener.start("from_start_of_run")
    times = listener.extract().chunk.coords[PULSE_DIM].values
    origin = np.datetime64(utc, "ns")
    np.testing.assert_array_equal(times, [origin, origin + np.timedelta64(1_500_000_000, "ns")])


def test_millisecond_event_time_zero(tmp_path: Path) -> None:
    path = _simple_file(tmp_path / "ms.nxs", [0.0, 250.0], etz_units="ms")
    listener = _listener(path)
    listener.connect()
    listener.start("from_start_of_run")
    times = listener.extract().chunk.coords[PULSE_DIM].values
    np.testing.assert_array_equal(times - UTC_ORIGIN, np.array([0, 250_000_000], "timedelta64[ns]"))


# --- start position ------------------------------------------------------------------------------------------------
def test_start_time_skips_earlier_pulses(tmp_path: Path) -> None:
    path = _simple_file(tmp_path / "start.nxs", [float(i) for i in range(10)])
    listener = _listener(path)
    listener.connect()
    listener.start(datetime(2026, 1, 1, 0, 0, 4, tzinfo=timezone(timedelta(hours=-5))))
    chunks = [x.chunk for x in _drain(listener)]
    ids = np.concatenate([_events(chunk)[0] for chunk in chunks])
    np.testing.assert_array_equal(ids, [4, 5, 6, 7, 8, 9])
    assert chunks[0].coords[PULSE_DIM].values[0] == UTC_ORIGIN + np.timedelta64(4, "s")


def test_start_time_from_config_skips_earlier_pulses(tmp_path: Path) -> None:
    path = _simple_file(tmp_path / "start.nxs", [float(i) for i in range(10)])
    config = Config(listener="FileEventDataListener", filename=str(path), replay_speed=0, start="2026-01-01T05:00:06.5")
    listener = FileEventDataListener(config)
    listener.connect()
    listener.start(config.start)
    ids = np.concatenate([_events(x.chunk)[0] for x in _drain(listener)])
    np.testing.assert_array_equal(ids, [7, 8, 9])


@pytest.fixture
def non_utc_local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the test with the process's local time zone UTC-5 (POSIX TZ, no tz database needed)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available on this platform")
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("non_utc_local_zone")
def test_start_time_independent_of_local_time_zone(tmp_path: Path) -> None:
    path = _simple_file(tmp_path / "start.nxs", [float(i) for i in range(10)])
    listener = _listener(path)
    listener.connect()
    listener.start(datetime(2026, 1, 1, 5, 0, 4, tzinfo=UTC))
    ids = np.concatenate([_events(x.chunk)[0] for x in _drain(listener)])
    np.testing.assert_array_equal(ids, [4, 5, 6, 7, 8, 9])


def test_start_time_after_last_pulse_gives_empty_end_of_run(tmp_path: Path) -> None:
    path = _simple_file(tmp_path / "late.nxs", [0.0, 1.0])
    listener = _listener(path)
    listener.connect()
    listener.start(datetime(2030, 1, 1, tzinfo=UTC))
    first = listener.extract()
    assert first.chunk.sizes[PULSE_DIM] == 0
    assert (first.status, first.ended) == (RunStatus.EndRun, True)
    after = listener.extract()
    assert (after.status, after.ended) == (RunStatus.NoRun, True)


# --- replay in time ------------------------------------------------------------------------------------------------
def test_replay_speed_delivers_every_pulse_once_in_order(tmp_path: Path) -> None:
    seconds = [i * 0.5 for i in range(40)]  # 20 s of data, 0.2 s at speed 100
    path = _simple_file(tmp_path / "timed.nxs", seconds)
    listener = _listener(path, replay_speed=100, replay_chunk_pulses=None)
    listener.connect()
    listener.start("from_start_of_run")
    replay = _poll(listener, timeout=30)
    statuses = [x.status for x in replay]
    assert statuses[-1] == RunStatus.EndRun
    assert set(statuses[:-1]) <= {RunStatus.Running}
    ids = np.concatenate([_events(x.chunk)[0] for x in replay])
    np.testing.assert_array_equal(ids, np.arange(40))
    times = np.concatenate([x.chunk.coords[PULSE_DIM].values for x in replay])
    assert np.all(np.diff(times) > np.timedelta64(0, "ns"))


def test_replay_from_start_time_does_not_wait_for_skipped_pulses(tmp_path: Path) -> None:
    """At speed 1, a replay started at a time 1000 s into the file delivers that pulse at once, not after 1000 s."""
    path = _simple_file(tmp_path / "gap.nxs", [0.0, 1.0, 2.0, 1000.0, 1000.25])
    listener = _listener(path, replay_speed=1, replay_chunk_pulses=None)
    listener.connect()
    listener.start(datetime(2026, 1, 1, 5, 16, 40, tzinfo=UTC))  # 1000 s after the first pulse
    replay = _poll(listener, timeout=5)
    ids = np.concatenate([_events(x.chunk)[0] for x in replay])
    np.testing.assert_array_equal(ids, [3, 4])


# --- run metadata --------------------------------------------------------------------------------------------------
def _metadata_file(path: Path) -> Path:
    """SNS file: 10 pulses 1 s apart, run metadata, and an NXlog sampled at -0.5, 0.5, ..., 9.5 s."""
    with h5py.File(path, "w") as f:
        entry = _sns_entry(f)
        entry.create_dataset("run_number", data=b"12345")
        entry.create_dataset("start_time", data=b"2026-01-01T00:00:00-05:00")
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        instrument.create_dataset("name", data=b"SNAP")
        pulses = [(float(i), np.array([i, i + 1]), np.array([10.0, 20.0])) for i in range(10)]
        _write_bank(entry, "bank1_events", pulses)
        logs = entry.create_group("DASlogs")
        logs.attrs["NX_class"] = "NXcollection"
        log = logs.create_group("SampleTemp")
        log.attrs["NX_class"] = "NXlog"
        stamps = log.create_dataset("time", data=np.arange(-0.5, 10.0, 1.0))
        stamps.attrs["units"] = "second"
        stamps.attrs["start"] = ZONE_OFFSET
        values = log.create_dataset("value", data=300.0 + np.arange(11.0))
        values.attrs["units"] = "K"
    return path


def test_run_metadata_and_logs_per_chunk(tmp_path: Path) -> None:
    path = _metadata_file(tmp_path / "meta.nxs")
    listener = _listener(path, replay_chunk_pulses=3)
    listener.connect()
    listener.start("from_start_of_run")
    chunks = [x.chunk for x in _drain(listener)]
    assert [chunk.sizes[PULSE_DIM] for chunk in chunks] == [3, 3, 3, 1]
    for chunk in chunks:
        assert chunk.coords["run_number"].value == 12345
        assert chunk.coords["run_number"].dtype == sc.DType.int64
        assert chunk.coords["start_time"].value == UTC_ORIGIN
        assert chunk.coords["instrument_name"].value == "SNAP"
        for name in ("run_number", "start_time", "instrument_name", "SampleTemp"):
            assert not chunk.coords[name].aligned, name

    # log stamps at t0 - 0.5 s, t0 + 0.5 s, ...; values 300 + k at stamp k - 0.5 s
    for chunk, first in zip(chunks, [0, 3, 6, 9], strict=True):
        log = chunk.coords["SampleTemp"].value
        assert isinstance(log, sc.DataArray)
        assert log.dims == ("time",)
        assert log.unit == sc.Unit("K")
        last = first + chunk.sizes[PULSE_DIM] - 1
        # the value in force at the first pulse (stamp first - 0.5) and those up to the last pulse
        expected_k = np.arange(first, last + 1)
        np.testing.assert_array_equal(log.values, 300.0 + expected_k)
        expected_times = UTC_ORIGIN + np.round((expected_k - 0.5) * 1e9).astype("timedelta64[ns]")
        np.testing.assert_array_equal(log.coords["time"].to(unit="ns").values, expected_times)


def test_run_metadata_defaults_without_entry_fields(tmp_path: Path) -> None:
    path = _simple_file(tmp_path / "bare.nxs", [0.0, 1.0])
    listener = _listener(path)
    listener.connect()
    listener.start("from_start_of_run")
    extracted = listener.extract()
    chunk = extracted.chunk
    assert extracted.run_number == 0
    assert chunk.coords["run_number"].value == 0
    assert chunk.coords["instrument_name"].value == ""
    assert "start_time" not in chunk.coords


# --- errors --------------------------------------------------------------------------------------------------------
def _connect_and_read(path: Path) -> None:
    listener = _listener(path)
    listener.connect()
    listener.start("from_start_of_run")
    _drain(listener)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.nxs"
    with pytest.raises(SourceError, match=r"absent\.nxs"):
        _connect_and_read(path)


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a NeXus file\n")
    with pytest.raises(SourceError, match=r"notes\.txt"):
        _connect_and_read(path)


def test_hdf5_without_event_data(tmp_path: Path) -> None:
    path = tmp_path / "empty.nxs"
    with h5py.File(path, "w") as f:
        _sns_entry(f).create_dataset("run_number", data=b"1")
    with pytest.raises(SourceError, match=r"empty\.nxs.*NXevent_data"):
        _connect_and_read(path)


def test_event_data_without_event_index(tmp_path: Path) -> None:
    path = tmp_path / "noindex.nxs"
    with h5py.File(path, "w") as f:
        _write_bank(_sns_entry(f), "bank1_events", [(0.0, np.array([1]), np.array([10.0]))])
        del f["entry/bank1_events/event_index"]
    with pytest.raises(SourceError, match=r"noindex\.nxs.*event_index"):
        _connect_and_read(path)


@needs_sans2d
def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "truncated.nxs"
    data = SANS2D.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"truncated\.nxs"):
        _connect_and_read(path)


@pytest.mark.parametrize("field", ["event_time_offset", "event_index"])
def test_mismatched_lengths(tmp_path: Path, field: str) -> None:
    path = tmp_path / "mismatch.nxs"
    with h5py.File(path, "w") as f:
        pulses = [(0.0, np.array([1, 2]), np.array([10.0, 20.0])), (1.0, np.array([3]), np.array([30.0]))]
        _write_bank(_sns_entry(f), "bank1_events", pulses)
        group = f["entry/bank1_events"]
        values = group[field][()]
        attrs = dict(group[field].attrs)
        del group[field]
        group.create_dataset(field, data=values[:-1])
        group[field].attrs.update(attrs)
    with pytest.raises(SourceError, match=r"mismatch\.nxs.*differ in length"):
        _connect_and_read(path)


def test_decreasing_event_index(tmp_path: Path) -> None:
    path = tmp_path / "decreasing.nxs"
    with h5py.File(path, "w") as f:
        pulses = [(0.0, np.array([1, 2]), np.array([10.0, 20.0])), (1.0, np.array([3]), np.array([30.0]))]
        _write_bank(_sns_entry(f), "bank1_events", pulses)
        f["entry/bank1_events/event_index"][1] = 5
    with pytest.raises(SourceError, match=r"decreasing\.nxs.*event_index"):
        _connect_and_read(path)


def test_unknown_units(tmp_path: Path) -> None:
    path = _simple_file(tmp_path / "units.nxs", [0.0], tof_units="furlong")
    with pytest.raises(SourceError, match=r"units\.nxs.*furlong"):
        _connect_and_read(path)


def test_a_block_that_cannot_be_read_fails_the_extract_of_its_own_chunk_though_read_ahead(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.nxs"
    with h5py.File(path, "w") as f:
        group = _sns_entry(f).create_group("bank1_events")
        group.attrs["NX_class"] = "NXevent_data"
        group.create_dataset("event_id", data=np.arange(40_000, dtype=np.uint32) % 500)
        tof = group.create_dataset(
            "event_time_offset", data=np.arange(40_000, dtype=np.float32), chunks=(10_000,), compression="gzip"
        )
        tof.attrs["units"] = "microsecond"
        etz = group.create_dataset("event_time_zero", data=np.arange(400, dtype=np.float64) / 60)
        etz.attrs["units"], etz.attrs["offset"] = "second", ZONE_OFFSET
        group.create_dataset("event_index", data=np.arange(0, 40_000, 100, dtype=np.uint64))
        stored = tof.id.get_chunk_info(2)  # the events of pulses 200..299
    with path.open("r+b") as raw:
        raw.seek(stored.byte_offset)
        raw.write(b"\xff" * stored.size)
    listener = _listener(path, replay_chunk_pulses=100)
    listener.connect()
    listener.start("from_start_of_run")
    assert [listener.extract().chunk.sizes[PULSE_DIM] for _ in range(2)] == [100, 100]  # 200..299 read ahead
    with pytest.raises(SourceError, match=r"cannot be read at pulses 200\.\.299"):
        listener.extract()
    listener.disconnect()


def test_disconnect_while_reading_ahead_is_quiet(tmp_path: Path) -> None:
    listener = _listener(_simple_file(tmp_path / "f.nxs", [i / 60 for i in range(200)]), replay_chunk_pulses=10)
    listener.connect()
    listener.start("from_start_of_run")
    assert listener.extract().chunk.sizes[PULSE_DIM] == 10
    listener.disconnect()  # the next chunk's read may be in progress: waited for, then the file closes
    listener.connect()  # the position is kept: the replay goes on with pulse 10, read from the file opened again
    listener.start("from_start_of_run")
    ids = np.concatenate([_events(x.chunk)[0] for x in _drain(listener)])
    np.testing.assert_array_equal(ids, np.arange(10, 200))


def test_missing_filename_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="filename"):
        FileEventDataListener(Config(listener="FileEventDataListener"))


def test_proton_charge_log_becomes_a_per_pulse_coordinate(tmp_path: Path) -> None:
    path = tmp_path / "charge.nxs"
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        bank = entry.create_group("bank1_events")
        bank.attrs["NX_class"] = "NXevent_data"
        bank["event_id"] = np.array([1, 2, 3, 4], np.uint32)
        bank["event_time_offset"] = np.array([10, 20, 30, 40], np.float32)
        bank["event_time_zero"] = np.array([0, 1 / 60, 2 / 60, 3 / 60])
        bank["event_time_zero"].attrs["offset"] = "2026-01-01T00:00:00"
        bank["event_index"] = np.array([0, 1, 3, 4], np.uint64)
        charge = entry.create_group("DASlogs").create_group("proton_charge")
        charge.attrs["NX_class"] = "NXlog"
        charge["time"] = np.array([0, 1 / 60, 3 / 60])  # no value logged for the third pulse
        charge["time"].attrs["start"] = "2026-01-01T00:00:00"
        charge["time"].attrs["units"] = "s"
        charge["value"] = np.array([1.0, 2.0, 4.0])
        charge["value"].attrs["units"] = "uC"
    listener = FileEventDataListener(Config(filename=str(path), replay_speed=0))
    listener.connect()
    listener.start("from_start_of_run")
    chunk = listener.extract().chunk
    assert chunk.coords["proton_charge"].unit == sc.Unit("pC")
    np.testing.assert_allclose(chunk.coords["proton_charge"].values, [1e6, 2e6, 0.0, 4e6])
    assert "proton_charge" not in {name for name in chunk.coords if chunk.coords[name].ndim == 0}


# --- event_id validation: out-of-range ids are dropped and counted, never wrapped ---------------------------------
def _ids_file(path: Path, ids: np.ndarray, *, detector_number: np.ndarray | None = None) -> Path:
    """One bank, one pulse per event (pulse i holds ids[i], tof 10 µs * i), ids stored with their own dtype."""
    with h5py.File(path, "w") as f:
        entry = _sns_entry(f)
        bank = entry.create_group("bank1_events")
        bank.attrs["NX_class"] = "NXevent_data"
        bank["event_id"] = ids
        bank["event_time_offset"] = np.arange(ids.size, dtype=np.float32) * 10
        bank["event_time_zero"] = np.arange(ids.size, dtype=np.float64)
        bank["event_index"] = np.arange(ids.size, dtype=np.uint64)
        if detector_number is not None:
            detector = entry.create_group("instrument").create_group("bank1")
            detector.attrs["NX_class"] = "NXdetector"
            detector["detector_number"] = detector_number
    return path


@pytest.mark.parametrize(
    ("ids", "dropped"),
    [
        (np.array([5, 3_000_000_000, 7, 6], np.uint32), {"event_id above 2147483647": 1}),
        (np.array([5, 2**40, 7, -3, 6], np.int64), {"event_id beyond 32 bits": 1, "event_id negative": 1}),
        (np.array([5, 2**40, 7, 2**63 + 5, 6], np.uint64), {"event_id beyond 32 bits": 2}),
        (np.array([5, -1, 7, -128, 6], np.int8), {"event_id negative": 2}),
        (np.array([5, 2**31, 7, 6], ">u4"), {"event_id above 2147483647": 1}),
        (
            np.array([5, 2**32 - 1, 7, 2**32, 6], np.int64),
            {"event_id above 2147483647": 1, "event_id beyond 32 bits": 1},
        ),
        (np.array([5, 7, 6], ">i8"), {}),
    ],
    ids=[
        "uint32 3e9",
        "int64 2**40 and negative",
        "uint64",
        "int8 negative",
        "big-endian uint32",
        "2**32-1 and 2**32",
        "big-endian int64",
    ],
)
def test_invalid_event_ids_are_dropped_and_counted_not_wrapped(tmp_path: Path, ids: np.ndarray, dropped: dict) -> None:
    listener = _listener(_ids_file(tmp_path / "ids.nxs", ids), replay_chunk_pulses=2)
    listener.connect()
    assert listener.pixel_range == (5, 7)  # from the valid ids: no NXdetector in the file
    listener.start("from_start_of_run")
    replay = _drain(listener)
    got = np.concatenate([_events(x.chunk)[0] for x in replay])
    np.testing.assert_array_equal(got, [5, 7, 6])
    total: dict[str, int] = {}
    for x in replay:
        for reason, count in x.dropped.items():
            total[reason] = total.get(reason, 0) + count
    assert total == dropped
    # the dropped events' pulses stay, empty; the others keep their time of flight
    tofs = np.concatenate([_events(x.chunk)[1] for x in replay])
    kept = [i for i, value in enumerate(ids.astype(object)) if 5 <= value <= 7]
    np.testing.assert_array_equal(tofs, np.array(kept, np.float32) * 10)
    assert sum(x.chunk.sizes[PULSE_DIM] for x in replay) == ids.size
    assert listener.health().counters == {
        "pulses": ids.size,
        "events": 3,
        "events_dropped": sum(dropped.values()),
    }


def test_dropped_counts_come_with_the_chunk_that_held_them(tmp_path: Path) -> None:
    ids = np.array([1, 2, 99, 3, -4, 2**35], np.int64)
    listener = _listener(_ids_file(tmp_path / "ids.nxs", ids, detector_number=np.arange(1, 11)), replay_chunk_pulses=2)
    listener.connect()
    listener.start("from_start_of_run")
    assert [dict(x.dropped) for x in _drain(listener)] == [
        {},
        {"event_id outside 1..10": 1},
        {"event_id negative": 1, "event_id beyond 32 bits": 1},
    ]


def test_pixel_range_from_nxdetector_detector_number(tmp_path: Path) -> None:
    """detector_number (2-D, as for a panel) gives the range; ids outside it are dropped even if the events had
    them all."""
    numbers = np.arange(100, 200, dtype=np.int32).reshape(10, 10)
    ids = np.array([100, 150, 199, 200, 99, 3], np.uint32)
    listener = _listener(_ids_file(tmp_path / "det.nxs", ids, detector_number=numbers), replay_chunk_pulses=None)
    listener.connect()
    assert listener.pixel_range == (100, 199)
    listener.start("from_start_of_run")
    (extracted,) = _drain(listener)
    np.testing.assert_array_equal(_events(extracted.chunk)[0], [100, 150, 199])
    assert extracted.dropped == {"event_id outside 100..199": 3}


def test_detector_numbers_outside_32_bits_are_ignored(tmp_path: Path) -> None:
    numbers = np.array([-1, -2, 10, 20, 2**40], np.int64)  # e.g. monitors with negative ids
    listener = _listener(_ids_file(tmp_path / "det.nxs", np.array([10, 15], np.int32), detector_number=numbers))
    listener.connect()
    assert listener.pixel_range == (10, 20)


def test_sns_banks_merged_with_ids_dropped_in_each_bank(tmp_path: Path) -> None:
    path = tmp_path / "banks.nxs"
    with h5py.File(path, "w") as f:
        entry = _sns_entry(f)
        _write_bank(entry, "bank1_events", [(0.0, np.array([1, 2]), np.array([1.0, 2.0])), (1.0, np.array([3]), [3])])
        _write_bank(entry, "bank2_events", [(1.0, np.array([4, 2**31 + 1]), np.array([4.0, 5.0]))])
        detector = entry.create_group("instrument/bank1")
        detector.attrs["NX_class"] = "NXdetector"
        detector["detector_number"] = np.arange(1, 5)
    listener = _listener(path, replay_chunk_pulses=None)
    listener.connect()
    listener.start("from_start_of_run")
    (extracted,) = _drain(listener)
    assert extracted.dropped == {"event_id above 2147483647": 1}
    assert _pulse_events(extracted.chunk, 0).tolist() == [[1, 1.0], [2, 2.0]]
    assert _pulse_events(extracted.chunk, 1).tolist() == [[3, 3.0], [4, 4.0]]


def test_a_chunk_holds_at_most_source_buffer_mb_of_events(tmp_path: Path) -> None:
    """1 MiB is 87,381 events of 12 bytes: pulses of 50,000 events come one per chunk, and one pulse larger than
    the budget is still delivered whole."""
    path = tmp_path / "big.nxs"
    sizes = [50_000, 30_000, 50_000, 100_000, 1]
    with h5py.File(path, "w") as f:
        pulses = [(float(i), np.full(n, i), np.ones(n)) for i, n in enumerate(sizes)]
        _write_bank(_sns_entry(f), "bank1_events", pulses)
    listener = _listener(path, replay_chunk_pulses=None, source_buffer_mb=1)
    listener.connect()
    listener.start("from_start_of_run")
    replay = _drain(listener)
    assert [x.chunk.bins.size().values.tolist() for x in replay] == [[50_000, 30_000], [50_000], [100_000], [1]]


def test_health_reports_the_position(tmp_path: Path) -> None:
    listener = _listener(_simple_file(tmp_path / "pos.nxs", [0.0, 1.0, 2.0]), replay_chunk_pulses=2)
    listener.connect()
    listener.start("from_start_of_run")
    assert listener.health().state == f"'{tmp_path / 'pos.nxs'}': pulse 0 of 3"
    listener.extract()
    assert listener.health().state == f"'{tmp_path / 'pos.nxs'}': pulse 2 of 3"
    assert listener.health().counters == {"pulses": 2, "events": 2, "events_dropped": 0}


def test_integer_nanosecond_pulse_times_are_exact(tmp_path: Path) -> None:
    """int64 ns since the epoch (as ESS files store them) keeps every nanosecond (float64 seconds would not)."""
    stamps = np.array([1_767_243_600_000_000_001, 1_767_243_600_016_666_667], np.int64)
    path = _simple_file(tmp_path / "ns.nxs", [0.0, 1.0], etz_units="ns", offset=None)
    with h5py.File(path, "r+") as f:
        del f["entry/bank1_events/event_time_zero"]
        f["entry/bank1_events/event_time_zero"] = stamps
        f["entry/bank1_events/event_time_zero"].attrs["units"] = "ns"
    listener = _listener(path)
    listener.connect()
    listener.start("from_start_of_run")
    np.testing.assert_array_equal(listener.extract().chunk.coords[PULSE_DIM].values.view(np.int64), stamps)


def test_malformed_metadata_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _simple_file(tmp_path / "meta.nxs", [0.0, 1.0])
    with h5py.File(path, "r+") as f:
        f["entry/run_number"] = b"9" * 5000
        f["entry/start_time"] = b"not a time"
        f.create_group("entry/instrument/name")  # a group where a dataset is expected
    listener = _listener(path)
    listener.connect()
    listener.start("from_start_of_run")
    chunk = listener.extract().chunk
    assert chunk.coords["run_number"].value == 0
    assert "start_time" not in chunk.coords
    assert "Ignoring run_number" in caplog.text
    assert "Ignoring start_time" in caplog.text


def test_sns_error_and_unmapped_banks_are_skipped_as_mantid_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "junk.nxs"
    with h5py.File(path, "w") as f:
        entry = _sns_entry(f)
        _write_bank(entry, "bank1_events", [(0.0, np.array([1, 2]), np.array([1.0, 2.0]))])
        _write_bank(entry, "bank_error_events", [(0.0, np.array([2**31 + 7]), np.array([3.0]))])
        _write_bank(entry, "bank_unmapped_events", [(0.0, np.array([4_000_000_000, 9]), np.array([4.0, 5.0]))])
    caplog.set_level(logging.INFO, logger="livereduce.LoadEventNexus")
    listener = _listener(path)
    listener.connect()
    assert listener.pixel_range == (1, 2)
    listener.start("from_start_of_run")
    (extracted,) = _drain(listener)
    np.testing.assert_array_equal(_events(extracted.chunk)[0], [1, 2])
    assert extracted.dropped == {}
    assert (
        "Skipping entry/bank_error_events, entry/bank_unmapped_events (3 events of error and unmapped pixels"
        in caplog.text
    )


def test_only_junk_banks_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.nxs"
    with h5py.File(path, "w") as f:
        _write_bank(_sns_entry(f), "bank_error_events", [(0.0, np.array([1]), np.array([3.0]))])
    with pytest.raises(SourceError, match="no NXevent_data group found except entry/bank_error_events"):
        _listener(path).connect()


# --- the reader on its own -----------------------------------------------------------------------------------------
@needs_sans2d
def test_event_file_reads_sans2d_in_chunks_without_a_config() -> None:
    with h5py.File(SANS2D, "r") as f:
        ids = f["raw_data_1/detector_1_events/event_id"][()]
        tof = f["raw_data_1/detector_1_events/event_time_offset"][()]
    with EventFile(SANS2D) as file:
        assert file.n_pulses == 300
        assert file.banks == ("/raw_data_1/detector_1_events",)
        assert file.pixel_range == (int(ids.min()), int(ids.max()))
        assert file.pixel_source == "from the event data: no NXdetector detector_number"
        assert int(file.events_before[-1]) == ids.size
        assert (file.metadata.run_number, file.metadata.instrument_name) == (0, "SANS2D")
        assert file.proton_charge is None
        pieces = list(file.chunks(128))
    assert [chunk.sizes[PULSE_DIM] for chunk, _ in pieces] == [128, 128, 44]
    assert all(dropped == {} for _, dropped in pieces)
    got = [_events(chunk) for chunk, _ in pieces]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), ids)
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), tof)
    file.close()  # closed by the with block already: safe again


def test_event_file_reads_any_range_and_refuses_a_range_outside_the_file(tmp_path: Path) -> None:
    path = _simple_file(tmp_path / "range.nxs", [0.0, 1.0, 2.0, 3.0])
    with EventFile(path) as file:
        chunk, dropped = file.read(1, 3)
        np.testing.assert_array_equal(_events(chunk)[0], [1, 2])
        assert dropped == {}
        assert file.read(4, 4)[0].sizes[PULSE_DIM] == 0
        for first, last in ((-1, 2), (3, 2), (0, 5)):
            with pytest.raises(ValueError, match=f"pulses {first}..{last} are not a range of 0..4"):
                file.read(first, last)


def test_event_file_title_and_experiment_identifier(tmp_path: Path) -> None:
    path = _metadata_file(tmp_path / "meta.nxs")
    with h5py.File(path, "r+") as f:
        f["entry/title"] = b"vanadium, 300 K"
        f["entry/experiment_identifier"] = b"IPTS-1234"
    with EventFile(path) as file:
        assert (file.title, file.experiment_identifier) == ("vanadium, 300 K", "IPTS-1234")
        assert file.metadata.run_number == 12345
        assert list(file.logs) == ["SampleTemp"]
    with EventFile(_simple_file(tmp_path / "bare.nxs", [0.0])) as file:
        assert (file.title, file.experiment_identifier, file.logs) == ("", "", {})


def test_event_file_errors_are_the_listeners_one_line_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^'.*absent\.nxs': no such file$"):
        EventFile(tmp_path / "absent.nxs")
    path = tmp_path / "notes.txt"
    path.write_text("this is not a NeXus file\n")
    with pytest.raises(SourceError, match=r"^'.*notes\.txt': not an HDF5/NeXus file$"):
        EventFile(path)


@needs_sans2d
def test_the_tools_read_files_without_a_daemon_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """livereduce-fake-sms and livereduce-kafka-replay read files with EventFile: they build no daemon ``Config``
    (which they did to open a FileEventDataListener)."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a daemon Config was built")

    monkeypatch.setattr(Config, "__init__", refuse)
    monkeypatch.setattr(Config, "model_validate", classmethod(refuse))
    with pytest.raises(AssertionError, match="a daemon Config was built"):
        Config(filename=str(SANS2D))  # the trap works
    run = load_run(SANS2D)
    assert (run.events, run.pulse_ns.size, run.instrument) == (237_078, 300, "SANS2D")
    kafka_replay = pytest.importorskip("livereduce.tools.kafka_replay")
    # the file is read (its instrument name gives the topics), then the broker is found missing: exit 3
    assert kafka_replay.main([str(SANS2D), "--broker", "127.0.0.1:9", "--timeout", "0.5"]) == 3
    assert "Kafka broker 127.0.0.1:9 unreachable" in capsys.readouterr().err
