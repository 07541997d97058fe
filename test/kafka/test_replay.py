"""``livereduce-kafka-replay``: what it writes to the broker (read back and decoded), and how it fails."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from streaming_data_types import deserialise_6s4t, deserialise_ev42, deserialise_ev44, deserialise_f144

from livereduce.protocols.kafka.schemas import RUN_SCHEMAS, RunStart, RunStop, decode
from livereduce.protocols.kafka.times import datetime_to_ns

from .conftest import Broker, free_port
from .helpers import read_topic, replay, sns_file

START = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)


def cli(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livereduce.tools.kafka_replay", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_sns_layout_file_becomes_one_run(kafka_broker: Broker, kafka_topics, tmp_path: Path):
    written = sns_file(tmp_path / "sns.nxs")
    topics = kafka_topics()
    replay(kafka_broker, topics, "--speed=0", f"--start-time={START.isoformat()}", file=str(tmp_path / "sns.nxs"))

    start, stop = (decode(value, RUN_SCHEMAS) for value in read_topic(kafka_broker, topics["runInfo"]))
    assert isinstance(start, RunStart)
    assert isinstance(stop, RunStop)
    assert (start.run_name, start.instrument_name, start.job_id) == ("12345", "SNAP", stop.job_id)
    assert start.detector_ids == (
        min(row[0] for rows in written["events"] for row in rows),
        max(row[0] for rows in written["events"] for row in rows),
    )
    assert start.start_ns == datetime_to_ns(START)
    messages = [deserialise_ev44(value) for value in read_topic(kafka_broker, topics["events"])]
    assert len(messages) == len(written["times"])
    sent = np.array([m.reference_time[0] for m in messages])
    np.testing.assert_array_equal(sent - sent[0], np.rint(written["times"] * 1e9).astype(np.int64))
    assert sent[0] == start.start_ns
    assert stop.stop_ns > sent[-1]
    for message, expected in zip(messages, written["events"], strict=True):
        rows = sorted(zip(message.pixel_id.tolist(), (message.time_of_flight / 1000).tolist(), strict=True))
        assert [r[0] for r in rows] == [e[0] for e in expected]  # both banks merged into the pulse
        np.testing.assert_allclose([r[1] for r in rows], [e[1] for e in expected], atol=5e-4)
    logs = [deserialise_f144(value) for value in read_topic(kafka_broker, topics["sampleEnv"])]
    temperature = [(log.timestamp_unix_ns, float(log.value)) for log in logs if log.source_name == "SampleTemp"]
    file_times = [round(t * 1e9) for t, _ in written["temperature"]]
    assert [t - start.start_ns for t, _ in temperature] == [t for t in file_times if t <= written["times"][-1] * 1e9]
    assert [v for _, v in temperature] == list(written["temperature"][: len(temperature), 1])
    charge = [float(log.value) for log in logs if log.source_name == "proton_charge"]
    np.testing.assert_allclose(charge, written["charge"])


def test_ev42_one_pulse_per_message_and_ev44_several(kafka_broker: Broker, kafka_topics, tmp_path: Path):
    written = sns_file(tmp_path / "sns.nxs", pulses=20)
    ev42_topics, ev44_topics = kafka_topics(), kafka_topics()
    replay(kafka_broker, ev42_topics, "--speed=0", "--schema=ev42", file=str(tmp_path / "sns.nxs"))
    replay(kafka_broker, ev44_topics, "--speed=0", "--pulses-per-message=7", file=str(tmp_path / "sns.nxs"))

    ev42 = [deserialise_ev42(value) for value in read_topic(kafka_broker, ev42_topics["events"])]
    ev44 = [deserialise_ev44(value) for value in read_topic(kafka_broker, ev44_topics["events"])]
    assert len(ev42) == 20
    assert [len(m.reference_time) for m in ev44] == [7, 7, 6]
    counts = [len(rows) for rows in written["events"]]
    assert [m.detector_id.size for m in ev42] == counts
    assert np.diff(np.concatenate([m.reference_time_index for m in ev44[:1]])).tolist() == counts[:6]
    pulses = np.array([m.pulse_time for m in ev42])
    assert np.all(np.diff(pulses) > 0)  # --speed 0 without --start-time: the send times, increasing


def test_loops_are_consecutive_runs_that_never_overlap(kafka_broker: Broker, kafka_topics, tmp_path: Path):
    sns_file(tmp_path / "sns.nxs")
    topics = kafka_topics()
    replay(kafka_broker, topics, "--speed=0", "--loops=3", "--run-number=5", file=str(tmp_path / "sns.nxs"))
    replay(kafka_broker, topics, "--speed=0", "--run-number=8", file=str(tmp_path / "sns.nxs"))  # a second replay

    control = [decode(value, RUN_SCHEMAS) for value in read_topic(kafka_broker, topics["runInfo"])]
    assert [type(m).__name__ for m in control] == ["RunStart", "RunStop"] * 4
    assert [m.run_name for m in control] == ["5", "5", "6", "6", "7", "7", "8", "8"]
    bounds = [m.start_ns if isinstance(m, RunStart) else m.stop_ns for m in control]
    assert bounds == sorted(bounds)
    assert len(read_topic(kafka_broker, topics["events"])) == 4 * 20


def test_speed_spaces_the_pulses_by_the_file_over_the_speed(kafka_broker: Broker, kafka_topics, tmp_path: Path):
    written = sns_file(tmp_path / "sns.nxs", pulses=12)
    topics = kafka_topics()
    replay(kafka_broker, topics, "--speed=4", file=str(tmp_path / "sns.nxs"))

    sent = np.array([deserialise_ev44(v).reference_time[0] for v in read_topic(kafka_broker, topics["events"])])
    np.testing.assert_array_equal(sent - sent[0], np.rint(written["times"] * 1e9 / 4).astype(np.int64))


def test_the_sans2d_file_as_a_command(kafka_broker: Broker, kafka_topics, sans2d: Path):
    topics = kafka_topics()
    result = cli(str(sans2d), "--broker", kafka_broker.address, "--speed=0", "--run-number=99",
                 *[f"--topic={role}={name}" for role, name in topics.items()])  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "run 99: 300 pulses, 237078 events in 300 ev44 messages" in result.stdout
    stop = deserialise_6s4t(read_topic(kafka_broker, topics["runInfo"])[-1])
    assert stop.run_name == "99"


def test_create_topics(kafka_broker: Broker, tmp_path: Path):
    sns_file(tmp_path / "sns.nxs")
    instrument = f"NEW{free_port()}"
    missing = cli(str(tmp_path / "sns.nxs"), "--broker", kafka_broker.address, f"--instrument={instrument}")
    created = cli(str(tmp_path / "sns.nxs"), "--broker", kafka_broker.address, f"--instrument={instrument}",
                  "--speed=0", "--create-topics")  # fmt: skip

    assert missing.returncode == 3
    assert missing.stderr.strip() == (
        f"livereduce-kafka-replay: topic(s) {instrument}_runInfo, {instrument}_events, {instrument}_sampleEnv "
        f"do not exist on {kafka_broker.address} (--create-topics)"
    )
    assert created.returncode == 0, created.stderr
    assert len(read_topic(kafka_broker, f"{instrument}_events")) == 20


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["--speed=-1"], 2, "argument --speed: expected a number >= 0"),
        (["--loops=0"], 2, "argument --loops: expected an integer >= 1"),
        (["--start-time=yesterday"], 2, "argument --start-time: expected an ISO-8601 time"),
        (["--topic=foo=bar"], 2, "--topic: unknown role foo (roles: events, runInfo, sampleEnv, monitors)"),
        (["--kafka=nonsense"], 2, "--kafka 'nonsense': expected KEY=VALUE"),
    ],
)
def test_invalid_arguments(tmp_path: Path, arguments: list[str], code: int, message: str):
    sns_file(tmp_path / "sns.nxs")
    result = cli(str(tmp_path / "sns.nxs"), "--broker=127.0.0.1:1", *arguments)

    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_unreachable_broker_exit_3(tmp_path: Path):
    sns_file(tmp_path / "sns.nxs")
    missing = cli(str(tmp_path / "nope.nxs"), "--broker=127.0.0.1:1")
    nowhere = f"127.0.0.1:{free_port()}"
    unreachable = cli(str(tmp_path / "sns.nxs"), f"--broker={nowhere}", "--timeout=1")

    assert missing.returncode == 3
    assert "nope.nxs" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert unreachable.returncode == 3
    assert f"livereduce-kafka-replay: Kafka broker {nowhere} unreachable" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_installed_command():
    result = subprocess.run(["livereduce-kafka-replay", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "--speed" in result.stdout
