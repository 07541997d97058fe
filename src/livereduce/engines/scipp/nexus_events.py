"""The validated NeXus event reader: a file's ``NXevent_data`` read pulse by pulse as chunks (``chunk.py``).

Used by the file source (``listeners/file.py``, which adds the replay in time) and by the tools that serve files
as live streams (``livereduce-fake-sms``, ``livereduce-kafka-replay``), without a daemon configuration::

    with EventFile(path) as file:
        for chunk, dropped in file.chunks(1000):
            ...

Layouts (NeXus base class ``NXevent_data``: ``event_id``, ``event_time_offset``, ``event_time_zero``,
``event_index``):

* ISIS (e.g. ``raw_data_1/detector_1_events``): no ``units`` attributes; ISIS convention µs and s.
* SNS (``entry/bankN_events``, several banks): ``units`` attributes (any time unit scipp knows). The banks'
  events of the same pulse are merged into one pulse of the chunk (the pulses are the union of the banks').

The file is hostile input. Opening it checks the file and every ``NXevent_data`` group before anything is read
(``nexus_checks.py``: fields, shapes, dtypes, storage, ``event_index``, ``event_time_zero``, the pixel range) and
indexes the pulses (24 bytes per pulse and bank). While pulses are read, each block's ``event_id`` values are
checked: ids that are negative, above 2147483647 or outside the file's pixel range are dropped and counted by
reason (:func:`~livereduce.engines.scipp.chunk.valid_events`), never wrapped. Every error is a one-line
:class:`~livereduce.errors.SourceError` that names the file: the file missing, unreadable, not HDF5, truncated or
malformed when it is opened; a block HDF5 cannot read (naming the pulses) when it is read.

The pixel range (:attr:`EventFile.pixel_range`) is that of the ``detector_number`` datasets of the entry's
``NXdetector`` groups when there are any, else that of the valid ids in the event data; its span is at most
:data:`~livereduce.engines.scipp.chunk.MAX_PIXELS` (a wider range is a ``SourceError``).

Bulk event data is read with h5py straight into scipp's memory; run metadata and sample-environment logs
(``NXlog`` groups, e.g. SNS ``entry/DASlogs``) are read with scippnexus (``nexus_metadata.py``), and a
``proton_charge`` log becomes the chunks' per-pulse ``proton_charge`` (pC). Malformed metadata or logs are
skipped with a warning: they do not stop a replay.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np
import scipp as sc

from livereduce.engines.scipp.chunk import EVENT_DIM, RunMetadata, make_chunk, valid_events
from livereduce.engines.scipp.nexus_checks import (
    Bank,
    check_regular_file,
    event_groups,
    one_line,
    open_bank,
    pixel_range,
    without_junk,
)
from livereduce.engines.scipp.nexus_metadata import charge_per_pulse, logs_between, read_metadata
from livereduce.errors import SourceError

_Events = tuple[sc.Variable | np.ndarray, sc.Variable | np.ndarray, np.ndarray, dict[str, int]]
"""Events of a range of pulses: event_id (int32), event_time_offset (float32, µs), the index of each pulse's first
event (int64, (n_pulses,)), and the dropped events by reason."""


class EventFile:
    """A NeXus event file, opened and checked; :meth:`read` gives pulses as chunks. Close it (or use ``with``).

    Attributes:
        path: the file.
        banks: paths of the ``NXevent_data`` groups read, in natural order (``bank2`` before ``bank10``).
        pulse_times: the pulses of all banks (their union), ``datetime64[ns]`` (UTC), shape (n_pulses,), strictly
            increasing; pulse ``i`` of the file is ``pulse_times[i]``.
        events_before: int64, shape (n_pulses + 1,): events of all banks before each pulse (the last: all events).
        pixel_range: first and last valid ``event_id``, inclusive (``(0, 0)`` for a file without a valid id).
        pixel_source: where the range comes from, for a log line (``from NXdetector detector_number``, ...).
        metadata: run number, start time and instrument name (without logs).
        title: the entry's title ("" if none).
        experiment_identifier: the entry's experiment identifier, the proposal ("" if none).
        logs: the entry's NXlog time series by name (without ``proton_charge``), see
            :class:`~livereduce.engines.scipp.nexus_metadata.EntryMetadata`.
        proton_charge: charge of each pulse in pC, float64 (n_pulses,), from a ``proton_charge`` NXlog; None
            without one.

    Raises:
        SourceError: (when constructed) the file is missing, a directory, unreadable, not HDF5, truncated, has no
            NXevent_data group, or one that is malformed; one line naming the file and the problem.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        where = f"'{self.path}'"
        check_regular_file(self.path, where)
        self._file: h5py.File | None = None
        try:
            if not h5py.is_hdf5(self.path):
                raise SourceError(f"{where}: not an HDF5/NeXus file")
            self._file = h5py.File(self.path, "r")
            groups = event_groups(self._file)
            if not groups:
                raise SourceError(f"{where}: no NXevent_data group found")
            groups = without_junk(self._file, groups, where)
            self._banks = [open_bank(self._file[group], where) for group in groups]
            self.pulse_times = np.unique(np.concatenate([bank.pulse_times for bank in self._banks]))
            self.events_before = self._union_event_counts()
            self.pixel_range, self.pixel_source = pixel_range(self._file, groups, self._banks, where)
            entry = read_metadata(self.path, self._file, groups[0])
            self.logs = dict(entry.logs)
            self.proton_charge = charge_per_pulse(self.logs.pop("proton_charge", None), self.pulse_times)
        except SourceError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
            self.close()
            raise SourceError(f"{where} cannot be read (truncated or corrupt?): {one_line(err)}") from None
        self.banks = tuple(bank.path for bank in self._banks)
        self.metadata = entry.run
        self.title = entry.title
        self.experiment_identifier = entry.experiment_identifier

    def __enter__(self) -> EventFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def n_pulses(self) -> int:
        """Number of pulses (of all banks together)."""
        return int(self.pulse_times.size)

    def read(self, first: int, last: int) -> tuple[sc.DataArray, dict[str, int]]:
        """Pulses ``[first, last)`` (``0 <= first <= last <= n_pulses``) as a chunk, with the events dropped by
        reason (empty when none).

        The chunk (``chunk.py``) carries the run metadata, the logs' values within its pulses plus the one in
        force before them, and ``proton_charge`` when the file has it.

        Raises:
            ValueError: ``first``/``last`` outside ``0..n_pulses`` or ``first > last`` (a caller's bug).
            SourceError: the file cannot be read there (e.g. truncated inside the event data); the message names
                the file and the pulses.
        """
        if not 0 <= first <= last <= self.n_pulses:
            raise ValueError(f"pulses {first}..{last} are not a range of 0..{self.n_pulses}")
        try:
            event_id, tof, event_index, dropped = self._read(first, last)
        except (OSError, ValueError, TypeError, RuntimeError) as err:
            raise SourceError(
                f"'{self.path}' cannot be read at pulses {first}..{last - 1} (truncated or corrupt?): {one_line(err)}"
            ) from None
        times = self.pulse_times[first:last]
        metadata = RunMetadata(
            self.metadata.run_number,
            self.metadata.start_time,
            self.metadata.instrument_name,
            logs_between(self.logs, times),
        )
        charge = self.proton_charge[first:last] if self.proton_charge is not None else None
        return make_chunk(event_id, tof, times, event_index, metadata=metadata, proton_charge=charge), dropped

    def chunks(self, pulses: int) -> Iterator[tuple[sc.DataArray, dict[str, int]]]:
        """The whole file in order, ``pulses`` (>= 1) pulses per chunk (the last may hold fewer): ``(chunk, dropped
        by reason)``; nothing for a file without pulses.

        Raises:
            SourceError: as :meth:`read`.
        """
        for first in range(0, self.n_pulses, pulses):
            yield self.read(first, min(first + pulses, self.n_pulses))

    def close(self) -> None:
        """Close the file (safe to call more than once)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    # --- reading ----------------------------------------------------------------------------------------------
    def _read(self, first: int, last: int) -> _Events:
        """Events of union pulses ``[first, last)``."""
        upper = self.pulse_times[last] if last < self.pulse_times.size else None
        lower = self.pulse_times[first] if first < self.pulse_times.size else None
        ranges = [_bank_pulses(bank, lower, upper) for bank in self._banks]
        if len(self._banks) == 1:
            return self._read_bank(self._banks[0], *ranges[0])
        return self._read_merged(self.pulse_times[first:last], ranges)

    def _read_bank(self, bank: Bank, b: int, e: int) -> _Events:
        """The valid events of the bank's pulses ``[b, e)``. Reads into scipp's memory without temporaries when
        ``event_id`` has 32 bits."""
        start, stop = int(bank.first_event[b]), int(bank.first_event[e])
        event_id = sc.empty(sizes={EVENT_DIM: stop - start}, dtype="int32", unit=None)
        tof = sc.empty(sizes={EVENT_DIM: stop - start}, dtype="float32", unit="us")
        stored = _read_ids(bank.event_id, start, stop, event_id.values)
        _read_into(bank.event_time_offset, start, stop, tof.values, bank.tof_scale)
        event_index = bank.first_event[b:e] - start
        kept_ids, kept_tof, kept_index, dropped = valid_events(stored, tof, event_index, self.pixel_range)
        if dropped:
            return kept_ids, kept_tof, kept_index, dropped
        if not _direct(stored.dtype):  # every id is in 0..2**31-1: the conversion to int32 is exact
            event_id.values[...] = stored
        return event_id, tof, event_index, {}

    def _read_merged(self, times: np.ndarray, ranges: list[tuple[int, int]]) -> _Events:
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
        per_pulse = np.zeros(self.pulse_times.size, np.int64)
        for bank in self._banks:
            np.add.at(per_pulse, np.searchsorted(self.pulse_times, bank.pulse_times), np.diff(bank.first_event))
        return np.concatenate([[0], np.cumsum(per_pulse)])


def _bank_pulses(bank: Bank, lower: np.datetime64 | None, upper: np.datetime64 | None) -> tuple[int, int]:
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
    """Length of a 1-D Variable or array."""
    return int(values.shape[0])


def _values(values: sc.Variable | np.ndarray) -> np.ndarray:
    """The numpy values of a Variable (a view), or the array itself."""
    return values.values if isinstance(values, sc.Variable) else values
