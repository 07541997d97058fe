"""How far live data is behind real time (the lag), and the one warning when it falls behind.

**The lag** after a cycle is the wall-clock time at the cycle's output minus the time of the newest pulse it
accumulated: what a scientist looking at the plot sees as "minutes ago". It is measured on the source's own pulse
times (ADARA: the SMS's pulse ids; Kafka: ``reference_time``; a file: its ``event_time_zero``):

* when the newest pulse is within :data:`PLAUSIBLE_S` of the wall clock, the lag is absolute (basis ``pulse
  times``): the facility's clocks are the truth, as for the SMS and the Kafka producers;
* otherwise (a replay of old data, a source whose clock is off by days) the lag is relative (basis ``relative``):
  ``now - pulse`` minus the smallest ``now - pulse`` seen since the engine started, so 0 means "as current as it has
  ever been" and growth is still seen.

A cycle whose chunk holds no pulse (no beam, no run) does not change the lag: an idle source is not late.

**Falling behind** (:class:`LagMeter`): the lag exceeds ``update_every`` + :data:`SLACK_S` on
:data:`LAGGING_CYCLES` pulse-carrying cycles in a row and has not shrunk by more than :data:`SLACK_S` over them (a
lag that shrinks is catching up, e.g. after starting ``from_start_of_run``). Then one WARNING names the cause it
can see and the key that fixes it:

* reading paused on a full buffer during those cycles (``back_pressure_ms`` grew): the buffer is too small for the
  stream at this ``update_every`` (``source_buffer_mb``; when automatic, the memory limit is what bounds it);
* a cycle took longer than ``update_every``: the scripts are slower than the stream (``update_every``, the proc);
* neither: the data arrives late (the source, the network or the reader is slower than real time).

When the lag is back under the threshold, one INFO line says it has caught up.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

PLAUSIBLE_S = 86400.0
"""Pulse times within this many seconds of the wall clock are taken as real time (as Kafka's implausible times)."""
SLACK_S = 1.0
"""Lag beyond ``update_every`` tolerated before a cycle counts as behind (seconds)."""
LAGGING_CYCLES = 3
"""Cycles in a row behind, and not catching up, before the warning."""

_log = logging.getLogger("livereduce.MonitorLiveData")


@dataclass(frozen=True)
class CycleLag:
    """What one cycle tells about keeping up.

    Attributes:
        newest_pulse_s: time of the newest pulse of the cycle's chunk (Unix seconds), or None without pulses.
        output_time_s: wall-clock time of the cycle's output (Unix seconds).
        duration_s: seconds the cycle took.
        back_pressure_ms: the source's cumulative ``back_pressure_ms`` counter after the cycle.
    """

    newest_pulse_s: float | None
    output_time_s: float
    duration_s: float
    back_pressure_ms: int


class LagMeter:
    """The lag of one engine's cycles and the warning (see the module description).

    Args:
        update_every: the configured ``update_every`` (seconds).
        buffer_hint: how the source's buffer is bounded, for the warning (e.g. ``"source_buffer_mb 256"``, or
            ``"automatic, at most 5461 MiB (memory limit)"``); a callable, read when the warning is made.

    Attributes:
        seconds: the lag after the last cycle with pulses (seconds), or None before the first.
        basis: ``"pulse times"`` or ``"relative"`` ("" before the first).
        lagging: the cause while behind (the warning's text), "" otherwise.
    """

    def __init__(self, update_every: float, buffer_hint: object = "") -> None:
        self.update_every = update_every
        self.buffer_hint = buffer_hint
        self.seconds: float | None = None
        self.basis = ""
        self.lagging = ""
        self._best = float("inf")  # smallest now - pulse seen (seconds), the relative basis's zero
        self._recent: deque[CycleLag] = deque(maxlen=LAGGING_CYCLES + 1)
        self._lags: deque[float] = deque(maxlen=LAGGING_CYCLES)

    @property
    def threshold(self) -> float:
        """The lag (seconds) above which a cycle counts as behind."""
        return self.update_every + SLACK_S

    def cycle(self, lag: CycleLag) -> float | None:
        """Account for one cycle; returns the lag after it (None while unknown). Logs the warning and the
        caught-up line."""
        self._recent.append(lag)
        if lag.newest_pulse_s is None:
            return self.seconds
        behind = lag.output_time_s - lag.newest_pulse_s
        if abs(behind) <= PLAUSIBLE_S:
            self.basis, self.seconds = "pulse times", max(0.0, behind)
        else:
            self._best = min(self._best, behind)
            self.basis, self.seconds = "relative", behind - self._best
        self._lags.append(self.seconds)
        if self.lagging:
            if self.seconds <= self.threshold:
                _log.info(
                    "Live data caught up: lag %.1f s (newest pulse accumulated; update_every %g s)",
                    self.seconds,
                    self.update_every,
                )
                self.lagging = ""
        elif self._falling_behind():
            self.lagging = self._cause()
            _log.warning(
                "Live data is falling behind real time: lag %.1f s after %d cycles (%s; update_every %g s): %s",
                self.seconds,
                LAGGING_CYCLES,
                self.basis,
                self.update_every,
                self.lagging,
            )
        return self.seconds

    def _falling_behind(self) -> bool:
        lags = list(self._lags)
        return len(lags) == LAGGING_CYCLES and min(lags) > self.threshold and lags[-1] > lags[0] - SLACK_S

    def _cause(self) -> str:
        recent = list(self._recent)
        paused_ms = recent[-1].back_pressure_ms - recent[0].back_pressure_ms
        slowest = max(cycle.duration_s for cycle in recent[1:] or recent)
        span = max(recent[-1].output_time_s - recent[0].output_time_s, 1e-9)
        hint = self.buffer_hint() if callable(self.buffer_hint) else self.buffer_hint
        if paused_ms > 0:
            return (
                f"the source buffer is too small for this stream at this update_every: reading paused "
                f"{paused_ms / 1000:.1f} s of the last {span:.1f} s (buffer {hint}); raise source_buffer_mb or "
                f"leave it unset (automatic), allow more memory (mem_limit_mb, system_mem_limit_perc), or lower "
                f"update_every"
            )
        if slowest > self.update_every:
            return (
                f"cycles take up to {slowest:.1f} s, longer than update_every: the scripts are slower than the "
                f"stream; raise update_every or make the proc/post_proc cheaper"
            )
        return (
            "the data arrives late (no buffer pause, cycles within update_every): the source, the network or the "
            "reader is slower than real time"
        )
