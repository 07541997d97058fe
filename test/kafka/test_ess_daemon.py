"""End to end (issue 16): the daemon (subprocess) reduces an ESS stream as ESS's own fakes send it, checked against an
independent consumer (``deserialise_ev44`` + numpy) of the same topics.

The messages are made with ``ess-streaming-data-types``' serialisers in the shapes the ``beamlime`` fakes produce
(measured in ``bench/ess_fakes.py``'s records): per detector topic one ev44 per pulse at 14 Hz, source ``panel_0``,
``message_id`` always 0, pixel ids 1..16384, TOF normal(30 ms, 10 ms) in int32 ns (some negative); monitors on
``<inst>_beam_monitor`` (``monitor1``, ``monitor2``, pixel ids all 1); logs f144 on ``<inst>_motion``; no run start
or stop at all. Two instruments' detector and log topics make several topics per role; a second log topic carries
f144 values of every type the schema allows. The real fakes are run by ``bench/ess_fakes.py`` (its own venv).
"""

from __future__ import annotations

import json
import signal
import time

import numpy as np
from confluent_kafka import Consumer, KafkaError, TopicPartition
from streaming_data_types import deserialise_ev44, serialise_ev44, serialise_f144

from conftest import poll_until

from .conftest import Broker
from .helpers import SECOND, send

PIXELS = 16_384
TOF_EDGES_US = np.linspace(-20_000.0, 90_000.0, 111)

PROC = """
    import json, os
    from pathlib import Path
    import numpy as np
    import scipp as sc
    from livereduce.engines.scipp.chunk import flat_events
    events = flat_events(input)
    pixels = events.hist(event_id=sc.arange("event_id", 0, 16_386, unit=None, dtype="int32"))
    edges = sc.array(dims=["event_time_offset"], values=np.linspace(-20_000.0, 90_000.0, 111), unit="us")
    tof = events.hist(event_time_offset=edges)
    record = {"pulses": input.sizes["event_time_zero"], "run": int(input.coords["run_number"].value), "logs": {}}
    monitors = input.coords["monitors"].value if "monitors" in input.coords else {}
    record["monitors"] = {name: int(m.sizes[next(iter(m.dims))]) for name, m in monitors.items()}
    for name, coord in input.coords.items():
        if coord.dtype == sc.DType.DataArray:
            log = coord.value
            values = [v.values.tolist() for v in log.values] if log.bins is not None else log.values.tolist()
            times = log.coords["time"].values.astype("int64").tolist()
            record["logs"][name] = [[t, v, str(log.bins.constituents["data"].dtype if log.bins is not None
                                               else log.dtype)] for t, v in zip(times, values)]
    with (Path(os.environ["LIVEREDUCE_OUTPUT_DIR"]) / "chunks.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\\n")
    output = sc.DataGroup({"pixels": pixels, "tof": tof})
"""

POST_PROC = """
    import os
    from pathlib import Path
    import scipp as sc
    out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
    sc.io.save_hdf5(input, out / "tmp.h5")
    (out / "tmp.h5").replace(out / "accumulation.h5")
    output = input
"""

TYPED_VALUES: dict[str, object] = {
    **{f"scalar_{t}": np.array(np.iinfo(t).max, t) for t in ("int8", "uint8", "int16", "uint16", "int32", "uint32")},
    "scalar_int64": np.array(2**53 + 1, np.int64),
    "scalar_uint64": np.array(2**64 - 1, np.uint64),
    "scalar_float32": np.array(1.5, np.float32),
    "scalar_float64": np.array(0.1, np.float64),
    **{f"array_{t}": np.array([0, 1, np.iinfo(t).max], t) for t in ("int8", "uint8", "int16", "uint16", "uint32")},
    "array_int64": np.array([-(2**62), 2**53 + 1], np.int64),
    "array_uint64": np.array([1, 2**64 - 1], np.uint64),
    "array_float32": np.array([0.25, -1.5], np.float32),
}
"""f144 values of every type the schema allows (bool aside, which its serialiser refuses), at their edges."""


def detector(times: np.ndarray, rng: np.random.Generator) -> list[bytes]:
    """One ev44 per pulse, as ``fake_detectors`` sends them."""
    messages = []
    for t in times:
        n = int(rng.integers(500, 1500))
        tof = np.rint(rng.normal(30e6, 10e6, n)).astype(np.int32)
        ids = rng.integers(1, PIXELS + 1, n).astype(np.int32)
        messages.append(serialise_ev44("panel_0", 0, np.array([t]), np.array([0]), tof, ids))
    return messages


def monitor(times: np.ndarray, source: str, per_pulse: int) -> list[bytes]:
    """``fake_monitors --mode ev44``: pixel ids all 1."""
    tof = np.linspace(1e6, 60e6, per_pulse).astype(np.int32)
    return [serialise_ev44(source, 0, np.array([t]), np.array([0]), tof, np.ones(per_pulse, np.int32)) for t in times]


def independent(broker: Broker, topics: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Every ev44 of ``topics`` read by a bare consumer: (pixel histogram 0..16385, TOF histogram, events)."""
    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": "check", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0) for topic in topics])
    pixels, tof, events, ended = np.zeros(PIXELS + 2, np.int64), np.zeros(110, np.int64), 0, set()
    deadline = time.monotonic() + 60
    while len(ended) < len(topics) and time.monotonic() < deadline:
        for message in consumer.consume(100, 0.2):
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(message.topic())
                continue
            data = deserialise_ev44(message.value())
            pixels += np.bincount(data.pixel_id, minlength=PIXELS + 2)
            tof += np.histogram(data.time_of_flight / 1000.0, TOF_EDGES_US)[0]
            events += data.pixel_id.size
    consumer.close()
    assert len(ended) == len(topics), f"the independent consumer did not reach the end of {topics}"
    return pixels, tof, events


def test_an_ess_stream_without_run_start_on_several_topics_per_role_is_reduced_exactly(
    daemon, kafka_broker: Broker, kafka_topics
):
    topic = {
        name: kafka_topics((name,))[name]
        for name in ("dummy_detector", "odin_detector", "dummy_beam_monitor", "dummy_motion", "dummy_typed")
    }
    config = {
        "listener": "KafkaEventListener",
        "address": kafka_broker.address,
        "topics": {
            "events": [topic["dummy_detector"], topic["odin_detector"]],
            "monitors": topic["dummy_beam_monitor"],
            "sampleEnv": [topic["dummy_motion"], topic["dummy_typed"]],
            "runInfo": None,
        },
        "start": "now",
        "update_every": 0.5,
        "preserve_events": False,
    }
    process = daemon(config, {"proc": PROC, "post_proc": POST_PROC})
    (process.workdir / "out").mkdir(exist_ok=True)
    process.wait_for_log(lambda log: "one open-ended run (run number 0)" in log)
    rng = np.random.default_rng(16)
    t0 = time.time_ns() + SECOND // 2
    times = t0 + np.arange(42) * SECOND // 14  # 3 s of pulses at 14 Hz
    send(kafka_broker, topic["dummy_detector"], detector(times, rng))
    send(kafka_broker, topic["odin_detector"], detector(times, rng))
    send(kafka_broker, topic["dummy_beam_monitor"], monitor(times, "monitor1", 100) + monitor(times, "monitor2", 10))
    rotation = [(int(t0 + i * SECOND), float(1.8 * i)) for i in range(3)]
    send(kafka_broker, topic["dummy_motion"], [serialise_f144("detector_rotation", v, t) for t, v in rotation])
    send(kafka_broker, topic["dummy_typed"], [serialise_f144(n, v, t0 + SECOND) for n, v in TYPED_VALUES.items()])
    pixels, tof, events = independent(kafka_broker, [topic["dummy_detector"], topic["odin_detector"]])

    def reduced() -> int:
        try:
            import scipp as sc

            return int(sc.io.load_hdf5(process.workdir / "out" / "accumulation.h5")["pixels"].sum().value)
        except (OSError, KeyError):
            return 0

    poll_until(lambda: reduced() == events, lambda: f"the daemon to reduce {events} events (has {reduced()})", 60)
    process.send(signal.SIGTERM)
    run = process.finish()
    assert run.returncode == 0, run.log
    import scipp as sc

    result = sc.io.load_hdf5(run.workdir / "out" / "accumulation.h5")
    np.testing.assert_array_equal(result["pixels"].values, pixels[: PIXELS + 1])  # every event, on its pixel
    np.testing.assert_array_equal(result["tof"].values, tof)  # negative TOFs included
    chunks = [json.loads(line) for line in (run.workdir / "out" / "chunks.jsonl").read_text().splitlines()]
    assert sum(c["pulses"] for c in chunks) == times.size  # a pulse on two topics is one pulse
    assert {c["run"] for c in chunks} == {0}  # run number 0
    assert sum(c["monitors"].get("monitor1", 0) for c in chunks) == 100 * times.size
    assert sum(c["monitors"].get("monitor2", 0) for c in chunks) == 10 * times.size
    logs: dict[str, set] = {}
    for c in chunks:
        for name, entries in c["logs"].items():
            logs.setdefault(name, set()).update((t, json.dumps(v), dtype) for t, v, dtype in entries)
    assert sorted(logs["detector_rotation"]) == [(t, json.dumps(v), "float64") for t, v in rotation]
    for name, value in TYPED_VALUES.items():  # every value exactly, in the dtype that holds it
        ((_, seen, dtype),) = logs[name]
        exact = "float64" if value.dtype.kind == "f" or value.max() > np.iinfo(np.int64).max else "int64"
        assert (dtype, json.loads(seen)) == (exact, value.astype(exact).tolist()), name
    assert "Traceback" not in run.log
    assert "ERROR" not in run.log
