"""How much a network source may buffer between its reader and the cycle (``source_buffer_mb``, or automatic).

A network listener's reader thread fills a buffer that one ``extract()`` per cycle empties. If a cycle's data does
not fit, the reader stops reading (lossless back-pressure: the SMS or the broker keeps the data) and the live view
falls behind real time. Mantid's listeners buffer without a bound; we keep a bound, but by default it follows the
stream (:class:`BufferBound`):

* **explicit** ``source_buffer_mb``: a hard bound, never changed.
* **automatic** (the key unset): the bound starts at :data:`FLOOR_BYTES` and, after each ``extract()``, grows to
  :data:`HEADROOM_CYCLES` times the bytes that cycle took (the stream's rate times the time between two extracts,
  which is ``update_every`` or a slower cycle's length); a cycle during which reading paused took less than the
  stream sent, so the bound doubles instead. It never shrinks (a stream that was fast once may be fast again, and
  the memory stays flat), and never exceeds :attr:`BufferBound.cap`: what the memory limit leaves for it.

The arithmetic (bytes per event and pulse in the buffer): ADARA 8 bytes per event (pixel word, TOF word) and about
40 per pulse; Kafka ev44 8 bytes per event (``pixel_id`` int32, ``time_of_flight`` int32) plus the message's
header. At ``extract()`` the buffered events become a chunk of about 12 bytes per event (``event_id`` int32,
``event_time_offset`` float32, a weight float32) while the reader refills the buffer, so the peak of one cycle is
about :data:`PEAK_FACTOR` times the buffer: the cap is a :data:`PEAK_FACTOR`-th of the memory limit
(``system_mem_limit_perc``, ``mem_limit_mb``; without one, of the memory available at start) minus the daemon's
resident memory when the source was opened.
"""

from __future__ import annotations

from collections.abc import Callable

import psutil

from livereduce.config import Config
from livereduce.memory import memory_limit, resident_bytes

FLOOR_BYTES = 256 * 2**20
"""The automatic bound's start and floor (bytes): the fixed default before it was automatic."""
HEADROOM_CYCLES = 2
"""The automatic bound holds this many cycles of the stream (one being read while the other is processed)."""
PEAK_FACTOR = 3
"""Memory of a cycle per byte of buffer: the buffer (refilling), the chunk built from it (1.5 x), the proc's copy."""


class BufferBound:
    """The bound of a network source's buffer, in bytes (see the module description).

    Args:
        explicit_mb: ``source_buffer_mb`` (MiB), or None for the automatic bound.
        memory_limit: the daemon's memory limit in bytes (:func:`livereduce.memory.memory_limit`), or None.
        resident: the daemon's resident memory in bytes now (default: psutil, with children).

    Attributes:
        limit: the bound now (bytes).
        automatic: whether the bound follows the stream.
        cap: the largest automatic bound (bytes): what the memory limit leaves, at least :data:`FLOOR_BYTES`.
        wanted: what the last cycles asked for (bytes); above :attr:`cap` when memory does not hold
            :data:`HEADROOM_CYCLES` cycles of the stream.
    """

    def __init__(
        self,
        explicit_mb: float | None,
        memory_limit: int | None,
        resident: Callable[[], int] = resident_bytes,
    ) -> None:
        self.automatic = explicit_mb is None
        if explicit_mb is not None:
            self.limit = self.cap = self.wanted = int(explicit_mb * 2**20)
            return
        budget = memory_limit if memory_limit is not None else int(psutil.virtual_memory().available)
        self.cap = max(FLOOR_BYTES, (budget - resident()) // PEAK_FACTOR)
        self.limit = self.wanted = FLOOR_BYTES

    @property
    def short(self) -> bool:
        """True when memory does not allow :data:`HEADROOM_CYCLES` cycles of the stream (automatic only)."""
        return self.automatic and self.wanted > self.cap

    def cycle(self, taken: int, paused: bool) -> bool:
        """Account for one ``extract()``: ``taken`` bytes left the buffer; ``paused``: reading paused on a full
        buffer since the previous one. Returns True when the bound changed."""
        if not self.automatic:
            return False
        self.wanted = max(self.wanted, 2 * self.limit if paused else HEADROOM_CYCLES * taken)
        limit = min(self.cap, max(self.limit, self.wanted))
        changed, self.limit = limit != self.limit, limit
        return changed

    def describe(self) -> str:
        """E.g. ``"512 MiB (automatic, at most 5461 MiB)"`` or ``"256 MiB (source_buffer_mb)"``."""
        if not self.automatic:
            return f"{self.limit / 2**20:g} MiB (source_buffer_mb)"
        return f"{self.limit / 2**20:.0f} MiB (automatic, at most {self.cap / 2**20:.0f} MiB)"


def buffer_bound(config: Config) -> BufferBound:
    """The bound of a network source configured by ``config`` (``source_buffer_mb`` and the memory limit)."""
    return BufferBound(config.source_buffer_mb, memory_limit(config))
