"""The fake SMS: its conversation with a raw client (hello, prologue, start positions, runs, faults) and its
command line. Servers bind 127.0.0.1 and are stopped by their fixtures."""

from __future__ import annotations

import errno
import logging
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import SANS2D_EVENTS, poll_until
from livereduce.protocols.adara import decode, encode, framing
from livereduce.protocols.adara.packets import EPICS_EPOCH_OFFSET_S, ClientFlags, PacketType, RunStatusCode
from livereduce.tools.sms_server import ClientFailed, ClientGone, connection_ended
from livereduce.tools.sms_stream import MAX_RUN_NUMBER, Timeline, make_run, next_run_number

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


def conversation(port: int, hello: bytes, *, until: Callable[[framing.Frame], bool] | None = None) -> list[tuple]:
    """Connect, send ``hello``, and read (type, decoded) until ``until`` or the first heartbeat after END_RUN."""
    received: list[tuple] = []
    ended = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(hello)
        framer = framing.Framer()
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


def test_a_time_in_a_run_that_has_ended_gets_the_rest_of_that_run(sms):
    """The SMS keeps its history: a client resuming at a time of a run that ended since (a daemon killed during the
    run, started again after its end) gets the run's pulses from the chunk-file boundary before that time, and
    its END_RUN; the fake served 'no run' here once, and the resumed accumulation lost the run's last pulses."""
    run = small_run(pulses=600)  # 10 s of pulses, 0.5 s at speed 20
    server = sms([run], speed=20.0, eof_every=60)
    poll_until(lambda: server.timeline.now_ns() > run.pulse_ns[-1] + S, "the run to end")
    asked = int(run.pulse_ns[330]) // S - EPICS_EPOCH_OFFSET_S  # the second of pulse 330: pulses 300.. -> 300
    got = conversation(server.port, encode.client_hello(asked, T0))
    statuses = [(item[1], item[2]) for item in got if item[0] == PacketType.RUN_STATUS]
    assert statuses[0] == (RunStatusCode.STATE, 1)
    assert statuses[-1] == (RunStatusCode.END_RUN, 1)
    pulses = [item[1] for item in got if item[0] == PacketType.BANKED_EVENT]
    assert pulses == run.pulse_ns[300:].tolist()


def test_loops_are_placed_one_after_another_with_new_numbers(sms):
    server = sms([small_run(pulses=5)], loops=2, run_number=40)
    received = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(encode.client_hello(1, T0))
        framer = framing.Framer()
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


def test_a_client_without_a_valid_hello_is_dropped(sms, caplog):
    caplog.set_level(logging.INFO, logger="livereduce.fake_sms")
    server = sms([small_run()])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(encode.heartbeat(T0))
        assert sock.recv(16) == b""  # closed without a word
    warning = poll_until(lambda: [r for r in caplog.records if r.levelno == logging.WARNING], "the warning")
    expected = f"no valid hello (expected CLIENT_HELLO, got type 0x{PacketType.HEARTBEAT:04X} with 0 bytes)"
    assert re.fullmatch(r"client 127\.0\.0\.1:\d+: " + re.escape(expected), warning[0].getMessage())


def ended(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The fake SMS's records of how client sessions ended (anything but connected and hello)."""
    return [
        record
        for record in caplog.records
        if record.name == "livereduce.fake_sms" and not re.search(r" connected$|: hello ", record.getMessage())
    ]


@pytest.mark.parametrize("when", ["after the run (close)", "in the middle of the stream (reset)"])
def test_a_client_that_disconnects_is_one_info_line_not_a_broken_pipe(sms, caplog, when):
    """A client's normal stop, whether the server's next send meets the closed socket (EPIPE) or a reset (the
    client closed with data unread), is ``client HOST:PORT disconnected`` at INFO."""
    caplog.set_level(logging.INFO, logger="livereduce.fake_sms")
    server = sms([small_run(pulses=3000)], heartbeat_s=0.05)
    if when.startswith("after"):
        conversation(server.port, encode.client_hello(1, T0))
    else:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(encode.client_hello(1, T0))
            assert sock.recv(1000)
    records = poll_until(lambda: ended(caplog), "the end of the session")
    assert [(r.levelno, re.sub(r":\d+ ", ":PORT ", r.getMessage())) for r in records] == [
        (logging.INFO, "client 127.0.0.1:PORT disconnected")
    ]


def test_connection_errors_other_than_the_clients_close_stay_warnings():
    for error in (BrokenPipeError(errno.EPIPE, "Broken pipe"), ConnectionResetError(errno.ECONNRESET, "reset")):
        gone = connection_ended(error)
        assert isinstance(gone, ClientGone)
        assert str(gone) == "disconnected"
    failed = connection_ended(OSError(errno.ETIMEDOUT, "Connection timed out"))
    assert isinstance(failed, ClientFailed)
    assert str(failed) == "connection lost (Connection timed out)"


def test_the_hello_line_names_runs_by_their_numbers_from_1(sms, caplog):
    """A run without a run number is run 1 (2, 3, ... for the next), in the log as in the packets."""
    caplog.set_level(logging.INFO, logger="livereduce.fake_sms")
    server = sms([small_run(pulses=5)], loops=2)
    assert [server.timeline.at(k).number for k in range(2)] == [1, 2]
    received = conversation(server.port, encode.client_hello(1, T0))
    assert (RunStatusCode.NEW_RUN, 1) in [(item[1], item[2]) for item in received if item[0] == PacketType.RUN_STATUS]
    hello = poll_until(lambda: [r.getMessage() for r in caplog.records if ": hello " in r.getMessage()], "the hello")
    assert hello[0].endswith(": hello v0 start 1 at pulse 0 of run 1: serving run 1 from pulse 0 (from NEW_RUN)")


def test_run_numbers_stay_within_adaras_32_bits():
    assert next_run_number(0, 0) == 1  # no run number: run 1
    assert next_run_number(7, 2) == 9
    assert next_run_number(MAX_RUN_NUMBER, 1) == 1  # past the top: 1 again, never 0 (no run)
    assert next_run_number(2**40, 0) == 1  # a file's number that does not fit: ignored
    run = small_run(pulses=2)
    run.number = 2**40
    assert Timeline([run], loops=1, speed=0).at(0).number == 1


def test_cli_serves_sans2d_and_stops_on_sigterm(sans2d: Path):
    command = [sys.executable, "-m", "livereduce.tools.fake_sms", str(sans2d), "--port", "0", "--speed", "0"]
    process = subprocess.Popen(
        [*command, "--heartbeat", "0.1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "listening on 127.0.0.1:" in line
        assert f"300 pulses, {SANS2D_EVENTS} events" in line
        assert line.rstrip().endswith("runs from 1")  # the SANS2D sample has no run number
        port = int(line.split("127.0.0.1:")[1].split(":")[0])
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
        received = conversation(port, encode.client_hello(1, T0))
        assert kinds(received).count(PacketType.BANKED_EVENT) == 300
        runs = [(item[1], item[2]) for item in received if item[0] == PacketType.RUN_STATUS]
        assert (RunStatusCode.NEW_RUN, 1) in runs
        assert (RunStatusCode.END_RUN, 1) in runs
        poll_until(lambda: any(" disconnected" in text for text in lines), lambda: "".join(lines), timeout=20)
        output = "".join(lines)
        assert "hello v0 start 1 at pulse 0 of run 1: serving run 1 from pulse 0 (from NEW_RUN)" in output
        assert re.search(r"^livereduce-fake-sms: INFO: client 127\.0\.0\.1:\d+ disconnected$", output, re.M), output
        assert "WARNING" not in output
        assert "Broken pipe" not in output
        assert "run index" not in output
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
        (["x.nxs", "--run-number", "0"], 2, f"0: expected a run number within 1..{MAX_RUN_NUMBER}"),
        (["x.nxs", "--run-number", str(2**32)], 2, "expected a run number within 1..4294967295"),
    ],
)
def test_cli_errors(args, code, message):
    done = subprocess.run(
        [sys.executable, "-m", "livereduce.tools.fake_sms", *args], check=False, capture_output=True, timeout=60
    )
    assert done.returncode == code
    assert message in done.stderr.decode()
