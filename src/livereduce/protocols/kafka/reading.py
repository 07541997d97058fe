"""What a Kafka listener's consumer read, without I/O, as ADARA's ``ClientState`` is for an SMS conversation.

:class:`ReadState` takes each decoded message with where it came from, checks it against its partition's read
state (:mod:`.partitions`: offsets, marks, verification after a lost connection, replays), counts it, and hands
its content to the run router (:mod:`.runs`). It answers what the listener must do (read a partition again from
its beginning, seek partitions back to their marks); the listener does the seeking and the reading. After a
take it gives the source position (:meth:`ReadState.position`); a new process resumes from one
(:meth:`ReadState.resume`) and skips what went out before it (:mod:`.positions`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from livereduce.protocols.kafka.partitions import Key, Mark, Partitions
from livereduce.protocols.kafka.positions import Position, Replay, after_take
from livereduce.protocols.kafka.runs import MAX_PENDING_RUNS, RunRouter, Warn
from livereduce.protocols.kafka.schemas import Decoded, LogValue, RunStart, RunStop, Skipped
from livereduce.protocols.kafka.segments import Block
from livereduce.protocols.kafka.topics import Role


class ReadState:
    """The consumer's read state (no locking: the listener holds its lock).

    Args:
        roles: each assigned partition's role (empty until the listener knows them: :meth:`assign`).
        buffer_limit: the buffer's bound in bytes, for the router.
        warn: how warnings go out (rate-limited by the listener).

    Attributes:
        partitions: per-partition read state.
        router: the runs.
        counters: ``messages``, ``bytes`` (values), ``events``, ``pulses`` (received, replays included),
            ``run_starts``, ``run_stops``, ``skipped_<reason>``, ``reconnects`` (broker connections lost, which
            librdkafka makes again).
        losses: broker connections lost so far (a batch read while it changed is not used).
        replay: after a resume, what is read again (None: nothing, or all of it was).
    """

    def __init__(self, roles: dict[Key, Role], buffer_limit: int, warn: Warn) -> None:
        self.partitions = Partitions(roles)
        self.router = RunRouter(buffer_limit, warn)
        self.counters: Counter[str] = Counter()
        self.losses = 0
        self.replay: Replay | None = None
        self._warn = warn
        self._verify = False
        self._disconnects: dict[str, int] = {}

    def assign(self, roles: dict[Key, Role]) -> None:
        """The partitions the listener assigned itself, each with its role."""
        self.partitions = Partitions(roles)

    def message(
        self,
        key: Key,
        offset: int,
        identify: Callable[[], Mark],
        item: Block | Decoded | Skipped,
        monotonic: float,
        *,
        size: int,
    ) -> bool:
        """A message of partition ``key`` at ``offset`` (``identify()``: its mark, see :meth:`Partitions.arrived`),
        of ``size`` bytes, decoded into ``item``; ``monotonic``: the monotonic clock (s), for run stops.

        Returns:
            True when the partition's log was replaced: read it again from its beginning (:meth:`Partitions.reset`).
        """
        verdict = self.partitions.arrived(key, offset, identify)
        if verdict != "new":
            return verdict == "replaced"
        origin = (key, offset)
        sent_before = None
        if self.replay is not None:
            sent_before = self.replay.sent_before(key, offset)
            self.replay = None if self.replay.done else self.replay
        self.counters["messages"] += 1
        self.counters["bytes"] += size
        if isinstance(item, Skipped):
            self.counters[f"skipped_{item.reason}"] += 1
            self._warn(f"skip:{item.reason}", f"Kafka: skipped a message on {key[0]}: {item}")
        elif isinstance(item, Block):
            self.partitions.message_id(key, item.source, item.message_id)
            self.counters["events"] += item.n_events
            self.counters["pulses"] += item.times.size
            item.origin = origin
            if item.times.size and self.partitions.fresh(key, item.times, item.n_events):
                block = self._unsent(item, sent_before)
                if block is not None:
                    self.router.events(block, monitor=self.partitions.states[key].role == "monitors")
        elif isinstance(item, LogValue):
            self.partitions.data_time(key, item.time_ns)
            self.router.log(item, origin, deliver=sent_before is None or item.time_ns >= sent_before)
        elif isinstance(item, RunStart):
            self.counters["run_starts"] += 1
            self.router.run_start(item, monotonic, origin)
        elif isinstance(item, RunStop):
            self.counters["run_stops"] += 1
            self.router.run_stop(item, monotonic, origin)
        return False

    def _unsent(self, block: Block, sent_before: int | None) -> Block | None:
        """The pulses of ``block`` that had not gone out before the position resumed (all without a resume), or
        None; those that had are counted as ``events_replayed``."""
        if sent_before is None:
            return block
        out = block.times < sent_before
        if not out.any():
            return block
        self.partitions.counters["events_replayed"] += block.take(out).n_events
        return None if out.all() else block.take(~out)

    def resume(
        self,
        position: Position,
        run: RunStart | None,
        sought: dict[Key, int],
        monotonic: float,
        *,
        open_ended: bool,
    ) -> None:
        """Begin where ``position`` stands (see :mod:`.positions`), each partition sought to ``sought`` (its offset,
        or before it for the values in force), ``run`` the position's run's pl72 as read again (None: no run): the
        router resumes, run control is read to its end before any data (the data partitions are held until then),
        and what went out before the position is skipped where it is read again."""
        at = (position.run.key, position.run.offset) if position.run is not None else None
        continued = position.run.continued if position.run is not None else open_ended
        unseeded = position.run.unseeded if position.run is not None else ()
        self.router.resume(
            position.from_ns, run, at, monotonic, continued=continued, unseeded=unseeded, open_ended=open_ended
        )
        self.partitions.assigned(sought)
        self.replay = Replay(position, sought)
        self.replay = None if self.replay.done else self.replay

    def position(self) -> Position | None:
        """The source position after the router's last take (None before every partition has an offset)."""
        read = {key: (state.role, state.next_offset) for key, state in self.partitions.states.items()}
        if any(offset is None for _, offset in read.values()):
            return None
        return after_take(self.router.unsent(), read, self.replay, self.router.lower)

    def connection_lost(self) -> None:
        """A broker connection was lost: what is read next is used only after every partition's last message read
        was found again (a broker may come back without its log, and be refilled)."""
        self.losses += 1
        self.counters["reconnects"] += 1
        self._verify = True

    def disconnects(self, counts: dict[str, int]) -> None:
        """Each broker's ``disconnects`` so far (librdkafka's statistics): one more is a lost connection, also one
        for which no error was reported."""
        for name, count in counts.items():
            if count > self._disconnects.setdefault(name, count):
                self._disconnects[name] = count
                self.connection_lost()

    def to_verify(self) -> list[tuple[Key, int]]:
        """After a lost connection, once: the partitions to seek back to their marks, and the offsets."""
        if not self._verify:
            return []
        self._verify = False
        return self.partitions.verify()

    def paused(self) -> set[Key]:
        """The partitions the listener keeps paused now (it resumes the others):

        * every data partition while run control is not settled (:meth:`Partitions.run_control_settled`): the data
          of a new log never runs ahead of its run start into an old run;
        * the data partitions whose data has passed the stop the oldest run that has not ended waits for
          (:attr:`RunRouter.waiting_stop`): they hold only data of later runs, which no chunk can take before that
          run ends, so the partitions behind it are read meanwhile, however much of the later runs' data the buffer
          holds (which :attr:`RunRouter.pending_bytes` does not count: no deadlock under back-pressure);
        * the runInfo partitions while :data:`MAX_PENDING_RUNS` runs wait for their data (a flood of run starts
          read ahead of the data cannot pile up);
        * after a resume, the other data partitions while a sampleEnv partition reads the values in force before
          its position's offset (and is not at its end): a run's first chunk gets the values in force at its start.
        """
        states = self.partitions.states
        data = {key for key, state in states.items() if state.role != "runInfo"}
        if not self.partitions.run_control_settled():
            return data
        if self.replay is not None:
            behind = {
                key
                for key, first in self.replay.first.items()
                if not states[key].at_eof and (states[key].next_offset or 0) < first
            }
            if behind:
                return data - behind
        paused = set()
        stop = self.router.waiting_stop
        if stop is not None:
            paused = {key for key in data if states[key].max_time >= stop}
        if self.router.pending_runs >= MAX_PENDING_RUNS:
            paused |= states.keys() - data
        return paused

    def counts(self) -> Counter[str]:
        """Every counter: these, the partitions' and the router's."""
        return self.counters + self.partitions.counters + self.router.counters
