#!/usr/bin/env python3
"""What the daemon's page costs the reduction (issue 18): cycle time and CPU with and without viewers.

The real daemon runs the demo (``demo/``: ``FakeEventDataListener`` at 50,000 events/s, the demo's proc and
post_proc, which saves a PNG with ``save_figure`` and a NeXus file every cycle) with ``update_every`` 1 s and
``http_port`` 0. After a warm-up, phases of ``--seconds`` each: **idle** (nobody looks at the page), then
``--rounds`` times **viewed** and **idle** again (alternated, so that a drift of the shared machine falls on both).
Viewed: ``--viewers`` event streams (``/events``) and ``--pollers`` clients that every second fetch
``/page.json``, ``/figures.json`` and the newest image, as a page without event streams would.

Per phase: the cycle durations (the ``Chunk N: ...; D s; lag`` lines of the daemon's log: extract, proc,
accumulate and post_proc), median and p90; the daemon's CPU (user + system of all its threads over the wall time,
psutil) and this process's (the clients run on the same machine as the daemon; ``--nice 19`` gives the daemon
the CPU first). While viewed: the delivery delay of each event to each viewer, from the status the page shows
(``updated`` of a ``page`` event) or the figure it lists (``time`` of the newest figure of a ``figures`` event)
to its receipt, and the latency of the pollers' requests. Last, one line: the cycles of all idle phases against
those of all viewed phases (median, p90, ratio) and the daemon's mean CPU in each.

    flock -x /tmp/lead/cpu.lock python bench/bench_web.py [--seconds 30] [--rounds 3] [--viewers 200] \
        [--pollers 20] [--nice 19]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
CHUNK = re.compile(r"^(\S+ \S+) - livereduce\S* - INFO - Chunk \d+: .*; ([\d.]+) s; lag ", re.MULTILINE)
"""A cycle's log line: its time and its duration."""
WARM_UP_S = 15.0


@dataclass
class Clients:
    """What the viewers and pollers saw."""

    delays: dict[str, list[float]] = field(default_factory=lambda: {"page": [], "figures": []})
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connected: int = 0


def start(workdir: Path) -> tuple[subprocess.Popen, str]:
    """The demo daemon in ``workdir``; returns it and its page URL (from its status file)."""
    config = json.loads((ROOT / "demo" / "livereduce.conf").read_text())
    config |= {
        "script_dir": str(ROOT / "demo"),
        "update_every": 1,
        "end_run_every": 0,
        "http_port": 0,
        "status_file": str(workdir / "status.json"),
        "log_file": str(workdir / "livereduce.log"),
    }
    (workdir / "bench.conf").write_text(json.dumps(config))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "livereduce.py"), "bench.conf"],
        cwd=workdir,
        env={**os.environ, "LIVEREDUCE_OUTPUT_DIR": str(workdir / "out")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if url := json.loads((workdir / "status.json").read_text()).get("http_url"):
                return process, url
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the daemon gave no http_url within 60 s")


def cycles(log: Path, begin: float, end: float) -> list[float]:
    """Durations (s) of the cycles logged between ``begin`` and ``end`` (Unix seconds)."""
    found = []
    for when, duration in CHUNK.findall(log.read_text()):
        stamp = datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if begin <= stamp < end:
            found.append(float(duration))
    return found


async def viewer(client: httpx.AsyncClient, url: str, seen: Clients, until: float) -> None:
    """One event stream; the delay of every event after the first two (the state at connection)."""
    received = 0
    async with client.stream("GET", f"{url}events") as stream:
        seen.connected += 1
        name = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                now, data = time.time(), json.loads(line[6:])
                received += 1
                if received > 2:
                    made = (
                        data.get("updated")
                        if name == "page"
                        else max((f["time"] for f in data["figures"]), default=None)
                    )
                    if made is not None:
                        seen.delays[name].append(now - made)
            if time.monotonic() > until:
                return


async def poller(client: httpx.AsyncClient, url: str, seen: Clients, until: float) -> None:
    """Every second: the page's state, the figure list and the newest figure, as a page without events would."""
    while time.monotonic() < until:
        began = time.monotonic()
        try:
            for path in ("page.json", "figures.json"):
                answer = await client.get(f"{url}{path}")
                answer.raise_for_status()
            figures = answer.json()["figures"]
            if figures:
                await client.get(f"{url}figures/{figures[0]['id']}")  # 404 once replaced: a race a browser has too
            seen.latencies.append(time.monotonic() - began)
        except httpx.HTTPError as error:
            seen.errors.append(repr(error))
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))


async def view(url: str, viewers: int, pollers: int, seconds: float) -> Clients:
    seen = Clients()
    limits = httpx.Limits(max_connections=viewers + pollers + 10, max_keepalive_connections=viewers + pollers + 10)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as client:
        until = time.monotonic() + seconds
        tasks = [viewer(client, url, seen, until) for _ in range(viewers)]
        tasks += [poller(client, url, seen, until) for _ in range(pollers)]
        results = await asyncio.gather(*(asyncio.wait_for(t, seconds + 30) for t in tasks), return_exceptions=True)
    seen.errors += [repr(r) for r in results if isinstance(r, BaseException)]
    return seen


def spread(name: str, values: list[float]) -> dict[str, float | int]:
    """``name``: how many; ``name_median_s``, ``name_p90_s``, ``name_max_s`` (none of them without values)."""
    if len(values) < 2:
        return {name: len(values)}
    p90 = statistics.quantiles(values, n=10)[-1]
    return {
        name: len(values),
        f"{name}_median_s": statistics.median(values),
        f"{name}_p90_s": p90,
        f"{name}_max_s": max(values),
    }


def cpu(process: psutil.Process) -> float:
    return sum(process.cpu_times()[:2])


def phase(
    name: str, daemon: psutil.Process, log: Path, seconds: float, load: tuple[str, int, int] | None
) -> tuple[dict, list[float]]:
    """One phase: its figures (cycles, the daemon's CPU and ours in percent of one core, the clients' figures) and
    its cycle durations."""
    me = psutil.Process()
    begin, wall, daemon_cpu, my_cpu = time.time(), time.monotonic(), cpu(daemon), cpu(me)
    if load is None:
        time.sleep(seconds)
        seen = None
    else:
        seen = asyncio.run(view(*load, seconds))
    wall = time.monotonic() - wall
    durations = cycles(log, begin, time.time())
    result = {
        "phase": name,
        **spread("cycle", durations),
        "daemon_cpu_percent": 100 * (cpu(daemon) - daemon_cpu) / wall,
        "clients_cpu_percent": 100 * (cpu(me) - my_cpu) / wall,
    }
    if seen is not None:
        for event, delays in seen.delays.items():
            result |= spread(f"{event}_delay", delays)
        result |= {"viewers_connected": seen.connected, "polls": len(seen.latencies), **spread("poll", seen.latencies)}
        result |= {"errors": sorted(set(seen.errors))[:5], "error_count": len(seen.errors)}
    print(json.dumps(result), flush=True)
    return result, durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="viewed phases, each followed by an idle one")
    parser.add_argument("--viewers", type=int, default=200, help="event streams while viewed")
    parser.add_argument("--pollers", type=int, default=20, help="clients polling every second while viewed")
    parser.add_argument("--nice", type=int, default=0, help="niceness of the clients (not of the daemon)")
    args = parser.parse_args()
    load = (args.viewers, args.pollers)
    pooled: dict[str, list[float]] = {"idle": [], "viewed": []}
    cpu_percent: dict[str, list[float]] = {"idle": [], "viewed": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        process, url = start(workdir)
        os.nice(args.nice)  # after the daemon started: it keeps its own
        try:
            daemon, log = psutil.Process(process.pid), workdir / "livereduce.log"
            time.sleep(WARM_UP_S)
            for viewed in [False, *[True, False] * args.rounds]:
                name = "viewed" if viewed else "idle"
                result, durations = phase(name, daemon, log, args.seconds, (url, *load) if viewed else None)
                pooled[name] += durations
                cpu_percent[name].append(result["daemon_cpu_percent"])
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    idle, viewed = spread("cycle", pooled["idle"]), spread("cycle", pooled["viewed"])
    summary = {
        "viewers": args.viewers,
        "pollers": args.pollers,
        "idle_cycle_median_s": idle["cycle_median_s"],
        "idle_cycle_p90_s": idle["cycle_p90_s"],
        "viewed_cycle_median_s": viewed["cycle_median_s"],
        "viewed_cycle_p90_s": viewed["cycle_p90_s"],
        "viewed_over_idle_median": viewed["cycle_median_s"] / idle["cycle_median_s"],
        "viewed_over_idle_p90": viewed["cycle_p90_s"] / idle["cycle_p90_s"],
        "idle_daemon_cpu_percent": statistics.mean(cpu_percent["idle"]),
        "viewed_daemon_cpu_percent": statistics.mean(cpu_percent["viewed"]),
        "exit_code": process.returncode,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
