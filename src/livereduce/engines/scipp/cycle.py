"""One update cycle, Mantid's LoadLiveData: extract -> proc -> histogram unless PreserveEvents -> accumulate ->
post_proc -> output, and what a run transition does to the accumulation.

:class:`LiveDataLoader` is the one owner of the accumulation and of the workspaces: it decides when a chunk
replaces the accumulation (the first chunk, a data reset of the source, the first chunk after a run
transition) and performs ``run_transition`` Rename. The engine only schedules cycles, stops, and reports.

Workspaces live in :attr:`LiveDataLoader.workspaces`, the engine's analogue of Mantid's ADS, which scripts see
as ``mtd``: ``result`` (the OutputWorkspace), ``accumulation`` (the AccumulationWorkspace, when
post-processing), and ``result_<run>`` kept by ``run_transition`` Rename.

Errors in a cycle never lose the accumulation: a failing proc script or an incompatible chunk drops that chunk
(its events are counted as dropped) and leaves the accumulation as it was; a failing post_proc script leaves
the accumulation updated and the previous output in place. The cycle reports the error; the engine logs it and
goes on with the next chunk (see ``docs/processing-scripts.md``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import scipp as sc

from livereduce import figures
from livereduce.config import Config
from livereduce.engines.scipp.accumulate import Accumulator, describe, histogram_events
from livereduce.engines.scipp.chunk import PULSE_DIM, RunMetadata, event_count, metadata_of
from livereduce.engines.scipp.listeners.base import Listener, RunStatus, SourcePosition
from livereduce.errors import AccumulationError, ScriptError
from livereduce.provenance import Provenance, set_current
from livereduce.scripts import ProcessingScripts, ScriptFailed, run_script

OUTPUT_WORKSPACE = "result"
"""StartLiveData ``OutputWorkspace`` as upstream passes it."""
ACCUMULATION_WORKSPACE = "accumulation"
"""Name of the accumulation in ``mtd`` when post-processing (Mantid: ``AccumulationWorkspace``)."""

_SCIPP_TYPES = (sc.DataArray, sc.Dataset, sc.DataGroup)
_PER_ACCUMULATION = ("run_number", "first_position", "last_position", "chunks", "events", "first_pulse", "last_pulse")
"""Provenance fields that belong to an accumulation (the rest describes the daemon that continues it)."""
_log = logging.getLogger("livereduce.LoadLiveData")


@dataclass(frozen=True)
class CycleResult:
    """What one cycle did.

    Attributes:
        status: the run status extracted with the chunk.
        run_number: run number of the chunk.
        events: events in the chunk (after the listener dropped invalid ones).
        pulses: pulses in the chunk.
        accumulated: whether the chunk reached the accumulation.
        accumulated_events: events in the accumulation after the cycle (0 when it holds histograms).
        accumulation: a short description of the accumulation, e.g. ``DataArray(event_id: 4096, dense float64)``.
        dropped: events the listener dropped for this chunk, by reason.
        ended: the source will deliver nothing more.
        finished: set when the engine must end (``run_transition`` Stop at a run transition): the reason.
        error: the error that ended the cycle early, or None.
        failed: the step that failed: ``proc``, ``accumulate`` (histogramming or accumulating) or ``post_proc``.
        newest_pulse_s: time of the chunk's newest pulse (Unix seconds), or None when it holds no pulse.
        more_buffered: the source already holds data beyond this chunk (the next run's).
        post_processed: whether post_proc ran (not for an early chunk in the middle of a run).
    """

    status: RunStatus
    run_number: int
    events: int
    pulses: int
    accumulated: bool
    accumulated_events: int
    accumulation: str
    dropped: Mapping[str, int] = field(default_factory=dict)
    ended: bool = False
    finished: str | None = None
    error: ScriptError | AccumulationError | None = None
    failed: str | None = None
    newest_pulse_s: float | None = None
    more_buffered: bool = False
    post_processed: bool = True

    @property
    def transition(self) -> bool:
        """The chunk ended a run (the next chunk starts a new accumulation)."""
        return self.status.ends_run


class LiveDataLoader:
    """Runs the cycles of one engine start: owns the accumulation, the workspaces and run transitions.

    Args:
        listener: the connected, started source.
        scripts: the processing scripts.
        config: ``preserve_events``, ``accum_method`` and ``run_transition`` are used.
        reserve_bytes: memory an event accumulation may reserve (virtual until used).
    """

    def __init__(
        self,
        listener: Listener,
        scripts: ProcessingScripts,
        config: Config,
        reserve_bytes: int,
        provenance: Provenance,
    ) -> None:
        self.listener = listener
        self.scripts = scripts
        self.preserve_events = config.preserve_events
        self.run_transition = config.run_transition
        self.accumulator = Accumulator(config.accum_method, reserve_bytes)
        self.workspaces: dict[str, object] = {}
        self.replace_next = True
        """The next chunk replaces the accumulation (the first chunk, after a data reset or a run transition)."""
        self.previous_run = 0
        """Run of the last transition (for Rename's ``result_<run>_post``)."""
        self.position: SourcePosition | None = None
        """The source position after the last chunk extracted (None before one that has one)."""
        self.ended = False
        """The source has delivered everything."""
        self._origin = provenance.with_scripts(scripts)
        self.provenance = self._origin
        """What made the accumulation (reset when it is replaced)."""

    @property
    def accumulation_description(self) -> str:
        """The accumulation in a few words: ``N events`` or its shape."""
        accumulator = self.accumulator
        return f"{accumulator.event_count} events" if accumulator.event_count else describe(accumulator.accumulation)

    def restore(
        self,
        parts: list[object],
        metadata: RunMetadata,
        *,
        events: bool,
        replace_next: bool,
        previous_run: int,
        provenance: dict[str, object],
        position: SourcePosition,
        ended: bool,
    ) -> None:
        """Make the accumulation a checkpoint's (see ``checkpointing.py``).

        Raises:
            AccumulationError: the parts do not fit together (the accumulation is then empty).
        """
        self.accumulator.restore(parts, metadata, events)
        self.replace_next, self.previous_run, self.position, self.ended = replace_next, previous_run, position, ended
        self.provenance = dataclasses.replace(
            self._origin,
            **{key: provenance[key] for key in _PER_ACCUMULATION if key in provenance},  # type: ignore[arg-type]
        )

    def replace_scripts(self, scripts: ProcessingScripts) -> None:
        """Use ``scripts`` from the next cycle (a post_proc edit; the proc script is the same)."""
        self.scripts = scripts
        self._origin = self._origin.with_scripts(scripts)
        self.provenance = self.provenance.with_scripts(scripts)

    def post_process_now(self) -> ScriptError | None:
        """Run post_proc on the accumulation as it is (a resumed checkpoint, a post_proc edit); the error, if any
        (the previous output then stays)."""
        try:
            self.workspaces[OUTPUT_WORKSPACE] = self._post_process(self.accumulator.accumulation)
        except ScriptError as err:
            return err
        return None

    def run(self, *, early: bool = False) -> CycleResult:
        """Run one cycle: extract, process, accumulate, post-process, then apply a run transition.

        Args:
            early: an early chunk (the source's buffer is full before the cycle is due, ``accum_method`` Add):
                post_proc runs only if the chunk ends a run (the run's last output is never skipped).

        Raises:
            SourceError: the listener failed (the engine cannot go on).
        """
        extracted = self.listener.extract()
        chunk = extracted.chunk
        post_process = not early or extracted.status.ends_run
        self.replace_next |= extracted.data_reset
        error: ScriptError | AccumulationError | None = None
        failed: str | None = None
        accumulated = False
        try:
            failed = "proc"
            processed = self._process(chunk)
            failed = "accumulate"
            if not self.preserve_events:
                processed = histogram_events(processed, extracted.event_id_range)
            if self.replace_next:
                self.provenance = self._origin
            accumulation = self.accumulator.accumulate(processed, metadata_of(chunk), self.replace_next)
            accumulated = True
            self.replace_next = False
            self.provenance = self.provenance.after_chunk(
                extracted.run_number, extracted.position, event_count(chunk), _pulse_span(chunk)
            )
            failed = None
            if post_process:
                failed = "post_proc"
                self.workspaces[OUTPUT_WORKSPACE] = self._post_process(accumulation)
                failed = None
        except (ScriptError, AccumulationError) as err:
            error = err
        finished = self._transition(extracted.status, extracted.run_number)
        # the chunk is accumulated, or dropped for a script or accumulation error (counted): the source has moved on
        # (an exception other than those leaves the position where the accumulation stands)
        if extracted.position is not None:
            self.position = extracted.position
        self.ended |= extracted.ended
        return CycleResult(
            status=extracted.status,
            run_number=extracted.run_number,
            events=event_count(chunk),
            pulses=chunk.sizes[PULSE_DIM],
            accumulated=accumulated,
            accumulated_events=self.accumulator.event_count,
            accumulation=describe(self.accumulator.accumulation),
            dropped=extracted.dropped,
            ended=extracted.ended,
            finished=finished,
            error=error,
            failed=failed,
            newest_pulse_s=_newest_pulse_s(chunk),
            more_buffered=extracted.more_buffered,
            post_processed=post_process,
        )

    def _transition(self, status: RunStatus, run: int) -> str | None:
        """Apply ``run_transition`` after a chunk that ends a run or precedes a new one.

        Returns:
            The reason the engine must end (``Stop``), else None.
        """
        if not status.ends_run:
            return None
        _log.info("Run #%d ended. RunTransitionBehavior %s.", run, self.run_transition)
        if self.run_transition == "Stop":  # the run's accumulation is complete (a checkpoint says so)
            self.replace_next = True
            return f"run {run} ended (RunTransitionBehavior Stop)"
        if self.run_transition == "Rename" and OUTPUT_WORKSPACE in self.workspaces:
            name = (
                f"{OUTPUT_WORKSPACE}_{run}"
                if status is RunStatus.EndRun
                else f"{OUTPUT_WORKSPACE}_{self.previous_run or ''}_post"
            )
            self.workspaces[name] = self.workspaces[OUTPUT_WORKSPACE]
            _log.info("Output of run #%d kept as '%s'", run, name)
        self.replace_next = True
        self.previous_run = run
        return None

    def _process(self, chunk: sc.DataArray) -> sc.DataArray | sc.Dataset | sc.DataGroup:
        """Run the proc script on the chunk; without one, or if it leaves ``output`` None, the chunk passes."""
        script = self.scripts.proc
        if script is None:
            return chunk
        name = f"__anonymous_livedata_input_{OUTPUT_WORKSPACE}"
        output = run_script(script, chunk, name, {"mtd": self.workspaces})
        if output is None or (isinstance(output, str) and output == name):  # Mantid: the input passes through
            return chunk
        if isinstance(output, str):
            return self._lookup(script.path, output)
        return _checked(script.path, output)

    def _post_process(self, accumulation: object) -> object:
        """Run the post_proc script on the accumulation (without one, the accumulation is the output), and offer the
        output to the page's built-in view (:meth:`livereduce.figures.FigureBoard.offer_view`)."""
        set_current(self.provenance)
        try:
            output = self._post_proc_output(accumulation)
            figures.board.offer_view(output)
        finally:
            set_current(None)
        return output

    def _post_proc_output(self, accumulation: object) -> object:
        script = self.scripts.post_proc
        if script is None:
            return accumulation
        self.workspaces[ACCUMULATION_WORKSPACE] = accumulation
        names = {"accumulation": accumulation, "mtd": self.workspaces}
        output = run_script(script, accumulation, OUTPUT_WORKSPACE, names)
        if output is None or (isinstance(output, str) and output == OUTPUT_WORKSPACE):
            raise ScriptFailed(
                f"{script.property_name} '{script.path}' did not assign 'output' "
                f"(the post-processing script must produce the output workspace)",
                "",
            )
        if isinstance(output, str):
            return self._lookup(script.path, output)
        return _checked(script.path, output)

    def _lookup(self, path: object, name: str) -> object:
        if name not in self.workspaces:
            raise ScriptFailed(f"'{path}': 'output' names workspace '{name}', which does not exist in mtd", "")
        return self.workspaces[name]


def _pulse_span(chunk: sc.DataArray) -> tuple[str, str] | None:
    """ISO-8601 times (ns, UTC) of the chunk's first and last pulse, or None without pulses."""
    times = chunk.coords[PULSE_DIM].values
    if not times.size:
        return None
    return f"{times.min().astype('datetime64[ns]')}Z", f"{times.max().astype('datetime64[ns]')}Z"


def _newest_pulse_s(chunk: sc.DataArray) -> float | None:
    """Unix seconds of the chunk's newest pulse (its ``event_time_zero``, ns), or None without pulses."""
    times = chunk.coords[PULSE_DIM].values
    return float(times.max().astype("datetime64[ns]").astype("int64")) / 1e9 if times.size else None


def _checked(path: object, output: object) -> object:
    if not isinstance(output, _SCIPP_TYPES):
        raise ScriptFailed(
            f"'{path}': invalid type {type(output).__name__} assigned to 'output' variable: must be a string "
            f"(a workspace name) or a scipp DataArray, Dataset or DataGroup",
            "",
        )
    return output
