"""Processing scripts: discovery, validation, hashing and the execution contract.

Scripts live in ``script_dir`` and are named after the instrument's short name, as upstream:
``reduce_<short>_live_proc.py`` (run on every chunk) and ``reduce_<short>_live_post_proc.py`` (run on the
accumulation). At least one must exist; an existing empty file is an error.

Execution contract (Mantid's ``RunPythonScript``, see ``docs/processing-scripts.md``): the script is plain
Python run with two special names, ``input`` (the chunk, or the accumulation in post-processing) and
``output`` (the name of the output workspace, a ``str``). The script may rebind ``output`` to the result
object. Unlike Mantid, the code is compiled with its own file name, so tracebacks name the script's file and
its real line numbers (Mantid's are off by five).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import os
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any, Literal

from livereduce.errors import ScriptError
from livereduce.files import permission_problem, read_regular_file
from livereduce.logs import LogWriter

Role = Literal["proc", "post_proc"]

PROPERTY_NAMES: dict[Role, str] = {"proc": "ProcessingScriptFilename", "post_proc": "PostProcessingScriptFilename"}
"""StartLiveData property that receives each script (also used in upstream's messages)."""

_output_logger = logging.getLogger("livereduce.script")

MAX_SCRIPT_BYTES = 16 << 20
"""Largest processing script read (16 MiB)."""


@dataclass(frozen=True)
class Script:
    """One validated processing script.

    Attributes:
        role: ``proc`` (runs on each chunk) or ``post_proc`` (runs on the accumulation).
        path: absolute path of the file.
        sha256: hex SHA-256 of the file's bytes when it was read.
        code: the compiled code object (file name = ``path``).
        md5: hex MD5 of the same bytes (upstream's word for a script's identity, "md5sum"; recorded in checkpoints
            and outputs' provenance).
    """

    role: Role
    path: Path
    sha256: str
    code: CodeType
    md5: str = ""

    @property
    def property_name(self) -> str:
        """``ProcessingScriptFilename`` or ``PostProcessingScriptFilename``."""
        return PROPERTY_NAMES[self.role]


@dataclass(frozen=True)
class ProcessingScripts:
    """The scripts that exist now; at least one of them is set."""

    proc: Script | None
    post_proc: Script | None

    def __iter__(self):
        return iter(script for script in (self.proc, self.post_proc) if script is not None)

    def change_to(self, new: ProcessingScripts) -> Literal["none", "post_proc", "proc"]:
        """What replacing these scripts by ``new`` changes, by content: ``none``, ``post_proc`` only (created,
        edited or deleted; the accumulation, which depends on the proc script, stays valid), or ``proc``."""
        if _sha256(self.proc) != _sha256(new.proc):
            return "proc"
        return "none" if _sha256(self.post_proc) == _sha256(new.post_proc) else "post_proc"


def _sha256(script: Script | None) -> str:
    return "" if script is None else script.sha256


class ProcessExitRefused(SystemExit):
    """Raised in place of ``os._exit`` in the daemon's process (see :func:`refuse_process_exit`)."""


def refuse_process_exit() -> None:
    """Make ``os._exit`` called by a processing script a script error instead of the daemon's death.

    ``os._exit`` cannot be caught, and a script calling it ended the daemon with the script's exit code and
    nothing in the log. From this call on, ``os._exit`` in this process raises :class:`ProcessExitRefused` (which
    :func:`run_script` reports with the script's file and line); in a child process (after ``fork``, e.g.
    ``multiprocessing``) it exits as always. The daemon itself never calls ``os._exit``.
    """
    real_exit = os._exit
    if getattr(real_exit, "__wrapped__", None) is not None:
        return
    daemon_pid = os.getpid()

    def guarded_exit(code: int) -> None:
        if os.getpid() != daemon_pid:
            real_exit(code)
        raise ProcessExitRefused(f"os._exit({code}) called: a processing script must not end the daemon")

    guarded_exit.__wrapped__ = real_exit  # type: ignore[attr-defined]
    os._exit = guarded_exit


class NoScripts(ScriptError):
    """Neither processing script exists (upstream's "Must provide at least one of ..." message)."""


class ScriptFailed(ScriptError):
    """A processing script raised, or assigned an unusable ``output``.

    ``str(err)`` is a one-line summary naming the script file and line; ``details`` is the traceback starting
    at the script's own frame.
    """

    def __init__(self, summary: str, details: str) -> None:
        super().__init__(summary)
        self.details = details


def script_paths(script_dir: Path, short_name: str) -> dict[Role, Path]:
    """Paths of both scripts: ``<script_dir>/reduce_<short>_live_proc.py`` and ``..._post_proc.py``."""
    prefix = f"reduce_{short_name}_live"
    return {"proc": script_dir / f"{prefix}_proc.py", "post_proc": script_dir / f"{prefix}_post_proc.py"}


def load_script(role: Role, path: Path, strict: bool = True) -> Script:
    """Read, hash and compile one script.

    Args:
        role: ``proc`` or ``post_proc``.
        path: the file.
        strict: refuse a file (or the file a symlink points to, or its directory) writable by any user.

    Raises:
        ScriptError: the file is not a regular file, cannot be read, is writable by any user (``strict``), is
            empty (upstream's message), or does not compile (file and line).
    """
    problem = permission_problem(path) if strict else None
    if problem is not None:
        raise ScriptError(f'{PROPERTY_NAMES[role]} refused: {problem} (or set "strict_permissions": false)')
    try:
        raw = read_regular_file(path, MAX_SCRIPT_BYTES)
    except OSError as err:
        raise ScriptError(f"{PROPERTY_NAMES[role]} '{path}' cannot be read: {err.strerror or err}") from None
    if not raw.strip():
        raise ScriptError(f"{PROPERTY_NAMES[role]} '{path}' is empty")
    try:
        code = compile(raw, str(path), "exec")
    except SyntaxError as err:
        where = f", line {err.lineno}" if err.lineno else ""
        raise ScriptError(f"{type(err).__name__} in '{path}'{where}: {err.msg}") from None
    except ValueError as err:  # e.g. source code containing null bytes
        raise ScriptError(f"'{path}' does not compile: {err}") from None
    return Script(role, path, hashlib.sha256(raw).hexdigest(), code, hashlib.md5(raw).hexdigest())  # noqa: S324 - an identity, not a secret


def load_scripts(script_dir: Path, short_name: str, strict: bool = True) -> ProcessingScripts:
    """The processing scripts that exist in ``script_dir`` now, validated.

    Args:
        script_dir: the directory of the scripts.
        short_name: the instrument's short name (part of the file names).
        strict: refuse scripts, or a ``script_dir``, that any user can write (``strict_permissions``).

    Raises:
        NoScripts: ``script_dir`` is not a directory, or neither script exists (upstream's message).
        ScriptError: a script is empty, does not compile, is not a regular file, or is refused for its
            permissions.
    """
    paths = script_paths(script_dir, short_name)
    upstream = f"Must provide at least one of '{paths['proc']}' and/or '{paths['post_proc']}'"
    if not script_dir.is_dir():
        raise NoScripts(f"{upstream}: script_dir '{script_dir}' does not exist or is not a directory")
    problem = permission_problem(script_dir, directory=True) if strict else None
    if problem is not None:
        raise ScriptError(f'script_dir refused: {problem} (or set "strict_permissions": false)')
    found = {role: load_script(role, path, strict) for role, path in paths.items() if os.path.lexists(path)}
    if not found:
        raise NoScripts(upstream)
    return ProcessingScripts(found.get("proc"), found.get("post_proc"))


def run_script(script: Script, input: Any, output: str, names: Mapping[str, Any] | None = None) -> Any:  # noqa: A002
    """Run a script with Mantid's contract and return the final value of ``output``.

    Args:
        script: the script to run.
        input: the object bound to ``input`` (chunk or accumulation).
        output: the output workspace name bound to ``output``.
        names: further names to bind (e.g. ``accumulation``, ``mtd``).

    Returns:
        Whatever the script left in ``output`` (the unchanged name if it did not rebind it).

    Raises:
        ScriptFailed: the script raised; the summary names the script file and line.
    """
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "__file__": str(script.path),
        "__builtins__": builtins,
        **(names or {}),
        "input": input,
        "output": output,
    }
    writer = LogWriter(_output_logger, str(script.path))
    try:
        with contextlib.redirect_stdout(writer):
            exec(script.code, namespace)  # noqa: S102 - running the instrument's script is the purpose
    except BaseException as err:  # noqa: BLE001 - even sys.exit() in a script must not end the engine silently
        raise _failure(script, err) from None
    finally:
        writer.close()
    return namespace["output"]


def _failure(script: Script, err: BaseException) -> ScriptFailed:
    """Describe an exception raised by a script, starting the traceback at the script's own frame."""
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != str(script.path):
        tb = tb.tb_next
    frames = traceback.extract_tb(tb) if tb is not None else []
    own = [frame for frame in frames if frame.filename == str(script.path)]
    where = f", line {own[-1].lineno}" if own else ""
    summary = f"{script.property_name} '{script.path}'{where}: {type(err).__name__}: {err}"
    details = "".join(traceback.format_exception(type(err), err, tb))
    return ScriptFailed(summary, details)
