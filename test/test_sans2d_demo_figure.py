"""The SANS2D demo's figure (demo/sans2d_live): the rear detector in x/y metres and the time-of-flight spectrum,
titled with the proton charge, on the real SANS2D events.

The demo's proc and post_proc run in process as the daemon runs them, on the chunks the file listener reads from
the SANS2D sample (no proton charge: the file has none, as Kafka's ev44 has none) and on the same chunks with a
charge per pulse (pC), as the ADARA listener hands them out. The figure is taken where the post_proc saves it
(``livereduce.outputs.save_figure``), the image from the NeXus file it writes; the pixel positions are checked
against numbers of SANS2D's instrument definition, SANS2D_Definition_Tubes.xml (Mantid, instrument/): the
``<locations>`` of its tubes and pixels.
"""

from __future__ import annotations

import runpy
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipp as sc
import scippnexus as snx
from matplotlib.figure import Figure

from conftest import SANS2D_EVENTS, Sans2dReference
from livereduce import outputs
from livereduce.config import Config
from livereduce.engines.scipp.accumulate import Accumulator
from livereduce.engines.scipp.chunk import PULSE_DIM, RunMetadata, make_chunk, metadata_of
from livereduce.engines.scipp.listeners.file import FileEventDataListener

DEMO = Path(__file__).resolve().parents[1] / "demo" / "sans2d_live"
PULSE_CHARGE_PC = 12_340.0
"""The fake SMS's ``--pulse-charge`` of the quick start."""
REAR = (9, 9 + 120 * 512)
"""SANS2D's rear detector: event ids (spectrum numbers) 9 .. 61448, after the 8 monitors."""


def file_chunks(sans2d: Path) -> list[sc.DataArray]:
    """The SANS2D sample as the file listener hands it out: 100 pulses per chunk."""
    listener = FileEventDataListener(Config(filename=str(sans2d), replay_speed=0, replay_chunk_pulses=100))
    listener.connect()
    try:
        listener.start("from_start_of_run")
        chunks = []
        for _ in range(10):
            extracted = listener.extract()
            if extracted.chunk.sizes[PULSE_DIM]:
                chunks.append(extracted.chunk)
            if extracted.ended:
                return chunks
        pytest.fail("the replay did not end")
    finally:
        listener.disconnect()


def with_pulse_charge(chunk: sc.DataArray) -> sc.DataArray:
    """The chunk with ADARA's per-pulse charge (``proton_charge``, float64 pC over the pulses)."""
    pulses = chunk.sizes[PULSE_DIM]
    return chunk.assign_coords(
        proton_charge=sc.full(dims=[PULSE_DIM], shape=[pulses], value=PULSE_CHARGE_PC, unit="pC")
    )


def run_the_demo(chunks: list[sc.DataArray], out: Path, monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The demo's proc on each chunk, the accumulation (AccumulationMethod Add) and its post_proc after each;
    returns the figures the post_proc saved, in order."""
    monkeypatch.setenv("LIVEREDUCE_OUTPUT_DIR", str(out))
    saved: list[Figure] = []
    save_figure = outputs.save_figure

    def keep(figure: Figure, path: Path, **savefig: object) -> Path:
        saved.append(figure)
        return save_figure(figure, path, **savefig)

    monkeypatch.setattr(outputs, "save_figure", keep)
    accumulator = Accumulator("Add", 0)
    for chunk in chunks:
        processed = runpy.run_path(str(DEMO / "reduce_SANS2D_live_proc.py"), {"input": chunk, "output": "r"})
        accumulation = accumulator.accumulate(processed["output"], metadata_of(chunk), replace=False)
        runpy.run_path(str(DEMO / "reduce_SANS2D_live_post_proc.py"), {"input": accumulation, "output": "r"})
    return saved


def saved_entry(path: Path) -> sc.DataGroup:
    """The NeXus file the post_proc wrote, read with scippnexus."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scippnexus reads the whole entry without a warning
        return snx.load(path, root="entry")


@pytest.mark.parametrize("charge", [True, False], ids=["ADARA pulse charge", "no charge (file, Kafka)"])
def test_the_rear_detector_in_metres_and_the_spectrum_with_the_proton_charge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sans2d: Path, sans2d_reference: Sans2dReference, charge: bool
) -> None:
    chunks = file_chunks(sans2d)
    assert sum(chunk.bins.size().sum().value for chunk in chunks) == SANS2D_EVENTS
    figures = run_the_demo([with_pulse_charge(chunk) for chunk in chunks] if charge else chunks, tmp_path, monkeypatch)
    assert len(figures) == len(chunks)  # one per cycle

    ids = sans2d_reference.event_id
    rear = int(((ids >= REAR[0]) & (ids < REAR[1])).sum())
    front = SANS2D_EVENTS - rear  # every other id is the front detector's: the file has no monitor events
    entry = saved_entry(tmp_path / "SANS2D_0_live.h5")  # the file has no run number: run 0
    assert entry["pixels"].sum().value == SANS2D_EVENTS
    image = entry["rear_detector"]
    assert image.dims == ("y", "x")
    assert image.sum().value == rear
    for name, (low, high) in {"x": (-0.5222, 0.5222), "y": (-0.48195, 0.48195)}.items():  # the IDF's outer pixels
        edges = image.coords[name]
        assert edges.unit == "m"
        assert edges.values[0] < low
        assert high < edges.values[-1]
        assert high - low > edges.values[-1] - edges.values[0] - 0.04  # the detector, within two 16 mm bins

    figure = figures[-1]
    detector, spectrum, _colour_bar = figure.axes
    assert (detector.get_xlabel(), detector.get_ylabel()) == ("x [m]", "y [m]")
    assert detector.collections[0].get_array().sum() == rear  # the image drawn is the one saved
    assert f"rear detector: {rear:,} events (front: {front:,}, not drawn)" in detector.get_title()
    assert "nominal IDF pixel positions: the stream carries none" in detector.get_title()
    assert spectrum.get_xlabel() == "time of flight [µs]"
    assert spectrum.lines[0].get_ydata().sum() == SANS2D_EVENTS  # every event lies within 0 .. 100 ms
    assert sans2d_reference.pulse_times.size == 300
    # 300 pulses of 12,340 pC: 3.702 µC, 0.001028 µA·h (1 µA·h = 3.6 mC)
    label = "proton charge 0.00103 µA·h" if charge else "no proton charge in the stream"
    assert figure.get_suptitle() == f"SANS2D run 0: {SANS2D_EVENTS:,} events, {label}"


def test_pixels_are_drawn_where_the_instrument_definition_places_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One event in each corner pixel of the rear detector: each lands in the image's bin holding its position in
    SANS2D_Definition_Tubes.xml (tubes from the bottom, left and right alternating; 512 pixels along x)."""
    corners = {  # event id: (x, y) [m]
        REAR[0]: (-0.5192, -0.48195),  # tube 0 (left 0), pixel 0
        REAR[0] + 511: (0.5222, -0.48195),  # its pixel 511
        REAR[0] + 512: (-0.5222, -0.473855),  # tube 1 (right 0), pixel 0
        REAR[1] - 512: (-0.5192, 0.47385),  # tube 118 (left 59), pixel 0
        REAR[1] - 1: (0.5192, 0.48195),  # tube 119 (right 59), pixel 511
        REAR[0] + 60 * 512 + 256: (-0.5192 + 256 * 1.0414 / 511, -0.48195 + 30 * 0.0162),  # tube 60 (left 30)
    }
    ids = np.array(list(corners), np.int32)
    chunk = make_chunk(
        ids,
        np.full(ids.size, 1000.0, np.float32),
        np.array([np.datetime64("2026-01-01T00:00:00", "ns")]),
        np.array([0]),
        metadata=RunMetadata(run_number=5, instrument_name="SANS2D"),
    )
    run_the_demo([chunk], tmp_path, monkeypatch)

    image = saved_entry(tmp_path / "SANS2D_5_live.h5")["rear_detector"]
    x, y = image.coords["x"].values, image.coords["y"].values
    expected = np.zeros(image.shape)
    for px, py in corners.values():
        expected[np.searchsorted(y, py) - 1, np.searchsorted(x, px) - 1] += 1
    np.testing.assert_array_equal(image.values, expected)
    assert image.sum().value == ids.size
