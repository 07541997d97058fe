#!/usr/bin/env python3
"""ESS's own fake producers into a local broker, and an independent record of what they sent (issue 16).

The producers are those of ``beamlime`` (PyPI, 25.4.0: the predecessor of scipp/esslivedata, which is not on
PyPI), installed in a virtual environment of their own, because their dependencies (scipp, essreduce, ...) must
not enter livereduce's::

    python3 -m venv /tmp/lead/beamlime-venv
    /tmp/lead/beamlime-venv/bin/pip install beamlime                      # ~2 min, ~560 MB
    # only for --instrument loki (its configuration imports ess.loki.live, gone from newer esssans):
    /tmp/lead/beamlime-venv/bin/pip install "essreduce<25.6" "esssans==25.5.0"

What this script does, for ``--seconds`` S:

1. starts a tansu broker on 127.0.0.1 (memory storage; ``bench_realtime.broker``, as the tests start it), or uses
   ``--address``; creates each topic the fakes write (``--partitions`` each), and ``--run-info-topic`` when
   ``--run-info`` is not ``none``;
2. starts an independent consumer (confluent-kafka, every partition assigned from its beginning,
   ``streaming_data_types``' deserialisers, ``np.bincount`` of the pixel ids per topic);
3. with ``--run-info start|start-stop|start-stop0``, writes a pl72 (``run_name`` "1", ``start_time`` now, in ms as
   ``serialise_pl72`` writes it) before the fakes start;
4. runs, from the virtual environment, per instrument of ``--instrument`` (a comma-separated list gives several
   topics per role, one per instrument) ``python -m beamlime.services.fake_detectors``, ``fake_monitors --mode
   ev44`` and ``fake_logdata`` (``--fakes`` selects), for S seconds, then stops them with SIGTERM;
5. with ``start-stop`` writes a 6s4t (``stop_time`` now, ms), with ``start-stop0`` a 6s4t whose ``stop_time`` is
   0 (the schema's "stop now");
6. reads every partition to the high watermark it had once the producers had stopped, and writes the record:
   ``--out`` (JSON) and beside it ``<out>.npz`` (the pixel histograms, ``events/<topic>``, int64, index = pixel
   id).

S counts from the fakes' launch; their imports take a few seconds (up to ~10 s on a loaded machine), so the
data spans less: each topic's ``record_ms`` (first and last record timestamp) says how much. The record (JSON):
``topics``: per topic its role, messages, bytes, schemas, events, pulses, ``pixels`` (events, pixels hit, first
and last id, sha256 of the histogram) and per ``source_name`` messages, events, pulses, ``message_ids`` seen,
``reference_time_ns`` (first, last), ``tof_ns`` (min, max, sum), ``pixel_id_sum``, ``events_without_pixel_id``;
``logs``: per f144 source its topic, dtype, shape and every ``[timestamp_ns, value]``; ``run_info``: the pl72/6s4t
read back; ``fakes``: commands, logs, exit codes; ``versions`` (of the virtual environment); ``timings_s``;
``livereduce``: ``listener``, ``address`` and the ``topics`` key for the daemon.

The fakes (beamlime 25.4.0; ``beamlime/services/fake_*.py``, ``beamlime/config/streams.py``):

* ``fake_detectors``: topic ``<instrument>_detector``; one ev44 per detector bank every 1/14 s, each one pulse
  (``reference_time`` the message's time, ``reference_time_index`` [0]), 100,000 events (1,000 for bifrost),
  ``time_of_flight`` normal(30 ms, 10 ms) in ns (int32, may be negative), ``pixel_id`` uniform over the bank's
  range (``detectors_config['fakes']``: dummy 1..16384; loki 9 banks, 1..3211264, all on the one topic with
  ``source_name`` loki_detector_0..8), ``message_id`` always 0;
* ``fake_monitors --mode ev44``: topic ``<instrument>_beam_monitor``; sources monitor1 (10,000 events) and
  monitor2 (1,000) every 1/14 s; ``pixel_id`` all 1 (never empty); ``--mode da00`` sends histograms instead;
* ``fake_logdata``: topic ``<instrument>_motion``; f144 ``detector_rotation`` (float64, a ramp 0..90..0 degrees),
  one a second, its timestamps one second apart from the start (repeated once per 101 values: the ramp's last
  and first point share a time);
* none sends a pl72 or 6s4t; the broker comes from ``BEAMLIME_ENV`` (``dev``: localhost:9092, fixed), so this
  script sets ``BEAMLIME_ENV=docker`` with ``KAFKA_BOOTSTRAP_SERVERS`` (and PLAINTEXT, with the SASL variables
  that template requires set to unused values).

Their rate is fixed (dummy: 1.4 M events/s; loki: 12.6 M events/s). ``--interval-ms`` replaces the 1/14 s period of
the detector and monitor fakes (a keyword default of their source classes, set before their ``main()``), e.g.
``--interval-ms 700`` for 140,000 events/s from dummy.

Usage (one core for the fakes, one for tansu and the record; heavier runs under ``flock -s /tmp/lead/cpu.lock``)::

    python3 bench/ess_fakes.py --instrument dummy --seconds 10 --interval-ms 700 --out /tmp/lead/ess_fakes.json
    python3 bench/ess_fakes.py --instrument dummy,odin --run-info start-stop --seconds 15 --hold
    python3 bench/ess_fakes.py --address 127.0.0.1:9092 --instrument dummy --seconds 20
    python3 bench/ess_fakes.py --instrument dummy,odin --seconds 20 --daemon     # livereduce on it, compared

``--daemon`` starts livereduce (``scripts/livereduce.py``, scipp engine, ``KafkaEventListener`` with the record's
``topics`` key, ``start`` now without run information, else ``from_start_of_run``; a per-pixel histogram proc) on
the broker before the fakes, and compares, once its accumulation holds as many events as were sent (or after
``--seconds`` + 120 s): the pixel histogram with the record's (summed over the events topics), events and pulses,
monitor events per source, every log value; in the record as ``daemon``, exit 1 unless all are equal.

``--hold`` keeps the broker (and its data) after the record is written, until Ctrl-C or SIGTERM, so that the
daemon can be run against the same stream; the record's ``livereduce`` entry has the ``topics`` key for it (lists
of topics per role; ``"runInfo": null`` without a run start: issue 16's configuration). With ``--address`` the
broker is not started and stays as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench_realtime import broker, started, stop

VENV = Path("/tmp/lead/beamlime-venv")
FAKES = ("detectors", "monitors", "logdata")
RUN_INFO = ("none", "start", "start-stop", "start-stop0")

# Run with the virtual environment's Python: the fakes' topics, detector banks and package versions, as JSON.
DISCOVER = """
import importlib.metadata as md, json, sys
from beamlime import StreamKind
from beamlime.config.instruments import get_config
from beamlime.config.streams import stream_kind_to_topic
out = {"versions": {p: md.version(p) for p in ("beamlime", "ess-streaming-data-types", "confluent-kafka", "scipp")},
       "instruments": {}}
for name in sys.argv[1:]:
    out["instruments"][name] = {
        "detectors": stream_kind_to_topic(instrument=name, kind=StreamKind.DETECTOR_EVENTS),
        "monitors": stream_kind_to_topic(instrument=name, kind=StreamKind.MONITOR_EVENTS),
        "logdata": stream_kind_to_topic(instrument=name, kind=StreamKind.LOG),
        "banks": {k: [int(v[0]), int(v[1])] for k, v in get_config(name).detectors_config["fakes"].items()},
    }
print(json.dumps(out))
"""

# A fake with another period than 1/14 s: the keyword default of its source class, then its own main().
SLOWED = (
    "import sys; from beamlime.services import {module} as m; "
    "m.{cls}.__init__.__kwdefaults__['interval_ns'] = {ns}; sys.argv[0] = m.__file__; m.main()"
)
SOURCE_CLASS = {"fake_detectors": "FakeDetectorSource", "fake_monitors": "FakeMonitorSource"}
ROLE = {"detectors": "events", "monitors": "monitors", "logdata": "sampleEnv"}


def venv_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.is_file():
        sys.exit(f"no virtual environment at {venv}: python3 -m venv {venv} && {venv}/bin/pip install beamlime")
    return python


def discover(python: Path, instruments: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), "-c", DISCOVER, *instruments], capture_output=True, text=True, check=False, env=fake_env("")
    )
    if done.returncode:
        sys.exit(f"beamlime cannot describe {instruments}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def fake_env(address: str) -> dict[str, str]:
    """The fakes' environment: ``BEAMLIME_ENV=docker`` takes the broker from ``KAFKA_BOOTSTRAP_SERVERS``."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        BEAMLIME_ENV="docker",
        KAFKA_BOOTSTRAP_SERVERS=address or "127.0.0.1:9",
        KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
        KAFKA_SASL_MECHANISM="PLAIN",
        KAFKA_SASL_USERNAME="unused",
        KAFKA_SASL_PASSWORD="unused",
    )
    return env


def fake_command(python: Path, fake: str, instrument: str, interval_ms: float | None) -> list[str]:
    module = f"fake_{fake}"
    extra = ["--mode", "ev44"] if fake == "monitors" else []
    if interval_ms is None or module not in SOURCE_CLASS:
        return [str(python), "-m", f"beamlime.services.{module}", "--instrument", instrument, *extra]
    code = SLOWED.format(module=module, cls=SOURCE_CLASS[module], ns=round(interval_ms * 1e6))
    return [str(python), "-c", code, "--instrument", instrument, *extra]


def create_topics(address: str, names: list[str], partitions: int) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": address})
    futures = admin.create_topics([NewTopic(name, partitions, 1) for name in names], operation_timeout=10)
    for future in futures.values():
        try:
            future.result(timeout=10)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def produce(address: str, topic: str, value: bytes) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": address})
    producer.produce(topic, value)
    if producer.flush(10):
        raise RuntimeError(f"a message to {topic} was not delivered")


class Recorder(threading.Thread):
    """Reads every partition of ``topics`` from its beginning and records what the producers sent."""

    def __init__(self, address: str, topics: dict[str, str]) -> None:
        super().__init__(name="recorder", daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topics = topics  # topic -> role
        self.consumer = Consumer(
            {
                "bootstrap.servers": address,
                "group.id": f"ess-fakes-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.message.max.bytes": 25_000_000,
                "receive.message.max.bytes": 100_000_000,
            }
        )
        metadata = self.consumer.list_topics(timeout=10)
        self.partitions = [
            TopicPartition(topic, p, OFFSET_BEGINNING) for topic in topics for p in metadata.topics[topic].partitions
        ]
        self.consumer.assign(self.partitions)
        self.ends: dict[tuple[str, int], int] | None = None  # high watermarks to read up to, once asked to finish
        self.next: dict[tuple[str, int], int] = {}
        self.stats: dict[str, dict[str, Any]] = {t: self._topic_stats(r) for t, r in topics.items()}
        self.hist: dict[str, np.ndarray] = {}
        self.logs: dict[str, dict[str, Any]] = {}
        self.run_info: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.finishing = threading.Event()
        self.done = threading.Event()

    @staticmethod
    def _topic_stats(role: str) -> dict[str, Any]:
        return {"role": role, "messages": 0, "bytes": 0, "schemas": defaultdict(int), "sources": {}}

    def finish(self, timeout: float = 60.0) -> None:
        """Read up to the high watermarks as they are once this is called (the producers have stopped), then stop.

        The consumer thread asks for the watermarks itself: asked from another thread while it consumes,
        ``get_watermark_offsets`` waited ~100 s (confluent-kafka 2.16, tansu), whatever its timeout.
        """
        self.finishing.set()
        if not self.done.wait(timeout):
            self.errors.append(f"not every partition was read to its end within {timeout} s: {self.next} < {self.ends}")
            self.done.set()

    def _finished(self) -> bool:
        if not self.finishing.is_set():
            return False
        if self.ends is None:
            self.ends = {}
            for tp in self.partitions:
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                self.ends[(tp.topic, tp.partition)] = high
        return all(self.next.get(key, 0) >= end for key, end in self.ends.items())

    def run(self) -> None:
        try:
            while not self.done.is_set() and not self._finished():
                for message in self.consumer.consume(500, 0.2):
                    if message.error():
                        self.errors.append(str(message.error()))
                        continue
                    self.next[(message.topic(), message.partition())] = message.offset() + 1
                    self._record(message.topic(), message.value() or b"", message.timestamp()[1])
        except Exception as error:  # noqa: BLE001 (recorded, reported in the JSON)
            self.errors.append(f"recorder failed: {error!r}")
        finally:
            self.consumer.close()
            self.done.set()

    def _record(self, topic: str, value: bytes, record_ms: int) -> None:
        stats = self.stats[topic]
        stats["messages"] += 1
        stats["bytes"] += len(value)
        schema = value[4:8].decode("ascii", "replace") if len(value) >= 8 else "short"
        stats["schemas"][schema] += 1
        stats.setdefault("record_ms", [record_ms, record_ms])
        stats["record_ms"] = [min(stats["record_ms"][0], record_ms), max(stats["record_ms"][1], record_ms)]
        try:
            if schema == "ev44":
                self._ev44(topic, stats, value)
            elif schema == "f144":
                self._f144(topic, value)
            elif schema in ("pl72", "6s4t"):
                self._run_info(topic, schema, value)
        except Exception as error:  # noqa: BLE001 (a message the recorder cannot read is counted, not fatal)
            stats.setdefault("undecodable", 0)
            stats["undecodable"] += 1
            self.errors.append(f"{topic}: {schema}: {error!r}")

    def _ev44(self, topic: str, stats: dict[str, Any], value: bytes) -> None:
        from streaming_data_types import deserialise_ev44

        data = deserialise_ev44(value)
        tof = np.asarray(data.time_of_flight, dtype=np.int64)
        pixels = np.asarray(data.pixel_id, dtype=np.int64)
        times = np.asarray(data.reference_time, dtype=np.int64)
        source = stats["sources"].setdefault(
            data.source_name,
            {"messages": 0, "events": 0, "pulses": 0, "message_ids": set(), "tof_ns": [None, None, 0]},
        )
        source["messages"] += 1
        source["events"] += tof.size
        source["pulses"] += times.size
        if len(source["message_ids"]) < 5:
            source["message_ids"].add(int(data.message_id))
        if times.size:
            source.setdefault("reference_time_ns", [int(times.min()), int(times.max())])
            span = source["reference_time_ns"]
            source["reference_time_ns"] = [min(span[0], int(times.min())), max(span[1], int(times.max()))]
        if tof.size:
            low, high, total = source["tof_ns"]
            source["tof_ns"] = [
                int(tof.min()) if low is None else min(low, int(tof.min())),
                int(tof.max()) if high is None else max(high, int(tof.max())),
                total + int(tof.sum()),
            ]
        if pixels.size == tof.size and tof.size:
            if pixels.min() < 0:
                source["negative_pixel_ids"] = source.get("negative_pixel_ids", 0) + int((pixels < 0).sum())
                pixels = pixels[pixels >= 0]
            counts = np.bincount(pixels)
            hist = self.hist.get(topic)
            if hist is None or hist.size < counts.size:
                grown = np.zeros(max(counts.size, 0 if hist is None else hist.size), dtype=np.int64)
                if hist is not None:
                    grown[: hist.size] = hist
                hist = self.hist[topic] = grown
            hist[: counts.size] += counts
            source["pixel_id_sum"] = source.get("pixel_id_sum", 0) + int(pixels.sum())
        elif tof.size:
            source["events_without_pixel_id"] = source.get("events_without_pixel_id", 0) + tof.size

    def _f144(self, topic: str, value: bytes) -> None:
        from streaming_data_types import deserialise_f144

        data = deserialise_f144(value)
        array = np.asarray(data.value)
        log = self.logs.setdefault(
            data.source_name, {"topic": topic, "dtype": str(array.dtype), "shape": list(array.shape), "values": []}
        )
        log["values"].append([int(data.timestamp_unix_ns), array.tolist()])

    def _run_info(self, topic: str, schema: str, value: bytes) -> None:
        from streaming_data_types import deserialise_6s4t, deserialise_pl72

        data = deserialise_pl72(value) if schema == "pl72" else deserialise_6s4t(value)
        fields = ("run_name", "job_id", "start_time", "stop_time")
        self.run_info.append({"topic": topic, "schema": schema, **{f: getattr(data, f, None) for f in fields}})

    def result(self) -> dict[str, Any]:
        topics = {}
        for topic, stats in self.stats.items():
            out = {**stats, "schemas": dict(stats["schemas"])}
            out["events"] = sum(s["events"] for s in stats["sources"].values())
            out["pulses"] = sum(s["pulses"] for s in stats["sources"].values())
            for source in out["sources"].values():
                source["message_ids"] = sorted(source["message_ids"])
            hist = self.hist.get(topic)
            if hist is not None:
                hit = np.flatnonzero(hist)
                out["pixels"] = {
                    "events": int(hist.sum()),
                    "nonzero": int(hit.size),
                    "min": int(hit[0]) if hit.size else None,
                    "max": int(hit[-1]) if hit.size else None,
                    "sha256": hashlib.sha256(hist.tobytes()).hexdigest(),
                }
            topics[topic] = out
        return {"topics": topics, "logs": self.logs, "run_info": self.run_info, "recorder_errors": self.errors[:50]}


def livereduce_topics(roles: dict[str, list[str]], run_info: str, run_info_topic: str) -> dict[str, Any]:
    """The ``topics`` key issue 16 asks for: a list per role, ``runInfo`` null without run information."""
    topics: dict[str, Any] = {role: names[0] if len(names) == 1 else names for role, names in roles.items()}
    topics["runInfo"] = None if run_info == "none" else run_info_topic
    return topics


DAEMON_PROC = """
import json, os
from pathlib import Path
import scipp as sc
from livereduce.engines.scipp.chunk import flat_events
events = flat_events(input)
edges = sc.arange("event_id", 0, {pixels} + 1, unit=None, dtype="int32")
output = sc.DataGroup({{"pixels": events.hist(event_id=edges)}})
record = {{"pulses": input.sizes["event_time_zero"], "run": int(input.coords["run_number"].value), "logs": {{}},
          "monitors": {{}}}}
if "monitors" in input.coords:
    record["monitors"] = {{name: int(m.sizes[m.dims[0]]) for name, m in input.coords["monitors"].value.items()}}
for name, coord in input.coords.items():
    if coord.dtype == sc.DType.DataArray and coord.value.bins is None:
        log = coord.value
        record["logs"][name] = [[int(t), v] for t, v in zip(log.coords["time"].values.astype("int64").tolist(),
                                                            log.values.tolist())]
with (Path(os.environ["LIVEREDUCE_OUTPUT_DIR"]) / "chunks.jsonl").open("a") as f:
    f.write(json.dumps(record) + "\\n")
"""
"""The daemon's proc in ``--daemon`` mode: a per-pixel histogram accumulated (Add), and per chunk its pulses, run
number, monitor events per source and log values, appended to ``chunks.jsonl``."""
DAEMON_POST_PROC = """
import os
from pathlib import Path
import scipp as sc
out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
sc.io.save_hdf5(input, out / "accumulation.tmp.h5")
(out / "accumulation.tmp.h5").replace(out / "accumulation.h5")
output = input
"""


def start_daemon(stack: ExitStack, workdir: Path, address: str, topics: dict[str, Any], *, run_info: str,
                 pixels: int) -> Path:  # fmt: skip
    """livereduce (``scripts/livereduce.py``, scipp engine) on the stream, started before the fakes; returns the
    directory its scripts write to."""
    scripts, out = workdir / "daemon", workdir / "daemon" / "out"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        stale.unlink()
    (scripts / "reduce_LOKI_live_proc.py").write_text(DAEMON_PROC.format(pixels=pixels))
    (scripts / "reduce_LOKI_live_post_proc.py").write_text(DAEMON_POST_PROC)
    config = {
        "instrument": "LOKI", "engine": "scipp", "listener": "KafkaEventListener", "address": address,
        "topics": topics, "start": "now" if run_info == "none" else "from_start_of_run", "update_every": 1,
        "run_transition": "Stop",  # with a run: the daemon ends with it, its last output the whole run's
        "preserve_events": False, "script_dir": str(scripts), "log_file": str(scripts / "livereduce.log"),
        "status_file": str(scripts / "status.json"),
    }  # fmt: skip
    (scripts / "livereduce.conf").write_text(json.dumps(config))
    daemon = Path(__file__).resolve().parent.parent / "scripts" / "livereduce.py"
    stack.enter_context(
        started([sys.executable, str(daemon), str(scripts / "livereduce.conf")], scripts / "stdout.log",
                env=dict(os.environ, LIVEREDUCE_OUTPUT_DIR=str(out)))
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "Starting live data" not in (log := _text(scripts / "livereduce.log")):
        if time.monotonic() > deadline:
            raise SystemExit(f"livereduce did not start within 60 s:\n{log[-3000:]}")
        time.sleep(0.2)
    return out


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def compare(out: Path, record: dict[str, Any], hist: dict[str, np.ndarray], timeout: float) -> dict[str, Any]:
    """What livereduce reduced against the record, once its accumulation holds every event sent (or ``timeout``)."""
    import scipp as sc

    events_topics = [t for t, s in record["topics"].items() if s["role"] == "events"]
    expected = sum(record["topics"][t]["events"] for t in events_topics)
    reference = np.zeros(max((hist[t].size for t in events_topics if t in hist), default=0), np.int64)
    for topic in events_topics:
        if topic in hist:
            reference[: hist[topic].size] += hist[topic]

    def reduced() -> np.ndarray | None:
        try:
            return sc.io.load_hdf5(out / "accumulation.h5")["pixels"].values
        except (OSError, KeyError):
            return None

    deadline = time.monotonic() + timeout
    while ((got := reduced()) is None or got.sum() < expected) and time.monotonic() < deadline:
        time.sleep(0.5)
    got = np.zeros(0) if got is None else got
    size = max(got.size, reference.size)
    chunks = [json.loads(line) for line in _text(out / "chunks.jsonl").splitlines()]
    monitors: dict[str, int] = defaultdict(int)
    logs: dict[str, set] = defaultdict(set)
    for chunk in chunks:
        for name, count in chunk["monitors"].items():
            monitors[name] += count
        for name, entries in chunk["logs"].items():
            logs[name].update((t, json.dumps(v)) for t, v in entries)
    sent_monitors: dict[str, int] = defaultdict(int)  # by source name, over every monitors topic (as the chunks)
    for stats in record["topics"].values():
        for name, source in stats["sources"].items() if stats["role"] == "monitors" else ():
            sent_monitors[name] += source["events"]
    sent_logs = {name: {(t, json.dumps(v)) for t, v in log["values"]} for name, log in record["logs"].items()}
    return {
        "events_sent": expected,
        "events_reduced": int(got.sum()),
        "histogram_equal": bool(
            np.array_equal(np.pad(got, (0, size - got.size)), np.pad(reference, (0, size - reference.size)))
        ),
        "pulses_sent": sum(record["topics"][t]["pulses"] for t in events_topics),
        "pulses_reduced": sum(c["pulses"] for c in chunks),
        "run_numbers": sorted({c["run"] for c in chunks}),
        "monitors_sent": dict(sent_monitors),
        "monitors_reduced": dict(monitors),
        "logs_equal": {name: logs.get(name, set()) == values for name, values in sent_logs.items()},
    }


def interrupted(_signum: int, _frame: object) -> None:
    """SIGTERM as Ctrl-C: every process started is stopped on the way out."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=VENV, help="virtual environment with beamlime (%(default)s)")
    parser.add_argument("--instrument", default="dummy", help="beamlime instrument(s), comma-separated (dummy)")
    parser.add_argument("--fakes", default=",".join(FAKES), help="which fakes, comma-separated (%(default)s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the fakes run (%(default)s)")
    parser.add_argument("--interval-ms", type=float, help="period of the detector and monitor fakes (their 71.4 ms)")
    parser.add_argument("--run-info", choices=RUN_INFO, default="none", help="pl72 before, 6s4t after (none)")
    parser.add_argument("--run-info-topic", help="topic of --run-info (<first instrument>_runInfo)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of each topic created (1)")
    parser.add_argument("--address", help="an existing broker instead of starting tansu")
    parser.add_argument("--hold", action="store_true", help="keep the broker until Ctrl-C or SIGTERM")
    parser.add_argument("--out", type=Path, default=Path("ess_fakes.json"), help="the record (%(default)s)")
    parser.add_argument("--workdir", type=Path, help="logs of tansu and the fakes (beside --out)")
    parser.add_argument("--daemon", action="store_true", help="livereduce reduces the stream too; compared at the end")
    args = parser.parse_args()

    instruments = [name.strip() for name in args.instrument.split(",") if name.strip()]
    fakes = [name.strip() for name in args.fakes.split(",") if name.strip()]
    if unknown := set(fakes) - set(FAKES):
        parser.error(f"unknown fakes {sorted(unknown)}: choose from {FAKES}")
    python = venv_python(args.venv)
    clock = time.monotonic()
    timings: dict[str, float] = {}

    def lap(what: str) -> None:
        nonlocal clock
        timings[what] = round(time.monotonic() - clock, 3)
        clock = time.monotonic()

    workdir = args.workdir or args.out.resolve().parent / f"{args.out.stem}.d"
    workdir.mkdir(parents=True, exist_ok=True)
    described = discover(python, instruments)
    lap("discover")
    run_info_topic = args.run_info_topic or f"{instruments[0]}_runInfo"
    roles: dict[str, list[str]] = defaultdict(list)
    topic_role: dict[str, str] = {}
    for name in instruments:
        for fake in fakes:
            topic = described["instruments"][name][fake]
            roles[ROLE[fake]].append(topic)
            topic_role[topic] = ROLE[fake]
    if args.run_info != "none":
        topic_role[run_info_topic] = "runInfo"

    signal.signal(signal.SIGTERM, interrupted)
    record: dict[str, Any] = {
        "command": [sys.executable, *sys.argv],
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "instruments": described["instruments"],
        "versions": described["versions"],
        "seconds": args.seconds,
        "interval_ms": args.interval_ms,
        "run_info": args.run_info,
    }
    with ExitStack() as stack:
        if args.address:
            address = args.address
        else:
            _process, address = stack.enter_context(broker(workdir))
        record["address"] = address
        lap("broker")
        create_topics(address, list(topic_role), args.partitions)
        recorder = Recorder(address, topic_role)
        recorder.start()
        lap("topics_and_recorder")
        if args.run_info != "none":
            start_ms = int(time.time() * 1000)
            run = {"job_id": str(uuid.uuid4()), "run_name": "1"}
            from streaming_data_types import serialise_pl72

            pl72 = serialise_pl72(filename="ess_fakes.nxs", start_time=start_ms, instrument_name=instruments[0], **run)
            produce(address, run_info_topic, pl72)
        topics_key = livereduce_topics(roles, args.run_info, run_info_topic)
        if args.daemon:
            banks = [bank for name in instruments for bank in described["instruments"][name]["banks"].values()]
            daemon_out = start_daemon(
                stack, workdir, address, topics_key, run_info=args.run_info, pixels=max(b[1] for b in banks) + 1
            )
            lap("daemon_start")
        processes = []
        record["fakes"] = []
        started_at = time.monotonic()
        for name in instruments:
            for fake in fakes:
                command = fake_command(python, fake, name, args.interval_ms)
                log = workdir / f"fake_{fake}_{name}.log"
                processes.append(stack.enter_context(started(command, log, env=fake_env(address))))
                record["fakes"].append({"command": command, "log": str(log)})
        time.sleep(max(0.0, args.seconds - (time.monotonic() - started_at)))
        for process, entry in zip(processes, record["fakes"], strict=True):
            stop(process)
            entry["returncode"] = process.returncode
        record["ran_seconds"] = round(time.monotonic() - started_at, 3)
        lap("fakes")
        if args.run_info in ("start-stop", "start-stop0"):
            from streaming_data_types import serialise_6s4t

            stop_ms = 0 if args.run_info == "start-stop0" else int(time.time() * 1000)
            produce(address, run_info_topic, serialise_6s4t(stop_time=stop_ms, **run))
        recorder.finish()
        lap("drain")
        record.update(recorder.result())
        record["timings_s"] = timings
        record["livereduce"] = {
            "listener": "KafkaEventListener",
            "address": address,
            "topics": topics_key,
        }
        if args.daemon:
            record["daemon"] = compare(daemon_out, record, recorder.hist, timeout=120 + args.seconds)
            lap("daemon_compare")
            print(f"livereduce against the record: {json.dumps(record['daemon'])}")
        args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
        np.savez_compressed(args.out.with_suffix(".npz"), **{f"events/{t}": h for t, h in recorder.hist.items()})
        summary = {t: (s["messages"], s["events"], s["schemas"]) for t, s in record["topics"].items()}
        print(f"record: {args.out} ({args.out.with_suffix('.npz')}); per topic (messages, events, schemas): {summary}")
        print(f"livereduce: {json.dumps(record['livereduce'])}")
        if args.hold and not args.address:
            print(f"holding the broker at {address}; Ctrl-C or SIGTERM ends it", flush=True)
            with suppress(KeyboardInterrupt):
                signal.pause()
    verdict = record.get("daemon", {})
    exact = not verdict or (
        verdict["histogram_equal"]
        and verdict["events_reduced"] == verdict["events_sent"]
        and verdict["monitors_reduced"] == verdict["monitors_sent"]
        and all(verdict["logs_equal"].values())
    )
    return 1 if record["recorder_errors"] or not exact else 0


if __name__ == "__main__":
    sys.exit(main())
