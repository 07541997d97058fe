"""One cycle (LoadLiveData): the output contract, errors, and Replace after a data reset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipp as sc

from livereduce.config import Config
from livereduce.engines.scipp.chunk import RunMetadata, make_chunk
from livereduce.engines.scipp.cycle import LiveDataLoader
from livereduce.engines.scipp.listeners.base import Extracted, Listener, RunStatus
from livereduce.provenance import origin
from livereduce.scripts import ProcessingScripts, load_script


class ScriptedListener(Listener):
    """Hands out chunks of 2 pulses x 2 events (event_id = chunk number); ``resets`` lists the extractions that
    come with a data reset, ``statuses`` the run status of each extraction (default Running)."""

    name = "ScriptedListener"

    def __init__(self, resets: set[int], statuses: dict[int, RunStatus] | None = None) -> None:
        self.extracted = 0
        self.resets = resets
        self.statuses = statuses or {}

    def connect(self) -> None:
        return

    def start(self, position, resume=None) -> None:
        return

    def extract(self) -> Extracted:
        self.extracted += 1
        first = np.datetime64("2026-01-01T00:00:00", "ns") + np.timedelta64(self.extracted, "s")
        times = first + np.array([0, 16_666_667], dtype="timedelta64[ns]")
        ids = np.full(4, self.extracted, np.int32)
        chunk = make_chunk(ids, np.ones(4, np.float32), times, np.array([0, 2]), metadata=RunMetadata(run_number=7))
        status = self.statuses.get(self.extracted, RunStatus.Running)
        return Extracted(chunk, status, (0, 9), data_reset=self.extracted in self.resets)


def loader(
    tmp_path: Path,
    resets: set[int] = frozenset(),
    proc: str | None = None,
    post: str | None = None,
    statuses: dict[int, RunStatus] | None = None,
    **config: object,
):
    scripts = {}
    for role, code in (("proc", proc), ("post_proc", post)):
        if code is not None:
            path = tmp_path / f"{role}.py"
            path.write_text(code)
            scripts[role] = load_script(role, path)
    return LiveDataLoader(
        ScriptedListener(set(resets), statuses),
        ProcessingScripts(scripts.get("proc"), scripts.get("post_proc")),
        Config(**config),
        1 << 24,
        origin(Config(**config), "scipp", {}, "ScriptedListener"),
    )


def pixels(data: sc.DataArray) -> list[int]:
    return sorted(set(data.bins.concat().value.coords["event_id"].values.tolist()))


def test_a_data_reset_makes_the_next_accumulated_chunk_replace_even_after_a_failed_cycle(tmp_path):
    failing_second = "if int(input.bins.concat().value.coords['event_id'].values[0]) == 2:\n    raise ValueError\n"
    cycles = loader(tmp_path, resets={2}, proc=failing_second)
    assert cycles.run().accumulated
    assert cycles.run().error is not None  # chunk 2 (with the reset) fails and is dropped
    assert cycles.run().accumulated
    assert pixels(cycles.workspaces["result"]) == [3]  # chunk 3 replaced chunk 1
    assert cycles.run().accumulated
    assert pixels(cycles.workspaces["result"]) == [3, 4]  # then Add again


@pytest.mark.parametrize("status", [RunStatus.EndRun, RunStatus.BeginRun])
def test_a_run_transition_makes_the_next_chunk_replace(tmp_path, status, caplog):
    """Restart, the default (the daemon's run transitions end to end: test_engine.py, with Rename)."""
    caplog.set_level("INFO", logger="livereduce")
    cycles = loader(tmp_path, statuses={2: status}, post="output = input\n")
    for _ in range(3):
        assert cycles.run().accumulated
    assert pixels(cycles.workspaces["result"]) == [3]  # chunk 3 started a new accumulation
    cycles.run()
    assert pixels(cycles.workspaces["result"]) == [3, 4]
    assert caplog.messages.count("Run #7 ended. RunTransitionBehavior Restart.") == 1
    assert sorted(cycles.workspaces) == ["accumulation", "result"]  # nothing kept of the run that ended


def test_rename_keeps_the_output_of_the_run_that_ended(tmp_path, caplog):
    caplog.set_level("INFO", logger="livereduce")
    cycles = loader(tmp_path, statuses={2: RunStatus.EndRun, 3: RunStatus.BeginRun}, run_transition="Rename")
    results = [cycles.run() for _ in range(4)]
    assert [r.finished for r in results] == [None] * 4
    assert "Output of run #7 kept as 'result_7'" in caplog.messages
    assert pixels(cycles.workspaces["result_7"]) == [1, 2]
    assert pixels(cycles.workspaces["result_7_post"]) == [3]
    assert pixels(cycles.workspaces["result"]) == [4]


def test_stop_at_a_run_transition_finishes_after_the_chunk_is_accumulated(tmp_path):
    cycles = loader(tmp_path, statuses={2: RunStatus.EndRun}, run_transition="Stop")
    assert cycles.run().finished is None
    last = cycles.run()
    assert last.accumulated
    assert last.finished == "run 7 ended (RunTransitionBehavior Stop)"
    assert pixels(cycles.workspaces["result"]) == [1, 2]


def test_a_proc_script_leaving_output_none_passes_the_chunk_through(tmp_path):
    cycles = loader(tmp_path, proc="output = None\n")
    result = cycles.run()
    assert result.error is None
    assert pixels(cycles.workspaces["result"]) == [1]


def test_proc_output_may_name_a_workspace_in_mtd(tmp_path):
    cycles = loader(tmp_path, proc="mtd['kept'] = input\noutput = 'kept'\n")
    assert cycles.run().accumulated
    assert pixels(cycles.workspaces["result"]) == [1]


@pytest.mark.parametrize(
    ("proc", "post", "message"),
    [
        ("output = 42\n", None, "invalid type int assigned to 'output'"),
        ("output = 'nowhere'\n", None, "'output' names workspace 'nowhere', which does not exist in mtd"),
        (None, "x = 1\n", "did not assign 'output'"),
    ],
)
def test_unusable_outputs_are_cycle_errors(tmp_path, proc, post, message):
    result = loader(tmp_path, proc=proc, post=post).run()
    assert message in str(result.error)


def test_post_proc_sees_the_accumulation_as_input_and_accumulation(tmp_path):
    cycles = loader(tmp_path, post="assert input is accumulation\noutput = input.bins.size().sum()\n")
    for _ in range(3):
        assert cycles.run().error is None
    assert cycles.workspaces["result"].value == 12  # 3 chunks of 4 events, summed by post_proc
    assert cycles.workspaces["accumulation"].bins.size().sum().value == 12
