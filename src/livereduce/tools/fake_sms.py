"""``livereduce-fake-sms``: a fake SNS Stream Management Service serving NeXus event files as an ADARA stream.

Each file is one run (``--loops`` repeats the list). At start the files are read (with livereduce's
``FileEventDataListener``, so ISIS and SNS layouts work) and encoded into memory as ADARA packets, 8 bytes
per event plus 56 per pulse. Runs follow each other on one timeline: the first keeps the file's pulse times,
each later run is shifted to begin 1 s after the previous one ended. The timeline advances with the wall clock
times ``--speed`` from the moment the server starts (``--speed 0``: it stands at the beginning, and every client
gets everything as fast as it reads).

A client connects to ``--host:--port`` (default 127.0.0.1:31415; port 0 picks a free one, printed) and sends
CLIENT_HELLO v0 or v1 [NP 5.12, 5.13]; then, as the SMS does [NP 5 intro]:

* prologue: RUN_STATUS STATE (the current run, or none), GEOMETRY (a minimal IDF covering the files' pixel
  ids), BEAMLINE_INFO, DEVICE_DESC and VAR_VALUEs (the files' ``NXlog`` values in force), RUN_INFO if in a run;
* where the hello asks: requested start 1: the current run from its beginning (between runs: the next run);
  0: from now; a time: from the last chunk-file boundary before it (every ``--eof-every`` pulses), never before
  the current run's start (the SMS rounds back and clamps [NP 5.12]);
* per run: RUN_STATUS NEW_RUN, RUN_INFO, one BANKED_EVENT v1 per pulse (the file's pulse times, its proton
  charge or ``--pulse-charge``; all banks of a pulse in one bank section, COR set), VAR_VALUE at each log change,
  every ``--eof-every`` pulses RUN_EOF, SYNC, RUN_BOF and the repeated prologue, then RUN_STATUS END_RUN;
* HEARTBEAT whenever nothing was sent for ``--heartbeat`` seconds, also after the last run.

Fault injection: ``--drop-after N`` (the first connection breaks off in the middle of the packet after N pulses),
``--corrupt N`` (N malformed packets of different kinds spread over each connection's first run; each must be
dropped whole by the client), ``--pause-at P[:Q]`` (pause annotation before pulse P of each run, resume before
Q; the paused pulses are sent unless the hello (v1) asks for no pause data), ``--monitor-events N`` (a
BEAM_MONITOR_EVENT with N events of monitor 1 per pulse).

Usage: ``livereduce-fake-sms FILE [FILE ...] [--port 0] [--speed 1]`` (or ``python3 -m livereduce.tools.fake_sms``).
"""

from __future__ import annotations

import argparse
import itertools
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import numpy as np
import scipp as sc

from livereduce.protocols.adara import encode
from livereduce.protocols.adara.decode import PacketError, decode_client_hello
from livereduce.protocols.adara.geometry import minimal_idf
from livereduce.protocols.adara.packets import (
    EPICS_EPOCH_OFFSET_S,
    HEADER_BYTES,
    HELLO_START_NOW,
    HELLO_START_OF_RUN,
    NS_PER_S,
    AnnotationType,
    ClientFlags,
    PacketType,
    RunStatusCode,
    format_word,
    parse_header,
)

DEFAULT_PORT = 31415
"""The SMS's port (``livestream.service``) [impl]."""
DEVICE_ID = 8192
"""Device id of the logs' device: ids below 8192 are reserved for ADARA's own status devices [NP 6]."""
HELLO_TIMEOUT_S = 30.0
"""A client that sends no hello within this is dropped, as the reference SMS does [impl]."""
MAX_CLIENTS = 16
RUN_EDGE_NS = 1_000_000
"""NEW_RUN is stamped 1 ms before a run's first pulse, END_RUN 1 ms after its last."""
RUN_GAP_NS = NS_PER_S
"""Time between a run's END_RUN and the next NEW_RUN."""
FRAME_100NS = 166_666
"""One 60 Hz frame in units of 100 ns (spacing of the fake monitor events)."""
LOAD_PULSES = 2000
"""Pulses read from a file at a time while loading."""
_EPICS_NS = EPICS_EPOCH_OFFSET_S * NS_PER_S

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
    seconds, nanoseconds = np.divmod(pulse_ns - _EPICS_NS, NS_PER_S)
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
    """Read a NeXus event file (ISIS or SNS layout) with ``FileEventDataListener`` and encode it.

    Args:
        path: the file.
        pulse_charge_pc: charge of each pulse in pC when the file has no ``proton_charge`` log.
        monitor_events: see :func:`make_run`.

    Raises:
        SourceError: the file cannot be read (the listener's message).
    """
    from livereduce.config import Config  # noqa: PLC0415 - the daemon's modules only when files are loaded
    from livereduce.engines.scipp.chunk import flat_events, metadata_of  # noqa: PLC0415
    from livereduce.engines.scipp.listeners.file import FileEventDataListener  # noqa: PLC0415

    config = Config.model_validate(
        {"filename": str(path), "replay_speed": 0, "replay_chunk_pulses": LOAD_PULSES, "source_buffer_mb": 1 << 14}
    )
    listener = FileEventDataListener(config)
    listener.connect()
    try:
        listener.start("from_start_of_run")
        pieces: list[tuple[np.ndarray, ...]] = []
        logs: dict[tuple[int, str], LogValue] = {}
        metadata = None
        while True:
            extracted = listener.extract()
            chunk = extracted.chunk
            metadata = metadata_of(chunk)
            events = flat_events(chunk)
            times = chunk.coords["event_time_zero"].values.astype(np.int64)
            charge = (
                chunk.coords["proton_charge"].values
                if "proton_charge" in chunk.coords
                else np.full(times.size, pulse_charge_pc)
            )
            pieces.append(
                (
                    times,
                    events.coords["event_id"].values.copy(),
                    events.coords["event_time_offset"].values.copy(),
                    chunk.bins.size().values.astype(np.int64),
                    np.asarray(charge, np.float64),
                )
            )
            for name, log in metadata.logs.items():
                logs.update(_log_entries(name, log))
            if extracted.ended:
                break
        pixels = listener.pixel_range
    finally:
        listener.disconnect()
    times, ids, tofs, sizes, charges = (np.concatenate(parts) for parts in zip(*pieces, strict=True))
    index = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    entries = [(t, name, value) for (t, name), value in logs.items()]
    run = make_run(
        times, ids, tofs, index, charge_pc=charges, logs=entries, monitor_events=monitor_events, pixels=pixels
    )
    title, proposal = _title_and_proposal(path)
    return replace(
        run,
        number=metadata.run_number if metadata else 0,
        title=title,
        proposal=proposal,
        instrument=metadata.instrument_name if metadata else "",
    )


def _log_entries(name: str, log: sc.DataArray) -> dict[tuple[int, str], LogValue]:
    """A time-series log as {(Unix ns, name): value}; logs that are not 1-D numbers or strings are skipped."""
    if log.ndim != 1 or "time" not in log.coords:
        return {}
    times = log.coords["time"].values.astype("datetime64[ns]").astype(np.int64)
    values = log.values
    if values.dtype.kind == "f":
        convert: Callable[[object], LogValue] = float
    elif values.dtype.kind in "iub" and (values.size == 0 or (values.min() >= 0 and values.max() <= 0xFFFFFFFF)):
        convert = int
    elif values.dtype.kind in "iu":
        convert = float
    elif values.dtype.kind in "OUS":
        convert = str
    else:
        return {}
    return {(int(t), name): convert(v) for t, v in zip(times, values, strict=True)}


def _title_and_proposal(path: Path) -> tuple[str, str]:
    """``title`` and ``experiment_identifier`` of the file's first NXentry ("" where absent)."""
    import h5py  # noqa: PLC0415

    with h5py.File(path, "r") as file:
        for group in file.values():
            if isinstance(group, h5py.Group) and _text(group.attrs.get("NX_class", b"")) == "NXentry":
                return _text(_dataset_value(group, "title")), _text(_dataset_value(group, "experiment_identifier"))
    return "", ""


def _dataset_value(group: object, key: str) -> object:
    import h5py  # noqa: PLC0415

    item = group.get(key) if isinstance(group, h5py.Group) else None
    if not isinstance(item, h5py.Dataset):
        return ""
    value = item[()]
    return value.ravel()[0] if isinstance(value, np.ndarray) and value.size else value


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | np.bytes_) else str(value)


# --- the stream ---------------------------------------------------------------------------------------------
@dataclass
class Options:
    """How the fake SMS serves (the command-line options)."""

    speed: float = 1.0
    loops: int = 1
    eof_every: int = 600
    heartbeat_s: float = 1.0
    run_number: int | None = None
    drop_after: int | None = None
    corrupt: int = 0
    pause: tuple[int, int] | None = None
    instrument: str | None = None


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
        from livereduce.instruments import resolve  # noqa: PLC0415

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


class Timeline:
    """The runs one after another (``loops`` times the list; 0: forever), and the stream's clock."""

    def __init__(self, runs: list[Run], options: Options) -> None:
        self.runs = runs
        self.loops = options.loops
        self.speed = options.speed
        self._first_number = options.run_number or runs[0].number or 1
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
                shift = 0 if n == 0 else self._placed[-1].end_ns + RUN_GAP_NS - (first - RUN_EDGE_NS)
                self._placed.append(Placed(run, self._first_number + n, shift))
            return self._placed[k]

    def now_ns(self) -> int:
        """The stream's current time (Unix ns): the origin advanced by the wall clock times ``speed``."""
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
        (EPICS s): from the chunk-file boundary at or before it, clamped to the current run's start. At speed 0
        the clock stands at the beginning (0 and 1 get everything) and the whole timeline counts as history for
        a time.
        """
        asked = (requested + EPICS_EPOCH_OFFSET_S) * NS_PER_S
        timed = requested not in (HELLO_START_NOW, HELLO_START_OF_RUN)
        k = self.current(asked if timed and self.speed <= 0 else now)
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


class ClientGone(Exception):
    """The client closed the connection, or the server is stopping."""


class Session:
    """One client connection: hello, prologue, runs, heartbeats."""

    def __init__(self, server: FakeSms, sock: socket.socket, peer: str, first: bool) -> None:
        self.server = server
        self.stream = server.stream
        self.options = server.options
        self.timeline = server.timeline
        self.sock = sock
        self.peer = peer
        self.first = first
        self.pulses_sent = 0
        self.no_pause_data = False
        self._last_send = time.monotonic()
        self._logs_in_force: dict[str, tuple[int, LogValue]] = {}
        self._run_info = b""

    # --- sending ------------------------------------------------------------------------------------------
    def send(self, data: bytes | memoryview) -> None:
        if self.server.stopping.is_set():
            raise ClientGone("server stopping")
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise ClientGone(f"connection lost ({err.strerror or err})") from None
        self._last_send = time.monotonic()

    def wait_until(self, stamp_ns: int) -> None:
        """Wait until the stream's clock reaches ``stamp_ns`` (nothing to wait at speed 0), sending heartbeats."""
        if self.options.speed <= 0:
            return
        while (now := self.timeline.now_ns()) < stamp_ns:
            wall = (stamp_ns - now) / self.options.speed / NS_PER_S
            beat = self._last_send + self.options.heartbeat_s - time.monotonic()
            if beat <= 0:
                self.send(encode.heartbeat(now))
                continue
            if self.server.stopping.wait(min(wall, beat)):
                raise ClientGone("server stopping")

    def idle(self) -> None:
        """After the last run: heartbeats until the client goes away or the server stops."""
        while not self.server.stopping.wait(self.options.heartbeat_s):
            self.send(encode.heartbeat(max(self.timeline.now_ns(), self.timeline.origin_ns)))
        raise ClientGone("server stopping")

    # --- the conversation ---------------------------------------------------------------------------------
    def hello(self) -> tuple[int, int | None]:
        """Read the CLIENT_HELLO (the only packet a client sends) [NP 5.12].

        Raises:
            ClientGone: no valid hello within :data:`HELLO_TIMEOUT_S`.
        """
        self.sock.settimeout(HELLO_TIMEOUT_S)
        try:
            data = self._read(HEADER_BYTES)
            header = parse_header(data)
            if header.packet_type != PacketType.CLIENT_HELLO or header.payload_len not in (4, 8):
                raise ClientGone(
                    f"expected CLIENT_HELLO, got type 0x{header.packet_type:04X} with {header.payload_len} bytes"
                )
            return decode_client_hello(header, self._read(header.payload_len))
        except (TimeoutError, PacketError) as err:
            raise ClientGone(f"no valid hello ({err})") from None
        finally:
            self.sock.settimeout(None)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            piece = self.sock.recv(n - len(data))
            if not piece:
                raise ClientGone("closed before sending a hello")
            data += piece
        return data

    def run(self) -> None:
        start, flags = self.hello()
        self.no_pause_data = flags == ClientFlags.NO_PAUSE_DATA
        now = self.timeline.now_ns()
        k, pulse, fresh = self.timeline.plan(start, now, self.options.eof_every)
        current = self.timeline.at(self.timeline.current(now))
        position = int(np.searchsorted(current.run.pulse_ns, now - current.shift_ns, "right")) if current else 0
        self.server.say(
            f"client {self.peer}: hello {'v0' if flags is None else f'v1 flags {flags}'} start {start} at pulse "
            f"{position} of run index {self.timeline.current(now)}: serving run index {k} from pulse {pulse}"
            f"{' (from NEW_RUN)' if fresh else ''}"
        )
        placed = self.timeline.at(k)
        self.prologue(placed if placed and (not fresh or now > placed.start_ns) else None, now)
        corrupt = self.options.corrupt
        for index in itertools.count(k):
            placed = self.timeline.at(index)
            if placed is None:
                break
            self.stream_run(placed, pulse if index == k else 0, fresh or index > k, corrupt)
            corrupt = 0
        self.idle()

    def prologue(self, placed: Placed | None, now: int) -> None:
        """State snapshot and the packets every client needs first [NP 5 intro]."""
        if placed is None:
            self.send(encode.run_status(0, 0, RunStatusCode.STATE, now))
        else:
            self.send(
                encode.run_status(
                    placed.number, placed.start_ns // NS_PER_S - EPICS_EPOCH_OFFSET_S, RunStatusCode.STATE, now
                )
            )
        self.send(self.setup(now, placed, until=now))

    def setup(self, stamp: int, placed: Placed | None, until: int) -> bytes:
        """GEOMETRY, BEAMLINE_INFO, DEVICE_DESC and the log values in force at ``until``, RUN_INFO in a run."""
        stream = self.stream
        packets = [
            encode.geometry(stream.idf, stamp),
            encode.beamline_info("BL-FAKE", stream.short_name, stream.instrument, stamp),
        ]
        if stream.variables:
            xml = encode.device_xml(
                "livereduce-fake-sms", [(pv, name, kind, "") for name, (pv, kind) in stream.variables.items()]
            )
            packets.append(encode.device_descriptor(DEVICE_ID, xml, stamp))
            if placed is not None:
                for name, (when, value) in self._in_force(placed, until).items():
                    packets.append(self._variable(name, value, when))
        if placed is not None:
            packets.append(encode.run_info(self._runinfo(placed), stamp))
        return b"".join(packets)

    def _in_force(self, placed: Placed, until: int) -> dict[str, tuple[int, LogValue]]:
        values: dict[str, tuple[int, LogValue]] = {}
        for when, name, value in placed.run.logs:
            if when + placed.shift_ns > until:
                break
            values[name] = (when + placed.shift_ns, value)
        return values

    def _variable(self, name: str, value: LogValue, when: int) -> bytes:
        pv_id, kind = self.stream.variables[name]
        if kind == "string":
            value = str(value)
        elif kind == "double":
            value = float(value)
        return encode.variable_value(DEVICE_ID, pv_id, value, max(when, _EPICS_NS))

    def _runinfo(self, placed: Placed) -> bytes:
        run = placed.run
        return encode.runinfo_xml(placed.number, proposal_id=run.proposal, run_title=run.title)

    def stream_run(self, placed: Placed, first: int, fresh: bool, corrupt: int) -> None:
        run, options = placed.run, self.options
        epics_start = placed.start_ns // NS_PER_S - EPICS_EPOCH_OFFSET_S
        n = run.pulse_ns.size
        if fresh:
            self.wait_until(placed.start_ns)
            self.send(encode.run_status(placed.number, epics_start, RunStatusCode.NEW_RUN, placed.start_ns))
            self.send(encode.run_info(self._runinfo(placed), placed.start_ns))
            self.send(self.values_at_start(placed))
        elif 0 < first < n and first % options.eof_every == 0:
            self.send(self.boundary(placed, first, epics_start, eof=False))
        extras = self.extras(placed, first, epics_start, corrupt)
        cuts = sorted(extras)
        starts = run.starts()
        position = first
        for cut in [*cuts, n]:
            if cut > position:
                self.pulses(placed, starts, position, cut)
            position = max(position, cut)
            for packet in extras.get(cut, ()):
                if callable(packet):
                    packet()
                else:
                    self.send(packet)
        self.wait_until(placed.end_ns)
        last = int(run.pulse_ns[-1]) if n else -1
        for when, name, value in run.logs:
            if when > last:
                self.send(self._variable(name, value, when + placed.shift_ns))
        self.send(encode.run_status(placed.number, epics_start, RunStatusCode.END_RUN, placed.end_ns))

    def values_at_start(self, placed: Placed) -> bytes:
        """The log values in force when the run begins (stamped when they changed)."""
        first = placed.first_ns
        return b"".join(
            self._variable(name, value, when) for name, (when, value) in self._in_force(placed, first - 1).items()
        )

    def boundary(self, placed: Placed, pulse: int, epics_start: int, *, eof: bool = True) -> bytes:
        """A chunk-file boundary inside a run: RUN_EOF, then the next file's SYNC, RUN_BOF, repeated prologue."""
        stamp = placed.pulse_ns(pulse) - 1000
        file_number = pulse // self.options.eof_every
        packets = []
        if eof:
            packets.append(
                encode.run_status(placed.number, epics_start, RunStatusCode.RUN_EOF, stamp, file_number=file_number)
            )
        packets += [
            encode.sync(stamp, comment=f"run {placed.number} file {file_number + 1}"),
            encode.run_status(placed.number, epics_start, RunStatusCode.RUN_BOF, stamp, file_number=file_number + 1),
            self.setup(stamp, placed, until=stamp),
        ]
        return b"".join(packets)

    def extras(self, placed: Placed, first: int, epics_start: int, corrupt: int) -> dict[int, list[object]]:
        """Packets (or actions) to send before pulse i, by i: log changes, chunk-file boundaries, pause and
        resume, corrupt packets, the drop."""
        run, options = placed.run, self.options
        n = run.pulse_ns.size
        extras: dict[int, list[object]] = {}
        for when, name, value in run.logs:
            pulse = int(np.searchsorted(run.pulse_ns, when))
            if first <= pulse < n and when >= run.pulse_ns[0]:
                extras.setdefault(pulse, []).append(self._variable(name, value, when + placed.shift_ns))
        for pulse in range(options.eof_every, n, options.eof_every):
            if pulse > first:
                extras.setdefault(pulse, []).append(self.boundary(placed, pulse, epics_start))
        if options.pause is not None:
            paused, resumed = options.pause
            for pulse, kind, word in (
                (paused, AnnotationType.PAUSE, "paused"),
                (resumed, AnnotationType.RESUME, "resumed"),
            ):
                if first <= pulse < n:
                    comment = f"Run {placed.number} {word}."
                    extras.setdefault(pulse, []).append(encode.annotation(kind, comment, placed.pulse_ns(pulse) - 1000))
        for j in range(corrupt):
            pulse = first + (j + 1) * (n - first) // (corrupt + 1)
            extras.setdefault(pulse, []).append(corrupt_packet(j, placed.pulse_ns(min(pulse, n - 1))))
        if self.first and options.drop_after is not None and first + options.drop_after < n:
            at = first + options.drop_after
            extras.setdefault(at, []).append(lambda: self.drop(placed, at))
        return extras

    def pulses(self, placed: Placed, starts: np.ndarray, begin: int, end: int) -> None:
        """Send pulses ``[begin, end)``: at once at speed 0, else each when the clock reaches its time."""
        if self.options.pause is not None and self.no_pause_data:
            paused, resumed = self.options.pause
            if begin < resumed and end > paused:
                for part in ((begin, min(end, paused)), (max(begin, resumed), end)):
                    if part[1] > part[0]:
                        self.pulses_unpaused(placed, starts, *part)
                return
        self.pulses_unpaused(placed, starts, begin, end)

    def pulses_unpaused(self, placed: Placed, starts: np.ndarray, begin: int, end: int) -> None:
        run = placed.run
        position = begin
        while position < end:
            if self.options.speed > 0:
                self.wait_until(placed.pulse_ns(position))
                due = int(np.searchsorted(run.pulse_ns, self.timeline.now_ns() - placed.shift_ns, "right"))
                stop = min(end, max(due, position + 1))
            else:
                stop = end
            self.send(self.packet_bytes(placed, int(starts[position]), int(run.ends[stop - 1])))
            self.pulses_sent += stop - position
            position = stop

    def packet_bytes(self, placed: Placed, begin: int, end: int) -> memoryview:
        """Bytes ``[begin, end)`` of the run's packets, their times shifted for a run placed later."""
        words = placed.run.words[begin // 4 : end // 4]
        if placed.shift_ns:
            words = words.copy()
            headers = placed.run.headers
            inside = headers[(headers >= begin // 4) & (headers < end // 4)] - begin // 4
            epics = (words[inside + 2].astype(np.int64) * NS_PER_S + words[inside + 3]) + placed.shift_ns
            words[inside + 2], words[inside + 3] = np.divmod(epics, NS_PER_S)
        return memoryview(words).cast("B")

    def drop(self, placed: Placed, pulse: int) -> None:
        """``--drop-after``: send half of the next pulse's first packet, then break the connection."""
        starts = placed.run.starts()
        begin, end = int(starts[pulse]), int(placed.run.ends[pulse])
        self.send(self.packet_bytes(placed, begin, end)[: max(HEADER_BYTES // 2, (end - begin) // 2)])
        raise ClientGone(f"dropped after {self.options.drop_after} pulses (--drop-after)")


def corrupt_packet(kind: int, stamp: int) -> bytes:
    """Malformed packet number ``kind`` (cycling through 10 kinds), each of which a client must drop whole
    without losing its place in the stream."""
    bad_xml = b"<runinfo><run_title>broken"
    makers: list[Callable[[], bytes]] = [
        lambda: encode.packet(0x7777, 0, bytes(8), stamp),  # unknown type
        lambda: encode.packet(PacketType.BANKED_EVENT, 9, bytes(16), stamp),  # unknown version
        lambda: encode.packet(PacketType.BANKED_EVENT, 1, bytes(16) + (b"\0" * 12) + b"\x05\0\0\0", stamp),  # banks
        lambda: encode.packet(
            PacketType.BANKED_EVENT, 1, bytes(28) + b"\x01\0\0\0" + b"\x01\0\0\0\xff\0\0\0" + bytes(8), stamp
        ),  # event count beyond the payload
        lambda: encode.packet(PacketType.VAR_VALUE_STRING, 0, bytes(12) + b"\x40\0\0\0" + b"abcd", stamp),
        lambda: encode.run_info(bad_xml, stamp),
        lambda: encode.packet(
            PacketType.DEVICE_DESC, 0, (DEVICE_ID + 1).to_bytes(4, "little") + b"\x04\0\0\0<de<", stamp
        ),
        lambda: encode.packet(PacketType.BEAM_MONITOR_EVENT, 1, bytes(16) + b"\x09\0\x40\0" + bytes(8), stamp),
        lambda: encode.packet(PacketType.RUN_STATUS, 1, bytes(8), stamp),  # too short
        lambda: _misaligned(stamp),  # payload length not a multiple of 4
    ]
    return makers[kind % len(makers)]()


def _misaligned(stamp: int) -> bytes:
    seconds, nanoseconds = encode.epics_time(stamp)
    return encode.HEADER.pack(5, format_word(0x7778, 0), seconds, nanoseconds) + b"12345"


class FakeSms:
    """The server: accepts clients on ``host:port`` and runs a :class:`Session` for each in a thread."""

    def __init__(self, stream: Stream, options: Options, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.stream = stream
        self.options = options
        self.timeline = Timeline(stream.runs, options)
        self.stopping = threading.Event()
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._connections = 0
        self._say_lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._say_lock:
            print(f"livereduce-fake-sms: {line}", flush=True)

    def serve(self) -> None:
        """Accept clients until :meth:`stop`."""
        while not self.stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            peer = f"{address[0]}:{address[1]}"
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                if len(self._threads) >= MAX_CLIENTS:
                    self.say(f"client {peer} refused: {MAX_CLIENTS} clients already")
                    sock.close()
                    continue
                first = self._connections == 0
                self._connections += 1
                self._sockets.add(sock)
                thread = threading.Thread(
                    target=self._session, args=(sock, peer, first), name=f"client {peer}", daemon=True
                )
                self._threads.append(thread)
            thread.start()
        self._listener.close()

    def _session(self, sock: socket.socket, peer: str, first: bool) -> None:
        self.say(f"client {peer} connected")
        try:
            Session(self, sock, peer, first).run()
        except ClientGone as gone:
            self.say(f"client {peer} gone: {gone}")
        except Exception as err:  # noqa: BLE001 - one client's failure must not end the server
            self.say(f"client {peer} failed: {type(err).__name__}: {err}")
        finally:
            with self._lock:
                self._sockets.discard(sock)
            sock.close()

    def start(self) -> threading.Thread:
        """Serve in a background thread (for tests in process)."""
        thread = threading.Thread(target=self.serve, name="fake SMS", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop accepting, end every session."""
        self.stopping.set()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)


def _pause(text: str) -> tuple[int, int]:
    first, _, last = text.partition(":")
    paused = int(first)
    resumed = int(last) if last else paused + 10
    if paused < 0 or resumed <= paused:
        raise argparse.ArgumentTypeError(f"--pause-at {text}: expected P or P:Q with 0 <= P < Q")
    return paused, resumed


def _positive(kind: type) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = kind(text)
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text}: expected a number >= 0")
        return value

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="livereduce-fake-sms",
        description="Serve NeXus event files as an ADARA live stream, like SNS's Stream Management Service.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="NeXus files with NXevent_data (ISIS or SNS layout)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default %(default)s; 0: any free)")
    parser.add_argument("--speed", type=_positive(float), default=1.0, help="timeline speed (0: as fast as possible)")
    parser.add_argument("--loops", type=_positive(int), default=1, help="times to serve the files (0: forever)")
    parser.add_argument("--eof-every", type=int, default=600, help="pulses per chunk file (RUN_EOF/RUN_BOF)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (> 0)")
    parser.add_argument("--run-number", type=int, help="number of the first run (default: the file's, else 1)")
    parser.add_argument("--pulse-charge", type=_positive(float), default=0.0, help="pC per pulse if a file has none")
    parser.add_argument("--instrument", help="instrument name (default: the file's)")
    parser.add_argument("--monitor-events", type=_positive(int), default=0, help="monitor 1 events per pulse")
    parser.add_argument("--drop-after", type=_positive(int), help="break the first connection after N pulses")
    parser.add_argument("--corrupt", type=_positive(int), default=0, help="malformed packets per connection")
    parser.add_argument("--pause-at", type=_pause, help="pause before pulse P, resume before Q (P or P:Q)")
    args = parser.parse_args(argv)
    if not args.heartbeat > 0:
        parser.error("--heartbeat must be > 0")
    if args.eof_every < 1:
        parser.error("--eof-every must be at least 1")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be within 0..65535")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``livereduce-fake-sms``; returns the exit code (0 after SIGTERM/SIGINT, 2 bad arguments, 3 bad file)."""
    args = parse_args(argv)
    from livereduce.errors import SourceError  # noqa: PLC0415

    try:
        runs = [
            load_run(path, pulse_charge_pc=args.pulse_charge, monitor_events=args.monitor_events) for path in args.files
        ]
    except SourceError as err:
        print(f"livereduce-fake-sms: {err}", file=sys.stderr, flush=True)
        return 3
    options = Options(
        speed=args.speed,
        loops=args.loops,
        eof_every=args.eof_every,
        heartbeat_s=args.heartbeat,
        run_number=args.run_number,
        drop_after=args.drop_after,
        corrupt=args.corrupt,
        pause=args.pause_at,
        instrument=args.instrument,
    )
    try:
        server = FakeSms(
            Stream.of(runs, args.instrument, monitors=args.monitor_events > 0), options, host=args.host, port=args.port
        )
    except OSError as err:
        print(f"livereduce-fake-sms: cannot listen on {args.host}:{args.port}: {err.strerror or err}", file=sys.stderr)
        return 3

    def stop(signum: int, _: FrameType | None) -> None:
        server.say(f"received {signal.Signals(signum).name}, stopping")
        server.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    events = sum(run.events for run in runs)
    pulses = sum(run.pulse_ns.size for run in runs)
    server.say(
        f"listening on {args.host}:{server.port}: {server.stream.instrument}, {len(runs)} file(s), {pulses} pulses, "
        f"{events} events, speed {args.speed:g}, loops {args.loops or 'forever'}"
    )
    server.serve()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
