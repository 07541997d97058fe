"""End to end on Kafka: a post_proc edit during a run swaps the script in place (issue 17 §1), as on ADARA
(``test/test_post_proc_reload.py``, whose checks these are): the next output uses the new script at once, the
accumulation keeps growing, nothing restarts, and the consumer is neither re-created nor sought (one
``Kafka topics`` line from its one connect, one run located)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon
from test_post_proc_reload import check_the_swap, edit_post_proc_during_the_run, post_proc

from .conftest import Broker


def test_a_post_proc_edit_during_a_kafka_run_keeps_the_accumulation_and_the_consumer(
    daemon: Callable[..., Daemon], kafka_broker: Broker, kafka_topics, sans2d: Path
) -> None:
    topics = kafka_topics(("events", "runInfo", "sampleEnv"))
    replay = subprocess.Popen(
        [sys.executable, "-m", "livereduce.tools.kafka_replay", "--broker", kafka_broker.address, "--speed", "3",
         *(f"--topic={role}={name}" for role, name in topics.items()), str(sans2d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        config = {"listener": "KafkaEventListener", "address": kafka_broker.address, "topics": topics}
        process = daemon({**config, "update_every": 0.5}, {"post_proc": post_proc(1)})
        outputs, seconds = edit_post_proc_during_the_run(process)
        log = check_the_swap(process, outputs)
        assert log.count("Kafka topics: ") == 1, log
        process.send(signal.SIGTERM)
        assert process.finish().returncode == 0
    finally:
        replay.terminate()
        replay.wait(10)
    print(f"edit -> first output of the new post_proc: {seconds:.2f} s")
