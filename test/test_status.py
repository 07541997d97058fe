"""livereduce.status: sd_notify messages, the atomic status file, and the text made from a status."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from livereduce import status as st
from livereduce.errors import LiveReduceError

NOW = 1_700_000_000.0


def receive_all(server: socket.socket) -> list[bytes]:
    """All datagrams waiting on ``server``."""
    server.settimeout(0.5)
    messages = []
    while True:
        try:
            messages.append(server.recv(4096))
        except TimeoutError:
            return messages
        server.settimeout(0.05)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a path in tmp_path, and that path."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_server() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to an abstract name, and its '@name' spelling."""
    name = f"livereduce-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield sock, "@" + name
    sock.close()


def exercise(notifier: st.Notifier) -> None:
    notifier.ready()
    notifier.status("running: run 1\n2 chunks")
    notifier.watchdog()
    notifier.stopping()


EXPECTED = [b"READY=1", b"STATUS=running: run 1 2 chunks", b"WATCHDOG=1", b"STOPPING=1"]


# --- Notifier ---------------------------------------------------------------------------------------------------


def test_notifier_sends_datagrams_to_a_path(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    notifier = st.Notifier(path)
    assert notifier.enabled
    exercise(notifier)
    assert receive_all(sock) == EXPECTED
    notifier.close()


def test_notifier_sends_to_an_abstract_socket(abstract_server: tuple[socket.socket, str]) -> None:
    sock, name = abstract_server
    notifier = st.Notifier(name)
    exercise(notifier)
    assert receive_all(sock) == EXPECTED
    notifier.close()


def test_notifier_reads_notify_socket(
    abstract_server: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, name = abstract_server
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    notifier = st.Notifier()
    assert notifier.enabled
    notifier.ready()
    assert receive_all(sock) == [b"READY=1"]
    notifier.close()


def test_status_is_utf8(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    notifier = st.Notifier(path)
    notifier.status("Ångström µs ✓")
    assert receive_all(sock) == ["STATUS=Ångström µs ✓".encode()]
    notifier.close()


def test_reloading_carries_the_monotonic_time(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    notifier = st.Notifier(path)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    notifier.ready()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reload_message, ready = receive_all(sock)
    first, second = reload_message.decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert ready == b"READY=1"
    notifier.close()


def test_notifier_without_socket_does_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = st.Notifier()
    assert not notifier.enabled
    exercise(notifier)
    notifier.reloading()
    assert not st.Notifier("").enabled
    assert caplog.records == []


def test_missing_socket_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = st.Notifier(str(tmp_path / "absent.sock"))
    assert notifier.enabled
    with caplog.at_level(logging.WARNING, logger="livereduce.status"):
        exercise(notifier)
    warnings = [r for r in caplog.records if r.name == "livereduce.status"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "absent.sock" in warnings[0].getMessage()


def test_notifier_recovers_after_a_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "late.sock")
    notifier = st.Notifier(path)
    with caplog.at_level(logging.WARNING, logger="livereduce.status"):
        notifier.ready()  # nobody listens yet
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        try:
            notifier.watchdog()
            assert receive_all(sock) == [b"WATCHDOG=1"]
        finally:
            sock.close()
    assert len(caplog.records) == 1
    notifier.close()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert st.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert st.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert st.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert st.watchdog_interval() is None


# --- StatusFile -------------------------------------------------------------------------------------------------


def test_status_file_write_creates_directory_and_remove(tmp_path: Path) -> None:
    path = tmp_path / "run" / "livereduce" / "status.json"
    status_file = st.StatusFile(path)
    status_file.write({"pid": 1, "state": "running", "path": Path("/x")})
    assert json.loads(path.read_text()) == {"pid": 1, "state": "running", "path": "/x"}
    assert path.stat().st_mode & 0o777 == 0o644
    status_file.write({"pid": 1, "state": "stopping"})
    assert json.loads(path.read_text())["state"] == "stopping"
    assert sorted(p.name for p in path.parent.iterdir()) == ["status.json"]  # no temporary files left
    status_file.remove()
    assert not path.exists()
    status_file.remove()  # already gone: fine


def test_status_file_is_always_complete(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status_file = st.StatusFile(path)
    big = {"pid": 1, "padding": "x" * 200_000}
    status_file.write({**big, "n": -1})
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(json.loads(path.read_text())["n"])
            except (ValueError, OSError) as err:
                failures.append(repr(err))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(300):
            status_file.write({**big, "n": n})
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert len(seen) > 10
    assert seen == sorted(seen)
    assert json.loads(path.read_text())["n"] == 299


def test_status_file_disabled(tmp_path: Path) -> None:
    status_file = st.StatusFile(None)
    status_file.write({"pid": 1})
    status_file.remove()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write everywhere")
def test_unwritable_directory_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        status_file = st.StatusFile(directory / "status.json")
        with caplog.at_level(logging.WARNING, logger="livereduce.status"):
            status_file.write({"pid": 1})
            status_file.write({"pid": 2})
    finally:
        directory.chmod(0o700)
    assert len(caplog.records) == 1
    assert "status.json" in caplog.records[0].getMessage()
    assert list(directory.iterdir()) == []


def test_unwritable_location_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Also as root: a directory cannot be created below a regular file."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    status_file = st.StatusFile(blocker / "sub" / "status.json")
    with caplog.at_level(logging.WARNING, logger="livereduce.status"):
        status_file.write({"pid": 1})
        status_file.write({"pid": 2})
        status_file.remove()
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.WARNING
    assert "status.json" in caplog.records[0].getMessage()


def test_default_status_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "DEFAULT_STATUS_FILE", tmp_path / "run" / "status.json")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert st.default_status_file() == tmp_path / "livereduce" / "status.json"
    (tmp_path / "run").mkdir()
    assert st.default_status_file() == tmp_path / "run" / "status.json"
    (tmp_path / "run").rmdir()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(st.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert st.default_status_file() == tmp_path / f"livereduce-{os.geteuid()}" / "status.json"  # not cwd-relative


def test_find_status_file_prefers_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(st, "DEFAULT_STATUS_FILE", run / "status.json")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert st.find_status_file() == run / "status.json"  # nothing exists: the writer's default
    (tmp_path / "livereduce").mkdir()
    (tmp_path / "livereduce" / "status.json").write_text("{}")
    assert st.find_status_file() == tmp_path / "livereduce" / "status.json"
    (run / "status.json").write_text("{}")
    assert st.find_status_file() == run / "status.json"


def test_the_per_user_directory_is_private(tmp_path: Path) -> None:
    path = tmp_path / "livereduce-0" / "status.json"
    st.StatusFile(path).write({"pid": 1})
    assert (path.parent.stat().st_mode & 0o777) == 0o700


# --- summary / health / format_status -----------------------------------------------------------------------------


def make_status(**changes: object) -> dict[str, object]:
    """A healthy running daemon (this process's pid) at time NOW; ``engine_<key>`` changes an engine key."""
    engine: dict[str, object] = {
        "name": "scipp",
        "state": "running",
        "source": "file SANS2D.nxs, pulse 120/1000",
        "run_number": 47210,
        "chunks": 123,
        "events": 4_500_000,
        "accumulated_events": 1_200_000,
        "last_cycle_end": NOW - 3,
        "last_cycle_duration": 1.25,
        "last_error": "",
        "last_error_time": None,
        "errors": 0,
    }
    status: dict[str, object] = {
        "pid": os.getpid(),
        "version": "2.0.0",
        "state": "running",
        "updated": NOW - 1,
        "started": NOW - 3600,
        "update_every": 30.0,
        "config": {"path": "/etc/livereduce.conf", "sha256": "ab" * 32},
        "scripts": {
            "proc": {"path": "/SNS/SANS2D/shared/livereduce/reduce_SANS2D_live_proc.py", "sha256": "cd" * 32},
            "post_proc": None,
        },
        "engine": engine,
        "restarts": {"scripts": 1, "memory": 0, "failures": 0, "signals": 0},
        "rss_bytes": 812 * 1024 * 1024,
        "memory_limit_bytes": 4096 * 1024 * 1024,
    }
    for key, value in changes.items():
        if key.startswith("engine_"):
            engine[key.removeprefix("engine_")] = value
        else:
            status[key] = value
    return status


@pytest.fixture(scope="module")
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_summary() -> None:
    assert st.summary(make_status(), now=NOW) == (
        "running: run 47210, 123 chunks, 4.5M events, last cycle 3.0 s ago, RSS 812 MB"
    )
    assert st.summary(make_status(engine_errors=2, engine_chunks=1, engine_events=999), now=NOW) == (
        "running: run 47210, 1 chunk, 999 events, last cycle 3.0 s ago, 2 errors, RSS 812 MB"
    )
    assert st.summary(make_status(state="starting", engine_run_number=0, engine_last_cycle_end=None), now=NOW) == (
        "starting: 123 chunks, 4.5M events, no cycle yet, RSS 812 MB"
    )
    assert st.summary({"state": "waiting for scripts"}) == "waiting for scripts"
    assert "\n" not in st.summary(make_status())


def test_healthy_running() -> None:
    assert st.health(make_status(), now=NOW) == (True, "running, last cycle 3.0 s ago")
    assert st.health(make_status(state="starting", engine_last_cycle_end=None), now=NOW) == (
        True,
        "the daemon is starting",
    )
    assert st.health(make_status(state="reloading"), now=NOW)[0]
    # an error that a later successful cycle superseded
    old_error = make_status(engine_last_error="boom", engine_last_error_time=NOW - 100, engine_errors=1)
    assert st.health(old_error, now=NOW)[0]


def test_dead_pid_is_unhealthy(dead_pid: int) -> None:
    healthy, reason = st.health(make_status(pid=dead_pid), now=NOW)
    assert not healthy
    assert f"process {dead_pid} is not running" in reason
    stopped = make_status(pid=dead_pid, state="stopped", exit={"code": 0, "reason": "SIGTERM", "time": NOW - 60})
    healthy, reason = st.health(stopped, now=NOW)
    assert not healthy
    assert reason == "the daemon stopped with exit 0 (SIGTERM) 60 s ago"
    assert st.status_code(stopped, now=NOW) == st.STATUS_NOT_RUNNING
    failed = make_status(pid=dead_pid, state="stopped", exit={"code": 3, "reason": "'x.nxs' cannot be read"})
    assert st.status_code(failed, now=NOW) == st.STATUS_DEAD
    assert st.status_code(make_status(pid=dead_pid), now=NOW) == st.STATUS_DEAD
    assert not st.health(make_status(pid=None), now=NOW)[0]


def test_a_reused_pid_is_not_the_daemon() -> None:
    created = st.process_created()
    assert st.health(make_status(pid_created=created), now=NOW)[0]
    healthy, reason = st.health(make_status(pid_created=created - 100), now=NOW)
    assert not healthy
    assert "is not running" in reason


def test_stalled_cycle_is_unhealthy() -> None:
    # limit max(3 * 30, 60) = 90 s
    assert st.health(make_status(engine_last_cycle_end=NOW - 89), now=NOW)[0]
    healthy, reason = st.health(make_status(engine_last_cycle_end=NOW - 91), now=NOW)
    assert not healthy
    assert reason == "stalled: the last cycle ended 91 s ago (limit 90 s)"
    # short update_every: the 60 s floor
    assert st.health(make_status(update_every=1.0, engine_last_cycle_end=NOW - 59), now=NOW)[0]
    assert not st.health(make_status(update_every=1.0, engine_last_cycle_end=NOW - 61), now=NOW)[0]
    # no cycle at all since the daemon started long ago
    healthy, reason = st.health(make_status(engine_last_cycle_end=None), now=NOW)
    assert not healthy
    assert "no cycle completed since the start" in reason
    # not running: no stall check
    assert st.health(make_status(state="reloading", engine_last_cycle_end=NOW - 1000), now=NOW)[0]


def test_failed_engine_is_unhealthy() -> None:
    healthy, reason = st.health(
        make_status(engine_state="failed", engine_last_error="cannot open 'x.nxs'", engine_last_error_time=NOW - 5),
        now=NOW,
    )
    assert not healthy
    assert reason == "the engine failed: cannot open 'x.nxs'"


def test_recent_error_is_unhealthy() -> None:
    healthy, reason = st.health(
        make_status(engine_last_error="proc raised ValueError: bad\nsecond line", engine_last_error_time=NOW - 1),
        now=NOW,
    )
    assert not healthy
    assert reason == "the last cycle failed 1.0 s ago: proc raised ValueError: bad second line"


def test_waiting_for_scripts_is_unhealthy() -> None:
    healthy, reason = st.health(make_status(state="waiting for scripts"), now=NOW)
    assert not healthy
    assert reason == "the daemon is waiting for its processing scripts: no data is being reduced"
    assert st.health(make_status(state="stopping"), now=NOW) == (False, "the daemon is stopping")
    backing_off = make_status(state="backing off", engine_last_error="x")
    assert st.health(backing_off, now=NOW) == (False, "live data failed and is restarted after a delay: x")
    assert st.status_code(backing_off, now=NOW) == st.STATUS_UNHEALTHY
    assert st.health(make_status(state="odd"), now=NOW) == (False, "the daemon is in state 'odd'")


def test_format_status() -> None:
    text = st.format_status(make_status(), now=NOW)
    lines = text.splitlines()
    assert lines[0].split(None, 1) == ["health:", "OK: running, last cycle 3.0 s ago"]
    values = {}
    for line in lines:
        key, value = line.split(": ", 1)
        values[key.strip()] = value.strip()
    assert len({line.index(value) for line, value in zip(lines, values.values(), strict=True)}) == 1  # aligned
    assert values["state"] == "running"
    assert values["pid"] == str(os.getpid())
    assert values["started"].endswith("(3600 s ago)")
    assert values["config"] == f"/etc/livereduce.conf (sha256 {'ab' * 6})"
    assert values["post_proc script"] == "none"
    assert values["engine"] == "scipp (running)"
    assert values["run"] == "47210"
    assert values["events"] == "4500000 received"
    assert values["accumulation"] == "1200000 events"
    assert values["last cycle"] == "3.0 s ago, took 1.2 s"
    assert values["restarts"] == "scripts 1, memory 0, failures 0, signals 0"
    assert values["memory"] == "RSS 812 MB of limit 4096 MB"
    assert "last error" not in values


def test_format_status_unhealthy_and_sparse(dead_pid: int) -> None:
    text = st.format_status(make_status(state="waiting for scripts", engine_last_error="boom"), now=NOW)
    assert text.splitlines()[0].startswith("health:")
    assert "UNHEALTHY: the daemon is waiting for its processing scripts" in text.splitlines()[0]
    assert "last error" in text
    sparse = st.format_status({"pid": dead_pid, "state": "stopped"}, now=NOW)
    assert sparse.splitlines()[0].endswith(
        f"UNHEALTHY: process {dead_pid} is not running: it died without updating the status (updated never)"
    )
    assert "engine" in sparse


# --- read_status --------------------------------------------------------------------------------------------------


def test_read_status_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    st.StatusFile(path).write(make_status())
    assert st.read_status(path) == json.loads(json.dumps(make_status()))


def test_read_status_missing(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    with pytest.raises(LiveReduceError, match="is the daemon running") as info:
        st.read_status(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 1


@pytest.mark.parametrize("content", ["{", "", "not json", "[1, 2]", "\udcff"])
def test_read_status_invalid(tmp_path: Path, content: str) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(b"\xff" if content == "\udcff" else content.encode())
    with pytest.raises(LiveReduceError, match="not valid") as info:
        st.read_status(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_read_status_directory(tmp_path: Path) -> None:
    with pytest.raises(LiveReduceError, match="cannot read status file"):
        st.read_status(tmp_path)


def test_status_file_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEREDUCE_STATUS_FILE", str(tmp_path / "pg3" / "status.json"))
    assert st.default_status_file() == tmp_path / "pg3" / "status.json"
    assert st.find_status_file() == tmp_path / "pg3" / "status.json"
