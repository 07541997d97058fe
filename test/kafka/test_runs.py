"""The Kafka run routing and partition bookkeeping without a broker: run starts and stops, pulses and log values
in, the head run's data out (``protocols/kafka/runs.py``); offsets, marks and their verification after a lost
connection (``protocols/kafka/partitions.py``). Each rule of docs/architecture.md's "Runs" table has a test here."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from streaming_data_types import serialise_6s4t, serialise_pl72

from livereduce.protocols.kafka.partitions import Partitions, mark
from livereduce.protocols.kafka.reading import ReadState
from livereduce.protocols.kafka.runs import (
    AFTER_THEIR_RUN,
    LIMBO_FRACTION,
    MAX_PENDING_RUNS,
    NEVER,
    OUTSIDE_A_RUN,
    STOP_LATENCY_S,
    RunRouter,
    last_run_start,
)
from livereduce.protocols.kafka.schemas import RUN_SCHEMAS, LogValue, RunStart, RunStop, Skipped, decode
from livereduce.protocols.kafka.segments import Block, Taken
from livereduce.protocols.kafka.topics import broker_states

S = 1_000_000_000
T0 = 1_800_000_000 * S
BLOCK_BYTES = 100
KEY, KEY_1, RUN_INFO = ("X_events", 0), ("X_events", 1), ("X_runInfo", 0)


def start(at: int, run: str = "1", job: str = "", stop: int | None = None, ns: bool = False) -> RunStart:
    return RunStart(run, "TEST", at, stop, job, "f.nxs", (0, 99), nanosecond_times=ns)


def stop(at: int, run: str = "1", job: str = "") -> RunStop:
    return RunStop(run, job, at)


def block(times_ns: list[int], per_pulse: int = 2, pixel: int = 5) -> Block:
    """``per_pulse`` events per pulse on ``pixel``, TOF 1000 ns, 2000 ns, ...; costs BLOCK_BYTES + 16 per pulse."""
    times = np.asarray(times_ns, np.int64)
    tof = np.tile(np.arange(1, per_pulse + 1, dtype=np.int32) * 1000, times.size)
    ids = np.full(times.size * per_pulse, pixel, np.int32)
    return Block(
        "bank", times, np.arange(times.size, dtype=np.int64) * per_pulse, ids, tof, BLOCK_BYTES + 16 * times.size
    )


class Router(RunRouter):
    """A RunRouter that keeps its warnings (kinds) and runs on a monotonic time the test sets."""

    def __init__(self, buffer_limit: int = 10**6, lower: int | None = None, found: RunStart | None = None) -> None:
        self.warnings: list[str] = []
        super().__init__(buffer_limit, lambda kind, message: self.warnings.append(kind))
        self.now = 0.0
        self.begin(lower, found, [], self.now)

    def start(self, run_start: RunStart) -> None:
        self.run_start(run_start, self.now)

    def stop(self, run_stop: RunStop) -> None:
        self.run_stop(run_stop, self.now)


def times(taken: Taken) -> list[int]:
    return [int(t) for b in taken.events for t in b.times]


def summary(taken: Taken) -> tuple[str, int, bool, list[int]]:
    """(status, run number, data reset, pulse times relative to T0 in s)."""
    number = taken.run.number if taken.run is not None else 0
    return taken.status, number, taken.reset, [(t - T0) / S for t in times(taken)]


# --- runs ---------------------------------------------------------------------------------------------------
def test_the_first_run_is_no_transition_and_its_first_chunk_no_reset_when_it_is_the_very_first():
    router = Router()
    router.start(start(T0, run="12"))
    router.events(block([T0 + S]), monitor=False)

    taken = router.take()
    assert summary(taken) == ("Running", 12, False, [1.0])
    assert taken.run.start.run_name == "12"
    assert summary(router.take()) == ("Running", 12, False, [])


def test_the_first_chunk_of_a_run_after_chunks_of_no_run_has_data_reset():
    router = Router()
    assert summary(router.take()) == ("NoRun", 0, False, [])
    router.start(start(T0))
    router.events(block([T0 + S]), monitor=False)
    assert summary(router.take()) == ("Running", 1, True, [1.0])
    assert summary(router.take()) == ("Running", 1, False, [])


def test_run_number_from_digits_else_zero():
    assert start(T0, run="0042").run_number == 42
    assert start(T0, run="run 7").run_number == 0


def test_a_run_start_while_a_run_is_open_stops_it_there_and_it_ends_with_begin_run_once_the_data_passed():
    router = Router()
    router.start(start(T0, run="1", job="a"))
    router.events(block([T0 + 1 * S, T0 + 5 * S]), monitor=False)  # both in run 1 while it is open
    router.start(start(T0 + 3 * S, run="2", job="b"))  # moves the pulse at 5 s to run 2
    router.events(block([T0 + 2 * S, T0 + 4 * S]), monitor=False)  # straddles the boundary: split

    # (was: BeginRun at once) run 1 ends only once its data partition has passed 3 s: until then it is running
    assert summary(router.take()) == ("Running", 1, False, [1.0, 2.0])
    assert router.take().run.stop_ns == T0 + 3 * S
    router.check_stop([(T0 + 4 * S, False)], T0 + 10 * S, router.now)
    assert summary(router.take()) == ("BeginRun", 1, False, [])
    assert router.pulses_waiting  # run 2's pulses are behind the chunk that ended run 1: the engine takes them now
    assert summary(router.take()) == ("Running", 2, True, [5.0, 4.0])
    assert not router.pulses_waiting
    assert router.current.number == 2
    assert router.take().run.stop_ns is None


def test_a_run_start_after_a_known_stop_ends_the_run_with_end_run():
    router = Router()
    router.start(start(T0, run="1"))
    router.events(block([T0 + S]), monitor=False)
    router.stop(stop(T0 + 2 * S, run="1"))
    router.start(start(T0 + 3 * S, run="2"))
    router.check_stop([(T0 + 2 * S, False)], T0 + 10 * S, router.now)  # (was: ended by the run start at once)
    assert summary(router.take()) == ("EndRun", 1, False, [1.0])
    assert router.take().run.number == 2


def test_a_repeated_run_start_is_ignored_and_an_older_one_is_stale():
    router = Router()
    router.start(start(T0, run="1", job="a"))
    router.events(block([T0 + S]), monitor=False)
    router.start(start(T0, run="1", job="a"))  # the same pl72 read again
    router.start(start(T0 - S, run="0", job="z"))  # not after the current run's start
    router.start(start(T0, run="9", job="y"))  # at the same time: not after either

    assert summary(router.take()) == ("Running", 1, False, [1.0])
    assert router.counters["skipped_stale_run_start"] == 2
    assert router.warnings == ["stale", "stale"]


def test_a_run_stop_is_matched_by_job_id_else_run_name():
    router = Router()
    router.start(start(T0, run="1", job="a"))
    router.stop(stop(T0 + S, run="1", job="b"))  # job ids differ: not this run's
    router.stop(RunStop("2", "", T0 + S))  # no job id: run names differ
    assert router.counters["skipped_unmatched_stop"] == 2
    assert router.current.stop_ns is None
    router.stop(RunStop("", "a", T0 + S))  # the job id matches
    assert router.current.stop_ns == T0 + S
    router.check_stop([(T0 + 2 * S, False)], T0 + 3 * S, router.now)
    router.stop(stop(T0 + S, run="1", job="a"))  # the run has ended: a repeated stop matches no open run
    assert router.counters["skipped_unmatched_stop"] == 3


def test_the_run_ends_once_every_data_partition_has_passed_the_stop():
    router = Router()
    router.start(start(T0))
    router.events(block([T0 + S, T0 + 3 * S]), monitor=False)  # 3 s: beyond the stop, held for a next run
    router.now = 100.0
    router.stop(stop(T0 + 2 * S))
    stop_ns = T0 + 2 * S

    router.check_stop([(T0 + 3 * S, False), (T0 + S, False)], stop_ns + 5 * S, 200.0)  # one not there yet
    assert not router.current.closed
    router.check_stop([(T0 + 3 * S, False), (T0 + S, True)], stop_ns + 5 * S, 100.0 + STOP_LATENCY_S / 2)
    assert not router.current.closed  # at its end, but not for STOP_LATENCY_S yet
    router.check_stop([(T0 + 3 * S, False), (T0 + S, True)], stop_ns - 1, 100.0 + STOP_LATENCY_S)
    assert not router.current.closed  # at its end long enough, but the wall clock is before the stop
    router.check_stop([(T0 + 3 * S, False), (T0 + S, True)], stop_ns, 100.0 + STOP_LATENCY_S)
    assert router.current.closed

    taken = router.take()
    assert summary(taken) == ("EndRun", 1, False, [1.0])
    assert taken.run.stop_ns == stop_ns
    router.start(start(T0 + 3 * S, run="2"))  # claims the held pulse
    assert summary(router.take()) == ("Running", 2, True, [3.0])
    assert router.counters["events_outside_run"] == 0


def test_a_stop_before_the_start_position_skips_the_run_without_a_transition():
    router = Router(lower=T0 + 10 * S, found=start(T0))
    router.stop(stop(T0 + 5 * S))
    assert router.current is None
    assert summary(router.take()) == ("NoRun", 0, False, [])
    router.start(start(T0 + 20 * S, run="2"))
    router.events(block([T0 + 21 * S]), monitor=False)
    assert summary(router.take()) == ("Running", 2, True, [21.0])


def test_a_run_found_stopped_before_the_start_position_is_not_a_run_of_the_listener():
    router = RunRouter(10**6, lambda kind, message: None)
    router.begin(T0 + 10 * S, start(T0), [stop(T0 + 5 * S)], 0.0)
    router.run_start(start(T0), 0.0)  # read again from its offset: ignored
    router.run_stop(stop(T0 + 5 * S), 0.0)
    assert router.current is None
    assert router.counters["skipped_unmatched_stop"] == 0


def test_a_run_start_that_stopped_before_the_start_position_is_skipped():
    router = Router(lower=T0 + 10 * S)
    router.start(start(T0, stop=T0 + 5 * S))
    assert router.current is None


def test_pulses_before_the_start_position_are_dropped_and_counted():
    router = Router(lower=T0 + 2 * S, found=start(T0))
    router.events(block([T0 + S, T0 + 3 * S]), monitor=False)
    router.events(block([T0]), monitor=False)
    assert summary(router.take()) == ("Running", 1, False, [3.0])
    assert router.counters["pulses_before_start"] == 2


def test_nanosecond_run_times_route_as_milliseconds_do_and_are_warned_about():
    at = datetime(2027, 1, 15, 8, 0, 0, 123000, tzinfo=UTC)
    in_ms = int(at.timestamp() * 1000)
    ms = decode(serialise_pl72("j", "f", start_time=in_ms, run_name="5"), RUN_SCHEMAS)
    ns = decode(serialise_pl72("k", "f", start_time=in_ms * 10**6, run_name="6"), RUN_SCHEMAS)
    stop_ns = decode(serialise_6s4t("k", run_name="6", stop_time=(in_ms + 2000) * 10**6), RUN_SCHEMAS)
    assert ms.start_ns == ns.start_ns == in_ms * 10**6
    assert (ms.nanosecond_times, ns.nanosecond_times, stop_ns.nanosecond_times) == (False, True, True)

    router = Router()
    router.start(ns)
    router.events(block([ns.start_ns + S]), monitor=False)
    router.stop(stop_ns)
    assert router.warnings == ["ns", "ns"]
    assert router.current.stop_ns == ns.start_ns + 2 * S
    assert times(router.take()) == [ns.start_ns + S]


def test_runs_that_end_without_data_before_they_are_taken_coalesce():
    router = Router()
    router.start(start(T0, run="1"))
    router.events(block([T0 + S]), monitor=False)
    for i in range(2, 10_002):  # a flood of run starts without data
        router.start(start(T0 + i * S, run=str(i)))
    router.events(block([T0 + 10_002 * S]), monitor=False)  # data of the last one
    assert router.pending_runs == 10_001  # (was: coalesced at each run start) they end once the data passed them
    router.check_stop([(T0 + 10_002 * S, False)], T0 + 10_003 * S, router.now)
    assert router.pending_runs == 1
    assert summary(router.take()) == ("BeginRun", 1, False, [1.0])
    assert summary(router.take()) == ("Running", 10_001, True, [10_002.0])
    assert router.counters["run_transitions_coalesced"] == 9_999


# --- run-info read ahead of the data (a consumer that lags) ------------------------------------------------------
def per_run(takes: list[Taken]) -> dict[int, list[float]]:
    """Pulse times (s from T0) delivered per run number, sorted."""
    runs: dict[int, list[float]] = {}
    for taken in takes:
        if taken.run is not None:
            runs.setdefault(taken.run.number, []).extend((t - T0) / S for t in times(taken))
    return {number: sorted(pulses) for number, pulses in runs.items()}


def transitions(takes: list[Taken]) -> list[tuple[str, int]]:
    """(status, run) of every chunk that ends a run, and ("reset", run) of every chunk that starts one."""
    seen = []
    for taken in takes:
        if taken.reset:
            seen.append(("reset", taken.run.number))
        if taken.status in ("BeginRun", "EndRun"):
            seen.append((taken.status, taken.run.number))
    return seen


def test_run_starts_read_runs_ahead_of_the_data_lose_none_of_it():
    """The run-info topic read three runs ahead of the events (the bug: each run start ended the run before at
    once, and its events read afterwards were dropped as late): every run gets its own events, in its own chunks."""
    router = Router()
    for n in range(1, 5):
        router.start(start(T0 + 10 * (n - 1) * S, run=str(n)))
    router.stop(stop(T0 + 40 * S, run="4"))
    assert router.pending_runs == 4
    takes = []
    for i in range(40):  # one data partition, read in time order, a chunk taken after each message
        router.events(block([T0 + i * S]), monitor=False)
        router.check_stop([(T0 + i * S, False)], T0 + 100 * S, router.now)
        takes.append(router.take())
    router.check_stop([(T0 + 39 * S, True)], T0 + 100 * S, router.now + STOP_LATENCY_S)  # at its end since
    takes.append(router.take())

    assert per_run(takes) == {n: [float(t) for t in range(10 * (n - 1), 10 * n)] for n in range(1, 5)}
    assert transitions(takes) == [
        ("BeginRun", 1), ("reset", 2), ("BeginRun", 2), ("reset", 3), ("BeginRun", 3), ("reset", 4), ("EndRun", 4)
    ]  # fmt: skip
    assert router.counters["events_late"] == router.counters["events_outside_run"] == 0
    assert not any(taken.dropped for taken in takes)
    assert router.pending_runs == 0


def test_a_run_waits_for_every_partition_and_the_partitions_past_its_stop_are_paused():
    state = ReadState({KEY: "events", KEY_1: "events", RUN_INFO: "runInfo"}, 10**6, lambda kind, message: None)
    for key in state.partitions.states:
        state.partitions.sent(key, 0)
    router = state.router
    router.begin(None, None, [], 0.0)
    router.run_start(start(T0, run="1"), 0.0)
    router.run_start(start(T0 + 10 * S, run="2"), 0.0)
    assert router.waiting_stop == T0 + 10 * S
    state.message(KEY, 0, lambda: mark(0, 1, b"a"), block([T0 + S, T0 + 11 * S]), 0.0, size=1)  # past run 1's stop
    state.message(KEY_1, 0, lambda: mark(0, 1, b"b"), block([T0 + 2 * S]), 0.0, size=1)  # behind it
    router.check_stop(state.partitions.data(), T0 + 100 * S, 10.0)
    assert state.paused() == {KEY}  # only partition 1 is read until it has passed 10 s too
    assert summary(router.take()) == ("Running", 1, False, [1.0, 2.0])
    assert router.pending_bytes == 0  # run 2's data does not hold back the partition run 1 waits for
    assert router.buffered_bytes > 0

    state.message(KEY_1, 1, lambda: mark(1, 1, b"c"), block([T0 + 9 * S, T0 + 12 * S]), 0.0, size=1)
    router.check_stop(state.partitions.data(), T0 + 100 * S, 10.0)
    assert state.paused() == set()  # run 2's stop is not known: nothing is ahead of it
    assert summary(router.take()) == ("BeginRun", 1, False, [9.0])
    assert summary(router.take()) == ("Running", 2, True, [11.0, 12.0])


def test_a_flood_of_run_starts_ahead_of_the_data_pauses_run_info():
    state = ReadState({KEY: "events", RUN_INFO: "runInfo"}, 10**6, lambda kind, message: None)
    for key in state.partitions.states:
        state.partitions.sent(key, 0)
    state.router.begin(None, None, [], 0.0)
    for i in range(MAX_PENDING_RUNS):
        state.message(RUN_INFO, i, lambda: mark(0, 1, b""), start(T0 + i * S, run=str(i + 1)), 0.0, size=1)
    assert state.paused() == {RUN_INFO}  # until the data has caught up
    state.message(KEY, 0, lambda: mark(0, 1, b""), block([T0 + 50 * S + S // 2]), 0.0, size=1)
    state.router.check_stop(state.partitions.data(), T0 + 10**3 * S, 0.0)
    assert state.router.counters["run_transitions_coalesced"] == 50  # runs 1..50 ended without data
    assert state.router.pending_runs == MAX_PENDING_RUNS - 50
    assert state.paused() == set()
    assert summary(state.router.take()) == ("Running", 51, False, [50.5])


def simulate(lag: dict[tuple[str, int], int], limit: int, *, old_policy: bool = False) -> tuple[list[Taken], int]:
    """The listener's reading policy on :class:`ReadState`, without a broker, until everything was delivered or a
    step bound passed: each step reads the next message of every partition that is not paused
    (:meth:`ReadState.paused`), unless the bytes counting against the bound (:attr:`RunRouter.pending_bytes`)
    reach ``limit`` (back-pressure), checks the stops and takes a chunk. Run-info: 3 runs (10 s each) and the
    last one's stop; two event partitions with one pulse (2 events) per message and second, partition 1 at
    half-seconds; partition ``key`` offers nothing until step ``lag[key]``. ``old_policy``: nothing paused, every
    byte counts. Returns (the chunks, the largest buffer seen in bytes); the chunks end with None when it stalled."""
    log: dict[tuple[str, int], list] = {
        RUN_INFO: [start(T0 + 10 * n * S, run=str(n + 1)) for n in range(3)] + [stop(T0 + 30 * S, run="3")],
        KEY: [block([T0 + i * S]) for i in range(30)],
        KEY_1: [block([T0 + i * S + S // 2]) for i in range(30)],
    }
    state = ReadState({key: "runInfo" if key == RUN_INFO else "events" for key in log}, limit, lambda k, m: None)
    state.partitions.assigned(dict.fromkeys(log, 0))
    state.router.begin(None, None, [], 0.0)
    position = dict.fromkeys(log, 0)
    takes: list[Taken] = []
    largest = 0
    for step in range(1000):
        pending = state.router.buffered_bytes if old_policy else state.router.pending_bytes
        if pending < limit:
            paused = set() if old_policy else state.paused()
            for key, messages in log.items():
                if key in paused or step < lag.get(key, 0):
                    continue
                if position[key] == len(messages):
                    state.partitions.ended(key)
                    continue
                item = messages[position[key]]
                state.message(key, position[key], lambda: mark(0, 1, b""), item, float(step), size=BLOCK_BYTES)
                position[key] += 1
            state.router.check_stop(state.partitions.data(), T0 + 100 * S, float(step))
        largest = max(largest, state.router.buffered_bytes)
        takes.append(state.router.take())
        if takes[-1].status == "EndRun" and takes[-1].run.number == 3:
            return takes, largest
    return [*takes, None], largest


@pytest.mark.parametrize("assignment", ["assigned", "sent"], ids=["held-until-run-info-ends", "old-race"])
def test_data_read_ahead_of_run_info_cannot_go_out_in_the_run_before(assignment: str):
    """The listener starts in run 1 (found by the look-up); run 2's pl72 is on runInfo, which the client fetches in
    parallel with the data. Assigned as the listener does, the data partitions wait until runInfo is at its end, so
    a take cannot hand run 2's pulses out as run 1's; sent as before (the race CI hit), they did."""
    state = ReadState({KEY: "events", RUN_INFO: "runInfo"}, 10**6, lambda kind, message: None)
    state.router.begin(None, start(T0, run="1"), [], 0.0)
    if assignment == "assigned":
        state.partitions.assigned({KEY: 0, RUN_INFO: 0})
        assert state.paused() == {KEY}
        state.message(RUN_INFO, 0, lambda: mark(0, 1, b""), start(T0 + 10 * S, run="2"), 0.0, size=1)
        state.partitions.ended(RUN_INFO)
    else:
        for key in (KEY, RUN_INFO):
            state.partitions.sent(key, 0)
    assert state.paused() == set()
    state.message(KEY, 0, lambda: mark(0, 1, b"a"), block([T0 + S, T0 + 11 * S]), 0.0, size=1)
    state.router.check_stop(state.partitions.data(), T0 + 100 * S, 10.0)
    first = state.router.take()
    if assignment == "sent":
        assert summary(first) == ("Running", 1, False, [1.0, 11.0])  # run 2's pulse went out as run 1's
        return
    assert summary(first) == ("BeginRun", 1, False, [1.0])
    assert summary(state.router.take()) == ("Running", 2, True, [11.0])


def test_interleaved_partitions_deliver_every_run_whole():
    takes, _ = simulate({KEY_1: 3}, 10**6)
    assert per_run(takes) == {n: [t + d for t in range(10 * (n - 1), 10 * n) for d in (0, 0.5)] for n in (1, 2, 3)}
    assert transitions(takes) == [("BeginRun", 1), ("reset", 2), ("BeginRun", 2), ("reset", 3), ("EndRun", 3)]
    assert not any(taken.dropped for taken in takes)


@pytest.mark.parametrize("old_policy", [False, True], ids=["paused-ahead", "old-policy-deadlocks"])
def test_a_buffer_full_of_the_next_run_cannot_hold_back_the_partition_the_run_waits_for(old_policy: bool):
    """Partition 1 lags 40 steps; partition 0 reads run 2's data meanwhile. With every byte counted and nothing
    paused the buffer fills with run 2's data, reading stops, and run 1 waits forever for partition 1 (the
    deadlock); paused past run 1's stop, partition 0 stops at one message of run 2, and the buffer never exceeds
    its bound by more than a message per partition."""
    limit = 6 * (BLOCK_BYTES + 16)
    takes, largest = simulate({KEY_1: 40}, limit, old_policy=old_policy)
    if old_policy:
        assert takes[-1] is None
        return
    assert per_run(takes) == {n: [t + d for t in range(10 * (n - 1), 10 * n) for d in (0, 0.5)] for n in (1, 2, 3)}
    assert transitions(takes) == [("BeginRun", 1), ("reset", 2), ("BeginRun", 2), ("reset", 3), ("EndRun", 3)]
    assert not any(taken.dropped for taken in takes)
    assert largest <= limit + 2 * (BLOCK_BYTES + 16)


# --- held pulses, late pulses --------------------------------------------------------------------------------
def test_pulses_before_their_run_start_are_held_and_claimed():
    router = Router()
    router.events(block([T0 + S]), monitor=False)  # the pl72 comes after the first data (topics in parallel)
    router.events(block([T0 + 2 * S]), monitor=True)
    assert summary(router.take()) == ("NoRun", 0, False, [])
    router.start(start(T0))
    taken = router.take()
    assert summary(taken) == ("Running", 1, True, [1.0])
    assert [int(t) for b in taken.monitors for t in b.times] == [T0 + 2 * S]
    assert router.buffered_bytes == 0


def test_held_pulses_beyond_a_quarter_of_the_buffer_are_dropped_oldest_first():
    limit = 1000
    router = Router(buffer_limit=limit)
    for i in range(3):
        router.events(block([T0 + i * S], per_pulse=3), monitor=False)  # 116 bytes each; 3 > 250
    assert router.buffered_bytes <= limit * LIMBO_FRACTION
    router.start(start(T0 - S))
    taken = router.take()
    assert [(t - T0) // S for t in times(taken)] == [1, 2]
    assert router.counters["events_outside_run"] == 3
    assert dict(taken.dropped) == {OUTSIDE_A_RUN: 3}
    assert not router.take().dropped


def test_late_pulses_of_a_run_already_handed_out_are_dropped_and_counted():
    router = Router()
    router.start(start(T0))
    router.stop(stop(T0 + 10 * S))
    router.check_stop([(T0 + 11 * S, False)], T0 + 20 * S, 5.0)
    assert router.take().status == "EndRun"
    router.events(block([T0 + 5 * S, T0 + 15 * S]), monitor=False)  # 5 s: run 1's, too late; 15 s: held
    assert router.counters["events_late"] == 2
    assert dict(router.take().dropped) == {AFTER_THEIR_RUN: 2}
    router.start(start(T0 + 12 * S, run="2"))
    assert summary(router.take()) == ("Running", 2, True, [15.0])


def test_pulses_between_runs_are_outside_a_run_not_late():
    router = Router()
    router.start(start(T0))
    router.events(block([T0 + S]), monitor=False)
    router.stop(stop(T0 + 10 * S))
    router.check_stop([(T0 + 11 * S, False)], T0 + 20 * S, 5.0)
    router.start(start(T0 + 12 * S, run="2"))
    assert router.take().status == "EndRun"
    router.events(block([T0 + 11 * S, T0 + 5 * S]), monitor=False)  # 11 s: between the runs; 5 s: run 1's, late
    assert router.counters["events_outside_run"] == 2
    assert router.counters["events_late"] == 2
    assert dict(router.take().dropped) == {OUTSIDE_A_RUN: 2, AFTER_THEIR_RUN: 2}


def test_log_values_read_before_their_run_start_are_held_for_it():
    router = Router()
    router.log(LogValue("temp", T0 - S, np.array(20.0)))  # before the run: its value at the start
    router.log(LogValue("temp", T0 + 2 * S, np.array(21.0)))  # in the run, read before its pl72
    router.events(block([T0 + S]), monitor=False)
    router.start(start(T0))
    taken = router.take()
    assert summary(taken) == ("Running", 1, False, [1.0])
    assert taken.logs == {"temp": [(T0 - S, 20.0), (T0 + 2 * S, 21.0)]}  # (was: only the latest, 21.0, as a seed)


def test_held_log_values_share_the_held_part_of_the_buffer_and_are_counted_when_dropped():
    router = Router(buffer_limit=4 * 24)  # a quarter holds one value of 24 bytes
    router.log(LogValue("a", T0 + S, np.array(1.0)))
    router.log(LogValue("a", T0 + 2 * S, np.array(2.0)))  # the older one is dropped
    assert router.counters["logs_outside_run"] == 1
    router.start(start(T0))
    assert router.take().logs == {"a": [(T0 + 2 * S, 2.0)]}


def test_a_stream_without_run_information_is_one_open_ended_run_of_no_run_from_the_start_position():
    router = RunRouter(10**6, lambda kind, message: None)
    router.begin(T0, None, [], 0.0, open_ended=True)
    router.events(block([T0 - S, T0 + S, T0 + 100_000 * S]), monitor=False)  # before the start: not delivered
    router.log(LogValue("temp", T0 + 2 * S, np.array(3.0)))
    router.check_stop([(T0 + 200_000 * S, True)], T0 + 300_000 * S, 10**6)  # it never ends
    taken = router.take()
    assert summary(taken) == ("NoRun", 0, False, [1.0, 100_000.0])
    assert taken.logs == {"temp": [(T0 + 2 * S, 3.0)]}
    assert router.counters["pulses_before_start"] == 1
    assert not taken.dropped
    assert router.runs_closed == 0


def test_pulses_of_the_stopped_run_after_its_stop_move_out_of_it():
    router = Router()
    router.start(start(T0))
    router.events(block([T0 + S, T0 + 4 * S]), monitor=False)
    before = router.buffered_bytes
    router.stop(stop(T0 + 2 * S))  # the pulse at 4 s is held for a next run
    assert router.buffered_bytes == before  # a split costs the buffer no more
    router.check_stop([(T0 + 4 * S, False)], T0 + 5 * S, 0.0)
    assert summary(router.take()) == ("EndRun", 1, False, [1.0])
    router.start(start(T0 + 3 * S, run="2"))
    assert times(router.take()) == [T0 + 4 * S]


# --- logs -------------------------------------------------------------------------------------------------------
def test_log_values_go_to_their_run_and_the_value_in_force_seeds_its_first_chunk():
    router = Router()
    router.log(LogValue("temperature", T0 - 5 * S, np.array(280.0)))
    router.log(LogValue("temperature", T0 - 9 * S, np.array(270.0)))  # older: not the value in force
    router.log(LogValue("pressure", T0 - 5 * S, np.array(1.0)))
    router.start(start(T0))
    router.log(LogValue("temperature", T0 + S, np.array(290.0)))
    router.log(LogValue("temperature", T0 - S, np.array(285.0)))  # arrives late: the value in force now

    first = router.take()  # no pulses: only the logs that changed, each with its value in force
    assert {name: [float(v) for _, v in entries] for name, entries in first.logs.items()} == {
        "temperature": [285.0, 290.0]
    }
    router.events(block([T0 + 2 * S]), monitor=False)
    second = router.take()  # pulses: every seed not sent yet goes with them
    assert {name: [float(v) for _, v in entries] for name, entries in second.logs.items()} == {"pressure": [1.0]}
    assert router.counters["logs"] == 5


def test_log_sources_are_bounded(monkeypatch: pytest.MonkeyPatch):
    from livereduce.protocols.kafka import runs

    monkeypatch.setattr(runs, "MAX_SOURCES", 2)
    router = Router()
    for name in ("a", "b", "c", "a"):
        router.log(LogValue(name, T0, np.array(1.0)))
    assert router.counters["logs"] == 3
    assert router.counters["skipped_invalid"] == 1


# --- locating the run -------------------------------------------------------------------------------------------
def test_last_run_start_at_or_before_the_bound_and_the_stops_after_it():
    a, b = start(T0, run="1"), start(T0 + 10 * S, run="2")
    records = [(4, a), (5, stop(T0 + 5 * S, run="1")), (6, b), (7, stop(T0 + 15 * S, run="2"))]
    assert last_run_start(records, None) == ((6, b), [records[3][1]])
    assert last_run_start(records, T0 + 9 * S) == ((4, a), [records[1][1], records[3][1]])
    assert last_run_start(records, T0 - S) == (None, [])


# --- partitions ---------------------------------------------------------------------------------------------------


def test_offsets_that_jump_or_go_back_are_counted_and_going_back_replays_nothing():
    parts = Partitions({KEY: "events"})
    parts.sent(KEY, 5)
    assert parts.arrived(KEY, 5, lambda: mark(5, 1, b"a")) == "new"
    assert parts.fresh(KEY, np.array([T0]), 3)
    assert parts.arrived(KEY, 8, lambda: mark(8, 1, b"b")) == "new"
    assert parts.counters["offset_gaps"] == 2
    assert parts.arrived(KEY, 2, lambda: mark(2, 1, b"c")) == "new"
    assert parts.counters["partition_resets"] == 1
    assert not parts.fresh(KEY, np.array([T0 - S, T0]), 6)  # seen before
    assert parts.fresh(KEY, np.array([T0 + S]), 3)
    assert parts.counters["events_replayed"] == 6


def test_after_a_lost_connection_the_mark_found_again_continues_reading():
    parts = Partitions({KEY: "events", ("X_runInfo", 0): "runInfo"})
    parts.sent(KEY, 0)
    parts.arrived(KEY, 0, lambda: mark(0, 1, b"a"))
    parts.arrived(KEY, 1, lambda: mark(1, 1, b"b"))
    parts.read(KEY, mark(1, 1, b"b"))
    assert parts.verify() == [(KEY, 1)]  # runInfo read nothing: no mark to verify
    assert parts.arrived(KEY, 1, lambda: mark(1, 1, b"b")) == "same"
    assert parts.arrived(KEY, 2, lambda: mark(2, 1, b"c")) == "new"
    assert parts.counters["offset_gaps"] == parts.counters["partition_resets"] == 0


def test_after_a_lost_connection_another_message_or_an_earlier_end_means_the_log_was_replaced():
    parts = Partitions({KEY: "events", ("X_runInfo", 0): "runInfo"})
    for key in parts.states:
        parts.sent(key, 0)
        parts.arrived(key, 0, lambda: mark(0, 1, b"a"))
        parts.read(key, mark(0, 1, b"a"))
    parts.fresh(KEY, np.array([T0]), 1)
    parts.verify()
    assert parts.arrived(KEY, 0, lambda: mark(0, 1, b"another run")) == "replaced"
    assert parts.ended(("X_runInfo", 0))  # ends before its mark now
    assert parts.reset(KEY, -1) == 0
    assert parts.reset(("X_runInfo", 0), 0) == 0
    assert parts.counters["partition_resets"] == 2
    assert parts.states[KEY].replay_floor == T0  # data seen before is not used twice
    assert parts.states["X_runInfo", 0].replay_floor == NEVER  # a run start read again counts
    assert parts.arrived(KEY, 0, lambda: mark(0, 2, b"x")) == "new"
    assert not parts.ended(KEY)
    assert parts.data() == [(T0, True)]


def test_a_position_beyond_the_end_is_a_wrong_start_or_a_lost_log():
    parts = Partitions({KEY: "events"})
    parts.sent(KEY, 10)
    assert parts.high_watermark(KEY, 12) is None
    assert parts.high_watermark(KEY, 3) == "end"  # never confirmed: continue at the end
    assert parts.states[KEY].next_offset == 3
    parts.arrived(KEY, 3, lambda: mark(3, 1, b"a"))
    assert parts.high_watermark(KEY, 2) == "reset"  # confirmed: the partition lost its log


def test_offset_lag_is_the_messages_from_the_read_position_to_the_last_high_watermark_known():
    parts = Partitions({KEY: "events", RUN_INFO: "runInfo"})
    parts.sent(KEY, 5)
    assert parts.offset_lag() == {}  # no high watermark known yet
    assert parts.high_watermark(KEY, 12) is None
    assert parts.high_watermark(RUN_INFO, 3) is None  # no position yet: left out
    assert parts.offset_lag() == {"X_events[0]": 7}
    parts.arrived(KEY, 5, lambda: mark(5, 1, b"a"))
    parts.high_watermark(KEY, -1)  # unknown now: the last one known stays
    assert parts.offset_lag() == {"X_events[0]": 6}


def test_message_id_gaps_per_source():
    parts = Partitions({KEY: "events"})
    for source, message_id in (("a", 1), ("a", 2), ("b", 7), ("a", 5), ("b", 8), ("fake", 0), ("fake", 0)):
        parts.message_id(KEY, source, message_id)
    assert parts.counters["message_id_gaps"] == 1  # a: 2 -> 5; a constant id (ESS's fakes send 0) is no gap


def test_run_control_is_settled_only_once_runinfo_is_verified_and_read_to_its_end():
    run_info = ("X_runInfo", 0)
    parts = Partitions({KEY: "events", run_info: "runInfo"})
    for key in parts.states:
        parts.sent(key, 0)
        parts.arrived(key, 0, lambda: mark(0, 1, b"a"))
        parts.read(key, mark(0, 1, b"a"))
    assert parts.run_control_settled()
    parts.verify()
    assert not parts.run_control_settled()  # the listener holds the data partitions back
    assert parts.arrived(run_info, 0, lambda: mark(0, 1, b"a")) == "same"
    assert parts.run_control_settled()

    parts.verify()
    assert parts.arrived(run_info, 0, lambda: mark(0, 1, b"run 2 now")) == "replaced"
    parts.reset(run_info, 0)
    assert not parts.run_control_settled()  # read again from the beginning: not yet at its end
    parts.arrived(run_info, 0, lambda: mark(0, 1, b"run 2 now"))
    assert parts.high_watermark(run_info, 2) is None
    assert not parts.run_control_settled()
    parts.ended(run_info)  # the end-of-partition event
    assert parts.run_control_settled()

    parts.reset(run_info, 0)
    parts.arrived(run_info, 0, lambda: mark(0, 1, b"b"))
    parts.arrived(run_info, 1, lambda: mark(1, 1, b"c"))
    assert parts.high_watermark(run_info, 2) is None  # at the high watermark, even without an end event
    assert parts.run_control_settled()


# --- what take() hands out, as arrays --------------------------------------------------------------------------
def test_taken_blocks_as_the_arrays_of_a_chunk():
    router = Router()
    router.start(start(T0))
    router.events(block([T0 + 1, T0 + 2], per_pulse=2, pixel=4), monitor=False)
    router.events(block([T0 + 3], per_pulse=3, pixel=9), monitor=False)
    router.events(block([T0 + 5, T0 + 6], per_pulse=1), monitor=True)
    taken = router.take()

    times, index, order = taken.pulses()
    assert times.tolist() == [T0 + 1, T0 + 2, T0 + 3]
    assert index.tolist() == [0, 2, 4]
    assert order is None  # one source in time order: the events stay where they are
    ids = np.empty(taken.n_events, np.int32)
    taken.pixel_ids(out=ids)
    assert ids.tolist() == [4, 4, 4, 4, 9, 9, 9]
    tof = np.empty(taken.n_events, np.float32)
    taken.time_of_flight_us(out=tof)
    assert tof.tolist() == [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 3.0]  # ns -> µs
    ((source, (monitor_tof, monitor_zero)),) = taken.monitor_events().items()
    assert (source, monitor_tof.tolist(), monitor_zero.tolist()) == ("bank", [1.0, 1.0], [T0 + 5, T0 + 6])


def test_pulses_of_the_same_time_from_several_topics_are_one_pulse_in_time_order():
    router = Router()
    router.start(start(T0))
    router.events(block([T0 + 1, T0 + 2], per_pulse=2, pixel=4), monitor=False)  # bank 0's topic
    router.events(block([T0 + 2, T0 + 1, T0 + 3], per_pulse=1, pixel=9), monitor=False)  # bank 1's, out of order
    taken = router.take()
    times, index, order = taken.pulses()
    assert times.tolist() == [T0 + 1, T0 + 2, T0 + 3]
    ids = np.empty(taken.n_events, np.int32)
    taken.pixel_ids(out=ids)
    assert ids.tolist() == [4, 4, 4, 4, 9, 9, 9]
    events = ids[order]
    assert [events[a:b].tolist() for a, b in zip(index, [*index[1:], events.size], strict=True)] == [
        [4, 4, 9],  # the pulse at 1: bank 0's two events, then bank 1's
        [4, 4, 9],
        [9],
    ]


# --- the read state per message ----------------------------------------------------------------------------------
def test_read_state_counts_each_message_and_routes_its_content():
    kinds: list[str] = []
    state = ReadState({KEY: "events", ("X_runInfo", 0): "runInfo"}, 10**6, lambda kind, message: kinds.append(kind))
    run_info = ("X_runInfo", 0)
    for key in state.partitions.states:
        state.partitions.sent(key, 0)
    assert not state.message(run_info, 0, lambda: mark(0, 1, b"s"), start(T0), 0.0, size=10)
    assert not state.message(KEY, 0, lambda: mark(0, 1, b"e"), block([T0 + S]), 0.0, size=100)
    assert not state.message(KEY, 1, lambda: mark(1, 1, b"x"), Skipped("implausible_time", "year 2200"), 0.0, size=7)
    assert not state.message(run_info, 1, lambda: mark(1, 1, b"t"), stop(T0 + 2 * S), 0.0, size=10)
    counts = state.counts()
    assert {k: counts[k] for k in ("messages", "bytes", "events", "pulses", "run_starts", "run_stops")} == {
        "messages": 4,
        "bytes": 127,
        "events": 2,
        "pulses": 1,
        "run_starts": 1,
        "run_stops": 1,
    }
    assert counts["skipped_implausible_time"] == 1
    assert kinds == ["skip:implausible_time"]
    assert times(state.router.take()) == [T0 + S]


def test_read_state_verifies_once_after_a_lost_connection_and_reports_a_replaced_log():
    state = ReadState({KEY: "events"}, 10**6, lambda kind, message: None)
    state.partitions.sent(KEY, 0)
    state.message(KEY, 0, lambda: mark(0, 1, b"a"), block([T0]), 0.0, size=1)
    state.partitions.read(KEY, mark(0, 1, b"a"))
    assert state.to_verify() == []
    state.disconnects({"b0": 3})  # the first statistics: no loss
    state.disconnects({"b0": 4})  # one more disconnect: a loss nobody reported as an error
    state.connection_lost()
    assert (state.losses, state.counts()["reconnects"]) == (2, 2)
    assert state.to_verify() == [(KEY, 0)]
    assert state.to_verify() == []
    assert state.message(
        KEY, 0, lambda: mark(0, 9, b"another log"), block([T0]), 0.0, size=1
    )  # replaced: read it again


def test_broker_states_from_librdkafka_statistics():
    stats = (
        '{"brokers": {"b:9092/0": {"nodeid": 0, "state": "UP", "disconnects": 2},'
        ' "b:9092/bootstrap": {"nodeid": -1, "state": "INIT", "disconnects": 0}}}'
    )
    assert broker_states(stats) == ({"b:9092/0": 2, "b:9092/bootstrap": 0}, True)
    assert broker_states('{"brokers": {"b:9092/bootstrap": {"nodeid": -1, "state": "UP"}}}') == ({}, False)
    assert broker_states("not json") == ({}, False)
    assert broker_states('["a list"]') == ({}, False)
