#!/usr/bin/env python3
"""Replay benchmark of the scipp engine: events/s and memory of the daemon against a numpy anchor.

The daemon (``scripts/livereduce.py``) replays a synthetic NeXus file (``bench/make_events.py``) as fast as
possible (``replay_speed`` 0, ``replay_chunk_pulses`` 600 = 10 s of 60 Hz pulses, ~10M events per chunk,
``update_every`` 0.01 s: the shortest the configuration accepts) and stops at its end (``run_transition`` Stop).
Three configurations, each run as a separate process:

* ``hist/pe=false``: ``preserve_events`` false, proc script ``output = flat_events(input).hist(event_id=edges)``
  (counts per pixel, int32 edges over all pixels); the engine accumulates the dense histograms.
* ``hist/pe=true``: the same proc script with ``preserve_events`` true (same work: the proc output is already
  a histogram, so nothing is left to histogram).
* ``events/pe=true``: ``preserve_events`` true and no proc script (post_proc ``output = input``): the
  accumulation holds every event. This run gives the memory per accumulated event.

Measured per run, from the daemon's log (one line per cycle: ``Initial chunk: E events ...; D s`` for the first,
then ``Chunk N: E events ...; D s`` with N from 0; a run whose lines do not account for every event of the file is
an error):

* events/s over the sum of the per-chunk durations D (the cycle: HDF5 read, chunk, proc, accumulate, post_proc);
* events/s over the wall time from the start of the first chunk (its log time minus its duration) to the last
  chunk's line;
* events/s over the chunks after the first (the steady state of a long run: the first chunk also pays for page
  faults on fresh memory);
* peak RSS of the daemon process (``ru_maxrss`` from ``os.wait4`` in a minimal wrapper process, see
  :data:`WRAPPER`), the baseline peak RSS of the same configuration replaying a tiny file, and
  (peak - baseline) per accumulated (or replayed) event;
* user and system CPU seconds of the daemon process (whole process, start-up included), and the CPU used by
  *other* processes during the run (system-wide busy time minus the daemon's, in cores): the machine is shared,
  and scipp's histogram uses all cores, so other processes slow it down.

The anchor, in the same benchmark process: a minimal h5py program that reads the same fields (``event_id``,
``event_time_offset``) from the same file in the same chunks of pulses (``--chunk-pulses``, as the daemon reads
them; each chunk into new arrays) and adds ``np.bincount(event_id, minlength=pixels)`` of each into a histogram;
best of 3, timed before the first round and again after every round. Ratios: median daemon rate / median anchor
rate, and best / best. For context, also ``np.bincount`` alone on the file's ``event_id`` already in memory as
int32 (the numpy anchor of earlier versions: no reading).

Each configuration is run ``--repeat`` times, in a rotating order, after one discarded warm-up run; before each
run the benchmark waits (at most ``--quiet-wait`` s) until the machine is idle (``--quiet-cpu``). The tables
show medians and the best run. Usage::

    python bench/bench_replay.py                 # generate bench/data/events_50M.nxs if needed, then run
    python bench/bench_replay.py --events 5000000 --repeat 1   # a quick check
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_events  # the sibling script, importable when run from anywhere

REPO = Path(__file__).resolve().parent.parent
DAEMON = REPO / "scripts" / "livereduce.py"
TINY_EVENTS = 60_000
TARGET_RATIO = 1.0
"""Target of the ``hist`` configurations: daemon rate (Σchunk, median) / h5py anchor rate (median) (issue 15)."""
TARGET_BYTES_PER_EVENT = 16.0
MIB = 2**20
UPDATE_EVERY_S = 0.01
"""``update_every`` of the runs: the shortest the configuration accepts (``config.py``), so that the cycles follow
each other as closely as the daemon allows."""

HIST_PROC = """\
import scipp as sc

from livereduce.engines.scipp.chunk import flat_events

edges = sc.arange("event_id", 0, {npix} + 1, unit=None, dtype="int32")
output = flat_events(input).hist(event_id=edges)
"""
IDENTITY_POST_PROC = "output = input\n"

CHUNK_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - livereduce\.MonitorLiveData - INFO - "
    r"(?P<label>Initial chunk|Chunk \d+): (?P<events>\d+) events in (?P<pulses>\d+) pulses \((?P<status>[^)]*)\)"
    r"(?P<not_accumulated>, not accumulated)?; accumulation: (?P<accumulation>.*?); (?P<seconds>[\d.]+) s(?:; .*)?$"
)
"""The engine's line for each cycle (``engine.py``, ``ScippEngine._record``): the first is ``Initial chunk``; what
follows the duration (e.g. ``; lag 0.0 s``) is ignored."""
CYCLE_EVENTS = re.compile(
    r"^(?:Initial chunk|Chunk \d+)(?:, early part \d+ \([^)]*\))?: (?P<events>\d+) events in \d+ pulses \([^)]*\)"
    r"(?: \(and (?P<early>\d+) events in \d+ early parts before\))?"
)
"""The message of the engine's INFO line of a cycle, or of an early part that ended a run."""


def cycle_events(message: str) -> int | None:
    """Events a cycle's INFO log message (``ScippEngine._record``) accounts for: its own and those of the early
    parts before it (DEBUG lines, summed in ``(and E events in K early parts before)``); None for another message."""
    match = CYCLE_EVENTS.match(message)
    return None if match is None else int(match["events"]) + int(match["early"] or 0)


WRAPPER = """\
import json, os, sys, time
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, out, 1),
                     (os.POSIX_SPAWN_DUP2, out, 2)])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - started,
                  "maxrss_kib": usage.ru_maxrss, "user_s": usage.ru_utime, "sys_s": usage.ru_stime}))
"""
"""A minimal process that runs the daemon and reports that child's rusage. Needed because a child's ``ru_maxrss``
includes the RSS of the process it was forked from (Linux records the old mm's high-water mark at ``exec``): run
from this benchmark process, which holds the event ids, every daemon would report the benchmark's own RSS."""

TOUCH_PROBE = """\
import json, time, numpy as np
n = 1 << 30
a = np.empty(n, np.uint8)
t = time.perf_counter(); a[:] = 1; first = time.perf_counter() - t
t = time.perf_counter(); a[:] = 2; again = time.perf_counter() - t
print(json.dumps({"first_touch_MBps": n / first / 1e6, "rewrite_MBps": n / again / 1e6}))
"""
"""Write rate into fresh memory (page faults) and into the same memory again, in a fresh process."""


class ThreadSampler:
    """Samples, every 20 ms, the CPU times of every thread of process ``root`` and its descendants, and of the
    process ``other`` (a source or a broker), so that a window given afterwards in wall-clock seconds can be read
    off (:meth:`window`)."""

    def __init__(self, root: int, other: int) -> None:
        self.root, self.other = psutil.Process(root), psutil.Process(other)
        self.samples: list[tuple[float, dict[int, float], float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.02):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
                threads = {t.id: t.user_time + t.system_time for p in processes for t in p.threads()}
                times = self.other.cpu_times()
            except psutil.Error:
                continue
            self.samples.append((time.time(), threads, times.user + times.system))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def window(self, begin: float, end: float) -> tuple[list[float], float]:
        """(CPU seconds of each thread between the samples nearest ``begin`` and ``end`` (wall clock, s), busiest
        first, those of at least 5 ms; CPU seconds of ``other`` between them)."""
        if not self.samples:
            return [], 0.0
        a = min(self.samples, key=lambda sample: abs(sample[0] - begin))
        z = min(self.samples, key=lambda sample: abs(sample[0] - end))
        threads = sorted((cpu - a[1].get(tid, 0.0) for tid, cpu in z[1].items()), reverse=True)
        return [t for t in threads if t >= 0.005], z[2] - a[2]


@dataclass(frozen=True)
class Mode:
    """One daemon configuration."""

    name: str
    preserve_events: bool
    scripts: str  # "hist": proc histograms per pixel; "events": no proc, post_proc output = input


MODES = (
    Mode("hist/pe=false", False, "hist"),
    Mode("hist/pe=true", True, "hist"),
    Mode("events/pe=true", True, "events"),
)


@dataclass(frozen=True)
class Setup:
    """Where and how the daemon runs: script directories per variant, working directory, chunk size."""

    script_dirs: dict[str, Path]
    workdir: Path
    chunk_pulses: int


@dataclass
class Run:
    """What one daemon run did."""

    mode: str
    file: str
    returncode: int
    events: int
    chunks: int
    accumulated: int
    chunk_seconds: float
    wall_seconds: float
    process_seconds: float
    peak_rss_bytes: int
    user_seconds: float
    sys_seconds: float
    others_cores: float
    chunk_durations: list[float] = field(default_factory=list)
    chunk_events: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rate_chunks(self) -> float:
        return self.events / self.chunk_seconds if self.chunk_seconds > 0 else float("nan")

    @property
    def rate_steady(self) -> float:
        """Events/s over chunks 2..N: without the first chunk, which also pays for fresh memory (page faults)."""
        seconds = sum(self.chunk_durations[1:])
        return sum(self.chunk_events[1:]) / seconds if seconds > 0 else float("nan")

    @property
    def rate_wall(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds > 0 else float("nan")


# --- set-up -------------------------------------------------------------------------------------------------
def write_scripts(workdir: Path, npix: int) -> dict[str, Path]:
    """Script directories for both script variants (instrument BENCH)."""
    dirs = {"hist": workdir / "scripts_hist", "events": workdir / "scripts_events"}
    for directory in dirs.values():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    (dirs["hist"] / "reduce_BENCH_live_proc.py").write_text(HIST_PROC.format(npix=npix), encoding="utf-8")
    (dirs["events"] / "reduce_BENCH_live_post_proc.py").write_text(IDENTITY_POST_PROC, encoding="utf-8")
    return dirs


def write_config(path: Path, mode: Mode, data: Path, setup: Setup, log: Path) -> None:
    config = {
        "instrument": "BENCH",
        "engine": "scipp",
        "script_dir": str(setup.script_dirs[mode.scripts]),
        "listener": "FileEventDataListener",
        "filename": str(data),
        "replay_speed": 0,
        "replay_chunk_pulses": setup.chunk_pulses,
        "update_every": UPDATE_EVERY_S,
        "run_transition": "Stop",
        "preserve_events": mode.preserve_events,
        "accum_method": "Add",
        "log_file": str(log),
    }
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


# --- running the daemon -------------------------------------------------------------------------------------
def wait_quiet(max_percent: float, max_wait: float) -> float:
    """Wait until the machine's CPU use over 1 s is below ``max_percent`` (at most ``max_wait`` s); returns it."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        if busy < max_percent or time.monotonic() >= deadline:
            return busy


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def run_daemon(mode: Mode, data: Path, setup: Setup, tag: str) -> Run:
    """Run the daemon once (via :data:`WRAPPER`); parse its log; peak RSS and CPU of exactly that process.

    Errors of the run (:attr:`Run.errors`): an exit code other than 0, ERROR lines, a chunk not accumulated,
    events dropped at the source, and chunk lines that do not add up to the file's events.
    """
    workdir = setup.workdir
    log = workdir / f"{tag}.log"
    config = workdir / f"{tag}.json"
    log.unlink(missing_ok=True)
    write_config(config, mode, data, setup, log)
    busy_before = _busy_seconds()
    wrapper = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(workdir / f"{tag}.stdout"), sys.executable, str(DAEMON), str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    busy = _busy_seconds() - busy_before
    usage = json.loads(wrapper.stdout)
    others = max(0.0, busy - usage["user_s"] - usage["sys_s"]) / max(usage["seconds"], 1e-9)
    lines = log.read_text(encoding="utf-8").splitlines()
    chunks = [match for line in lines if (match := CHUNK_LINE.match(line))]
    errors = [line for line in lines if " - ERROR - " in line or "dropped at the source" in line]
    errors += [match[0] for match in chunks if match["not_accumulated"]]
    if usage["returncode"] != 0:
        errors.append(f"exit code {usage['returncode']}: {_last_line(workdir / f'{tag}.stdout')}")
    replayed = sum(int(m["events"]) for m in chunks)
    expected = _file_events(data)
    if replayed != expected:
        errors.append(f"the log's chunk lines count {replayed} events in {len(chunks)} chunks, the file has {expected}")
    durations = [float(m["seconds"]) for m in chunks]
    wall = 0.0
    if chunks:
        first, last = _log_time(chunks[0]["time"]), _log_time(chunks[-1]["time"])
        wall = last - first + durations[0]
    return Run(
        mode=mode.name,
        file=str(data),
        returncode=usage["returncode"],
        events=sum(int(m["events"]) for m in chunks),
        chunks=len(chunks),
        accumulated=_accumulated_events(chunks[-1]["accumulation"]) if chunks else 0,
        chunk_seconds=sum(durations),
        wall_seconds=wall,
        process_seconds=usage["seconds"],
        peak_rss_bytes=usage["maxrss_kib"] * 1024,  # Linux: KiB
        user_seconds=usage["user_s"],
        sys_seconds=usage["sys_s"],
        others_cores=others,
        chunk_durations=durations,
        chunk_events=[int(m["events"]) for m in chunks],
        errors=errors,
    )


def _file_events(path: Path) -> int:
    """Events in the file (the length of its ``event_id``)."""
    with h5py.File(path, "r") as file:
        return int(file[make_events.GROUP]["event_id"].shape[0])


def _last_line(path: Path) -> str:
    """The last line of a file (the daemon's stdout: its error message), "" if there is none."""
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1] if lines else ""


def _accumulated_events(text: str) -> int:
    """``N events`` -> N; a description of dense data (e.g. ``DataArray(event_id: 100000, dense ...)``) -> 0."""
    match = re.fullmatch(r"(\d+) events", text)
    return int(match[1]) if match else 0


def _log_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


# --- the numpy anchor ---------------------------------------------------------------------------------------
def read_event_ids(path: Path) -> tuple[np.ndarray, float]:
    """The file's event_id as int32 (as the daemon holds it) and the read time in s."""
    with h5py.File(path, "r") as file:
        dataset = file[make_events.GROUP]["event_id"]
        ids = np.empty(dataset.shape[0], np.int32)
        started = time.perf_counter()
        dataset.read_direct(ids.view(dataset.dtype))
        return ids, time.perf_counter() - started


def best_of(repeats: int, func) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def h5py_bincount(path: Path, pixels: int, chunk_pulses: int) -> np.ndarray:
    """The h5py anchor: ``event_id`` and ``event_time_offset`` read chunk by chunk (``chunk_pulses`` pulses, as the
    daemon reads them), ``np.bincount`` of each chunk's ids added up; counts per pixel, int64 (pixels,)."""
    with h5py.File(path, "r") as file:
        group = file[make_events.GROUP]
        ids, tofs = group["event_id"], group["event_time_offset"]
        bounds = np.append(group["event_index"][::chunk_pulses].astype(np.int64), ids.shape[0])
        counts = np.zeros(pixels, np.int64)
        for begin, end in itertools.pairwise(bounds):
            chunk_ids, _ = ids[begin:end], tofs[begin:end]
            counts += np.bincount(chunk_ids, minlength=pixels)
        return counts


def anchors(ids: np.ndarray, path: Path, pixels: int, chunk_pulses: int) -> dict[str, float]:
    """Best-of-3 seconds of the h5py anchor (:func:`h5py_bincount`, the target's), and of ``np.bincount`` on the
    ids in memory, int32 and intp (no cast) (context)."""
    as_intp = ids.astype(np.intp)
    return {
        "h5py_s": best_of(3, lambda: h5py_bincount(path, pixels, chunk_pulses)),
        "bincount_int32_s": best_of(3, lambda: np.bincount(ids, minlength=pixels)),
        "bincount_intp_s": best_of(3, lambda: np.bincount(as_intp, minlength=pixels)),
    }


# --- machine ------------------------------------------------------------------------------------------------
def machine() -> dict[str, object]:
    import scipp

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    probe = subprocess.run([sys.executable, "-c", TOUCH_PROBE], capture_output=True, text=True, check=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_GiB": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipp": scipp.__version__,
        "h5py": h5py.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        **{key: round(value) for key, value in json.loads(probe.stdout).items()},
    }


# --- report -------------------------------------------------------------------------------------------------
def summarize(runs: list[Run], baselines: dict[str, list[int]], anchor: dict[str, float]) -> list[dict[str, object]]:
    """One row per configuration: medians (and the best run) of the figures, ratios to the anchor."""
    rows = []
    for mode in MODES:
        mine = [run for run in runs if run.mode == mode.name]
        if not mine:
            continue
        baseline = statistics.median(baselines[mode.scripts])
        peak = statistics.median(run.peak_rss_bytes for run in mine)
        rate_chunks = statistics.median(run.rate_chunks for run in mine)
        rate_best = max(run.rate_chunks for run in mine)
        rate_wall = statistics.median(run.rate_wall for run in mine)
        rate_steady = statistics.median(run.rate_steady for run in mine)
        accumulated, events = mine[0].accumulated, mine[0].events
        rows.append(
            {
                "mode": mode.name,
                "runs": len(mine),
                "events": events,
                "chunks": mine[0].chunks,
                "accumulated": accumulated,
                "chunk_s": statistics.median(run.chunk_seconds for run in mine),
                "wall_s": statistics.median(run.wall_seconds for run in mine),
                "process_s": statistics.median(run.process_seconds for run in mine),
                "rate_chunks": rate_chunks,
                "rate_chunks_best": rate_best,
                "rate_wall": rate_wall,
                "ratio_chunks": rate_chunks / anchor["rate_median"],
                "ratio_chunks_best": rate_best / anchor["rate_best"],
                "ratio_wall": rate_wall / anchor["rate_median"],
                "rate_steady": rate_steady,
                "ratio_steady": rate_steady / anchor["rate_median"],
                "ratio_numpy": rate_chunks / anchor["numpy_rate_median"],
                "peak_rss": peak,
                "peak_rss_max": max(run.peak_rss_bytes for run in mine),
                "baseline_rss": baseline,
                "bytes_per_accumulated_event": (peak - baseline) / accumulated if accumulated else None,
                "bytes_per_replayed_event": (peak - baseline) / events if events else None,
                "user_s": statistics.median(run.user_seconds for run in mine),
                "sys_s": statistics.median(run.sys_seconds for run in mine),
                "others_cores": statistics.median(run.others_cores for run in mine),
                "errors": sorted({error for run in mine for error in run.errors}),
            }
        )
    return rows


def print_report(rows: list[dict[str, object]], anchor: dict[str, float], info: dict) -> None:
    print()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_GiB']} GiB, Linux {info['kernel']}, "
        f"Python {info['python']}, numpy {info['numpy']}, scipp {info['scipp']}, h5py {info['h5py']}"
    )
    print(
        f"memory write rate: first touch {info['first_touch_MBps']} MB/s, rewrite {info['rewrite_MBps']} MB/s; "
        f"load average at start {info['loadavg']}"
    )
    print(
        f"h5py anchor: read event_id and event_time_offset in the daemon's chunks, np.bincount (best of 3) "
        f"{anchor['rate_median'] / 1e6:.1f} M events/s median of {anchor['timings']} timings, best "
        f"{anchor['rate_best'] / 1e6:.1f}"
    )
    print(
        f"numpy alone: np.bincount(int32 event_id in memory, best of 3) {anchor['numpy_rate_median'] / 1e6:.1f} M "
        f"events/s median, best {anchor['numpy_rate_best'] / 1e6:.1f} (intp ids, no cast: "
        f"{anchor['rate_intp_median'] / 1e6:.1f} M events/s; h5py read of event_id {anchor['read_s']:.3f} s)"
    )
    print()
    print("Throughput (medians over the runs; 'best' = fastest run; ratio = daemon rate / h5py anchor rate,")
    print("median / median and best / best; numpy: Σchunk ratio to np.bincount alone)")
    header = (
        f"{'mode':<16}{'runs':>5}{'events':>12}{'chunks':>7}{'Σchunk s':>10}{'Mev/s':>8}{'ratio':>7}"
        f"{'best':>7}{'ratio':>7}{'wall s':>8}{'Mev/s':>8}{'ratio':>7}{'2..N':>7}{'ratio':>7}{'numpy':>7}"
        f"{'CPU u/s':>10}{'others':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cpu = f"{row['user_s']:.1f}/{row['sys_s']:.1f}"
        print(
            f"{row['mode']:<16}{row['runs']:>5}{row['events']:>12,}{row['chunks']:>7}{row['chunk_s']:>10.3f}"
            f"{row['rate_chunks'] / 1e6:>8.1f}{row['ratio_chunks']:>7.2f}"
            f"{row['rate_chunks_best'] / 1e6:>7.1f}{row['ratio_chunks_best']:>7.2f}"
            f"{row['wall_s']:>8.3f}{row['rate_wall'] / 1e6:>8.1f}{row['ratio_wall']:>7.2f}"
            f"{row['rate_steady'] / 1e6:>7.1f}{row['ratio_steady']:>7.2f}{row['ratio_numpy']:>7.2f}{cpu:>10}"
            f"{row['others_cores']:>8.2f}"
        )
        for error in row["errors"]:
            print(f"    ERROR: {error}")
    print("(2..N: Mev/s over the chunks after the first, median; CPU u/s: user/system CPU seconds of the daemon")
    print(" process; others: cores used by other processes meanwhile)")
    print()
    print("Memory (peak RSS of the daemon process; baseline: same configuration, tiny file)")
    header = (
        f"{'mode':<16}{'peak MiB':>10}{'base MiB':>10}{'Δ MiB':>8}{'accumulated':>13}{'B/acc.ev':>10}{'B/repl.ev':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        per_acc, per_replayed = row["bytes_per_accumulated_event"], row["bytes_per_replayed_event"]
        print(
            f"{row['mode']:<16}{row['peak_rss'] / MIB:>10.0f}{row['baseline_rss'] / MIB:>10.0f}"
            f"{(row['peak_rss'] - row['baseline_rss']) / MIB:>8.0f}{row['accumulated']:>13,}"
            f"{'n/a' if per_acc is None else f'{per_acc:.1f}':>10}"
            f"{'n/a' if per_replayed is None else f'{per_replayed:.2f}':>10}"
        )
    print()
    print("Targets:")
    for row in rows:
        if row["mode"].startswith("hist"):
            verdict = "met" if row["ratio_chunks"] >= TARGET_RATIO else "MISSED"
            print(
                f"  {row['mode']}: daemon/h5py = {row['ratio_chunks']:.2f} median, {row['ratio_chunks_best']:.2f} "
                f"best (Σchunk); {row['ratio_wall']:.2f} (wall); {row['ratio_steady']:.2f} (chunks 2..N); "
                f"target >= {TARGET_RATIO}: {verdict} (median, Σchunk)"
            )
        elif row["bytes_per_accumulated_event"] is not None:
            per = row["bytes_per_accumulated_event"]
            verdict = "met" if per <= TARGET_BYTES_PER_EVENT else "MISSED"
            print(
                f"  {row['mode']}: {per:.1f} bytes per accumulated event; target <= {TARGET_BYTES_PER_EVENT:g}: "
                f"{verdict}; daemon/h5py = {row['ratio_chunks']:.2f} (not a target for this run)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=make_events.DEFAULT_EVENTS, help="events (default %(default)s)")
    parser.add_argument("--pixels", type=int, default=make_events.DEFAULT_PIXELS, help="pixels (default %(default)s)")
    parser.add_argument("--data", type=Path, help="NeXus file (default bench/data/events_<N>.nxs, made if needed)")
    parser.add_argument("--chunk-pulses", type=int, default=600, help="replay_chunk_pulses (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per configuration (default %(default)s)")
    parser.add_argument(
        "--modes", nargs="+", choices=[mode.name for mode in MODES], help="configurations to run (default: all)"
    )
    parser.add_argument(
        "--quiet-cpu", type=float, default=15, help="wait until the CPU use is below this %% (default %(default)s)"
    )
    parser.add_argument("--quiet-wait", type=float, default=60, help="... for at most this many s (0: never wait)")
    parser.add_argument("--workdir", type=Path, default=make_events.DATA_DIR / "replay", help="configs, logs")
    parser.add_argument("--json", type=Path, help="write all figures here (default <workdir>/results.json)")
    args = parser.parse_args(argv)

    data = make_events.generate(args.data or make_events.default_path(args.events), args.events, args.pixels)
    args.workdir.mkdir(parents=True, exist_ok=True)
    tiny = make_events.generate(args.workdir / "tiny.nxs", TINY_EVENTS, args.pixels)
    modes = [mode for mode in MODES if args.modes is None or mode.name in args.modes]
    setup = Setup(write_scripts(args.workdir, args.pixels), args.workdir, args.chunk_pulses)
    info = machine()

    ids, read_s = read_event_ids(data)
    timings = [anchors(ids, data, args.pixels, args.chunk_pulses)]
    n_events = ids.size

    def run(mode: Mode, file: Path, tag: str) -> Run:
        if args.quiet_wait > 0:
            wait_quiet(args.quiet_cpu, args.quiet_wait)
        return run_daemon(mode, file, setup, tag)

    warmup = run(modes[0], data, "warmup")
    print(f"warm-up run ({modes[0].name}, discarded): {warmup.rate_chunks / 1e6:.1f} M events/s", flush=True)
    runs: list[Run] = []
    baselines: dict[str, list[int]] = {"hist": [], "events": []}
    for repeat in range(args.repeat):
        for scripts in sorted({mode.scripts for mode in modes}):
            mode = next(mode for mode in modes if mode.scripts == scripts)
            base = run(mode, tiny, f"baseline-{scripts}")
            if base.errors:
                print(f"baseline {scripts}: {base.errors}", file=sys.stderr)
            baselines[scripts].append(base.peak_rss_bytes)
        shift = repeat % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            result = run(mode, data, f"{mode.name.replace('/', '-').replace('=', '')}-{repeat}")
            runs.append(result)
            print(
                f"[{repeat + 1}/{args.repeat}] {mode.name:<15} {result.events:,} events, {result.chunks} chunks: "
                f"Σchunk {result.chunk_seconds:.3f} s ({result.rate_chunks / 1e6:.1f} M/s), "
                f"wall {result.wall_seconds:.3f} s, process {result.process_seconds:.1f} s "
                f"(CPU user {result.user_seconds:.1f} s, sys {result.sys_seconds:.1f} s), "
                f"peak RSS {result.peak_rss_bytes / MIB:.0f} MiB, others {result.others_cores:.2f} cores"
                + (f"  ERRORS: {result.errors}" if result.errors else ""),
                flush=True,
            )
        timings.append(anchors(ids, data, args.pixels, args.chunk_pulses))  # re-timed after each round

    int32 = [timing["bincount_int32_s"] for timing in timings]
    h5py_s = [timing["h5py_s"] for timing in timings]
    anchor = {
        "events": n_events,
        "read_s": read_s,
        "timings": len(timings),
        "bincount_int32_s": int32,
        "bincount_intp_s": [timing["bincount_intp_s"] for timing in timings],
        "h5py_s": h5py_s,
        "rate_median": n_events / statistics.median(h5py_s),
        "rate_best": n_events / min(h5py_s),
        "numpy_rate_median": n_events / statistics.median(int32),
        "numpy_rate_best": n_events / min(int32),
        "rate_intp_median": n_events / statistics.median(timing["bincount_intp_s"] for timing in timings),
    }
    rows = summarize(runs, baselines, anchor)
    print_report(rows, anchor, info)
    output = args.json or args.workdir / "results.json"
    output.write_text(
        json.dumps(
            {
                "machine": info,
                "anchor": anchor,
                "baselines": baselines,
                "summary": rows,
                "runs": [asdict(run) for run in runs],
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"\nfigures written to {output}")
    return 1 if any(run.errors for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
