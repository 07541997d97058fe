#!/usr/bin/env python3
"""ADARA benchmark: the fake SMS at full speed, the daemon reducing its stream, against numpy on the same bytes.

Data: ``bench/make_events.py`` (50,000,000 events, 100,000 pixels, 3,000 pulses at 60 Hz), encoded as the fake
SMS encodes it (one BANKED_EVENT per pulse, ~133 kB each; 400 MB in all).

Measured, in one run of this script:

* **numpy anchor**: the stream's bytes in memory, ``np.frombuffer`` over the event sections (the pixel words of
  each packet, whose offsets the anchor is given) + ``np.concatenate`` + ``np.bincount`` (100,000 bins); best of 3;
* **decode alone**: the listener's reading path in process, from the same bytes: framer (1 MiB pieces, as from
  ``recv_into``) -> client state -> the NXevent_data chunk (``extracted``); best of 3; split into reading
  (framing, walking, copying events) and chunk building; and the same with default-sized segments, taken and made
  a chunk every :data:`TAKE_EVERY` packets while reading, as the daemon's cycles take them;
* **end to end**: ``livereduce-fake-sms FILE --speed 0`` and the daemon (``SNSLiveEventDataListener``,
  ``from_start_of_run``, proc ``flat_events(input).hist(event_id=...)``, ``preserve_events`` false, Add,
  ``run_transition`` Stop, ``update_every`` 0.05) as separate processes: events / (time of the last chunk's log
  line - time of the daemon's "Connected to the SMS" line), i.e. socket -> decode -> chunk -> proc ->
  accumulate; its ratio to the anchor; peak RSS of the daemon (``ru_maxrss`` via bench_replay's wrapper) against
  a baseline run on a 60,000-event file; CPU of both processes, and where the daemon's CPU went in that window
  (its threads, sampled every 20 ms with psutil: the busiest is the reader or the cycle, the rest scipp's worker
  threads and the supervisor) and how many of the machine's cores both processes used. Repeated ``--repeat``
  times (median, best);
* **bare TCP client**: a client that sends the hello and only receives the same fake SMS's stream (``recv_into``
  a 1 MiB buffer, discarded): the stream's bytes / (last byte - first byte), best of 3: what the socket alone
  allows on this machine, beside the anchor that has no socket.

Usage::

    python bench/bench_adara.py                       # 50M events, 3 end-to-end runs per buffer size
    python bench/bench_adara.py --events 5000000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

import bench_replay
import make_events
from livereduce.engines.scipp.listeners.adara import SegmentMetadata, extracted, scipp_event_arrays
from livereduce.protocols.adara import encode, framing
from livereduce.protocols.adara.client import ClientState
from livereduce.protocols.adara.geometry import minimal_idf
from livereduce.protocols.adara.packets import RunStatusCode, parse_header
from livereduce.protocols.adara.segments import Segment
from livereduce.tools.sms_stream import load_run

REPO = Path(__file__).resolve().parent.parent
DAEMON = REPO / "scripts" / "livereduce.py"
OUT = REPO / "bench" / "data" / "adara"
TARGET_RATIO = 0.5
TARGET_DECODE = 7.5e7
PIECE = 1 << 20
TAKE_EVERY = 300
"""Packets (pulses) per chunk of ``decode_alone``'s daemon-like variant: 5 M events, about one end-to-end cycle."""
LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (?P<logger>[\w.]+) - (?P<level>\w+) - (?P<message>.*)$"
)
HIST_PROC = bench_replay.HIST_PROC


@dataclass
class EndToEnd:
    buffer_mb: float
    returncode: int
    events: int
    chunks: int
    seconds: float
    events_per_s: float
    peak_rss_mib: float
    user_s: float
    sys_s: float
    sms_cpu_s: float
    threads_cpu_s: list[float] = field(default_factory=list)
    """CPU seconds of each daemon thread in the measured window, busiest first."""
    cores_used: float = 0.0
    """(daemon + fake SMS CPU seconds in the window) / the window."""
    errors: list[str] = field(default_factory=list)


def stream_of(path: Path) -> tuple[bytes, np.ndarray, np.ndarray, float]:
    """The file as the fake SMS serves it: (packet bytes, packet starts, packet ends, encode seconds)."""
    began = time.perf_counter()
    run = load_run(path)
    seconds = time.perf_counter() - began
    return run.words.tobytes(), run.starts(), run.ends, seconds


def anchor(stream: bytes, starts: np.ndarray, ends: np.ndarray, pixels: int) -> float:
    """numpy on the bytes from memory: frombuffer over each packet's event section, concatenate, bincount."""
    words = np.frombuffer(stream, "<u4")
    # one source section and one bank per packet: header 4 + prefix 4 + source 4 + bank 2 words, then pairs
    first = starts // 4 + 14

    def run() -> np.ndarray:
        ids = np.concatenate([words[b + 1 : e : 2] for b, e in zip(first, ends // 4, strict=True)])
        return np.bincount(ids, minlength=pixels)

    return bench_replay.best_of(3, run)


def decode_alone(stream: bytes, pixels: int, take_every: int | None = None) -> tuple[float, float, int]:
    """(total s, reading s, events) for the listener's path in process, best of 3 by total. The stream is
    preceded by what the fake SMS sends before the run's first pulse (STATE, GEOMETRY, NEW_RUN).

    ``take_every``: None, one segment sized for the whole stream, its chunks built at the end; N, as the daemon's
    cycles do: segments of the default size, a ``take()`` and its chunk every N packets while reading (reading s
    then includes those chunks)."""
    best = (float("inf"), 0.0, 0)
    first = parse_header(stream).unix_ns
    prologue = (
        encode.run_status(0, 0, RunStatusCode.STATE, first)
        + encode.geometry(minimal_idf("BENCH", 0, pixels - 1), first)
        + encode.run_status(1, 0, RunStatusCode.NEW_RUN, first)
    )
    view = memoryview(prologue + stream)
    for _ in range(3):
        sizing = {} if take_every else {"segment_events": 1 << 25}
        client = ClientState("from_start_of_run", allocate=scipp_event_arrays, **sizing)
        client.connected()
        framer = framing.Framer()
        began = time.perf_counter()
        events, packets = 0, 0
        for at in range(0, len(view), PIECE):
            target = framer.writable(PIECE)
            n = min(PIECE, len(view) - at)
            target[:n] = view[at : at + n]
            framer.wrote(n)
            for frame in framer.frames():
                client.handle(frame)
                packets += 1
                if take_every and packets % take_every == 0:
                    events += _take_chunk(client)[1]
        read = time.perf_counter() - began
        while True:
            segment, taken = _take_chunk(client)
            events += taken
            if segment.transition is None:
                break
        total = time.perf_counter() - began
        best = min(best, (total, read, events))
    return best


def _take_chunk(client: ClientState) -> tuple[Segment, int]:
    """Take a segment and build its chunk, as the listener's ``extract()`` does; (segment, events in the chunk)."""
    segment = client.take()
    result, _ = extracted(segment, SegmentMetadata.of(client, segment), client.id_range or (0, 0))
    return segment, int(result.chunk.bins.size().sum().value) if result.chunk.sizes["event_time_zero"] else 0


def start_sms(path: Path, workdir: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "livereduce.tools.fake_sms", str(path), "--port", "0", "--speed", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=workdir,
    )
    line = process.stdout.readline()
    if "listening on 127.0.0.1:" not in line:
        process.kill()
        raise RuntimeError(f"fake SMS did not start: {line}{process.stdout.read()}")
    return process, int(line.split("127.0.0.1:")[1].split(":")[0])


def bare_client(path: Path, workdir: Path, stream_bytes: int) -> float:
    """Seconds from the first to the last byte of ``stream_bytes`` received from the fake SMS by a client that
    sends the hello (start of run) and discards what it receives; best of 3."""
    best = float("inf")
    for _ in range(3):
        sms, port = start_sms(path, workdir)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(encode.client_hello(1, time.time_ns()))
                buffer = memoryview(bytearray(1 << 20))
                received, first = 0, None
                while received < stream_bytes:
                    n = sock.recv_into(buffer)
                    if n == 0:
                        raise RuntimeError(f"the fake SMS closed after {received} of {stream_bytes} bytes")
                    first = time.perf_counter() if first is None else first
                    received += n
                best = min(best, time.perf_counter() - first)
        finally:
            sms.terminate()
            sms.communicate(timeout=30)
    return best


def end_to_end(path: Path, workdir: Path, pixels: int, buffer_mb: float, tag: str) -> EndToEnd:
    """One run of the fake SMS and the daemon (see the module description)."""
    sms, port = start_sms(path, workdir)
    try:
        scripts = workdir / "scripts"
        scripts.mkdir(exist_ok=True)
        (scripts / "reduce_PG3_live_proc.py").write_text(HIST_PROC.format(npix=pixels))
        log = workdir / f"{tag}.log"
        log.unlink(missing_ok=True)
        config = {
            "instrument": "POWGEN",
            "engine": "scipp",
            "script_dir": str(scripts),
            "listener": "SNSLiveEventDataListener",
            "address": f"127.0.0.1:{port}",
            "start": "from_start_of_run",
            "preserve_events": False,
            "accum_method": "Add",
            "update_every": 0.05,
            "run_transition": "Stop",
            "source_buffer_mb": buffer_mb,
            "log_file": str(log),
            "status_file": str(workdir / f"{tag}.status.json"),
            "system_mem_limit_perc": 0,
        }
        (workdir / f"{tag}.json").write_text(json.dumps(config))
        wrapper = subprocess.Popen(
            [
                sys.executable,
                "-c",
                bench_replay.WRAPPER,
                str(workdir / f"{tag}.stdout"),
                sys.executable,
                str(DAEMON),
                str(workdir / f"{tag}.json"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        sampler = bench_replay.ThreadSampler(wrapper.pid, sms.pid)
        out, _ = wrapper.communicate(timeout=600)
        sampler.stop()
        if wrapper.returncode != 0:
            raise RuntimeError(f"the daemon's wrapper failed ({wrapper.returncode})")
        usage = json.loads(out)
        cpu = psutil.Process(sms.pid).cpu_times()
        sms_cpu = cpu.user + cpu.system
    finally:
        sms.terminate()
        sms.communicate(timeout=30)
    lines = [m for line in log.read_text().splitlines() if (m := LINE.match(line))]
    connected = [m for m in lines if m["message"].startswith("Connected to the SMS")]
    chunks = [(m, n) for m in lines if (n := bench_replay.cycle_events(m["message"])) is not None]
    errors = [m["message"] for m in lines if m["level"] == "ERROR"]
    if usage["returncode"] != 0:
        errors.append(f"exit code {usage['returncode']}")
    events = sum(n for _, n in chunks)
    seconds, threads, sms_window = 0.0, [], 0.0
    if connected and chunks:
        begin, end = bench_replay._log_time(connected[0]["time"]), bench_replay._log_time(chunks[-1][0]["time"])
        seconds = end - begin
        threads, sms_window = sampler.window(begin, end)
    return EndToEnd(
        buffer_mb,
        usage["returncode"],
        events,
        len(chunks),
        seconds,
        events / seconds if seconds > 0 else 0.0,
        usage["maxrss_kib"] / 1024,
        usage["user_s"],
        usage["sys_s"],
        sms_cpu,
        threads,
        (sum(threads) + sms_window) / seconds if seconds > 0 else 0.0,
        errors,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=make_events.DEFAULT_EVENTS)
    parser.add_argument("--pixels", type=int, default=make_events.DEFAULT_PIXELS)
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end runs per buffer size")
    parser.add_argument("--buffers", type=float, nargs="+", default=[256.0, 64.0], help="source_buffer_mb values")
    parser.add_argument("--quiet-cpu", type=float, default=15.0)
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    args = parser.parse_args(argv)

    OUT.mkdir(parents=True, exist_ok=True)
    data = make_events.generate(make_events.default_path(args.events), args.events, args.pixels)
    tiny = make_events.generate(OUT / "tiny.nxs", bench_replay.TINY_EVENTS, args.pixels)
    stream, starts, ends, encode_s = stream_of(data)
    print(
        f"stream: {len(stream) / 2**20:,.0f} MiB, {starts.size:,} packets; fake SMS loading and encoding "
        f"{args.events / encode_s / 1e6:.1f} M events/s"
    )
    anchor_s = anchor(stream, starts, ends, args.pixels)
    total_s, read_s, decoded = decode_alone(stream, args.pixels)
    assert decoded == args.events, f"decoded {decoded} events, expected {args.events}"
    cycles_s, _, decoded = decode_alone(stream, args.pixels, take_every=TAKE_EVERY)
    assert decoded == args.events, f"decoded {decoded} events taking every {TAKE_EVERY} packets"
    stream_bytes = len(stream)
    del stream
    anchor_rate, decode_rate = args.events / anchor_s, args.events / total_s
    print(f"numpy anchor (frombuffer + concatenate + bincount): {anchor_rate / 1e6:.1f} M events/s ({anchor_s:.3f} s)")
    print(
        f"decode alone: {decode_rate / 1e6:.1f} M events/s ({total_s:.3f} s: reading {read_s:.3f} s, chunks "
        f"{total_s - read_s:.3f} s); target {TARGET_DECODE / 1e6:.0f} M: "
        f"{'met' if decode_rate >= TARGET_DECODE else 'MISSED'}"
    )
    print(
        f"decode as the daemon's cycles take it (default segments, a chunk every {TAKE_EVERY} packets): "
        f"{args.events / cycles_s / 1e6:.1f} M events/s ({cycles_s:.3f} s)"
    )
    bare_s = bare_client(data, OUT, stream_bytes)
    print(
        f"bare TCP client (receive and discard the stream): {args.events / bare_s / 1e6:.1f} M events/s "
        f"({bare_s:.3f} s, {stream_bytes / bare_s / 2**20:,.0f} MiB/s) = {anchor_s / bare_s:.2f} x anchor"
    )
    baseline = end_to_end(tiny, OUT, args.pixels, args.buffers[0], "baseline")
    print(f"baseline (tiny stream): peak RSS {baseline.peak_rss_mib:.0f} MiB")
    runs: list[EndToEnd] = []
    for buffer_mb in args.buffers:
        for i in range(args.repeat):
            bench_replay.wait_quiet(args.quiet_cpu, args.quiet_wait)
            run = end_to_end(data, OUT, args.pixels, buffer_mb, f"e2e-{buffer_mb:g}-{i}")
            runs.append(run)
            print(
                f"end to end, source_buffer_mb {buffer_mb:g}: {run.events:,} events in {run.chunks} chunks, "
                f"{run.seconds:.2f} s, {run.events_per_s / 1e6:.1f} M events/s = "
                f"{run.events_per_s / anchor_rate:.2f} x anchor; peak RSS {run.peak_rss_mib:.0f} MiB; "
                f"daemon CPU {run.user_s:.1f}+{run.sys_s:.1f} s, "
                f"fake SMS CPU {run.sms_cpu_s:.1f} s; in the window: daemon threads "
                f"{' + '.join(f'{t:.2f}' for t in run.threads_cpu_s)} s, {run.cores_used:.2f} cores used; "
                f"{run.events_per_s * bare_s / args.events:.2f} x the bare TCP client"
                f"{'; ERRORS ' + str(run.errors) if run.errors else ''}",
                flush=True,
            )
    summary = {}
    for buffer_mb in args.buffers:
        rates = [r.events_per_s for r in runs if r.buffer_mb == buffer_mb]
        peaks = [r.peak_rss_mib for r in runs if r.buffer_mb == buffer_mb]
        summary[f"{buffer_mb:g}"] = {
            "median_events_per_s": statistics.median(rates),
            "best_events_per_s": max(rates),
            "median_ratio": statistics.median(rates) / anchor_rate,
            "best_ratio": max(rates) / anchor_rate,
            "median_peak_rss_mib": statistics.median(peaks),
            "peak_minus_baseline_mib": statistics.median(peaks) - baseline.peak_rss_mib,
        }
        s = summary[f"{buffer_mb:g}"]
        print(
            f"source_buffer_mb {buffer_mb:g}: median {s['median_events_per_s'] / 1e6:.1f} M events/s "
            f"({s['median_ratio']:.2f} x anchor; best {s['best_ratio']:.2f}), "
            f"peak RSS {s['median_peak_rss_mib']:.0f} MiB "
            f"(baseline + {s['peak_minus_baseline_mib']:.0f} MiB); target {TARGET_RATIO} x: "
            f"{'met' if s['median_ratio'] >= TARGET_RATIO else 'MISSED'}"
        )
    results = {
        "machine": bench_replay.machine(),
        "events": args.events,
        "pixels": args.pixels,
        "anchor_s": anchor_s,
        "anchor_events_per_s": anchor_rate,
        "decode_s": total_s,
        "decode_read_s": read_s,
        "decode_events_per_s": decode_rate,
        "decode_cycles_s": cycles_s,
        "bare_client_s": bare_s,
        "baseline": asdict(baseline),
        "runs": [asdict(r) for r in runs],
        "summary": summary,
    }
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {OUT / 'results.json'}")
    return 0 if all(r.returncode == 0 and not r.errors for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
