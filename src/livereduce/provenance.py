"""How an accumulation was made: what a checkpoint depends on and what every output records.

The scipp engine keeps one :class:`Provenance` per accumulation and updates it after every chunk; it is the
``depends``/``made`` part of a checkpoint (``engines/scipp/checkpoints.py``) and, through :func:`current`, what
:func:`livereduce.outputs.save_nexus` writes into an ``NXprocess`` group, so that a scientist who opens a live
output months later can tell which scripts, keys and source made it.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from livereduce.config import Config
from livereduce.errors import ConfigError
from livereduce.scripts import ProcessingScripts

_current = threading.local()


@dataclass(frozen=True)
class Provenance:
    """What made one accumulation (JSON-serialisable values only).

    Attributes:
        livereduce_version: the daemon's version.
        engine: ``scipp`` or ``mantid``.
        versions: versions of the libraries that computed it, e.g. ``{"scipp": "26.8.0"}``.
        instrument: full instrument name.
        run_number: run of the accumulation (0: none or unknown).
        scripts: ``{"proc": {"path": str, "md5": str}, "post_proc": ...}``, the scripts that exist (a role
            without a script is absent).
        accum_method: ``AccumulationMethod`` (Add, Replace, Append).
        preserve_events: ``PreserveEvents``.
        source: the source as configured: ``listener`` and, as set, ``address``, ``filename``, ``topics``.
        first_position: the source position after the accumulation's first chunk (see
            ``listeners.base.SourcePosition``), or None.
        last_position: the source position after its last chunk, or None.
        chunks: chunks accumulated.
        events: events accumulated (from the chunks, before proc).
        first_pulse: ISO-8601 time (UTC, ns) of the first pulse accumulated, or None.
        last_pulse: ISO-8601 time (UTC, ns) of the last pulse accumulated, or None.
    """

    livereduce_version: str
    engine: str
    versions: dict[str, str]
    instrument: str
    accum_method: str
    preserve_events: bool
    source: dict[str, Any]
    scripts: dict[str, dict[str, str]] = field(default_factory=dict)
    run_number: int = 0
    first_position: dict[str, Any] | None = None
    last_position: dict[str, Any] | None = None
    chunks: int = 0
    events: int = 0
    first_pulse: str | None = None
    last_pulse: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object (a dict of str, int, bool, None, dicts)."""
        return asdict(self)

    def with_scripts(self, scripts: ProcessingScripts) -> Provenance:
        """This provenance with ``scripts`` recorded (paths and md5)."""
        return replace(self, scripts={s.role: {"path": str(s.path), "md5": s.md5} for s in scripts})

    def fresh(self) -> Provenance:
        """The same origin for a new accumulation: no chunk, position, pulse or run yet."""
        return replace(
            self,
            run_number=0,
            first_position=None,
            last_position=None,
            chunks=0,
            events=0,
            first_pulse=None,
            last_pulse=None,
        )

    def after_chunk(
        self, run_number: int, position: dict[str, Any] | None, events: int, pulses: tuple[str, str] | None
    ) -> Provenance:
        """This provenance after one more chunk was accumulated.

        Args:
            run_number: the chunk's run.
            position: the source position after the chunk, or None.
            events: the chunk's events.
            pulses: ISO-8601 times of the chunk's first and last pulse, or None without pulses.
        """
        first_pulse, last_pulse = self.first_pulse, self.last_pulse
        if pulses is not None:
            first_pulse = first_pulse or pulses[0]
            last_pulse = pulses[1]
        return replace(
            self,
            run_number=run_number,
            first_position=self.first_position if self.chunks else position,
            last_position=position,
            chunks=self.chunks + 1,
            events=self.events + events,
            first_pulse=first_pulse,
            last_pulse=last_pulse,
        )


def source_of(config: Config, listener: str) -> dict[str, Any]:
    """The source as configured: ``{"listener": ..., "address": ..., "filename": ..., "topics": ...}`` (keys
    that are not set are left out). Two checkpoints of the same source have equal descriptions."""
    source: dict[str, Any] = {"listener": listener}
    for key in ("address", "filename", "topics"):
        value = getattr(config, key)
        if value is not None:
            source[key] = value
    return source


def origin(config: Config, engine: str, versions: dict[str, str], listener: str) -> Provenance:
    """A provenance for a new accumulation made by ``engine`` with ``config`` (no scripts, chunks or run yet).

    The instrument is the full name (as configured when it is not known).
    """
    from livereduce import __version__  # noqa: PLC0415 - looked up lazily (importlib.metadata)

    try:
        instrument = config.instrument_info().name
    except ConfigError:
        instrument = config.instrument or ""
    return Provenance(
        livereduce_version=__version__,
        engine=engine,
        versions=versions,
        instrument=instrument,
        accum_method=config.accum_method,
        preserve_events=config.preserve_events,
        source=source_of(config, listener),
    )


def current() -> Provenance | None:
    """The provenance of the accumulation a post_proc script is running on, in the thread that runs it; None
    outside a cycle (a script run by hand, the mantid engine)."""
    return getattr(_current, "value", None)


def set_current(value: Provenance | None) -> None:
    """Make ``value`` what :func:`current` returns in this thread (the engine, before post_proc)."""
    _current.value = value
