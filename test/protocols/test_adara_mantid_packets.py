"""The ADARA decoder against an independent source of truth: the real packets Mantid embeds in its unit tests.

Bytes transcribed from mantidproject/mantid ``Framework/LiveData/test/ADARAPackets.h`` (packets captured from
SNS streams); expected values from ``Framework/LiveData/test/ADARAPacketTest.h`` (pulse ids, cycle, charge,
energy, flags, first events, run status fields, variable values) and, for the v1 packets that test file does
not check, from the decoded descriptions printed above each array in ``ADARAPackets.h`` (e.g. "cycle 214
charge 23233170pC energy 1299981151eV vetoFlags 0x4"). The tests are our own; no Mantid code is used.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from livereduce.protocols.adara import decode, framing
from livereduce.protocols.adara.packets import (
    ERROR_BANK,
    AnnotationType,
    PacketType,
    PulseFlags,
    RunStatusCode,
)


def _hex(text: str) -> bytes:
    return bytes.fromhex(" ".join(text.split()))


BANKED_EVENT_V0 = _hex("""
    50 00 00 00 00 00 40 00 f7 18 6c 2b 62 41 67 2d  87 a5 17 00 e4 8d e8 37 3c 00 00 00 00 00 00 00
    0b b0 3c 15 06 8b 02 00 88 f6 00 80 02 00 00 00  02 00 00 00 01 00 00 00 d9 3b 02 00 3c 04 00 00
    13 00 00 00 01 00 00 00 3a 3f 02 00 e2 49 00 00  c0 dc 3c 15 06 8b 02 00 00 00 00 00 00 00 00 00
""")

BANKED_EVENT_V1 = _hex("""
    c8 00 00 00 01 00 40 00 bf 3b 94 42 cb 70 ae 3a
    f8 74 23 00 5f 23 7c 4d 7a 00 00 00 03 03 40 00
    00 00 00 00 00 00 00 00 00 00 00 00 02 00 00 00
    fe ff ff ff 12 00 00 00 d1 46 02 00 00 00 00 80
    d4 48 02 00 00 00 00 80 fc d4 02 00 00 00 00 80 38 11 03
    00 00 00 00 80 b9 24 03 00 00 00 00 80 ba 93 03 00 00 00
    00 80 5e e7 03 00 00 00 00 80 e9 fa 03 00 00 00 00 80 40
    12 04 00 00 00 00 80 43 37 04 00 00 00 00 80 dc 67 04 00
    00 00 00 80 e9 b3 04 00 00 00 00 80 d1 b4 05 00 00 00 00
    80 a0 dd 05 00 00 00 00 80 a9 02 06 00 00 00 00 80 85 04
    06 00 00 00 00 80 0d a8 06 00 00 00 00 80
    ea af 06 00 00 00 00 80 01 00 00 00 01 00 00 00
    66 68 02 00 a4 ee 00 00
""")

BEAM_MONITOR_V0 = _hex(
    "10 00 00 00 00 01 40 00 f7 18 6c 2b 62 41 67 2d 87 a5 17 00 e4 8d e8 37 3c 00 00 00 00 00 00 00"
)

BEAM_MONITOR_V1 = _hex("""
    78 00 00 00 01 01 40 00 b7 3b 94 42 ab 93 db 1e
    75 73 23 00 5f 23 7c 4d d6 00 00 00 02 03 40 00
    17 00 40 00 00 00 00 00 00 00 00 00 a5 bf 01 80 22 c7 01
    80 16 c9 01 80 20 c9 01 80 e1 d2 01 80 73 e6 01 80 1e 38
    02 80 91 4d 02 80 e8 15 03 80 46 77 03 80 ad 8c 03 80 27
    9c 03 80 6e dc 03 80 f1 60 04 80 75 6e 04 80 d2 8b 04 80
    17 ad 04 80 6f 73 05 80 21 c1 05 80 27 c9 05 80 d5 ce 05
    80 f0 f7 05 80 ae 03 06 80
""")

RUN_STATUS_V0 = _hex("0c 00 00 00 00 03 40 00 f8 18 6c 2b c2 d7 55 00 bf 33 00 00 01 14 6c 2b 00 00 00 05")
_RUN_STATUS_V1 = {
    "no run": "14 00 00 00 01 03 40 00 ab 3b 94 42 3f 64 1b 19"
    " 00 00 00 00 00 00 00 00 01 10 00 00 00 00 00 00 00 00 00 00",
    "new run": "14 00 00 00 01 03 40 00 d1 3b 94 42 72 07 aa 00"
    " 5b ae 00 00 d1 3b 94 42 01 10 00 01 00 00 00 00 00 00 00 00",
    "run eof": "14 00 00 00 01 03 40 00 d4 3b 94 42 29 19 3a 02"
    " 5b ae 00 00 d1 3b 94 42 01 10 00 02 00 00 00 00 00 00 00 00",
    "run bof": "14 00 00 00 01 03 40 00 d1 3b 94 42 72 b4 03 01"
    " 5b ae 00 00 d1 3b 94 42 01 30 00 03 00 00 00 00 00 00 00 00",
    "end run": "14 00 00 00 01 03 40 00 01 b2 94 42 ef 7e e2 1e"
    " 5b ae 00 00 d1 3b 94 42 01 10 2e 04 00 00 00 00 00 00 00 00",
}
RUN_STATUS_V1 = {name: _hex(text) for name, text in _RUN_STATUS_V1.items()}

SYNC = _hex(
    "1c 00 00 00 00 08 40 00 f8 18 6c 2b 01 b6 55 00 53 4e 53 41 44 41 52 41 4f 52 4e 4c 00 00 f0 7f" + " 00" * 12
)

ANNOTATIONS = {
    AnnotationType.GENERIC: _hex(
        "1c 00 00 00 00 07 40 00 d1 3b 94 42 64 da 88 00 12 00 00 00 00 00 00 00 52 75 6e 20 34 34 36 33"
        " 35 20 53 74 61 72 74 65 64 2e 00 00"
    ),
    AnnotationType.SCAN_START: _hex(
        "24 00 00 00 00 07 40 00 26 3c 94 42 71 5d d3 06 1c 00 01 80 02 00 00 00 5b 52 75 6e 20 34 34 36 33 35 5d 20"
        " 53 63 61 6e 20 23 32 20 53 74 61 72 74 65 64 2e"
    ),
    AnnotationType.SCAN_STOP: _hex(
        "24 00 00 00 00 07 40 00 74 3c 94 42 8e 00 dd 18 1c 00 02 80 02 00 00 00 5b 52 75 6e 20 34 34 36 33 35 5d 20"
        " 53 63 61 6e 20 23 32 20 53 74 6f 70 70 65 64 2e"
    ),
    AnnotationType.PAUSE: _hex(
        "1c 00 00 00 00 07 40 00 d1 3b 94 42 2e 58 d8 00 11 00 03 00 00 00 00 00 52 75 6e 20 34 34 36 33 35"
        " 20 50 61 75 73 65 64 2e 00 00 00"
    ),
    AnnotationType.RESUME: _hex(
        "1c 00 00 00 00 07 40 00 d1 3b 94 42 90 f4 f7 00 12 00 04 00 00 00 00 00 52 75 6e 20 34 34 36 33 35"
        " 20 52 65 73 75 6d 65 64 2e 00 00"
    ),
    AnnotationType.OVERALL_RUN_COMMENT: _hex(
        "10 00 00 00 00 07 40 00 ab 3b 94 42 19 b7 f7 18 07 00 05 00 00 00 00 00 28 75 6e 73 65 74 29 00"
    ),
}

VARIABLE_U32 = _hex("10 00 00 00 00 01 80 00 3d b0 68 2b 00 00 00 00 02 00 00 00 03 00 00 00 00 00 00 00 03 00 00 00")
VARIABLE_DOUBLE = _hex(
    "14 00 00 00 00 02 80 00 3d b0 68 2b 00 00 00 00 02 00 00 00 01 00 00 00 00 00 00 00 a8 c6 4b 37 89 01 14 40"
)
VARIABLE_STRING_1 = _hex(
    "14 00 00 00 00 03 80 00 42 a9 8c 42 38 e7 4c 2b 11 00 00 00 03 00 00 00 00 00 00 00 03 00 00 00 4e 2f 41 00"
)
VARIABLE_STRING_2 = _hex(
    "1c 00 00 00 00 03 80 00 42 a9 8c 42 25 82 4c 2b 11 00 00 00 02 00 00 00 00 00 00 00 09 00 00 00"
    " 4e 6f 20 73 61 6d 70 6c 65 00 00 00"
)
STRING_3_TEXT = (
    "'SampleTemp', 'SampleTempSelect', 'MagneticField', 'MagneticFieldSelector', 'sequence_id', "
    "'sequence_number', 'sequence_total', 'SF1', 'SF2'"
)
VARIABLE_STRING_3 = (
    _hex("9c 00 00 00 00 03 80 00 1c 58 56 42 ae 11 74 20 07 00 00 00 01 00 00 00 00 00 00 00 8c 00 00 00")
    + STRING_3_TEXT.encode()
)
VARIABLE_U32_ARRAY = _hex(
    "20 00 00 00 00 04 80 00 3d b0 68 2b 00 00 00 00 02 00 00 00 03 00 00 00 00 00 00 00 04 00 00 00"
    " 06 00 00 00 07 00 00 00 08 00 00 00 09 00 00 00"
)
VARIABLE_DOUBLE_ARRAY = _hex(
    "20 00 00 00 00 05 80 00 3d b0 68 2b 00 00 00 00 02 00 00 00 01 00 00 00 00 00 00 00 02 00 00 00"
    " 05 00 00 00 00 00 00 00 06 00 00 00 00 00 00 00"
)
MULT_VARIABLE_U32 = _hex("""
    90 00 00 00 00 01 81 00 26 3c 94 42 13 45 21 06 01 00 00 00 0b 00 00 00 00 00 00 00 10 00 00 00
    ec 6d 04 01 01 00 00 00 08 4f 52 01 00 00 00 00
    80 54 52 01 01 00 00 00 fc cd 52 01 00 00 00 00 18 da 52
    01 01 00 00 00 d8 50 53 01 00 00 00 00 84 5e 53 01 01 00
    00 00 fc 95 53 01 00 00 00 00 a4 ac 53 01 01 00 00 00 ec
    d2 53 01 00 00 00 00 00 f1 53 01 01 00 00 00 f0 14 54 01
    00 00 00 00 64 3c 54 01 01 00 00 00 0c 53 54 01 00 00 00
    00 94 7f 54 01 01 00 00 00 28 91 54 01 00 00 00 00
""")
MULT_VARIABLE_STRING_BAD_LENGTH = _hex(
    "33 00 00 00 00 03 81 00 26 3c 94 42 13 45 21 06 01 00 00 00 0b 00 00 00 00 00 00 00 03 00 00 00"
    " ec 6d 04 01 03 00 00 00 65 6e 6f 08 4f 52 01 03 00 00 00 6f 77 74 80 54 52 01 05 00 00 00 65 65 72 68 74"
)

# devDesPacket: header, device id 1, XML length 0x0a0e, then this XML (decoded from the array's ASCII bytes),
# padded with two zero bytes to 2600 bytes.
_PVS = [
    ("SensorA", 1, "double"),
    ("SensorB", 2, "double"),
    ("SensorC", 3, "double"),
    ("SensorD", 4, "double"),
    ("SP1", 5, "double"),
    ("SP2", 6, "double"),
    ("SetpointLP1", 7, "double"),
    ("SetpointLP2", 8, "double"),
    ("TolLP1", 9, "double"),
    ("TolLP2", 10, "double"),
    ("Loop1_Status", 11, "enum_01"),
    ("Loop2_Status", 12, "enum_01"),
]
_ELEMENTS = "".join(
    f"        <enum_element>\n          <enum_element_name>{name}</enum_element_name>\n"
    f"          <enum_element_value>{value}</enum_element_value>\n        </enum_element>\n"
    for name, value in (("Undefined", 0), ("At_Temp", 1), ("Out_of_temp", 2))
)
_VARIABLES = "".join(
    f"    <process_variable>\n      <pv_name>{name}</pv_name>\n      <pv_id>{pv_id}</pv_id>\n"
    f"      <pv_type>{kind}</pv_type>\n    </process_variable>\n"
    for name, pv_id, kind in _PVS
)
DEVICE_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '  <device xmlns="http://public.sns.gov/schema/device.xsd"\n'
    '  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"\n'
    '  xsi:schemaLocation="http://public.sns.gov/schema/device.xsd http://public.sns.gov/schema/device.xsd">\n'
    "  <device_name>lakeshore_336</device_name>\n"
    "  <enumerations>\n    <enumeration>\n      <enum_name>enum_01</enum_name>\n"
    f"{_ELEMENTS}    </enumeration>\n  </enumerations>\n"
    f"  <process_variables>\n{_VARIABLES}  </process_variables>\n</device>\n"
)
DEVICE_DESCRIPTOR = (
    _hex("18 0a 00 00 00 00 80 00 63 dd 51 2b 00 00 00 00 01 00 00 00 0e 0a 00 00") + DEVICE_XML.encode() + b"\0\0"
)


def one_frame(packet: bytes) -> framing.Frame:
    """The packet through the framer, fed one byte at a time (TCP may split anywhere): exactly one frame."""
    framer = framing.Framer()
    frames = [
        framing.Frame(frame.header, memoryview(bytes(frame.payload)))
        for i in range(len(packet))
        for frame in framer.feed(packet[i : i + 1])
    ]
    assert len(frames) == 1
    assert framer.pending == 0
    assert sum(framer.skipped.values()) == 0
    return frames[0]


def check_header(frame: framing.Frame, packet: bytes, packet_type: PacketType, seconds: int, nanoseconds: int) -> None:
    """Mantid's basicPacketTests: type, packet and payload length, pulse id."""
    assert frame.header.packet_type == packet_type
    assert frame.header.payload_len == len(packet) - 16 == len(frame.payload)
    assert (frame.header.seconds, frame.header.nanoseconds) == (seconds, nanoseconds)


def test_transcribed_packets_have_the_sizes_of_mantids_arrays():
    sizes = {
        "bankedEventPacketV0": (BANKED_EVENT_V0, 96),
        "bankedEventPacketV1": (BANKED_EVENT_V1, 216),
        "beamMonitorPacketV0": (BEAM_MONITOR_V0, 32),
        "beamMonitorPacketV1": (BEAM_MONITOR_V1, 136),
        "runStatusPacketV0": (RUN_STATUS_V0, 28),
        "syncPacket": (SYNC, 44),
        "variableU32Packet": (VARIABLE_U32, 32),
        "variableDoublePacket": (VARIABLE_DOUBLE, 36),
        "variableStringPacketValue1": (VARIABLE_STRING_1, 36),
        "variableStringPacketValue2": (VARIABLE_STRING_2, 44),
        "variableStringPacketValue3": (VARIABLE_STRING_3, 172),
        "variableU32ArrayPacket": (VARIABLE_U32_ARRAY, 48),
        "variableDoubleArrayPacket": (VARIABLE_DOUBLE_ARRAY, 48),
        "multVariableU32Packet": (MULT_VARIABLE_U32, 160),
        "multVariableStringPacket": (MULT_VARIABLE_STRING_BAD_LENGTH, 67),
        "devDesPacket": (DEVICE_DESCRIPTOR, 2600),
    }
    assert {name: len(packet) for name, (packet, _) in sizes.items()} == {name: n for name, (_, n) in sizes.items()}
    assert all(len(packet) == 36 for packet in RUN_STATUS_V1.values())
    assert [len(p) for p in ANNOTATIONS.values()] == [44, 52, 52, 44, 44, 32]


def test_banked_event_v0():
    frame = one_frame(BANKED_EVENT_V0)
    check_header(frame, BANKED_EVENT_V0, PacketType.BANKED_EVENT, 728504567, 761741666)
    walked = decode.walk_banked_events(frame.header, frame.payload)
    assert walked.pulse == decode.Pulse(charge=1549703, energy=937987556, cycle=0x3C, flags=0, veto=0)
    # two banks with one event each, in a source section with COR set (offset not added)
    assert [(count, bank) for _, count, _, bank in walked.sections] == [(1, 0x02), (1, 0x13)]
    assert walked.special == {}
    events = b"".join(bytes(frame.payload[at : at + 8 * n]) for at, n, _, _ in walked.sections)
    pixel, tof = decode.event_arrays(events)
    assert pixel[0] == 0x043C
    assert tof[0] == np.float32(0x00023BD9 / 10)
    assert [s[2] for s in walked.sections] == [0, 0]


def test_banked_event_v1_skips_the_error_bank():
    frame = one_frame(BANKED_EVENT_V1)
    check_header(frame, BANKED_EVENT_V1, PacketType.BANKED_EVENT, 1117010879, 984510667)
    walked = decode.walk_banked_events(frame.header, frame.payload)
    # v1 splits the flags word 0x00400303: veto 0x004, flags 0x303 (ERROR | PARTIAL + implementation bits)
    assert walked.pulse == decode.Pulse(charge=0x2374F8, energy=0x4D7C235F, cycle=122, flags=0x303, veto=0x4)
    assert walked.pulse.flags & (PulseFlags.ERROR | PulseFlags.PARTIAL) == PulseFlags.ERROR | PulseFlags.PARTIAL
    assert walked.special == {ERROR_BANK: 18}
    assert [(count, bank, offset) for _, count, offset, bank in walked.sections] == [(1, 1, 0)]
    at = walked.sections[0][0]
    pixel, tof = decode.event_arrays(bytes(frame.payload[at : at + 8]))
    assert (pixel.tolist(), tof.tolist()) == ([0xEEA4], [np.float32(0x26866 / 10)])


def test_beam_monitor_v0_has_no_sections():
    frame = one_frame(BEAM_MONITOR_V0)
    check_header(frame, BEAM_MONITOR_V0, PacketType.BEAM_MONITOR_EVENT, 728504567, 761741666)
    pulse, monitors = decode.decode_beam_monitor(frame.header, frame.payload)
    assert pulse == decode.Pulse(charge=1549703, energy=937987556, cycle=0x3C, flags=0, veto=0)
    assert monitors == []


def test_beam_monitor_v1():
    frame = one_frame(BEAM_MONITOR_V1)
    check_header(frame, BEAM_MONITOR_V1, PacketType.BEAM_MONITOR_EVENT, 1117010871, 517706667)
    pulse, monitors = decode.decode_beam_monitor(frame.header, frame.payload)
    # "cycle 214 charge 23233170pC energy 1299981151eV vetoFlags 0x4 flags PARTIAL ..."
    assert (pulse.cycle, pulse.charge * 10, pulse.energy, pulse.veto) == (214, 23233170, 1299981151, 0x4)
    assert pulse.flags & PulseFlags.PARTIAL
    # "Monitor 1 source 00000000 tofOffset 0ns (raw)", 23 events with the rising-edge bit set
    assert [(m.monitor_id, m.source_id, m.tof_us.size) for m in monitors] == [(1, 0, 23)]
    words = np.frombuffer(BEAM_MONITOR_V1, "<u4")[11:]
    assert np.all(words >> 31 == 1)
    np.testing.assert_array_equal(monitors[0].tof_us, (words & 0x1FFFFF) / 10.0)
    assert monitors[0].tof_us[0] == pytest.approx(0x1BFA5 / 10)


def test_run_status_v0():
    frame = one_frame(RUN_STATUS_V0)
    check_header(frame, RUN_STATUS_V0, PacketType.RUN_STATUS, 728504568, 5625794)
    status = decode.decode_run_status(frame.header, frame.payload)
    assert (status.run_number, status.run_start, status.status) == (13247, 728503297, RunStatusCode.STATE)
    assert status.paused is None


@pytest.mark.parametrize(
    ("name", "code", "run", "start"),
    [
        ("no run", RunStatusCode.NO_RUN, 0, 0),
        ("new run", RunStatusCode.NEW_RUN, 44635, 1117010897),
        ("run eof", RunStatusCode.RUN_EOF, 44635, 1117010897),
        ("run bof", RunStatusCode.RUN_BOF, 44635, 1117010897),
        ("end run", RunStatusCode.END_RUN, 44635, 1117010897),
    ],
)
def test_run_status_v1(name, code, run, start):
    frame = one_frame(RUN_STATUS_V1[name])
    status = decode.decode_run_status(frame.header, frame.payload)
    assert (status.run_number, status.run_start, status.status, status.paused) == (run, start, code, False)


def test_sync_is_framed():
    frame = one_frame(SYNC)
    check_header(frame, SYNC, PacketType.SYNC, 728504568, 5617153)
    assert bytes(frame.payload[:16]) == b"SNSADARAORNL\x00\x00\xf0\x7f"


@pytest.mark.parametrize(
    ("kind", "reset", "scan", "comment"),
    [
        (AnnotationType.GENERIC, False, 0, "Run 44635 Started."),
        (AnnotationType.SCAN_START, True, 2, "[Run 44635] Scan #2 Started."),
        (AnnotationType.SCAN_STOP, True, 2, "[Run 44635] Scan #2 Stopped."),
        (AnnotationType.PAUSE, False, 0, "Run 44635 Paused."),
        (AnnotationType.RESUME, False, 0, "Run 44635 Resumed."),
        (AnnotationType.OVERALL_RUN_COMMENT, False, 0, "(unset)"),
    ],
)
def test_annotations(kind, reset, scan, comment):
    frame = one_frame(ANNOTATIONS[kind])
    assert frame.header.packet_type == PacketType.STREAM_ANNOTATION
    assert decode.decode_annotation(frame.payload) == decode.Annotation(reset, kind, scan, comment)


@pytest.mark.parametrize(
    ("packet", "stamp", "device", "variable", "value"),
    [
        (VARIABLE_U32, (728281149, 0), 2, 3, 3),
        (VARIABLE_DOUBLE, (728281149, 0), 2, 1, 5.0015),
        (VARIABLE_STRING_1, (1116514626, 726460216), 17, 3, "N/A"),
        (VARIABLE_STRING_2, (1116514626, 726434341), 17, 2, "No sample"),
        (VARIABLE_STRING_3, (1112954908, 544477614), 7, 1, STRING_3_TEXT),
    ],
)
def test_variable_values(packet, stamp, device, variable, value):
    frame = one_frame(packet)
    assert (frame.header.seconds, frame.header.nanoseconds) == stamp
    decoded = decode.decode_variable_value(frame.header, frame.payload)
    assert decoded == decode.VariableValue(device, variable, 0, 0, value)  # exact, as Mantid's test


def test_variable_arrays():
    u32 = one_frame(VARIABLE_U32_ARRAY)
    decoded = decode.decode_variable_value(u32.header, u32.payload)
    assert (decoded.device_id, decoded.variable_id, decoded.value.tolist()) == (2, 3, [6, 7, 8, 9])
    double = one_frame(VARIABLE_DOUBLE_ARRAY)
    decoded = decode.decode_variable_value(double.header, double.payload)
    assert (decoded.device_id, decoded.variable_id) == (2, 1)
    assert decoded.value.view("<u8").tolist() == [5, 6]  # the array holds these bit patterns


def test_device_descriptor():
    frame = one_frame(DEVICE_DESCRIPTOR)
    check_header(frame, DEVICE_DESCRIPTOR, PacketType.DEVICE_DESC, 726785379, 0)
    device = decode.decode_device_descriptor(frame.payload)
    assert (device.device_id, device.name, device.invalid) == (1, "lakeshore_336", 0)
    assert {pv.pv_id: (pv.name, pv.pv_type) for pv in device.variables.values()} == {
        pv_id: (name, kind) for name, pv_id, kind in _PVS
    }
    ET.fromstring(DEVICE_XML)  # Mantid's test: the description parses as XML


def test_unused_and_malformed_packets_between_good_ones_keep_the_stream_in_step():
    """A multi-variable packet (not used by a live client) is framed and can be skipped by type; Mantid's
    multVariableStringPacket has a payload length of 51 (not a multiple of 4): consumed, counted, and the next
    packet is read correctly."""
    stream = MULT_VARIABLE_U32 + VARIABLE_U32 + MULT_VARIABLE_STRING_BAD_LENGTH + BANKED_EVENT_V0
    framer = framing.Framer()
    frames = [(f.header.packet_type, len(f.payload)) for f in framer.feed(stream)]
    assert frames == [
        (PacketType.MULT_VAR_VALUE_U32, 144),
        (PacketType.VAR_VALUE_U32, 16),
        (PacketType.BANKED_EVENT, 80),
    ]
    assert framer.skipped == {"length not a multiple of 4": 1}
