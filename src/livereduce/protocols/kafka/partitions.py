"""Read state of the partitions a Kafka listener assigned itself, without I/O: where each one is, what was read
last, and whether its log is still the one that was read.

The listener seeks and consumes; it tells :class:`Partitions` what arrived and does what the answers say
(``docs/architecture.md``, "Consumer" and "Faults"):

* Offsets that jump are counted (``offset_gaps``); offsets that go back (``partition_resets``) make the data
  times seen so far a *replay floor*: pulses up to it are skipped (``events_replayed``), so nothing is doubled.
* The last message read of each partition is its *mark* (offset, record timestamp, CRC-32 of the value). After a
  lost broker connection the listener seeks every marked partition back to its mark (:meth:`Partitions.verify`):
  the first message then read must be the mark again. If it is another message, or the partition now ends before
  it, the log was replaced (a broker that came back empty and was refilled, a re-created topic): the partition is
  read again from its beginning (:meth:`Partitions.reset`), data seen before skipped by time.
* Run control first: while a runInfo partition is being verified, or read from the listener's start or again
  after a reset and not yet at its end, :meth:`Partitions.run_control_settled` is False and the listener holds the
  data partitions back, so that data is never sorted into a run before the run start it belongs to is read (the
  topics are read in parallel; a data partition could otherwise race ahead of that run start, and a chunk of the
  run before could take its data).
* A position beyond the high watermark: never confirmed by a message, it was a wrong start (continue at the end);
  confirmed, the partition lost its log (reset).
* ev44 ``message_id`` that is neither the last of its source nor one more: ``message_id_gaps``.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from livereduce.protocols.kafka.runs import MAX_SOURCES, NEVER
from livereduce.protocols.kafka.topics import Role

Key = tuple[str, int]
"""(topic, partition)."""
Mark = tuple[int, int, int]
"""What identifies a message in its partition: (offset, record timestamp in ms, CRC-32 of its value)."""


def mark(offset: int, timestamp_ms: int, value: bytes | None) -> Mark:
    """The :data:`Mark` of a message."""
    return offset, timestamp_ms, zlib.crc32(value or b"")


@dataclass
class Partition:
    """Read state of one partition.

    Attributes:
        role: the topic's role.
        next_offset: the offset expected next (None before the assignment).
        confirmed: a message arrived at ``next_offset - 1`` (else ``next_offset`` is where it was sent).
        at_eof: the partition is at its end (no message since its last end-of-partition event).
        max_time: latest data time read (pulses, log values), ns since the Unix epoch.
        replay_floor: after a reset, data up to this time (ns) was read already.
        mark: the last message read, or None.
        verifying: sought back to ``mark`` after a lost connection; the next message decides.
        catching_up: a runInfo partition read from its start (the listener's first assignment) or again from its
            beginning after a reset, and not at its end since.
        high: the high watermark from the last fetch response (-1: not known yet).
    """

    role: Role
    next_offset: int | None = None
    confirmed: bool = False
    at_eof: bool = False
    max_time: int = NEVER
    replay_floor: int = NEVER
    mark: Mark | None = None
    verifying: bool = False
    catching_up: bool = False
    high: int = -1


Verdict = Literal["new", "same", "replaced"]
"""What a message that arrived means: use it; the mark found again (the log is the same: skip it); the log was
replaced (reset the partition, skip the message)."""


class Partitions:
    """The read state of every assigned partition (no locking: the listener holds its lock).

    Args:
        roles: each partition's role.

    Attributes:
        states: per partition.
        counters: ``offset_gaps``, ``partition_resets``, ``events_replayed``, ``message_id_gaps``.
    """

    def __init__(self, roles: dict[Key, Role]) -> None:
        self.states = {key: Partition(role) for key, role in roles.items()}
        self.counters: Counter[str] = Counter()
        self._message_ids: dict[tuple[str, int, str], int] = {}

    def assigned(self, offsets: dict[Key, int]) -> None:
        """The listener assigned every partition from ``offsets``: the runInfo partitions are read to their end
        before any data (:meth:`run_control_settled`), so that the data topics, fetched in parallel, cannot run
        ahead of a run start into the run before it (whose chunk would take that data before the start is read)."""
        for key, offset in offsets.items():
            self.sent(key, offset)
            self.states[key].catching_up = self.states[key].role == "runInfo"

    def sent(self, key: Key, offset: int) -> None:
        """The listener sent the partition to ``offset`` (its start, or the end of a partition it found shorter)."""
        state = self.states[key]
        state.next_offset, state.confirmed = offset, False

    def arrived(self, key: Key, offset: int, identify: Callable[[], Mark]) -> Verdict:
        """A message arrived at ``offset``; counts offset gaps and going back (see the module). ``identify()`` gives
        its :data:`Mark`, asked for only while the partition is being verified (a CRC of every message would cost
        2 % of a core at 10^7 events/s)."""
        state = self.states[key]
        if state.verifying:
            state.verifying = False
            if state.mark != identify():
                return "replaced"
            state.next_offset, state.confirmed = offset + 1, True
            return "same"
        if state.next_offset is not None and offset != state.next_offset:
            if offset > state.next_offset:
                self.counters["offset_gaps"] += offset - state.next_offset
            else:
                self.counters["partition_resets"] += 1
                state.replay_floor = state.max_time
        state.next_offset, state.confirmed, state.at_eof = offset + 1, True, False
        return "new"

    def ended(self, key: Key) -> bool:
        """The partition is at its end; True when it was being verified: it now ends before its mark (reset it)."""
        state = self.states[key]
        if state.verifying:
            return True
        state.at_eof, state.catching_up = True, False
        return False

    def read(self, key: Key, message: Mark) -> None:
        """``message`` was the last of a batch that was used: it becomes the mark (unless the partition moved)."""
        state = self.states[key]
        if state.next_offset == message[0] + 1:
            state.mark = message

    def fresh(self, key: Key, times: np.ndarray, n_events: int) -> bool:
        """Whether pulses (``times`` int64 ns, shape (n_pulses,), not empty) are new, not a replay after a reset."""
        state = self.states[key]
        newest = int(times.max())
        if newest <= state.replay_floor:
            self.counters["events_replayed"] += n_events
            return False
        state.max_time = max(state.max_time, newest)
        return True

    def data_time(self, key: Key, time_ns: int) -> None:
        """A log value's time (ns) was read."""
        state = self.states[key]
        state.max_time = max(state.max_time, time_ns)

    def message_id(self, key: Key, source: str, message_id: int) -> None:
        """An ev44/ev42 ``message_id`` of ``source``; at most :data:`MAX_SOURCES` sources are followed. An id equal
        to the last is no gap: a producer that does not number its messages sends one id always (ESS's fakes: 0)."""
        who = (*key, source)
        last = self._message_ids.get(who)
        if last is not None and message_id not in (last, last + 1):
            self.counters["message_id_gaps"] += 1
        if last is not None or len(self._message_ids) < MAX_SOURCES:
            self._message_ids[who] = message_id

    def verify(self) -> list[tuple[Key, int]]:
        """After a lost connection: the offsets to seek the marked partitions to (their marks), now verifying."""
        seeks = []
        for key, state in self.states.items():
            if state.mark is not None:
                state.verifying, state.next_offset, state.at_eof = True, state.mark[0], False
                seeks.append((key, state.mark[0]))
        return seeks

    def reset(self, key: Key, low: int) -> int:
        """The partition's log was lost or replaced: it is read again from ``low`` (its low watermark; returned,
        at least 0); data times read so far become its replay floor (not for run control: a run start read again
        must count)."""
        state = self.states[key]
        self.counters["partition_resets"] += 1
        state.replay_floor = state.max_time if state.role != "runInfo" else NEVER
        start = max(low, 0)
        state.next_offset, state.confirmed, state.at_eof, state.verifying, state.mark = start, False, False, False, None
        state.catching_up = True
        return start

    def high_watermark(self, key: Key, high: int) -> Literal["end", "reset"] | None:
        """The partition's high watermark is ``high`` (-1: unknown). None when the position is within it (a
        partition read again that got there has caught up, also if no end-of-partition event said so); else
        ``end`` (a start never confirmed by a message: continue at ``high``, done here) or ``reset`` (confirmed:
        the log was lost)."""
        state = self.states[key]
        if high < 0:
            return None
        state.high = high
        if state.next_offset is None:
            return None
        if state.next_offset <= high:
            state.catching_up = state.catching_up and state.next_offset < high
            return None
        if state.confirmed:
            return "reset"
        state.next_offset = high
        return "end"

    def start_offsets(
        self, found: tuple[Key, int, int] | None, run_info_ends: dict[Key, int], lower: int | None, margin_ns: int
    ) -> tuple[dict[Key, int], dict[Key, int]]:
        """Where each partition starts reading: (offsets known now, times to look offsets up for (ms, for
        ``offsets_for_times``)); the partitions in neither start at their high watermark (without T, or without a
        message after the time), never at ``OFFSET_END``, which the client resolves later (missing what is
        written meanwhile).

        * runInfo: the partition of the run start found from its offset; the others from the run start's time
          minus ``margin_ns`` (its stop may be there); without a run start, from where the search ended
          (``run_info_ends``), so that a run start written since is read.
        * data topics: from ``lower`` (T, ns) minus ``margin_ns`` (producers' record timestamps may be early).

        Args:
            found: the run start found: (its partition, its offset, its start ns), or None.
        """
        offsets: dict[Key, int] = {}
        lookups: dict[Key, int] = {}
        for key, state in self.states.items():
            since = lower
            if state.role == "runInfo":
                if found is not None and found[0] == key:
                    offsets[key] = found[1]
                    continue
                offsets[key] = run_info_ends[key]
                since = found[2] if found is not None else None
            if since is not None:
                lookups[key] = max(0, (since - margin_ns) // 1_000_000)
        return offsets, lookups

    def run_control_settled(self) -> bool:
        """Whether every runInfo partition is verified and, if it was read again from its beginning, at its end."""
        return not any(s.role == "runInfo" and (s.verifying or s.catching_up) for s in self.states.values())

    def offset_lag(self) -> dict[str, int]:
        """Messages between each partition's read position and its high watermark (the last one known), by
        ``"topic[partition]"``; partitions with neither known yet are left out."""
        return {
            f"{topic}[{partition}]": max(0, state.high - state.next_offset)
            for (topic, partition), state in self.states.items()
            if state.next_offset is not None and state.high >= 0
        }

    def data(self) -> list[tuple[int, bool]]:
        """(latest data time, at its end) of each data partition (not runInfo), for the run stop check."""
        return [(state.max_time, state.at_eof) for state in self.states.values() if state.role != "runInfo"]
