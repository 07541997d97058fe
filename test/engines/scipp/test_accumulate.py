"""Tests of the scipp engine's accumulation: histogram_events, Accumulator (Add/Replace/Append), EventAccumulator."""

from __future__ import annotations

import numpy as np
import pytest
import scipp as sc

from livereduce.engines.scipp.accumulate import Accumulator, EventAccumulator, histogram_events
from livereduce.engines.scipp.chunk import (
    PULSE_DIM,
    RunMetadata,
    flat_events,
    is_event_chunk,
    make_chunk,
    metadata_of,
)
from livereduce.errors import AccumulationError

T0 = np.datetime64("2026-01-01T00:00:00", "ns")
PULSE = np.timedelta64(16_666_667, "ns")
RESERVE = 1 << 20


# --- helpers -----------------------------------------------------------------------------------------------------
def _metadata(run: int = 1, *, temperature: float | None = None) -> RunMetadata:
    logs = {}
    if temperature is not None:
        logs["temperature"] = sc.DataArray(
            sc.array(dims=["time"], values=[temperature], unit="K"),
            coords={"time": sc.array(dims=["time"], values=[T0 + run * np.timedelta64(1, "s")], unit="ns")},
        )
    return RunMetadata(
        run_number=run,
        start_time=T0 + np.timedelta64(run * 3600, "s"),
        instrument_name=f"INSTR{run}",
        logs=logs,
    )


def _chunk(
    seed: int,
    n_pulses: int,
    first_pulse: int = 0,
    *,
    run: int = 1,
    max_events: int = 20,
    pixels: tuple[int, int] = (0, 99),
    charge: bool = True,
    temperature: float | None = None,
) -> sc.DataArray:
    """A chunk of ``n_pulses`` (>= 1) pulses with random events."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, max_events + 1, n_pulses)
    n = int(counts.sum())
    ids = rng.integers(pixels[0], pixels[1] + 1, n).astype(np.int32)
    tof = rng.uniform(0, 16_000, n).astype(np.float32)
    times = T0 + (first_pulse + np.arange(n_pulses)) * PULSE
    index = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    proton_charge = rng.normal(4e6, 1e5, n_pulses) if charge else None
    return make_chunk(
        ids, tof, times, index, metadata=_metadata(run, temperature=temperature), proton_charge=proton_charge
    )


def _chunk_from(ids: list[int], pulses: list[int] | None = None) -> sc.DataArray:
    """A chunk with the given event ids, ``pulses`` events per pulse (default: all in one pulse)."""
    pulses = pulses if pulses is not None else [len(ids)]
    index = np.concatenate([[0], np.cumsum(pulses)[:-1]]).astype(np.int64)
    return make_chunk(
        np.array(ids, np.int32),
        np.linspace(0, 1000, len(ids)).astype(np.float32),
        T0 + np.arange(len(pulses)) * PULSE,
        index,
        metadata=_metadata(7),
    )


def _snapshot(data: sc.DataArray) -> dict[str, np.ndarray]:
    """Copies of everything that defines an event accumulation: per-pulse sizes, events, pulse coordinates."""
    out = {"sizes": data.bins.size().values.copy()}
    if data.sizes[PULSE_DIM]:
        events = data.bins.concat().value
    else:
        events = data.bins.constituents["data"][data.bins.constituents["dim"], 0:0]
    out["event_id"] = events.coords["event_id"].values.copy()
    out["event_time_offset"] = events.coords["event_time_offset"].values.copy()
    out["weights"] = events.values.copy()
    for name, coord in data.coords.items():
        if coord.dims == (PULSE_DIM,):
            out[name] = coord.values.copy()
    return out


def _concat_snapshots(snapshots: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([s[key] for s in snapshots]) for key in snapshots[0]}


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def _hist(chunk: sc.DataArray, first: int = 0, last: int = 99) -> sc.DataArray:
    return histogram_events(chunk, (first, last))


# --- event chunks --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["Add", "Append"])
def test_add_of_event_chunks_is_concatenation(method: str) -> None:
    chunks = [_chunk(seed, 5 + seed, first_pulse=10 * seed) for seed in range(4)]
    expected = [_snapshot(chunk) for chunk in chunks]
    accumulator = Accumulator(method, RESERVE)
    views = []
    for i, chunk in enumerate(chunks):
        result = accumulator.accumulate(chunk, metadata_of(chunk), replace=i == 0)
        assert is_event_chunk(result)
        assert result is accumulator.accumulation
        _assert_same(_snapshot(result), _concat_snapshots(expected[: i + 1]))
        views.append(result)
    # views handed out earlier stay valid after later appends
    for i, view in enumerate(views):
        _assert_same(_snapshot(view), _concat_snapshots(expected[: i + 1]))
    final = views[-1]
    assert final.coords["proton_charge"].unit == sc.Unit("pC")
    assert final.coords[PULSE_DIM].dtype == sc.DType.datetime64
    assert final.bins.constituents["data"].coords["event_time_offset"].unit == sc.Unit("us")
    # the chunks themselves are untouched
    for chunk, snapshot in zip(chunks, expected, strict=True):
        _assert_same(_snapshot(chunk), snapshot)


def test_first_chunk_without_replace_flag_starts_the_accumulation() -> None:
    chunk = _chunk(1, 4)
    result = Accumulator("Add", RESERVE).accumulate(chunk, metadata_of(chunk), replace=False)
    _assert_same(_snapshot(result), _snapshot(chunk))


def test_replace_flag_resets_an_event_accumulation() -> None:
    chunks = [_chunk(seed, 6, first_pulse=10 * seed) for seed in range(4)]
    expected = [_snapshot(chunk) for chunk in chunks]
    accumulator = Accumulator("Add", RESERVE)
    accumulator.accumulate(chunks[0], metadata_of(chunks[0]), replace=True)
    before = accumulator.accumulate(chunks[1], metadata_of(chunks[1]), replace=False)
    reset = accumulator.accumulate(chunks[2], metadata_of(chunks[2]), replace=True)
    _assert_same(_snapshot(reset), expected[2])
    after = accumulator.accumulate(chunks[3], metadata_of(chunks[3]), replace=False)
    _assert_same(_snapshot(after), _concat_snapshots(expected[2:]))
    _assert_same(_snapshot(before), _concat_snapshots(expected[:2]))


def test_replace_method_keeps_only_the_latest_chunk() -> None:
    accumulator = Accumulator("Replace", RESERVE)
    for seed in range(3):
        chunk = _chunk(seed, 5, first_pulse=10 * seed)
        expected = _snapshot(chunk)
        result = accumulator.accumulate(chunk, metadata_of(chunk), replace=False)
        _assert_same(_snapshot(result), expected)


def test_event_accumulator_with_tiny_reserve_grows() -> None:
    accumulator = EventAccumulator(reserve_bytes=1)  # at least 1 MiB: about 87k events of 12 bytes
    chunks = [_chunk(seed, 100, first_pulse=100 * seed, max_events=1000) for seed in range(8)]
    total = sum(int(chunk.bins.size().sum().value) for chunk in chunks)
    assert total > 2 * (RESERVE // 12), "the chunks must overflow the reserve more than once"
    expected = [_snapshot(chunk) for chunk in chunks]
    views = []
    for i, chunk in enumerate(chunks):
        views.append(accumulator.append(chunk))
        _assert_same(_snapshot(views[-1]), _concat_snapshots(expected[: i + 1]))
    for i, view in enumerate(views):
        _assert_same(_snapshot(view), _concat_snapshots(expected[: i + 1]))
    _assert_same(_snapshot(accumulator.accumulation()), _concat_snapshots(expected))


def test_event_accumulator_many_small_chunks() -> None:
    accumulator = EventAccumulator(RESERVE)
    chunks = [_chunk(seed, 1 + seed % 3, first_pulse=10 * seed, max_events=3) for seed in range(200)]
    expected = [_snapshot(chunk) for chunk in chunks]
    for chunk in chunks:
        result = accumulator.append(chunk)
    _assert_same(_snapshot(result), _concat_snapshots(expected))


def test_event_accumulator_rejects_different_pulse_coordinates_and_stays_usable() -> None:
    accumulator = EventAccumulator(RESERVE)
    first, other, third = _chunk(1, 5), _chunk(2, 5, 10, charge=False), _chunk(3, 5, 20)
    accumulator.append(first)
    with pytest.raises(AccumulationError, match="proton_charge"):
        accumulator.append(other)
    result = accumulator.append(third)
    _assert_same(_snapshot(result), _concat_snapshots([_snapshot(first), _snapshot(third)]))


def test_rejected_dense_chunk_does_not_lose_the_event_accumulation() -> None:
    """After an AccumulationError the accumulation is unchanged, so the next event chunk is added to it."""
    chunks = [_chunk(seed, 5, first_pulse=10 * seed) for seed in range(2)]
    expected = [_snapshot(chunk) for chunk in chunks]
    accumulator = Accumulator("Add", RESERVE)
    accumulator.accumulate(chunks[0], metadata_of(chunks[0]), replace=True)
    dense = _hist(_chunk(9, 5))
    with pytest.raises(AccumulationError):
        accumulator.accumulate(dense, metadata_of(dense), replace=False)
    _assert_same(_snapshot(accumulator.accumulation), expected[0])
    result = accumulator.accumulate(chunks[1], metadata_of(chunks[1]), replace=False)
    _assert_same(_snapshot(result), _concat_snapshots(expected))


# --- histogram_events ----------------------------------------------------------------------------------------------
def test_histogram_counts_per_pixel_over_declared_range() -> None:
    chunk = _chunk_from([10, 12, 12, 5, 25, 19, 19, 19, 20, 9], pulses=[4, 0, 6])
    counts = histogram_events(chunk, (10, 19))
    assert counts.dims == ("event_id",)
    assert counts.sizes == {"event_id": 10}
    np.testing.assert_array_equal(counts.coords["event_id"].values, np.arange(10, 20))
    assert counts.coords["event_id"].dtype == sc.DType.int32
    np.testing.assert_array_equal(counts.values, [1, 0, 2, 0, 0, 0, 0, 0, 0, 3])
    assert counts.unit == sc.Unit("counts")
    assert counts.bins is None
    for name in ("run_number", "start_time", "instrument_name"):
        assert name in counts.coords
        assert not counts.coords[name].aligned
    assert counts.coords["run_number"].value == 7


def test_histogram_of_random_chunk_matches_bincount() -> None:
    chunk = _chunk(3, 50, pixels=(0, 120))
    ids = chunk.bins.concat().value.coords["event_id"].values
    counts = histogram_events(chunk, (0, 99))
    np.testing.assert_array_equal(counts.values, np.bincount(ids[ids <= 99], minlength=100))


def test_histogram_of_non_contiguous_pulse_selection() -> None:
    chunk = _chunk(4, 10)
    part = chunk[PULSE_DIM, 3:7]
    ids = part.bins.concat().value.coords["event_id"].values
    counts = histogram_events(part, (0, 99))
    np.testing.assert_array_equal(counts.values, np.bincount(ids, minlength=100))


def test_histogram_of_chunk_without_pulses() -> None:
    chunk = _chunk(5, 3)[PULSE_DIM, 0:0]
    counts = histogram_events(chunk, (0, 9))
    np.testing.assert_array_equal(counts.values, np.zeros(10))


def test_histogram_of_other_binned_data_sums_each_bin() -> None:
    chunk = _chunk(6, 10)
    edges = sc.arange("event_id", 0, 101, unit=None, dtype="int32")
    by_pixel = flat_events(chunk).bin(event_id=edges)
    counts = histogram_events(by_pixel, (0, 99))
    assert counts.bins is None
    assert counts.dims == ("event_id",)
    np.testing.assert_array_equal(counts.values, by_pixel.bins.size().values)


def test_histogram_leaves_dense_data_and_maps_over_groups() -> None:
    dense = sc.DataArray(sc.arange("x", 5.0, unit="counts"))
    assert histogram_events(dense, (0, 9)) is dense
    group = sc.DataGroup({"events": _chunk_from([1, 2, 2]), "dense": dense})
    result = histogram_events(group, (0, 3))
    assert isinstance(result, sc.DataGroup)
    np.testing.assert_array_equal(result["events"].values, [0, 1, 2, 0])
    assert sc.identical(result["dense"], dense)


# --- dense accumulation --------------------------------------------------------------------------------------------
def test_dense_add_sums() -> None:
    chunks = [_chunk(seed, 10, first_pulse=10 * seed) for seed in range(3)]
    ids = np.concatenate([chunk.bins.concat().value.coords["event_id"].values for chunk in chunks])
    accumulator = Accumulator("Add", RESERVE)
    for i, chunk in enumerate(chunks):
        result = accumulator.accumulate(_hist(chunk), metadata_of(chunk), replace=i == 0)
    assert result.dims == ("event_id",)
    np.testing.assert_array_equal(result.values, np.bincount(ids, minlength=100))
    np.testing.assert_array_equal(result.coords["event_id"].values, np.arange(100))


def test_dense_add_of_histograms_with_different_logs() -> None:
    chunks = [_chunk(seed, 10, first_pulse=10 * seed, temperature=300.0 + seed) for seed in range(2)]
    ids = np.concatenate([chunk.bins.concat().value.coords["event_id"].values for chunk in chunks])
    accumulator = Accumulator("Add", RESERVE)
    accumulator.accumulate(_hist(chunks[0]), metadata_of(chunks[0]), replace=True)
    result = accumulator.accumulate(_hist(chunks[1]), metadata_of(chunks[1]), replace=False)
    np.testing.assert_array_equal(result.values, np.bincount(ids, minlength=100))
    assert result.coords["temperature"].value.values[0] == 301.0


@pytest.mark.parametrize(
    ("pixels", "sizes"),
    [((0, 11), "event_id: 12"), ((5, 14), "event_id: 10")],
    ids=["other-shape", "other-coordinate"],
)
def test_dense_add_of_incompatible_arrays(pixels: tuple[int, int], sizes: str) -> None:
    accumulator = Accumulator("Add", RESERVE)
    first = _hist(_chunk(1, 10), 0, 9)
    accumulator.accumulate(first, metadata_of(first), replace=True)
    before = accumulator.accumulation.copy()
    other = _hist(_chunk(2, 10), *pixels)
    with pytest.raises(AccumulationError) as info:
        accumulator.accumulate(other, metadata_of(other), replace=False)
    message = str(info.value)
    assert "event_id: 10" in message
    assert sizes in message
    assert sc.identical(accumulator.accumulation, before)


def test_dense_add_of_different_units_is_an_accumulation_error() -> None:
    accumulator = Accumulator("Add", RESERVE)
    first = sc.DataArray(sc.arange("x", 4.0, unit="counts"))
    accumulator.accumulate(first, RunMetadata(), replace=True)
    before = accumulator.accumulation.copy()
    with pytest.raises(AccumulationError, match="x: 4"):
        accumulator.accumulate(sc.DataArray(sc.arange("x", 4.0, unit="m")), RunMetadata(), replace=False)
    assert sc.identical(accumulator.accumulation, before)


def test_data_group_add_member_by_member() -> None:
    def group(seed: int) -> sc.DataGroup:
        chunk = _chunk(seed, 10)
        monitor = sc.DataArray(sc.full(dims=["tof"], shape=[5], value=float(seed), unit="counts"))
        return sc.DataGroup({"detector": _hist(chunk), "monitor": monitor})

    groups = [group(seed) for seed in range(1, 4)]
    expected_detector = sum(g["detector"].values for g in groups)
    accumulator = Accumulator("Add", RESERVE)
    for i, g in enumerate(groups):
        result = accumulator.accumulate(g, RunMetadata(run_number=5), replace=i == 0)
    assert isinstance(result, sc.DataGroup)
    np.testing.assert_array_equal(result["detector"].values, expected_detector)
    np.testing.assert_array_equal(result["monitor"].values, np.full(5, 6.0))


def test_data_group_add_with_other_members_is_an_error() -> None:
    accumulator = Accumulator("Add", RESERVE)
    first = sc.DataGroup({"a": sc.DataArray(sc.ones(sizes={"x": 3}))})
    accumulator.accumulate(first, RunMetadata(), replace=True)
    with pytest.raises(AccumulationError, match="members"):
        accumulator.accumulate(sc.DataGroup({"b": sc.DataArray(sc.ones(sizes={"x": 3}))}), RunMetadata(), False)


def test_data_group_add_failing_in_one_member_leaves_all_members_unchanged() -> None:
    accumulator = Accumulator("Add", RESERVE)
    first = sc.DataGroup({"a": sc.DataArray(sc.ones(sizes={"x": 3})), "b": sc.DataArray(sc.ones(sizes={"x": 3}))})
    accumulator.accumulate(first, RunMetadata(), replace=True)
    before = {key: value.copy() for key, value in accumulator.accumulation.items()}
    bad = sc.DataGroup({"a": sc.DataArray(sc.ones(sizes={"x": 3})), "b": sc.DataArray(sc.ones(sizes={"x": 4}))})
    with pytest.raises(AccumulationError, match="x: 4"):
        accumulator.accumulate(bad, RunMetadata(), replace=False)
    for key, value in before.items():
        assert sc.identical(accumulator.accumulation[key], value), f"member {key} was modified"


def test_append_of_dense_arrays_concatenates_along_first_dim() -> None:
    chunks = [_chunk(seed, 10) for seed in range(2)]
    hists = [_hist(chunk, 0, 9) for chunk in chunks]
    expected = np.concatenate([h.values for h in hists])
    accumulator = Accumulator("Append", RESERVE)
    accumulator.accumulate(hists[0], metadata_of(chunks[0]), replace=True)
    result = accumulator.accumulate(hists[1], metadata_of(chunks[1]), replace=False)
    assert result.sizes == {"event_id": 20}
    np.testing.assert_array_equal(result.values, expected)
    np.testing.assert_array_equal(result.coords["event_id"].values, np.tile(np.arange(10), 2))


def test_append_of_2d_dense_arrays_without_metadata_coords() -> None:
    """A script's output usually has no run-metadata coordinates; the accumulator attaches them itself."""
    accumulator = Accumulator("Append", RESERVE)
    a = sc.DataArray(sc.ones(sizes={"spectrum": 2, "tof": 3}))
    b = sc.DataArray(sc.zeros(sizes={"spectrum": 1, "tof": 3}))
    accumulator.accumulate(a, RunMetadata(), replace=True)
    result = accumulator.accumulate(b, RunMetadata(), replace=False)
    assert result.sizes == {"spectrum": 3, "tof": 3}
    np.testing.assert_array_equal(result.values, [[1, 1, 1], [1, 1, 1], [0, 0, 0]])


def test_append_of_dense_arrays_from_different_runs() -> None:
    first = _chunk(1, 5, run=1, temperature=290.0)
    second = _chunk(2, 5, first_pulse=10, run=2, temperature=310.0)
    accumulator = Accumulator("Append", RESERVE)
    accumulator.accumulate(_hist(first, 0, 9), metadata_of(first), replace=True)
    result = accumulator.accumulate(_hist(second, 0, 9), metadata_of(second), replace=False)
    assert result.sizes == {"event_id": 20}
    assert result.coords["run_number"].value == 2
    assert result.coords["temperature"].value.values[0] == 310.0


def test_binned_by_pixel_add_concatenates_bins() -> None:
    edges = sc.arange("event_id", 0, 11, unit=None, dtype="int32")
    chunks = [_chunk(seed, 10, pixels=(0, 9)) for seed in range(2)]
    binned = [flat_events(chunk).bin(event_id=edges) for chunk in chunks]
    per_pixel = [
        [np.sort(b["event_id", i].value.coords["event_time_offset"].values) for i in range(10)] for b in binned
    ]
    accumulator = Accumulator("Add", RESERVE)
    accumulator.accumulate(binned[0], metadata_of(chunks[0]), replace=True)
    result = accumulator.accumulate(binned[1], metadata_of(chunks[1]), replace=False)
    assert result.dims == ("event_id",)
    assert result.bins is not None
    np.testing.assert_array_equal(
        result.bins.size().values, binned[0].bins.size().values + binned[1].bins.size().values
    )
    for i in range(10):
        got = np.sort(result["event_id", i].value.coords["event_time_offset"].values)
        np.testing.assert_array_equal(got, np.sort(np.concatenate([per_pixel[0][i], per_pixel[1][i]])))


# --- run metadata --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dense", [False, True], ids=["events", "histogram"])
def test_accumulation_carries_latest_run_metadata(dense: bool) -> None:
    first = _chunk(1, 5, run=1, temperature=290.0)
    second = _chunk(2, 5, first_pulse=10, run=2, temperature=310.0)
    accumulator = Accumulator("Add", RESERVE)
    for i, chunk in enumerate((first, second)):
        processed = _hist(chunk) if dense else chunk
        result = accumulator.accumulate(processed, metadata_of(chunk), replace=i == 0)
    assert result.coords["run_number"].value == 2
    assert result.coords["instrument_name"].value == "INSTR2"
    assert result.coords["start_time"].value == T0 + np.timedelta64(2 * 3600, "s")
    assert result.coords["temperature"].value.values[0] == 310.0
    for name in ("run_number", "instrument_name", "start_time", "temperature"):
        assert not result.coords[name].aligned, name
    assert metadata_of(result).run_number == 2
