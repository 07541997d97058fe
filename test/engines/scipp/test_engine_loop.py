"""The scipp engine's MonitorLiveData loop in process: schedule, chunk numbering, idle at the end of the source,
run_transition Stop, source errors — with a scripted listener and a clock that does not sleep."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
import pytest

from conftest import FakeClock
from livereduce.config import Config
from livereduce.engines.base import CycleCompleted, EngineFailed, EngineFinished, EngineStarted, EngineState
from livereduce.engines.scipp.chunk import RunMetadata, make_chunk
from livereduce.engines.scipp.engine import ScippEngine
from livereduce.engines.scipp.listeners.base import Extracted, Listener, RunStatus
from livereduce.errors import SourceError
from livereduce.scripts import ProcessingScripts, load_script


class Scripted(Listener):
    """Plays a list of steps: each an Extracted-like tuple (status, ids, dropped, ended[, more_buffered[, full]])
    or an exception; ``full``: the buffer fills again right after that extract (the engine's callback is called),
    or the reason the source gives the engine (a string)."""

    name = "Scripted"

    def __init__(self, steps: list, clock: FakeClock, cycle_seconds: float = 0.0) -> None:
        self.steps = list(steps)
        self.clock = clock
        self.cycle_seconds = cycle_seconds
        self.extracts: list[float] = []
        self.stop_after_steps: threading.Event | None = None
        self.ready: Callable[[str], None] | None = None

    def on_data_ready(self, callback: Callable[[str], None]) -> None:
        self.ready = callback

    def connect(self) -> None:
        return

    def start(self, position, resume=None) -> None:
        return

    def extract(self) -> Extracted:
        self.extracts.append(self.clock.now)
        self.clock.now += self.cycle_seconds
        if not self.steps:
            self.stop_after_steps.set()
            return Extracted(_chunk([]), RunStatus.Running, (0, 9))
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        status, ids, dropped, ended, *more = step  # more: (more_buffered, buffer full after this extract)
        more_buffered, full = (*more, False, False)[:2]
        if full and self.ready is not None:  # (an engine that takes no early chunk: no one hears)
            self.ready(full if isinstance(full, str) else "source buffer half full")  # e.g. the buffer is half full
        return Extracted(_chunk(ids), status, (0, 9), dropped=dropped, ended=ended, more_buffered=more_buffered)


def _chunk(ids: list[int]):
    times = np.datetime64("2026-01-01", "ns") + np.arange(len(ids)).astype("timedelta64[ns]")
    return make_chunk(
        np.array(ids, np.int32),
        np.ones(len(ids), np.float32),
        times,
        np.arange(len(ids)),
        metadata=RunMetadata(run_number=3),
    )


def run_loop(steps: list, caplog, *, cycle_seconds: float = 0.0, **config):
    """Run the engine's loop in this thread until the steps are used up; returns (engine, listener, events)."""
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    listener = Scripted(steps, clock, cycle_seconds)
    engine = ScippEngine(Config(update_every=10, **config), listener=listener, clock=clock)
    listener.stop_after_steps = engine._stop
    events: list = []
    engine.start(ProcessingScripts(None, None), events.append)
    engine._thread.join(10)
    assert not engine._thread.is_alive()
    cycles = [event for event in events if isinstance(event, CycleCompleted)]
    assert len(cycles) == len(listener.extracts) - isinstance(events[-1:] and events[-1], EngineFailed)
    assert events[0] == EngineStarted()
    return engine, listener, [event for event in events[1:] if not isinstance(event, CycleCompleted)], clock


RUNNING = (RunStatus.Running, [1, 2], {}, False)


def test_cycles_start_every_update_every_seconds_and_a_slow_one_owes_nothing(caplog):
    _, listener, _, _ = run_loop([RUNNING] * 4, caplog, cycle_seconds=3)
    # initial chunk at 0 (3 s), then from its end: 13, then start to start: 23, 33; one more empty at 43
    assert listener.extracts == [0, 13, 23, 33, 43]
    _, slow, _, _ = run_loop([RUNNING] * 3, caplog, cycle_seconds=25)
    assert slow.extracts == [0, 35, 60, 85]  # a 25 s cycle: the next starts at once, no catching up


def test_chunks_are_numbered_as_mantid_numbers_them(caplog):
    engine, *_ = run_loop([RUNNING] * 3, caplog)
    messages = [r.getMessage() for r in caplog.records if r.name == "livereduce.MonitorLiveData"]
    loading = [m.split(" at ")[0] for m in messages if m.startswith("Loading live data chunk")]
    assert loading[:2] == ["Loading live data chunk 0", "Loading live data chunk 1"]
    assert any(m.startswith("Initial chunk: 2 events") for m in messages)
    assert any(m.startswith("Chunk 0: 2 events") for m in messages)
    assert engine.health().chunks == 4  # the initial chunk and chunks 0, 1, 2 (the empty one)


def test_an_ended_source_makes_the_engine_idle_without_polling(caplog):
    engine, listener, events, clock = run_loop([RUNNING, (RunStatus.EndRun, [3], {}, True)], caplog)
    assert len(listener.extracts) == 2  # nothing extracted after the end
    assert clock.waits[-1] is None  # an unbounded wait for the stop, not a poll
    assert engine.health().state is EngineState.IDLE
    assert events == []
    assert "The source has ended" in caplog.text


def test_run_transition_stop_finishes_the_engine(caplog):
    engine, listener, events, _ = run_loop(
        [RUNNING, (RunStatus.EndRun, [3], {}, False), RUNNING], caplog, run_transition="Stop"
    )
    assert len(listener.extracts) == 2
    assert events == [EngineFinished("run 3 ended (RunTransitionBehavior Stop)")]
    assert engine.health().state is EngineState.FINISHED


def test_dropped_events_are_logged_per_chunk_and_summed_in_health(caplog):
    dropped = (RunStatus.Running, [1], {"event_id outside 0..9": 4}, False)
    engine, *_ = run_loop([dropped, RUNNING, dropped], caplog)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Initial chunk: 4 events dropped at the source: 4 event_id outside 0..9",
        "Chunk 1: 4 events dropped at the source: 4 event_id outside 0..9",
    ]
    assert engine.health().dropped_events == {"event_id outside 0..9": 8}


@pytest.mark.parametrize(
    ("error", "recoverable"),
    [
        (SourceError("'x.nxs' cannot be read"), False),
        (SourceError("connection lost", recoverable=True), True),
        (RuntimeError("a bug"), True),
    ],
)
def test_a_source_error_ends_the_engine_recoverable_as_the_error_says(caplog, error, recoverable):
    engine, _, events, _ = run_loop([RUNNING, error], caplog)
    assert len(events) == 1
    assert isinstance(events[0], EngineFailed)
    assert events[0].recoverable is recoverable
    assert engine.health().state is EngineState.FAILED


def test_each_cycle_reports_its_duration_and_the_step_that_failed(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    proc = tmp_path / "proc.py"
    proc.write_text("if input.sizes['event_time_zero'] == 1:\n    raise ValueError('one pulse')\n")
    clock = FakeClock()
    listener = Scripted([RUNNING, (RunStatus.Running, [5], {}, False), RUNNING], clock, cycle_seconds=2)
    engine = ScippEngine(Config(update_every=10), listener=listener, clock=clock)
    listener.stop_after_steps = engine._stop
    events: list = []
    engine.start(ProcessingScripts(load_script("proc", proc), None), events.append)
    engine._thread.join(10)
    assert events[0] == EngineStarted()
    assert [(e.duration, e.failed) for e in events[1:]] == [(2, None), (2, "proc"), (2, None), (2, None)]


def test_a_chunk_of_no_run_says_so(caplog):
    run_loop([(RunStatus.NoRun, [], {}, False), RUNNING], caplog)
    messages = [r.getMessage() for r in caplog.records if r.name == "livereduce.MonitorLiveData"]
    assert any(m.startswith("Initial chunk: 0 events in 0 pulses (no run);") for m in messages), messages
    assert any(m.startswith("Chunk 0: 2 events in 2 pulses (run 3, Running);") for m in messages), messages


def test_a_chunk_that_ends_a_run_with_the_next_run_buffered_behind_it_is_followed_at_once(caplog):
    end_with_more = (RunStatus.EndRun, [3], {}, False, True)
    _, listener, _, _ = run_loop([RUNNING, end_with_more, RUNNING, RUNNING], caplog)
    # the new run's first data is taken right after the end of the previous one, not a cycle later
    assert listener.extracts == [0, 10, 10, 20, 30]
    _, plain, _, _ = run_loop([RUNNING, (RunStatus.EndRun, [3], {}, False), RUNNING], caplog)
    assert plain.extracts == [0, 10, 20, 30]  # nothing buffered behind the end: the schedule as always


def test_an_early_part_that_ends_a_run_with_the_next_run_behind_it_is_followed_by_a_cycle_at_once(caplog):
    caplog.set_level(logging.DEBUG)
    told_run_end = (RunStatus.Running, [1, 2], {}, False, False, "run ended")
    end_with_more = (RunStatus.EndRun, [3], {}, False, True)
    _, listener, _, _ = run_loop([RUNNING, told_run_end, end_with_more, RUNNING, RUNNING], caplog)
    # chunk 0 at 10; the run ends meanwhile: its last part at once, and the next run's first cycle right after it
    assert listener.extracts == [0, 10, 10, 10, 20, 30]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    ended = "Chunk 1, early part 1 (run ended): 1 events in 1 pulses (run 3, EndRun)"
    assert any(m.startswith(ended) for m in messages)
    assert any(m.startswith("Chunk 1: 2 events") for m in messages)  # the next run's data, post-processed
    _, plain, _, _ = run_loop([RUNNING, told_run_end, (RunStatus.EndRun, [3], {}, False), RUNNING], caplog)
    assert plain.extracts == [0, 10, 10, 20, 30]  # nothing behind the end: the next cycle on schedule


def _post_proc_counting(tmp_path):
    post_proc = tmp_path / "post_proc.py"
    post_proc.write_text("mtd['post_proc runs'] = mtd.get('post_proc runs', 0) + 1\noutput = input\n")
    return ProcessingScripts(None, load_script("post_proc", post_proc))


@pytest.mark.parametrize(
    ("accum_method", "early_chunks", "early"), [("Add", True, 2), ("Add", False, 0), ("Replace", True, 0)]
)
def test_a_full_buffer_takes_an_early_chunk_for_add_and_post_proc_keeps_its_cadence(
    tmp_path, caplog, accum_method, early_chunks, early
):
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    full = (RunStatus.Running, [1, 2], {}, False, False, True)
    listener = Scripted([RUNNING, full, full, RUNNING, RUNNING], clock)
    config = Config(update_every=10, accum_method=accum_method, early_chunks=early_chunks)
    engine = ScippEngine(config, listener=listener, clock=clock)
    listener.stop_after_steps = engine._stop
    engine.start(_post_proc_counting(tmp_path), [].append)
    engine._thread.join(10)
    messages = [r.getMessage() for r in caplog.records if ", early part " in r.getMessage()]
    assert len(messages) == early
    assert all(r.levelno == logging.DEBUG for r in caplog.records if ", early part " in r.getMessage())
    health = engine.health()
    assert health.events == 10  # every event of the five extracts accumulated, early or not
    assert engine._loader.workspaces["post_proc runs"] == health.chunks  # post_proc only on the cycles
    if early:
        assert messages[0].startswith("Chunk 1, early part 1 (source buffer half full): 2 events in 2 pulses")
        assert listener.extracts == [0, 10, 10, 10, 20, 30]  # the early parts at once, the cycles on schedule
        assert health.chunks == 4
        cycle = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Chunk 1: "))
        assert "(run 3, Running) (and 4 events in 2 early parts before); accumulation" in cycle


def test_a_post_proc_swap_runs_on_the_accumulation_at_once_without_a_chunk(caplog, tmp_path):
    """The supervisor hands over a new post_proc while the engine waits for its next cycle: the cycle thread runs it
    on the accumulation before any further extract, and the accumulation and the source are untouched."""
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    post = tmp_path / "post.py"
    post.write_text("print('post v1', input.bins.size().sum().value)\noutput = input\n")
    first = ProcessingScripts(None, load_script("post_proc", post))
    post.write_text("print('post v2', input.bins.size().sum().value)\noutput = input\n")
    second = ProcessingScripts(None, load_script("post_proc", post))
    listener = Scripted([RUNNING, RUNNING], clock)
    engine = ScippEngine(Config(update_every=10), listener=listener, clock=clock)
    listener.stop_after_steps = engine._stop
    swapped_after: list[int] = []

    def wait(event: threading.Event, timeout: float | None) -> bool:
        if len(listener.extracts) == 2 and not swapped_after:  # waiting after chunk 0: the edit arrives
            swapped_after.append(len(listener.extracts))
            engine.reload_post_proc(second)
        return FakeClock.wait(clock, event, timeout)

    clock.wait = wait
    events: list = []
    engine.start(first, events.append)
    engine._thread.join(10)
    messages = [r.getMessage() for r in caplog.records]
    swap = messages.index("post v2 4")  # the accumulation of both chunks, not an empty one; then the engine's line
    assert messages[swap + 1].startswith(
        "Post-processing script reloaded: post_proc on the accumulation (run 3, 4 events)"
    )
    assert "post v1 4" in messages[:swap]
    assert not any(m.startswith("post v1") for m in messages[swap:])
    assert len(listener.extracts) == 3  # the swap took no chunk: the initial chunk, chunk 0, then the empty one
    assert engine._loader.accumulator.event_count == 4
