"""One update cycle, Mantid's LoadLiveData: extract -> proc -> histogram unless PreserveEvents -> accumulate ->
post_proc -> output.

Workspaces live in :attr:`LiveDataLoader.workspaces`, the engine's analogue of Mantid's ADS, which scripts see
as ``mtd``: ``result`` (the OutputWorkspace), ``accumulation`` (the AccumulationWorkspace, when
post-processing), and ``result_<run>`` kept by ``run_transition`` Rename.

Errors in a cycle never lose the accumulation: a failing proc script or an incompatible chunk drops that chunk
(its events are counted as dropped) and leaves the accumulation as it was; a failing post_proc script leaves
the accumulation updated and the previous output in place. The cycle reports the error; the engine logs it and
goes on with the next chunk (see ``docs/processing-scripts.md``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import scipp as sc

from livereduce.config import Config
from livereduce.engines.scipp.accumulate import Accumulator, histogram_events
from livereduce.engines.scipp.chunk import PULSE_DIM, event_count, metadata_of
from livereduce.engines.scipp.listeners.base import Listener, RunStatus
from livereduce.errors import AccumulationError, ScriptError
from livereduce.scripts import ProcessingScripts, ScriptFailed, run_script

OUTPUT_WORKSPACE = "result"
"""StartLiveData ``OutputWorkspace`` as upstream passes it."""
ACCUMULATION_WORKSPACE = "accumulation"
"""Name of the accumulation in ``mtd`` when post-processing (Mantid: ``AccumulationWorkspace``)."""

_SCIPP_TYPES = (sc.DataArray, sc.Dataset, sc.DataGroup)
_log = logging.getLogger("livereduce.LoadLiveData")


@dataclass(frozen=True)
class CycleResult:
    """What one cycle did.

    Attributes:
        status: the listener's run status right after the extraction.
        run_number: run number of the chunk.
        events: events in the chunk.
        pulses: pulses in the chunk.
        accumulated: whether the chunk reached the accumulation.
        error: the error that ended the cycle early, or None.
    """

    status: RunStatus
    run_number: int
    events: int
    pulses: int
    accumulated: bool
    error: ScriptError | AccumulationError | None = None


class LiveDataLoader:
    """Runs cycles for one engine start: owns the accumulation and the workspaces."""

    def __init__(self, listener: Listener, scripts: ProcessingScripts, config: Config, reserve_bytes: int) -> None:
        self.listener = listener
        self.scripts = scripts
        self.preserve_events = config.preserve_events
        self.accumulator = Accumulator(config.accum_method, reserve_bytes)
        self.workspaces: dict[str, object] = {}
        self._reset_pending = False  # a data reset whose chunk did not reach the accumulation yet

    def run(self, replace: bool) -> CycleResult:
        """Run one cycle.

        Args:
            replace: accumulate with Replace whatever the configured method (first chunk, after a transition).

        Raises:
            SourceError: the listener failed (the engine cannot go on).
        """
        self._reset_pending |= self.listener.data_reset()
        chunk = self.listener.extract()
        status = self.listener.run_status()
        metadata = metadata_of(chunk)
        events, pulses = event_count(chunk), chunk.sizes[PULSE_DIM]

        def result(accumulated: bool, error: ScriptError | AccumulationError | None = None) -> CycleResult:
            return CycleResult(status, metadata.run_number, events, pulses, accumulated, error)

        try:
            processed = self._process(chunk)
            if not self.preserve_events:
                processed = histogram_events(processed, self.listener.event_id_range())
            accumulation = self.accumulator.accumulate(processed, metadata, replace or self._reset_pending)
        except (ScriptError, AccumulationError) as err:
            return result(False, err)
        self._reset_pending = False
        try:
            self.workspaces[OUTPUT_WORKSPACE] = self._post_process(accumulation)
        except ScriptError as err:
            return result(True, err)
        return result(True)

    def _process(self, chunk: sc.DataArray) -> sc.DataArray | sc.Dataset | sc.DataGroup:
        """Run the proc script on the chunk; without one, the chunk passes through."""
        script = self.scripts.proc
        if script is None:
            return chunk
        name = f"__anonymous_livedata_input_{OUTPUT_WORKSPACE}"
        output = run_script(script, chunk, name, {"mtd": self.workspaces})
        if isinstance(output, str):
            if output == name:
                return chunk
            return self._lookup(script.path, output)
        return _checked(script.path, output)

    def _post_process(self, accumulation: object) -> object:
        """Run the post_proc script on the accumulation; without one, the accumulation is the output."""
        script = self.scripts.post_proc
        if script is None:
            return accumulation
        self.workspaces[ACCUMULATION_WORKSPACE] = accumulation
        names = {"accumulation": accumulation, "mtd": self.workspaces}
        output = run_script(script, accumulation, OUTPUT_WORKSPACE, names)
        if isinstance(output, str):
            if output == OUTPUT_WORKSPACE:
                raise ScriptFailed(
                    f"{script.property_name} '{script.path}' did not assign 'output' "
                    f"(the post-processing script must produce the output workspace)",
                    "",
                )
            return self._lookup(script.path, output)
        return _checked(script.path, output)

    def _lookup(self, path: object, name: str) -> object:
        if name not in self.workspaces:
            raise ScriptFailed(f"'{path}': 'output' names workspace '{name}', which does not exist in mtd", "")
        return self.workspaces[name]


def _checked(path: object, output: object) -> object:
    if not isinstance(output, _SCIPP_TYPES):
        raise ScriptFailed(
            f"'{path}': invalid type {type(output).__name__} assigned to 'output' variable: must be a string "
            f"(a workspace name) or a scipp DataArray, Dataset or DataGroup",
            "",
        )
    return output
