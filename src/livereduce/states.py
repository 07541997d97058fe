"""The supervisor's states and the legal transitions between them (see ``docs/architecture.md``).

Every change of state goes through :meth:`livereduce.supervisor.Supervisor._enter`, which refuses a transition
:data:`TRANSITIONS` does not list (:class:`IllegalTransition`, a bug the in-process tests look for).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """The daemon's states (the ``state`` of the status file)."""

    STARTING = "starting"
    """Before the first engine starts (signals that arrived while the daemon loaded are acted on here)."""
    CONNECTING = "connecting"
    """An engine is being started and opens its source (a network source may take seconds), until it reports
    :class:`~livereduce.engines.base.EngineStarted`."""
    RUNNING = "running"
    """The engine's source is open and it cycles."""
    RELOADING = "reloading"
    """A restart asked for (script change, SIGHUP, memory): the engine, if one runs, stops; then ``connecting``."""
    BACKING_OFF = "backing off"
    """The engine failed or could not start; a new one starts (``connecting``) when the back-off delay has passed."""
    WAITING_FOR_SCRIPTS = "waiting for scripts"
    STOPPING = "stopping"
    STOPPED = "stopped"
    STOP_TIMED_OUT = "stop timed out"
    """The engine did not stop within ``stop_timeout_sec``: the daemon exits 6."""


TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.CONNECTING, State.STOPPING}),
    State.CONNECTING: frozenset(
        {
            State.RUNNING,
            State.RELOADING,
            State.BACKING_OFF,
            State.WAITING_FOR_SCRIPTS,
            State.STOPPING,
            State.STOP_TIMED_OUT,
        }
    ),
    State.RUNNING: frozenset(
        {State.RELOADING, State.BACKING_OFF, State.WAITING_FOR_SCRIPTS, State.STOPPING, State.STOP_TIMED_OUT}
    ),
    State.RELOADING: frozenset({State.CONNECTING, State.STOP_TIMED_OUT}),
    State.BACKING_OFF: frozenset({State.CONNECTING, State.RELOADING, State.WAITING_FOR_SCRIPTS, State.STOPPING}),
    State.WAITING_FOR_SCRIPTS: frozenset({State.RELOADING, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED, State.STOP_TIMED_OUT}),
    State.STOPPED: frozenset(),
    State.STOP_TIMED_OUT: frozenset(),
}
"""The legal transitions; anything else raises :class:`IllegalTransition`."""


class IllegalTransition(RuntimeError):
    """A transition :data:`TRANSITIONS` does not allow, or a second engine: a bug in the supervisor."""


def check_transition(current: State, new: State) -> None:
    """Refuse a change from ``current`` to ``new`` that :data:`TRANSITIONS` does not list.

    Raises:
        IllegalTransition: naming both states.
    """
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"supervisor: illegal transition {current} -> {new}")
