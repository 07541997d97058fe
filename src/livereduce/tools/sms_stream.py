"""The fake SMS's stream model: runs loaded from NeXus event files, the ADARA packets of a run, and the timeline
on which the runs follow each other.

A file is read with livereduce's validated reader (:class:`~livereduce.engines.scipp.nexus_events.EventFile`, so
ISIS and SNS layouts work and a malformed file is a one-line :class:`~livereduce.errors.SourceError`) and
encoded into memory as ADARA packets: one BANKED_EVENT v1 per pulse (all banks of a pulse in one bank section,
bank 1, COR set) [NP 5.2], 8 bytes per event plus 56 per pulse, and a BEAM_MONITOR_EVENT v1 per pulse if asked
[NP 5.4]. Events the reader drops (ids outside the file's pixel range) are not sent.

Runs follow each other on one timeline: the first keeps the file's pulse times, each later run is shifted to begin
1 s after the previous one ended. Runs are numbered from the first number (the ``--run-number``, else the first
file's run number, else 1) upwards; ADARA's run numbers are u32 [NP 5.8, 5.9] and a client reads 0 as no run
(``protocols/adara/client.py``), so the numbers stay within ``1..2**32-1`` (a file's run number outside it is
ignored; numbers past the top start again at 1). The timeline's clock advances with the wall clock times the speed
from the moment it is made (speed 0: it stands at the beginning). A timeline given a start time instead is the wall
clock itself (speed 1): the first run is shifted to begin then, and every pulse is stamped with the wall-clock time
at which it is due, as the SMS stamps a pulse when the beam makes it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipp as sc

from livereduce.engines.scipp.chunk import flat_events
from livereduce.engines.scipp.nexus_events import EventFile
from livereduce.engines.scipp.nexus_metadata import logs_between
from livereduce.instruments import resolve
from livereduce.protocols.adara import encode
from livereduce.protocols.adara.geometry import minimal_idf
from livereduce.protocols.adara.packets import (
    EPICS_EPOCH_OFFSET_S,
    HELLO_START_NOW,
    HELLO_START_OF_RUN,
    MAX_RUN_NUMBER,
    NS_PER_S,
)

RUN_EDGE_NS = 1_000_000
"""NEW_RUN is stamped 1 ms before a run's first pulse, END_RUN 1 ms after its last."""
RUN_GAP_NS = NS_PER_S
"""Time between a run's END_RUN and the next NEW_RUN."""
FRAME_100NS = 166_666
"""One 60 Hz frame in units of 100 ns (spacing of the fake monitor events)."""
LOAD_PULSES = 2000
"""Pulses read from a file at a time while loading."""
EPICS_EPOCH_NS = EPICS_EPOCH_OFFSET_S * NS_PER_S
"""The EPICS epoch (1990-01-01 UTC) in Unix ns [NP 3]."""

LogValue = int | float | str


@dataclass
class Run:
    """One run, its events encoded as ADARA packets.

    Attributes:
        pulse_ns: pulse times, Unix ns, int64 (P,), increasing.
        words: the packets of all pulses (BANKED_EVENT, then BEAM_MONITOR_EVENT if any), little-endian u32.
        ends: byte end of each pulse's packets in ``words``, int64 (P,).
        headers: word index of every packet header in ``words`` (to restamp a shifted run), int64.
        logs: (Unix ns, log name, value), sorted by time.
        events: events of the run.
        charge_pc: proton charge of the run in pC (after rounding to the protocol's 10 pC units).
        pixels: (first, last) pixel id the run may contain.
        number: run number from the file (0: none).
        title: run title ("" if none).
        proposal: proposal / experiment identifier ("" if none).
        instrument: instrument name from the file ("" if none).
    """

    pulse_ns: np.ndarray
    words: np.ndarray
    ends: np.ndarray
    headers: np.ndarray
    logs: list[tuple[int, str, LogValue]]
    events: int
    charge_pc: float
    pixels: tuple[int, int]
    number: int = 0
    title: str = ""
    proposal: str = ""
    instrument: str = ""

    def starts(self) -> np.ndarray:
        """Byte start of each pulse's packets."""
        return np.concatenate([[0], self.ends[:-1]]).astype(np.int64)


def make_run(
    pulse_ns: np.ndarray,
    event_id: np.ndarray,
    tof_us: np.ndarray,
    event_index: np.ndarray,
    *,
    charge_pc: np.ndarray | None = None,
    logs: Sequence[tuple[int, str, LogValue]] = (),
    monitor_events: int = 0,
    pixels: tuple[int, int] | None = None,
) -> Run:
    """Encode events binned by pulse as one BANKED_EVENT v1 packet per pulse (bank 1, COR set).

    Args:
        pulse_ns: pulse times, Unix ns, (P,), increasing.
        event_id: pixel of each event, (N,), 0 <= id < 2**32.
        tof_us: time of flight of each event in µs, (N,); sent in units of 100 ns (rounded, at least 0).
        event_index: first event of each pulse, (P,), non-decreasing.
        charge_pc: charge of each pulse in pC (sent in units of 10 pC, rounded), or None for 0.
        logs: log values (Unix ns, name, value).
        monitor_events: events of monitor 1 per pulse (evenly spaced in a 60 Hz frame); 0 for none.
        pixels: (first, last) pixel id for the geometry; default the events' range.

    Raises:
        ValueError: inconsistent lengths, or pixel ids outside 0..2**32-1.
    """
    pulse_ns = np.asarray(pulse_ns, np.int64)
    n_pulses, n_events = pulse_ns.size, len(event_id)
    begin = np.asarray(event_index, np.int64)
    if begin.size != n_pulses or len(tof_us) != n_events:
        raise ValueError("make_run: pulse and event arrays differ in length")
    sizes = np.diff(np.append(begin, n_events)) if n_pulses else np.zeros(0, np.int64)
    if np.any(sizes < 0) or (n_pulses and begin[0] != 0):
        raise ValueError("make_run: event_index must start at 0 and be non-decreasing")
    ids = np.asarray(event_id)
    if n_events and (int(ids.min()) < 0 or int(ids.max()) > 0xFFFFFFFF):
        raise ValueError("make_run: pixel ids must be within 0..2**32-1")
    charge = np.zeros(n_pulses) if charge_pc is None else np.asarray(charge_pc, np.float64)
    charge_units = np.clip(np.rint(charge / 10.0), 0, 0xFFFFFFFF).astype(np.uint32)
    with_events = np.flatnonzero(sizes)
    words, ends = encode.banked_events(
        pulse_ns,
        charge=charge_units,
        flags=np.zeros(n_pulses, np.uint32),
        section_pulse=with_events,
        section_bank=np.ones(with_events.size, np.uint32),
        section_count=sizes[with_events],
        tof=np.clip(np.rint(np.asarray(tof_us, np.float64) * 10.0), 0, 0xFFFFFFFF).astype(np.uint32),
        pixel=ids.astype(np.uint32),
    )
    headers = np.concatenate([[0], ends[:-1]]).astype(np.int64) // 4
    if monitor_events and n_pulses:
        words, ends, headers = _with_monitors(words, ends, pulse_ns, charge_units, monitor_events)
    if pixels is None:
        pixels = (int(ids.min()), int(ids.max())) if n_events else (0, 0)
    return Run(
        pulse_ns,
        words,
        ends,
        headers,
        sorted(logs, key=lambda entry: entry[0]),
        n_events,
        float(charge_units.sum()) * 10.0,
        pixels,
    )


def _with_monitors(
    words: np.ndarray, ends: np.ndarray, pulse_ns: np.ndarray, charge: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert one BEAM_MONITOR_EVENT (monitor 1, ``count`` events) after each pulse's BANKED_EVENT."""
    tofs = ((np.arange(count) + 0.5) * FRAME_100NS / count).astype(np.int64)
    template = np.frombuffer(encode.beam_monitor(int(pulse_ns[0]), {1: tofs}), "<u4").copy()
    size = template.size
    n = pulse_ns.size
    monitors = np.tile(template, (n, 1))
    seconds, nanoseconds = np.divmod(pulse_ns - EPICS_EPOCH_NS, NS_PER_S)
    monitors[:, 2], monitors[:, 3], monitors[:, 4] = seconds, nanoseconds, charge
    banked_end = ends // 4
    monitor_at = banked_end + np.arange(n) * size  # word where each pulse's monitor packet starts
    out = np.empty(words.size + n * size, "<u4")
    is_monitor = np.zeros(out.size, bool)
    is_monitor[(monitor_at[:, None] + np.arange(size)).ravel()] = True
    out[is_monitor] = monitors.ravel()
    out[~is_monitor] = words
    new_ends = (banked_end + (np.arange(n) + 1) * size) * 4
    banked_at = np.concatenate([[0], banked_end[:-1]]) + np.arange(n) * size
    return out, new_ends, np.sort(np.concatenate([banked_at, monitor_at]))


def load_run(path: Path, *, pulse_charge_pc: float = 0.0, monitor_events: int = 0) -> Run:
    """Read a NeXus event file (ISIS or SNS layout) with :class:`EventFile` and encode it.

    Args:
        path: the file.
        pulse_charge_pc: charge of each pulse in pC when the file has no ``proton_charge`` log.
        monitor_events: see :func:`make_run`.

    Raises:
        SourceError: the file cannot be read (the reader's one-line message naming the file).
    """
    ids, tofs, sizes = [np.empty(0, np.int32)], [np.empty(0, np.float32)], [np.empty(0, np.int64)]
    with EventFile(path) as file:
        for chunk, _ in file.chunks(LOAD_PULSES):
            events = flat_events(chunk)
            ids.append(events.coords["event_id"].values.copy())
            tofs.append(events.coords["event_time_offset"].values.copy())
            sizes.append(chunk.bins.size().values.astype(np.int64))
        times = file.pulse_times.view(np.int64)
        charge = file.proton_charge if file.proton_charge is not None else np.full(times.size, pulse_charge_pc)
        logs = [
            entry
            for name, series in logs_between(file.logs, file.pulse_times).items()
            for entry in _log_entries(name, series)
        ]
        counts = np.concatenate(sizes)
        run = make_run(
            times,
            np.concatenate(ids),
            np.concatenate(tofs),
            np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
            charge_pc=charge,
            logs=logs,
            monitor_events=monitor_events,
            pixels=file.pixel_range,
        )
        return replace(
            run,
            number=file.metadata.run_number,
            title=file.title,
            proposal=file.experiment_identifier,
            instrument=file.metadata.instrument_name,
        )


def _log_entries(name: str, series: sc.DataArray) -> list[tuple[int, str, LogValue]]:
    """A time-series log as (Unix ns, name, value); logs that are not 1-D numbers or strings are skipped."""
    if series.ndim != 1 or "time" not in series.coords:
        return []
    times = series.coords["time"].values.astype("datetime64[ns]").astype(np.int64)
    values = series.values
    if values.dtype.kind == "f":
        convert: Callable[[object], LogValue] = float
    elif values.dtype.kind in "iub" and (values.size == 0 or (values.min() >= 0 and values.max() <= 0xFFFFFFFF)):
        convert = int
    elif values.dtype.kind in "iu":
        convert = float
    elif values.dtype.kind in "OUS":
        convert = str
    else:
        return []
    return [(int(t), name, convert(v)) for t, v in zip(times, values, strict=True)]


@dataclass
class Stream:
    """What the fake SMS serves: the runs and the instrument."""

    runs: list[Run]
    instrument: str
    short_name: str
    idf: str
    variables: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Log name -> (pv id, pv type), one device for all logs."""

    @classmethod
    def of(cls, runs: list[Run], instrument: str | None = None, *, monitors: bool = False) -> Stream:
        """The stream of ``runs``: instrument name (``instrument``, else the first run's, else ``FAKE``), a
        minimal IDF covering every run's pixels, one process variable per log name."""
        name = instrument or next((run.instrument for run in runs if run.instrument), "") or "FAKE"
        first = min(run.pixels[0] for run in runs)
        last = max(run.pixels[1] for run in runs)
        kinds: dict[str, str] = {}
        for run in runs:
            for _, log, value in run.logs:
                kind = "string" if isinstance(value, str) else "double" if isinstance(value, float) else "integer"
                kinds[log] = kind if kinds.get(log, kind) == kind else "string"
        variables = {log: (pv_id, _PV_TYPES[kind]) for pv_id, (log, kind) in enumerate(sorted(kinds.items()), 1)}
        idf = minimal_idf(name, first, last, monitors=(-1,) if monitors else ())
        return cls(runs, name, resolve(name).short_name, idf, variables)


_PV_TYPES = {"string": "string", "double": "double", "integer": "unsigned integer"}


@dataclass(frozen=True)
class Placed:
    """A run on the timeline: shifted in time and numbered."""

    run: Run
    number: int
    shift_ns: int

    @property
    def first_ns(self) -> int:
        return int(self.run.pulse_ns[0]) + self.shift_ns if self.run.pulse_ns.size else self.start_ns + RUN_EDGE_NS

    @property
    def start_ns(self) -> int:
        """Time of NEW_RUN."""
        return (int(self.run.pulse_ns[0]) if self.run.pulse_ns.size else 0) + self.shift_ns - RUN_EDGE_NS

    @property
    def end_ns(self) -> int:
        """Time of END_RUN."""
        last = int(self.run.pulse_ns[-1]) if self.run.pulse_ns.size else 0
        return last + self.shift_ns + RUN_EDGE_NS

    def pulse_ns(self, i: int) -> int:
        return int(self.run.pulse_ns[i]) + self.shift_ns


def next_run_number(first: int, k: int) -> int:
    """The number of the ``k``-th run (from 0) of a timeline that starts at run ``first``: ``first + k`` within
    ``1..MAX_RUN_NUMBER``, starting again at 1 past the top; ``first`` outside that range (0: none) counts as 1."""
    start = first if 1 <= first <= MAX_RUN_NUMBER else 1
    return (start - 1 + k) % MAX_RUN_NUMBER + 1


class Timeline:
    """The runs one after another (``loops`` times the list; 0: forever), and the stream's clock.

    ``start_ns`` (Unix ns; None: the first run keeps its files' times): the first run's NEW_RUN is at that time and
    the clock is the wall clock (``time.time_ns()``; ``speed`` must be 1).

    Raises:
        ValueError: ``start_ns`` with a speed other than 1.
    """

    def __init__(
        self,
        runs: list[Run],
        *,
        loops: int,
        speed: float,
        first_number: int | None = None,
        start_ns: int | None = None,
    ) -> None:
        if start_ns is not None and speed != 1:
            raise ValueError(f"a timeline on the wall clock runs at speed 1, not {speed:g}")
        self.runs = runs
        self.loops = loops
        self.speed = speed
        self.first_number = first_number or next_run_number(runs[0].number, 0)
        self.start_ns = start_ns
        self._placed: list[Placed] = []
        self._lock = threading.Lock()
        self.origin_ns = self.at(0).start_ns if self.at(0) else 0
        self._started = time.monotonic()

    def at(self, k: int) -> Placed | None:
        """Run ``k`` of the timeline, or None past its end."""
        if self.loops and k >= self.loops * len(self.runs):
            return None
        with self._lock:
            while len(self._placed) <= k:
                n = len(self._placed)
                run = self.runs[n % len(self.runs)]
                first = int(run.pulse_ns[0]) if run.pulse_ns.size else 0
                begin = self._placed[-1].end_ns + RUN_GAP_NS if n else self.start_ns  # NEW_RUN; None: unshifted
                shift = 0 if begin is None else begin - (first - RUN_EDGE_NS)
                self._placed.append(Placed(run, next_run_number(self.first_number, n), shift))
            return self._placed[k]

    def now_ns(self) -> int:
        """The stream's current time (Unix ns): the origin advanced by the wall clock times ``speed``, or the wall
        clock itself for a timeline given a start time."""
        if self.start_ns is not None:
            return time.time_ns()
        return self.origin_ns + int((time.monotonic() - self._started) * self.speed * NS_PER_S)

    def current(self, now: int) -> int:
        """Index of the run in progress at ``now``, else of the next one (past the end: the count of runs)."""
        for k in itertools.count():
            placed = self.at(k)
            if placed is None or now <= placed.end_ns:
                return k
        raise AssertionError("unreachable")

    def plan(self, requested: int, now: int, eof_every: int) -> tuple[int, int, bool]:
        """Where a client starts: (run, first pulse, whether to send the run's NEW_RUN) [NP 5.12].

        ``requested`` 0: from ``now``; 1: the current run from its start (between runs: the next run); a time
        (EPICS s): from the chunk-file boundary at or before it in the run that holds it (the SMS keeps its
        history: a client resuming at a time of a run that has ended since gets the rest of that run, its
        END_RUN, and what followed), clamped to that run's start. At speed 0 the clock stands at the beginning (0
        and 1 get everything) and the whole timeline counts as history for a time.
        """
        asked = (requested + EPICS_EPOCH_OFFSET_S) * NS_PER_S
        timed = requested not in (HELLO_START_NOW, HELLO_START_OF_RUN)
        k = self.current(asked if timed and (self.speed <= 0 or asked < now) else now)
        placed = self.at(k)
        if placed is None:
            return k, 0, False
        if timed and self.speed <= 0:  # the whole timeline is history: serve from the boundary before the time
            now = max(now, asked + 1)
        if requested == HELLO_START_OF_RUN or now <= placed.start_ns:
            return k, 0, True
        if requested == HELLO_START_NOW or asked >= now:
            return k, int(np.searchsorted(placed.run.pulse_ns, now - placed.shift_ns, "right")), False
        if asked <= placed.start_ns:
            return k, 0, True
        pulse = int(np.searchsorted(placed.run.pulse_ns, asked - placed.shift_ns))
        boundary = (pulse // eof_every) * eof_every
        return k, boundary, boundary == 0
