"""Engines: what the supervisor drives. ``mantid`` wraps StartLiveData/MonitorLiveData; ``scipp`` runs the
cycle itself. Both behind :class:`livereduce.engines.base.Engine`."""

from __future__ import annotations

import importlib.util
import sys

from livereduce.config import Config
from livereduce.engines.base import Engine
from livereduce.errors import EngineError
from livereduce.packages import missing_packages


def select_engine(config: Config) -> str:
    """The engine that runs for this configuration: ``auto`` is mantid if it can be imported, else scipp."""
    if config.engine != "auto":
        return config.engine
    return "mantid" if importlib.util.find_spec("mantid") is not None else "scipp"


SCIPP_ENGINE_PACKAGES = {"scipp": "scipp", "scippnexus": "scippnexus", "h5py": "h5py"}
"""Modules the scipp engine needs -> the packages that provide them."""


def create_engine(name: str, config: Config) -> Engine:
    """Build the named engine (nothing starts yet).

    Raises:
        EngineError: the engine cannot be loaded here (names every missing package and how to install them), or
            ``engine`` "auto" chose scipp because Mantid is missing and the configuration needs Mantid (a listener
            the scipp engine does not have).
        ConfigError: the configuration does not suit the engine (e.g. a listener it does not have).
    """
    if name == "scipp":
        missing = missing_packages(SCIPP_ENGINE_PACKAGES)
        if missing:
            raise EngineError(
                f"the scipp engine needs {', '.join(missing)}, missing in the environment of {sys.executable}; "
                f"install with: {sys.executable} -m pip install {' '.join(missing)}"
            )
        from livereduce.engines.scipp.engine import ScippEngine  # noqa: PLC0415 - scipp is imported on demand
        from livereduce.engines.scipp.listeners import ListenerUnavailable  # noqa: PLC0415

        try:
            return ScippEngine(config)
        except ListenerUnavailable as err:
            if config.engine == "auto":
                raise EngineError(
                    f'Mantid cannot be imported here, so engine "auto" chose the scipp engine, which cannot run '
                    f"this configuration: {err}. Run livereduce in an environment with Mantid (PIXI_ENV/CONDA_ENV "
                    f'\'{config.env_name}\'), or set "engine": "scipp" with a listener it has'
                ) from None
            raise
    if name == "mantid":
        from livereduce.engines.mantid import MantidEngine  # noqa: PLC0415 - Mantid is imported on demand

        return MantidEngine(config)
    raise EngineError(f"unknown engine '{name}'")
