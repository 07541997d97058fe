"""Fuzzing the file source with hypothesis: random dtypes, shapes, ranges, orders and truncations of the four
``NXevent_data`` fields (plus their ``units``/``offset`` attributes, a second bank, an ``NXdetector``
``detector_number`` and truncated files).

Every case must end in a clean replay or in a one-line :class:`SourceError` (the daemon: exit 0, or exit 3 with
the message as its last line); never another exception, exit 1, a hang or a traceback. A clean replay must
also be right: the events delivered are the stored ones with a valid id (in order for one bank), the dropped
ones are counted, every pulse comes once.

Most cases run in process against the listener (fast); a few run through the real daemon. ``bench/fuzz_nexus.py``
runs 10,000 cases with the same strategy and prints the counts.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from livereduce.config import Config
from livereduce.engines.scipp.chunk import MAX_EVENT_ID, MAX_PIXELS, PULSE_DIM
from livereduce.engines.scipp.listeners.base import RunStatus
from livereduce.engines.scipp.listeners.file import FileEventDataListener
from livereduce.errors import SourceError

FIELDS = ("event_id", "event_time_offset", "event_time_zero", "event_index")
INTEGERS = ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", ">i4", ">u4", ">i8", ">u8")
FLOATS = ("f2", "f4", "f8", ">f8")
OTHERS = ("?", "S6", "string", "c8")
BOUNDARY_INTS = (-(2**63), -(2**31) - 1, -(2**31), -1, 0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**63 - 1)
TOF_UNITS = (None, "us", "microsecond", "ns", "nanosecond")
ETZ_UNITS = (None, "s", "second", "ms", "us", "ns")
UNITS = ("", "s", "ms", "us", "microsecond", "ns", "day", "K", "furlong", "1/s", "counts", "m")
GOOD_OFFSETS = (None, "2026-01-01T00:00:00", "2026-01-01T00:00:00-05:00", "2026-01-01T05:00:00Z")
OFFSETS = (
    *GOOD_OFFSETS,
    "1600-01-01T00:00:00",
    "2261-12-31T23:59:59",
    "NaT",
    "yesterday",
    "",
)
MUTATIONS = ("dtype", "values", "order", "truncate", "extend", "scalar", "2d", "empty", "group", "missing", "link")


@dataclass
class Dataset:
    """What to write for one field: the values (None: a group, "missing", "link"), the dtype and attributes."""

    values: np.ndarray | None
    kind: str = "dataset"  # dataset | group | missing | link
    dtype: str | None = None  # None: that of values
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Case:
    """One NeXus file to replay."""

    banks: list[dict[str, Dataset]]
    detector_number: np.ndarray | None = None
    truncate_at: float | None = None  # keep this fraction of the file's bytes
    chunk_pulses: int | None = None


# --- the strategy --------------------------------------------------------------------------------------------------
def _sometimes(draw: st.DrawFn, tenths: int) -> bool:
    """True with a chance of ``tenths``/10 (sampled_from is close to uniform; integers and floats drawn inside a
    composite strategy lean towards 0)."""
    return draw(st.sampled_from([False] * (10 - tenths) + [True] * tenths))


def _wide_integers() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-1000, 1000), st.integers(-(2**63), 2**64 - 1))


def _any_floats() -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10), st.sampled_from([0.0, 1e10, 1.7e18])
    )


@st.composite
def _mutated(draw: st.DrawFn, name: str, data: Dataset) -> Dataset:
    """``data`` changed in one random way (one time in ten)."""
    if not _sometimes(draw, 1):
        return data
    values = data.values
    assert values is not None
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "dtype":
        return Dataset(values, dtype=draw(st.sampled_from(INTEGERS + FLOATS + OTHERS)), attrs=data.attrs)
    if mutation == "values":
        integers = name in ("event_id", "event_index") or draw(st.booleans())
        elements = _wide_integers() if integers else _any_floats()
        dtype = "object" if integers else "f8"
        new = draw(st.lists(elements, min_size=values.size, max_size=values.size))
        return Dataset(np.array(new, dtype=dtype), dtype=draw(st.sampled_from(INTEGERS)) if integers else None)
    if mutation == "order" and values.size > 1:
        return Dataset(np.array(draw(st.permutations(list(values))), values.dtype), attrs=data.attrs)
    if mutation == "truncate" and values.size:
        return Dataset(values[: draw(st.integers(0, values.size - 1))], attrs=data.attrs)
    if mutation == "extend":
        extra = draw(st.lists(st.integers(0, 100), min_size=1, max_size=5))
        return Dataset(np.concatenate([values, np.array(extra, values.dtype)]), attrs=data.attrs)
    if mutation == "scalar":
        return Dataset(np.array(values[0] if values.size else 0, values.dtype), attrs=data.attrs)
    if mutation == "2d":
        return Dataset(np.stack([values, values], axis=draw(st.integers(0, 1))), attrs=data.attrs)
    if mutation == "empty":
        return Dataset(values[:0], attrs=data.attrs)
    if mutation in ("group", "missing", "link"):
        return Dataset(None, kind=mutation)
    return data


@st.composite
def _bank(draw: st.DrawFn) -> dict[str, Dataset]:
    """A consistent NXevent_data group (random sizes, ids, units), then each field perhaps mutated."""
    n_pulses = draw(st.integers(0, 8))
    n_events = draw(st.integers(0, 40))
    index = sorted(draw(st.lists(st.integers(0, n_events), min_size=n_pulses, max_size=n_pulses)))
    if index and draw(st.booleans()):
        index[0] = 0
    steps = draw(st.lists(st.floats(1e-3, 100.0), min_size=n_pulses, max_size=n_pulses))
    etz_unit = draw(st.sampled_from(UNITS if _sometimes(draw, 1) else ETZ_UNITS))
    tof_unit = draw(st.sampled_from(UNITS if _sometimes(draw, 1) else TOF_UNITS))
    offset = draw(st.sampled_from(OFFSETS if _sometimes(draw, 1) else GOOD_OFFSETS))
    bank = {
        "event_id": Dataset(draw(hnp.arrays("i8", n_events, elements=st.integers(0, 200))), dtype="u4"),
        "event_time_offset": Dataset(
            draw(hnp.arrays("f4", n_events, elements=st.floats(0, 1e5, width=32))),
            attrs={} if tof_unit is None else {"units": tof_unit},
        ),
        "event_time_zero": Dataset(
            np.cumsum(steps, dtype=np.float64),
            attrs={key: value for key, value in (("units", etz_unit), ("offset", offset)) if value is not None},
        ),
        "event_index": Dataset(np.array(index, np.int64), dtype=draw(st.sampled_from(("u8", "i8", "u4", "i4")))),
    }
    return {name: draw(_mutated(name, data)) for name, data in bank.items()}


@st.composite
def nexus_cases(draw: st.DrawFn) -> Case:
    """A NeXus file of one or two random banks, perhaps with detector_number, perhaps truncated."""
    banks = [draw(_bank())]
    if _sometimes(draw, 2):
        banks.append(draw(_bank()))
    detector_number = None
    if _sometimes(draw, 2):
        detector_number = draw(
            hnp.arrays(
                draw(st.sampled_from(("i4", "u4", "i8", ">u8"))),
                draw(st.sampled_from([(0,), (5,), (3, 4), ()])),
                elements=st.integers(0, 300) | st.sampled_from([0, 2**31 - 1, 2**24]),
            )
        )
    truncate_at = draw(st.integers(0, 99)) / 100 if _sometimes(draw, 1) else None
    return Case(banks, detector_number, truncate_at, draw(st.none() | st.integers(1, 5)))


# --- writing and replaying -----------------------------------------------------------------------------------------
def _stored(data: Dataset) -> np.ndarray:
    """The values as they are written (cast unsafely, as a careless writer would)."""
    values = data.values
    assert values is not None
    dtype = data.dtype
    if dtype in (None, values.dtype.str):
        return values
    if dtype == "string":
        return values.astype(str).astype(object)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if values.dtype == object:  # Python ints: wrap them into the target width
            width = np.dtype(dtype)
            if width.kind in "iu":
                bits = width.itemsize * 8
                wrapped = [v % 2**bits for v in values.tolist()]
                if width.kind == "i":
                    wrapped = [v - 2**bits if v >= 2 ** (bits - 1) else v for v in wrapped]
                return np.array(wrapped, dtype=width)
            return np.array(values.tolist(), dtype=np.float64).astype(width)
        return values.astype(dtype)


def write_case(path: Path, case: Case) -> Path:
    """Write the case's NeXus file (and truncate it if asked)."""
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        for number, bank in enumerate(case.banks, start=1):
            group = entry.create_group(f"bank{number}_events")
            group.attrs["NX_class"] = "NXevent_data"
            for name, data in bank.items():
                if data.kind == "group":
                    group.create_group(name)
                elif data.kind == "link":
                    group[name] = h5py.SoftLink("/entry/nowhere")
                elif data.kind == "dataset":
                    values = _stored(data)
                    if values.dtype == object:
                        group.create_dataset(name, data=values, dtype=h5py.string_dtype())
                    else:
                        group[name] = values
                    group[name].attrs.update(data.attrs)
        if case.detector_number is not None:
            detector = entry.create_group("instrument/detector")
            detector.attrs["NX_class"] = "NXdetector"
            detector["detector_number"] = case.detector_number
    if case.truncate_at is not None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * case.truncate_at)])
    return path


@dataclass
class Outcome:
    """How a case ended: ``clean``, ``source error`` (exit 3) or ``other`` (a defect), with details."""

    kind: str
    detail: str = ""


def _expected(path: Path, listener: FileEventDataListener) -> tuple[list[np.ndarray], int]:
    """From the file read independently with h5py: each bank's events that must be delivered (ids, in order, from
    its first pulse's first event), and the number of events of its pulses (delivered or dropped)."""
    first, last = listener.pixel_range
    delivered, total = [], 0
    with h5py.File(path, "r") as f:
        for name in sorted(f["entry"], key=lambda key: int(key[4:-7]) if key.endswith("_events") else 0):
            if not name.endswith("_events"):
                continue
            ids = f[f"entry/{name}/event_id"][()].astype(object)
            index = f[f"entry/{name}/event_index"][()]
            start = int(index[0]) if index.size else ids.size
            delivered.append(np.array([int(v) for v in ids[start:] if first <= v <= last], np.int64))
            total += ids.size - start
    return delivered, total


def replay_in_process(path: Path, chunk_pulses: int | None) -> Outcome:
    """Connect, start, extract until ended, as the engine does; SourceError is the only exception allowed, and
    warnings count as defects."""
    listener = FileEventDataListener(Config(filename=str(path), replay_speed=0, replay_chunk_pulses=chunk_pulses))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            listener.connect()
            listener.start("from_start_of_run")
            limit = listener.health().state.split(" of ")[-1]
            replay = []
            for _ in range(int(limit) + 2):
                replay.append(listener.extract())
                if replay[-1].ended:
                    break
            else:
                return Outcome("other", "the replay did not end")
        except SourceError as err:
            message = str(err)
            if "\n" in message or not message.startswith(f"'{path}'"):
                return Outcome("other", f"SourceError not one line naming the file: {message!r}")
            return Outcome("source error", message)
        except Exception as err:  # noqa: BLE001 - any other exception is the defect this test looks for
            return Outcome("other", f"{type(err).__name__}: {err}")
        finally:
            listener.disconnect()
    return _check_replay(path, listener, replay)


def _check_replay(path: Path, listener: FileEventDataListener, replay: list) -> Outcome:
    """A clean replay delivers exactly the valid stored events and counts the others."""
    first, last = listener.pixel_range
    if not (0 <= first <= last <= MAX_EVENT_ID and last - first < MAX_PIXELS):
        return Outcome("other", f"event_id_range {first}..{last}")
    if replay[-1].status != RunStatus.EndRun or any(x.ended or x.status != RunStatus.Running for x in replay[:-1]):
        return Outcome("other", f"statuses {[x.status.name for x in replay]}")
    delivered = []
    for x in replay:
        if x.chunk.sizes[PULSE_DIM]:
            delivered.append(x.chunk.bins.concat().value.coords["event_id"].values)
    got = np.concatenate(delivered) if delivered else np.empty(0, np.int32)
    dropped = sum(sum(x.dropped.values()) for x in replay)
    expected, total = _expected(path, listener)
    want = np.concatenate(expected) if expected else np.empty(0, np.int64)
    if got.size + dropped != total:
        return Outcome("other", f"{got.size} delivered + {dropped} dropped != {total} events")
    same = np.array_equal(got, want) if len(expected) == 1 else np.array_equal(np.sort(got), np.sort(want))
    if not same:
        return Outcome("other", f"delivered ids {got[:20]} differ from the stored valid ids {want[:20]}")
    pulses = sum(x.chunk.sizes[PULSE_DIM] for x in replay)
    if pulses != int(listener.health().state.split(" of ")[-1].split(",")[0]):
        return Outcome("other", f"{pulses} pulses delivered")
    return Outcome("clean")


def replay_in_daemon(workdir: Path, case: Case, timeout: float = 60) -> Outcome:
    """The case through the real daemon: exit 0 (clean), or exit 3 with the message as the last line of stdout
    and once in the log; anything else, a traceback or a hang is ``other``."""
    from conftest import Daemon  # test/ is on sys.path (pytest's rootdir conftest; bench inserts it)

    workdir.mkdir(parents=True, exist_ok=True)
    path = write_case(workdir / "case.nxs", case)
    (workdir / "reduce_SANS2D_live_proc.py").write_text("output = input\n")
    config = {
        "instrument": "SANS2D",
        "engine": "scipp",
        "script_dir": ".",
        "status_file": str(workdir / "status.json"),
        "listener": "FileEventDataListener",
        "filename": str(path),
        "replay_speed": 0,
        "replay_chunk_pulses": case.chunk_pulses,
        "update_every": 0.01,
        "run_transition": "Stop",
    }
    config_path = workdir / "livereduce.conf"
    config_path.write_text(json.dumps(config))
    daemon = Daemon(workdir, config_path)
    try:
        daemon.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        return Outcome("other", f"no exit within {timeout} s (a hang)")
    run = daemon.finish()
    stdout, log = run.stdout, run.log
    if "Traceback" in stdout or "Traceback" in log:
        return Outcome("other", f"a traceback:\n{stdout[-3000:]}")
    code = run.returncode
    if code == 0:
        return Outcome("clean")
    last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    if code == 3 and last.startswith(f"'{path}'") and sum(last in line for line in log.splitlines()) == 1:
        return Outcome("source error", last)
    return Outcome("other", f"exit {code}, last line {last!r}")


# --- the tests -----------------------------------------------------------------------------------------------------
IN_PROCESS_CASES = 400
DAEMON_CASES = 20


@settings(
    max_examples=IN_PROCESS_CASES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=nexus_cases())
def test_every_nexus_case_replays_cleanly_or_is_a_one_line_source_error(tmp_path_factory, case: Case) -> None:
    path = write_case(tmp_path_factory.mktemp("fuzz") / "case.nxs", case)
    outcome = replay_in_process(path, case.chunk_pulses)
    assert outcome.kind in ("clean", "source error"), outcome.detail


def test_nexus_cases_through_the_daemon_exit_0_or_3_with_one_line(tmp_path_factory) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=DAEMON_CASES, deadline=None, derandomize=True, database=None)
    @given(case=nexus_cases())
    def through_the_daemon(case: Case) -> None:
        outcome = replay_in_daemon(tmp_path_factory.mktemp("daemon"), case)
        assert outcome.kind in ("clean", "source error"), outcome.detail
        outcomes[outcome.kind] += 1

    through_the_daemon()
    assert outcomes["clean"] > 0  # the daemon runs saw both endings
    assert outcomes["source error"] > 0


def test_the_strategy_reaches_both_outcomes_and_the_checks_see_a_wrong_replay(tmp_path: Path) -> None:
    """Positive control: the cases are not all rejected nor all clean, and ``_check_replay`` would notice a
    listener that delivered a wrapped id."""
    outcomes: Counter[str] = Counter()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(case=nexus_cases())
    def collect(case: Case) -> None:
        path = write_case(tmp_path / "case.nxs", case)
        outcomes[replay_in_process(path, case.chunk_pulses).kind] += 1

    collect()
    assert outcomes["clean"] > 0
    assert outcomes["source error"] > 0
    assert outcomes["other"] == 0

    bank = {
        "event_id": Dataset(np.array([1, 2, 3], np.uint32)),
        "event_time_offset": Dataset(np.ones(3, np.float32)),
        "event_time_zero": Dataset(np.array([0.0, 1.0])),
        "event_index": Dataset(np.array([0, 1], np.uint64)),
    }
    path = write_case(tmp_path / "good.nxs", Case([bank]))
    listener = FileEventDataListener(Config(filename=str(path), replay_speed=0))
    listener.connect()
    listener.start("from_start_of_run")
    extracted = listener.extract()
    extracted.chunk.bins.constituents["data"].coords["event_id"].values[1] = 0  # as a wrapped id would look
    assert _check_replay(path, listener, [extracted]).kind == "other"


@pytest.mark.parametrize("dtype", ["u4", "i8", "u8", ">u4"])
def test_a_wrapped_id_would_be_caught(tmp_path: Path, dtype: str) -> None:
    """The fuzz oracle compares with the stored values: 3e9 (uint32) and 2**40 must be dropped, not delivered."""
    ids = np.array([5, 2**40 if np.dtype(dtype).itemsize == 8 else 3_000_000_000, 6], dtype=dtype)
    bank = {
        "event_id": Dataset(ids),
        "event_time_offset": Dataset(np.ones(3, np.float32)),
        "event_time_zero": Dataset(np.array([0.0])),
        "event_index": Dataset(np.array([0], np.uint64)),
    }
    path = write_case(tmp_path / "wide.nxs", Case([bank]))
    assert replay_in_process(path, None).kind == "clean"
