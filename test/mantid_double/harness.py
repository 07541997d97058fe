"""Loading the mantid test double into a pytest process (``from mantid_double.harness import ...``).

Tests that import the double in-process use :class:`DoubleLoader` through a fixture: it imports a fresh ``mantid``
from this directory with the given ``MANTID_DOUBLE_*`` environment and, at the end, cancels every MonitorLiveData,
waits for it, and removes the modules again. :func:`kept_main` restores ``__main__`` (the globals of processing
scripts, which the mantid engine and scripts write to).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import poll_until

DOUBLE_ROOT = Path(__file__).resolve().parent
ENV_VARS = (
    "MANTID_DOUBLE_DEFAULT_FACILITY",
    "MANTID_DOUBLE_DEFAULT_INSTRUMENT",
    "MANTID_DOUBLE_RECORD",
    "MANTID_DOUBLE_END_RUN_AFTER",
    "MANTID_DOUBLE_FAIL_AFTER",
    "MANTID_DOUBLE_CANCEL_DELAY",
    "MANTID_DOUBLE_CONNECT_FAIL",
)
"""Every environment variable the double reads (see mantid/__init__.py)."""
DEADLINE = 10.0


def wait_until(predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> float:
    """Poll ``predicate`` every 10 ms with :func:`conftest.poll_until`, failing the test after ``timeout`` seconds;
    returns the seconds it took (the tests of the double's timing use it)."""
    start = time.monotonic()
    poll_until(predicate, what, timeout, interval=0.01)
    return time.monotonic() - start


def _purge_mantid() -> None:
    for name in [m for m in sys.modules if m == "mantid" or m.startswith("mantid.")]:
        del sys.modules[name]


@dataclass
class Double:
    """The freshly imported double's modules."""

    mantid: ModuleType
    kernel: ModuleType
    api: ModuleType
    simpleapi: ModuleType
    logging: ModuleType

    def start(self, **kwargs: Any) -> None:
        """simpleapi.StartLiveData(**kwargs)."""
        self.simpleapi.StartLiveData(**kwargs)

    def monitors(self) -> list[Any]:
        """Running MonitorLiveData instances."""
        return self.api.AlgorithmManager.runningInstancesOf("MonitorLiveData")

    def monitor(self) -> Any:
        """The newest MonitorLiveData."""
        found = self.api.AlgorithmManager.newestInstanceOf("MonitorLiveData")
        assert found is not None
        return found


class DoubleLoader:
    """Imports the double (``load``) and cleans up after the test (``close``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        for var in ENV_VARS:
            monkeypatch.delenv(var, raising=False)
        self._loaded: list[Double] = []

    def load(self, **env: str) -> Double:
        """Import a fresh double with ``env`` (``MANTID_DOUBLE_*`` variables) set."""
        for key, value in env.items():
            self._monkeypatch.setenv(key, value)
        _purge_mantid()
        if str(DOUBLE_ROOT) not in sys.path:
            sys.path.insert(0, str(DOUBLE_ROOT))
        import mantid
        import mantid.api
        import mantid.kernel
        import mantid.simpleapi
        import mantid.utils.logging

        double = Double(mantid, mantid.kernel, mantid.api, mantid.simpleapi, mantid.utils.logging)
        self._loaded.append(double)
        return double

    def close(self) -> None:
        """Cancel and wait for every MonitorLiveData, remove the modules and the path."""
        for double in self._loaded:
            double.api.AlgorithmManager.cancelAll()
            wait_until(lambda d=double: not d.monitors(), "MonitorLiveData threads to end at teardown")
        _purge_mantid()
        while str(DOUBLE_ROOT) in sys.path:
            sys.path.remove(str(DOUBLE_ROOT))
        logging.getLogger("Mantid").setLevel(logging.NOTSET)


@contextlib.contextmanager
def kept_main() -> Iterator[ModuleType]:
    """``__main__``, with its namespace restored afterwards (names added by scripts or the engine removed)."""
    main = sys.modules["__main__"]
    saved = dict(vars(main))
    try:
        yield main
    finally:
        vars(main).clear()
        vars(main).update(saved)
