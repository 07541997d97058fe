"""The daemon's status as a typed value, and the verdict on its health.

:class:`Status` is what the supervisor publishes (once a second and at every change of state) to the status file
(:mod:`livereduce.status_file`), to ``STATUS=`` and to the metrics endpoint (:mod:`livereduce.metrics`), and what
``livereduce --status`` reads back. :meth:`Status.to_json` gives the JSON object of the file (keys below);
:meth:`Status.from_json` accepts any JSON value and never raises: a missing key or a value of the wrong type
becomes the field's default (a status written early, or by another version of livereduce).

The JSON object (times are seconds since the Unix epoch, sizes bytes)::

    {"pid": int, "pid_created": float (the process's creation time, to tell a reused pid), "version": str,
     "state": "starting" | "connecting" | "running" | "reloading" | "backing off" | "waiting for scripts" |
              "stopping" | "stopped" | "stop timed out",
     "state_since": float, "updated": float, "started": float, "update_every": float,
     "config": {"path": str | None, "sha256": str},
     "scripts": {"proc": {"path": str, "sha256": str} | None, "post_proc": {...} | None},
     "engine": {"name": str, "state": str, "source": str, "source_healthy": bool, "source_counters": {str: int},
                "run_number": int, "chunks": int, "events": int, "accumulated_events": int, "accumulation": str,
                "dropped_events": {reason: int}, "last_cycle_end": float | None,
                "last_cycle_duration": float | None, "last_error": str, "last_error_time": float | None,
                "errors": int, "lag": float | None, ..., "checkpoint": str, "first_pulse": str},
     "restarts": {"scripts": int, "memory": int, "failures": int, "signals": int, "watcher": int},
     "reloads": {"post_proc": int} (script edits applied without a restart),
     "rss_bytes": int, "memory_limit_bytes": int | None, "log_records_lost": int,
     "http_url": str (the page, when the web server runs), "metrics_url": str (its /metrics),
     "exit": {"code": int, "reason": str, "time": float} (once the daemon has decided to exit)}

The engine's counts (chunks, events, errors, dropped events) are totals since the daemon started, over every
engine restart (:class:`EngineTotals`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from livereduce.engines.base import EngineState, Health

HEALTHY_STATES = ("running", "starting", "connecting", "reloading")
"""Daemon states in which the daemon counts as healthy (given the other checks pass)."""

MIN_STALL_SECONDS = 60.0
"""A running daemon is stalled when its last cycle is older than ``max(3 * update_every, MIN_STALL_SECONDS)``."""

STATUS_RUNNING = 0
"""``--status``: the daemon runs and is healthy (LSB ``status``: program is running)."""
STATUS_DEAD = 1
"""``--status``: the daemon's process is gone without a clean stop, its status file left (LSB: program is dead
and a pid file exists)."""
STATUS_NOT_RUNNING = 3
"""``--status``: not running: it stopped cleanly (exit 0), or there is no status file (LSB: not running)."""
STATUS_UNKNOWN = 4
"""``--status``: the status file cannot be read, or belongs to another configuration (LSB: status unknown)."""
STATUS_UNHEALTHY = 150
"""``--status``: the daemon runs but is unhealthy (stalled, failing, waiting); LSB leaves 150-199 to
applications."""


# --- tolerant conversions of JSON values --------------------------------------------------------------------------
def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: object) -> int:
    number = _number(value)
    return int(number) if number is not None else 0


def _optional_int(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _counts(value: object) -> dict[str, int]:
    return {str(key): _int(count) for key, count in value.items()} if isinstance(value, dict) else {}


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- the typed status ---------------------------------------------------------------------------------------------
@dataclass
class FileRecord:
    """A file the daemon read: its path (None: the built-in defaults, no file) and the SHA-256 of its bytes."""

    path: str | None = None
    sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: object) -> FileRecord | None:
        """None unless ``data`` is a JSON object."""
        if not isinstance(data, dict):
            return None
        return cls(_optional_text(data.get("path")), _text(data.get("sha256")))


@dataclass
class EngineStatus(Health):
    """Live data as the status shows it: an engine's :class:`~livereduce.engines.base.Health` (totals over every
    engine the daemon started, see :class:`EngineTotals`), with the engine's name, and its state as text (a file
    written by another version may hold a state this one does not know)."""

    state: str = ""
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> EngineStatus | None:
        """None unless ``data`` is a JSON object."""
        if not isinstance(data, dict):
            return None
        healthy = data.get("source_healthy", True)
        return cls(
            name=_text(data.get("name")),
            state=_text(data.get("state")),
            source=_text(data.get("source")),
            source_healthy=healthy if isinstance(healthy, bool) else True,
            source_counters=_counts(data.get("source_counters")),
            run_number=_int(data.get("run_number")),
            chunks=_int(data.get("chunks")),
            events=_int(data.get("events")),
            accumulated_events=_int(data.get("accumulated_events")),
            accumulation=_text(data.get("accumulation")),
            dropped_events=_counts(data.get("dropped_events")),
            last_cycle_end=_number(data.get("last_cycle_end")),
            last_cycle_duration=_number(data.get("last_cycle_duration")),
            last_error=_text(data.get("last_error")),
            last_error_time=_number(data.get("last_error_time")),
            errors=_int(data.get("errors")),
            lag=_number(data.get("lag")),
            lag_basis=_text(data.get("lag_basis")),
            lagging=_text(data.get("lagging")),
            offset_lag=_counts(data.get("offset_lag")),
            checkpoint=_text(data.get("checkpoint")),
            first_pulse=_text(data.get("first_pulse")),
        )


@dataclass
class ExitRecord:
    """How the daemon decided to exit: the exit code (None: not recorded), the reason and when (Unix seconds)."""

    code: int | None
    reason: str = ""
    time: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "time": self.time}

    @classmethod
    def from_json(cls, data: object) -> ExitRecord | None:
        """None unless ``data`` is a non-empty JSON object."""
        if not isinstance(data, dict) or not data:
            return None
        return cls(_optional_int(data.get("code")), _text(data.get("reason")), _number(data.get("time")))


@dataclass
class Status:
    """The daemon's status (see the module's docstring for the JSON keys; the fields have the same names).

    ``pid`` is None unless it is a positive integer; ``scripts`` maps ``proc`` and ``post_proc`` to the script
    that runs (None: no such script); ``restarts`` counts restarts by reason.
    """

    pid: int | None = None
    pid_created: float | None = None
    version: str = ""
    state: str = ""
    state_since: float | None = None
    updated: float | None = None
    started: float | None = None
    update_every: float | None = None
    config: FileRecord | None = None
    scripts: dict[str, FileRecord | None] = field(default_factory=dict)
    engine: EngineStatus | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    reloads: dict[str, int] = field(default_factory=dict)
    rss_bytes: int | None = None
    memory_limit_bytes: int | None = None
    log_records_lost: int = 0
    http_url: str | None = None
    exit: ExitRecord | None = None

    @property
    def metrics_url(self) -> str | None:
        """The web server's ``/metrics`` (``http_url`` + ``metrics``), or None without a web server."""
        return f"{self.http_url}metrics" if self.http_url is not None else None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the status file (``metrics_url`` and ``exit`` only when set)."""
        data: dict[str, Any] = {
            "pid": self.pid,
            "pid_created": self.pid_created,
            "version": self.version,
            "state": self.state,
            "state_since": self.state_since,
            "updated": self.updated,
            "started": self.started,
            "update_every": self.update_every,
            "config": self.config.to_json() if self.config else None,
            "scripts": {role: record.to_json() if record else None for role, record in self.scripts.items()},
            "engine": self.engine.to_json() if self.engine else None,
            "restarts": dict(self.restarts),
            "reloads": dict(self.reloads),
            "rss_bytes": self.rss_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
            "log_records_lost": self.log_records_lost,
        }
        if self.http_url is not None:
            data["http_url"] = self.http_url
        if self.metrics_url is not None:
            data["metrics_url"] = self.metrics_url
        if self.exit is not None:
            data["exit"] = self.exit.to_json()
        return data

    @classmethod
    def from_json(cls, data: object) -> Status:
        """The status in a JSON value; never raises (wrong or missing values become the defaults)."""
        data = _object(data)
        pid = data.get("pid")
        return cls(
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
            pid_created=_number(data.get("pid_created")),
            version=_text(data.get("version")),
            state=_text(data.get("state")),
            state_since=_number(data.get("state_since")),
            updated=_number(data.get("updated")),
            started=_number(data.get("started")),
            update_every=_number(data.get("update_every")),
            config=FileRecord.from_json(data.get("config")),
            scripts={str(role): FileRecord.from_json(entry) for role, entry in _object(data.get("scripts")).items()},
            engine=EngineStatus.from_json(data.get("engine")),
            restarts=_counts(data.get("restarts")),
            reloads=_counts(data.get("reloads")),
            rss_bytes=_optional_int(data.get("rss_bytes")),
            memory_limit_bytes=_optional_int(data.get("memory_limit_bytes")),
            log_records_lost=_int(data.get("log_records_lost")),
            http_url=_optional_text(data.get("http_url")),
            exit=ExitRecord.from_json(data.get("exit")),
        )


# --- live data across engine restarts -----------------------------------------------------------------------------
def _newer(first: tuple[str, float | None], second: tuple[str, float | None]) -> tuple[str, float | None]:
    """The newer of two ``(error, time)`` records; a record without an error or without a time is older."""
    if not second[0]:
        return first
    if not first[0]:
        return second
    return second if (second[1] or float("-inf")) >= (first[1] or float("-inf")) else first


class EngineTotals:
    """What the status says about live data over every engine the daemon started.

    The counts (chunks, events, failed cycles, dropped events) are summed over the engines that ended and the one
    that runs; while none runs, the last one's values are shown; the last error is the newest one seen anywhere:
    an error the supervisor recorded (a failed start), or the last error of any engine, ended or running.
    """

    def __init__(self) -> None:
        self._done = Health()
        self._last: Health | None = None
        self._error: tuple[str, float | None] = ("", None)

    def error(self, text: str, when: float) -> None:
        """Record an error the supervisor saw (``when``: Unix seconds)."""
        self._error = _newer(self._error, (text, when))

    def ended(self, final: Health) -> None:
        """An engine ended with this final health: keep its counts, its values and its last error."""
        done = self._done
        done.chunks += final.chunks
        done.events += final.events
        done.errors += final.errors
        for reason, count in final.dropped_events.items():
            done.dropped_events[reason] = done.dropped_events.get(reason, 0) + count
        self._last = final
        self._error = _newer(self._error, (final.last_error, final.last_error_time))

    def status(self, name: str, current: Health | None) -> EngineStatus:
        """The engine's part of the status; ``name``: the last engine's; ``current``: the running engine's."""
        shown = current or self._last or Health(state=EngineState.STOPPED)
        running = current or Health()
        dropped = dict(self._done.dropped_events)
        for reason, count in running.dropped_events.items():
            dropped[reason] = dropped.get(reason, 0) + count
        error = self._error if current is None else _newer(self._error, (current.last_error, current.last_error_time))
        values = {field.name: getattr(shown, field.name) for field in dataclasses.fields(Health)}
        return EngineStatus(
            **values
            | {
                "name": name,
                "state": str(shown.state),
                "source_counters": dict(shown.source_counters),
                "chunks": self._done.chunks + running.chunks,
                "events": self._done.events + running.events,
                "dropped_events": dropped,
                "last_error": error[0],
                "last_error_time": error[1],
                "errors": self._done.errors + running.errors,
            }
        )


# --- the verdict ------------------------------------------------------------------------------------------------------
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


def seconds(value: float) -> str:
    """``3.04`` -> ``3.0 s``; ``76.4`` -> ``76 s``."""
    return f"{value:.1f} s" if abs(value) < 10 else f"{value:.0f} s"


def ago(when: float | None, now: float) -> str:
    """How long ago ``when`` (Unix seconds) was: ``3.0 s ago``, ``never``, or ``... in the future (clock skew?)``."""
    if when is None:
        return "never"
    age = now - when
    return f"{seconds(age)} ago" if age >= 0 else f"{seconds(-age)} in the future (clock skew?)"


def stall_limit(status: Status) -> float:
    """Seconds without a completed cycle after which a running daemon is stalled: ``max(3 * update_every, 60)``."""
    return max(3 * (status.update_every or 0.0), MIN_STALL_SECONDS)


_STATE_REASONS = {
    "waiting for scripts": "the daemon is waiting for its processing scripts: no data is being reduced",
    "backing off": "live data failed and is restarted after a delay",
    "stopping": "the daemon is stopping",
    "stopped": "the daemon has stopped",
    "stop timed out": "live data did not stop within stop_timeout_sec",
}


def one_line(text: str) -> str:
    """``text`` with its line breaks turned into spaces."""
    return " ".join(text.splitlines())


def health(status: Status, now: float | None = None) -> tuple[bool, str]:
    """``(healthy, reason)``: whether the daemon described by ``status`` works, and why (a short sentence).

    Unhealthy, checked in this order, when:

    1. its process (``pid``) is not alive (``os.kill(pid, 0)``, and not a newer process with a reused pid);
    2. ``state`` is not one of :data:`HEALTHY_STATES`;
    3. the engine's state is ``failed``;
    4. ``connecting`` for longer than :func:`stall_limit` seconds (since ``state_since``);
    5. while ``running``: the last completed cycle (``engine.last_cycle_end``, or the daemon's start ``started``
       when no cycle completed yet) is older than :func:`stall_limit` seconds (stalled), unless the engine is
       ``idle`` (its source has ended);
    6. the engine's ``last_error`` is newer than its last completed cycle.

    ``now``: the reference time for ages (default: the current time).
    """
    now = time.time() if now is None else now
    state = status.state or "unknown"
    engine = status.engine or EngineStatus()
    last_error = one_line(engine.last_error)
    if status.pid is None:
        return False, "the status has no valid pid"
    if not _pid_alive(status.pid, status.pid_created):
        if status.exit is not None:
            why = status.exit.reason or "no reason recorded"
            code = status.exit.code if status.exit.code is not None else "unknown"
            return False, f"the daemon stopped with exit {code} ({why}) {ago(status.exit.time, now)}"
        updated = ago(status.updated, now)
        return False, f"process {status.pid} is not running: it died without updating the status (updated {updated})"
    if state not in HEALTHY_STATES:
        reason = _STATE_REASONS.get(state, f"the daemon is in state '{state}'")
        if state in ("backing off", "stop timed out") and last_error:
            reason += f": {last_error}"
        return False, reason
    if engine.state == "failed":
        return False, f"the engine failed: {last_error}" if last_error else "the engine failed"
    limit = stall_limit(status)
    if state == "connecting" and status.state_since is not None and now - status.state_since > limit:
        connecting = seconds(now - status.state_since)
        return False, f"stalled: connecting to the data source for {connecting} (limit {seconds(limit)})"
    last_cycle = engine.last_cycle_end
    if state == "running" and engine.state != "idle":
        reference = last_cycle if last_cycle is not None else status.started
        if reference is not None and now - reference > limit:
            what = "the last cycle ended" if last_cycle is not None else "no cycle completed since the start"
            return False, f"stalled: {what} {ago(reference, now)} (limit {seconds(limit)})"
    error_time = engine.last_error_time
    if last_error and error_time is not None and (last_cycle is None or error_time > last_cycle):
        return False, f"the last cycle failed {ago(error_time, now)}: {last_error}"
    if state == "starting":
        return True, "the daemon is starting"
    if state == "connecting":
        return True, "the daemon is connecting to its data source"
    if state == "reloading":
        return True, "the daemon is reloading"
    if engine.state == "idle":
        return True, "running, idle: the data source has ended"
    if last_cycle is None:
        return True, "running, waiting for the first cycle"
    return True, f"running, last cycle {ago(last_cycle, now)}"


def status_code(status: Status, now: float | None = None) -> int:
    """The LSB-style exit code of ``livereduce --status`` for this status (see the ``STATUS_*`` constants)."""
    healthy, _ = health(status, now)
    if healthy:
        return STATUS_RUNNING
    if status.pid is not None and _pid_alive(status.pid, status.pid_created):
        return STATUS_UNHEALTHY
    if status.exit is not None and status.exit.code == 0:
        return STATUS_NOT_RUNNING
    return STATUS_DEAD
