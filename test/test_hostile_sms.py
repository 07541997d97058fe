"""The daemon as a subprocess against a hostile SMS (a thread of this test on 127.0.0.1): what used to stall,
exhaust memory or end in exit 6, in one stream (issue 14).

The stream: a GEOMETRY declaring pixel ids 0..2**31-2 (with ``preserve_events`` false that sized an 8 GiB
histogram), 20,000 process variables with a value each (50,000 made cycles take 34-40 s and SIGTERM end in exit
6), 200,000 END_RUN packets without a run and 20,000 empty runs (sealed segments outside the buffer bound, handed
over one per cycle: the next run was never reduced), then run 7 with events. The daemon must reduce run 7 within a few
cycles and stop on SIGTERM with exit 0 while the run goes on.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from livereduce.engines.scipp.chunk import MAX_PIXELS
from livereduce.protocols.adara import encode
from livereduce.protocols.adara.geometry import minimal_idf
from livereduce.protocols.adara.packets import EPICS_EPOCH_OFFSET_S, RunStatusCode
from livereduce.protocols.adara.variables import MAX_PROCESS_VARIABLES

S = 1_000_000_000
PVS = 20_000
FLOOD = 200_000
EMPTY_RUNS = 20_000
RUN = 7


def _prologue(now_ns: int) -> bytes:
    """Everything the SMS sends before run 7's events."""
    at = now_ns - 10 * S
    epics = at // S - EPICS_EPOCH_OFFSET_S
    geometry = minimal_idf("HOSTILE", 0, 9).replace('end="9"', f'end="{2**31 - 2}"')
    variables = [(i, f"pv{i}", "double", "K") for i in range(1, PVS + 1)]
    prologue = [
        encode.run_status(0, 0, RunStatusCode.STATE, at),
        encode.geometry(geometry, at),
        encode.beamline_info("BL99", "HST", "HOSTILE", at),
        encode.device_descriptor(9000, encode.device_xml("many", variables), at),
        *(encode.variable_value(9000, i, float(i), at) for i in range(1, PVS + 1)),
        *(encode.run_status(0, 0, RunStatusCode.END_RUN, at) for _ in range(FLOOD)),
        *(
            packet
            for run in range(1000, 1000 + EMPTY_RUNS)
            for packet in (
                encode.run_status(run, epics, RunStatusCode.NEW_RUN, at),
                encode.run_status(run, epics, RunStatusCode.END_RUN, at),
            )
        ),
        encode.run_status(RUN, epics, RunStatusCode.NEW_RUN, at),
    ]
    return b"".join(prologue)


class HostileSms:
    """Answers one client: the hostile prologue, then a pulse of run 7 every 10 ms (pixels 5 and
    MAX_PIXELS + 5: the second is beyond the capped range) until stopped."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stopping = threading.Event()
        self.pulses = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                sock, _ = self.server.accept()
            except TimeoutError:
                continue
            try:
                self._session(sock)
            except OSError:
                pass
            finally:
                sock.close()

    def _session(self, sock: socket.socket) -> None:
        sock.recv(32)  # the hello
        start = time.time_ns()
        sock.sendall(_prologue(start))
        ids = np.array([5, MAX_PIXELS + 5], np.uint32)
        while not self.stopping.wait(0.01):
            stamp = start + self.pulses * (S // 60)
            sock.sendall(encode.banked_event(stamp, {1: (np.array([100, 200], np.uint32), ids)}, charge=10))
            self.pulses += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.server.close()


@pytest.fixture
def hostile_sms() -> Iterator[HostileSms]:
    server = HostileSms()
    yield server
    server.stop()


def test_the_daemon_reduces_the_run_after_a_hostile_prologue_and_stops_on_sigterm(daemon, hostile_sms):
    process = daemon(
        {
            "listener": "SNSLiveEventDataListener",
            "address": f"127.0.0.1:{hostile_sms.port}",
            "start": "now",
            "preserve_events": False,
            "update_every": 1,
            "stop_timeout_sec": 10,
        },
        {"proc": "output = input\n"},
        instrument="HOSTILE",
    )
    log = process.wait_for_log(lambda text: f"(run {RUN}, Running)" in text and "events in" in text, timeout=90)
    assert f"pixels 0..{MAX_PIXELS - 1} (at most {MAX_PIXELS})" in log
    lines = [line for line in log.splitlines() if f"(run {RUN}, Running)" in line]
    assert "accumulation: DataArray(event_id: 16777216" in lines[0]  # 64 MiB of counts, not 8 GiB
    assert "event_id outside 0..16777215" in log  # pixel MAX_PIXELS + 5 dropped and counted
    stopping = time.monotonic()
    process.send(signal.SIGTERM)
    run = process.finish(timeout=30)
    assert run.returncode == 0, run.log[-3000:]
    # within the stop's bound: the last checkpoint (200 MB: the 16M-pixel histogram with its variances and
    # coordinate) gets half of stop_timeout_sec, and is abandoned after that (the previous one stays)
    assert time.monotonic() - stopping < 10
    assert "Traceback" not in run.log
    counters = json.loads((run.workdir / "status.json").read_text())["engine"]["source_counters"]
    assert counters["skipped_process_variable_beyond_the_maximum"] == PVS - MAX_PROCESS_VARIABLES
    assert counters["skipped_end_run_without_a_run"] == FLOOD
    assert counters["run_starts"] == EMPTY_RUNS + 1
    assert counters["run_transitions_coalesced"] >= EMPTY_RUNS - 100  # a cycle may take one while they arrive
