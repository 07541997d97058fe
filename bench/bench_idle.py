#!/usr/bin/env python3
"""What waiting costs: CPU of the real daemon while it has nothing to do.

Each wait is measured over ``--seconds`` with psutil (user + system CPU time of the daemon process, all threads,
divided by the wall time):

* **ended replay**: a file replay (``update_every`` 0.1 s) after the file was read to its end (the engine idles);
* **waiting for scripts**: the scripts were deleted (no engine; the supervisor's once-a-second tick, the same
  loop that waits out a back-off);
* **between two cycles**: the demo source with ``update_every`` 86400 s, after the first chunk.

The anchor is a sleeping ``python3`` process measured the same way in the same run.

    python bench/bench_idle.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SANS2D = ROOT.parent / "shared" / "data" / "SANS2D_minimal.nxs"


def cpu_percent(pid: int, seconds: float) -> float:
    """CPU time of the process over ``seconds`` of wall time, in percent of one core."""
    process = psutil.Process(pid)
    before, started = sum(process.cpu_times()[:2]), time.monotonic()
    time.sleep(seconds)
    return 100 * (sum(process.cpu_times()[:2]) - before) / (time.monotonic() - started)


def wait_for(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {text!r} in {path}")


def start(workdir: Path, config: dict) -> subprocess.Popen:
    (workdir / "reduce_SANS2D_live_proc.py").write_text("output = input\n")
    config = {"instrument": "SANS2D", "engine": "scipp", "script_dir": ".", **config}
    config["status_file"] = str(workdir / "status.json")
    (workdir / "c.conf").write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "livereduce.py"), "c.conf"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure(name: str, config: dict, ready: str, seconds: float, action=None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        process = start(workdir, config)
        try:
            if action is not None:
                wait_for(workdir / "livereduce.log", "Initial chunk:")
                action(workdir)
            wait_for(workdir / "livereduce.log", ready)
            time.sleep(1.5)  # let the transition finish
            percent = cpu_percent(process.pid, seconds)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    print(f"{name:<24} {percent:6.2f} % CPU")
    return percent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    anchor = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({args.seconds + 5})"])
    time.sleep(1)
    floor = cpu_percent(anchor.pid, args.seconds)
    anchor.kill()
    print(f"{'anchor: sleeping python':<24} {floor:6.2f} % CPU")
    replay = {"listener": "FileEventDataListener", "filename": str(SANS2D), "replay_speed": 0, "update_every": 0.1}
    measure("ended replay", replay, "The source has ended", args.seconds)
    demo = {"listener": "FakeEventDataListener", "update_every": 0.1}
    measure(
        "waiting for scripts",
        demo,
        "no processing script left",
        args.seconds,
        action=lambda workdir: (workdir / "reduce_SANS2D_live_proc.py").unlink(),
    )
    between = {"listener": "FakeEventDataListener", "update_every": 86400}
    measure("between two cycles", between, "Initial chunk:", args.seconds)


if __name__ == "__main__":
    main()
