"""Built-in instrument table: full name <-> short name, facility and default live-data connection, without Mantid.

Source: Mantid instrument/Facilities.xml (mantidproject/mantid, version of commit 0545e1eca6d2), facilities
``ISIS``, ``HFIR``, ``SNS``, ``TEST_LIVE`` and ``ESS``, every instrument, in file order. The name matching of
:func:`lookup` reproduces Mantid's ``ConfigService::getInstrument`` and ``FacilityInfo::instrument``
(Framework/Kernel/src/ConfigService.cpp, FacilityInfo.cpp, InstrumentInfo.cpp):

* the default facility is searched first, then every facility in file order;
* within one facility, the full names of all its instruments are tried first, then all the short names, and
  the first instrument in file order wins;
* names are compared ignoring ASCII case (``boost::iequals``) and are not stripped of white space;
* an instrument without a ``shortname`` attribute has its full name as short name;
* the default live-data connection is the ``<connection>`` named by the ``default`` attribute of the first
  ``<livedata>`` element, else the first ``<connection>`` of the instrument.

Without Mantid's configuration the default facility is unknown: Mantid then uses the empty placeholder facility
``" "``, which holds no real instrument, so the search goes straight through the facilities in file order.
Instruments of the facilities left out here (ILL, SINQ, MLZ, ANSTO, ...) are not known to :func:`lookup`.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InstrumentInfo:
    """One ``<instrument>`` of Mantid instrument/Facilities.xml.

    Attributes:
        name: full name, the ``name`` attribute, e.g. ``"POWGEN"``.
        short_name: the ``shortname`` attribute, e.g. ``"PG3"``; the full name when the attribute is absent.
        facility: the enclosing ``<facility>``: ``"SNS"``, ``"HFIR"``, ``"ISIS"``, ``"TEST_LIVE"``, ``"ESS"``,
            or ``""`` for an instrument unknown to this table.
        listener: the default live listener class of ``<livedata>``, e.g. ``"SNSLiveEventDataListener"``;
            None when the instrument has no live data.
        address: the default live-data address ``"host:port"``; None when the instrument has no live data.
    """

    name: str
    short_name: str
    facility: str
    listener: str | None
    address: str | None


FACILITIES: tuple[str, ...] = ("ISIS", "HFIR", "SNS", "TEST_LIVE", "ESS")
"""The facilities of :data:`INSTRUMENTS`, in the order of Mantid instrument/Facilities.xml (the search order)."""

_HISTO = "ISISHistoDataListener"
_ISIS_EVENT = "ISISLiveEventDataListener"
_KAFKA = "KafkaEventListener"
_SNS = "SNSLiveEventDataListener"

INSTRUMENTS: tuple[InstrumentInfo, ...] = (
    # ISIS
    InstrumentInfo("ALF", "ALF", "ISIS", _HISTO, "NDXALF:6789"),
    InstrumentInfo("ARGUS", "ARGUS", "ISIS", _HISTO, "NDXARGUS:6789"),
    InstrumentInfo("CHRONUS", "CHRONUS", "ISIS", _HISTO, "NDXCHRONUS:6789"),
    InstrumentInfo("CRISP", "CSP", "ISIS", _HISTO, "NDXCRISP:6789"),
    InstrumentInfo("EMU", "EMU", "ISIS", _HISTO, "NDXEMU:6789"),
    InstrumentInfo("ENGIN-X", "ENGINX", "ISIS", _HISTO, "NDXENGINX:6789"),
    InstrumentInfo("ENGIN-X_EVENT", "ENGINX", "ISIS", _ISIS_EVENT, "NDXENGINX:10000"),
    InstrumentInfo("GEM", "GEM", "ISIS", _HISTO, "NDXGEM:6789"),
    InstrumentInfo("HET", "HET", "ISIS", _HISTO, "NDXHET:6789"),
    InstrumentInfo("HIFI", "HIFI", "ISIS", _HISTO, "NDXHIFI:6789"),
    InstrumentInfo("HRPD", "HRP", "ISIS", _HISTO, "NDXHRPD:6789"),
    InstrumentInfo("IMAT", "IMAT", "ISIS", _HISTO, "NDXIMAT:6789"),
    InstrumentInfo("INES", "INS", "ISIS", _HISTO, "NDXINES:6789"),
    InstrumentInfo("INTER", "INTER", "ISIS", _HISTO, "NDXINTER:6789"),
    InstrumentInfo("IRIS", "IRS", "ISIS", _HISTO, "NDXIRIS:6789"),
    InstrumentInfo("LARMOR", "LARMOR", "ISIS", _HISTO, "NDXLARMOR:6789"),
    InstrumentInfo("LET", "LET", "ISIS", _HISTO, "NDXLET:6789"),
    InstrumentInfo("LET_EVENT", "LET", "ISIS", _ISIS_EVENT, "NDXLET:10000"),
    InstrumentInfo("LOQ", "LOQ", "ISIS", _HISTO, "NDXLOQ:6789"),
    InstrumentInfo("MAPS", "MAP", "ISIS", _HISTO, "NDXMAPS:6789"),
    InstrumentInfo("MARI", "MAR", "ISIS", _KAFKA, "livedata.isis.cclrc.ac.uk:9092"),  # 2nd: histo NDXMARI:6789
    InstrumentInfo("MERLIN", "MER", "ISIS", _HISTO, "NDXMERLIN:6789"),
    InstrumentInfo("MERLIN_EVENT", "MER", "ISIS", _ISIS_EVENT, "NDXMERLIN:10000"),
    InstrumentInfo("MUSR", "MUSR", "ISIS", _HISTO, "NDXMUSR:6789"),
    InstrumentInfo("MUT", "MUT", "ISIS", None, None),
    InstrumentInfo("NGEM", "NGEM", "ISIS", _HISTO, "NDXGEM:6789"),
    InstrumentInfo("NIMROD", "NIMROD", "ISIS", _HISTO, "NDXNIMROD:6789"),
    InstrumentInfo("OFFSPEC", "OFFSPEC", "ISIS", _HISTO, "NDXOFFSPEC:6789"),
    InstrumentInfo("OFFSPEC_EVENT", "OFFSPEC", "ISIS", _ISIS_EVENT, "NDXOFFSPEC:10000"),
    InstrumentInfo("OSIRIS", "OSI", "ISIS", _HISTO, "NDXOSIRIS:6789"),
    InstrumentInfo("PEARL", "PRL", "ISIS", _HISTO, "NDXPEARL:6789"),
    InstrumentInfo("POLARIS", "POL", "ISIS", _HISTO, "NDXPOLARIS:6789"),
    InstrumentInfo("POLREF", "POLREF", "ISIS", _HISTO, "NDXPOLREF:6789"),
    InstrumentInfo("SANDALS", "SLS", "ISIS", _HISTO, "NDXSANDALS:6789"),
    InstrumentInfo("SANS2D", "SANS2D", "ISIS", _HISTO, "NDXSANS2D:6789"),
    InstrumentInfo("SANS2D_EVENT", "SANS2D", "ISIS", _ISIS_EVENT, "NDXSANS2D:10000"),
    InstrumentInfo("SURF", "SRF", "ISIS", _HISTO, "NDXSURF:6789"),
    InstrumentInfo("SXD", "SXD", "ISIS", _HISTO, "NDXSXD:6789"),
    InstrumentInfo("TFXA", "TFX", "ISIS", None, None),
    InstrumentInfo("TOSCA", "TSC", "ISIS", _HISTO, "NDXTOSCA:6789"),
    InstrumentInfo("VESUVIO", "EVS", "ISIS", _HISTO, "NDXVESUVIO:6789"),
    InstrumentInfo("WISH", "WISH", "ISIS", _HISTO, "NDXWISH:6789"),
    InstrumentInfo("ZOOM", "ZOOM", "ISIS", _KAFKA, "livedata.isis.cclrc.ac.uk:9092"),
    # HFIR
    InstrumentInfo("HB1", "HB1", "HFIR", None, None),
    InstrumentInfo("HB1A", "HB1A", "HFIR", None, None),
    InstrumentInfo("HB2A", "HB2A", "HFIR", None, None),
    InstrumentInfo("HB2B", "HB2B", "HFIR", _SNS, "hb2b-daq1.ornl.gov:31415"),
    InstrumentInfo("WAND", "HB2C", "HFIR", _SNS, "hb2c-daq1.ornl.gov:31415"),
    InstrumentInfo("HB2D", "HB2D", "HFIR", None, None),
    InstrumentInfo("HB3", "HB3", "HFIR", None, None),
    InstrumentInfo("HB3A", "HB3A", "HFIR", None, None),
    InstrumentInfo("GPSANS", "CG2", "HFIR", _SNS, "cg2-daq1.ornl.gov:31415"),
    InstrumentInfo("CG2", "CG2", "HFIR", None, None),
    InstrumentInfo("BIOSANS", "CG3", "HFIR", _SNS, "cg3-daq1.ornl.gov:31415"),
    InstrumentInfo("HIRESSANS", "HIRESSANS", "HFIR", None, None),
    # SNS
    InstrumentInfo("DAS", "DAS", "SNS", None, None),
    InstrumentInfo("USANS", "USANS", "SNS", _SNS, "bl1a-daq1.sns.gov:31415"),
    InstrumentInfo("NOMAD", "NOM", "SNS", _SNS, "bl1b-daq1.sns.gov:31415"),
    InstrumentInfo("BASIS", "BSS", "SNS", None, None),
    InstrumentInfo("SNAP", "SNAP", "SNS", _SNS, "bl3-daq1.sns.gov:31415"),
    InstrumentInfo("REF_M", "REF_M", "SNS", _SNS, "bl4a-daq1.sns.gov:31415"),
    InstrumentInfo("REF_L", "REF_L", "SNS", _SNS, "bl4b-daq1.sns.gov:31415"),
    InstrumentInfo("CNCS", "CNCS", "SNS", _SNS, "bl5-daq1.sns.gov:31415"),
    InstrumentInfo("EQ-SANS", "EQSANS", "SNS", _SNS, "bl6-daq1.sns.gov:31415"),
    InstrumentInfo("VULCAN", "VULCAN", "SNS", _SNS, "bl7-daq1.sns.gov:31415"),
    InstrumentInfo("CORELLI", "CORELLI", "SNS", _SNS, "bl9-daq1.sns.gov:31415"),
    InstrumentInfo("POWGEN", "PG3", "SNS", _SNS, "bl11a-daq1.sns.gov:31415"),
    InstrumentInfo("MANDI", "MANDI", "SNS", _SNS, "bl11b-daq1.sns.gov:31415"),
    InstrumentInfo("TOPAZ", "TOPAZ", "SNS", _SNS, "bl12-daq1.sns.gov:31415"),
    InstrumentInfo("HYSPEC", "HYS", "SNS", _SNS, "bl14b-daq1.sns.gov:31415"),
    InstrumentInfo("NOW4", "NOW4", "SNS", None, None),
    InstrumentInfo("VISION", "VIS", "SNS", _SNS, "bl16b-daq1.sns.gov:31415"),
    InstrumentInfo("SEQUOIA", "SEQ", "SNS", _SNS, "bl17-daq1.sns.gov:31415"),
    InstrumentInfo("ARCS", "ARCS", "SNS", _SNS, "bl18-daq1.sns.gov:31415"),
    InstrumentInfo("VENUS", "VENUS", "SNS", None, None),
    InstrumentInfo("SWANS", "SWANS", "SNS", None, None),
    InstrumentInfo("ZEEMANS", "ZEEMANS", "SNS", None, None),
    InstrumentInfo("CHESS", "CHESS", "SNS", None, None),
    # TEST_LIVE: Mantid's test facility for live listeners against "fake" instrument sources
    InstrumentInfo("LOKI", "LOKI", "TEST_LIVE", _KAFKA, "hinata:9092"),
    InstrumentInfo("ISIS_Histogram", "ISIS_Histogram", "TEST_LIVE", _HISTO, "127.0.0.1:56789"),
    InstrumentInfo("ISIS_Event", "ISIS_Event", "TEST_LIVE", _ISIS_EVENT, "127.0.0.1:59876"),
    InstrumentInfo("ADARA_FileReader", "ADARA_FileReader", "TEST_LIVE", "FileEventDataListener", "127.0.0.1:0"),
    InstrumentInfo("ADARA_FakeEvent", "ADARA_FakeEvent", "TEST_LIVE", "FakeEventDataListener", "127.0.0.1:0"),
    InstrumentInfo("ISIS_Kafka_Event", "ISIS_Kafka_Event", "TEST_LIVE", _KAFKA, "sakura:9092"),
    # ESS (its LOKI is shadowed by TEST_LIVE's unless ESS is the default facility)
    InstrumentInfo("LOKI", "LOKI", "ESS", _KAFKA, "localhost:9092"),
)
"""Every instrument of the facilities in :data:`FACILITIES`, from Mantid instrument/Facilities.xml, in file order."""

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _fold(name: str) -> str:
    """``name`` with ASCII letters lower-cased, the case folding of Mantid's ``boost::iequals`` comparisons."""
    return name.translate(_ASCII_LOWER)


def _in_facility(facility: str, folded: str) -> InstrumentInfo | None:
    """Mantid's ``FacilityInfo::instrument``: first full-name match in ``facility``, else first short-name match."""
    members = [info for info in INSTRUMENTS if info.facility == facility]
    for info in members:
        if _fold(info.name) == folded:
            return info
    for info in members:
        if _fold(info.short_name) == folded:
            return info
    return None


def lookup(name: str, *, default_facility: str | None = None) -> InstrumentInfo | None:
    """The instrument called ``name`` (full or short name), as Mantid's ``ConfigService.getInstrument(name)``.

    Source: Mantid instrument/Facilities.xml (see :data:`INSTRUMENTS`). Matching rules of Mantid:
    ``default_facility`` (Mantid's ``default.facility`` property, compared case-sensitively) is searched first,
    then every facility in file order; within a facility all full names come before all short names; names are
    compared ignoring ASCII case but not white space. So ``"PG3"`` and ``"pg3"`` give POWGEN, but ``"CG2"`` gives
    the HFIR instrument named CG2 (not GPSANS, whose short name it is) and ``"LOKI"`` gives TEST_LIVE's LOKI
    unless ``default_facility="ESS"``. A default facility not in :data:`FACILITIES` is ignored.

    Args:
        name: full or short instrument name. A blank name (Mantid's "use ``default.instrument``") gives None:
            resolve it with :func:`default_instrument` first.
        default_facility: the facility to search first; None when no default facility is configured.

    Returns:
        The instrument, or None when no facility of this table knows the name.
    """
    if not name:
        return None
    folded = _fold(name)
    order = ((default_facility,) if default_facility in FACILITIES else ()) + FACILITIES
    for facility in order:
        found = _in_facility(facility, folded)
        if found is not None:
            return found
    return None


def resolve(name: str, *, default_facility: str | None = None) -> InstrumentInfo:
    """:func:`lookup`, else ``InstrumentInfo(name, name, "", None, None)``: an unknown name is used as given.

    Source: Mantid instrument/Facilities.xml (see :data:`INSTRUMENTS`).

    Args:
        name: full or short instrument name.
        default_facility: the facility to search first; None when no default facility is configured.
    """
    found = lookup(name, default_facility=default_facility)
    if found is not None:
        return found
    return InstrumentInfo(name, name, "", None, None)


def _unescape(text: str) -> str:
    """Poco's property-file escapes: ``\\t``, ``\\n``, ``\\r``, ``\\f``; any other backslash is dropped."""
    specials = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(specials.get(following, following))
        else:
            out.append(char)
    return "".join(out)


def _read_properties(path: Path) -> dict[str, str]:
    """The ``key -> value`` pairs of a Java-style properties file as Mantid (Poco) reads it; {} if unreadable.

    Lines whose first non-blank character is ``#`` or ``!`` are comments; ``key = value`` or ``key: value``
    (``key`` alone means an empty value); key and value are stripped; a line ending in a single backslash
    continues on the next line; ``\\t``-style escapes in values; a later key overrides an earlier one.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    properties: dict[str, str] = {}
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.lstrip()
        if not line or line[0] in "#!":
            continue
        while _continues(line):
            line = line[:-1] + next(lines, "")
        cut = min((index for index in (line.find("="), line.find(":")) if index >= 0), default=len(line))
        properties[line[:cut].strip()] = _unescape(line[cut + 1 :]).strip()
    return properties


def _continues(line: str) -> bool:
    """True if ``line`` ends in an odd number of backslashes, i.e. an escaped line break."""
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _default_properties_files() -> tuple[Path, ...]:
    """Mantid's machine and user properties files on Linux, in increasing priority."""
    return (Path("/etc/mantid.local.properties"), Path.home() / ".mantid" / "Mantid.user.properties")


def mantid_property(key: str, paths: Sequence[Path] | None = None) -> str | None:
    """A Mantid configuration property read from Mantid properties files without Mantid.

    Source: Mantid's ConfigService (Framework/Kernel/src/ConfigService.cpp), which loads Mantid.properties, then
    ``/etc/mantid.local.properties``, then ``~/.mantid/Mantid.user.properties``, a later file overriding an earlier
    one. Java-properties syntax: ``key = value`` or ``key=value`` (also ``key: value``), lines starting with ``#``
    or ``!`` are comments. Missing or unreadable files are skipped.

    Args:
        key: the property, e.g. ``default.instrument`` or ``default.facility``.
        paths: properties files in increasing priority; None for the default paths (``/etc/mantid.local.properties``,
            ``~/.mantid/Mantid.user.properties``).

    Returns:
        The value of the last file that sets ``key``; None when no file sets it or that value is blank (a blank
        value in a higher-priority file hides a value in a lower-priority one, as in Mantid).
    """
    files = _default_properties_files() if paths is None else tuple(Path(path) for path in paths)
    value: str | None = None
    for path in files:
        properties = _read_properties(path)
        if key in properties:
            value = properties[key]
    return value or None


def default_instrument(paths: Sequence[Path] | None = None) -> str | None:
    """Mantid's ``default.instrument`` property (see :func:`mantid_property`); names as in Facilities.xml."""
    return mantid_property("default.instrument", paths)
