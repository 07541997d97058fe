"""Test double of ``mantid.simpleapi``: StartLiveData (strict), the data algorithms of ``mantid._algorithms``
(``Rebin``, ``SumSpectra``, ``RenameWorkspace``, ``CloneWorkspace``, ``DeleteWorkspace``) and re-exports.

``from mantid.simpleapi import *`` gives exactly ``__all__``, as RunPythonScript's wrapper uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mantid._algorithms import ALGORITHMS, run_algorithm
from mantid._livedata import StartLiveDataAlgorithm, record_call
from mantid.api import AlgorithmManager, AnalysisDataService, UnknownPropertyError, Workspace, mtd
from mantid.kernel import ConfigService

_FIRST = ("Instrument", "Connection", "Listener")


def StartLiveData(*args: Any, **kwargs: Any) -> None:
    """Start live data like Mantid's simpleapi.StartLiveData, but strictly.

    Properties are set Instrument, Connection, Listener first (they decide the listener's extra properties),
    then the rest in the order given. Unlike Mantid, an unknown property raises instead of being dropped.

    Raises:
        TypeError: positional arguments, or a property value of the wrong type.
        ValueError: an unknown property, a value not allowed, or a missing script file.
        RuntimeError: invalid combinations, another MonitorLiveData with the same workspace names, a failed
            connection, or an error while processing the first chunk.
    """
    record_call(dict(kwargs), via="simpleapi")
    if args:
        raise TypeError("StartLiveData() takes keyword arguments only (the double does not map positional ones)")
    algorithm = AlgorithmManager.create("StartLiveData")
    assert isinstance(algorithm, StartLiveDataAlgorithm)
    ordered = [name for name in _FIRST if name in kwargs] + [name for name in kwargs if name not in _FIRST]
    for name in ordered:
        if not algorithm.existsProperty(name):
            raise UnknownPropertyError(
                f"Unknown property '{name}' passed to StartLiveData() (strict mantid double; Mantid would warn "
                f"\"You've passed a property ({name}) to StartLiveData() that doesn't apply to this Instrument.\" "
                "and drop it)"
            )
        algorithm.setProperty(name, kwargs[name])
    algorithm._recorded = True
    algorithm.execute()


def _algorithm_function(name: str) -> Callable[..., Workspace | None]:
    """The simpleapi function of the double's algorithm ``name`` (see ``mantid._algorithms.run_algorithm``)."""

    def function(*args: Any, **kwargs: Any) -> Workspace | None:
        return run_algorithm(name, args, kwargs)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"{name}: {ALGORITHMS[name].__doc__} Returns the output workspace."
    return function


Rebin = _algorithm_function("Rebin")
SumSpectra = _algorithm_function("SumSpectra")
CloneWorkspace = _algorithm_function("CloneWorkspace")
RenameWorkspace = _algorithm_function("RenameWorkspace")
DeleteWorkspace = _algorithm_function("DeleteWorkspace")

__all__ = [
    "AlgorithmManager",
    "AnalysisDataService",
    "CloneWorkspace",
    "ConfigService",
    "DeleteWorkspace",
    "Rebin",
    "RenameWorkspace",
    "StartLiveData",
    "SumSpectra",
    "Workspace",
    "mtd",
]
