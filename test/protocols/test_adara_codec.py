"""ADARA framing, decoding and encoding: round trips, every length check, the framer's fault handling, and
detector ids from instrument definitions."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from livereduce.protocols.adara import decode, encode, framing
from livereduce.protocols.adara.geometry import GeometryError, detector_ids, minimal_idf
from livereduce.protocols.adara.packets import (
    EPICS_EPOCH_OFFSET_S,
    ERROR_BANK,
    HEADER,
    UNMAPPED_BANK,
    AnnotationType,
    ClientFlags,
    PacketType,
    RunStatusCode,
    format_word,
    parse_header,
)

T0 = (EPICS_EPOCH_OFFSET_S + 1_000_000_000) * 1_000_000_000 + 123_456_789  # 2021-09-09, Unix ns


def frames_of(stream: bytes, **framer_args: int) -> list[framing.Frame]:
    framer = framing.Framer(**framer_args)
    return [framing.Frame(f.header, memoryview(bytes(f.payload))) for f in framer.feed(stream)]


def only(stream: bytes) -> framing.Frame:
    (frame,) = frames_of(stream)
    return frame


# --- header and framing -------------------------------------------------------------------------------------
def test_header_time_is_epics_time():
    frame = only(encode.heartbeat(T0))
    assert frame.header == (0, PacketType.HEARTBEAT, 0, 1_000_000_000, 123_456_789)
    assert frame.header.unix_ns == T0
    assert frame.header.epics_ns == T0 - EPICS_EPOCH_OFFSET_S * 10**9


def test_format_word_of_client_hello_v1_is_0x00400601():
    hello = encode.client_hello(1, T0, flags=ClientFlags.SEND_PAUSE_DATA)
    assert struct.unpack_from("<I", hello, 4)[0] == 0x00400601 == format_word(PacketType.CLIENT_HELLO, 1)
    assert len(hello) == 24
    assert len(encode.client_hello(0, T0)) == 20
    header = parse_header(hello)
    assert decode.decode_client_hello(header, hello[16:]) == (1, ClientFlags.SEND_PAUSE_DATA)
    v0 = encode.client_hello(12345, T0)
    assert decode.decode_client_hello(parse_header(v0), v0[16:]) == (12345, None)


def test_framer_splits_packets_split_and_joined_anywhere():
    stream = b"".join([encode.heartbeat(T0), encode.geometry(minimal_idf("X", 0, 3), T0), encode.heartbeat(T0)])
    for cut in range(1, len(stream)):
        framer = framing.Framer(capacity=64)
        kinds = [f.header.packet_type for piece in (stream[:cut], stream[cut:]) for f in framer.feed(piece)]
        assert kinds == [PacketType.HEARTBEAT, PacketType.GEOMETRY, PacketType.HEARTBEAT]
        assert framer.pending == 0


def test_framer_grows_for_a_packet_larger_than_its_buffer():
    big = encode.geometry(minimal_idf("X", 0, 100_000), T0)
    framer = framing.Framer(capacity=4096)
    assert len(big) > 4 * 4096
    (frame,) = [decode.decode_geometry(f.payload) for piece in (big[:5000], big[5000:]) for f in framer.feed(piece)]
    assert bytes(frame[:5]) == b"<?xml"


def test_oversize_packet_of_a_known_type_is_discarded_and_the_stream_goes_on():
    huge = HEADER.pack(64 << 20, format_word(PacketType.GEOMETRY, 0), 0, 0) + bytes(64 << 20)
    framer = framing.Framer(max_payload=1 << 20)
    kinds = [f.header.packet_type for f in framer.feed(huge + encode.heartbeat(T0))]
    assert kinds == [PacketType.HEARTBEAT]
    assert framer.skipped == {"oversize": 1}


def test_oversize_packet_of_an_unknown_type_is_not_trusted():
    framer = framing.Framer(max_payload=1 << 20)
    with pytest.raises(framing.FramingError, match="unknown type 0x7777"):
        list(framer.feed(HEADER.pack(2 << 20, format_word(0x7777, 0), 0, 0)))


def test_length_not_a_multiple_of_4_is_skipped_if_the_next_header_is_plausible():
    bad = HEADER.pack(5, format_word(PacketType.RUN_INFO, 0), 0, 0) + b"12345"
    framer = framing.Framer()
    assert [f.header.packet_type for f in framer.feed(bad + encode.heartbeat(T0))] == [PacketType.HEARTBEAT]
    assert framer.skipped == {"length not a multiple of 4": 1}
    garbage = bytes(range(16))
    with pytest.raises(framing.FramingError, match="implausible header after a packet with a bad length"):
        list(framing.Framer().feed(bad + garbage))


def test_unknown_types_and_versions_are_framed_for_the_caller_to_skip():
    stream = encode.packet(0x7777, 0, bytes(8), T0) + encode.packet(PacketType.BANKED_EVENT, 9, bytes(16), T0)
    assert [(f.header.packet_type, f.header.version) for f in frames_of(stream)] == [
        (0x7777, 0),
        (PacketType.BANKED_EVENT, 9),
    ]


# --- banked events ------------------------------------------------------------------------------------------
def test_banked_event_round_trip_with_special_banks_and_tof_offset():
    tof = np.array([10, 20, 30], np.uint32)
    pixels = np.array([5, 6, 7], np.uint32)
    packet = encode.banked_event(
        T0,
        {3: (tof, pixels), UNMAPPED_BANK: (tof[:2], pixels[:2] | 0x80000000), ERROR_BANK: (tof[:1], pixels[:1])},
        charge=123,
        flags=0x41,
        veto=0x8,
        cor=False,
        tof_offset=1000,
    )
    frame = only(packet)
    walked = decode.walk_banked_events(frame.header, frame.payload)
    assert walked.pulse == decode.Pulse(123, 0, 0, 0x41, 0x8)
    assert walked.special == {UNMAPPED_BANK: 2, ERROR_BANK: 1}
    assert [(count, offset, bank) for _, count, offset, bank in walked.sections] == [(3, 1000, 3)]
    at = walked.sections[0][0]
    pixel, tof_us = decode.event_arrays(bytes(frame.payload[at : at + 24]), [(0, 3, 1000)])
    assert pixel.tolist() == [5, 6, 7]
    np.testing.assert_array_equal(tof_us, np.float32((tof + 1000) / 10))


def test_banked_event_v0_flags_word_is_all_flags():
    frame = only(encode.banked_event(T0, {}, flags=0xFFF00001, version=0))
    assert decode.walk_banked_events(frame.header, frame.payload).pulse.flags == 0xFFF00001
    frame = only(encode.banked_event(T0, {}, flags=0x1, veto=0xFFF, version=1))
    pulse = decode.walk_banked_events(frame.header, frame.payload).pulse
    assert (pulse.flags, pulse.veto) == (0x1, 0xFFF)


def test_event_arrays_offsets_apply_per_run():
    pairs = np.array([[100, 1], [200, 2], [300, 3], [400, 4]], "<u4").tobytes()
    pixel, tof = decode.event_arrays(pairs, [(1, 2, 50), (3, 1, 7)])
    assert pixel.tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(tof, np.float32([10.0, 25.0, 35.0, 40.7]))
    with pytest.raises(ValueError, match="beyond"):
        decode.event_arrays(pairs, [(3, 2, 1)])
    with pytest.raises(ValueError, match="whole number"):
        decode.event_arrays(pairs[:-4])


def _banked(payload: bytes) -> decode.BankedEvents:
    frame = only(encode.packet(PacketType.BANKED_EVENT, 1, payload, T0))
    return decode.walk_banked_events(frame.header, frame.payload)


PREFIX = struct.pack("<4I", 1, 2, 3, 4)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (PREFIX[:12], "payload shorter than its fields"),
        (PREFIX + struct.pack("<2I", 0, 0), "source section beyond the payload"),
        (PREFIX + struct.pack("<4I", 0, 0, 0, 2) + struct.pack("<2I", 1, 0), "bank count beyond the payload"),
        (PREFIX + struct.pack("<4I", 0, 0, 0, 0xFFFFFFFF), "bank count beyond the payload"),
        (PREFIX + struct.pack("<4I", 0, 0, 0, 1) + struct.pack("<2I", 1, 2) + bytes(8), "bank event count beyond"),
        (PREFIX + struct.pack("<4I", 0, 0, 0, 1) + struct.pack("<2I", 1, 0xFFFFFFFF), "bank event count beyond"),
        (PREFIX + struct.pack("<4I", 0, 0, 0, 0) + bytes(8), "source section beyond the payload"),
    ],
)
def test_inconsistent_banked_event_is_rejected_whole(payload, reason):
    with pytest.raises(decode.PacketError, match=reason) as error:
        _banked(payload)
    assert reason.startswith(error.value.reason) or error.value.reason.startswith(reason)


def test_bank_sections_may_be_empty_and_sources_many():
    payload = PREFIX + struct.pack("<4I", 0, 0, 0, 2) + struct.pack("<2I", 1, 0) + struct.pack("<2I", 2, 1)
    payload += struct.pack("<2I", 5, 9) + struct.pack("<4I", 1, 0, 0x80000000 | 77, 0)
    walked = _banked(payload)
    assert [(count, bank) for _, count, _, bank in walked.sections] == [(1, 2)]
    assert walked.event_count == 1


def test_batch_encoder_equals_single_packets():
    rng = np.random.default_rng(1)
    section_pulse = np.array([0, 0, 2, 3, 3, 4, 5])
    section_count = np.array([1, 2, 2, 3, 2, 1, 4])
    section_bank = np.array([5, 6, 5, 5, 6, 5, 5])
    n = int(section_count.sum())
    tof = rng.integers(0, 10**6, n).astype(np.uint32)
    pixel = rng.integers(0, 1000, n).astype(np.uint32)
    times = T0 + np.arange(6) * 16_666_667
    words, ends = encode.banked_events(
        times,
        charge=np.arange(6),
        flags=np.arange(6),
        section_pulse=section_pulse,
        section_bank=section_bank,
        section_count=section_count,
        tof=tof,
        pixel=pixel,
    )
    bounds = np.concatenate([[0], np.cumsum(section_count)])
    single = []
    for p in range(6):
        banks = {
            int(section_bank[s]): (tof[bounds[s] : bounds[s + 1]], pixel[bounds[s] : bounds[s + 1]])
            for s in np.flatnonzero(section_pulse == p)
        }
        single.append(encode.banked_event(int(times[p]), banks, charge=p, flags=p))
    assert words.tobytes() == b"".join(single)
    assert ends.tolist() == np.cumsum([len(p) for p in single]).tolist()


def test_batch_encoder_rejects_inconsistent_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        encode.banked_events(
            np.array([T0]),
            charge=np.zeros(1),
            flags=np.zeros(1),
            section_pulse=np.array([0]),
            section_bank=np.array([1]),
            section_count=np.array([3]),
            tof=np.zeros(2, np.uint32),
            pixel=np.zeros(2, np.uint32),
        )


# --- beam monitors ------------------------------------------------------------------------------------------
def test_beam_monitor_round_trip():
    frame = only(
        encode.beam_monitor(T0, {1: np.array([5, 0x1FFFFF]), 3: np.array([7])}, charge=9, cor=False, tof_offset=10)
    )
    pulse, monitors = decode.decode_beam_monitor(frame.header, frame.payload)
    assert pulse.charge == 9
    assert [(m.monitor_id, m.tof_us.tolist()) for m in monitors] == [(1, [1.5, (0x1FFFFF + 10) / 10]), (3, [1.7])]


def test_beam_monitor_count_beyond_payload():
    payload = PREFIX + struct.pack("<3I", (1 << 22) | 5, 0, 0) + bytes(8)
    frame = only(encode.packet(PacketType.BEAM_MONITOR_EVENT, 1, payload, T0))
    with pytest.raises(decode.PacketError, match="monitor event count beyond the payload"):
        decode.decode_beam_monitor(frame.header, frame.payload)


def test_beam_monitor_encoder_checks_ranges():
    with pytest.raises(ValueError, match="monitor 1024"):
        encode.beam_monitor(T0, {1024: np.array([1])})
    with pytest.raises(ValueError, match="21 bits"):
        encode.beam_monitor(T0, {1: np.array([1 << 21])})


# --- run status, run info, beamline, annotations -------------------------------------------------------------
def test_run_status_round_trip_v0_and_v1():
    v1 = only(encode.run_status(7, 1234, RunStatusCode.NEW_RUN, T0, file_number=3, paused=True))
    assert decode.decode_run_status(v1.header, v1.payload) == decode.RunStatus(7, 1234, 1, 3, True)
    v0 = only(encode.run_status_v0(7, 1234, RunStatusCode.END_RUN, T0))
    assert decode.decode_run_status(v0.header, v0.payload) == decode.RunStatus(7, 1234, 4, 0, None)
    short = only(encode.packet(PacketType.RUN_STATUS, 1, bytes(12), T0))
    with pytest.raises(decode.PacketError, match="run status v1 needs 20 bytes"):
        decode.decode_run_status(short.header, short.payload)


def test_run_info_round_trip_and_namespaces():
    xml = encode.runinfo_xml(44635, proposal_id="IPTS-1234", run_title="A <title> & more")
    info = decode.decode_run_info(only(encode.run_info(xml, T0)).payload)
    assert (info.run_number, info.proposal_id, info.run_title) == (44635, "IPTS-1234", "A <title> & more")
    assert info.fields["facility_name"] == "SNS"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (struct.pack("<I", 100) + b"<runinfo/>\0\0", "run info XML length beyond the payload"),
        (struct.pack("<I", 8) + b"<runinfo", "not well-formed XML"),
        (b"", "payload shorter than its fields"),
        (struct.pack("<I", 48) + b'<?xml version="1.0" encoding="utf-0"?><runinfo/>', "not well-formed XML"),
    ],
)
def test_run_info_errors(payload, reason):
    with pytest.raises(decode.PacketError, match=reason):
        decode.decode_run_info(payload)


def test_beamline_info_round_trip_and_v0_target_station():
    info = decode.decode_beamline_info(only(encode.beamline_info("BL11A", "PG3", "POWGEN", T0)).payload)
    assert info == decode.BeamlineInfo(1, "BL11A", "PG3", "POWGEN")
    v0 = struct.pack("<I", (2 << 16) | (3 << 8) | 7) + b"42CG3BIOSANS"
    assert decode.decode_beamline_info(v0) == decode.BeamlineInfo(1, "42", "CG3", "BIOSANS")
    with pytest.raises(decode.PacketError, match="beamline names length beyond"):
        decode.decode_beamline_info(struct.pack("<I", 0x00FFFFFF) + b"abcd")


def test_annotation_round_trip_and_length_check():
    packet = encode.annotation(AnnotationType.SCAN_START, "scan", T0, scan_index=4, reset_hint=True)
    assert decode.decode_annotation(only(packet).payload) == decode.Annotation(True, 1, 4, "scan")
    with pytest.raises(decode.PacketError, match="annotation comment length beyond"):
        decode.decode_annotation(struct.pack("<2I", 0x30010, 0) + b"abcd")


# --- devices and variables ----------------------------------------------------------------------------------
def test_device_descriptor_round_trip_counts_unusable_variables():
    xml = encode.device_xml("fake", [(1, "temperature", "double", "K"), (2, "state", "string", "")])
    xml = xml.replace(
        b"</process_variables>", b"<process_variable><pv_id>x</pv_id></process_variable></process_variables>"
    )
    device = decode.decode_device_descriptor(only(encode.device_descriptor(8192, xml, T0)).payload)
    assert device.device_id == 8192
    assert device.name == "fake"
    assert device.invalid == 1
    assert device.variables == {
        1: decode.ProcessVariable(1, "temperature", "double", "K"),
        2: decode.ProcessVariable(2, "state", "string", ""),
    }


@pytest.mark.parametrize(
    "value", [0, 0xFFFFFFFF, 2.5, "", "héllo", np.array([1, 2, 3], np.uint32), np.array([0.5, -1.0])]
)
def test_variable_value_round_trip(value):
    frame = only(encode.variable_value(8192, 4, value, T0, status=3, severity=2))
    decoded = decode.decode_variable_value(frame.header, frame.payload)
    assert (decoded.device_id, decoded.variable_id, decoded.status, decoded.severity) == (8192, 4, 3, 2)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(decoded.value, value)
    else:
        assert decoded.value == value


@pytest.mark.parametrize(
    ("packet_type", "payload", "reason"),
    [
        (PacketType.VAR_VALUE_U32, bytes(12), "payload shorter than its fields"),
        (PacketType.VAR_VALUE_DOUBLE, bytes(16), "payload shorter than its fields"),
        (PacketType.VAR_VALUE_STRING, bytes(12) + struct.pack("<I", 5) + b"abcd", "string value length beyond"),
        (PacketType.VAR_VALUE_U32_ARRAY, bytes(12) + struct.pack("<I", 2) + bytes(4), "array element count beyond"),
        (PacketType.VAR_VALUE_DOUBLE_ARRAY, bytes(12) + struct.pack("<I", 2**31) + bytes(8), "array element count"),
    ],
)
def test_variable_value_length_checks(packet_type, payload, reason):
    frame = only(encode.packet(packet_type, 0, payload, T0))
    with pytest.raises(decode.PacketError, match=reason):
        decode.decode_variable_value(frame.header, frame.payload)


def test_encoder_input_checks():
    with pytest.raises(ValueError, match="u32"):
        encode.variable_value(1, 1, -1, T0)
    with pytest.raises(ValueError, match="EPICS"):
        encode.heartbeat(0)
    with pytest.raises(ValueError, match="multiple of 4"):
        encode.packet(PacketType.HEARTBEAT, 0, b"abc", T0)
    with pytest.raises(ValueError, match="255 bytes"):
        encode.beamline_info("x" * 256, "", "", T0)


# --- geometry -----------------------------------------------------------------------------------------------
IDF = """<?xml version="1.0"?>
<instrument xmlns="http://www.mantidproject.org/IDF/1.0" name="T">
  <component type="monitors" idlist="monitors"><location/></component>
  <type name="monitors"><component type="monitor"><location/><location/></component></type>
  <type name="monitor" is="monitor"/>
  <idlist idname="monitors"><id start="-2" end="-1"/><id val="900000"/></idlist>
  <component type="tubes" idlist="tubes"><location/></component>
  <type name="tubes"><component type="pixel"><locations n-elements="3"/></component></type>
  <type name="pixel" is="detector"/>
  <idlist idname="tubes"><id start="100" end="190" step="10"/><id val="5"/><id start="x" end="9"/></idlist>
  <component type="panel" idstart="1000" idfillbyfirst="y" idstepbyrow="300"><location/></component>
  <type name="panel" is="rectangular_detector" type="pixel" xpixels="4" ypixels="256"/>
  <component type="panel2" idstart="5000" idfillbyfirst="x"><location/></component>
  <type name="panel2" is="RectangularDetector" type="pixel" xpixels="8" ypixels="2"/>
</instrument>"""


def test_detector_ids_from_idlists_and_rectangular_detectors_without_monitors():
    ids = detector_ids(IDF)
    # idlists: 100..190 step 10 (10 ids), 5; panel: 1000 + x*300 + y for x<4, y<256 -> 1000..1000+900+255
    assert (ids.first, ids.count, ids.invalid) == (5, 10 + 1 + 4 * 256, 1)
    assert ids.last == 2155
    assert ids.valid_range() == (5, 2155)


def test_rectangular_detector_filled_by_x():
    idf = IDF.replace('is="RectangularDetector"', 'is="rectangular_detector"')
    ids = detector_ids(idf)
    assert ids.last == 5000 + 1 * 8 + 7  # idstepbyrow defaults to xpixels when filled by x
    assert ids.count == 10 + 1 + 4 * 256 + 16


def test_minimal_idf_round_trip():
    ids = detector_ids(minimal_idf("SANS2D", 57, 122888, monitors=(-1, -2)))
    assert (ids.first, ids.last, ids.count) == (57, 122888, 122888 - 57 + 1)


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ('<instrument><idlist idname="a"><id start="-5" end="-1"/></idlist></instrument>', None),
        ('<instrument><idlist idname="a"><id start="0" end="99999999999"/></idlist></instrument>', (0, 2**31 - 1)),
        ("<instrument/>", None),
    ],
)
def test_valid_range_is_non_negative_and_within_32_bits(xml, expected):
    assert detector_ids(xml).valid_range() == expected


@pytest.mark.parametrize(
    "xml",
    [
        "<instrument",
        "<notinstrument/>",
        "",
        "<instrument>&undefined;</instrument>",
        b'<?xml version="1.0" encoding="upf-8"?><instrument/>',  # found by bench/fuzz_adara.py (a bit flip)
    ],
)
def test_bad_geometry(xml):
    with pytest.raises(GeometryError):
        detector_ids(xml)


def test_writable_gives_at_least_the_space_asked_for_with_a_packet_pending():
    framer = framing.Framer(capacity=64)
    packet = encode.geometry(minimal_idf("X", 0, 3), T0)
    assert not list(framer.feed(packet[:40]))  # an incomplete packet stays in the buffer
    view = framer.writable(1000)
    assert len(view) >= 1000
    view[: len(packet) - 40] = packet[40:]
    framer.wrote(len(packet) - 40)
    assert [f.header.packet_type for f in framer.frames()] == [PacketType.GEOMETRY]
