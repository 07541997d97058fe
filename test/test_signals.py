"""Signals at every phase, with the real daemon: recorded from the first moment Python runs livereduce, never the
default action; never two engines; SIGUSR1/SIGUSR2 do not kill."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from conftest import poll_until

FAKE = {"listener": "FakeEventDataListener", "event_rate": 600, "update_every": 0.1}
PROC = "output = input\n"


def caught(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (the ``SigCgt`` mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def after_the_handlers(process, delay: float) -> None:
    """Wait until the daemon's signal handlers are installed (the first thing livereduce does, after the
    interpreter's own start-up, whose length depends on the machine's load), then ``delay`` seconds more."""
    poll_until(lambda: caught(process.process.pid, signal.SIGTERM), "the signal handlers", timeout=30, interval=0.005)
    time.sleep(delay)  # the moment of the signal is what is tested


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("delay", [0.0, 0.1, 0.25, 0.55])
def test_a_stop_signal_at_any_moment_of_start_up_exits_0(daemon, signum, delay):
    """Before, a signal in the first ~0.25 s got the default action (SIGTERM: -15, SIGINT: a traceback). Counted
    from the handlers' installation: imports, configuration, scripts, the engine's start."""
    process = daemon(FAKE, {"proc": PROC})
    after_the_handlers(process, delay)
    process.send(signum)
    run = process.finish(timeout=60)
    assert run.returncode == 0, run.stdout + run.log
    assert "Traceback" not in run.stdout
    assert "KeyboardInterrupt" not in run.stdout


def engine_threads(log: str) -> int:
    """MonitorLiveData threads alive at SIGQUIT (every engine has one)."""
    dump = log.split("Thread stacks at SIGQUIT:", 1)[1]
    return sum(line.startswith("Thread MonitorLiveData") for line in dump.splitlines())


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.65])
def test_sighup_right_after_the_start_never_makes_a_second_engine(daemon, delay):
    """Before, a SIGHUP 0.2-0.45 s after the start left the first engine running beside the second."""
    process = daemon(FAKE, {"proc": PROC})
    after_the_handlers(process, delay)
    process.send(signal.SIGHUP)
    process.wait_for_log(lambda log: "received SIGHUP" in log and "Chunk 2:" in log.split("received SIGHUP")[-1])
    process.send(signal.SIGQUIT)
    run = process.finish(timeout=60)
    assert run.returncode == 7
    assert engine_threads(run.log) == 1, run.log


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_sigusr1_and_sigusr2_are_logged_and_the_daemon_goes_on(daemon, signum):
    """Before, either killed the daemon silently."""
    process = daemon(FAKE, {"proc": PROC})
    process.wait_for_log(lambda log: "Chunk 0:" in log)
    process.send(signum)
    name = signal.Signals(signum).name
    log = process.wait_for_log(lambda log: f"received {name}" in log)
    if signum == signal.SIGUSR1:
        poll_until(lambda: "status: running:" in process.log(), "the status line")
    else:
        assert f"received {name}({int(signum)}): ignored" in log
    chunks = process.log().count("Loading live data chunk")
    process.wait_for_log(lambda log: log.count("Loading live data chunk") > chunks + 2)  # still cycling
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0
