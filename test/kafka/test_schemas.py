"""Decoding by file identifier with ess-streaming-data-types: every schema, the f142 shim, pl72/6s4t time units,
and hostile bytes (skipped with a reason, never an exception of another kind)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from streaming_data_types import (
    logdata_f142,
    serialise_6s4t,
    serialise_ev42,
    serialise_ev44,
    serialise_f144,
    serialise_pl72,
)
from streaming_data_types.run_start_pl72 import DetectorSpectrumMap

from livereduce.protocols.kafka import f142, times
from livereduce.protocols.kafka.schemas import (
    EVENT_SCHEMAS,
    KNOWN_SCHEMAS,
    LOG_SCHEMAS,
    RUN_SCHEMAS,
    Events,
    LogValue,
    RunStart,
    RunStop,
    Skipped,
    check_times,
    decode,
    decode_checked,
    schema_of,
)
from livereduce.protocols.kafka.topics import consumer_settings, redacted, topic_names, without_secrets

START = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
START_NS = 1_772_366_400_250_000_000


def ev44(times_ns=(10, 20), index=(0, 2), tof=(1000, 2000, 3000), pixels=(4, 5, 6), message_id=7) -> bytes:
    return serialise_ev44("bank1", message_id, np.array(times_ns), np.array(index), np.array(tof), np.array(pixels))


# --- events ---------------------------------------------------------------------------------------------------
def test_ev44_decodes_pulses_and_events() -> None:
    decoded = decode(ev44(), EVENT_SCHEMAS)

    assert isinstance(decoded, Events)
    assert (decoded.schema, decoded.source_name, decoded.message_id) == ("ev44", "bank1", 7)
    np.testing.assert_array_equal(decoded.reference_time, [10, 20])
    assert decoded.reference_time.dtype == np.int64
    np.testing.assert_array_equal(decoded.reference_time_index, [0, 2])
    np.testing.assert_array_equal(decoded.time_of_flight, [1000, 2000, 3000])
    np.testing.assert_array_equal(decoded.pixel_id, [4, 5, 6])
    assert decoded.has_pixels


def test_ev42_is_one_pulse() -> None:
    buffer = serialise_ev42("bank1", 3, 1_700_000_000_000_000_000, np.array([5, 6], np.uint32), np.array([8, 9]))
    decoded = decode(buffer, EVENT_SCHEMAS)

    assert isinstance(decoded, Events)
    assert decoded.schema == "ev42"
    np.testing.assert_array_equal(decoded.reference_time, [1_700_000_000_000_000_000])
    np.testing.assert_array_equal(decoded.reference_time_index, [0])
    np.testing.assert_array_equal(decoded.time_of_flight, [5, 6])
    np.testing.assert_array_equal(decoded.pixel_id, [8, 9])


def test_monitor_message_without_pixel_ids() -> None:
    decoded = decode(serialise_ev44("monitor1", 0, [10], [0], [100, 200], []), EVENT_SCHEMAS)

    assert isinstance(decoded, Events)
    assert not decoded.has_pixels
    assert decoded.n_events == 2


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (ev44(index=(0,)), "2 reference times but 1 indices"),
        (ev44(index=(1, 2)), "first pulse does not start at event 0"),
        (ev44(index=(0, 4)), "not non-decreasing within 0..3"),
        (ev44(times_ns=(10, 20, 30), index=(0, 2, 1)), "not non-decreasing"),
        (ev44(pixels=(1, 2)), "2 pixel ids for 3 events"),
        (serialise_ev44("x", 0, [], [], [1, 2], [3, 4]), "first pulse does not start at event 0"),
    ],
)
def test_inconsistent_ev44_is_skipped_as_invalid(message: bytes, detail: str) -> None:
    with pytest.raises(Skipped, match=detail) as caught:
        decode(message, EVENT_SCHEMAS)
    assert caught.value.reason == "invalid"


def test_empty_ev44_is_valid() -> None:
    decoded = decode(serialise_ev44("x", 0, [], [], [], []), EVENT_SCHEMAS)
    assert isinstance(decoded, Events)
    assert decoded.n_events == 0


# --- run start/stop and their time unit ----------------------------------------------------------------------------
def test_pl72_times_are_milliseconds_as_the_serialiser_writes_them() -> None:
    """The schema and ess-streaming-data-types: ms since the epoch. Mantid reads ns; livereduce follows the schema."""
    buffer = serialise_pl72("job-1", "run.nxs", start_time=START, run_name="1234", instrument_name="LOKI")
    decoded = decode(buffer, RUN_SCHEMAS)

    assert isinstance(decoded, RunStart)
    assert decoded.start_ns == START_NS  # 12:00:00.250 exactly: read as ms
    assert not decoded.nanosecond_times
    assert (decoded.run_number, decoded.instrument_name, decoded.job_id) == (1234, "LOKI", "job-1")
    assert decoded.stop_ns is None  # stop_time 0: not announced


def test_pl72_in_nanoseconds_from_a_mantid_style_producer_is_recognised() -> None:
    decoded = decode(serialise_pl72("job", "f", start_time=START_NS, run_name="5"), RUN_SCHEMAS)

    assert isinstance(decoded, RunStart)
    assert decoded.start_ns == START_NS
    assert decoded.nanosecond_times


def test_6s4t_stop_time_is_milliseconds() -> None:
    decoded = decode(serialise_6s4t("job-1", run_name="1234", stop_time=START), RUN_SCHEMAS)

    assert decoded == RunStop(run_name="1234", job_id="job-1", stop_ns=START_NS)


def test_run_time_unit_threshold() -> None:
    assert times.run_time_ns(1_772_366_400_250) == (START_NS, False)
    assert times.run_time_ns(START_NS) == (START_NS, True)
    assert times.run_time_ns(times.NANOSECOND_RUN_TIMES - 1)[1] is False


def test_pl72_detector_ids_from_the_detector_spectrum_map() -> None:
    spectrum_map = DetectorSpectrumMap(np.arange(1, 5), np.array([9, 3, 7, 5]), 4)
    decoded = decode(serialise_pl72("j", "f", start_time=START, detector_spectrum_map=spectrum_map), RUN_SCHEMAS)

    assert isinstance(decoded, RunStart)
    assert decoded.detector_ids == (3, 9)


@pytest.mark.parametrize(
    "dataset",
    [
        {"module": "dataset", "config": {"name": "detector_number", "values": [[10, 11], [12, 40]], "type": "int32"}},
        {"type": "dataset", "name": "detector_number", "values": [40, 10, 20]},
    ],
)
def test_pl72_detector_ids_from_the_nexus_structure(dataset: dict) -> None:
    structure = {"children": [{"name": "entry", "children": [{"name": "detector_0", "children": [dataset]}]}]}
    decoded = decode(serialise_pl72("j", "f", start_time=START, nexus_structure=json.dumps(structure)), RUN_SCHEMAS)

    assert isinstance(decoded, RunStart)
    assert decoded.detector_ids == (10, 40)


def test_pl72_without_detector_information() -> None:
    decoded = decode(serialise_pl72("j", "f", start_time=START, nexus_structure="{not json"), RUN_SCHEMAS)
    assert isinstance(decoded, RunStart)
    assert decoded.detector_ids is None


@pytest.mark.parametrize(("name", "number"), [("1234", 1234), ("run-7", 0), ("", 0), ("٣", 0)])
def test_run_number_from_the_run_name(name: str, number: int) -> None:
    decoded = decode(serialise_pl72("j", "f", start_time=START, run_name=name), RUN_SCHEMAS)
    assert isinstance(decoded, RunStart)
    assert decoded.run_number == number


# --- implausible times ----------------------------------------------------------------------------------------
DAY = 86_400 * 10**9


def times_outcome(message: bytes, accepted: frozenset[str], record_ns: int, now_ns: int = START_NS) -> str | None:
    try:
        check_times(decode(message, accepted), record_ns, now_ns)
    except Skipped as skipped:
        return skipped.reason
    return None


@pytest.mark.parametrize(
    ("start_time", "stop_time", "record_ns", "reason"),
    [
        (START_NS // 10**6, 0, START_NS, None),
        (START_NS // 10**6, 0, START_NS + DAY, None),  # a day late: still the run's message
        (START_NS // 10**6, 0, START_NS + DAY + 10**6, "implausible_time"),
        (START_NS // 10**6, 0, START_NS - DAY - 10**6, "implausible_time"),
        (START_NS, 0, START_NS, None),  # ns (Mantid's reading), the same time
        (2**64 - 1, 0, START_NS, "implausible_time"),  # beyond int64 ns: an OverflowError later
        (int(datetime(2200, 1, 1, tzinfo=UTC).timestamp() * 1000), 0, START_NS, "implausible_time"),
        (START_NS // 10**6, START_NS // 10**6 + 3_600_000, START_NS, None),  # a stop announced an hour ahead
        (START_NS // 10**6, START_NS // 10**6 + 2 * DAY // 10**6, START_NS, "implausible_time"),
        (START_NS // 10**6, START_NS // 10**6 - 1, START_NS, "implausible_time"),  # stops before it starts
        ((START_NS + 3 * DAY) // 10**6, 0, START_NS + 3 * DAY, "implausible_time"),  # record and run days ahead
    ],
)
def test_run_start_times_must_be_near_the_record_timestamp(
    start_time: int, stop_time: int, record_ns: int, reason: str | None
) -> None:
    message = serialise_pl72("j", "f", start_time=start_time, stop_time=stop_time, run_name="1")
    now = max(record_ns, START_NS) if record_ns <= START_NS + DAY else START_NS  # the wall clock: a producer's
    # record timestamps can be ahead of it too
    assert times_outcome(message, RUN_SCHEMAS, record_ns, now) == reason


def test_run_stop_time_must_be_near_the_record_timestamp() -> None:
    stop = START_NS // 10**6
    assert times_outcome(serialise_6s4t("j", stop_time=stop), RUN_SCHEMAS, START_NS) is None
    assert times_outcome(serialise_6s4t("j", stop_time=stop), RUN_SCHEMAS, START_NS + 2 * DAY) == "implausible_time"
    assert times_outcome(serialise_6s4t("j", stop_time=2**64 - 1), RUN_SCHEMAS, START_NS) == "implausible_time"


def test_data_times_more_than_a_day_after_the_wall_clock_are_implausible() -> None:
    soon, far = START_NS + DAY, START_NS + DAY + 1
    assert times_outcome(ev44(times_ns=(START_NS, soon)), EVENT_SCHEMAS, 0) is None  # record time: not for data
    assert times_outcome(ev44(times_ns=(START_NS, far)), EVENT_SCHEMAS, far) == "implausible_time"
    assert times_outcome(serialise_f144("t", 1.0, far), LOG_SCHEMAS, far) == "implausible_time"
    assert times_outcome(ev44(times_ns=(), index=(), tof=(), pixels=()), EVENT_SCHEMAS, far) is None


def test_decode_checked_adds_the_size_limit_the_times_and_pixel_ids_on_the_events_topic() -> None:
    monitor = serialise_ev44("monitor", 1, np.array([START_NS]), np.array([0]), np.array([1000, 2000]), np.array([]))

    def reason(message: bytes, role: str, max_bytes: int = 10_000, record_ns: int = START_NS) -> str | None:
        try:
            decode_checked(message, role, record_ns, START_NS, max_bytes)
        except Skipped as skipped:
            return skipped.reason
        return None

    assert reason(monitor, "monitors") is None
    assert reason(monitor, "events") == "no_pixel_ids"  # detector events need pixel ids: a monitor's go to monitors
    assert reason(monitor, "monitors", max_bytes=len(monitor) - 1) == "too_large"
    assert reason(serialise_f144("t", 1.0, START_NS), "events") == "unexpected_schema"
    assert reason(serialise_6s4t("j", stop_time=START_NS // 10**6), "runInfo", record_ns=START_NS + 2 * DAY) == (
        "implausible_time"
    )


# --- logs -------------------------------------------------------------------------------------------------------
def test_f144_scalar_and_array() -> None:
    scalar = decode(serialise_f144("temperature", 21.5, 123), LOG_SCHEMAS)
    array = decode(serialise_f144("position", np.array([1, 2, 3], np.int16), 456), LOG_SCHEMAS)

    assert isinstance(scalar, LogValue)
    assert (scalar.source_name, scalar.time_ns, float(scalar.value)) == ("temperature", 123, 21.5)
    assert isinstance(array, LogValue)
    np.testing.assert_array_equal(array.value, [1, 2, 3])


def test_f142_shim() -> None:
    """ess-streaming-data-types 0.27.0's f142 fails under NumPy 2 (np.unicode_ removed); the shim keeps it working."""
    if f142.needs_shim():
        unshimmed = logdata_f142.np
        try:
            logdata_f142.np = np  # the package as shipped
            with pytest.raises(AttributeError, match="unicode_"):
                logdata_f142.serialise_f142(1.5, "temperature", 1)
        finally:
            logdata_f142.np = unshimmed
    for value in (21.5, 7, "open", np.array([1.0, 2.0])):
        decoded = decode(f142.serialise_f142(value, "temperature", 99), LOG_SCHEMAS)
        assert isinstance(decoded, LogValue)
        assert decoded.time_ns == 99
        np.testing.assert_array_equal(decoded.value, value)


# --- dispatch and hostile bytes ---------------------------------------------------------------------------------
def test_schema_identifier_is_checked_before_decoding() -> None:
    assert schema_of(ev44()) == "ev44"
    with pytest.raises(Skipped) as caught:
        decode(ev44(), RUN_SCHEMAS)
    assert caught.value.reason == "unexpected_schema"
    with pytest.raises(Skipped) as caught:
        decode(b"\0\0\0\0hs01" + bytes(40), EVENT_SCHEMAS)
    assert caught.value.reason == "unknown_schema"
    with pytest.raises(Skipped) as caught:
        decode(b"\0\0\0\0\xff\xfe\x00\x01" + bytes(40), EVENT_SCHEMAS)
    assert caught.value.reason == "unknown_schema"
    with pytest.raises(Skipped) as caught:
        decode(b"ev44", EVENT_SCHEMAS)
    assert caught.value.reason == "too_short"


@pytest.mark.parametrize("schema", sorted(KNOWN_SCHEMAS))
def test_truncated_messages_are_skipped(schema: str) -> None:
    valid = {
        "ev44": ev44(),
        "ev42": serialise_ev42("b", 1, 5, np.array([1], np.uint32), np.array([2])),
        "pl72": serialise_pl72("j", "f", start_time=START),
        "6s4t": serialise_6s4t("j", stop_time=START),
        "f144": serialise_f144("t", 1.0, 1),
        "f142": f142.serialise_f142(1.0, "t", 1),
    }[schema]
    outcomes = [outcome(valid[:length]) for length in range(len(valid))]

    assert set(outcomes) <= {"decoded", "too_short", "unknown_schema", "malformed", "invalid"}
    assert outcomes[:8] == ["too_short"] * 8
    assert outcome(valid) == "decoded"


def outcome(buffer: bytes) -> str:
    """``decoded``, or the reason the message was skipped."""
    try:
        decode(buffer, KNOWN_SCHEMAS)
    except Skipped as skipped:
        return skipped.reason
    return "decoded"


# --- topics and settings ----------------------------------------------------------------------------------------
def test_topic_names_as_mantid_names_them() -> None:
    assert topic_names("LOKI", None) == {
        "events": "LOKI_events",
        "runInfo": "LOKI_runInfo",
        "sampleEnv": "LOKI_sampleEnv",
        "monitors": "LOKI_monitors",
    }
    assert topic_names("LOKI", {"events": "loki_detector"})["events"] == "loki_detector"


def test_secrets_are_redacted() -> None:
    settings = consumer_settings(
        "b:9092",
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "beamline",
            "sasl.password": "hunter2",
            "ssl.key.password": "k3y",
            "ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
            "sasl.oauthbearer.client.secret": "s3cret",
        },
        1024,
    )
    text = redacted(settings)
    for secret in ("hunter2", "k3y", "BEGIN PRIVATE", "s3cret", "beamline"):
        assert secret not in text
    assert "security.protocol=SASL_SSL" in text
    assert "sasl.password=***" in text
    assert settings["sasl.password"] == "hunter2"  # the client still gets it


def test_the_logged_configuration_holds_no_secrets() -> None:
    configuration = {"address": "b:9092", "kafka": {"sasl.password": "hunter2", "security.protocol": "SASL_SSL"}}
    shown = without_secrets(configuration)

    assert shown["kafka"] == {"sasl.password": "***", "security.protocol": "SASL_SSL"}
    assert configuration["kafka"]["sasl.password"] == "hunter2"  # the configuration itself is unchanged
    assert without_secrets({"kafka": None}) == {"kafka": None}


def test_a_run_stop_with_stop_time_0_stops_now_at_its_record_time() -> None:
    stop = decode_checked(serialise_6s4t("job", run_name="7", stop_time=0), "runInfo", START_NS + 5, START_NS, 10_000)
    assert isinstance(stop, RunStop)
    assert (stop.stop_ns, stop.stop_now, stop.job_id) == (START_NS + 5, True, "job")  # (was: skipped as invalid)
    later = decode_checked(serialise_6s4t("job", stop_time=START_NS // 10**6), "runInfo", START_NS, START_NS, 10_000)
    assert (later.stop_ns, later.stop_now) == (START_NS, False)
