"""The client side of an ADARA conversation, as Mantid's ``SNSLiveEventDataListener`` reads it: what to ask for,
which packets count, and how they become runs and chunks of data. No sockets and no threads here: the
listener feeds frames in (:meth:`ClientState.handle`) and takes the data out (:meth:`ClientState.take`).

Semantics (Mantid's, see ``docs/architecture.md``; protocol citations in :mod:`.packets`):

* **Start** [NP 5.12; Mantid]: ``from_start_of_run`` asks for 1 and ignores everything until a RUN_STATUS
  NEW_RUN (sample-environment values seen meanwhile are kept and apply from then on); ``now`` asks for 0; a
  time asks for it in EPICS seconds and drops event packets stamped before it (the SMS rounds back).
* **Runs** come only from RUN_STATUS NEW_RUN and END_RUN [NP 5 intro]: END_RUN seals the data so far as
  ``END_RUN``; NEW_RUN seals it as ``BEGIN_RUN`` when pulses arrived since the previous transition (data
  between runs, or a run whose end was missed), else it just starts the run. RUN_EOF/RUN_BOF, STATE and the
  prologue repeated in every chunk file change nothing. An END_RUN when no run is open and no data came since
  the last transition ends nothing (counted, ``skipped_end_run_without_a_run``). Runs without data that follow
  each other before the next :meth:`ClientState.take` collapse into one transition (the latest; counted,
  ``run_transitions_coalesced``), so a flood of run transitions never piles up.
* **Pause** [NP 5.14; Mantid]: between pause and resume annotations, banked events are dropped (counted as
  ``paused``) unless ``keep_paused_events``.
* **Reconnects** (:meth:`ClientState.connected`): with ``from_start_of_run`` the SMS replays the run, so the
  data of the broken connection not yet taken is discarded and the data from the next NEW_RUN on is marked
  ``data_reset``; if that NEW_RUN is of another run than the one interrupted, an empty ``END_RUN`` of the
  interrupted run comes first. With ``now`` or a time, the client asks for the time of the last pulse it
  received and drops pulses up to it, so nothing is lost or doubled that the SMS still has.
* **Resume** from a checkpoint (:class:`ResumePoint`: the run and the newest pulse already accumulated, from a
  previous process): the hello asks for that pulse's time, whatever the start; the SMS starts at the chunk-file
  boundary at or before it [NP 5.12; SMS: Event Stream Server], so the pulses it replays up to that time are
  dropped and counted (:data:`ALREADY_ACCUMULATED`; their beam monitor packets too, as
  ``skipped_already_accumulated``). Reconnects then ask by time as well. If the first run the SMS names (RUN_STATUS
  STATE or NEW_RUN) is another one, the checkpoint's run ended meanwhile: an empty ``END_RUN`` of it comes first
  (``BEGIN_RUN`` for a checkpoint between runs, run 0: the accumulation ends there) and nothing more is dropped as
  already accumulated.
* **Geometry**: detector ids of the GEOMETRY's IDF; a new geometry takes effect at the next run boundary (the
  pixel range of an accumulation never changes under it).
* **Logs**: a segment holds the log values received during it, each log with the value in force when the
  segment began; a segment that starts an accumulation (the first, the first of a run, the first after a
  replay) holds the value in force of every log. So a cycle's cost for logs grows with what changed, not with
  the number of process variables. At most :data:`MAX_PROCESS_VARIABLES` process variables are tracked; those
  declared beyond are ignored and counted (``skipped_process_variable_beyond_the_maximum``). A value no chunk can
  hold exactly (:mod:`livereduce.protocols.log_values`: an array beyond ``MAX_LOG_ELEMENTS``) is skipped and
  counted (``skipped_log_too_long``).
* **Memory** is bounded by what was received: a segment's event arrays start small and grow by doubling;
  :attr:`ClientState.pending_bytes` counts every segment not yet taken (with a fixed cost per segment).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from livereduce.protocols import skipped_counter
from livereduce.protocols.adara import decode, encode
from livereduce.protocols.adara.decode import PacketError
from livereduce.protocols.adara.framing import Frame
from livereduce.protocols.adara.geometry import DetectorIds, GeometryError, detector_ids
from livereduce.protocols.adara.packets import (
    CHARGE_UNIT_PC,
    EPICS_EPOCH_OFFSET_S,
    ERROR_BANK,
    HANDLED_VERSIONS,
    HELLO_START_NOW,
    HELLO_START_OF_RUN,
    KNOWN_TYPES,
    NS_PER_S,
    UNMAPPED_BANK,
    AnnotationType,
    ClientFlags,
    PacketType,
    RunStatusCode,
)
from livereduce.protocols.adara.segments import (
    DEFAULT_SEGMENT_EVENTS,
    PULSE_BYTES,
    SEGMENT_BYTES,
    Allocate,
    EventArrays,
    LogValue,
    Segment,
    Transition,
    numpy_arrays,
)
from livereduce.protocols.adara.variables import ProcessVariables

Start = Literal["from_start_of_run", "now"] | datetime
_log = logging.getLogger("livereduce.SNSLiveEventDataListener")

SPECIAL_BANK_REASONS = {
    UNMAPPED_BANK: "unmapped pixel (bank 0xFFFFFFFF)",
    ERROR_BANK: "pixel error (bank 0xFFFFFFFE)",
}
"""Reasons under which events of the special banks are dropped (Mantid skips them) [NP 5.1]."""
PAUSED = "paused"
ALREADY_ACCUMULATED = "already accumulated"
"""Reason under which events of pulses at or before a :class:`ResumePoint` are dropped (the SMS replays them)."""
_LOG_ENTRY_BYTES = 64


@dataclass(frozen=True)
class ResumePoint:
    """Where a client resumes: the run of the accumulation and its newest pulse (Unix ns, the BANKED_EVENT header
    time [NP 5.1]); pulses up to that time are already accumulated."""

    run_number: int
    last_pulse_ns: int


class ClientState:
    """The conversation state of one live client across connections.

    Args:
        start: ``"from_start_of_run"``, ``"now"`` or a time (timezone-aware or UTC); ignored with ``resume``.
        resume: continue an accumulation after its newest pulse (see the module description), or None.
        keep_paused_events: keep banked events between pause and resume annotations (Mantid's
            ``keeppausedevents``); the hello then asks the SMS for paused data (v1, SEND_PAUSE_DATA).
        allocate: how event arrays are allocated (see :data:`Allocate`).
        segment_events: events a segment's arrays are first allocated for (the most a segment holds before the
            reader is told to wait, e.g.).

    Attributes:
        counters: cumulative counts, named as every source names them
            (:data:`livereduce.engines.scipp.listeners.buffered.COUNTERS`): ``messages`` (packets), ``pulses``,
            ``events`` (kept), ``events_dropped``, ``monitor_events``, ``logs``, ``run_starts``, ``run_stops``,
            ``skipped_<reason>`` per skipped packet (:func:`livereduce.protocols.skipped_counter`); and ADARA's
            own: ``events_filtered`` (before the start or the run), ``heartbeats``,
            ``events_discarded_for_replay``, ``run_transitions_coalesced``.
        geometry: detector ids of the latest GEOMETRY, or None.
        instrument: the BEAMLINE_INFO long name ("" before one arrived).
    """

    def __init__(
        self,
        start: Start,
        *,
        resume: ResumePoint | None = None,
        keep_paused_events: bool = False,
        allocate: Allocate = numpy_arrays,
        segment_events: int = DEFAULT_SEGMENT_EVENTS,
    ) -> None:
        self.start = start
        self.keep_paused_events = keep_paused_events
        self._allocate = allocate
        self._segment_events = segment_events
        self.counters: Counter[str] = Counter()
        self.geometry: DetectorIds | None = None
        self.instrument = ""
        self._geometry_hash = b""
        self._start_ns = _unix_ns(start) if isinstance(start, datetime) and resume is None else None
        self._after_ns = self._start_ns or 0
        self._replays_run = start == "from_start_of_run" and resume is None  # asks for 1, on reconnects too
        self._waiting_for_run = self._replays_run
        self._accumulated_ns = resume.last_pulse_ns if resume is not None else None  # pulses up to it: dropped
        self._resumed_run = resume.run_number if resume is not None else None  # until the SMS names its run
        self._connections = 0
        self._run_number = 0
        self._run_start_ns: int | None = None
        self._paused = False
        self._range: tuple[int, int] | None = None
        self._variables = ProcessVariables(self._skip)
        self._last_log: dict[str, tuple[int, LogValue]] = {}
        self._run_info: decode.RunInfo | None = None
        self._last_pulse_ns = self._accumulated_ns
        self._pulses_since_transition = 0
        self._reset_pending = False
        self._interrupted_run = 0
        self._sealed: deque[Segment] = deque()
        self._sealed_bytes = 0
        self._current = Segment(events=self._event_arrays(), every_log=True)
        self._handlers = {
            PacketType.BANKED_EVENT: self._banked_event,
            PacketType.BEAM_MONITOR_EVENT: self._beam_monitor,
            PacketType.RUN_STATUS: self._run_status,
            PacketType.RUN_INFO: self._run_info_packet,
            PacketType.GEOMETRY: self._geometry,
            PacketType.BEAMLINE_INFO: self._beamline_info,
            PacketType.DEVICE_DESC: self._device,
            PacketType.VAR_VALUE_U32: self._variable,
            PacketType.VAR_VALUE_DOUBLE: self._variable,
            PacketType.VAR_VALUE_STRING: self._variable,
            PacketType.VAR_VALUE_U32_ARRAY: self._variable,
            PacketType.VAR_VALUE_DOUBLE_ARRAY: self._variable,
            PacketType.STREAM_ANNOTATION: self._annotation,
            PacketType.HEARTBEAT: self._heartbeat,
            PacketType.SYNC: self._sync,
        }

    # --- the connection ----------------------------------------------------------------------------------------
    def hello(self, now_ns: int) -> bytes:
        """The CLIENT_HELLO for a new connection [NP 5.12, 5.13]: v0 as Mantid sends it, v1 with
        SEND_PAUSE_DATA when paused events are kept."""
        flags = ClientFlags.SEND_PAUSE_DATA if self.keep_paused_events else None
        return encode.client_hello(self.requested_start(), now_ns, flags)

    def requested_start(self) -> int:
        """The hello's start: 1 (start of run), 0 (now), or EPICS seconds of the start time or of the last
        pulse received (or resumed after), whichever is later."""
        if self._replays_run:
            return HELLO_START_OF_RUN
        resume = self._last_pulse_ns if self._last_pulse_ns is not None else self._start_ns
        if resume is None:
            return HELLO_START_NOW
        return max(2, resume // NS_PER_S - EPICS_EPOCH_OFFSET_S)

    def connected(self) -> None:
        """A new connection is up (its hello sent): expect the prologue again; see the module description."""
        self._connections += 1
        if self._connections == 1:
            return
        if self._replays_run:
            current = self._current
            if self._run_number and (self._pulses_since_transition or current.pulses):
                self._interrupted_run = self._run_number
            self.counters["events_discarded_for_replay"] += current.event_count
            self._current = self._new_segment(every_log=True)
            self._current.initial_logs = current.initial_logs
            self._current.logs = current.logs
            self._waiting_for_run = True
            self._reset_pending = True
            self._pulses_since_transition = 0
        elif self._last_pulse_ns is not None:
            self._after_ns = max(self._after_ns, self._last_pulse_ns + 1)

    @property
    def waiting_for_run(self) -> bool:
        """True while ``from_start_of_run`` ignores everything until a NEW_RUN."""
        return self._waiting_for_run

    @property
    def id_range(self) -> tuple[int, int] | None:
        """The pixel range in force (first, last), None before the first GEOMETRY with detector ids."""
        return self._range

    @property
    def pending_bytes(self) -> int:
        """Memory held by data not yet taken (events, pulses, monitors, logs, and :data:`SEGMENT_BYTES` per
        segment); O(1), kept up to date by every change."""
        return self._current.nbytes + self._sealed_bytes

    # --- handing over -----------------------------------------------------------------------------------------
    def take(self) -> Segment:
        """The oldest sealed segment if any (one run transition per call), else everything since the last call."""
        if self._sealed:
            taken = self._sealed.popleft()
            self._sealed_bytes -= taken.nbytes
            return taken
        taken = self._current
        self._current = self._new_segment(every_log=False, expected=taken.events.count)
        return taken

    def _event_arrays(self, expected: int = 0) -> EventArrays:
        """Arrays for ``segment_events``, or for ``expected`` events and a quarter more when that is larger: a
        segment that continues one just taken expects as many (the same stream over about one cycle), so it is
        not grown (copied) from ``segment_events`` up; memory not written costs nothing."""
        return EventArrays(self._allocate, max(self._segment_events, expected + expected // 4))

    def _new_segment(self, *, every_log: bool, expected: int = 0) -> Segment:
        """A segment of the current run; ``every_log``: it starts an accumulation, so its chunk holds the value
        in force of every log (else only of those that change in it); ``expected``: events it will likely hold
        (see :meth:`_event_arrays`)."""
        return Segment(
            self._run_number, self._run_start_ns, self._range, self._event_arrays(expected), every_log=every_log
        )

    def _seal(self, transition: Transition) -> None:
        """Seal the current segment as ``transition``; one without data replaces a sealed one without data
        before it (keeping its logs), so transitions without data never pile up."""
        current = self._current
        current.transition = transition
        last = self._sealed[-1] if self._sealed else None
        if last is not None and not last.has_data and not current.has_data:
            self._sealed.pop()
            self._sealed_bytes -= last.nbytes
            for name, entries in last.logs.items():  # few: what changed while no data came
                current.logs[name] = entries + current.logs.get(name, [])
            current.initial_logs = {**current.initial_logs, **last.initial_logs}  # the older value in force wins
            current.every_log |= last.every_log
            current.dropped.update(last.dropped)
            current.data_reset |= last.data_reset
            current.nbytes += last.nbytes - SEGMENT_BYTES
            self.counters["run_transitions_coalesced"] += 1
        self._sealed.append(current)
        self._sealed_bytes += current.nbytes
        self._pulses_since_transition = 0

    # --- packets ----------------------------------------------------------------------------------------------
    def handle(self, frame: Frame) -> None:
        """Apply one packet. Never raises for any content: a packet that cannot be used is counted under
        ``skipped_<reason>`` and ignored whole."""
        header = frame.header
        self.counters["messages"] += 1
        kind = header.packet_type
        handler = self._handlers.get(kind)
        if handler is None:
            self._skip("not used" if kind in KNOWN_TYPES else "unknown type")
            return
        if header.version > HANDLED_VERSIONS[PacketType(kind)]:
            self._skip("unknown version")
            return
        try:
            handler(frame)
        except PacketError as err:
            self._skip(err.reason)

    def _heartbeat(self, _: Frame) -> None:
        """HEARTBEAT: liveness only [NP 5.16]."""
        self.counters["heartbeats"] += 1

    def _sync(self, _: Frame) -> None:
        """SYNC marks stored files; discarded on a network stream [NP 5.15]."""

    def _skip(self, reason: str, n: int = 1) -> None:
        self.counters[skipped_counter(reason)] += n

    def _filtered(self, stamp_ns: int) -> str | None:
        """Why an event packet at ``stamp_ns`` is ignored: waiting for the run, before the start; None: used."""
        if self._waiting_for_run:
            return "waiting for run"
        if stamp_ns < self._after_ns:
            return "before start"
        return None

    def _accumulated(self, stamp_ns: int) -> bool:
        """An event packet at ``stamp_ns`` is of a pulse the resumed accumulation holds (the SMS replays it)."""
        return self._accumulated_ns is not None and stamp_ns <= self._accumulated_ns

    def _banked_event(self, frame: Frame) -> None:
        header = frame.header
        stamp = header.unix_ns
        walked = decode.walk_banked_events(header, frame.payload)
        total = walked.event_count + sum(walked.special.values())
        reason = self._filtered(stamp)
        if reason is not None:
            self._skip(reason)
            self.counters["events_filtered"] += total
            return
        segment = self._current
        if self._accumulated(stamp):
            self._skip(ALREADY_ACCUMULATED)
            segment.dropped[ALREADY_ACCUMULATED] += total
            self.counters["events_dropped"] += total
            return
        if self._paused and not self.keep_paused_events:
            segment.dropped[PAUSED] += total
            self.counters["events_dropped"] += total
            return
        segment.events.append(frame.payload, walked.sections)
        kept = walked.event_count
        for bank, count in walked.special.items():
            segment.dropped[SPECIAL_BANK_REASONS[bank]] += count
            self.counters["events_dropped"] += count
        pulse = walked.pulse
        segment.pulse_ns.append(stamp)
        segment.charge_pc.append(pulse.charge * CHARGE_UNIT_PC)
        segment.flags.append(pulse.flags)
        segment.veto.append(pulse.veto)
        segment.pulse_events.append(kept)
        segment.nbytes += 8 * kept + PULSE_BYTES
        self.counters["pulses"] += 1
        self.counters["events"] += kept
        self._pulses_since_transition += 1
        self._last_pulse_ns = stamp if self._last_pulse_ns is None else max(self._last_pulse_ns, stamp)

    def _beam_monitor(self, frame: Frame) -> None:
        header = frame.header
        _, monitors = decode.decode_beam_monitor(header, frame.payload)
        reason = self._filtered(header.unix_ns)
        if reason is None and self._accumulated(header.unix_ns):
            reason = ALREADY_ACCUMULATED
        if reason is not None:
            self._skip(reason)
            return
        if self._paused and not self.keep_paused_events:
            return
        segment = self._current
        for monitor in monitors:
            times = np.full(monitor.tof_us.size, header.unix_ns, np.int64)
            segment.monitors.setdefault(monitor.monitor_id, []).append((times, monitor.tof_us.astype(np.float32)))
            segment.nbytes += 12 * monitor.tof_us.size
        self.counters["monitor_events"] += sum(monitor.tof_us.size for monitor in monitors)

    def _run_status(self, frame: Frame) -> None:
        header = frame.header
        status = decode.decode_run_status(header, frame.payload)
        start_ns = (status.run_start + EPICS_EPOCH_OFFSET_S) * NS_PER_S if status.run_start else None
        if status.status == RunStatusCode.STATE:
            self._state(status, start_ns)
        elif status.status == RunStatusCode.NEW_RUN:
            self._new_run(status, start_ns, header.unix_ns)
        elif status.status == RunStatusCode.END_RUN:
            self._end_run(header.unix_ns)

    def _state(self, status: decode.RunStatus, start_ns: int | None) -> None:
        """STATE on connect records the run details only [Mantid]."""
        self._served_run(status.run_number)
        self._run_number = status.run_number
        self._run_start_ns = start_ns if status.run_number else None
        if status.paused is not None:
            self._paused = status.paused
        if not self._current.pulses and not self._waiting_for_run:
            self._current.run_number, self._current.run_start_ns = self._run_number, self._run_start_ns

    def _new_run(self, status: decode.RunStatus, start_ns: int | None, stamp: int) -> None:
        self._served_run(status.run_number)
        self._run_number, self._run_start_ns = status.run_number, start_ns
        if self._run_info is not None and self._run_info.run_number not in (None, status.run_number):
            self._run_info = None
        if self._filtered(stamp) == "before start":  # a replayed NEW_RUN before the requested time: state only
            if not self._current.pulses:
                self._current.run_number, self._current.run_start_ns = self._run_number, self._run_start_ns
            return
        if self._waiting_for_run:
            self._waiting_for_run = False
            if self._interrupted_run and self._interrupted_run != status.run_number:
                self._end_unseen(self._interrupted_run)
            self._interrupted_run = 0
        elif self._pulses_since_transition or self._current.pulses:
            self._seal(Transition.BEGIN_RUN)
            self._current = self._new_segment(every_log=True)
        self.counters["run_starts"] += 1
        self._range = self._geometry_range() or self._range
        current = self._current
        current.run_number, current.run_start_ns, current.id_range = self._run_number, start_ns, self._range
        current.data_reset |= self._reset_pending
        self._reset_pending = False
        self._paused = False
        self._pulses_since_transition = 0

    def _served_run(self, run_number: int) -> None:
        """The SMS names the run it serves (0: none). The first time after a resume, another run than the
        checkpoint's means that one ended meanwhile: it ends here, and nothing is dropped as already accumulated."""
        resumed, self._resumed_run = self._resumed_run, None
        if resumed is None or run_number == resumed:
            return
        self._accumulated_ns = None
        self._end_unseen(resumed)
        _log.warning(
            "Run %d of the checkpoint is over: the SMS serves %s now; run %d ends at the checkpoint (its pulses "
            "after it are not served any more) and a new accumulation starts",
            resumed,
            f"run {run_number}" if run_number else "no run",
            resumed,
        )

    def _end_unseen(self, run_number: int) -> None:
        """Seal an empty END_RUN of ``run_number``, whose END_RUN this client did not receive (for run 0, data
        between runs, a BEGIN_RUN: a run began since)."""
        transition = Transition.END_RUN if run_number else Transition.BEGIN_RUN
        ended = Segment(run_number, None, self._range, transition=transition)
        self._sealed.append(ended)
        self._sealed_bytes += ended.nbytes

    def _end_run(self, stamp: int) -> None:
        if self._filtered(stamp) is not None:
            self._run_number, self._run_start_ns = 0, None
            return
        if not (self._run_number or self._current.run_number or self._current.has_data):
            self._skip("end run without a run")  # nothing to end: no run open, no data since the last transition
            return
        self.counters["run_stops"] += 1
        self._current.properties["run_end"] = stamp
        self._current.run_number = self._current.run_number or self._run_number
        self._seal(Transition.END_RUN)
        self._run_number, self._run_start_ns = 0, None
        self._range = self._geometry_range() or self._range
        self._current = self._new_segment(every_log=True)
        self._paused = False

    def _geometry(self, frame: Frame) -> None:
        payload = frame.payload
        digest = hashlib.sha1(payload, usedforsecurity=False).digest()
        if digest == self._geometry_hash:
            return
        xml = decode.decode_geometry(payload)
        try:
            ids = detector_ids(xml)
        except GeometryError as err:
            raise PacketError("geometry is not an instrument definition", str(err)) from None
        if ids.valid_range() is None:
            raise PacketError("geometry without detector ids")
        self._geometry_hash = digest
        self.geometry = ids
        if self._range is None:
            self._range = ids.valid_range()
            for segment in (*self._sealed, self._current):
                segment.id_range = segment.id_range or self._range

    def _geometry_range(self) -> tuple[int, int] | None:
        return self.geometry.valid_range() if self.geometry is not None else None

    def _beamline_info(self, frame: Frame) -> None:
        self.instrument = decode.decode_beamline_info(frame.payload).long_name

    def _run_info_packet(self, frame: Frame) -> None:
        self._run_info = decode.decode_run_info(frame.payload)

    def _device(self, frame: Frame) -> None:
        self._variables.declare(frame.payload)

    def _variable(self, frame: Frame) -> None:
        self._log(*self._variables.value(frame), frame.header.unix_ns)

    def _annotation(self, frame: Frame) -> None:
        note = decode.decode_annotation(frame.payload)
        stamp = frame.header.unix_ns
        if note.kind == AnnotationType.PAUSE:
            self._paused = True
            self._log("pause", 1, stamp)
        elif note.kind == AnnotationType.RESUME:
            self._paused = False
            self._log("pause", 0, stamp)
        elif note.kind == AnnotationType.SCAN_START:
            self._log("scan_index", note.scan_index, stamp)
        elif note.kind == AnnotationType.SCAN_STOP:
            self._log("scan_index", 0, stamp)

    def _log(self, name: str, value: LogValue, stamp: int) -> None:
        """Record a log value; a repeat of the latest (same time and value, as in every chunk file's prologue)
        is ignored."""
        last = self._last_log.get(name)
        if last is not None and last[0] == stamp and _same(last[1], value):
            return
        current = self._current
        if last is not None and name not in current.logs and name not in current.initial_logs:
            current.initial_logs[name] = last  # the value in force when the segment began
        self._last_log[name] = (stamp, value)
        current.logs.setdefault(name, []).append((stamp, value))
        current.nbytes += _LOG_ENTRY_BYTES + (value.nbytes if isinstance(value, np.ndarray) else 0)
        self.counters["logs"] += 1

    def logs_for(self, segment: Segment) -> dict[str, list[tuple[int, LogValue]]]:
        """The logs of a segment's chunk, just taken (call before the next :meth:`handle`): those that changed in
        it, and every log if it starts an accumulation (:attr:`Segment.every_log`); each as the value in force
        when the segment began plus the new values, sorted by time, without repeats.

        The value in force of a log that did not change in the segment is the value before its first change in
        a later segment (recorded there), else its latest value: the cost is the number of logs only for
        segments that start an accumulation."""
        initial = segment.initial_logs
        if segment.every_log:
            initial = dict(self._last_log)
            for later in (self._current, *reversed(self._sealed)):  # the earliest later change wins
                initial.update(later.initial_logs)
            initial.update(segment.initial_logs)
        result = {}
        for name in sorted(set(initial) | set(segment.logs)):
            entries = sorted(
                ([initial[name]] if name in initial else []) + segment.logs.get(name, []),
                key=lambda entry: entry[0],
            )
            deduped = [entries[0]]
            for entry in entries[1:]:
                if not (entry[0] == deduped[-1][0] and _same(entry[1], deduped[-1][1])):
                    deduped.append(entry)
            result[name] = deduped
        return result

    def units(self, name: str) -> str:
        """``pv_units`` of a log ("" if none)."""
        return self._variables.units.get(name, "")

    def properties_for(self, segment: Segment) -> dict[str, str | int]:
        """Run properties of a segment with Mantid's log names (times as Unix ns)."""
        properties: dict[str, str | int] = {}
        info = self._run_info
        if segment.run_number and info is not None and info.run_number in (None, segment.run_number):
            properties["experiment_identifier"] = info.proposal_id
            properties["run_title"] = info.run_title
        if segment.run_start_ns is not None:
            properties["run_start"] = segment.run_start_ns
        properties.update(segment.properties)
        return properties


def _same(a: LogValue, b: LogValue) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def _unix_ns(when: datetime) -> int:
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return int(aware.timestamp()) * NS_PER_S + aware.microsecond * 1000
