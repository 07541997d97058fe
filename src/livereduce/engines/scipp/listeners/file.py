"""``FileEventDataListener``: replays the ``NXevent_data`` of a NeXus file pulse by pulse.

Mantid's listener of the same name hands out a file in N chunks; this one replays it in time: the pulse at
``event_time_zero`` t becomes available ``(t - t_first) / replay_speed`` seconds after ``start()`` (speed 0:
everything at once), and ``extract()`` returns the pulses available since the previous call (at most
``replay_chunk_pulses``, and at most what fits in ``source_buffer_mb``). The end of the file is the end of the run
(``EndRun``, ``ended``); afterwards chunks are empty and the status is ``NoRun``.

Layouts (NeXus ``NXevent_data``: ``event_id``, ``event_time_offset``, ``event_time_zero``, ``event_index``):

* ISIS (e.g. ``raw_data_1/detector_1_events``): no ``units`` attributes; ISIS convention µs and s.
* SNS (``entry/bankN_events``, several banks): ``units`` attributes (any time unit scipp knows). The banks'
  events of the same pulse are merged into one pulse of the chunk.

The file is hostile input. When it is opened, every ``NXevent_data`` group is checked: the four fields are 1-D
datasets (not groups, scalars or 2-D), of integer (``event_id``, ``event_index``) or numeric
(``event_time_offset``, ``event_time_zero``) type, fully stored (no unwritten chunks), of matching lengths;
``event_index`` is non-decreasing within ``0..len(event_id)``; ``event_time_zero`` is finite, in a time unit,
strictly increasing and within the years datetime64[ns] can hold. Any violation is a one-line
:class:`~livereduce.errors.SourceError` naming the file, the dataset and the problem. While the replay reads, each
block's ``event_id`` values are checked: ids that are negative, above 2147483647 or outside
the file's pixel range are dropped and counted (:attr:`Extracted.dropped`), never wrapped;
a block HDF5 cannot read is a ``SourceError`` naming the pulses.

The pixel range (:attr:`Extracted.event_id_range`) is that of the ``detector_number`` datasets of the
entry's ``NXdetector`` groups (the NeXus way to name an instrument's pixels) when there are any, else that of the
valid ids in the event data; its span is at most :data:`~livereduce.engines.scipp.chunk.MAX_PIXELS` (a wider
range is a :class:`~livereduce.errors.SourceError`).

Bulk event data is read with h5py straight into scipp's memory; run metadata and sample-environment logs
(``NXlog`` groups, e.g. SNS ``entry/DASlogs``) are read with scippnexus. Malformed metadata or logs are skipped
with a warning: they do not stop a replay.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import h5py
import numpy as np
import scipp as sc
import scippnexus as snx

from livereduce.clock import Clock, SystemClock
from livereduce.config import Config
from livereduce.engines.scipp.chunk import (
    EVENT_DIM,
    MAX_EVENT_ID,
    MAX_PIXELS,
    RunMetadata,
    event_count,
    make_chunk,
    valid_events,
)
from livereduce.engines.scipp.listeners.base import Extracted, Listener, RunStatus, SourceHealth, StartPosition
from livereduce.errors import ConfigError, SourceError

_log = logging.getLogger("livereduce.FileEventDataListener")
_FIELDS = ("event_id", "event_time_offset", "event_time_zero", "event_index")
_JUNK = ("bank_error_events", "bank_unmapped_events")
"""SNS groups of events of error and unmapped pixels; Mantid's LoadEventNexus skips them ("junk data")."""
_SCAN_EVENTS = 1 << 24
_ZONE = re.compile(r"(Z|[+-]\d\d:?\d\d)$")
_NS_MIN, _NS_MAX = -(2**63) + 1, 2**63 - 1  # datetime64[ns] range (-2**63 is NaT)
_CHUNK_BYTES_PER_EVENT = 12  # event_id int32 + event_time_offset float32 + weight float32

MAX_PULSES = 1 << 26
"""Most pulses one ``NXevent_data`` group may hold (67,108,864: 12 days at 60 Hz); its pulse index is read into
memory when the file is opened (24 bytes per pulse)."""


@dataclass
class _Bank:
    """One NXevent_data group: its datasets and per-pulse bookkeeping."""

    path: str
    event_id: h5py.Dataset
    event_time_offset: h5py.Dataset
    tof_scale: float  # multiply the stored event_time_offset by this to get µs
    pulse_times: np.ndarray  # datetime64[ns], (n_pulses,), strictly increasing
    first_event: np.ndarray  # int64, (n_pulses + 1,): events of pulse i are [first_event[i], first_event[i+1])


class FileEventDataListener(Listener):
    """Replays a NeXus file. Config keys: ``filename``, ``replay_speed``, ``replay_chunk_pulses``,
    ``source_buffer_mb`` (the most one chunk's events may take, at least one pulse).

    Raises:
        ConfigError: ``filename`` is not set.
    """

    name = "FileEventDataListener"

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        if not config.filename:
            raise ConfigError("listener FileEventDataListener needs the key 'filename' (the NeXus file to replay)")
        self.path = Path(config.filename)
        self.clock = clock or SystemClock()
        self.speed = config.replay_speed
        self.max_pulses = config.replay_chunk_pulses
        self.max_events = max(1, int(config.source_buffer_mb * 2**20) // _CHUNK_BYTES_PER_EVENT)
        self._file: h5py.File | None = None
        self._banks: list[_Bank] = []
        self._pulse_times = np.empty(0, "datetime64[ns]")
        self._events_before = np.zeros(1, np.int64)  # (n_pulses + 1,): events of all banks before each pulse
        self._metadata = RunMetadata()
        self._logs: dict[str, sc.DataArray] = {}
        self._charge: np.ndarray | None = None
        self._event_ids = (0, 0)
        self._next = 0
        self._started_at = 0.0
        self._origin = np.datetime64(0, "ns")  # file time of the first pulse replayed
        self._ended = False
        self._counters: Counter[str] = Counter()

    # --- Listener interface -----------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the file, check its event data and index its pulses.

        Raises:
            SourceError: the file is missing, a directory, unreadable, not HDF5, truncated, has no NXevent_data
                group, or one that is malformed (see the module docstring); the message is one line naming the
                file and the problem.
        """
        self._close()
        where = f"'{self.path}'"
        _check_regular_file(self.path, where)
        try:
            if not h5py.is_hdf5(self.path):
                raise SourceError(f"{where}: not an HDF5/NeXus file")
            self._file = h5py.File(self.path, "r")
            groups = _event_groups(self._file)
            if not groups:
                raise SourceError(f"{where}: no NXevent_data group found")
            groups = _without_junk(self._file, groups, where)
            self._banks = [_open_bank(self._file[group], where) for group in groups]
            self._pulse_times = np.unique(np.concatenate([bank.pulse_times for bank in self._banks]))
            self._events_before = self._union_event_counts()
            self._event_ids, origin = _pixel_range(self._file, groups, self._banks, where)
            self._metadata, self._logs = _read_metadata(self.path, self._file, groups[0])
            self._charge = _charge_per_pulse(self._logs.pop("proton_charge", None), self._pulse_times)
        except SourceError:
            self._close()
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
            self._close()
            raise SourceError(f"{where} cannot be read (truncated or corrupt?): {_one_line(err)}") from None
        first, last = self._event_ids
        _log.info(
            "Replaying %s: %d events in %d pulses from %s at speed %s; pixels %d..%d (%s)",
            self.path,
            int(self._events_before[-1]),
            self._pulse_times.size,
            ", ".join(bank.path for bank in self._banks),
            self.speed,
            first,
            last,
            origin,
        )

    def start(self, position: StartPosition) -> None:
        """Start the replay clock at the first pulse replayed; a time skips the pulses before it
        (``from_start_of_run`` and ``now``: the file's first pulse)."""
        if not isinstance(position, str):
            when = np.datetime64(position.astimezone(UTC).replace(tzinfo=None), "ns")
            self._next = int(np.searchsorted(self._pulse_times, when))
        if self._next < self._pulse_times.size:
            self._origin = self._pulse_times[self._next]
        self._started_at = self.clock.monotonic()

    def extract(self) -> Extracted:
        """The pulses that became available since the last call, with the events dropped by reason.

        ``EndRun`` and ``ended`` with the chunk that reaches the end of the file; afterwards empty chunks with
        ``NoRun`` (still ``ended``).

        Raises:
            SourceError: the file cannot be read (e.g. truncated or corrupt inside the event data).
        """
        first = self._next
        last = self._available()
        if self.max_pulses is not None:
            last = min(last, first + self.max_pulses)
        if last > first + 1:  # the events of one chunk fit in source_buffer_mb (a single pulse is always read)
            fitting = np.searchsorted(self._events_before, self._events_before[first] + self.max_events, "right") - 1
            last = max(first + 1, min(last, int(fitting)))
        chunk, dropped = self._build(first, last)
        self._next = last
        self._counters.update(
            {"pulses": last - first, "events": event_count(chunk), "events_dropped": sum(dropped.values())}
        )
        pixels = self._event_ids
        if self._ended:
            return Extracted(chunk, RunStatus.NoRun, pixels, dropped=dropped, ended=True)
        if last == self._pulse_times.size:
            self._ended = True
            return Extracted(chunk, RunStatus.EndRun, pixels, dropped=dropped, ended=True)
        return Extracted(chunk, RunStatus.Running, pixels, dropped=dropped)

    @property
    def pixel_range(self) -> tuple[int, int]:
        """The file's pixel range (first, last; inclusive), known once connected: its ``NXdetector``
        ``detector_number`` values if it has any, else its valid event ids; ``(0, 0)`` for a file without any
        valid id. Every chunk carries it as :attr:`Extracted.event_id_range`."""
        return self._event_ids

    def disconnect(self) -> None:
        self._close()

    def health(self) -> SourceHealth:
        """``'<file>': pulse N of M`` (``, ended`` at the end); counters ``pulses``, ``events`` (delivered) and
        ``events_dropped``."""
        state = f"'{self.path}': pulse {self._next} of {self._pulse_times.size}" + (", ended" if self._ended else "")
        return SourceHealth(
            state, counters={key: self._counters[key] for key in ("pulses", "events", "events_dropped")}
        )

    # --- reading ----------------------------------------------------------------------------------------------
    def _available(self) -> int:
        if self.speed == 0:
            return self._pulse_times.size
        elapsed_ns = int((self.clock.monotonic() - self._started_at) * self.speed * 1e9)
        limit = np.int64(min(int(self._origin.astype(np.int64)) + elapsed_ns, _NS_MAX)).view("datetime64[ns]")
        return max(self._next, int(np.searchsorted(self._pulse_times, limit, side="right")))

    def _build(self, first: int, last: int) -> tuple[sc.DataArray, dict[str, int]]:
        """Read pulses ``[first, last)`` and build the chunk; returns it with the dropped events by reason.

        Raises:
            SourceError: the file cannot be read (e.g. truncated inside the event data).
        """
        try:
            event_id, tof, event_index, dropped = self._read(first, last)
        except (OSError, ValueError, TypeError, RuntimeError) as err:
            raise SourceError(
                f"'{self.path}' cannot be read at pulses {first}..{last - 1} (truncated or corrupt?): {_one_line(err)}"
            ) from None
        times = self._pulse_times[first:last]
        metadata = RunMetadata(
            self._metadata.run_number,
            self._metadata.start_time,
            self._metadata.instrument_name,
            _logs_between(self._logs, times),
        )
        charge = self._charge[first:last] if self._charge is not None else None
        return make_chunk(event_id, tof, times, event_index, metadata=metadata, proton_charge=charge), dropped

    def _read(
        self, first: int, last: int
    ) -> tuple[sc.Variable | np.ndarray, sc.Variable | np.ndarray, np.ndarray, dict[str, int]]:
        """Events of union pulses ``[first, last)``: (event_id int32, event_time_offset float32 [µs], event_index,
        dropped by reason)."""
        upper = self._pulse_times[last] if last < self._pulse_times.size else None
        lower = self._pulse_times[first] if first < self._pulse_times.size else None
        ranges = [_bank_pulses(bank, lower, upper) for bank in self._banks]
        if len(self._banks) == 1:
            return self._read_bank(self._banks[0], *ranges[0])
        return self._read_merged(self._pulse_times[first:last], ranges)

    def _read_bank(
        self, bank: _Bank, b: int, e: int
    ) -> tuple[sc.Variable | np.ndarray, sc.Variable | np.ndarray, np.ndarray, dict[str, int]]:
        """The valid events of the bank's pulses ``[b, e)``: (event_id int32, event_time_offset float32 [µs],
        index of each pulse's first event, dropped by reason). Reads into scipp's memory without temporaries when
        ``event_id`` has 32 bits."""
        start, stop = int(bank.first_event[b]), int(bank.first_event[e])
        event_id = sc.empty(sizes={EVENT_DIM: stop - start}, dtype="int32", unit=None)
        tof = sc.empty(sizes={EVENT_DIM: stop - start}, dtype="float32", unit="us")
        stored = _read_ids(bank.event_id, start, stop, event_id.values)
        _read_into(bank.event_time_offset, start, stop, tof.values, bank.tof_scale)
        event_index = bank.first_event[b:e] - start
        kept_ids, kept_tof, kept_index, dropped = valid_events(stored, tof, event_index, self._event_ids)
        if dropped:
            return kept_ids, kept_tof, kept_index, dropped
        if not _direct(stored.dtype):  # every id is in 0..2**31-1: the conversion to int32 is exact
            event_id.values[...] = stored
        return event_id, tof, event_index, {}

    def _read_merged(
        self, times: np.ndarray, ranges: list[tuple[int, int]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
        """Merge several banks: the events of one pulse from all banks become one pulse of the chunk."""
        banks = [self._read_bank(bank, b, e) for bank, (b, e) in zip(self._banks, ranges, strict=True)]
        slots = [
            np.searchsorted(times, bank.pulse_times[b:e]) for bank, (b, e) in zip(self._banks, ranges, strict=True)
        ]
        counts = [np.diff(np.append(index, _size(ids))) for ids, _, index, _ in banks]
        per_pulse = np.zeros(times.size, np.int64)
        for slot, count in zip(slots, counts, strict=True):
            np.add.at(per_pulse, slot, count)
        event_index = np.cumsum(per_pulse) - per_pulse
        total = int(per_pulse.sum())
        event_id, tof = np.empty(total, np.int32), np.empty(total, np.float32)
        filled = event_index.copy()
        for (ids, offsets, index, _), slot, count in zip(banks, slots, counts, strict=True):
            within = np.arange(_size(ids)) - np.repeat(index, count)
            target = np.repeat(filled[slot], count) + within
            event_id[target] = _values(ids)
            tof[target] = _values(offsets)
            np.add.at(filled, slot, count)
        dropped: Counter[str] = Counter()
        for *_, bank_dropped in banks:
            dropped.update(bank_dropped)
        return event_id, tof, event_index, dict(dropped)

    def _union_event_counts(self) -> np.ndarray:
        """Events of all banks before each union pulse, int64 (n_pulses + 1,)."""
        per_pulse = np.zeros(self._pulse_times.size, np.int64)
        for bank in self._banks:
            np.add.at(per_pulse, np.searchsorted(self._pulse_times, bank.pulse_times), np.diff(bank.first_event))
        return np.concatenate([[0], np.cumsum(per_pulse)])

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --- opening: the file and its NXevent_data groups ----------------------------------------------------------------
def _check_regular_file(path: Path, where: str) -> None:
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


def _event_groups(file: h5py.File) -> list[str]:
    """Paths of the file's NXevent_data groups, in natural order (``bank2`` before ``bank10``)."""
    return _groups_of_class(file, "NXevent_data")


def _groups_of_class(parent: h5py.Group, nx_class: str) -> list[str]:
    found: list[str] = []

    def visit(name: str, obj: h5py.HLObject) -> None:
        if isinstance(obj, h5py.Group) and _text(obj.attrs.get("NX_class", "")) == nx_class:
            found.append(name)

    parent.visititems(visit)
    return sorted(found, key=_natural)


def _without_junk(file: h5py.File, groups: list[str], where: str) -> list[str]:
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
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _open_bank(group: h5py.Group, where: str) -> _Bank:
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
    return _Bank(
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
    unit = _text(dataset.attrs.get("units", default)) or default
    try:
        factor = float(sc.scalar(1.0, unit=unit).to(unit=target).value)
    except (sc.UnitError, sc.DTypeError, ValueError, TypeError, RuntimeError) as err:
        raise SourceError(
            f"'{dataset.file.filename}': '{dataset.name}' has units '{unit[:100]}', not a time unit: {_one_line(err)}"
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
    text = _text(etz.attrs.get("offset", "1970-01-01T00:00:00"))
    try:
        origin = parse_time(text)
    except (ValueError, TypeError, OverflowError):
        origin = np.datetime64("NaT")
    if np.isnat(origin):
        raise SourceError(f"{where}: '{etz.name}' has an invalid offset attribute '{text[:100]}'")
    ns = _to_ns(etz[()], _scale(etz, "ns", "s"), etz.name, where)
    origin_ns = int(origin.astype(np.int64))
    if ns.size and not (_NS_MIN <= origin_ns + int(ns.min()) and origin_ns + int(ns.max()) <= _NS_MAX):
        raise SourceError(
            f"{where}: '{etz.name}' gives pulse times outside the years 1678..2262 (units "
            f"'{_text(etz.attrs.get('units', 's'))[:50]}', offset '{text[:50]}'): wrong units or offset?"
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
        if max(abs(int(values.min())), abs(int(values.max()))) * int(factor) > _NS_MAX:
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
def _pixel_range(file: h5py.File, groups: list[str], banks: list[_Bank], where: str) -> tuple[tuple[int, int], str]:
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
    for name in _groups_of_class(entry, "NXdetector"):
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


# --- reading blocks --------------------------------------------------------------------------------------------------
def _bank_pulses(bank: _Bank, lower: np.datetime64 | None, upper: np.datetime64 | None) -> tuple[int, int]:
    """Range of the bank's pulses with times in ``[lower, upper)`` (None: open end)."""
    if lower is None:
        return bank.pulse_times.size, bank.pulse_times.size
    b = int(np.searchsorted(bank.pulse_times, lower))
    e = bank.pulse_times.size if upper is None else int(np.searchsorted(bank.pulse_times, upper))
    return b, e


def _read_ids(dataset: h5py.Dataset, start: int, stop: int, target: np.ndarray) -> np.ndarray:
    """``event_id[start:stop]`` as stored (its own dtype, never converted, so nothing wraps).

    A 32-bit dataset in native byte order is read straight into ``target`` (int32, ``stop - start`` long) through
    a view of the dataset's dtype, which is returned; any other dtype is read into a new array.
    """
    if not _direct(dataset.dtype):
        return dataset[start:stop]
    stored = target.view(dataset.dtype)
    if stop > start:
        dataset.read_direct(stored, np.s_[start:stop])
    return stored


def _direct(dtype: np.dtype) -> bool:
    """Whether ``event_id`` of this dtype is read straight into the chunk's int32 buffer (through a view)."""
    return dtype.kind in "iu" and dtype.itemsize == 4 and dtype.isnative


def _read_into(dataset: h5py.Dataset, start: int, stop: int, target: np.ndarray, scale: float) -> None:
    """Read ``dataset[start:stop]`` into the float ``target``, times ``scale``, without temporaries when the dtypes
    match."""
    if stop <= start:
        return
    if dataset.dtype == target.dtype:
        dataset.read_direct(target, np.s_[start:stop])
    else:
        with np.errstate(over="ignore"):  # beyond float32: inf, which falls outside every histogram
            target[:] = dataset[start:stop]
    if scale != 1.0:
        target *= np.asarray(scale, dtype=target.dtype)


def _size(values: sc.Variable | np.ndarray) -> int:
    return int(values.shape[0])


def _values(values: sc.Variable | np.ndarray) -> np.ndarray:
    return values.values if isinstance(values, sc.Variable) else values


# --- run metadata and logs -------------------------------------------------------------------------------------------
_LOG_ERRORS = (snx.NexusStructureError, KeyError, ValueError, TypeError, IndexError, RuntimeError, OSError)
"""What scippnexus may raise on a malformed NXlog (scipp's DimensionError, UnitError are RuntimeErrors)."""


def _read_metadata(path: Path, file: h5py.File, event_group: str) -> tuple[RunMetadata, dict[str, sc.DataArray]]:
    """Run number, start time, instrument name and the NXlog logs of the entry (by the groups' names).

    A malformed field or log is skipped with a warning (the replay does not need it).
    """
    entry = file[event_group.split("/", maxsplit=1)[0]]
    run = _scalar(entry, "run_number")
    name = _scalar(entry, "instrument/name") or _scalar(entry, "name") or ""
    start = _scalar(entry, "start_time")
    digits = str(run).strip() if run is not None else ""
    run_number = int(digits) if digits.isdigit() and len(digits) <= 18 else 0
    if digits and not run_number and digits.strip("0"):
        _log.warning("Ignoring run_number of %s: '%s' is not a run number", path, digits[:50])
    start_time = None
    if start:
        try:
            start_time = parse_time(str(start))
        except (ValueError, TypeError, OverflowError):
            _log.warning("Ignoring start_time of %s: '%s' is not an ISO-8601 time", path, str(start)[:100])
        if start_time is not None and np.isnat(start_time):
            start_time = None
    metadata = RunMetadata(run_number=run_number, start_time=start_time, instrument_name=str(name)[:200])
    logs: dict[str, sc.DataArray] = {}
    log_groups = [f"{entry.name}/{key}" for key in _groups_of_class(entry, "NXlog")]
    if log_groups:
        with snx.File(path) as nexus:
            for group in log_groups:
                try:
                    log = nexus[group][()]
                except _LOG_ERRORS as err:
                    _log.warning("Skipping log '%s': %s", group, _one_line(err))
                    continue
                if (
                    isinstance(log, sc.DataArray)
                    and log.ndim == 1
                    and "time" in log.coords
                    and log.coords["time"].dtype == sc.DType.datetime64
                ):
                    logs[group.rsplit("/", 1)[-1]] = log
                else:
                    _log.warning("Skipping log '%s': not a time series with absolute times", group)
    return metadata, logs


def _charge_per_pulse(log: sc.DataArray | None, pulse_times: np.ndarray) -> np.ndarray | None:
    """Proton charge of each pulse in pC from a ``proton_charge`` NXlog (SNS ``DASlogs``, one value per pulse).

    A pulse without a log value within 1 ms of its time gets 0. Values without a convertible unit are taken as pC;
    a log whose values are not numbers is ignored with a warning.
    """
    if log is None or log.sizes["time"] == 0 or pulse_times.size == 0:
        return None
    values = log.data
    try:
        values = values.to(unit="pC", dtype="float64")
    except (sc.UnitError, sc.DTypeError):
        try:
            values = sc.array(dims=values.dims, values=values.values.astype(np.float64), unit="pC")
        except (ValueError, TypeError):
            _log.warning("Ignoring the proton_charge log: its values are not numbers")
            return None
    stamps = log.coords["time"].values.astype("datetime64[ns]")
    nearest = np.clip(np.searchsorted(stamps, pulse_times), 1, stamps.size) - 1
    candidates = np.stack([nearest, np.minimum(nearest + 1, stamps.size - 1)])
    distance = np.abs((stamps[candidates] - pulse_times).astype(np.int64))
    best = candidates[np.argmin(distance, axis=0), np.arange(pulse_times.size)]
    matched = np.abs((stamps[best] - pulse_times).astype(np.int64)) <= 1_000_000
    return np.where(matched, values.values[best], 0.0)


def _logs_between(logs: dict[str, sc.DataArray], times: np.ndarray) -> dict[str, sc.DataArray]:
    """Each log's values within the chunk's pulses, plus the last value before (what was in force)."""
    if times.size == 0:
        return {}
    result = {}
    for name, log in logs.items():
        stamps = log.coords["time"].values
        begin = max(int(np.searchsorted(stamps, times[0], side="right")) - 1, 0)
        end = int(np.searchsorted(stamps, times[-1], side="right"))
        if end > begin:
            result[name] = log["time", begin:end].copy()
    return result


def _scalar(group: h5py.Group, key: str) -> object | None:
    """The first value of a dataset of the group (bytes decoded), or None if missing, broken or not a dataset."""
    try:
        item = group.get(key)
        if not isinstance(item, h5py.Dataset) or item.shape is None or item.size > 1 << 16:
            return None
        value = item[()]
    except (OSError, KeyError, ValueError, TypeError):
        return None
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else None
    return _text(value) if isinstance(value, bytes | np.bytes_) else value


def _text(value: object) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return _text(value.ravel()[0]) if value.size else ""
    return str(value)


def _one_line(err: BaseException) -> str:
    """An exception's message on one line, at most 300 characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
