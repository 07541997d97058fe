"""Strict test double of the ``mantid`` package (live-data slice only; for livereduce's tests).

Environment variables (read when noted):

* ``MANTID_DOUBLE_DEFAULT_FACILITY`` (import of ``mantid.kernel``): initial ``default.facility``; default "ISIS".
* ``MANTID_DOUBLE_DEFAULT_INSTRUMENT`` (import of ``mantid.kernel``): initial ``default.instrument``; default "".
* ``MANTID_DOUBLE_RECORD`` (each StartLiveData call): append one JSON line per call to this file.
* ``MANTID_DOUBLE_END_RUN_AFTER=N`` (each call): the listener reports EndRun after every N-th extracted chunk.
* ``MANTID_DOUBLE_FAIL_AFTER=N`` (each call): MonitorLiveData's N-th cycle fails with "Lost connection to the DAS".
* ``MANTID_DOUBLE_CANCEL_DELAY=S`` (each call): MonitorLiveData ends S seconds after it sees a cancel.
* ``MANTID_DOUBLE_CONNECT_FAIL=1`` (each call): StartLiveData cannot connect its listener (RuntimeError).
"""

from __future__ import annotations

from mantid import api, kernel
from mantid.api import AlgorithmManager, AnalysisDataService, mtd
from mantid.kernel import ConfigService

__version__ = "6.15.0"

config = ConfigService

__all__ = ["AlgorithmManager", "AnalysisDataService", "ConfigService", "__version__", "api", "config", "kernel", "mtd"]
