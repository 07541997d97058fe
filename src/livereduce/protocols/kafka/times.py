"""Times in the ESS streaming schemas and their conversions.

| schema | field | unit (schema) |
|---|---|---|
| ev44 | ``reference_time`` | ns since the Unix epoch (int64) |
| ev44 | ``time_of_flight`` | ns since the reference time (int32) |
| ev42 | ``pulse_time`` / ``time_of_flight`` | ns since the Unix epoch (uint64) / ns (uint32) |
| f144, f142 | ``timestamp`` | ns since the Unix epoch |
| pl72, 6s4t | ``start_time`` / ``stop_time`` | **ms** since the Unix epoch (uint64; 0 = not set) |

Sources: ``ev44_events.fbs``, ``f144_logdata.fbs``, ``pl72_run_start.fbs``, ``6s4t_run_stop.fbs`` in
ess-dmsc/streaming-data-types, and ``serialise_pl72``/``serialise_6s4t`` of ess-streaming-data-types 0.27.0,
which write ``int(datetime.timestamp() * 1000)``. Mantid's KafkaEventListener reads pl72/6s4t times as ns;
livereduce follows the schema (ms) and accepts ns where a value can only be ns (see
:func:`run_time_ns` and ``docs/compatibility.md``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

NS_PER_MS = 1_000_000
NS_PER_US = 1_000
NANOSECOND_RUN_TIMES = 10**15
"""pl72/6s4t times at or above this are nanoseconds: 1e15 ms is the year 33658, 1e15 ns is 1970-01-12. Below
it a value is milliseconds (every date up to the year 33658)."""


def run_time_ns(value: int) -> tuple[int, bool]:
    """A pl72 ``start_time``/``stop_time`` or 6s4t ``stop_time`` as ns since the Unix epoch.

    Args:
        value: the message's field, ms since the Unix epoch by the schema (ns if a producer followed Mantid).

    Returns:
        ``(ns, was_nanoseconds)``; ``was_nanoseconds`` is True when ``value`` >= :data:`NANOSECOND_RUN_TIMES`
        and was therefore taken as ns.
    """
    if value >= NANOSECOND_RUN_TIMES:
        return int(value), True
    return int(value) * NS_PER_MS, False


def ns_to_ms_floor(ns: int) -> int:
    """ns since the epoch -> whole ms, rounded down (a run start that is not after its first pulse)."""
    return ns // NS_PER_MS


def tof_ns_to_us(time_of_flight: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Time of flight in ns (integers) -> µs as float32, computed in float64 and rounded once.

    Args:
        time_of_flight: shape (n,), any integer dtype, ns.
        out: optional float32 array of shape (n,) to write into (no temporary of n float64 values is made).

    Returns:
        float32 array of shape (n,), µs (``out`` when given).
    """
    if out is None:
        out = np.empty(time_of_flight.shape, np.float32)
    np.multiply(time_of_flight, 1.0 / NS_PER_US, out=out, casting="unsafe")
    return out


def tof_us_to_ns(event_time_offset: np.ndarray) -> np.ndarray:
    """Time of flight in µs (any float dtype) -> whole ns as int32, rounded to nearest (ev44 ``time_of_flight``).

    Raises:
        ValueError: a value is negative, not finite, or beyond int32 ns (2.147 s).
    """
    ns = np.rint(np.asarray(event_time_offset, dtype=np.float64) * NS_PER_US)
    if ns.size and not (np.isfinite(ns).all() and ns.min() >= 0 and ns.max() <= np.iinfo(np.int32).max):
        raise ValueError("time of flight must be finite, >= 0 and below 2.147 s to fit ev44's int32 ns")
    return ns.astype(np.int32)


def datetime_to_ns(when: datetime) -> int:
    """A datetime as ns since the Unix epoch (naive means UTC)."""
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * NS_PER_US


def ns_to_datetime64(ns: int | np.ndarray) -> np.datetime64 | np.ndarray:
    """ns since the Unix epoch (int or int64 array) -> ``datetime64[ns]`` (UTC); arrays are viewed, not copied."""
    if isinstance(ns, np.ndarray):
        return ns.astype(np.int64, copy=False).view("datetime64[ns]")
    return np.datetime64(int(ns), "ns")


def iso(ns: int) -> str:
    """ns since the epoch as an ISO-8601 UTC time to the millisecond, e.g. ``2026-01-31T12:00:00.000Z``."""
    return f"{np.datetime_as_string(np.datetime64(int(ns) // NS_PER_MS, 'ms'))}Z"
