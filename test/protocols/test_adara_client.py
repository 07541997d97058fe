"""The ADARA client's conversation semantics, without sockets: packets in, segments out."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from livereduce.protocols import skipped_counter
from livereduce.protocols.adara import decode, encode, framing
from livereduce.protocols.adara.client import PAUSED, SPECIAL_BANK_REASONS, ClientState
from livereduce.protocols.adara.geometry import minimal_idf
from livereduce.protocols.adara.packets import (
    EPICS_EPOCH_OFFSET_S,
    ERROR_BANK,
    UNMAPPED_BANK,
    AnnotationType,
    ClientFlags,
    PacketType,
    RunStatusCode,
    parse_header,
)
from livereduce.protocols.adara.segments import DEFAULT_SEGMENT_EVENTS, SEGMENT_BYTES, EventArrays, Transition
from livereduce.protocols.adara.variables import MAX_PROCESS_VARIABLES

S = 1_000_000_000
T0 = (EPICS_EPOCH_OFFSET_S + 1_000_000_000) * S  # a Unix time in ns, whole EPICS seconds
EPICS_T0 = 1_000_000_000
PULSE = S // 60
VALUE_AT = T0 - 10 * S


def feed(client: ClientState, *packets: bytes) -> None:
    framer = framing.Framer()
    for frame in framer.feed(b"".join(packets)):
        client.handle(frame)
    assert not framer.skipped


def pulse(i: int, pixels: list[int] | None = None, **kwargs) -> bytes:
    """Banked event packet of pulse ``i`` (time T0 + i/60 s) with the given pixels (TOF = 10 * pixel)."""
    pixels = [i % 10, 10 + i % 10] if pixels is None else pixels
    ids = np.array(pixels, np.uint32)
    return encode.banked_event(T0 + i * PULSE, {1: (ids * 10, ids)}, charge=100 + i, **kwargs)


def status(code: RunStatusCode, run: int, at: int, **kwargs) -> bytes:
    return encode.run_status(run, EPICS_T0 if run else 0, code, at, **kwargs)


def prologue(at: int = T0 - S, first: int = 0, last: int = 99, run: int = 0) -> list[bytes]:
    return [
        status(RunStatusCode.STATE, run, at),
        encode.geometry(minimal_idf("TEST", first, last), at),
        encode.beamline_info("BL99", "TST", "TEST", at),
        encode.device_descriptor(
            8192,
            encode.device_xml(
                "dev", [(1, "temperature", "double", "K"), (2, "mode", "string", ""), (3, "n", "signed integer", "")]
            ),
            at,
        ),
        encode.variable_value(8192, 1, 300.0, VALUE_AT),  # a value keeps the time it changed at
    ]


def events_of(segment) -> tuple[list[int], list[float]]:
    events = segment.events
    return events.pixel_ids().tolist(), events.tof[: events.count].tolist()


def test_hello_per_start_and_pause_setting():
    def hello(client: ClientState) -> tuple[int, int | None]:
        packet = client.hello(T0)
        return decode.decode_client_hello(parse_header(packet), packet[16:])

    assert hello(ClientState("from_start_of_run")) == (1, None)
    assert hello(ClientState("now")) == (0, None)
    when = datetime(2021, 9, 9, 1, 46, 40, 500_000, tzinfo=UTC)
    assert hello(ClientState(when)) == (int(when.timestamp()) - EPICS_EPOCH_OFFSET_S, None)
    assert hello(ClientState("now", keep_paused_events=True)) == (0, ClientFlags.SEND_PAUSE_DATA)


def test_from_start_of_run_ignores_everything_until_new_run_but_keeps_values():
    client = ClientState("from_start_of_run")
    client.connected()
    feed(client, *prologue(run=7), pulse(0), encode.variable_value(8192, 1, 301.0, T0 - S // 2))
    assert client.waiting_for_run
    assert client.counters["skipped_waiting_for_run"] == 1
    assert client.id_range == (0, 99)  # the prologue is read while waiting
    feed(client, status(RunStatusCode.NEW_RUN, 8, T0), pulse(1), pulse(2))
    segment = client.take()
    assert (segment.run_number, segment.pulses, segment.transition) == (8, 2, None)
    assert client.logs_for(segment)["temperature"] == [(VALUE_AT, 300.0), (T0 - S // 2, 301.0)]
    assert client.properties_for(segment)["run_start"] == T0


def test_now_takes_from_the_state_and_keeps_everything():
    client = ClientState("now")
    client.connected()
    feed(client, *prologue(run=7), pulse(0), pulse(1))
    segment = client.take()
    assert (segment.run_number, segment.pulses, segment.event_count) == (7, 2, 4)
    assert events_of(segment) == ([0, 10, 1, 11], [0.0, 10.0, 1.0, 11.0])
    np.testing.assert_array_equal(np.frombuffer(segment.charge_pc), [1000.0, 1010.0])  # 10 pC units
    assert list(segment.pulse_ns) == [T0, T0 + PULSE]


def test_time_start_drops_what_the_sms_sends_from_before():
    start = datetime.fromtimestamp((T0 + 3 * PULSE - 10_000) / S, UTC)  # datetime has µs resolution
    client = ClientState(start)
    client.connected()
    feed(client, *prologue(run=7), status(RunStatusCode.NEW_RUN, 7, T0 - S), *(pulse(i) for i in range(6)))
    segment = client.take()
    assert list(segment.pulse_ns) == [T0 + i * PULSE for i in (3, 4, 5)]
    assert client.counters["skipped_before_start"] == 3
    assert (segment.run_number, segment.transition) == (7, None)


def test_run_eof_bof_state_and_repeated_prologue_change_nothing():
    client = ClientState("from_start_of_run")
    client.connected()
    feed(client, *prologue(), status(RunStatusCode.NEW_RUN, 7, T0), pulse(0))
    repeated = [
        status(RunStatusCode.RUN_EOF, 7, T0 + PULSE, file_number=1),
        encode.sync(T0 + PULSE),
        status(RunStatusCode.RUN_BOF, 7, T0 + PULSE, file_number=2),
        *prologue(at=T0 + PULSE, run=7),
        encode.run_info(encode.runinfo_xml(7, run_title="t"), T0 + PULSE),
        status(RunStatusCode.PROLOGUE, 7, T0 + PULSE),
        status(RunStatusCode.NO_RUN, 0, T0 + PULSE),
    ]
    feed(client, *repeated, pulse(1))
    segment = client.take()
    assert (segment.pulses, segment.transition, segment.data_reset, segment.run_number) == (2, None, False, 7)
    assert client.logs_for(segment)["temperature"] == [(VALUE_AT, 300.0)]  # the repeat is not a new value
    assert client.properties_for(segment)["run_title"] == "t"


def test_end_run_then_new_run():
    client = ClientState("from_start_of_run")
    client.connected()
    feed(client, *prologue(), status(RunStatusCode.NEW_RUN, 7, T0), pulse(0), status(RunStatusCode.END_RUN, 7, T0 + S))
    feed(client, status(RunStatusCode.NEW_RUN, 8, T0 + 2 * S), pulse(200))
    ended = client.take()
    assert (ended.run_number, ended.transition, ended.pulses) == (7, Transition.END_RUN, 1)
    assert client.properties_for(ended)["run_end"] == T0 + S
    new = client.take()  # no BeginRun: nothing arrived between the runs
    assert (new.run_number, new.transition, new.pulses) == (8, None, 1)


def test_data_between_runs_ends_with_begin_run():
    client = ClientState("now")
    client.connected()
    feed(client, *prologue(), pulse(0))
    assert client.take().run_number == 0  # taken between runs
    feed(client, pulse(1), status(RunStatusCode.NEW_RUN, 8, T0 + S), pulse(70))
    between = client.take()
    assert (between.run_number, between.transition, between.pulses) == (0, Transition.BEGIN_RUN, 1)
    assert (client.take().run_number, client.take().pulses) == (8, 0)


def test_new_run_without_end_run_seals_the_previous_run():
    client = ClientState("now")
    client.connected()
    feed(client, *prologue(run=7), pulse(0), status(RunStatusCode.NEW_RUN, 8, T0 + S), pulse(70))
    first, second = client.take(), client.take()
    assert (first.run_number, first.transition) == (7, Transition.BEGIN_RUN)
    assert (second.run_number, second.pulses) == (8, 1)


def test_pause_drops_events_unless_kept():
    def run(keep: bool):
        client = ClientState("now", keep_paused_events=keep)
        client.connected()
        feed(
            client,
            *prologue(run=7),
            pulse(0),
            encode.annotation(AnnotationType.PAUSE, "paused", T0 + PULSE),
            pulse(1),
            pulse(2),
            encode.annotation(AnnotationType.RESUME, "resumed", T0 + 3 * PULSE - 1),
            pulse(3),
        )
        return client, client.take()

    client, segment = run(False)
    assert list(segment.pulse_ns) == [T0, T0 + 3 * PULSE]
    assert segment.dropped == {PAUSED: 4}
    assert client.logs_for(segment)["pause"] == [(T0 + PULSE, 1), (T0 + 3 * PULSE - 1, 0)]
    client, segment = run(True)
    assert segment.pulses == 4
    assert not segment.dropped


def test_special_banks_are_dropped_and_counted_and_tof_offsets_applied():
    client = ClientState("now")
    client.connected()
    ids = np.array([5, 6], np.uint32)
    packet = encode.banked_event(
        T0,
        {2: (ids, ids), UNMAPPED_BANK: (ids, ids | 0x80000000), ERROR_BANK: (ids[:1], ids[:1])},
        cor=False,
        tof_offset=1000,
    )
    feed(client, *prologue(run=7), packet)
    segment = client.take()
    assert segment.dropped == {SPECIAL_BANK_REASONS[UNMAPPED_BANK]: 2, SPECIAL_BANK_REASONS[ERROR_BANK]: 1}
    assert events_of(segment) == ([5, 6], np.float32([100.5, 100.6]).tolist())
    assert client.counters["events_dropped"] == 3


def test_reconnect_from_start_of_run_discards_and_resets_for_the_replay():
    client = ClientState("from_start_of_run")
    client.connected()
    feed(client, *prologue(), status(RunStatusCode.NEW_RUN, 7, T0), pulse(0), pulse(1))
    assert client.take().pulses == 2
    feed(client, pulse(2))  # not taken before the connection broke
    client.connected()
    assert client.requested_start() == 1
    feed(client, *prologue(run=7), pulse(5), status(RunStatusCode.NEW_RUN, 7, T0), pulse(0), pulse(1), pulse(2))
    replay = client.take()
    assert (replay.data_reset, replay.pulses, replay.transition, replay.run_number) == (True, 3, None, 7)
    assert client.counters["events_discarded_for_replay"] == 2


def test_reconnect_into_another_run_ends_the_interrupted_one_first():
    client = ClientState("from_start_of_run")
    client.connected()
    feed(client, *prologue(), status(RunStatusCode.NEW_RUN, 7, T0), pulse(0))
    client.take()
    client.connected()
    feed(client, *prologue(run=8), status(RunStatusCode.NEW_RUN, 8, T0 + 60 * S), pulse(3600))
    ended, replay = client.take(), client.take()
    assert (ended.run_number, ended.transition, ended.pulses) == (7, Transition.END_RUN, 0)
    assert (replay.run_number, replay.data_reset, replay.pulses) == (8, True, 1)


def test_reconnect_with_now_resumes_after_the_last_pulse():
    client = ClientState("now")
    client.connected()
    feed(client, *prologue(run=7), pulse(0), pulse(1), pulse(61))
    client.take()
    client.connected()
    assert client.requested_start() == EPICS_T0 + 1  # the second of the last pulse (the SMS rounds back further)
    feed(client, *prologue(run=7), *(pulse(i) for i in (0, 1, 61, 62)))
    segment = client.take()
    assert list(segment.pulse_ns) == [T0 + 62 * PULSE]
    assert not segment.data_reset


def test_a_new_geometry_applies_from_the_next_run():
    client = ClientState("from_start_of_run")
    client.connected()
    feed(client, *prologue(first=0, last=99), status(RunStatusCode.NEW_RUN, 7, T0), pulse(0))
    feed(client, encode.geometry(minimal_idf("TEST", 0, 999), T0 + PULSE), pulse(1))
    assert client.take().id_range == (0, 99)
    feed(client, status(RunStatusCode.END_RUN, 7, T0 + S), status(RunStatusCode.NEW_RUN, 8, T0 + 2 * S), pulse(120))
    assert client.take().id_range == (0, 99)
    assert client.take().id_range == (0, 999)


def test_logs_typed_from_the_device_descriptor():
    client = ClientState("now")
    client.connected()
    feed(
        client,
        *prologue(run=7),
        encode.variable_value(8192, 1, 5, T0),  # integer sent for a double: converted
        encode.variable_value(8192, 2, "auto", T0),
        encode.variable_value(8192, 3, 0xFFFFFFFE, T0),  # signed integer: two's complement
        encode.variable_value(8192, 3, np.array([1, 2], np.uint32), T0 + 1),
    )
    logs = client.logs_for(client.take())
    assert logs["temperature"][-1] == (T0, 5.0)
    assert isinstance(logs["temperature"][-1][1], float)
    assert logs["mode"] == [(T0, "auto")]
    assert logs["n"][0] == (T0, -2)
    assert logs["n"][1][1].tolist() == [1, 2]
    assert client.units("temperature") == "K"


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (encode.variable_value(8192, 2, 1.5, T0), "variable value of the wrong type"),
        (encode.variable_value(8192, 1, "hot", T0), "variable value of the wrong type"),
        (encode.variable_value(9999, 1, 1.5, T0), "variable without descriptor"),
        (encode.variable_value(8192, 77, 1.5, T0), "variable without descriptor"),
        (encode.geometry("<instrument/>", T0), "geometry without detector ids"),
        (encode.geometry("<nope/>", T0), "geometry is not an instrument definition"),
        (encode.packet(PacketType.BANKED_EVENT, 2, bytes(16), T0), "unknown version"),
        (encode.packet(0x6666, 0, b"", T0), "unknown type"),
        (encode.packet(PacketType.RTDL, 1, bytes(120), T0), "not used"),
        (encode.packet(PacketType.MULT_VAR_VALUE_U32, 0, bytes(16), T0), "not used"),
    ],
)
def test_unusable_packets_are_counted_and_change_nothing(packet, reason):
    client = ClientState("now")
    client.connected()
    feed(client, *prologue(run=7))
    assert "temperature" in client.logs_for(client.take())
    feed(client, packet, pulse(0))
    assert client.counters[skipped_counter(reason)] == 1
    segment = client.take()
    assert segment.pulses == 1
    assert client.logs_for(segment) == {}  # no log changed (a value applied would be here)
    assert client.id_range == (0, 99)


def test_pending_bytes_count_what_is_held():
    client = ClientState("now")
    client.connected()
    feed(client, *prologue(run=7))
    empty = client.pending_bytes
    feed(client, pulse(0, list(range(50))))
    assert client.pending_bytes >= empty + 50 * 8
    client.take()
    assert client.pending_bytes == SEGMENT_BYTES  # the new, empty segment


def test_event_arrays_grow_and_keep_ids_of_32_bits():
    made = []

    def allocate(n: int):
        made.append(n)
        return np.empty(n, np.int32), np.empty(n, np.float32), n

    events = EventArrays(allocate, capacity=2)
    pairs = np.array([[10, 1], [20, 0xFFFFFFFF], [30, 3]], "<u4").tobytes()
    events.append(memoryview(pairs), [(0, 2, 0, 1)])
    events.append(memoryview(pairs), [(16, 1, 5, 2)])  # grows, keeps the first two
    assert (made, events.count, events.owner) == ([2, 4], 3, 4)
    assert events.pixel_ids().tolist() == [1, 0xFFFFFFFF, 3]
    assert events.tof[:3].tolist() == np.float32([1.0, 2.0, 3.5]).tolist()
    events.append(memoryview(pairs), [(0, 1, 0, 1), (16, 1, 10, 2), (8, 1, 0, 3)])  # sections of one packet
    assert events.pixel_ids().tolist() == [1, 0xFFFFFFFF, 3, 1, 3, 0xFFFFFFFF]
    assert events.tof[3:6].tolist() == np.float32([1.0, 4.0, 2.0]).tolist()


# --- hostile streams (issue 14) ---------------------------------------------------------------------------------
def test_a_flood_of_run_transitions_without_data_neither_piles_up_nor_delays_the_next_run():
    """END_RUN packets without a run and empty runs each left a sealed segment, handed out one per cycle, outside
    the buffer bound: after 200,000 of them the next run was never reduced (here 20,000 and 5,000: the same
    mechanism; the daemon meets 200,000 in test/test_hostile_sms.py)."""
    client = ClientState("now")
    client.connected()
    feed(client, *prologue(run=0), status(RunStatusCode.NEW_RUN, 1, T0), pulse(0))
    feed(client, status(RunStatusCode.END_RUN, 1, T0 + S))
    feed(client, *[status(RunStatusCode.END_RUN, 0, T0 + S) for _ in range(20_000)])
    feed(
        client,
        *[
            p
            for run in range(2, 5_002)
            for p in (status(RunStatusCode.NEW_RUN, run, T0 + 2 * S), status(RunStatusCode.END_RUN, run, T0 + 2 * S))
        ],
    )
    assert client.pending_bytes < 10 * SEGMENT_BYTES  # bounded, and counted
    feed(
        client,
        status(RunStatusCode.NEW_RUN, 60_000, T0 + 3 * S),
        pulse(200),
        status(RunStatusCode.END_RUN, 60_000, T0 + 4 * S),
    )
    taken = [client.take() for _ in range(4)]
    assert [(s.run_number, s.transition, s.pulses) for s in taken[:3]] == [
        (1, Transition.END_RUN, 1),
        (5_001, Transition.END_RUN, 0),  # the empty runs, collapsed into the latest
        (60_000, Transition.END_RUN, 1),
    ]
    assert client.counters["skipped_end_run_without_a_run"] == 20_000
    assert client.counters["run_transitions_coalesced"] == 5_000 - 1
    assert (taken[3].transition, taken[3].pulses) == (None, 0)


def test_pending_bytes_never_iterates_what_take_mutates():
    """The reader read ``pending_bytes`` without the lock while the cycle's take() popped segments: with a sum
    over the deque that was 'RuntimeError: deque mutated during iteration', a reconnect and lost data."""
    client = ClientState("now")
    client.connected()
    feed(client, *prologue(run=0))
    runs = [
        p
        for run in range(1, 3001)
        for p in (status(RunStatusCode.NEW_RUN, run, T0), pulse(run), status(RunStatusCode.END_RUN, run, T0))
    ]
    feed(client, *runs)
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                client.pending_bytes  # noqa: B018 - what the reader thread reads
        except BaseException as err:  # noqa: BLE001 - the failure this test looks for
            errors.append(err)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader = threading.Thread(target=read)
    reader.start()
    try:
        while client.take().transition is not None:
            pass
    finally:
        done.set()
        reader.join()
        sys.setswitchinterval(interval)
    assert errors == []


def test_at_most_max_process_variables_are_tracked_and_a_chunk_carries_the_logs_that_changed():
    client = ClientState("now")
    client.connected()
    n = MAX_PROCESS_VARIABLES - 3 + 500  # the prologue's device has 3
    variables = [(i, f"pv{i}", "double", "K") for i in range(1, n + 1)]
    feed(
        client,
        *prologue(run=0),
        encode.device_descriptor(9000, encode.device_xml("big", variables), T0 - S),
        *[encode.variable_value(9000, i, float(i), T0 - S) for i in range(1, n + 1)],
        status(RunStatusCode.NEW_RUN, 1, T0),
        pulse(0),
    )
    assert client.counters["skipped_process_variable_beyond_the_maximum"] == 500
    assert client.counters["skipped_variable_without_descriptor"] == 500  # values of the untracked ones
    first = client.logs_for(client.take())
    assert len(first) == MAX_PROCESS_VARIABLES - 3 + 1  # the first chunk of the run: every log with a value
    feed(client, encode.variable_value(9000, 7, 70.0, T0 + S), pulse(1))
    assert client.logs_for(client.take()) == {"pv7": [(T0 - S, 7.0), (T0 + S, 70.0)]}  # only what changed
    feed(client, pulse(2))
    assert client.logs_for(client.take()) == {}


def test_segment_memory_follows_what_was_received():
    """Each segment used to reserve arrays for the whole source_buffer_mb: 300 short runs buffered were 80 GB of
    address space. Segments now start small and double."""
    reserved: list[int] = []

    def allocate(n: int):
        reserved.append(n)
        return np.empty(n, np.int32), np.empty(n, np.float32), None

    client = ClientState("now", allocate=allocate)
    client.connected()
    feed(client, *prologue(run=0))
    feed(
        client,
        *[
            p
            for run in range(1, 301)
            for p in (status(RunStatusCode.NEW_RUN, run, T0), pulse(run), status(RunStatusCode.END_RUN, run, T0))
        ],
    )
    assert sum(reserved) * 8 <= 301 * DEFAULT_SEGMENT_EVENTS * 8  # 512 KiB per segment, not the buffer
    feed(client, status(RunStatusCode.NEW_RUN, 301, T0), *[pulse(i, list(range(1000))) for i in range(300)])
    before = len(reserved)
    assert client.take().run_number == 1
    grown = reserved[before - 3 :]
    assert max(reserved) <= 2 * 300 * 1000  # doubled as needed: at most twice what arrived
    assert grown


GEOMETRY_MEMORY = """
import resource, sys
from livereduce.protocols.adara import framing
from livereduce.protocols.adara.client import ClientState
packet = open(sys.argv[1], "rb").read()
client = ClientState("now")
client.connected()
framer = framing.Framer(max_payload=48 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for frame in framer.feed(packet):
    client.handle(frame)
print(client.id_range[1], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_large_geometry_costs_about_its_own_size(tmp_path):
    """A 50 MB GEOMETRY cost 1.5 GB (an element tree of the whole IDF); it is now read as a stream. Measured in a
    fresh process (peak RSS growth): 6.8 MB of XML with 200,000 id entries, 72-128 MiB before, 8 MiB now."""
    entries = "".join(f'<id start="{i * 10}" end="{i * 10 + 9}"/>' for i in range(200_000))
    idf = minimal_idf("BIG", 0, 9).replace('<id start="0" end="9" />', entries)
    path = tmp_path / "geometry.adara"
    path.write_bytes(encode.geometry(idf, T0))
    done = subprocess.run(
        [sys.executable, "-c", GEOMETRY_MEMORY, str(path)], capture_output=True, text=True, check=True
    )
    last, growth_mib = map(int, done.stdout.split())
    assert last == 1_999_999
    assert growth_mib < 40, done.stdout
