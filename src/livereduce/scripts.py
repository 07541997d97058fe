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
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any, Literal

from livereduce.errors import ScriptError
from livereduce.logs import LogWriter

Role = Literal["proc", "post_proc"]

PROPERTY_NAMES: dict[Role, str] = {"proc": "ProcessingScriptFilename", "post_proc": "PostProcessingScriptFilename"}
"""StartLiveData property that receives each script (also used in upstream's messages)."""

_output_logger = logging.getLogger("livereduce.script")


@dataclass(frozen=True)
class Script:
    """One validated processing script.

    Attributes:
        role: ``proc`` (runs on each chunk) or ``post_proc`` (runs on the accumulation).
        path: absolute path of the file.
        sha256: hex SHA-256 of the file's bytes when it was read.
        code: the compiled code object (file name = ``path``).
    """

    role: Role
    path: Path
    sha256: str
    code: CodeType

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


def load_script(role: Role, path: Path) -> Script:
    """Read, hash and compile one script.

    Raises:
        ScriptError: the file cannot be read, is empty (upstream's message), or does not compile (file and line).
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ScriptError(f"{PROPERTY_NAMES[role]} '{path}' cannot be read: {err.strerror}") from None
    if not raw.strip():
        raise ScriptError(f"{PROPERTY_NAMES[role]} '{path}' is empty")
    try:
        code = compile(raw, str(path), "exec")
    except SyntaxError as err:
        where = f", line {err.lineno}" if err.lineno else ""
        raise ScriptError(f"{type(err).__name__} in '{path}'{where}: {err.msg}") from None
    except ValueError as err:  # e.g. source code containing null bytes
        raise ScriptError(f"'{path}' does not compile: {err}") from None
    return Script(role, path, hashlib.sha256(raw).hexdigest(), code)


def load_scripts(script_dir: Path, short_name: str) -> ProcessingScripts:
    """The processing scripts that exist in ``script_dir`` now, validated.

    Raises:
        NoScripts: neither script exists (upstream's message).
        ScriptError: a script is empty or does not compile.
    """
    paths = script_paths(script_dir, short_name)
    found = {role: load_script(role, path) for role, path in paths.items() if path.exists()}
    if not found:
        raise NoScripts(f"Must provide at least one of '{paths['proc']}' and/or '{paths['post_proc']}'")
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
    writer = LogWriter(_output_logger)
    try:
        with contextlib.redirect_stdout(writer):
            exec(script.code, namespace)  # noqa: S102 - running the instrument's script is the purpose
    except BaseException as err:  # noqa: BLE001 - even sys.exit() in a script must not end the engine silently
        raise _failure(script, err) from None
    finally:
        writer.flush()
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
