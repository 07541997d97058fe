"""The daemon under a real systemd (a user manager): Type=notify readiness, Restart= after kill -9, WatchdogSec
after a freeze, a bounded stop. The unit is generated from systemd/livereduce.service: the system-only lines
(User=, sandboxing) are dropped, ExecStart runs this checkout on the demo source, and the timings are shortened.
Skips with a reason where no user manager can start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ENTRY_POINT, ROOT, poll_until

SYSTEMD_BINARY = Path("/lib/systemd/systemd")
OVERRIDES = {"RestartSec": "1", "WatchdogSec": "3", "TimeoutStopSec": "5", "TimeoutStartSec": "60"}


class UserManager:
    """A ``systemd --user`` instance with its own HOME and XDG_RUNTIME_DIR."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ, HOME=str(root / "home"), XDG_RUNTIME_DIR=str(root / "xdg"))
        (root / "home" / ".config" / "systemd" / "user").mkdir(parents=True)
        (root / "xdg").mkdir(mode=0o700)
        self.process = subprocess.Popen(
            [str(SYSTEMD_BINARY), "--user"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def systemctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["systemctl", "--user", *args], env=self.env, capture_output=True, text=True, timeout=90, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout.strip()

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit)

    def state(self, unit: str) -> str:
        """MainPID, ActiveState, SubState and NRestarts of ``unit``, for a failure message."""
        return ", ".join(
            f"{prop}={self.show(unit, prop)}" for prop in ("MainPID", "ActiveState", "SubState", "NRestarts")
        )

    def close(self) -> None:
        self.systemctl("exit", check=False)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[UserManager]:
    if not SYSTEMD_BINARY.exists() or shutil.which("systemctl") is None:
        pytest.skip("systemd is not installed")
    created = not Path("/run/systemd/system").exists()
    if created:
        try:
            Path("/run/systemd/system").mkdir(parents=True)
        except OSError as err:
            pytest.skip(f"cannot create /run/systemd/system for a user manager: {err}")
    manager = UserManager(tmp_path)
    try:
        poll_until(
            lambda: manager.systemctl("is-system-running", check=False) in ("running", "degraded"),
            "the user manager to run",
            timeout=15,
            interval=0.1,
        )
    except pytest.fail.Exception:
        manager.close()
        pytest.skip("a systemd user manager could not start here")
    yield manager
    manager.close()
    if created:
        shutil.rmtree("/run/systemd/system", ignore_errors=True)


def user_unit(tmp_path: Path, shell_wrapper: bool = False) -> str:
    """systemd/livereduce.service as a user unit running this checkout on the demo source; ``shell_wrapper``: run
    it from a bash that stays the parent (as nsd-app-wrap.sh's pixi_launch does), instead of directly."""
    config = tmp_path / "livereduce.conf"
    config.write_text(
        json.dumps(
            {
                "instrument": "ADARA_FakeEvent",
                "engine": "scipp",
                "script_dir": str(ROOT / "demo"),
                "update_every": 0.5,
                "event_rate": 2000,
                "log_file": str(tmp_path / "livereduce.log"),
                "status_file": str(tmp_path / "status.json"),
            }
        )
    )
    kept: list[str] = []
    sandboxing = False  # the system-only sandboxing block, from its comment to [Install]
    for line in (ROOT / "systemd" / "livereduce.service").read_text().splitlines():
        if line.startswith("# Sandboxing"):
            sandboxing = True
            kept.append(f"StandardOutput=file:{tmp_path / 'stdout.log'}")
            kept.append(f"Environment=LIVEREDUCE_OUTPUT_DIR={tmp_path / 'out'}")
            kept.extend(f"{key}={value}" for key, value in OVERRIDES.items())
        elif line.startswith("[Install]"):
            sandboxing = False
        key = line.split("=", 1)[0]
        if sandboxing or key in ("User", "WorkingDirectory", *OVERRIDES):
            continue
        if key == "ExecStart":
            command = f"{sys.executable} {ENTRY_POINT} {config}"
            kept.append(f"ExecStart=/bin/bash -c '{command}; exit $?'" if shell_wrapper else f"ExecStart={command}")
        else:
            kept.append(line)
    return "\n".join(kept) + "\n"


def test_notify_restart_watchdog_and_stop(manager: UserManager, tmp_path: Path) -> None:
    unit = "livereduce.service"
    (tmp_path / "home" / ".config" / "systemd" / "user" / unit).write_text(user_unit(tmp_path))
    manager.systemctl("daemon-reload")

    manager.systemctl("start", unit)  # Type=notify: returns once READY=1 arrived (after the first chunk)
    assert manager.show(unit, "ActiveState") == "active"
    assert "Initial chunk:" in (tmp_path / "livereduce.log").read_text()
    assert manager.show(unit, "StatusText").startswith("running")

    first = int(manager.show(unit, "MainPID"))
    os.kill(first, signal.SIGKILL)
    poll_until(
        lambda: (
            manager.show(unit, "MainPID") not in ("0", str(first)) and manager.show(unit, "ActiveState") == "active"
        ),
        lambda: f"a restart after SIGKILL of {first}: {manager.state(unit)}",
        interval=0.1,
    )
    assert int(manager.show(unit, "NRestarts")) == 1

    second = int(manager.show(unit, "MainPID"))
    os.kill(second, signal.SIGSTOP)  # a hung daemon: no WATCHDOG=1 any more
    poll_until(
        lambda: (
            manager.show(unit, "MainPID") not in ("0", str(second)) and manager.show(unit, "ActiveState") == "active"
        ),
        lambda: f"a restart by the watchdog after SIGSTOP of {second}: {manager.state(unit)}",
        interval=0.1,
    )
    assert int(manager.show(unit, "NRestarts")) == 2

    started = time.monotonic()
    manager.systemctl("stop", unit)
    assert time.monotonic() - started < 10
    assert manager.show(unit, "ActiveState") == "inactive"
    assert "received SIGTERM(15)" in (tmp_path / "livereduce.log").read_text()


def test_reload_reaches_the_daemon_under_a_wrapper_that_does_not_exec(manager: UserManager, tmp_path: Path) -> None:
    """The daemon names itself the main process (MAINPID=), so ExecReload's SIGHUP reaches Python, not the shell."""
    unit = "livereduce.service"
    (tmp_path / "home" / ".config" / "systemd" / "user" / unit).write_text(user_unit(tmp_path, shell_wrapper=True))
    manager.systemctl("daemon-reload")
    manager.systemctl("start", unit)
    main = int(manager.show(unit, "MainPID"))
    assert Path(f"/proc/{main}/cmdline").read_bytes().split(b"\0")[1].endswith(b"livereduce.py")  # Python, not bash
    manager.systemctl("reload", unit)
    log = tmp_path / "livereduce.log"
    poll_until(lambda: "received SIGHUP(1)" in log.read_text(), lambda: f"SIGHUP in the log: {log.read_text()}")
    poll_until(
        lambda: "Restarting Live Data and clearing workspaces" in log.read_text(),
        lambda: f"the restart in the log: {log.read_text()}",
    )
    # RELOADING=1 came with the restart; READY=1 follows once live data runs again
    poll_until(
        lambda: manager.show(unit, "ActiveState") == "active",
        lambda: f"the unit active after the reload: {manager.state(unit)}",
        interval=0.1,
    )
    assert int(manager.show(unit, "MainPID")) == main
    assert int(manager.show(unit, "NRestarts")) == 0
    manager.systemctl("stop", unit)
