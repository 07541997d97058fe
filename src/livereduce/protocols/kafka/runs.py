"""Kafka run routing without I/O: run starts and stops, pulses and log values in; the head run's data out.

The listener reads the topics (partitions, offsets, the consumer thread) and feeds what it decoded into a
:class:`RunRouter`; ``extract()`` takes the head segment (:meth:`RunRouter.take`) and builds the chunk. No
client library, no threads, no clocks here: "now" (ns since the Unix epoch) and the monotonic time (s) are passed
in, so every rule runs in process (``test/kafka/test_runs.py``). Semantics (``docs/architecture.md``, "Runs"):

* Runs are routed by the data's own times, whatever order the topics are read in: the run-info topic may be read
  runs ahead of the data (a consumer that lags), and no run's data is lost for it.
* A pl72 (:meth:`RunRouter.run_start`) opens a run. The first run is no transition. A run still open stops at the
  new start, as if a 6s4t had said so: its last chunk is ``BeginRun`` (``EndRun`` when a stop of its own was
  known). A repeated pl72 of the same run is ignored; one that does not start after the newest run is skipped
  (``skipped_stale_run_start``); one that stopped before the start position is skipped without a transition.
* A 6s4t (:meth:`RunRouter.run_stop`) gives the newest run not yet ended that it matches (``job_id``, else
  ``run_name``; else ``skipped_unmatched_stop``) its stop (the earlier, if the next pl72 gave it one).
* A run ends (its last chunk is sealed) in :meth:`RunRouter.check_stop`, oldest first, once every data partition
  has passed its stop time, or has been at its end for :data:`STOP_LATENCY_S` with the wall clock past it (Mantid
  waits 1 s). A stop before the start position skips the run. While the oldest run waits for a partition, the
  partitions already past its stop should not be read (:attr:`RunRouter.waiting_stop`; the listener pauses them),
  and the data of the later runs does not count against the buffer's bound (:attr:`RunRouter.pending_bytes`), so
  a buffer full of the next run's data cannot keep the partition behind from being read (no deadlock).
* Pulses at or after a run's start (and before its stop) belong to it; a message's pulses that straddle a
  boundary are split. Pulses before the start position are dropped (``pulses_before_start``). Pulses no known
  run claims are held, within :data:`LIMBO_FRACTION` of the buffer (oldest dropped first), until a run start
  claims them; those dropped, and pulses of a run that come after its last chunk was taken, are counted
  (``events_outside_run``, ``events_late``) and reported with the next chunk as ``outside a run``.
* Log values go to the run they fall in; the first chunk of a run also gets each source's value in force at its
  start (the seed). Log values no known run claims are held like pulses (in the same share of the buffer) until a
  run start claims them: the run-info topic may be read after the logs of its run.
* Pulses no run claims that fall in a run whose last chunk was taken are ``events_late``; the others (between runs)
  ``events_outside_run``.
* A stream without run information (``"topics": {"runInfo": null}``; :meth:`RunRouter.begin` with ``open_ended``)
  is one run from the start position that never ends: run number 0, chunks with the status ``NoRun``.
* The first chunk of each run has ``data_reset``, unless it is the very first chunk taken. A run that ended
  without data before anything of it was taken gets no chunk (``run_transitions_coalesced``) once a later run is
  known. Runs that wait for their data are bounded by the listener, which stops reading run-info while
  :data:`MAX_PENDING_RUNS` do (:attr:`RunRouter.pending_runs`): a flood of run starts cannot pile up segments.
* What has not been handed out yet, and where it was read (:meth:`RunRouter.unsent`, after a take), makes the
  source position (:mod:`.positions`); a new process begins where it stands (:meth:`RunRouter.resume`).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np

from livereduce.protocols.kafka.schemas import LogValue, RunStart, RunStop
from livereduce.protocols.kafka.segments import Block, Held, LogEntry, Origin, Run, Segment, Taken, note
from livereduce.protocols.kafka.times import iso

_log = logging.getLogger("livereduce.KafkaEventListener")

STOP_LATENCY_S: Final = 1.0
"""After a run stop, a partition at its end counts as passed after this long (Mantid waits 1 s too)."""
LIMBO_FRACTION: Final = 0.25
"""Share of the buffer that may hold pulses no known run claims yet."""
MAX_SOURCES: Final = 10_000
"""Most log sources (and event sources, in the listener) tracked: a hostile stream could name millions."""
MAX_PENDING_RUNS: Final = 100
"""Most runs that may wait for their data to be read (run-info read ahead of the data): beyond, the listener stops
reading run-info until the data has caught up."""
OUTSIDE_A_RUN: Final = "outside a run"
"""The drop reason of pulses no run claims, as the chunk reports it."""
AFTER_THEIR_RUN: Final = "after their run ended"
"""The drop reason of pulses of a run read after its last chunk was taken, as the chunk reports it."""
MAX_ENDED_RUNS: Final = 100
"""Ended runs remembered, to tell late pulses (of an ended run) from pulses between runs."""
NEVER: Final = -(2**63)
"""A time before every time (ns)."""

Warn = Callable[[str, str], None]
"""``warn(kind, message)``: a warning the listener logs, at most once a minute per kind."""


@dataclass(frozen=True)
class Unsent:
    """What a router has not handed out after a take, and where it was read (partition -> lowest offset).

    Attributes:
        data: the messages whose pulses or log values the buffer holds (later runs' segments, held data).
        control: the run-control messages (pl72, 6s4t) that opened or stopped a run with data to come.
        before: every pulse and log value read before this time (ns) went out or was dropped, none at or after it
            (:attr:`RunRouter.sent_before`); None: everything read went out.
        run: the run of the next chunk (None: no run known, or the open-ended run).
        continued: chunks of that run went out already (the next chunk adds to their accumulation).
        unseeded: the sources whose value in force at that run's start has not gone out yet (when it is not
            ``continued``, every value in force is to come).
    """

    data: dict[tuple[str, int], int]
    control: dict[tuple[str, int], int]
    before: int | None
    run: Run | None
    continued: bool
    unseeded: tuple[str, ...]


class RunRouter:
    """Runs, segments, held pulses and seeds of one listener (no locking: the listener holds its lock).

    Args:
        buffer_limit: the buffer's bound in bytes (``source_buffer_mb``); held pulses get :data:`LIMBO_FRACTION`.
        warn: how warnings go out (rate-limited by the listener).

    Attributes:
        counters: ``logs`` (values kept), ``logs_outside_run`` (values no run claimed, dropped from the held share
            of the buffer), ``pulses_before_start``, ``events_outside_run``, ``events_late``,
            ``skipped_stale_run_start``, ``skipped_unmatched_stop``, ``skipped_invalid`` (log sources beyond
            :data:`MAX_SOURCES`), ``run_transitions_coalesced`` (runs that ended without data before anything of
            them was taken: no chunk of their own).
        lower: pulses before this time (ns) are not delivered (the start position); None: any.
        sent_before: after a take: every pulse and log value read before this time (ns) went out or was dropped,
            none at or after it did (see :meth:`unsent`); None: everything read went out.
    """

    def __init__(self, buffer_limit: int, warn: Warn) -> None:
        self.buffer_limit = buffer_limit
        self.counters: Counter[str] = Counter()
        self.runs_closed = 0  # runs whose last chunk is known (for the engine's early take of it)
        self.lower: int | None = None
        self.sent_before: int | None = NEVER
        self._warn = warn
        self._segments: deque[Segment] = deque()
        self._limbo: deque[Held] = deque()  # pulses and log values not claimed by any known run, oldest first
        self._limbo_bytes = 0
        self._ended: deque[tuple[int, int]] = deque(maxlen=MAX_ENDED_RUNS)  # (start, stop) ns of ended runs
        self._last_run: Run | None = None
        self._over: RunStart | None = None  # the run current at the start position, found already stopped
        self._handed_out = False  # take() was called before
        self._latest_logs: dict[str, LogEntry] = {}
        self._dropped: Counter[str] = Counter()

    @property
    def current(self) -> Run | None:
        """The newest run (it may have ended), or None."""
        return self._last_run

    @property
    def buffered_bytes(self) -> int:
        """Bytes the segments and the held pulses cost."""
        return sum(segment.nbytes for segment in self._segments) + self._limbo_bytes

    @property
    def pending_bytes(self) -> int:
        """Bytes that count against the buffer's bound: the held pulses and the segments up to the oldest run that
        has not ended, not those of the runs after it. Their data comes only from partitions past that run's stop,
        which the listener pauses (:attr:`waiting_stop`; one batch at most each before it does), so the buffer may
        exceed the bound by what was read of later runs before the stop was known; in exchange, ``take()`` always
        makes room for the partitions the oldest run waits for."""
        total = self._limbo_bytes
        for segment in self._segments:
            total += segment.nbytes
            if segment.closing is None:
                break
        return total

    @property
    def waiting_stop(self) -> int | None:
        """The stop (ns) of the oldest run that has not ended, if known: a data partition whose data has passed it
        holds nothing more of that run, only data of later runs (None: no such run, or its stop is not known)."""
        head = next((segment.run for segment in self._segments if segment.closing is None), None)
        return None if head is None else head.stop_ns

    @property
    def pending_runs(self) -> int:
        """Runs that have not ended (waiting for their stop, or for every data partition to pass it)."""
        return sum(segment.closing is None for segment in self._segments)

    def begin(
        self,
        lower: int | None,
        found: RunStart | None,
        stops: Iterable[RunStop],
        monotonic: float,
        *,
        open_ended: bool = False,
        at: Origin | None = None,
    ) -> None:
        """Where reading starts: pulses from ``lower`` (ns; None: any), in the run ``found`` (the last run start at
        or before it, read at ``at``), unless one of ``stops`` (the run stops written after it) ended it before
        ``lower``: then it is not a run of this listener (Mantid's FromNow), and its own start and stop are not
        counted again. ``open_ended``: the stream has no run information; everything from ``lower`` is one run that
        never ends."""
        self.lower = lower
        if open_ended:
            start = RunStart("", "", NEVER if lower is None else lower, None, "", "", None)
            run = Run(start, stop_known_at=monotonic, open_ended=True)
            self._segments.append(Segment(run))
            self._last_run = run
            _log.info("Kafka: no run information: one open-ended run (run number 0) from %s", iso(start.start_ns))
            return
        if found is None:
            return
        if lower is not None and any(_stops(stop, found) and stop.stop_ns <= lower for stop in stops):
            self._over = found
            _log.info("Kafka: run %s ended before the start position", found.run_name)
        else:
            self.run_start(found, monotonic, at)

    def resume(
        self,
        lower: int | None,
        run: RunStart | None,
        at: Origin | None,
        monotonic: float,
        *,
        continued: bool,
        unseeded: Iterable[str] = (),
        open_ended: bool = False,
    ) -> None:
        """Begin where a source position stands (:mod:`.positions`), in a new process: pulses from ``lower`` (the
        start position of the process that took it), ``run`` (read at ``at``) the run of the next chunk, or the
        open-ended run; ``continued``: chunks of it went out before the position (its next chunk adds to their
        accumulation: no data reset; values in force at its start only for the sources ``unseeded``, whose value
        had not gone out); the first chunk of any later run starts a new accumulation."""
        self._handed_out = True
        self.begin(lower, run, [], monotonic, open_ended=open_ended, at=at)
        if continued and self._segments:
            segment = self._segments[-1]
            segment.reset, segment.delivered, segment.seedable, segment.seed = False, True, set(unseeded), {}

    def run_start(self, start: RunStart, monotonic: float, origin: Origin | None = None) -> None:
        """A pl72 (read at ``origin``): open a run, stopping the newest one at its start if it had no earlier stop
        (it ends in :meth:`check_stop`), and let it claim the pulses after that stop and the held pulses."""
        previous = self._last_run
        if (previous is not None and _same_run(previous.start, start)) or (
            self._over is not None and _same_run(self._over, start)
        ):
            return
        if previous is not None and start.start_ns <= previous.start.start_ns:
            self.counters["skipped_stale_run_start"] += 1
            self._warn("stale", f"Kafka: run start '{start.run_name}' is not after the newest run's start: ignored")
            return
        if start.nanosecond_times:
            self._warn("ns", f"Kafka: run start '{start.run_name}' has times in ns (Mantid's reading), not ms")
        if self.lower is not None and start.stop_ns is not None and start.stop_ns <= self.lower:
            _log.info("Kafka: run %s ended before the start position: skipped", start.run_name)
            return
        run = Run(start, stop_ns=start.stop_ns, stop_known_at=monotonic, stopped=start.stop_ns is not None)
        run.start_at = origin
        note(run.messages, origin)
        segment = Segment(run)
        segment.seed = {name: entry for name, entry in self._latest_logs.items() if entry[0] < start.start_ns}
        self._segments.append(segment)
        self._last_run = run
        if (
            previous is not None
            and not previous.closed
            and (previous.stop_ns is None or previous.stop_ns > start.start_ns)
        ):
            previous.stop_ns, previous.stop_known_at = start.start_ns, monotonic
            self._move_beyond_stop(previous)
        self._coalesce()
        held, self._limbo, self._limbo_bytes = self._limbo, deque(), 0
        for item in held:
            if item.block is not None:
                self._route(item.block, item.monitor)
            elif item.log is not None:
                self._place_log(*item.log, hold=True, origin=item.origin)
        ids = start.detector_ids
        _log.info(
            "Kafka: run %d (run_name '%s', %s) started %s%s; %s",
            run.number,
            start.run_name,
            start.instrument_name or "no instrument name",
            iso(start.start_ns),
            f", stops {iso(start.stop_ns)}" if start.stop_ns is not None else "",
            f"detector ids {ids[0]}..{ids[1]}" if ids is not None else "no detector ids",
        )

    def run_stop(self, stop: RunStop, monotonic: float, origin: Origin | None = None) -> None:
        """A 6s4t (read at ``origin``): the newest run it matches that has not ended stops at ``stop.stop_ns`` (or
        earlier, if the next run starts earlier); it ends in :meth:`check_stop`."""
        open_runs = (segment.run for segment in reversed(self._segments) if not segment.run.closed)
        run = next((run for run in open_runs if _stops(stop, run.start)), None)
        if run is None and self._last_run is None and self._over is not None and _stops(stop, self._over):
            return
        if run is None:
            self.counters["skipped_unmatched_stop"] += 1
            self._warn("stop", f"Kafka: run stop '{stop.run_name}' matches no open run: ignored")
            return
        if stop.nanosecond_times:
            self._warn("ns", f"Kafka: run stop '{stop.run_name}' has times in ns (Mantid's reading), not ms")
        if self.lower is not None and stop.stop_ns <= self.lower and self._segments:
            segment = self._segments[-1]
            if segment.run is run and not segment.delivered and not segment.events and not segment.monitors:
                self._segments.pop()
                self._last_run = None
                _log.info("Kafka: run %d ended before the start position: skipped", run.number)
                return
        run.stopped = True
        note(run.messages, origin)
        if run.stop_ns is None or stop.stop_ns < run.stop_ns:
            run.stop_ns, run.stop_known_at = stop.stop_ns, monotonic
            self._move_beyond_stop(run)
        if stop.stop_now:
            _log.info("Kafka: run %d: run stop with stop_time 0 (stop now): at the message's own time", run.number)
        _log.info("Kafka: run %d stops at %s", run.number, iso(run.stop_ns))

    def check_stop(self, partitions: Iterable[tuple[int, bool]], now_ns: int, monotonic: float) -> None:
        """End each run whose stop every data partition has passed, oldest first (a later run's stop is later).

        Args:
            partitions: each data partition's (latest data time read, ns; whether it is at its end).
            now_ns: the wall clock, ns since the Unix epoch.
            monotonic: the monotonic clock, s (the same clock as :meth:`run_stop`'s).
        """
        partitions = list(partitions)
        for segment in list(self._segments):
            run = segment.run
            if run.closed:
                continue
            if run.stop_ns is None:
                break
            waited = monotonic - run.stop_known_at >= STOP_LATENCY_S and now_ns >= run.stop_ns
            if any(newest < run.stop_ns and not (at_end and waited) for newest, at_end in partitions):
                break
            self._close(run)
            _log.info("Kafka: run %d ended at %s", run.number, iso(run.stop_ns))
        self._coalesce()

    def events(self, block: Block, monitor: bool) -> None:
        """Pulses of a message: those from the start position on, routed to the runs they belong to."""
        if block.times.size == 0:
            return
        if self.lower is not None and int(block.times.min()) < self.lower:
            early = block.times < self.lower
            self.counters["pulses_before_start"] += int(early.sum())
            if early.all():
                return
            block = block.take(~early)
        self._route(block, monitor)

    def log(self, record: LogValue, origin: Origin | None = None, *, deliver: bool = True) -> None:
        """A log value (read at ``origin``): kept for the run it falls in, and as the latest of its source (a seed
        of later runs); without ``deliver`` (it went out before a resume) only the latter."""
        name, time_ns = record.source_name, record.time_ns
        value = record.value.item() if isinstance(record.value, np.ndarray) and record.value.ndim == 0 else record.value
        if name not in self._latest_logs and len(self._latest_logs) >= MAX_SOURCES:
            self.counters["skipped_invalid"] += 1
            self._warn("log-sources", f"Kafka: more than {MAX_SOURCES} log sources; '{name}' ignored")
            return
        self.counters["logs"] += deliver
        entry = (time_ns, value)
        latest = self._latest_logs.get(name)
        if latest is None or latest[0] <= time_ns:
            self._latest_logs[name] = entry
        self._place_log(name, entry, hold=deliver, origin=origin, deliver=deliver)

    def _place_log(
        self, name: str, entry: LogEntry, *, hold: bool, origin: Origin | None = None, deliver: bool = True
    ) -> None:
        """Put a log value (read at ``origin``) in the run it falls in (not without ``deliver``), and in the seed of
        each later run it precedes; with ``hold``, a value no known run claims that a run not known yet may claim
        (at or after the frontier) is held."""
        time_ns, value = entry
        size = 16 + (value.nbytes if isinstance(value, np.ndarray) else len(value) if isinstance(value, str) else 8)
        for segment in reversed(self._segments):
            if segment.run.covers(np.array([time_ns]))[0]:
                if deliver:
                    segment.logs.setdefault(name, []).append(entry)
                    segment.nbytes += size
                    segment.came_from(origin)
                return
            if (
                time_ns < segment.run.start.start_ns
                and name not in segment.seeded
                and (segment.seedable is None or name in segment.seedable)
            ):
                seed = segment.seed.get(name)
                if seed is None or seed[0] <= time_ns:
                    segment.seed[name] = entry
        frontier = self._frontier()
        if hold and (frontier is None or time_ns >= frontier):
            self._hold(Held(None, False, (name, entry), size, origin))

    @property
    def pulses_waiting(self) -> bool:
        """The run at the head of the buffer holds pulses (what the next :meth:`take` would hand out)."""
        return bool(self._segments) and bool(self._segments[0].events or self._segments[0].monitors)

    def take(self) -> Taken:
        """Detach the head segment's data; a segment whose run has ended goes with its last chunk. The data of
        later runs waits (a chunk never spans two runs)."""
        dropped, self._dropped = self._dropped, Counter()
        handed_out, self._handed_out = self._handed_out, True
        if not self._segments:
            frontier = self._frontier()
            self.sent_before = NEVER if frontier is None else frontier
            return Taken(None, "NoRun", False, [], [], {}, dropped)
        segment = self._segments[0]
        self.sent_before = segment.run.stop_ns
        if segment.closing is not None:
            self._segments.popleft()
        logs = segment.logs
        pulses = bool(segment.events or segment.monitors)
        for name in [name for name in segment.seed if pulses or name in logs]:  # the value in force at the start
            logs.setdefault(name, []).insert(0, segment.seed.pop(name))
            segment.seeded.add(name)
        status = segment.closing or ("NoRun" if segment.run.open_ended else "Running")
        taken = Taken(
            segment.run, status, segment.reset and handed_out, segment.events, segment.monitors, logs, dropped
        )
        segment.delivered = segment.delivered or pulses
        segment.events, segment.monitors, segment.logs, segment.origins = [], [], {}, {}
        segment.reset, segment.nbytes = False, 0
        return taken

    def unsent(self) -> Unsent:
        """After :meth:`take`: what has not been handed out yet, by where it was read (see :class:`Unsent`)."""
        data: dict[tuple[str, int], int] = {}
        control: dict[tuple[str, int], int] = {}
        for segment in self._segments:
            for origin in segment.origins.items():
                note(data, origin)
            for origin in segment.run.messages.items():
                note(control, origin)
        for item in self._limbo:
            note(data, item.origin)
        head = self._segments[0] if self._segments else None
        run = None if head is None or head.run.open_ended else head.run
        unseeded = tuple(head.seed) if head is not None else ()
        return Unsent(data, control, self.sent_before, run, head is not None and not head.reset, unseeded)

    # --- routing ----------------------------------------------------------------------------------------------
    def _route(self, block: Block, monitor: bool) -> None:
        remaining = block
        for segment in reversed(self._segments):
            inside = segment.run.covers(remaining.times)
            if inside.all():
                segment.add(remaining, monitor)
                return
            if inside.any():
                segment.add(remaining.take(inside), monitor)
                remaining = remaining.take(~inside)
        frontier = self._frontier()
        if frontier is not None:
            past = remaining.times < frontier
            if past.any():
                self._drop_past(remaining.take(past))
                if past.all():
                    return
                remaining = remaining.take(~past)
        self._hold(Held(remaining, monitor, None, remaining.nbytes, remaining.origin))

    def _drop_past(self, block: Block) -> None:
        """Pulses before the frontier that no run in the buffer claims: late if an ended run covers them, else
        between runs."""
        late = np.zeros(block.times.size, bool)
        for start, stop in self._ended:
            late |= (block.times >= start) & (block.times < stop)
        if late.any():
            self._drop(block.take(late).n_events, "events_late", AFTER_THEIR_RUN)
        if not late.all():
            self._drop(block.take(~late).n_events, "events_outside_run", OUTSIDE_A_RUN)

    def _frontier(self) -> int | None:
        """Earliest time a run not known yet may claim: the newest run's stop, else its start (None: any time)."""
        run = self._last_run
        if run is None:
            return None
        return run.stop_ns if run.stop_ns is not None else run.start.start_ns

    def _hold(self, item: Held) -> None:
        """Keep pulses or a log value no known run claims, within :data:`LIMBO_FRACTION` of the buffer (oldest
        dropped first: pulses as ``events_outside_run``, log values as ``logs_outside_run``)."""
        self._limbo.append(item)
        self._limbo_bytes += item.nbytes
        while self._limbo_bytes > self.buffer_limit * LIMBO_FRACTION and self._limbo:
            old = self._limbo.popleft()
            self._limbo_bytes -= old.nbytes
            if old.block is not None:
                self._drop(old.block.n_events, "events_outside_run", OUTSIDE_A_RUN)
            else:
                self.counters["logs_outside_run"] += 1

    def _drop(self, n_events: int, counter: str, reason: str) -> None:
        self.counters[counter] += n_events
        self._dropped[reason] += n_events

    def _move_beyond_stop(self, run: Run) -> None:
        """Buffered pulses of ``run`` at or after its (new) stop are routed again (to a later run, or held)."""
        segment = next((s for s in self._segments if s.run is run), None)
        if segment is None or run.stop_ns is None:
            return
        moved: list[tuple[Block, bool]] = []
        for kind, monitor in ((segment.events, False), (segment.monitors, True)):
            kept = []
            for block in kind:
                beyond = block.times >= run.stop_ns
                if not beyond.any():
                    kept.append(block)
                    continue
                moved.append((block.take(beyond), monitor))
                segment.nbytes -= block.nbytes
                if not beyond.all():
                    kept.append(block.take(~beyond))
                    segment.nbytes += kept[-1].nbytes
            kind[:] = kept
        for block, monitor in moved:
            self._route(block, monitor)

    def _close(self, run: Run) -> None:
        run.closed = True
        self.runs_closed += 1
        if run.stop_ns is not None:
            self._ended.append((run.start.start_ns, run.stop_ns))
        for segment in self._segments:
            if segment.run is run:
                segment.closing = "EndRun" if run.stopped else "BeginRun"

    def _coalesce(self) -> None:
        """Runs that ended without data, before anything of them was taken, and have a later run (which carries the
        transition), get no chunk: a flood of run starts cannot pile up. Ended runs are the oldest (they end in
        order), so only those are looked at."""
        kept: deque[Segment] = deque()
        while self._segments and self._segments[0].closing is not None:
            segment = self._segments.popleft()
            if segment.coalescible and self._segments:
                self.counters["run_transitions_coalesced"] += 1
            else:
                kept.append(segment)
        self._segments.extendleft(reversed(kept))


def last_run_start(
    records: Iterable[tuple[int, RunStart | RunStop]], bound: int | None
) -> tuple[tuple[int, RunStart] | None, list[RunStop]]:
    """The last run start of a runInfo partition's records that starts at or before ``bound`` (ns; None: any).

    Args:
        records: (offset, run start or stop) in offset order.
        bound: the start position (ns), or None for the start of the current run.

    Returns:
        ((offset, run start) or None, the run stops after it).
    """
    best: tuple[int, RunStart] | None = None
    stops: list[tuple[int, RunStop]] = []
    for offset, record in records:
        if isinstance(record, RunStop):
            stops.append((offset, record))
        elif bound is None or record.start_ns <= bound:
            best = (offset, record)
    if best is None:
        return None, []
    return best, [stop for offset, stop in stops if offset > best[0]]


def _same_run(a: RunStart, b: RunStart) -> bool:
    return (a.job_id, a.run_name, a.start_ns) == (b.job_id, b.run_name, b.start_ns)


def _stops(stop: RunStop, start: RunStart) -> bool:
    """Whether a 6s4t stops the run of this pl72: its job id or run name matches (or it names neither)."""
    if stop.job_id and start.job_id:
        return stop.job_id == start.job_id
    if stop.run_name and start.run_name:
        return stop.run_name == start.run_name
    return True
