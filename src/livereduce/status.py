"""What the daemon tells the outside world about itself: systemd notifications and a JSON status file.

* :class:`Notifier` sends ``sd_notify`` messages (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ...) to the
  datagram socket systemd names in ``$NOTIFY_SOCKET`` (``Type=notify``/``Type=notify-reload`` units).
* :class:`StatusFile` writes the supervisor's status dictionary as JSON, atomically, for ``livereduce --status``
  and for monitoring (default location: :func:`default_status_file`).
* :func:`summary`, :func:`health` and :func:`format_status` turn a status dictionary into text.

Neither the notifier nor the status file ever raises: a problem is one WARNING on logger ``livereduce.status``
(again only after it went away and came back), and the daemon carries on.

The status dictionary (times are seconds since the Unix epoch, sizes bytes)::

    {"pid": int, "pid_created": float (the process's creation time, to tell a reused pid), "version": str,
     "state": "starting" | "running" | "reloading" | "backing off" |
     "waiting for scripts" | "stopping" | "stopped" | "stop timed out",
     "updated": float, "started": float, "update_every": float,
     "config": {"path": str | None, "sha256": str},
     "scripts": {"proc": {"path": str, "sha256": str} | None, "post_proc": {...} | None},
     "engine": {"name": str, "state": str, "source": str, "source_healthy": bool, "source_counters": {str: int},
                "run_number": int, "chunks": int, "events": int, "accumulated_events": int, "accumulation": str,
                "dropped_events": {reason: int}, "last_cycle_end": float | None,
                "last_cycle_duration": float | None, "last_error": str, "last_error_time": float | None,
                "errors": int},
     "restarts": {"scripts": int, "memory": int, "failures": int, "signals": int, "watcher": int},
     "rss_bytes": int, "memory_limit_bytes": int | None, "log_records_lost": int,
     "metrics_url": str (when the metrics endpoint runs),
     "exit": {"code": int, "reason": str, "time": float} (once the daemon has decided to exit)}

The engine's counts (chunks, events, errors, dropped events) are totals since the daemon started, over every
engine restart.

Every reader here tolerates missing keys and ``None`` values (a status written early, or by another version).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import sdnotify

from livereduce.errors import LiveReduceError

_log = logging.getLogger("livereduce.status")

DEFAULT_STATUS_FILE = Path("/run/livereduce/status.json")
"""The status file under the unit's ``RuntimeDirectory=livereduce``."""

HEALTHY_STATES = ("running", "starting", "reloading")
"""Daemon states in which the daemon counts as healthy (given the other checks pass)."""

MIN_STALL_SECONDS = 60.0
"""A running daemon is stalled when its last cycle is older than ``max(3 * update_every, MIN_STALL_SECONDS)``."""

SEND_TIMEOUT = 1.0
"""Seconds a notification may block (a full socket buffer) before it is dropped with a warning."""

_MB = 1024 * 1024


# --- systemd notifications -----------------------------------------------------------------------------------


class _Connection(sdnotify.SystemdNotifier):
    """sdnotify's notifier connected to an explicit address.

    sdnotify 0.3.2 reads the address only from ``$NOTIFY_SOCKET`` inside its constructor (where it also maps a
    leading ``@`` to ``\\0``, the abstract namespace); this constructor takes the address as an argument and
    applies the same mapping. ``debug=True`` makes the library's :meth:`notify` raise instead of swallowing
    every error, so :class:`Notifier` can report it.

    Raises:
        OSError: the socket cannot be created or connected.
        ValueError: the address is not a valid socket path.
    """

    def __init__(self, address: str) -> None:  # the base constructor reads only $NOTIFY_SOCKET
        self.debug = True
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.socket.settimeout(SEND_TIMEOUT)
            self.socket.connect("\0" + address[1:] if address.startswith("@") else address)
        except (OSError, ValueError):
            self.socket.close()
            raise

    def close(self) -> None:
        self.socket.close()


class Notifier:
    """systemd ``sd_notify`` over ``$NOTIFY_SOCKET`` (a datagram socket); does nothing when it is unset.

    An address starting with ``@`` is a Linux abstract socket (``@name`` is ``\\0name``). The socket is
    connected on the first message; after a failure the next message reconnects. Messages are UTF-8.

    Attributes:
        enabled: a socket address is set (messages are sent, or at least attempted).
    """

    def __init__(self, socket_path: str | None = None) -> None:
        """``socket_path``: the socket's address; default ``os.environ.get("NOTIFY_SOCKET")``."""
        self._address = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self.enabled: bool = bool(self._address)
        self._connection: _Connection | None = None
        self._warned = False
        self._lock = threading.Lock()

    def ready(self) -> None:
        """Start-up (or a reload) is complete: ``READY=1``."""
        self._send("READY=1")

    def main_pid(self, pid: int) -> None:
        """The daemon's process is the service's main process: ``MAINPID=<pid>``.

        Under a wrapper that does not exec (``nsd-app-wrap.sh``'s ``pixi_launch`` is a shell function), systemd's
        ``$MAINPID`` would otherwise be the wrapper's shell, and ``ExecReload=/bin/kill -HUP $MAINPID`` would kill
        the shell instead of reloading the daemon (needs ``NotifyAccess=all``, as the units set).
        """
        self._send(f"MAINPID={pid}")

    def status(self, text: str) -> None:
        """A one-line status for ``systemctl status``: ``STATUS=<text>`` (line breaks become spaces)."""
        self._send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        """Keep-alive for ``WatchdogSec=``: ``WATCHDOG=1``."""
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """The daemon begins to stop: ``STOPPING=1``."""
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """A reload begins: ``RELOADING=1`` plus ``MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>`` (one datagram).

        systemd >= 253 requires ``MONOTONIC_USEC`` with ``RELOADING=1`` for ``Type=notify-reload`` units (older
        versions ignore it). Call :meth:`ready` when the reload is complete.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def close(self) -> None:
        """Close the socket (a later message reopens it)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _send(self, message: str) -> None:
        if not self._address:
            return
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = _Connection(self._address)
                # sdnotify encodes with Latin-1; the protocol is UTF-8: pass the UTF-8 bytes as Latin-1 text,
                # which the library turns back into exactly these bytes.
                self._connection.notify(message.encode("utf-8").decode("latin-1"))
            except (OSError, ValueError) as err:
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None
                if not self._warned:
                    self._warned = True
                    _log.warning("cannot notify systemd via '%s': %s", self._address, err)
                return
            self._warned = False


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1`` (``WatchdogSec=``), or None when it expects none.

    Source: ``$WATCHDOG_USEC``, valid only for this process (``$WATCHDOG_PID`` unset or equal to our pid), as
    ``sd_watchdog_enabled(3)``. Ping at about half this interval.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


# --- status file ----------------------------------------------------------------------------------------------


class StatusFile:
    """The daemon's status as JSON, written atomically (temp file in the same directory + ``os.replace``).

    A reader therefore always sees either the previous or the new complete file. The file is mode 0644 so that
    other users can run ``livereduce --status``.
    """

    def __init__(self, path: Path | None) -> None:
        """``path``: where to write; None disables writing."""
        self.path = path
        self._warned = False

    def write(self, status: dict[str, object]) -> None:
        """Replace the file with ``status`` as JSON; creates the directory if needed.

        An ``OSError`` is one WARNING (until a write succeeds again), never an exception. Values JSON cannot
        represent are written as ``str(value)``.
        """
        if self.path is None:
            return
        text = json.dumps(status, indent=2, sort_keys=True, default=str) + "\n"
        temp: str | None = None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                os.fchmod(stream.fileno(), 0o644)
                stream.write(text)
            os.replace(temp, self.path)
            temp = None
        except OSError as err:
            self._warn("cannot write status file '%s': %s", err)
            return
        finally:
            if temp is not None:
                Path(temp).unlink(missing_ok=True)
        self._warned = False

    def remove(self) -> None:
        """Delete the file if it exists (at exit); an ``OSError`` is a WARNING, never an exception."""
        if self.path is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as err:
            self._warn("cannot remove status file '%s': %s", err)

    def _warn(self, message: str, err: OSError) -> None:
        if not self._warned:
            self._warned = True
            _log.warning(message, self.path, err.strerror or err)


def _user_runtime_dir() -> Path:
    """A per-user directory that does not depend on the working directory: ``$XDG_RUNTIME_DIR/livereduce`` if
    that variable names a directory, else ``/tmp/livereduce-<uid>``."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "livereduce"
    return Path(tempfile.gettempdir()) / f"livereduce-{os.geteuid()}"


def default_status_file() -> Path:
    """Where the daemon writes its status (the same wherever it was started from).

    ``$LIVEREDUCE_STATUS_FILE`` if set (the template unit ``livereduce@.service`` sets one per instance), else
    ``/run/livereduce/status.json`` if ``/run/livereduce`` is a writable directory (systemd
    ``RuntimeDirectory=livereduce``), else ``status.json`` in :func:`_user_runtime_dir`.
    """
    if os.environ.get("LIVEREDUCE_STATUS_FILE"):
        return Path(os.environ["LIVEREDUCE_STATUS_FILE"])
    run_dir = DEFAULT_STATUS_FILE.parent
    if run_dir.is_dir() and os.access(run_dir, os.W_OK | os.X_OK):
        return DEFAULT_STATUS_FILE
    return _user_runtime_dir() / "status.json"


def find_status_file() -> Path:
    """Where a reader (``livereduce --status``) should look: the first existing file among the candidates of
    :func:`default_status_file`, else :func:`default_status_file`.

    A reader is often another user than the daemon's (``/run/livereduce`` is then readable, not writable).
    """
    if os.environ.get("LIVEREDUCE_STATUS_FILE"):
        return Path(os.environ["LIVEREDUCE_STATUS_FILE"])
    for path in (DEFAULT_STATUS_FILE, _user_runtime_dir() / "status.json"):
        if path.is_file():
            return path
    return default_status_file()


def read_status(path: Path) -> dict[str, object]:
    """The status dictionary in ``path``.

    Raises:
        LiveReduceError: the file is missing ("is the daemon running?"), unreadable, not valid JSON or not a
            JSON object; the one-line message names the file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LiveReduceError(f"no status file '{path}': is the daemon running?") from None
    except OSError as err:
        raise LiveReduceError(f"cannot read status file '{path}': {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise LiveReduceError(f"status file '{path}' is not valid JSON (not UTF-8 text)") from None
    try:
        status = json.loads(text)
    except json.JSONDecodeError as err:
        raise LiveReduceError(f"status file '{path}' is not valid JSON: {err}") from None
    if not isinstance(status, dict):
        raise LiveReduceError(f"status file '{path}' is not valid: expected a JSON object") from None
    return status


# --- reading a status dictionary ------------------------------------------------------------------------------


def _section(status: dict[str, object], key: str) -> dict[str, object]:
    value = status.get(key)
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: object) -> int:
    number = _number(value)
    return int(number) if number is not None else 0


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _count(n: int) -> str:
    """``4500000`` -> ``4.5M`` (k, M, G)."""
    for limit, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{unit}"
    return str(n)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if abs(value) < 10 else f"{value:.0f} s"


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return "never"
    age = now - when
    return f"{_seconds(age)} ago" if age >= 0 else f"{_seconds(-age)} in the future (clock skew?)"


def _mb(n: float) -> str:
    return f"{n / _MB:.0f} MB"


def _last_cycle(status: dict[str, object]) -> float | None:
    return _number(_section(status, "engine").get("last_cycle_end"))


def stall_limit(status: dict[str, object]) -> float:
    """Seconds without a completed cycle after which a running daemon is stalled: ``max(3 * update_every, 60)``."""
    return max(3 * (_number(status.get("update_every")) or 0.0), MIN_STALL_SECONDS)


def summary(status: dict[str, object], now: float | None = None) -> str:
    """One line for ``STATUS=`` and logs.

    E.g. ``running: run 47210, 123 chunks, 4.5M events, last cycle 3.0 s ago, RSS 812 MB``. ``now``: the
    reference time for ages (default: the current time).
    """
    now = time.time() if now is None else now
    engine = _section(status, "engine")
    parts = []
    run = _int(engine.get("run_number"))
    if run:
        parts.append(f"run {run}")
    if engine:
        chunks = _int(engine.get("chunks"))
        parts.append(f"{chunks} chunk{'' if chunks == 1 else 's'}")
        parts.append(f"{_count(_int(engine.get('events')))} events")
        last = _last_cycle(status)
        parts.append(f"last cycle {_ago(last, now)}" if last is not None else "no cycle yet")
        errors = _int(engine.get("errors"))
        if errors:
            parts.append(f"{errors} error{'' if errors == 1 else 's'}")
    rss = _number(status.get("rss_bytes"))
    if rss is not None:
        parts.append(f"RSS {_mb(rss)}")
    state = _text(status.get("state")) or "unknown"
    return f"{state}: {', '.join(parts)}" if parts else state


def process_created(pid: int | None = None) -> float | None:
    """When the process (default: this one) was created, Unix seconds (psutil), or None if unknown."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _pid_alive(pid: int, created: float | None = None) -> bool:
    """Whether the daemon's process still exists: a process with this pid (``os.kill(pid, 0)``; one of another
    user counts) and, when the status recorded it (``pid_created``), the same creation time (else the pid was
    reused by another process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if created is not None:
        now_created = process_created(pid)
        return now_created is None or abs(now_created - created) < 0.05
    return True


_STATE_REASONS = {
    "waiting for scripts": "the daemon is waiting for its processing scripts: no data is being reduced",
    "backing off": "live data failed and is restarted after a delay",
    "stopping": "the daemon is stopping",
    "stopped": "the daemon has stopped",
    "stop timed out": "live data did not stop within stop_timeout_sec",
}

STATUS_RUNNING = 0
"""``--status``: the daemon runs and is healthy (LSB ``status``: program is running)."""
STATUS_DEAD = 1
"""``--status``: the daemon's process is gone without a clean stop, its status file left (LSB: program is dead
and a pid file exists)."""
STATUS_NOT_RUNNING = 3
"""``--status``: not running: it stopped cleanly (exit 0), or there is no status file (LSB: not running)."""
STATUS_UNKNOWN = 4
"""``--status``: the status file cannot be read (LSB: status unknown)."""
STATUS_UNHEALTHY = 150
"""``--status``: the daemon runs but is unhealthy (stalled, failing, waiting); LSB leaves 150-199 to
applications."""


def status_code(status: dict[str, object], now: float | None = None) -> int:
    """The LSB-style exit code of ``livereduce --status`` for this status (see the ``STATUS_*`` constants)."""
    healthy, _ = health(status, now)
    if healthy:
        return STATUS_RUNNING
    pid = status.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        if _pid_alive(pid, _number(status.get("pid_created"))):
            return STATUS_UNHEALTHY
    exit_record = _section(status, "exit")
    if exit_record and _int(exit_record.get("code")) == 0 and "code" in exit_record:
        return STATUS_NOT_RUNNING
    return STATUS_DEAD


def health(status: dict[str, object], now: float | None = None) -> tuple[bool, str]:
    """``(healthy, reason)``: whether the daemon described by ``status`` works, and why (a short sentence).

    Unhealthy, checked in this order, when:

    1. its process (``pid``) is not alive (``os.kill(pid, 0)``, and not a newer process with a reused pid);
    2. ``state`` is not one of ``running``, ``starting``, ``reloading``;
    3. the engine's state is ``failed``;
    4. while ``running``: the last completed cycle (``engine.last_cycle_end``, or the daemon's start ``started``
       when no cycle completed yet) is older than :func:`stall_limit` seconds (stalled), unless the engine is
       ``idle`` (its source has ended);
    5. the engine's ``last_error`` is newer than its last completed cycle.

    ``now``: the reference time for ages (default: the current time).
    """
    now = time.time() if now is None else now
    state = _text(status.get("state")) or "unknown"
    engine = _section(status, "engine")
    last_error = " ".join(_text(engine.get("last_error")).splitlines())
    pid = status.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False, "the status has no valid pid"
    if not _pid_alive(pid, _number(status.get("pid_created"))):
        exit_record = _section(status, "exit")
        if exit_record:
            why = _text(exit_record.get("reason")) or "no reason recorded"
            code, when = _int(exit_record.get("code")), _ago(_number(exit_record.get("time")), now)
            return False, f"the daemon stopped with exit {code} ({why}) {when}"
        updated = _ago(_number(status.get("updated")), now)
        return False, f"process {pid} is not running: it died without updating the status (updated {updated})"
    if state not in HEALTHY_STATES:
        reason = _STATE_REASONS.get(state, f"the daemon is in state '{state}'")
        if state in ("backing off", "stop timed out") and last_error:
            reason += f": {last_error}"
        return False, reason
    engine_state = _text(engine.get("state"))
    if engine_state == "failed":
        return False, f"the engine failed: {last_error}" if last_error else "the engine failed"
    last_cycle = _last_cycle(status)
    if state == "running" and engine_state != "idle":
        reference = last_cycle if last_cycle is not None else _number(status.get("started"))
        limit = stall_limit(status)
        if reference is not None and now - reference > limit:
            what = "the last cycle ended" if last_cycle is not None else "no cycle completed since the start"
            return False, f"stalled: {what} {_ago(reference, now)} (limit {_seconds(limit)})"
    error_time = _number(engine.get("last_error_time"))
    if last_error and error_time is not None and (last_cycle is None or error_time > last_cycle):
        return False, f"the last cycle failed {_ago(error_time, now)}: {last_error}"
    if state == "starting":
        return True, "the daemon is starting"
    if state == "reloading":
        return True, "the daemon is reloading"
    if engine_state == "idle":
        return True, "running, idle: the data source has ended"
    if last_cycle is None:
        return True, "running, waiting for the first cycle"
    return True, f"running, last cycle {_ago(last_cycle, now)}"


def _local_time(when: float | None, now: float) -> str:
    if when is None:
        return "unknown"
    stamp = datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"{stamp} ({_ago(when, now)})"


def _file(entry: object) -> str:
    if not isinstance(entry, dict):
        return "none"
    path = _text(entry.get("path")) or "defaults"
    sha = _text(entry.get("sha256"))
    return f"{path} (sha256 {sha[:12]})" if sha else path


def _events(engine: dict[str, object]) -> str:
    """``"4500000 received"`` plus the events dropped at the source, by reason."""
    text = f"{_int(engine.get('events'))} received"
    dropped = engine.get("dropped_events")
    if isinstance(dropped, dict) and dropped:
        parts = ", ".join(f"{_int(count)} {reason}" for reason, count in dropped.items())
        text += f"; {sum(_int(count) for count in dropped.values())} dropped ({parts})"
    return text


def _accumulation(engine: dict[str, object]) -> str:
    """What the accumulation holds: ``"1200000 events"`` or its shape (histograms)."""
    events = _int(engine.get("accumulated_events"))
    if events:
        return f"{events} events"
    return _text(engine.get("accumulation")) or "none yet"


def format_status(status: dict[str, object], now: float | None = None) -> str:
    """Multi-line text for ``livereduce --status``: aligned ``key: value`` lines, the health verdict first.

    Ages are in seconds, sizes in MB (2**20 bytes). ``now``: the reference time for ages (default: the current
    time).
    """
    now = time.time() if now is None else now
    healthy, reason = health(status, now)
    engine = _section(status, "engine")
    scripts = _section(status, "scripts")
    restarts = _section(status, "restarts")
    rows: list[tuple[str, str]] = [
        ("health", f"{'OK' if healthy else 'UNHEALTHY'}: {reason}"),
        ("state", _text(status.get("state")) or "unknown"),
    ]
    exit_record = _section(status, "exit")
    if exit_record:
        why = _text(exit_record.get("reason")) or "no reason recorded"
        when = _local_time(_number(exit_record.get("time")), now)
        rows.append(("stopped", f"exit {_int(exit_record.get('code'))} ({why}) at {when}"))
    rows += [
        ("pid", str(status.get("pid", "unknown"))),
        ("version", _text(status.get("version")) or "unknown"),
        ("started", _local_time(_number(status.get("started")), now)),
        ("updated", _local_time(_number(status.get("updated")), now)),
        ("config", _file(status.get("config"))),
        ("proc script", _file(scripts.get("proc"))),
        ("post_proc script", _file(scripts.get("post_proc"))),
    ]
    update_every = _number(status.get("update_every"))
    if update_every is not None:
        rows.append(("update every", _seconds(update_every)))
    if engine:
        rows += [
            ("engine", f"{_text(engine.get('name')) or 'unknown'} ({_text(engine.get('state')) or 'unknown'})"),
            ("source", _text(engine.get("source")) or "unknown"),
            ("run", str(_int(engine.get("run_number")) or "none")),
            ("chunks", str(_int(engine.get("chunks")))),
            ("events", _events(engine)),
            ("accumulation", _accumulation(engine)),
        ]
        last = _last_cycle(status)
        duration = _number(engine.get("last_cycle_duration"))
        cycle = _ago(last, now) if last is not None else "none yet"
        if last is not None and duration is not None:
            cycle += f", took {_seconds(duration)}"
        rows.append(("last cycle", cycle))
        rows.append(("errors", f"{_int(engine.get('errors'))} failed cycles"))
        last_error = " ".join(_text(engine.get("last_error")).splitlines())
        if last_error:
            rows.append(("last error", f"{last_error} ({_local_time(_number(engine.get('last_error_time')), now)})"))
    else:
        rows.append(("engine", "none"))
    if restarts:
        rows.append(("restarts", ", ".join(f"{key} {_int(value)}" for key, value in restarts.items())))
    rss = _number(status.get("rss_bytes"))
    limit = _number(status.get("memory_limit_bytes"))
    memory = f"RSS {_mb(rss)}" if rss is not None else "RSS unknown"
    memory += f" of limit {_mb(limit)}" if limit is not None else " (no limit)"
    rows.append(("memory", memory))
    width = max(len(key) for key, _ in rows) + 1
    return "\n".join(f"{key + ':':<{width}} {value}" for key, value in rows)
