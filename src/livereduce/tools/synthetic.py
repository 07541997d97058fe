"""Synthetic event streams at a fixed real-time rate, for benchmarks and load tests of the live sources.

A stream of 1e7 events/s for ten minutes is 6e9 events (48 GB as ADARA or ev44): no file holds it, and encoding it
on the fly would cost the sender more than the daemon it feeds. A :class:`PulsePool` is made once instead: a few
pulses of uniform random pixel ids (``0..pixels-1``) and times of flight (uniform within one 60 Hz frame), and every
pulse sent is one of them, cycled, stamped with its own pulse time. What a reduction costs does not depend on which
random ids it gets.

* ADARA (``livereduce-fake-sms --synthetic RATE``): :func:`synthetic_run` is one run as a :class:`SyntheticRun`,
  whose BANKED_EVENT packets are encoded once per pool pulse; sending a pulse writes a fresh 16-byte header (its
  time) and then the shared payload: two ``send`` calls per pulse, no copy, no encoding.
* Kafka (``python -m livereduce.tools.kafka_synthetic``): the pool's arrays as ev44 messages.

A pulse holds ``round(rate / pulse_rate)`` events (:func:`pulse_events`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from livereduce.protocols.adara import encode
from livereduce.protocols.adara.packets import HEADER, NS_PER_S, PacketType, format_word
from livereduce.tools.sms_stream import EPICS_EPOCH_NS, Run

POOL_PULSES = 8
"""Distinct pulses in a pool; pulse k of a stream is pool pulse ``k % POOL_PULSES``."""
FRAME_100NS = 166_660
"""Times of flight are uniform in ``[0, FRAME_100NS)`` in units of 100 ns (one 60 Hz frame, 16,666 µs)."""
CHARGE_10PC = 1_000
"""Proton charge of every ADARA pulse in the protocol's units of 10 pC (10 nC)."""
HEADER_WORDS = 4
"""An ADARA packet header: payload length, format, EPICS seconds, nanoseconds [NP 2]."""
BANKED_EVENT_V1 = format_word(PacketType.BANKED_EVENT, 1)


@dataclass(frozen=True)
class PulsePool:
    """Pulses to cycle through.

    Attributes:
        event_id: pixel id of each event, uint32 (pulses, events per pulse), uniform in ``0..pixels-1``.
        tof_100ns: time of flight of each event in units of 100 ns (ADARA's unit, so every protocol sends the same
            values), uint32 (pulses, events per pulse), uniform in ``[0, FRAME_100NS)``.
        pixels: pixel count.
    """

    event_id: np.ndarray
    tof_100ns: np.ndarray
    pixels: int

    @classmethod
    def make(
        cls, events_per_pulse: int, pixels: int, *, pulses: int = POOL_PULSES, tile: int = 0, seed: int = 2026
    ) -> PulsePool:
        """``pulses`` pulses of ``events_per_pulse`` random events over ``pixels`` pixels (reproducible by ``seed``).

        ``tile`` > 0 repeats a block of ``tile`` random events to fill each pulse, so that the pulse compresses
        about ``events_per_pulse / tile``-fold (for a broker that keeps every byte in memory); 0: all random.

        Raises:
            ValueError: ``events_per_pulse`` or ``tile`` < 0, ``pulses`` < 1, or ``pixels`` outside ``1..2**32``.
        """
        if events_per_pulse < 0 or tile < 0 or pulses < 1 or not 1 <= pixels <= 2**32:
            raise ValueError(f"PulsePool: {pulses} pulses of {events_per_pulse} events over {pixels} pixels")
        rng = np.random.default_rng(seed)
        block = min(tile, events_per_pulse) if tile else events_per_pulse
        ids = rng.integers(0, pixels, (pulses, block), dtype=np.uint32)
        tofs = rng.integers(0, FRAME_100NS, (pulses, block), dtype=np.uint32)
        if block < events_per_pulse:
            reps = -(-events_per_pulse // block)
            ids = np.tile(ids, reps)[:, :events_per_pulse]
            tofs = np.tile(tofs, reps)[:, :events_per_pulse]
        return cls(np.ascontiguousarray(ids), np.ascontiguousarray(tofs), pixels)

    @property
    def events_per_pulse(self) -> int:
        return int(self.event_id.shape[1])

    def __len__(self) -> int:
        return int(self.event_id.shape[0])


def pulse_events(rate: float, pulse_rate: float) -> int:
    """Events in each pulse of a stream of ``rate`` events/s at ``pulse_rate`` Hz (rounded).

    Raises:
        ValueError: a rate < 0 or a pulse rate <= 0.
    """
    if not (rate >= 0 and pulse_rate > 0):
        raise ValueError(f"a stream of {rate} events/s at {pulse_rate} Hz")
    return round(rate / pulse_rate)


@dataclass
class SyntheticRun(Run):
    """A run whose pulses are made when sent: pulse i is pool pulse ``i % len(payloads)``.

    ``words`` and ``headers`` are empty; ``ends`` counts the bytes of the pulses as if they were stored (every
    pulse's packet has the same size), so the fake SMS's bookkeeping works unchanged.

    Attributes:
        payloads: each pool pulse's BANKED_EVENT v1 packet without its header, little-endian u32.
    """

    payloads: tuple[np.ndarray, ...] = ()

    def packet(self, i: int, pulse_ns: int) -> tuple[bytes, memoryview]:
        """Pulse ``i`` at time ``pulse_ns`` (Unix ns): (its header, the shared payload), to be sent in this order."""
        seconds, nanoseconds = divmod(pulse_ns - EPICS_EPOCH_NS, NS_PER_S)
        payload = self.payloads[i % len(self.payloads)]
        header = HEADER.pack(payload.size * 4, BANKED_EVENT_V1, seconds, nanoseconds)
        return header, memoryview(payload).cast("B")


def synthetic_run(pool: PulsePool, *, seconds: float, pulse_rate: float, first_ns: int | None = None) -> SyntheticRun:
    """One run of ``seconds`` at ``pulse_rate`` Hz whose pulses cycle through ``pool``.

    Args:
        pool: the pulses.
        seconds: length of the run (``round(seconds * pulse_rate)`` pulses, at least 1).
        pulse_rate: pulses per second (> 0).
        first_ns: time of the first pulse (Unix ns); default now. The fake SMS's timeline shifts it.

    Raises:
        ValueError: ``seconds`` or ``pulse_rate`` not > 0.
    """
    if not (seconds > 0 and pulse_rate > 0):
        raise ValueError(f"a synthetic run of {seconds} s at {pulse_rate} Hz")
    n = max(1, round(seconds * pulse_rate))
    first = time.time_ns() if first_ns is None else first_ns
    pulse_ns = first + np.rint(np.arange(n) * (NS_PER_S / pulse_rate)).astype(np.int64)
    k, per = len(pool), pool.events_per_pulse
    words, ends = encode.banked_events(
        np.full(k, EPICS_EPOCH_NS, np.int64),
        charge=np.full(k, CHARGE_10PC, np.uint32),
        flags=np.zeros(k, np.uint32),
        section_pulse=np.arange(k),
        section_bank=np.ones(k, np.uint32),
        section_count=np.full(k, per),
        tof=pool.tof_100ns.ravel(),
        pixel=pool.event_id.ravel(),
    )
    size = int(ends[0]) // 4
    payloads = tuple(words[j * size + HEADER_WORDS : (j + 1) * size].copy() for j in range(k))
    return SyntheticRun(
        pulse_ns=pulse_ns,
        words=np.empty(0, "<u4"),
        ends=np.arange(1, n + 1, dtype=np.int64) * size * 4,
        headers=np.empty(0, np.int64),
        logs=[],
        events=n * per,
        charge_pc=n * CHARGE_10PC * 10.0,
        pixels=(0, pool.pixels - 1),
        payloads=payloads,
    )
