"""Provenance in every NeXus output (issue 17 §4): ``save_nexus`` writes ``/entry/livereduce``, an ``NXprocess``
saying what made the data (:func:`livereduce.provenance.current` of the saving thread), or that it was written
outside a live cycle. Read back with h5py (every field, its HDF5 type and NX_class), scippnexus and nexusformat."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import nexusformat.nexus as nx
import numpy as np
import pytest
import scipp as sc
import scippnexus as snx

import livereduce
from livereduce import outputs
from livereduce.config import Config
from livereduce.outputs import save_nexus
from livereduce.provenance import Provenance, origin, set_current
from livereduce.provenance_nexus import LIVE, OUTSIDE
from livereduce.scripts import load_scripts

SANS2D_FILE = "/work/shared/data/SANS2D_minimal.nxs"
PULSES = (
    ("2026-03-01T10:00:00.000000001Z", "2026-03-01T10:00:09.983333334Z"),
    ("2026-03-01T10:00:10.000000001Z", "2026-03-01T10:00:19.983333334Z"),
)
SCRIPTS = {"proc": "output = input\n", "post_proc": "output = input  # µ: UTF-8\n"}
"""Script texts; the directory's name is not ASCII either (the paths are UTF-8 strings in the file)."""


@pytest.fixture(autouse=True)
def no_current_afterwards() -> Iterator[None]:
    """The test thread's current provenance is None again after each test."""
    yield
    set_current(None)


def spectrum() -> sc.DataArray:
    return sc.DataArray(
        sc.array(dims=["tof"], values=[4.0, 9.0], variances=[4.0, 9.0], unit="counts"),
        coords={"tof": sc.array(dims=["tof"], values=[0.0, 50.0, 100.0], unit="us")},
    )


def made_by_two_chunks(tmp_path: Path) -> Provenance:
    """What the scipp engine holds after two chunks of run 42 of the SANS2D file, with both scripts: made by the
    same calls as the engine's (``origin``, ``with_scripts``, ``after_chunk``)."""
    script_dir = tmp_path / "scripts_été"
    script_dir.mkdir()
    for role, text in SCRIPTS.items():
        (script_dir / f"reduce_SANS2D_live_{role}.py").write_text(text, encoding="utf-8")
    config = Config(instrument="SANS2D", filename=SANS2D_FILE, accum_method="Append", preserve_events=False)
    versions = {"scipp": sc.__version__, "scippnexus": snx.__version__}
    made = origin(config, "scipp", versions, "FileEventDataListener")
    made = made.with_scripts(load_scripts(script_dir, "SANS2D", strict=False))
    made = made.after_chunk(42, {"next_pulse": 600}, 1_000, PULSES[0])
    return made.after_chunk(42, {"next_pulse": 1200}, 2_345, PULSES[1])


def texts(group: h5py.Group) -> dict[str, str]:
    """The group's string fields, checked to be scalar variable-length UTF-8."""
    found = {}
    for name, item in group.items():
        info = h5py.check_string_dtype(item.dtype) if isinstance(item, h5py.Dataset) else None
        if info is not None:
            assert (info.encoding, info.length, item.shape) == ("utf-8", None, ()), name
            found[name] = item[()].decode()
    return found


def json_note(note: h5py.Group) -> object:
    assert note.attrs["NX_class"] == "NXnote"
    assert texts(note)["type"] == "application/json"
    return json.loads(texts(note)["data"])


def test_every_field_of_the_provenance_is_in_the_nxprocess(tmp_path: Path) -> None:
    made = made_by_two_chunks(tmp_path)
    set_current(made)
    path = save_nexus(spectrum(), tmp_path / "live.nxs")

    with h5py.File(path, "r") as f:
        process = f["entry/livereduce"]
        assert process.attrs["NX_class"] == "NXprocess"
        assert texts(process) == {
            "program": "livereduce",
            "version": livereduce.__version__,
            "date": f.attrs["file_time"],  # when the file was written
            "description": LIVE,
            "engine": "scipp",
            "instrument": "SANS2D",
            "accum_method": "Append",
            "first_pulse": PULSES[0][0],
            "last_pulse": PULSES[1][1],
        }
        for name, value in (("run_number", 42), ("chunks", 2), ("events", 3_345)):
            assert (process[name].dtype, process[name].shape, process[name][()]) == (np.int64, (), value), name
        assert process["preserve_events"].dtype == np.bool_  # NX_BOOLEAN: h5py's enum over int8
        stored = process["preserve_events"].id.get_type()  # the HDF5 type: an enum FALSE/TRUE over int8
        assert isinstance(stored, h5py.h5t.TypeEnumID)
        assert (stored.get_super().get_size(), stored.enum_nameof(1)) == (1, b"TRUE")
        assert process["preserve_events"][()] is np.False_

        versions = process["versions"]
        assert versions.attrs["NX_class"] == "NXcollection"
        assert texts(versions) == {"scipp": sc.__version__, "scippnexus": snx.__version__}

        assert json_note(process["source"]) == {"listener": "FileEventDataListener", "filename": SANS2D_FILE}
        assert json_note(process["first_position"]) == {"next_pulse": 600}
        assert json_note(process["last_position"]) == {"next_pulse": 1200}

        for role, text in SCRIPTS.items():
            note = process[f"{role}_script"]
            assert note.attrs["NX_class"] == "NXnote"
            script = tmp_path / "scripts_été" / f"reduce_SANS2D_live_{role}.py"
            assert texts(note) == {
                "type": "text/x-python",
                "description": f"the {role} script, as it was run",
                "file_name": str(script),
                "md5": hashlib.md5(text.encode()).hexdigest(),
            }

        # Every attribute of Provenance, under its own name but for two, and nothing else (a new attribute, or
        # one left out, is noticed here).
        attributes = {field.name for field in dataclasses.fields(Provenance)} - {"livereduce_version", "scripts"}
        own = {"program", "version", "date", "description", "proc_script", "post_proc_script"}
        assert set(process) == attributes | own


def test_scippnexus_and_nexusformat_read_the_group_and_the_entry_as_before(tmp_path: Path) -> None:
    set_current(made_by_two_chunks(tmp_path))
    path = save_nexus(spectrum(), tmp_path / "live.nxs", mantid=False)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for the new group either
        entry = snx.load(path, root="entry")
    assert sorted(entry) == ["data", "livereduce"]
    assert sc.identical(entry["data"], spectrum())  # the member, as without the group
    process = entry["livereduce"]
    assert isinstance(process, sc.DataGroup)
    assert (process["program"], process["engine"], process["run_number"]) == ("livereduce", "scipp", 42)
    assert process["preserve_events"] is np.False_
    assert json.loads(process["last_position"]["data"]) == {"next_pulse": 1200}
    assert process["versions"]["scipp"] == sc.__version__
    assert process["post_proc_script"]["file_name"].endswith("reduce_SANS2D_live_post_proc.py")

    root = nx.nxload(str(path))
    assert root["entry/livereduce"].nxclass == "NXprocess"
    assert root["entry/livereduce/proc_script"].nxclass == "NXnote"
    assert str(root["entry/livereduce/instrument"].nxvalue) == "SANS2D"


def test_outside_a_live_cycle_it_says_so_with_what_it_knows(tmp_path: Path) -> None:
    set_current(None)
    path = save_nexus(spectrum(), tmp_path / "by_hand.nxs")

    with h5py.File(path, "r") as f:
        process = f["entry/livereduce"]
        assert process.attrs["NX_class"] == "NXprocess"
        assert texts(process) == {
            "program": "livereduce",
            "version": livereduce.__version__,
            "date": f.attrs["file_time"],
            "description": OUTSIDE,
            "engine": "unknown",
        }
        assert sorted(process) == ["date", "description", "engine", "program", "version"]
    assert "outside a live cycle" in OUTSIDE


def test_what_is_not_known_yet_is_left_out(tmp_path: Path) -> None:
    """A fresh accumulation (no chunk: no position, no pulse) and no scripts: those fields are absent, the
    counts 0."""
    config = Config(instrument="SANS2D", address="127.0.0.1:31415")
    set_current(origin(config, "scipp", {"scipp": sc.__version__}, "SNSLiveEventDataListener"))
    with h5py.File(save_nexus(spectrum(), tmp_path / "fresh.nxs"), "r") as f:
        process = f["entry/livereduce"]
        for absent in ("first_position", "last_position", "first_pulse", "last_pulse", "proc_script"):
            assert absent not in process, absent
        assert [process[name][()] for name in ("run_number", "chunks", "events")] == [0, 0, 0]
        assert json_note(process["source"]) == {"listener": "SNSLiveEventDataListener", "address": "127.0.0.1:31415"}


def test_the_provenance_is_the_saving_threads(tmp_path: Path) -> None:
    """The engine sets it in its cycle thread: a save in that thread records it, one in another thread does not."""
    made = made_by_two_chunks(tmp_path)
    failures: list[BaseException] = []

    def cycle() -> None:
        try:
            set_current(made)
            save_nexus(spectrum(), tmp_path / "cycle.nxs")
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            failures.append(err)

    thread = threading.Thread(target=cycle)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert failures == []
    save_nexus(spectrum(), tmp_path / "other.nxs")  # this thread never set one

    with h5py.File(tmp_path / "cycle.nxs", "r") as cycle_file, h5py.File(tmp_path / "other.nxs", "r") as other:
        assert cycle_file["entry/livereduce/engine"][()] == b"scipp"
        assert other["entry/livereduce/engine"][()] == b"unknown"


def test_the_name_is_reserved_for_members_and_monitors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outputs, "_left_out", set())  # warned once per process: this test's warning is new
    with pytest.raises(ValueError, match="'livereduce' is reserved for the provenance"):
        save_nexus(sc.DataGroup({"livereduce": spectrum()}), tmp_path / "member.nxs")
    assert not (tmp_path / "member.nxs").exists()

    events = sc.DataArray(
        sc.ones(dims=["event"], shape=[2], unit="counts"),
        coords={
            "event_time_offset": sc.array(dims=["event"], values=[1.0, 2.0], unit="us", dtype="float32"),
            "event_time_zero": sc.datetimes(dims=["event"], values=[0, 0], unit="ns"),
        },
    )
    data = spectrum().assign_coords(monitors=sc.scalar(sc.DataGroup({"livereduce": events, "monitor1": events})))
    with caplog.at_level("WARNING", logger="livereduce.outputs"):
        path = save_nexus(data, tmp_path / "monitor.nxs")
    with h5py.File(path, "r") as f:
        assert f["entry/livereduce"].attrs["NX_class"] == "NXprocess"
        assert f["entry/monitor1"].attrs["NX_class"] == "NXmonitor"  # control: a monitor of another name
    assert "leaves out monitor 'livereduce'" in caplog.text
