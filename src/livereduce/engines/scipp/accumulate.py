"""Histogramming (``PreserveEvents`` false) and accumulation (``AccumulationMethod`` Add/Replace/Append).

Mantid semantics (LoadLiveData, see ``docs/processing-scripts.md``) on scipp objects:

* **Add**: events binned by pulse are appended pulse by pulse (Mantid concatenates event lists); other binned
  data with equal outer coordinates get their bins concatenated; dense data is summed (coordinates must be
  identical, e.g. fixed bin edges); a ``DataGroup`` (Mantid's WorkspaceGroup) is added member by member.
* **Replace**: the accumulation becomes the processed chunk.
* **Append**: concatenated along the outer dimension (Mantid's AppendSpectra: the spectrum axis grows).

Events binned by pulse are accumulated into a reserved buffer (:class:`EventAccumulator`), so Add never copies
what is already accumulated: the cost of a cycle is proportional to the chunk, not to the run.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipp as sc

from livereduce.engines.scipp.chunk import (
    EVENT_DIM,
    PULSE_DIM,
    RunMetadata,
    attach_metadata,
    event_count,
    flat_events,
    is_event_chunk,
    merged_metadata,
)
from livereduce.errors import AccumulationError

Method = Literal["Add", "Replace", "Append"]
Data = sc.DataArray | sc.Dataset | sc.DataGroup


def histogram_events(processed: Data, event_ids: tuple[int, int]) -> Data:
    """What LoadLiveData's ConvertToMatrixWorkspace does when ``PreserveEvents`` is false.

    * events binned by pulse -> counts per pixel over the source's whole pixel range ``event_ids`` (first,
      last; inclusive): dims ``(event_id,)``, coordinate ``event_id`` (int32), so chunks always add up;
    * other binned data -> the sum of each bin (dense, same dims);
    * dense data is returned unchanged; a DataGroup is histogrammed member by member.
    """
    if isinstance(processed, sc.DataGroup):
        return processed.apply(lambda member: histogram_events(member, event_ids))
    if not isinstance(processed, sc.DataArray) or processed.bins is None:
        return processed
    if not is_event_chunk(processed):
        return processed.hist()
    first, last = event_ids
    edges = sc.arange("event_id", first, last + 2, unit=None, dtype="int32")
    counts = flat_events(processed).hist(event_id=edges)
    counts.coords["event_id"] = edges["event_id", :-1]
    for name, coord in processed.coords.items():
        if coord.ndim == 0:
            counts.coords[name] = coord
            counts.coords.set_aligned(name, coord.aligned)
    return counts


class Accumulator:
    """The accumulation of one engine start and how chunks are added to it.

    Args:
        method: the configured AccumulationMethod.
        reserve_bytes: memory the event buffer may reserve (virtual until used), e.g. the memory limit.
    """

    def __init__(self, method: Method, reserve_bytes: int) -> None:
        self.method = method
        self._reserve_bytes = reserve_bytes
        self._events: EventAccumulator | None = None
        self._metadata = RunMetadata()
        self.accumulation: Data | None = None
        self.generation = 0
        """Grows by one each time the accumulation is replaced (a new accumulation: a new checkpoint lineage)."""

    @property
    def event_count(self) -> int:
        """Events in the accumulation (0 when it holds histograms); O(1) for event accumulations."""
        return self._events.n_events if self._events is not None else event_count(self.accumulation)

    def accumulate(self, processed: Data, metadata: RunMetadata, replace: bool) -> Data:
        """Accumulate a processed chunk and return the accumulation.

        Args:
            processed: the processed (and, unless PreserveEvents, histogrammed) chunk.
            metadata: the chunk's run metadata. The accumulation carries the latest run number, start, instrument,
                properties and monitors, and every log seen since it was replaced, each as the latest chunk that
                had it holds it (a chunk holds only the logs that changed during it, see ``chunk.RunMetadata``).
            replace: force Replace (first chunk, data reset, after a run transition).

        Raises:
            AccumulationError: the chunk does not fit the accumulation; names both shapes. The accumulation
                is unchanged.
        """
        method: Method = "Replace" if replace or self.accumulation is None else self.method
        self.generation += replace or self.accumulation is None
        if is_event_chunk(processed) and self.method != "Replace":
            if method == "Replace" or self._events is None:
                self._events = EventAccumulator(self._reserve_bytes)
            result: Data = self._events.append(processed)
        else:
            result = processed if method == "Replace" else _combine(self.accumulation, processed, method)
            self._events = None
        self._metadata = metadata if method == "Replace" else merged_metadata(self._metadata, metadata)
        _attach_everywhere(result, self._metadata)
        self.accumulation = result
        return result

    @property
    def metadata(self) -> RunMetadata:
        """The run metadata the accumulation carries."""
        return self._metadata

    @property
    def n_pulses(self) -> int | None:
        """Pulses of an event accumulation (appended in order, never changed), None for any other."""
        return None if self._events is None else self._events.n_pulses

    def events_since(self, first: int) -> sc.DataArray | None:
        """An event accumulation's pulses from index ``first`` on, or None for any other accumulation (see
        :meth:`EventAccumulator.pulses_since`)."""
        return None if self._events is None else self._events.pulses_since(first)

    def restore(self, parts: list[Data], metadata: RunMetadata, events: bool) -> Data:
        """Make the accumulation what a checkpoint holds (a new generation).

        Args:
            parts: event accumulations: chunk-shaped DataArrays of pulses, in order (at least one); else the one
                object.
            metadata: its run metadata (attached again).
            events: ``parts`` are pulses of events.

        Raises:
            AccumulationError: the parts do not fit together.
        """
        self.generation += 1
        if events:
            self._events = EventAccumulator(self._reserve_bytes)
            for part in parts:
                result = self._events.append(part)
        else:
            self._events, result = None, parts[0]
        self._metadata = metadata
        _attach_everywhere(result, metadata)
        self.accumulation = result
        return result


def _attach_everywhere(data: Data, metadata: RunMetadata) -> None:
    """Attach the run metadata to a DataArray or Dataset, or to every such member of a DataGroup."""
    if isinstance(data, sc.DataArray | sc.Dataset):
        attach_metadata(data, metadata)
    elif isinstance(data, sc.DataGroup):
        for member in data.values():
            _attach_everywhere(member, metadata)


def _combine(accumulation: Data, processed: Data, method: Method, in_place: bool = True) -> Data:
    """Add or Append two non-event-chunk objects, with a clear error naming both shapes.

    On error the accumulation is unchanged: DataGroup members are combined out of place and assigned together.
    """
    try:
        if isinstance(accumulation, sc.DataGroup) and isinstance(processed, sc.DataGroup):
            if accumulation.keys() != processed.keys():
                raise AccumulationError(f"members {sorted(processed)} differ from {sorted(accumulation)}")
            return sc.DataGroup({k: _combine(accumulation[k], processed[k], method, False) for k in processed})
        if type(accumulation) is not type(processed):
            raise AccumulationError("the types differ")
        if method == "Append":
            return sc.concat([_without_metadata(accumulation), _without_metadata(processed)], dim=processed.dims[0])
        if processed.sizes != accumulation.sizes:
            raise AccumulationError("the sizes differ")
        if isinstance(processed, sc.DataArray) and processed.bins is not None:
            return accumulation.bins.concatenate(processed)
        if not in_place:
            return accumulation + processed
        accumulation += processed
        return accumulation
    except (
        AccumulationError,
        sc.DimensionError,
        sc.DatasetError,
        sc.UnitError,
        sc.DTypeError,
        sc.VariableError,
        KeyError,
        ValueError,
    ) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        raise AccumulationError(
            f"cannot {method} the processed chunk {describe(processed)} to the accumulation "
            f"{describe(accumulation)}: {message}"
        ) from None


def _without_metadata(data: Data) -> Data:
    """``data`` without unaligned scalar coordinates (run metadata, re-attached after accumulating)."""
    if not isinstance(data, sc.DataArray):
        return data
    drop = [name for name, coord in data.coords.items() if not coord.aligned and coord.ndim == 0]
    return data.drop_coords(drop) if drop else data


def describe(data: object) -> str:
    """Short description of a scipp object's shape, e.g. ``DataArray(event_id: 4096, dense float64)``."""
    if data is None:
        return "none yet"
    if isinstance(data, sc.DataGroup):
        return "DataGroup{" + ", ".join(f"{key}: {describe(value)}" for key, value in data.items()) + "}"
    if isinstance(data, sc.DataArray | sc.Dataset | sc.Variable):
        sizes = ", ".join(f"{dim}: {size}" for dim, size in data.sizes.items()) or "scalar"
        kind = "binned" if getattr(data, "bins", None) is not None else "dense"
        dtype = f" {data.dtype}" if isinstance(data, sc.DataArray | sc.Variable) else ""
        return f"{type(data).__name__}({sizes}, {kind}{dtype})"
    return type(data).__name__


class EventAccumulator:
    """Accumulates chunks of events binned by pulse without copying what is already accumulated.

    The events are written into a buffer reserved once for the whole run: ``reserve_bytes`` of virtual memory
    (scipp does not touch memory it has not written, so only accumulated events are resident). The
    accumulation is a view: pulses ``[0, n_pulses)`` whose bins index the buffer, so views handed out earlier
    stay valid while later chunks are appended. If the buffer fills up it is reallocated at twice the size
    (a copy; only when more events arrive than the memory limit allows).

    Memory per accumulated event: the sizes of the event fields (12 bytes for ``event_id`` int32,
    ``event_time_offset`` float32 and float32 weights), plus 24 bytes per pulse.
    """

    def __init__(self, reserve_bytes: int) -> None:
        self._reserve_bytes = max(reserve_bytes, 1 << 20)
        self._buffer: sc.DataArray | None = None
        self._binned: sc.Variable | None = None  # bins over the pulse capacity; unused pulses are empty bins
        self.n_events = 0
        self._n_pulses = 0
        self._pulse_coords: dict[str, sc.Variable] = {}

    def append(self, chunk: sc.DataArray) -> sc.DataArray:
        """Append a chunk's pulses and events; returns the accumulation (a view).

        Cost: proportional to the chunk (amortised), not to what is already accumulated.

        Raises:
            AccumulationError: the chunk's event fields or pulse coordinates differ from the accumulation's.
        """
        events = flat_events(chunk)
        sizes = chunk.bins.size().values.astype(np.int64)
        n_new = events.sizes[EVENT_DIM]
        if self._buffer is None:
            self._buffer = self._reserve(events, n_new)
            self._pulse_coords = {
                name: _empty_like(coord, 0) for name, coord in chunk.coords.items() if coord.dims == (PULSE_DIM,)
            }
        self._check(chunk, events)
        if self.n_events + n_new > self._buffer.sizes[EVENT_DIM]:
            self._buffer = self._grow(self._buffer, self.n_events, 2 * (self.n_events + n_new))
            self._rebuild_pulses(self._binned.sizes[PULSE_DIM])  # same bounds over the new buffer
        _copy_into(self._buffer, events, self.n_events)
        self._write_pulses(chunk, sizes)
        self.n_events += n_new
        return self.accumulation()

    @property
    def n_pulses(self) -> int:
        """Pulses accumulated."""
        return self._n_pulses

    def accumulation(self) -> sc.DataArray:
        """The accumulated pulses as a chunk-shaped DataArray sharing the buffer (O(1): slices of views)."""
        p = self._n_pulses
        return sc.DataArray(
            self._binned[PULSE_DIM, :p],
            coords={name: coord[PULSE_DIM, :p] for name, coord in self._pulse_coords.items()},
        )

    def pulses_since(self, first: int) -> sc.DataArray:
        """Pulses ``[first, n_pulses)`` as a chunk-shaped DataArray whose bins hold exactly their events: a view of
        the buffer's events ``[begin of first, n_events)`` (no copy; later appends never change them), with bin
        bounds from 0, so that scipp's HDF5 writer writes these events only (a plain slice of :meth:`accumulation`
        would carry the whole buffer)."""
        p = self._n_pulses
        bounds = self._binned.bins.constituents
        begin = bounds["begin"].values[first:p]
        offset = int(begin[0]) if begin.size else self.n_events
        binned = sc.bins(
            begin=sc.array(dims=[PULSE_DIM], values=begin - offset, unit=None),
            end=sc.array(dims=[PULSE_DIM], values=bounds["end"].values[first:p] - offset, unit=None),
            dim=EVENT_DIM,
            data=self._buffer[EVENT_DIM, offset : self.n_events],
        )
        return sc.DataArray(
            binned, coords={name: coord[PULSE_DIM, first:p] for name, coord in self._pulse_coords.items()}
        )

    def _reserve(self, events: sc.DataArray, n_new: int) -> sc.DataArray:
        per_event = sum(_itemsize(var) for var in (events.data, *events.coords.values(), *events.masks.values()))
        capacity = max(n_new, self._reserve_bytes // max(per_event, 1))
        while True:
            try:
                return _empty_like(events, capacity)
            except MemoryError:
                if capacity <= n_new:
                    raise
                capacity = max(n_new, capacity // 2)

    @staticmethod
    def _grow(buffer: sc.DataArray, used: int, capacity: int) -> sc.DataArray:
        grown = _empty_like(buffer, capacity)
        _copy_into(grown, buffer[EVENT_DIM, :used], 0)
        return grown

    def _check(self, chunk: sc.DataArray, events: sc.DataArray) -> None:
        buffer = self._buffer
        fields = {"data": events.data, **events.coords, **{f"mask {k}": v for k, v in events.masks.items()}}
        have = {"data": buffer.data, **buffer.coords, **{f"mask {k}": v for k, v in buffer.masks.items()}}
        pulse_coords = {name for name, coord in chunk.coords.items() if coord.dims == (PULSE_DIM,)}
        if fields.keys() != have.keys() or pulse_coords != self._pulse_coords.keys():
            raise AccumulationError(
                f"cannot Add the processed chunk: its event fields {sorted(fields)} and pulse coordinates "
                f"{sorted(pulse_coords)} differ from the accumulation's {sorted(have)} and {sorted(self._pulse_coords)}"
            )
        for name, var in fields.items():
            if var.dtype != have[name].dtype or var.unit != have[name].unit:
                raise AccumulationError(
                    f"cannot Add the processed chunk: event field '{name}' is {var.dtype} [{var.unit}], "
                    f"the accumulation's is {have[name].dtype} [{have[name].unit}]"
                )

    def _write_pulses(self, chunk: sc.DataArray, sizes: np.ndarray) -> None:
        """Write the chunk's bin bounds and pulse coordinates after the accumulated pulses."""
        p, k = self._n_pulses, sizes.size
        capacity = 0 if self._binned is None else self._binned.sizes[PULSE_DIM]
        if self._binned is None or p + k > capacity:
            self._rebuild_pulses(max(2 * (p + k), 64))
        ends = self.n_events + np.cumsum(sizes)
        bounds = self._binned.bins.constituents  # writable views of the bin bounds
        bounds["begin"].values[p : p + k] = ends - sizes
        bounds["end"].values[p : p + k] = ends
        for name, coord in self._pulse_coords.items():
            coord[PULSE_DIM, p : p + k] = chunk.coords[name]
        self._n_pulses += k

    def _rebuild_pulses(self, capacity: int) -> None:
        """New pulse arrays of ``capacity`` over the current buffer, the accumulated pulses copied in."""
        p = self._n_pulses
        begin = np.zeros(capacity, np.int64)
        end = np.zeros(capacity, np.int64)
        if self._binned is not None:
            old = self._binned.bins.constituents
            begin[:p] = old["begin"].values[:p]
            end[:p] = old["end"].values[:p]
        self._binned = sc.bins(
            begin=sc.array(dims=[PULSE_DIM], values=begin, unit=None),
            end=sc.array(dims=[PULSE_DIM], values=end, unit=None),
            dim=EVENT_DIM,
            data=self._buffer,
        )
        for name, coord in self._pulse_coords.items():
            grown = _empty_like(coord, capacity)
            grown[PULSE_DIM, :p] = coord[PULSE_DIM, :p]
            self._pulse_coords[name] = grown


def _itemsize(var: sc.Variable) -> int:
    size = np.dtype(str(var.dtype).replace("datetime64", "datetime64[ns]")).itemsize
    return size * (2 if var.variances is not None else 1)


def _empty_like(data: sc.DataArray | sc.Variable, length: int) -> sc.DataArray | sc.Variable:
    """An uninitialised copy of ``data``'s structure with the first (only) dimension resized to ``length``."""
    if isinstance(data, sc.Variable):
        dim = data.dims[0]
        return sc.empty(
            sizes={dim: length}, dtype=data.dtype, unit=data.unit, with_variances=data.variances is not None
        )
    return sc.DataArray(
        _empty_like(data.data, length),
        coords={name: _empty_like(coord, length) for name, coord in data.coords.items()},
        masks={name: _empty_like(mask, length) for name, mask in data.masks.items()},
    )


def _copy_into(target: sc.DataArray, source: sc.DataArray, offset: int) -> None:
    """Copy ``source``'s events into ``target`` at ``offset`` (through numpy views, no temporaries)."""
    n = source.sizes[EVENT_DIM]
    pairs = [(target.data, source.data)]
    pairs += [(target.coords[name], source.coords[name]) for name in source.coords]
    pairs += [(target.masks[name], source.masks[name]) for name in source.masks]
    for dst, src in pairs:
        dst.values[offset : offset + n] = src.values
        if src.variances is not None:
            dst.variances[offset : offset + n] = src.variances
