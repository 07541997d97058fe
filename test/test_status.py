"""The status in process: sd_notify messages (systemd_notify), the typed status and its verdict (status), the text
made from it (status_text), and the status file: where it is, written atomically and never through a planted
directory, read without blocking (status_file)."""

from __future__ import annotations

import json
import logging
import os
import re
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
from livereduce import status_file as sf
from livereduce.config import Config, LoadedConfig
from livereduce.errors import ConfigError, LiveReduceError
from livereduce.status_text import format_status, summary
from livereduce.systemd_notify import Notifier

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


def exercise(notifier: Notifier) -> None:
    notifier.ready()
    notifier.status("running: run 1\n2 chunks")
    notifier.watchdog()
    notifier.stopping()


EXPECTED = [b"READY=1", b"STATUS=running: run 1 2 chunks", b"WATCHDOG=1", b"STOPPING=1"]


# --- Notifier ---------------------------------------------------------------------------------------------------


def test_notifier_sends_datagrams_to_a_path(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    notifier = Notifier(path)
    assert notifier.enabled
    exercise(notifier)
    assert receive_all(sock) == EXPECTED
    notifier.close()


def test_notifier_sends_to_an_abstract_socket(abstract_server: tuple[socket.socket, str]) -> None:
    sock, name = abstract_server
    notifier = Notifier(name)
    exercise(notifier)
    assert receive_all(sock) == EXPECTED
    notifier.close()


def test_notifier_reads_notify_socket(
    abstract_server: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, name = abstract_server
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready()
    assert receive_all(sock) == [b"READY=1"]
    notifier.close()


def test_status_is_utf8(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    notifier = Notifier(path)
    notifier.status("Ångström µs ✓")
    assert receive_all(sock) == ["STATUS=Ångström µs ✓".encode()]
    notifier.close()


def test_reloading_carries_the_monotonic_time(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    notifier = Notifier(path)
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
    notifier = Notifier()
    assert not notifier.enabled
    exercise(notifier)
    notifier.reloading()
    assert not Notifier("").enabled
    assert caplog.records == []


def test_missing_socket_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "absent.sock"))
    assert notifier.enabled
    with caplog.at_level(logging.WARNING, logger="livereduce.status"):
        exercise(notifier)
    warnings = [r for r in caplog.records if r.name == "livereduce.status"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "absent.sock" in warnings[0].getMessage()


def test_notifier_recovers_after_a_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "late.sock")
    notifier = Notifier(path)
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


# --- StatusFile -------------------------------------------------------------------------------------------------


def written(path: Path, private: bool = False) -> sf.StatusFile:
    return sf.StatusFile(sf.StatusLocation(path, private))


def test_status_file_write_creates_directory(tmp_path: Path) -> None:
    path = tmp_path / "run" / "livereduce" / "status.json"
    status_file = written(path)
    status_file.write(st.Status(pid=1, state="running"))
    assert json.loads(path.read_text())["state"] == "running"
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.parent.stat().st_mode & 0o777 == 0o700
    status_file.write(st.Status(pid=1, state="stopping"))
    assert json.loads(path.read_text())["state"] == "stopping"
    assert sorted(p.name for p in path.parent.iterdir()) == ["status.json"]  # no temporary files left


def test_status_file_is_always_complete(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status_file = written(path)
    padding = "x" * 200_000
    status_file.write(st.Status(pid=1, version=padding))
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(json.loads(path.read_text())["pid"])
            except (ValueError, OSError) as err:
                failures.append(repr(err))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(2, 302):
            status_file.write(st.Status(pid=n, version=padding))
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert len(seen) > 10
    assert seen == sorted(seen)
    assert json.loads(path.read_text())["pid"] == 301


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write everywhere")
def test_unwritable_directory_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        status_file = written(directory / "status.json")
        with caplog.at_level(logging.WARNING, logger="livereduce.status"):
            status_file.write(st.Status(pid=1))
            status_file.write(st.Status(pid=2))
    finally:
        directory.chmod(0o700)
    assert len(caplog.records) == 1
    assert "status.json" in caplog.records[0].getMessage()
    assert list(directory.iterdir()) == []


def test_unwritable_location_warns_once_until_it_works_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Also as root: a directory cannot be created below a regular file."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    status_file = written(blocker / "sub" / "status.json")
    with caplog.at_level(logging.WARNING, logger="livereduce.status"):
        status_file.write(st.Status(pid=1))
        status_file.write(st.Status(pid=2))
        assert len(caplog.records) == 1
        blocker.unlink()
        status_file.write(st.Status(pid=3))  # works again
        blocker.parent.joinpath("file", "sub", "status.json").unlink()
        blocker.parent.joinpath("file", "sub").rmdir()
        blocker.parent.joinpath("file").rmdir()
        blocker.write_text("")
        status_file.write(st.Status(pid=4))  # fails again: warned again
    assert len(caplog.records) == 2
    assert all(record.levelno == logging.WARNING for record in caplog.records)
    assert "status.json" in caplog.records[0].getMessage()


# --- where: one file per configuration, safe per-user directory ------------------------------------------------


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No /run/livereduce, no $XDG_RUNTIME_DIR, no $LIVEREDUCE_STATUS_FILE; the temporary directory is tmp_path/tmp
    (the per-user place is tmp_path/tmp/livereduce-<uid>). Returns tmp_path/tmp."""
    monkeypatch.setattr(sf, "RUN_DIRECTORY", tmp_path / "run")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("LIVEREDUCE_STATUS_FILE", raising=False)
    temporary = tmp_path / "tmp"
    temporary.mkdir(mode=0o1777)
    monkeypatch.setattr(sf.tempfile, "gettempdir", lambda: str(temporary))
    return temporary


def loaded_from(path: Path | None, **keys: object) -> LoadedConfig:
    return LoadedConfig(Config(**{"instrument": "SANS2D", **keys}), path, "")


def test_each_configuration_has_its_own_status_file(tmp_path: Path, places: Path) -> None:
    """Defect 10: before, every daemon of a user with default settings wrote the same file."""
    user = places / f"livereduce-{os.geteuid()}"
    first, second = loaded_from(tmp_path / "a.conf"), loaded_from(tmp_path / "b.conf")
    assert sf.status_location(first).path != sf.status_location(second).path
    assert re.fullmatch(r"status-SANS2D-[0-9a-f]{8}\.json", sf.status_file_name(first))
    assert sf.status_location(first) == sf.StatusLocation(user / sf.status_file_name(first), private=True)
    assert sf.status_file_name(loaded_from(None)) == "status.json"  # the built-in defaults
    assert sf.status_file_name(loaded_from(sf.DEFAULT_CONFIG_PATH)) == "status.json"  # what the unit runs
    (tmp_path / "link.conf").symlink_to(tmp_path / "a.conf")
    assert sf.status_file_name(loaded_from(tmp_path / "link.conf")) == sf.status_file_name(first)  # the real path
    assert sf.status_file_name(loaded_from(tmp_path / "c.conf", instrument=None)).startswith("status-default-")


def test_the_status_location_order(tmp_path: Path, places: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = loaded_from(None)
    monkeypatch.chdir(tmp_path)
    assert sf.status_location(loaded).path == places / f"livereduce-{os.geteuid()}" / "status.json"  # not cwd-relative
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert sf.status_location(loaded) == sf.StatusLocation(tmp_path / "livereduce" / "status.json", private=True)
    (tmp_path / "run").mkdir()
    assert sf.status_location(loaded) == sf.StatusLocation(tmp_path / "run" / "status.json")
    monkeypatch.setenv("LIVEREDUCE_STATUS_FILE", str(tmp_path / "pg3" / "status.json"))
    assert sf.status_location(loaded).path == tmp_path / "pg3" / "status.json"
    assert sf.find_status_location(loaded).path == tmp_path / "pg3" / "status.json"
    assert sf.status_location(loaded_from(None, status_file="s.json")).path == Path("s.json").absolute()


def test_find_status_location_prefers_an_existing_file(tmp_path: Path, places: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    loaded = loaded_from(tmp_path / "a.conf")
    name = sf.status_file_name(loaded)
    assert sf.find_status_location(loaded).path == run / name  # nothing exists: the writer's default
    user = places / f"livereduce-{os.geteuid()}"
    user.mkdir(mode=0o700)
    (user / name).write_text("{}")
    assert sf.find_status_location(loaded).path == user / name
    (run / name).write_text("{}")
    assert sf.find_status_location(loaded).path == run / name


def test_the_per_user_directory_is_created_private(places: Path) -> None:
    location = sf.status_location(loaded_from(None))
    sf.StatusFile(location).prepare()
    assert location.path.parent.stat().st_mode & 0o777 == 0o700
    sf.StatusFile(location).prepare()  # exists and is ours: fine


def plant(directory: Path, how: str, target: Path) -> None:
    """A per-user status directory planted by another user: a symbolic link, another owner, or mode 0777."""
    if how == "symlink":
        directory.symlink_to(target)
    elif how == "owner":
        directory.mkdir(mode=0o700)
        os.chown(directory, 65534, 65534)
    else:
        directory.mkdir()
        directory.chmod(0o777)


PLANTED = {
    "symlink": "it is a symbolic link",
    "owner": f"it belongs to uid 65534, not to this user (uid {os.geteuid()})",
    "mode": "it is writable by group or others (mode 0777)",
}


@pytest.mark.parametrize("how", PLANTED)
def test_a_planted_per_user_directory_is_refused(tmp_path: Path, places: Path, how: str) -> None:
    """Defect 1: before, the daemon (root) wrote status.json through the planted directory."""
    target = tmp_path / "victim"
    target.mkdir()
    location = sf.status_location(loaded_from(None))
    plant(location.path.parent, how, target)
    with pytest.raises(ConfigError) as refused:
        sf.StatusFile(location).prepare()
    message = str(refused.value)
    assert message == (
        f"status directory '{location.path.parent}' refused: {PLANTED[how]}; remove it (another user may have "
        f'planted it), or set "status_file" or $LIVEREDUCE_STATUS_FILE'
    )
    assert refused.value.exit_code == 2
    with pytest.raises(ConfigError, match="refused"):
        sf.find_status_location(loaded_from(None))  # --status does not read from it either
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("how", PLANTED)
def test_the_writer_never_writes_into_a_directory_planted_after_the_start(
    tmp_path: Path, places: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "victim"
    target.mkdir()
    location = sf.status_location(loaded_from(None))
    status_file = sf.StatusFile(location)
    status_file.prepare()
    location.path.parent.rmdir()
    plant(location.path.parent, how, target)
    with caplog.at_level(logging.WARNING, logger="livereduce.status"):
        status_file.write(st.Status(pid=1))
    assert list(target.iterdir()) == []
    assert len(caplog.records) == 1
    assert "refused" in caplog.records[0].getMessage()
    if how != "symlink":
        assert list(location.path.parent.iterdir()) == []


def test_a_status_file_replaced_by_a_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "status.json"
    path.symlink_to(victim)
    written(path).write(st.Status(pid=1))
    assert victim.read_text() == "precious"
    assert not path.is_symlink()
    assert json.loads(path.read_text())["pid"] == 1


# --- summary / health / format_status -----------------------------------------------------------------------------


def status_json(**changes: object) -> dict[str, object]:
    """The JSON of a healthy running daemon (this process's pid) at time NOW; ``engine_<key>`` changes an engine
    key."""
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
        "reloads": {"post_proc": 2},
        "rss_bytes": 812 * 1024 * 1024,
        "memory_limit_bytes": 4096 * 1024 * 1024,
    }
    for key, value in changes.items():
        if key.startswith("engine_"):
            engine[key.removeprefix("engine_")] = value
        else:
            status[key] = value
    return status


def make_status(**changes: object) -> st.Status:
    """:func:`status_json` as read back."""
    return st.Status.from_json(status_json(**changes))


@pytest.fixture(scope="module")
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_summary() -> None:
    assert summary(make_status(), now=NOW) == (
        "running: run 47210, 123 chunks, 4.5M events, last cycle 3.0 s ago, RSS 812 MB"
    )
    assert summary(make_status(engine_errors=2, engine_chunks=1, engine_events=999), now=NOW) == (
        "running: run 47210, 1 chunk, 999 events, last cycle 3.0 s ago, 2 errors, RSS 812 MB"
    )
    assert summary(make_status(state="starting", engine_run_number=0, engine_last_cycle_end=None), now=NOW) == (
        "starting: 123 chunks, 4.5M events, no cycle yet, RSS 812 MB"
    )
    assert summary(st.Status(state="waiting for scripts")) == "waiting for scripts"
    assert "\n" not in summary(make_status())


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
    text = format_status(make_status(), now=NOW)
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
    text = format_status(make_status(state="waiting for scripts", engine_last_error="boom"), now=NOW)
    assert text.splitlines()[0].startswith("health:")
    assert "UNHEALTHY: the daemon is waiting for its processing scripts" in text.splitlines()[0]
    assert "last error" in text
    sparse = format_status(st.Status.from_json({"pid": dead_pid, "state": "stopped"}), now=NOW)
    assert sparse.splitlines()[0].endswith(
        f"UNHEALTHY: process {dead_pid} is not running: it died without updating the status (updated never)"
    )
    assert "engine" in sparse


# --- the typed status ---------------------------------------------------------------------------------------------


def test_the_typed_status_round_trips_and_keeps_the_keys_of_the_file() -> None:
    full = status_json(
        pid_created=12.5,
        state_since=NOW - 2,
        log_records_lost=3,
        http_url="http://127.0.0.1:9101/",
        metrics_url="http://127.0.0.1:9101/metrics",
        exit={"code": 0, "reason": "SIGTERM", "time": NOW},
        engine_dropped_events={"event_id negative": 2},
        engine_source_counters={"pulses": 7},
        engine_accumulation="DataArray(event_id: 4096, dense float32)",
        engine_source_healthy=False,
    )
    status = st.Status.from_json(full)
    assert status.engine.dropped_events == {"event_id negative": 2}
    assert status.exit == st.ExitRecord(0, "SIGTERM", NOW)
    assert st.Status.from_json(json.loads(json.dumps(status.to_json()))) == status
    assert set(status.to_json()) == set(full) | {"state_since"}
    assert set(st.Status(pid=1).to_json()) == set(full) - {"http_url", "metrics_url", "exit"}  # only when set


@pytest.mark.parametrize(
    "data",
    [
        None,
        "text",
        [1, 2],
        {},
        {"pid": True, "engine": [], "restarts": {"scripts": "x"}, "exit": {}, "scripts": {"proc": 3}},
        {"pid": -4, "state": 7, "config": "x", "update_every": "30", "rss_bytes": "big", "engine": {"chunks": None}},
    ],
)
def test_any_json_value_reads_as_a_status_without_raising(data: object) -> None:
    status = st.Status.from_json(data)
    assert status.pid is None
    assert status.exit is None
    assert st.health(status, now=NOW) == (False, "the status has no valid pid")
    format_status(status, now=NOW)  # never raises
    summary(status, now=NOW)


def test_a_status_of_an_older_version_is_read() -> None:
    """The file of the version before the typed status (no state_since), and a very old one (no engine section)."""
    older = status_json()
    assert "state_since" not in older
    assert st.health(st.Status.from_json(older), now=NOW) == (True, "running, last cycle 3.0 s ago")
    del older["engine"], older["restarts"], older["scripts"]
    text = format_status(st.Status.from_json(older), now=NOW)
    assert "engine:           none" in text
    assert "proc script:      none" in text


def test_connecting_is_healthy_until_it_stalls() -> None:
    connecting = make_status(state="connecting", state_since=NOW - 5, engine_state="connecting")
    assert st.health(connecting, now=NOW) == (True, "the daemon is connecting to its data source")
    assert st.status_code(connecting, now=NOW) == st.STATUS_RUNNING
    stalled = make_status(state="connecting", state_since=NOW - 95)
    assert st.health(stalled, now=NOW) == (False, "stalled: connecting to the data source for 95 s (limit 90 s)")
    assert st.status_code(stalled, now=NOW) == st.STATUS_UNHEALTHY


def test_the_page_and_metrics_urls_are_shown_when_the_status_has_them() -> None:
    """Defect 11: before, --status never showed where the metrics are. The web server (issue 18) serves both."""
    assert not {"page", "metrics"} & set(rows(format_status(make_status(), now=NOW)))
    served = make_status(http_url="http://127.0.0.1:9101/", metrics_url="http://127.0.0.1:9101/metrics")
    shown = rows(format_status(served, now=NOW))
    assert (shown["page"], shown["metrics"]) == ("http://127.0.0.1:9101/", "http://127.0.0.1:9101/metrics")
    assert list(shown)[-2:] == ["page", "metrics"]


def rows(text: str) -> dict[str, str]:
    return {key.strip(): value.strip() for key, value in (line.split(": ", 1) for line in text.splitlines())}


@pytest.mark.parametrize("ended_first", [True, False])
def test_engine_totals_show_the_newest_error_of_any_source(ended_first: bool) -> None:
    """Defect 11: the supervisor's error and the engines' errors, newest first, whichever side it is on."""
    totals = st.EngineTotals()
    totals.error("start failed", NOW - 10)
    ended = st.Health(state=st.EngineState.STOPPED, chunks=2, errors=1, last_error="cycle 1 failed")
    ended.last_error_time = NOW - 5 if ended_first else NOW - 20
    totals.ended(ended)
    running = st.Health(state=st.EngineState.RUNNING, chunks=1)
    shown = totals.status("scipp", running)
    assert shown.last_error == ("cycle 1 failed" if ended_first else "start failed")
    assert (shown.chunks, shown.errors, shown.state) == (3, 1, "running")
    running.last_error, running.last_error_time = "cycle 2 failed", NOW - 1
    assert totals.status("scipp", running).last_error == "cycle 2 failed"
    totals.error("newest", NOW)
    assert totals.status("scipp", running).last_error == "newest"
    assert totals.status("scipp", None).state == "stopped"  # the last engine's values while none runs


# --- read_status --------------------------------------------------------------------------------------------------


def test_read_status_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    written(path).write(make_status())
    assert sf.read_status(path) == make_status()


def test_read_status_missing(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    with pytest.raises(LiveReduceError, match="is the daemon running") as info:
        sf.read_status(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 1


@pytest.mark.parametrize("content", ["{", "", "not json", "[1, 2]", "\udcff"])
def test_read_status_invalid(tmp_path: Path, content: str) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(b"\xff" if content == "\udcff" else content.encode())
    with pytest.raises(LiveReduceError, match="not valid") as info:
        sf.read_status(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: path.mkdir(), "not a regular file (a directory)"),
        (os.mkfifo, "not a regular file (a FIFO)"),
        (lambda path: path.symlink_to("/dev/zero"), "not a regular file (a character device)"),
        (lambda path: path.write_bytes(b" " * (sf.MAX_STATUS_BYTES + 1)), "larger than 1048576 bytes"),
    ],
    ids=["directory", "fifo", "dev-zero", "too-large"],
)
def test_read_status_reads_regular_files_only_never_blocks(tmp_path: Path, make, reason: str) -> None:
    """Defect 1: before, --status hung on a FIFO and read a link to /dev/zero without limit."""
    path = tmp_path / "status.json"
    make(path)
    with pytest.raises(LiveReduceError) as info:
        sf.read_status(path)
    assert str(info.value).startswith(f"cannot read status file '{path}': {reason}")
    assert "\n" not in str(info.value)


def test_a_status_of_another_configuration_is_refused(tmp_path: Path) -> None:
    """Defect 10: --status CONFIG checks that the file it reads is the status of the daemon of CONFIG."""
    path = tmp_path / "status.json"
    (tmp_path / "a.conf").write_text("{}")
    (tmp_path / "link.conf").symlink_to(tmp_path / "a.conf")
    status = make_status(config={"path": str(tmp_path / "a.conf"), "sha256": "ab"})
    assert sf.config_mismatch(status, path, loaded_from(tmp_path / "a.conf")) is None
    assert sf.config_mismatch(status, path, loaded_from(tmp_path / "link.conf")) is None
    assert sf.config_mismatch(status, path, loaded_from(tmp_path / "b.conf")) == (
        f"status file '{path}' belongs to the daemon of configuration '{tmp_path / 'a.conf'}', not of "
        f"'{tmp_path / 'b.conf'}': another daemon writes there (set a \"status_file\" in each configuration)"
    )
    defaults = make_status(config={"path": None, "sha256": ""})
    assert "the built-in defaults, not of" in sf.config_mismatch(defaults, path, loaded_from(tmp_path / "a.conf"))
    assert sf.config_mismatch(defaults, path, loaded_from(None)) is None
    assert sf.config_mismatch(st.Status(pid=1), path, loaded_from(tmp_path / "b.conf")) is None  # nothing recorded
