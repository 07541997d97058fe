"""The listener interface of the scipp engine: Mantid's ILiveListener shape.

A listener is driven from one thread (the engine's): ``connect()``, ``start(position)``, then ``extract()`` once
per cycle followed by ``run_status()``. Everything buffered since the previous ``extract()`` is returned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from enum import IntEnum
from typing import Literal

import scipp as sc

StartPosition = Literal["from_start_of_run", "now"] | datetime
"""Where to start: the start of the current run, now, or a time (Mantid's FromStartOfRun/FromNow/FromTime)."""


class RunStatus(IntEnum):
    """Mantid's ``ILiveListener::RunStatus`` (values as in Mantid), as reported after an extraction.

    ``EndRun``: the chunk just extracted ends a run. ``BeginRun``: the chunk just extracted ends just before a
    new run begins (data taken between runs). Both mean: the next chunk starts a new accumulation.
    """

    NoRun = 0
    BeginRun = 1
    Running = 2
    EndRun = 4


class Listener(ABC):
    """A data source. Subclasses are named after the Mantid listener they reproduce."""

    name: str = ""

    @abstractmethod
    def connect(self) -> None:
        """Open the source.

        Raises:
            SourceError: the source cannot be opened (names the file or address).
        """

    @abstractmethod
    def start(self, position: StartPosition) -> None:
        """Begin buffering data from ``position``."""

    @abstractmethod
    def extract(self) -> sc.DataArray:
        """Everything buffered since the previous call, as an NXevent_data chunk (see ``chunk.py``).

        Raises:
            SourceError: the source broke (file truncated, connection lost).
        """

    @abstractmethod
    def run_status(self) -> RunStatus:
        """Run status after the last ``extract()`` (BeginRun/EndRun are reported once)."""

    @abstractmethod
    def run_number(self) -> int:
        """Run number of the data last extracted, 0 if unknown."""

    def disconnect(self) -> None:
        """Close the source (default: nothing to close)."""
        return

    def data_reset(self) -> bool:
        """True once after the source discarded its history (the next accumulation starts afresh)."""
        return False

    @abstractmethod
    def is_connected(self) -> bool:
        """Whether the source is open."""

    @abstractmethod
    def event_id_range(self) -> tuple[int, int]:
        """First and last ``event_id`` (pixel) the source can produce, inclusive.

        Histograms made when ``preserve_events`` is false span this range, so chunks add up.
        """

    def describe(self) -> str:
        """One line describing the source's state (for logs and status)."""
        return self.name
