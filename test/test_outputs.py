"""livereduce.outputs: NeXus files and figures for processing scripts, written atomically (issue 8, §5).

In-process tests of the layout (read back with h5py, scippnexus and nexusformat, NeXpy's library), of the
Mantid entries (read back with h5py and checked against what Mantid's LoadNexusProcessed reads, citing its
source; no Mantid here to load them), of the failure paths, a reader process that holds the HDF5 lock, and
SIGKILL while a reader polls the outputs: the demo's post_proc writes killed 30 times at random moments, and the
same end to end, the real daemon running the demo scripts killed during its writes.
"""

from __future__ import annotations

import logging
import os
import random
import re
import runpy
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import matplotlib
import matplotlib.pyplot as plt
import nexusformat.nexus as nx
import numpy as np
import pytest
import scipp as sc
import scippnexus as snx
from PIL import Image  # Pillow comes with matplotlib

from conftest import Daemon, poll_until
from livereduce import outputs
from livereduce.engines.scipp.accumulate import Accumulator
from livereduce.engines.scipp.chunk import RunMetadata, flat_events, log_series, make_chunk, metadata_of, monitor_events
from livereduce.outputs import atomic_path, save_figure, save_nexus

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"
SANS2D_DEMO = DEMO / "sans2d_live"


def tof_spectrum() -> sc.DataArray:
    """1-D histogram with bin edges (µs) and variances."""
    return sc.DataArray(
        sc.array(dims=["event_time_offset"], values=[1.0, 4.0, 9.0], variances=[1.0, 4.0, 9.0], unit="counts"),
        coords={"event_time_offset": sc.array(dims=["event_time_offset"], values=[0.0, 10.0, 20.0, 30.0], unit="us")},
    )


def temperature_log() -> sc.DataArray:
    return sc.DataArray(
        sc.array(dims=["time"], values=[300.0, 301.5], unit="K"),
        coords={"time": sc.datetimes(dims=["time"], values=["2026-01-01T00:00:00", "2026-01-01T00:00:01"], unit="ns")},
    )


def with_run_metadata(array: sc.DataArray) -> sc.DataArray:
    """The run metadata the scipp engine attaches: unaligned scalars, one of them a time-series log."""
    array = array.copy()
    for name, value in {
        "run_number": sc.scalar(7, unit=None),
        "instrument_name": sc.scalar("ADARA_FakeEvent"),
        "start_time": sc.datetime("2026-01-01T00:00:00", unit="ns"),
        "temperature": sc.scalar(temperature_log()),
    }.items():
        array.coords[name] = value
        array.coords.set_aligned(name, False)
    return array


def leftovers(directory: Path) -> list[str]:
    """Temporary files of atomic writes in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


# --- save_nexus: the layout ------------------------------------------------------------------------------------


def test_1d_histogram_with_errors_as_nxdata(tmp_path: Path) -> None:
    path = save_nexus(tof_spectrum(), tmp_path / "tof.nxs")

    with h5py.File(path, "r") as f:
        assert f.attrs["default"] == "entry"
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry"].attrs["default"] == "data"
        group = f["entry/data"]
        assert group.attrs["NX_class"] == "NXdata"
        assert group.attrs["signal"] == "data"
        assert list(group.attrs["axes"]) == ["event_time_offset"]
        assert list(np.atleast_1d(group.attrs["event_time_offset_indices"])) == [0]
        assert group["data"][()].tolist() == [1.0, 4.0, 9.0]
        assert group["errors"][()].tolist() == [1.0, 2.0, 3.0]  # standard deviations
        assert group["event_time_offset"].shape == (4,)  # bin edges: n + 1
        for field, unit in (("data", "counts"), ("errors", "counts"), ("event_time_offset", "µs")):
            assert isinstance(group[field].attrs["units"], str)  # a string, not bytes or an array
            assert group[field].attrs["units"] == unit

    loaded = snx.load(path, root="entry")["data"]
    assert sc.identical(loaded.data, tof_spectrum().data)
    assert sc.identical(loaded.coords["event_time_offset"], tof_spectrum().coords["event_time_offset"])


def test_2d_with_point_coordinates_datetimes_and_metadata(tmp_path: Path) -> None:
    times = sc.datetimes(dims=["time"], values=["2026-01-01T00:00:00", "2026-01-01T00:00:05"], unit="ns")
    image = sc.DataArray(
        sc.array(dims=["time", "x"], values=np.arange(6, dtype="int64").reshape(2, 3), unit="counts"),
        coords={"time": times, "x": sc.array(dims=["x"], values=[0.5, 1.5, 2.5], unit="mm")},
    )
    path = save_nexus(with_run_metadata(image), tmp_path / "image.h5")

    with h5py.File(path, "r") as f:
        group = f["entry/data"]
        assert list(group.attrs["axes"]) == ["time", "x"]
        assert group["data"].dtype == np.int64
        assert group["data"].shape == (2, 3)
        assert group["time"].attrs["units"] == "ns"
        assert group["time"].attrs["start"].startswith("1970-01-01T00:00:00")
        assert group["x"].attrs["units"] == "mm"
        log = f["entry/DASlogs/temperature"]
        assert f["entry/DASlogs"].attrs["NX_class"] == "NXcollection"
        assert log.attrs["NX_class"] == "NXlog"
        assert log["value"].attrs["units"] == "K"

    entry = snx.load(path, root="entry")
    loaded = entry["data"]
    assert sc.identical(loaded.data, image.data)
    assert sc.identical(loaded.coords["time"], times)
    assert sc.identical(loaded.coords["x"], image.coords["x"])
    assert loaded.coords["run_number"].value == 7
    assert loaded.coords["instrument_name"].value == "ADARA_FakeEvent"
    assert loaded.coords["start_time"].value == np.datetime64("2026-01-01T00:00:00", "ns")
    assert sc.identical(entry["DASlogs"]["temperature"].data, temperature_log().data)
    assert sc.identical(entry["DASlogs"]["temperature"].coords["time"], temperature_log().coords["time"])


def test_dimension_without_coordinate_is_a_dot_axis(tmp_path: Path) -> None:
    """The demo's pixel image: (y, x) without scales, pixel ids as a 2-D bin-edge coordinate."""
    ids = sc.arange("event_id", 0, 7, unit=None, dtype="int32")
    pixels = sc.DataArray(sc.ones(sizes={"event_id": 6}, dtype="float32", unit="counts"), coords={"event_id": ids})
    pixels = pixels.fold("event_id", sizes={"y": 2, "x": 3})
    path = save_nexus(pixels, tmp_path / "pixels.nxs")

    with h5py.File(path, "r") as f:
        group = f["entry/data"]
        assert list(group.attrs["axes"]) == [".", "."]
        assert list(group.attrs["event_id_indices"]) == [0, 1]
        assert group["event_id"].shape == (2, 4)
    loaded = snx.load(path, root="entry")["data"]  # scippnexus names a dimension without a scale dim_<index>
    assert loaded.dims == ("dim_0", "dim_1")
    assert loaded.values.tolist() == pixels.values.tolist()
    assert loaded.coords["event_id"].values.tolist() == pixels.coords["event_id"].values.tolist()


def test_datagroup_gives_one_nxdata_per_member_and_nexpy_reads_it(tmp_path: Path) -> None:
    image = with_run_metadata(sc.DataArray(sc.ones(dims=["y", "x"], shape=[2, 3], unit="counts")))
    group = sc.DataGroup({"pixels": image, "tof": with_run_metadata(tof_spectrum())})
    path = save_nexus(group, tmp_path / "demo.h5")

    root = nx.nxload(str(path))
    assert root.plottable_data.nxpath == "/entry/pixels"  # the default plot, found through @default
    tof = root["entry/tof"]
    assert tof.nxclass == "NXdata"
    assert tof.nxsignal.nxname == "data"
    assert [axis.nxname for axis in tof.nxaxes] == ["event_time_offset"]
    assert tof.nxerrors.nxdata.tolist() == [1.0, 2.0, 3.0]
    assert str(tof.nxsignal.attrs["units"]) == "counts"
    assert root["entry/pixels"].nxsignal.shape == (2, 3)
    with h5py.File(path, "r") as f:
        assert list(f["entry/DASlogs"]) == ["temperature"]  # the log both members carry, written once

    dataset = sc.Dataset({"a": tof_spectrum().data, "b": tof_spectrum().data * 2}, coords=tof_spectrum().coords)
    with h5py.File(save_nexus(dataset, tmp_path / "dataset.nxs"), "r") as f:
        assert sorted(f["entry"]) == ["a", "b", "livereduce"]
        assert f["entry/b/data"][()].tolist() == [2.0, 8.0, 18.0]


def test_file_mode_follows_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        path = save_nexus(tof_spectrum(), tmp_path / "mode.nxs")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o640  # 0o666 less the umask, as for a new file; not mkstemp's 0o600


# --- save_nexus: Mantid's processed layout ----------------------------------------------------------------------
# What Mantid's LoadNexusProcessed reads, from its source (github.com/mantidproject/mantid): LoadNexusProcessed.cpp,
# NexusClasses.h, WorkspaceHistory.cpp, NexusHDF5Descriptor.cpp, written as NexusFileIO.cpp does. No Mantid here.


def text(value: object) -> str:
    """A fixed-length string attribute or (1,) field as Mantid's NeXus API writes NX_CHAR; fails on anything else."""
    raw = value[0] if isinstance(value, np.ndarray) and value.shape == (1,) else value
    assert isinstance(raw, bytes), f"{value!r} is not a fixed-length byte string"
    return raw.decode()


def fixed_length_strings(group: h5py.Group) -> list[str]:
    """Every string attribute and field under ``group`` that is not a fixed-length byte string (should be none)."""
    found: list[str] = []

    def visit(name: str, obj: h5py.Group | h5py.Dataset) -> None:
        for key in obj.attrs:
            info = h5py.check_string_dtype(obj.attrs.get_id(key).dtype)
            if info is not None and info.length is None:
                found.append(f"{name}@{key}")
        if isinstance(obj, h5py.Dataset) and (info := h5py.check_string_dtype(obj.dtype)) and info.length is None:
            found.append(name)

    visit(group.name, group)
    group.visititems(visit)
    return found


def demo_members() -> sc.DataGroup:
    """As the demo writes: a TOF histogram (µs bin edges, variances) and a pixel image without coordinates."""
    image = sc.DataArray(sc.array(dims=["y", "x"], values=np.arange(6, dtype="int64").reshape(2, 3), unit="counts"))
    return sc.DataGroup({"tof": with_run_metadata(tof_spectrum()), "pixels": image})


def root_entries(f: h5py.File) -> list[str]:
    return sorted(name for name, group in f.items() if group.attrs.get("NX_class") in (b"NXentry", "NXentry"))


def test_mantid_entry_of_a_1d_histogram_has_exactly_the_processed_layout(tmp_path: Path) -> None:
    path = save_nexus(tof_spectrum(), tmp_path / "tof.nxs")

    with h5py.File(path, "r") as f:
        assert sorted(f) == ["entry", "mantid_workspace_1"]
        entry = f["mantid_workspace_1"]
        assert text(entry.attrs["NX_class"]) == "NXentry"
        assert sorted(entry) == ["definition", "definition_local", "process", "title", "workspace"]
        assert text(entry["title"][()]) == "data"  # the DataArray's name ("data" when it has none)
        assert entry["title"].shape == (1,)
        for field, url in (
            ("definition", "http://www.nexusformat.org/instruments/xml/NXprocessed.xml"),
            ("definition_local", "http://www.isis.rl.ac.uk/xml/IXmantid.xml"),
        ):
            assert text(entry[field][()]) == "Mantid Processed Workspace"
            assert {key: text(value) for key, value in entry[field].attrs.items()} == {"URL": url, "Version": "1.0"}
        assert text(entry["process"].attrs["NX_class"]) == "NXprocess"
        assert len(entry["process"]) == 0

        workspace = entry["workspace"]
        assert text(workspace.attrs["NX_class"]) == "NXdata"
        assert sorted(workspace) == ["axis1", "axis2", "errors", "values"]
        values, errors, axis1, axis2 = (workspace[name] for name in ("values", "errors", "axis1", "axis2"))
        assert (values.dtype, values.shape, values[()].tolist()) == (np.float64, (1, 3), [[1.0, 4.0, 9.0]])
        assert (errors.dtype, errors.shape, errors[()].tolist()) == (np.float64, (1, 3), [[1.0, 2.0, 3.0]])
        assert (axis1.dtype, axis1[()].tolist()) == (np.float64, [0.0, 10.0, 20.0, 30.0])  # µs, bin edges
        assert (axis2.dtype, axis2[()].tolist()) == (np.float64, [1.0])  # one spectrum, number 1
        assert values.attrs["signal"] == 1
        assert values.attrs["signal"].dtype == np.int32
        assert {key: text(value) for key, value in values.attrs.items() if key != "signal"} == {
            "axes": "axis2,axis1",
            "units": "Counts",
            "unit_label": "Counts",
        }
        assert dict(errors.attrs) == {}
        assert {key: text(value) for key, value in axis1.attrs.items()} == {"distribution": "0", "units": "TOF"}
        assert {key: text(value) for key, value in axis2.attrs.items()} == {"units": "spectraNumber"}
        assert fixed_length_strings(entry) == []
        # The standard entry is unchanged: its strings are scippnexus's (variable-length), the control for the
        # check above.
        assert fixed_length_strings(f["entry"]) != []

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the standard entry alone loads without a warning
        assert sc.identical(snx.load(path, root="entry")["data"].data, tof_spectrum().data)


def test_mantid_axes_units_spectrum_axes_and_dtypes(tmp_path: Path) -> None:
    def counts(dims: tuple[str, str], **coords: sc.Variable) -> sc.DataArray:
        data = sc.array(dims=list(dims), values=[[1, 2, 3], [4, 5, 6]], unit="counts", dtype="int32")
        return sc.DataArray(data, coords=coords)

    members = sc.DataGroup(
        {
            # x: ms converted to µs; spectrum axis: bin edges in 1/Å on a dimension named Q; int32 data: float64
            "tof_ms": counts(
                ("Q", "tof"),
                tof=sc.array(dims=["tof"], values=[0.0, 1.0, 2.0, 3.0], unit="ms"),
                Q=sc.array(dims=["Q"], values=[0.5, 1.0, 1.5], unit="1/angstrom"),
            ),
            # x: one row per spectrum (a 2-D coordinate, given transposed); spectrum axis: labels
            "per_spectrum": counts(
                ("spectrum", "tof"),
                tof=sc.array(dims=["tof", "spectrum"], values=[[0, 10], [1, 11], [2, 12]], unit="us"),
                spectrum=sc.array(dims=["spectrum"], values=["bank1", "bank2"]),
            ),
            # x: a dimension Mantid has no unit for; spectrum axis: integers without a unit
            "other": counts(
                ("spectrum", "x"),
                x=sc.array(dims=["x"], values=[0.5, 1.5, 2.5], unit="mm"),
                spectrum=sc.array(dims=["spectrum"], values=[7, 9], unit=None),
            ),
            # wavelength in nm: converted to Å; float32 data with variances: float64 values and errors
            "wavelength": sc.DataArray(
                sc.array(
                    dims=["wavelength"], values=[4.0, 9.0], variances=[4.0, 9.0], unit="counts/s", dtype="float32"
                ),
                coords={"wavelength": sc.array(dims=["wavelength"], values=[0.1, 0.2], unit="nm")},
            ),
        }
    )
    path = save_nexus(members, tmp_path / "axes.nxs")

    with h5py.File(path, "r") as f:
        ws = {name: f[f"mantid_workspace_{k}/workspace"] for k, name in enumerate(members, start=1)}
        assert [text(f[f"mantid_workspace_{k}/title"][()]) for k in range(1, 5)] == list(members)
        for workspace in ws.values():
            assert all(workspace[name].dtype == np.float64 for name in ("values", "errors", "axis1"))

        tof_ms = ws["tof_ms"]
        assert tof_ms["values"][()].tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        assert tof_ms["errors"][()].tolist() == [[0.0] * 3] * 2  # no variances: 0
        assert text(tof_ms["axis1"].attrs["units"]) == "TOF"
        assert tof_ms["axis1"][()].tolist() == [0.0, 1000.0, 2000.0, 3000.0]
        assert text(tof_ms["axis2"].attrs["units"]) == "MomentumTransfer"
        assert tof_ms["axis2"][()].tolist() == [0.5, 1.0, 1.5]  # m + 1 values: a bin-edge axis in Mantid

        per_spectrum = ws["per_spectrum"]
        assert per_spectrum["axis1"].shape == (2, 3)  # (spectra, x): one row per spectrum
        assert per_spectrum["axis1"][()].tolist() == [[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]
        assert text(per_spectrum["axis2"].attrs["units"]) == "TextAxis"
        assert per_spectrum["axis2"].shape == (1,)
        assert text(per_spectrum["axis2"][()]) == "bank1\nbank2\n"

        other = ws["other"]
        assert {key: text(value) for key, value in other["axis1"].attrs.items()} == {
            "distribution": "0",
            "units": "Label",
            "caption": "x",
            "label": "mm",
        }
        assert {key: text(value) for key, value in other["axis2"].attrs.items()} == {
            "units": "Label",
            "caption": "spectrum",
            "label": "",
        }
        assert other["axis2"][()].tolist() == [7.0, 9.0]

        wavelength = ws["wavelength"]
        assert text(wavelength["axis1"].attrs["units"]) == "Wavelength"
        assert wavelength["axis1"][()] == pytest.approx([1.0, 2.0])  # nm to Å
        assert wavelength["values"][()].tolist() == [[4.0, 9.0]]
        assert wavelength["errors"][()].tolist() == [[2.0, 3.0]]
        assert text(wavelength["values"].attrs["units"]) == "counts/s"  # only counts becomes Counts
        assert all(fixed_length_strings(f[f"mantid_workspace_{k}"]) == [] for k in range(1, 5))


SKIPPED_BY_MANTID = {
    "3-D": sc.DataArray(sc.ones(dims=["a", "b", "c"], shape=[2, 2, 2])),
    "empty": sc.DataArray(sc.ones(dims=["spectrum", "x"], shape=[0, 3])),
    "datetime x": sc.DataArray(
        sc.ones(dims=["time"], shape=[2]),
        coords={"time": sc.datetimes(dims=["time"], values=["2026-01-01", "2026-01-02"], unit="s")},
    ),
    "bool x": sc.DataArray(sc.ones(dims=["x"], shape=[2]), coords={"x": sc.array(dims=["x"], values=[True, False])}),
    "string x": sc.DataArray(sc.ones(dims=["x"], shape=[2]), coords={"x": sc.array(dims=["x"], values=["a", "b"])}),
    "empty label": sc.DataArray(
        sc.ones(dims=["bank", "x"], shape=[2, 1]), coords={"bank": sc.array(dims=["bank"], values=["a", ""])}
    ),
    "label with newline": sc.DataArray(
        sc.ones(dims=["bank", "x"], shape=[2, 1]), coords={"bank": sc.array(dims=["bank"], values=["a", "b\nc"])}
    ),
    "2-D spectrum coordinate": sc.DataArray(
        sc.ones(dims=["s", "x"], shape=[2, 3]), coords={"s": sc.ones(dims=["s", "x"], shape=[2, 3])}
    ),
}


def test_members_mantid_cannot_hold_get_no_entry_and_the_numbering_skips_them(tmp_path: Path) -> None:
    members = sc.DataGroup({**SKIPPED_BY_MANTID, "tof": tof_spectrum(), "pixels": demo_members()["pixels"]})
    path = save_nexus(members, tmp_path / "many.nxs")

    with h5py.File(path, "r") as f:
        assert sorted(f["entry"]) == sorted([*members, "livereduce"])  # the standard entry holds every member
        assert root_entries(f) == ["entry", "mantid_workspace_1", "mantid_workspace_2"]
        assert text(f["mantid_workspace_1/title"][()]) == "tof"
        assert text(f["mantid_workspace_2/title"][()]) == "pixels"
    # Control: each of them alone is written whole to the standard entry, and without a Mantid entry.
    for name, array in SKIPPED_BY_MANTID.items():
        with h5py.File(save_nexus(array, tmp_path / "one.nxs"), "r") as f:
            assert root_entries(f) == ["entry"], name


def test_mantid_entries_can_be_left_out_and_their_names_are_reserved(tmp_path: Path) -> None:
    with h5py.File(save_nexus(demo_members(), tmp_path / "no_mantid.nxs", mantid=False), "r") as f:
        assert sorted(f) == ["entry"]
    with h5py.File(save_nexus(demo_members(), tmp_path / "mantid.nxs"), "r") as f:  # control
        assert sorted(f) == ["entry", "mantid_workspace_1", "mantid_workspace_2"]
    with pytest.raises(ValueError, match="'mantid_workspace_1' is reserved"):
        save_nexus(tof_spectrum(), tmp_path / "clash.nxs", entry="mantid_workspace_1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mantid.nxs", "no_mantid.nxs"]


OTHER_WORKSPACE_TYPES = {
    "table_workspace",
    "peaks_workspace",
    "event_workspace",
    "offsets_workspace",
    "mask_workspace",
    "grouping_workspace",
}


def nxentry(f: h5py.File, k: int) -> h5py.Group:
    return f[f"mantid_workspace_{k}"]


def workspace(f: h5py.File, k: int) -> h5py.Group:
    return f[f"mantid_workspace_{k}/workspace"]


# Each row: where Mantid reads it (file, function: what the code does), and the check of the file written from
# demo_members() (mantid_workspace_1 = "tof", the 1-D µs histogram; mantid_workspace_2 = "pixels", 2 x 3 counts).
MANTID_READER: list[tuple[str, Callable[[h5py.File], bool]]] = [
    (
        "LoadNexusProcessed.cpp confidence: descriptor.isEntry('/mantid_workspace_1') gives 80 (LoadNexusProcessed2"
        " 81, above LoadTOFRawNexus's 80 for /entry with NXdata)",
        lambda f: text(nxentry(f, 1).attrs["NX_class"]) == "NXentry",
    ),
    (
        "LoadNexusProcessed.cpp execLoader: counts the root groups with nxclass == 'NXentry'; with the default"
        " EntryNumber and a count > 1 it loads mantid_workspace_1..count, so this file needs EntryNumber=1 or 2",
        lambda f: root_entries(f) == ["entry", "mantid_workspace_1", "mantid_workspace_2"],
    ),
    (
        "LoadNexusProcessed.cpp loadEntry: no table_workspace, peaks_workspace, event_workspace, offsets_workspace,"
        " mask_workspace or grouping_workspace group, so a Workspace2D from openNXData('workspace')",
        lambda f: all(
            not set(nxentry(f, k)) & OTHER_WORKSPACE_TYPES and text(workspace(f, k).attrs["NX_class"]) == "NXdata"
            for k in (1, 2)
        ),
    ),
    (
        "NexusClasses.h NXData::openData: the signal is the field whose attribute signal reads '1'"
        " (NexusClasses.cpp getAttributes: NX_INT32 printed with %i)",
        lambda f: (
            [name for name, field in workspace(f, 1).items() if "signal" in field.attrs] == ["values"]
            and workspace(f, 1)["values"].attrs["signal"] == 1
            and workspace(f, 1)["values"].attrs["signal"].dtype == np.int32
        ),
    ),
    (
        "LoadNexusProcessed.cpp loadNonEventEntry: nspectra = values.dim0(), nchannels = values.dim1()",
        lambda f: workspace(f, 1)["values"].shape == (1, 3) and workspace(f, 2)["values"].shape == (2, 3),
    ),
    (
        "NexusClasses.h NXDataSetTyped<double>::load: the raw data is read into a double buffer, no conversion,"
        " so values, errors, axis1, axis2 are float64 (as NexusFileIO.cpp writeNexusProcessedData2D: NX_FLOAT64)",
        lambda f: all(
            workspace(f, k)[name].dtype == np.float64 for k in (1, 2) for name in ("values", "errors", "axis1", "axis2")
        ),
    ),
    (
        "LoadNexusProcessed.cpp loadNonEventEntry: WorkspaceFactory create(type, nspectra, xlength, nchannels):"
        " axis1 of nchannels + 1 values is a histogram, of nchannels values point data",
        lambda f: workspace(f, 1)["axis1"].shape == (4,) and workspace(f, 2)["axis1"].shape == (3,),
    ),
    (
        "LoadNexusProcessed.cpp loadEntry: axis1 of rank 1 is shared by all spectra (m_shared_bins); units through"
        " UnitFactory create (Unit.cpp DECLARE_UNIT(TOF): microseconds)",
        lambda f: workspace(f, 1)["axis1"].ndim == 1 and text(workspace(f, 1)["axis1"].attrs["units"]) == "TOF",
    ),
    (
        "LoadNexusProcessed.cpp loadEntry: unit1 == 'Label' sets the label from axis1@caption and axis1@label",
        lambda f: (
            [text(workspace(f, 2)["axis1"].attrs[key]) for key in ("units", "caption", "label")] == ["Label", "x", ""]
        ),
    ),
    (
        "LoadNexusProcessed.cpp loadEntry: axis1@distribution == '1' makes a distribution; '0' does not",
        lambda f: text(workspace(f, 1)["axis1"].attrs["distribution"]) == "0",
    ),
    (
        "LoadNexusProcessed.cpp loadEntry: axis2@units 'spectraNumber' keeps the spectra axis (numbers 1..m)",
        lambda f: (
            text(workspace(f, 2)["axis2"].attrs["units"]) == "spectraNumber"
            and workspace(f, 2)["axis2"][()].tolist() == [1.0, 2.0]
        ),
    ),
    (
        "LoadNexusProcessed.cpp loadNonEventEntry: setYUnit(values@units), setYUnitLabel(values@unit_label)",
        lambda f: [text(workspace(f, 1)["values"].attrs[key]) for key in ("units", "unit_label")] == ["Counts"] * 2,
    ),
    (
        "LoadNexusProcessed.cpp loadNonEventEntry: openNXDouble('errors') (required); loadBlock: E = errors",
        lambda f: (
            workspace(f, 1)["errors"][()].tolist() == [[1.0, 2.0, 3.0]]
            and workspace(f, 2)["errors"][()].tolist() == [[0.0] * 3] * 2
        ),
    ),
    (
        "LoadNexusProcessed.cpp loadNonEventEntry: setTitle(mtd_entry.getString('title'))",
        lambda f: [text(nxentry(f, k)["title"][()]) for k in (1, 2)] == ["tof", "pixels"],
    ),
    (
        "WorkspaceHistory.cpp loadNexus: opens the group 'process' (NXprocess), warns without it; an empty one has"
        " no MantidAlgorithm_N entries (findHistoryEntries)",
        lambda f: (
            all(text(nxentry(f, k)["process"].attrs["NX_class"]) == "NXprocess" for k in (1, 2))
            and all(len(nxentry(f, k)["process"]) == 0 for k in (1, 2))
        ),
    ),
    (
        "NexusFileIO.cpp (napi NXputattr/NXmakedata with NX_CHAR) writes fixed-length strings, which napi5"
        " NX5getinfo and NexusHDF5Descriptor.cpp readStringAttribute read",
        lambda f: all(fixed_length_strings(nxentry(f, k)) == [] for k in (1, 2)),
    ),
]


@pytest.mark.parametrize(
    ("source", "check"),
    MANTID_READER,
    ids=[f"{index:02d} {row[0].split(':')[0]}" for index, row in enumerate(MANTID_READER, start=1)],
)
def test_each_mantid_entry_item_is_what_the_cited_mantid_reader_line_needs(
    tmp_path: Path, source: str, check: Callable[[h5py.File], bool]
) -> None:
    with h5py.File(save_nexus(demo_members(), tmp_path / "demo.nxs"), "r") as f:
        assert check(f), source


# --- save_nexus: monitors and the other metadata of live chunks ------------------------------------------------
# The scipp engine sets the run metadata on the accumulation (on every member of a DataGroup): the latest chunk's
# beam monitors as a 0-D ``monitors`` coordinate (dtype PyObject) holding a DataGroup of event tables, and the
# logs as 0-D DataArrays. Chunks are built with the engine's own functions and accumulated by its Accumulator.

T0_NS = 1_775_000_000 * 10**9
PULSE_NS = T0_NS + np.arange(4, dtype=np.int64) * 100_000_000  # four pulses at 10 Hz
MONITOR_TOF_US = np.array([100.5, 2000.25, 3.0, 4.5, 16_000.0, 7.0], np.float32)


def monitors_of_a_chunk() -> dict[str, sc.DataArray]:
    """ADARA's ``monitor1`` (events in pulse order, pulse 2 without any) and a Kafka source name whose two
    messages came in out of time order (pulse 1, then pulse 0)."""
    return {
        "monitor1": monitor_events(PULSE_NS[[0, 0, 1, 1, 1, 3]], MONITOR_TOF_US),
        "monitor_2": monitor_events(PULSE_NS[[1, 0, 0]], MONITOR_TOF_US[:3]),
    }


def live_chunk(*, proton_charge: bool = True, monitors: dict[str, sc.DataArray] | None = None) -> sc.DataArray:
    """A chunk as the listeners make it: 6 events in 4 pulses of SANS2D-like pixels, run 42, logs of three shapes
    (a number, a string, an array per time), and the given monitors (default :func:`monitors_of_a_chunk`)."""
    metadata = RunMetadata(
        run_number=42,
        start_time=np.datetime64(T0_NS, "ns"),
        instrument_name="SANS2D",
        logs={
            "temperature": log_series([(T0_NS, 300.5), (T0_NS + 10**8, 301.0)], "K"),
            "sample_name": log_series([(T0_NS, "silver behenate")]),
            "waveform": log_series([(T0_NS, np.array([1.0, 2.0])), (T0_NS + 10**8, np.array([3.0, 4.0]))]),
        },
        monitors=monitors_of_a_chunk() if monitors is None else monitors,
    )
    return make_chunk(
        np.array([1, 5, 5, 9, 2, 3], np.int32),
        np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0], np.float32),
        PULSE_NS,
        np.array([0, 2, 2, 5]),
        metadata=metadata,
        proton_charge=np.full(4, 12340.0) if proton_charge else None,
    )


def accumulated(chunk: sc.DataArray, processed: sc.DataArray | sc.DataGroup) -> sc.DataArray | sc.DataGroup:
    """``processed`` as the engine's accumulation after the first chunk: with the chunk's run metadata."""
    return Accumulator("Add", 0).accumulate(processed, metadata_of(chunk), replace=True)


def demo_histograms(chunk: sc.DataArray) -> sc.DataGroup:
    events = flat_events(chunk)
    return sc.DataGroup(
        {
            "pixels": events.hist(event_id=sc.arange("event_id", 0, 11, unit=None, dtype="int32")),
            "tof": events.hist(event_time_offset=sc.linspace("event_time_offset", 0.0, 100.0, 6, unit="us")),
        }
    )


def monitor_back(events: sc.DataArray) -> sc.DataArray:
    """A monitor as scippnexus loads it (events binned by pulse) as the chunks carry it: one flat event table
    with each event's ``event_time_zero``."""
    pulse = sc.bins_like(events, events.coords["event_time_zero"])
    return events.bins.assign_coords(event_time_zero=pulse).bins.concat().value


@pytest.mark.parametrize("shape", ["DataArray", "DataGroup"])
def test_monitors_of_a_live_chunk_are_nxmonitor_events(tmp_path: Path, shape: str) -> None:
    chunk = live_chunk()
    if shape == "DataArray":  # preserve_events false without a proc script: counts per pixel
        data = accumulated(
            chunk, flat_events(chunk).hist(event_id=sc.arange("event_id", 0, 11, unit=None, dtype="int32"))
        )
    else:  # the demo's proc: every member carries the monitors, written once
        data = accumulated(chunk, demo_histograms(chunk))
    path = save_nexus(data, tmp_path / "live.nxs")

    with h5py.File(path, "r") as f:
        entry = f["entry"]
        assert sorted(entry) == sorted([*(["data"] if shape == "DataArray" else ["pixels", "tof"]),
                                        "DASlogs", "livereduce", "monitor1", "monitor_2"])  # fmt: skip
        monitor = entry["monitor1"]
        assert monitor.attrs["NX_class"] == "NXmonitor"
        assert sorted(monitor) == ["event_index", "event_time_offset", "event_time_zero", "integral"]
        assert monitor["event_time_offset"].dtype == np.float32
        assert monitor["event_time_offset"].attrs["units"] == "µs"
        assert monitor["event_time_zero"].attrs["units"] == "ns"
        assert monitor["event_time_zero"].attrs["offset"] == "1970-01-01T00:00:00Z"
        assert monitor["event_time_zero"][()].tolist() == PULSE_NS[[0, 1, 3]].tolist()  # pulse 2 had no event
        assert monitor["event_index"][()].tolist() == [0, 2, 5]
        assert monitor["integral"][()] == 6
        assert entry["monitor_2"]["event_time_zero"][()].tolist() == PULSE_NS[[1, 0]].tolist()  # order kept
        assert entry["monitor_2"]["event_index"][()].tolist() == [0, 1]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scippnexus reads every group without a warning
        loaded = snx.load(path, root="entry")
    for name, sent in monitors_of_a_chunk().items():
        assert sc.identical(monitor_back(loaded[name]["events"]), sent), name
        assert loaded[name]["integral"].value == sent.sizes["event"]


def test_logs_of_live_chunks_numbers_strings_and_arrays_are_nxlogs(tmp_path: Path) -> None:
    chunk = live_chunk()
    path = save_nexus(accumulated(chunk, demo_histograms(chunk)), tmp_path / "live.nxs")

    logs = snx.load(path, root="entry")["DASlogs"]
    assert sorted(logs) == ["sample_name", "temperature", "waveform"]
    for name in ("temperature", "sample_name"):
        assert sc.identical(logs[name], chunk.coords[name].value), name
    waveform = logs["waveform"]  # one bin of values per time, all of one length: NXlog's (time, n) value
    assert waveform.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert sc.identical(waveform.coords["time"], chunk.coords["waveform"].value.coords["time"])


@pytest.mark.parametrize("source", ["ADARA", "Kafka"])
def test_the_demo_scripts_save_the_monitors_of_a_live_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """The demo's proc and post_proc on a chunk with monitors, as the daemon runs them: ADARA's chunks have a
    proton charge (the proc adds a scalar member, the post_proc saves the arrays), Kafka's do not."""
    monkeypatch.setenv("LIVEREDUCE_OUTPUT_DIR", str(tmp_path))
    chunk = live_chunk(proton_charge=source == "ADARA")
    proc = runpy.run_path(str(SANS2D_DEMO / "reduce_SANS2D_live_proc.py"), {"input": chunk, "output": "result"})
    accumulation = accumulated(chunk, proc["output"])
    post_proc = SANS2D_DEMO / "reduce_SANS2D_live_post_proc.py"
    assert runpy.run_path(str(post_proc), {"input": accumulation, "output": "result"})["output"] is accumulation

    loaded = snx.load(tmp_path / "SANS2D_42_live.h5", root="entry")
    assert loaded["pixels"].sum().value == 6
    for name, sent in monitors_of_a_chunk().items():
        assert sc.identical(monitor_back(loaded[name]["events"]), sent), name


def test_what_nexus_has_no_place_for_is_left_out_with_one_warning_per_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(outputs, "_left_out", set())
    good = monitors_of_a_chunk()["monitor1"]
    monitors = {
        "monitor1": good,
        "weighted": good * 2.0,  # weights NXmonitor events cannot hold
        "histogram": tof_spectrum(),  # not events
        "tof": good,  # the name of a member
        ".": good,  # not an HDF5 name
    }
    chunk = live_chunk(monitors=monitors)
    ragged = sc.DataArray(  # an array per time, of lengths 1 and 2
        sc.bins(begin=sc.array(dims=["time"], values=[0, 1], unit=None), dim="value", data=sc.arange("value", 3.0)),
        coords={"time": sc.datetimes(dims=["time"], values=[T0_NS, T0_NS + 1], unit="ns")},
    )
    data = accumulated(chunk, demo_histograms(chunk))
    for member in data.values():
        for name, value in {
            "ragged": sc.scalar(ragged),
            "settings": sc.scalar({"gain": 2}),
            "nested": sc.scalar(sc.DataGroup({"monitor1": good})),
        }.items():
            member.coords[name] = value
            member.coords.set_aligned(name, False)

    left_out = {
        "log 'ragged'": "arrays of different lengths per time",
        "coordinate 'settings'": "a 0-D dict",
        "coordinate 'nested'": "a 0-D DataGroup",
        "monitor 'weighted'": "weights other than 1",
        "monitor 'histogram'": "exactly the coordinates event_time_offset and event_time_zero",
        "monitor 'tof'": "already has a group 'tof'",
        "monitor '.'": "not a valid HDF5 name",
    }
    with caplog.at_level(logging.WARNING, logger="livereduce.outputs"):
        for cycle in range(3):
            save_nexus(data, tmp_path / "live.nxs")
            warned = [record.getMessage() for record in caplog.records if record.name == "livereduce.outputs"]
            assert len(warned) == len(left_out), (cycle, warned)  # the first cycle's, none after
            for what, reason in left_out.items():
                assert sum(f"leaves out {what}: " in message and reason in message for message in warned) == 1, what

    with h5py.File(tmp_path / "live.nxs", "r") as f:
        assert sorted(f["entry"]) == ["DASlogs", "livereduce", "monitor1", "pixels", "tof"]
        assert sorted(f["entry/DASlogs"]) == ["sample_name", "temperature", "waveform"]
        assert f["entry/tof"].attrs["NX_class"] == "NXdata"  # the member, not the monitor of that name


# --- save_nexus: refusals leave nothing behind ---------------------------------------------------------------

BINNED = sc.data.table_xyz(10).bin(x=2)
MASKED = tof_spectrum().assign_masks(bad=sc.array(dims=["event_time_offset"], values=[False, True, False]))
VECTORS = tof_spectrum().assign_coords(position=sc.vectors(dims=["event_time_offset"], values=np.zeros((3, 3))))


def with_monitors(monitor: sc.DataArray) -> sc.DataArray:
    return tof_spectrum().assign_coords(monitors=sc.scalar(sc.DataGroup({"monitor1": monitor})))


TWO_MONITORS = sc.DataGroup(
    {
        "a": with_monitors(monitor_events(PULSE_NS[:1], MONITOR_TOF_US[:1])),
        "b": with_monitors(monitor_events(PULSE_NS[:1], MONITOR_TOF_US[1:2])),
    }
)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (BINNED, TypeError, "binned .* histogram it first"),
        (MASKED, TypeError, r"masks \['bad'\].*drop_masks"),
        (VECTORS, TypeError, r"coordinate 'position' of dtype vector3 .*drop_coords\('position'\)"),
        (TWO_MONITORS, ValueError, "two members carry different monitors named 'monitor1'"),
        (sc.DataArray(sc.array(dims=["x"], values=["a", "b"])), TypeError, "not numeric"),
        (sc.DataArray(sc.scalar(1.0)), ValueError, "0-D"),
        (sc.DataGroup({"a/b": tof_spectrum()}), ValueError, "not a valid HDF5 name"),
        (sc.DataGroup({"DASlogs": tof_spectrum()}), ValueError, "reserved"),
        (sc.DataGroup({"nested": sc.DataGroup({"tof": tof_spectrum()})}), TypeError, "must be a DataArray"),
        (sc.DataGroup(), ValueError, "empty"),
        (tof_spectrum().data, TypeError, "not Variable"),
        (tof_spectrum().assign_coords(errors=sc.scalar(1.0)), ValueError, "may not be named 'errors'"),
    ],
)
def test_refused_data_leaves_the_target_and_no_temporary_file(
    tmp_path: Path, data: object, error: type[Exception], message: str
) -> None:
    target = tmp_path / "out.nxs"
    save_nexus(tof_spectrum(), target)
    before = target.read_bytes()
    with pytest.raises(error, match=message):
        save_nexus(data, target)  # type: ignore[arg-type]
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_failure_in_the_middle_of_a_write_leaves_the_old_file(tmp_path: Path) -> None:
    """The first member is written into the temporary file before the second one fails."""
    target = tmp_path / "out.nxs"
    save_nexus(tof_spectrum(), target)
    before = target.read_bytes()
    with pytest.raises(TypeError, match="'events' holds binned"):
        save_nexus(sc.DataGroup({"tof": tof_spectrum() * 2, "events": BINNED}), target)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []
    with pytest.raises(TypeError, match="binned"):  # and with no file there before: none after
        save_nexus(sc.DataGroup({"tof": tof_spectrum(), "events": BINNED}), tmp_path / "new.nxs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nxs"]


# --- atomic_path -------------------------------------------------------------------------------------------------


def test_atomic_path_fsyncs_the_file_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    fsync, replace = os.fsync, os.replace

    def record_fsync(descriptor: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{descriptor}"))
        fsync(descriptor)

    def record_replace(source: Path, destination: Path) -> None:
        events.append(f"replace {Path(source).name} -> {Path(destination).name}")
        replace(source, destination)

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    with atomic_path(tmp_path / "a.txt") as temporary:
        temporary.write_text("content")
    assert re.fullmatch(r"\.a\.txt\.[0-9a-f]{12}\.tmp", temporary.name)
    assert events == [
        f"fsync {temporary}",
        f"replace {temporary.name} -> a.txt",
        f"fsync {tmp_path}",
    ]
    assert (tmp_path / "a.txt").read_text() == "content"


def test_atomic_path_errors_remove_the_temporary_file(tmp_path: Path) -> None:
    def write_half_then_fail(path: Path) -> None:
        with atomic_path(path) as temporary:
            temporary.write_text("half")
            raise RuntimeError("writer failed")

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"):
        write_half_then_fail(tmp_path / "a.txt")
    assert (tmp_path / "a.txt").read_text() == "old"
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError), atomic_path(tmp_path / "dir") as temporary:
        temporary.write_text("x")
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "missing" / "a.txt"):
        pass
    assert leftovers(tmp_path) == []


def test_stale_temporary_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    old = tmp_path / ".a.txt.0123456789ab.tmp"  # as a writer killed with SIGKILL leaves it
    young = tmp_path / ".a.txt.ba9876543210.tmp"  # perhaps a writer still at work
    other = tmp_path / ".a.txt.x.0123456789ab.tmp"  # another target's
    for path in (old, young, other):
        path.write_text("half")
    long_ago = time.time() - outputs.STALE_AFTER_SEC - 10
    os.utime(old, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    with atomic_path(tmp_path / "a.txt") as temporary:
        temporary.write_text("new")
    assert leftovers(tmp_path) == sorted([other.name, young.name])


# --- save_figure -------------------------------------------------------------------------------------------------


def test_save_figure_takes_the_format_from_the_suffix(tmp_path: Path) -> None:
    figure, axes = plt.subplots(figsize=(4, 3))
    axes.plot([0, 1], [0, 1])
    try:
        png = save_figure(figure, tmp_path / "plot.png", dpi=50)
        svg = save_figure(figure, tmp_path / "plot.SVG")
        with pytest.raises(ValueError, match=r"cannot tell the image format .*\.png"):
            save_figure(figure, tmp_path / "plot.h5")
        with pytest.raises(ValueError, match="do not pass format="):
            save_figure(figure, tmp_path / "plot.pdf", format="png")
    finally:
        plt.close(figure)
    with Image.open(png) as image:
        image.load()
        assert image.size == (200, 150)
    assert svg.read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.SVG", "plot.png"]


# --- a reader that holds the HDF5 lock ---------------------------------------------------------------------------

READER = textwrap.dedent(
    """
    import sys, h5py
    files = [h5py.File(name, "r") for name in sys.argv[1:]]  # HDF5 takes a shared lock on each
    print("holding", flush=True)
    sys.stdin.readline()
    print(float(files[0]["entry/data/data"][()].sum()), flush=True)  # the file it opened, read after the save
    """
)


def test_a_reader_holding_the_lock_neither_blocks_nor_sees_a_torn_file(tmp_path: Path) -> None:
    saved, in_place = tmp_path / "saved.nxs", tmp_path / "in_place.nxs"
    save_nexus(tof_spectrum(), saved)
    save_nexus(tof_spectrum(), in_place)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(saved), str(in_place)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline() == "holding\n"
        # Control: writing in place, as scipp.io.save_hdf5 and h5py.File(path, "w") do, fails on the lock and
        # has already truncated the file under the reader.
        with pytest.raises(OSError, match="unable to lock file"), h5py.File(in_place, "w"):
            pass
        assert in_place.stat().st_size == 0
        # save_nexus replaces the file by a rename: the lock is on the old file, which the reader keeps.
        save_nexus(tof_spectrum() * 10, saved)
        stdout, _ = reader.communicate("\n", timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert float(stdout) == 14.0  # the old content, whole
    with h5py.File(saved, "r") as f:
        assert f["entry/data/data"][()].tolist() == [10.0, 40.0, 90.0]


# --- the demo's post_proc killed with SIGKILL while a reader polls its outputs ----------------------------------

KILLS = 30
DAEMON_KILLS = 2
OUTPUT_STEM = "ADARA_FakeEvent_1_live"


def check_output(path: Path) -> str | None:
    """Why the output at ``path`` is torn (it opens, with the demo's full content), or None if it is whole."""
    try:
        if path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                if f["entry/pixels/data"][()].shape != (64, 64) or f["entry/tof/data"][()].shape != (200,):
                    return "wrong shape"
                if f["entry/tof/event_time_offset"].attrs["units"] != "µs":
                    return "no units"
        else:
            with Image.open(path) as image:
                image.load()
                if image.size != (880, 360):  # figsize (11, 4.5) at dpi 80
                    return f"size {image.size}"
    except FileNotFoundError:
        return None  # replaced between the listing and the open: the reader opens the next one
    except Exception as error:  # noqa: BLE001 - any failure to read the file is what is counted
        return f"{type(error).__name__}: {error}"
    return None


class OutputReader(threading.Thread):
    """Polls the demo's two outputs, opening and checking each file that exists."""

    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.paths = [directory / f"{OUTPUT_STEM}{suffix}" for suffix in (".h5", ".png")]
        self.reads = 0
        self.torn: list[str] = []
        self.finished = threading.Event()

    def run(self) -> None:
        while not self.finished.wait(0.005):  # pacing of the polling loop only: it waits for nothing
            for path in self.paths:
                if path.exists():
                    self.reads += 1
                    if (problem := check_output(path)) is not None:
                        self.torn.append(f"{path.name}: {problem}")


def kill_during_saves(out: Path, kills: int, start: Callable[[int], tuple[Callable[[], None], Callable[[], str]]]):
    """``kills`` writers of the demo's outputs in ``out``, each killed with SIGKILL at a random moment after one of
    its saves has created its temporary file, a reader polling the outputs all the while; returns the reader.

    In turn the PNG's save (killed 0-300 ms later: while matplotlib renders and writes it, about 100 ms, during the
    NeXus write, or after both) and the NeXus file's (0-20 ms later, its write takes 10-20 ms). ``start(kill)``
    starts a writer (the first one has written both outputs when it returns) and returns (a function that kills
    it with SIGKILL, a function describing it for a failure message). A kill inside a save leaves that save's
    temporary file behind, which counts the kills that hit a write.
    """
    reader = OutputReader(out)
    reader.start()
    rng = random.Random(8)
    try:
        for kill in range(kills):
            suffix, window = ((".png", 0.3), (".h5", 0.02))[kill % 2]
            before = set(leftovers(out))
            kill_writer, describe = start(kill)

            def save_begun(suffix: str = suffix, before: set[str] = before) -> bool:
                return any(name.startswith(f".{OUTPUT_STEM}{suffix}.") for name in set(leftovers(out)) - before)

            def waited_for(suffix: str = suffix, kill: int = kill, describe: Callable[[], str] = describe) -> str:
                return f"the temporary file of a {suffix} save (kill {kill}); {describe()}"

            poll_until(save_begun, waited_for, timeout=30, interval=0.002)  # the NeXus temporary file lives 10-20 ms
            time.sleep(rng.uniform(0.0, window))  # the random moment of the kill
            kill_writer()  # SIGKILL
            for path in reader.paths:
                assert check_output(path) is None, f"torn after kill -9: {path}"
    finally:
        reader.finished.set()
        reader.join(timeout=10)
    assert reader.torn == [], f"{len(reader.torn)} torn of {reader.reads} reads: {reader.torn[:5]}"
    assert reader.reads > 100, "the reader did not poll the outputs"
    assert all(check_output(path) is None for path in reader.paths)
    return reader


def hits_mid_write(out: Path) -> dict[str, int]:
    """Kills that hit a save, per output (each left the save's temporary file behind)."""
    return {suffix: sum(f"{suffix}." in name for name in leftovers(out)) for suffix in (".png", ".h5")}


def test_sigkill_during_post_proc_writes_never_leaves_a_torn_file(
    tmp_path: Path, daemon: Callable[..., Daemon]
) -> None:
    """The issue's test: SIGKILL at random moments of the demo's post_proc writes, a reader polling all the while.

    End to end, the real daemon running the demo's scripts is killed ``DAEMON_KILLS`` times (a daemon's start costs
    a second or two); the ``KILLS`` kills at random moments hit the same post_proc in processes forked from a
    writer that has imported what it needs, so that a kill costs what the saves cost."""
    kill_the_daemon_during_saves(tmp_path, daemon)
    (tmp_path / "forked").mkdir()
    kill_forked_writers_during_saves(tmp_path / "forked")


def kill_the_daemon_during_saves(tmp_path: Path, daemon: Callable[..., Daemon]) -> None:
    """The daemons work in ``tmp_path`` (the ``daemon`` fixture's) and write to its ``out``."""
    scripts = {role: (DEMO / f"reduce_ADARA_FakeEvent_live_{role}.py").read_text() for role in ("proc", "post_proc")}
    config = {"update_every": 0.05, "event_rate": 50000, "end_run_every": 3600, "log_file": "livereduce.log"}
    out = tmp_path / "out"
    out.mkdir()
    started: list[Daemon] = []

    def start(kill: int) -> tuple[Callable[[], None], Callable[[], str]]:
        process = daemon(config, scripts=scripts, instrument="ADARA_FakeEvent")
        started.append(process)
        if kill == 0:  # both outputs exist before the first kill
            process.wait_for_log(lambda log: "Wrote " in log)
        return process.kill, lambda: f"the log: {process.log()}"

    reader = kill_during_saves(out, DAEMON_KILLS, start)
    log = started[-1].log()  # every daemon appended to the same log file
    assert " - ERROR - " not in log  # no failed post_proc (e.g. "unable to lock file" under the reader)
    for path in reader.paths:
        torn = tmp_path / f"torn{path.suffix}"
        torn.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        assert check_output(torn) is not None


WRITER = textwrap.dedent(
    """
    import os, sys, traceback
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot
    import numpy as np
    import scipp as sc
    import livereduce.outputs

    figure = matplotlib.pyplot.figure()  # load the fonts once, as the daemon has after its first cycle
    figure.text(0.5, 0.5, "counts per pixel [µs]")
    figure.canvas.draw()
    matplotlib.pyplot.close(figure)
    script, out = Path(sys.argv[1]), sys.argv[2]
    os.environ["LIVEREDUCE_OUTPUT_DIR"] = out
    code = compile(script.read_text(), str(script), "exec")
    for request in sys.stdin:  # one line per writer: fork one, report its pid, then how it ended
        pid = os.fork()
        if pid == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the script's "Wrote ..." lines
            try:
                # the demo's accumulation (its proc script's output) as the scipp engine gives it to post_proc
                rng = np.random.default_rng(int(request))
                pixels = sc.DataArray(
                    sc.array(dims=["y", "x"], values=rng.poisson(3.0, (64, 64)).astype(float), unit="counts"),
                    coords={"run_number": sc.scalar(1, unit=None), "instrument_name": sc.scalar("ADARA_FakeEvent")},
                )
                tof = sc.DataArray(
                    sc.array(dims=["event_time_offset"], values=rng.poisson(60.0, 200).astype(float), unit="counts"),
                    coords={"event_time_offset": sc.linspace("event_time_offset", 0.0, 16667.0, 201, unit="us")},
                )
                for array in (pixels, tof):
                    array.coords["start_time"] = sc.datetime("2026-01-01T00:00:00", unit="ns")
                for name in ("run_number", "instrument_name", "start_time"):
                    pixels.coords.set_aligned(name, False)
                tof.coords.set_aligned("start_time", False)
                accumulation = sc.DataGroup({"pixels": pixels, "tof": tof})
                while True:  # as the daemon runs post_proc after every chunk
                    exec(code, {"__name__": "__main__", "input": accumulation})
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        print(pid, flush=True)
        print(os.waitpid(pid, 0)[1], flush=True)
    """
)


def kill_forked_writers_during_saves(tmp_path: Path) -> None:
    """``KILLS`` kills: the demo's post_proc runs in a loop in a process forked for each kill from a writer that has
    imported what the script needs (as the daemon has)."""
    out = tmp_path / "out"
    out.mkdir()
    errors = tmp_path / "writer.err"
    with errors.open("w") as stderr:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(DEMO / "reduce_ADARA_FakeEvent_live_post_proc.py"), str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=dict(
                os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
            ),
        )
    endings: list[int] = []

    def start(kill: int) -> tuple[Callable[[], None], Callable[[], str]]:
        writer.stdin.write(f"{kill}\n")
        writer.stdin.flush()
        pid = int(writer.stdout.readline())
        if kill == 0:  # both outputs exist before the first kill
            poll_until(lambda: all((out / f"{OUTPUT_STEM}{s}").exists() for s in (".h5", ".png")), errors.read_text)

        def kill_it() -> None:
            os.kill(pid, signal.SIGKILL)
            endings.append(int(writer.stdout.readline()))

        return kill_it, lambda: f"the writer's errors: {errors.read_text()}"

    try:
        kill_during_saves(out, KILLS, start)
    finally:
        writer.stdin.close()
        try:
            writer.wait(timeout=30)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    ended = [
        f"signal {os.WTERMSIG(e)}" if os.WIFSIGNALED(e) else f"exit {os.waitstatus_to_exitcode(e)}" for e in endings
    ]
    assert ended == [f"signal {signal.SIGKILL:d}"] * KILLS, errors.read_text()  # killed in its loop: no failed save
    assert writer.returncode == 0, errors.read_text()
    hit_mid_write = hits_mid_write(out)
    assert min(hit_mid_write.values()) >= 1, f"kills inside a write: {hit_mid_write}: the test showed little"
