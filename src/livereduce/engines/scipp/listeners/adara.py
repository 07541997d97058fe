"""``SNSLiveEventDataListener``: live data from SNS, read natively from the ADARA stream of the Stream Management
Service (SMS), as Mantid's listener of the same name reads it.

* ``address`` (``host:port``; default the instrument's, e.g. ``bl11a-daq1.sns.gov:31415`` for POWGEN);
  ``start`` (``from_start_of_run`` / ``now`` / a time), ``keep_paused_events``, ``source_buffer_mb``.
* :meth:`~SNSLiveEventDataListener.connect` opens the TCP connection (:class:`~livereduce.errors.SourceError`
  if it cannot); :meth:`~SNSLiveEventDataListener.start` sends the hello from the reader thread and waits up to
  10 s (Mantid's ``startupTimeout``) for the prologue's GEOMETRY, whose detector ids give the pixel range
  (:class:`SourceError` if none comes: the daemon retries). Both end promptly on
  :meth:`~SNSLiveEventDataListener.interrupt`.
* The reader thread, its buffer (``source_buffer_mb``, lossless back-pressure: the SMS buffers, as for Mantid),
  reconnects with back-off, counters and health are the shared core of network listeners
  (:class:`~livereduce.engines.scipp.listeners.buffered.BufferedSource`); this module keeps the ADARA session:
  the hello, framing, liveness by heartbeats (silence longer than several heartbeat intervals ends the
  connection), and turning segments into chunks. Packet semantics (start, runs, pause, replay after a
  reconnect, logs): :mod:`livereduce.protocols.adara.client`.
* :meth:`~SNSLiveEventDataListener.extract` hands over everything since the previous call as one NXevent_data
  chunk: events binned by pulse (``event_time_zero`` = the BANKED_EVENT header time, ``event_id`` the pixel id,
  ``event_time_offset`` µs), ``proton_charge`` (pC), ``pulse_flags`` and ``veto_flags`` per pulse, beam monitors
  and run metadata with Mantid's log names. Events of the special banks, events while paused and events of
  pixels outside the GEOMETRY's ids (capped at :data:`~livereduce.engines.scipp.chunk.MAX_PIXELS`) are dropped and
  counted in :attr:`Extracted.dropped`.
* **Position** (:attr:`Extracted.position`, what a checkpoint keeps): ``{"run_number": R, "last_pulse_ns": T}``, T
  the newest pulse time handed out so far (Unix ns, int: the BANKED_EVENT header time), R the run of the chunk that
  held it (int, 0 between runs); None until a pulse has been handed out (after a resume: the resumed position). A
  resume (``start(position, resume=...)``) asks the SMS for T's second; the SMS starts at the chunk-file boundary
  at or before it, and the pulses up to T it replays are dropped as ``already accumulated``; if the SMS serves
  another run than R, R ends with an empty ``EndRun`` chunk first (see :mod:`livereduce.protocols.adara.client`).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import scipp as sc

from livereduce.clock import Clock, SystemClock
from livereduce.config import Config
from livereduce.engines.scipp.chunk import (
    EVENT_DIM,
    MAX_PIXELS,
    PULSE_DIM,
    RunMetadata,
    capped_range,
    log_series,
    make_chunk,
    monitor_events,
    valid_events,
)
from livereduce.engines.scipp.listeners.base import (
    Extracted,
    Listener,
    RunStatus,
    SourceHealth,
    SourcePosition,
    StartPosition,
)
from livereduce.engines.scipp.listeners.buffered import POLL_S, BufferedSource
from livereduce.engines.scipp.listeners.sizing import buffer_bound
from livereduce.errors import ConfigError, SourceError
from livereduce.protocols.adara.client import ClientState, ResumePoint
from livereduce.protocols.adara.framing import Framer, FramingError
from livereduce.protocols.adara.packets import EPICS_EPOCH_OFFSET_S, HELLO_START_OF_RUN, MAX_RUN_NUMBER, NS_PER_S
from livereduce.protocols.adara.segments import EventArrays, LogValue, Segment, Transition

_log = logging.getLogger("livereduce.SNSLiveEventDataListener")

STARTUP_TIMEOUT_S = 10.0
"""Seconds :meth:`SNSLiveEventDataListener.start` waits for the GEOMETRY (Mantid's ``startupTimeout`` default)."""
CONNECT_TIMEOUT_S = 10.0
"""Seconds a TCP connection attempt may take."""
LIVENESS_BEATS = 5
"""A connection with no bytes for this many heartbeat intervals is dead. The SMS does not publish its
interval: it is estimated as the shortest gap between two heartbeats seen, and the timeout is kept within
:data:`LIVENESS_MIN_S` .. :data:`LIVENESS_MAX_S` (the maximum until a gap has been seen)."""
LIVENESS_MIN_S = 5.0
LIVENESS_MAX_S = 60.0
_HEARTBEATS = "heartbeats"
POSITION_KEYS = frozenset({"run_number", "last_pulse_ns"})
RESUMABLE_NS = (
    (EPICS_EPOCH_OFFSET_S + HELLO_START_OF_RUN + 1) * NS_PER_S,
    (EPICS_EPOCH_OFFSET_S + 2**32) * NS_PER_S,
)
"""Pulse times a hello can ask for (Unix ns, first inclusive, last exclusive): EPICS seconds in a u32, above 0
(now) and 1 (start of run) [NP 5.12]."""
FUTURE_SLACK_S = 300
"""A position's pulse may be at most this far after this host's clock (the SMS's may run ahead a little); one
further would drop every pulse until then as already accumulated."""


def _resuming(point: ResumePoint, asked: int) -> str:
    """How the start is logged after a resume (``asked``: the hello's EPICS second), e.g. ``resuming run 7 after
    its pulse at 2016-04-12T02:58:55.040000000 (1460429935040000000 ns), the hello asking for EPICS second
    829277135``."""
    seconds, ns = divmod(point.last_pulse_ns, NS_PER_S)
    when = datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat()
    return (
        f"resuming run {point.run_number} after its pulse at {when}.{ns:09d} ({point.last_pulse_ns} ns), the hello "
        f"asking for EPICS second {asked}"
    )


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6 address]:port`` for IPv6) -> (host, port).

    Raises:
        ConfigError: not ``host:port`` with a port in 1..65535.
    """
    host, _, port = address.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"address '{address}': expected host:port with a port in 1..65535 (e.g. bl11a-daq1:31415)")
    return host, int(port)


class SNSLiveEventDataListener(Listener):
    """The ADARA live stream of an SMS (see the module description).

    Raises:
        ConfigError: (constructor) no ``address`` and none known for the instrument, or not ``host:port``.
    """

    name = "SNSLiveEventDataListener"

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        address = config.address or (config.instrument_info().address if config.instrument else None)
        if not address:
            raise ConfigError(
                "listener SNSLiveEventDataListener needs the key 'address' (host:port of the SMS, e.g. "
                "bl11a-daq1.sns.gov:31415), or an SNS instrument that has one"
            )
        self.address = address
        self._host, self._port = parse_address(address)
        self.keep_paused_events = config.keep_paused_events
        self.startup_timeout_s = STARTUP_TIMEOUT_S
        self.liveness_min_s = LIVENESS_MIN_S
        self._feed = BufferedSource(
            self.name,
            address,
            "the SMS",
            bound=buffer_bound(config),
            clock=clock or SystemClock(),
            log=_log,
        )
        self._client: ClientState | None = None
        self._sock: socket.socket | None = None  # opened by connect(), handed to the reader thread
        self._range = (0, 0)
        self._position: SourcePosition | None = None  # after the last chunk handed out
        self._heartbeat_gap: float | None = None
        self._last_heartbeat: float | None = None

    # --- Listener interface -----------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the TCP connection to the SMS.

        Raises:
            SourceError: (recoverable) the connection cannot be made within 10 s, or :meth:`interrupt` was
                called; the message names the address.
        """
        self._sock = self._connect_tcp()
        self._feed.set_phase(f"connected to {self.address}")
        _log.info("Connected to the SMS at %s", self.address)

    def resume_refusal(self, position: SourcePosition) -> str | None:
        """None when ``position`` is ``{"run_number": R, "last_pulse_ns": T}`` (see the module description) with
        R a run number (int, 0..2**32-1) and T a pulse time a hello can ask for (int, Unix ns within
        :data:`RESUMABLE_NS`), at most :data:`FUTURE_SLACK_S` after this host's clock; else why not. Whether the
        SMS still serves run R shows only once it answers the hello (:meth:`start`)."""
        shown = repr(position)
        shown = shown if len(shown) <= 200 else f"{shown[:200]}..."
        if not isinstance(position, dict) or position.keys() != POSITION_KEYS:
            return f"position {shown} is not {{'run_number': R, 'last_pulse_ns': T}}"
        run, last = position["run_number"], position["last_pulse_ns"]
        if type(run) is not int or not 0 <= run <= MAX_RUN_NUMBER:
            return f"position {shown}: run_number is not an integer within 0..{MAX_RUN_NUMBER}"
        if type(last) is not int or not RESUMABLE_NS[0] <= last < RESUMABLE_NS[1]:
            return f"position {shown}: last_pulse_ns is not an integer within {RESUMABLE_NS[0]}..{RESUMABLE_NS[1] - 1}"
        ahead_s = last / NS_PER_S - self._feed.clock.time()
        if ahead_s > FUTURE_SLACK_S:
            return f"position {shown}: last_pulse_ns is {ahead_s:.0f} s after this host's clock"
        return None

    def start(self, position: StartPosition, resume: SourcePosition | None = None) -> None:
        """Send the hello from ``position``, or after ``resume`` (see the module description), and start reading;
        wait for the GEOMETRY (the pixel range).

        Raises:
            ValueError: ``resume`` is refused by :meth:`resume_refusal` (the caller's mistake).
            SourceError: (recoverable) no GEOMETRY with detector ids within 10 s, or interrupted.
        """
        point = None
        if resume is not None:
            if refusal := self.resume_refusal(resume):
                raise ValueError(f"SNSLiveEventDataListener cannot resume: {refusal}")
            point = ResumePoint(resume["run_number"], resume["last_pulse_ns"])
            self._position = dict(resume)
        client = ClientState(
            position, resume=point, keep_paused_events=self.keep_paused_events, allocate=scipp_event_arrays
        )
        self._client = client
        self._feed.start(self._read_forever)
        if not self._feed.wait_until(lambda: client.id_range is not None, self.startup_timeout_s):
            state = self.health().state
            interrupted = self._feed.stopping.is_set()
            self.disconnect()
            if interrupted:
                raise SourceError(f"waiting for the SMS at {self.address} interrupted", recoverable=True)
            raise SourceError(
                f"no GEOMETRY with detector ids from the SMS at {self.address} within {self.startup_timeout_s:g} s "
                f"({state})",
                recoverable=True,
            )
        with self._feed.lock:
            id_range, geometry, instrument = client.id_range, client.geometry, client.instrument
        self._range = id_range
        pixels = capped_range(*id_range)
        _log.info(
            "Instrument %s: detector ids %d..%d (%d declared) from the GEOMETRY%s; start %s",
            instrument or "(no BEAMLINE_INFO yet)",
            id_range[0],
            id_range[1],
            geometry.count if geometry else 0,
            "" if pixels == id_range else f"; pixels {pixels[0]}..{pixels[1]} (at most {MAX_PIXELS})",
            position if point is None else _resuming(point, client.requested_start()),
        )

    def extract(self) -> Extracted:
        """Everything received since the previous call (up to the next run transition), as a chunk.

        Raises:
            SourceError: (recoverable) the reader thread failed (a bug; its traceback is in the log).
        """
        client = self._client
        if client is None:
            raise SourceError("SNSLiveEventDataListener: extract() before start()")
        self._feed.check()
        with self._feed.lock:
            held = client.pending_bytes
            segment = client.take()
            metadata = SegmentMetadata.of(client, segment)
            self._feed.taken(held)
            more = client.pending_bytes > 0
        self._range = segment.id_range or self._range
        if segment.pulses:
            newest = int(np.frombuffer(segment.pulse_ns, np.int64).max())
            before = self._position["last_pulse_ns"] if self._position is not None else newest
            self._position = {"run_number": segment.run_number, "last_pulse_ns": max(before, newest)}
        result, invalid = extracted(segment, metadata, self._range)
        if invalid:
            self._feed.count("events_dropped", invalid)
        return dataclasses.replace(result, more_buffered=more, position=self._position)

    def interrupt(self) -> None:
        """End a connect, a wait for the GEOMETRY or the reader's waits promptly (thread-safe)."""
        self._feed.interrupt()

    def on_data_ready(self, callback: Callable[[str], None]) -> None:
        self._feed.on_ready = callback

    def disconnect(self) -> None:
        """Stop the reader thread and close the connection (safe to call more than once)."""
        self._feed.stop()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def health(self) -> SourceHealth:
        """The state (connecting, waiting for a run, receiving, reconnecting in N s, reading paused) and the
        counters of :data:`~livereduce.engines.scipp.listeners.buffered.COUNTERS`, plus ADARA's ``heartbeats``,
        ``events_filtered`` (before the start or the run), ``events_discarded_for_replay``,
        ``run_transitions_coalesced`` and ``skipped_<reason>`` per kind of packet skipped."""
        client = self._client
        with self._feed.lock:
            extra = Counter(client.counters) if client is not None else Counter()
            if client is not None:
                extra["buffered_bytes"] = client.pending_bytes
        return self._feed.health(extra=extra)

    # --- the reader thread ------------------------------------------------------------------------------------
    def _connect_tcp(self) -> socket.socket:
        try:
            return self._feed.connect_tcp(self._host, self._port, CONNECT_TIMEOUT_S)
        except OSError as err:
            raise SourceError(
                f"cannot connect to the SMS at {self.address}: {err.strerror or err}", recoverable=True
            ) from None

    def _read_forever(self) -> None:
        """Connect, read, reconnect with back-off until stopped; every fault becomes a state and a count."""
        feed = self._feed
        sock, self._sock = self._sock, None
        while not feed.stopping.is_set():
            began = time.monotonic()
            if sock is None:
                feed.set_phase(f"connecting to {self.address}", healthy=False)
                try:
                    sock = feed.connect_tcp(self._host, self._port, CONNECT_TIMEOUT_S)
                except SourceError:
                    break  # interrupted: stopping
                except OSError as err:
                    feed.count("connection_failures")
                    feed.back_off(f"cannot connect: {err.strerror or err}", 0.0)
                    continue
                _log.info("Connected to the SMS at %s", self.address)
            try:
                reason = self._session(sock)
            finally:
                sock.close()
                sock = None
            if feed.stopping.is_set():
                break
            feed.count("reconnects")
            feed.back_off(reason, time.monotonic() - began)

    def _session(self, sock: socket.socket) -> str:
        """One connection: hello, then packets until it fails or the listener stops; returns why it ended."""
        client, feed = self._client, self._feed
        sock.settimeout(POLL_S)
        with feed.lock:
            hello = client.hello(time.time_ns())
            client.connected()
        try:
            sock.sendall(hello)
        except OSError as err:
            return f"connection error: {err.strerror or err}"
        self._set_phase(client)
        framer = Framer()
        last_bytes = time.monotonic()
        pulses = client.counters["pulses"]
        while not feed.stopping.is_set():
            if feed.wait_for_room(lambda: client.pending_bytes):
                last_bytes = time.monotonic()  # time blocked on purpose is not silence
                continue
            try:
                n = sock.recv_into(framer.writable())
            except TimeoutError:
                silent = time.monotonic() - last_bytes
                if silent > self._liveness_s():
                    return f"no data for {silent:.0f} s"
                continue
            except OSError as err:
                return f"connection error: {err.strerror or err}"
            if n == 0:
                lost = f", {framer.pending} bytes of an incomplete packet discarded" if framer.pending else ""
                return f"connection closed by the SMS{lost}"
            last_bytes = time.monotonic()
            framer.wrote(n)
            stops = client.counters["run_stops"]
            if error := self._handle(client, framer, n):
                return error
            if client.counters["run_stops"] > stops:
                feed.run_ended()
            if client.counters["pulses"] > pulses:
                pulses = client.counters["pulses"]
                feed.connected_well()
        return "stopped"

    def _handle(self, client: ClientState, framer: Framer, n: int) -> str | None:
        """Apply the complete packets received, each under the lock (so that a cycle's ``extract()`` never
        waits for a whole batch); returns why the stream must be dropped, or None."""
        feed = self._feed
        beats, waiting = client.counters[_HEARTBEATS], client.waiting_for_run
        error = None
        try:
            for frame in framer.frames():
                with feed.lock:
                    client.handle(frame)
        except FramingError as err:
            error = f"stream out of step: {err}"
        with feed.changed:
            feed.counters["bytes"] += n
            for reason, count in framer.skipped.items():
                feed.skipped(reason, count)
            framer.skipped.clear()
            feed.changed.notify_all()
        if client.counters[_HEARTBEATS] > beats:
            self._heard_heartbeat()
        if client.waiting_for_run != waiting:
            self._set_phase(client)
        return error

    def _set_phase(self, client: ClientState) -> None:
        waiting = f"waiting for a run on {self.address}"
        self._feed.set_phase(waiting if client.waiting_for_run else f"receiving from {self.address}")

    def _heard_heartbeat(self) -> None:
        now = time.monotonic()
        if self._last_heartbeat is not None:
            gap = now - self._last_heartbeat
            self._heartbeat_gap = gap if self._heartbeat_gap is None else min(self._heartbeat_gap, gap)
        self._last_heartbeat = now

    def _liveness_s(self) -> float:
        if self._heartbeat_gap is None:
            return LIVENESS_MAX_S
        return min(LIVENESS_MAX_S, max(self.liveness_min_s, LIVENESS_BEATS * self._heartbeat_gap))


@dataclass(frozen=True)
class SegmentMetadata:
    """What a segment's chunk needs from the client state (read under the listener's lock): its logs with
    their values, the logs' units, the run properties and the instrument name."""

    logs: dict[str, list[tuple[int, LogValue]]]
    units: dict[str, str]
    properties: dict[str, str | int]
    instrument: str

    @classmethod
    def of(cls, client: ClientState, segment: Segment) -> SegmentMetadata:
        logs = client.logs_for(segment)
        return cls(logs, {name: client.units(name) for name in logs}, client.properties_for(segment), client.instrument)


def extracted(segment: Segment, metadata: SegmentMetadata, id_range: tuple[int, int]) -> tuple[Extracted, int]:
    """A segment as the engine receives it, and the number of its events dropped for pixel ids outside the
    pixel range: ``segment.id_range`` (else ``id_range``), capped at ``chunk.MAX_PIXELS`` pixels.

    The chunk: ``event_id`` int32, ``event_time_offset`` float32 µs (``(tof + offset) / 10``), events binned by
    pulse (``event_time_zero`` datetime64 ns UTC), ``proton_charge`` float64 pC, ``pulse_flags`` and
    ``veto_flags`` int64 per pulse; run metadata (``run_start``/``run_end`` datetime64 ns), time-series logs,
    monitors ``monitor<N>``. The status: EndRun/BeginRun for a sealed segment, else Running (in a run) or NoRun.
    """
    pixels = capped_range(*(segment.id_range or id_range))
    chunk, invalid = _chunk(segment, metadata, pixels)
    dropped = Counter(segment.dropped)
    dropped.update(invalid)
    if segment.transition is Transition.END_RUN:
        status = RunStatus.EndRun
    elif segment.transition is Transition.BEGIN_RUN:
        status = RunStatus.BeginRun
    else:
        status = RunStatus.Running if segment.run_number else RunStatus.NoRun
    return Extracted(chunk, status, pixels, data_reset=segment.data_reset, dropped=dict(dropped)), sum(invalid.values())


def _chunk(
    segment: Segment, metadata: SegmentMetadata, id_range: tuple[int, int]
) -> tuple[sc.DataArray, dict[str, int]]:
    """The segment as a chunk, and the events dropped for pixel ids outside ``id_range``, by reason."""
    events = segment.events
    n = events.count
    event_id, tof = _event_variables(events)
    counts = np.frombuffer(segment.pulse_events, np.int64) if segment.pulses else np.zeros(0, np.int64)
    index = np.cumsum(counts) - counts
    invalid: dict[str, int] = {}
    ids = event_id.values
    if n and (int(ids.min()) < id_range[0] or int(ids.max()) > id_range[1]):
        event_id, tof, index, invalid = valid_events(events.pixel_ids(), tof.values, index, id_range)
    run_metadata = RunMetadata(
        run_number=segment.run_number,
        start_time=np.datetime64(segment.run_start_ns, "ns") if segment.run_start_ns is not None else None,
        instrument_name=metadata.instrument,
        logs={name: log_series(entries, metadata.units.get(name)) for name, entries in metadata.logs.items()},
        properties={
            name: np.datetime64(value, "ns") if name in ("run_start", "run_end") else value
            for name, value in metadata.properties.items()
        },
        monitors={
            f"monitor{monitor}": monitor_events(
                np.concatenate([t for t, _ in parts]), np.concatenate([f for _, f in parts])
            )
            for monitor, parts in sorted(segment.monitors.items())
        },
    )
    pulses = segment.pulses
    times = (
        np.frombuffer(segment.pulse_ns, np.int64).astype("datetime64[ns]") if pulses else np.empty(0, "datetime64[ns]")
    )
    chunk = make_chunk(
        event_id,
        tof,
        times,
        index,
        metadata=run_metadata,
        proton_charge=np.frombuffer(segment.charge_pc, np.float64).copy() if pulses else np.empty(0),
        pulse_coords={"pulse_flags": _pulse_values(segment.flags), "veto_flags": _pulse_values(segment.veto)},
    )
    return chunk, invalid


def scipp_event_arrays(n: int) -> tuple[np.ndarray, np.ndarray, object]:
    """:data:`~livereduce.protocols.adara.client.Allocate` for chunks without a copy: the reader thread decodes
    into the memory of scipp variables (``event_id`` int32, ``event_time_offset`` float32 µs), which the chunk
    then uses as they are."""
    event_id = sc.empty(sizes={EVENT_DIM: n}, dtype="int32", unit=None)
    tof = sc.empty(sizes={EVENT_DIM: n}, dtype="float32", unit="us")
    return event_id.values, tof.values, (event_id, tof)


def _event_variables(events: EventArrays) -> tuple[sc.Variable, sc.Variable]:
    """The decoded events as variables: views of the variables they were decoded into, else copies."""
    n = events.count
    if isinstance(events.owner, tuple):
        event_id, tof = events.owner
        return event_id[EVENT_DIM, 0:n], tof[EVENT_DIM, 0:n]
    if events.pixel is None:
        return scipp_event_arrays(0)[2]
    return (
        sc.array(dims=[EVENT_DIM], values=events.pixel[:n], unit=None),
        sc.array(dims=[EVENT_DIM], values=events.tof[:n], unit="us"),
    )


def _pulse_values(values: object) -> sc.Variable:
    data = np.frombuffer(values, np.int64).copy() if len(values) else np.zeros(0, np.int64)
    return sc.array(dims=[PULSE_DIM], values=data, unit=None)
