"""What a Kafka listener's consumer read, without I/O, as ADARA's ``ClientState`` is for an SMS conversation.

:class:`ReadState` takes each decoded message with where it came from, checks it against its partition's read
state (:mod:`.partitions`: offsets, marks, verification after a lost connection, replays), counts it, and hands
its content to the run router (:mod:`.runs`). It answers what the listener must do (read a partition again from
its beginning, seek partitions back to their marks); the listener does the seeking and the reading.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from livereduce.protocols.kafka.partitions import Key, Mark, Partitions
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
    """

    def __init__(self, roles: dict[Key, Role], buffer_limit: int, warn: Warn) -> None:
        self.partitions = Partitions(roles)
        self.router = RunRouter(buffer_limit, warn)
        self.counters: Counter[str] = Counter()
        self.losses = 0
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
        self.counters["messages"] += 1
        self.counters["bytes"] += size
        if isinstance(item, Skipped):
            self.counters[f"skipped_{item.reason}"] += 1
            self._warn(f"skip:{item.reason}", f"Kafka: skipped a message on {key[0]}: {item}")
        elif isinstance(item, Block):
            self.partitions.message_id(key, item.source, item.message_id)
            self.counters["events"] += item.n_events
            self.counters["pulses"] += item.times.size
            if item.times.size and self.partitions.fresh(key, item.times, item.n_events):
                self.router.events(item, monitor=self.partitions.states[key].role == "monitors")
        elif isinstance(item, LogValue):
            self.partitions.data_time(key, item.time_ns)
            self.router.log(item)
        elif isinstance(item, RunStart):
            self.counters["run_starts"] += 1
            self.router.run_start(item, monotonic)
        elif isinstance(item, RunStop):
            self.counters["run_stops"] += 1
            self.router.run_stop(item, monotonic)
        return False

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
          read ahead of the data cannot pile up).
        """
        states = self.partitions.states
        data = {key for key, state in states.items() if state.role != "runInfo"}
        if not self.partitions.run_control_settled():
            return data
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
