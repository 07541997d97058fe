"""StartLiveData, LoadLiveData cycles and MonitorLiveData of the mantid test double (internal module).

Semantics follow Mantid's Framework/LiveData (see docs/ and the research notes in ../shared/reference/
mantid-live.md §1-3): one synchronous LoadLiveData (Replace) inside StartLiveData, then a managed MonitorLiveData
thread cycling every UpdateEvery seconds start-to-start on 50 ms ticks. Data are synthetic: ones over
:data:`CHUNK_BINS` time-of-flight bins from 10000 to 20000 µs. Scripts run as RunPythonScript runs them
(``mantid._algorithms.run_python_script``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mantid import _algorithms, kernel
from mantid.api import Algorithm, AlgorithmManager, Property, PropertySpec, Workspace, mtd
from mantid.utils.logging import emit

CHUNK_SPECTRA = 10
CHUNK_BINS = 20
CHUNK_TOF_EDGES = np.linspace(10000.0, 20000.0, CHUNK_BINS + 1)
"""Bin edges (time of flight, µs) of every chunk."""
ANONYMOUS_PREFIX = "__anonymous_livedata_input_"
TICK = 0.05

# ILiveListener::RunStatus
NO_RUN, BEGIN_RUN, RUNNING, END_RUN = 0, 1, 2, 4

HISTOGRAM_LISTENERS = frozenset({"ISISHistoDataListener", "KafkaHistoListener"})
HISTORY_LISTENERS = frozenset({"SNSLiveEventDataListener", "KafkaEventListener", "KafkaHistoListener"})
LISTENER_GROUP = "ListenerProperties"
LISTENER_PROPERTIES: dict[str, tuple[PropertySpec, ...]] = {
    "ISISHistoDataListener": (
        PropertySpec("SpectraList", "int_list", [], group=LISTENER_GROUP, doc="spectra to read"),
        PropertySpec("PeriodList", "int_list", [], group=LISTENER_GROUP, item_minimum=1, doc="periods to read"),
    ),
    "KafkaEventListener": (PropertySpec("BufferThreshold", "int", 1000000, group=LISTENER_GROUP),),
}
"""Dynamic properties each listener class adds to StartLiveData (group "ListenerProperties")."""

ACCUMULATION_METHODS = ("Add", "Replace", "Append")
RUN_TRANSITIONS = ("Restart", "Stop", "Rename")

_COMMON: tuple[PropertySpec, ...] = (
    PropertySpec("Instrument", "str", "", doc="instrument of the default facility with live data"),
    PropertySpec("Connection", "str", ""),
    PropertySpec("Listener", "str", "", allowed=("", *kernel.LISTENERS)),
    PropertySpec("Address", "str", ""),
    PropertySpec("StartTime", "str", ""),
    PropertySpec("ProcessingAlgorithm", "str", ""),
    PropertySpec("ProcessingProperties", "str", ""),
    PropertySpec("ProcessingScript", "str", ""),
    PropertySpec("ProcessingScriptFilename", "file", ""),
    PropertySpec("AccumulationMethod", "str", "Add", allowed=ACCUMULATION_METHODS),
    PropertySpec("PreserveEvents", "bool", False),
    PropertySpec("PostProcessingAlgorithm", "str", ""),
    PropertySpec("PostProcessingProperties", "str", ""),
    PropertySpec("PostProcessingScript", "str", ""),
    PropertySpec("PostProcessingScriptFilename", "file", ""),
    PropertySpec("RunTransitionBehavior", "str", "Restart", allowed=RUN_TRANSITIONS),
    PropertySpec("AccumulationWorkspace", "workspace", "", direction="Output"),
    PropertySpec("OutputWorkspace", "workspace", "", direction="Output"),
    PropertySpec("LastTimeStamp", "output", "", direction="Output"),
)
_UPDATE_EVERY = PropertySpec("UpdateEvery", "float", 60.0)
_START_ONLY: tuple[PropertySpec, ...] = (
    PropertySpec("FromNow", "bool", True),
    PropertySpec("FromStartOfRun", "bool", False),
    PropertySpec("FromTime", "bool", False),
    _UPDATE_EVERY,
)
_MONITOR_HANDLE = PropertySpec("MonitorLiveData", "algorithm", None, direction="Output")


def _now_iso() -> str:
    """Wall-clock UTC time in Mantid's ISO8601 form."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------------------------------
# environment


def _env_int(name: str) -> int | None:
    """Positive int from env ``name``, None if unset/empty; ValueError otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _env_float(name: str) -> float:
    """Non-negative float from env ``name`` (0 if unset/empty); ValueError otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


_record_lock = threading.Lock()


def _json_default(value: Any) -> Any:
    """JSON form of values json cannot encode natively."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def record_call(arguments: dict[str, Any], via: str) -> None:
    """Append one JSON line describing a StartLiveData call to ``$MANTID_DOUBLE_RECORD`` (if set).

    Keys: algorithm, via ("simpleapi" or "execute"), time (Unix s), utc, pid, arguments and its alias properties
    (the property values exactly as passed, before any validation; failed calls are recorded too).
    """
    target = os.environ.get("MANTID_DOUBLE_RECORD", "")
    if not target:
        return
    line = json.dumps(
        {
            "algorithm": "StartLiveData",
            "via": via,
            "time": time.time(),
            "utc": _now_iso(),
            "pid": os.getpid(),
            "arguments": arguments,
            "properties": arguments,
        },
        default=_json_default,
        sort_keys=True,
    )
    with _record_lock, open(target, "a", encoding="utf-8") as stream:
        stream.write(line + "\n")


# ---------------------------------------------------------------------------------------------------------------
# settings shared by LoadLiveData / MonitorLiveData


@dataclass(frozen=True)
class Step:
    """A processing step: an algorithm name, inline script code, or a script file (at most one is set)."""

    label: str
    algorithm: str = ""
    script: str = ""
    filename: str = ""

    @property
    def active(self) -> bool:
        """Whether there is anything to run."""
        return bool(self.algorithm.strip() or self.script.strip() or self.filename)


@dataclass(frozen=True)
class Settings:
    """Everything one live-data session needs, frozen at StartLiveData.execute()."""

    instrument: str
    listener_class: str
    address: str
    output: str
    accumulation: str
    accumulation_method: str
    run_transition: str
    proc: Step
    post: Step
    update_every: float
    spectra: tuple[int, ...]
    end_run_after: int | None
    fail_after: int | None
    cancel_delay: float


class Listener:
    """Synthetic listener: every extractData() gives a fresh chunk of ones (spectra x 20 bins)."""

    def __init__(self, listener_class: str, spectra: tuple[int, ...], end_run_after: int | None) -> None:
        self.listener_class = listener_class
        self.spectra = len(spectra) if spectra else CHUNK_SPECTRA
        self.end_run_after = end_run_after
        self.extracted = 0

    def buffersEvents(self) -> bool:
        """False for histogram listeners."""
        return self.listener_class not in HISTOGRAM_LISTENERS

    def supportsHistory(self) -> bool:
        """Whether the listener can replay from the start of the run."""
        return self.listener_class in HISTORY_LISTENERS

    def extractData(self) -> Workspace:
        """The data buffered since the last call."""
        self.extracted += 1
        return Workspace(np.ones((self.spectra, CHUNK_BINS)), CHUNK_TOF_EDGES)

    def runStatus(self) -> int:
        """EndRun right after every N-th chunk (``MANTID_DOUBLE_END_RUN_AFTER``), else Running."""
        n = self.end_run_after
        if n and self.extracted and self.extracted % n == 0:
            return END_RUN
        return RUNNING

    def runNumber(self) -> int:
        """Run of the last extracted chunk: 1, then +1 after each EndRun."""
        n = self.end_run_after
        if not n or not self.extracted:
            return 1
        return (self.extracted - 1) // n + 1


# ---------------------------------------------------------------------------------------------------------------
# one LoadLiveData cycle


def run_step(step: Step, input_ws: Workspace, output_name: str) -> Workspace | None:
    """Run ``step`` (RunPythonScript with ``Code`` or ``Filename``) on ``input_ws``; its output workspace, or None
    when the script left ``output`` None.

    Raises:
        RuntimeError: the script raised (Mantid's PythonException text), ``output`` is neither a Workspace nor an
            existing name, the file cannot be opened, or an algorithm was requested (the double has none).
    """
    if step.algorithm.strip():
        raise RuntimeError(
            f"Error processing the workspace using {step.algorithm.strip()}. See log for details. "
            "(the mantid test double has no processing algorithms; use a script)"
        )
    if step.filename:
        try:
            code = Path(step.filename).read_text(encoding="utf-8")
        except OSError:
            raise RuntimeError(f"Unable to open file {step.filename}") from None
    else:
        code = step.script
    return _algorithms.run_python_script(code, input_ws, output_name)


def _process(settings: Settings, workspace: Workspace, post: bool, logging: bool) -> Workspace:
    """LoadLiveData::runProcessing: put ``workspace`` into the ADS under the step's input name, run the step, and
    take its output, or (output None) the workspace the ADS holds under the input name (chunk step) or under
    OutputWorkspace (post-processing step). Logs as LoadLiveData does when ``logging`` is on."""
    step = settings.post if post else settings.proc
    if not step.active:
        return workspace
    label = "post-processing" if post else "chunk processing"
    if logging:
        emit("notice", f"Performing {label} using RunPythonScript")
    input_name = settings.accumulation if post else ANONYMOUS_PREFIX + settings.output
    output_name = settings.output if post else input_name
    mtd.addOrReplace(input_name, workspace)
    try:
        result = run_step(step, workspace, output_name)
        if result is None:
            result = mtd.retrieve(output_name)
    except (RuntimeError, KeyError):
        if logging:
            emit("error", "While post processing:" if post else "While processing chunk:")
        raise
    if not post:
        mtd.remove(input_name)  # the chunk is no longer needed in the ADS (kept when the step failed, as in Mantid)
    return result


def _accumulate(existing: Workspace | None, chunk: Workspace, method: str) -> Workspace:
    """Add, Replace or Append ``chunk`` to ``existing`` (in place for Add/Append, as Plus/AppendSpectra do)."""
    if existing is None or method == "Replace":
        return chunk
    if method == "Add":
        if existing.counts.shape != chunk.counts.shape:
            raise RuntimeError(
                f"Plus: the chunk {chunk.counts.shape} and the accumulation {existing.counts.shape} are not compatible"
            )
        if not np.array_equal(existing.x, chunk.x):
            raise RuntimeError("Plus: the bin boundaries of the chunk and the accumulation differ")
        existing.counts = existing.counts + chunk.counts
        return existing
    if existing.blocksize() != chunk.blocksize():
        raise RuntimeError(f"AppendSpectra: bin counts differ ({existing.blocksize()} vs {chunk.blocksize()})")
    existing.counts = np.vstack([existing.counts, chunk.counts])
    return existing


def load_live_data(settings: Settings, listener: Listener, method: str, logging: bool = True) -> str:
    """One LoadLiveData: extract, process, accumulate, post-process, store in the ADS. Returns LastTimeStamp.

    ``logging`` False as in MonitorLiveData's cycles (Mantid runs that LoadLiveData with logging off).
    """
    chunk = listener.extractData()
    stamp = _now_iso()
    processed = _process(settings, chunk, post=False, logging=logging)
    post = settings.post.active
    accumulation_name = settings.accumulation if post else settings.output
    existing = mtd.retrieve(accumulation_name) if mtd.doesExist(accumulation_name) else None
    accumulation = _accumulate(existing, processed, method)
    mtd.addOrReplace(accumulation_name, accumulation)
    if post:
        output = _process(settings, accumulation, post=True, logging=logging)
        mtd.addOrReplace(accumulation_name, accumulation)  # both outputs are stored, whatever the script renamed
        mtd.addOrReplace(settings.output, output)
    return stamp


# ---------------------------------------------------------------------------------------------------------------
# algorithms


def _effective_listener(algorithm: Algorithm) -> str:
    """Listener class chosen by Listener, else by Instrument/Connection ("" if undecidable)."""
    listener = algorithm.getProperty("Listener").raw
    if listener:
        return listener
    instrument = algorithm.getProperty("Instrument").raw
    if not instrument:
        return ""
    info = kernel.ConfigService.getInstrument(instrument)
    connection = algorithm.getProperty("Connection").raw
    if connection and connection not in info.connectionNames():
        return ""
    return info.liveListener(connection)


def _instrument_choices() -> list[str]:
    """Instruments of the current default facility that have live data (StartLiveData's Instrument list)."""
    return [i.name() for i in kernel.ConfigService.getFacility().instruments() if i.liveDataAddress()]


class LiveDataAlgorithm(Algorithm):
    """Common properties and validation of StartLiveData / MonitorLiveData."""

    def _allowed_for(self, spec: PropertySpec) -> tuple[str, ...] | None:
        if spec.name == "Instrument":
            return ("", *_instrument_choices())
        return spec.allowed

    def step(self, post: bool) -> Step:
        """The (post-)processing step configured on this algorithm."""
        prefix = "Post" if post else ""
        return Step(
            label=f"{prefix}ProcessingScript",
            algorithm=self.getProperty(f"{prefix}ProcessingAlgorithm").raw,
            script=self.getProperty(f"{prefix}ProcessingScript").raw,
            filename=self.getProperty(f"{prefix}ProcessingScriptFilename").raw,
        )

    def validate_inputs(self) -> dict[str, str]:
        """Mantid's LiveDataAlgorithm::validateInputs: property name -> problem."""
        out: dict[str, str] = {}

        def add(key: str, message: str) -> None:
            out[key] = f"{out[key]} {message}" if key in out else message

        instrument = self.getProperty("Instrument").raw
        if not instrument:
            add("Instrument", "Select a value (the instrument to monitor is required).")
        else:
            info = kernel.ConfigService.getInstrument(instrument)
            connection = self.getProperty("Connection").raw
            if connection and connection not in info.connectionNames():
                add("Connection", f"{instrument} has no live-data connection {connection!r}: {info.connectionNames()}")
        listener = _effective_listener(self)
        if listener in HISTOGRAM_LISTENERS and self.getProperty("AccumulationMethod").raw == "Add":
            add(
                "AccumulationMethod",
                f"The {instrument} live stream produces histograms. Add is not a sensible accumulation method.",
            )
        output = self.getProperty("OutputWorkspace").raw
        accumulation = self.getProperty("AccumulationWorkspace").raw
        if not output:
            add("OutputWorkspace", "Must specify the OutputWorkspace.")
        for post in (False, True):
            step = self.step(post)
            given = sum(bool(v.strip()) for v in (step.algorithm, step.script)) + bool(step.filename)
            if given > 1:
                prefix = "Post" if post else ""
                add(f"{prefix}ProcessingAlgorithm", f"Only specify one {prefix.lower()}processing method.")
        if self.step(True).active:
            if not accumulation:
                add(
                    "AccumulationWorkspace",
                    "Must specify the AccumulationWorkspace parameter if using PostProcessing.",
                )
            elif accumulation == output:
                add(
                    "AccumulationWorkspace",
                    "The AccumulationWorkspace must be different than the OutputWorkspace, when using PostProcessing.",
                )
        for other in AlgorithmManager.runningInstancesOf("MonitorLiveData"):
            if other is self:
                continue
            if accumulation and other.getProperty("AccumulationWorkspace").raw == accumulation:
                add(
                    "AccumulationWorkspace",
                    "Another MonitorLiveData thread is running with the same AccumulationWorkspace. "
                    "Please specify a different AccumulationWorkspace name.",
                )
            if output and other.getProperty("OutputWorkspace").raw == output:
                add(
                    "OutputWorkspace",
                    "Another MonitorLiveData thread is running with the same OutputWorkspace. "
                    "Please specify a different OutputWorkspace name.",
                )
        return out


class _Cancelled(Exception):
    """Raised at an interruption point after cancel()."""


class MonitorLiveDataAlgorithm(LiveDataAlgorithm):
    """The background algorithm: a thread that runs LoadLiveData every UpdateEvery seconds until cancelled."""

    NAME = "MonitorLiveData"

    def __init__(self) -> None:
        super().__init__()
        self._settings: Settings | None = None
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self.double_error: BaseException | None = None
        """Double-only: the exception that ended the thread (None if none)."""
        self.double_cycles = 0
        """Double-only: LoadLiveData cycles completed by this MonitorLiveData."""

    def _specs(self) -> list[PropertySpec]:
        return [_UPDATE_EVERY, *_COMMON]

    def launch(self, source: Algorithm, settings: Settings, listener: Listener) -> None:
        """Copy ``source``'s property values and start the thread (StartLiveData's executeAsync)."""
        for prop in self.getProperties():
            if source.existsProperty(prop.name):
                prop.set_internal(source.getProperty(prop.name).raw)
        self._settings = settings
        self._listener = listener
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"MonitorLiveData[{settings.output}]", daemon=True)
        self._thread.start()

    def double_join(self, timeout: float | None = None) -> bool:
        """Double-only: wait for the thread to end; True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self._running

    def _interruption_point(self) -> None:
        if self._cancel_requested.is_set():
            assert self._settings is not None
            if self._settings.cancel_delay > 0:
                time.sleep(self._settings.cancel_delay)
            raise _Cancelled

    def _run(self) -> None:
        settings, listener = self._settings, self._listener
        assert settings is not None
        assert listener is not None
        emit("notice", "MonitorLiveData started")
        try:
            self._loop(settings, listener)
            self._executed = True
            emit("notice", "MonitorLiveData successful")
        except _Cancelled:
            emit("warning", "MonitorLiveData: Execution cancelled by user.")
        except Exception as exc:  # noqa: BLE001 - any error ends MonitorLiveData (logged), as in Mantid
            self.double_error = exc
            emit("error", f"Error in execution of algorithm MonitorLiveData: {exc}")
        finally:
            self._running = False

    def _loop(self, settings: Settings, listener: Listener) -> None:
        last = time.monotonic()
        run_number = previous_run = 0
        chunk = 0
        next_method = settings.accumulation_method
        while True:
            self._interruption_point()
            self._cancel_requested.wait(TICK)
            self._interruption_point()
            now = time.monotonic()
            if now - last <= settings.update_every:
                continue
            last = now
            emit("notice", f"Loading live data chunk {chunk} at {time.strftime('%H:%M:%S')}")
            if settings.fail_after is not None and self.double_cycles + 1 == settings.fail_after:
                raise RuntimeError("Lost connection to the DAS")
            stamp = load_live_data(settings, listener, next_method, logging=False)
            self.getProperty("LastTimeStamp").set_internal(stamp)
            self.double_cycles += 1
            next_method = settings.accumulation_method
            if run_number == 0:
                run_number = listener.runNumber()
            status = listener.runStatus()
            if status == END_RUN:
                previous_run = run_number
            if status in (BEGIN_RUN, END_RUN):
                message = f"Run #{run_number} ended. " if run_number else "Run ended. "
                if settings.run_transition == "Stop":
                    emit("notice", message + "Stopping live data monitoring.")
                    return
                next_method = "Replace"
                if settings.run_transition == "Restart":
                    emit("notice", message + "Clearing existing workspace.")
                else:
                    emit("notice", message + "Renaming existing workspace.")
                    if status == END_RUN:
                        postfix = f"_{run_number}"
                    else:
                        postfix = f"_{previous_run or ''}_post"
                    if mtd.doesExist(settings.output):
                        mtd.addOrReplace(settings.output + postfix, mtd.retrieve(settings.output).clone())
                run_number = 0
            chunk += 1


_ADDRESS = re.compile(r"^[^\s:]+:\d{1,5}$")


class StartLiveDataAlgorithm(LiveDataAlgorithm):
    """StartLiveData: validate, connect, run one chunk synchronously, launch MonitorLiveData."""

    NAME = "StartLiveData"

    def __init__(self) -> None:
        super().__init__()
        self._recorded = False

    def _specs(self) -> list[PropertySpec]:
        return [*_START_ONLY, *_COMMON, _MONITOR_HANDLE]

    def setProperty(self, name: str, value: Any) -> None:
        """Set ``name``; setting Instrument/Connection/Listener redeclares the listener's own properties."""
        if name == "Connection":
            self._check_connection(value)
        try:
            super().setProperty(name, value)
        except ValueError as exc:
            if name == "Instrument" and isinstance(value, str):
                raise ValueError(f"{exc}{self._instrument_hint(value)}") from None
            raise
        if name in {"Instrument", "Listener", "Connection"}:
            self._update_listener_properties()

    def _check_connection(self, value: Any) -> None:
        """A Connection must be one of the (already set) instrument's connections."""
        instrument = self.getProperty("Instrument").raw
        if isinstance(value, str) and value and instrument:
            names = kernel.ConfigService.getInstrument(instrument).connectionNames()
            if value not in names:
                raise ValueError(
                    f'Invalid value for property Connection (string) from string "{value}": '
                    f"{instrument} has the live-data connections {names}"
                )

    def _update_listener_properties(self) -> None:
        for name in [n for n, p in self._props.items() if p.group == LISTENER_GROUP]:
            del self._props[name]
        listener = _effective_listener(self)
        for spec in LISTENER_PROPERTIES.get(listener, ()):
            self._props[spec.name] = Property(spec)

    def _instrument_hint(self, value: str) -> str:
        try:
            info = kernel.ConfigService.getInstrument(value)
        except RuntimeError:
            return f" ({value!r} is not an instrument with live data in any facility of the double)"
        if info.facility().name() != kernel.ConfigService.getFacility().name():
            return (
                f" ({info.name()} belongs to facility {info.facility().name()}, not to the default facility "
                f"{kernel.ConfigService.getFacility().name()}: call ConfigService.setFacility first)"
            )
        return f" (use the full instrument name {info.name()!r})"

    def _recorded_arguments(self) -> dict[str, Any]:
        return {p.name: p.raw for p in self._props.values() if not p.isDefault and p.direction == "Input"}

    def execute(self) -> bool:
        """Run StartLiveData (returns True; raises RuntimeError on failure)."""
        self._require_initialized()
        if not self._recorded:
            record_call(self._recorded_arguments(), via="execute")
        self._recorded = False
        self._executed = False
        self._running = True
        started = time.monotonic()
        emit("notice", "StartLiveData started")
        try:
            self._exec()
        except Exception as exc:
            emit("error", f"Error in execution of algorithm StartLiveData: {exc}")
            if isinstance(exc, RuntimeError):
                raise
            raise RuntimeError(str(exc)) from exc
        finally:
            self._running = False
        self._executed = True
        emit("notice", f"StartLiveData successful, Duration {time.monotonic() - started:.2f} seconds")
        return True

    def _settings(self) -> Settings:
        get = self.getProperty
        instrument = kernel.ConfigService.getInstrument(get("Instrument").raw)
        connection = get("Connection").raw
        listener = get("Listener").raw or instrument.liveListener(connection)
        spectra = tuple(get("SpectraList").raw) if self.existsProperty("SpectraList") else ()
        return Settings(
            instrument=instrument.name(),
            listener_class=listener,
            address=get("Address").raw or instrument.liveDataAddress(connection),
            output=get("OutputWorkspace").raw,
            accumulation=get("AccumulationWorkspace").raw,
            accumulation_method=get("AccumulationMethod").raw,
            run_transition=get("RunTransitionBehavior").raw,
            proc=self.step(post=False),
            post=self.step(post=True),
            update_every=get("UpdateEvery").raw,
            spectra=spectra,
            end_run_after=_env_int("MANTID_DOUBLE_END_RUN_AFTER"),
            fail_after=_env_int("MANTID_DOUBLE_FAIL_AFTER"),
            cancel_delay=_env_float("MANTID_DOUBLE_CANCEL_DELAY"),
        )

    def _check_start_time(self) -> None:
        get = self.getProperty
        checked = [n for n in ("FromNow", "FromStartOfRun", "FromTime") if get(n).raw]
        if len(checked) != 1:
            raise RuntimeError("Please check exactly one of FromNow, FromStartOfRun, FromTime.")
        if not get("FromTime").raw:
            return
        text = get("StartTime").raw.strip()
        if not text:
            raise RuntimeError("FromTime requires StartTime (ISO8601 UTC, e.g. 2010-09-14T04:20:12.95)")
        try:
            start = datetime.fromisoformat(text)
        except ValueError:
            raise RuntimeError(f"Error interpreting string '{text}' as a date/time.") from None
        if start.tzinfo is not None:
            start = start.astimezone(UTC).replace(tzinfo=None)
        if start > datetime.now(UTC).replace(tzinfo=None):
            emit("error", "Requested start time in the future. Resetting to current time.")

    def _exec(self) -> None:
        problems = self.validate_inputs()
        if problems:
            details = "\n".join(f"  {name}: {text}" for name, text in problems.items())
            raise RuntimeError(f"Some invalid Properties found:\n{details}")
        self._check_start_time()
        settings = self._settings()
        if settings.address and not _ADDRESS.match(settings.address):
            raise RuntimeError(
                f"Unable to connect listener [{settings.listener_class}] to [{settings.address}]: "
                "invalid address (expected host:port)"
            )
        if os.environ.get("MANTID_DOUBLE_CONNECT_FAIL", "").strip() not in {"", "0"}:
            raise RuntimeError(
                f"Unable to connect listener [{settings.listener_class}] to [{settings.address}]: Connection refused"
            )
        listener = Listener(settings.listener_class, settings.spectra, settings.end_run_after)
        if not self.getProperty("FromNow").raw and listener.buffersEvents() and not listener.supportsHistory():
            emit(
                "error",
                "Requested start time is in the past, but this instrument does not support historical data. "
                "The effective start time is therefore 'now'.",
            )
        stamp = load_live_data(settings, listener, "Replace")
        self.getProperty("LastTimeStamp").set_internal(stamp)
        if settings.update_every > 0:
            monitor = MonitorLiveDataAlgorithm()
            monitor.initialize()
            AlgorithmManager.register(monitor)
            monitor.launch(self, settings, listener)
            self.getProperty("MonitorLiveData").set_internal(monitor)


CREATABLE: dict[str, type[Algorithm]] = {"StartLiveData": StartLiveDataAlgorithm, **_algorithms.ALGORITHMS}
"""Algorithms AlgorithmManager.create()/createUnmanaged() can make."""
