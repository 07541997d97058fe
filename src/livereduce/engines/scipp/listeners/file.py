"""``FileEventDataListener``: replays the ``NXevent_data`` of a NeXus file pulse by pulse.

Mantid's listener of the same name hands out a file in N chunks; this one replays it in time: the pulse at
``event_time_zero`` t becomes available ``(t - t_first) / replay_speed`` seconds after ``start()`` (speed 0:
everything at once), and ``extract()`` returns the pulses available since the previous call (at most
``replay_chunk_pulses``). The end of the file is the end of the run (``EndRun``); afterwards chunks are empty
and the status is ``NoRun``.

Layouts (NeXus ``NXevent_data``: ``event_id``, ``event_time_offset``, ``event_time_zero``, ``event_index``):

* ISIS (e.g. ``raw_data_1/detector_1_events``): no ``units`` attributes; ISIS convention µs and s.
* SNS (``entry/bankN_events``, several banks): ``units`` attributes (any time unit scipp knows). The banks'
  events of the same pulse are merged into one pulse of the chunk.

Bulk event data is read with h5py straight into scipp's memory; run metadata and sample-environment logs
(``NXlog`` groups, e.g. SNS ``entry/DASlogs``) are read with scippnexus.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import h5py
import numpy as np
import scipp as sc
import scippnexus as snx

from livereduce.config import Config
from livereduce.engines.scipp.chunk import EVENT_DIM, RunMetadata, make_chunk
from livereduce.engines.scipp.listeners.base import Listener, RunStatus, StartPosition
from livereduce.errors import ConfigError, SourceError

_log = logging.getLogger("livereduce.FileEventDataListener")
_FIELDS = ("event_id", "event_time_offset", "event_time_zero", "event_index")
_SCAN_EVENTS = 1 << 24
_ZONE = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


@dataclass
class _Bank:
    """One NXevent_data group: its datasets and per-pulse bookkeeping."""

    path: str
    event_id: h5py.Dataset
    event_time_offset: h5py.Dataset
    tof_scale: float  # multiply the stored event_time_offset by this to get µs
    pulse_times: np.ndarray  # datetime64[ns], (n_pulses,)
    first_event: np.ndarray  # int64, (n_pulses + 1,): events of pulse i are [first_event[i], first_event[i+1])


class FileEventDataListener(Listener):
    """Replays a NeXus file. Config keys: ``filename``, ``replay_speed``, ``replay_chunk_pulses``.

    Raises:
        ConfigError: ``filename`` is not set.
    """

    name = "FileEventDataListener"

    def __init__(self, config: Config) -> None:
        if not config.filename:
            raise ConfigError("listener FileEventDataListener needs the key 'filename' (the NeXus file to replay)")
        self.path = Path(config.filename)
        self.speed = config.replay_speed
        self.max_pulses = config.replay_chunk_pulses
        self._file: h5py.File | None = None
        self._banks: list[_Bank] = []
        self._pulse_times = np.empty(0, "datetime64[ns]")
        self._metadata = RunMetadata()
        self._logs: dict[str, sc.DataArray] = {}
        self._charge: np.ndarray | None = None
        self._event_ids = (0, 0)
        self._next = 0
        self._started_at = 0.0
        self._origin = np.datetime64(0, "ns")  # file time of the first pulse replayed
        self._status = RunStatus.NoRun
        self._ended = False

    # --- Listener interface -----------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the file and index its pulses.

        Raises:
            SourceError: the file is missing, not HDF5, truncated, or has no (valid) NXevent_data group.
        """
        where = f"'{self.path}'"
        if not self.path.is_file():
            raise SourceError(f"{where}: no such file")
        if not h5py.is_hdf5(self.path):
            raise SourceError(f"{where}: not an HDF5/NeXus file")
        try:
            self._file = h5py.File(self.path, "r")
            groups = _event_groups(self._file)
            if not groups:
                raise SourceError(f"{where}: no NXevent_data group found")
            self._banks = [_open_bank(self._file[group], where) for group in groups]
            self._pulse_times = np.unique(np.concatenate([bank.pulse_times for bank in self._banks]))
            self._event_ids = self._scan_event_ids()
            self._metadata, self._logs = _read_metadata(self.path, self._file, groups[0])
            self._charge = _charge_per_pulse(self._logs.pop("proton_charge", None), self._pulse_times)
        except SourceError:
            self._close()
            raise
        except (OSError, KeyError, ValueError, RuntimeError) as err:
            self._close()
            raise SourceError(f"{where} cannot be read (truncated or corrupt?): {err}") from None
        events = sum(bank.event_id.shape[0] for bank in self._banks)
        _log.info(
            "Replaying %s: %d events in %d pulses from %s at speed %s",
            self.path,
            events,
            self._pulse_times.size,
            ", ".join(bank.path for bank in self._banks),
            self.speed,
        )

    def start(self, position: StartPosition) -> None:
        """Start the replay clock at the first pulse replayed; a time skips the pulses before it
        (``from_start_of_run`` and ``now``: the file's first pulse)."""
        if not isinstance(position, str):
            when = np.datetime64(position.astimezone(UTC).replace(tzinfo=None), "ns")
            self._next = int(np.searchsorted(self._pulse_times, when))
        if self._next < self._pulse_times.size:
            self._origin = self._pulse_times[self._next]
        self._started_at = time.monotonic()

    def extract(self) -> sc.DataArray:
        """The pulses that became available since the last call.

        Raises:
            SourceError: the file cannot be read (e.g. truncated inside the event data).
        """
        first = self._next
        last = self._available()
        if self.max_pulses is not None:
            last = min(last, first + self.max_pulses)
        self._next = last
        if self._ended:
            self._status = RunStatus.NoRun
        elif last == self._pulse_times.size:
            self._status, self._ended = RunStatus.EndRun, True
        else:
            self._status = RunStatus.Running
        return self._build(first, last)

    def _build(self, first: int, last: int) -> sc.DataArray:
        """Read pulses ``[first, last)`` and build the chunk.

        Raises:
            SourceError: the file cannot be read (e.g. truncated inside the event data).
        """
        try:
            event_id, tof, event_index = self._read(first, last)
        except (OSError, ValueError, RuntimeError) as err:
            raise SourceError(f"'{self.path}' cannot be read (truncated or corrupt?): {err}") from None
        times = self._pulse_times[first:last]
        metadata = RunMetadata(
            self._metadata.run_number,
            self._metadata.start_time,
            self._metadata.instrument_name,
            _logs_between(self._logs, times),
        )
        charge = self._charge[first:last] if self._charge is not None else None
        return make_chunk(event_id, tof, times, event_index, metadata=metadata, proton_charge=charge)

    def run_status(self) -> RunStatus:
        return self._status

    def run_number(self) -> int:
        return self._metadata.run_number

    def is_connected(self) -> bool:
        return self._file is not None

    def disconnect(self) -> None:
        self._close()

    def event_id_range(self) -> tuple[int, int]:
        return self._event_ids

    def describe(self) -> str:
        return f"{self.name} '{self.path}': pulse {self._next} of {self._pulse_times.size}"

    # --- reading ----------------------------------------------------------------------------------------------
    def _available(self) -> int:
        if self.speed == 0:
            return self._pulse_times.size
        elapsed = (time.monotonic() - self._started_at) * self.speed
        limit = self._origin + np.timedelta64(int(elapsed * 1e9), "ns")
        return max(self._next, int(np.searchsorted(self._pulse_times, limit, side="right")))

    def _read(self, first: int, last: int) -> tuple[sc.Variable, sc.Variable, np.ndarray]:
        """Events of union pulses ``[first, last)``: (event_id, event_time_offset [µs], event_index)."""
        if last >= self._pulse_times.size:
            upper = None
        else:
            upper = self._pulse_times[last]
        lower = self._pulse_times[first] if first < self._pulse_times.size else None
        ranges = [_bank_pulses(bank, lower, upper) for bank in self._banks]
        counts = [
            bank.first_event[b + 1 : e + 1] - bank.first_event[b:e]
            for bank, (b, e) in zip(self._banks, ranges, strict=True)
        ]
        total = sum(int(c.sum()) for c in counts)
        event_id = sc.empty(sizes={EVENT_DIM: total}, dtype="int32", unit=None)
        tof = sc.empty(sizes={EVENT_DIM: total}, dtype="float32", unit="us")
        if len(self._banks) == 1:
            bank, (b, e) = self._banks[0], ranges[0]
            start, stop = int(bank.first_event[b]), int(bank.first_event[e])
            _read_into(bank.event_id, start, stop, event_id.values, 1.0)
            _read_into(bank.event_time_offset, start, stop, tof.values, bank.tof_scale)
            event_index = bank.first_event[b:e] - start
            return event_id, tof, event_index
        return self._read_merged(self._pulse_times[first:last], ranges, counts, (event_id, tof))

    def _read_merged(
        self,
        times: np.ndarray,
        ranges: list[tuple[int, int]],
        counts: list[np.ndarray],
        targets: tuple[sc.Variable, sc.Variable],
    ) -> tuple[sc.Variable, sc.Variable, np.ndarray]:
        """Merge several banks: the events of one pulse from all banks become one pulse of the chunk."""
        event_id, tof = targets
        slots = [
            np.searchsorted(times, bank.pulse_times[b:e]) for bank, (b, e) in zip(self._banks, ranges, strict=True)
        ]
        per_pulse = sum(np.bincount(s, weights=c, minlength=times.size) for s, c in zip(slots, counts, strict=True))
        per_pulse = np.asarray(per_pulse, dtype=np.int64)
        event_index = np.concatenate([[0], np.cumsum(per_pulse)[:-1]]).astype(np.int64)
        filled = event_index.copy()
        for bank, (b, e), slot, count in zip(self._banks, ranges, slots, counts, strict=True):
            start, stop = int(bank.first_event[b]), int(bank.first_event[e])
            ids = np.empty(stop - start, np.int32)
            offsets = np.empty(stop - start, np.float32)
            _read_into(bank.event_id, start, stop, ids, 1.0)
            _read_into(bank.event_time_offset, start, stop, offsets, bank.tof_scale)
            within = np.arange(stop - start) - np.repeat(bank.first_event[b:e] - start, count)
            target = np.repeat(filled[slot], count) + within
            event_id.values[target] = ids
            tof.values[target] = offsets
            np.add.at(filled, slot, count)
        return event_id, tof, event_index

    def _scan_event_ids(self) -> tuple[int, int]:
        low, high = None, None
        for bank in self._banks:
            n = bank.event_id.shape[0]
            for start in range(0, n, _SCAN_EVENTS):
                values = bank.event_id[start : min(n, start + _SCAN_EVENTS)]
                low = int(values.min()) if low is None else min(low, int(values.min()))
                high = int(values.max()) if high is None else max(high, int(values.max()))
        return (low, high) if low is not None else (0, 0)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _event_groups(file: h5py.File) -> list[str]:
    found: list[str] = []

    def visit(name: str, obj: h5py.HLObject) -> None:
        if isinstance(obj, h5py.Group) and _text(obj.attrs.get("NX_class", "")) == "NXevent_data":
            found.append(name)

    file.visititems(visit)
    return sorted(found, key=_natural)


def _natural(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _open_bank(group: h5py.Group, where: str) -> _Bank:
    missing = [field for field in _FIELDS if field not in group]
    if missing:
        raise SourceError(f"{where}: NXevent_data group '{group.name}' has no {', '.join(missing)}")
    event_id, tof, etz, index = (group[field] for field in _FIELDS)
    n_events, n_pulses = event_id.shape[0], etz.shape[0]
    if tof.shape[0] != n_events or index.shape[0] != n_pulses:
        raise SourceError(
            f"{where}: '{group.name}': event_id/event_time_offset ({n_events}/{tof.shape[0]} events) or "
            f"event_time_zero/event_index ({n_pulses}/{index.shape[0]} pulses) differ in length"
        )
    first_event = np.append(index[()].astype(np.int64), n_events)
    if np.any(np.diff(first_event) < 0) or (first_event.size and first_event[0] < 0):
        raise SourceError(f"{where}: '{group.name}/event_index' is not non-decreasing within 0..{n_events}")
    return _Bank(group.name, event_id, tof, _scale(tof, "us", "us"), _pulse_times(etz, where), first_event)


def _scale(dataset: h5py.Dataset, target: str, default: str) -> float:
    """Factor converting the dataset's ``units`` (default: ISIS convention ``default``) to ``target``."""
    unit = _text(dataset.attrs.get("units", default)) or default
    try:
        return float(sc.scalar(1.0, unit=unit).to(unit=target).value)
    except (sc.UnitError, ValueError, RuntimeError) as err:
        raise SourceError(
            f"'{dataset.file.filename}': '{dataset.name}' has units '{unit}', not a time unit: {err}"
        ) from None


def _pulse_times(etz: h5py.Dataset, where: str) -> np.ndarray:
    """``event_time_zero`` as absolute ``datetime64[ns]`` (its ``offset`` attribute, else the Unix epoch)."""
    seconds = etz[()].astype(np.float64) * _scale(etz, "s", "s")
    offset = _text(etz.attrs.get("offset", "1970-01-01T00:00:00"))
    try:
        origin = parse_time(offset)
    except ValueError:
        raise SourceError(f"{where}: '{etz.name}' has an invalid offset attribute '{offset}'") from None
    return origin + np.round(seconds * 1e9).astype("timedelta64[ns]")


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


def _bank_pulses(bank: _Bank, lower: np.datetime64 | None, upper: np.datetime64 | None) -> tuple[int, int]:
    """Range of the bank's pulses with times in ``[lower, upper)`` (None: open end)."""
    if lower is None:
        return bank.pulse_times.size, bank.pulse_times.size
    b = int(np.searchsorted(bank.pulse_times, lower))
    e = bank.pulse_times.size if upper is None else int(np.searchsorted(bank.pulse_times, upper))
    return b, e


def _read_into(dataset: h5py.Dataset, start: int, stop: int, target: np.ndarray, scale: float) -> None:
    """Read ``dataset[start:stop]`` into ``target`` without temporaries when the dtypes allow it."""
    if stop <= start:
        return
    source = dataset.dtype
    if source.itemsize == target.dtype.itemsize and source.kind in "iu" and target.dtype.kind in "iu":
        dataset.read_direct(target.view(source), np.s_[start:stop])
    elif source == target.dtype:
        dataset.read_direct(target, np.s_[start:stop])
    else:
        target[:] = dataset[start:stop]
    if scale != 1.0:
        target *= np.asarray(scale, dtype=target.dtype)


def _read_metadata(path: Path, file: h5py.File, event_group: str) -> tuple[RunMetadata, dict[str, sc.DataArray]]:
    """Run number, start time, instrument name and the NXlog logs of the entry (by the groups' names)."""
    entry = file[event_group.split("/", maxsplit=1)[0]]
    run = _scalar(entry, "run_number")
    name = _scalar(entry, "instrument/name") or _scalar(entry, "name") or ""
    start = _scalar(entry, "start_time")
    metadata = RunMetadata(
        run_number=int(run) if run is not None and str(run).strip().isdigit() else 0,
        start_time=parse_time(str(start)) if start else None,
        instrument_name=str(name),
    )
    logs: dict[str, sc.DataArray] = {}
    log_groups: list[str] = []
    entry.visititems(
        lambda key, obj: (
            log_groups.append(f"{entry.name}/{key}")
            if isinstance(obj, h5py.Group) and _text(obj.attrs.get("NX_class", "")) == "NXlog"
            else None
        )
    )
    if log_groups:
        with snx.File(path) as nexus:
            for group in log_groups:
                try:
                    log = nexus[group][()]
                except (snx.NexusStructureError, KeyError, ValueError, IndexError, sc.DimensionError) as err:
                    _log.warning("Skipping log '%s': %s", group, err)
                    continue
                if isinstance(log, sc.DataArray) and log.ndim == 1 and "time" in log.coords:
                    logs[group.rsplit("/", 1)[-1]] = log
    return metadata, logs


def _charge_per_pulse(log: sc.DataArray | None, pulse_times: np.ndarray) -> np.ndarray | None:
    """Proton charge of each pulse in pC from a ``proton_charge`` NXlog (SNS ``DASlogs``, one value per pulse).

    A pulse without a log value within 1 ms of its time gets 0. Values without a convertible unit are taken as pC.
    """
    if log is None or log.sizes["time"] == 0 or pulse_times.size == 0:
        return None
    values = log.data
    try:
        values = values.to(unit="pC", dtype="float64")
    except (sc.UnitError, sc.DTypeError):
        values = sc.array(dims=values.dims, values=values.values.astype(np.float64), unit="pC")
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
    if key not in group or not isinstance(group[key], h5py.Dataset):
        return None
    value = group[key][()]
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else None
    return _text(value) if isinstance(value, bytes | np.bytes_) else value


def _text(value: object) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return _text(value.ravel()[0]) if value.size else ""
    return str(value)
