"""The supervisor in process: its state machine, one engine at a time, back-off, exits — with a fake engine, a fake
watcher and a clock that does not sleep. Fast and deterministic; the subprocess tests (test_supervision.py,
test_signals.py) show the same behaviour with the real daemon."""

from __future__ import annotations

import itertools
import logging
import signal
from pathlib import Path

import pytest

from conftest import FakeClock
from livereduce import supervisor as sv
from livereduce.config import Config, LoadedConfig
from livereduce.engines.base import EngineFailed, EngineFinished, EngineState, Health
from livereduce.errors import ScriptError, SourceError
from livereduce.events import EventQueue, SignalReceived
from livereduce.scripts import load_scripts
from livereduce.supervisor import FromEngine, IllegalTransition, State, Supervisor, _Exit
from livereduce.watch import FilesChanged


class FakeEngine:
    """Records its life; ``live`` counts the engines started and not stopped, across all instances."""

    name = "fake"
    live = 0
    started: list[FakeEngine]

    def __init__(self, fail_start: Exception | None = None, stops: bool = True) -> None:
        self.fail_start = fail_start
        self.stops = stops
        self.notify = None
        self.running = False
        self.health_now = Health(state=EngineState.STARTING)

    def start(self, scripts, notify) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        assert FakeEngine.live == 0, "a second engine started while one runs"
        FakeEngine.live += 1
        self.running = True
        self.notify = notify
        self.health_now = Health(state=EngineState.RUNNING)

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


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A supervisor over fake parts; ``engines`` lists every engine built, ``plan`` what the next ones do."""
    FakeEngine.live = 0
    proc = tmp_path / "reduce_SANS2D_live_proc.py"
    proc.write_text("output = input\n")
    config = Config(instrument="SANS2D", script_dir=str(tmp_path), status_file=str(tmp_path / "status.json"))
    loaded = LoadedConfig(config, None, "")
    engines: list[FakeEngine] = []
    plan: list[dict] = []

    def make_engine() -> FakeEngine:
        engine = FakeEngine(**(plan.pop(0) if plan else {}))
        engines.append(engine)
        return engine

    clock = FakeClock(now=1000.0)
    watcher = FakeWatcher()
    monkeypatch.setattr(sv, "MemoryMonitor", _NoMemory)
    scripts = load_scripts(tmp_path, "SANS2D")
    supervisor = Supervisor(loaded, make_engine, scripts, EventQueue(), clock=clock, watcher=watcher)
    return supervisor, engines, plan, clock, proc


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


def started(supervisor: Supervisor) -> None:
    supervisor._start_first()


def exit_code(supervisor: Supervisor, event: object) -> int:
    with pytest.raises(_Exit) as done:
        supervisor.handle(event)
    return done.value.code


def test_every_state_has_a_way_out_except_the_final_ones():
    for state, targets in sv.TRANSITIONS.items():
        final = state in (State.STOPPED, State.STOP_TIMED_OUT)
        assert bool(targets) != final, state
        if not final and state is not State.STOPPING:
            assert State.STOPPING in targets, f"{state} cannot be stopped"


def test_an_illegal_transition_is_refused(setup):
    supervisor, *_ = setup
    with pytest.raises(IllegalTransition, match="starting -> waiting for scripts"):
        supervisor._enter(State.WAITING_FOR_SCRIPTS)


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


def test_sigusr1_logs_the_status_and_sigusr2_is_ignored(setup, caplog):
    caplog.set_level(logging.INFO)
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
        supervisor.handle(FromEngine(supervisor._generation, EngineFailed(SourceError("lost"), recoverable=True)))
        assert supervisor.state is State.BACKING_OFF
        assert FakeEngine.live == 0
        clock.now += delay - 0.01
        supervisor.tick()
        assert supervisor.state is State.BACKING_OFF, "restarted before the back-off elapsed"
        clock.now += 0.01
        supervisor.tick()
        assert supervisor.state is State.RUNNING
        assert engines[-1] is not engine
    assert supervisor.restarts["failures"] == 3


def test_an_unrecoverable_source_error_exits_with_its_code(setup):
    supervisor, *_ = setup
    started(supervisor)
    failed = EngineFailed(SourceError("'x.nxs' cannot be read"), recoverable=False)
    assert exit_code(supervisor, FromEngine(supervisor._generation, failed)) == 3
    assert supervisor.state is State.STOPPED
    assert FakeEngine.live == 0


def test_a_replaced_engines_late_events_are_ignored(setup):
    supervisor, engines, *_ = setup
    started(supervisor)
    old_generation = supervisor._generation
    supervisor.handle(SignalReceived(signal.SIGHUP))
    supervisor.handle(FromEngine(old_generation, EngineFinished("old run ended")))
    supervisor.handle(FromEngine(old_generation, EngineFailed(RuntimeError("old"), recoverable=True)))
    assert supervisor.state is State.RUNNING
    assert engines[-1].running
    # positive control: the same events from the current engine are acted on
    assert exit_code(supervisor, FromEngine(supervisor._generation, EngineFinished("run ended"))) == 0


def test_a_script_error_at_the_first_start_backs_off_instead_of_exiting(setup):
    supervisor, engines, plan, clock, _ = setup
    plan.append({"fail_start": ScriptError("proc failed in the first chunk")})
    started(supervisor)
    assert supervisor.state is State.BACKING_OFF
    clock.now += 1
    supervisor.tick()
    assert supervisor.state is State.RUNNING
    assert len(engines) == 2


def test_a_source_error_at_the_first_start_ends_the_daemon_unless_it_can_heal(setup):
    supervisor, _, plan, *_ = setup
    plan.append({"fail_start": SourceError("no such file")})
    with pytest.raises(SourceError):
        started(supervisor)
    plan.append({"fail_start": SourceError("connection refused", recoverable=True)})
    supervisor.state = State.STARTING
    started(supervisor)
    assert supervisor.state is State.BACKING_OFF


def test_stop_timeout_is_its_own_state_and_exit_6(setup):
    supervisor, _, plan, *_ = setup
    plan.append({"stops": False})
    started(supervisor)
    assert exit_code(supervisor, SignalReceived(signal.SIGTERM)) == 6
    assert supervisor.state is State.STOP_TIMED_OUT
    assert supervisor.status()["state"] == "stop timed out"


def test_deleting_every_script_waits_and_a_new_one_resumes(setup):
    supervisor, engines, _, _, proc = setup
    started(supervisor)
    proc.unlink()
    supervisor.handle(FilesChanged(frozenset({proc})))
    assert supervisor.state is State.WAITING_FOR_SCRIPTS
    assert FakeEngine.live == 0
    proc.write_text("output = input\n")
    supervisor.handle(FilesChanged(frozenset({proc})))
    assert supervisor.state is State.RUNNING
    assert len(engines) == 2


def test_a_broken_edit_keeps_the_running_engine(setup, caplog):
    caplog.set_level(logging.INFO)
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
    assert status["engine"]["chunks"] == 5
    assert status["engine"]["errors"] == 2
    assert status["engine"]["run_number"] == 7
    assert status["exit"]["code"] == 0
    assert status["exit"]["reason"] == "SIGTERM"


def test_a_restart_that_cannot_heal_exits_with_its_code(setup):
    supervisor, _, plan, *_ = setup
    started(supervisor)
    plan.append({"fail_start": SourceError("'x.nxs': no such file")})
    assert exit_code(supervisor, SignalReceived(signal.SIGHUP)) == 3
    assert supervisor.state is State.STOPPED
    plan.append({"fail_start": SourceError("connection refused", recoverable=True)})  # positive control
    supervisor.state = State.RUNNING
    supervisor.engine = None
    supervisor.handle(SignalReceived(signal.SIGHUP))
    assert supervisor.state is State.BACKING_OFF


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
