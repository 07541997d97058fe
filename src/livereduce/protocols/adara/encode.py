"""Encoding ADARA packets: the client hello, and everything an SMS sends (for the fake SMS and the tests).

Times are given as nanoseconds since the **Unix** epoch (UTC) and written as EPICS seconds and nanoseconds
[NP 3]. Variable-length text is zero-padded to a multiple of 4 bytes [NP 5.10, 6.2]. Layouts:
:mod:`livereduce.protocols.adara.packets` (ADARA protocol spec, cited there).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping

import numpy as np

from livereduce.protocols.adara.packets import (
    ANNOTATION_PREFIX,
    ANNOTATION_RESET_BIT,
    BANK_SECTION,
    COR_BIT,
    DEVICE_PREFIX,
    DOUBLE,
    EPICS_EPOCH_OFFSET_S,
    HEADER,
    HELLO_V0,
    HELLO_V1,
    MONITOR_COUNT_MASK,
    MONITOR_ID_SHIFT,
    MONITOR_SECTION,
    MONITOR_TOF_MASK,
    NS_PER_S,
    PULSE_PREFIX,
    RUN_STATUS_V0,
    RUN_STATUS_V1,
    SOURCE_SECTION,
    SYNC_PREFIX,
    SYNC_SIGNATURE,
    TOF_OFFSET_MASK,
    U32,
    VARIABLE_PREFIX,
    VETO_SHIFT,
    PacketType,
    format_word,
    padded,
)

RUNINFO_NAMESPACE = "http://public.sns.gov/schema/runinfo.xsd"
DEVICE_NAMESPACE = "http://public.sns.gov/schema/device.xsd"
_EPICS_OFFSET_NS = EPICS_EPOCH_OFFSET_S * NS_PER_S
_PREFIX_WORDS = 12  # header 4 + pulse prefix 4 + one source section 4
_U32_MAX = 0xFFFFFFFF


def epics_time(unix_ns: int) -> tuple[int, int]:
    """(EPICS seconds, nanoseconds) of a Unix time in ns [NP 3].

    Raises:
        ValueError: the time is before 1990-01-01 or after the u32 range of EPICS seconds (year 2126).
    """
    seconds, nanoseconds = divmod(int(unix_ns) - _EPICS_OFFSET_NS, NS_PER_S)
    if not 0 <= seconds <= _U32_MAX:
        raise ValueError(f"time {unix_ns} ns (Unix) is outside the EPICS u32 seconds range")
    return seconds, nanoseconds


def packet(packet_type: int, version: int, payload: bytes, unix_ns: int) -> bytes:
    """Header + payload.

    Raises:
        ValueError: the payload is not a multiple of 4 bytes [NP 2], or the time is out of range.
    """
    if len(payload) % 4:
        raise ValueError(f"payload of {len(payload)} bytes is not a multiple of 4")
    seconds, nanoseconds = epics_time(unix_ns)
    return HEADER.pack(len(payload), format_word(packet_type, version), seconds, nanoseconds) + payload


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (padded(len(data)) - len(data))


def client_hello(start: int, unix_ns: int, flags: int | None = None) -> bytes:
    """CLIENT_HELLO [NP 5.12, 5.13]: v0 (Mantid's, 20 bytes) without ``flags``, v1 (24 bytes) with them.

    Args:
        start: requested start, EPICS seconds (0 now, 1 start of run).
        unix_ns: the client's current time.
        flags: v1 client flags (:class:`~livereduce.protocols.adara.packets.ClientFlags`), or None for v0.
    """
    if flags is None:
        return packet(PacketType.CLIENT_HELLO, 0, HELLO_V0.pack(start), unix_ns)
    return packet(PacketType.CLIENT_HELLO, 1, HELLO_V1.pack(start, flags), unix_ns)


def run_status(
    run_number: int, run_start: int, status: int, unix_ns: int, *, file_number: int = 0, paused: bool = False
) -> bytes:
    """RUN_STATUS v1 [NP 5.9] (``run_start`` in EPICS seconds, ``status`` a RunStatusCode)."""
    word = (status << 24) | (file_number & 0xFFFFFF)
    return packet(
        PacketType.RUN_STATUS, 1, RUN_STATUS_V1.pack(run_number, run_start, word, int(paused) << 24, 0), unix_ns
    )


def run_status_v0(run_number: int, run_start: int, status: int, unix_ns: int, *, file_number: int = 0) -> bytes:
    """RUN_STATUS v0 [NP 5.8]."""
    word = (status << 24) | (file_number & 0xFFFFFF)
    return packet(PacketType.RUN_STATUS, 0, RUN_STATUS_V0.pack(run_number, run_start, word), unix_ns)


def _xml_packet(packet_type: int, version: int, prefix: bytes, xml: bytes, unix_ns: int) -> bytes:
    return packet(packet_type, version, prefix + U32.pack(len(xml)) + _pad(xml), unix_ns)


def runinfo_xml(run_number: int, *, proposal_id: str = "", run_title: str = "", facility: str = "SNS") -> bytes:
    """A ``<runinfo>`` document [runinfo.xsd] with the fields a live client reads."""
    root = ET.Element("runinfo", xmlns=RUNINFO_NAMESPACE)
    for name, value in (
        ("das_version", "livereduce-fake-sms"),
        ("facility_name", facility),
        ("proposal_id", proposal_id),
        ("run_number", str(run_number)),
        ("run_title", run_title),
    ):
        ET.SubElement(root, name).text = value
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def run_info(xml: bytes, unix_ns: int) -> bytes:
    """RUN_INFO [NP 5.10]: XML length + XML, padded."""
    return _xml_packet(PacketType.RUN_INFO, 0, b"", xml, unix_ns)


def geometry(idf: str, unix_ns: int) -> bytes:
    """GEOMETRY [NP 5.17]: the instrument definition (IDF) XML."""
    return _xml_packet(PacketType.GEOMETRY, 0, b"", idf.encode("utf-8"), unix_ns)


def beamline_info(beamline_id: str, short_name: str, long_name: str, unix_ns: int, *, target_station: int = 1) -> bytes:
    """BEAMLINE_INFO v1 [NP 5.19]: names concatenated without separators, padded as a whole.

    Raises:
        ValueError: a name is longer than 255 bytes.
    """
    names = [name.encode("utf-8") for name in (beamline_id, short_name, long_name)]
    if any(len(name) > 0xFF for name in names):
        raise ValueError("beamline names are limited to 255 bytes each")
    word = (target_station << 24) | (len(names[0]) << 16) | (len(names[1]) << 8) | len(names[2])
    return packet(PacketType.BEAMLINE_INFO, 1, U32.pack(word) + _pad(b"".join(names)), unix_ns)


def device_xml(name: str, variables: Iterable[tuple[int, str, str, str]]) -> bytes:
    """A ``<device>`` document [device.xsd]: ``variables`` are (pv_id, pv_name, pv_type, pv_units)."""
    root = ET.Element("device", xmlns=DEVICE_NAMESPACE)
    ET.SubElement(root, "device_name").text = name
    listed = ET.SubElement(root, "process_variables")
    for pv_id, pv_name, pv_type, units in variables:
        variable = ET.SubElement(listed, "process_variable")
        ET.SubElement(variable, "pv_name").text = pv_name
        ET.SubElement(variable, "pv_id").text = str(pv_id)
        ET.SubElement(variable, "pv_type").text = pv_type
        if units:
            ET.SubElement(variable, "pv_units").text = units
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def device_descriptor(device_id: int, xml: bytes, unix_ns: int) -> bytes:
    """DEVICE_DESC [NP 6.2]: device id, XML length, XML padded."""
    return packet(PacketType.DEVICE_DESC, 0, DEVICE_PREFIX.pack(device_id, len(xml)) + _pad(xml), unix_ns)


def variable_value(
    device_id: int,
    variable_id: int,
    value: int | float | str | np.ndarray,
    unix_ns: int,
    *,
    status: int = 0,
    severity: int = 0,
) -> bytes:
    """VAR_VALUE_U32 / DOUBLE / STRING / U32_ARRAY / DOUBLE_ARRAY by the value's type [NP 6.3-6.7]
    (int -> U32, float -> DOUBLE, str -> STRING, integer array -> U32_ARRAY, float array -> DOUBLE_ARRAY).

    Raises:
        ValueError: an integer outside the u32 range, or an array of another dtype.
    """
    prefix = VARIABLE_PREFIX.pack(device_id, variable_id, (status << 16) | severity)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iu":
            body = U32.pack(value.size) + value.astype("<u4").tobytes()
            return packet(PacketType.VAR_VALUE_U32_ARRAY, 0, prefix + body, unix_ns)
        if value.dtype.kind == "f":
            body = U32.pack(value.size) + value.astype("<f8").tobytes()
            return packet(PacketType.VAR_VALUE_DOUBLE_ARRAY, 0, prefix + body, unix_ns)
        raise ValueError(f"array values must be integers or floats, not {value.dtype}")
    if isinstance(value, str):
        text = value.encode("utf-8")
        return packet(PacketType.VAR_VALUE_STRING, 0, prefix + U32.pack(len(text)) + _pad(text), unix_ns)
    if isinstance(value, int | np.integer):
        if not 0 <= int(value) <= _U32_MAX:
            raise ValueError(f"{value} does not fit in a u32 variable value")
        return packet(PacketType.VAR_VALUE_U32, 0, prefix + U32.pack(int(value)), unix_ns)
    return packet(PacketType.VAR_VALUE_DOUBLE, 0, prefix + DOUBLE.pack(float(value)), unix_ns)


def annotation(kind: int, comment: str, unix_ns: int, *, scan_index: int = 0, reset_hint: bool = False) -> bytes:
    """STREAM_ANNOTATION [NP 5.14] (``kind`` an AnnotationType).

    Raises:
        ValueError: the comment is longer than 65,535 bytes.
    """
    text = comment.encode("utf-8")
    if len(text) > 0xFFFF:
        raise ValueError("annotation comments are limited to 65535 bytes")
    word = (ANNOTATION_RESET_BIT if reset_hint else 0) | ((kind & 0x7FFF) << 16) | len(text)
    return packet(PacketType.STREAM_ANNOTATION, 0, ANNOTATION_PREFIX.pack(word, scan_index) + _pad(text), unix_ns)


def heartbeat(unix_ns: int) -> bytes:
    """HEARTBEAT [NP 5.16]: empty payload."""
    return packet(PacketType.HEARTBEAT, 0, b"", unix_ns)


def sync(unix_ns: int, *, file_offset: int = 0, comment: str = "") -> bytes:
    """SYNC [NP 5.15]: signature, u64 file offset, comment."""
    text = comment.encode("utf-8")
    return packet(PacketType.SYNC, 0, SYNC_PREFIX.pack(SYNC_SIGNATURE, file_offset, len(text)) + _pad(text), unix_ns)


def _pulse_word(flags: int, veto: int, version: int) -> int:
    return ((veto << VETO_SHIFT) | flags) if version >= 1 else flags


def banked_event(
    unix_ns: int,
    banks: Mapping[int, tuple[np.ndarray, np.ndarray]],
    *,
    charge: int = 0,
    energy: int = 0,
    cycle: int = 0,
    flags: int = 0,
    veto: int = 0,
    cor: bool = True,
    tof_offset: int = 0,
    source_id: int = 0,
    version: int = 1,
) -> bytes:
    """One BANKED_EVENT packet [NP 5.1, 5.2] with one source section.

    Args:
        unix_ns: pulse time.
        banks: bank id -> (TOF in 100 ns units, pixel id), both u32 arrays of the same length.
        charge: pulse charge in units of 10 pC.
        cor: the COR bit (TOFs already corrected); with it clear, ``tof_offset`` (100 ns) is to be added.
        version: 0 (flags word = ``flags``) or 1 (veto << 20 | flags).
    """
    body = [PULSE_PREFIX.pack(charge, energy, cycle, _pulse_word(flags, veto, version))]
    cor_word = (COR_BIT if cor else 0) | (tof_offset & TOF_OFFSET_MASK)
    body.append(SOURCE_SECTION.pack(source_id, 0, cor_word, len(banks)))
    for bank, (tof, pixel) in banks.items():
        pairs = np.empty((len(tof), 2), "<u4")
        pairs[:, 0], pairs[:, 1] = tof, pixel
        body += [BANK_SECTION.pack(bank, len(tof)), pairs.tobytes()]
    return packet(PacketType.BANKED_EVENT, version, b"".join(body), unix_ns)


def banked_events(
    pulse_ns: np.ndarray,
    *,
    charge: np.ndarray,
    flags: np.ndarray,
    section_pulse: np.ndarray,
    section_bank: np.ndarray,
    section_count: np.ndarray,
    tof: np.ndarray,
    pixel: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Many BANKED_EVENT v1 packets at once, vectorised: one packet per pulse, one source section (COR set,
    TOFs already corrected), one bank section per ``section_*`` entry [NP 5.2].

    Args:
        pulse_ns: pulse times, Unix ns, int64 (K,).
        charge: pulse charges in units of 10 pC, (K,).
        flags: the v1 flags words (veto << 20 | flags), (K,).
        section_pulse: pulse index of each bank section, non-decreasing, (S,).
        section_bank: bank id of each section, (S,).
        section_count: events in each section, (S,).
        tof: TOF of each event in 100 ns units, u32 (N,), sections in order (N = sum of ``section_count``).
        pixel: pixel id of each event, u32 (N,).

    Returns:
        ``(words, ends)``: the packets as one little-endian uint32 array (send ``memoryview(words)``), and the
        end of each packet in bytes, int64 (K,).

    Raises:
        ValueError: inconsistent lengths, or a pulse time outside the EPICS u32 seconds range.
    """
    k = pulse_ns.size
    section_count = np.asarray(section_count, np.int64)
    sizes = {section_pulse.size, section_bank.size, section_count.size}
    if tof.size != pixel.size or int(section_count.sum()) != tof.size or len(sizes) != 1:
        raise ValueError("banked_events: section counts, TOFs and pixel ids differ in length")
    epics_ns = np.asarray(pulse_ns, np.int64) - _EPICS_OFFSET_NS
    seconds, nanoseconds = np.divmod(epics_ns, NS_PER_S)
    if k and (seconds.min() < 0 or seconds.max() > _U32_MAX):
        raise ValueError("banked_events: a pulse time is outside the EPICS u32 seconds range")
    section_words = 2 + 2 * section_count
    packet_words = _PREFIX_WORDS + np.bincount(section_pulse, weights=section_words, minlength=k).astype(np.int64)
    ends = np.cumsum(packet_words)
    starts = ends - packet_words
    words = np.empty(int(ends[-1]) if k else 0, "<u4")
    is_event = np.ones(words.size, bool)
    fields = (
        (packet_words - 4) * 4,
        format_word(PacketType.BANKED_EVENT, 1),
        seconds,
        nanoseconds,
        charge,
        0,
        0,
        flags,
        0,
        0,
        COR_BIT,
        np.bincount(section_pulse, minlength=k),
    )
    for i, value in enumerate(fields):
        words[starts + i] = value
        is_event[starts + i] = False
    before = np.cumsum(section_words) - section_words  # words of the sections before, over all packets
    first_section = np.searchsorted(section_pulse, np.arange(k))
    in_packet = before - np.append(before, 0)[first_section][section_pulse]
    section_start = starts[section_pulse] + _PREFIX_WORDS + in_packet
    words[section_start] = section_bank
    words[section_start + 1] = section_count
    is_event[section_start] = False
    is_event[section_start + 1] = False
    events = np.empty((tof.size, 2), "<u4")
    events[:, 0], events[:, 1] = tof, pixel
    words[is_event] = events.reshape(-1)
    return words, ends * 4


def beam_monitor(
    unix_ns: int,
    monitors: Mapping[int, np.ndarray],
    *,
    charge: int = 0,
    flags: int = 0,
    veto: int = 0,
    cor: bool = True,
    tof_offset: int = 0,
    version: int = 1,
) -> bytes:
    """One BEAM_MONITOR_EVENT packet [NP 5.3, 5.4].

    Args:
        unix_ns: pulse time.
        monitors: monitor id (0..1023) -> TOFs in 100 ns units (at most 2**21 - 1 each).

    Raises:
        ValueError: a monitor id or a TOF out of range, or too many events.
    """
    body = [PULSE_PREFIX.pack(charge, 0, 0, _pulse_word(flags, veto, version))]
    cor_word = (COR_BIT if cor else 0) | (tof_offset & TOF_OFFSET_MASK)
    for monitor, tofs in monitors.items():
        values = np.asarray(tofs, np.int64)
        if not 0 <= monitor < 1024 or values.size > MONITOR_COUNT_MASK:
            raise ValueError(f"monitor {monitor} with {values.size} events does not fit a monitor section")
        if values.size and (values.min() < 0 or values.max() > MONITOR_TOF_MASK):
            raise ValueError(f"monitor {monitor}: TOF beyond 21 bits (0.2097 s)")
        body += [
            MONITOR_SECTION.pack((monitor << MONITOR_ID_SHIFT) | values.size, 0, cor_word),
            values.astype("<u4").tobytes(),
        ]
    return packet(PacketType.BEAM_MONITOR_EVENT, version, b"".join(body), unix_ns)
