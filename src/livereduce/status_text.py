"""A :class:`~livereduce.status.Status` as text: one line for ``STATUS=``, SIGUSR1 and the final log line
(:func:`summary`), and the aligned ``key: value`` lines of ``livereduce --status`` (:func:`format_status`)."""

from __future__ import annotations

import time
from datetime import datetime

from livereduce.status import EngineStatus, FileRecord, Status, ago, health, one_line, seconds

_MB = 1024 * 1024


def _count(n: int) -> str:
    """``4500000`` -> ``4.5M`` (k, M, G)."""
    for limit, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{unit}"
    return str(n)


def _mb(n: float) -> str:
    return f"{n / _MB:.0f} MB"


def summary(status: Status, now: float | None = None) -> str:
    """One line for ``STATUS=`` and logs.

    E.g. ``running: run 47210, 123 chunks, 4.5M events, last cycle 3.0 s ago, RSS 812 MB``. ``now``: the
    reference time for ages (default: the current time).
    """
    now = time.time() if now is None else now
    engine = status.engine
    parts = []
    if engine is not None:
        if engine.run_number:
            parts.append(f"run {engine.run_number}")
        parts.append(f"{engine.chunks} chunk{'' if engine.chunks == 1 else 's'}")
        parts.append(f"{_count(engine.events)} events")
        last = engine.last_cycle_end
        parts.append(f"last cycle {ago(last, now)}" if last is not None else "no cycle yet")
        if engine.errors:
            parts.append(f"{engine.errors} error{'' if engine.errors == 1 else 's'}")
    if status.rss_bytes is not None:
        parts.append(f"RSS {_mb(status.rss_bytes)}")
    state = status.state or "unknown"
    return f"{state}: {', '.join(parts)}" if parts else state


def _local_time(when: float | None, now: float) -> str:
    if when is None:
        return "unknown"
    stamp = datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"{stamp} ({ago(when, now)})"


def _file(record: FileRecord | None) -> str:
    if record is None:
        return "none"
    path = record.path or "defaults"
    return f"{path} (sha256 {record.sha256[:12]})" if record.sha256 else path


def _events(engine: EngineStatus) -> str:
    """``"4500000 received"`` plus the events dropped at the source, by reason."""
    text = f"{engine.events} received"
    dropped = engine.dropped_events
    if dropped:
        parts = ", ".join(f"{count} {reason}" for reason, count in dropped.items())
        text += f"; {sum(dropped.values())} dropped ({parts})"
    return text


def _accumulation(engine: EngineStatus) -> str:
    """What the accumulation holds: ``"1200000 events"`` or its shape (histograms)."""
    if engine.accumulated_events:
        return f"{engine.accumulated_events} events"
    return engine.accumulation or "none yet"


def _lag(engine: EngineStatus) -> str:
    """E.g. ``"0.4 s (pulse times)"``, ``"95.2 s (pulse times), FALLING BEHIND: <cause>"``, ``"unknown"``; for
    Kafka the consumer's offset lag per partition follows."""
    text = "unknown" if engine.lag is None else f"{seconds(engine.lag)} ({engine.lag_basis or 'pulse times'})"
    if engine.lagging:
        text += f", FALLING BEHIND: {engine.lagging}"
    if engine.offset_lag:
        text += "; consumer behind by " + ", ".join(f"{key} {n}" for key, n in engine.offset_lag.items())
    return text


def _engine_rows(engine: EngineStatus, now: float) -> list[tuple[str, str]]:
    rows = [
        ("engine", f"{engine.name or 'unknown'} ({engine.state or 'unknown'})"),
        ("source", engine.source or "unknown"),
        ("run", str(engine.run_number or "none")),
        ("first pulse", f"{engine.first_pulse[:19].replace('T', ' ')} UTC" if engine.first_pulse else "unknown"),
        ("chunks", str(engine.chunks)),
        ("events", _events(engine)),
        ("accumulation", _accumulation(engine)),
    ]
    last = engine.last_cycle_end
    cycle = ago(last, now) if last is not None else "none yet"
    if last is not None and engine.last_cycle_duration is not None:
        cycle += f", took {seconds(engine.last_cycle_duration)}"
    rows.append(("last cycle", cycle))
    rows.append(("lag", _lag(engine)))
    rows.append(("errors", f"{engine.errors} failed cycles"))
    if engine.last_error:
        rows.append(("last error", f"{one_line(engine.last_error)} ({_local_time(engine.last_error_time, now)})"))
    return rows


def format_status(status: Status, now: float | None = None) -> str:
    """Multi-line text for ``livereduce --status``: aligned ``key: value`` lines, the health verdict first.

    Ages are in seconds, sizes in MB (2**20 bytes). ``now``: the reference time for ages (default: the current
    time).
    """
    rows = status_rows(status, now)
    width = max(len(key) for key, _ in rows) + 1
    return "\n".join(f"{key + ':':<{width}} {value}" for key, value in rows)


def status_rows(status: Status, now: float | None = None) -> list[tuple[str, str]]:
    """The ``(key, value)`` rows of ``livereduce --status`` (and of the daemon's page), the health verdict first."""
    now = time.time() if now is None else now
    healthy, reason = health(status, now)
    rows: list[tuple[str, str]] = [
        ("health", f"{'OK' if healthy else 'UNHEALTHY'}: {reason}"),
        ("state", status.state or "unknown"),
    ]
    if status.exit is not None:
        code = status.exit.code if status.exit.code is not None else "unknown"
        why = status.exit.reason or "no reason recorded"
        rows.append(("stopped", f"exit {code} ({why}) at {_local_time(status.exit.time, now)}"))
    rows += [
        ("pid", str(status.pid) if status.pid is not None else "unknown"),
        ("version", status.version or "unknown"),
        ("started", _local_time(status.started, now)),
        ("updated", _local_time(status.updated, now)),
        ("config", _file(status.config)),
        ("proc script", _file(status.scripts.get("proc"))),
        ("post_proc script", _file(status.scripts.get("post_proc"))),
    ]
    if status.update_every is not None:
        rows.append(("update every", seconds(status.update_every)))
    rows += _engine_rows(status.engine, now) if status.engine is not None else [("engine", "none")]
    if status.restarts:
        rows.append(("restarts", ", ".join(f"{key} {value}" for key, value in status.restarts.items())))
    if any(status.reloads.values()):
        rows.append(("reloads", ", ".join(f"{key} {value}" for key, value in status.reloads.items())))
    if status.engine is not None and status.engine.checkpoint:
        rows.append(("checkpoint", status.engine.checkpoint))
    memory = f"RSS {_mb(status.rss_bytes)}" if status.rss_bytes is not None else "RSS unknown"
    memory += f" of limit {_mb(status.memory_limit_bytes)}" if status.memory_limit_bytes is not None else " (no limit)"
    rows.append(("memory", memory))
    if status.http_url is not None:
        rows.append(("page", status.http_url))
    if status.metrics_url is not None:
        rows.append(("metrics", status.metrics_url))
    return rows
