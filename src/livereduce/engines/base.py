"""The Engine interface the supervisor drives, and what an engine reports back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from livereduce.scripts import ProcessingScripts


class EngineState(StrEnum):
    """Lifecycle of one engine start."""

    STARTING = "starting"
    CONNECTING = "connecting"
    """Opening the source (a network source may take seconds, or retry); no cycle has run yet."""
    RUNNING = "running"
    IDLE = "idle"
    """Running with nothing to do: the source has ended (a replayed file was read to its end)."""
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class Health:
    """A snapshot of an engine's progress (read by the supervisor; later the status file and sd_notify).

    Attributes:
        state: lifecycle state.
        run_number: run of the data last extracted (0 when unknown or no run).
        chunks: cycles completed since the engine started.
        events: events extracted since the engine started.
        accumulated_events: events in the accumulation now (0 when it holds histograms).
        accumulation: what the accumulation holds, e.g. ``DataArray(event_id: 4096, dense float64)``.
        dropped_events: events the source delivered but dropped (invalid ids, ...), by reason, since the start.
        last_cycle_end: wall-clock time (seconds since the Unix epoch) of the end of the last cycle, or None.
        last_cycle_duration: seconds the last cycle took, or None.
        last_error: one-line description of the last error, "" if none.
        last_error_time: wall-clock time (Unix seconds) of the last error, or None.
        source: one-line description of the data source's state.
        errors: cycles that ended with an error since the engine started.
        source_healthy: False while the source is not delivering as it should (e.g. connection lost).
        source_counters: the source's cumulative counters (bytes, packets, messages, ...).
        lag: seconds between the newest pulse accumulated and the output of its cycle, or None before the first
            pulse (see ``engines/scipp/lag.py``).
        lag_basis: ``"pulse times"`` (the source's clock is real time) or ``"relative"`` (to the smallest lag
            seen: a replay of old data); "" while unknown.
        lagging: while live data falls behind real time, the cause and the key that fixes it; "" otherwise.
        offset_lag: Kafka: messages between the consumer's position and each partition's end, by
            ``"topic[partition]"``.
        checkpoint: the last checkpoint written or resumed, or why it failed (scipp engine); "" without.
        first_pulse: ISO-8601 time (UTC) of the first pulse in the accumulation (scipp engine: with ``Add``, the
            run's first pulse read); "" while unknown.
    """

    state: EngineState = EngineState.STARTING
    run_number: int = 0
    chunks: int = 0
    events: int = 0
    accumulated_events: int = 0
    accumulation: str = ""
    dropped_events: dict[str, int] = field(default_factory=dict)
    last_cycle_end: float | None = None
    last_cycle_duration: float | None = None
    last_error: str = ""
    last_error_time: float | None = None
    source: str = ""
    errors: int = 0
    source_healthy: bool = True
    source_counters: dict[str, int] = field(default_factory=dict)
    lag: float | None = None
    lag_basis: str = ""
    lagging: str = ""
    offset_lag: dict[str, int] = field(default_factory=dict)
    checkpoint: str = ""
    first_pulse: str = ""


@dataclass(frozen=True)
class EngineStarted:
    """The engine's source is open and cycling has begun (the scipp engine connects in its own thread)."""


@dataclass(frozen=True)
class EngineFinished:
    """The engine ended by itself without error (``run_transition`` Stop at the end of a run)."""

    reason: str


@dataclass(frozen=True)
class EngineFailed:
    """The engine ended with an error (e.g. the source broke).

    Attributes:
        error: what ended it.
        recoverable: whether a restart may help (a network source that can heal); False for an error that
            would happen again at the same place (a file that is corrupt there): the daemon then exits with
            the error's exit code.
        at_start: it failed before :class:`EngineStarted` (the source could not be opened or started).
    """

    error: BaseException
    recoverable: bool = True
    at_start: bool = False


@dataclass(frozen=True)
class CycleCompleted:
    """One cycle ended (for the metrics).

    Attributes:
        duration: seconds the cycle took, or None when the engine cannot measure it (mantid).
        failed: the step that failed (``proc``, ``post_proc``, ``accumulate``), or None.
        lag: the lag after the cycle (seconds; see :attr:`Health.lag`), or None when unknown.
    """

    duration: float | None = None
    failed: str | None = None
    lag: float | None = None


EngineEvent = EngineStarted | EngineFinished | EngineFailed | CycleCompleted
Notify = Callable[[EngineEvent], None]


class Engine(Protocol):
    """What the supervisor drives. ``start`` returns once the engine runs in its own thread(s); it never waits
    for a network, so the supervisor can act on a signal at any moment."""

    name: str

    def start(self, scripts: ProcessingScripts, notify: Notify, *, fresh: str | None = None) -> None:
        """Start with these scripts: open the source and cycle. Posts :class:`EngineStarted` once the source is
        open, or :class:`EngineFailed` (``at_start``) if it cannot be. ``fresh``: why this start must begin a new
        accumulation instead of resuming a checkpoint (SIGHUP, the memory limit), or None.

        Raises:
            LiveReduceError: what an engine that opens its source in ``start`` itself (mantid) finds wrong.
        """

    def stop(self, timeout: float) -> bool:
        """Stop cycling; True if everything stopped within ``timeout`` seconds."""

    def reload_post_proc(self, scripts: ProcessingScripts) -> bool:
        """Use ``scripts``, whose proc script is the running one, without a restart (post_proc runs on the
        accumulation at once); False when the engine cannot (then the supervisor restarts it)."""

    def health(self) -> Health:
        """A snapshot of the engine's progress."""
