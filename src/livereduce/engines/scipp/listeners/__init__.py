"""Data sources of the scipp engine, named after the Mantid listeners they reproduce. Adding a source is adding
one module and one line in :data:`LISTENERS`."""

from __future__ import annotations

from livereduce.config import Config
from livereduce.engines.scipp.listeners.base import Listener
from livereduce.engines.scipp.listeners.fake import FakeEventDataListener
from livereduce.engines.scipp.listeners.file import FileEventDataListener
from livereduce.errors import ConfigError

LISTENERS: dict[str, type[Listener]] = {
    FileEventDataListener.name: FileEventDataListener,
    FakeEventDataListener.name: FakeEventDataListener,
}


def create_listener(config: Config) -> Listener:
    """The listener the configuration asks for: ``listener``, else the instrument's live-data listener.

    Raises:
        ConfigError: no listener is configured or known for the instrument, the scipp engine does not have
            it, or a key it needs is missing.
    """
    name = config.listener or config.instrument_info().listener
    if name is None:
        raise ConfigError(
            f"no listener: set 'listener' (instrument '{config.instrument_info().name}' has no live-data listener)"
        )
    if name not in LISTENERS:
        raise ConfigError(f"listener '{name}' is not available in the scipp engine (available: {', '.join(LISTENERS)})")
    return LISTENERS[name](config)
