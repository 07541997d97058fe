"""The core every network listener shares: a background reader thread filling a bounded buffer.

A network source (ADARA from an SMS, Kafka from a broker) is read by a thread of its own, so that reading never
waits for the engine's cycle and the cycle never waits for the network. What such a listener needs besides its
protocol is the same for every source, and lives here, once (:class:`BufferedSource`):

* **the thread** and its never-raise wrapper: the reader's body runs until the listener stops; an exception that
  escapes it is a bug, logged once with its traceback and counted (``internal_errors``); the next ``extract()``
  then raises a recoverable :class:`~livereduce.errors.SourceError` (:meth:`BufferedSource.check`), so the daemon
  restarts the listener with back-off. Expected faults (a lost connection, a bad message) never escape: they are
  counters and states.
* **the lock and condition** guarding the buffer, shared by the reader and ``extract()``.
* **the buffer bound** (``source_buffer_mb``, else automatic: :mod:`~.sizing`) and **lossless back-pressure**:
  when the data not yet extracted reaches the bound, the reader stops reading (:meth:`BufferedSource.wait_for_room`)
  until ``extract()`` takes it; the source then buffers (the SMS, the broker), as it would for a slow Mantid. The
  state says so (``reading paused``), ``back_pressure_pauses`` counts the pauses and ``back_pressure_ms`` their
  time. An engine that takes early chunks (:attr:`BufferedSource.on_ready`) is told when the buffer is half full
  and when a run ends, and then the bound stays where it is: the buffer never needs to hold a whole cycle.
* **counters** with one vocabulary for every source (:data:`COUNTERS`), shown the same in the status file and at
  ``/metrics``; ``skipped_<reason>`` per kind of message skipped, summed in ``messages_skipped``.
* **the health line**: the reader's phase (``connecting to ...``, ``receiving from ...``), ``reconnecting to ... in
  N s (reason)`` during a back-off, ``; reading paused: buffer full`` under back-pressure, ``reader failed: ...``.
* **a rate-limited warning** (:meth:`BufferedSource.warn`): a repeating fault is one WARNING per minute per kind.
* **back-off** between reconnects (:class:`~livereduce.backoff.Backoff`, the supervisor's policy too), and an
  **interruptible connect** (:meth:`BufferedSource.connect_tcp`): every wait of the reader and of ``connect()``/
  ``start()`` ends within :data:`POLL_S` of :meth:`BufferedSource.interrupt`, so a stop never waits for a network.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

from livereduce.backoff import Backoff
from livereduce.clock import Clock
from livereduce.engines.scipp.listeners.base import SourceHealth
from livereduce.engines.scipp.listeners.sizing import HEADROOM_CYCLES, BufferBound
from livereduce.errors import SourceError
from livereduce.protocols import skipped_counter

POLL_S = 0.25
"""Longest a reader or a connect blocks before it looks at the stop flag again (seconds)."""
JOIN_S = 2.0
"""Seconds :meth:`BufferedSource.stop` waits for the reader thread (every wait of it is at most :data:`POLL_S`)."""
READY_BUFFER = "source buffer half full"
"""Why the engine is told to take data early: the buffer is half full."""
READY_RUN_END = "run ended"
"""Why the engine is told to take data early: a run ended (its last output need not wait for the next cycle)."""
WARN_EVERY_S = 60.0
"""A repeating warning (same key) is logged at most once per this many seconds."""

COUNTERS = (
    "bytes",
    "messages",
    "messages_skipped",
    "pulses",
    "events",
    "events_dropped",
    "monitor_events",
    "logs",
    "run_starts",
    "run_stops",
    "reconnects",
    "connection_failures",
    "back_pressure_pauses",
    "back_pressure_ms",
    "buffered_bytes",
    "buffer_limit_bytes",
    "internal_errors",
)
"""The counters every network source reports (0 until they count), with the same meaning for each:

``bytes`` and ``messages`` received (an ADARA packet, a Kafka message); ``messages_skipped`` of them, each also under
``skipped_<reason>``; ``pulses``, ``events`` (neutron events kept), ``events_dropped`` (delivered but dropped: special
banks, paused, invalid pixel ids, outside a run), ``monitor_events``, ``logs`` (log values); ``run_starts`` and
``run_stops`` seen; ``reconnects`` (connections lost and made again), ``connection_failures`` (attempts that failed);
``back_pressure_pauses`` (times reading paused on a full buffer) and ``back_pressure_ms`` (their length),
``buffered_bytes`` (held now), ``buffer_limit_bytes`` (the bound now), ``internal_errors``
(bugs: the reader thread ended). A source adds its own (e.g. ADARA ``heartbeats``, Kafka ``offset_gaps``)."""


class BufferedSource:
    """The shared machinery of a listener with a background reader (see the module description).

    Args:
        name: the listener's name, for logs and the thread (e.g. ``"SNSLiveEventDataListener"``).
        where: the source's address, for the health line and messages (e.g. ``"bl11a-daq1:31415"``).
        peer: what is at that address, for messages (e.g. ``"the SMS"``: ``Connection to the SMS at ... lost``).
        bound: the bound of the data not yet extracted (:class:`~.sizing.BufferBound`).
        clock: time for the back-off and the warning rate. Deadlines of blocking waits (a socket, the condition)
            are real time (``time.monotonic``): nothing else can end them.
        log: the listener's logger.

    Attributes:
        lock: guards the listener's buffer and :attr:`counters`; ``changed`` is its condition, notified whenever the
            buffer shrinks (``extract()``) or the listener stops.
        counters: cumulative counts (guarded by :attr:`lock`); see :data:`COUNTERS`.
        stopping: set by :meth:`interrupt`/:meth:`stop`; every wait here ends when it is set.
        backoff: the reconnect delays of this source.
        on_ready: called (from the reader thread, without the lock) with :data:`READY_BUFFER` when the buffer is
            half full and :data:`READY_RUN_END` when a run ended; the engine sets it to take early chunks
            (``accum_method`` Add, ``early_chunks``).
    """

    def __init__(
        self, name: str, where: str, peer: str, *, bound: BufferBound, clock: Clock, log: logging.Logger
    ) -> None:
        self.name = name
        self.where = where
        self.peer = peer
        self.bound = bound
        self.on_ready: Callable[[str], None] | None = None
        self._told = False  # on_ready(READY_BUFFER) was called since the last extract()
        self.clock = clock
        self.log = log
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.counters: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.backoff = Backoff()
        self._thread: threading.Thread | None = None
        self._failure = ""
        self._phase = "not connected"
        self._healthy = False
        self._paused = False
        self._paused_since_take = False
        self._retry: tuple[float, str] | None = None  # (monotonic time of the next attempt, why)
        self._warned: dict[str, float] = {}

    # --- the thread ---------------------------------------------------------------------------------------------
    def start(self, body: Callable[[], None]) -> None:
        """Run ``body`` in the reader thread until it returns (it should return soon after :attr:`stopping`). A
        listener starts once: after :meth:`interrupt` the body sees :attr:`stopping` set at once."""
        self._thread = threading.Thread(target=self._run, args=(body,), name=self.name, daemon=True)
        self._thread.start()

    def _run(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as err:  # the reader never dies silently: recorded, raised by check()
            self.log.exception("%s: reading %s failed (a bug)", self.name, self.where)
            with self.changed:
                self._failure = f"{type(err).__name__}: {err}"
                self.counters["internal_errors"] += 1
                self.changed.notify_all()
        finally:
            self.set_phase("not connected", healthy=False)

    def check(self) -> None:
        """Raise if the reader thread failed (called by ``extract()``).

        Raises:
            SourceError: (recoverable) the reader thread ended with an exception; its traceback is in the log.
        """
        if self._failure:
            raise SourceError(f"{self.name}: reading {self.where} failed: {self._failure}", recoverable=True)

    def interrupt(self) -> None:
        """Make every wait of the reader and of a ``connect()``/``start()`` in progress end (thread-safe)."""
        self.stopping.set()
        with self.changed:
            self.changed.notify_all()

    def stop(self) -> None:
        """Interrupt and wait up to :data:`JOIN_S` for the reader thread (safe to call more than once)."""
        self.interrupt()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_S)
            if thread.is_alive():
                self.log.warning("%s: reader thread still busy after %g s; left behind", self.name, JOIN_S)

    # --- waiting --------------------------------------------------------------------------------------------
    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped; True if stopped."""
        return self.clock.wait(self.stopping, seconds)

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` (called with :attr:`lock` held), ``timeout`` seconds, or a stop; the reader
        notifies :attr:`changed` when what ``ready`` reads changes. Returns ``ready()``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not ready() and not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, POLL_S))
            return ready()

    @property
    def buffer_bytes(self) -> int:
        """The bound now (bytes; automatic bounds grow with the stream)."""
        return self.bound.limit

    def wait_for_room(self, pending: Callable[[], int]) -> bool:
        """Before each read: tell the engine when the buffer is half full (:attr:`on_ready`, once per
        ``extract()``: it takes an early chunk while reading goes on); and back-pressure: if ``pending()`` bytes
        (read under the lock) reach the bound, stop reading until ``extract()`` takes data (it notifies
        :attr:`changed`) or the listener stops. Returns True if it waited (time blocked on purpose is not silence:
        liveness clocks restart)."""
        with self.lock:
            held = pending()
            ready = self.on_ready is not None and not self._told and 2 * held >= self.buffer_bytes
            self._told |= ready
        if ready:
            self.on_ready(READY_BUFFER)
        if held < self.buffer_bytes:
            return False
        with self.changed:
            if pending() < self.buffer_bytes:
                return False
            self._paused = self._paused_since_take = True
            self.counters["back_pressure_pauses"] += 1
            self.warn(
                "buffer full",
                f"{self.name}: buffer full ({self.bound.describe()}): reading from {self.where} paused until a "
                f"cycle takes the data",
            )
            began = time.monotonic()
            while pending() >= self.buffer_bytes and not self.stopping.is_set():
                self.changed.wait(POLL_S)
            self.counters["back_pressure_ms"] += int((time.monotonic() - began) * 1000)
            self._paused = False
            return True

    def run_ended(self) -> None:
        """The reader saw a run end (call without the lock): the engine may take the run's last chunk now
        (:attr:`on_ready`), so that its final output does not wait for the next cycle."""
        if self.on_ready is not None:
            self.on_ready(READY_RUN_END)

    def taken(self, nbytes: int) -> None:
        """``extract()`` took ``nbytes`` of buffered data (call with :attr:`lock` held): size the automatic bound
        (:meth:`~.sizing.BufferBound.cycle`; not while the engine takes early chunks, which keep the buffer small)
        and wake a reader waiting for room."""
        self._told = False
        if self.on_ready is None:
            self._size(nbytes)
        self._paused_since_take = False
        self.changed.notify_all()

    def _size(self, nbytes: int) -> None:
        before = self.bound.limit
        if self.bound.cycle(nbytes, self._paused_since_take):
            self.log.info(
                "%s: buffer bound raised from %.0f MiB to %s for %.0f MiB per cycle",
                self.name,
                before / 2**20,
                self.bound.describe(),
                nbytes / 2**20,
            )
        if self.bound.short:
            self.warn(
                "memory short",
                f"{self.name}: {HEADROOM_CYCLES} cycles of this stream need {self.bound.wanted / 2**20:.0f} MiB of "
                f"buffer; the memory limit leaves {self.bound.cap / 2**20:.0f} MiB (system_mem_limit_perc, "
                f"mem_limit_mb): a full buffer pauses reading until the next cycle, and the data falls behind "
                f"(accum_method Add with early_chunks takes it early instead)",
            )

    # --- connections --------------------------------------------------------------------------------------------
    def connect_tcp(self, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP connection to ``host:port`` within ``timeout`` seconds, ended early by :meth:`interrupt`.

        Each resolved address is tried in turn with a non-blocking connect, polled every :data:`POLL_S`.

        Raises:
            OSError: no address could be connected (the last error), or the timeout passed
                (:class:`TimeoutError`).
            SourceError: (recoverable) interrupted.
        """
        deadline = time.monotonic() + timeout
        error: OSError = OSError(f"cannot resolve {host}")
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                code = sock.connect_ex(address)
                while code in (errno.EINPROGRESS, errno.EALREADY):
                    if self.stopping.is_set():
                        raise SourceError(f"{self.name}: connecting to {self.where} interrupted", recoverable=True)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no answer within {timeout:g} s")
                    _, writable, _ = select.select([], [sock], [], min(left, POLL_S))
                    if writable:
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        break
                if code:
                    raise OSError(code, os.strerror(code))
                sock.setblocking(True)
                return sock
            except OSError as err:
                sock.close()
                error = err
            except BaseException:
                sock.close()
                raise
        raise error

    def back_off(self, reason: str, lasted: float) -> None:
        """Wait before the next connection attempt (1, 2, 4 ... 60 s; from 1 s again after a connection that
        lasted a minute or delivered data, see :meth:`connected_well`); the state says why meanwhile."""
        delay = self.backoff.failed(lasted)
        self.log.warning("Connection to %s at %s lost (%s); reconnecting in %g s", self.peer, self.where, reason, delay)
        with self.lock:
            self._retry = (self.clock.monotonic() + delay, reason)
        self.sleep(delay)
        with self.lock:
            self._retry = None

    def connected_well(self) -> None:
        """A connection delivered data: the next failure waits the shortest delay again."""
        self.backoff.succeeded()

    # --- counters, state, warnings -----------------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter (takes the lock)."""
        with self.lock:
            self.counters[name] += n

    def skipped(self, reason: str, n: int = 1) -> None:
        """Count ``n`` messages skipped for ``reason`` (lock held by the caller)."""
        self.counters[skipped_counter(reason)] += n

    def set_phase(self, phase: str, *, healthy: bool = True) -> None:
        """The reader's phase for the health line, e.g. ``"receiving from host:port"`` (takes the lock)."""
        with self.lock:
            self._phase, self._healthy = phase, healthy

    def warn(self, key: str, message: str) -> None:
        """Log ``message`` as a WARNING unless one of the same ``key`` was logged within :data:`WARN_EVERY_S`."""
        now = self.clock.monotonic()
        if now - self._warned.get(key, -math.inf) >= WARN_EVERY_S:
            self._warned[key] = now
            self.log.warning("%s", message)

    def health(
        self, phase: str | None = None, extra: Mapping[str, int] | None = None, *, healthy: bool = True
    ) -> SourceHealth:
        """The health line and counters (takes the lock; call it without holding it).

        Args:
            phase: the phase to show instead of the reader's own (a finer state the protocol knows), or None.
            extra: counters of the protocol layer (e.g. a decoder's), added to :attr:`counters`.
            healthy: with ``phase``: whether that phase is healthy.
        """
        with self.lock:
            counters = Counter(dict.fromkeys(COUNTERS, 0))
            counters.update(self.counters)
            counters.update(extra or {})
            counters["messages_skipped"] = sum(v for k, v in counters.items() if k.startswith("skipped_"))
            counters["buffer_limit_bytes"] = self.bound.limit
            if self._failure:
                return SourceHealth(f"reader failed: {self._failure} ({self.where})", False, dict(counters))
            if self._retry is not None:
                left = max(0, math.ceil(self._retry[0] - self.clock.monotonic()))
                return SourceHealth(
                    f"reconnecting to {self.where} in {left} s ({self._retry[1]})", False, dict(counters)
                )
            state, healthy = (phase, healthy) if phase is not None else (self._phase, self._healthy)
            if self._paused:
                state += f"; reading paused: buffer full ({self.buffer_bytes / 2**20:.0f} MiB)"
            return SourceHealth(state, healthy, dict(counters))
