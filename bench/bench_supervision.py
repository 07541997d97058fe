#!/usr/bin/env python3
"""Supervision latencies of the real daemon: script edit -> first cycle with the new script, SIGTERM -> exit.

The daemon runs on the demo source (``FakeEventDataListener``, ``update_every`` 0.1 s) with a proc script that
appends its version tag to a file every cycle. Each round edits the script in place and measures until the new
tag appears; then a SIGTERM is sent and the time to the process exit is measured. The floor of the reload
latency is the watcher's settle time (0.5 s, printed as the anchor) plus at most one cycle.

    python bench/bench_supervision.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from livereduce.watch import SETTLE_SECONDS

ROOT = Path(__file__).resolve().parents[1]
UPDATE_EVERY = 0.1


def script(tag: str) -> str:
    return f'with open("ran.txt", "a") as f:\n    f.write("{tag}\\n")\n'


def wait_until(predicate, timeout: float = 60.0) -> float:
    """Poll ``predicate`` every millisecond; returns the time.monotonic() when it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.001)
    raise TimeoutError("condition not reached")


def tags(workdir: Path) -> list[str]:
    path = workdir / "ran.txt"
    return path.read_text().split() if path.exists() else []


def one_daemon(workdir: Path, edits: int) -> tuple[list[float], float]:
    """Start a daemon, time ``edits`` script edits, then SIGTERM; returns (reload latencies, stop latency)."""
    proc = workdir / "reduce_BENCH_live_proc.py"
    proc.write_text(script("v0"))
    config = {
        "instrument": "BENCH",
        "engine": "scipp",
        "script_dir": ".",
        "listener": "FakeEventDataListener",
        "event_rate": 6000,
        "update_every": UPDATE_EVERY,
        "status_file": str(workdir / "status.json"),
    }
    (workdir / "livereduce.conf").write_text(json.dumps(config))
    daemon = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "livereduce.py"), "livereduce.conf"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: "v0" in tags(workdir))
        reloads = []
        for edit in range(1, edits + 1):
            tag = f"v{edit}"
            started = time.monotonic()
            proc.write_text(script(tag))
            reloads.append(wait_until(lambda tag=tag: tag in tags(workdir)) - started)
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        return reloads, time.monotonic() - started
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="daemons started (default %(default)s)")
    parser.add_argument("--edits", type=int, default=3, help="script edits per daemon (default %(default)s)")
    args = parser.parse_args(argv)
    reloads, stops = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as workdir:
            latencies, stop = one_daemon(Path(workdir), args.edits)
            reloads += latencies
            stops.append(stop)
    print(f"anchor: settle time {SETTLE_SECONDS:.3f} s + at most one cycle ({UPDATE_EVERY} s)")
    for name, values in (("script edit -> new script runs", reloads), ("SIGTERM -> exit", stops)):
        print(
            f"{name:32s} n={len(values):2d}  median {statistics.median(values):.3f} s  "
            f"min {min(values):.3f} s  max {max(values):.3f} s  "
            f"(median / settle time = {statistics.median(values) / SETTLE_SECONDS:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
