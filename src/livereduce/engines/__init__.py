"""Engines: what the supervisor drives. ``mantid`` wraps StartLiveData/MonitorLiveData; ``scipp`` runs the
cycle itself. Both behind :class:`livereduce.engines.base.Engine`."""

from __future__ import annotations

import importlib.util

from livereduce.config import Config
from livereduce.engines.base import Engine
from livereduce.errors import EngineError


def select_engine(config: Config) -> str:
    """The engine that runs for this configuration: ``auto`` is mantid if it can be imported, else scipp."""
    if config.engine != "auto":
        return config.engine
    return "mantid" if importlib.util.find_spec("mantid") is not None else "scipp"


def create_engine(name: str, config: Config) -> Engine:
    """Build the named engine (nothing starts yet).

    Raises:
        EngineError: the engine cannot be loaded here.
        ConfigError: the configuration does not suit the engine (e.g. a listener it does not have).
    """
    if name == "scipp":
        from livereduce.engines.scipp.engine import ScippEngine  # noqa: PLC0415 - scipp is imported on demand

        return ScippEngine(config)
    if name == "mantid":
        from livereduce.engines.mantid import MantidEngine  # noqa: PLC0415 - Mantid is imported on demand

        return MantidEngine(config)
    raise EngineError(f"unknown engine '{name}'")
