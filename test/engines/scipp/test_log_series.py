"""Log values in chunks (``chunk.log_series``, ``protocols/log_values.py``): every value a source can send reaches
the scripts in a scipp dtype that holds it exactly, in one shape for ADARA and Kafka; what no dtype holds is
refused with a reason (the listeners count it), never an exception in a chunk."""

from __future__ import annotations

import numpy as np
import pytest
import scipp as sc
from streaming_data_types import serialise_f144

from livereduce.engines.scipp.chunk import log_series
from livereduce.engines.scipp.listeners.adara import SegmentMetadata, extracted
from livereduce.protocols.adara import encode, framing
from livereduce.protocols.adara.client import ClientState
from livereduce.protocols.adara.geometry import minimal_idf
from livereduce.protocols.adara.packets import EPICS_EPOCH_OFFSET_S, RunStatusCode
from livereduce.protocols.kafka.f142 import serialise_f142
from livereduce.protocols.kafka.runs import RunRouter
from livereduce.protocols.kafka.schemas import LOG_SCHEMAS, RunStart, decode
from livereduce.protocols.log_values import MAX_LOG_ELEMENTS, UnusableLog, check_log_value

S = 1_000_000_000
T0 = (EPICS_EPOCH_OFFSET_S + 1_000_000_000) * S  # a Unix time in ns, whole EPICS seconds


def as_list(values: object) -> list:
    """Values of a scipp variable as Python objects (strings come as a view without ``tolist``)."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def bins(log: sc.DataArray) -> list[list]:
    """The values of a log of one bin per time, bin by bin."""
    return [as_list(log.data.values[i].values) for i in range(log.sizes["time"])]


# --- dtypes -------------------------------------------------------------------------------------------------------
def test_integers_become_int64_exactly() -> None:
    values = [-(2**63), -1, 0, 2**53 + 1, 2**63 - 1, True]  # beyond 2**53 a float64 would round
    log = log_series([(i, v) for i, v in enumerate(values)], "K")
    assert (log.dtype, log.unit) == (sc.DType.int64, sc.Unit("K"))
    assert log.values.tolist() == [-(2**63), -1, 0, 2**53 + 1, 2**63 - 1, 1]
    assert log.coords["time"].values.astype(np.int64).tolist() == list(range(len(values)))


def test_unsigned_values_beyond_int64_become_float64() -> None:
    """A uint64 above 2**63 - 1 has no exact scipp dtype: float64 (2**64 - 1 rounds to 2**64), the whole log."""
    log = log_series([(1, 5), (2, 2**63), (3, 2**64 - 1)])
    assert log.dtype == sc.DType.float64
    assert log.values.tolist() == [5.0, float(2**63), float(2**64)]
    assert log_series([(1, np.uint64(2**63 - 1))]).values.tolist() == [2**63 - 1]  # fits: int64


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"])
def test_integer_arrays_of_every_width_become_int64_bins(dtype: str) -> None:
    info = np.iinfo(dtype) if dtype != "bool" else np.iinfo("uint8")
    low, high = (0, 1) if dtype == "bool" else (int(info.min), min(int(info.max), 2**63 - 1))
    log = log_series([(1, np.array([low, high], dtype)), (2, np.array([high], dtype))])
    assert log.data.bins.constituents["data"].dtype == sc.DType.int64
    assert bins(log) == [[low, high], [high]]


def test_unsigned_arrays_beyond_int64_become_float64_bins() -> None:
    log = log_series([(1, np.array([1, 2**63], np.uint64)), (2, np.array([2**53 + 1], np.int64))])
    assert log.data.bins.constituents["data"].dtype == sc.DType.float64
    assert bins(log) == [[1.0, float(2**63)], [float(2**53)]]  # mixed with a uint64 beyond int64: float64


def test_floats_become_float64_and_keep_nan_and_infinity() -> None:
    single = np.float32(0.1)
    log = log_series([(1, float(single)), (2, float("nan")), (3, float("-inf"))])
    assert log.dtype == sc.DType.float64
    assert log.values[0] == np.float64(single)  # the float32's own value, widened exactly
    assert np.isnan(log.values[1])
    assert log.values[2] == -np.inf
    array = log_series([(1, np.array([0.1, np.nan], np.float32))])
    np.testing.assert_array_equal(bins(array)[0], np.array([0.1, np.nan], np.float32).astype(np.float64))


def test_integers_mixed_with_floats_become_float64() -> None:
    log = log_series([(1, 3), (2, 0.5)], "mm")
    assert (log.dtype, log.unit, log.values.tolist()) == (sc.DType.float64, sc.Unit("mm"), [3.0, 0.5])


def test_strings_stay_strings_without_unit() -> None:
    log = log_series([(1, "open"), (2, 7)], "K")
    assert (log.dtype, log.unit, as_list(log.values)) == (sc.DType.string, None, ["open", "7"])
    array = log_series([(1, np.array(["a", "bcd"])), (2, "e")])
    assert array.data.bins.constituents["data"].dtype == sc.DType.string
    assert bins(array) == [["a", "bcd"], ["e"]]


# --- shapes -------------------------------------------------------------------------------------------------------
def test_an_array_log_whose_length_changes_keeps_every_value() -> None:
    """One bin per time, as long as that time's array: nothing dropped, nothing padded."""
    entries = [(1, np.array([1, 2, 3], np.uint8)), (2, np.array([4], np.uint8)), (3, np.array([], np.uint8)), (4, 9)]
    log = log_series(entries, "V")
    assert log.dims == ("time",)
    assert log.data.bins.constituents["data"].unit == sc.Unit("V")
    assert bins(log) == [[1, 2, 3], [4], [], [9]]  # a scalar among arrays: a bin of one


def test_unparsable_unit_is_left_out() -> None:
    assert log_series([(1, 1.0)], "not a unit ((").unit is None


# --- refused values -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1 + 2j, "log_of_unsupported_type"),
        (np.array([1 + 2j]), "log_of_unsupported_type"),
        (b"bytes", "log_of_unsupported_type"),
        (np.array([b"x"]), "log_of_unsupported_type"),
        (np.array([object()]), "log_of_unsupported_type"),
        (np.zeros(2, [("a", "i4"), ("b", "f8")]), "log_of_unsupported_type"),
        (np.array(["2026-01-01"], "datetime64[ns]"), "log_of_unsupported_type"),
        (np.array([1.0], np.longdouble), "log_of_unsupported_type"),
        (2**64, "log_of_unsupported_type"),
        (-(2**63) - 1, "log_of_unsupported_type"),
        (np.zeros((2, 2)), "log_of_several_dimensions"),
        (np.zeros(MAX_LOG_ELEMENTS + 1, np.uint8), "log_too_long"),
    ],
)
def test_values_no_dtype_holds_are_refused_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(UnusableLog) as refused:
        check_log_value(value)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    "value",
    ["text", True, -(2**63), 2**64 - 1, 1.5, np.float16(1.5), np.array(7, np.uint64),
     np.zeros(MAX_LOG_ELEMENTS, np.uint8), np.array(["a", "b"]), np.array([], np.float32)],
)  # fmt: skip
def test_values_log_series_holds_pass(value: object) -> None:
    check_log_value(value)
    log_series([(1, value)])


# --- one shape for ADARA and Kafka ------------------------------------------------------------------------------------
SAME_LOGS = {
    # name: (ADARA pv_type, values); Kafka sends the same values as f144 (uint32, float64) or f142 (strings)
    "counts": ("unsigned integer", [0, 2**32 - 1, 7]),
    "temperature": ("double", [280.5, 0.1, -3.0]),
    "mode": ("string", ["auto", "manual", ""]),
    "waveform": (
        "unsigned integer",
        [np.array([1, 2, 3], np.uint32), np.array([4], np.uint32), np.zeros(0, np.uint32)],
    ),
    "spectrum": ("double", [np.array([0.5, 1.5]), np.array([2.5, 3.5, 4.5]), np.array([1e300])]),
}


def adara_logs() -> dict[str, sc.DataArray]:
    """SAME_LOGS as VAR_VALUE packets of an SMS, through the ADARA client and its listener's chunk builder."""
    variables = [(i, name, pv_type, "") for i, (name, (pv_type, _)) in enumerate(SAME_LOGS.items(), 1)]
    packets = [
        encode.run_status(7, 1_000_000_000, RunStatusCode.STATE, T0 - S),
        encode.geometry(minimal_idf("TEST", 0, 99), T0 - S),
        encode.beamline_info("BL99", "TST", "TEST", T0 - S),
        encode.device_descriptor(8192, encode.device_xml("dev", variables), T0 - S),
    ]
    for i, (_, (_, values)) in enumerate(SAME_LOGS.items(), 1):
        packets += [encode.variable_value(8192, i, value, T0 + k * S) for k, value in enumerate(values)]
    packets.append(encode.banked_event(T0 + 5 * S, {1: (np.array([10], np.uint32), np.array([1], np.uint32))}))
    client = ClientState("now")
    client.connected()
    for frame in framing.Framer().feed(b"".join(packets)):
        client.handle(frame)
    assert not any(name.startswith("skipped_") for name in client.counters), client.counters
    segment = client.take()
    chunk = extracted(segment, SegmentMetadata.of(client, segment), (0, 99))[0].chunk
    return {name: chunk.coords[name].value for name in SAME_LOGS}


def kafka_logs() -> dict[str, sc.DataArray]:
    """SAME_LOGS as f144/f142 messages, through decode, the run router and the chunk builder."""
    router = RunRouter(10**8, lambda kind, message: None)
    router.begin(None, None, [], 0.0)
    router.run_start(RunStart("7", "TEST", T0 - S, None, "job", "f.nxs", (0, 99)), 0.0)
    for name, (pv_type, values) in SAME_LOGS.items():
        dtype = np.uint32 if "integer" in pv_type else np.float64
        for k, value in enumerate(values):
            at = T0 + k * S
            message = serialise_f142(value, name, at) if pv_type == "string" else serialise_f144(name, dtype(value), at)
            router.log(decode(message, LOG_SCHEMAS))
    taken = router.take()
    return {name: log_series(sorted(entries, key=lambda e: e[0])) for name, entries in taken.logs.items()}


def test_adara_and_kafka_deliver_the_same_log_in_the_same_shape_and_dtype() -> None:
    adara, kafka = adara_logs(), kafka_logs()
    assert kafka.keys() == adara.keys() == SAME_LOGS.keys()
    for name in SAME_LOGS:
        assert sc.identical(adara[name], kafka[name]), (name, adara[name], kafka[name])
    assert adara["counts"].values.tolist() == [0, 2**32 - 1, 7]
    assert adara["counts"].dtype == sc.DType.int64
    assert bins(adara["waveform"]) == [[1, 2, 3], [4], []]  # uint32 arrays: int64, one bin per time
    assert adara["waveform"].data.bins.constituents["data"].dtype == sc.DType.int64
    assert bins(adara["spectrum"]) == [[0.5, 1.5], [2.5, 3.5, 4.5], [1e300]]


def test_adara_array_beyond_the_bound_is_skipped_and_counted() -> None:
    client = ClientState("now")
    client.connected()
    packets = [
        encode.device_descriptor(8192, encode.device_xml("dev", [(1, "waveform", "unsigned integer", "")]), T0),
        encode.variable_value(8192, 1, np.zeros(MAX_LOG_ELEMENTS + 1, np.uint32), T0),
        encode.variable_value(8192, 1, np.arange(3, dtype=np.uint32), T0 + S),
    ]
    for frame in framing.Framer().feed(b"".join(packets)):
        client.handle(frame)
    assert client.counters["skipped_log_too_long"] == 1
    assert [value.tolist() for _, value in client.logs_for(client.take())["waveform"]] == [[0, 1, 2]]
