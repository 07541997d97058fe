"""The status file: where it is, writing it atomically and safely, reading it without ever blocking.

**Where** (:func:`status_location`; the same wherever the daemon was started from):

1. the key ``status_file`` (a relative path against the working directory);
2. ``$LIVEREDUCE_STATUS_FILE``, if set (the template unit ``livereduce@.service`` sets one per instance);
3. ``/run/livereduce/<name>`` if ``/run/livereduce`` is a directory the daemon may write (systemd
   ``RuntimeDirectory=livereduce``);
4. ``$XDG_RUNTIME_DIR/livereduce/<name>`` if that variable names a directory;
5. ``/tmp/livereduce-<uid>/<name>`` (``$TMPDIR`` replaces ``/tmp``).

``<name>`` (:func:`status_file_name`) is ``status.json`` for the default configuration (``/etc/livereduce.conf``,
or the built-in defaults) and ``status-<INSTRUMENT>-<hash>.json`` for any other configuration file, ``<hash>``
being the first 8 hex digits of the SHA-256 of the file's real path: two daemons of one user with different
configurations never share a file.

The per-user directories of 4 and 5 (:attr:`StatusLocation.private`) are created with mode 0700 and refused
when they are a symbolic link, belong to another user or are writable by group or others (planted by another
user of the host): the daemon then exits 2 with one line (:class:`~livereduce.errors.ConfigError`).

**Writing** (:class:`StatusFile`): a temporary file created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` in the
directory, opened as a descriptor (``O_NOFOLLOW`` for a per-user directory), then renamed over the file
(``os.replace`` relative to that descriptor): a reader sees the previous or the new complete file, and nothing is
written through a symbolic link. A problem is one WARNING on logger ``livereduce.status``, never an exception.

**Reading** (:func:`read_status`): regular files only, opened non-blocking, at most :data:`MAX_STATUS_BYTES`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from livereduce.config import DEFAULT_CONFIG_PATH, LoadedConfig
from livereduce.errors import ConfigError, LiveReduceError
from livereduce.files import read_regular_file
from livereduce.status import Status

_log = logging.getLogger("livereduce.status")

RUN_DIRECTORY = Path("/run/livereduce")
"""The unit's ``RuntimeDirectory=livereduce``."""

MAX_STATUS_BYTES = 1 << 20
"""The largest status file ``--status`` reads (1 MiB; the daemon's are a few KiB)."""

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True)
class StatusLocation:
    """Where a status file is.

    Attributes:
        path: the file.
        private: its directory is the per-user one the daemon chose itself (created 0700, checked).
    """

    path: Path
    private: bool = False


def status_file_name(loaded: LoadedConfig) -> str:
    """``status.json`` for the default configuration, else ``status-<INSTRUMENT>-<hash8>.json`` (see the module)."""
    if loaded.path is None or loaded.path == DEFAULT_CONFIG_PATH:
        return "status.json"
    digest = hashlib.sha256(str(loaded.path.resolve()).encode()).hexdigest()[:8]
    return f"status-{loaded.config.instrument or 'default'}-{digest}.json"  # a validated name: no '/'


def _user_directory() -> Path:
    """A per-user directory that does not depend on the working directory: ``$XDG_RUNTIME_DIR/livereduce`` if
    that variable names a directory, else ``/tmp/livereduce-<uid>``."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "livereduce"
    return Path(tempfile.gettempdir()) / f"livereduce-{os.geteuid()}"


def _explicit(loaded: LoadedConfig) -> Path | None:
    """The file the key ``status_file`` or ``$LIVEREDUCE_STATUS_FILE`` names, or None."""
    if loaded.config.status_file:
        return Path(loaded.config.status_file).absolute()
    if os.environ.get("LIVEREDUCE_STATUS_FILE"):
        return Path(os.environ["LIVEREDUCE_STATUS_FILE"]).absolute()
    return None


def status_location(loaded: LoadedConfig) -> StatusLocation:
    """Where the daemon with this configuration writes its status (see the module for the order)."""
    explicit = _explicit(loaded)
    if explicit is not None:
        return StatusLocation(explicit)
    name = status_file_name(loaded)
    if RUN_DIRECTORY.is_dir() and os.access(RUN_DIRECTORY, os.W_OK | os.X_OK):
        return StatusLocation(RUN_DIRECTORY / name)
    return StatusLocation(_user_directory() / name, private=True)


def find_status_location(loaded: LoadedConfig) -> StatusLocation:
    """Where a reader (``livereduce --status``) should look: the explicit file, else the first that exists of
    ``/run/livereduce/<name>`` and the per-user place, else :func:`status_location`.

    A reader is often another user than the daemon's (``/run/livereduce`` is then readable, not writable).

    Raises:
        ConfigError: the per-user directory exists but is not safe (see :func:`check_private_directory`).
    """
    explicit = _explicit(loaded)
    if explicit is not None:
        return StatusLocation(explicit)
    name = status_file_name(loaded)
    if (RUN_DIRECTORY / name).exists():
        return StatusLocation(RUN_DIRECTORY / name)
    directory = _user_directory()
    if os.path.lexists(directory):
        check_private_directory(directory, create=False)
        if (directory / name).exists():
            return StatusLocation(directory / name, private=True)
    return status_location(loaded)


def _directory_problem(info: os.stat_result) -> str | None:
    """Why a per-user directory with this ``stat`` must not hold the status, or None."""
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if info.st_uid != os.geteuid():
        return f"it belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        return f"it is writable by group or others (mode {mode:04o})"
    return None


def _refused(directory: Path, problem: str) -> str:
    return (
        f"status directory '{directory}' refused: {problem}; remove it (another user may have planted it), or "
        f'set "status_file" or $LIVEREDUCE_STATUS_FILE'
    )


def check_private_directory(directory: Path, *, create: bool) -> None:
    """Make sure the per-user directory is the daemon's own: created with mode 0700 if missing (``create``), and
    neither a symbolic link, nor another user's, nor writable by group or others.

    Raises:
        ConfigError: one line naming the directory, what is wrong and the way out.
    """
    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as err:
            raise ConfigError(f"cannot create status directory '{directory}': {err.strerror or err}") from None
    try:
        info = os.lstat(directory)
    except OSError as err:
        raise ConfigError(f"cannot use status directory '{directory}': {err.strerror or err}") from None
    problem = _directory_problem(info)
    if problem is not None:
        raise ConfigError(_refused(directory, problem))


class StatusFile:
    """The daemon's status as JSON, replaced atomically and never through a symbolic link (see the module).

    The file has mode 0644 so that other users can run ``livereduce --status``.
    """

    def __init__(self, location: StatusLocation) -> None:
        self.location = location
        self.path = location.path
        self._warned = False

    def prepare(self) -> None:
        """At the daemon's start: create and check a per-user directory.

        Raises:
            ConfigError: the per-user directory cannot be created or is not safe (the daemon exits 2).
        """
        if self.location.private:
            check_private_directory(self.path.parent, create=True)

    def write(self, status: Status) -> None:
        """Replace the file with ``status`` as JSON; creates the directory if needed (mode 0700).

        An ``OSError`` (also a per-user directory that became unsafe) is one WARNING, until a write succeeds
        again; never an exception.
        """
        text = json.dumps(status.to_json(), indent=2, sort_keys=True, default=str) + "\n"
        try:
            directory = self._open_directory()
            try:
                self._replace(directory, text)
            finally:
                os.close(directory)
        except OSError as err:
            if not self._warned:
                self._warned = True
                _log.warning("cannot write status file '%s': %s", self.path, err.strerror or err)
            return
        self._warned = False

    def _open_directory(self) -> int:
        parent = self.path.parent
        if not self.location.private:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(parent, _DIRECTORY_FLAGS)
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent, 0o700)
        try:
            fd = os.open(parent, _DIRECTORY_FLAGS | os.O_NOFOLLOW)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OSError(err.errno, _refused(parent, "it is a symbolic link or not a directory")) from None
            raise
        problem = _directory_problem(os.fstat(fd))
        if problem is not None:
            os.close(fd)
            raise OSError(errno.EPERM, _refused(parent, problem))
        return fd

    def _replace(self, directory: int, text: str) -> None:
        """Write ``text`` to a new temporary file in ``directory`` (a descriptor; :mod:`tempfile` takes no
        descriptor) and rename it over the file."""
        temporary = f".{self.path.name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o644, dir_fd=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                os.fchmod(stream.fileno(), 0o644)
                stream.write(text)
            os.replace(temporary, self.path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
            raise


def read_status(path: Path) -> Status:
    """The status in ``path``: a regular file (after symbolic links) of at most :data:`MAX_STATUS_BYTES`, opened
    without blocking (a FIFO or a device in its place is an error at once).

    Raises:
        LiveReduceError: the file is missing ("is the daemon running?"), not a regular file, too large,
            unreadable, not valid JSON or not a JSON object; the one-line message names the file.
    """
    try:
        raw = read_regular_file(path, MAX_STATUS_BYTES)
    except FileNotFoundError:
        raise LiveReduceError(f"no status file '{path}': is the daemon running?") from None
    except OSError as err:
        raise LiveReduceError(f"cannot read status file '{path}': {err.strerror or err}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise LiveReduceError(f"status file '{path}' is not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise LiveReduceError(f"status file '{path}' is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise LiveReduceError(f"status file '{path}' is not valid: expected a JSON object")
    return Status.from_json(data)


def config_mismatch(status: Status, path: Path, loaded: LoadedConfig) -> str | None:
    """Why the status in ``path`` is not that of the daemon with this configuration, or None when it is (or a
    status of an older version records no configuration)."""
    if status.config is None:
        return None
    recorded = status.config.path
    wanted = str(loaded.path) if loaded.path is not None else None
    if recorded == wanted or (recorded and wanted and os.path.realpath(recorded) == os.path.realpath(wanted)):
        return None
    return (
        f"status file '{path}' belongs to the daemon of configuration {_name(recorded)}, not of {_name(wanted)}: "
        f'another daemon writes there (set a "status_file" in each configuration)'
    )


def _name(config_path: str | None) -> str:
    return f"'{config_path}'" if config_path else "the built-in defaults"
