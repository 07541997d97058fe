#!/usr/bin/env python3
"""Fuzz the ADARA reader in process: at least 100,000 malformed packets, 0 exceptions escaping, 0 hangs, memory
bounded.

The reader is what SNSLiveEventDataListener's thread and extract() run, without the socket: the framer, the
client state (:class:`~livereduce.protocols.adara.client.ClientState`) and the chunk built from each segment
(:func:`~livereduce.engines.scipp.listeners.adara.extracted`). A :class:`FramingError` is the listener's
"reconnect": the harness starts a new framer and tells the client state about the new connection, as the
listener does; any other exception is a failure.

Streams are captured from the fake SMS in process (two runs with chunk-file boundaries, logs of three types,
monitors, a pause, malformed packets of its own) plus packets the fake SMS does not send (v0 layouts, arrays,
scan annotations, COR clear with a TOF offset, special banks). Each case takes one captured stream, mutates
1-20 of its packets (bit flips, truncations with and without a fixed length, wrong lengths, huge counts,
another type or version, garbage payloads, spliced packets), feeds it in random TCP-like pieces with a few
extracts in between, and times it.

Usage::

    python bench/fuzz_adara.py                        # 100,000 malformed packets (about two minutes)
    python bench/fuzz_adara.py --packets 2000 --seed 7

Exit code 0 if no exception escaped, no case took longer than ``--case-limit`` seconds and the RSS grew less
than ``--rss-limit-mb``; 1 otherwise.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import psutil

from livereduce.engines.scipp.listeners.adara import SegmentMetadata, extracted, scipp_event_arrays
from livereduce.protocols.adara import decode, encode, framing
from livereduce.protocols.adara.client import ClientState
from livereduce.protocols.adara.packets import (
    ERROR_BANK,
    HANDLED_VERSIONS,
    HEADER,
    UNMAPPED_BANK,
    AnnotationType,
    PacketType,
    RunStatusCode,
    format_word,
)
from livereduce.tools.sms_server import FakeSms, Options
from livereduce.tools.sms_stream import Stream, make_run

S = 1_000_000_000
T0 = 1_700_000_000 * S
PULSE = S // 60
HUGE = (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x003FFFFF, 0xFFFFFFF0, 0x10000000)


def capture(pulses: int = 60, seed: int = 1) -> bytes:
    """The bytes a client receives from the fake SMS (hello: start of run) until the second END_RUN."""
    rng = np.random.default_rng(seed)
    n = pulses * 20
    logs = [(T0 - S, "temperature", 300.0), (T0 - S, "mode", "auto"), (T0 - S, "counter", 1)]
    logs += [(T0 + i * 7 * PULSE, "temperature", 300.0 + i) for i in range(1, pulses // 7)]
    logs += [(T0 + 30 * PULSE, "mode", "manual"), (T0 + 31 * PULSE, "counter", 2)]
    run = make_run(
        T0 + np.arange(pulses) * PULSE,
        rng.integers(0, 500, n),
        rng.random(n) * 16_000.0,
        np.arange(pulses) * 20,
        charge_pc=np.full(pulses, 1e6),
        logs=logs,
        monitor_events=3,
        pixels=(0, 499),
    )
    server = FakeSms(
        Stream.of([run], monitors=True), Options(speed=0, loops=2, eof_every=25, corrupt=5, pause=(40, 45)), port=0
    )
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(encode.client_hello(1, T0))
            data = bytearray()
            framer = framing.Framer()
            ends = 0
            while ends < 2:
                piece = sock.recv(1 << 16)
                if not piece:
                    break
                data += piece
                for frame in framer.feed(piece):
                    if frame.header.packet_type == PacketType.RUN_STATUS:
                        ends += decode.decode_run_status(frame.header, frame.payload).status == RunStatusCode.END_RUN
            return bytes(data)
    finally:
        server.stop()


def extra_packets() -> list[bytes]:
    """Packets the fake SMS does not send, so that the mutations reach their decoders too."""
    ids = np.array([1, 2, 3], np.uint32)
    return [
        encode.run_status_v0(5, 1000, RunStatusCode.STATE, T0),
        struct.pack("<4I", 16, format_word(PacketType.BEAMLINE_INFO, 0), 1_000_000_000, 0)
        + struct.pack("<I", (2 << 16) | (3 << 8) | 7)
        + b"42CG3BIOSANS",
        encode.banked_event(
            T0, {4: (ids, ids), UNMAPPED_BANK: (ids, ids), ERROR_BANK: (ids, ids)}, cor=False, tof_offset=50, version=0
        ),
        encode.beam_monitor(T0, {2: np.array([1, 2]), 5: np.array([3])}, cor=False, tof_offset=7, version=0),
        encode.variable_value(8192, 1, np.array([1.5, 2.5]), T0),
        encode.variable_value(8192, 2, np.array([1, 2, 3], np.uint32), T0),
        encode.annotation(AnnotationType.SCAN_START, "scan 3", T0, scan_index=3, reset_hint=True),
        encode.annotation(AnnotationType.SCAN_STOP, "scan 3", T0, scan_index=3),
        encode.annotation(AnnotationType.OVERALL_RUN_COMMENT, "comment", T0),
        encode.sync(T0, comment="file 2"),
        encode.packet(PacketType.DETECTOR_BANK_SETS, 0, bytes(64), T0),
    ]


def packets_of(stream: bytes) -> list[bytes]:
    framer = framing.Framer()
    out = []
    for frame in framer.feed(stream):
        out.append(
            HEADER.pack(
                frame.header.payload_len,
                format_word(frame.header.packet_type, frame.header.version),
                frame.header.seconds,
                frame.header.nanoseconds,
            )
            + bytes(frame.payload)
        )
    return out


# --- mutations ----------------------------------------------------------------------------------------------
def _header(packet: bytes, length: int | None = None, fmt: int | None = None) -> bytes:
    old_length, old_fmt, seconds, nanoseconds = HEADER.unpack_from(packet)
    return HEADER.pack(old_length if length is None else length, old_fmt if fmt is None else fmt, seconds, nanoseconds)


def bit_flips(packet: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(packet)
    for _ in range(int(rng.integers(1, 9))):
        position = int(rng.integers(0, len(data)))
        data[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(data)


def truncated_fixed(packet: bytes, rng: np.random.Generator) -> bytes:
    """Payload cut short, the header's length fixed to match (the framing stays right, the content does not)."""
    payload = packet[16:]
    cut = int(rng.integers(0, len(payload) // 4 + 1)) * 4 if payload else 0
    return _header(packet, cut) + payload[:cut]


def truncated_raw(packet: bytes, rng: np.random.Generator) -> bytes:
    """Packet cut anywhere, the header unchanged (the framer takes the next packets' bytes)."""
    return packet[: int(rng.integers(0, len(packet) + 1))]


def wrong_length(packet: bytes, rng: np.random.Generator) -> bytes:
    length = len(packet) - 16
    choice = int(rng.integers(0, 4))
    new = (
        length + int(rng.integers(-8, 9)),
        int(rng.integers(0, 1 << 32)),
        length + int(rng.integers(1, 4)),
        HUGE[int(rng.integers(0, len(HUGE)))],
    )[choice]
    return _header(packet, max(0, new) & 0xFFFFFFFF) + packet[16:]


def huge_count(packet: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(packet)
    if len(data) <= 16:
        return bytes(data)
    word = int(rng.integers(4, len(data) // 4))
    struct.pack_into("<I", data, 4 * word, HUGE[int(rng.integers(0, len(HUGE)))])
    return bytes(data)


HANDLED = [int(t) for t in HANDLED_VERSIONS]


def other_type(packet: bytes, rng: np.random.Generator) -> bytes:
    """The payload of one type under the header of another (or of an unknown type)."""
    kind = HANDLED[int(rng.integers(0, len(HANDLED)))] if rng.random() < 0.8 else int(rng.integers(0, 1 << 24))
    return _header(packet, fmt=format_word(kind, int(rng.integers(0, 2)))) + packet[16:]


def other_version(packet: bytes, rng: np.random.Generator) -> bytes:
    _, fmt, _, _ = HEADER.unpack_from(packet)
    return _header(packet, fmt=(fmt & ~0xFF) | int(rng.integers(0, 256))) + packet[16:]


def garbage(packet: bytes, rng: np.random.Generator) -> bytes:
    size = int(rng.integers(0, 128)) * 4
    return _header(packet, size) + rng.integers(0, 256, size, dtype=np.uint8).tobytes()


def spliced(packet: bytes, rng: np.random.Generator) -> bytes:
    """The first part of this packet followed by random bytes, the length of the original kept."""
    keep = int(rng.integers(16, len(packet) + 1))
    return packet[:keep] + rng.integers(0, 256, len(packet) - keep, dtype=np.uint8).tobytes()


MUTATIONS: list[Callable[[bytes, np.random.Generator], bytes]] = [
    bit_flips,
    truncated_fixed,
    truncated_raw,
    wrong_length,
    huge_count,
    other_type,
    other_version,
    garbage,
    spliced,
]


# --- the harness --------------------------------------------------------------------------------------------
class Harness:
    """The listener's reading path without a socket: framer -> client state -> chunks."""

    def __init__(self, start: object = "from_start_of_run", keep_paused_events: bool = False) -> None:
        self.client = ClientState(start, keep_paused_events=keep_paused_events, allocate=scipp_event_arrays)
        self.client.connected()
        self.framer = framing.Framer(max_payload=1 << 20)
        self.resyncs = 0
        self.chunks = 0
        self.events = 0

    def feed(self, data: bytes, rng: np.random.Generator) -> None:
        """Feed ``data`` in random pieces; a stream out of step is a new connection (as the listener does)."""
        position = 0
        while position < len(data):
            size = int(rng.integers(1, 4096))
            piece = data[position : position + size]
            position += size
            try:
                for frame in self.framer.feed(piece):
                    self.client.handle(frame)
            except framing.FramingError:
                self.resyncs += 1
                self.framer = framing.Framer(max_payload=1 << 20)
                self.client.connected()

    def extract(self) -> None:
        client = self.client
        segment = client.take()
        result, _ = extracted(segment, SegmentMetadata.of(client, segment), client.id_range or (0, 0))
        self.chunks += 1
        self.events += int(result.chunk.bins.size().sum().value) if result.chunk.sizes["event_time_zero"] else 0


@dataclass
class Report:
    cases: int = 0
    packets: int = 0
    malformed: int = 0
    by_mutation: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    resyncs: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    chunks: int = 0
    rss_growth_mb: float = 0.0
    seconds: float = 0.0


def run_case(streams: list[list[bytes]], rng: np.random.Generator, report: Report) -> None:
    """Mutate 1-20 packets of one captured stream, feed it with extracts in between; record what escaped."""
    originals = streams[int(rng.integers(0, len(streams)))]
    packets = list(originals)
    for _ in range(int(rng.integers(1, 21))):
        position = int(rng.integers(0, len(packets)))
        mutation = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))]
        mutated = mutation(originals[int(rng.integers(0, len(originals)))], rng)
        if rng.random() < 0.3:
            packets.insert(position, mutated)  # a malformed packet among intact ones
        else:
            packets[position] = mutated
        report.by_mutation[mutation.__name__] += 1
        report.malformed += 1
    report.packets += len(packets)
    start = ("from_start_of_run", "now", datetime.fromtimestamp((T0 + 10 * PULSE) / S, UTC))[int(rng.integers(0, 3))]
    harness = Harness(start, keep_paused_events=bool(rng.random() < 0.3))
    data = b"".join(packets)
    cuts = sorted(int(c) for c in rng.integers(0, len(data), 3))
    began = time.perf_counter()
    try:
        for begin, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            harness.feed(data[begin:end], rng)
            harness.extract()
    except Exception as err:  # noqa: BLE001 - what the fuzzer looks for
        report.failures.append(f"case {report.cases}: {type(err).__name__}: {err}")
    report.slowest_s = max(report.slowest_s, time.perf_counter() - began)
    report.resyncs += harness.resyncs
    report.skipped.update({k: v for k, v in harness.client.counters.items() if k.startswith("skipped_")})
    report.chunks += harness.chunks
    report.cases += 1


def fuzz(malformed: int, seed: int = 1, progress: Callable[[Report], None] | None = None) -> Report:
    """Run cases until ``malformed`` packets have been fed."""
    rng = np.random.default_rng(seed)
    captured = packets_of(capture(seed=seed))
    streams = [captured, captured[: len(captured) // 2] + extra_packets() + captured[len(captured) // 2 :]]
    report = Report()
    process = psutil.Process()
    baseline = process.memory_info().rss
    began = time.perf_counter()
    while report.malformed < malformed:
        run_case(streams, rng, report)
        if report.cases % 100 == 0:
            report.rss_growth_mb = max(report.rss_growth_mb, (process.memory_info().rss - baseline) / 2**20)
            if progress:
                progress(report)
    report.rss_growth_mb = max(report.rss_growth_mb, (process.memory_info().rss - baseline) / 2**20)
    report.seconds = time.perf_counter() - began
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--packets", type=int, default=100_000, help="malformed packets to feed (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--case-limit", type=float, default=5.0, help="seconds one case may take (a hang)")
    parser.add_argument("--rss-limit-mb", type=float, default=200.0, help="RSS growth allowed over the run")
    args = parser.parse_args(argv)

    def progress(report: Report) -> None:
        if report.cases % 1000 == 0:
            print(f"  {report.malformed:,} malformed packets in {report.cases:,} cases ...", flush=True)

    report = fuzz(args.packets, args.seed, progress)
    print(
        f"fuzz_adara: {report.malformed:,} malformed packets among {report.packets:,} in {report.cases:,} cases, "
        f"{report.seconds:.1f} s; {len(report.failures)} exceptions escaped; "
        f"slowest case {report.slowest_s * 1e3:.0f} ms; "
        f"{report.resyncs:,} streams out of step (reconnects); {report.chunks:,} chunks; RSS growth "
        f"{report.rss_growth_mb:.0f} MiB"
    )
    print("  mutations: " + ", ".join(f"{name} {count:,}" for name, count in sorted(report.by_mutation.items())))
    skipped = ", ".join(f"{name.removeprefix('skipped_')} {n:,}" for name, n in report.skipped.most_common())
    print(f"  skipped by the reader: {skipped}")
    for failure in report.failures[:20]:
        print(f"  FAILED {failure}")
    ok = not report.failures and report.slowest_s <= args.case_limit and report.rss_growth_mb <= args.rss_limit_mb
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
