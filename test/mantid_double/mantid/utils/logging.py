"""Test double of ``mantid.utils.logging``: route the double's framework messages to Python logger "Mantid"."""

from __future__ import annotations

import logging as _pylogging

LEVELS: dict[str, int] = {
    "fatal": 1,
    "critical": 2,
    "error": 3,
    "warning": 4,
    "notice": 5,
    "information": 6,
    "debug": 7,
    "trace": 8,
}
"""Mantid's log levels and their priorities (a message passes when its priority <= the configured one)."""

_PYTHON_LEVELS: dict[str, int] = {
    "fatal": _pylogging.CRITICAL,
    "critical": _pylogging.CRITICAL,
    "error": _pylogging.ERROR,
    "warning": _pylogging.WARNING,
    "notice": _pylogging.INFO,
    "information": _pylogging.INFO,
    "debug": _pylogging.DEBUG,
    "trace": _pylogging.DEBUG,
}

configured_level: str | None = None
"""The level given to the last :func:`log_to_python` call; None until it is called (then nothing is emitted)."""

calls: int = 0
"""How many times :func:`log_to_python` was called."""


def log_to_python(level: str = "information") -> None:
    """Send Mantid's log messages of ``level`` and above to Python logger "Mantid" (set to the matching level).

    Raises:
        TypeError: ``level`` is not a str.
        ValueError: ``level`` is not a Mantid log level (fatal, critical, error, warning, notice, information,
            debug, trace).
    """
    global configured_level, calls  # noqa: PLW0603 - module state mirrors Mantid's global logging configuration
    if not isinstance(level, str):
        raise TypeError(f"log_to_python(level) must be a str, not {type(level).__name__}")
    if level not in LEVELS:
        raise ValueError(f"Unknown Mantid log level {level!r}; use one of {', '.join(LEVELS)}")
    configured_level = level
    calls += 1
    _pylogging.getLogger("Mantid").setLevel(_PYTHON_LEVELS[level])


def emit(level: str, message: str) -> None:
    """Log ``message`` at Mantid ``level`` on Python logger "Mantid" if :func:`log_to_python` allows it (internal)."""
    current = configured_level
    if current is None or LEVELS[level] > LEVELS[current]:
        return
    _pylogging.getLogger("Mantid").log(_PYTHON_LEVELS[level], message)
