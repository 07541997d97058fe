"""RunPythonScript and the data algorithms of the mantid test double (internal module).

* :func:`run_python_script` runs a processing script as Mantid's RunPythonScript does
  (Framework/PythonInterface/mantid/api/src/Algorithms/RunPythonScript.cpp): the code is indented into the body of
  ``PyExec(self, input=None, output=None)`` of a ``mantid.api.PythonAlgorithm`` subclass, below
  ``import mantid`` and ``from mantid.simpleapi import *``, and executed with **globals = ``__main__.__dict__``**
  and a fresh locals dict holding ``input`` and ``output``. So the simpleapi names of the wrapper are locals of the
  wrapper, invisible inside the script: a script sees ``input``, ``output``, builtins and whatever ``__main__``
  defines. Errors read like Mantid's PythonException (Framework/PythonInterface/core/src/ErrorHandling.cpp):
  ``str(exception)``, then ``at line N in '<string>'`` and ``caused by line N in '<file>'`` per traceback entry;
  line numbers are those of the wrapped code, i.e. the script's line + :data:`WRAPPER_LINES`.
* The algorithms upstream livereduce's test scripts call (``SumSpectra``, ``Rebin``, ``RenameWorkspace``) and
  ``CloneWorkspace``, ``DeleteWorkspace``, each with its properties declared in Mantid's order, strictly checked
  (unknown name: ValueError; wrong type: TypeError; missing mandatory value: RuntimeError), outputs stored in the
  ADS (simpleapi called inside a script stores child outputs in the ADS). Semantics from Mantid's algorithm
  documentation (docs/source/algorithms/<Name>-v1.rst); workspaces are histograms (Workspace2D), events and
  workspace groups are not modelled.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from mantid.api import Algorithm, PropertySpec, UnknownPropertyError, Workspace, mtd

WRAPPER_LINES = 4
"""Lines RunPythonScript puts before the script's first line (import, import, class, def)."""

EMPTY_INT = 2**31 - 1
"""Mantid's ``EMPTY_INT()``: an int property left unset."""


# ---------------------------------------------------------------------------------------------------------------
# RunPythonScript


def wrap_script(code: str) -> str:
    """The code RunPythonScript executes for the script ``code`` (line endings unified to ``\\n`` first).

    Raises:
        RuntimeError: ``code`` is empty ("Python script is empty").
    """
    if not code:
        raise RuntimeError("Python script is empty")
    body = [f"        {line}" for line in code.splitlines()]
    return "\n".join(
        [
            "import mantid",
            "from mantid.simpleapi import *",
            "class _DUMMY_ALG(mantid.api.PythonAlgorithm):",
            "    def PyExec(self, input=None,output=None):",
            *body,
            "        return input,output",
            "input,output = _DUMMY_ALG().PyExec(input,output)",
        ]
    )


def exception_text(err: BaseException) -> str:
    """Mantid's PythonException message for ``err`` raised by code this module executed.

    The first traceback entry (this module's own frame, where ``exec`` was called) is skipped: Mantid's traceback
    starts at the executed code.
    """
    lines = [str(err)]
    entry = err.__traceback__.tb_next if err.__traceback__ is not None else None
    first = True
    while entry is not None:
        lines.append(
            f"  {'at' if first else 'caused by'} line {entry.tb_lineno} in '{entry.tb_frame.f_code.co_filename}'"
        )
        first = False
        entry = entry.tb_next
    return "\n".join(lines)


def run_python_script(code: str, input_ws: Workspace | None, output: str) -> Workspace | None:
    """Execute ``code`` as RunPythonScript; the output workspace, or None when the script left ``output`` None.

    Args:
        code: the script text.
        input_ws: bound to ``input`` (None: no input workspace).
        output: the output workspace name bound to ``output`` ("" binds None).

    Raises:
        RuntimeError: the script raised (Mantid's PythonException text), ``output`` names no workspace in the ADS,
            or ``output`` is neither None, a string nor a Workspace.
    """
    wrapped = wrap_script(code)
    namespace = sys.modules["__main__"].__dict__
    local: dict[str, Any] = {"input": input_ws, "output": output or None}
    try:
        exec(compile(wrapped, "<string>", "exec"), namespace, local)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any Python exception becomes a PythonException
        raise RuntimeError(exception_text(err)) from None
    result = local.get("output")
    if result is None:
        return None
    if isinstance(result, Workspace):
        return result
    if isinstance(result, str):
        if not mtd.doesExist(result):
            raise RuntimeError(f"Unable to find workspace '{result}' in the Analysis Data Service")
        return mtd.retrieve(result)
    raise RuntimeError("Invalid type assigned to 'output' variable. Must be a string or a Workspace object")


# ---------------------------------------------------------------------------------------------------------------
# data algorithms


class DataAlgorithm(Algorithm):
    """An algorithm with declared properties that reads and writes workspaces in the ADS.

    Subclasses set ``PROPERTIES`` (declaration order = Mantid's), ``MANDATORY`` and implement :meth:`_exec`.
    """

    PROPERTIES: tuple[PropertySpec, ...] = ()
    MANDATORY: tuple[str, ...] = ()

    def _specs(self) -> list[PropertySpec]:
        return list(self.PROPERTIES)

    def mandatoryProperties(self) -> list[str]:
        """Names of the mandatory properties in declaration order (simpleapi maps positional arguments onto them)."""
        return list(self.MANDATORY)

    def _value(self, name: str) -> Any:
        return self.getProperty(name).raw

    def execute(self) -> bool:
        """Run the algorithm; its output (if any) is stored in the ADS as ``OutputWorkspace``.

        Raises:
            RuntimeError: a mandatory property is not set, or the algorithm failed.
        """
        self._require_initialized()
        missing = [name for name in self.MANDATORY if self.getProperty(name).isDefault]
        if missing:
            details = "\n".join(f"  {name}: Mandatory property not set" for name in missing)
            raise RuntimeError(f"Some invalid Properties found:\n{details}")
        self._executed = False
        self._running = True
        try:
            result = self._exec()
        except RuntimeError:
            raise
        except Exception as exc:  # noqa: BLE001 - Mantid reports any failure of exec() as a RuntimeError
            raise RuntimeError(f"Error in execution of algorithm {self.NAME}: {exc}") from None
        finally:
            self._running = False
        if result is not None:
            mtd.addOrReplace(self._value("OutputWorkspace"), result)
        self._executed = True
        return True

    def _exec(self) -> Workspace | None:
        raise NotImplementedError


def _input(name: str = "InputWorkspace") -> PropertySpec:
    return PropertySpec(name, "input_workspace", None)


_OUTPUT = PropertySpec("OutputWorkspace", "workspace", "", direction="Output")


def rebin_edges(params: list[float], x: np.ndarray, full_bins_only: bool = False) -> np.ndarray:
    """Bin edges for Rebin's ``Params``: ``dx`` (over ``x``'s range) or ``x1, dx1, x2[, dx2, x3 ...]``.

    A negative width ``-d`` is logarithmic (each bin ``d`` times its left edge wide). A final bin narrower than 25 %
    of its step is merged into the previous one, or dropped with ``full_bins_only``.

    Raises:
        ValueError: an even number of values (other than one), a zero width, boundaries that do not increase, or
            logarithmic binning from a boundary <= 0.
    """
    values = [float(v) for v in params]
    if len(values) == 1:
        values = [float(x[0]), values[0], float(x[-1])]
    if len(values) < 3 or len(values) % 2 == 0:
        raise ValueError(f"Params: expected 'width' or 'x1, width, x2[, width, x3 ...]', got {values}")
    edges = [values[0]]
    for start, step, stop in zip(values[0:-1:2], values[1::2], values[2::2], strict=True):
        if step == 0:
            raise ValueError(f"Params: a bin width of 0 (from {start} to {stop})")
        if stop <= start:
            raise ValueError(f"Params: the boundaries must increase ({start} then {stop})")
        if step < 0 and start <= 0:
            raise ValueError(f"Params: logarithmic binning needs boundaries > 0, got {start}")
        first_inner = len(edges)
        width = step if step > 0 else start * -step
        while edges[-1] + width < stop:
            edges.append(edges[-1] + width)
            width = step if step > 0 else edges[-1] * -step
        remainder = stop - edges[-1]
        if full_bins_only and remainder < width and len(edges) > first_inner:
            continue  # the partial final bin is omitted
        if remainder < 0.25 * width and len(edges) > first_inner:
            edges.pop()  # a sliver: merged into the previous bin
        edges.append(stop)
    return np.array(edges)


class Rebin(DataAlgorithm):
    """Rebin a histogram onto new bin edges, spreading each old bin's counts uniformly over its width."""

    NAME = "Rebin"
    PROPERTIES = (
        _input(),
        _OUTPUT,
        PropertySpec("Params", "float_list", []),
        PropertySpec("PreserveEvents", "bool", True, doc="no effect on histograms"),
        PropertySpec("FullBinsOnly", "bool", False),
    )
    MANDATORY = ("InputWorkspace", "OutputWorkspace", "Params")

    def setProperty(self, name: str, value: Any) -> None:
        """Set ``name``; ``Params`` is checked when set (Mantid's RebinParamsValidator)."""
        super().setProperty(name, value)
        if name == "Params":
            try:
                rebin_edges(self._value("Params"), np.array([0.0, 1.0]))
            except ValueError as err:
                raise ValueError(f"Invalid value for property Params (dbl list) from {value!r}: {err}") from None

    def _exec(self) -> Workspace:
        workspace: Workspace = self._value("InputWorkspace")
        edges = rebin_edges(self._value("Params"), workspace.x, self._value("FullBinsOnly"))
        cumulative = np.concatenate([np.zeros((workspace.counts.shape[0], 1)), workspace.counts.cumsum(axis=1)], 1)
        at_edges = np.array([np.interp(edges, workspace.x, row) for row in cumulative])
        return Workspace(np.diff(at_edges, axis=1), edges)


class SumSpectra(DataAlgorithm):
    """Sum the spectra StartWorkspaceIndex..EndWorkspaceIndex into one spectrum."""

    NAME = "SumSpectra"
    PROPERTIES = (
        _input(),
        _OUTPUT,
        PropertySpec("StartWorkspaceIndex", "int", 0),
        PropertySpec("EndWorkspaceIndex", "int", EMPTY_INT),
        PropertySpec("IncludeMonitors", "bool", True, doc="no effect: the double has no monitors"),
    )
    MANDATORY = ("InputWorkspace", "OutputWorkspace")

    def _exec(self) -> Workspace:
        workspace: Workspace = self._value("InputWorkspace")
        last_index = workspace.getNumberHistograms() - 1
        start = self._value("StartWorkspaceIndex")
        end = self._value("EndWorkspaceIndex")
        end = last_index if end == EMPTY_INT else end
        if not 0 <= start <= end <= last_index:
            raise ValueError(
                f"StartWorkspaceIndex {start} and EndWorkspaceIndex {end} must satisfy 0 <= start <= end <= "
                f"{last_index}"
            )
        return Workspace(workspace.counts[start : end + 1].sum(axis=0, keepdims=True), workspace.x)


class CloneWorkspace(DataAlgorithm):
    """Copy a workspace."""

    NAME = "CloneWorkspace"
    PROPERTIES = (_input(), _OUTPUT)
    MANDATORY = ("InputWorkspace", "OutputWorkspace")

    def _exec(self) -> Workspace:
        return self._value("InputWorkspace").clone()


class RenameWorkspace(DataAlgorithm):
    """Give a workspace in the ADS a new name."""

    NAME = "RenameWorkspace"
    PROPERTIES = (
        _input(),
        _OUTPUT,
        PropertySpec("RenameMonitors", "bool", False, doc="no effect: the double has no monitors"),
        PropertySpec("OverwriteExisting", "bool", True),
    )
    MANDATORY = ("InputWorkspace", "OutputWorkspace")

    def _exec(self) -> Workspace:
        workspace: Workspace = self._value("InputWorkspace")
        old, new = workspace.name(), self._value("OutputWorkspace")
        if old == new:
            raise ValueError("Input and output workspace name must be different")
        if mtd.doesExist(new) and not self._value("OverwriteExisting"):
            raise ValueError(f"The workspace {new} already exists")
        if old:
            mtd.remove(old)
        return workspace


class DeleteWorkspace(DataAlgorithm):
    """Remove a workspace from the ADS."""

    NAME = "DeleteWorkspace"
    PROPERTIES = (_input("Workspace"),)
    MANDATORY = ("Workspace",)

    def _exec(self) -> None:
        mtd.remove(self._value("Workspace").name())


ALGORITHMS: dict[str, type[DataAlgorithm]] = {
    cls.NAME: cls for cls in (Rebin, SumSpectra, CloneWorkspace, RenameWorkspace, DeleteWorkspace)
}
"""The double's data algorithms by name."""


def run_algorithm(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Workspace | None:
    """What a simpleapi function does: create, set properties, execute; returns the output workspace (or None).

    Positional arguments fill the mandatory properties in order, as Mantid's simpleapi does.

    Raises:
        TypeError: too many positional arguments, a property given twice, no ``OutputWorkspace`` (Mantid would
            name it after the assignment's left-hand side; the double does not), or a value of the wrong type.
        ValueError: an unknown property or a value not allowed.
        RuntimeError: a mandatory property is missing or the algorithm failed.
    """
    algorithm = ALGORITHMS[name]()
    algorithm.initialize()
    mandatory = algorithm.mandatoryProperties()
    if len(args) > len(mandatory):
        raise TypeError(f"{name}() takes at most {len(mandatory)} positional arguments ({', '.join(mandatory)})")
    values = dict(zip(mandatory, args, strict=False))
    for key, value in kwargs.items():
        if key in values:
            raise TypeError(f"{name}() got multiple values for property {key}")
        values[key] = value
    if algorithm.existsProperty("OutputWorkspace") and "OutputWorkspace" not in values:
        raise TypeError(
            f"{name}(): the mantid double needs OutputWorkspace (Mantid would take the name of the variable the "
            "result is assigned to)"
        )
    for key, value in values.items():
        if not algorithm.existsProperty(key):
            raise UnknownPropertyError(f"Unknown property '{key}' for algorithm {name}")
        algorithm.setProperty(key, value)
    algorithm.execute()
    if algorithm.existsProperty("OutputWorkspace"):
        return mtd.retrieve(algorithm.getProperty("OutputWorkspace").raw)
    return None
