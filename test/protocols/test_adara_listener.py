"""SNSLiveEventDataListener in process against real sockets on 127.0.0.1: the fake SMS (in a thread) and small
scripted servers for the faults the fake SMS does not make. Every server is stopped by its fixture."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import pytest
import scipp as sc

from conftest import SANS2D_EVENTS, Sans2dReference, poll_until
from livereduce.config import Config
from livereduce.engines.scipp.chunk import MAX_PIXELS, flat_events
from livereduce.engines.scipp.listeners.adara import SNSLiveEventDataListener, parse_address
from livereduce.engines.scipp.listeners.base import Extracted, RunStatus
from livereduce.errors import ConfigError, SourceError
from livereduce.protocols.adara import encode
from livereduce.protocols.adara.geometry import minimal_idf
from livereduce.protocols.adara.packets import EPICS_EPOCH_OFFSET_S, RunStatusCode
from livereduce.tools.sms_stream import Run, load_run, make_run

S = 1_000_000_000
T0 = 1_700_000_000 * S


def synthetic(pulses: int = 600, per_pulse: int = 100, pixels: int = 1000, seed: int = 1) -> Run:
    rng = np.random.default_rng(seed)
    n = pulses * per_pulse
    return make_run(
        T0 + np.arange(pulses) * (S // 60),
        rng.integers(0, pixels, n),
        rng.random(n) * 16_666.0,
        np.arange(pulses) * per_pulse,
        charge_pc=np.full(pulses, 5e6),
        pixels=(0, pixels - 1),
    )


@pytest.fixture
def listeners() -> Iterator[Callable[..., SNSLiveEventDataListener]]:
    made: list[SNSLiveEventDataListener] = []

    def make(port: int, start: object = "from_start_of_run", **keys: object) -> SNSLiveEventDataListener:
        config = Config.model_validate({"address": f"127.0.0.1:{port}", **keys})
        listener = SNSLiveEventDataListener(config)
        made.append(listener)
        listener.connect()
        listener.start(start)
        return listener

    yield make
    for listener in made:
        listener.disconnect()


def drain(listener: SNSLiveEventDataListener, until: RunStatus = RunStatus.EndRun) -> list[Extracted]:
    """Extract until a chunk with status ``until`` arrives (what the engine's cycle does)."""
    got: list[Extracted] = []

    def step() -> bool:
        got.append(listener.extract())
        return got[-1].status is until

    poll_until(step, lambda: f"{until.name}; health {listener.health()}", timeout=60, interval=0.01)
    return got


def accumulate(extracted: list[Extracted]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events, TOFs, pulse times and charges, restarting at each data reset (as the engine's Replace)."""
    ids, tofs, times, charges = [], [], [], []
    for item in extracted:
        if item.data_reset:
            ids, tofs, times, charges = [], [], [], []
        events = flat_events(item.chunk)
        ids.append(events.coords["event_id"].values)
        tofs.append(events.coords["event_time_offset"].values)
        times.append(item.chunk.coords["event_time_zero"].values)
        charges.append(item.chunk.coords["proton_charge"].values)
    return tuple(np.concatenate(parts) for parts in (ids, tofs, times, charges))


def quantised(tof_us: np.ndarray) -> np.ndarray:
    """What ADARA carries: TOF in units of 100 ns [NP 5.1], back in µs as float32."""
    return np.float32(np.rint(tof_us.astype(np.float64) * 10.0) / 10.0)


def test_whole_sans2d_run_from_start_with_corrupt_packets(
    sms, listeners, sans2d: Path, sans2d_reference: Sans2dReference
):
    run = load_run(sans2d, pulse_charge_pc=12340)
    server = sms([run], eof_every=50, corrupt=10)
    listener = listeners(server.port)
    extracted = drain(listener)
    assert {x.event_id_range for x in extracted} == {(57, 122888)}
    ids, tofs, times, charges = accumulate(extracted)
    assert ids.size == SANS2D_EVENTS
    np.testing.assert_array_equal(ids, sans2d_reference.event_id)
    np.testing.assert_array_equal(tofs, quantised(sans2d_reference.event_time_offset))
    np.testing.assert_array_equal(times, sans2d_reference.pulse_times)
    assert charges.sum() == 300 * 12340.0
    last = extracted[-1]
    assert (last.run_number, last.dropped, last.data_reset) == (1, {}, False)
    assert last.chunk.coords["instrument_name"].value == "SANS2D"
    counters = listener.health().counters
    assert counters["messages_skipped"] == 10  # each malformed packet dropped whole, the stream kept in step
    assert counters["events"] == SANS2D_EVENTS
    assert counters["reconnects"] == 0


def test_time_start_gets_exactly_the_pulses_from_it(sms, listeners):
    run = synthetic(pulses=300)
    server = sms([run], eof_every=100)
    start = datetime.fromtimestamp(int(run.pulse_ns[150] - 1000) / S, UTC)
    listener = listeners(server.port, start)
    times = accumulate(drain(listener))[2]
    np.testing.assert_array_equal(times.astype(np.int64), run.pulse_ns[150:])
    assert listener.health().counters["skipped_before_start"] == 50  # the SMS rounded back to pulse 100


def test_back_pressure_stops_reading_and_loses_nothing(sms, listeners):
    run = synthetic(pulses=600, per_pulse=1000)  # 4.8 MB of events
    server = sms([run])
    listener = listeners(server.port, source_buffer_mb=1)
    poll_until(lambda: "reading paused: buffer full" in listener.health().state, "back-pressure", timeout=30)
    buffered = listener.health().counters["buffered_bytes"]
    assert 2**20 <= buffered <= 2 * 2**20 + 100_000  # the limit plus at most one read
    ids = accumulate(drain(listener))[0]
    assert ids.size == run.events
    assert listener.health().counters["back_pressure_pauses"] >= 1


def test_reconnect_after_a_drop_restarts_at_the_replayed_new_run(sms, listeners):
    run = synthetic(pulses=300)
    server = sms([run], drop_after=120)
    listener = listeners(server.port)
    extracted = drain(listener)
    assert any(item.data_reset for item in extracted)
    ids, _, times, _ = accumulate(extracted)
    np.testing.assert_array_equal(times.astype(np.int64), run.pulse_ns)
    assert ids.size == run.events
    counters = listener.health().counters
    assert counters["reconnects"] == 1
    assert "receiving from" in listener.health().state


def test_pause_drops_events_unless_keep_paused_events(sms, listeners):
    run = synthetic(pulses=100)
    server = sms([run], pause=(10, 20))
    dropped = drain(listeners(server.port))
    assert accumulate(dropped)[2].size == 90
    assert sum(item.dropped.get("paused", 0) for item in dropped) == 10 * 100
    entries = {
        (int(t), int(v))
        for item in dropped
        if "pause" in item.chunk.coords
        for t, v in zip(
            item.chunk.coords["pause"].value.coords["time"].values.astype(np.int64),
            item.chunk.coords["pause"].value.values,
            strict=True,
        )
    }
    assert [v for _, v in sorted(entries)] == [1, 0]  # Mantid's log 'pause', over the chunks
    kept = drain(listeners(server.port, keep_paused_events=True))
    assert accumulate(kept)[2].size == 100


class Scripted:
    """A server that answers each connection with ``script(connection index, socket)`` in a thread."""

    def __init__(self, script: Callable[[int, socket.socket], None]) -> None:
        self.script = script
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        self.server.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                sock, _ = self.server.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._run, args=(self.connections, sock), daemon=True)
            self.connections += 1
            self.threads.append(thread)
            thread.start()

    def _run(self, index: int, sock: socket.socket) -> None:
        try:
            sock.recv(20)
            self.script(index, sock)
        except OSError:
            pass
        finally:
            sock.close()

    def stop(self) -> None:
        self.stopping.set()
        self.accepting.join()
        for thread in self.threads:
            thread.join(5)
        self.server.close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[int, socket.socket], None]], Scripted]]:
    servers: list[Scripted] = []

    def start(script: Callable[[int, socket.socket], None]) -> Scripted:
        servers.append(Scripted(script))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


PROLOGUE = encode.run_status(0, 0, RunStatusCode.STATE, T0) + encode.geometry(minimal_idf("T", 0, 9), T0)


def test_silence_longer_than_the_heartbeats_allow_reconnects(scripted, listeners):
    def script(index: int, sock: socket.socket) -> None:
        sock.sendall(PROLOGUE)
        for _ in range(10):
            sock.sendall(encode.heartbeat(T0))
            if server.stopping.wait(0.05):
                return
        if index == 0:
            server.stopping.wait(30)  # connection open, nothing sent

    server = scripted(script)
    listener = SNSLiveEventDataListener(Config.model_validate({"address": f"127.0.0.1:{server.port}"}))
    listener.liveness_min_s = 0.5
    listener.connect()
    try:
        listener.start("now")
        poll_until(lambda: server.connections >= 2, "a second connection", timeout=20)
        assert listener.health().counters["reconnects"] >= 1
    finally:
        listener.disconnect()
    assert listener.health().counters["heartbeats"] >= 10  # it did hear the heartbeats before the silence


def test_stream_out_of_step_reconnects(scripted, listeners):
    bad = encode.HEADER.pack(5, 0x777800, 0, 0) + b"12345" + b"\xff" * 64

    def script(index: int, sock: socket.socket) -> None:
        sock.sendall(PROLOGUE + (bad if index == 0 else b""))
        server.stopping.wait(30)

    server = scripted(script)
    listener = listeners(server.port, "now")
    poll_until(lambda: server.connections >= 2, "a reconnect", timeout=20)
    counters = listener.health().counters
    assert counters["skipped_length_not_a_multiple_of_4"] == 1
    assert counters["reconnects"] >= 1


def test_no_geometry_in_time_is_a_source_error(scripted):
    server = scripted(lambda _, sock: [sock.sendall(encode.heartbeat(T0)), server.stopping.wait(30)])
    listener = SNSLiveEventDataListener(Config.model_validate({"address": f"127.0.0.1:{server.port}"}))
    listener.startup_timeout_s = 0.5
    listener.connect()
    with pytest.raises(SourceError, match=rf"no GEOMETRY .* 127\.0\.0\.1:{server.port} within 0\.5 s"):
        listener.start("now")
    assert listener.health().state.startswith("not connected")


def test_connection_refused_is_a_source_error_naming_the_address():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    listener = SNSLiveEventDataListener(Config.model_validate({"address": f"127.0.0.1:{port}"}))
    with pytest.raises(SourceError, match=f"cannot connect to the SMS at 127.0.0.1:{port}") as caught:
        listener.connect()
    assert caught.value.recoverable


def test_address_from_the_instrument_and_checked():
    listener = SNSLiveEventDataListener(Config.model_validate({"instrument": "POWGEN"}))
    assert listener.address == "bl11a-daq1.sns.gov:31415"
    with pytest.raises(ConfigError, match="needs the key 'address'"):
        SNSLiveEventDataListener(Config.model_validate({}))
    for bad in ("host", "host:0", "host:70000", ":31415", "host:x"):
        with pytest.raises(ConfigError, match="expected host:port"):
            parse_address(bad)
    assert parse_address("[::1]:31415") == ("::1", 31415)


def test_chunk_layout(sms, listeners):
    run = synthetic(pulses=10)
    server = sms([run])
    chunk = drain(listeners(server.port))[-1].chunk
    assert chunk.coords["proton_charge"].unit == sc.Unit("pC")
    assert chunk.coords["pulse_flags"].dims == ("event_time_zero",)
    assert chunk.coords["veto_flags"].dtype == sc.DType.int64
    assert chunk.bins.coords["event_time_offset"].unit == sc.Unit("us")
    assert chunk.coords["run_start"].value == np.datetime64((T0 - 1_000_000) // S * S, "ns")
    assert chunk.coords["run_end"].value == np.datetime64(int(run.pulse_ns[-1]) + 1_000_000, "ns")
    assert EPICS_EPOCH_OFFSET_S  # the epochs are converted: pulse times above are Unix


# --- hostile networks (issue 14) ----------------------------------------------------------------------------------
@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port on 127.0.0.1 where a TCP connect hangs: a listening socket with a full accept queue (backlog 0 and
    one connection never accepted), as a firewall that drops packets looks to a client."""
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    probe = socket.socket()
    probe.settimeout(0.2)
    with pytest.raises(TimeoutError):  # the proof that a connect hangs here
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield port
    filler.close()
    server.close()


def _interrupted_within(action: Callable[[], object], listener: SNSLiveEventDataListener, wait: float) -> float:
    """Run ``action`` in a thread, interrupt the listener after ``wait`` seconds; returns how long the action took
    after the interrupt (it must end with a SourceError)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - inspected below
            outcome.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(wait)
    assert thread.is_alive(), "the action ended before the interrupt: it did not block"
    interrupted = time.monotonic()
    listener.interrupt()
    thread.join(5)
    took = time.monotonic() - interrupted
    assert not thread.is_alive()
    assert isinstance(outcome[0], SourceError), outcome
    return took


def test_interrupt_ends_a_connect_that_hangs(blackhole):
    listener = SNSLiveEventDataListener(Config.model_validate({"address": f"127.0.0.1:{blackhole}"}))
    assert _interrupted_within(listener.connect, listener, 1.0) < 1.0
    listener.disconnect()


def test_interrupt_ends_the_wait_for_the_geometry(scripted):
    server = scripted(lambda _, sock: server.stopping.wait(30))  # accepts, never sends a byte
    listener = SNSLiveEventDataListener(Config.model_validate({"address": f"127.0.0.1:{server.port}"}))
    listener.connect()
    assert _interrupted_within(lambda: listener.start("now"), listener, 1.0) < 1.0
    listener.disconnect()


def test_disconnect_ends_a_reconnect_to_a_server_that_stopped_answering(scripted, blackhole):
    server = scripted(lambda _, sock: sock.sendall(PROLOGUE))  # the prologue, then the connection ends
    listener = SNSLiveEventDataListener(Config.model_validate({"address": f"127.0.0.1:{server.port}"}))
    listener.connect()
    listener.start("now")
    listener._host, listener._port = "127.0.0.1", blackhole  # the next connects hang, as on a blackholed link
    seen: list[float] = []

    def hanging() -> bool:  # the state has said "connecting" for half a second: the connect hangs
        if not listener.health().state.startswith("connecting"):
            seen.clear()
            return False
        seen.append(time.monotonic())
        return seen[-1] - seen[0] > 0.5

    poll_until(hanging, "a connect that hangs", timeout=20)
    began = time.monotonic()
    listener.disconnect()
    assert time.monotonic() - began < 1.0


def test_short_runs_buffered_cost_what_they_hold_not_the_buffer_each(sms, listeners):
    """Each buffered run used to reserve source_buffer_mb of address space: 300 short runs at 256 MiB were 80 GB
    of virtual memory, std::bad_alloc under an address-space limit."""
    runs = [synthetic(pulses=2, per_pulse=10, seed=i) for i in range(300)]
    server = sms(runs)
    process = psutil.Process()
    before = process.memory_info().vms
    listener = listeners(server.port, source_buffer_mb=256)
    poll_until(lambda: listener.health().counters["pulses"] >= 600, "300 runs buffered", timeout=60)
    assert process.memory_info().vms - before < 2 * 2**30
    extracted = [listener.extract() for _ in range(300)]
    assert [e.status for e in extracted] == [RunStatus.EndRun] * 300
    assert sum(e.chunk.bins.size().sum().value for e in extracted) == 300 * 20


def test_a_geometry_of_two_billion_pixels_is_capped(scripted):
    """ids 0..2**31-2 with preserve_events false sized a histogram of 8 GiB; the range is capped as for files."""
    huge = encode.geometry(minimal_idf("T", 0, 9).replace('end="9"', f'end="{2**31 - 2}"'), T0)
    events = encode.banked_event(T0 + S, {1: (np.array([10, 20], np.uint32), np.array([5, MAX_PIXELS + 5], np.uint32))})

    def script(_: int, sock: socket.socket) -> None:
        sock.sendall(encode.run_status(0, 0, RunStatusCode.STATE, T0) + huge + events)
        server.stopping.wait(30)

    server = scripted(script)
    listener = SNSLiveEventDataListener(Config.model_validate({"address": f"127.0.0.1:{server.port}"}))
    listener.connect()
    try:
        listener.start("now")
        got = poll_until(lambda: [e for e in [listener.extract()] if e.chunk.sizes["event_time_zero"]], "the pulse")
    finally:
        listener.disconnect()
    assert got[0].event_id_range == (0, MAX_PIXELS - 1)
    assert got[0].dropped == {f"event_id outside 0..{MAX_PIXELS - 1}": 1}
