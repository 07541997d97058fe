"""``SNSLiveEventDataListener``: live data from SNS, read natively from the ADARA stream of the Stream Management
Service (SMS), as Mantid's listener of the same name reads it.

* ``address`` (``host:port``; default the instrument's, e.g. ``bl11a-daq1.sns.gov:31415`` for POWGEN);
  ``start`` (``from_start_of_run`` / ``now`` / a time), ``keep_paused_events``, ``source_buffer_mb``.
* :meth:`~SNSLiveEventDataListener.connect` opens the TCP connection (:class:`~livereduce.errors.SourceError`
  if it cannot); :meth:`~SNSLiveEventDataListener.start` sends the hello from a background thread and waits up to
  10 s (Mantid's ``startupTimeout``) for the prologue's GEOMETRY, whose detector ids give
  :meth:`~SNSLiveEventDataListener.event_id_range` (:class:`SourceError` if none comes: the daemon retries).
* The thread reads the socket into a buffer bounded by ``source_buffer_mb``; when the cycle does not keep up it
  stops reading (the SMS buffers, as for Mantid), and the status says so. It never raises: lost connections,
  silence longer than several heartbeat intervals and a stream out of step end the connection, and it
  reconnects after 1, 2, 4 ... 60 s, sending the hello again. Packet semantics (start, runs, pause, replay after a
  reconnect): :mod:`livereduce.protocols.adara.client`.
* :meth:`~SNSLiveEventDataListener.extract` hands over everything since the previous call as one NXevent_data
  chunk: events binned by pulse (``event_time_zero`` = the BANKED_EVENT header time, ``event_id`` the pixel id,
  ``event_time_offset`` µs), ``proton_charge`` (pC), ``pulse_flags`` and ``veto_flags`` per pulse, beam monitors
  and run metadata with Mantid's log names. Events of the special banks, events while paused and events of
  pixels outside the GEOMETRY's ids are dropped and counted in :attr:`Extracted.dropped`.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import scipp as sc

from livereduce.clock import Clock, SystemClock
from livereduce.config import Config
from livereduce.engines.scipp.chunk import EVENT_DIM, PULSE_DIM, RunMetadata, make_chunk, valid_events
from livereduce.engines.scipp.listeners.base import Extracted, Listener, RunStatus, SourceHealth, StartPosition
from livereduce.errors import ConfigError, SourceError
from livereduce.protocols.adara.client import ClientState, EventArrays, LogValue, Segment, Transition
from livereduce.protocols.adara.decode import Framer, FramingError

_log = logging.getLogger("livereduce.SNSLiveEventDataListener")

STARTUP_TIMEOUT_S = 10.0
"""Seconds :meth:`SNSLiveEventDataListener.start` waits for the GEOMETRY (Mantid's ``startupTimeout`` default)."""
CONNECT_TIMEOUT_S = 10.0
"""Seconds a TCP connection attempt may take."""
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
"""Reconnect back-off: 1 s, doubling up to 60 s; back to 1 s after a connection that delivered pulses or lasted
:data:`STABLE_CONNECTION_S`."""
STABLE_CONNECTION_S = 60.0
LIVENESS_BEATS = 5
"""A connection with no bytes for this many heartbeat intervals is dead. The SMS does not publish its
interval: it is estimated as the shortest gap between two heartbeats seen, and the timeout is kept within
:data:`LIVENESS_MIN_S` .. :data:`LIVENESS_MAX_S` (the maximum until a gap has been seen)."""
LIVENESS_MIN_S = 5.0
LIVENESS_MAX_S = 60.0
_COUNTERS = (
    "bytes",
    "packets",
    "packets_skipped",
    "pulses",
    "events",
    "events_dropped",
    "events_filtered",
    "monitor_events",
    "heartbeats",
    "reconnects",
    "connection_failures",
    "back_pressure_pauses",
    "buffered_bytes",
)
"""Counters always reported by :meth:`SNSLiveEventDataListener.health` (others appear when non-zero)."""
POLL_S = 0.25
"""Socket read timeout: how often the reader looks at the stop flag and the liveness deadline."""


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
        self.clock = clock or SystemClock()
        address = config.address or (config.instrument_info().address if config.instrument else None)
        if not address:
            raise ConfigError(
                "listener SNSLiveEventDataListener needs the key 'address' (host:port of the SMS, e.g. "
                "bl11a-daq1.sns.gov:31415), or an SNS instrument that has one"
            )
        self.address = address
        self._host, self._port = parse_address(address)
        self.keep_paused_events = config.keep_paused_events
        self.buffer_bytes = int(config.source_buffer_mb * 2**20)
        self.startup_timeout_s = STARTUP_TIMEOUT_S
        self.liveness_min_s = LIVENESS_MIN_S
        self._client: ClientState | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._range = (0, 0)
        self._counters: Counter[str] = Counter()
        self._phase = "not connected"
        self._reconnect_at: float | None = None
        self._reason = ""
        self._blocked_since: float | None = None
        self._heartbeat_gap: float | None = None
        self._last_heartbeat: float | None = None

    # --- Listener interface -----------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the TCP connection to the SMS.

        Raises:
            SourceError: (recoverable) the connection cannot be made within 10 s; the message names the address.
        """
        try:
            self._sock = socket.create_connection((self._host, self._port), timeout=CONNECT_TIMEOUT_S)
        except OSError as err:
            raise SourceError(
                f"cannot connect to the SMS at {self.address}: {err.strerror or err}", recoverable=True
            ) from None
        self._phase = "connected"
        _log.info("Connected to the SMS at %s", self.address)

    def start(self, position: StartPosition) -> None:
        """Send the hello from ``position`` and start reading; wait for the GEOMETRY (the pixel range).

        Raises:
            SourceError: (recoverable) no GEOMETRY with detector ids within 10 s.
        """
        self._client = ClientState(
            position,
            keep_paused_events=self.keep_paused_events,
            allocate=scipp_event_arrays,
            segment_events=max(1, self.buffer_bytes // 8),
        )
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_forever, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        with self._changed:
            while self._client.id_range is None and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(min(left, POLL_S))
            id_range, geometry = self._client.id_range, self._client.geometry
        if id_range is None:
            state = self.health().state
            self.disconnect()
            raise SourceError(
                f"no GEOMETRY with detector ids from the SMS at {self.address} within {self.startup_timeout_s:g} s "
                f"({state})",
                recoverable=True,
            )
        self._range = id_range
        _log.info(
            "Instrument %s: detector ids %d..%d (%d declared) from the GEOMETRY; start %s",
            self._client.instrument or "(no BEAMLINE_INFO yet)",
            id_range[0],
            id_range[1],
            geometry.count if geometry else 0,
            position,
        )

    def extract(self) -> Extracted:
        """Everything received since the previous call (up to the next run transition), as a chunk."""
        client = self._client
        if client is None:
            raise SourceError("SNSLiveEventDataListener: extract() before start()")
        with self._changed:
            segment = client.take()
            metadata = SegmentMetadata.of(client, segment)
            self._changed.notify_all()
        self._range = segment.id_range or self._range
        result, invalid = extracted(segment, metadata, self._range)
        if invalid:
            with self._lock:
                self._counters["events_dropped"] += invalid
        return result

    def disconnect(self) -> None:
        """Stop the reader thread and close the connection (safe to call more than once)."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        sock = self._sock
        if sock is not None and self._thread is None:
            sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(CONNECT_TIMEOUT_S + 2 * POLL_S)
            self._thread = None
        self._phase = "not connected"

    def health(self) -> SourceHealth:
        """State (connecting, waiting for a run, receiving, paused by back-pressure, reconnecting in N s) and
        counters: bytes, packets, pulses, events, events_dropped, events_filtered, monitor_events, heartbeats,
        reconnects, connection_failures, buffered_bytes, packets_skipped and ``skipped <reason>``."""
        with self._lock:
            counters = Counter(dict.fromkeys(_COUNTERS, 0))
            counters.update(self._counters)
            client = self._client
            if client is not None:
                counters.update(client.counters)
                counters["buffered_bytes"] = client.pending_bytes
            counters["packets_skipped"] = sum(v for k, v in counters.items() if k.startswith("skipped "))
            state, healthy = self._state(client)
        return SourceHealth(state, healthy, dict(counters))

    def _state(self, client: ClientState | None) -> tuple[str, bool]:
        where = self.address
        if self._reconnect_at is not None:
            left = max(0, math.ceil(self._reconnect_at - time.monotonic()))
            return f"reconnecting to {where} in {left} s ({self._reason})", False
        if self._blocked_since is not None:
            buffered = client.pending_bytes / 2**20 if client else 0
            return (
                f"paused by back-pressure: {buffered:.0f} MiB buffered (source_buffer_mb "
                f"{self.buffer_bytes / 2**20:g}) from {where}",
                True,
            )
        if self._phase == "receiving" and client is not None:
            if client.waiting_for_run:
                return f"waiting for a run on {where}", True
            return f"receiving from {where}", True
        return f"{self._phase} ({where})", self._phase != "not connected"

    # --- the reader thread ------------------------------------------------------------------------------------
    def _read_forever(self) -> None:
        """Connect, read, reconnect with back-off until stopped; every fault becomes a state and a count."""
        backoff = BACKOFF_FIRST_S
        sock, self._sock = self._sock, None
        while not self._stop.is_set():
            if sock is None:
                self._set(phase="connecting")
                try:
                    sock = socket.create_connection((self._host, self._port), timeout=CONNECT_TIMEOUT_S)
                except OSError as err:
                    self._count("connection_failures")
                    self._back_off(backoff, f"cannot connect: {err.strerror or err}")
                    backoff = min(2 * backoff, BACKOFF_MAX_S)
                    continue
                _log.info("Connected to the SMS at %s", self.address)
            began = time.monotonic()
            pulses = self._client.counters["pulses"] if self._client else 0
            try:
                reason = self._session(sock)
            except Exception as err:  # noqa: BLE001 - the reader must never die: log, then reconnect
                _log.exception("Reading the SMS at %s failed", self.address)
                self._count("internal_errors")
                reason = f"internal error: {type(err).__name__}: {err}"
            finally:
                sock.close()
                sock = None
            if self._stop.is_set():
                break
            self._count("reconnects")
            delivered = self._client is not None and self._client.counters["pulses"] > pulses
            if delivered or time.monotonic() - began >= STABLE_CONNECTION_S:
                backoff = BACKOFF_FIRST_S
            self._back_off(backoff, reason)
            backoff = min(2 * backoff, BACKOFF_MAX_S)
        self._set(phase="not connected")

    def _back_off(self, seconds: float, reason: str) -> None:
        _log.warning("Connection to the SMS at %s lost (%s); reconnecting in %g s", self.address, reason, seconds)
        with self._lock:
            self._reconnect_at, self._reason = time.monotonic() + seconds, reason
        self._stop.wait(seconds)
        with self._lock:
            self._reconnect_at = None

    def _session(self, sock: socket.socket) -> str:
        """One connection: hello, then packets until it fails or the listener stops; returns why it ended."""
        client = self._client
        sock.settimeout(POLL_S)
        with self._lock:
            hello = client.hello(time.time_ns())
            client.connected()
        sock.sendall(hello)
        self._set(phase="receiving")
        framer = Framer()
        last_bytes = time.monotonic()
        while not self._stop.is_set():
            if client.pending_bytes >= self.buffer_bytes:
                self._wait_for_room(client)
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
            if error := self._handle(client, framer, n):
                return error
        return "stopped"

    def _handle(self, client: ClientState, framer: Framer, n: int) -> str | None:
        """Apply the complete packets received; returns why the stream must be dropped, or None."""
        with self._changed:
            self._counters["bytes"] += n
            beats = client.counters["heartbeats"]
            try:
                for frame in framer.frames():
                    client.handle(frame)
            except FramingError as err:
                return f"stream out of step: {err}"
            finally:
                for reason, count in framer.skipped.items():
                    client.counters[f"skipped {reason}"] += count
                framer.skipped.clear()
                self._changed.notify_all()
            if client.counters["heartbeats"] > beats:
                self._heard_heartbeat()
        return None

    def _wait_for_room(self, client: ClientState) -> None:
        """Back-pressure: stop reading until extract() has taken the buffered data."""
        with self._changed:
            self._blocked_since = time.monotonic()
            self._counters["back_pressure_pauses"] += 1
            while client.pending_bytes >= self.buffer_bytes and not self._stop.is_set():
                self._changed.wait(POLL_S)
            self._blocked_since = None

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

    def _set(self, *, phase: str) -> None:
        with self._lock:
            self._phase = phase

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1


@dataclass(frozen=True)
class SegmentMetadata:
    """What a segment's chunk needs from the client state (read under the listener's lock): every log with its
    values for the segment, the logs' units, the run properties and the instrument name."""

    logs: dict[str, list[tuple[int, LogValue]]]
    units: dict[str, str]
    properties: dict[str, str | int]
    instrument: str

    @classmethod
    def of(cls, client: ClientState, segment: Segment) -> SegmentMetadata:
        logs = client.logs_for(segment)
        return cls(logs, {name: client.units(name) for name in logs}, client.properties_for(segment), client.instrument)


def extracted(segment: Segment, metadata: SegmentMetadata, id_range: tuple[int, int]) -> tuple[Extracted, int]:
    """A segment as the engine receives it, and the number of its events dropped for pixel ids outside
    ``segment.id_range`` (else ``id_range``).

    The chunk: ``event_id`` int32, ``event_time_offset`` float32 µs (``(tof + offset) / 10``), events binned by
    pulse (``event_time_zero`` datetime64 ns UTC), ``proton_charge`` float64 pC, ``pulse_flags`` and
    ``veto_flags`` int64 per pulse; run metadata (``run_start``/``run_end`` datetime64 ns), time-series logs,
    monitors ``monitor<N>``. The status: EndRun/BeginRun for a sealed segment, else Running (in a run) or NoRun.
    """
    chunk, invalid = _chunk(segment, metadata, segment.id_range or id_range)
    dropped = Counter(segment.dropped)
    dropped.update(invalid)
    if segment.transition is Transition.END_RUN:
        status = RunStatus.EndRun
    elif segment.transition is Transition.BEGIN_RUN:
        status = RunStatus.BeginRun
    else:
        status = RunStatus.Running if segment.run_number else RunStatus.NoRun
    pixels = segment.id_range or id_range
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
        logs={name: _log_array(entries, metadata.units.get(name, "")) for name, entries in metadata.logs.items()},
        properties={
            name: np.datetime64(value, "ns") if name in ("run_start", "run_end") else value
            for name, value in metadata.properties.items()
        },
        monitors={f"monitor{monitor}": _monitor_events(parts) for monitor, parts in sorted(segment.monitors.items())},
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


def _unit(text: str) -> sc.Unit | None:
    if not text:
        return None
    try:
        return sc.Unit(text)
    except Exception:  # noqa: BLE001 - any text from the network; unparsable units are left out
        return None


def _log_array(entries: list[tuple[int, LogValue]], units: str) -> sc.DataArray:
    """A time-series log: values over dimension ``time`` (datetime64 ns). Numbers as float64 (int64 if all are
    integers) with the PV's units, strings as strings, arrays as one bin of values per time."""
    times = sc.array(dims=["time"], values=np.array([t for t, _ in entries], np.int64), unit="ns", dtype="datetime64")
    values = [value for _, value in entries]
    if any(isinstance(v, str) for v in values):
        data = sc.array(dims=["time"], values=[v if isinstance(v, str) else str(v) for v in values])
    elif any(isinstance(v, np.ndarray) for v in values):
        arrays = [np.atleast_1d(np.asarray(v, np.float64)) for v in values]
        sizes = np.array([a.size for a in arrays], np.int64)
        flat = sc.array(dims=["value"], values=np.concatenate(arrays), unit=_unit(units))
        ends = np.cumsum(sizes)
        data = sc.bins(
            begin=sc.array(dims=["time"], values=ends - sizes, unit=None),
            end=sc.array(dims=["time"], values=ends, unit=None),
            dim="value",
            data=flat,
        )
    elif all(isinstance(v, int) for v in values):
        data = sc.array(dims=["time"], values=np.array(values, np.int64), unit=_unit(units))
    else:
        data = sc.array(dims=["time"], values=np.array(values, np.float64), unit=_unit(units))
    return sc.DataArray(data, coords={"time": times})


def _monitor_events(parts: list[tuple[np.ndarray, np.ndarray]]) -> sc.DataArray:
    """A monitor's events: weights 1, ``event_time_offset`` (float32 µs), ``event_time_zero`` (datetime64 ns)."""
    times = np.concatenate([t for t, _ in parts])
    tof = np.concatenate([f for _, f in parts])
    return sc.DataArray(
        sc.ones(sizes={EVENT_DIM: tof.size}, dtype="float32", unit="counts"),
        coords={
            "event_time_offset": sc.array(dims=[EVENT_DIM], values=tof, unit="us", dtype="float32"),
            "event_time_zero": sc.array(dims=[EVENT_DIM], values=times, unit="ns", dtype="datetime64"),
        },
    )
