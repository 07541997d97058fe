"""Tests of livereduce.instruments: the built-in table from Mantid instrument/Facilities.xml and Mantid's matching."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from livereduce import instruments
from livereduce.instruments import INSTRUMENTS, InstrumentInfo, default_instrument, lookup, resolve

SNS_LISTENER = "SNSLiveEventDataListener"


# --- the table ---------------------------------------------------------------------------------------------------
def test_table_counts_per_facility() -> None:
    assert Counter(info.facility for info in INSTRUMENTS) == {
        "ISIS": 43,
        "HFIR": 12,
        "SNS": 23,
        "TEST_LIVE": 6,
        "ESS": 1,
    }


def test_table_is_grouped_by_facility_in_file_order() -> None:
    order = [info.facility for info in INSTRUMENTS]
    assert list(dict.fromkeys(order)) == list(instruments.FACILITIES)


def test_table_names_unique_within_facility() -> None:
    keys = [(info.facility, info.name) for info in INSTRUMENTS]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("info", INSTRUMENTS, ids=lambda info: f"{info.facility}:{info.name}")
def test_table_entry_well_formed(info: InstrumentInfo) -> None:
    assert info.name
    assert info.name == info.name.strip()
    assert info.short_name
    assert (info.listener is None) == (info.address is None)
    if info.address is not None:
        host, _, port = info.address.rpartition(":")
        assert host
        assert port.isdigit()
    if info.listener is not None:
        assert info.listener.endswith("Listener")


def test_instrument_info_is_frozen() -> None:
    info = lookup("POWGEN")
    assert info is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "X"  # type: ignore[misc]


# --- lookup: full name <-> short name ---------------------------------------------------------------------------
def test_powgen_full_to_short() -> None:
    assert lookup("POWGEN") == InstrumentInfo("POWGEN", "PG3", "SNS", SNS_LISTENER, "bl11a-daq1.sns.gov:31415")


def test_pg3_short_to_full() -> None:
    info = lookup("PG3")
    assert info is not None
    assert info.name == "POWGEN"
    assert info.short_name == "PG3"


def test_nomad_to_nom() -> None:
    assert lookup("NOMAD") == InstrumentInfo("NOMAD", "NOM", "SNS", SNS_LISTENER, "bl1b-daq1.sns.gov:31415")
    assert lookup("NOM") == lookup("NOMAD")


@pytest.mark.parametrize(
    ("name", "full", "short", "facility"),
    [
        ("EQ-SANS", "EQ-SANS", "EQSANS", "SNS"),
        ("EQSANS", "EQ-SANS", "EQSANS", "SNS"),
        ("GPSANS", "GPSANS", "CG2", "HFIR"),
        ("BIOSANS", "BIOSANS", "CG3", "HFIR"),
        ("CG3", "BIOSANS", "CG3", "HFIR"),
        ("HB2C", "WAND", "HB2C", "HFIR"),
        ("SEQ", "SEQUOIA", "SEQ", "SNS"),
        ("REF_L", "REF_L", "REF_L", "SNS"),
        ("ARCS", "ARCS", "ARCS", "SNS"),
    ],
)
def test_full_and_short_names(name: str, full: str, short: str, facility: str) -> None:
    info = lookup(name)
    assert info is not None
    assert (info.name, info.short_name, info.facility) == (full, short, facility)


def test_instrument_without_livedata() -> None:
    assert lookup("BSS") == InstrumentInfo("BASIS", "BSS", "SNS", None, None)


# --- lookup: Mantid's matching rules -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["powgen", "PowGen", "pg3", "Pg3", "POWGEN", "PG3"])
def test_case_insensitive(name: str) -> None:
    info = lookup(name)
    assert info is not None
    assert info.name == "POWGEN"


def test_case_insensitive_mixed_case_table_names() -> None:
    info = lookup("isis_histogram")
    assert info is not None
    assert info.name == "ISIS_Histogram"


@pytest.mark.parametrize("name", [" POWGEN", "POWGEN ", "PG3\n", "", " "])
def test_no_whitespace_stripping_and_blank(name: str) -> None:
    assert lookup(name) is None


def test_full_names_before_short_names_within_a_facility() -> None:
    # CG2 is GPSANS's short name, but HFIR also has an instrument whose full name is CG2
    info = lookup("CG2")
    assert info == InstrumentInfo("CG2", "CG2", "HFIR", None, None)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("LET", "LET"), ("ENGINX", "ENGIN-X"), ("MER", "MERLIN"), ("SANS2D", "SANS2D"), ("OFFSPEC", "OFFSPEC")],
)
def test_shared_short_name_gives_first_in_file_order(name: str, expected: str) -> None:
    info = lookup(name)
    assert info is not None
    assert info.name == expected
    assert info.listener == "ISISHistoDataListener"


def test_facilities_in_file_order_without_default_facility() -> None:
    info = lookup("LOKI")
    assert info == InstrumentInfo("LOKI", "LOKI", "TEST_LIVE", "KafkaEventListener", "hinata:9092")


def test_default_facility_searched_first() -> None:
    info = lookup("LOKI", default_facility="ESS")
    assert info == InstrumentInfo("LOKI", "LOKI", "ESS", "KafkaEventListener", "localhost:9092")
    # instruments not in the default facility are still found in the others
    pg3 = lookup("PG3", default_facility="ESS")
    assert pg3 is not None
    assert pg3.name == "POWGEN"


@pytest.mark.parametrize("facility", ["ess", "ILL", "", None])
def test_default_facility_exact_name_or_ignored(facility: str | None) -> None:
    info = lookup("LOKI", default_facility=facility)
    assert info is not None
    assert info.facility == "TEST_LIVE"


def test_first_connection_when_several_livedata() -> None:
    # MARI has two <livedata>; Mantid takes all <connection>s, no default -> the first one
    assert lookup("MAR") == InstrumentInfo(
        "MARI", "MAR", "ISIS", "KafkaEventListener", "livedata.isis.cclrc.ac.uk:9092"
    )


def test_named_default_connection() -> None:
    assert lookup("ENGIN-X_EVENT") == InstrumentInfo(
        "ENGIN-X_EVENT", "ENGINX", "ISIS", "ISISLiveEventDataListener", "NDXENGINX:10000"
    )


# --- TEST_LIVE and ISIS ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "listener", "address"),
    [
        ("ISIS_Histogram", "ISISHistoDataListener", "127.0.0.1:56789"),
        ("ISIS_Event", "ISISLiveEventDataListener", "127.0.0.1:59876"),
        ("ADARA_FakeEvent", "FakeEventDataListener", "127.0.0.1:0"),
        ("ADARA_FileReader", "FileEventDataListener", "127.0.0.1:0"),
        ("ISIS_Kafka_Event", "KafkaEventListener", "sakura:9092"),
    ],
)
def test_test_live_instruments(name: str, listener: str, address: str) -> None:
    assert lookup(name) == InstrumentInfo(name, name, "TEST_LIVE", listener, address)


def test_isis_sans2d() -> None:
    assert lookup("SANS2D") == InstrumentInfo("SANS2D", "SANS2D", "ISIS", "ISISHistoDataListener", "NDXSANS2D:6789")
    assert lookup("sans2d_event") == InstrumentInfo(
        "SANS2D_EVENT", "SANS2D", "ISIS", "ISISLiveEventDataListener", "NDXSANS2D:10000"
    )


# --- resolve ------------------------------------------------------------------------------------------------------
def test_resolve_known() -> None:
    assert resolve("pg3") == lookup("POWGEN")
    assert resolve("LOKI", default_facility="ESS").facility == "ESS"


@pytest.mark.parametrize("name", ["MyInstrument", "myinstrument", "D11", "SANS"])
def test_resolve_unknown_used_as_given(name: str) -> None:
    assert lookup(name) is None
    assert resolve(name) == InstrumentInfo(name, name, "", None, None)


# --- default_instrument -------------------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_default_instrument_single_file(tmp_path: Path) -> None:
    props = write(tmp_path / "a.properties", "default.facility = SNS\ndefault.instrument = POWGEN\n")
    assert default_instrument([props]) == "POWGEN"


def test_default_instrument_no_spaces(tmp_path: Path) -> None:
    props = write(tmp_path / "a.properties", "default.instrument=NOM\n")
    assert default_instrument([props]) == "NOM"


def test_default_instrument_colon_separator(tmp_path: Path) -> None:
    props = write(tmp_path / "a.properties", "default.instrument: CNCS\n")
    assert default_instrument([props]) == "CNCS"


def test_default_instrument_later_file_wins(tmp_path: Path) -> None:
    local = write(tmp_path / "local.properties", "default.instrument = NOMAD\n")
    user = write(tmp_path / "user.properties", "default.instrument = PG3\n")
    assert default_instrument([local, user]) == "PG3"
    assert default_instrument([user, local]) == "NOMAD"


def test_default_instrument_later_file_without_key_keeps_earlier(tmp_path: Path) -> None:
    local = write(tmp_path / "local.properties", "default.instrument = NOMAD\n")
    user = write(tmp_path / "user.properties", "default.facility = SNS\n")
    assert default_instrument([local, user]) == "NOMAD"


def test_default_instrument_later_line_wins(tmp_path: Path) -> None:
    props = write(tmp_path / "a.properties", "default.instrument = NOMAD\ndefault.instrument = VULCAN\n")
    assert default_instrument([props]) == "VULCAN"


def test_default_instrument_comments(tmp_path: Path) -> None:
    text = (
        "# default.instrument = HASH\n"
        "! default.instrument = BANG\n"
        "   # default.instrument = INDENTED\n"
        "\n"
        "default.instrument = SNAP\n"
        "#default.instrument = LATER_COMMENT\n"
    )
    props = write(tmp_path / "a.properties", text)
    assert default_instrument([props]) == "SNAP"


def test_default_instrument_only_comments(tmp_path: Path) -> None:
    props = write(tmp_path / "a.properties", "#default.instrument = POWGEN\n!default.instrument=NOM\n")
    assert default_instrument([props]) is None


def test_default_instrument_missing_files(tmp_path: Path) -> None:
    assert default_instrument([tmp_path / "missing.properties"]) is None
    assert default_instrument([]) is None
    present = write(tmp_path / "present.properties", "default.instrument = TOPAZ\n")
    assert default_instrument([tmp_path / "nope", present, tmp_path / "gone"]) == "TOPAZ"


def test_default_instrument_directory_is_skipped(tmp_path: Path) -> None:
    assert default_instrument([tmp_path]) is None


def test_default_instrument_blank_value(tmp_path: Path) -> None:
    assert default_instrument([write(tmp_path / "a.properties", "default.instrument =\n")]) is None
    assert default_instrument([write(tmp_path / "b.properties", "default.instrument =    \n")]) is None
    assert default_instrument([write(tmp_path / "c.properties", "default.instrument\n")]) is None


def test_default_instrument_blank_value_overrides_lower_priority(tmp_path: Path) -> None:
    local = write(tmp_path / "local.properties", "default.instrument = NOMAD\n")
    user = write(tmp_path / "user.properties", "default.instrument = \n")
    assert default_instrument([local, user]) is None


def test_default_instrument_other_keys_and_similar_names(tmp_path: Path) -> None:
    text = "default.instrument.extra = NO\nmy.default.instrument = NO\ndefault.instrument = HYSPEC\n"
    assert default_instrument([write(tmp_path / "a.properties", text)]) == "HYSPEC"


def test_default_instrument_strips_value_and_handles_crlf(tmp_path: Path) -> None:
    props = tmp_path / "a.properties"
    props.write_bytes(b"default.facility = SNS\r\n   default.instrument   =   EQSANS   \r\n")
    assert default_instrument([props]) == "EQSANS"


def test_default_instrument_line_continuation(tmp_path: Path) -> None:
    props = write(tmp_path / "a.properties", "default.instrument = EQ\\\n-SANS\n")
    assert default_instrument([props]) == "EQ-SANS"


def test_default_instrument_accepts_str_paths(tmp_path: Path) -> None:
    props = write(tmp_path / "a.properties", "default.instrument = CORELLI\n")
    assert default_instrument([str(props)]) == "CORELLI"  # type: ignore[list-item]


def test_default_instrument_default_paths_user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path / ".mantid" / "Mantid.user.properties", "default.instrument = MANDI\n")
    # the user file has the highest priority, so /etc/mantid.local.properties cannot change the answer
    assert default_instrument() == "MANDI"


def test_default_instrument_default_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = instruments._default_properties_files()
    assert paths == (Path("/etc/mantid.local.properties"), tmp_path / ".mantid" / "Mantid.user.properties")
