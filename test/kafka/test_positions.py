"""Kafka source positions without a broker (``protocols/kafka/positions.py``): a simulated consumer reads the
partitions of a stream of three runs in a random interleaving (pausing what ``ReadState.paused`` says), takes a
chunk now and then and keeps its position; a new ``ReadState`` resumes from each position (through JSON, as a
checkpoint stores it) and reads on: both parts together are the uninterrupted run's chunks, event for event and
log value for log value. Then the position's checks: hostile shapes, retention, other partitions."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from livereduce.protocols.kafka.partitions import Key, mark
from livereduce.protocols.kafka.positions import ALL_SENT, Position, Replay, RunAt, after_take, parse, refusal
from livereduce.protocols.kafka.reading import ReadState
from livereduce.protocols.kafka.runs import NEVER, Unsent
from livereduce.protocols.kafka.schemas import LogValue, RunStart, RunStop
from livereduce.protocols.kafka.segments import Block, Run, Taken
from livereduce.protocols.kafka.topics import Role

S = 1_000_000_000
T0 = 1_800_000_000 * S
RUN_INFO, EVENTS_0, EVENTS_1 = ("X_runInfo", 0), ("X_events", 0), ("X_events", 1)
MONITORS, LOGS = ("X_monitors", 0), ("X_sampleEnv", 0)
ROLES: dict[Key, Role] = {
    RUN_INFO: "runInfo",
    EVENTS_0: "events",
    EVENTS_1: "events",
    MONITORS: "monitors",
    LOGS: "sampleEnv",
}
Item = Block | LogValue | RunStart | RunStop


def pulses(first_ns: int, count: int, step_ns: int, per_pulse: int, seed: int) -> Block:
    """``count`` pulses from ``first_ns``, ``per_pulse`` events each with distinct TOFs (ns) and pixels."""
    rng = np.random.default_rng(seed)
    n = count * per_pulse
    times = first_ns + np.arange(count, dtype=np.int64) * step_ns
    index = np.arange(count, dtype=np.int64) * per_pulse
    ids, tof = rng.integers(0, 100, n, dtype=np.int32), rng.integers(0, 10**7, n, dtype=np.int32)
    return Block("bank", times, index, ids, tof, 64 + 8 * n)


def stream() -> dict[Key, list[Item]]:
    """Three runs: 1 [0 s, 10 s) ended by run 2's start, 2 [10 s, 20 s) by its 6s4t, 3 [21 s, 30 s); pulses every
    0.1 s from -1 s to 31 s on two event partitions (the second 50 ms later, messages of 7 and 5 pulses, so that
    messages straddle every boundary), monitor pulses every 0.5 s, a log value every 0.7 s from -2 s (one before
    the first run: its value in force)."""
    run = [RunStart(str(n), "X", T0 + s * S, None, f"j{n}", "f.nxs", (0, 99)) for n, s in ((1, 0), (2, 10), (3, 21))]
    control: list[Item] = [run[0], run[1], RunStop("2", "j2", T0 + 20 * S), run[2], RunStop("3", "j3", T0 + 30 * S)]
    tenth = S // 10
    events_0 = [pulses(T0 - S + i * tenth, 7, tenth, 3, i) for i in range(0, 320, 7)]
    events_1 = [pulses(T0 - S + tenth // 2 + i * tenth, 5, tenth, 2, 1000 + i) for i in range(0, 320, 5)]
    monitors = [pulses(T0 - S + i * S // 2, 3, S // 2, 1, 2000 + i) for i in range(0, 64, 3)]
    logs: list[Item] = [LogValue("temperature", T0 - 2 * S + i * 7 * tenth, np.array(float(i))) for i in range(48)]
    return {RUN_INFO: control, EVENTS_0: events_0, EVENTS_1: events_1, MONITORS: monitors, LOGS: logs}


def available_at(item: Item) -> int:
    """When a live source has written a message (ns): after its newest time."""
    if isinstance(item, Block):
        return int(item.times.max())
    return item.time_ns if isinstance(item, LogValue) else item.start_ns if isinstance(item, RunStart) else item.stop_ns


class Consumer:
    """Reads ``messages`` into ``state`` from ``offsets`` as they are written on a clock (from ``now``, ns; 0.2 s a
    step), as the listener's consumer thread does: run control as soon as it is written, then 0..3 messages of each
    data partition that is not paused, in a random order (so data partitions lag behind each other); partitions
    that are caught up and not paused report their end; stops are checked."""

    def __init__(
        self, messages: dict[Key, list[Item]], state: ReadState, offsets: dict[Key, int], seed: int, now: int
    ) -> None:
        self.messages, self.state, self.next = messages, state, dict(offsets)
        self.rng = np.random.default_rng(seed)
        self.now = now
        self.at_end: set[Key] = set()

    def step(self) -> None:
        self.now += S // 5
        self.read(RUN_INFO, len(self.messages[RUN_INFO]))
        paused = self.state.paused()
        keys = list(self.messages)
        for key in (keys[i] for i in self.rng.permutation(len(keys))):
            if key != RUN_INFO and key not in paused:
                self.read(key, int(self.rng.integers(0, 4)))
        for key in self.messages.keys() - self.at_end - paused:  # no fetch, no end of a paused partition
            if not self.written(key):
                self.at_end.add(key)
                self.state.partitions.ended(key)
        self.state.router.check_stop(self.state.partitions.data(), self.now, (self.now - T0) / S)

    def written(self, key: Key) -> bool:
        """The next message of ``key`` has been written."""
        offset = self.next[key]
        return offset < len(self.messages[key]) and available_at(self.messages[key][offset]) <= self.now

    def read(self, key: Key, count: int) -> None:
        """The next ``count`` messages of ``key`` that have been written (fewer at its end)."""
        for _ in range(count):
            if not self.written(key) or (key == RUN_INFO and key in self.state.paused()):
                return
            offset = self.next[key]
            item = self.messages[key][offset]
            self.state.message(key, offset, lambda o=offset: mark(o, 0, b""), item, (self.now - T0) / S, size=100)
            self.next[key] = offset + 1
            self.at_end.discard(key)

    def chunks(self, every: int) -> Iterator[tuple[Taken, dict, int]]:
        """Take a chunk, its position (as JSON) and the clock every ``every`` steps, until all is read and taken."""
        while True:
            for _ in range(every):
                self.step()
            taken = self.state.router.take()
            position = self.state.position()
            assert position is not None
            yield taken, json.loads(json.dumps(position.to_json())), self.now
            done = all(self.next[key] == len(messages) for key, messages in self.messages.items())
            if done and self.now > T0 + 40 * S and taken.run is None and not self.state.router.pulses_waiting:
                return


def fresh(messages: dict[Key, list[Item]], seed: int) -> Consumer:
    """A consumer started at the first run (``from_start_of_run``: its pl72 at runInfo offset 0) just after it
    began, with the data from 10 s before it written already."""
    state = ReadState(ROLES, 10**9, lambda kind, message: None)
    state.router.begin(T0, messages[RUN_INFO][0], [], 0.0, at=(RUN_INFO, 0))
    offsets = {key: 0 for key in ROLES}
    offsets[RUN_INFO] = 1  # the run start found is read again by the consumer: ignored
    for key, offset in offsets.items():
        state.partitions.sent(key, offset)
    return Consumer(messages, state, offsets, seed, T0 + S // 10)


def resumed(messages: dict[Key, list[Item]], saved: dict, seed: int, now: int) -> Consumer:
    """A new consumer from a saved position at ``now``, as the listener resumes: the run's pl72 read where the
    position says, sampleEnv from its beginning (for the values in force: the look-up of the run's start - 10 s)."""
    position = parse(saved)
    assert isinstance(position, Position)
    assert refusal(position, ROLES, dict.fromkeys(ROLES, 0)) is None
    run = position.run and messages[position.run.key][position.run.offset]
    assert run is None or isinstance(run, RunStart)
    sought = {**position.offsets, LOGS: 0} if run is not None else dict(position.offsets)
    state = ReadState(ROLES, 10**9, lambda kind, message: None)
    state.resume(position, run, sought, 0.0, open_ended=False)
    return Consumer(messages, state, sought, seed, now)


def first_position(messages: dict[Key, list[Item]], seed: int, wanted: Callable[[Taken], bool]) -> tuple[dict, int]:
    """The position (JSON) and the clock after the first chunk taken that is ``wanted``."""
    return next((saved, now) for taken, saved, now in fresh(messages, seed).chunks(every=3) if wanted(taken))


def outcome(chunks: list[Taken]) -> dict[int, tuple[Counter, Counter, Counter, str]]:
    """Per run: its events (pulse time, pixel, TOF), monitor events (pulse time, TOF), log values (name, time,
    value), and how its last chunk ended."""
    runs: dict[int, tuple[Counter, Counter, Counter, list[str]]] = {}
    for taken in chunks:
        if taken.run is None:
            continue
        events, monitors, logs, ends = runs.setdefault(taken.run.number, (Counter(), Counter(), Counter(), []))
        for block in taken.events:
            events.update(zip(block.event_time_zero().tolist(), block.ids.tolist(), block.tof.tolist(), strict=True))
        for block in taken.monitors:
            monitors.update(zip(block.event_time_zero().tolist(), block.tof.tolist(), strict=True))
        for name, entries in taken.logs.items():
            logs.update((name, time, float(value)) for time, value in entries)
        ends.append(taken.status)
    return {run: (*parts, ends[-1]) for run, (*parts, ends) in runs.items()}


def accumulations(chunks: list[Taken]) -> list[int]:
    """The events of each accumulation (a new one at each data reset)."""
    sizes: list[int] = []
    for taken in chunks:
        if taken.reset or not sizes:
            sizes.append(0)
        sizes[-1] += taken.n_events
    return sizes


@pytest.mark.parametrize("seed", range(3))
def test_resuming_from_every_position_gives_the_uninterrupted_runs_exactly(seed: int):
    messages = stream()
    whole = [taken for taken, *_ in fresh(messages, seed).chunks(every=3)]
    expected = outcome(whole)
    assert sorted(expected) == [1, 2, 3]
    assert [expected[run][3] for run in (1, 2, 3)] == ["BeginRun", "EndRun", "EndRun"]
    in_runs = [(T0, T0 + 20 * S), (T0 + 21 * S, T0 + 30 * S)]
    sent = sum(
        sum(int(((zero >= a) & (zero < b)).sum()) for a, b in in_runs)
        for key in (EVENTS_0, EVENTS_1)
        for zero in (block.event_time_zero() for block in messages[key])
    )
    assert sum(sum(expected[run][0].values()) for run in expected) == sent  # every event in a run, once
    assert accumulations(whole) == [sum(expected[run][0].values()) for run in (1, 2, 3)]

    first = fresh(messages, seed).chunks(every=3)
    before: list[Taken] = []
    buffered = 0
    for taken, saved, now in first:
        before.append(taken)
        buffered += bool(saved["replay"])
        after = [taken for taken, *_ in resumed(messages, saved, seed + 100, now).chunks(every=2)]
        assert outcome(before + after) == expected, f"resumed after chunk {len(before)} at {saved}"
        sizes = accumulations(before + after)
        assert sizes == accumulations(whole), f"resumed after chunk {len(before)} at {saved}"
    assert buffered >= 3  # positions with data of several partitions read past them


def test_a_position_between_runs_resumes_with_the_next_run_as_a_new_accumulation():
    """Taken right after run 1's last chunk: the next chunk is run 2's first (a data reset, its value in force)."""
    messages = stream()
    saved, now = first_position(messages, 3, lambda taken: taken.status == "BeginRun")
    assert (saved["run"]["run_name"], saved["run"]["continued"]) == ("2", False)
    after = [taken for taken, *_ in resumed(messages, saved, 7, now).chunks(every=2)]
    first = next(taken for taken in after if taken.run is not None)
    assert (first.run.number, first.reset) == (2, True)
    with_pulses = next(taken for taken in after if taken.n_events)
    assert with_pulses.logs["temperature"][0] == (T0 + 99 * S // 10, 17.0)  # the value in force at its start


def test_the_resumed_runs_next_chunk_adds_to_its_accumulation():
    messages = stream()
    saved, now = first_position(messages, 1, lambda taken: taken.run is not None and taken.n_events > 0)
    assert saved["run"] == {
        "at": "X_runInfo[0]", "offset": 0, "run_name": "1", "start_ns": T0, "continued": True, "unseeded": []
    }  # fmt: skip
    after = [taken for taken, *_ in resumed(messages, saved, 2, now).chunks(every=2)]
    first = next(taken for taken in after if taken.n_events)
    assert (first.run.number, first.reset) == (1, False)
    assert "temperature" not in first.logs or first.logs["temperature"][0][0] >= T0  # no value in force again


# --- what a position says ---------------------------------------------------------------------------------------
def test_after_take_offsets_are_the_first_message_not_handed_out_and_the_replay_the_offset_read():
    run = RunStart("7", "X", T0, None, "j", "f.nxs", None)
    head = Run(run, stop_ns=T0 + 5 * S, start_at=(RUN_INFO, 4))
    unsent = Unsent({EVENTS_0: 12, LOGS: 3}, {RUN_INFO: 4}, T0 + 5 * S, head, True, ("temperature",))
    read = {RUN_INFO: ("runInfo", 9), EVENTS_0: ("events", 15), EVENTS_1: ("events", 8), LOGS: ("sampleEnv", 4)}
    position = after_take(unsent, read, None, None).to_json()
    assert position == {
        "offsets": {"X_runInfo[0]": 4, "X_events[0]": 12, "X_events[1]": 8, "X_sampleEnv[0]": 3},
        "replay": {"X_events[0]": 15, "X_sampleEnv[0]": 4},
        "before_ns": T0 + 5 * S,
        "run": {
            "at": "X_runInfo[0]",
            "offset": 4,
            "run_name": "7",
            "start_ns": T0,
            "continued": True,
            "unseeded": ["temperature"],
        },
        "from_ns": None,
    }
    everything_out = Unsent({}, {}, None, head, True, ())
    assert after_take(everything_out, read, None, T0).to_json()["replay"] == {}
    assert parse(position) == after_take(unsent, read, None, None)


def test_a_replay_skips_what_went_out_until_each_partition_passes_it():
    position = Position({EVENTS_0: 10, LOGS: 5}, {EVENTS_0: 12}, T0, None, None)
    replay = Replay(position, {EVENTS_0: 10, LOGS: 2})
    assert [replay.sent_before(LOGS, offset) for offset in (2, 4)] == [ALL_SENT, ALL_SENT]
    assert replay.sent_before(EVENTS_0, 10) == T0
    assert not replay.done
    assert [replay.sent_before(LOGS, 5), replay.sent_before(EVENTS_0, 12)] == [None, None]
    assert replay.done


@pytest.mark.parametrize(
    ("position", "why"),
    [
        (None, "not a mapping"),
        ([1, 2], "not a mapping"),
        ({"offsets": {}}, "not a mapping"),
        ({"offsets": {}, "replay": {}, "before_ns": None, "run": None, "from_ns": None}, "offsets is not"),
        ({"offsets": {"X_events[0]": -1}, "replay": {}, "before_ns": None, "run": None, "from_ns": None}, "offsets"),
        ({"offsets": {"X_events[0]": True}, "replay": {}, "before_ns": None, "run": None, "from_ns": None}, "offsets"),
        ({"offsets": {"X_events[0]": 1.0}, "replay": {}, "before_ns": None, "run": None, "from_ns": None}, "offsets"),
        ({"offsets": {"X events[0]": 1}, "replay": {}, "before_ns": None, "run": None, "from_ns": None}, "offsets"),
        ({"offsets": {"X_events[2147483648]": 1}, "replay": {}, "before_ns": None, "run": None, "from_ns": None},
         "offsets"),
        ({"offsets": {"X_events[0]": 2**63}, "replay": {}, "before_ns": None, "run": None, "from_ns": None}, "offsets"),
        ({"offsets": {"X_events[0]": 5}, "replay": {"X_events[0]": 5}, "before_ns": 1, "run": None, "from_ns": None},
         "replay"),
        ({"offsets": {"X_events[0]": 5}, "replay": {"X_events[1]": 9}, "before_ns": 1, "run": None, "from_ns": None},
         "replay"),
        ({"offsets": {"X_events[0]": 5}, "replay": {"X_events[0]": 9}, "before_ns": None, "run": None,
          "from_ns": None}, "before_ns"),
        ({"offsets": {"X_events[0]": 5}, "replay": {}, "before_ns": None, "run": None, "from_ns": "now"},
         "from_ns"),
        ({"offsets": {"X_events[0]": 5}, "replay": {}, "before_ns": None, "run": {"at": "X_events[1]", "offset": 0,
          "run_name": "1", "start_ns": 0, "continued": True, "unseeded": []}, "from_ns": None}, "run is not"),
        ({"offsets": {"X_events[0]": 5}, "replay": {}, "before_ns": None, "run": {"at": "X_events[0]", "offset": 0,
          "run_name": 1, "start_ns": 0, "continued": True, "unseeded": []}, "from_ns": None}, "run is not"),
        ({"offsets": {"X_events[0]": 5}, "replay": {}, "before_ns": None, "run": {"at": "X_events[0]", "offset": 0,
          "run_name": "1", "start_ns": 0, "continued": 1, "unseeded": []}, "from_ns": None}, "run is not"),
        ({"offsets": {"X_events[0]": 5}, "replay": {}, "before_ns": None, "run": "X_events[0]", "from_ns": None},
         "run is not"),
        ({"offsets": {"x" * 100_000 + "[0]": 5}, "replay": {}, "before_ns": None, "run": None, "from_ns": None},
         "offsets"),
    ],
)  # fmt: skip
def test_a_malformed_position_is_refused_with_a_short_phrase(position: object, why: str):
    refused = parse(position)
    assert isinstance(refused, str)
    assert why in refused
    assert refused.startswith("Kafka position ")
    assert len(refused) < 400


def test_refusal_names_an_offset_deleted_by_retention_other_partitions_and_a_run_start_gone():
    run = RunAt(RUN_INFO, 2, "7", T0, True, ())
    position = Position({RUN_INFO: 2, EVENTS_0: 100, EVENTS_1: 7}, {}, None, run, None)
    roles: dict[Key, Role] = {RUN_INFO: "runInfo", EVENTS_0: "events", EVENTS_1: "events"}
    assert refusal(position, roles, {RUN_INFO: 2, EVENTS_0: 100, EVENTS_1: 0}) is None
    assert refusal(position, roles, {RUN_INFO: 0, EVENTS_0: 101, EVENTS_1: 0}) == (
        "Kafka offset 100 of X_events[0] deleted by retention (earliest 101)"
    )
    fewer = {RUN_INFO: "runInfo", EVENTS_0: "events", ("X_events", 2): "events"}
    assert refusal(position, fewer, {}) == (
        "the Kafka partitions read differ from the position's (new: X_events[2]; not read now: X_events[1])"
    )
    gone = Position({RUN_INFO: 5, EVENTS_0: 100, EVENTS_1: 7}, {}, None, run, None)
    assert refusal(gone, roles, {RUN_INFO: 3, EVENTS_0: 0, EVENTS_1: 0}) == (
        "the run start of run '7' (offset 2 of X_runInfo[0]) deleted by retention (earliest 3)"
    )
    elsewhere = Position(position.offsets, {}, None, RunAt(EVENTS_1, 2, "7", T0, True, ()), None)
    assert "no runInfo partition" in refusal(elsewhere, roles, dict.fromkeys(roles, 0))


def test_nothing_handed_out_yet_replays_everything_held():
    """No run known (pulses held for a run start): before_ns is the earliest time, so nothing is skipped."""
    unsent = Unsent({EVENTS_0: 3}, {}, NEVER, None, False, ())
    position = after_take(unsent, {EVENTS_0: ("events", 9), RUN_INFO: ("runInfo", 4)}, None, None)
    assert (position.offsets, position.replay, position.before_ns, position.run) == (
        {EVENTS_0: 3, RUN_INFO: 4}, {EVENTS_0: 9}, NEVER, None,
    )  # fmt: skip
