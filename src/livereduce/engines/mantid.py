"""The mantid engine: Mantid's StartLiveData/MonitorLiveData driven exactly as upstream does, without its hangs.

* Instrument resolution through ``mantid.kernel.ConfigService`` (the facility is switched when the instrument
  belongs to another one, the default instrument is set), ``UsageService.setApplicationName("livereduce")``,
  Mantid's messages routed into Python logging (``log_to_python``) so they reach the log file.
* StartLiveData with upstream's properties (see :meth:`MantidEngine.start_live_data_args`), called as a
  statement (simpleapi refuses assignment); the background MonitorLiveData is found with
  ``AlgorithmManager.runningInstancesOf("MonitorLiveData")``.
* Supervision: a thread polls that MonitorLiveData still runs; when it ends with an error the supervisor is told
  (:class:`~livereduce.engines.base.EngineFailed`, restarted with back-off) instead of idling forever; when it
  ends normally (RunTransitionBehavior Stop), :class:`~livereduce.engines.base.EngineFinished`.
* Scripts see upstream's ``__main__``: Mantid runs a processing script with ``__main__.__dict__`` as its globals
  (RunPythonScript), and upstream's ``__main__`` is its daemon module, so scripts at sites use its top-level names
  (``json``, ``os``, ``time``, ``mtd``, ``logger``, ...) without importing them. :func:`expose_upstream_names`
  defines the same names in this process's ``__main__`` (compatibility, not an API: docs/compatibility.md).
* Progress: Mantid's ``Loading live data chunk N at HH:MM:SS`` (MonitorLiveData, N from 0 at its first cycle,
  which is the second chunk: StartLiveData loads the first) gives the count of completed chunks, N + 1.
* A processing script that fails in the first chunk (inside StartLiveData) is a
  :class:`~livereduce.scripts.ScriptFailed` naming the script and its line, not a source error.
* Stop without deadlock: ``cancel()`` the MonitorLiveData, then poll from Python with ``time.sleep`` (which
  releases the GIL, so the cancelled algorithm's Python scripts and log calls can finish) until it no longer
  runs or the deadline passes. Never ``AlgorithmManager.shutdown()``, which holds the GIL while it waits
  (upstream's hang, Mantid issues #33895/#33924). Workspaces are cleared (``mtd.clear()``) as upstream does.

Source of the property semantics: Mantid's StartLiveData/LiveDataAlgorithm/MonitorLiveData
(Framework/LiveData) and ``simpleapi.StartLiveData``; see ``docs/compatibility.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC
from types import ModuleType
from typing import Any

import psutil

from livereduce.config import Config
from livereduce.engines.base import (
    CycleCompleted,
    EngineFailed,
    EngineFinished,
    EngineStarted,
    EngineState,
    Health,
    Notify,
)
from livereduce.errors import ConfigError, EngineError, SourceError
from livereduce.logs import FILE_FORMAT, SNS_LOG_FILE
from livereduce.scripts import ProcessingScripts, Role, ScriptFailed

OUTPUT_WORKSPACE = "result"
"""StartLiveData ``OutputWorkspace`` as upstream passes it."""
POLL_SECONDS = 0.05
"""How often MonitorLiveData is polled while stopping (Mantid's own loop ticks every 50 ms)."""
WATCH_SECONDS = 0.5
"""How often the supervision thread checks that MonitorLiveData still runs."""

WRAPPER_LINES = 4
"""Lines RunPythonScript's wrapper puts before a script's first line (``import mantid``, ``from mantid.simpleapi
import *``, the class, ``def PyExec``; RunPythonScript.cpp): Mantid's line N is the script's line N - 4."""

_log = logging.getLogger("livereduce.LiveDataManager")
_config_log = logging.getLogger("livereduce.Config")
_CHUNK = re.compile(r"Loading live data chunk (\d+)")
_STEP_FAILED: dict[str, Role] = {"While processing chunk:": "proc", "While post processing:": "post_proc"}
"""LoadLiveData's error message before it rethrows a failure of the (post-)processing step (LoadLiveData.cpp)."""
_WRAPPED_LINE = re.compile(r"line (\d+) in '<string>'")
"""A traceback entry in the code RunPythonScript executes (PythonException text, ErrorHandling.cpp)."""


def upstream_main_names(mantid: ModuleType) -> dict[str, Any]:
    """The top-level names of upstream's ``scripts/livereduce.py`` (mantidproject/livereduce 1.22) that exist here.

    Its imports (``json``, ``logging``, ``os``, ``signal``, ``sys``, ``threading``, ``time``, ``md5``, ``mantid``,
    ``psutil``, ``InstrumentInfo``, ``StartLiveData``, ``mtd``, ``mtd_log_to_python``, ``parse_version`` when
    ``packaging`` is installed) and constants (``CONVERSION_FACTOR_BYTES_TO_MB``, ``LOG_NAME``, ``LOG_FILE``,
    ``logformat``) and its ``logger`` (logger "livereduce"). Not its daemon's internals (``config``,
    ``LiveDataManager``, handlers, ...) nor ``pyinotify`` (not used here); see docs/compatibility.md.

    Args:
        mantid: the imported ``mantid`` package (``kernel``, ``simpleapi``, ``utils.logging`` imported).
    """
    names: dict[str, Any] = {
        "json": json,
        "logging": logging,
        "os": os,
        "signal": signal,
        "sys": sys,
        "threading": threading,
        "time": time,
        "md5": hashlib.md5,
        "mantid": mantid,
        "psutil": psutil,
        "InstrumentInfo": mantid.kernel.InstrumentInfo,
        "StartLiveData": mantid.simpleapi.StartLiveData,
        "mtd": mantid.simpleapi.mtd,
        "mtd_log_to_python": mantid.utils.logging.log_to_python,
        "CONVERSION_FACTOR_BYTES_TO_MB": 1.0 / (1024 * 1024),
        "LOG_NAME": "livereduce",
        "LOG_FILE": str(SNS_LOG_FILE),
        "logformat": FILE_FORMAT,
        "logger": logging.getLogger("livereduce"),
    }
    try:
        from packaging.version import parse  # noqa: PLC0415 - optional, as a name for scripts only
    except ImportError:
        pass
    else:
        names["parse_version"] = parse
    return names


def expose_upstream_names(mantid: ModuleType) -> list[str]:
    """Define :func:`upstream_main_names` in ``__main__`` (the globals of Mantid's processing scripts); names
    ``__main__`` already defines are left alone. Returns the names added."""
    main = sys.modules["__main__"].__dict__
    added = []
    for name, value in upstream_main_names(mantid).items():
        if name not in main:
            main[name] = value
            added.append(name)
    return added


class MantidEngine:
    """Drives Mantid's live data algorithms.

    Raises:
        EngineError: (constructor) Mantid cannot be imported; names what is missing and the environment.
    """

    name = "mantid"

    def __init__(self, config: Config) -> None:
        self.config = config
        try:
            import mantid  # noqa: PLC0415 - Mantid is imported only for this engine
            from mantid.api import AlgorithmManager  # noqa: PLC0415
            from mantid.kernel import ConfigService, UsageService  # noqa: PLC0415
            from mantid.simpleapi import StartLiveData, mtd  # noqa: PLC0415
            from mantid.utils.logging import log_to_python  # noqa: PLC0415
        except ImportError as err:
            raise EngineError(
                f"the mantid engine needs Mantid, which cannot be imported here ({err}); expected in the "
                f'environment \'{config.env_name}\' (PIXI_ENV/CONDA_ENV), or set "engine": "scipp"'
            ) from None
        self._mantid = mantid
        self._algorithms = AlgorithmManager
        self._config_service = ConfigService
        self._usage = UsageService
        self._start_live_data: Callable[..., None] = StartLiveData
        self._mtd = mtd
        self._log_to_python = log_to_python
        self._monitor: Any = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._health = Health()
        self._lock = threading.Lock()
        self._messages = _MantidMessages(self._chunk_started)
        self._last_chunk: int | None = None
        self._notify: Notify | None = None

    # --- Engine interface -------------------------------------------------------------------------------------
    def start(self, scripts: ProcessingScripts, notify: Notify, *, fresh: str | None = None) -> None:  # noqa: ARG002 - StartLiveData never resumes
        """Resolve the instrument, call StartLiveData (first chunk, synchronous) and supervise MonitorLiveData.

        Raises:
            ConfigError: unknown instrument or accumulation method not allowed by this Mantid.
            ScriptFailed: a processing script failed in the first chunk (names the script and its line).
            SourceError: StartLiveData failed otherwise (e.g. the listener cannot connect).
        """
        self._notify = notify
        self._log_to_python("information")
        mantid_log = logging.getLogger("Mantid")
        mantid_log.addHandler(self._messages)
        try:
            self._usage.setApplicationName("livereduce")
            added = expose_upstream_names(self._mantid)
            if added:
                _log.debug("upstream's names for processing scripts in __main__: %s", ", ".join(added))
            instrument = self.resolve_instrument()
            args = self.start_live_data_args(instrument, scripts)
            _log.info("StartLiveData(%s)", json.dumps(args, sort_keys=True, indent=2))
            self._messages.failed_step = None
            try:
                self._start_live_data(**args)
            except (RuntimeError, ValueError, TypeError) as err:
                raise self._start_failure(err, scripts) from None
        except BaseException:
            mantid_log.removeHandler(self._messages)
            raise
        self._monitor = self._find_monitor()
        with self._lock:
            self._health.state = EngineState.RUNNING
            self._health.chunks = max(self._health.chunks, 1)
            self._health.last_cycle_end = time.time()
            self._health.source = f"Mantid StartLiveData, instrument {instrument}"
        notify(EngineStarted())
        if self._monitor is not None:
            self._thread = threading.Thread(target=self._watch, args=(notify,), name="MantidWatch", daemon=True)
            self._thread.start()

    def _start_failure(self, err: Exception, scripts: ProcessingScripts) -> ScriptFailed | SourceError:
        """What a failed StartLiveData means: a script error (LoadLiveData said a step failed, or the message is a
        PythonException from the wrapped script) naming the script and line, else a source error."""
        text = str(err).strip()
        role = self._messages.failed_step
        lines = [int(number) for number in _WRAPPED_LINE.findall(text)]
        if role is None and not lines:  # e.g. the DAS does not answer (yet): retried with back-off, as upstream did
            return SourceError(f"StartLiveData failed: {' '.join(text.split())}", recoverable=True)
        present = list(scripts)
        script = getattr(scripts, role) if role is not None else None
        if script is None and len(present) == 1:
            script = present[0]
        if script is not None:
            subject = f"{script.property_name} '{script.path}'"
        else:
            subject = " or ".join(f"{each.property_name} '{each.path}'" for each in present)
        # entries run from the wrapper's last line (root) inward; the deepest one in the wrapped code is the
        # script's own line
        where = f", line {lines[-1] - WRAPPER_LINES}" if len(lines) > 1 else ""
        message = text.splitlines()[0].strip() if text else type(err).__name__
        return ScriptFailed(f"{subject}{where}: {message} (first chunk, in StartLiveData)", text)

    def reload_post_proc(self, scripts: ProcessingScripts) -> bool:  # noqa: ARG002 - see below
        """False: StartLiveData holds both scripts, so a post_proc edit restarts it (upstream's behaviour)."""
        return False

    def stop(self, timeout: float) -> bool:
        """Cancel MonitorLiveData and wait (GIL released) until it ends; True if within ``timeout`` seconds."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        running = self._algorithms.runningInstancesOf("MonitorLiveData")
        for algorithm in running:
            algorithm.cancel()
        while any(algorithm.isRunning() for algorithm in running):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        logging.getLogger("Mantid").removeHandler(self._messages)
        self._mtd.clear()
        with self._lock:
            if self._health.state is EngineState.RUNNING:
                self._health.state = EngineState.STOPPED
        return True

    def health(self) -> Health:
        with self._lock:
            return Health(**vars(self._health))

    # --- StartLiveData ----------------------------------------------------------------------------------------
    def resolve_instrument(self) -> str:
        """The instrument's full name via ConfigService; switches facility and default instrument as upstream.

        Raises:
            ConfigError: Mantid does not know the instrument, or no default instrument is configured.
        """
        service = self._config_service
        try:
            if self.config.instrument is None:
                _config_log.info("Using default instrument")
                info = service.getInstrument()
            else:
                _config_log.info("Converting instrument using ConfigService")
                info = service.getInstrument(self.config.instrument)
                facility = info.facility().name()
                if facility != service.getFacility().name():
                    service.setFacility(facility)
                    _config_log.info("Default Facility set to %s", facility)
                if info.name() != service["default.instrument"]:
                    service["default.instrument"] = info.name()
                    _config_log.info("Default Instrument set to %s", info.name())
        except RuntimeError as err:
            _config_log.error("General error while getting instrument")
            raise ConfigError(f"Mantid does not know instrument '{self.config.instrument or ''}': {err}") from None
        if not info.name().strip():
            raise ConfigError("No instrument found in the configuration or Mantid.user.properties files")
        _config_log.info('self.instrument="%s"', info.shortName())
        return info.name()

    def start_live_data_args(self, instrument: str, scripts: ProcessingScripts) -> dict[str, Any]:
        """The StartLiveData properties: upstream's set, plus the new keys when they are given.

        Raises:
            ConfigError: ``accum_method`` is not among this Mantid's allowed values.
        """
        config = self.config
        given = config.model_fields_set
        self._check_allowed("AccumulationMethod", config.accum_method)
        update_every = config.update_every
        args: dict[str, Any] = {
            "Instrument": instrument,
            "UpdateEvery": int(update_every) if float(update_every).is_integer() else update_every,
            "PreserveEvents": config.preserve_events,
            "AccumulationMethod": config.accum_method,
            "OutputWorkspace": OUTPUT_WORKSPACE,
            "FromNow": config.start == "now",
            "FromStartOfRun": config.start == "from_start_of_run",
        }
        if not isinstance(config.start, str):
            args["FromTime"] = True
            args["StartTime"] = config.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")  # ISO 8601, UTC
        if scripts.proc is not None:
            args["ProcessingScriptFilename"] = str(scripts.proc.path)
        if scripts.post_proc is not None:
            args["AccumulationWorkspace"] = self._mtd.unique_name(prefix="accumulation_")
            args["PostProcessingScriptFilename"] = str(scripts.post_proc.path)
        if config.periods is not None:
            args["PeriodList"] = list(config.periods)
        if config.spectra is not None:
            args["SpectraList"] = list(config.spectra)  # upstream sent "spectra", which Mantid drops
        if config.listener is not None:
            args["Listener"] = config.listener
        if config.address is not None:
            args["Address"] = config.address
        if "run_transition" in given:
            self._check_allowed("RunTransitionBehavior", config.run_transition)
            args["RunTransitionBehavior"] = config.run_transition
        return args

    def _check_allowed(self, name: str, value: str) -> None:
        algorithm = self._algorithms.createUnmanaged("StartLiveData")
        algorithm.initialize()
        allowed = list(algorithm.getProperty(name).allowedValues)
        if value not in allowed:
            raise ConfigError(f"{name} '{value}' is not allowed by this Mantid {allowed}")

    def _find_monitor(self) -> Any:
        for algorithm in self._algorithms.runningInstancesOf("MonitorLiveData"):
            if algorithm.getPropertyValue("OutputWorkspace") == OUTPUT_WORKSPACE:
                return algorithm
        return None

    # --- supervision ------------------------------------------------------------------------------------------
    def _watch(self, notify: Notify) -> None:
        """Poll MonitorLiveData; report how it ended unless we stopped it."""
        monitor = self._monitor
        while not self._stopping.wait(WATCH_SECONDS):
            if monitor.isRunning():
                continue
            if self._stopping.is_set():
                return
            if monitor.isExecuted():
                with self._lock:
                    self._health.state = EngineState.FINISHED
                    if self._last_chunk is not None:  # the cycle that saw the run end completed
                        self._health.chunks = self._last_chunk + 2
                notify(EngineFinished("MonitorLiveData ended (RunTransitionBehavior Stop)"))
            else:
                error = SourceError("MonitorLiveData ended with an error (see the Mantid messages before this)")
                with self._lock:
                    self._health.state = EngineState.FAILED
                    self._health.errors += 1
                    self._health.last_error = str(error)
                    self._health.last_error_time = time.time()
                notify(EngineFailed(error))
            return

    def _chunk_started(self, number: int) -> None:
        """MonitorLiveData began its cycle ``number`` (0 first): StartLiveData's chunk and ``number`` cycles are
        complete."""
        with self._lock:
            self._last_chunk = number
            self._health.chunks = number + 1
            self._health.last_cycle_end = time.time()
        if self._notify is not None and number > 0:
            self._notify(CycleCompleted())  # Mantid does not say how long the cycle took


class _MantidMessages(logging.Handler):
    """Reads Mantid's messages (logger "Mantid", via ``log_to_python``): MonitorLiveData's ``Loading live data
    chunk N at HH:MM:SS`` (one per cycle) and LoadLiveData's ``While processing chunk:`` / ``While post
    processing:`` (a script step failed; logged inside StartLiveData, whose LoadLiveData logs)."""

    def __init__(self, started: Callable[[int], None]) -> None:
        super().__init__(logging.INFO)
        self._started = started
        self.failed_step: Role | None = None
        """The step LoadLiveData last reported as failed (reset before each StartLiveData)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        match = _CHUNK.search(message)
        if match:
            self._started(int(match.group(1)))
            return
        step = _STEP_FAILED.get(message.strip())
        if step is not None:
            self.failed_step = step
