"""End to end: replay the real SANS2D events through the daemon (subprocess) and check the reduced result
against an independent h5py + numpy computation from the file; and the replay benchmark's daemon run."""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import scipp as sc

from conftest import SANS2D_EVENTS, Sans2dReference

BENCH_REPLAY = Path(__file__).resolve().parents[1] / "bench" / "bench_replay.py"
CHUNK_PULSES = 50
N_CHUNKS = 6
TOF_EDGES = np.linspace(0.0, 100_000.0, 101)

SAVE_ACCUMULATION = """
    import os
    from pathlib import Path
    import scipp as sc
    out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
    out.mkdir(exist_ok=True)
    sc.io.save_hdf5(input, out / "result.h5")
    output = input
"""

HISTOGRAM_PROC = """
    import scipp as sc
    from livereduce.engines.scipp.chunk import flat_events
    events = flat_events(input)
    pixels = events.hist(event_id=sc.arange("event_id", 0, 130_001, unit=None, dtype="int32"))
    tof = events.hist(event_time_offset=sc.linspace("event_time_offset", 0.0, 100_000.0, 101, unit="us"))
    output = sc.DataGroup({"pixels": pixels, "tof": tof})
"""


def replay(sans2d: Path, **keys: object) -> dict:
    config = {
        "listener": "FileEventDataListener",
        "filename": str(sans2d),
        "replay_speed": 0,
        "replay_chunk_pulses": CHUNK_PULSES,
        "update_every": 0.01,
        "run_transition": "Stop",
    }
    config.update(keys)
    return config


def finished(daemon, config: dict, scripts: dict[str, str]) -> sc.DataArray | sc.DataGroup:
    run = daemon(config, scripts).finish()
    assert run.returncode == 0, run.stdout
    assert "Traceback" not in run.log
    assert "Run #0 ended. RunTransitionBehavior Stop." in run.log
    return sc.io.load_hdf5(run.workdir / "out" / "result.h5")


def events_of(data: sc.DataArray) -> tuple[np.ndarray, np.ndarray]:
    table = data.bins.concat().value
    return table.coords["event_id"].values, table.coords["event_time_offset"].values


@pytest.mark.parametrize("accum_method", ["Add", "Append"])
def test_preserve_events_keeps_every_event_in_order(daemon, sans2d, sans2d_reference: Sans2dReference, accum_method):
    accumulation = finished(daemon, replay(sans2d, accum_method=accum_method), {"post_proc": SAVE_ACCUMULATION})

    assert accumulation.sizes == {"event_time_zero": 300}
    ids, tof = events_of(accumulation)
    assert ids.size == SANS2D_EVENTS
    np.testing.assert_array_equal(ids, sans2d_reference.event_id)
    np.testing.assert_array_equal(tof, sans2d_reference.event_time_offset)
    np.testing.assert_array_equal(accumulation.coords["event_time_zero"].values, sans2d_reference.pulse_times)
    np.testing.assert_array_equal(
        accumulation.bins.size().values, np.diff(np.append(sans2d_reference.event_index, SANS2D_EVENTS))
    )
    assert accumulation.bins.coords["event_time_offset"].unit == sc.Unit("us")
    # per-pixel counts and TOF histogram of what the daemon kept equal numpy's on the file
    np.testing.assert_array_equal(np.bincount(ids), np.bincount(sans2d_reference.event_id))
    np.testing.assert_array_equal(
        np.histogram(tof, TOF_EDGES)[0], np.histogram(sans2d_reference.event_time_offset, TOF_EDGES)[0]
    )


def test_replace_keeps_only_the_last_chunk(daemon, sans2d, sans2d_reference: Sans2dReference):
    accumulation = finished(daemon, replay(sans2d, accum_method="Replace"), {"post_proc": SAVE_ACCUMULATION})

    last = sans2d_reference.pulses(300 - CHUNK_PULSES, 300)
    ids, tof = events_of(accumulation)
    assert accumulation.sizes == {"event_time_zero": CHUNK_PULSES}
    np.testing.assert_array_equal(ids, sans2d_reference.event_id[last])
    np.testing.assert_array_equal(tof, sans2d_reference.event_time_offset[last])


@pytest.mark.parametrize("accum_method", ["Add", "Replace"])
def test_histograms_per_pixel_and_tof_equal_numpy(daemon, sans2d, sans2d_reference: Sans2dReference, accum_method):
    config = replay(sans2d, accum_method=accum_method, preserve_events=False)
    result = finished(daemon, config, {"proc": HISTOGRAM_PROC, "post_proc": SAVE_ACCUMULATION})

    events = sans2d_reference.pulses(300 - CHUNK_PULSES if accum_method == "Replace" else 0, 300)
    expected_pixels = np.bincount(sans2d_reference.event_id[events], minlength=130_000)
    expected_tof = np.histogram(sans2d_reference.event_time_offset[events], TOF_EDGES)[0]
    np.testing.assert_array_equal(result["pixels"].values, expected_pixels)
    np.testing.assert_array_equal(result["tof"].values, expected_tof)
    if accum_method == "Add":
        assert result["pixels"].sum().value == SANS2D_EVENTS


def test_events_left_by_proc_are_histogrammed_per_pixel_over_the_source_range(
    daemon, sans2d, sans2d_reference: Sans2dReference
):
    result = finished(daemon, replay(sans2d, preserve_events=False), {"post_proc": SAVE_ACCUMULATION})

    first, last = int(sans2d_reference.event_id.min()), int(sans2d_reference.event_id.max())
    assert result.dims == ("event_id",)
    np.testing.assert_array_equal(result.coords["event_id"].values, np.arange(first, last + 1))
    np.testing.assert_array_equal(result.values, np.bincount(sans2d_reference.event_id)[first:])
    assert result.sum().value == SANS2D_EVENTS


def test_append_of_histograms_grows_the_pixel_axis(daemon, sans2d, sans2d_reference: Sans2dReference):
    result = finished(
        daemon, replay(sans2d, accum_method="Append", preserve_events=False), {"post_proc": SAVE_ACCUMULATION}
    )

    first, last = int(sans2d_reference.event_id.min()), int(sans2d_reference.event_id.max())
    blocks = result.values.reshape(N_CHUNKS, last - first + 1)
    for chunk, block in enumerate(blocks):
        events = sans2d_reference.pulses(chunk * CHUNK_PULSES, (chunk + 1) * CHUNK_PULSES)
        expected = np.bincount(sans2d_reference.event_id[events] - first, minlength=last - first + 1)
        np.testing.assert_array_equal(block, expected)
    assert blocks.sum() == SANS2D_EVENTS


def test_real_time_replay_delivers_a_prefix_of_the_file(daemon, sans2d, sans2d_reference: Sans2dReference):
    process = daemon(
        replay(sans2d, replay_speed=1, replay_chunk_pulses=None, update_every=1), {"post_proc": SAVE_ACCUMULATION}
    )
    process.wait_for_log(lambda log: "Chunk 3:" in log)
    process.send(signal.SIGTERM)
    run = process.finish()

    assert run.returncode == 0, run.stdout
    assert "received SIGTERM(15)" in run.log
    accumulation = sc.io.load_hdf5(run.workdir / "out" / "result.h5")
    pulses = accumulation.sizes["event_time_zero"]
    assert 0 < pulses < 300  # a few seconds of a 30 s run
    ids, tof = events_of(accumulation)
    prefix = sans2d_reference.pulses(0, pulses)
    np.testing.assert_array_equal(ids, sans2d_reference.event_id[prefix])
    np.testing.assert_array_equal(tof, sans2d_reference.event_time_offset[prefix])


@pytest.mark.daemon
def test_the_replay_benchmark_counts_every_chunk_of_its_daemon_runs(tmp_path: Path, monkeypatch) -> None:
    """``bench/bench_replay.py`` as committed: its configuration is one the daemon accepts (``update_every``), and
    the chunk lines it parses from the log include the initial chunk, so they add up to the file's events."""
    spec = importlib.util.spec_from_file_location("bench_replay", BENCH_REPLAY)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up there
    monkeypatch.setattr(sys, "path", [*sys.path])  # it puts bench/ on the path: only for this test
    spec.loader.exec_module(bench)
    events = 5 * bench.make_events.EVENTS_PER_PULSE  # 5 pulses
    data = bench.make_events.generate(tmp_path / "events.nxs", events, 1000)
    setup = bench.Setup(bench.write_scripts(tmp_path, 1000), tmp_path, chunk_pulses=2)
    run = bench.run_daemon(bench.MODES[0], data, setup, "hist")
    assert (run.returncode, run.errors) == (0, [])
    assert (run.events, run.chunks) == (events, 3)  # the initial chunk and chunks 0 and 1: 2 + 2 + 1 pulses
    assert run.rate_chunks > 0
