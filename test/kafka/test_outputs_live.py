"""End to end on Kafka: the SANS2D demo (demo/sans2d_live) saves the monitors of every cycle, from a stream with a
monitors topic through tansu (how the saves are kept and checked: test/test_outputs_live.py).

The stream is sent in blocks, each block's events and monitor events, and the next block only once the daemon has
saved every monitor event sent so far: at least one save per block holds monitors, whatever the machine's load.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
from streaming_data_types import serialise_ev44

from conftest import Daemon, Sans2dReference, poll_until
from test_outputs_live import check_the_run, demo_config, demo_scripts, kept_saves, saved_monitor_events

from .conftest import Broker
from .helpers import run_start, run_stop, send

RUN = "7"
BLOCKS = 3
PULSES_PER_MESSAGE = 10
MONITOR = "monitor_1"
MONITOR_TOF_NS = np.array([1_000_000, 9_000_500])
"""Each pulse's monitor events, ns (1000 µs and 9000.5 µs, exact in float32)."""


def event_messages(reference: Sans2dReference, pulses_ns: np.ndarray, block: np.ndarray) -> list[bytes]:
    """The SANS2D events of the pulses ``block`` as ev44 messages of PULSES_PER_MESSAGE pulses each."""
    messages = []
    for part in np.array_split(block, max(1, block.size // PULSES_PER_MESSAGE)):
        events = reference.pulses(int(part[0]), int(part[-1]) + 1)
        index = reference.event_index[part] - reference.event_index[part[0]]
        tof_ns = np.rint(reference.event_time_offset[events].astype(np.float64) * 1000).astype(np.int32)
        ids = reference.event_id[events].astype(np.int32)
        messages.append(serialise_ev44("sans2d_detector", int(part[0]), pulses_ns[part], index, tof_ns, ids))
    return messages


def monitor_message(pulses_ns: np.ndarray, block: np.ndarray) -> bytes:
    """MONITOR_TOF_NS for each pulse of ``block``, one ev44 message without pixel ids (a monitor's)."""
    index = np.arange(block.size) * MONITOR_TOF_NS.size
    return serialise_ev44(MONITOR, int(block[0]), pulses_ns[block], index, np.tile(MONITOR_TOF_NS, block.size), [])


def test_the_demo_saves_the_kafka_monitors_in_every_cycle(
    daemon: Callable[..., Daemon], kafka_broker: Broker, kafka_topics, sans2d_reference: Sans2dReference
) -> None:
    topics = kafka_topics(("events", "runInfo", "sampleEnv", "monitors"))
    config = demo_config("kafka_live.conf", address=kafka_broker.address, topics=topics)
    process = daemon(config, demo_scripts())
    reference = sans2d_reference
    file_ns = reference.pulse_times.astype(np.int64)
    pulses_ns = (time.time_ns() // 10**9 - 60) * 10**9 + (file_ns - file_ns[0])  # the file's pulses, a minute ago
    pixels = (int(reference.event_id.min()), int(reference.event_id.max()))
    send(kafka_broker, topics["runInfo"], [run_start(int(pulses_ns[0]), RUN, ids=pixels)])

    for block in np.array_split(np.arange(pulses_ns.size), BLOCKS):
        send(kafka_broker, topics["events"], event_messages(reference, pulses_ns, block))
        send(kafka_broker, topics["monitors"], [monitor_message(pulses_ns, block)])
        sent = np.repeat(pulses_ns[: block[-1] + 1], MONITOR_TOF_NS.size)

        def saved_all_sent(sent: np.ndarray = sent) -> bool:
            if process.process.poll() is not None:
                pytest.fail(f"the daemon exited with {process.process.returncode}: {process.log()}")
            pulses, _ = saved_monitor_events(kept_saves(process.workdir), MONITOR)
            return np.array_equal(pulses, sent)

        poll_until(saved_all_sent, lambda: f"saves of every monitor event sent; the log:\n{process.log()}", 60, 0.2)
    send(kafka_broker, topics["runInfo"], [run_stop(int(pulses_ns[-1]) + 10**6, RUN)])
    pulses, tofs = check_the_run(process.finish(), MONITOR)

    np.testing.assert_array_equal(pulses, np.repeat(pulses_ns, MONITOR_TOF_NS.size))
    np.testing.assert_array_equal(tofs, np.tile(np.float32(MONITOR_TOF_NS / 1000), pulses_ns.size))
