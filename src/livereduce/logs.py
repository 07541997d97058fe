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


class _JournalFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in _STDOUT_LOGGERS or "Mantid" in record.name


def start_stdout_logging() -> None:
    """Send bare messages of livereduce's loggers to stdout (the journal under systemd).

    Called first, so that even a configuration error reaches the journal.
    """
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_JournalFilter())
    handler.setLevel(logging.INFO)
    root.addHandler(handler)
    logging.captureWarnings(True)


def start_file_logging(log_file: str | None) -> Path:
    """Attach the log-file handler; returns the file's path.

    Raises:
        OSError: the file cannot be opened (directory missing, permissions).
    """
    path = Path(log_file) if log_file else default_log_file()
    handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return path.absolute()


class LogWriter(io.TextIOBase):
    """A text stream that logs each complete line at INFO: ``print()`` of a processing script reaches the log.

    Upstream sent script output to stdout only; here it goes through the logger (and from there also to stdout).
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._logger.info(line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._logger.info(self._pending)
            self._pending = ""
