"""``FileEventDataListener``: replays the ``NXevent_data`` of a NeXus file pulse by pulse.

Mantid's listener of the same name hands out a file in N chunks; this one replays it in time: the pulse at
``event_time_zero`` t becomes available ``(t - t_first) / replay_speed`` seconds after ``start()`` (speed 0:
everything at once), and ``extract()`` returns the pulses available since the previous call (at most
``replay_chunk_pulses``, and at most what fits in ``source_buffer_mb``). The end of the file is the end of the run
(``EndRun``, ``ended``); afterwards chunks are empty and the status is ``NoRun``.

Reading is :class:`~livereduce.engines.scipp.nexus_events.EventFile`'s: the layouts (ISIS, SNS), the checks of the
file when it is opened (any violation a one-line :class:`~livereduce.errors.SourceError` naming the file), the
pixel range (:attr:`Extracted.event_id_range`), the events dropped per chunk (:attr:`Extracted.dropped`), run
metadata, logs and the proton charge per pulse. A block HDF5 cannot read is a ``SourceError`` naming the pulses;
a file source is not ``recoverable`` (it would fail the same way at the same position).

At ``replay_speed`` 0 the next chunk is known when one is handed out: it is read ahead in a thread while the
engine reduces this one (h5py releases the GIL while HDF5 reads), so reading and the scripts overlap; one chunk
more is in memory (at most ``source_buffer_mb``), and a read that fails raises at the ``extract()`` of its chunk.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import numpy as np
import scipp as sc

from livereduce.clock import Clock, SystemClock
from livereduce.config import Config
from livereduce.engines.scipp.chunk import event_count
from livereduce.engines.scipp.listeners.base import (
    Extracted,
    Listener,
    RunStatus,
    SourceHealth,
    SourcePosition,
    StartPosition,
)
from livereduce.engines.scipp.listeners.sizing import FLOOR_BYTES
from livereduce.engines.scipp.nexus_checks import NS_MAX
from livereduce.engines.scipp.nexus_events import EventFile
from livereduce.errors import ConfigError

_log = logging.getLogger("livereduce.FileEventDataListener")
_CHUNK_BYTES_PER_EVENT = 12  # event_id int32 + event_time_offset float32 + weight float32


class FileEventDataListener(Listener):
    """Replays a NeXus file. Config keys: ``filename``, ``replay_speed``, ``replay_chunk_pulses``,
    ``source_buffer_mb`` (the most one chunk's events may take, at least one pulse).

    Raises:
        ConfigError: ``filename`` is not set.
    """

    name = "FileEventDataListener"

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        if not config.filename:
            raise ConfigError("listener FileEventDataListener needs the key 'filename' (the NeXus file to replay)")
        self.path = Path(config.filename)
        self.clock = clock or SystemClock()
        self.speed = config.replay_speed
        self.max_pulses = config.replay_chunk_pulses
        budget = FLOOR_BYTES if config.source_buffer_mb is None else int(config.source_buffer_mb * 2**20)
        self.max_events = max(1, budget // _CHUNK_BYTES_PER_EVENT)
        self._file: EventFile | None = None
        self._pixel_range = (0, 0)  # the last file's, kept after disconnect()
        self._pulses = 0
        self._next = 0
        self._started_at = 0.0
        self._origin = np.datetime64(0, "ns")  # file time of the first pulse replayed
        self._ended = False
        self._counters: Counter[str] = Counter()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="FileReadAhead")
        self._ahead: tuple[tuple[int, int], Future[tuple[sc.DataArray, dict[str, int]]]] | None = None

    # --- Listener interface -----------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the file, check its event data and index its pulses.

        Raises:
            SourceError: the file is missing, a directory, unreadable, not HDF5, truncated, has no NXevent_data
                group, or one that is malformed (see ``nexus_checks.py``); the message is one line naming the
                file and the problem.
        """
        self.disconnect()
        self._file = file = EventFile(self.path)
        self._pixel_range, self._pulses = file.pixel_range, file.n_pulses
        first, last = file.pixel_range
        _log.info(
            "Replaying %s: %d events in %d pulses from %s at speed %s; pixels %d..%d (%s)",
            self.path,
            int(file.events_before[-1]),
            file.n_pulses,
            ", ".join(file.banks),
            self.speed,
            first,
            last,
            file.pixel_source,
        )

    def resume_refusal(self, position: SourcePosition) -> str | None:
        """None when ``position`` is ``{"next_pulse": N}`` with N within this file's pulses (0..n_pulses)."""
        pulse = position.get("next_pulse")
        if type(pulse) is not int or not 0 <= pulse <= self._pulses:
            return f"position {position} is not a pulse of '{self.path}' (0..{self._pulses})"
        return None

    def start(self, position: StartPosition, resume: SourcePosition | None = None) -> None:
        """Start the replay clock at the first pulse replayed: ``resume``'s ``next_pulse``; else a time skips the
        pulses before it (``from_start_of_run`` and ``now``: the file's first pulse)."""
        times = self._opened().pulse_times
        if resume is not None:
            self._next = int(resume["next_pulse"])
            self._ended = self._next == times.size and times.size > 0
        elif not isinstance(position, str):
            when = np.datetime64(position.astimezone(UTC).replace(tzinfo=None), "ns")
            self._next = int(np.searchsorted(times, when))
        if self._next < times.size:
            self._origin = times[self._next]
        self._started_at = self.clock.monotonic()

    def extract(self) -> Extracted:
        """The pulses that became available since the last call, with the events dropped by reason.

        ``EndRun`` and ``ended`` with the chunk that reaches the end of the file; afterwards empty chunks with
        ``NoRun`` (still ``ended``).

        Raises:
            SourceError: the file cannot be read (e.g. truncated or corrupt inside the event data).
        """
        file = self._opened()
        first = self._next
        last = self._last(file, first)
        chunk, dropped = self._read(file, first, last)
        self._next = last
        if self.speed == 0 and last < file.n_pulses:  # the next chunk is known: read it while this one is reduced
            ahead = (last, self._last(file, last))
            self._ahead = (ahead, self._reader.submit(file.read, *ahead))
        self._counters.update(
            {"pulses": last - first, "events": event_count(chunk), "events_dropped": sum(dropped.values())}
        )
        pixels, position = file.pixel_range, {"next_pulse": last}
        if self._ended:
            return Extracted(chunk, RunStatus.NoRun, pixels, dropped=dropped, ended=True, position=position)
        if last == file.n_pulses:
            self._ended = True
            return Extracted(chunk, RunStatus.EndRun, pixels, dropped=dropped, ended=True, position=position)
        return Extracted(chunk, RunStatus.Running, pixels, dropped=dropped, position=position)

    @property
    def pixel_range(self) -> tuple[int, int]:
        """The file's pixel range (first, last; inclusive), known once connected: its ``NXdetector``
        ``detector_number`` values if it has any, else its valid event ids; ``(0, 0)`` for a file without any
        valid id (and before :meth:`connect`). Every chunk carries it as :attr:`Extracted.event_id_range`."""
        return self._pixel_range

    def disconnect(self) -> None:
        """Close the file (safe to call more than once; after a read ahead in progress, at most one chunk's read);
        the pixel range and the position stay known."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            with contextlib.suppress(Exception):  # its chunk is not wanted any more, nor its failure
                ahead[1].result()
        if self._file is not None:
            self._file.close()
            self._file = None

    def health(self) -> SourceHealth:
        """``'<file>': pulse N of M`` (``, ended`` at the end); counters ``pulses``, ``events`` (delivered) and
        ``events_dropped``."""
        state = f"'{self.path}': pulse {self._next} of {self._pulses}" + (", ended" if self._ended else "")
        return SourceHealth(
            state, counters={key: self._counters[key] for key in ("pulses", "events", "events_dropped")}
        )

    def _last(self, file: EventFile, first: int) -> int:
        """Index after the last pulse of the chunk from pulse ``first``: what is available, at most
        ``replay_chunk_pulses``, and events that fit in ``source_buffer_mb`` (a single pulse is always read)."""
        last = self._available(file)
        if self.max_pulses is not None:
            last = min(last, first + self.max_pulses)
        if last > first + 1:
            before = file.events_before
            fitting = np.searchsorted(before, before[first] + self.max_events, "right") - 1
            last = max(first + 1, min(last, int(fitting)))
        return last

    def _read(self, file: EventFile, first: int, last: int) -> tuple[sc.DataArray, dict[str, int]]:
        """Pulses ``first``..``last`` - 1 as a chunk: the one read ahead if it is that one, else read now.

        Raises:
            SourceError: the file cannot be read there (also when the read ahead failed).
        """
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            wanted, future = ahead
            result = future.result()  # a failed read raises here, at the chunk it belongs to
            if wanted == (first, last):
                return result
        return file.read(first, last)

    # --- the replay schedule ----------------------------------------------------------------------------------
    def _opened(self) -> EventFile:
        """The open file (a caller that did not connect first is a bug: RuntimeError)."""
        if self._file is None:
            raise RuntimeError("FileEventDataListener: connect() first")
        return self._file

    def _available(self, file: EventFile) -> int:
        """Index after the last pulse due: all at speed 0, else those whose time since the first pulse replayed,
        divided by the speed, has passed since ``start()``."""
        if self.speed == 0:
            return file.n_pulses
        elapsed_ns = int((self.clock.monotonic() - self._started_at) * self.speed * 1e9)
        limit = np.int64(min(int(self._origin.astype(np.int64)) + elapsed_ns, NS_MAX)).view("datetime64[ns]")
        return max(self._next, int(np.searchsorted(file.pulse_times, limit, side="right")))
