"""Test double of ``mantid.api``: the AnalysisDataService (``mtd``), workspaces, properties and AlgorithmManager."""

from __future__ import annotations

import random
import string
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class Workspace:
    """A minimal Workspace2D: ``counts`` is a float array of spectra x bins, ``x`` the bin edges shared by all
    spectra (bins + 1 values, increasing; time of flight in µs for the listeners' chunks).

    Raises:
        ValueError: (constructor) counts not 2-D, or edges of the wrong length or not increasing.
    """

    def __init__(self, counts: Any, x: Any = None) -> None:
        array = np.array(counts, dtype=float)
        if array.ndim != 2:
            raise ValueError(f"Workspace counts must be 2-D (spectra x bins), got shape {array.shape}")
        edges = np.arange(array.shape[1] + 1, dtype=float) if x is None else np.array(x, dtype=float)
        if edges.shape != (array.shape[1] + 1,):
            raise ValueError(f"Workspace bin edges must be {array.shape[1] + 1} values, got shape {edges.shape}")
        if edges.size > 1 and not np.all(np.diff(edges) > 0):
            raise ValueError("Workspace bin edges must increase")
        self.counts: np.ndarray = array
        self.x: np.ndarray = edges
        self._name = ""

    def name(self) -> str:
        """The name under which the workspace was last stored in the ADS ("" if never)."""
        return self._name

    def getNumberHistograms(self) -> int:
        """Number of spectra."""
        return int(self.counts.shape[0])

    def blocksize(self) -> int:
        """Number of bins per spectrum."""
        return int(self.counts.shape[1])

    def readY(self, index: int) -> np.ndarray:
        """Counts of spectrum ``index`` (a copy)."""
        return self.counts[index].copy()

    def readX(self, index: int) -> np.ndarray:
        """Bin edges of spectrum ``index`` (a copy; all spectra share them)."""
        if not 0 <= index < self.getNumberHistograms():
            raise IndexError(f"workspace index {index} out of range 0..{self.getNumberHistograms() - 1}")
        return self.x.copy()

    def clone(self) -> Workspace:
        """An unnamed deep copy."""
        return Workspace(self.counts, self.x)

    def id(self) -> str:
        """Mantid's workspace type id."""
        return "Workspace2D"

    def __repr__(self) -> str:
        return f"Workspace(name={self._name!r}, shape={self.counts.shape})"


class AnalysisDataServiceImpl:
    """The ADS: named workspaces, shared by all threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._objects: dict[str, Workspace] = {}

    @staticmethod
    def _check_name(name: object) -> str:
        if not isinstance(name, str):
            raise TypeError(f"workspace name must be a str, not {type(name).__name__}")
        if not name.strip():
            raise RuntimeError("Add Data Object with empty name")
        return name

    def addOrReplace(self, name: str, workspace: Workspace) -> None:
        """Store ``workspace`` as ``name``, replacing any workspace of that name."""
        self._check_name(name)
        if not isinstance(workspace, Workspace):
            raise TypeError(f"addOrReplace() needs a Workspace, not {type(workspace).__name__}")
        with self._lock:
            workspace._name = name
            self._objects[name] = workspace

    def add(self, name: str, workspace: Workspace) -> None:
        """Store ``workspace`` as ``name``; RuntimeError if the name is taken."""
        with self._lock:
            if self._check_name(name) in self._objects:
                raise RuntimeError(f"AnalysisDataService already contains {name!r}")
            self.addOrReplace(name, workspace)

    def retrieve(self, name: str) -> Workspace:
        """The workspace called ``name``; KeyError if absent."""
        if not isinstance(name, str):
            raise TypeError(f"workspace name must be a str, not {type(name).__name__}")
        with self._lock:
            try:
                return self._objects[name]
            except KeyError:
                raise KeyError(f"'{name}' does not exist.") from None

    def __getitem__(self, name: str) -> Workspace:
        return self.retrieve(name)

    def doesExist(self, name: str) -> bool:
        """Whether a workspace called ``name`` exists."""
        if not isinstance(name, str):
            raise TypeError(f"workspace name must be a str, not {type(name).__name__}")
        with self._lock:
            return name in self._objects

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.doesExist(name)

    def getObjectNames(self) -> list[str]:
        """Sorted names of the visible workspaces (names starting with "__" are hidden, as in Mantid)."""
        with self._lock:
            return sorted(n for n in self._objects if not n.startswith("__"))

    def size(self) -> int:
        """Number of stored workspaces, hidden ones included."""
        with self._lock:
            return len(self._objects)

    def __len__(self) -> int:
        return self.size()

    def remove(self, name: str) -> None:
        """Remove ``name`` (no error if absent, as in Mantid)."""
        if not isinstance(name, str):
            raise TypeError(f"workspace name must be a str, not {type(name).__name__}")
        with self._lock:
            self._objects.pop(name, None)

    def clear(self) -> None:
        """Remove every workspace."""
        with self._lock:
            self._objects.clear()

    def unique_name(self, n: int = 5, prefix: str = "", suffix: str = "") -> str:
        """``prefix`` + ``n`` random lower-case letters + ``suffix``, not an existing name."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive int, not {n!r}")
        with self._lock:
            while True:
                name = prefix + "".join(random.choices(string.ascii_lowercase, k=n)) + suffix
                if name not in self._objects:
                    return name

    def unique_hidden_name(self) -> str:
        """A unique name starting with "__"."""
        return self.unique_name(n=9, prefix="__")


AnalysisDataService = AnalysisDataServiceImpl()
"""The ADS singleton."""

mtd = AnalysisDataService


class UnknownPropertyError(ValueError):
    """A property name the algorithm does not have."""


Kind = str
"""Property kinds: bool, float, int, str, file, int_list, float_list, workspace (output name), input_workspace
(a Workspace or the name of one in the ADS), output, algorithm."""


@dataclass(frozen=True)
class PropertySpec:
    """Declaration of one algorithm property."""

    name: str
    kind: Kind
    default: Any
    allowed: tuple[str, ...] | None = None
    direction: str = "Input"
    group: str = ""
    item_minimum: int | None = None
    doc: str = ""


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def convert_value(spec: PropertySpec, value: Any, allowed: Sequence[str] | None = None) -> Any:
    """``value`` checked and converted for ``spec`` (TypeError for a wrong type, ValueError for a bad value)."""
    name = spec.name
    if spec.kind == "bool":
        if not isinstance(value, bool | np.bool_):
            raise TypeError(f"Property {name} is a bool; got {type(value).__name__} {value!r}")
        return bool(value)
    if spec.kind == "float":
        if not (_is_int(value) or isinstance(value, float | np.floating)):
            raise TypeError(f"Property {name} is a number (double); got {type(value).__name__} {value!r}")
        result = float(value)
        if not np.isfinite(result):
            raise ValueError(f"Property {name} must be finite, got {value!r}")
        return result
    if spec.kind == "int":
        if not _is_int(value):
            raise TypeError(f"Property {name} is an int; got {type(value).__name__} {value!r}")
        return int(value)
    if spec.kind in {"str", "workspace"}:
        if not isinstance(value, str):
            raise TypeError(f"Property {name} is a string; got {type(value).__name__} {value!r}")
        choices = allowed if allowed is not None else spec.allowed
        if choices is not None and value not in choices:
            raise ValueError(
                f'Invalid value for property {name} (string) from string "{value}": '
                f'The value "{value}" is not in the list of allowed values {list(choices)}'
            )
        return value
    if spec.kind == "file":
        if not isinstance(value, str):
            raise TypeError(f"Property {name} is a file name (str); got {type(value).__name__} {value!r}")
        text = value
        if not text:
            return ""
        path = Path(text)
        if not path.is_file():
            raise ValueError(f'Invalid value for property {name}: File "{text}" not found')
        return str(path.absolute())
    if spec.kind == "input_workspace":
        return _input_workspace(name, value)
    if spec.kind == "float_list":
        return _float_list(name, value)
    if spec.kind == "int_list":
        if not isinstance(value, list | tuple | np.ndarray):
            raise TypeError(f"Property {name} is a list of ints; got {type(value).__name__} {value!r}")
        items = list(value)
        if not all(_is_int(item) for item in items):
            raise TypeError(f"Property {name} is a list of ints; got {value!r}")
        result_list = [int(item) for item in items]
        if spec.item_minimum is not None and any(item < spec.item_minimum for item in result_list):
            raise ValueError(f"Property {name}: every value must be >= {spec.item_minimum}, got {result_list}")
        return result_list
    raise ValueError(f"Property {name} is an output property and cannot be set")


def _input_workspace(name: str, value: Any) -> Workspace:
    """The Workspace ``value`` is or names (Mantid resolves a name in the ADS when the property is set)."""
    if isinstance(value, Workspace):
        return value
    if not isinstance(value, str):
        raise TypeError(f"Property {name} is a workspace or a workspace name; got {type(value).__name__} {value!r}")
    if not mtd.doesExist(value):
        raise ValueError(
            f'Invalid value for property {name} (Workspace) from string "{value}": '
            f'Workspace "{value}" was not found in the Analysis Data Service'
        )
    return mtd.retrieve(value)


def _float_list(name: str, value: Any) -> list[float]:
    """An array of doubles from a list of numbers or Mantid's comma-separated string form."""
    if isinstance(value, str):
        try:
            items: list[Any] = [float(item) for item in value.split(",")] if value.strip() else []
        except ValueError:
            raise ValueError(
                f'Invalid value for property {name} (dbl list) from string "{value}": not a comma-separated list '
                "of numbers"
            ) from None
    elif isinstance(value, list | tuple | np.ndarray):
        items = list(value)
        if not all(_is_int(item) or isinstance(item, float | np.floating) for item in items):
            raise TypeError(f"Property {name} is a list of numbers; got {value!r}")
    else:
        raise TypeError(f"Property {name} is a list of numbers or a string; got {type(value).__name__} {value!r}")
    result = [float(item) for item in items]
    if not all(np.isfinite(result)):
        raise ValueError(f"Property {name}: every value must be finite, got {result}")
    return result


class Property:
    """An algorithm property: ``name``, ``value``, ``valueAsStr``, ``allowedValues``, ``isDefault``."""

    def __init__(self, spec: PropertySpec, allowed: Sequence[str] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.direction = spec.direction
        self.group = spec.group
        self.documentation = spec.doc
        self._allowed = tuple(allowed) if allowed is not None else spec.allowed
        self._value: Any = spec.default
        self._set = False

    @property
    def allowedValues(self) -> list[str]:
        """The allowed values of a list-validated string property, else []."""
        return list(self._allowed) if self._allowed is not None else []

    def set(self, value: Any) -> None:
        """Check, convert and store ``value``."""
        self._value = convert_value(self.spec, value, self._allowed)
        self._set = True

    def set_internal(self, value: Any) -> None:
        """Store ``value`` without checks (the algorithm's own outputs)."""
        self._value = value
        self._set = True

    @property
    def raw(self) -> Any:
        """The stored value (the name for workspace properties)."""
        return self._value

    @property
    def value(self) -> Any:
        """The value; for workspace properties the workspace from the ADS (None if absent)."""
        if self.spec.kind == "workspace":
            return mtd.retrieve(self._value) if self._value and mtd.doesExist(self._value) else None
        return self._value

    @property
    def valueAsStr(self) -> str:
        """The value as Mantid's string form."""
        value = self._value
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        if value is None:
            return ""
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, Workspace | Algorithm):
            return value.name()
        return str(value)

    @property
    def isDefault(self) -> bool:
        """Whether the value was never set."""
        return not self._set

    def __repr__(self) -> str:
        return f"Property({self.name!r}, {self._value!r})"


class Algorithm:
    """Base of the double's algorithms: properties, lifecycle flags and cancellation."""

    NAME = ""

    def __init__(self) -> None:
        self._props: dict[str, Property] = {}
        self._initialized = False
        self._running = False
        self._executed = False
        self._cancel_requested = threading.Event()
        self._lock = threading.RLock()

    def name(self) -> str:
        """Algorithm name."""
        return self.NAME

    def version(self) -> int:
        """Algorithm version."""
        return 1

    def _specs(self) -> list[PropertySpec]:
        """The declared properties."""
        return []

    def _allowed_for(self, spec: PropertySpec) -> Sequence[str] | None:
        """Allowed values computed at initialize() (default: the spec's)."""
        return spec.allowed

    def initialize(self) -> None:
        """Declare the properties (required before any property access)."""
        self._props = {spec.name: Property(spec, self._allowed_for(spec)) for spec in self._specs()}
        self._initialized = True

    def isInitialized(self) -> bool:
        """Whether initialize() was called."""
        return self._initialized

    def _require_initialized(self) -> None:
        if not self._initialized:
            raise RuntimeError(f"Algorithm {self.NAME} is not initialized: call initialize() first")

    def existsProperty(self, name: str) -> bool:
        """Whether the algorithm has a property ``name``."""
        return name in self._props

    def getProperties(self) -> list[Property]:
        """All properties, in declaration order."""
        self._require_initialized()
        return list(self._props.values())

    def _property(self, name: str) -> Property:
        self._require_initialized()
        if not isinstance(name, str):
            raise TypeError(f"property name must be a str, not {type(name).__name__}")
        try:
            return self._props[name]
        except KeyError:
            raise UnknownPropertyError(
                f"Unknown property '{name}' for algorithm {self.NAME} (search object {name})"
            ) from None

    def getProperty(self, name: str) -> Property:
        """The property ``name``; ValueError (UnknownPropertyError) if the algorithm has none."""
        return self._property(name)

    def getPropertyValue(self, name: str) -> str:
        """The value of ``name`` as a string."""
        return self._property(name).valueAsStr

    def setProperty(self, name: str, value: Any) -> None:
        """Set ``name`` to ``value`` (strict: unknown name -> ValueError, wrong type -> TypeError)."""
        prop = self._property(name)
        if prop.direction == "Output" and prop.spec.kind != "workspace":
            raise ValueError(f"Property {name} of {self.NAME} is an output property and cannot be set")
        prop.set(value)

    def isRunning(self) -> bool:
        """Whether the algorithm is executing."""
        return self._running

    def isExecuted(self) -> bool:
        """Whether the last execution finished successfully."""
        return self._executed

    def cancel(self) -> None:
        """Ask the algorithm to stop at its next interruption point."""
        self._cancel_requested.set()

    def __repr__(self) -> str:
        return f"{self.NAME}(running={self._running}, executed={self._executed})"


class PythonAlgorithm(Algorithm):
    """Base class of algorithms written in Python (RunPythonScript wraps every script in one)."""

    def PyInit(self) -> None:
        """Declare properties (none by default)."""

    def PyExec(self) -> None:
        """The algorithm's work."""
        raise NotImplementedError


_SHUTDOWN_MESSAGE = "the engine must not call AlgorithmManager.shutdown(): it holds the GIL (upstream's hang)"


class AlgorithmManagerImpl:
    """Mantid's AlgorithmManager: creates algorithms and tracks the managed (and running) ones."""

    def __init__(self, retained: int = 100) -> None:
        self.retained = retained
        self._managed: list[Algorithm] = []
        self._lock = threading.RLock()

    @staticmethod
    def _factory(name: str) -> Callable[[], Algorithm]:
        from mantid import _livedata

        if not isinstance(name, str):
            raise TypeError(f"algorithm name must be a str, not {type(name).__name__}")
        try:
            return _livedata.CREATABLE[name]
        except KeyError:
            raise RuntimeError(
                f"Algorithm not registered {name} (the mantid test double only creates "
                f"{', '.join(_livedata.CREATABLE)})"
            ) from None

    def create(self, name: str, version: int = -1) -> Algorithm:
        """A new managed, initialized algorithm."""
        algorithm = self._factory(name)()
        algorithm.initialize()
        self.register(algorithm)
        return algorithm

    def createUnmanaged(self, name: str, version: int = -1) -> Algorithm:
        """A new unmanaged algorithm; call initialize() before use."""
        return self._factory(name)()

    def register(self, algorithm: Algorithm) -> None:
        """Add ``algorithm`` to the managed list (internal; StartLiveData registers MonitorLiveData)."""
        with self._lock:
            self._managed.append(algorithm)
            while len(self._managed) > self.retained:
                idle = next((a for a in self._managed if not a.isRunning()), None)
                if idle is None:
                    break
                self._managed.remove(idle)

    def runningInstancesOf(self, name: str) -> list[Algorithm]:
        """Managed algorithms called ``name`` that are running now."""
        with self._lock:
            return [a for a in self._managed if a.name() == name and a.isRunning()]

    def newestInstanceOf(self, name: str) -> Algorithm | None:
        """The most recently created managed algorithm called ``name`` (running or not), or None."""
        with self._lock:
            return next((a for a in reversed(self._managed) if a.name() == name), None)

    def size(self) -> int:
        """Number of managed algorithms."""
        with self._lock:
            return len(self._managed)

    def cancelAll(self) -> None:
        """Ask every running managed algorithm to stop (does not wait)."""
        with self._lock:
            running = [a for a in self._managed if a.isRunning()]
        for algorithm in running:
            algorithm.cancel()

    def shutdown(self) -> None:
        """Always raises: Mantid's shutdown() waits while holding the GIL, which hangs livereduce."""
        raise AssertionError(_SHUTDOWN_MESSAGE)


AlgorithmManager = AlgorithmManagerImpl()
"""The AlgorithmManager singleton."""
