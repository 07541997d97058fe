"""``python -m livereduce.tools.kafka_synthetic``: runs of random events at a real-time rate, on tansu."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
from streaming_data_types import deserialise_6s4t, deserialise_ev44, deserialise_pl72

from .helpers import SECOND, read_messages


def test_runs_at_a_real_time_rate_stamped_with_the_wall_clock(kafka_broker, kafka_topics):
    """Two runs of 0.5 s at 60 Hz, 6,000 events/s over 40 pixels, from 0.5 s after start: pl72, 30 ev44 of 100
    events each sent when due (reference_time = the record's time, within a second of the wall clock when sent),
    6s4t 1 ms after the last pulse; the second run 1 s after the first stopped."""
    topics = kafka_topics(("events", "runInfo"))
    instrument = topics["events"].removesuffix("_events")
    began = time.time_ns()
    result = subprocess.run(
        [sys.executable, "-m", "livereduce.tools.kafka_synthetic", "--broker", kafka_broker.address, "--rate", "6000",
         "--pixels", "40", "--run-seconds", "0.5", "--runs", "2", "--run-number", "7", "--start-in", "0.5",
         "--instrument", instrument, "--tile", "16", "--compression", "lz4"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ended = time.time_ns()
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("run ")]
    assert [line.split(", at most")[0] for line in lines] == [
        "run 7: 30 pulses, 3000 events",
        "run 8: 30 pulses, 3000 events",
    ]
    run_info = read_messages(kafka_broker, topics["runInfo"])
    starts = [deserialise_pl72(m.value()) for m in run_info[::2]]
    stops = [deserialise_6s4t(m.value()) for m in run_info[1::2]]
    assert [(s.run_name, s.instrument_name) for s in starts] == [("7", instrument), ("8", instrument)]
    assert [s.run_name for s in stops] == ["7", "8"]
    events = [(m.timestamp()[1], deserialise_ev44(m.value())) for m in read_messages(kafka_broker, topics["events"])]
    assert len(events) == 60
    times = np.array([e.reference_time[0] for _, e in events])
    assert [e.message_id for _, e in events] == list(range(60))
    assert all(stamp == e.reference_time[0] // 1_000_000 for stamp, e in events)
    assert began + SECOND // 2 <= times[0]
    assert times[-1] <= ended
    assert np.all(np.abs(np.diff(times[:30]) - SECOND / 60) < 1)
    assert starts[0].start_time * 1_000_000 < times[0]
    assert times[29] < stops[0].stop_time * 1_000_000 < times[30]
    assert starts[1].start_time - stops[0].stop_time == 1000
    for _, e in events:
        assert e.pixel_id.size == 100
        assert 0 <= e.pixel_id.min()
        assert e.pixel_id.max() < 40
        assert np.array_equal(e.pixel_id[16:32], e.pixel_id[:16])  # --tile 16
