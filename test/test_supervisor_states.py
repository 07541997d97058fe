"""The supervisor in process: its state machine, one engine at a time, back-off, exits — with a fake engine, a fake
watcher, a fake systemd notifier and a clock that does not sleep. Fast and deterministic; the subprocess tests
(test_supervision.py, test_signals.py) show the same behaviour with the real daemon."""

from __future__ import annotations

import itertools
import json
import logging
import re
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import FakeClock
from livereduce import supervisor as sv
from livereduce.config import Config, LoadedConfig
from livereduce.engines.base import EngineFailed, EngineFinished, EngineStarted, EngineState, Health
from livereduce.errors import ConfigError, ScriptError, SourceError
from livereduce.events import EventQueue, SignalReceived
from livereduce.scripts import load_scripts
from livereduce.states import TRANSITIONS, IllegalTransition, State
from livereduce.supervisor import FromEngine, Supervisor, _Exit
from livereduce.watch import FilesChanged


class FakeEngine:
    """Records its life; ``live`` counts the engines started and not stopped, across all instances.

    Args:
        fail_start: raised by ``start`` (an engine that opens its source in ``start``, as mantid's).
        stops: whether ``stop`` succeeds.
        opens: ``start`` reports :class:`EngineStarted` at once (False: the source is still being opened).
    """

    name = "fake"
    live = 0

    def __init__(
        self, fail_start: Exception | None = None, stops: bool = True, opens: bool = True, hot: bool = True
    ) -> None:
        self.fail_start = fail_start
        self.stops = stops
        self.opens = opens
        self.hot = hot  # takes a post_proc edit without a restart (scipp), or not (mantid)
        self.fresh: str | None = "not started"
        self.post_proc_reloads: list = []
        self.notify = None
        self.running = False
        self.health_now = Health(state=EngineState.STARTING)

    def start(self, scripts, notify, fresh=None) -> None:
        self.fresh = fresh
        if self.fail_start is not None:
            raise self.fail_start
        assert FakeEngine.live == 0, "a second engine started while one runs"
        FakeEngine.live += 1
        self.running = True
        self.notify = notify
        self.health_now = Health(state=EngineState.CONNECTING)
        if self.opens:
            self.health_now = Health(state=EngineState.RUNNING)
            notify(EngineStarted())

    def reload_post_proc(self, scripts) -> bool:
        if self.hot:
            self.post_proc_reloads.append(scripts)
        return self.hot

    def stop(self, timeout: float) -> bool:
        if not self.stops:
            return False
        if self.running:
            FakeEngine.live -= 1
            self.running = False
        return True

    def health(self) -> Health:
        return self.health_now


class FakeWatcher:
    def __init__(self) -> None:
        self.accepted: dict[Path, str] = {}
        self.started = self.stopped = 0
        self.trouble: str | None = None

    def start(self) -> None:
        self.started += 1

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped += 1

    def accept(self, path: Path, digest: str) -> None:
        self.accepted[path] = digest

    def problem(self) -> str | None:
        return self.trouble


class FakeNotifier:
    """Records the sd_notify messages (``STATUS=`` only as ``STATUS``)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def ready(self) -> None:
        self.sent.append("READY=1")

    def reloading(self) -> None:
        self.sent.append("RELOADING=1")

    def stopping(self) -> None:
        self.sent.append("STOPPING=1")

    def watchdog(self) -> None:
        self.sent.append("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.sent.append("STATUS")

    def main_pid(self, pid: int) -> None:
        self.sent.append(f"MAINPID={pid}")

    def without_status(self) -> list[str]:
        return [message for message in self.sent if message not in ("STATUS", "WATCHDOG=1")]


class _NoMemory:
    rss = 0
    limit = None

    def __init__(self, *args) -> None:
        return

    def start(self) -> None:
        return

    def stop(self) -> None:
        return

    def handled(self) -> None:
        return


@dataclass
class Rig:
    """A supervisor over fake parts; ``engines`` lists every engine built, ``plan`` what the next ones do."""

    supervisor: Supervisor
    engines: list[FakeEngine]
    plan: list[dict]
    clock: FakeClock
    proc: Path


def make_rig(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    FakeEngine.live = 0
    proc = directory / "reduce_SANS2D_live_proc.py"
    proc.write_text("output = input\n")
    config = Config(instrument="SANS2D", script_dir=str(directory), status_file=str(directory / "status.json"))
    engines: list[FakeEngine] = []
    plan: list[dict] = []

    def make_engine() -> FakeEngine:
        engine = FakeEngine(**(plan.pop(0) if plan else {}))
        engines.append(engine)
        return engine

    clock = FakeClock(now=1000.0)
    monkeypatch.setattr(sv, "MemoryMonitor", _NoMemory)
    scripts = load_scripts(directory, "SANS2D")
    supervisor = Supervisor(
        LoadedConfig(config, None, ""), make_engine, scripts, EventQueue(), clock=clock, watcher=FakeWatcher()
    )
    supervisor.notifier = FakeNotifier()
    return Rig(supervisor, engines, plan, clock, proc)


@pytest.fixture
def setup(tmp_path, monkeypatch, caplog):
    """``(supervisor, engines, plan, clock, proc)`` of a :func:`make_rig`; INFO lines captured."""
    caplog.set_level(logging.INFO)
    rig = make_rig(tmp_path, monkeypatch)
    return rig.supervisor, rig.engines, rig.plan, rig.clock, rig.proc


def settle(supervisor: Supervisor) -> None:
    """Act on every event waiting in the queue (the engines' reports), as the loop would."""
    while (event := supervisor.events.get(timeout=0)) is not None:
        supervisor.handle(event)


def started(supervisor: Supervisor) -> None:
    supervisor._start_first()
    settle(supervisor)


def exit_code(supervisor: Supervisor, event: object) -> int:
    with pytest.raises(_Exit) as done:
        supervisor.handle(event)
    return done.value.code


def current(supervisor: Supervisor, event: object) -> FromEngine:
    """``event`` from the engine that runs now."""
    return FromEngine(supervisor._generation, event)


def status_file(supervisor: Supervisor) -> dict:
    return json.loads(supervisor.status_file.path.read_text())


def test_every_state_has_a_way_out_except_the_final_ones():
    for state, targets in TRANSITIONS.items():
        final = state in (State.STOPPED, State.STOP_TIMED_OUT)
        assert bool(targets) != final, state
        if not final and state not in (State.STOPPING, State.RELOADING):
            assert State.STOPPING in targets, f"{state} cannot be stopped"
        assert state not in targets, f"{state} -> {state} is not a change"


def test_an_illegal_transition_is_refused(setup):
    supervisor, *_ = setup
    with pytest.raises(IllegalTransition, match="starting -> waiting for scripts"):
        supervisor._enter(State.WAITING_FOR_SCRIPTS, "a bug")
    assert supervisor.state is State.STARTING


def test_a_second_engine_is_refused_by_construction(setup):
    supervisor, engines, *_ = setup
    started(supervisor)
    with pytest.raises(IllegalTransition, match="an engine is running already"):
        supervisor._start_engine()
    assert len(engines) == 1


@pytest.mark.parametrize("order", list(itertools.permutations(["SIGHUP", "script edit", "start"])))
def test_sighup_and_edits_around_the_start_never_make_two_engines(setup, order):
    supervisor, engines, _, _, proc = setup
    for step in order:
        if step == "start":
            started(supervisor)
        elif step == "SIGHUP":
            supervisor.handle(SignalReceived(signal.SIGHUP))
        else:
            proc.write_text("output = input  # edited\n")
            supervisor.handle(FilesChanged(frozenset({proc})))
        settle(supervisor)
        assert FakeEngine.live <= 1
    assert supervisor.state is State.RUNNING
    assert FakeEngine.live == 1
    assert sum(engine.running for engine in engines) == 1
    assert engines[-1].running, "the newest engine is the one that runs"


def test_sigterm_while_starting_exits_0_without_starting_an_engine(setup):
    supervisor, engines, *_ = setup
    assert exit_code(supervisor, SignalReceived(signal.SIGTERM)) == 0
    assert supervisor.state is State.STOPPED
    assert engines == []


def test_connecting_until_the_engine_has_opened_its_source(setup, caplog):
    """Defect 6: while a start is in progress the status says 'connecting', not 'running' or 'backing off'."""
    supervisor, _, plan, *_ = setup
    plan.append({"opens": False})
    started(supervisor)
    assert supervisor.state is State.CONNECTING
    assert status_file(supervisor)["state"] == "connecting"
    supervisor.tick()
    assert status_file(supervisor)["state"] == "connecting"
    supervisor.handle(current(supervisor, EngineStarted()))
    assert supervisor.state is State.RUNNING
    assert status_file(supervisor)["state"] == "running"
    assert "state: starting -> connecting: starting live data" in caplog.text
    assert "state: connecting -> running: the data source is open" in caplog.text


def test_sigterm_while_connecting_stops_the_engine_and_exits_0(setup):
    supervisor, _, plan, *_ = setup
    plan.append({"opens": False})
    started(supervisor)
    assert exit_code(supervisor, SignalReceived(signal.SIGTERM)) == 0
    assert supervisor.state is State.STOPPED
    assert FakeEngine.live == 0
    assert status_file(supervisor)["state"] == "stopped"


def test_sigusr1_logs_the_status_and_sigusr2_is_ignored(setup, caplog):
    supervisor, *_ = setup
    started(supervisor)
    supervisor.handle(SignalReceived(signal.SIGUSR1))
    supervisor.handle(SignalReceived(signal.SIGUSR2))
    assert supervisor.state is State.RUNNING
    assert "status: running" in caplog.text
    assert "received SIGUSR2(12): ignored" in caplog.text


def test_engine_failure_backs_off_1_2_4_seconds_then_restarts(setup):
    supervisor, engines, _, clock, _ = setup
    started(supervisor)
    for delay in (1, 2, 4):
        engine = engines[-1]
        supervisor.handle(current(supervisor, EngineFailed(SourceError("lost"), recoverable=True)))
        assert supervisor.state is State.BACKING_OFF
        assert status_file(supervisor)["state"] == "backing off"
        assert FakeEngine.live == 0
        clock.now += delay - 0.01
        supervisor.tick()
        assert supervisor.state is State.BACKING_OFF, "restarted before the back-off elapsed"
        clock.now += 0.01
        supervisor.tick()
        assert supervisor.state is State.CONNECTING
        settle(supervisor)
        assert supervisor.state is State.RUNNING
        assert engines[-1] is not engine
    assert supervisor.restarts["failures"] == 3
    clock.now += 61  # a long good run: the next failure waits 1 s again
    supervisor.handle(current(supervisor, EngineFailed(SourceError("lost"), recoverable=True)))
    assert supervisor.backoff.failures == 1


def test_a_failed_start_is_one_error_line_and_the_back_off_line(setup, caplog):
    """Item 12: before, 4-5 lines per failed start, with 'Restarting Live Data and clearing workspaces' although
    nothing had started."""
    supervisor, _, plan, clock, _ = setup
    plan.extend([{"opens": False}, {"opens": False}])
    started(supervisor)
    caplog.clear()
    refused = SourceError("cannot connect to the SMS at 127.0.0.1:1: Connection refused", recoverable=True)
    supervisor.handle(current(supervisor, EngineFailed(refused, recoverable=True, at_start=True)))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", f"Live data could not start: {refused}"),
        ("INFO", "state: connecting -> backing off: Restarting live data in 1 s (failure 1 in a row)"),
    ]
    caplog.clear()
    clock.now += 1
    supervisor.tick()
    supervisor.handle(current(supervisor, EngineFailed(refused, recoverable=True, at_start=True)))
    assert [r.getMessage() for r in caplog.records] == [
        "state: backing off -> connecting: the back-off delay has passed",
        f"Live data could not start: {refused}",
        "state: connecting -> backing off: Restarting live data in 2 s (failure 2 in a row)",
    ]
    assert "Restarting Live Data and clearing workspaces" not in caplog.text


def test_restarting_live_data_and_clearing_workspaces_only_when_one_ran(setup, caplog):
    supervisor, _, plan, *_ = setup
    started(supervisor)
    supervisor.handle(SignalReceived(signal.SIGHUP))
    settle(supervisor)
    assert caplog.text.count("Restarting Live Data and clearing workspaces (scripts reloaded)") == 1
    plan.append({"opens": False})
    supervisor.handle(SignalReceived(signal.SIGHUP))  # the engine of the first SIGHUP runs: this one clears it
    supervisor.handle(SignalReceived(signal.SIGHUP))  # this one replaces an engine that is still connecting
    assert caplog.text.count("Restarting Live Data and clearing workspaces (scripts reloaded)") == 2
    assert caplog.text.count("state: connecting -> reloading: scripts reloaded") == 1


def test_an_unrecoverable_source_error_exits_with_its_code(setup):
    supervisor, *_ = setup
    started(supervisor)
    failed = EngineFailed(SourceError("'x.nxs' cannot be read"), recoverable=False)
    assert exit_code(supervisor, current(supervisor, failed)) == 3
    assert supervisor.state is State.STOPPED
    assert FakeEngine.live == 0


def test_a_replaced_engines_late_events_are_ignored(setup):
    supervisor, engines, *_ = setup
    started(supervisor)
    old_generation = supervisor._generation
    supervisor.handle(SignalReceived(signal.SIGHUP))
    settle(supervisor)
    supervisor.handle(FromEngine(old_generation, EngineFinished("old run ended")))
    supervisor.handle(FromEngine(old_generation, EngineFailed(RuntimeError("old"), recoverable=True)))
    supervisor.handle(FromEngine(old_generation, EngineStarted()))
    assert supervisor.state is State.RUNNING
    assert engines[-1].running
    # positive control: the same events from the current engine are acted on
    assert exit_code(supervisor, current(supervisor, EngineFinished("run ended"))) == 0


def test_a_script_error_at_the_first_start_backs_off_instead_of_exiting(setup):
    supervisor, engines, plan, clock, _ = setup
    plan.append({"fail_start": ScriptError("proc failed in the first chunk")})
    started(supervisor)
    assert supervisor.state is State.BACKING_OFF
    clock.now += 1
    supervisor.tick()
    settle(supervisor)
    assert supervisor.state is State.RUNNING
    assert len(engines) == 2


def test_a_source_error_at_the_first_start_ends_the_daemon_unless_it_can_heal(setup):
    supervisor, _, plan, *_ = setup
    plan.append({"fail_start": SourceError("no such file")})
    with pytest.raises(SourceError):
        started(supervisor)
    assert supervisor.state is State.STOPPED
    assert status_file(supervisor)["exit"]["code"] == 3


def test_a_recoverable_source_error_at_the_first_start_backs_off(setup):
    supervisor, _, plan, *_ = setup
    plan.append({"fail_start": SourceError("connection refused", recoverable=True)})
    started(supervisor)
    assert supervisor.state is State.BACKING_OFF


def test_a_source_that_cannot_be_opened_ends_the_daemon_only_at_the_first_start(setup):
    """An engine that opens its source in its own thread (scipp) reports the failure with at_start: the first time
    the daemon ends as if the start had raised it (one line, its exit code), later it exits through the loop."""
    supervisor, _, plan, *_ = setup
    plan.append({"opens": False})
    started(supervisor)
    missing = SourceError("'x.nxs': no such file")
    with pytest.raises(SourceError):
        supervisor.handle(current(supervisor, EngineFailed(missing, recoverable=False, at_start=True)))
    assert supervisor.state is State.STOPPED


def test_a_source_that_cannot_be_opened_after_the_first_start_exits_with_its_code(setup):
    supervisor, _, plan, *_ = setup
    started(supervisor)
    plan.append({"opens": False})
    supervisor.handle(SignalReceived(signal.SIGHUP))
    missing = SourceError("'x.nxs': no such file")
    assert exit_code(supervisor, current(supervisor, EngineFailed(missing, recoverable=False, at_start=True))) == 3


def test_stop_timeout_is_its_own_state_and_exit_6(setup):
    supervisor, _, plan, *_ = setup
    plan.append({"stops": False})
    started(supervisor)
    assert exit_code(supervisor, SignalReceived(signal.SIGTERM)) == 6
    assert supervisor.state is State.STOP_TIMED_OUT
    assert supervisor.status().state == "stop timed out"


def test_a_restart_that_times_out_is_exit_6(setup):
    supervisor, _, plan, *_ = setup
    plan.append({"stops": False})
    started(supervisor)
    assert exit_code(supervisor, SignalReceived(signal.SIGHUP)) == 6
    assert supervisor.state is State.STOP_TIMED_OUT


def test_deleting_every_script_waits_and_a_new_one_resumes(setup):
    supervisor, engines, _, _, proc = setup
    started(supervisor)
    proc.unlink()
    supervisor.handle(FilesChanged(frozenset({proc})))
    assert supervisor.state is State.WAITING_FOR_SCRIPTS
    assert FakeEngine.live == 0
    supervisor.handle(SignalReceived(signal.SIGHUP))  # still no script: still waiting
    assert supervisor.state is State.WAITING_FOR_SCRIPTS
    proc.write_text("output = input\n")
    supervisor.handle(FilesChanged(frozenset({proc})))
    settle(supervisor)
    assert supervisor.state is State.RUNNING
    assert len(engines) == 2


@pytest.mark.parametrize("when", ["connecting", "backing off"])
def test_deleting_every_script_while_no_engine_runs_waits(setup, when):
    supervisor, _, plan, _, proc = setup
    plan.append({"opens": False})
    started(supervisor)
    if when == "backing off":
        supervisor.handle(current(supervisor, EngineFailed(SourceError("lost"), recoverable=True)))
    assert supervisor.state.value == when
    proc.unlink()
    supervisor.handle(FilesChanged(frozenset({proc})))
    assert supervisor.state is State.WAITING_FOR_SCRIPTS
    assert FakeEngine.live == 0


def test_sighup_while_backing_off_restarts_at_once(setup):
    supervisor, engines, *_ = setup
    started(supervisor)
    supervisor.handle(current(supervisor, EngineFailed(SourceError("lost"), recoverable=True)))
    supervisor.handle(SignalReceived(signal.SIGHUP))
    settle(supervisor)
    assert supervisor.state is State.RUNNING
    assert len(engines) == 2


def test_a_broken_edit_keeps_the_running_engine(setup, caplog):
    supervisor, engines, _, _, proc = setup
    started(supervisor)
    proc.write_text("output = (\n")
    supervisor.handle(FilesChanged(frozenset({proc})))
    assert supervisor.state is State.RUNNING
    assert len(engines) == 1
    assert "the last good version keeps running" in caplog.text
    assert 'changed - restarting "StartLiveData"' not in caplog.text
    proc.write_text("output = input\n")  # undone: the same content as the running script
    supervisor.handle(FilesChanged(frozenset({proc})))
    assert len(engines) == 1
    assert f'Processing script "{proc}" has not changed md5sum - continuing' in caplog.text
    proc.write_text("output = input  # new\n")  # positive control: a real change restarts
    supervisor.handle(FilesChanged(frozenset({proc})))
    assert len(engines) == 2
    assert f'Processing script "{proc}" changed - restarting "StartLiveData"' in caplog.text


def test_a_watcher_with_a_problem_is_replaced(setup, monkeypatch):
    supervisor, *_ = setup
    replacement = FakeWatcher()
    monkeypatch.setattr(supervisor, "_new_watcher", lambda: replacement)
    started(supervisor)
    supervisor.tick()
    assert supervisor.watcher is not replacement  # positive control: a healthy watcher stays
    supervisor.watcher.trouble = "thread ended"
    supervisor.tick()
    assert supervisor.watcher is replacement
    assert replacement.started == 1
    assert supervisor.restarts["watcher"] == 1


def test_the_status_keeps_the_totals_and_the_exit_after_the_engine_stopped(setup):
    supervisor, engines, *_ = setup
    started(supervisor)
    engines[-1].health_now = Health(state=EngineState.RUNNING, chunks=5, events=500, errors=2, run_number=7)
    with pytest.raises(_Exit) as done:
        supervisor.handle(SignalReceived(signal.SIGTERM))
    supervisor._finish(done.value)
    status = supervisor.status()
    assert status.engine.chunks == 5
    assert status.engine.errors == 2
    assert status.engine.run_number == 7
    assert status.exit.code == 0
    assert status.exit.reason == "SIGTERM"
    assert status_file(supervisor)["exit"]["code"] == 0


@pytest.mark.parametrize("newest", ["supervisor", "engine that ended", "running engine"])
def test_the_newest_last_error_wins_whichever_side_it_is_on(setup, newest):
    """Defect 11: before, a newer cycle error of an engine that had ended lost to an older error of the
    supervisor as soon as another engine ran."""
    supervisor, engines, plan, clock, _ = setup
    wall = clock.time
    plan.append({"fail_start": ScriptError("older: the first start failed")})
    started(supervisor)  # the supervisor's own error, at t0
    clock.now += 1
    supervisor.tick()
    settle(supervisor)
    engines[-1].health_now = Health(state=EngineState.RUNNING, last_error="a cycle failed", last_error_time=wall())
    if newest == "engine that ended":
        clock.now += 1
        supervisor.handle(SignalReceived(signal.SIGHUP))  # the engine with the error ends; a new one without runs
        settle(supervisor)
        expected = "a cycle failed"
    elif newest == "supervisor":
        clock.now += 1
        (supervisor.script_dir / "reduce_SANS2D_live_proc.py").write_text("output = (\n")
        supervisor.handle(SignalReceived(signal.SIGHUP))  # does not compile: an error of the supervisor, newer
        expected = "SyntaxError"
    else:
        engines[-1].health_now.last_error_time = wall() + 5
        expected = "a cycle failed"
    shown = supervisor.status().engine.last_error
    assert expected in shown, shown


def test_each_state_change_is_one_line_published_and_told_to_systemd(setup, caplog):
    supervisor, engines, *_ = setup
    notifier = supervisor.notifier
    started(supervisor)
    engines[-1].health_now = Health(state=EngineState.RUNNING, chunks=1)
    supervisor.tick()  # the first chunk: READY=1
    supervisor.handle(SignalReceived(signal.SIGHUP))
    settle(supervisor)
    with pytest.raises(_Exit):
        supervisor.handle(SignalReceived(signal.SIGTERM))
    assert notifier.without_status() == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    changes = re.findall(r"state: [a-z ]+ -> [a-z ]+: .*", caplog.text)
    assert changes == [
        "state: starting -> connecting: starting live data",
        "state: connecting -> running: the data source is open",
        "state: running -> reloading: scripts reloaded",
        "state: reloading -> connecting: starting live data",
        "state: connecting -> running: the data source is open",
        "state: running -> stopping: SIGTERM",
        "state: stopping -> stopped: exit 0",
    ]
    assert notifier.sent.count("STATUS") >= len(changes) + 1  # every change and the tick publish


def test_a_restart_that_cannot_heal_exits_with_its_code(setup):
    supervisor, _, plan, *_ = setup
    started(supervisor)
    plan.append({"fail_start": SourceError("'x.nxs': no such file")})
    assert exit_code(supervisor, SignalReceived(signal.SIGHUP)) == 3
    assert supervisor.state is State.STOPPED


def test_a_restart_that_may_heal_backs_off(setup):
    supervisor, _, plan, *_ = setup
    started(supervisor)
    plan.append({"fail_start": SourceError("connection refused", recoverable=True)})
    supervisor.handle(SignalReceived(signal.SIGHUP))
    assert supervisor.state is State.BACKING_OFF


def test_sigquit_exits_7(setup):
    supervisor, *_ = setup
    started(supervisor)
    assert exit_code(supervisor, SignalReceived(signal.SIGQUIT)) == 7
    assert supervisor.state is State.STOPPED


def test_memory_restarts_and_then_exits_5(setup):
    supervisor, engines, _, clock, _ = setup
    started(supervisor)
    for _ in range(sv.MEMORY_RESTARTS):
        supervisor.handle(sv.MemoryExceeded(rss=2, limit=1, when=clock.monotonic()))
        settle(supervisor)
        assert supervisor.state is State.RUNNING
    assert exit_code(supervisor, sv.MemoryExceeded(rss=2, limit=1, when=clock.monotonic())) == 5
    assert len(engines) == sv.MEMORY_RESTARTS + 1


def test_the_whole_loop_and_late_events_after_it_ended(setup):
    """run() from start to exit; events posted afterwards (a thread that outlived a stop timeout) are harmless."""
    supervisor, engines, *_ = setup
    supervisor.events.put(SignalReceived(signal.SIGHUP))  # before the start: loads the scripts, no extra engine
    supervisor.events.put(SignalReceived(signal.SIGTERM))
    assert supervisor.run() == 0
    assert engines == []  # the SIGTERM came before the start: nothing was started
    for _ in range(10_000):
        supervisor.events.put(FromEngine(1, EngineFailed(RuntimeError("late"), recoverable=True)))
    assert supervisor.state is State.STOPPED


def test_an_unsafe_status_directory_refuses_the_start(tmp_path, monkeypatch):
    """Defect 1, at the supervisor: the planted per-user directory is a ConfigError (exit 2) before anything runs."""
    from livereduce import status_file

    monkeypatch.setattr(status_file, "RUN_DIRECTORY", tmp_path / "no-run")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("LIVEREDUCE_STATUS_FILE", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(status_file.tempfile, "tempdir", None)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / f"livereduce-{__import__('os').geteuid()}").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "reduce_SANS2D_live_proc.py").write_text("output = input\n")
    loaded = LoadedConfig(Config(instrument="SANS2D", script_dir=str(tmp_path)), None, "")
    with pytest.raises(ConfigError, match="refused: it is a symbolic link") as refused:
        Supervisor(loaded, FakeEngine, load_scripts(tmp_path, "SANS2D"), watcher=FakeWatcher())
    assert refused.value.exit_code == 2
    assert list((tmp_path / "elsewhere").iterdir()) == []


def _fail(supervisor: Supervisor, *, at_start: bool = False) -> None:
    supervisor.handle(current(supervisor, EngineFailed(SourceError("lost"), recoverable=True, at_start=at_start)))


def _stop(supervisor: Supervisor) -> None:
    with pytest.raises(_Exit):
        supervisor.handle(SignalReceived(signal.SIGTERM))


def _walk_running(rig: Rig) -> None:
    """starting, connecting, running, reloading, backing off, waiting, stopping, stopped."""
    supervisor = rig.supervisor
    started(supervisor)
    supervisor.handle(SignalReceived(signal.SIGHUP))
    settle(supervisor)
    _fail(supervisor)
    supervisor.handle(SignalReceived(signal.SIGHUP))
    settle(supervisor)
    rig.proc.unlink()
    supervisor.handle(FilesChanged(frozenset({rig.proc})))
    rig.proc.write_text("output = input\n")
    supervisor.handle(FilesChanged(frozenset({rig.proc})))
    settle(supervisor)
    _fail(supervisor)
    rig.proc.unlink()
    supervisor.handle(FilesChanged(frozenset({rig.proc})))
    _stop(supervisor)


def _walk_connecting(rig: Rig) -> None:
    """A source that takes its time: connecting -> backing off -> connecting -> reloading -> waiting."""
    supervisor = rig.supervisor
    started(supervisor)
    _fail(supervisor, at_start=True)
    rig.clock.now += 1
    supervisor.tick()
    supervisor.handle(SignalReceived(signal.SIGHUP))
    _fail(supervisor, at_start=True)
    _stop(supervisor)


def _steps(rig: Rig, steps: str) -> None:
    """Each character a step: ``s`` start, ``h`` SIGHUP, ``t`` SIGTERM, ``d`` delete the script."""
    supervisor = rig.supervisor
    for step in steps:
        if step == "s":
            started(supervisor)
        elif step == "h":
            supervisor.handle(SignalReceived(signal.SIGHUP))
        elif step == "t":
            supervisor.handle(SignalReceived(signal.SIGTERM))
        else:
            rig.proc.unlink()
            supervisor.handle(FilesChanged(frozenset({rig.proc})))


WALKS = [
    ([], _walk_running),
    ([{"opens": False}] * 3, _walk_connecting),
    ([], "t"),  # starting -> stopping
    ([], "st"),  # running -> stopping
    ([{"opens": False}], "sdt"),  # connecting -> waiting for scripts
    ([{"opens": False, "stops": False}], "st"),  # connecting -> stopping -> stop timed out
    ([{"opens": False, "stops": False}], "sd"),  # connecting -> stop timed out
    ([{"stops": False}], "sd"),  # running -> stop timed out
    ([{"stops": False}], "sh"),  # reloading -> stop timed out
]


def test_every_transition_of_the_table_is_made_and_no_other(tmp_path, monkeypatch, caplog):
    """The table lists exactly what the supervisor does: walks through the states make every transition of it."""
    caplog.set_level(logging.INFO)
    for number, (plan, walk) in enumerate(WALKS):
        directory = tmp_path / str(number)
        directory.mkdir()
        rig = make_rig(directory, monkeypatch)
        rig.plan.extend(plan)
        try:
            walk(rig) if callable(walk) else _steps(rig, walk)
        except _Exit:
            pass
    made = set(re.findall(r"state: ([a-z ]+) -> ([a-z ]+):", caplog.text))
    table = {(state.value, target.value) for state, targets in TRANSITIONS.items() for target in targets}
    assert table - made == set(), "transitions in the table that the supervisor never makes"
    assert made - table == set()


@pytest.mark.parametrize("hot", [True, False], ids=["scipp: in place", "mantid: restart"])
def test_a_post_proc_edit_goes_to_the_running_engine_when_it_can_take_it(setup, hot):
    supervisor, engines, plan, _, proc = setup
    plan.append({"hot": hot})
    started(supervisor)
    post_proc = proc.with_name("reduce_SANS2D_live_post_proc.py")
    post_proc.write_text("output = input\n")
    supervisor.handle(FilesChanged(frozenset({post_proc})))
    settle(supervisor)
    if hot:
        assert len(engines) == 1
        assert [s.post_proc.path for s in engines[0].post_proc_reloads] == [post_proc]
        assert supervisor.reloads == {"post_proc": 1}
        assert supervisor.restarts["scripts"] == 0
        assert supervisor.watcher.accepted[post_proc] == supervisor.scripts.post_proc.sha256
        supervisor.tick()
        assert status_file(supervisor)["reloads"] == {"post_proc": 1}
    else:
        assert len(engines) == 2
        assert supervisor.reloads == {"post_proc": 0}
        assert supervisor.restarts["scripts"] == 1
    assert supervisor.scripts.post_proc.path == post_proc
    assert supervisor.state is State.RUNNING


def test_a_proc_edit_restarts_even_when_the_engine_takes_post_proc_edits(setup):
    supervisor, engines, _, _, proc = setup
    started(supervisor)
    proc.write_text("output = input  # edited\n")
    supervisor.handle(FilesChanged(frozenset({proc})))
    settle(supervisor)
    assert len(engines) == 2
    assert engines[0].post_proc_reloads == []
    assert engines[1].fresh is None  # the engine itself refuses the checkpoint: the proc script's md5 changed


def test_sighup_and_the_memory_limit_start_fresh_and_a_failure_resumes(setup):
    supervisor, engines, _, clock, _ = setup
    started(supervisor)
    assert engines[0].fresh is None
    supervisor.handle(SignalReceived(signal.SIGHUP))
    settle(supervisor)
    assert engines[1].fresh == "SIGHUP"
    supervisor.handle(sv.MemoryExceeded(rss=2, limit=1, when=clock.monotonic()))
    settle(supervisor)
    assert engines[2].fresh.startswith("memory limit")
    supervisor.handle(current(supervisor, EngineFailed(SourceError("SMS went away"), recoverable=True)))
    clock.now += 60
    supervisor.tick()
    settle(supervisor)
    assert len(engines) == 4
    assert engines[3].fresh is None
