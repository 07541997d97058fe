"""ADARA packet layouts and constants.

Source of every layout and value below: the "ADARA Network Protocol" chapter of the ADARA design document
(ADARA-Neutrons/adara, ``doc/design/1_Network_Protocol/component.tex``), cited as ``[NP n.m]`` (subsection n,
subsubsection m of that chapter). ``[impl]`` marks behaviour of the ADARA reference implementation (SMS and
C++ parser) that the chapter does not state; ``[Mantid]`` behaviour of Mantid's ``SNSLiveEventDataListener``.

All multi-byte values are little-endian; every packet is a 16-byte header plus a payload whose length is 0 or
a multiple of 4 bytes [NP 2, NP 3]. Times are seconds and nanoseconds since the EPICS epoch,
1990-01-01T00:00:00 UTC [NP 3].
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import NamedTuple

EPICS_EPOCH_OFFSET_S = 631_152_000
"""Seconds from the Unix epoch to the EPICS epoch (1990-01-01 UTC) [NP 3; ``EPICS_EPOCH_OFFSET`` in impl]."""
NS_PER_S = 1_000_000_000

HEADER = struct.Struct("<4I")
"""Header [NP 3]: u32 payload length (bytes after the header), u32 format (type << 8 | version), u32 seconds,
u32 nanoseconds."""
HEADER_BYTES = HEADER.size

MAX_PACKET_BYTES = 48 << 20
"""Largest payload read [impl: the reference parser's default cap, 48 MiB]; GEOMETRY and pixel-mapping packets
can be several MB. Larger packets are consumed and discarded."""


class PacketType(IntEnum):
    """Packet types (the format word's bits 31..8) [NP 3, NP 4-6; 0x4100 impl]."""

    RAW_EVENT = 0x0000
    RTDL = 0x0001
    SOURCE_LIST = 0x0002
    MAPPED_EVENT = 0x0003
    BANKED_EVENT = 0x4000
    BEAM_MONITOR_EVENT = 0x4001
    PIXEL_MAPPING = 0x4002
    RUN_STATUS = 0x4003
    RUN_INFO = 0x4004
    TRANS_COMPLETE = 0x4005
    CLIENT_HELLO = 0x4006
    STREAM_ANNOTATION = 0x4007
    SYNC = 0x4008
    HEARTBEAT = 0x4009
    GEOMETRY = 0x400A
    BEAMLINE_INFO = 0x400B
    DATA_DONE = 0x400C
    BEAM_MONITOR_CONFIG = 0x400D
    DETECTOR_BANK_SETS = 0x400E
    BANKED_EVENT_STATE = 0x4100
    PIXEL_MAPPING_ALT = 0x4102
    DEVICE_DESC = 0x8000
    VAR_VALUE_U32 = 0x8001
    VAR_VALUE_DOUBLE = 0x8002
    VAR_VALUE_STRING = 0x8003
    VAR_VALUE_U32_ARRAY = 0x8004
    VAR_VALUE_DOUBLE_ARRAY = 0x8005
    MULT_VAR_VALUE_U32 = 0x8101
    MULT_VAR_VALUE_DOUBLE = 0x8102
    MULT_VAR_VALUE_STRING = 0x8103
    MULT_VAR_VALUE_U32_ARRAY = 0x8104
    MULT_VAR_VALUE_DOUBLE_ARRAY = 0x8105


KNOWN_TYPES = frozenset(int(t) for t in PacketType)

HANDLED_VERSIONS: dict[PacketType, int] = {
    PacketType.BANKED_EVENT: 1,
    PacketType.BEAM_MONITOR_EVENT: 1,
    PacketType.RUN_STATUS: 1,
    PacketType.RUN_INFO: 0,
    PacketType.CLIENT_HELLO: 1,
    PacketType.STREAM_ANNOTATION: 0,
    PacketType.SYNC: 0,
    PacketType.HEARTBEAT: 0,
    PacketType.GEOMETRY: 0,
    PacketType.BEAMLINE_INFO: 1,
    PacketType.DEVICE_DESC: 0,
    PacketType.VAR_VALUE_U32: 0,
    PacketType.VAR_VALUE_DOUBLE: 0,
    PacketType.VAR_VALUE_STRING: 0,
    PacketType.VAR_VALUE_U32_ARRAY: 0,
    PacketType.VAR_VALUE_DOUBLE_ARRAY: 0,
}
"""Types a live client reads, with the highest version it understands. Newer versions of these types are
skipped: a deployed format never changes, a new layout gets a new version [NP 3]. The v1 layouts of banked
event, beam monitor, run status, beamline info and client hello are supersets of v0 [NP 5.2, 5.4, 5.9, 5.13,
5.19]. Every other type is of no use to a live client and skipped (Mantid counts them as discarded)."""


def format_word(packet_type: int, version: int) -> int:
    """The header's format word: ``type << 8 | version`` [NP 3] (e.g. 0x4006 v1 -> 0x00400601)."""
    return (packet_type << 8) | version


class RunStatusCode(IntEnum):
    """RUN_STATUS status values (bits 31..24 of the word at offset 8) [NP 5.8; PROLOGUE impl]."""

    NO_RUN = 0
    NEW_RUN = 1
    RUN_EOF = 2
    RUN_BOF = 3
    END_RUN = 4
    STATE = 5
    PROLOGUE = 6


class AnnotationType(IntEnum):
    """STREAM_ANNOTATION types (bits 30..16 of the word at offset 0) [NP 5.14; SYSTEM impl]."""

    GENERIC = 0
    SCAN_START = 1
    SCAN_STOP = 2
    PAUSE = 3
    RESUME = 4
    OVERALL_RUN_COMMENT = 5
    SYSTEM = 6


class ClientFlags(IntEnum):
    """CLIENT_HELLO v1 client flags (offset 4) [NP 5.13]."""

    PAUSE_AGNOSTIC = 0
    NO_PAUSE_DATA = 1
    SEND_PAUSE_DATA = 2


HELLO_START_NOW = 0
"""CLIENT_HELLO requested start: no history, begin with the next live pulse [NP 5.12]."""
HELLO_START_OF_RUN = 1
"""CLIENT_HELLO requested start: the oldest data of the current run (or since the previous run ended) [NP 5.12]."""
MAX_RUN_NUMBER = 2**32 - 1
"""Largest run number: RUN_STATUS's run number is a u32, 0 meaning no run [NP 5.8, 5.9]."""


class PulseFlags(IntFlag):
    """Flags of a banked event / beam monitor pulse (low bits of offset 12 of the payload) [NP 5.1, 5.2]."""

    ERROR = 0x01
    PARTIAL = 0x02
    VETOED = 0x04
    MISSING_RTDL = 0x08
    MAPPING_ERROR = 0x10
    DUPLICATE_PULSE = 0x20
    PCHARGE_UNCORRECTED = 0x40


VETO_SHIFT = 20
"""v1 banked event / beam monitor: bits 31..20 of the flags word are the veto flags, bits 19..0 the flags
[NP 5.2, 5.4]."""
FLAGS_MASK_V1 = (1 << VETO_SHIFT) - 1

UNMAPPED_BANK = 0xFFFFFFFF
"""Bank of events whose pixel is missing from the mapping table [NP 5.1]; Mantid skips it."""
ERROR_BANK = 0xFFFFFFFE
"""Bank of events whose pixel has the detector error bit [NP 5.1]; Mantid skips it."""

COR_BIT = 0x80000000
"""Source / monitor section word at offset 8: bit 31 set = TOFs already corrected for frame skew [NP 5.1, 5.3]."""
TOF_OFFSET_MASK = 0x7FFFFFFF
"""Same word, bits 30..0: the TOF offset in units of 100 ns, added to each TOF when COR is clear [NP 5.1]."""
TOF_UNIT_US = 0.1
"""Event TOFs, TOF offsets and intra-pulse times are in units of 100 ns = 0.1 µs [NP 5.1, 5.3]."""
CHARGE_UNIT_PC = 10.0
"""Pulse charge is in units of 10 pC [NP 5.1]."""

MONITOR_ID_SHIFT = 22
"""Monitor section word at offset 0: bits 31..22 monitor id, bits 21..0 event count [NP 5.3]."""
MONITOR_COUNT_MASK = (1 << MONITOR_ID_SHIFT) - 1
MONITOR_TOF_MASK = 0x1FFFFF
"""Monitor event word: bits 20..0 TOF (100 ns); bit 31 rising edge, bits 30..21 cycle [NP 5.3]."""

SYNC_SIGNATURE = b"SNSADARAORNL\x00\x00\xf0\x7f"
"""First 16 payload bytes of a SYNC packet [NP 5.15]."""

PULSE_PREFIX = struct.Struct("<4I")
"""Banked event / beam monitor payload offset 0: pulse charge (10 pC), pulse energy (eV), cycle, flags
[NP 5.1-5.4]."""
SOURCE_SECTION = struct.Struct("<4I")
"""Banked event source section: source id, intra-pulse time (100 ns), COR|TOF offset, bank count [NP 5.1]."""
BANK_SECTION = struct.Struct("<2I")
"""Banked event bank section: bank id, event count; then count x (u32 TOF in 100 ns, u32 pixel id) [NP 5.1]."""
EVENT_BYTES = 8
MONITOR_SECTION = struct.Struct("<3I")
"""Beam monitor section: monitor id << 22 | event count, source id, COR|TOF offset; then count u32 events
[NP 5.3]."""
RUN_STATUS_V0 = struct.Struct("<3I")
"""Run status v0: run number, run start (EPICS s), status << 24 | file number [NP 5.8]."""
RUN_STATUS_V1 = struct.Struct("<5I")
"""Run status v1: v0 + paused << 24 | pause file number, addendum << 24 | addendum file number [NP 5.9]."""
VARIABLE_PREFIX = struct.Struct("<3I")
"""Variable value packets: device id, variable id, status << 16 | severity [NP 6.3-6.7]."""
U32 = struct.Struct("<I")
DOUBLE = struct.Struct("<d")
ANNOTATION_PREFIX = struct.Struct("<2I")
"""Stream annotation: RST << 31 | type << 16 | comment length, scan index [NP 5.14]."""
ANNOTATION_RESET_BIT = 0x80000000
DEVICE_PREFIX = struct.Struct("<2I")
"""Device descriptor: device id, XML length [NP 6.2]."""
HELLO_V0 = struct.Struct("<I")
HELLO_V1 = struct.Struct("<2I")
"""Client hello: requested start (EPICS s) [v0]; + client flags [v1] [NP 5.12, 5.13]."""
SYNC_PREFIX = struct.Struct("<16sQI")
"""Sync: signature, u64 file offset, comment length [NP 5.15]."""


class Header(NamedTuple):
    """A packet header [NP 3].

    Attributes:
        payload_len: bytes of payload after the 16-byte header.
        packet_type: bits 31..8 of the format word (24 bits).
        version: bits 7..0 of the format word.
        seconds: timestamp, seconds since the EPICS epoch (for event packets: the pulse ID = pulse time).
        nanoseconds: timestamp, nanoseconds (0..999,999,999 for a valid packet).
    """

    payload_len: int
    packet_type: int
    version: int
    seconds: int
    nanoseconds: int

    @property
    def epics_ns(self) -> int:
        """The timestamp in nanoseconds since the EPICS epoch."""
        return self.seconds * NS_PER_S + self.nanoseconds

    @property
    def unix_ns(self) -> int:
        """The timestamp in nanoseconds since the Unix epoch (UTC)."""
        return (self.seconds + EPICS_EPOCH_OFFSET_S) * NS_PER_S + self.nanoseconds


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """The header at ``offset`` of ``data`` (at least 16 bytes from there).

    Raises:
        struct.error: fewer than 16 bytes.
    """
    length, fmt, seconds, nanoseconds = HEADER.unpack_from(data, offset)
    return Header(length, fmt >> 8, fmt & 0xFF, seconds, nanoseconds)


def padded(length: int) -> int:
    """``length`` rounded up to a multiple of 4 (variable-length text is zero-padded so) [NP 5.10, 6.2]."""
    return (length + 3) & ~3
