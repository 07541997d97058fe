"""End to end: the SANS2D demo (demo/sans2d_live) saves the beam monitors of live chunks in every cycle.

The real daemon (a subprocess) runs the demo's proc script as shipped and its post_proc through a wrapper that
keeps a copy of each file the demo saves (:data:`KEEP_EACH_SAVE`), on the SANS2D sample served by the fake SMS
(ADARA) with beam-monitor events here, and streamed through tansu (Kafka) with a monitors topic in
``test/kafka/test_outputs_live.py``. A chunk's monitors are on the accumulation for that one cycle (the next
chunk's replace them), so the monitor events of all the kept files, in order, are every monitor event the source
sent, each once, exactly when every cycle with monitors saved them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import scipp as sc
import scippnexus as snx

from conftest import SANS2D_EVENTS, Daemon, DaemonRun, FakeSms, Sans2dReference

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"
DEMO_SCRIPTS = DEMO / "sans2d_live"
DEMO_POST_PROC = DEMO_SCRIPTS / "reduce_SANS2D_live_post_proc.py"
UPDATE_EVERY_S = 0.5

KEEP_EACH_SAVE = f"""
import os
import runpy
import shutil
from pathlib import Path

from livereduce.outputs import atomic_path

out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
before = {{path.name: path.stat().st_ino for path in out.glob("*.h5")}}
output = runpy.run_path({str(DEMO_POST_PROC)!r}, {{"input": input, "output": output}})["output"]
kept = out / "kept"
kept.mkdir(exist_ok=True)
for path in sorted(out.glob("*.h5")):
    if before.get(path.name) != path.stat().st_ino:  # saved in this cycle: each atomic save is a new file
        with atomic_path(kept / f"{{len(list(kept.glob('*.h5'))):04d}}_{{path.name}}") as copy:
            shutil.copyfile(path, copy)
"""
"""The post_proc of these tests: the demo's post_proc (run as the daemon runs a script, with ``input`` and
``output``), then a copy of each file it saved in this cycle to ``out/kept/NNNN_<name>`` (NNNN counts the saves)."""


def demo_scripts() -> dict[str, str]:
    """The daemon fixture's scripts: the demo's proc as shipped, :data:`KEEP_EACH_SAVE` as post_proc."""
    return {"proc": (DEMO_SCRIPTS / "reduce_SANS2D_live_proc.py").read_text(), "post_proc": KEEP_EACH_SAVE}


def demo_config(name: str, **keys: object) -> dict:
    """The demo configuration ``demo/<name>`` with the scripts in the daemon's directory and ``keys``."""
    return {**json.loads((DEMO / name).read_text()), "script_dir": ".", "update_every": UPDATE_EVERY_S, **keys}


def kept_saves(workdir: Path) -> list[Path]:
    """The copies :data:`KEEP_EACH_SAVE` made, in the order of the saves."""
    return sorted((workdir / "out" / "kept").glob("*.h5"))


def saved_monitor_events(files: list[Path], monitor: str) -> tuple[np.ndarray, np.ndarray]:
    """The events of ``entry/<monitor>`` of each file that has it, in order, read with scippnexus:
    (pulse time, int64 ns since the epoch; time of flight, float32 µs), one per event."""
    pulses, tofs = [np.empty(0, np.int64)], [np.empty(0, np.float32)]
    for path in files:
        with h5py.File(path, "r") as f:
            if monitor not in f["entry"]:
                continue
            assert f["entry"][monitor].attrs["NX_class"] == "NXmonitor", path.name
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # scippnexus reads the whole entry without a warning
            events = snx.load(path, root="entry")[monitor]["events"]
        flat = events.bins.assign_coords(event_time_zero=sc.bins_like(events, events.coords["event_time_zero"]))
        flat = flat.bins.concat().value
        assert str(flat.coords["event_time_offset"].unit) == "µs"
        pulses.append(flat.coords["event_time_zero"].values.astype(np.int64))
        tofs.append(flat.coords["event_time_offset"].values)
    return np.concatenate(pulses), np.concatenate(tofs)


def check_the_run(run: DaemonRun, monitor: str) -> tuple[np.ndarray, np.ndarray]:
    """The daemon ended the run cleanly, the demo saved in cycles with monitors and its file is the last save,
    with every event of the run; returns :func:`saved_monitor_events` of every save, to compare with what the
    source sent."""
    assert run.returncode == 0, run.log
    assert " - ERROR - " not in run.log, run.log
    assert "Traceback" not in run.log, run.log
    kept = kept_saves(run.workdir)
    assert run.log.count("Wrote ") == len(kept), run.log  # the demo's line: one per save, each one kept
    assert any(has_group(path, monitor) for path in kept), f"no save holds {monitor}: {run.log}"
    final = run.workdir / "out" / kept[-1].name.split("_", 1)[1]
    assert final.read_bytes() == kept[-1].read_bytes()
    assert snx.load(final, root="entry")["pixels"].sum().value == SANS2D_EVENTS
    return saved_monitor_events(kept, monitor)


def has_group(path: Path, name: str) -> bool:
    with h5py.File(path, "r") as f:
        return name in f["entry"]


# --- ADARA: the fake SMS with beam-monitor events ------------------------------------------------------------

SMS_SPEED = 5
"""The 30 s of SANS2D pulses in 6 s: several cycles of UPDATE_EVERY_S with data, time for the daemon to start."""
MONITOR_EVENTS = 4
FRAME_100NS = 166_666
"""The fake SMS's monitor events: MONITOR_EVENTS per pulse, evenly spaced in a 60 Hz frame, in 100 ns units
(livereduce.tools.sms_stream)."""


def test_the_demo_saves_the_adara_monitors_in_every_cycle(
    daemon: Callable[..., Daemon], fake_sms: Callable[..., FakeSms], sans2d_reference: Sans2dReference
) -> None:
    """The fake SMS repeats the run (``--loops 0``) on its own clock: the daemon reads the run in progress when it
    has started (from the run's beginning), which is the file's pulses shifted by whole runs."""
    sms = fake_sms(
        "--speed", str(SMS_SPEED), "--loops", "0", "--monitor-events", str(MONITOR_EVENTS), "--pulse-charge", "12340"
    )  # fmt: skip
    run = daemon(demo_config("sns_live.conf", address=f"127.0.0.1:{sms.port}"), demo_scripts()).finish()
    pulses, tofs = check_the_run(run, "monitor1")

    sent = sans2d_reference.pulse_times.astype(np.int64)
    sent += pulses[0] - sent[0] if pulses.size else 0  # the run the daemon read
    np.testing.assert_array_equal(pulses, np.repeat(sent, MONITOR_EVENTS))
    tof_100ns = ((np.arange(MONITOR_EVENTS) + 0.5) * FRAME_100NS / MONITOR_EVENTS).astype(np.int64)
    np.testing.assert_array_equal(tofs, np.tile(np.float32(tof_100ns / 10.0), sent.size))
