#!/usr/bin/env python3
"""Generate a synthetic SNS-layout NeXus event file for the replay benchmark.

Layout (what ``FileEventDataListener`` reads from an SNS file)::

    entry                      NX_class=NXentry
      run_number               "1"
      start_time               "2026-01-01T00:00:00"
      bank1_events             NX_class=NXevent_data
        event_id               uint32 (n_events,)        pixel, uniform in [0, pixels)
        event_time_offset      float32 (n_events,)       units="microsecond", uniform in [0, 16666)
        event_time_zero        float64 (n_pulses,)       units="second", offset="2026-01-01T00:00:00", 60 Hz
        event_index            uint64 (n_pulses,)        first event of each pulse

The events are spread evenly over the pulses (``floor(i * n_events / n_pulses)``), ~16,667 per pulse by
default. The datasets are written **uncompressed with contiguous layout** (no HDF5 chunking, no gzip): the
benchmark measures the reduction, not decompression. Real SNS files are usually compressed, so reading them
costs more than reading this file.

Generation is done in pieces of ~10M events, so memory stays bounded (~150 MB) whatever the size. An existing
file with the requested event count and pixel count is kept (no regeneration); the file is written to a
temporary name and renamed at the end, so an interrupted run never leaves a half-written file behind.

Usage::

    python bench/make_events.py                          # 50,000,000 events -> bench/data/events_50M.nxs
    python bench/make_events.py --events 1000000 --output /tmp/small.nxs
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_EVENTS = 50_000_000
DEFAULT_PIXELS = 100_000
PULSE_RATE_HZ = 60.0
FRAME_US = 1e6 / PULSE_RATE_HZ  # 16,666.7 µs between pulses
EVENTS_PER_PULSE = 16_667
PIECE_EVENTS = 10_000_000
OFFSET = "2026-01-01T00:00:00"
GROUP = "entry/bank1_events"


def default_path(n_events: int) -> Path:
    """``bench/data/events_<N>.nxs`` with N in millions when round (``events_50M.nxs``)."""
    label = f"{n_events // 1_000_000}M" if n_events % 1_000_000 == 0 else str(n_events)
    return DATA_DIR / f"events_{label}.nxs"


def n_pulses_for(n_events: int, events_per_pulse: int = EVENTS_PER_PULSE) -> int:
    """Number of 60 Hz pulses carrying ``n_events`` at ~``events_per_pulse`` each (at least one)."""
    return max(1, math.ceil(n_events / events_per_pulse))


def is_complete(path: Path, n_events: int, pixels: int) -> bool:
    """True if ``path`` is a file this script wrote with ``n_events`` events over ``pixels`` pixels."""
    if not path.is_file() or not h5py.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r") as file:
            group = file[GROUP]
            return (
                group["event_id"].shape == (n_events,)
                and group["event_time_offset"].shape == (n_events,)
                and int(group.attrs.get("bench_pixels", -1)) == pixels
            )
    except (OSError, KeyError):
        return False


def generate(path: Path, n_events: int, pixels: int = DEFAULT_PIXELS, seed: int = 12345) -> Path:
    """Write the file (see the module docstring) and return its path; no-op if it is already complete."""
    if is_complete(path, n_events, pixels):
        print(f"{path}: exists with {n_events:,} events, not regenerated", flush=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    n_pulses = n_pulses_for(n_events)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as file:
        entry = file.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("run_number", data="1")
        entry.create_dataset("start_time", data=OFFSET)
        group = entry.create_group("bank1_events")
        group.attrs["NX_class"] = "NXevent_data"
        group.attrs["bench_pixels"] = pixels
        # No chunks/compression arguments: HDF5 contiguous layout, uncompressed.
        event_id = group.create_dataset("event_id", shape=(n_events,), dtype="uint32")
        tof = group.create_dataset("event_time_offset", shape=(n_events,), dtype="float32")
        tof.attrs["units"] = "microsecond"
        etz = group.create_dataset("event_time_zero", data=np.arange(n_pulses, dtype=np.float64) / PULSE_RATE_HZ)
        etz.attrs["units"] = "second"
        etz.attrs["offset"] = OFFSET
        index = np.arange(n_pulses, dtype=np.uint64) * np.uint64(n_events) // np.uint64(n_pulses)
        group.create_dataset("event_index", data=index)
        for start in range(0, n_events, PIECE_EVENTS):
            stop = min(n_events, start + PIECE_EVENTS)
            event_id[start:stop] = rng.integers(0, pixels, size=stop - start, dtype=np.uint32)
            offsets = rng.random(size=stop - start, dtype=np.float32)
            offsets *= np.float32(math.floor(FRAME_US))
            tof[start:stop] = offsets
    os.replace(tmp, path)
    size = path.stat().st_size
    print(
        f"{path}: wrote {n_events:,} events in {n_pulses:,} pulses over {pixels:,} pixels "
        f"({size / 2**20:,.0f} MiB) in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="number of events (default %(default)s)")
    parser.add_argument("--pixels", type=int, default=DEFAULT_PIXELS, help="number of pixels (default %(default)s)")
    parser.add_argument("--seed", type=int, default=12345, help="random seed (default %(default)s)")
    parser.add_argument("--output", type=Path, help="output file (default bench/data/events_<N>.nxs)")
    args = parser.parse_args(argv)
    if args.events < 1 or args.pixels < 1:
        parser.error("--events and --pixels must be positive")
    generate(args.output or default_path(args.events), args.events, args.pixels, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
