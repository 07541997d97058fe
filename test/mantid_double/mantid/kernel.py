"""Test double of ``mantid.kernel``: ConfigService, InstrumentInfo, FacilityInfo and UsageService.

The instrument table is a small literal subset of Mantid's instrument/Facilities.xml (live-data connections only).
"""

from __future__ import annotations

import os
import string
import threading
from dataclasses import dataclass

LISTENERS: tuple[str, ...] = (
    "SNSLiveEventDataListener",
    "ISISHistoDataListener",
    "ISISLiveEventDataListener",
    "KafkaEventListener",
    "KafkaHistoListener",
    "FileEventDataListener",
    "FakeEventDataListener",
    "TOPAZLiveEventDataListener",
)
"""Listener class names registered in Mantid's LiveListenerFactory."""


@dataclass(frozen=True)
class LiveConnection:
    """One ``<connection>`` of an instrument's ``<livedata>`` element."""

    name: str
    address: str
    listener: str


_SNS = "SNSLiveEventDataListener"
_HISTO = "ISISHistoDataListener"
_ISIS_EVENT = "ISISLiveEventDataListener"

# facility -> (name, short name, connection); order as in Facilities.xml
_TABLE: dict[str, tuple[tuple[str, str, LiveConnection], ...]] = {
    "ISIS": (
        ("SANS2D", "SANS2D", LiveConnection("histo", "NDXSANS2D:6789", _HISTO)),
        ("SANS2D_EVENT", "SANS2D", LiveConnection("event", "NDXSANS2D:10000", _ISIS_EVENT)),
    ),
    "HFIR": (
        ("GPSANS", "CG2", LiveConnection("event", "cg2-daq1.ornl.gov:31415", _SNS)),
        ("BIOSANS", "CG3", LiveConnection("event", "cg3-daq1.ornl.gov:31415", _SNS)),
    ),
    "SNS": (
        ("NOMAD", "NOM", LiveConnection("event", "bl1b-daq1.sns.gov:31415", _SNS)),
        ("REF_M", "REF_M", LiveConnection("event", "bl4a-daq1.sns.gov:31415", _SNS)),
        ("EQ-SANS", "EQSANS", LiveConnection("event", "bl6-daq1.sns.gov:31415", _SNS)),
        ("POWGEN", "PG3", LiveConnection("event", "bl11a-daq1.sns.gov:31415", _SNS)),
    ),
    "TEST_LIVE": (
        ("ISIS_Histogram", "ISIS_Histogram", LiveConnection("histo", "127.0.0.1:56789", _HISTO)),
        ("ISIS_Event", "ISIS_Event", LiveConnection("event", "127.0.0.1:59876", _ISIS_EVENT)),
        ("ADARA_FileReader", "ADARA_FileReader", LiveConnection("file", "127.0.0.1:0", "FileEventDataListener")),
        ("ADARA_FakeEvent", "ADARA_FakeEvent", LiveConnection("fake", "127.0.0.1:0", "FakeEventDataListener")),
    ),
}

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _fold(name: str) -> str:
    """ASCII lower case (Mantid compares instrument names with ``boost::iequals``)."""
    return name.translate(_ASCII_LOWER)


class InstrumentInfo:
    """An instrument of Facilities.xml (only what live data needs)."""

    def __init__(self, name: str, short_name: str, facility: str, connections: tuple[LiveConnection, ...]) -> None:
        self._name = name
        self._short_name = short_name
        self._facility = facility
        self._connections = connections

    def name(self) -> str:
        """Full instrument name, e.g. "POWGEN"."""
        return self._name

    def shortName(self) -> str:
        """Short instrument name, e.g. "PG3"."""
        return self._short_name

    def facility(self) -> FacilityInfo:
        """The facility this instrument belongs to."""
        return _FACILITIES[self._facility]

    def _connection(self, connection: str = "") -> LiveConnection | None:
        """The named live-data connection, or the default (only) one for ""."""
        if not isinstance(connection, str):
            raise TypeError(f"connection must be a str, not {type(connection).__name__}")
        if not self._connections:
            return None
        if not connection:
            return self._connections[0]
        for candidate in self._connections:
            if candidate.name == connection:
                return candidate
        raise RuntimeError(f"Failed to find live data connection {connection!r} for instrument {self._name}")

    def connectionNames(self) -> list[str]:
        """Names of the live-data connections (double-only helper)."""
        return [c.name for c in self._connections]

    def liveListener(self, connection: str = "") -> str:
        """Listener class name of the (default) live-data connection, or "" when there is none."""
        found = self._connection(connection)
        return found.listener if found else ""

    def liveDataAddress(self, connection: str = "") -> str:
        """``host:port`` of the (default) live-data connection, or "" when there is none."""
        found = self._connection(connection)
        return found.address if found else ""

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"InstrumentInfo({self._name!r}, facility={self._facility!r})"


class FacilityInfo:
    """A facility of Facilities.xml."""

    def __init__(self, name: str, instruments: list[InstrumentInfo]) -> None:
        self._name = name
        self._instruments = instruments

    def name(self) -> str:
        """Facility name, e.g. "SNS"."""
        return self._name

    def instruments(self) -> list[InstrumentInfo]:
        """The facility's instruments in file order."""
        return list(self._instruments)

    def _find(self, name: str) -> InstrumentInfo | None:
        """Mantid's FacilityInfo::instrument: full names first, then short names, ignoring ASCII case."""
        folded = _fold(name)
        for info in self._instruments:
            if _fold(info.name()) == folded:
                return info
        for info in self._instruments:
            if _fold(info.shortName()) == folded:
                return info
        return None

    def instrument(self, name: str) -> InstrumentInfo:
        """The instrument called ``name`` (full or short name) in this facility.

        Raises:
            RuntimeError: not an instrument of this facility.
        """
        found = self._find(name)
        if found is None:
            raise RuntimeError(f"Instrument not found: {name!r} is not an instrument of facility {self._name}")
        return found

    def __repr__(self) -> str:
        return f"FacilityInfo({self._name!r})"


_FACILITIES: dict[str, FacilityInfo] = {
    facility: FacilityInfo(facility, [InstrumentInfo(n, s, facility, (c,)) for n, s, c in rows])
    for facility, rows in _TABLE.items()
}


def _check_str(what: str, value: object) -> str:
    """``value`` if it is a str, else TypeError."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


class ConfigServiceImpl:
    """Mantid's ConfigService singleton: ``default.facility``, ``default.instrument`` and plain string keys."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._values: dict[str, str] = {}
        facility = os.environ.get("MANTID_DOUBLE_DEFAULT_FACILITY", "") or "ISIS"
        self.setFacility(facility)
        self._values["default.instrument"] = os.environ.get("MANTID_DOUBLE_DEFAULT_INSTRUMENT", "")

    def getFacilityNames(self) -> list[str]:
        """Names of all facilities."""
        return list(_FACILITIES)

    def getFacilities(self) -> list[FacilityInfo]:
        """All facilities."""
        return list(_FACILITIES.values())

    def getFacility(self, name: str = "") -> FacilityInfo:
        """The named facility, or the default facility for "".

        Raises:
            RuntimeError: unknown facility.
        """
        _check_str("facility name", name)
        if not name:
            with self._lock:
                name = self._values["default.facility"]
        try:
            return _FACILITIES[name]
        except KeyError:
            raise RuntimeError(f"Failed to find facility {name!r} (facilities: {', '.join(_FACILITIES)})") from None

    def setFacility(self, name: str) -> None:
        """Make ``name`` the default facility.

        Raises:
            RuntimeError: unknown facility (the default is unchanged).
        """
        _check_str("facility name", name)
        if name not in _FACILITIES:
            raise RuntimeError(f"Failed to find facility {name!r} (facilities: {', '.join(_FACILITIES)})")
        with self._lock:
            self._values["default.facility"] = name

    def getInstrument(self, name: str = "") -> InstrumentInfo:
        """The instrument called ``name`` (full or short, any ASCII case), or the default instrument for "".

        The default facility is searched first, then every facility in Facilities.xml order.

        Raises:
            RuntimeError: no such instrument (also when "" and ``default.instrument`` is blank).
        """
        _check_str("instrument name", name)
        with self._lock:
            if not name:
                name = self._values.get("default.instrument", "")
            default = self._values["default.facility"]
        if name:
            found = _FACILITIES[default]._find(name)
            if found is not None:
                return found
            for facility in _FACILITIES.values():
                found = facility._find(name)
                if found is not None:
                    return found
        raise RuntimeError(f"Instrument not found: Failed to find instrument search object {name!r}")

    def getString(self, key: str) -> str:
        """The value of ``key``, "" when unset."""
        _check_str("key", key)
        with self._lock:
            return self._values.get(key, "")

    def setString(self, key: str, value: str) -> None:
        """Set ``key`` (``default.facility`` must name a known facility)."""
        _check_str("key", key)
        _check_str(f"value of {key}", value)
        if key == "default.facility":
            self.setFacility(value)
            return
        with self._lock:
            self._values[key] = value

    def hasProperty(self, key: str) -> bool:
        """Whether ``key`` has been set."""
        with self._lock:
            return _check_str("key", key) in self._values

    def __getitem__(self, key: str) -> str:
        return self.getString(key)

    def __setitem__(self, key: str, value: str) -> None:
        self.setString(key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.hasProperty(key)


ConfigService = ConfigServiceImpl()
"""The ConfigService singleton (``mantid.kernel.ConfigService``)."""

config = ConfigService


class UsageServiceImpl:
    """Mantid's UsageService singleton (only the application name)."""

    def __init__(self) -> None:
        self._application = "python"

    def setApplicationName(self, name: str) -> None:
        """Tag usage reports with ``name``."""
        self._application = _check_str("application name", name)

    def getApplicationName(self) -> str:
        """The application name ("python" until set)."""
        return self._application


UsageService = UsageServiceImpl()
"""The UsageService singleton."""
