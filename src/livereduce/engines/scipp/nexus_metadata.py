"""Run metadata and sample-environment logs of a NeXus event file, read with scippnexus (NXlog) and h5py.

Nothing here stops a replay: a malformed field or log is skipped with a warning, because the events can be
replayed without it. Fields (NeXus base class NXentry): ``run_number``, ``start_time`` (ISO 8601), ``title``,
``experiment_identifier``, ``instrument/name`` (else ``name``); logs: every ``NXlog`` of the entry. SNS files
record the proton charge of each pulse as the NXlog ``proton_charge`` (``entry/DASlogs``), which becomes a
per-pulse coordinate of the chunks (:func:`charge_per_pulse`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipp as sc
import scippnexus as snx

from livereduce.engines.scipp.chunk import RunMetadata
from livereduce.engines.scipp.nexus_checks import LOGGER, as_text, groups_of_class, one_line, parse_time

_log = logging.getLogger(LOGGER)
_LOG_ERRORS = (snx.NexusStructureError, KeyError, ValueError, TypeError, IndexError, RuntimeError, OSError)
"""What scippnexus may raise on a malformed NXlog (scipp's DimensionError, UnitError are RuntimeErrors)."""


@dataclass(frozen=True)
class EntryMetadata:
    """What the ``NXentry`` holding the event data says about its run.

    Attributes:
        run: ``run_number`` (0 when absent or not a number of at most 18 digits), ``start_time`` (UTC) and
            ``instrument_name`` (``instrument/name``, else ``name``; at most 200 characters); no logs.
        title: the entry's ``title`` ("" if absent).
        experiment_identifier: the entry's ``experiment_identifier`` (the proposal; "" if absent).
        logs: the entry's ``NXlog`` groups (at any depth, e.g. SNS ``entry/DASlogs/*``) that are time series with
            absolute times, by the group's name: DataArrays of dimension ``time`` (coordinate ``time``,
            datetime64), values with the log's unit.
    """

    run: RunMetadata
    title: str = ""
    experiment_identifier: str = ""
    logs: dict[str, sc.DataArray] = field(default_factory=dict)


def read_metadata(path: Path, file: h5py.File, event_group: str) -> EntryMetadata:
    """The run metadata and the NXlog logs (read with scippnexus) of the entry holding ``event_group``.

    A malformed field or log is skipped with a warning (a replay does not need it).
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
    log_groups = [f"{entry.name}/{key}" for key in groups_of_class(entry, "NXlog")]
    if log_groups:
        with snx.File(path) as nexus:
            for group in log_groups:
                try:
                    series = nexus[group][()]
                except _LOG_ERRORS as err:
                    _log.warning("Skipping log '%s': %s", group, one_line(err))
                    continue
                if (
                    isinstance(series, sc.DataArray)
                    and series.ndim == 1
                    and "time" in series.coords
                    and series.coords["time"].dtype == sc.DType.datetime64
                ):
                    logs[group.rsplit("/", 1)[-1]] = series
                else:
                    _log.warning("Skipping log '%s': not a time series with absolute times", group)
    return EntryMetadata(metadata, _string(entry, "title"), _string(entry, "experiment_identifier"), logs)


def charge_per_pulse(series: sc.DataArray | None, pulse_times: np.ndarray) -> np.ndarray | None:
    """Proton charge of each pulse in pC, float64 (n_pulses,), from a ``proton_charge`` NXlog (SNS ``DASlogs``, one
    value per pulse) and the pulse times (``datetime64[ns]``, (n_pulses,)); None without a log or pulses.

    A pulse without a log value within 1 ms of its time gets 0. Values without a convertible unit are taken as pC;
    a log whose values are not numbers is ignored with a warning.
    """
    if series is None or series.sizes["time"] == 0 or pulse_times.size == 0:
        return None
    values = series.data
    try:
        values = values.to(unit="pC", dtype="float64")
    except (sc.UnitError, sc.DTypeError):
        try:
            values = sc.array(dims=values.dims, values=values.values.astype(np.float64), unit="pC")
        except (ValueError, TypeError):
            _log.warning("Ignoring the proton_charge log: its values are not numbers")
            return None
    stamps = series.coords["time"].values.astype("datetime64[ns]")
    nearest = np.clip(np.searchsorted(stamps, pulse_times), 1, stamps.size) - 1
    candidates = np.stack([nearest, np.minimum(nearest + 1, stamps.size - 1)])
    distance = np.abs((stamps[candidates] - pulse_times).astype(np.int64))
    best = candidates[np.argmin(distance, axis=0), np.arange(pulse_times.size)]
    matched = np.abs((stamps[best] - pulse_times).astype(np.int64)) <= 1_000_000
    return np.where(matched, values.values[best], 0.0)


def logs_between(logs: dict[str, sc.DataArray], times: np.ndarray) -> dict[str, sc.DataArray]:
    """Each log's values within the pulses at ``times`` (``datetime64[ns]``, increasing), plus the last value before
    (what was in force)."""
    if times.size == 0:
        return {}
    result = {}
    for name, series in logs.items():
        stamps = series.coords["time"].values
        begin = max(int(np.searchsorted(stamps, times[0], side="right")) - 1, 0)
        end = int(np.searchsorted(stamps, times[-1], side="right"))
        if end > begin:
            result[name] = series["time", begin:end].copy()
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
    return as_text(value) if isinstance(value, bytes | np.bytes_) else value


def _string(group: h5py.Group, key: str) -> str:
    """A text field of the group (at most 1000 characters), "" if missing or broken."""
    value = _scalar(group, key)
    return "" if value is None else as_text(value)[:1000]
