"""Logging as upstream: one log file plus bare messages on stdout for the journal.

* File: ``log_file`` if configured, else ``/var/log/SNS_applications/livereduce.log`` when the process runs as
  user ``snsdata``, else ``livereduce.log`` in the working directory. Format
  ``%(asctime)s - %(name)s - %(levelname)s - %(message)s``. A :class:`logging.handlers.WatchedFileHandler`,
  so logrotate can move the file away.
* stdout: bare message text of records from the ``livereduce.*`` and ``Mantid`` loggers and of processing
  scripts (loggers ``__main__`` and ``root``).
* The user name comes from the process credentials (``pwd.getpwuid(os.geteuid())``), not ``$USER``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import os
import pwd
import sys
from pathlib import Path

SNS_LOG_FILE = Path("/var/log/SNS_applications/livereduce.log")
"""Upstream's log file for the service user ``snsdata``."""

FILE_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
"""Upstream's log-file format."""

_STDOUT_LOGGERS = ("livereduce", "Mantid", "__main__", "root")


def user_name() -> str:
    """Name of the effective user from the process credentials (works with ``$USER`` unset)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return str(os.geteuid())


def default_log_file() -> Path:
    """``$LIVEREDUCE_LOG_FILE`` if set (the template unit sets one per instance), else upstream's choice: the SNS
    log for ``snsdata``, else ``livereduce.log`` in the working directory."""
    if os.environ.get("LIVEREDUCE_LOG_FILE"):
        return Path(os.environ["LIVEREDUCE_LOG_FILE"])
    return SNS_LOG_FILE if user_name() == "snsdata" else Path("livereduce.log")


def log_file_problem(log_file: str | None) -> str | None:
    """Why the log file could not be opened for appending, or None if it can (nothing is created)."""
    path = Path(log_file) if log_file else default_log_file()
    target = path if path.exists() else path.absolute().parent
    if not target.exists():
        return f"directory '{target}' does not exist"
    if not os.access(target, os.W_OK):
        return f"'{target}' is not writable by user '{user_name()}'"
    return None


_HANDLERS: list[logging.Handler] = []
_lost = [0]


def lost_records() -> int:
    """Log records that a failing handler (full disk, closed stdout) could not write since the start."""
    return _lost[0]


class _Reporting:
    """Mixin for the daemon's handlers: a failure to write is reported once (through the other handlers), the
    lost records are counted (:func:`lost_records`), and writing resumes by itself when it works again.

    The standard library instead prints a ``--- Logging error ---`` traceback to stderr for every record.
    """

    _failed_in_emit = False
    _failing_since: int | None = None  # lost-record count when the failure began

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: ARG002 - logging's signature
        _lost[0] += 1
        self._failed_in_emit = True
        if self._failing_since is None:
            self._failing_since = _lost[0] - 1
            error = sys.exc_info()[1]
            self._tell_others(
                logging.ERROR,
                f"cannot write the log to {self._target()}: {error}; lost records "
                "are counted in the status ('log_records_lost') until writing works again",
            )

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_in_emit = False
        super().emit(record)  # type: ignore[misc] - the handler class this is mixed into
        if not self._failed_in_emit and self._failing_since is not None:
            lost = _lost[0] - self._failing_since
            self._failing_since = None
            self._tell_others(logging.WARNING, f"writing the log to {self._target()} works again ({lost} records lost)")
            super().emit(
                logging.makeLogRecord(
                    {
                        "name": "livereduce",
                        "levelno": logging.WARNING,
                        "levelname": "WARNING",
                        "msg": f"{lost} log records were lost",
                    }
                )
            )

    def _target(self) -> str:
        return getattr(self, "baseFilename", None) or "stdout"

    def _tell_others(self, level: int, message: str) -> None:
        report = logging.makeLogRecord(
            {"name": "livereduce", "levelno": level, "levelname": logging.getLevelName(level), "msg": message}
        )
        for handler in _HANDLERS:
            if handler is not self:
                handler.handle(report)


class _StreamHandler(_Reporting, logging.StreamHandler):
    pass


class _FileHandler(_Reporting, logging.handlers.WatchedFileHandler):
    def reopenIfNeeded(self) -> None:
        """Reopen when the file was moved (logrotate) or replaced, also when the old file cannot take the
        buffered records any more (its disk is full): the standard library's flush of the old stream raised then,
        and the handler never reached the new file."""
        try:
            super().reopenIfNeeded()
        except OSError:
            if self.stream is not None:
                with contextlib.suppress(OSError):
                    self.stream.close()  # closes the file even though the final flush fails
                self.stream = None
            self.stream = self._open()
            self._statstream()


class _JournalFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in _STDOUT_LOGGERS or "Mantid" in record.name


def start_stdout_logging() -> None:
    """Send bare messages of livereduce's loggers to stdout (the journal under systemd).

    Called first, so that even a configuration error reaches the journal.
    """
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = _StreamHandler(sys.stdout)
    handler.addFilter(_JournalFilter())
    handler.setLevel(logging.INFO)
    root.addHandler(handler)
    _HANDLERS.append(handler)
    logging.captureWarnings(True)


def start_file_logging(log_file: str | None) -> Path:
    """Attach the log-file handler; returns the file's path.

    Raises:
        OSError: the file cannot be opened (directory missing, permissions).
    """
    path = Path(log_file) if log_file else default_log_file()
    handler = _FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    _HANDLERS.append(handler)
    return path.absolute()


MAX_SCRIPT_LINES = 1000
"""Lines of one script run's output (``print``) that reach the log; the rest are counted in one summary line."""
MAX_LINE_CHARS = 64 * 1024
"""Characters of one output line that reach the log; a longer line is cut and marked."""


class LogWriter(io.TextIOBase):
    """A text stream that logs each complete line at INFO: ``print()`` of a processing script reaches the log.

    Upstream sent script output to stdout only; here it goes through the logger (and from there also to stdout).
    What one script run may cost the log is bounded: at most :data:`MAX_SCRIPT_LINES` lines of at most
    :data:`MAX_LINE_CHARS` characters; :meth:`close` logs how many lines were left out.

    Args:
        logger: where the lines go.
        source: what wrote them (the script's path), named in the summary line.
    """

    def __init__(self, logger: logging.Logger, source: str = "") -> None:
        super().__init__()
        self._logger = logger
        self._source = source
        self._pending: list[str] = []
        self._pending_chars = 0
        self._logged = 0
        self._suppressed = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._logged >= MAX_SCRIPT_LINES:  # over the limit: only count (cheap, however much is printed)
            self._suppressed += text.count("\n")
            return len(text)
        *complete, rest = text.split("\n")
        for part in complete:
            self._add(part)
            self._emit()
        self._add(rest)
        return len(text)

    def _add(self, part: str) -> None:
        if self._pending_chars < MAX_LINE_CHARS and part:
            self._pending.append(part[: MAX_LINE_CHARS - self._pending_chars])
        self._pending_chars += len(part)

    def _emit(self) -> None:
        line, chars = "".join(self._pending), self._pending_chars
        self._pending, self._pending_chars = [], 0
        if self._logged >= MAX_SCRIPT_LINES:
            self._suppressed += 1
            return
        if chars > MAX_LINE_CHARS:
            line += f" ... (line cut: {chars} characters)"
        self._logger.info(line)
        self._logged += 1

    def flush(self) -> None:
        """Log a pending incomplete line."""
        if self._pending_chars:
            self._emit()

    def close(self) -> None:
        """Flush, and log how many lines were left out (if any)."""
        self.flush()
        if self._suppressed:
            self._logger.warning(
                "%d more lines of output from %s not logged (at most %d lines per script run)",
                self._suppressed,
                self._source or "a processing script",
                MAX_SCRIPT_LINES,
            )
            self._suppressed = 0
        super().close()
