"""Fuzzing the ADARA reader in process (CI size; the full run of >= 100,000 malformed packets is
``python bench/fuzz_adara.py``): hypothesis-generated input and the mutation fuzzer of ``bench/fuzz_adara.py``
over a captured fake-SMS stream. Nothing may escape but the framing error the listener turns into a reconnect."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livereduce.protocols import skipped_counter
from livereduce.protocols.adara import decode, encode, framing
from livereduce.protocols.adara.packets import HANDLED_VERSIONS, HEADER, format_word

_spec = importlib.util.spec_from_file_location(
    "fuzz_adara", Path(__file__).resolve().parents[2] / "bench" / "fuzz_adara.py"
)
fuzz_adara = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_adara"] = fuzz_adara
_spec.loader.exec_module(fuzz_adara)

T0 = fuzz_adara.T0
CI_MALFORMED = 3000
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_mutation_fuzzer_ci_size():
    report = fuzz_adara.fuzz(CI_MALFORMED, seed=11)
    assert report.malformed >= CI_MALFORMED
    assert report.failures == []
    assert report.slowest_s < 5.0
    assert report.rss_growth_mb < 200
    assert report.chunks > report.cases  # the chunks were built, not just the packets read
    # every kind of check in the decoders was reached
    for reason in ("bank event count beyond the payload", "monitor event count beyond the payload", "unknown type"):
        assert report.skipped[skipped_counter(reason)] > 0


def _prologue() -> bytes:
    return b"".join(fuzz_adara.packets_of(fuzz_adara.capture(pulses=8))[:12])


PROLOGUE = None


def prologue() -> bytes:
    global PROLOGUE  # noqa: PLW0603 - captured once for all examples
    if PROLOGUE is None:
        PROLOGUE = _prologue()
    return PROLOGUE


@SETTINGS
@given(data=st.binary(max_size=4096), seed=st.integers(0, 2**32 - 1))
def test_arbitrary_bytes(data, seed):
    harness = fuzz_adara.Harness("now")
    harness.feed(prologue() + data, np.random.default_rng(seed))
    harness.extract()


@SETTINGS
@given(
    kind=st.sampled_from([int(t) for t in HANDLED_VERSIONS]),
    version=st.integers(0, 2),
    payload=st.binary(max_size=256).map(lambda b: b + b"\0" * (-len(b) % 4)),
    start=st.sampled_from(["now", "from_start_of_run"]),
)
def test_framed_random_payloads_of_every_handled_type(kind, version, payload, start):
    packet = HEADER.pack(len(payload), format_word(kind, version), 1_000_000_000, 0) + payload
    harness = fuzz_adara.Harness(start)
    harness.feed(prologue() + packet + encode.heartbeat(T0), np.random.default_rng(0))
    harness.extract()
    assert harness.resyncs == 0  # a well-framed packet never breaks the stream


@SETTINGS
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    huge=st.sampled_from([0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 1 << 29]),
    where=st.integers(0, 100),
)
def test_huge_counts_in_banked_events_drop_the_packet_whole(counts, huge, where):
    rng = np.random.default_rng(len(counts))
    banks = {
        b: (rng.integers(0, 10**6, n).astype(np.uint32), rng.integers(0, 100, n).astype(np.uint32))
        for b, n in enumerate(counts)
    }
    packet = bytearray(encode.banked_event(T0, banks))
    words = len(packet) // 4
    struct.pack_into("<I", packet, 4 * (8 + where % (words - 8)), huge)  # somewhere in the sections
    (frame,) = framing.Framer().feed(bytes(packet))
    try:
        walked = decode.walk_banked_events(frame.header, frame.payload)
    except decode.PacketError:
        return
    assert walked.event_count + sum(walked.special.values()) <= (len(frame.payload) - 16) // 8


@SETTINGS
@given(
    sections=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 30)), max_size=8),
    offset=st.integers(0, 2**31 - 1),
    cor=st.booleans(),
)
def test_banked_event_round_trip(sections, offset, cor):
    rng = np.random.default_rng(len(sections))
    banks = {}
    for bank, n in sections:
        banks[bank] = (rng.integers(0, 2**31, n).astype(np.uint32), rng.integers(0, 2**32, n).astype(np.uint32))
    (frame,) = framing.Framer().feed(encode.banked_event(T0, banks, cor=cor, tof_offset=offset))
    walked = decode.walk_banked_events(frame.header, frame.payload)
    pairs = b"".join(bytes(frame.payload[at : at + 8 * n]) for at, n, _, _ in walked.sections)
    first = np.cumsum([0] + [n for _, n, _, _ in walked.sections])
    runs = [(int(first[i]), n, added) for i, (_, n, added, _) in enumerate(walked.sections) if added]
    pixel, tof = decode.event_arrays(pairs, runs)
    expected = [(t, p) for tofs, pixels in banks.values() for t, p in zip(tofs, pixels, strict=True)]
    assert pixel.tolist() == [p for _, p in expected]
    added = 0 if cor else offset
    np.testing.assert_array_equal(tof, np.float32([(int(t) + added) / 10 for t, _ in expected]))
