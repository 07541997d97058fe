"""Shared fixtures: the SANS2D file, and running the real daemon as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINT = ROOT / "scripts" / "livereduce.py"
SANS2D = ROOT.parent / "shared" / "data" / "SANS2D_minimal.nxs"
SANS2D_EVENTS = 237_078


def poll_until(
    predicate: Callable[[], object], what: str | Callable[[], str], timeout: float = 60, interval: float = 0.05
) -> object:
    """Poll ``predicate`` until it returns something true, and return that; fail naming ``what`` (a text, or a
    function giving one, e.g. the log so far) after ``timeout`` seconds. The one way tests wait for something to
    happen (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


class FakeClock:
    """The one test clock (:class:`livereduce.clock.Clock`): time moves only when a test moves it (``now``, or
    :meth:`advance`) or when something waits on it, so schedules, back-off and timeouts run without sleeping.

    Args:
        now: the monotonic time to start from, seconds.
        wall_origin: the wall-clock time (Unix seconds) when ``now`` is 0.

    Attributes:
        waits: every timeout passed to :meth:`wait`, in order (None for an unbounded wait).
    """

    def __init__(self, now: float = 0.0, wall_origin: float = 1_800_000_000.0) -> None:
        self.now = now
        self.wall_origin = wall_origin
        self.waits: list[float | None] = []

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall_origin + self.now

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Advance by ``timeout`` instead of sleeping; an unbounded wait (a wait for a stop) sets ``event``, as the
        stop that would end it, so that a test never hangs."""
        self.waits.append(timeout)
        if timeout is None:
            event.set()
        else:
            self.now += timeout
        return event.is_set()


@pytest.fixture(scope="session")
def sans2d() -> Path:
    """Path of the real SANS2D event file (read-only, never copied into the repository)."""
    if not SANS2D.is_file():
        pytest.skip(f"SANS2D sample data not found at {SANS2D} (it lives in ../shared/data/)")
    return SANS2D


@dataclass(frozen=True)
class Sans2dReference:
    """The SANS2D events read independently with h5py."""

    event_id: np.ndarray
    event_time_offset: np.ndarray
    event_index: np.ndarray
    pulse_times: np.ndarray  # datetime64[ns]

    def pulses(self, first: int, last: int) -> slice:
        """Slice of the event arrays holding pulses [first, last)."""
        stop = self.event_index[last] if last < self.event_index.size else self.event_id.size
        return slice(int(self.event_index[first]), int(stop))


@pytest.fixture(scope="session")
def sans2d_reference(sans2d: Path) -> Sans2dReference:
    with h5py.File(sans2d) as f:
        group = f["raw_data_1/detector_1_events"]
        etz = group["event_time_zero"]
        offset = np.datetime64(
            etz.attrs["offset"].decode() if isinstance(etz.attrs["offset"], bytes) else etz.attrs["offset"], "ns"
        )
        times = offset + np.round(etz[()] * 1e9).astype("timedelta64[ns]")
        return Sans2dReference(
            group["event_id"][()].astype(np.int64),
            group["event_time_offset"][()],
            group["event_index"][()].astype(np.int64),
            times,
        )


@dataclass
class DaemonRun:
    """Outcome of one daemon run."""

    returncode: int
    stdout: str
    log: str
    workdir: Path


class Daemon:
    """The daemon as a real subprocess in its own working directory (always stopped by the fixture).

    Its stdout (the journal stream) is read all the time by a thread, as journald would, so a long line never
    blocks the daemon on a full pipe.
    """

    def __init__(self, workdir: Path, config_path: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_path = config_path
        self.log_path = workdir / "livereduce.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", LIVEREDUCE_OUTPUT_DIR=str(workdir / "out"), **(env or {}))
        self.process = subprocess.Popen(
            [sys.executable, str(ENTRY_POINT), str(config_path)],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self._stdout: list[str] = []
        self._reader = threading.Thread(target=self._drain, name="daemon stdout", daemon=True)
        self._reader.start()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_for_log(self, predicate: Callable[[str], bool], timeout: float = 60) -> str:
        """Poll the log until ``predicate(log)`` holds; fail on timeout or if the daemon exits first."""

        def seen() -> str | None:
            text = self.log()
            if predicate(text):
                return text or " "
            if self.process.poll() is not None:
                pytest.fail(
                    f"daemon exited with {self.process.returncode} before the log showed what was awaited:\n"
                    f"{self.log()}"
                )
            return None

        return poll_until(seen, lambda: f"the log:\n{self.log()}", timeout)

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def _drain(self) -> None:
        for line in self.process.stdout:
            self._stdout.append(line)

    def stdout(self) -> str:
        """What the daemon wrote to stdout so far."""
        return "".join(self._stdout)

    def finish(self, timeout: float = 120) -> DaemonRun:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._reader.join(10)
            pytest.fail(f"daemon did not exit within {timeout} s:\n{self.stdout()}")
        self._reader.join(10)
        return DaemonRun(self.process.returncode, self.stdout(), self.log(), self.workdir)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self._reader.join(10)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start daemons: ``daemon(config_dict, scripts={"proc": code, "post_proc": code})``."""
    started: list[Daemon] = []

    def start(
        config: dict, scripts: dict[str, str] | None = None, instrument: str = "SANS2D", env: dict | None = None
    ) -> Daemon:
        config = {
            "instrument": instrument,
            "engine": "scipp",
            "script_dir": ".",
            "status_file": str(tmp_path / "status.json"),
            **config,
        }
        for role, code in (scripts or {}).items():
            (tmp_path / f"reduce_{instrument}_live_{role}.py").write_text(textwrap.dedent(code))
        config_path = tmp_path / "livereduce.conf"
        config_path.write_text(json.dumps(config))
        process = Daemon(tmp_path, config_path, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def run_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/livereduce.py ARGS`` to completion (for error paths and --check)."""
    return subprocess.run(
        [sys.executable, str(ENTRY_POINT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def sms() -> Iterator[Callable[..., object]]:
    """Start fake SMS servers in threads on 127.0.0.1 (a free port each): ``sms(runs, **options)`` with the
    ``livereduce.tools.fake_sms.Options`` keys (``speed`` 0 unless given); every server is stopped afterwards."""
    from livereduce.tools.fake_sms import FakeSms, Options, Stream

    servers: list[FakeSms] = []

    def start(runs: list, **options: object) -> FakeSms:
        server = FakeSms(Stream.of(runs), Options(**{"speed": 0, **options}), port=0)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
