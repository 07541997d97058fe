"""Resuming an ADARA accumulation from its source position, in process: the client state fed packets built by
``encode.py``, and SNSLiveEventDataListener against a scripted server on 127.0.0.1 that records the hello and sends
what the test gives it (what the SMS sends after a hello with a time: the chunk file from before it)."""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from test_adara_client import EPICS_T0, PULSE, T0, S, feed, prologue, pulse, status

from conftest import poll_until
from livereduce.config import Config
from livereduce.engines.scipp.chunk import flat_events
from livereduce.engines.scipp.listeners.adara import SNSLiveEventDataListener
from livereduce.engines.scipp.listeners.base import Extracted, RunStatus
from livereduce.protocols.adara import decode, encode
from livereduce.protocols.adara.client import ALREADY_ACCUMULATED, ClientState, ResumePoint
from livereduce.protocols.adara.packets import (
    EPICS_EPOCH_OFFSET_S,
    HEADER_BYTES,
    MAX_RUN_NUMBER,
    ClientFlags,
    RunStatusCode,
    parse_header,
)
from livereduce.protocols.adara.segments import Transition

LAST = T0 + 3 * PULSE
"""The newest pulse of the checkpoint: pulses 0..3 (2 events each) are already accumulated."""


def resumed(run: int = 7, last: int = LAST, start: object = "from_start_of_run", **keys: object) -> ClientState:
    client = ClientState(start, resume=ResumePoint(run, last), **keys)
    client.connected()
    return client


def mantid_start(unix_ns: int) -> int:
    """The hello's requested start as Mantid computes it: ``StartTime.totalNanoseconds() / 1000000000`` (integer
    division of the ns since the EPICS epoch)."""
    return (unix_ns - EPICS_EPOCH_OFFSET_S * S) // S


@pytest.mark.parametrize("start", ["from_start_of_run", "now", datetime.fromtimestamp(T0 // S + 3600, UTC)])
def test_hello_asks_for_the_second_of_the_last_pulse_whatever_the_start(start):
    """Mantid's v0 hello encoding; a v1 hello (keep_paused_events) asks the same time. A configured start (even a
    time after the position) is ignored."""
    last = T0 + 59 * PULSE  # 0.98 s after a whole second: the hello rounds down
    for keep, flags in ((False, None), (True, ClientFlags.SEND_PAUSE_DATA)):
        client = ClientState(start, resume=ResumePoint(7, last), keep_paused_events=keep)
        hello = client.hello(T0 + 7200 * S)
        assert decode.decode_client_hello(parse_header(hello), hello[HEADER_BYTES:]) == (mantid_start(last), flags)
        assert mantid_start(last) == EPICS_T0
        assert not client.waiting_for_run


def test_pulses_up_to_the_position_are_dropped_and_counted_the_rest_kept_exactly():
    client = resumed()
    monitor = [encode.beam_monitor(T0 + i * PULSE, {1: np.array([5, 6])}) for i in (3, 4)]
    feed(client, *prologue(run=7), *(pulse(i) for i in range(4)), monitor[0])
    feed(client, encode.banked_event(LAST + 1, {1: (np.array([70]), np.array([7]))}), pulse(4), monitor[1])
    segment = client.take()
    assert list(segment.pulse_ns) == [LAST + 1, T0 + 4 * PULSE]  # 1 ns after the position is new
    assert segment.events.pixel_ids().tolist() == [7, 4, 14]
    assert segment.events.tof[:3].tolist() == [7.0, 4.0, 14.0]
    assert segment.dropped == {ALREADY_ACCUMULATED: 8}
    assert [times.tolist() for times, _ in segment.monitors[1]] == [[T0 + 4 * PULSE] * 2]
    counters = client.counters
    assert (counters["events_dropped"], counters["events"], counters["pulses"]) == (8, 3, 2)
    assert counters["skipped_already_accumulated"] == 5  # 4 banked event packets and 1 monitor packet
    assert (segment.run_number, segment.transition, segment.data_reset) == (7, None, False)


def test_a_reconnect_after_a_resume_asks_by_time_not_for_the_run_again():
    client = resumed()
    feed(client, *prologue(run=7), *(pulse(i) for i in range(6)))
    client.take()
    client.connected()
    assert client.requested_start() == EPICS_T0  # the second of pulse 5, not 1 (start of run)
    feed(client, *prologue(run=7), *(pulse(i) for i in range(8)))
    segment = client.take()
    assert list(segment.pulse_ns) == [T0 + 6 * PULSE, T0 + 7 * PULSE]
    assert not segment.data_reset
    assert client.counters["skipped_before_start"] == 6  # what this process had received already
    assert client.counters["skipped_already_accumulated"] == 4  # the first connection's replay only


@pytest.mark.parametrize(
    ("served", "new_run_first"),
    [(8, True), (8, False), (0, False)],
    ids=["NEW_RUN of the next run", "inside the next run", "between runs"],
)
def test_the_sms_serving_another_run_ends_the_checkpoints_run_first(served, new_run_first, caplog):
    client = resumed()
    packets = [*prologue(run=served)]
    if new_run_first:
        packets.append(status(RunStatusCode.NEW_RUN, 8, T0 - S // 2))
    with caplog.at_level(logging.WARNING, "livereduce.SNSLiveEventDataListener"):
        feed(client, *packets, *(pulse(i) for i in range(6)), status(RunStatusCode.STATE, served, T0 + S))
    ended, following = client.take(), client.take()
    assert (ended.run_number, ended.transition, ended.pulses) == (7, Transition.END_RUN, 0)
    assert (following.run_number, following.transition, following.pulses) == (served, None, 6)  # none dropped
    assert not following.dropped
    assert following.every_log  # it starts an accumulation: every log's value in force
    served_text = f"run {served}" if served else "no run"
    assert [record.getMessage() for record in caplog.records] == [
        f"Run 7 of the checkpoint is over: the SMS serves {served_text} now; run 7 ends at the checkpoint (its "
        "pulses after it are not served any more) and a new accumulation starts"
    ]


def test_a_checkpoint_between_runs_is_followed_by_begin_run_when_a_run_began():
    client = resumed(run=0)
    feed(client, *prologue(run=8), pulse(5))
    between, run = client.take(), client.take()
    assert (between.run_number, between.transition) == (0, Transition.BEGIN_RUN)
    assert (run.run_number, run.pulses) == (8, 1)


# --- the listener against a scripted server ---------------------------------------------------------------------


class Scripted:
    """One client at a time on 127.0.0.1: its hello (requested start, flags) is recorded, then it gets what
    :meth:`send` queues."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port = self._server.getsockname()[1]
        self.hellos: list[tuple[int, int | None]] = []
        self._outgoing: queue.Queue[bytes] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def send(self, *packets: bytes) -> None:
        self._outgoing.put(b"".join(packets))

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._server.accept()
            except TimeoutError:
                continue
            with sock:
                header = parse_header(sock.recv(HEADER_BYTES, socket.MSG_WAITALL))
                self.hellos.append(
                    decode.decode_client_hello(header, sock.recv(header.payload_len, socket.MSG_WAITALL))
                )
                while not self._stopping.is_set():
                    try:
                        sock.sendall(self._outgoing.get(timeout=0.05))
                    except queue.Empty:
                        continue

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._server.close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.stop()


@pytest.fixture
def listener(scripted: Scripted) -> Iterator[SNSLiveEventDataListener]:
    made = SNSLiveEventDataListener(Config.model_validate({"address": f"127.0.0.1:{scripted.port}"}))
    yield made
    made.disconnect()


def until(listener: SNSLiveEventDataListener, done: Callable[[list[Extracted]], bool]) -> list[Extracted]:
    """Extract (as the engine's cycles do) until ``done(everything so far)``."""
    got: list[Extracted] = []

    def step() -> bool:
        got.append(listener.extract())
        return done(got)

    poll_until(step, lambda: f"chunks {got}; health {listener.health()}", timeout=20, interval=0.01)
    return got


def pulses_of(got: list[Extracted]) -> list[int]:
    return [int(t) for item in got for t in item.chunk.coords["event_time_zero"].values.astype(np.int64)]


def test_every_chunk_carries_the_newest_pulse_handed_out_and_its_run(scripted, listener):
    scripted.send(*prologue(run=7), status(RunStatusCode.NEW_RUN, 7, T0 - S // 2))
    listener.connect()
    listener.start("from_start_of_run")
    assert listener.extract().position is None  # no pulse handed out yet
    scripted.send(*(pulse(i) for i in range(3)))
    got = until(listener, lambda got: len(pulses_of(got)) == 3)
    assert got[-1].position == {"run_number": 7, "last_pulse_ns": T0 + 2 * PULSE}
    assert listener.extract().position == {"run_number": 7, "last_pulse_ns": T0 + 2 * PULSE}  # an empty chunk
    scripted.send(pulse(1))  # an older pulse again (a faulty SMS): the position does not go back
    got = until(listener, lambda got: len(pulses_of(got)) == 1)
    assert got[-1].position == {"run_number": 7, "last_pulse_ns": T0 + 2 * PULSE}
    scripted.send(status(RunStatusCode.END_RUN, 7, T0 + S), status(RunStatusCode.NEW_RUN, 8, T0 + 2 * S))
    scripted.send(pulse(150), pulse(151))
    got = until(listener, lambda got: len(pulses_of(got)) == 2)
    assert [(item.status, item.position) for item in got if item.status is RunStatus.EndRun] == [
        (RunStatus.EndRun, {"run_number": 7, "last_pulse_ns": T0 + 2 * PULSE})
    ]
    assert got[-1].position == {"run_number": 8, "last_pulse_ns": T0 + 151 * PULSE}


def test_a_resumed_listener_asks_for_the_position_and_drops_up_to_it(scripted, listener):
    position = {"run_number": 7, "last_pulse_ns": LAST}
    scripted.send(*prologue(run=7))
    listener.connect()
    assert listener.resume_refusal(position) is None
    listener.start("from_start_of_run", resume=position)
    assert scripted.hellos == [(mantid_start(LAST), None)]
    assert listener.extract().position == position  # nothing new yet: where the checkpoint stands
    scripted.send(*(pulse(i) for i in range(7)))  # the SMS's replay from before the position, then new pulses
    got = until(listener, lambda got: len(pulses_of(got)) == 3)
    assert pulses_of(got) == [T0 + i * PULSE for i in (4, 5, 6)]
    ids = np.concatenate([flat_events(item.chunk).coords["event_id"].values for item in got])
    assert ids.tolist() == [4, 14, 5, 15, 6, 16]
    assert sum(item.dropped.get(ALREADY_ACCUMULATED, 0) for item in got) == 8
    assert {item.status for item in got} == {RunStatus.Running}
    assert not any(item.data_reset for item in got)
    assert got[-1].position == {"run_number": 7, "last_pulse_ns": T0 + 6 * PULSE}
    counters = listener.health().counters
    assert (counters["events_dropped"], counters["events"]) == (8, 6)


def test_a_resume_into_another_run_ends_the_old_one_with_an_empty_end_run(scripted, listener):
    position = {"run_number": 7, "last_pulse_ns": LAST}
    scripted.send(*prologue(run=8, at=T0 + 10 * S), status(RunStatusCode.NEW_RUN, 8, T0 + 10 * S))
    scripted.send(*(pulse(i) for i in range(600, 603)))
    listener.connect()
    listener.start("from_start_of_run", resume=position)
    got = until(listener, lambda got: len(pulses_of(got)) == 3)
    first = got[0]
    assert (first.status, first.run_number, first.chunk.sizes["event_time_zero"]) == (RunStatus.EndRun, 7, 0)
    assert first.position == position
    assert {item.run_number for item in got[1:]} == {8}
    assert got[-1].position == {"run_number": 8, "last_pulse_ns": T0 + 602 * PULSE}


@pytest.mark.parametrize(
    ("position", "phrase"),
    [
        ([7, LAST], "is not {'run_number': R, 'last_pulse_ns': T}"),
        ({"last_pulse_ns": LAST}, "is not {'run_number': R, 'last_pulse_ns': T}"),
        ({"run_number": 7, "last_pulse_ns": LAST, "x": 1}, "is not {'run_number': R, 'last_pulse_ns': T}"),
        ({"next_pulse": 3}, "is not {'run_number': R, 'last_pulse_ns': T}"),
        ({"run_number": "7", "last_pulse_ns": LAST}, "run_number is not an integer within 0..4294967295"),
        ({"run_number": True, "last_pulse_ns": LAST}, "run_number is not an integer within 0..4294967295"),
        ({"run_number": -1, "last_pulse_ns": LAST}, "run_number is not an integer within 0..4294967295"),
        ({"run_number": MAX_RUN_NUMBER + 1, "last_pulse_ns": LAST}, "run_number is not an integer"),
        ({"run_number": 7, "last_pulse_ns": float(LAST)}, "last_pulse_ns is not an integer within"),
        ({"run_number": 7, "last_pulse_ns": None}, "last_pulse_ns is not an integer within"),
        ({"run_number": 7, "last_pulse_ns": 0}, "last_pulse_ns is not an integer within"),
        ({"run_number": 7, "last_pulse_ns": (EPICS_EPOCH_OFFSET_S + 1) * S}, "last_pulse_ns is not an integer"),
        ({"run_number": 7, "last_pulse_ns": (EPICS_EPOCH_OFFSET_S + 2**32) * S}, "last_pulse_ns is not an integer"),
        ({"run_number": 7, "last_pulse_ns": 2**200}, "last_pulse_ns is not an integer within"),
        ({"run_number": 7, "last_pulse_ns": 4_000_000_000 * S}, "s after this host's clock"),
        ({"run_number": 7, "last_pulse_ns": LAST, "x": "y" * 10_000}, "..."),
    ],
)
def test_a_malformed_position_is_refused_with_a_phrase(listener, position, phrase):
    refusal = listener.resume_refusal(position)
    assert refusal is not None
    assert phrase in refusal
    assert len(refusal) < 400
    with pytest.raises(ValueError, match="cannot resume"):
        listener.start("from_start_of_run", resume=position)


def test_positions_at_the_edges_are_accepted(listener):
    for position in (
        {"run_number": 0, "last_pulse_ns": (EPICS_EPOCH_OFFSET_S + 2) * S},
        {"run_number": MAX_RUN_NUMBER, "last_pulse_ns": LAST},
    ):
        assert listener.resume_refusal(position) is None
