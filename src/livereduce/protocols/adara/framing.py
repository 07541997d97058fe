"""Framing ADARA: splitting a TCP byte stream into packets (16-byte header, then exactly ``payload_len`` bytes).

The stream is hostile: a length is never taken from a packet's fields, an oversized payload is consumed and
discarded, and a header that follows a broken one must be plausible, else the stream is dropped
(:class:`FramingError`). Layouts: :mod:`livereduce.protocols.adara.packets` (ADARA protocol spec, cited there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from livereduce.protocols.adara.packets import HEADER_BYTES, KNOWN_TYPES, MAX_PACKET_BYTES, Header, parse_header

Buffer = bytes | bytearray | memoryview


class FramingError(Exception):
    """The byte stream can no longer be trusted to be split into packets (reconnect)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete packet.

    Attributes:
        header: the parsed header.
        payload: ``header.payload_len`` bytes; a view into the framer's buffer, valid until the next
            :meth:`Framer.writable` call.
    """

    header: Header
    payload: memoryview


class Framer:
    """Splits a TCP byte stream into packets by reading exactly 16 header bytes and then exactly
    ``payload_len`` bytes, never by lengths implied by a packet's fields [NP 3; robustness practice].

    * A payload longer than ``max_payload`` (default 48 MiB, the reference parser's cap) is consumed and
      discarded as it arrives (counted ``oversize``) when its type is known; with an unknown type as well, the
      length is not trusted: :class:`FramingError`.
    * A payload length that is not a multiple of 4 breaks the protocol [NP 2]: the packet is consumed and
      counted (``length not a multiple of 4``), and the next header must then be plausible (known type, length a
      multiple of 4 and within the cap), else :class:`FramingError`.

    Use: ``view = framer.writable(); n = sock.recv_into(view); framer.wrote(n); for frame in framer.frames(): ...``

    Attributes:
        skipped: packets consumed but not yielded, by reason.
    """

    def __init__(self, max_payload: int = MAX_PACKET_BYTES, capacity: int = 1 << 20) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray(capacity)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        self._discard = 0
        self._suspect = False
        self.skipped: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        """Bytes received that do not form a complete packet yet."""
        return self._end - self._start

    def writable(self, minimum: int = 1 << 16) -> memoryview:
        """Free space at the end of the buffer to receive into (at least ``minimum`` bytes). Invalidates the
        payloads of frames yielded before."""
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buffer) - self._end < minimum:
            kept = self._end - self._start
            self._buffer[:kept] = self._buffer[self._start : self._end]
            self._start, self._end = 0, kept
        if len(self._buffer) - self._end < minimum:
            self._grow(self._end + minimum)
        return self._view[self._end :]

    def wrote(self, n: int) -> None:
        """``n`` bytes were written at the start of the last :meth:`writable` view."""
        self._end += n

    def feed(self, data: Buffer) -> Iterator[Frame]:
        """Copy ``data`` in (in pieces that fit) and yield the complete packets (for in-memory streams)."""
        data = memoryview(data).cast("B")
        while data:
            view = self.writable()
            n = min(len(view), len(data))
            view[:n] = data[:n]
            self.wrote(n)
            data = data[n:]
            yield from self.frames()

    def frames(self) -> Iterator[Frame]:
        """Yield the complete packets received so far.

        Raises:
            FramingError: the stream cannot be split into packets any more (see the class description).
        """
        view = self._view
        while True:
            if self._discard:
                n = min(self._discard, self._end - self._start)
                self._start += n
                self._discard -= n
                if self._discard:
                    return
            if self._end - self._start < HEADER_BYTES:
                return
            header = parse_header(view, self._start)
            length = header.payload_len
            if self._suspect and not _plausible(header, self.max_payload):
                raise FramingError(
                    f"implausible header after a packet with a bad length: type 0x{header.packet_type:04X}, "
                    f"payload {length} bytes"
                )
            if length > self.max_payload:
                if header.packet_type not in KNOWN_TYPES:
                    raise FramingError(
                        f"implausible header: unknown type 0x{header.packet_type:04X} with payload {length} bytes"
                    )
                self.skipped["oversize"] += 1
                self._start += HEADER_BYTES
                self._discard = length
                continue
            need = HEADER_BYTES + length
            if self._end - self._start < need:
                if need > len(self._buffer):
                    self._grow(need)
                    view = self._view
                return
            payload = view[self._start + HEADER_BYTES : self._start + need]
            self._start += need
            if length % 4:
                self.skipped["length not a multiple of 4"] += 1
                self._suspect = True
                continue
            self._suspect = False
            yield Frame(header, payload)

    def _grow(self, need: int) -> None:
        kept = self._end - self._start
        bigger = bytearray(max(need, 2 * len(self._buffer)))
        bigger[:kept] = self._buffer[self._start : self._end]
        self._view.release()
        self._buffer, self._view = bigger, memoryview(bigger)
        self._start, self._end = 0, kept


def _plausible(header: Header, max_payload: int) -> bool:
    length = header.payload_len
    return header.packet_type in KNOWN_TYPES and length % 4 == 0 and length <= max_payload
