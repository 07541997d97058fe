#!/usr/bin/env python3
"""Where a cycle's time goes: run the scipp engine's cycles in-process and time each step.

Drives :class:`~livereduce.engines.scipp.cycle.LiveDataLoader` directly on the main thread (the daemon runs the
same calls in its ``MonitorLiveData`` thread), with the configuration and scripts of one of the
``bench_replay.py`` configurations, until the end of the file. Each step is timed by wrapping the function the
cycle calls:

* ``read``: the HDF5 read of the chunk's events (``EventFile._read`` of the listener's open file);
* ``extract``: the whole ``listener.extract()`` (read + building the chunk: weights, bins, metadata);
* ``proc``: the proc script; ``histogram``: the engine's histogramming (``preserve_events`` false);
* ``accumulate``: ``Accumulator.accumulate``; ``post_proc``: the post_proc script;
* ``event_count``: counting the accumulated events, as the engine does after each cycle for its log line.

Optionally (``--cprofile N``) the cycles run under cProfile and the N functions with the most own time are
printed. Usage (after ``bench_replay.py`` has written the configurations to ``bench/data/replay``)::

    python bench/profile_cycle.py bench/data/replay/events-petrue-0.json --cprofile 12
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

from livereduce.config import validate
from livereduce.engines.scipp import cycle as cycle_module
from livereduce.engines.scipp.chunk import event_count
from livereduce.engines.scipp.cycle import LiveDataLoader
from livereduce.engines.scipp.listeners import create_listener
from livereduce.engines.scipp.listeners.base import RunStatus
from livereduce.provenance import origin
from livereduce.scripts import load_scripts

STEPS = ("read", "extract", "proc", "histogram", "accumulate", "post_proc", "event_count")


class Timer:
    """Accumulates the time spent in wrapped callables, per step and per cycle."""

    def __init__(self) -> None:
        self.cycle: dict[str, float] = defaultdict(float)

    def wrap(self, owner: object, attribute: str, step: str) -> None:
        """Replace ``owner.attribute`` (an instance's method or a module's function) by a timing wrapper."""
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.cycle[step] += time.perf_counter() - started

        setattr(owner, attribute, timed)


def make_loader(path: Path) -> LiveDataLoader:
    """The engine's loader for a configuration file, with its listener connected and started."""
    config = validate(json.loads(path.read_text(encoding="utf-8")), str(path))
    listener = create_listener(config)
    listener.connect()
    listener.start(config.start)
    scripts = load_scripts(config.resolved_script_dir(), config.instrument_info().short_name)
    reserve = int(psutil.virtual_memory().total * config.system_mem_limit_perc / 100)  # as the engine does
    return LiveDataLoader(listener, scripts, config, reserve, origin(config, "scipp", {}, listener.name))


def instrument(loader: LiveDataLoader) -> Timer:
    """Wrap the steps of the loader's cycle with a :class:`Timer`."""
    timer = Timer()
    timer.wrap(loader.listener._file, "_read", "read")
    timer.wrap(loader.listener, "extract", "extract")
    timer.wrap(loader, "_process", "proc")
    timer.wrap(cycle_module, "histogram_events", "histogram")
    timer.wrap(loader.accumulator, "accumulate", "accumulate")
    timer.wrap(loader, "_post_process", "post_proc")
    return timer


def run_cycles(loader: LiveDataLoader, timer: Timer, profile: cProfile.Profile | None) -> tuple[int, float, dict]:
    """Run cycles to the end of the run, printing one line each; returns (events, cycle seconds, step totals)."""
    totals: dict[str, float] = defaultdict(float)
    events_total, cycles_total = 0, 0.0
    print(f"{'chunk':>5}{'events':>12}{'cycle s':>9}" + "".join(f"{step:>12}" for step in STEPS))
    for chunk in range(1, 1_000_000):
        timer.cycle.clear()
        if profile is not None:
            profile.enable()
        started = time.perf_counter()
        result = loader.run()
        counted = time.perf_counter()
        event_count(loader.accumulator.accumulation)
        ended = time.perf_counter()
        if profile is not None:
            profile.disable()
        timer.cycle["event_count"] = ended - counted
        if result.error is not None:
            raise SystemExit(f"chunk {chunk}: {result.error}")
        events_total += result.events
        cycles_total += ended - started
        for step in STEPS:
            totals[step] += timer.cycle[step]
        print(
            f"{chunk:>5}{result.events:>12,}{ended - started:>9.3f}"
            + "".join(f"{timer.cycle[step]:>12.3f}" for step in STEPS)
        )
        if result.status in (RunStatus.EndRun, RunStatus.BeginRun):
            break
    return events_total, cycles_total, totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("config", type=Path, help="a daemon configuration (JSON), e.g. from bench_replay.py")
    parser.add_argument("--cprofile", type=int, metavar="N", default=0, help="print the top N functions (cProfile)")
    args = parser.parse_args(argv)

    loader = make_loader(args.config)
    timer = instrument(loader)
    profile = cProfile.Profile() if args.cprofile else None
    try:
        events_total, cycles_total, totals = run_cycles(loader, timer, profile)
    finally:
        loader.listener.disconnect()
    print(f"{'all':>5}{events_total:>12,}{cycles_total:>9.3f}" + "".join(f"{totals[step]:>12.3f}" for step in STEPS))
    if cycles_total > 0:
        share = ", ".join(f"{step} {100 * totals[step] / cycles_total:.0f}%" for step in STEPS)
        print(f"share of the cycle time: {share}")
        print("(read is part of extract; the rest of extract builds the chunk)")
        print(f"rate: {events_total / cycles_total / 1e6:.1f} M events/s over the cycles")
    if profile is not None:
        print()
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
