"""``FakeEventDataListener``: the built-in demo source, endless synthetic runs in real time.

Like Mantid's listener of the same name (``fakeeventdatalistener.datarate`` / ``.endrunevery``), but with
realistic data, so that reduction scripts have something to show:

* pulses at 60 Hz (SNS), each with a Poisson number of events for ``event_rate`` events/s;
* 4096 pixels (a 64 x 64 area detector, ``event_id`` 0..4095) with a small-angle-scattering-like pattern
  (a beam-centre peak over a flat background);
* time of flight from a thermal moderator: energies from a Maxwellian at 300 K (mean 2kT),
  ``t = L * lambda * 252.78 µs/(Å m)`` over a 15 m flight path, folded into the 16,667 µs frame;
* ``proton_charge`` per pulse (~4e6 pC = 4 µC, as at 1.4 MW) and a ``temperature`` log in K, 1 value per second;
* a new run every ``end_run_every`` seconds (0: never), run numbers 1, 2, ...

Pulses are generated when extracted, from the wall clock: nothing is buffered and nothing is lost. Runs follow
each other without a gap; a chunk never spans two runs (``EndRun`` ends the one it belongs to).
"""

from __future__ import annotations

import math

import numpy as np
import scipp as sc

from livereduce.clock import Clock, SystemClock
from livereduce.config import Config
from livereduce.engines.scipp.chunk import RunMetadata, make_chunk
from livereduce.engines.scipp.listeners.base import (
    Extracted,
    Listener,
    RunStatus,
    SourceHealth,
    SourcePosition,
    StartPosition,
)

PULSE_RATE = 60.0
"""Pulses per second (SNS)."""
FRAME_US = 1e6 / PULSE_RATE
SIDE = 64
"""Detector side: SIDE x SIDE pixels."""
FLIGHT_PATH_M = 15.0
KT_MEV = 25.85
"""kT at 300 K in meV."""


class FakeEventDataListener(Listener):
    """Synthetic live source. Config keys: ``event_rate`` (events/s), ``end_run_every`` (s, 0 = never)."""

    name = "FakeEventDataListener"

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.rate = config.event_rate
        self.pulses_per_run = max(1, round(config.end_run_every * PULSE_RATE)) if config.end_run_every else 0
        self.instrument = config.instrument_info().name if config.instrument else "ADARA_FakeEvent"
        self._origin_ns = 0  # Unix time of pulse 0 in ns
        self._origin_clock = 0.0  # time.monotonic() of pulse 0
        self._next = 0  # next pulse to hand out (global pulse counter)
        self._rng = np.random.default_rng(12345)

    def connect(self) -> None:
        """Nothing to open: the data is generated."""

    def start(self, position: StartPosition, resume: SourcePosition | None = None) -> None:  # noqa: ARG002 - the fake run starts now; it cannot resume
        """Run 1 begins now (a fake source has no history)."""
        self._origin_ns = round(self.clock.time() * 1e9)
        self._origin_clock = self.clock.monotonic()
        self._next = 0

    def extract(self) -> Extracted:
        """The pulses since the previous call (generated now); EndRun with the chunk that ends a run."""
        now = int((self.clock.monotonic() - self._origin_clock) * PULSE_RATE) + 1
        first, run = self._next, self.run_number()
        last = now
        status = RunStatus.Running
        if self.pulses_per_run:
            run_end = run * self.pulses_per_run
            last = min(now, run_end)
            if last == run_end:
                status = RunStatus.EndRun
        self._next = max(last, first)
        return Extracted(self._generate(first, self._next, run), status, (0, SIDE * SIDE - 1))

    def run_number(self) -> int:
        """Run of the next pulse to be extracted (runs count from 1)."""
        return self._next // self.pulses_per_run + 1 if self.pulses_per_run else 1

    def health(self) -> SourceHealth:
        return SourceHealth(
            f"{self.name}: run {self.run_number()}, pulse {self._next}, {self.rate:g} events/s",
            counters={"pulses": self._next},
        )

    # --- synthetic data ---------------------------------------------------------------------------------------
    def _generate(self, first: int, last: int, run: int) -> sc.DataArray:
        n_pulses = last - first
        counts = self._rng.poisson(self.rate / PULSE_RATE, size=n_pulses)
        total = int(counts.sum())
        event_index = (np.cumsum(counts) - counts).astype(np.int64)
        nanoseconds = self._origin_ns + _pulse_offsets_ns(np.arange(first, last))
        pulse_times = nanoseconds.astype("datetime64[ns]")
        run_start = self._origin_ns + int(_pulse_offsets_ns(np.array([(run - 1) * self.pulses_per_run]))[0])
        metadata = RunMetadata(
            run_number=run,
            start_time=np.datetime64(run_start, "ns"),
            instrument_name=self.instrument,
            logs={"temperature": self._temperature(nanoseconds // 1_000_000_000)} if n_pulses else {},
        )
        charge = self._rng.normal(4.0e6, 0.05e6, size=n_pulses)
        return make_chunk(
            self._pixels(total),
            self._time_of_flight(total),
            pulse_times,
            event_index,
            metadata=metadata,
            proton_charge=charge,
        )

    def _pixels(self, n: int) -> np.ndarray:
        """70 % of events in a Gaussian beam-centre peak (sigma 6 pixels), 30 % flat background."""
        peak = self._rng.random(n) < 0.7
        xy = np.where(peak[:, None], self._rng.normal(SIDE / 2, 6.0, (n, 2)), self._rng.uniform(0, SIDE, (n, 2)))
        x, y = np.clip(xy.astype(np.int32), 0, SIDE - 1).T
        return (y * SIDE + x).astype(np.int32)

    def _time_of_flight(self, n: int) -> np.ndarray:
        """Maxwellian energies -> wavelength (Å) -> time of flight (µs), folded into the frame."""
        energy = self._rng.gamma(2.0, KT_MEV, n) + 1e-3  # meV; gamma(2) is the Maxwellian flux spectrum
        wavelength = 9.045 / np.sqrt(energy)
        return np.mod(FLIGHT_PATH_M * wavelength * 252.78, FRAME_US).astype(np.float32)

    def _temperature(self, seconds: np.ndarray) -> sc.DataArray:
        """Sample temperature (K): a slow drift around 300 K, one value per whole (Unix) second of the chunk."""
        stamps = np.unique(seconds).astype(np.int64)
        values = 300.0 + 2.0 * np.sin(2 * math.pi * (stamps % 600) / 600.0)
        return sc.DataArray(
            sc.array(dims=["time"], values=values, unit="K"),
            coords={"time": sc.array(dims=["time"], values=stamps * 1_000_000_000, unit="ns", dtype="datetime64")},
        )


def _pulse_offsets_ns(pulses: np.ndarray) -> np.ndarray:
    """Time of each pulse after pulse 0 in integer ns (exact 60 Hz, no floating-point drift)."""
    return (pulses.astype(np.int64) * 1_000_000_000 + 30) // 60
