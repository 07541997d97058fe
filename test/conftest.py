"""Shared fixtures: the SANS2D file, and running the real daemon as a subprocess; the test lanes (markers
``daemon``, ``broker``, ``packaging``: see test/README.md), given here and checked while the tests run."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINT = ROOT / "scripts" / "livereduce.py"
SANS2D = ROOT.parent / "shared" / "data" / "SANS2D_minimal.nxs"
SANS2D_EVENTS = 237_078

# --- the lanes -----------------------------------------------------------------------------------------------------
# The fast lane is `python3 -m pytest -m "not daemon and not broker and not packaging"`. The markers are given at
# collection (pytest_collection_modifyitems) and checked while the tests run (an audit hook on every subprocess):
# a test that starts the daemon, tansu or a packaging tool without its marker fails, so the lane stays honest.

BROKER_FIXTURES = frozenset({"kafka_broker", "private_broker", "kafka_topics"})
"""A test that uses one of these fixtures (directly or through another fixture) talks to tansu: ``broker``."""

DAEMON_NAMES = frozenset({"Daemon", "run_cli", "ENTRY_POINT"})
"""A test that uses the ``daemon`` fixture, or whose code (or a fixture, helper function or helper class of the
test modules that it uses) names one of these, starts the daemon as a subprocess: ``daemon``."""

PACKAGING_MODULES = frozenset(
    {"test/test_rpm.py", "test/test_service_files.py", "test/test_systemd_user.py", "test/kafka/test_deployment.py"}
)
"""rpm, systemd, polkit, bats, shellcheck, Kubernetes manifests and hadolint: ``packaging``."""

ONE_WORKER_MODULES = {"test/test_rpm.py": "rpm", "test/test_systemd_user.py": "systemd-user"}
"""Modules whose tests share something outside their tmp_path (the rpm build in build/rpmbuild; the directory
/run/systemd/system a user manager needs, made and removed by each test): with pytest-xdist each module runs on
one worker (``xdist_group``, ``--dist loadgroup``)."""

MARKED_MODULES: dict[str, frozenset[str]] = {}
"""Modules whose every test gets the given markers, for a test the two rules above cannot see (prefer a
module-level ``pytestmark = pytest.mark.daemon`` in a module of your own)."""

PACKAGING_TOOLS = frozenset(
    {"bats", "shellcheck", "rpm", "rpmbuild", "rpmbuild.sh", "rpmlint", "systemd", "systemctl", "systemd-analyze",
     "systemd-run", "hadolint", "node"}
)  # fmt: skip
"""Executables whose start needs the ``packaging`` marker (the check below)."""

_DAEMON_MODULES = frozenset({"livereduce", "livereduce.launch", "livereduce.cli", "livereduce.__main__"})


def _code_names(code: types.CodeType) -> Iterator[str]:
    """The global and attribute names a code object and the functions nested in it use."""
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_names(constant)


def _test_functions(thing: object) -> list[types.FunctionType]:
    """The functions of the test suite that ``thing`` is or holds (a class: its methods), else none."""
    if isinstance(thing, type):
        if not Path(getattr(sys.modules.get(thing.__module__), "__file__", None) or "/").is_relative_to(ROOT / "test"):
            return []
        return [f for member in vars(thing).values() for f in _test_functions(getattr(member, "__func__", member))]
    function = getattr(thing, "__wrapped__", thing)
    if isinstance(function, types.FunctionType) and Path(function.__code__.co_filename).is_relative_to(ROOT / "test"):
        return [function]
    return []


def _names_the_daemon(function: types.FunctionType, seen: set[int]) -> bool:
    """Whether ``function`` (a test, a fixture, a helper) names the daemon, itself or through the functions and
    classes of the test suite that it uses."""
    if id(function.__code__) in seen:
        return False
    seen.add(id(function.__code__))
    for name in _code_names(function.__code__):
        if name in DAEMON_NAMES:
            return True
        if any(_names_the_daemon(helper, seen) for helper in _test_functions(function.__globals__.get(name))):
            return True
    return False


def _lane_markers(item: pytest.Item) -> set[str]:
    fixtures = set(getattr(item, "fixturenames", ()))
    module = Path(str(item.path)).relative_to(ROOT).as_posix()
    markers = set(MARKED_MODULES.get(module, ()))
    if fixtures & BROKER_FIXTURES:
        markers.add("broker")
    if module in PACKAGING_MODULES:
        markers.add("packaging")
    functions = _test_functions(getattr(item, "function", None))
    info = getattr(item, "_fixtureinfo", None)
    for definitions in info.name2fixturedefs.values() if info else ():
        for definition in definitions:
            functions.extend(_test_functions(definition.func))
    seen: set[int] = set()
    if "daemon" in fixtures or any(_names_the_daemon(function, seen) for function in functions):
        markers.add("daemon")
    return markers


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Without pytest-xdist (not installed, as in pixi's environments, or ``-p no:xdist``), the ``-n 3 --dist
    loadgroup`` of ``addopts`` is accepted and ignored: the tests run in this process."""
    if pluginmanager.has_plugin("xdist"):
        return
    group = parser.getgroup("xdist", "pytest-xdist is not active: its options are ignored")
    group._addoption("-n", "--numprocesses", dest="numprocesses", default=None, help="ignored without pytest-xdist")
    group._addoption("--dist", dest="dist", default="no", help="ignored without pytest-xdist")


LANE_MARKERS = ("daemon", "broker", "packaging")
LANES: dict[str, frozenset[str]] = {}
"""Node id -> the lane markers of every collected test (also those that ``-m`` deselects)."""


@pytest.hookimpl(tryfirst=True)  # before -m deselects by them and pytest-xdist reads xdist_group
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in sorted(_lane_markers(item) - {mark.name for mark in item.iter_markers()}):
            item.add_marker(name)
        group = ONE_WORKER_MODULES.get(Path(str(item.path)).relative_to(ROOT).as_posix())
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        LANES[item.nodeid] = frozenset(
            m.name for m in item.iter_markers() if m.name in {"daemon", "broker", "packaging"}
        )


_running: list[pytest.Item] = []  # the test being run in this process (with xdist: in this worker)
_unmarked: dict[str, list[str]] = {}  # node id -> what it started without the marker


def needed_marker(argv: list[str]) -> str | None:
    """The marker a test needs to start ``argv``: daemon, broker, packaging, or None."""
    if not argv:
        return None
    program = Path(argv[0]).name
    python = program.startswith("python") or argv[0] == sys.executable
    options = argv[1:4] if python else []
    script = next((Path(part).name for part in options if not part.startswith("-")), "") if python else program
    if str(ENTRY_POINT) in " ".join(argv) or script in {"livereduce", "livereduce.py"}:
        return "daemon"
    if any(first == "-m" and then in _DAEMON_MODULES for first, then in itertools.pairwise(options)):
        return "daemon"
    if program == "tansu":
        return "broker"
    if program in PACKAGING_TOOLS:
        return "packaging"
    return None


def _check_subprocess(event: str, arguments: tuple) -> None:
    """Audit hook: a test that starts the daemon (tansu, a packaging tool) must carry the marker ``daemon``
    (``broker``, ``packaging``), else it fails, naming the command and the marker."""
    if event != "subprocess.Popen" or not _running:
        return
    item = _running[-1]
    command = arguments[1]
    argv = [os.fsdecode(command)] if isinstance(command, (str, bytes, os.PathLike)) else list(map(os.fsdecode, command))
    marker = needed_marker(argv)
    if marker is None or item.get_closest_marker(marker) is not None:
        return
    message = (
        f"{item.nodeid} starts {' '.join(argv)[:200]!r} but is not marked '{marker}': mark it "
        f"(@pytest.mark.{marker}, a module-level pytestmark, or test/conftest.py MARKED_MODULES; see test/README.md)"
    )
    _unmarked.setdefault(item.nodeid, []).append(message)
    pytest.fail(message, pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    if not getattr(sys, "_livereduce_lane_check", False):  # audit hooks cannot be removed: install it once
        sys.addaudithook(_check_subprocess)
        sys._livereduce_lane_check = True  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _running.append(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    try:
        return (yield)
    finally:
        _running.remove(item)
        if item.nodeid in _unmarked:  # also when the test caught the failure
            pytest.fail("\n".join(_unmarked.pop(item.nodeid)), pytrace=False)


@pytest.fixture(autouse=True)
def _own_state_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's daemons keep their checkpoints to themselves: the default ``checkpoint_dir`` is per user
    (``$XDG_STATE_HOME/livereduce/<instrument>``), so two tests replaying the same file would resume each other."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


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
        """Return at once if ``event`` is set; else advance by ``timeout`` instead of sleeping; an unbounded wait (a
        wait for a stop) sets ``event``, as the stop that would end it, so that a test never hangs."""
        self.waits.append(timeout)
        if event.is_set():  # as Event.wait: a set event returns at once
            return True
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
def livereduce_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``livereduce_check(CONFIG, cwd=DIR)``: ``livereduce --check CONFIG`` in process (``livereduce.cli.main``, what
    the command runs after its signal set-up and dependency check), in ``DIR``; returns what :func:`run_cli` would.

    For the variations of an error that one subprocess run (``run_cli``) already proves end to end; ``--check``
    starts nothing, and the signal handlers it resets are restored.
    """
    from livereduce import cli

    def check(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
        monkeypatch.chdir(cwd)
        handlers = {signum: signal.getsignal(signum) for signum in _CHECK_SIGNALS}
        capsys.readouterr()
        try:
            code = cli.main(["--check", str(config)])
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        output = capsys.readouterr()
        return subprocess.CompletedProcess(["livereduce", "--check", str(config)], code, output.out, output.err)

    return check


_CHECK_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


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


@dataclass
class FakeSms:
    """A ``livereduce-fake-sms`` subprocess: its port and every line it printed so far."""

    process: subprocess.Popen
    port: int
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def fake_sms(sans2d: Path) -> Iterator[Callable[..., FakeSms]]:
    """Start ``livereduce-fake-sms SANS2D ARGS`` (``python3 -m livereduce.tools.fake_sms``); stopped at the end."""
    started: list[FakeSms] = []

    def start(*args: str, port: int = 0) -> FakeSms:
        process = subprocess.Popen(
            [sys.executable, "-m", "livereduce.tools.fake_sms", str(sans2d), "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        first = process.stdout.readline()
        assert "listening on 127.0.0.1:" in first, first + process.stdout.read()
        server = FakeSms(process, int(first.split("127.0.0.1:")[1].split(":")[0]), [first])
        threading.Thread(target=lambda: server.lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
