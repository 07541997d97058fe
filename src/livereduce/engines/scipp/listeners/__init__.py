"""Data sources of the scipp engine, named after the Mantid listeners they reproduce. Adding a source is adding
one module and one line in :data:`LISTENERS`.

Modules are imported when their listener is chosen, so a source's dependencies (e.g. confluent-kafka) are
needed only where it is used.
"""

from __future__ import annotations

import importlib

from livereduce.clock import Clock
from livereduce.config import Config
from livereduce.engines.scipp.listeners.base import Listener
from livereduce.errors import ConfigError, EngineError


class ListenerUnavailable(ConfigError):
    """The scipp engine has no listener of the configured name (Mantid may have it)."""


LISTENERS: dict[str, str] = {
    "FileEventDataListener": "file",
    "FakeEventDataListener": "fake",
    "SNSLiveEventDataListener": "adara",
    "KafkaEventListener": "kafka",
}
"""Listener name (the ``listener`` key) -> module in this package defining the class of that name."""


def listener_class(name: str) -> type[Listener]:
    """The listener class of that name.

    Raises:
        ListenerUnavailable: the scipp engine has no such listener.
        EngineError: its module cannot be imported here (a dependency is missing).
    """
    if name not in LISTENERS:
        raise ListenerUnavailable(
            f"listener '{name}' is not available in the scipp engine (available: {', '.join(LISTENERS)})"
        )
    try:
        module = importlib.import_module(f"{__name__}.{LISTENERS[name]}")
    except ImportError as err:
        raise EngineError(f"listener '{name}' cannot be loaded: {err}") from None
    return getattr(module, name)


def create_listener(config: Config, clock: Clock | None = None) -> Listener:
    """The listener the configuration asks for: ``listener``, else the instrument's live-data listener, with the
    engine's clock (None: the system clock).

    Raises:
        ConfigError: no listener is configured or known for the instrument, the scipp engine does not have
            it, or a key it needs is missing.
        EngineError: the listener's module cannot be imported here.
    """
    name = config.listener or config.instrument_info().listener
    if name is None:
        raise ConfigError(
            f"no listener: set 'listener' (instrument '{config.instrument_info().name}' has no live-data listener)"
        )
    return listener_class(name)(config, clock)
