"""End to end: the daemon (subprocess) reduces what ``livereduce-kafka-replay`` streams through the real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import scipp as sc

from conftest import SANS2D_EVENTS, Sans2dReference, poll_until
from livereduce.protocols.kafka.times import datetime_to_ns

from .conftest import Broker
from .helpers import replay

TOF_EDGES = np.linspace(0.0, 100_000.0, 101)
PIXELS = 130_000

HISTOGRAM_PROC = """
    import scipp as sc
    from livereduce.engines.scipp.chunk import flat_events
    events = flat_events(input)
    pixels = events.hist(event_id=sc.arange("event_id", 0, 130_001, unit=None, dtype="int32"))
    tof = events.hist(event_time_offset=sc.linspace("event_time_offset", 0.0, 100_000.0, 101, unit="us"))
    output = sc.DataGroup({"pixels": pixels, "tof": tof})
"""

SAVE_PER_RUN = """
    import os
    from pathlib import Path
    import scipp as sc
    out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
    out.mkdir(exist_ok=True)
    run = input["pixels"].coords["run_number"].value
    sc.io.save_hdf5(input, out / f"run_{run}.h5")
    (out / "mtd.txt").write_text(" ".join(sorted(mtd)))
    output = input
"""


@dataclass(frozen=True)
class Stream:
    """The session broker and fresh topics for one test."""

    broker: Broker
    topics: dict[str, str]


@pytest.fixture
def stream(kafka_broker: Broker, kafka_topics) -> Stream:
    return Stream(kafka_broker, kafka_topics())


def kafka_config(broker: Broker, topics: dict[str, str], **keys: object) -> dict:
    return {
        "listener": "KafkaEventListener",
        "address": broker.address,
        "topics": topics,
        "update_every": 0.2,
        "preserve_events": False,
        "run_transition": "Stop",
        **keys,
    }


def load(path: Path) -> sc.DataGroup:
    return sc.io.load_hdf5(path)


def assert_histograms(result: sc.DataGroup, reference: Sans2dReference, pulses: slice = slice(None)) -> None:
    ids, tof = reference.event_id[pulses], reference.event_time_offset[pulses]
    np.testing.assert_array_equal(result["pixels"].values, np.bincount(ids, minlength=PIXELS))
    np.testing.assert_array_equal(result["tof"].values, np.histogram(tof, TOF_EDGES)[0])


def status_source(workdir: Path) -> str:
    try:
        status = json.loads((workdir / "status.json").read_text())
    except (OSError, ValueError):
        return ""
    return status.get("engine", {}).get("source", "")


@pytest.mark.parametrize("schema", ["ev44", "ev42"])
def test_sans2d_through_kafka_equals_numpy(daemon, stream: Stream, sans2d, sans2d_reference, schema):
    kafka_broker, topics = stream.broker, stream.topics
    replay(kafka_broker, topics, "--speed=0", f"--schema={schema}", "--run-number=31415", file=str(sans2d))
    run = daemon(kafka_config(kafka_broker, topics), {"proc": HISTOGRAM_PROC, "post_proc": SAVE_PER_RUN}).finish()

    assert run.returncode == 0, run.log
    assert "Run #31415 ended. RunTransitionBehavior Stop." in run.log
    assert "Traceback" not in run.log
    result = load(run.workdir / "out" / "run_31415.h5")
    assert result["pixels"].sum().value == SANS2D_EVENTS
    assert_histograms(result, sans2d_reference)


def test_from_start_of_run_started_mid_run_gets_the_whole_run(daemon, stream: Stream, sans2d, sans2d_reference):
    kafka_broker, topics = stream.broker, stream.topics
    producer = subprocess.Popen(
        [sys.executable, "-m", "livereduce.tools.kafka_replay", str(sans2d), "--broker", kafka_broker.address,
         "--speed=5", "--run-number=2", *[f"--topic={role}={name}" for role, name in topics.items()]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert producer.stdout.readline().startswith("Replaying")
        assert "(pl72)" in producer.stdout.readline()  # the run has begun; now start the daemon
        process = daemon(kafka_config(kafka_broker, topics), {"proc": HISTOGRAM_PROC, "post_proc": SAVE_PER_RUN})
        process.wait_for_log(lambda log: "Chunk 0:" in log)
        assert producer.poll() is None  # the daemon started while the run was going on
        run = process.finish()
    finally:
        producer.kill()
        producer.wait()

    assert run.returncode == 0, run.log
    assert_histograms(load(run.workdir / "out" / "run_2.h5"), sans2d_reference)


def test_now_gets_only_what_follows(daemon, kafka_broker: Broker, kafka_topics, sans2d, sans2d_reference):
    topics = kafka_topics()
    replay(kafka_broker, topics, "--speed=0", "--run-number=1", file=str(sans2d))
    process = daemon(
        kafka_config(kafka_broker, topics, start="now"), {"proc": HISTOGRAM_PROC, "post_proc": SAVE_PER_RUN}
    )
    poll_until(lambda: "waiting for a run start" in status_source(process.workdir), "the daemon to wait for a run")
    replay(kafka_broker, topics, "--speed=0", "--run-number=2", file=str(sans2d))
    run = process.finish()

    assert run.returncode == 0, run.log
    assert "Run #2 ended" in run.log
    assert "Run #1" not in run.log  # ended before the start: no transition, no data
    assert not (run.workdir / "out" / "run_1.h5").exists()
    assert_histograms(load(run.workdir / "out" / "run_2.h5"), sans2d_reference)  # it would have seen run 1 alike


def test_a_time_gets_exactly_the_pulses_from_it(daemon, kafka_broker: Broker, kafka_topics, sans2d, sans2d_reference):
    topics = kafka_topics()
    first_pulse = datetime(2026, 4, 1, 12, 0, 0, tzinfo=UTC)
    replay(kafka_broker, topics, "--speed=0", "--run-number=3", f"--start-time={first_pulse.isoformat()}",
           file=str(sans2d))  # fmt: skip
    times = sans2d_reference.pulse_times.astype(np.int64)
    pulse = 200
    when = datetime_to_ns(first_pulse) + int(times[pulse] - times[0])
    start = datetime.fromtimestamp(when // 10**9, UTC).replace(microsecond=(when % 10**9 + 999) // 1000)
    assert datetime_to_ns(start) - when < 1000  # at most 1 µs after pulse 200, long before pulse 201
    run = daemon(
        kafka_config(kafka_broker, topics, start=start.isoformat()), {"proc": HISTOGRAM_PROC, "post_proc": SAVE_PER_RUN}
    ).finish()

    assert run.returncode == 0, run.log
    assert_histograms(load(run.workdir / "out" / "run_3.h5"), sans2d_reference, sans2d_reference.pulses(pulse + 1, 300))


@pytest.mark.parametrize("transition", ["Restart", "Rename"])
def test_two_runs_back_to_back(daemon, stream: Stream, sans2d, sans2d_reference, transition):
    kafka_broker, topics = stream.broker, stream.topics
    process = daemon(
        kafka_config(kafka_broker, topics, run_transition=transition),
        {"proc": HISTOGRAM_PROC, "post_proc": SAVE_PER_RUN},
    )
    poll_until(lambda: "waiting for a run start" in status_source(process.workdir), "the daemon to wait for a run")
    replay(kafka_broker, topics, "--speed=0", "--loops=2", "--run-number=7", file=str(sans2d))
    process.wait_for_log(lambda log: "Run #8 ended" in log)
    if transition == "Rename":  # the next cycle's post_proc sees both kept outputs in mtd
        mtd = process.workdir / "out" / "mtd.txt"
        poll_until(lambda: {"result_7", "result_8"} <= set(mtd.read_text().split()), "result_7 and result_8 in mtd")
    process.send(signal.SIGTERM)
    run = process.finish()

    assert run.returncode == 0, run.log
    assert "Run #7 ended" in run.log
    for number in (7, 8):  # a new accumulation for each run
        assert_histograms(load(run.workdir / "out" / f"run_{number}.h5"), sans2d_reference)
    if transition == "Rename":
        assert "Output of run #7 kept as 'result_7'" in run.log


def test_broker_stopped_and_restarted(daemon, private_broker: Broker, kafka_topics, sans2d, sans2d_reference):
    topics = kafka_topics(broker=private_broker)
    process = daemon(
        kafka_config(private_broker, topics, run_transition="Restart"),
        {"proc": HISTOGRAM_PROC, "post_proc": SAVE_PER_RUN},
    )
    replay(private_broker, topics, "--speed=0", "--run-number=1", file=str(sans2d))
    process.wait_for_log(lambda log: "Run #1 ended" in log)
    private_broker.stop()
    poll_until(
        lambda: status_source(process.workdir).startswith("broker unreachable since"),
        lambda: f"the status to report the broker unreachable: {status_source(process.workdir)}",
    )
    assert process.process.poll() is None  # the daemon keeps running
    private_broker.start()  # memory storage: no topics, no data
    private_broker.create_topics(topics.values())
    replay(private_broker, topics, "--speed=0", "--run-number=2", file=str(sans2d))
    process.wait_for_log(lambda log: "Run #2 ended" in log, timeout=120)
    process.send(signal.SIGTERM)
    run = process.finish()

    assert run.returncode == 0, run.log
    assert f"Kafka: broker {private_broker.address} unreachable" in run.log
    assert f"Kafka: broker {private_broker.address} reachable again" in run.log
    assert_histograms(load(run.workdir / "out" / "run_2.h5"), sans2d_reference)


def test_kafka_secrets_are_not_logged(daemon, kafka_broker: Broker, kafka_topics, sans2d):
    topics = kafka_topics()
    replay(kafka_broker, topics, "--speed=0", file=str(sans2d))
    secrets = {"sasl.username": "beamline-user", "sasl.password": "s3cr3t-pa55"}
    run = daemon(kafka_config(kafka_broker, topics, kafka=secrets), {"post_proc": "output = input"}).finish()

    assert run.returncode == 0, run.log
    assert "sasl.password=***" in run.log  # the settings are logged, but not the values
    for secret in secrets.values():
        assert secret not in run.log
        assert secret not in run.stdout
