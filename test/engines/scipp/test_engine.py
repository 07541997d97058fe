"""The scipp engine's schedule and run transitions, with the daemon as a subprocess on the demo source (their
variations in process: test_cycle.py, test_engine_loop.py)."""

from __future__ import annotations

import json
import signal

import numpy as np
import scipp as sc

from conftest import poll_until

SAVE = """
import json, os
from pathlib import Path
import scipp as sc
out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
out.mkdir(exist_ok=True)
run = int(input.coords["run_number"].value)
sc.io.save_hdf5(input, out / f"run_{run}.h5")
(out / "mtd.json").write_text(json.dumps(sorted(mtd)))
output = input
"""


def fake(**keys: object) -> dict:
    return {"listener": "FakeEventDataListener", "event_rate": 6000, **keys}


def pulse_spacing(accumulation: sc.DataArray) -> np.ndarray:
    return np.diff(accumulation.coords["event_time_zero"].values).astype(np.int64)


def test_a_slow_cycle_makes_the_next_chunk_bigger_and_drops_nothing(daemon):
    slow_second_chunk = """
from pathlib import Path
import time
seen = Path("seen")
seen.write_text(seen.read_text() + "x" if seen.exists() else "x")
if seen.read_text() == "xx":
    time.sleep(1.0)  # a slow reduction step, four times update_every
"""
    run = daemon(
        fake(end_run_every=3, update_every=0.25, run_transition="Stop"), {"proc": slow_second_chunk, "post_proc": SAVE}
    ).finish()

    assert run.returncode == 0, run.stdout
    accumulation = sc.io.load_hdf5(run.workdir / "out" / "run_1.h5")
    assert accumulation.sizes["event_time_zero"] == 180  # 3 s at 60 Hz: every pulse of the run
    spacing = pulse_spacing(accumulation)
    assert np.all(np.abs(spacing - 1e9 / 60) <= 1)  # contiguous pulses, none dropped
    pulses = [int(line.split(" pulses")[0].rsplit(" ", 1)[-1]) for line in run.log.splitlines() if "events in" in line]
    assert pulses[2] > 2 * 0.25 * 60  # the chunk after the slow cycle holds the backlog
    assert sum(pulses) == 180


def test_rename_keeps_the_finished_run_output(daemon):
    """Run transitions through the daemon; Restart and Stop, and Rename's names, in process in test_cycle.py."""
    process = daemon(fake(end_run_every=1, update_every=0.2, run_transition="Rename"), {"post_proc": SAVE})
    process.wait_for_log(lambda log: "Output of run #2 kept as 'result_2'" in log)
    process.wait_for_log(lambda log: "Loading live data chunk" in log.split("kept as 'result_2'")[-1])
    process.send(signal.SIGTERM)
    run = process.finish()

    assert run.returncode == 0, run.stdout
    assert "Output of run #1 kept as 'result_1'" in run.log
    names = json.loads((run.workdir / "out" / "mtd.json").read_text())
    assert {"result_1", "result_2", "result", "accumulation"} <= set(names)


def test_an_ended_replay_stops_cycling(daemon, sans2d):
    """Before, an ended replay kept the engine cycling on empty chunks (~10 % CPU): now it stays idle."""
    config = {
        "listener": "FileEventDataListener",
        "filename": str(sans2d),
        "replay_speed": 0,
        "replay_chunk_pulses": 100,
        "update_every": 0.05,
    }
    process = daemon(config, {"proc": "output = input\n"})
    log = process.wait_for_log(lambda log: "The source has ended" in log)
    assert log.count("Loading live data chunk") == 2  # positive control: it cycled while there was data
    status = process.workdir / "status.json"
    idle = poll_until(
        lambda: (now := json.loads(status.read_text()))["engine"]["state"] == "idle" and now, "the idle state"
    )
    poll_until(lambda: json.loads(status.read_text())["updated"] >= idle["updated"] + 2, "2 s of idling")
    process.send(signal.SIGUSR1)  # and it still answers
    process.wait_for_log(lambda log: "status: running:" in log)
    assert process.log().count("Loading live data chunk") == 2  # 40 update_every periods later: no cycle
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0
