"""Watching the processing scripts and the configuration file: inotify (the ``watchdog`` library) plus polling.

Every file-system event on a watched path (close after a write in place, create, delete, rename into or out of
place, as rsync, ``mv`` and editors saving through a temporary file do; see :data:`CHANGES`) marks the watcher
dirty. Once no event has arrived for ``settle`` seconds (0.5 s), the content hashes are compared with the last ones
seen, and one :class:`FilesChanged` is posted per real change: a half-written file that is still being written is
not looked at, and an identical re-save changes nothing. The hashes are also compared every ``poll_interval``
seconds, so that edits made on another host of a network file system (invisible to inotify) are seen.

pyinotify, which upstream used, is unmaintained since 2015 and does not import on Python >= 3.12.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from livereduce.files import read_regular_file

_log = logging.getLogger("livereduce")

CHANGES = [FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent]
"""The events asked of inotify: close after write (``IN_CLOSE_WRITE``), create, delete, rename into or out of place.
Not every write (``IN_MODIFY``), open or read: a watched directory may also hold a log that is appended to, or
outputs and scripts that are read every cycle, and each such event would cost the daemon a Python wake-up
(measured: ~10 % of the daemon's samples in ``bench/bench_kafka.py``, whose log sits beside the scripts). A file
written in place is seen when it is closed, and the poll every ``poll_interval`` sees any other change."""
SETTLE_SECONDS = 0.5
"""Quiet time after the last file-system event before hashes are compared."""


@dataclass(frozen=True)
class FilesChanged:
    """Watched files whose content (SHA-256; "" for a missing file) differs from what was last seen."""

    paths: frozenset[Path]


MAX_WATCHED_BYTES = 64 << 20
"""Largest file whose content is hashed; a larger one hashes as unreadable (scripts are far smaller)."""
STALL_SECONDS = 60.0
"""A watcher whose loop has not come round for ``poll_interval + STALL_SECONDS`` is stalled (see ``problem``)."""


def _not_the_stop_race(record: logging.LogRecord) -> bool:
    """False for watchdog's "queue_events() called when the thread is inactive" (watchdog 7.x,
    ``observers/inotify.py``): logged at ERROR when a file-system event arrives while the observer is being
    stopped, i.e. only during a normal stop. It says nothing about change detection and must not end the log."""
    return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_not_the_stop_race)


def content_hash(path: Path) -> str:
    """Hex SHA-256 of the file's bytes; "" if it does not exist; ``"!<reason>"`` if it exists but is not a
    readable regular file (a FIFO put in its place is never opened for a blocking read)."""
    try:
        return hashlib.sha256(read_regular_file(path, MAX_WATCHED_BYTES)).hexdigest()
    except FileNotFoundError:
        return ""
    except OSError as err:
        return f"!{err.strerror or err}"


class FileWatcher:
    """Posts :class:`FilesChanged` for the given files (scripts and configuration).

    Args:
        paths: the files to watch (they need not exist); their directories are watched non-recursively.
        post: called with each :class:`FilesChanged`, from the watcher's thread.
        poll_interval: seconds between two hash comparisons without any file-system event.
        settle: seconds without events before comparing hashes.
    """

    def __init__(
        self,
        paths: Iterable[Path],
        post: Callable[[FilesChanged], None],
        poll_interval: float,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self.paths = frozenset(Path(path).absolute() for path in paths)
        self._post = post
        self._poll_interval = poll_interval
        self._settle = settle
        self._hashes = {path: content_hash(path) for path in self.paths}
        self._last_event: float | None = None
        self._heartbeat = time.monotonic()  # the loop's last round
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer = Observer()
        self._thread = threading.Thread(target=self._run, name="FileWatcher", daemon=True)

    def start(self) -> None:
        """Start watching (inotify where the directory exists, polling always)."""
        handler = _Handler(self)
        watched = []
        for directory in sorted({path.parent for path in self.paths}):
            if directory.is_dir():
                self._observer.schedule(handler, str(directory), recursive=False, event_filter=CHANGES)
                watched.append(str(directory))
            else:
                _log.warning("Directory '%s' does not exist: it is polled every %g s", directory, self._poll_interval)
        _log.info("WATCHING:%s", watched)
        self._observer.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; waits up to ``timeout`` seconds for each of the watcher's threads."""
        self._stop.set()
        self._wake.set()
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=timeout)
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def problem(self) -> str | None:
        """Why change detection does not work (its thread died, the inotify observer died, its loop is stuck),
        or None. The supervisor replaces a watcher with a problem."""
        if not self._thread.is_alive():
            return "thread ended" if self._thread.ident is not None else None
        if not self._observer.is_alive():
            return "inotify observer ended"
        stalled = time.monotonic() - self._heartbeat
        if stalled > self._poll_interval + STALL_SECONDS:
            return f"stalled for {stalled:.0f} s"
        return None

    def accept(self, path: Path, digest: str) -> None:
        """Record ``digest`` as the known content of ``path`` (after the supervisor loaded it)."""
        with self._lock:
            self._hashes[path] = digest

    def _touched(self, *paths: str | bytes | None) -> None:
        if any(path and Path(str(path if isinstance(path, str) else path.decode())) in self.paths for path in paths):
            with self._lock:
                self._last_event = time.monotonic()
            self._wake.set()

    def _run(self) -> None:
        try:
            self._watch()
        except Exception:  # noqa: BLE001 - never die silently: the supervisor sees the ended thread and replaces the watcher
            _log.exception("File watcher failed")

    def _watch(self) -> None:
        next_poll = time.monotonic() + self._poll_interval
        while not self._stop.is_set():
            self._heartbeat = time.monotonic()
            with self._lock:
                last_event = self._last_event
            now = time.monotonic()
            if last_event is not None and now - last_event < self._settle:
                timeout = self._settle - (now - last_event)
            elif last_event is not None or now >= next_poll:
                with self._lock:
                    self._last_event = None
                self._compare()
                next_poll = time.monotonic() + self._poll_interval
                continue
            else:
                timeout = next_poll - now
            self._wake.wait(timeout)
            self._wake.clear()

    def _compare(self) -> None:
        changed = set()
        for path in self.paths:
            digest = content_hash(path)
            with self._lock:
                if digest != self._hashes[path]:
                    self._hashes[path] = digest
                    changed.add(path)
        if changed:
            self._post(FilesChanged(frozenset(changed)))


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FileWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher._touched(event.src_path, getattr(event, "dest_path", None))
