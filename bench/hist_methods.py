#!/usr/bin/env python3
"""Micro-benchmark: counts per pixel of one chunk, scipp ``hist`` against ``np.bincount``.

Builds one chunk as the file listener does (``make_chunk``: int32 ``event_id``, float32 µs
``event_time_offset``, float32 weights of 1) with ``--events`` events uniform over ``--pixels`` pixels and times,
best of ``--repeat``:

* ``scipp hist``: ``flat_events(chunk).hist(event_id=edges)`` with int32 edges (the benchmark's proc script and
  the engine's ``histogram_events``);
* ``bincount``: ``np.bincount(event_id, minlength=pixels)`` (the numpy anchor: unweighted, int64 counts);
* ``bincount weighted -> DataArray``: ``np.bincount`` with the event weights, as a float32 [counts] DataArray
  with the same coordinate as the scipp result (what a drop-in replacement must produce);
* ``weights==1 check + bincount``: the same result, unweighted ``np.bincount`` when all weights are 1 (as the
  listeners make them), else weighted;
* ``chunk build``: ``make_chunk`` itself (allocating the weights, binning), for scale.

Usage::

    python bench/hist_methods.py                 # 10M events, 100,000 pixels
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipp as sc

from livereduce.engines.scipp.chunk import RunMetadata, flat_events, make_chunk


def best(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def bincount_counts(chunk: sc.DataArray, edges: sc.Variable, pixels: int) -> sc.DataArray:
    """Weighted counts per pixel with np.bincount, shaped like ``flat_events(chunk).hist(event_id=edges)``."""
    events = flat_events(chunk)
    counts = np.bincount(events.coords["event_id"].values, weights=events.data.values, minlength=pixels)
    return sc.DataArray(
        sc.array(dims=["event_id"], values=counts.astype(np.float32), unit=events.unit),
        coords={"event_id": edges},
    )


def unit_weight_counts(chunk: sc.DataArray, edges: sc.Variable, pixels: int) -> sc.DataArray:
    """As :func:`bincount_counts`, but unweighted when every weight is 1 (checked: one pass over the weights)."""
    events = flat_events(chunk)
    weights = events.data.values
    if events.data.variances is not None or not np.all(weights == 1):
        return bincount_counts(chunk, edges, pixels)
    counts = np.bincount(events.coords["event_id"].values, minlength=pixels)
    return sc.DataArray(
        sc.array(dims=["event_id"], values=counts.astype(np.float32), unit=events.unit),
        coords={"event_id": edges},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the chunk (default %(default)s)")
    parser.add_argument("--pixels", type=int, default=100_000, help="pixels (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="best of N (default %(default)s)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(1)
    ids = rng.integers(0, args.pixels, args.events, dtype=np.int32)
    tof = rng.random(args.events, dtype=np.float32) * np.float32(16666)
    n_pulses = max(1, args.events // 16667)
    index = np.arange(n_pulses, dtype=np.int64) * args.events // n_pulses
    times = np.datetime64("2026-01-01T00:00:00", "ns") + np.arange(n_pulses) * np.timedelta64(16_666_667, "ns")

    # Variables, as the file listener passes them (make_chunk then uses them without copying)
    id_var = sc.array(dims=["event"], values=ids, unit=None)
    tof_var = sc.array(dims=["event"], values=tof, unit="us")

    def build() -> sc.DataArray:
        return make_chunk(id_var, tof_var, times, index, metadata=RunMetadata())

    chunk = build()
    edges = sc.arange("event_id", 0, args.pixels + 1, unit=None, dtype="int32")
    reference = flat_events(chunk).hist(event_id=edges)
    for variant in (bincount_counts, unit_weight_counts):
        assert sc.identical(reference, variant(chunk, edges, args.pixels)), variant.__name__

    methods = {
        "scipp hist (int32 edges)": lambda: flat_events(chunk).hist(event_id=edges),
        "np.bincount (anchor)": lambda: np.bincount(ids, minlength=args.pixels),
        "np.bincount weighted -> DataArray": lambda: bincount_counts(chunk, edges, args.pixels),
        "weights==1 check + np.bincount -> DataArray": lambda: unit_weight_counts(chunk, edges, args.pixels),
        "make_chunk (chunk build)": build,
    }
    print(f"{args.events:,} events over {args.pixels:,} pixels, best of {args.repeat}")
    for name, func in methods.items():
        seconds = best(args.repeat, func)
        print(f"  {name:<44}{seconds * 1e3:>8.1f} ms {args.events / seconds / 1e6:>8.1f} M events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
