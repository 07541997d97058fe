"""Opening a NeXus event file and checking it before anything is read: the file, its ``NXevent_data`` groups,
their pulse times and the file's pixel range.

The file is hostile input. Every ``NXevent_data`` group is checked: the four fields (``event_id``,
``event_time_offset``, ``event_time_zero``, ``event_index``; NeXus base class NXevent_data) are 1-D datasets (not
groups, scalars or 2-D), of integer (``event_id``, ``event_index``) or numeric (``event_time_offset``,
``event_time_zero``) type, fully stored (no unwritten chunks), of matching lengths; ``event_index`` is
non-decreasing within ``0..len(event_id)``; ``event_time_zero`` is finite, in a time unit, strictly increasing and
within the years datetime64[ns] can hold; a group holds at most :data:`MAX_PULSES` pulses. Any violation is a
one-line :class:`~livereduce.errors.SourceError` naming the file, the dataset and the problem.

Units: ISIS files (``raw_data_1/detector_1_events``) have no ``units`` attributes (ISIS convention: µs for
``event_time_offset``, s for ``event_time_zero``); SNS files (``entry/bankN_events``) have them (any time unit
scipp knows). ``event_time_zero``'s ``offset`` attribute (ISO 8601, a zone suffix is applied, none = UTC) is its
origin, else the Unix epoch. SNS's ``bank_error_events`` and ``bank_unmapped_events`` are skipped, as Mantid's
LoadEventNexus skips them.

The pixel range is that of the ``detector_number`` datasets of the entry's ``NXdetector`` groups (the NeXus way to
name an instrument's pixels) when there are any, else that of the valid ids in the event data; ids are valid in
``0..``:data:`~livereduce.engines.scipp.chunk.MAX_EVENT_ID`, and the range spans at most
:data:`~livereduce.engines.scipp.chunk.MAX_PIXELS`.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipp as sc

from livereduce.engines.scipp.chunk import MAX_EVENT_ID, MAX_PIXELS
from livereduce.errors import SourceError

LOGGER = "livereduce.LoadEventNexus"
"""The logger of reading NeXus event files (named after Mantid's algorithm that loads them)."""
_log = logging.getLogger(LOGGER)
_FIELDS = ("event_id", "event_time_offset", "event_time_zero", "event_index")
_JUNK = ("bank_error_events", "bank_unmapped_events")
"""SNS groups of events of error and unmapped pixels; Mantid's LoadEventNexus skips them ("junk data")."""
_SCAN_EVENTS = 1 << 24
_ZONE = re.compile(r"(Z|[+-]\d\d:?\d\d)$")
NS_MIN, NS_MAX = -(2**63) + 1, 2**63 - 1
"""The range of ``datetime64[ns]`` as int64 ns since the Unix epoch (-2**63 is NaT)."""

MAX_PULSES = 1 << 26
"""Most pulses one ``NXevent_data`` group may hold (67,108,864: 12 days at 60 Hz); its pulse index is read into
memory when the file is opened (24 bytes per pulse)."""


@dataclass
class Bank:
    """One checked NXevent_data group: its event datasets and per-pulse bookkeeping.

    Attributes:
        path: the group's path in the file.
        event_id: the ``event_id`` dataset, 1-D, any integer dtype (read as stored, never converted).
        event_time_offset: the ``event_time_offset`` dataset, 1-D, numeric, as long as ``event_id``.
        tof_scale: factor from the stored ``event_time_offset`` to µs.
        pulse_times: pulse times, ``datetime64[ns]`` (UTC), shape (n_pulses,), strictly increasing.
        first_event: int64, shape (n_pulses + 1,): the events of pulse i are ``[first_event[i], first_event[i+1])``.
    """

    path: str
    event_id: h5py.Dataset
    event_time_offset: h5py.Dataset
    tof_scale: float
    pulse_times: np.ndarray
    first_event: np.ndarray


# --- opening: the file and its NXevent_data groups ----------------------------------------------------------------
def check_regular_file(path: Path, where: str) -> None:
    """Raise a one-line :class:`SourceError` unless ``path`` is a readable regular file (never opens a FIFO)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SourceError(f"{where}: no such file") from None
    except OSError as err:
        raise SourceError(f"{where}: {err.strerror or err}") from None
    if stat.S_ISDIR(mode):
        raise SourceError(f"{where}: is a directory, not a NeXus file")
    if not stat.S_ISREG(mode):
        raise SourceError(f"{where}: not a regular file (a FIFO, device or socket)")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{where}: {os.strerror(errno.EACCES)} (the daemon's user cannot read it)")


def event_groups(file: h5py.File) -> list[str]:
    """Paths of the file's NXevent_data groups, in natural order (``bank2`` before ``bank10``)."""
    return groups_of_class(file, "NXevent_data")


def groups_of_class(parent: h5py.Group, nx_class: str) -> list[str]:
    """Paths (relative to ``parent``, at any depth) of the groups whose ``NX_class`` attribute is ``nx_class``, in
    natural order."""
    found: list[str] = []

    def visit(name: str, obj: h5py.HLObject) -> None:
        if isinstance(obj, h5py.Group) and as_text(obj.attrs.get("NX_class", "")) == nx_class:
            found.append(name)

    parent.visititems(visit)
    return sorted(found, key=_natural)


def without_junk(file: h5py.File, groups: list[str], where: str) -> list[str]:
    """The groups without SNS's ``bank_error_events`` and ``bank_unmapped_events`` (logged with their size).

    Raises:
        SourceError: there is no other NXevent_data group.
    """
    junk = [group for group in groups if group.rsplit("/", 1)[-1] in _JUNK]
    if not junk:
        return groups
    sizes = [getattr(file[group].get("event_id"), "size", 0) for group in junk]
    _log.info(
        "Skipping %s (%d events of error and unmapped pixels, as Mantid's LoadEventNexus does)",
        ", ".join(junk),
        sum(size or 0 for size in sizes),
    )
    kept = [group for group in groups if group not in junk]
    if not kept:
        raise SourceError(f"{where}: no NXevent_data group found except {', '.join(junk)}")
    return kept


def _natural(name: str) -> list[object]:
    """Sort key of natural order: digit runs compare as numbers (``bank2`` before ``bank10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def open_bank(group: h5py.Group, where: str) -> Bank:
    """Check an NXevent_data group (fields, shapes, dtypes, storage, event_index, event_time_zero) and index it.

    Raises:
        SourceError: a field is missing or malformed; the message names the file, the dataset and the problem.
    """
    for name in _FIELDS:
        if group.get(name) is None:
            problem = "is a broken link" if name in group else "is missing"
            raise SourceError(f"{where}: NXevent_data group '{group.name}' has no {name} ('{name}' {problem})")
    event_id, tof, etz, index = (group[name] for name in _FIELDS)
    for dataset, kinds in ((event_id, "iu"), (tof, "iuf"), (etz, "iuf"), (index, "iu")):
        _check_dataset(dataset, where, kinds)
    n_events, n_pulses = event_id.shape[0], etz.shape[0]
    if tof.shape[0] != n_events or index.shape[0] != n_pulses:
        raise SourceError(
            f"{where}: '{group.name}': event_id/event_time_offset ({n_events}/{tof.shape[0]} events) or "
            f"event_time_zero/event_index ({n_pulses}/{index.shape[0]} pulses) differ in length"
        )
    if n_pulses > MAX_PULSES:
        raise SourceError(f"{where}: '{etz.name}' has {n_pulses} pulses, more than {MAX_PULSES}")
    return Bank(
        group.name,
        event_id,
        tof,
        _scale(tof, "us", "us"),
        _pulse_times(etz, where),
        _first_events(index, n_events, where),
    )


def _check_dataset(dataset: h5py.HLObject, where: str, kinds: str, *, any_shape: bool = False) -> None:
    """A dataset (not a group), 1-D unless ``any_shape``, of a numeric dtype kind in ``kinds`` ("i", "u", "f"),
    with all its data stored.

    Raises:
        SourceError: one line naming the dataset and what is wrong.
    """
    name = getattr(dataset, "name", "?")
    if not isinstance(dataset, h5py.Dataset):
        raise SourceError(f"{where}: '{name}' is a group, not a dataset")
    if dataset.shape is None:
        raise SourceError(f"{where}: '{name}' holds no data (empty dataspace)")
    if not any_shape and len(dataset.shape) != 1:
        shape = "a scalar" if not dataset.shape else f"{len(dataset.shape)}-D (shape {dataset.shape})"
        raise SourceError(f"{where}: '{name}' is {shape}, expected a 1-D array")
    kind = dataset.dtype.kind
    if kind not in kinds:
        expected = "integers" if kinds == "iu" else "numbers"
        raise SourceError(f"{where}: '{name}' holds {_KINDS.get(kind, str(dataset.dtype))}, expected {expected}")
    if not _is_stored(dataset):
        raise SourceError(
            f"{where}: '{name}' declares {dataset.size} values but the file does not store them all "
            "(an incompletely written file?)"
        )


_KINDS = {
    "S": "strings",
    "U": "strings",
    "O": "strings or references",
    "f": "floating-point numbers",
    "b": "booleans",
    "c": "complex numbers",
    "V": "compound values",
    "M": "dates",
    "m": "time spans",
}


def _is_stored(dataset: h5py.HLObject) -> bool:
    """Whether every value of a dataset is stored in the file (a chunked dataset has all its chunks, a contiguous
    one its storage): a dataset declared larger than what was written is read as fill values and could make a
    tiny file claim terabytes."""
    if not isinstance(dataset, h5py.Dataset) or dataset.shape is None or dataset.size == 0:
        return True
    plist = dataset.id.get_create_plist()
    if dataset.is_virtual or plist.get_layout() == h5py.h5d.COMPACT or plist.get_external_count():
        return True
    if dataset.chunks is None:
        return dataset.id.get_storage_size() >= dataset.nbytes
    shape, chunks = dataset.shape, dataset.chunks
    expected = int(np.prod([-(-n // c) for n, c in zip(shape, chunks, strict=True)]))
    return dataset.id.get_num_chunks() >= expected


def _first_events(index: h5py.Dataset, n_events: int, where: str) -> np.ndarray:
    """``event_index`` with ``n_events`` appended, int64 (n_pulses + 1,).

    Raises:
        SourceError: a value is negative, beyond ``n_events``, or smaller than the one before.
    """
    values = index[()]
    if values.size and (values.min() < 0 or values.max() > n_events):
        bad = int(np.flatnonzero((values < 0) | (values > n_events))[0])
        raise SourceError(
            f"{where}: '{index.name}' is inconsistent: entry {bad} is {values[bad]}, outside 0..{n_events} "
            "(the number of events)"
        )
    first_event = np.append(values.astype(np.int64), n_events)
    decreasing = np.flatnonzero(np.diff(first_event[:-1]) < 0)
    if decreasing.size:
        bad = int(decreasing[0]) + 1
        raise SourceError(
            f"{where}: '{index.name}' is inconsistent: entry {bad} ({first_event[bad]}) is smaller than entry "
            f"{bad - 1} ({first_event[bad - 1]}); event_index must be non-decreasing"
        )
    return first_event


def _scale(dataset: h5py.Dataset, target: str, default: str) -> float:
    """Factor converting the dataset's ``units`` (default: ISIS convention ``default``) to ``target``.

    Raises:
        SourceError: the units are not a time unit scipp knows.
    """
    unit = as_text(dataset.attrs.get("units", default)) or default
    try:
        factor = float(sc.scalar(1.0, unit=unit).to(unit=target).value)
    except (sc.UnitError, sc.DTypeError, ValueError, TypeError, RuntimeError) as err:
        raise SourceError(
            f"'{dataset.file.filename}': '{dataset.name}' has units '{unit[:100]}', not a time unit: {one_line(err)}"
        ) from None
    if not np.isfinite(factor) or factor <= 0:
        raise SourceError(f"'{dataset.file.filename}': '{dataset.name}' has units '{unit[:100]}', not a time unit")
    return factor


def _pulse_times(etz: h5py.Dataset, where: str) -> np.ndarray:
    """``event_time_zero`` as absolute ``datetime64[ns]`` (its ``offset`` attribute, else the Unix epoch).

    Raises:
        SourceError: units not a time unit, an invalid offset, values not finite, times outside what
            datetime64[ns] holds (years 1678..2262: a wrong unit or offset), or not strictly increasing.
    """
    offset = as_text(etz.attrs.get("offset", "1970-01-01T00:00:00"))
    try:
        origin = parse_time(offset)
    except (ValueError, TypeError, OverflowError):
        origin = np.datetime64("NaT")
    if np.isnat(origin):
        raise SourceError(f"{where}: '{etz.name}' has an invalid offset attribute '{offset[:100]}'")
    ns = _to_ns(etz[()], _scale(etz, "ns", "s"), etz.name, where)
    origin_ns = int(origin.astype(np.int64))
    if ns.size and not (NS_MIN <= origin_ns + int(ns.min()) and origin_ns + int(ns.max()) <= NS_MAX):
        raise SourceError(
            f"{where}: '{etz.name}' gives pulse times outside the years 1678..2262 (units "
            f"'{as_text(etz.attrs.get('units', 's'))[:50]}', offset '{offset[:50]}'): wrong units or offset?"
        )
    times = (ns + origin_ns).view("datetime64[ns]")
    not_after = ns[1:] <= ns[:-1]
    if not_after.any():
        bad = int(np.flatnonzero(not_after)[0]) + 1
        problem = "repeats the time of" if ns[bad] == ns[bad - 1] else "is earlier than"
        raise SourceError(
            f"{where}: '{etz.name}' is not strictly increasing: pulse {bad} ({times[bad]}) {problem} pulse "
            f"{bad - 1} ({times[bad - 1]})"
        )
    return times


def _to_ns(values: np.ndarray, factor: float, name: str, where: str) -> np.ndarray:
    """Times in a unit ``factor`` ns long as int64 ns; exact for integers when the factor is integral.

    Raises:
        SourceError: a value is not finite or does not fit in int64 ns.
    """
    too_large = f"{where}: '{name}' has values too large for pulse times in nanoseconds (wrong units?)"
    if values.size == 0:
        return np.empty(0, np.int64)
    if values.dtype.kind in "iu" and factor == int(factor):
        if max(abs(int(values.min())), abs(int(values.max()))) * int(factor) > NS_MAX:
            raise SourceError(too_large)
        return values.astype(np.int64) * np.int64(factor)
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise SourceError(f"{where}: '{name}' has a value that is not a finite number (pulse {bad}: {values[bad]})")
    with np.errstate(over="ignore"):
        scaled = values.astype(np.float64) * factor
    if max(abs(float(scaled.min())), abs(float(scaled.max()))) >= 2.0**63:
        raise SourceError(too_large)
    return np.round(scaled).astype(np.int64)


def parse_time(text: str) -> np.datetime64:
    """An ISO-8601 time as UTC ``datetime64[ns]``; a zone suffix (``Z``, ``-04:00``) is applied, none = UTC.

    Raises:
        ValueError: not an ISO-8601 time.
    """
    zone = _ZONE.search(text)
    base = text[: zone.start()] if zone else text
    when = np.datetime64(base.strip(), "ns")
    if zone and zone.group(1) != "Z":
        sign = -1 if zone.group(1)[0] == "+" else 1
        hours, minutes = int(zone.group(1)[1:3]), int(zone.group(1)[-2:])
        when += sign * np.timedelta64(hours * 60 + minutes, "m")
    return when


# --- the pixel range -------------------------------------------------------------------------------------------------
def pixel_range(file: h5py.File, groups: list[str], banks: list[Bank], where: str) -> tuple[tuple[int, int], str]:
    """The file's valid ids (first, last) and where they come from: the ``detector_number`` datasets of the
    NXdetector groups in the entries holding the event data, else the valid ids of the event data.

    Raises:
        SourceError: a ``detector_number`` is malformed or none holds a valid id, or the range spans more than
            :data:`MAX_PIXELS`.
    """
    entries = sorted({group.split("/", maxsplit=1)[0] for group in groups})
    numbers = [dataset for entry in entries for dataset in _detector_numbers(file[entry])]
    for dataset in numbers:
        _check_dataset(dataset, where, "iu", any_shape=True)
    if numbers:
        span = _id_span(numbers)
        if span is None:
            raise SourceError(f"{where}: NXdetector detector_number holds no pixel id in 0..{MAX_EVENT_ID}")
        first, last = span
        if last - first + 1 > MAX_PIXELS:
            raise SourceError(
                f"{where}: NXdetector detector_number spans {first}..{last}, more than {MAX_PIXELS} pixels"
            )
        return span, "from NXdetector detector_number"
    first, last = _id_span([bank.event_id for bank in banks]) or (0, 0)
    if last - first + 1 > MAX_PIXELS:
        raise SourceError(
            f"{where}: event_id values span {first}..{last}, more than {MAX_PIXELS} pixels, and the file has no "
            "NXdetector detector_number to tell the valid ones (corrupt event_id values?)"
        )
    return (first, last), "from the event data: no NXdetector detector_number"


def _detector_numbers(entry: h5py.Group) -> list[h5py.HLObject]:
    """The ``detector_number`` objects of the entry's NXdetector groups (NeXus base class NXdetector)."""
    found = []
    for name in groups_of_class(entry, "NXdetector"):
        item = entry[name].get("detector_number")
        if item is not None:
            found.append(item)
    return found


def _id_span(datasets: list[h5py.Dataset]) -> tuple[int, int] | None:
    """Smallest and largest value in ``0..MAX_EVENT_ID`` of integer datasets, read in blocks of at most
    ``_SCAN_EVENTS`` values; None when there is none."""
    low: int | None = None
    high: int | None = None
    for dataset in datasets:
        rows = dataset.shape[0] if dataset.ndim else 1
        row_size = int(np.prod(dataset.shape[1:])) if dataset.ndim > 1 else 1
        step = max(1, _SCAN_EVENTS // max(1, row_size))
        for start in range(0, rows, step):
            block = dataset[start : start + step] if dataset.ndim else np.asarray(dataset[()])
            if block.size == 0:
                continue
            block_low, block_high = int(block.min()), int(block.max())
            if block_low < 0 or block_high > MAX_EVENT_ID:
                valid = block[(block >= 0) & (block <= MAX_EVENT_ID)]
                if valid.size == 0:
                    continue
                block_low, block_high = int(valid.min()), int(valid.max())
            low = block_low if low is None else min(low, block_low)
            high = block_high if high is None else max(high, block_high)
    return None if low is None or high is None else (low, high)


# --- text ------------------------------------------------------------------------------------------------------------
def as_text(value: object) -> str:
    """An attribute's or dataset's value as text: bytes decoded as UTF-8 (invalid bytes replaced), the first element
    of an array ("" if empty), anything else ``str``."""
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return as_text(value.ravel()[0]) if value.size else ""
    return str(value)


def one_line(err: BaseException) -> str:
    """An exception's message on one line, at most 300 characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
