"""The fake SMS: its conversation with a raw client (hello, prologue, start positions, runs, faults) and its
command line. Servers bind 127.0.0.1 and are stopped by their fixtures."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import SANS2D_EVENTS, poll_until
from livereduce.protocols.adara import decode, encode
from livereduce.protocols.adara.packets import EPICS_EPOCH_OFFSET_S, ClientFlags, PacketType, RunStatusCode
from livereduce.tools.fake_sms import make_run

S = 1_000_000_000
T0 = 1_700_000_000 * S
PULSE = S // 60


def small_run(pulses: int = 30, logs: list | None = None) -> object:
    return make_run(
        T0 + np.arange(pulses) * PULSE,
        np.arange(pulses * 2) % 50,
        np.full(pulses * 2, 1000.0),
        np.arange(pulses) * 2,
        charge_pc=np.full(pulses, 100.0),
        logs=logs or [],
    )


def conversation(port: int, hello: bytes, *, until: Callable[[decode.Frame], bool] | None = None) -> list[tuple]:
    """Connect, send ``hello``, and read (type, decoded) until ``until`` or the first heartbeat after END_RUN."""
    received: list[tuple] = []
    ended = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(hello)
        framer = decode.Framer()
        while True:
            n = sock.recv_into(framer.writable())
            assert n, "the server closed the connection"
            framer.wrote(n)
            for frame in framer.frames():
                kind = frame.header.packet_type
                if kind == PacketType.RUN_STATUS:
                    status = decode.decode_run_status(frame.header, frame.payload)
                    received.append((kind, status.status, status.run_number, frame.header.unix_ns))
                    ended |= status.status == RunStatusCode.END_RUN
                elif kind == PacketType.BANKED_EVENT and frame.header.version == 1:
                    received.append((kind, frame.header.unix_ns))
                else:
                    received.append((kind,))
                if (until and until(frame)) or (ended and kind == PacketType.HEARTBEAT):
                    return received


def kinds(received: list[tuple]) -> list[int]:
    return [item[0] for item in received]


def test_prologue_then_the_run_then_heartbeats(sms):
    run = small_run(logs=[(T0 - S, "temperature", 300.0), (T0 + 10 * PULSE, "temperature", 301.0)])
    server = sms([run], eof_every=10)
    received = conversation(server.port, encode.client_hello(1, T0))
    order = kinds(received)
    first_event = order.index(PacketType.BANKED_EVENT)
    assert {PacketType.RUN_STATUS, PacketType.GEOMETRY, PacketType.BEAMLINE_INFO, PacketType.DEVICE_DESC} <= set(
        order[:first_event]
    )
    statuses = [(item[1], item[2]) for item in received if item[0] == PacketType.RUN_STATUS]
    assert statuses[0] == (RunStatusCode.STATE, 0)  # not in a run yet at speed 0
    assert statuses[1] == (RunStatusCode.NEW_RUN, 1)
    assert statuses[-1] == (RunStatusCode.END_RUN, 1)
    assert statuses.count((RunStatusCode.RUN_EOF, 1)) == statuses.count((RunStatusCode.RUN_BOF, 1)) == 2
    pulses = [item[1] for item in received if item[0] == PacketType.BANKED_EVENT]
    assert pulses == (T0 + np.arange(30) * PULSE).tolist()
    assert order.count(PacketType.VAR_VALUE_DOUBLE) >= 2
    assert order[-1] == PacketType.HEARTBEAT


def test_start_positions_at_speed(sms):
    run = small_run(pulses=600)  # 10 s
    server = sms([run], speed=1.0, eof_every=60)

    def first_pulse(hello: bytes) -> tuple[int, list[tuple]]:
        got = conversation(server.port, hello, until=lambda f: f.header.packet_type == PacketType.BANKED_EVENT)
        return int(np.searchsorted(run.pulse_ns, got[-1][1])), got

    poll_until(lambda: server.timeline.now_ns() > run.pulse_ns[90], "the timeline to pass pulse 90")
    now_pulse, _ = first_pulse(encode.client_hello(0, T0))
    assert 60 <= now_pulse <= 600
    run_pulse, got = first_pulse(encode.client_hello(1, T0))
    assert run_pulse == 0
    assert (RunStatusCode.NEW_RUN, 1) in [(item[1], item[2]) for item in got if item[0] == PacketType.RUN_STATUS]
    asked = int(run.pulse_ns[70]) // S - EPICS_EPOCH_OFFSET_S  # second of pulse 70 -> boundary 60
    time_pulse, got = first_pulse(encode.client_hello(asked, T0))
    assert time_pulse == 60
    assert (RunStatusCode.RUN_BOF, 1) in [(item[1], item[2]) for item in got if item[0] == PacketType.RUN_STATUS]


def test_loops_are_placed_one_after_another_with_new_numbers(sms):
    server = sms([small_run(pulses=5)], loops=2, run_number=40)
    received = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(encode.client_hello(1, T0))
        framer = decode.Framer()
        ends = 0
        while ends < 2:
            n = sock.recv_into(framer.writable())
            framer.wrote(n)
            for frame in framer.frames():
                if frame.header.packet_type == PacketType.RUN_STATUS:
                    status = decode.decode_run_status(frame.header, frame.payload)
                    received.append((status.status, status.run_number, frame.header.unix_ns))
                    ends += status.status == RunStatusCode.END_RUN
                elif frame.header.packet_type == PacketType.BANKED_EVENT:
                    received.append(("pulse", 0, frame.header.unix_ns))
    runs = [(code, number) for code, number, _ in received if code in (RunStatusCode.NEW_RUN, RunStatusCode.END_RUN)]
    assert runs == [(1, 40), (4, 40), (1, 41), (4, 41)]
    times = [t for _, _, t in received if _ != RunStatusCode.STATE]
    assert times == sorted(times)  # the second loop is shifted after the first


def test_no_pause_data_is_honoured(sms):
    server = sms([small_run(pulses=30)], pause=(10, 20))
    received = conversation(server.port, encode.client_hello(1, T0, flags=ClientFlags.NO_PAUSE_DATA))
    assert kinds(received).count(PacketType.BANKED_EVENT) == 20
    assert kinds(received).count(PacketType.STREAM_ANNOTATION) == 2
    received = conversation(server.port, encode.client_hello(1, T0))
    assert kinds(received).count(PacketType.BANKED_EVENT) == 30


def test_a_client_without_a_valid_hello_is_dropped(sms):
    server = sms([small_run()])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(encode.heartbeat(T0))
        assert sock.recv(16) == b""  # closed without a word


def test_cli_serves_sans2d_and_stops_on_sigterm(sans2d: Path):
    process = subprocess.Popen(
        [sys.executable, "-m", "livereduce.tools.fake_sms", str(sans2d), "--port", "0", "--speed", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "listening on 127.0.0.1:" in line
        assert f"300 pulses, {SANS2D_EVENTS} events" in line
        port = int(line.split("127.0.0.1:")[1].split(":")[0])
        received = conversation(port, encode.client_hello(1, T0))
        assert kinds(received).count(PacketType.BANKED_EVENT) == 300
        process.terminate()
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.communicate()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["/nonexistent.nxs"], 3, "no such file"),
        (["x.nxs", "--pause-at", "5:3"], 2, "--pause-at 5:3"),
        (["x.nxs", "--eof-every", "0"], 2, "--eof-every must be at least 1"),
        (["x.nxs", "--heartbeat", "0"], 2, "--heartbeat must be > 0"),
    ],
)
def test_cli_errors(args, code, message):
    done = subprocess.run(
        [sys.executable, "-m", "livereduce.tools.fake_sms", *args], check=False, capture_output=True, timeout=60
    )
    assert done.returncode == code
    assert message in done.stderr.decode()
