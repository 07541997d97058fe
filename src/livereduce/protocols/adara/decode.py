"""Decoding ADARA: reading each packet type a live client uses (the framing of the byte stream into packets is
:mod:`livereduce.protocols.adara.framing`).

Every function here treats its input as hostile: lengths and counts are checked against the bytes actually
present *before* they are used, and a packet whose fields contradict its length raises :class:`PacketError`
so that the caller drops the **whole** packet (accepting the first part of a banked event packet would add
bogus events and charge). Layouts: :mod:`livereduce.protocols.adara.packets` (ADARA protocol spec, cited there).

Returned arrays never alias the input buffer, which the framer reuses.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from livereduce.protocols.adara.packets import (
    ANNOTATION_PREFIX,
    ANNOTATION_RESET_BIT,
    BANK_SECTION,
    COR_BIT,
    DEVICE_PREFIX,
    DOUBLE,
    ERROR_BANK,
    EVENT_BYTES,
    FLAGS_MASK_V1,
    HELLO_V0,
    HELLO_V1,
    MONITOR_COUNT_MASK,
    MONITOR_ID_SHIFT,
    MONITOR_SECTION,
    MONITOR_TOF_MASK,
    PULSE_PREFIX,
    RUN_STATUS_V0,
    RUN_STATUS_V1,
    SOURCE_SECTION,
    TOF_OFFSET_MASK,
    U32,
    UNMAPPED_BANK,
    VARIABLE_PREFIX,
    VETO_SHIFT,
    Header,
    PacketType,
)

Buffer = bytes | bytearray | memoryview


class PacketError(ValueError):
    """A packet whose content contradicts its length or the protocol; the caller drops the whole packet.

    Attributes:
        reason: a short, stable key for counting (e.g. ``"bank event count beyond the payload"``).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


# --- packets ------------------------------------------------------------------------------------------------
def _need(payload: Buffer, size: int, what: str) -> None:
    if len(payload) < size:
        raise PacketError("payload shorter than its fields", f"{what} needs {size} bytes, payload has {len(payload)}")


def _text(payload: Buffer, offset: int, length: int, what: str) -> bytes:
    """``length`` bytes at ``offset`` (checked against the payload first)."""
    if offset + length > len(payload):
        raise PacketError(f"{what} length beyond the payload", f"{length} bytes at {offset} of {len(payload)}")
    return bytes(payload[offset : offset + length])


def _xml(data: bytes, what: str) -> ET.Element:
    try:
        return ET.fromstring(data)  # noqa: S314 - expat: no external entities, bounded by the packet cap
    except (ET.ParseError, LookupError, ValueError) as err:  # LookupError: unknown declared encoding
        raise PacketError(f"{what} is not well-formed XML", str(err)) from None


def local_name(element: ET.Element) -> str:
    """An element's tag without its namespace (``{ns}tag`` -> ``tag``): ADARA documents use default
    namespaces [robustness practice for xml.etree]."""
    return element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""


def _children(element: ET.Element) -> dict[str, str]:
    """Text of each direct child by local name (the first of each name)."""
    texts: dict[str, str] = {}
    for child in element:
        texts.setdefault(local_name(child), (child.text or "").strip())
    return texts


@dataclass(frozen=True, slots=True)
class RunStatus:
    """RUN_STATUS [NP 5.8, 5.9].

    Attributes:
        run_number: 0 when not in a run.
        run_start: run start, EPICS seconds (0 when not recording).
        status: status value (see :class:`~livereduce.protocols.adara.packets.RunStatusCode`; unknown values are
            kept as they are).
        file_number: bits 23..0 of the status word.
        paused: v1 only: the paused flag; None for v0.
    """

    run_number: int
    run_start: int
    status: int
    file_number: int
    paused: bool | None = None


def decode_run_status(header: Header, payload: Buffer) -> RunStatus:
    """Raises: PacketError: payload shorter than 12 (v0) / 20 (v1) bytes."""
    if header.version >= 1:
        _need(payload, RUN_STATUS_V1.size, "run status v1")
        run, start, word, pause_word, _ = RUN_STATUS_V1.unpack_from(payload)
        return RunStatus(run, start, word >> 24, word & 0xFFFFFF, bool(pause_word >> 24))
    _need(payload, RUN_STATUS_V0.size, "run status v0")
    run, start, word = RUN_STATUS_V0.unpack_from(payload)
    return RunStatus(run, start, word >> 24, word & 0xFFFFFF)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """RUN_INFO [NP 5.10; runinfo.xsd]: the ``<runinfo>`` document.

    Attributes:
        run_number: ``run_number`` element, or None if absent or not an integer.
        proposal_id: ``proposal_id`` (Mantid's log ``experiment_identifier``), "" if absent.
        run_title: ``run_title`` (Mantid's log ``run_title``), "" if absent.
        fields: text of every direct child element by local name.
    """

    run_number: int | None
    proposal_id: str
    run_title: str
    fields: dict[str, str]


def decode_run_info(payload: Buffer) -> RunInfo:
    """Raises: PacketError: length beyond the payload, or not well-formed XML."""
    _need(payload, 4, "run info")
    (length,) = U32.unpack_from(payload)
    fields = _children(_xml(_text(payload, 4, length, "run info XML"), "run info"))
    number = fields.get("run_number", "")
    return RunInfo(
        int(number) if number.isdigit() else None, fields.get("proposal_id", ""), fields.get("run_title", ""), fields
    )


def decode_geometry(payload: Buffer) -> memoryview:
    """The GEOMETRY packet's instrument definition (IDF) XML document [NP 5.17], as a view of the payload's
    bytes (not copied, not decoded: the XML parser reads its declared encoding, UTF-8 by default).

    Raises:
        PacketError: length beyond the payload.
    """
    _need(payload, 4, "geometry")
    (length,) = U32.unpack_from(payload)
    if 4 + length > len(payload):
        raise PacketError("geometry XML length beyond the payload", f"{length} bytes at 4 of {len(payload)}")
    return memoryview(payload)[4 : 4 + length]


@dataclass(frozen=True, slots=True)
class BeamlineInfo:
    """BEAMLINE_INFO [NP 5.18, 5.19]. Mantid takes ``long_name`` as the instrument name.

    Attributes:
        target_station: 1 or 2 (v0 leaves the field unused: 0 is read as 1).
        beamline_id: e.g. ``"BL11A"``.
        short_name: e.g. ``"PG3"``.
        long_name: e.g. ``"POWGEN"``.
    """

    target_station: int
    beamline_id: str
    short_name: str
    long_name: str


def decode_beamline_info(payload: Buffer) -> BeamlineInfo:
    """Raises: PacketError: the three names do not fit in the payload."""
    _need(payload, 4, "beamline info")
    (word,) = U32.unpack_from(payload)
    lengths = ((word >> 16) & 0xFF, (word >> 8) & 0xFF, word & 0xFF)
    text = _text(payload, 4, sum(lengths), "beamline names").decode("utf-8", "replace")
    first, second = lengths[0], lengths[0] + lengths[1]
    return BeamlineInfo((word >> 24) or 1, text[:first], text[first:second], text[second:])


@dataclass(frozen=True, slots=True)
class Annotation:
    """STREAM_ANNOTATION [NP 5.14].

    Attributes:
        reset_hint: the RST bit (hint: reset accumulated statistics).
        kind: annotation type (:class:`~livereduce.protocols.adara.packets.AnnotationType`; unknown kept).
        scan_index: non-zero for scan start/stop.
        comment: the comment text.
    """

    reset_hint: bool
    kind: int
    scan_index: int
    comment: str


def decode_annotation(payload: Buffer) -> Annotation:
    """Raises: PacketError: comment length beyond the payload."""
    _need(payload, ANNOTATION_PREFIX.size, "annotation")
    word, scan_index = ANNOTATION_PREFIX.unpack_from(payload)
    comment = _text(payload, ANNOTATION_PREFIX.size, word & 0xFFFF, "annotation comment")
    return Annotation(
        bool(word & ANNOTATION_RESET_BIT), (word >> 16) & 0x7FFF, scan_index, comment.decode("utf-8", "replace")
    )


@dataclass(frozen=True, slots=True)
class ProcessVariable:
    """One ``<process_variable>`` of a device descriptor [device.xsd].

    Attributes:
        pv_id: ``pv_id`` (the variable id of VAR_VALUE packets).
        name: ``pv_name`` (the log name).
        pv_type: ``pv_type``: ``double``, ``string``, ``unsigned integer``, ``signed integer``, ``boolean``,
            ``enum_NN``, ... ("" if absent).
        units: ``pv_units`` ("" if absent).
    """

    pv_id: int
    name: str
    pv_type: str
    units: str


@dataclass(frozen=True, slots=True)
class DeviceDescriptor:
    """DEVICE_DESC [NP 6.2; device.xsd].

    Attributes:
        device_id: the device id of its VAR_VALUE packets.
        name: ``device_name``.
        variables: process variables by ``pv_id``.
        invalid: ``process_variable`` elements without a name or an integer id (not usable).
    """

    device_id: int
    name: str
    variables: dict[int, ProcessVariable]
    invalid: int = 0


def decode_device_descriptor(payload: Buffer) -> DeviceDescriptor:
    """Raises: PacketError: XML length beyond the payload, or not well-formed XML."""
    _need(payload, DEVICE_PREFIX.size, "device descriptor")
    device_id, length = DEVICE_PREFIX.unpack_from(payload)
    root = _xml(_text(payload, DEVICE_PREFIX.size, length, "device descriptor XML"), "device descriptor")
    variables: dict[int, ProcessVariable] = {}
    invalid = 0
    for element in root.iter():
        if local_name(element) != "process_variable":
            continue
        fields = _children(element)
        name, pv_id = fields.get("pv_name", ""), fields.get("pv_id", "")
        if not name or not pv_id.isdigit() or int(pv_id) > 0xFFFFFFFF:
            invalid += 1
            continue
        variables[int(pv_id)] = ProcessVariable(int(pv_id), name, fields.get("pv_type", ""), fields.get("pv_units", ""))
    return DeviceDescriptor(device_id, _children(root).get("device_name", ""), variables, invalid)


VariableValueType = int | float | str | np.ndarray


@dataclass(frozen=True, slots=True)
class VariableValue:
    """VAR_VALUE_U32/DOUBLE/STRING/U32_ARRAY/DOUBLE_ARRAY [NP 6.3-6.7]; the header time is when it changed.

    Attributes:
        device_id: device of the variable.
        variable_id: ``pv_id`` within the device.
        status: EPICS alarm status (bits 31..16) [NP 6.1].
        severity: alarm severity (bits 15..0): 0 none, 1 minor, 2 major, 3 invalid, 0xFFFF not reported.
        value: int (U32), float (DOUBLE), str (STRING), or a uint32 / float64 array (the array types).
    """

    device_id: int
    variable_id: int
    status: int
    severity: int
    value: VariableValueType


VARIABLE_TYPES = frozenset(
    {
        PacketType.VAR_VALUE_U32,
        PacketType.VAR_VALUE_DOUBLE,
        PacketType.VAR_VALUE_STRING,
        PacketType.VAR_VALUE_U32_ARRAY,
        PacketType.VAR_VALUE_DOUBLE_ARRAY,
    }
)


def decode_variable_value(header: Header, payload: Buffer) -> VariableValue:
    """Raises: PacketError: payload shorter than the type's fields, or a count/length beyond the payload."""
    kind = header.packet_type
    _need(payload, VARIABLE_PREFIX.size + 4, "variable value")
    device, variable, word = VARIABLE_PREFIX.unpack_from(payload)
    at = VARIABLE_PREFIX.size
    value: VariableValueType
    if kind == PacketType.VAR_VALUE_U32:
        (value,) = U32.unpack_from(payload, at)
    elif kind == PacketType.VAR_VALUE_DOUBLE:
        _need(payload, at + DOUBLE.size, "double variable value")
        (value,) = DOUBLE.unpack_from(payload, at)
    else:
        (count,) = U32.unpack_from(payload, at)
        if kind == PacketType.VAR_VALUE_STRING:
            value = _text(payload, at + 4, count, "string value").decode("utf-8", "replace")
        else:
            size, dtype = (4, "<u4") if kind == PacketType.VAR_VALUE_U32_ARRAY else (8, "<f8")
            if count > (len(payload) - at - 4) // size:
                raise PacketError("array element count beyond the payload", f"{count} elements")
            value = np.frombuffer(payload, dtype, count, at + 4).copy()
    return VariableValue(device, variable, word >> 16, word & 0xFFFF, value)


@dataclass(frozen=True, slots=True)
class Pulse:
    """The 16-byte prefix of BANKED_EVENT and BEAM_MONITOR_EVENT [NP 5.1-5.4].

    Attributes:
        charge: pulse charge in units of 10 pC.
        energy: pulse energy, eV.
        cycle: accelerator cycle (all ones if unknown).
        flags: v0: the whole 32-bit word; v1: bits 19..0 (see :class:`~livereduce.protocols.adara.packets.PulseFlags`).
        veto: v1: bits 31..20 (veto flags of the previous pulse); v0: 0.
    """

    charge: int
    energy: int
    cycle: int
    flags: int
    veto: int


def decode_pulse(header: Header, payload: Buffer) -> Pulse:
    """Raises: PacketError: payload shorter than 16 bytes."""
    _need(payload, PULSE_PREFIX.size, "pulse prefix")
    charge, energy, cycle, word = PULSE_PREFIX.unpack_from(payload)
    if header.version >= 1:
        return Pulse(charge, energy, cycle, word & FLAGS_MASK_V1, word >> VETO_SHIFT)
    return Pulse(charge, energy, cycle, word, 0)


@dataclass(slots=True)
class BankedEvents:
    """A BANKED_EVENT packet, walked and checked [NP 5.1, 5.2].

    Attributes:
        pulse: the prefix.
        sections: one ``(byte offset, event count, tof offset, bank id)`` per bank section of a regular bank:
            the events are ``count`` pairs of u32 (TOF in 100 ns, pixel id) at ``byte offset`` of the payload;
            ``tof offset`` is the enclosing source section's offset in 100 ns when its COR bit is clear, else 0.
        special: events of the special banks, by bank id (0xFFFFFFFF unmapped pixels, 0xFFFFFFFE pixel errors),
            only banks with events.
    """

    pulse: Pulse
    sections: list[tuple[int, int, int, int]] = field(default_factory=list)
    special: dict[int, int] = field(default_factory=dict)

    @property
    def event_count(self) -> int:
        """Events in the regular banks."""
        return sum(section[1] for section in self.sections)


def walk_banked_events(header: Header, payload: Buffer) -> BankedEvents:
    """Walk the source and bank sections of a BANKED_EVENT payload, checking every count against the bytes
    left before using it. Sections run until the payload ends; no count of source sections exists [NP 5.1].

    Raises:
        PacketError: a bank count or event count points past the end of the payload, or bytes are left over
            that cannot form a section.
    """
    result = BankedEvents(decode_pulse(header, payload))
    end = len(payload)
    at = PULSE_PREFIX.size
    unpack_source, unpack_bank = SOURCE_SECTION.unpack_from, BANK_SECTION.unpack_from
    while at < end:
        if end - at < SOURCE_SECTION.size:
            raise PacketError("source section beyond the payload", f"{end - at} bytes left at {at}")
        _, _, word, banks = unpack_source(payload, at)
        at += SOURCE_SECTION.size
        if banks > (end - at) // BANK_SECTION.size:
            raise PacketError("bank count beyond the payload", f"{banks} banks, {end - at} bytes left")
        offset = 0 if word & COR_BIT else word & TOF_OFFSET_MASK
        for _ in range(banks):
            if end - at < BANK_SECTION.size:
                raise PacketError("bank section beyond the payload", f"{end - at} bytes left at {at}")
            bank, count = unpack_bank(payload, at)
            at += BANK_SECTION.size
            if count > (end - at) // EVENT_BYTES:
                raise PacketError("bank event count beyond the payload", f"bank {bank}: {count} events")
            if count:
                if bank in (UNMAPPED_BANK, ERROR_BANK):
                    result.special[bank] = result.special.get(bank, 0) + count
                else:
                    result.sections.append((at, count, offset, bank))
            at += count * EVENT_BYTES
    return result


@dataclass(frozen=True, slots=True)
class MonitorEvents:
    """One monitor section of a BEAM_MONITOR_EVENT packet [NP 5.3].

    Attributes:
        monitor_id: 10-bit monitor id.
        source_id: hardware that recorded the events.
        tof_us: event times of flight in µs, float64, shape (count,), with the COR/offset rule applied.
    """

    monitor_id: int
    source_id: int
    tof_us: np.ndarray


def decode_beam_monitor(header: Header, payload: Buffer) -> tuple[Pulse, list[MonitorEvents]]:
    """The prefix and the monitor sections (sections run until the payload ends) [NP 5.3, 5.4].

    Raises:
        PacketError: an event count points past the end of the payload, or bytes are left over.
    """
    pulse = decode_pulse(header, payload)
    monitors = []
    end = len(payload)
    at = PULSE_PREFIX.size
    while at < end:
        if end - at < MONITOR_SECTION.size:
            raise PacketError("monitor section beyond the payload", f"{end - at} bytes left at {at}")
        word, source, tof_word = MONITOR_SECTION.unpack_from(payload, at)
        at += MONITOR_SECTION.size
        count = word & MONITOR_COUNT_MASK
        if count > (end - at) // 4:
            raise PacketError("monitor event count beyond the payload", f"{count} events")
        raw = np.frombuffer(payload, "<u4", count, at) & np.uint32(MONITOR_TOF_MASK)
        offset = 0 if tof_word & COR_BIT else tof_word & TOF_OFFSET_MASK
        monitors.append(MonitorEvents(word >> MONITOR_ID_SHIFT, source, (raw + float(offset)) / 10.0))
        at += 4 * count
    return pulse, monitors


def decode_client_hello(header: Header, payload: Buffer) -> tuple[int, int | None]:
    """CLIENT_HELLO [NP 5.12, 5.13]: (requested start in EPICS seconds, client flags or None for v0).

    Raises:
        PacketError: payload shorter than 4 (v0) / 8 (v1) bytes.
    """
    if header.version >= 1:
        _need(payload, HELLO_V1.size, "client hello v1")
        start, flags = HELLO_V1.unpack_from(payload)
        return start, flags
    _need(payload, HELLO_V0.size, "client hello v0")
    return HELLO_V0.unpack_from(payload)[0], None


def event_arrays(
    pairs: Buffer | np.ndarray,
    offsets: Sequence[tuple[int, int, int]] | np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode contiguous banked events, vectorised: (pixel id, TOF).

    Args:
        pairs: ``n`` events of 8 bytes each (u32 TOF in 100 ns, u32 pixel id) [NP 5.1], as gathered from the
            regular bank sections of BANKED_EVENT packets.
        offsets: ``(first event, event count, TOF offset in 100 ns)`` for the runs of events whose source
            section has COR clear and a non-zero offset [NP 5.1], as tuples or an int array of shape (runs, 3);
            None or empty when there are none.
        out: float32 array of shape (n,) to write the TOFs into (e.g. a scipp variable's values), or None.

    Returns:
        ``(pixel, tof_us)``: pixel ids as a uint32 view of ``pairs`` (no copy, shape (n,), stride 8 bytes) and
        the TOFs in µs as float32 (``out``, or a new array), ``(tof + offset) / 10``.

    Raises:
        ValueError: ``pairs`` is not a multiple of 8 bytes, ``out`` has the wrong shape or dtype, or a run of
            ``offsets`` reaches beyond the events.
    """
    words = np.frombuffer(pairs, "<u4")
    if words.size % 2:
        raise ValueError(f"event data of {words.size * 4} bytes is not a whole number of 8-byte events")
    words = words.reshape(-1, 2)
    n = words.shape[0]
    if out is not None and (out.shape != (n,) or out.dtype != np.float32):
        raise ValueError(f"out must be float32 of shape ({n},), got {out.dtype} {out.shape}")
    tof = np.empty(n, np.float32) if out is None else out
    runs = np.asarray(offsets if offsets is not None else [], dtype=np.int64).reshape(-1, 3)
    if runs.size:
        if runs[:, 0].min() < 0 or (runs[:, 0] + runs[:, 1]).max() > n:
            raise ValueError(f"TOF offset runs reach beyond the {n} events")
        steps = np.zeros(n + 1, np.float64)
        np.add.at(steps, runs[:, 0], runs[:, 2])
        np.add.at(steps, runs[:, 0] + runs[:, 1], -runs[:, 2])
        exact = words[:, 0] + np.cumsum(steps[:n])
        np.divide(exact, 10.0, out=tof, casting="same_kind")
    else:
        _tof_us(words[:, 0], tof)
    return words[:, 1], tof


def _tof_us(tof_words: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = float32(tof_words / 10)``, correctly rounded, for u32 TOF words in 100 ns -> µs.

    Words below 2**24 are exact in float32, and a float32 division of them is correctly rounded, as the float64
    division rounded to float32 is (double rounding is harmless for a quotient when 53 >= 2 * 24 + 2): so they are
    converted and divided in float32, in place (cheaper than float64 with a cast, and ``out`` stays in cache).
    If any word is 2**24 or more (a TOF of 1.68 s and more, not seen in real streams), all are divided in float64.
    """
    np.copyto(out, tof_words, casting="unsafe")
    if out.size and out.max() >= _EXACT_FLOAT32:
        np.divide(tof_words, 10.0, out=out, casting="unsafe")
    else:
        out /= np.float32(10)


_EXACT_FLOAT32 = np.float32(2**24)
"""The smallest float32 that may be a rounded integer: integers below it convert to float32 exactly."""
