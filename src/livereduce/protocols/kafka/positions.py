"""Source positions of the Kafka listener, without I/O: what a chunk's position is, whether a saved one (from disk:
hostile) is well formed and can still be read, and what a resumed consumer skips so that nothing goes out twice.

A position (:attr:`Extracted.position`, JSON) after a chunk::

    {"offsets": {"SANS2D_events[0]": 1200, "SANS2D_runInfo[0]": 3, ...},   # every partition of every topic read
     "replay": {"SANS2D_events[0]": 1212},                                  # partitions read past their offset
     "before_ns": 1700000010000000000,                                      # int, or None when "replay" is empty
     "run": {"at": "SANS2D_runInfo[0]", "offset": 3, "run_name": "42", "start_ns": 1700000000000000000,
             "continued": true, "unseeded": []},                             # or None
     "from_ns": None}                                                       # int or None

* ``offsets``: per partition, where a new consumer reads from: the lowest offset of a message with anything not
  handed out yet (pulses or log values the buffer holds: a later run's segment, pulses or values held for a run
  start not read yet), else the offset of the next message to read. The consumer reads ahead of what is handed
  out, so a message below ``replay`` (the offset it had read up to) may be partly out: a run's last pulses went out
  and the next run's, of the same message or a later one, are buffered. What went out is told by time, not by
  offset: everything read before ``before_ns`` went out (or was dropped and counted), nothing at or after it
  (the stop of the run whose chunk it was, or the newest run's stop after its last chunk: the router routes by the
  data's own times, :mod:`.runs`). So a resumed consumer skips, below ``replay``, the pulses and log values before
  ``before_ns`` (:class:`Replay`), pulses of one message included: a message's pulses within one run always go out
  in one take (the router takes a run's whole segment); across a run boundary they are split by time.
* runInfo partitions: the lowest offset of the run starts and stops of the runs with data to come (the run of the
  next chunk and later ones), else the next offset to read. Read again, they rebuild the runs: a repeated pl72 of
  a run is ignored, a repeated 6s4t gives the same stop. The resumed consumer reads run control to its end before
  any data (as after a lost log: the data partitions are held until then), so a stop written before the position
  is known before the data it ends is routed.
* ``run``: the run of the next chunk: where its pl72 was read (``at``, ``offset``), checked against ``run_name``
  and ``start_ns`` on a resume (a topic re-created since has other messages there: the run can no longer be
  located); ``continued``: chunks of it went out already, its next chunk adds to their accumulation (no data
  reset); ``unseeded``: the log sources whose value in force at its start has not gone out yet (they go out with
  its first pulses: a position before them), the others' are not sent again. None: no run known yet, or a
  stream without run information (its one run always continues).
* ``from_ns``: the start position of the process that took it (pulses before it are not delivered), None: any.

The values in force (a log's latest value, which the first chunk of each later run gets) are not in the position:
a resume reads each sampleEnv partition from the run's start minus the seek margin as ``from_start_of_run`` does,
the messages before the position's offset only as values in force (:class:`Replay`, ``first``), and holds the
other data partitions until then (:meth:`~.reading.ReadState.paused`). A log whose last value is older than that
is not in force at a later run's start, as for a listener started at that run.

Positions cost no request to the broker and no seek while reading: they are the router's bookkeeping (each
pulse, log value and run-control message remembers where it was read, :data:`~.segments.Origin`), read after each
take. Only a resume asks the broker (watermarks, the run's pl72) and seeks, once, before reading.

Limits (documented, not handled): a run stop that moves earlier after pulses beyond it went out; a partition read
again from its beginning after a lost log when the position is taken (its replay floor is not in the position);
pulses or values held for a run start and dropped for room before the position are read and held again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from livereduce.protocols.kafka.partitions import Key
from livereduce.protocols.kafka.runs import MAX_SOURCES, NEVER, Unsent
from livereduce.protocols.kafka.topics import Role

KEYS: Final = frozenset({"offsets", "replay", "before_ns", "run", "from_ns"})
RUN_KEYS: Final = frozenset({"at", "offset", "run_name", "start_ns", "continued", "unseeded"})
ALL_SENT: Final = 2**63 - 1
"""``Replay.sent_before`` of a message read only for the values in force: everything in it went out."""
_LABEL = re.compile(r"([A-Za-z0-9._-]{1,249})\[([0-9]{1,10})\]")
"""``topic[partition]``: Kafka's topic name characters and length (``Topic.java``'s ``validate``), a partition
number below 2**31."""
_SHOWN = 200


def label(key: Key) -> str:
    """``"topic[partition]"``, as positions and ``offset_lag`` name a partition."""
    return f"{key[0]}[{key[1]}]"


@dataclass(frozen=True)
class RunAt:
    """The run of a position's next chunk (see the module): its pl72's partition and offset, name, start (ns),
    whether chunks of it went out already, and the sources whose value in force at its start has not."""

    key: Key
    offset: int
    run_name: str
    start_ns: int
    continued: bool
    unseeded: tuple[str, ...]


@dataclass(frozen=True)
class Position:
    """A parsed position (see the module; ``to_json()`` gives the JSON form)."""

    offsets: dict[Key, int]
    replay: dict[Key, int]
    before_ns: int | None
    run: RunAt | None
    from_ns: int | None

    def to_json(self) -> dict[str, Any]:
        """The JSON form (see the module), as :func:`parse` reads it back."""
        run = self.run and {
            "at": label(self.run.key),
            "offset": self.run.offset,
            "run_name": self.run.run_name,
            "start_ns": self.run.start_ns,
            "continued": self.run.continued,
            "unseeded": list(self.run.unseeded),
        }
        return {
            "offsets": {label(key): offset for key, offset in self.offsets.items()},
            "replay": {label(key): offset for key, offset in self.replay.items()},
            "before_ns": self.before_ns,
            "run": run,
            "from_ns": self.from_ns,
        }


def parse(position: object) -> Position | str:
    """A position read from disk, or why it is not one (a phrase naming the position, at most ~200 characters of
    it): every key present and no other, partitions as ``topic[partition]``, offsets integers in 0..2**63-1 (a
    replay offset above its partition's), times integers in -2**63..2**63-1 or None, the run's partition among the
    offsets, its name a string, ``continued`` a boolean, ``unseeded`` a list of at most
    :data:`~.runs.MAX_SOURCES` strings."""
    shown = repr(position)
    shown = shown if len(shown) <= _SHOWN else f"{shown[:_SHOWN]}..."

    def bad(why: str) -> str:
        return f"Kafka position {shown}: {why}"

    if not isinstance(position, dict) or position.keys() != KEYS:
        return bad(f"not a mapping of {sorted(KEYS)}")
    offsets = _offsets(position["offsets"])
    if offsets is None or not offsets:
        return bad("offsets is not a non-empty mapping of 'topic[partition]' to offsets")
    replay = _offsets(position["replay"])
    if replay is None or any(key not in offsets or offset <= offsets[key] for key, offset in replay.items()):
        return bad("replay is not a mapping of partitions of offsets to offsets above theirs")
    before, start = position["before_ns"], position["from_ns"]
    if not (_is_time(before) or (before is None and not replay)) or not (start is None or _is_time(start)):
        return bad("before_ns or from_ns is not a time in ns (before_ns None only without replay)")
    run = position["run"]
    if run is None:
        return Position(offsets, replay, before, None, start)
    key = _key(run.get("at")) if isinstance(run, dict) and run.keys() == RUN_KEYS else None
    if (
        key not in offsets
        or not _is_offset(run["offset"])
        or not isinstance(run["run_name"], str)
        or not _is_time(run["start_ns"])
        or type(run["continued"]) is not bool
        or not isinstance(run["unseeded"], list)
        or len(run["unseeded"]) > MAX_SOURCES
        or not all(isinstance(name, str) for name in run["unseeded"])
    ):
        return bad(f"run is not None or a mapping of {sorted(RUN_KEYS)} naming a partition of offsets")
    at = RunAt(key, run["offset"], run["run_name"], run["start_ns"], run["continued"], tuple(run["unseeded"]))
    return Position(offsets, replay, before, at, start)


def refusal(position: Position, roles: Mapping[Key, Role], low: Mapping[Key, int]) -> str | None:
    """Why a consumer of the partitions ``roles`` (each one's role) cannot read what follows ``position``, or None.

    Args:
        low: each partition's low watermark (the oldest offset retention has kept).

    Returns:
        The partitions differ from the position's; an offset (or the run's pl72) was deleted by retention; the run
        is on a partition that is no runInfo partition. Whether its pl72 is still there is the listener's to read.
    """
    ours, theirs = set(roles), set(position.offsets)
    if ours != theirs:
        only = ", ".join(sorted(label(key) for key in ours - theirs)) or "none"
        gone = ", ".join(sorted(label(key) for key in theirs - ours)) or "none"
        return _short(f"the Kafka partitions read differ from the position's (new: {only}; not read now: {gone})")
    for key, offset in sorted(position.offsets.items()):
        if low[key] > offset:
            return f"Kafka offset {offset} of {label(key)} deleted by retention (earliest {low[key]})"
    run = position.run
    if run is not None and roles[run.key] != "runInfo":
        return f"the run start of the position is on {label(run.key)}, which is no runInfo partition"
    if run is not None and low[run.key] > run.offset:
        return (
            f"the run start of run '{run.run_name}' (offset {run.offset} of {label(run.key)}) deleted by retention "
            f"(earliest {low[run.key]})"
        )
    return None


class Replay:
    """What a resumed consumer skips in the messages it reads again (see the module).

    Args:
        position: the position resumed.
        sought: the offset each partition was sought to (sampleEnv partitions before their position's offset, for
            the values in force).

    Attributes:
        first: the partitions still below their position's offset -> that offset.
        until: the partitions still below their replay offset -> that offset.
        before_ns: the position's ``before_ns``.
    """

    def __init__(self, position: Position, sought: Mapping[Key, int]) -> None:
        self.first = {key: position.offsets[key] for key, offset in sought.items() if offset < position.offsets[key]}
        self.until = dict(position.replay)
        self.before_ns = position.before_ns

    @property
    def done(self) -> bool:
        """Every partition has passed what it reads again."""
        return not self.first and not self.until

    def sent_before(self, key: Key, offset: int) -> int | None:
        """The time (ns) before which the data of the message at ``offset`` of ``key`` went out before the position
        (:data:`ALL_SENT`: all of it, it is read for the values in force), or None: none of it. A partition that
        reached its position's offset (or its replay offset) is forgotten."""
        first = self.first.get(key)
        if first is not None:
            if offset < first:
                return ALL_SENT
            del self.first[key]
        until = self.until.get(key)
        if until is not None:
            if offset < until:
                return self.before_ns
            del self.until[key]
        return None


def after_take(
    unsent: Unsent, read: Mapping[Key, tuple[Role, int]], replay: Replay | None, lower: int | None
) -> Position:
    """The position after a take (see the module).

    Args:
        unsent: the router's :meth:`~.runs.RunRouter.unsent` after the take.
        read: each partition's role and next offset to read.
        replay: what this consumer still reads again after a resume (None: nothing).
        lower: the router's start position (ns) or None.
    """
    before = unsent.before if unsent.before is not None or replay is None else replay.before_ns
    offsets: dict[Key, int] = {}
    until: dict[Key, int] = {}
    for key, (role, next_offset) in read.items():
        at = max(next_offset, replay.first.get(key, next_offset)) if replay is not None else next_offset
        end = max(at, replay.until.get(key, at)) if replay is not None else at
        lowest = unsent.control.get(key) if role == "runInfo" else unsent.data.get(key)
        first = min(at, lowest) if lowest is not None and (role == "runInfo" or before is not None) else at
        offsets[key] = first
        if role != "runInfo" and first < end and before is not None:
            until[key] = end
    run = unsent.run
    at_run = None
    if run is not None and run.start_at is not None:
        key, offset = run.start_at
        unseeded = unsent.unseeded if unsent.continued else ()
        at_run = RunAt(key, offset, run.start.run_name, run.start.start_ns, unsent.continued, unseeded)
    return Position(offsets, until, before if until else None, at_run, lower)


def _key(text: object) -> Key | None:
    match = _LABEL.fullmatch(text) if isinstance(text, str) else None
    return None if match is None or int(match[2]) >= 2**31 else (match[1], int(match[2]))


def _offsets(value: object) -> dict[Key, int] | None:
    """``{"topic[partition]": offset}`` parsed, or None when it is not that."""
    if not isinstance(value, dict):
        return None
    parsed = {_key(text): offset for text, offset in value.items()}
    if None in parsed or len(parsed) < len(value) or not all(_is_offset(offset) for offset in parsed.values()):
        return None  # (two names of one partition: "X[0]", "X[00]")
    return parsed


def _is_offset(value: object) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _is_time(value: object) -> bool:
    return type(value) is int and NEVER <= value < 2**63


def _short(text: str) -> str:
    return text if len(text) <= 2 * _SHOWN else f"{text[: 2 * _SHOWN]}..."
