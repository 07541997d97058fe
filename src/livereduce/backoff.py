"""Exponential back-off: how long to wait before the next attempt after a failure.

One policy for every retry of the daemon: the supervisor restarting a failed engine, the ADARA reader
reconnecting to the SMS, the Kafka consumer locating its run again. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BACKOFF_FIRST_S = 1.0
"""Seconds before the first retry."""
BACKOFF_MAX_S = 60.0
"""Longest wait between two attempts."""
STABLE_S = 60.0
"""An attempt that lasted this long counts as a success: the next failure waits :data:`BACKOFF_FIRST_S` again."""


@dataclass
class Backoff:
    """Delays of 1 s, 2 s, 4 s ... up to ``maximum`` between failed attempts.

    Args:
        first: seconds of the first delay (> 0).
        maximum: longest delay in seconds (>= ``first``).
        stable: seconds after which a running attempt counts as a success (see :meth:`failed`).

    Attributes:
        failures: failures in a row since the last success.
    """

    first: float = BACKOFF_FIRST_S
    maximum: float = BACKOFF_MAX_S
    stable: float = STABLE_S
    failures: int = field(default=0, init=False)

    def failed(self, lasted: float = 0.0) -> float:
        """Record a failure; returns the seconds to wait before the next attempt.

        Args:
            lasted: seconds the failed attempt ran; at least ``stable`` means it had worked, so the delays
                start again from ``first``.
        """
        if lasted >= self.stable:
            self.failures = 0
        self.failures += 1
        return min(self.first * 2.0 ** (self.failures - 1), self.maximum)

    def succeeded(self) -> None:
        """Record a success: the next failure waits ``first`` again."""
        self.failures = 0
