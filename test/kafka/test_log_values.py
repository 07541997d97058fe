"""Every log value the f144/f142 schemas allow reaches the scripts exactly (issue 16): int8 .. uint64, float32/64,
scalars and 1-D arrays, arrays whose length changes; int64 in the chunk, float64 for floats and for uint64 beyond
int64. In process through decode, the run router and the chunk builder; and once through the broker and the
listener, as a daemon gets them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipp as sc
from hypothesis import given, settings
from hypothesis import strategies as st
from streaming_data_types import serialise_f144

from livereduce.engines.scipp.chunk import log_series
from livereduce.engines.scipp.listeners.base import Extracted, RunStatus
from livereduce.protocols.kafka.f142 import serialise_f142
from livereduce.protocols.kafka.runs import RunRouter
from livereduce.protocols.kafka.schemas import LOG_SCHEMAS, RunStart, Skipped, decode, decode_checked
from livereduce.protocols.log_values import MAX_LOG_ELEMENTS

from .conftest import Broker
from .helpers import SECOND, drain, listener_in_a_run, pulses, run_stop, send

INT64_MAX = 2**63 - 1


def _cases() -> dict[str, tuple[list, sc.DType]]:
    """Log source -> (the values it sends, one per time, each as numpy sends it; the dtype of every chunk's log).

    Each source's values all need the same dtype, so that the dtype does not depend on how they fall into chunks."""
    cases: dict[str, tuple[list, sc.DType]] = {}
    for name in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"):
        dtype = np.dtype(name)
        low, high = int(np.iinfo(dtype).min), min(int(np.iinfo(dtype).max), INT64_MAX)  # uint64 beyond: below
        cases[f"scalar_{name}"] = ([dtype.type(low), dtype.type(high)], sc.DType.int64)
        cases[f"array_{name}"] = ([np.array([low, 0, high], dtype), np.array([high], dtype)], sc.DType.int64)
    beyond = [np.uint64(2**63), np.uint64(2**64 - 1)]  # no exact scipp dtype: float64 (2**64 - 1 rounds to 2**64)
    cases["scalar_uint64_beyond_int64"] = (beyond, sc.DType.float64)
    cases["array_uint64_beyond_int64"] = ([np.array([0, *beyond], np.uint64)], sc.DType.float64)
    cases["scalar_int64_beyond_2_53"] = ([np.int64(2**53 + 1), np.int64(-(2**53) - 1)], sc.DType.int64)
    cases["array_int64_beyond_2_53"] = ([np.array([2**53 + 1, -(2**53) - 1], np.int64)], sc.DType.int64)
    for name in ("float32", "float64"):
        dtype = np.dtype(name)
        values = [dtype.type(0.1), dtype.type(np.finfo(dtype).max), dtype.type(-np.inf), dtype.type(np.nan)]
        cases[f"scalar_{name}"] = (values, sc.DType.float64)
        cases[f"array_{name}"] = ([np.array(values, dtype), np.array([1.5], dtype)], sc.DType.float64)
    # an EPICS char waveform whose length changes: every value, one bin per time
    lengths = (3, 1, 0, 5)
    cases["waveform"] = ([np.arange(n, dtype=np.uint8) + 250 for n in lengths], sc.DType.int64)
    return cases


CASES = _cases()


def expected(value: np.generic | np.ndarray, dtype: sc.DType) -> int | float | list:
    """A sent value as the chunk must hold it: Python ints for int64, the float64 of the value for float64."""
    return np.asarray(value).astype(np.int64 if dtype == sc.DType.int64 else np.float64).tolist()


def received(log: sc.DataArray) -> tuple[sc.DType, list[int], list]:
    """(dtype of the values, times in ns, the values one per time: a list per time for one bin per time)."""
    times = log.coords["time"].values.astype(np.int64).tolist()
    if log.bins is None:
        return log.dtype, times, log.values.tolist()
    per_time = [log.data.values[i].values.tolist() for i in range(log.sizes["time"])]
    return log.bins.constituents["data"].dtype, times, per_time


def messages(serialise: str, t0: int) -> list[bytes]:
    """Every value of CASES as f144 or f142, the k-th value of each source at t0 + (k + 1) * 0.1 s."""
    out = []
    for name, (values, _) in CASES.items():
        for k, value in enumerate(values):
            at = t0 + (k + 1) * SECOND // 10
            out.append(serialise_f144(name, value, at) if serialise == "f144" else serialise_f142(value, name, at))
    return out


def assert_every_value_arrived(logs: dict[str, list[sc.DataArray]], t0: int) -> None:
    """Each source of CASES: every value at its time, exactly, in the expected dtype in every chunk it is in."""
    assert logs.keys() == CASES.keys()
    for name, (values, dtype) in CASES.items():
        times, got = [], []
        for log in logs[name]:
            log_dtype, log_times, log_values = received(log)
            assert log_dtype == dtype, name
            times += log_times
            got += log_values
        assert times == [t0 + (k + 1) * SECOND // 10 for k in range(len(values))], name
        want = [expected(value, dtype) for value in values]
        assert identical(got, want), (name, got, want)


def identical(a: object, b: object) -> bool:
    """Equal and of the same Python type, element by element (an int is no rounded float; NaN equals NaN)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


# --- in process -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schema", ["f144", "f142"])
def test_every_value_of_the_schema_reaches_the_chunk_exactly(schema: str) -> None:
    t0 = 1_800_000_000 * SECOND
    router = RunRouter(10**9, lambda kind, message: None)
    router.begin(None, None, [], 0.0)
    router.run_start(RunStart("1", "TEST", t0, None, "job", "f.nxs", (0, 99)), 0.0)
    for message in messages(schema, t0):
        router.log(decode(message, LOG_SCHEMAS))
    taken = router.take()
    assert_every_value_arrived({name: [log_series(entries)] for name, entries in taken.logs.items()}, t0)


def test_f142_strings_and_string_arrays() -> None:
    t0 = 1_800_000_000 * SECOND
    router = RunRouter(10**9, lambda kind, message: None)
    router.begin(None, None, [], 0.0)
    router.run_start(RunStart("1", "TEST", t0, None, "job", "f.nxs", (0, 99)), 0.0)
    for k, value in enumerate(["open", np.array(["a", "bcd"]), np.array(["e"])]):
        router.log(decode(serialise_f142(value, "shutter", t0 + k), LOG_SCHEMAS))
    log = log_series(router.take().logs["shutter"])
    assert log.bins.constituents["data"].dtype == sc.DType.string
    assert [list(log.data.values[i].values) for i in range(3)] == [["open"], ["a", "bcd"], ["e"]]


def test_an_array_beyond_the_bound_is_skipped_with_its_reason() -> None:
    with pytest.raises(Skipped) as skipped:
        decode(serialise_f144("camera", np.zeros(MAX_LOG_ELEMENTS + 1, np.uint8), 1), LOG_SCHEMAS)
    assert skipped.value.reason == "log_too_long"


SEEDS = [
    *messages("f144", 0),
    *messages("f142", 0),
    serialise_f142("open", "s", 1),
    serialise_f142(np.array(["a"]), "s", 1),
]


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(range(len(SEEDS))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_a_log_message_that_decodes_always_builds_a_log(seed: int, changes: list[tuple[int, int]]) -> None:
    """Hostile bytes in a log message (another value type in the union, a length, a payload, a time): the reader
    skips it (as the listener decodes: :func:`decode_checked`), or its value builds a log; never an exception
    while a chunk is built."""
    buffer = bytearray(SEEDS[seed])
    for position, value in changes:
        buffer[position % len(buffer)] = value
    try:
        record = decode_checked(bytes(buffer), "sampleEnv", 0, 0, 10**8)
    except Skipped:
        return
    log = log_series([(record.time_ns, record.value)])
    assert log.sizes == {"time": 1}


# --- through the broker ---------------------------------------------------------------------------------------------
def test_every_f144_type_and_a_changing_array_length_reach_the_chunks_and_the_run_ends(
    kafka_broker: Broker, kafka_topics
) -> None:
    """A run with f144 values of every type on the sampleEnv topic, and a value beyond the bound (skipped and
    counted): every chunk is built (a log never fails one), every value arrives exactly, the run ends."""
    topics = kafka_topics()
    source, t0 = listener_in_a_run(kafka_broker, topics)
    try:
        too_long = serialise_f144("camera", np.zeros(MAX_LOG_ELEMENTS + 1, np.uint8), t0 + SECOND)
        send(kafka_broker, topics["sampleEnv"], [*messages("f144", t0), too_long])
        send(kafka_broker, topics["events"], [pulses([t0 + k * SECOND for k in range(1, 10)])])
        send(kafka_broker, topics["runInfo"], [run_stop(t0 + 10 * SECOND)])
        got: list[Extracted] = drain(source)
        health = source.health()
    finally:
        source.disconnect()

    assert got[-1].status is RunStatus.EndRun
    assert sum(e.chunk.bins.size().sum().value for e in got) == 9 * 3
    logs: dict[str, list[sc.DataArray]] = {}
    for e in got:
        for name in CASES.keys() & e.chunk.coords.keys():
            logs.setdefault(name, []).append(e.chunk.coords[name].value)
    assert_every_value_arrived(logs, t0)
    assert all("camera" not in e.chunk.coords for e in got)
    assert health.counters["skipped_log_too_long"] == 1
    assert health.counters["messages_skipped"] == 1
    assert health.counters["internal_errors"] == 0
