"""The synthetic real-time sources of ``bench/bench_realtime.py``: the pulse pool, ``livereduce-fake-sms
--synthetic RATE --start-in S`` (a run made on the fly, on a wall-clock timeline) and the ev44 templates of
``livereduce.tools.kafka_synthetic``; in process (the producer against tansu: test/kafka/test_kafka_synthetic.py)."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pytest
from streaming_data_types import deserialise_ev44

from conftest import poll_until
from livereduce.protocols.adara import decode, encode, framing
from livereduce.protocols.adara.packets import HELLO_START_OF_RUN, PacketType, RunStatusCode
from livereduce.tools import fake_sms
from livereduce.tools.kafka_synthetic import Template
from livereduce.tools.sms_stream import RUN_EDGE_NS, RUN_GAP_NS, Timeline
from livereduce.tools.synthetic import FRAME_100NS, PulsePool, pulse_events, synthetic_run

S = 1_000_000_000


def test_the_pool_is_uniform_random_events_reproducible_by_seed():
    pool = PulsePool.make(1000, 50, pulses=3)
    assert pool.event_id.shape == pool.tof_100ns.shape == (3, 1000)
    assert (pool.event_id.min(), pool.event_id.max()) == (0, 49)
    assert 0 <= pool.tof_100ns.min()
    assert pool.tof_100ns.max() < FRAME_100NS
    assert np.array_equal(PulsePool.make(1000, 50, pulses=3).event_id, pool.event_id)
    assert not np.array_equal(PulsePool.make(1000, 50, pulses=3, seed=1).event_id, pool.event_id)
    assert (len(pool), pool.events_per_pulse) == (3, 1000)


def test_a_tiled_pool_repeats_one_block_per_pulse():
    pool = PulsePool.make(10, 1000, pulses=2, tile=4)
    ids = pool.event_id
    assert np.array_equal(ids[:, 4:8], ids[:, :4])
    assert np.array_equal(ids[:, 8:], ids[:, :2])
    assert not np.array_equal(ids[0], ids[1])


def test_events_per_pulse_are_the_rate_over_the_pulse_rate():
    assert pulse_events(1e7, 60) == 166_667
    assert pulse_events(0, 60) == 0
    with pytest.raises(ValueError, match="events/s"):
        pulse_events(1e7, 0)


def test_a_synthetic_pulse_is_a_banked_event_of_the_pool_stamped_with_its_time():
    pool = PulsePool.make(100, 64, pulses=2)
    run = synthetic_run(pool, seconds=0.5, pulse_rate=60, first_ns=1_800_000_000 * S)
    assert run.pulse_ns.size == 30
    assert np.all(np.abs(np.diff(run.pulse_ns) - S / 60) < 1)
    assert (run.events, run.pixels) == (3000, (0, 63))
    header, payload = run.packet(3, 1_800_000_123 * S + 456)
    frames = list(_frames(header + bytes(payload)))
    assert len(frames) == 1
    assert frames[0].header.packet_type == PacketType.BANKED_EVENT
    assert frames[0].header.unix_ns == 1_800_000_123 * S + 456
    walked = decode.walk_banked_events(frames[0].header, frames[0].payload)
    ((at, count, _, bank),) = walked.sections
    pixel, tof = decode.event_arrays(bytes(frames[0].payload)[at : at + count * 8])
    assert (count, bank) == (100, 1)
    assert np.array_equal(pixel, pool.event_id[1])
    assert np.allclose(tof, pool.tof_100ns[1] / 10)
    assert len(run.ends) == 30
    assert run.ends[0] == len(header) + len(payload)


def test_a_timeline_given_a_start_time_is_the_wall_clock():
    run = synthetic_run(PulsePool.make(1, 1, pulses=1), seconds=1, pulse_rate=10, first_ns=0)
    start = time.time_ns() + 5 * S
    timeline = Timeline([run], loops=2, speed=1, start_ns=start)
    assert timeline.at(0).start_ns == start
    assert timeline.at(0).first_ns == start + RUN_EDGE_NS
    assert timeline.at(1).start_ns == timeline.at(0).end_ns + RUN_GAP_NS
    assert abs(timeline.now_ns() - time.time_ns()) < S // 10
    with pytest.raises(ValueError, match="speed 1"):
        Timeline([run], loops=1, speed=2, start_ns=start)


def test_the_fake_sms_sends_synthetic_runs_when_their_pulses_are_due(sms, caplog):
    """Two runs of 0.25 s at 60 Hz from 0.3 s after start: every pulse arrives after its time and soon after it,
    with the pool's events, and each run ends with the line of what was sent."""
    caplog.set_level(logging.INFO, logger="livereduce.fake_sms")
    pool = PulsePool.make(50, 100, pulses=3)
    server = sms([synthetic_run(pool, seconds=0.25, pulse_rate=60)], speed=1, loops=2, start_in=0.3)
    pulses, statuses = [], []
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(encode.client_hello(HELLO_START_OF_RUN, time.time_ns()))
        framer = framing.Framer()
        while (RunStatusCode.END_RUN, 2) not in statuses:
            n = sock.recv_into(framer.writable())
            assert n, "the server closed the connection"
            framer.wrote(n)
            received = time.time_ns()
            for frame in framer.frames():
                if frame.header.packet_type == PacketType.RUN_STATUS:
                    status = decode.decode_run_status(frame.header, frame.payload)
                    statuses.append((status.status, status.run_number))
                elif frame.header.packet_type == PacketType.BANKED_EVENT:
                    walked = decode.walk_banked_events(frame.header, frame.payload)
                    ((at, count, _, _),) = walked.sections
                    pixel, _ = decode.event_arrays(bytes(frame.payload)[at : at + count * 8])
                    pulses.append((frame.header.unix_ns, received, pixel.copy()))
    assert [s for s in statuses if s[0] != RunStatusCode.STATE] == [
        (RunStatusCode.NEW_RUN, 1), (RunStatusCode.END_RUN, 1), (RunStatusCode.NEW_RUN, 2), (RunStatusCode.END_RUN, 2)
    ]  # fmt: skip
    assert len(pulses) == 30
    times = np.array([p[0] for p in pulses])
    late = np.array([p[1] for p in pulses]) - times
    assert late.min() >= 0, "a pulse arrived before its time"
    assert late.max() < 2 * S, "pulses are sent when due"
    assert np.all(np.abs(np.diff(times[:15]) - S / 60) < 1)
    assert times[15] - times[14] > RUN_GAP_NS
    for k, (_, _, pixel) in enumerate(pulses):
        assert np.array_equal(pixel, pool.event_id[k % 15 % 3])

    def lines() -> list[str] | None:  # the server logs a run's line after sending its END_RUN: wait for both
        found = [r.getMessage() for r in caplog.records if r.name == "livereduce.fake_sms.sent"]
        return found if len(found) >= 2 else None

    sent = poll_until(lines, "the lines of what was sent")
    assert [line.split(": ", 1)[1].split(", at most")[0] for line in sent] == [
        "run 1 ended: 15 pulses sent",
        "run 2 ended: 15 pulses sent",
    ]


@pytest.mark.parametrize(
    "argv",
    [[], ["run.nxs", "--synthetic", "1e6"], ["--synthetic", "1e6", "--start-in", "1", "--speed", "2"],
     ["--synthetic", "1e6", "--pulse-rate", "0"]],
)  # fmt: skip
def test_the_command_line_wants_files_or_a_synthetic_rate(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        fake_sms.parse_args(argv)
    assert exited.value.code == 2


def test_the_command_line_of_a_synthetic_stream():
    args = fake_sms.parse_args(["--synthetic", "1e7", "--pixels", "10", "--run-seconds", "1", "--start-in", "2"])
    (run,) = fake_sms._runs(args)
    assert (run.pulse_ns.size, run.events, run.pixels) == (60, 60 * 166_667, (0, 9))


def test_an_ev44_template_is_stamped_in_place():
    template = Template.of("src", np.arange(5, dtype=np.int32) * 100, np.arange(5, dtype=np.int32))
    message = deserialise_ev44(template.stamped(7, 1_800_000_000 * S + 1))
    assert (message.message_id, list(message.reference_time)) == (7, [1_800_000_000 * S + 1])
    assert list(message.pixel_id) == [0, 1, 2, 3, 4]
    assert list(message.time_of_flight) == [0, 100, 200, 300, 400]
    assert deserialise_ev44(template.stamped(8, 5)).message_id == 8


def _frames(data: bytes) -> list[framing.Frame]:
    framer = framing.Framer()
    target = framer.writable(len(data))
    target[: len(data)] = data
    framer.wrote(len(data))
    return list(framer.frames())
