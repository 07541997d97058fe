"""Hostile messages: the decoder never fails in another way than ``Skipped`` (hypothesis), and more than 10,000
malformed messages interleaved with a real run through the real broker and the daemon are skipped and counted,
while the run is reduced exactly."""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipp as sc
from hypothesis import given, settings
from hypothesis import strategies as st
from streaming_data_types import (
    serialise_6s4t,
    serialise_ev42,
    serialise_ev44,
    serialise_f144,
    serialise_pl72,
)

from conftest import SANS2D_EVENTS, poll_until
from livereduce.protocols.kafka.f142 import serialise_f142
from livereduce.protocols.kafka.schemas import (
    EVENT_SCHEMAS,
    KNOWN_SCHEMAS,
    LOG_SCHEMAS,
    RUN_SCHEMAS,
    SKIP_REASONS,
    Skipped,
    decode,
)

from .conftest import Broker
from .helpers import replay, send

CORPUS_SIZE = 10_000

VALID: dict[str, bytes] = {
    "ev44": serialise_ev44("bank", 1, np.array([10, 20]), np.array([0, 2]), np.array([1, 2, 3]), np.array([4, 5, 6])),
    "ev42": serialise_ev42("bank", 1, 10, np.array([1, 2], np.uint32), np.array([3, 4])),
    "pl72": serialise_pl72("job", "f.nxs", start_time=1_700_000_000_000, run_name="7", instrument_name="X"),
    "6s4t": serialise_6s4t("job", run_name="7", stop_time=1_700_000_001_000),
    "f144": serialise_f144("temperature", np.array([1.0, 2.0]), 123),
    "f142": serialise_f142(2.5, "temperature", 123),
}
ACCEPTED = {"events": EVENT_SCHEMAS, "runInfo": RUN_SCHEMAS, "sampleEnv": LOG_SCHEMAS}


def outcome(buffer: bytes, accepted: frozenset[str] = KNOWN_SCHEMAS) -> str | None:
    """The skip reason, or None when the message decodes."""
    try:
        decode(buffer, accepted)
    except Skipped as skipped:
        return skipped.reason
    return None


# --- in process: any bytes -------------------------------------------------------------------------------------
@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_skipped(buffer: bytes) -> None:
    assert outcome(buffer) in (None, *SKIP_REASONS)


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(sorted(VALID)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
)
def test_mutated_messages_decode_or_are_skipped(schema: str, changes: list[tuple[int, int]], cut: int) -> None:
    buffer = bytearray(VALID[schema])
    for position, value in changes:
        buffer[position % len(buffer)] = value
    assert outcome(bytes(buffer[: max(cut, len(buffer) // 2)])) in (None, *SKIP_REASONS)


# --- through the broker and the daemon ---------------------------------------------------------------------------
def corpus(role: str, size: int, rng: np.random.Generator) -> tuple[list[bytes], Counter[str]]:
    """``size`` messages the listener must skip on a topic of ``role``, and how many per reason."""
    accepted = ACCEPTED[role]
    foreign = sorted(set(VALID) - accepted)
    messages: list[bytes] = []
    reasons: Counter[str] = Counter()
    while len(messages) < size:
        kind = rng.integers(6)
        if kind == 0:  # random bytes
            candidate = rng.bytes(int(rng.integers(0, 200)))
        elif kind == 1:  # a valid message under an unknown identifier
            valid = VALID[sorted(VALID)[rng.integers(len(VALID))]]
            identifier = bytes(rng.integers(ord("A"), ord("Z") + 1, 4).astype(np.uint8))
            candidate = valid[:4] + identifier + valid[8:]
        elif kind == 2:  # a valid message of a schema this topic does not carry
            candidate = VALID[foreign[rng.integers(len(foreign))]]
        else:  # a valid message of this topic, truncated or with bytes overwritten
            valid = bytearray(VALID[sorted(accepted)[rng.integers(len(accepted))]])
            if kind == 3:
                candidate = bytes(valid[: rng.integers(0, len(valid))])
            else:
                for _ in range(rng.integers(1, 9)):
                    valid[rng.integers(8, len(valid))] = rng.integers(256)
                candidate = bytes(valid)
        reason = outcome(candidate, accepted)
        if reason is not None:  # what still decodes is not malformed (a changed value): left out
            messages.append(candidate)
            reasons[reason] += 1
    return messages, reasons


def test_ten_thousand_malformed_messages_are_skipped_and_counted(
    daemon, kafka_broker: Broker, kafka_topics, sans2d: Path
) -> None:
    topics = kafka_topics()
    rng = np.random.default_rng(20260101)
    sizes = {"events": CORPUS_SIZE // 2, "runInfo": CORPUS_SIZE // 4, "sampleEnv": CORPUS_SIZE // 4}
    corpora = {role: corpus(role, size, rng) for role, size in sizes.items()}
    expected = sum((reasons for _, reasons in corpora.values()), Counter())
    assert sum(expected.values()) >= CORPUS_SIZE
    assert set(expected) >= {"too_short", "unknown_schema", "unexpected_schema", "malformed", "invalid"}

    def hostile(part: int) -> None:
        for role, (messages, _) in corpora.items():
            half = len(messages) // 2
            send(kafka_broker, topics[role], messages[:half] if part == 0 else messages[half:])

    process = daemon(
        {"listener": "KafkaEventListener", "address": kafka_broker.address, "topics": topics, "update_every": 0.2},
        {"post_proc": SAVE},
    )
    poll_until(lambda: "waiting for a run start" in source(process.workdir), "the daemon to wait for a run")
    hostile(0)  # before the run
    during = threading.Thread(target=hostile, args=(1,))  # and while it streams
    during.start()
    replay(kafka_broker, topics, "--speed=20", "--run-number=5", file=str(sans2d))
    during.join()

    def counters() -> dict[str, int]:
        return engine_status(process.workdir).get("source_counters", {})

    poll_until(lambda: "Run #5 ended" in process.log(), lambda: process.log()[-3000:], timeout=120)
    poll_until(
        lambda: sum(v for k, v in counters().items() if k.startswith("skipped_")) >= sum(expected.values()),
        lambda: f"all malformed messages counted: {counters()} vs {dict(expected)}",
    )
    process.send(signal.SIGTERM)
    run = process.finish()

    assert run.returncode == 0, run.log
    assert "Traceback" not in run.log
    skipped = {key.removeprefix("skipped_"): value for key, value in counters().items() if key.startswith("skipped_")}
    assert skipped == dict(expected)
    result = sc.io.load_hdf5(run.workdir / "out" / "run_5.h5")
    assert result.sum().value == SANS2D_EVENTS  # the run itself, exactly
    warnings = [line for line in run.log.splitlines() if "skipped a message" in line]
    assert 0 < len(warnings) <= len(expected)  # one warning per reason and minute, not one per message


SAVE = """
    import os
    from pathlib import Path
    import scipp as sc
    out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
    out.mkdir(exist_ok=True)
    run = input.coords["run_number"].value
    if run:
        sc.io.save_hdf5(input.bins.size(), out / f"run_{run}.h5")
    output = input
"""


def engine_status(workdir: Path) -> dict:
    try:
        return json.loads((workdir / "status.json").read_text()).get("engine", {})
    except (OSError, ValueError):
        return {}


def source(workdir: Path) -> str:
    return engine_status(workdir).get("source", "")


@pytest.mark.parametrize("role", sorted(ACCEPTED))
def test_corpus_is_what_it_claims(role: str) -> None:
    messages, reasons = corpus(role, 500, np.random.default_rng(1))
    assert len(messages) == 500
    assert all(outcome(message, ACCEPTED[role]) for message in messages)
    assert sum(reasons.values()) == 500
