"""The fake SMS's server: accepts ADARA clients and serves each the stream (``sms_stream.py``) as the SNS Stream
Management Service does, with fault injection.

A client connects and sends CLIENT_HELLO v0 or v1 [NP 5.12, 5.13]; then, as the SMS does [NP 5 intro]:

* prologue: RUN_STATUS STATE (the current run, or none), GEOMETRY (a minimal IDF covering the files' pixel
  ids), BEAMLINE_INFO, DEVICE_DESC and VAR_VALUEs (the files' ``NXlog`` values in force), RUN_INFO if in a run;
* where the hello asks: requested start 1: the current run from its beginning (between runs: the next run);
  0: from now; a time: from the last chunk-file boundary before it (every ``eof_every`` pulses), never before
  the current run's start (the SMS rounds back and clamps [NP 5.12]);
* per run: RUN_STATUS NEW_RUN, RUN_INFO, one BANKED_EVENT v1 per pulse, VAR_VALUE at each log change, every
  ``eof_every`` pulses RUN_EOF, SYNC, RUN_BOF and the repeated prologue, then RUN_STATUS END_RUN;
* HEARTBEAT whenever nothing was sent for ``heartbeat_s`` seconds, also after the last run.

Each run a client was served ends with an INFO line (logger ``livereduce.fake_sms.sent``): the pulses sent and how
late the latest was against its time (a sender or a client that cannot keep up shows there). Synthetic runs
(``tools/synthetic.py``) are sent as made, one pulse at a time: a fresh header, then the pool pulse's payload.

Fault injection (:class:`Options`): ``drop_after`` (the first connection breaks off in the middle of the packet
after N pulses), ``corrupt`` (N malformed packets of different kinds spread over each connection's first run;
each must be dropped whole by the client), ``pause`` (pause annotation before pulse P of each run, resume before
Q; the paused pulses are sent unless the hello (v1) asks for no pause data).

Each client's story is logged (logger ``livereduce.fake_sms``): connected, its hello and where it is served from
(run numbers as the packets carry them), and how it ended: at INFO when it ended normally (the client
disconnected, whether with a close or a reset, or the server stopped, or ``drop_after``), as a WARNING on a fault
(no valid hello, a connection error of another kind, an exception).
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from livereduce.protocols.adara import encode
from livereduce.protocols.adara.decode import PacketError, decode_client_hello
from livereduce.protocols.adara.packets import (
    EPICS_EPOCH_OFFSET_S,
    HEADER_BYTES,
    NS_PER_S,
    AnnotationType,
    ClientFlags,
    PacketType,
    RunStatusCode,
    format_word,
    parse_header,
)
from livereduce.tools.sms_stream import EPICS_EPOCH_NS, LogValue, Placed, Stream, Timeline
from livereduce.tools.synthetic import SyntheticRun

_log = logging.getLogger("livereduce.fake_sms")
_sent_log = logging.getLogger("livereduce.fake_sms.sent")
"""What each run sent to each client (a logger of its own: the session's story stays on ``_log``)."""
DEFAULT_PORT = 31415
"""The SMS's port (``livestream.service``) [impl]."""
DEVICE_ID = 8192
"""Device id of the logs' device: ids below 8192 are reserved for ADARA's own status devices [NP 6]."""
HELLO_TIMEOUT_S = 30.0
"""A client that sends no hello within this is dropped, as the reference SMS does [impl]."""
MAX_CLIENTS = 16
_STOPPING = "closed: the server is stopping"
_BEFORE_HELLO = "disconnected before sending a hello"
_CLOSED_BY_CLIENT = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
"""What a send or receive raises when the client has closed its end (a close with data unread is a reset)."""


@dataclass
class Options:
    """How the fake SMS serves (the command-line options of ``livereduce-fake-sms``).

    Attributes:
        speed: the timeline runs this many times faster than the files' pulse times; 0: it stands at the beginning
            and every client gets everything as fast as it reads.
        loops: times the list of runs is served (0: forever).
        eof_every: pulses per stored file: RUN_EOF, SYNC, RUN_BOF and the repeated prologue between files (>= 1).
        heartbeat_s: seconds without traffic before a HEARTBEAT (> 0).
        run_number: number of the first run, ``1..2**32-1`` (None: the first run's own, else 1).
        drop_after: the first connection breaks off after this many pulses (None: never).
        corrupt: malformed packets in each connection's first run.
        pause: ``(P, Q)``: a pause annotation before pulse P of each run, resume before Q (None: no pause).
        start_in: the timeline is the wall clock and the first run begins this many seconds after the server is made
            (``speed`` 1; None: the runs keep their files' times).
    """

    speed: float = 1.0
    loops: int = 1
    eof_every: int = 600
    heartbeat_s: float = 1.0
    run_number: int | None = None
    drop_after: int | None = None
    corrupt: int = 0
    pause: tuple[int, int] | None = None
    start_in: float | None = None


class ClientGone(Exception):
    """The session ended normally: the client disconnected, the server is stopping, or ``drop_after``. The message
    completes ``client HOST:PORT ...`` (logged at INFO)."""


class ClientFailed(Exception):
    """The session ended on a fault: no valid hello, or a connection error other than the client's close. The
    message completes ``client HOST:PORT: ...`` (logged as a WARNING)."""


def connection_ended(err: OSError) -> ClientGone | ClientFailed:
    """What a socket error means: the client's close (``disconnected``) or a fault (``connection lost (...)``)."""
    if isinstance(err, _CLOSED_BY_CLIENT):
        return ClientGone("disconnected")
    return ClientFailed(f"connection lost ({err.strerror or err})")


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
        self.no_pause_data = False
        self._last_send = time.monotonic()
        self._pulses_sent = 0  # of the run being sent
        self._latest_ns = 0  # how late the latest pulse of that run was sent against its time (stream ns)

    # --- sending ------------------------------------------------------------------------------------------
    def send(self, data: bytes | memoryview) -> None:
        """Send all of ``data``.

        Raises:
            ClientGone: the server is stopping, or the client disconnected.
            ClientFailed: a connection error other than the client's close.
        """
        if self.server.stopping.is_set():
            raise ClientGone(_STOPPING)
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise connection_ended(err) from None
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
                raise ClientGone(_STOPPING)

    def idle(self) -> None:
        """After the last run: heartbeats until the client goes away or the server stops."""
        while not self.server.stopping.wait(self.options.heartbeat_s):
            self.send(encode.heartbeat(max(self.timeline.now_ns(), self.timeline.origin_ns)))
        raise ClientGone(_STOPPING)

    # --- the conversation ---------------------------------------------------------------------------------
    def hello(self) -> tuple[int, int | None]:
        """Read the CLIENT_HELLO (the only packet a client sends) [NP 5.12].

        Raises:
            ClientGone: the client disconnected before its hello.
            ClientFailed: no valid hello within :data:`HELLO_TIMEOUT_S`.
        """
        self.sock.settimeout(HELLO_TIMEOUT_S)
        try:
            data = self._read(HEADER_BYTES)
            header = parse_header(data)
            if header.packet_type != PacketType.CLIENT_HELLO or header.payload_len not in (4, 8):
                raise ClientFailed(
                    f"no valid hello (expected CLIENT_HELLO, got type 0x{header.packet_type:04X} with "
                    f"{header.payload_len} bytes)"
                )
            return decode_client_hello(header, self._read(header.payload_len))
        except (TimeoutError, PacketError) as err:
            raise ClientFailed(f"no valid hello ({err or 'timed out'})") from None
        finally:
            self.sock.settimeout(None)

    def _read(self, n: int) -> bytes:
        """``n`` bytes of the hello.

        Raises:
            ClientGone: the client disconnected first.
            ClientFailed: a connection error other than the client's close.
            TimeoutError: nothing within :data:`HELLO_TIMEOUT_S`.
        """
        data = b""
        while len(data) < n:
            try:
                piece = self.sock.recv(n - len(data))
            except TimeoutError:
                raise
            except OSError as err:
                ended = connection_ended(err)
                raise (ClientGone(_BEFORE_HELLO) if isinstance(ended, ClientGone) else ended) from None
            if not piece:
                raise ClientGone(_BEFORE_HELLO)
            data += piece
        return data

    def run(self) -> None:
        """The whole conversation: hello, prologue, the runs from where the hello asks, heartbeats; it ends only
        with :class:`ClientGone` or :class:`ClientFailed`."""
        start, flags = self.hello()
        self.no_pause_data = flags == ClientFlags.NO_PAUSE_DATA
        now = self.timeline.now_ns()
        k, pulse, fresh = self.timeline.plan(start, now, self.options.eof_every)
        current = self.timeline.at(self.timeline.current(now))
        placed = self.timeline.at(k)
        if current is None:
            where = "after the last run"
        else:
            position = np.searchsorted(current.run.pulse_ns, now - current.shift_ns, "right")
            where = f"at pulse {position} of run {current.number}"
        serving = (
            f"serving run {placed.number} from pulse {pulse}{' (from NEW_RUN)' if fresh else ''}"
            if placed is not None
            else "no run left to serve: heartbeats only"
        )
        version = "v0" if flags is None else f"v1 flags {flags}"
        _log.info("client %s: hello %s start %d %s: %s", self.peer, version, start, where, serving)
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
        return encode.variable_value(DEVICE_ID, pv_id, value, max(when, EPICS_EPOCH_NS))

    def _runinfo(self, placed: Placed) -> bytes:
        run = placed.run
        return encode.runinfo_xml(placed.number, proposal_id=run.proposal, run_title=run.title)

    def stream_run(self, placed: Placed, first: int, fresh: bool, corrupt: int) -> None:
        """Send run ``placed`` from pulse ``first`` (with its NEW_RUN if ``fresh``); log what was sent."""
        self._pulses_sent = self._latest_ns = 0
        ended = "cut off"
        try:
            self._stream_run(placed, first, fresh, corrupt)
            ended = "ended"
        finally:
            speed = self.options.speed or 1
            _sent_log.info(
                "client %s: run %d %s: %d pulses sent, at most %.3f s after their time",
                self.peer,
                placed.number,
                ended,
                self._pulses_sent,
                self._latest_ns / speed / NS_PER_S,
            )

    def _stream_run(self, placed: Placed, first: int, fresh: bool, corrupt: int) -> None:
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
                now = self.timeline.now_ns()
                due = int(np.searchsorted(run.pulse_ns, now - placed.shift_ns, "right"))
                stop = min(end, max(due, position + 1))
                self._latest_ns = max(self._latest_ns, now - placed.pulse_ns(position))
            else:
                stop = end
            if isinstance(run, SyntheticRun):
                for i in range(position, stop):
                    header, payload = run.packet(i, placed.pulse_ns(i))
                    self.send(header)
                    self.send(payload)
                    self._pulses_sent += 1
            else:
                self.send(self.packet_bytes(placed, int(starts[position]), int(run.ends[stop - 1])))
                self._pulses_sent += stop - position
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
        start_ns = None if options.start_in is None else time.time_ns() + round(options.start_in * NS_PER_S)
        self.timeline = Timeline(
            stream.runs, loops=options.loops, speed=options.speed, first_number=options.run_number, start_ns=start_ns
        )
        self.stopping = threading.Event()
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._connections = 0

    @property
    def connections(self) -> int:
        """Client connections accepted so far (each also logged: ``client HOST:PORT connected``)."""
        with self._lock:
            return self._connections

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
                    _log.warning("client %s refused: %d clients already", peer, MAX_CLIENTS)
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
        """One client's thread: run its session and log how it ended (INFO when normal, else a WARNING)."""
        _log.info("client %s connected", peer)
        try:
            Session(self, sock, peer, first).run()
        except ClientGone as gone:
            _log.info("client %s %s", peer, gone)
        except ClientFailed as failed:
            _log.warning("client %s: %s", peer, failed)
        except Exception as err:  # noqa: BLE001 - one client's failure must not end the server
            _log.warning("client %s failed: %s: %s", peer, type(err).__name__, err)
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
