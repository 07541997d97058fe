"""Files that come from outside (configuration, processing scripts): read them without ever blocking, and refuse
those anyone on the host could have written.

* :func:`read_regular_file` opens with ``O_NONBLOCK`` and checks the opened descriptor is a regular file before
  reading, so a FIFO, a device or a directory put in place of a script or the configuration is an error at once
  instead of a read that blocks forever (and checking the descriptor, not the name, leaves no window for a swap).
* :func:`permission_problem` is sshd's ``StrictModes`` for the files whose code runs as the service user: a file
  or directory writable by "other" (``o+w``), or a symlink pointing at one, is refused. Group-writable stays
  allowed (the documented set-up is ``775 snsdata:users``); a directory with the sticky bit (``/tmp``) is
  not a problem for the files in it that belong to their user.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (after following symlinks) of at most ``limit`` bytes.

    Never blocks on a FIFO or device: the file is opened with ``O_NONBLOCK`` and its descriptor checked with
    ``fstat`` before anything is read.

    Raises:
        OSError: the file cannot be opened or read; ``EINVAL`` "not a regular file (a FIFO, ...)" for anything
            but a regular file, ``EFBIG`` when it is larger than ``limit`` bytes. ``strerror`` is a readable
            message.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({_kind(info.st_mode)})", str(path))
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes ({info.st_size} bytes)", str(path))
        chunks = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:  # it grew while being read
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        return data
    finally:
        os.close(fd)


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` (following symlinks) is a regular file; never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def permission_problem(path: Path, *, directory: bool = False) -> str | None:
    """Why ``path`` must not be trusted to hold code run as this user, or None.

    Checked: the path itself, if it is a symlink the file it resolves to, and the directory that file is in (for
    a file; for ``directory`` True the directory itself). Each must not be writable by "other"; a directory with
    the sticky bit is accepted for files owned by this user or root. A path that does not exist is no problem
    here (whether it must exist is checked elsewhere).

    Returns:
        One line naming the path and the fix, e.g. ``'/x/s.py' is writable by any user (mode 0666): run
        'chmod o-w /x/s.py'``.
    """
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    checks = [target] if directory else [target, target.parent]
    for candidate in checks:
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        if not info.st_mode & stat.S_IWOTH:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX and candidate != target:
            owner = os.stat(target).st_uid
            if owner in (0, os.geteuid()):
                continue
        via = f" (symlink '{path}' points to it)" if candidate == target and target != path.absolute() else ""
        mode = stat.S_IMODE(info.st_mode)
        return f"'{candidate}'{via} is writable by any user (mode {mode:04o}): run 'chmod o-w {candidate}'"
    return None
