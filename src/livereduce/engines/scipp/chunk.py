"""The chunk: scippnexus's representation of ``NXevent_data``, plus the run's metadata.

A chunk is a :class:`scipp.DataArray` with one dimension ``event_time_zero`` (one entry per pulse). Each
element is a bin of events, as ``scippnexus`` loads an ``NXevent_data`` group, so a processing script developed
on a file opened with scippnexus runs unchanged on live chunks:

* ``event_time_zero``: pulse time, ``datetime64`` [ns] (UTC), a coordinate of the pulse dimension;
* events: data ``float32`` [counts] (weights, all 1), coordinates ``event_id`` (``int32``, pixel, no unit)
  and ``event_time_offset`` (``float32`` [µs], time of flight from the pulse);
* ``proton_charge`` (optional): ``float64`` [pC] per pulse, a coordinate of the pulse dimension;
* run metadata as unaligned scalar coordinates: ``run_number`` (int64), ``start_time`` (datetime64 [ns]),
  ``instrument_name`` (str), and one coordinate per sample-environment log holding a time-series DataArray
  (dimension ``time``) of the values recorded during the chunk.

Unaligned coordinates are dropped by scipp when two arrays disagree on them, so they never block arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipp as sc

PULSE_DIM = "event_time_zero"
EVENT_DIM = "event"
MAX_EVENT_ID = 2**31 - 1
"""Largest valid ``event_id``: Mantid's ``detid_t`` is a signed 32-bit integer."""
MAX_PIXELS = 1 << 24
"""Widest pixel range of a source (last - first + 1, 16,777,216 pixels): histograms made when ``preserve_events``
is false span the range, so it must stay allocatable (64 MiB of float32 counts). Every listener caps its range to
it (a file with a wider one is refused; a network source's range is clipped)."""


@dataclass
class RunMetadata:
    """What a source knows about the run, attached to each chunk.

    Attributes:
        run_number: run number, 0 if unknown.
        start_time: start of the run (UTC), or None.
        instrument_name: instrument name as the source reports it ("" if unknown).
        logs: sample-environment logs, name -> DataArray over dimension ``time`` (coordinate ``time``,
            datetime64 [ns]): in a chunk of a network source, the logs that changed during the chunk, each with
            the value in force when the chunk began; in the first chunk of a run, every log (see
            ``docs/processing-scripts.md``).
        properties: further scalar run properties with Mantid's log names (e.g. ``run_title``,
            ``experiment_identifier``: str; ``run_end``: ``np.datetime64`` [ns]); attached as unaligned scalars.
        monitors: beam-monitor events of the chunk, monitor name -> DataArray of events (coordinates
            ``event_time_offset`` float32 [µs], ``event_time_zero`` datetime64 [ns]); attached together as one
            unaligned scalar ``monitors`` holding a DataGroup.
    """

    run_number: int = 0
    start_time: np.datetime64 | None = None
    instrument_name: str = ""
    logs: dict[str, sc.DataArray] = field(default_factory=dict)
    properties: dict[str, str | int | float | np.datetime64] = field(default_factory=dict)
    monitors: dict[str, sc.DataArray] = field(default_factory=dict)


def make_chunk(
    event_id: np.ndarray | sc.Variable,
    event_time_offset: np.ndarray | sc.Variable,
    pulse_times: np.ndarray,
    event_index: np.ndarray,
    *,
    metadata: RunMetadata,
    proton_charge: np.ndarray | None = None,
    pulse_coords: dict[str, sc.Variable] | None = None,
) -> sc.DataArray:
    """Build a chunk from flat event arrays.

    Args:
        event_id: pixel of each event, shape (n_events,), int32 (a scipp Variable is used without copying).
        event_time_offset: time of flight of each event in µs, shape (n_events,), float32.
        pulse_times: pulse times, shape (n_pulses,), ``datetime64[ns]``.
        event_index: index of the first event of each pulse, shape (n_pulses,), non-decreasing.
        metadata: run metadata to attach.
        proton_charge: charge of each pulse in pC, shape (n_pulses,), or None.
        pulse_coords: further per-pulse coordinates (dimension ``event_time_zero``, e.g. ADARA pulse flags).

    Returns:
        The chunk, dims ``(event_time_zero,)``, binned over ``event``.
    """
    ids = _as_variable(event_id, "int32", None)
    tof = _as_variable(event_time_offset, "float32", "us")
    events = sc.DataArray(
        sc.ones(sizes={EVENT_DIM: ids.shape[0]}, dtype="float32", unit="counts"),
        coords={"event_id": ids, "event_time_offset": tof},
    )
    begin = np.asarray(event_index, dtype=np.int64)
    end = np.append(begin[1:], ids.shape[0])[: begin.size].astype(np.int64)
    binned = sc.bins(
        begin=sc.array(dims=[PULSE_DIM], values=begin, unit=None),
        end=sc.array(dims=[PULSE_DIM], values=end, unit=None),
        dim=EVENT_DIM,
        data=events,
    )
    chunk = sc.DataArray(binned, coords={PULSE_DIM: sc.array(dims=[PULSE_DIM], values=pulse_times, unit="ns")})
    if proton_charge is not None:
        chunk.coords["proton_charge"] = sc.array(dims=[PULSE_DIM], values=proton_charge, unit="pC", dtype="float64")
    for name, coord in (pulse_coords or {}).items():
        chunk.coords[name] = coord
    attach_metadata(chunk, metadata)
    return chunk


def valid_events(
    event_id: np.ndarray | sc.Variable,
    event_time_offset: np.ndarray | sc.Variable,
    event_index: np.ndarray,
    event_id_range: tuple[int, int],
) -> tuple[np.ndarray | sc.Variable, np.ndarray | sc.Variable, np.ndarray, dict[str, int]]:
    """Drop the events whose ``event_id`` is not a valid pixel of the source, and count them.

    Mantid discards events of unknown pixels the same way. An id is invalid when it is negative (reason
    ``event_id negative``), above :data:`MAX_EVENT_ID` but within 32 bits (``event_id above 2147483647``: Mantid's
    detector ids are signed 32-bit), at least 2**32 (``event_id beyond 32 bits``), or outside ``event_id_range``
    (first, last; inclusive: ``event_id outside FIRST..LAST``). Ids are never wrapped.

    Args:
        event_id: pixel of each event, shape (n_events,), any integer dtype.
        event_time_offset: time of flight of each event, shape (n_events,).
        event_index: index of the first event of each pulse, shape (n_pulses,), non-decreasing.
        event_id_range: the source's valid ids, inclusive.

    Returns:
        ``(event_id, event_time_offset, event_index, dropped)``: the inputs unchanged (no copy) when every id
        is valid, else the kept events (``event_id`` as int32) with the pulses' first-event indices moved, and
        ``dropped``, reason -> count (empty when nothing was dropped).
    """
    ids = event_id.values if isinstance(event_id, sc.Variable) else np.asarray(event_id)
    first, last = event_id_range
    if ids.size == 0 or (int(ids.min()) >= first and int(ids.max()) <= last):
        return event_id, event_time_offset, event_index, {}
    wide = ids.astype(np.int64) if ids.dtype.kind == "i" or ids.dtype.itemsize < 8 else ids
    if wide.dtype.kind == "u":  # uint64: nothing negative; compare without converting (no wrap)
        negative = np.zeros(ids.size, bool)
        too_big = wide > np.uint64(MAX_EVENT_ID)
        beyond_32_bits = wide > np.uint64(2**32 - 1)
    else:
        negative = wide < 0
        too_big = wide > MAX_EVENT_ID
        beyond_32_bits = wide > 2**32 - 1
    outside = ~(negative | too_big) & ((wide < first) | (wide > last))
    keep = ~(negative | too_big | outside)
    dropped = {
        reason: int(count)
        for reason, count in (
            ("event_id negative", negative.sum()),
            (f"event_id above {MAX_EVENT_ID}", (too_big & ~beyond_32_bits).sum()),
            ("event_id beyond 32 bits", beyond_32_bits.sum()),
            (f"event_id outside {first}..{last}", outside.sum()),
        )
        if count
    }
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    tof = event_time_offset.values if isinstance(event_time_offset, sc.Variable) else np.asarray(event_time_offset)
    index = kept_before[np.asarray(event_index, dtype=np.int64)]
    return ids[keep].astype(np.int32), tof[keep], index, dropped


def capped_range(first: int, last: int) -> tuple[int, int]:
    """A source's pixel range ``first..last`` within ``0..MAX_EVENT_ID`` and at most :data:`MAX_PIXELS` wide
    (the first :data:`MAX_PIXELS` ids are kept; events of the others are dropped as outside the range)."""
    first = min(max(first, 0), MAX_EVENT_ID)
    return first, max(first, min(last, first + MAX_PIXELS - 1, MAX_EVENT_ID))


LogValue = int | float | str | np.ndarray
"""One value of a log: a number, a string, or a 1-d array of numbers or strings (a waveform); one that
:func:`livereduce.protocols.log_values.check_log_value` accepts (the listeners drop and count the others)."""

_INT64_MAX = np.iinfo(np.int64).max


def log_series(entries: list[tuple[int, LogValue]], unit: str | None = None) -> sc.DataArray:
    """A time-series log, as chunks carry logs: values over dimension ``time`` with coordinate ``time``
    (datetime64 [ns], UTC). The same for every source (ADARA process variables, Kafka f144/f142).

    Args:
        entries: (time in ns since the Unix epoch, value), at least one, sorted by time; every value one that
            :func:`livereduce.protocols.log_values.check_log_value` accepts.
        unit: the values' unit as text; one scipp cannot parse is left out (any text from the network); strings
            have none.

    Returns:
        one value per time when no value is an array; else one bin of values per time (dimension ``value``; a
        scalar among arrays is a bin of one; lengths may differ from time to time, every value is kept). The
        dtype holds every value exactly (:func:`_exact_values`): string, int64, else float64.
    """
    times = sc.array(dims=["time"], values=np.array([t for t, _ in entries], np.int64), unit="ns", dtype="datetime64")
    values = [value for _, value in entries]
    arrays = any(isinstance(value, np.ndarray) and value.ndim for value in values)
    if arrays or any(isinstance(value, str) for value in values):
        parts = [np.atleast_1d(np.asarray(value)) for value in values]
    else:  # numbers only: one array at once (fast; numpy makes Python ints int64, uint64 or float64)
        parts = [np.array(values)]
    exact = _exact_values(parts)
    flat_unit = None if isinstance(exact, list) else _unit(unit)
    if not arrays:
        data = sc.array(dims=["time"], values=exact, unit=flat_unit)
    else:
        sizes = np.array([part.size for part in parts], np.int64)
        ends = np.cumsum(sizes)
        data = sc.bins(
            begin=sc.array(dims=["time"], values=ends - sizes, unit=None),
            end=sc.array(dims=["time"], values=ends, unit=None),
            dim="value",
            data=sc.array(dims=["value"], values=exact, unit=flat_unit),
        )
    return sc.DataArray(data, coords={"time": times})


def _exact_values(parts: list[np.ndarray]) -> np.ndarray | list[str]:
    """The 1-d ``parts`` as one sequence of the dtype that holds all of them exactly, as scipp has it (no unsigned or
    8/16-bit integers):

    * strings (a list: numpy's fixed-width text would give every string the longest one's size) if any part is
      text, numbers as ``str()`` gives them;
    * int64 if every part is boolean (0/1) or integer and every value lies within int64;
    * float64 otherwise: floats (float16/32 widened exactly), uint64 values above 2**63 - 1, and integers mixed
      with floats in one log (integers beyond 2**53 are then rounded to the nearest float64).
    """
    kinds = {part.dtype.kind for part in parts}
    if "U" in kinds:
        return [str(item) for part in parts for item in part.tolist()]
    integers = kinds <= {"b", "i", "u"} and not any(
        part.dtype.kind == "u" and part.size and int(part.max()) > _INT64_MAX for part in parts
    )
    return np.concatenate(parts, dtype=np.int64 if integers else np.float64, casting="unsafe")


def monitor_events(pulse_ns: np.ndarray, tof_us: np.ndarray) -> sc.DataArray:
    """A beam monitor's events, as chunks carry them in the ``monitors`` DataGroup: weights 1 [counts],
    coordinates ``event_time_offset`` (float32 [µs]) and ``event_time_zero`` (datetime64 [ns]).

    Args:
        pulse_ns: each event's pulse time, ns since the Unix epoch, int64 (n_events,).
        tof_us: each event's time of flight in µs (n_events,).
    """
    return sc.DataArray(
        sc.ones(sizes={EVENT_DIM: tof_us.size}, dtype="float32", unit="counts"),
        coords={
            "event_time_offset": sc.array(dims=[EVENT_DIM], values=tof_us, unit="us", dtype="float32"),
            "event_time_zero": sc.array(dims=[EVENT_DIM], values=pulse_ns, unit="ns", dtype="datetime64"),
        },
    )


def _unit(text: str | None) -> sc.Unit | None:
    if not text:
        return None
    try:
        return sc.Unit(text)
    except Exception:  # noqa: BLE001 - any text from the network; unparsable units are left out
        return None


def attach_metadata(target: sc.DataArray | sc.Dataset, metadata: RunMetadata) -> None:
    """Set the run metadata as unaligned scalar coordinates of ``target`` (in place)."""
    values: dict[str, sc.Variable] = {
        "run_number": sc.scalar(metadata.run_number, unit=None, dtype="int64"),
        "instrument_name": sc.scalar(metadata.instrument_name),
    }
    if metadata.start_time is not None:
        values["start_time"] = sc.scalar(np.datetime64(metadata.start_time, "ns"), unit="ns")
    values.update({name: sc.scalar(log) for name, log in metadata.logs.items()})
    for name, value in metadata.properties.items():
        values[name] = sc.scalar(value, unit="ns") if isinstance(value, np.datetime64) else sc.scalar(value)
    if metadata.monitors:
        values["monitors"] = sc.scalar(sc.DataGroup(dict(metadata.monitors)))
    for name, value in values.items():
        target.coords[name] = value
        target.coords.set_aligned(name, False)


def merged_metadata(older: RunMetadata, newer: RunMetadata) -> RunMetadata:
    """What an accumulation carries after ``newer`` was added to ``older``: ``newer``'s run number, start,
    instrument and monitors; every log and property of both, ``newer``'s where both have one."""
    return RunMetadata(
        run_number=newer.run_number,
        start_time=newer.start_time,
        instrument_name=newer.instrument_name,
        logs={**older.logs, **newer.logs},
        properties={**older.properties, **newer.properties},
        monitors=newer.monitors,
    )


def metadata_of(data: sc.DataArray) -> RunMetadata:
    """The run metadata attached to a chunk or accumulation (defaults for what is missing); one pass over the
    coordinates (scipp's coordinate access grows with their number, and a chunk may carry thousands of logs)."""
    metadata = RunMetadata()
    for name, coord in data.coords.items():
        if coord.ndim != 0:
            continue
        if name == "run_number":
            metadata.run_number = int(coord.value)
        elif name == "start_time":
            metadata.start_time = coord.value
        elif name == "instrument_name":
            metadata.instrument_name = str(coord.value)
        elif name == "monitors":
            metadata.monitors = dict(coord.value)
        elif not coord.aligned:
            value = coord.value
            (metadata.logs if isinstance(value, sc.DataArray) else metadata.properties)[name] = value
    return metadata


def is_event_chunk(data: object) -> bool:
    """True for a DataArray of events binned by pulse only (a chunk, or an accumulation of chunks)."""
    return isinstance(data, sc.DataArray) and data.dims == (PULSE_DIM,) and data.bins is not None


def flat_events(data: sc.DataArray) -> sc.DataArray:
    """All events of binned data as one flat table (dimension ``event``).

    A view (no copy) when the bins are contiguous from the start of their buffer, as in a chunk or an
    accumulation made by livereduce; otherwise a copy (``data.bins.concat()``). The fastest start for a
    whole-chunk histogram: ``flat_events(input).hist(event_id=...)``.
    """
    constituents = data.bins.constituents
    begin = constituents["begin"].values
    end = constituents["end"].values
    if data.ndim == 1 and (begin.size == 0 or (begin[0] == 0 and np.array_equal(begin[1:], end[:-1]))):
        return constituents["data"][constituents["dim"], 0 : int(end[-1]) if end.size else 0]
    return data.bins.concat().value


def event_count(data: object) -> int:
    """Number of events in binned data (0 for dense data or other objects)."""
    if isinstance(data, sc.DataArray) and data.bins is not None:
        return int(data.bins.size().sum().value)
    return 0


def _as_variable(values: np.ndarray | sc.Variable, dtype: str, unit: str | None) -> sc.Variable:
    if isinstance(values, sc.Variable):
        return values
    return sc.array(dims=[EVENT_DIM], values=values, dtype=dtype, unit=unit)
