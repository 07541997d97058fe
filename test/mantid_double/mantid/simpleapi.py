"""Test double of ``mantid.simpleapi``: StartLiveData (strict), a few workspace helpers, and re-exports."""

from __future__ import annotations

from typing import Any

from mantid._livedata import StartLiveDataAlgorithm, record_call
from mantid.api import AlgorithmManager, AnalysisDataService, UnknownPropertyError, Workspace, mtd
from mantid.kernel import ConfigService

__all__ = [
    "AlgorithmManager",
    "AnalysisDataService",
    "CloneWorkspace",
    "ConfigService",
    "DeleteWorkspace",
    "StartLiveData",
    "Workspace",
    "mtd",
]

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


def _workspace(value: Workspace | str, what: str) -> Workspace:
    """``value`` itself or the ADS workspace it names."""
    if isinstance(value, Workspace):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a Workspace or a name, not {type(value).__name__}")
    if not mtd.doesExist(value):
        raise ValueError(f"{what}: workspace '{value}' does not exist")
    return mtd.retrieve(value)


def CloneWorkspace(InputWorkspace: Workspace | str, OutputWorkspace: str) -> Workspace:
    """Copy ``InputWorkspace`` into the ADS as ``OutputWorkspace``; returns the copy."""
    clone = _workspace(InputWorkspace, "InputWorkspace").clone()
    mtd.addOrReplace(OutputWorkspace, clone)
    return clone


def DeleteWorkspace(Workspace: Workspace | str) -> None:
    """Remove a workspace from the ADS (ValueError if it does not exist)."""
    name = Workspace if isinstance(Workspace, str) else _workspace(Workspace, "Workspace").name()
    _workspace(name, "Workspace")
    mtd.remove(name)
