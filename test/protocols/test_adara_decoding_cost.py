"""What the ADARA reader does per event, kept cheap without changing a value: TOF words divided in float32 where
that is exact, and a segment that continues one just taken sized for as many events (no growth, no copy)."""

from __future__ import annotations

import numpy as np
import pytest

from livereduce.protocols.adara import decode, encode, framing
from livereduce.protocols.adara.client import ClientState
from livereduce.protocols.adara.geometry import minimal_idf
from livereduce.protocols.adara.packets import EPICS_EPOCH_OFFSET_S, RunStatusCode
from livereduce.protocols.adara.segments import DEFAULT_SEGMENT_EVENTS

T0 = (EPICS_EPOCH_OFFSET_S + 1_000_000_000) * 1_000_000_000  # Unix ns, whole EPICS seconds
PULSE_NS = 1_000_000_000 // 60


def reference_tof_us(words: np.ndarray) -> np.ndarray:
    """The definition: the u32 TOF word in 100 ns, divided by 10 in float64, rounded to float32 µs."""
    return (words.astype(np.float64) / 10.0).astype(np.float32)


@pytest.mark.parametrize("largest", [166_666, 2**24 - 1, 2**24, 2**24 + 3, 2**32 - 1])
def test_tof_words_convert_as_the_float64_division_rounded_to_float32(largest: int) -> None:
    """Below 2**24 the reader divides in float32 (exact operands, one rounding); a packet with a larger word is
    divided in float64 as a whole. Either way every bit equals the float64 definition."""
    rng = np.random.default_rng(largest)
    pairs = np.zeros((50_000, 2), np.uint32)
    pairs[:, 0] = rng.integers(0, largest, pairs.shape[0], endpoint=True)
    pairs[:4, 0] = [0, 1, largest - 1, largest]
    pairs[:, 1] = np.arange(pairs.shape[0])
    pixel, tof = decode.event_arrays(pairs.tobytes())
    np.testing.assert_array_equal(tof.view(np.uint32), reference_tof_us(pairs[:, 0]).view(np.uint32))
    np.testing.assert_array_equal(pixel, pairs[:, 1])


def test_tof_words_below_2_to_the_24_all_convert_exactly() -> None:
    """Every word the float32 path takes (0 .. 2**24 - 1), against the definition."""
    words = np.arange(2**24, dtype=np.uint32)
    out = np.empty(words.size, np.float32)
    decode.event_arrays(np.stack([words, words], axis=1).tobytes(), out=out)
    np.testing.assert_array_equal(out, reference_tof_us(words))


def test_a_segment_that_continues_a_taken_one_is_sized_for_as_many_events() -> None:
    """After take(), the next segment of the run is allocated once for the taken one's events and a quarter more
    (it is not grown, copying, from the default size); a new run's segment starts at the default again."""
    reserved: list[int] = []

    def allocate(n: int):
        reserved.append(n)
        return np.empty(n, np.int32), np.empty(n, np.float32), None

    client = ClientState("from_start_of_run", allocate=allocate)
    client.connected()
    feed(client, status(RunStatusCode.STATE, 0, 0), encode.geometry(minimal_idf("TEST", 0, 999), T0))
    feed(client, status(RunStatusCode.NEW_RUN, 1, 0))
    feed(client, *[pulse(i, 1000) for i in range(200)])
    assert client.take().event_count == 200_000
    del reserved[:]
    feed(client, *[pulse(200 + i, 1000) for i in range(200)])
    assert reserved == [max(DEFAULT_SEGMENT_EVENTS, 250_000)]  # one allocation, no growth
    assert client.take().event_count == 200_000
    feed(client, status(RunStatusCode.END_RUN, 1, 400), status(RunStatusCode.NEW_RUN, 2, 401))
    del reserved[:]
    feed(client, pulse(402, 2))
    assert reserved == [DEFAULT_SEGMENT_EVENTS]


def feed(client: ClientState, *packets: bytes) -> None:
    framer = framing.Framer()
    for frame in framer.feed(b"".join(packets)):
        client.handle(frame)
    assert not framer.skipped


def pulse(i: int, events: int) -> bytes:
    """A BANKED_EVENT of pulse ``i`` with ``events`` events on pixels 0, 1, ... (TOF 10 x pixel)."""
    ids = np.arange(events, dtype=np.uint32) % 1000
    return encode.banked_event(T0 + i * PULSE_NS, {1: (ids * 10, ids)}, charge=100)


def status(code: RunStatusCode, run: int, i: int) -> bytes:
    """A RUN_STATUS at the time of pulse ``i``."""
    return encode.run_status(run, 1_000_000_000 if run else 0, code, T0 + i * PULSE_NS)
