"""A readable but malformed NeXus file is a one-line source error (exit 3), never an internal error.

Each case builds a small bad file with h5py and is checked in process: ``FileEventDataListener`` raises
:class:`SourceError` with the expected text, on one line, starting with the file's name. Every case fails in
``connect()``, so the daemon takes the same path for all of them; two of them (a file HDF5 cannot open, and the
real SANS2D file cut in half, where the HDF5 library itself fails) go through the real daemon: exit 3, the message
once on stdout and once in the log, as the last line of stdout, no traceback.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import SANS2D
from livereduce.config import Config
from livereduce.engines.scipp.chunk import MAX_PIXELS
from livereduce.engines.scipp.listeners.file import FileEventDataListener
from livereduce.errors import SourceError

PASS = "output = input\n"
OFFSET = "2026-01-01T00:00:00"


def nexus(path: Path, change: Callable[[h5py.Group], None] | None = None) -> Path:
    """A valid SNS-style file (3 pulses, 5 events), then ``change(bank)`` applied to its NXevent_data group."""
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        bank = entry.create_group("bank1_events")
        bank.attrs["NX_class"] = "NXevent_data"
        bank["event_id"] = np.array([1, 2, 3, 4, 5], np.uint32)
        bank["event_time_offset"] = np.array([10, 20, 30, 40, 50], np.float32)
        bank["event_time_offset"].attrs["units"] = "microsecond"
        bank["event_time_zero"] = np.array([0.0, 1 / 60, 2 / 60])
        bank["event_time_zero"].attrs.update({"units": "second", "offset": OFFSET})
        bank["event_index"] = np.array([0, 2, 4], np.uint64)
        if change is not None:
            change(bank)
    return path


def replace(name: str, data: object, **attrs: str) -> Callable[[h5py.Group], None]:
    """Replace field ``name`` of the bank by ``data`` (keeping its attributes unless given)."""

    def change(bank: h5py.Group) -> None:
        kept = dict(bank[name].attrs)
        del bank[name]
        bank[name] = data
        bank[name].attrs.update(attrs or kept)

    return change


def as_group(name: str) -> Callable[[h5py.Group], None]:
    def change(bank: h5py.Group) -> None:
        del bank[name]
        bank.create_group(name)

    return change


def unwritten_event_id(bank: h5py.Group) -> None:
    """event_id declared with 2**40 values (8 bytes of file, 4 TiB if read) and event_index pointing into it."""
    del bank["event_id"], bank["event_time_offset"]
    bank.create_dataset("event_id", shape=(2**40,), dtype=np.uint32, chunks=(1 << 16,))
    bank.create_dataset("event_time_offset", shape=(2**40,), dtype=np.float32, chunks=(1 << 16,))


def broken_link(bank: h5py.Group) -> None:
    del bank["event_time_offset"]
    bank["event_time_offset"] = h5py.SoftLink("/entry/nowhere")


def wide_ids(bank: h5py.Group) -> None:
    replace("event_id", np.array([0, 2, 3, 4, 2**30], np.uint32))(bank)


def detector_number(data: object) -> Callable[[h5py.Group], None]:
    def change(bank: h5py.Group) -> None:
        detector = bank.parent.create_group("instrument/bank1")
        detector.attrs["NX_class"] = "NXdetector"
        detector["detector_number"] = data

    return change


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.nxs"
    os.mkfifo(path)
    return path


def directory(tmp_path: Path) -> Path:
    path = tmp_path / "run.nxs"
    path.mkdir()
    return path


def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.nxs"
    path.write_text("this is not a NeXus file\n")
    return path


def empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.nxs"
    path.touch()
    return path


def no_event_data(tmp_path: Path) -> Path:
    path = tmp_path / "histograms.nxs"
    with h5py.File(path, "w") as f:
        f.create_group("entry").attrs["NX_class"] = "NXentry"
    return path


def truncated_sans2d(tmp_path: Path) -> Path:
    if not SANS2D.is_file():
        pytest.skip(f"{SANS2D} is not available")
    path = tmp_path / "truncated.nxs"
    data = SANS2D.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def sans2d_without_event_index(tmp_path: Path) -> Path:
    if not SANS2D.is_file():
        pytest.skip(f"{SANS2D} is not available")
    path = tmp_path / "copy.nxs"
    shutil.copy(SANS2D, path)
    with h5py.File(path, "r+") as f:
        del f["raw_data_1/detector_1_events/event_index"]
    return path


def bad(change: Callable[[h5py.Group], None]) -> Callable[[Path], Path]:
    return lambda tmp_path: nexus(tmp_path / "bad.nxs", change)


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    # the file itself
    "missing": (lambda tmp_path: tmp_path / "missing.nxs", ": no such file"),
    "directory": (directory, ": is a directory, not a NeXus file"),
    "fifo": (fifo, ": not a regular file (a FIFO, device or socket)"),
    "not hdf5": (text_file, ": not an HDF5/NeXus file"),
    "empty file": (empty_file, ": not an HDF5/NeXus file"),
    "truncated": (truncated_sans2d, " cannot be read (truncated or corrupt?): "),
    "no NXevent_data": (no_event_data, ": no NXevent_data group found"),
    # the fields of NXevent_data
    "missing field": (sans2d_without_event_index, "has no event_index ('event_index' is missing)"),
    "broken link": (bad(broken_link), "has no event_time_offset ('event_time_offset' is a broken link)"),
    "event_id strings": (
        bad(replace("event_id", np.array([b"a", b"b", b"c", b"d", b"e"]))),
        "'/entry/bank1_events/event_id' holds strings, expected integers",
    ),
    "event_id floats": (
        bad(replace("event_id", np.arange(5.0))),
        "'/entry/bank1_events/event_id' holds floating-point numbers, expected integers",
    ),
    "event_id booleans": (
        bad(replace("event_id", np.ones(5, bool))),
        "'/entry/bank1_events/event_id' holds booleans, expected integers",
    ),
    "event_id scalar": (
        bad(replace("event_id", np.uint32(7))),
        "'/entry/bank1_events/event_id' is a scalar, expected a 1-D array",
    ),
    "event_id 2-D": (
        bad(replace("event_id", np.ones((5, 2), np.uint32))),
        "'/entry/bank1_events/event_id' is 2-D (shape (5, 2)), expected a 1-D array",
    ),
    "event_id empty dataspace": (
        bad(replace("event_id", h5py.Empty("uint32"))),
        "'/entry/bank1_events/event_id' holds no data (empty dataspace)",
    ),
    "event_time_offset group": (
        bad(as_group("event_time_offset")),
        "'/entry/bank1_events/event_time_offset' is a group, not a dataset",
    ),
    "event_time_offset strings": (
        bad(replace("event_time_offset", np.array(["1", "2", "3", "4", "5"], dtype=h5py.string_dtype()))),
        "'/entry/bank1_events/event_time_offset' holds strings or references, expected numbers",
    ),
    "event_time_offset units": (
        bad(replace("event_time_offset", np.ones(5, np.float32), units="furlong")),
        "'/entry/bank1_events/event_time_offset' has units 'furlong', not a time unit",
    ),
    "event_time_zero not monotonic": (
        bad(replace("event_time_zero", np.array([0.0, 2.0, 1.0]))),
        "'/entry/bank1_events/event_time_zero' is not strictly increasing: pulse 2 (2026-01-01T00:00:01.000000000) "
        "is earlier than pulse 1 (2026-01-01T00:00:02.000000000)",
    ),
    "event_time_zero duplicated": (
        bad(replace("event_time_zero", np.array([0.0, 1.0, 1.0]))),
        "'/entry/bank1_events/event_time_zero' is not strictly increasing: pulse 2 (2026-01-01T00:00:01.000000000) "
        "repeats the time of pulse 1",
    ),
    "event_time_zero NaN": (
        bad(replace("event_time_zero", np.array([0.0, np.nan, 1.0]))),
        "'/entry/bank1_events/event_time_zero' has a value that is not a finite number (pulse 1: nan)",
    ),
    "event_time_zero infinite": (
        bad(replace("event_time_zero", np.array([0.0, 1.0, np.inf]))),
        "'/entry/bank1_events/event_time_zero' has a value that is not a finite number (pulse 2: inf)",
    ),
    "event_time_zero not a time unit": (
        bad(replace("event_time_zero", np.array([0.0, 1.0, 2.0]), units="K", offset=OFFSET)),
        "'/entry/bank1_events/event_time_zero' has units 'K', not a time unit",
    ),
    "event_time_zero wrong unit": (  # ns values declared as seconds: year 55,000
        bad(replace("event_time_zero", np.array([1.7e18, 1.8e18, 1.9e18]), units="s", offset=OFFSET)),
        "'/entry/bank1_events/event_time_zero' has values too large for pulse times in nanoseconds (wrong units?)",
    ),
    "event_time_zero beyond 2262": (
        bad(replace("event_time_zero", np.array([0, 1, 2**33], np.int64), units="s", offset=OFFSET)),
        "'/entry/bank1_events/event_time_zero' gives pulse times outside the years 1678..2262",
    ),
    "event_time_zero offset": (
        bad(replace("event_time_zero", np.array([0.0, 1.0, 2.0]), units="s", offset="yesterday")),
        "'/entry/bank1_events/event_time_zero' has an invalid offset attribute 'yesterday'",
    ),
    "event_time_zero offset NaT": (
        bad(replace("event_time_zero", np.array([0.0, 1.0, 2.0]), units="s", offset="NaT")),
        "'/entry/bank1_events/event_time_zero' has an invalid offset attribute 'NaT'",
    ),
    "event_index decreasing": (
        bad(replace("event_index", np.array([0, 4, 2], np.uint64))),
        "'/entry/bank1_events/event_index' is inconsistent: entry 2 (2) is smaller than entry 1 (4); "
        "event_index must be non-decreasing",
    ),
    "event_index beyond the events": (
        bad(replace("event_index", np.array([0, 2, 6], np.int64))),
        "'/entry/bank1_events/event_index' is inconsistent: entry 2 is 6, outside 0..5 (the number of events)",
    ),
    "event_index negative": (
        bad(replace("event_index", np.array([-1, 2, 4], np.int64))),
        "'/entry/bank1_events/event_index' is inconsistent: entry 0 is -1, outside 0..5",
    ),
    "event_index uint64 max": (
        bad(replace("event_index", np.array([0, 2**64 - 1, 4], np.uint64))),
        "'/entry/bank1_events/event_index' is inconsistent: entry 1 is 18446744073709551615, outside 0..5",
    ),
    "lengths differ": (
        bad(replace("event_time_offset", np.ones(4, np.float32))),
        "event_id/event_time_offset (5/4 events) or event_time_zero/event_index (3/3 pulses) differ in length",
    ),
    "unwritten data": (
        bad(unwritten_event_id),
        "'/entry/bank1_events/event_id' declares 1099511627776 values but the file does not store them all",
    ),
    # the pixel range
    "pixel span": (
        bad(wide_ids),
        f"event_id values span 0..1073741824, more than {MAX_PIXELS} pixels, and the file has no NXdetector "
        "detector_number",
    ),
    "detector_number span": (
        bad(detector_number(np.array([0, 2**25]))),
        f"NXdetector detector_number spans 0..33554432, more than {MAX_PIXELS} pixels",
    ),
    "detector_number strings": (
        bad(detector_number(np.array([b"1", b"2"]))),
        "'/entry/instrument/bank1/detector_number' holds strings, expected integers",
    ),
    "detector_number negative": (
        bad(detector_number(np.array([-5, -1]))),
        "NXdetector detector_number holds no pixel id in 0..2147483647",
    ),
}


def _in_process(path: Path) -> None:
    """Open and replay the file as the engine does (connect, start, extract until ended)."""
    listener = FileEventDataListener(Config(filename=str(path), replay_speed=0, replay_chunk_pulses=1))
    listener.connect()
    try:
        listener.start("from_start_of_run")
        for _ in range(10):
            if listener.extract().ended:
                return
        pytest.fail("the replay did not end")
    finally:
        listener.disconnect()


@pytest.mark.parametrize(("make", "expected"), CASES.values(), ids=CASES.keys())
def test_malformed_file_is_a_source_error_in_process(tmp_path: Path, make, expected: str) -> None:
    path = make(tmp_path)
    with pytest.raises(SourceError) as caught:
        _in_process(path)
    message = str(caught.value)
    assert message.startswith(f"'{path}'"), message
    assert expected in message, message
    assert "\n" not in message


def _replay_config(path: Path) -> dict:
    return {
        "listener": "FileEventDataListener",
        "filename": str(path),
        "replay_speed": 0,
        "replay_chunk_pulses": 1,
        "update_every": 0.01,
        "run_transition": "Stop",
    }


def _assert_one_error_line(run, path: Path, expected: str) -> None:
    assert run.returncode == 3, run.stdout
    assert "Traceback" not in run.stdout, run.stdout
    assert "Traceback" not in run.log, run.log
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith(f"'{path}'"), run.stdout
    assert expected in last, last
    assert sum(expected in line for line in run.stdout.splitlines()) == 1, run.stdout
    errors = [line for line in run.log.splitlines() if expected in line]
    assert len(errors) == 1, run.log
    assert " - livereduce - ERROR - " in errors[0], errors[0]


DAEMON_CASES = ("not hdf5", "truncated")
"""The cases that also go through the daemon (the others differ from them only in the message's text)."""


def test_every_case_fails_where_the_daemon_cases_do(tmp_path: Path) -> None:
    """Every case fails in ``connect()``, as the daemon cases do: the daemon's path from the error to its exit is
    the same for all of them, so the daemon cases stand for the rest."""
    for name, (make, _) in CASES.items():
        folder = tmp_path / name
        folder.mkdir()
        listener = FileEventDataListener(Config(filename=str(make(folder)), replay_speed=0, replay_chunk_pulses=1))
        with pytest.raises(SourceError):
            listener.connect()
        listener.disconnect()


@pytest.mark.parametrize("case", DAEMON_CASES)
def test_malformed_file_exits_3_with_one_line(tmp_path: Path, daemon, case: str) -> None:
    make, expected = CASES[case]
    path = make(tmp_path)
    run = daemon(_replay_config(path), {"proc": PASS}).finish(timeout=60)
    _assert_one_error_line(run, path, expected)


# --- a block that cannot be read in the middle of the replay ---------------------------------------------------------
def corrupt_late_block(tmp_path: Path) -> Path:
    """10 pulses of 1000 events, event_time_offset gzip-compressed in chunks of 1000; the chunk of pulse 7
    overwritten with garbage, so opening works and the replay fails when it reaches pulse 7."""
    path = tmp_path / "corrupt.nxs"
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        bank = entry.create_group("bank1_events")
        bank.attrs["NX_class"] = "NXevent_data"
        bank["event_id"] = np.arange(10_000, dtype=np.uint32) % 97
        data = np.ones(10_000, np.float32)
        bank.create_dataset("event_time_offset", data=data, chunks=(1000,), compression="gzip")
        bank["event_time_zero"] = np.arange(10.0)
        bank["event_index"] = np.arange(0, 10_000, 1000, dtype=np.uint64)
        info = bank["event_time_offset"].id.get_chunk_info(7)
    with path.open("r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\xff" * info.size)
    return path


CORRUPT = "cannot be read at pulses 7..7 (truncated or corrupt?)"


def test_unreadable_block_mid_replay_is_a_source_error_in_process(tmp_path: Path) -> None:
    path = corrupt_late_block(tmp_path)
    listener = FileEventDataListener(Config(filename=str(path), replay_speed=0, replay_chunk_pulses=1))
    listener.connect()
    listener.start("from_start_of_run")
    for _ in range(7):
        assert listener.extract().chunk.sizes["event_time_zero"] == 1  # pulses 0..6 read fine
    with pytest.raises(SourceError, match=r"corrupt\.nxs' cannot be read at pulses 7\.\.7 \(truncated or corrupt\?\)"):
        listener.extract()
    assert listener.health().state.endswith("pulse 7 of 10")


def test_unreadable_block_mid_replay_exits_3_with_one_line(tmp_path: Path, daemon) -> None:
    path = corrupt_late_block(tmp_path)
    run = daemon(_replay_config(path), {"proc": PASS}).finish(timeout=60)
    assert run.returncode == 3, run.stdout
    assert "Traceback" not in run.stdout + run.log, run.log
    assert "Chunk 5: 1000 events in 1 pulses" in run.log  # it did replay the readable pulses first
    # the engine reports a failure while running as "Live data failed: ...", and the daemon's last line repeats it
    failed = [line for line in run.log.splitlines() if CORRUPT in line and " - ERROR - " in line]
    assert len(failed) == 1, run.log
    assert failed[0].endswith(
        f"Live data failed: '{path}' {CORRUPT}: Can't synchronously read data (filter returned failure during read)"
    )
    assert CORRUPT in run.stdout.strip().splitlines()[-1]
    assert run.log.count("Initial chunk") == 1  # no restart: a file fails the same way again


# --- invalid event ids through the daemon: dropped, counted in the chunk's log line --------------------------------
def test_out_of_range_event_ids_are_dropped_and_logged_per_chunk(tmp_path: Path, daemon) -> None:
    """With preserve_events false one id of 3e9 used to size a 12 GB histogram (wrapped through int32) and 2**40
    one of 4 TiB; now the histogram spans the pixel range 1..5 and those events are counted as dropped."""
    ids = np.array([1, 2, 3_000_000_000, 4, 2**40, 5], np.uint64)
    path = nexus(
        tmp_path / "ids.nxs",
        lambda bank: (
            replace("event_id", ids)(bank),
            replace("event_time_offset", np.full(6, 10.0, np.float32))(bank),
            replace("event_index", np.array([0, 2, 4], np.uint64))(bank),
        ),
    )
    config = _replay_config(path) | {"preserve_events": False}
    run = daemon(config, {"proc": PASS}).finish(timeout=60)
    assert run.returncode == 0, run.stdout
    assert "Traceback" not in run.log
    assert "pixels 1..5 (from the event data: no NXdetector detector_number)" in run.log
    assert "Chunk 0: 1 events dropped at the source: 1 event_id above 2147483647" in run.log
    assert "Chunk 1: 1 events dropped at the source: 1 event_id beyond 32 bits" in run.log
    assert "Initial chunk: 2 events in 1 pulses" in run.log  # a chunk without invalid ids logs no drop
    assert "Initial chunk: " + "1 events dropped" not in run.log
