#!/usr/bin/env python3
"""Cost of one Add cycle as the number of accumulated pulses grows (``preserve_events`` true, long runs).

Accumulates chunks of ``--chunk-pulses`` pulses (default 1800 = 30 s at 60 Hz, the default ``update_every``)
with few events per pulse (to isolate per-pulse costs) into :class:`~livereduce.engines.scipp.accumulate.
Accumulator` (Add), and at given numbers of accumulated pulses reports the time of one ``accumulate()`` call and
of ``Accumulator.event_count`` (the engine uses both once per cycle). A cost that grew with the accumulated
pulses (instead of with the chunk) would make long runs slower per cycle. At 60 Hz, 1M pulses are 4.6 h.

Usage::

    python bench/pulse_scaling.py                       # up to 3M pulses (~14 h at 60 Hz)
    python bench/pulse_scaling.py --at 100000 1000000 3000000 6000000 --cprofile 8   # to 6M, with a profile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import numpy as np
import scipp as sc

from livereduce.engines.scipp.accumulate import Accumulator
from livereduce.engines.scipp.chunk import RunMetadata, make_chunk

PULSE_NS = 16_666_667


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--chunk-pulses", type=int, default=1800, help="pulses per chunk (default %(default)s)")
    parser.add_argument("--events-per-pulse", type=int, default=10, help="(default %(default)s)")
    parser.add_argument("--at", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000], help="pulse counts")
    parser.add_argument("--cprofile", type=int, metavar="N", default=0, help="profile the last cycle, top N")
    args = parser.parse_args(argv)
    p, e = args.chunk_pulses, args.events_per_pulse
    ids = sc.array(dims=["event"], values=np.zeros(p * e, np.int32), unit=None)
    tof = sc.array(dims=["event"], values=np.zeros(p * e, np.float32), unit="us")
    index = np.arange(p, dtype=np.int64) * e
    metadata = RunMetadata(run_number=1)
    origin = np.datetime64("2026-01-01T00:00:00", "ns")
    accumulator = Accumulator("Add", 8 << 30)
    profile = cProfile.Profile() if args.cprofile else None
    accumulated = 0
    print(f"chunks of {p} pulses x {e} events")
    for target in sorted(args.at):
        while accumulated < target:
            times = origin + (np.arange(accumulated, accumulated + p) * PULSE_NS).astype("timedelta64[ns]")
            chunk = make_chunk(ids, tof, times, index, metadata=metadata)
            last = accumulated + p >= target and target == max(args.at)
            if profile is not None and last:
                profile.enable()
            started = time.perf_counter()
            accumulator.accumulate(chunk, metadata, accumulated == 0)
            seconds = time.perf_counter() - started
            if profile is not None and last:
                profile.disable()
            accumulated += p
        started = time.perf_counter()
        _ = accumulator.event_count
        counting = time.perf_counter() - started
        print(
            f"{accumulated:>10,} pulses accumulated: accumulate() {seconds * 1e3:7.1f} ms, "
            f"event_count {counting * 1e3:6.3f} ms"
        )
    if profile is not None:
        print()
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
