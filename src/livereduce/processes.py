"""The daemon's own process: the child processes scripts started, and every thread's stack for diagnostics."""

from __future__ import annotations

import logging
import sys
import threading
import traceback

import psutil

_log = logging.getLogger("livereduce")

CHILD_GRACE_SECONDS = 2.0
"""Seconds the processes started by scripts get after SIGTERM at the daemon's stop before they are killed."""


def terminate_children(grace: float = CHILD_GRACE_SECONDS) -> None:
    """Stop the processes this process started (scripts may start some): SIGTERM, then SIGKILL after ``grace`` s.

    Each is logged; children that are gone already are skipped. Never raises.
    """
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    if not children:
        return
    for child in children:
        try:
            _log.warning("Terminating process %d (%s) started by a processing script", child.pid, child.name())
            child.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            _log.warning("Killing process %d: still running %g s after SIGTERM", child.pid, grace)
            child.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=grace)


def thread_stacks() -> str:
    """Every thread's current stack, as text (for SIGQUIT and stop timeouts)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"Thread {names.get(ident, '?')} ({ident}):\n{''.join(traceback.format_stack(frame))}")
    return "\n".join(parts)
