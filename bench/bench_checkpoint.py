#!/usr/bin/env python3
"""Checkpoint benchmark (issue 17 §3): what writing and resuming a checkpoint costs, against h5py on the same bytes.

**In process** (the real ``LiveDataLoader``, ``Accumulator``, ``Checkpointer`` and ``CheckpointStore``; a
synthetic listener in this file makes chunks of 60 Hz pulses of ~16,667 events: ``event_id`` int32,
``event_time_offset`` float32, float32 weights, 12 bytes per event), per accumulation:

* histograms (``preserve_events`` false, 1,000,000-event chunks histogrammed over the pixel range): 122,889,
  1,000,000 and 16,777,216 pixels (float32 counts, int32 ``event_id``), and 122,889 pixels x 1000 time-of-flight
  bins (a proc script ``flat_events(input).hist(event_id=..., event_time_offset=1000)``; 1,000,000 x 1000 with
  ``--big``): each checkpoint rewrites the whole histogram;
* events (``preserve_events`` true, no proc script): 1e6, 1e7 and 1e8 events accumulated in chunks of
  1,000,000 (100,000 for 1e6); a size is skipped (and says so) when the available memory is below
  :data:`MEMORY_PER_EVENT` bytes per event. The **first** checkpoint writes everything; the **second**, after 1 %
  more events were appended, writes only the pulses added since (disk time proportional to what changed).

For each checkpoint: **snapshot** = the time the cycle thread spends in ``Checkpointer.after_cycle`` (taking
the snapshot and starting the ``Checkpoint`` thread); **write** = the time the background write then takes to
commit (``Checkpointer.close``, which waits for it); bytes written (new files); MB/s. Anchors, in the same run:
**h5py** writing the same bytes (the events' fields and bin bounds, or the histogram's values and coordinates) as
plain numpy datasets into a new file, then ``fsync``; **copy**: copying the same numpy arrays in memory.

**Interference**: a second loader (``preserve_events`` false, 100,000 pixels, chunks of 1,000,000 events: 0.1 s
of a 1e7 events/s stream) runs cycles alone, then while a fresh ``Checkpointer`` writes the accumulation's first
checkpoint in its thread (``after_cycle`` after each probe cycle, as the engine calls it, until the write is
taken): median and largest probe cycle during the write against the median alone.

**Resume** (in process): ``Checkpointer.resume`` (``CheckpointStore.load_parts`` + ``LiveDataLoader.restore`` ->
``Accumulator.restore``) on a new loader, with the checkpoint's files dropped from the page cache first
(``posix_fadvise`` DONTNEED: read from disk) and again with them cached; ``load_parts`` alone (cached); the h5py
anchor file read back (cold, cached).

**End to end** (``--e2e``; default 1e6 and 1e7 events, 1e8 with ``--big``): the daemon (``scripts/livereduce.py``)
replays a ``bench/make_events.py`` file (``FileEventDataListener``, ``replay_speed`` 0, ``replay_chunk_pulses``
600, ``update_every`` 0.01, ``preserve_events`` true, post_proc ``output = input``, ``checkpoint_every`` 60) to its
end (the engine writes a checkpoint when the source has ended) and is stopped (SIGTERM); a new daemon on the same
configuration resumes: **resume** = time from its ``Popen`` to the log line ``Resumed accumulation: post_proc on
the accumulation ...``, minus the load time the line ``Resuming run ... loaded in X s`` reports; target <= 2 s.
Against **re-read**: the same daemon with ``checkpoint_every`` 0 on an empty checkpoint directory, from ``Popen``
to the line ``The source has ended`` (after the last chunk's post_proc). The first pass (with checkpoints) against
the re-read (without) also shows what checkpointing costs a replay.

Usage (final figures under the exclusive CPU lock)::

    flock -x /tmp/lead/cpu.lock python3 bench/bench_checkpoint.py          # ~5 min: in process + 1e6, 1e7 daemon
    flock -x /tmp/lead/cpu.lock python3 bench/bench_checkpoint.py --big    # + 1e6 x 1000 histogram, 1e8 daemon
    python3 bench/bench_checkpoint.py --events 1e6 --hist-pixels 122889 --no-2d --e2e 1e6   # a quick check

Prints a table per part and writes every figure to ``bench/data/checkpoint/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import psutil
import scipp as sc

import bench_replay
import make_events
from livereduce.clock import SystemClock
from livereduce.config import Config
from livereduce.engines.scipp.checkpointing import Checkpointer
from livereduce.engines.scipp.checkpoints import CheckpointStore, Manifest, depends_on
from livereduce.engines.scipp.chunk import RunMetadata, make_chunk
from livereduce.engines.scipp.cycle import LiveDataLoader
from livereduce.engines.scipp.listeners.base import Extracted, Listener, RunStatus, SourcePosition
from livereduce.memory import memory_limit
from livereduce.provenance import origin
from livereduce.scripts import ProcessingScripts, load_script

REPO = Path(__file__).resolve().parent.parent
DAEMON = REPO / "scripts" / "livereduce.py"
OUT = REPO / "bench" / "data" / "checkpoint"
INSTRUMENT = "BENCH"
START = np.datetime64(make_events.OFFSET, "ns")
PULSE_NS = round(1e9 / make_events.PULSE_RATE_HZ)
CHUNK_EVENTS = 1_000_000
"""Events per chunk of the accumulations and of the probe: 0.1 s of a 1e7 events/s stream."""
PROBE_PIXELS = 100_000
PROBE_ALONE = 15
"""Probe cycles timed alone (median)."""
TOF_BINS = 1000
MEMORY_PER_EVENT = 60
"""Bytes of available memory an event size needs: the accumulation (12 B/event), the write's copy of the part it
writes (12), the anchor (12, read back), the resumed accumulation and its loaded parts (24)."""
MB = 1e6
HIST_2D_PROC = """\
import scipp as sc

from livereduce.engines.scipp.chunk import flat_events

edges = sc.arange("event_id", 0, {pixels} + 1, unit=None, dtype="int32")
output = flat_events(input).hist(event_id=edges, event_time_offset={bins})
"""
LOG_LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (?P<logger>[\w.]+) - \w+ - (?P<message>.*)$")
LOADED = re.compile(r"^Resuming run \d+ .*; (?P<mb>[\d.]+) MB loaded in (?P<seconds>[\d.]+) s$")
RESUMED = re.compile(r"^Resumed accumulation: post_proc on the accumulation \(.*\) without new data; (?P<s>[\d.]+) s")
ENDED = "The source has ended"


# --- in process -----------------------------------------------------------------------------------------------
class Synthetic(Listener):
    """Chunks of ``chunk_events`` events (settable between extracts) in 60 Hz pulses of ~16,667 events, pixels
    uniform in ``[0, pixels)``, drawn once from a seeded pool and reused; run 1, never ending. Resumes at
    ``{"pulse": n}``."""

    name = "Synthetic"

    def __init__(self, pixels: int, chunk_events: int) -> None:
        rng = np.random.default_rng(12345)
        self.pixels = pixels
        self.chunk_events = chunk_events
        self.pulse = 0
        self._ids = rng.integers(0, pixels, CHUNK_EVENTS, dtype=np.int32)
        self._tofs = rng.random(CHUNK_EVENTS, dtype=np.float32) * np.float32(math.floor(make_events.FRAME_US))
        self._metadata = RunMetadata(run_number=1, start_time=START, instrument_name=INSTRUMENT)

    def connect(self) -> None:
        return

    def resume_refusal(self, position: SourcePosition) -> str | None:
        return None if isinstance(position.get("pulse"), int) else f"no pulse in {position}"

    def start(self, position: object, resume: SourcePosition | None = None) -> None:  # noqa: ARG002 - no history
        if resume is not None:
            self.pulse = resume["pulse"]

    def extract(self) -> Extracted:
        n = self.chunk_events
        pulses = make_events.n_pulses_for(n)
        times = START + (np.arange(self.pulse, self.pulse + pulses, dtype=np.int64) * PULSE_NS).astype("m8[ns]")
        chunk = make_chunk(
            self._ids[:n], self._tofs[:n], times, np.arange(pulses) * n // pulses, metadata=self._metadata
        )
        self.pulse += pulses
        return Extracted(chunk, RunStatus.Running, (0, self.pixels - 1), position={"pulse": self.pulse})


def loader_for(listener: Synthetic, workdir: Path, *, preserve_events: bool, proc: str | None) -> LiveDataLoader:
    """A loader as the engine makes one (post_proc ``output = input``; ``proc`` the proc script's text or None)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = Config(instrument=INSTRUMENT, preserve_events=preserve_events, accum_method="Add")
    post = workdir / "post_proc.py"
    post.write_text("output = input\n")
    proc_script = None
    if proc is not None:
        (workdir / "proc.py").write_text(proc)
        proc_script = load_script("proc", workdir / "proc.py")
    scripts = ProcessingScripts(proc_script, load_script("post_proc", post))
    provenance = origin(config, "scipp", {"scipp": sc.__version__}, listener.name)
    return LiveDataLoader(listener, scripts, config, memory_limit(config) or 0, provenance)


def checkpointer(directory: Path, loader: LiveDataLoader) -> Checkpointer:
    """A checkpointer on an empty ``directory`` that is due after every cycle."""
    shutil.rmtree(directory, ignore_errors=True)
    return Checkpointer(CheckpointStore(directory), 1e-9, depends_on(loader.provenance), SystemClock())


def committed_files(store: CheckpointStore, manifest: Manifest) -> list[Path]:
    return [store.directory / manifest.lineage / name for name in [*manifest.files, manifest.metadata_file]]


def repeat(directory: Path, loader: LiveDataLoader) -> dict[str, float]:
    """The first checkpoint of ``loader``'s accumulation again, by a fresh checkpointer in ``directory`` (removed
    after): the same write into memory and page cache used just before."""
    result = checkpoint(checkpointer(directory, loader), loader)
    shutil.rmtree(directory, ignore_errors=True)
    return result


def checkpoint(points: Checkpointer, loader: LiveDataLoader) -> dict[str, float]:
    """One checkpoint as the engine takes it: ``after_cycle`` (the cycle thread's share), then ``close`` waits for
    the background write. Seconds of each, and the bytes of the files it added.

    Raises:
        RuntimeError: the checkpoint was not written (its state says why).
    """
    before = points.store.read()
    old = set() if before is None else set(committed_files(points.store, before))
    started = time.perf_counter()
    points.after_cycle(loader)
    snapshot = time.perf_counter()
    points.close(loader, 3600)
    done = time.perf_counter()
    if not points.state.startswith("written"):
        raise RuntimeError(f"checkpoint not written: {points.state}")
    manifest = points.store.read()
    added = [path for path in committed_files(points.store, manifest) if path not in old]
    return {
        "snapshot_s": snapshot - started,
        "write_s": done - snapshot,
        "bytes": sum(path.stat().st_size for path in added),
        "files_bytes": manifest.nbytes,
    }


def event_arrays(view: sc.DataArray) -> dict[str, np.ndarray]:
    """The numpy arrays behind pulses of an event accumulation (views, no copy): each event field over the
    pulses' events, the bin bounds (relative) and the pulse coordinates."""
    parts = view.bins.constituents
    begin, end = parts["begin"].values, parts["end"].values
    low, high = (int(begin[0]), int(end[-1])) if begin.size else (0, 0)
    buffer = parts["data"]
    arrays = {"weights": buffer.values[low:high]}
    arrays.update({f"event/{name}": coord.values[low:high] for name, coord in buffer.coords.items()})
    arrays.update({"begin": begin - low, "end": end - low})
    arrays.update({f"pulse/{name}": coord.values for name, coord in view.coords.items() if coord.ndim == 1})
    return arrays


def dense_arrays(data: sc.DataArray) -> dict[str, np.ndarray]:
    """The numpy arrays of a dense histogram: values and its coordinates (views)."""
    arrays = {"values": data.values}
    arrays.update({name: coord.values for name, coord in data.coords.items() if coord.ndim >= 1})
    return arrays


def h5py_write(path: Path, arrays: dict[str, np.ndarray]) -> float:
    """Seconds to write ``arrays`` as plain datasets into a new HDF5 file and fsync it (the anchor; datetime64 as
    int64, as scipp stores it)."""
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    with h5py.File(path, "w") as file:
        for name, values in arrays.items():
            file.create_dataset(name, data=values.view(np.int64) if values.dtype.kind == "M" else values)
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    return time.perf_counter() - started


def h5py_read(path: Path) -> float:
    """Seconds to read every dataset of ``path`` into numpy arrays."""
    started = time.perf_counter()
    with h5py.File(path, "r") as file:
        names: list[str] = []
        file.visit(lambda name: names.append(name) if isinstance(file[name], h5py.Dataset) else None)
        for name in names:
            file[name][()]
    return time.perf_counter() - started


def copy_seconds(arrays: dict[str, np.ndarray]) -> float:
    """Best of 2: copying ``arrays`` in memory (into memory used before: the second copy)."""
    times = []
    for _ in range(2):
        started = time.perf_counter()
        copies = [values.copy() for values in arrays.values()]
        times.append(time.perf_counter() - started)
        del copies
    return min(times)


def drop_cache(paths: list[Path]) -> None:
    """Drop the pages of ``paths`` from the page cache (``posix_fadvise`` DONTNEED; they are fsynced), so that the
    next read comes from the disk. Only these files: the cache of other processes is left alone."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def anchor(workdir: Path, arrays: dict[str, np.ndarray], tag: str) -> dict[str, float]:
    """The h5py write (+ fsync, twice: the first into memory this process has not used before, see
    docs/performance.md "Machine") and in-memory copy of ``arrays``; the file's read back, cold and cached."""
    path = workdir / f"anchor-{tag}.h5"
    write = h5py_write(path, arrays)
    again = h5py_write(path, arrays)
    drop_cache([path])
    cold = h5py_read(path)
    cached = h5py_read(path)
    result = {
        "bytes": sum(values.nbytes for values in arrays.values()),
        "h5py_write_s": write,
        "h5py_write_again_s": again,
        "copy_s": copy_seconds(arrays),
        "h5py_read_cold_s": cold,
        "h5py_read_cached_s": cached,
    }
    path.unlink()
    return result


def interference(workdir: Path, loader: LiveDataLoader) -> dict[str, object]:
    """Probe cycles alone, then while a fresh checkpointer writes ``loader``'s accumulation (its first checkpoint:
    everything); see the module docstring. A probe cycle during the write is timed with the ``after_cycle`` that
    follows it (what the engine's cycle thread does), so a stall in either counts."""
    probe = loader_for(Synthetic(PROBE_PIXELS, CHUNK_EVENTS), workdir / "probe", preserve_events=False, proc=None)

    def cycle() -> float:
        started = time.perf_counter()
        probe.run()
        return time.perf_counter() - started

    for _ in range(3):  # warm-up: the probe's memory
        cycle()
    alone = [cycle() for _ in range(PROBE_ALONE)]
    points = checkpointer(workdir / "interference", loader)
    before = points.state
    started = time.perf_counter()
    points.after_cycle(loader)
    during: list[float] = []
    while points.state == before:
        began = time.perf_counter()
        probe.run()
        points.after_cycle(loader)  # takes the finished write, as the engine does after each cycle
        during.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - started
    shutil.rmtree(points.store.directory, ignore_errors=True)
    return {
        "probe_alone_median_s": statistics.median(alone),
        "probe_alone_max_s": max(alone),
        "probe_during_median_s": statistics.median(during),
        "probe_during_max_s": max(during),
        "probe_cycles_during": len(during),
        "write_wall_s": elapsed,
        "slowdown": statistics.median(during) / statistics.median(alone),
    }


def resume(points: Checkpointer, make: Callable[[], LiveDataLoader]) -> dict[str, float]:
    """``Checkpointer.resume`` on a new loader, files cold then cached; ``load_parts`` alone (cached)."""
    store = points.store
    manifest = store.read()
    files = committed_files(store, manifest)
    result: dict[str, float] = {}
    for label in ("cold", "cached"):
        if label == "cold":
            drop_cache(files)
        loader = make()
        reader = Checkpointer(store, 60, depends_on(loader.provenance), SystemClock())
        started = time.perf_counter()
        resumed = reader.resume(loader.listener, loader, None)
        result[f"resume_{label}_s"] = time.perf_counter() - started
        if resumed is None or loader.accumulator.event_count != manifest.accumulated_events:
            raise RuntimeError(f"the checkpoint in {store.directory} did not resume: {reader.state}")
        del loader
    started = time.perf_counter()
    parts = store.load_parts(manifest)
    result["load_parts_cached_s"] = time.perf_counter() - started
    del parts
    result["restore_s"] = max(0.0, result["resume_cached_s"] - result["load_parts_cached_s"])
    return result


def measure_histogram(workdir: Path, pixels: int, tof_bins: int) -> dict[str, object]:
    """Checkpoints of a histogram of ``pixels`` (x ``tof_bins`` when > 0): two, each a full rewrite."""
    tag = f"hist-{pixels}" + (f"x{tof_bins}" if tof_bins else "")
    proc = HIST_2D_PROC.format(pixels=pixels, bins=tof_bins) if tof_bins else None

    def make() -> LiveDataLoader:
        return loader_for(Synthetic(pixels, CHUNK_EVENTS), workdir / tag, preserve_events=False, proc=proc)

    loader = make()
    for _ in range(2):
        loader.run()
    points = checkpointer(workdir / tag / "checkpoints", loader)
    first = checkpoint(points, loader)
    again = repeat(workdir / tag / "repeat", loader)
    loader.run()
    second = checkpoint(points, loader)
    accumulation = loader.accumulator.accumulation
    row = {
        "kind": "histogram",
        "name": f"{pixels:,} pixels" + (f" x {tof_bins} TOF" if tof_bins else "") + f" {accumulation.dtype}",
        "size": int(accumulation.values.size),
        "first": first,
        "repeat": again,
        "second": second,
        "anchor": anchor(workdir, dense_arrays(accumulation), tag),
        "interference": interference(workdir, loader),
        "resume": resume(points, make),
    }
    shutil.rmtree(workdir / tag, ignore_errors=True)
    return row


def measure_events(workdir: Path, events: int) -> dict[str, object]:
    """Checkpoints of an accumulation of ``events`` events: the first (everything), then after 1 % more."""
    tag = f"events-{events}"
    chunk = min(CHUNK_EVENTS, max(events // 10, 16_667))

    def make() -> LiveDataLoader:
        return loader_for(Synthetic(PROBE_PIXELS, chunk), workdir / tag, preserve_events=True, proc=None)

    loader = make()
    listener = loader.listener
    started = time.perf_counter()
    while loader.accumulator.event_count < events:
        listener.chunk_events = min(chunk, events - loader.accumulator.event_count)
        loader.run()
    build_s = time.perf_counter() - started
    points = checkpointer(workdir / tag / "checkpoints", loader)
    full = event_arrays(loader.accumulator.events_since(0))
    first = checkpoint(points, loader)
    again = repeat(workdir / tag / "repeat", loader)
    first_anchor = anchor(workdir, full, f"{tag}-first")
    del full
    pulses = loader.accumulator.n_pulses
    listener.chunk_events = max(1, events // 100)
    loader.run()
    increment = event_arrays(loader.accumulator.events_since(pulses))
    second = checkpoint(points, loader)
    second_anchor = anchor(workdir, increment, f"{tag}-second")
    del increment
    row = {
        "kind": "events",
        "name": f"{events:,} events",
        "size": loader.accumulator.event_count,
        "build_s": build_s,
        "first": first,
        "repeat": again,
        "second": second,
        "anchor": first_anchor,
        "anchor_second": second_anchor,
        "interference": interference(workdir, loader),
        "resume": resume(points, make),
    }
    shutil.rmtree(workdir / tag, ignore_errors=True)
    return row


# --- end to end -----------------------------------------------------------------------------------------------
def daemon_config(workdir: Path, data: Path, checkpoint_every: float) -> Path:
    scripts = workdir / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / f"reduce_{INSTRUMENT}_live_post_proc.py").write_text(bench_replay.IDENTITY_POST_PROC)
    config = {
        "instrument": INSTRUMENT,
        "engine": "scipp",
        "script_dir": str(scripts),
        "listener": "FileEventDataListener",
        "filename": str(data),
        "replay_speed": 0,
        "replay_chunk_pulses": 600,
        "update_every": bench_replay.UPDATE_EVERY_S,
        "preserve_events": True,
        "accum_method": "Add",
        "checkpoint_every": checkpoint_every,
        "checkpoint_dir": str(workdir / "checkpoints"),
        "log_file": str(workdir / "daemon.log"),
        "status_file": str(workdir / "status.json"),
    }
    path = workdir / f"daemon-{checkpoint_every:g}.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def log_lines(log: Path, since: int) -> list[tuple[float, str]]:
    """(Unix time, message) of the log's lines from byte ``since`` on."""
    if not log.exists():
        return []
    with log.open("rb") as handle:
        handle.seek(since)
        text = handle.read().decode(errors="replace")
    lines = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            when = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            lines.append((when, match["message"]))
    return lines


def life(config: Path, log: Path, done: Callable[[list[tuple[float, str]]], bool], timeout: float) -> dict:
    """Start the daemon, wait until ``done(its log lines)``, stop it (SIGTERM). Its lines, start time, CPU."""
    since = log.stat().st_size if log.exists() else 0
    launched = time.time()
    process = subprocess.Popen(
        [sys.executable, str(DAEMON), str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while not done(lines := log_lines(log, since)):
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited {process.returncode}; log {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not finish within {timeout} s; log {log}")
            time.sleep(0.02)
        times = psutil.Process(process.pid).cpu_times()
        cpu = times.user + times.system
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    errors = [message for _, message in log_lines(log, since) if "Traceback" in message or "not written" in message]
    return {"launched": launched, "lines": lines, "cpu_s": cpu, "errors": errors}


def first_line(lines: list[tuple[float, str]], predicate: Callable[[str], object]) -> tuple[float, str]:
    return next((when, message) for when, message in lines if predicate(message))


def ended_and_committed(directory: Path, events: int) -> Callable[[list[tuple[float, str]]], bool]:
    """Done when the log says the source ended and the committed manifest holds all ``events`` and ``ended``."""

    def done(lines: list[tuple[float, str]]) -> bool:
        if not any(message.startswith(ENDED) for _, message in lines):
            return False
        try:
            manifest = CheckpointStore(directory).read()
        except Exception:  # noqa: BLE001 - a manifest being replaced: poll again
            return False
        return manifest is not None and manifest.ended and manifest.accumulated_events == events

    return done


def measure_e2e(workdir: Path, events: int, pixels: int) -> dict[str, object]:
    """The daemon: a pass with checkpoints, a resume, a re-read without (see the module docstring)."""
    data = make_events.generate(make_events.default_path(events), events, pixels)
    tag = workdir / f"e2e-{events}"
    shutil.rmtree(tag, ignore_errors=True)
    tag.mkdir(parents=True)
    log = tag / "daemon.log"
    with_checkpoints = daemon_config(tag, data, 60)
    timeout = 120 + events / 5e5
    first_pass = life(with_checkpoints, log, ended_and_committed(tag / "checkpoints", events), timeout)
    manifest = CheckpointStore(tag / "checkpoints").read()

    def resumed(lines: list[tuple[float, str]]) -> bool:
        return any(RESUMED.match(message) for _, message in lines)

    again = life(with_checkpoints, log, resumed, timeout)
    output_at, output = first_line(again["lines"], RESUMED.match)
    loaded_at, loaded = first_line(again["lines"], LOADED.match)
    shutil.rmtree(tag / "checkpoints")
    reread = life(daemon_config(tag, data, 0), log, lambda ls: any(m.startswith(ENDED) for _, m in ls), timeout)
    for run in (first_pass, again, reread):
        run["first_line_s"] = run["lines"][0][0] - run["launched"]
    resume_s = output_at - again["launched"]
    load_s = float(LOADED.match(loaded)["seconds"])
    row = {
        "events": events,
        "file": str(data),
        "checkpoint_bytes": manifest.nbytes,
        "checkpoint_files": len(manifest.files),
        "first_pass_s": first_line(first_pass["lines"], lambda m: m.startswith(ENDED))[0] - first_pass["launched"],
        "first_pass_cpu_s": first_pass["cpu_s"],
        "resume_to_output_s": resume_s,
        "resume_load_s": load_s,
        "resume_post_proc_s": float(RESUMED.match(output)["s"]),
        "resume_loaded_at_s": loaded_at - again["launched"],
        "resume_minus_load_s": resume_s - load_s,
        "resume_cpu_s": again["cpu_s"],
        "reread_s": first_line(reread["lines"], lambda m: m.startswith(ENDED))[0] - reread["launched"],
        "reread_cpu_s": reread["cpu_s"],
        "start_to_first_line_s": statistics.median(run["first_line_s"] for run in (first_pass, again, reread)),
        "errors": first_pass["errors"] + again["errors"] + reread["errors"],
    }
    row["target_met"] = row["resume_minus_load_s"] <= 2.0
    return row


# --- report ---------------------------------------------------------------------------------------------------
def rate(nbytes: float, seconds: float) -> str:
    return f"{nbytes / MB / seconds:,.0f}" if seconds > 0 else "n/a"


def print_report(rows: list[dict], e2e: list[dict], skipped: list[str], info: dict) -> None:
    print()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_GiB']} GiB, Linux {info['kernel']}, "
        f"Python {info['python']}, numpy {info['numpy']}, scipp {info['scipp']}, h5py {info['h5py']}; "
        f"load average at start {info['loadavg']}"
    )
    print("\nWrite (snap: the cycle thread in after_cycle; write: the Checkpoint thread until committed; h5py: the")
    print("same bytes as plain datasets + fsync, first and repeated write; x h5py = write / h5py on the same row)")
    header = (
        f"{'accumulation':<34}{'checkpoint':>11}{'MB':>9}{'snap ms':>9}{'write s':>9}{'MB/s':>7}"
        f"{'h5py s':>8}{'MB/s':>7}{'x h5py':>8}{'copy s':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        events = row["kind"] == "events"
        checks = [
            ("first", row["first"], row["anchor"]["h5py_write_s"], row["anchor"]),
            ("repeat", row["repeat"], row["anchor"]["h5py_write_again_s"], row["anchor"]),
            (
                "+1 %" if events else "rewrite",
                row["second"],
                (row["anchor_second"] if events else row["anchor"])["h5py_write_again_s"],
                row["anchor_second"] if events else row["anchor"],
            ),
        ]
        for label, point, h5, anchored in checks:
            write = point["write_s"]
            print(
                f"{row['name'] if label == 'first' else '':<34}{label:>11}{point['bytes'] / MB:>9,.1f}"
                f"{point['snapshot_s'] * 1e3:>9.2f}{write:>9.3f}{rate(point['bytes'], write):>7}{h5:>8.3f}"
                f"{rate(anchored['bytes'], h5):>7}{write / h5:>8.1f}{anchored['copy_s']:>8.3f}"
            )
    print("(first: the accumulation's first checkpoint, into memory and page cache this process had not used;")
    print(" repeat: the same again; +1 %: after 1 % more events (only those are written); rewrite: a histogram's")
    print(" next checkpoint, all of it)")
    print("\nInterference (probe: cycles of 1e6 events, preserve_events false, 100,000 pixels, while the first")
    print("checkpoint of the accumulation is written by the Checkpoint thread)")
    header = (
        f"{'accumulation':<34}{'alone ms':>10}{'max ms':>8}{'during ms':>11}{'max ms':>8}{'slowdown':>10}{'cycles':>8}"
        f"{'write s':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        probe = row["interference"]
        print(
            f"{row['name']:<34}{probe['probe_alone_median_s'] * 1e3:>10.1f}{probe['probe_alone_max_s'] * 1e3:>8.1f}"
            f"{probe['probe_during_median_s'] * 1e3:>11.1f}{probe['probe_during_max_s'] * 1e3:>8.1f}"
            f"{probe['slowdown']:>10.2f}{probe['probe_cycles_during']:>8}{probe['write_wall_s']:>9.3f}"
        )
    print("\nResume in process (Checkpointer.resume = load_parts + restore; cold: files dropped from the page cache)")
    header = (
        f"{'accumulation':<34}{'MB':>9}{'cold s':>8}{'cached s':>9}{'load s':>8}{'restore s':>10}"
        f"{'h5py cold':>10}{'h5py cached':>12}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        done, anchored = row["resume"], row["anchor"]
        nbytes = row["first"]["files_bytes"] if row["kind"] == "histogram" else row["second"]["files_bytes"]
        print(
            f"{row['name']:<34}{nbytes / MB:>9,.1f}{done['resume_cold_s']:>8.3f}{done['resume_cached_s']:>9.3f}"
            f"{done['load_parts_cached_s']:>8.3f}{done['restore_s']:>10.3f}{anchored['h5py_read_cold_s']:>10.3f}"
            f"{anchored['h5py_read_cached_s']:>12.3f}"
        )
    if e2e:
        print(
            "\nEnd to end (daemon, file replay, preserve_events true): resume = Popen -> 'Resumed accumulation' line;"
        )
        print("target: resume - load <= 2 s; re-read = Popen -> 'The source has ended' without checkpoints")
        header = (
            f"{'events':>12}{'ckpt MB':>9}{'1st pass s':>11}{'resume s':>10}{'load s':>8}{'- load':>8}{'target':>8}"
            f"{'re-read s':>10}{'startup s':>10}"
        )
        print(header)
        print("-" * len(header))
        for row in e2e:
            print(
                f"{row['events']:>12,}{row['checkpoint_bytes'] / MB:>9,.1f}{row['first_pass_s']:>11.2f}"
                f"{row['resume_to_output_s']:>10.2f}{row['resume_load_s']:>8.2f}{row['resume_minus_load_s']:>8.2f}"
                f"{'met' if row['target_met'] else 'MISSED':>8}{row['reread_s']:>10.2f}"
                f"{row['start_to_first_line_s']:>10.2f}"
            )
            for error in row["errors"]:
                print(f"    ERROR: {error}")
    for line in skipped:
        print(f"skipped: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--hist-pixels", type=int, nargs="*", default=[122_889, 1_000_000, 1 << 24])
    parser.add_argument("--no-2d", action="store_true", help="skip the pixel x TOF histogram")
    parser.add_argument("--events", type=float, nargs="*", default=[1e6, 1e7, 1e8], help="event accumulations")
    parser.add_argument("--e2e", type=float, nargs="*", default=None, help="daemon runs (default 1e6 1e7)")
    parser.add_argument("--big", action="store_true", help="also 1,000,000 x 1000 TOF and the 1e8 daemon run")
    parser.add_argument("--pixels", type=int, default=make_events.DEFAULT_PIXELS, help="pixels of the files")
    parser.add_argument("--workdir", type=Path, default=OUT)
    args = parser.parse_args(argv)
    e2e_sizes = [int(n) for n in (args.e2e if args.e2e is not None else [1e6, 1e7] + ([1e8] if args.big else []))]
    args.workdir.mkdir(parents=True, exist_ok=True)
    info = bench_replay.machine()
    rows: list[dict] = []
    skipped: list[str] = []
    shapes = [(pixels, 0) for pixels in args.hist_pixels]
    if not args.no_2d:
        shapes += [(122_889, TOF_BINS)] + ([(1_000_000, TOF_BINS)] if args.big else [])
    for pixels, bins in shapes:
        need = pixels * max(bins, 1) * 4 * 8  # accumulation, chunk histogram, snapshot copy, anchor, resume
        if need > psutil.virtual_memory().available:
            skipped.append(f"histogram {pixels} x {bins}: needs {need / 2**30:.1f} GiB")
            continue
        rows.append(measure_histogram(args.workdir, pixels, bins))
        print(f"histogram {rows[-1]['name']}: {json.dumps(rows[-1]['first'])}", flush=True)
    for events in (int(n) for n in args.events):
        available = psutil.virtual_memory().available
        if events * MEMORY_PER_EVENT > available:
            skipped.append(
                f"{events:,} events: needs {events * MEMORY_PER_EVENT / 2**30:.1f} GiB, "
                f"{available / 2**30:.1f} available"
            )
            continue
        rows.append(measure_events(args.workdir, events))
        print(
            f"events {rows[-1]['name']}: {json.dumps(rows[-1]['first'])} {json.dumps(rows[-1]['second'])}", flush=True
        )
    e2e = []
    for events in e2e_sizes:
        free = shutil.disk_usage(args.workdir).free
        if events * 40 > free or events * MEMORY_PER_EVENT > psutil.virtual_memory().available:
            skipped.append(f"daemon run of {events:,} events: not enough disk or memory")
            continue
        e2e.append(measure_e2e(args.workdir, events, args.pixels))
        print(f"daemon {events:,}: {json.dumps({k: v for k, v in e2e[-1].items() if k != 'errors'})}", flush=True)
    print_report(rows, e2e, skipped, info)
    output = args.workdir / "results.json"
    output.write_text(
        json.dumps(
            {
                "machine": info,
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "in_process": rows,
                "end_to_end": e2e,
                "skipped": skipped,
            },
            indent=1,
        )
    )
    print(f"\nfigures written to {output}")
    return 1 if any(row["errors"] for row in e2e) else 0


if __name__ == "__main__":
    sys.exit(main())
