#!/usr/bin/env python3
"""Kill the daemon at random moments while it reduces a run; after the last restart its accumulation must equal
an uninterrupted run's, computed with h5py + numpy from the SANS2D file (issue 17: exactly once).

Each life starts the real daemon (``python3 -m livereduce``) with ``checkpoint_every`` 0.2 s and
``update_every`` 0.25 s, waits a seeded random time, for one life in four in ``[0, 0.5]`` seconds from the
process's start (kills in the start-up), for the others in ``[0, --max-delay]`` seconds from its engine's start
(kills in the resume, a cycle, post_proc, a checkpoint write), and kills it with SIGKILL (one life in five:
SIGTERM, the clean stop that writes a last checkpoint). The last life runs until the source has delivered the
whole run, then stops with SIGTERM. The post_proc script writes, atomically, what the accumulation holds: the events per
pixel (``np.bincount`` of ``event_id``), the number of events and pulses, and an order-independent checksum of
every (pulse, pixel, time of flight) triple; the oracle computes the same from the file.

Sources (``--source``):

* ``file``: ``FileEventDataListener`` replaying the file at ``--speed`` (default 2: 15 s of data); the last life
  runs until the source has ended, then SIGTERM;
* ``adara``: ``SNSLiveEventDataListener`` reading ``livereduce-fake-sms FILE --speed S`` (one SMS for all lives, on
  its own clock: the run goes on while the daemon is down, and each resume asks the SMS for the pulses after its
  checkpoint); ``run_transition`` Stop, so the last life ends by itself at the end of the run. The SMS sends times
  of flight in units of 100 ns and pulse times of its own clock, so the checksum leaves the pulse times out and
  the oracle rounds the times of flight as the SMS does;
* ``kafka``: ``KafkaEventListener`` reading a tansu broker (memory storage, started here as bench_kafka starts it)
  into which ``livereduce-kafka-replay FILE --speed S`` writes the run (pl72, ev44, f144, 6s4t) while the lives
  come and go; ``run_transition`` Stop. ev44 carries times of flight in whole ns: the oracle rounds as the replay
  does and converts back as the listener does (float64, then float32 µs); pulse times are the replay's clock.

Usage::

    python bench/kill_resume.py --source file --kills 30 --seed 1      # the CI size (test/test_kill_resume.py)
    python bench/kill_resume.py --source file --kills 1000 --seed 7    # docs/performance.md

Prints one JSON object: kills, the signal and moment (state of the log) of each kind, lives that resumed a
checkpoint, checkpoints refused, the time per life, and ``"equal": true`` when the final accumulation equals the
oracle (exit 0), else the differences (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SANS2D = ROOT.parent / "shared" / "data" / "SANS2D_minimal.nxs"
PIXELS = 122_889
OUTPUT = "accumulation.npz"
STARTUP_S = 0.5
"""Kills of the start-up land in [0, this] s after the process's start (its imports take longer)."""

POST_PROC = f'''
import os
import numpy as np
from livereduce.engines.scipp.chunk import flat_events

events = flat_events(input)
ids = events.coords["event_id"].values.astype(np.int64)
tof = np.round(events.coords["event_time_offset"].values.astype(np.float64) * 1000).astype(np.int64)
pulse = np.repeat(input.coords["event_time_zero"].values.astype("datetime64[ns]").astype(np.int64) // 1_000_000,
                  input.bins.size().values.astype(np.int64))
target = os.path.join(os.environ["KILL_RESUME_DIR"], "{OUTPUT}")
np.savez(target + ".tmp.npz", counts=np.bincount(ids, minlength={PIXELS}), events=ids.size,
         pulses=input.sizes["event_time_zero"], checksum=np.sum((pulse * 1_000_003 + ids) * 7919 + tof, dtype=np.int64),
         checksum_without_pulses=np.sum(ids * 7919 + tof, dtype=np.int64))
os.replace(target + ".tmp.npz", target)
output = input
'''


def oracle(path: Path, source: str) -> dict[str, object]:
    """What an uninterrupted run accumulates, from the file with h5py + numpy (the ADARA stream's times of flight
    in units of 100 ns, as the fake SMS rounds them)."""
    with h5py.File(path, "r") as handle:
        group = handle["raw_data_1/detector_1_events"]
        ids = group["event_id"][:].astype(np.int64)
        tof_us = group_tof = group["event_time_offset"][:].astype(np.float32)
        if source == "adara":
            tof_us = (np.clip(np.rint(tof_us.astype(np.float64) * 10.0), 0, None) / 10.0).astype(np.float32)
        tof = np.round(tof_us.astype(np.float64) * 1000).astype(np.int64)
        index = group["event_index"][:].astype(np.int64)
        zero = group["event_time_zero"]
        offset = np.datetime64(
            zero.attrs["offset"].decode() if isinstance(zero.attrs["offset"], bytes) else zero.attrs["offset"], "ns"
        )
        pulse_ns = (offset + (zero[:] * 1e9).astype("timedelta64[ns]")).astype(np.int64)
    sizes = np.diff(np.append(index, ids.size))
    pulse = np.repeat(pulse_ns // 1_000_000, sizes)
    expected = {
        "counts": np.bincount(ids, minlength=PIXELS),
        "events": ids.size,
        "pulses": index.size,
        "checksum_without_pulses": np.sum(ids * 7919 + tof, dtype=np.int64),
    }
    if source == "kafka":  # ev44: whole ns (rounded), read back as float32 µs computed in float64
        tof_ns = np.rint(group_tof.astype(np.float64) * 1000)
        tof_us = (tof_ns * (1.0 / 1000)).astype(np.float32)
        expected["checksum_without_pulses"] = np.sum(
            ids * 7919 + np.round(tof_us.astype(np.float64) * 1000).astype(np.int64), dtype=np.int64
        )
    if source == "file":
        expected["checksum"] = np.sum((pulse * 1_000_003 + ids) * 7919 + tof, dtype=np.int64)
    return expected


def config(source: str, workdir: Path, speed: float, address: str) -> dict[str, object]:
    """The daemon's configuration for ``source`` (``address``: the fake SMS's)."""
    common = {
        "instrument": "SANS2D",
        "engine": "scipp",
        "script_dir": str(workdir),
        "update_every": 0.25,
        "checkpoint_every": 0.2,
        "checkpoint_dir": str(workdir / "checkpoints"),
        "log_file": str(workdir / "livereduce.log"),
        "status_file": str(workdir / "status.json"),
        "stop_timeout_sec": 10,
    }
    if source == "file":
        return {**common, "listener": "FileEventDataListener", "filename": str(SANS2D), "replay_speed": speed}
    if source == "adara":
        return {**common, "listener": "SNSLiveEventDataListener", "address": address, "run_transition": "Stop"}
    if source == "kafka":
        return {**common, "listener": "KafkaEventListener", "address": address, "run_transition": "Stop"}
    raise SystemExit(f"unknown source {source!r}")


class KafkaRun:
    """A tansu broker and ``livereduce-kafka-replay SANS2D --speed S`` writing one run into it; stopped at the end."""

    def __init__(self, workdir: Path, speed: float) -> None:
        from bench_kafka import start_broker  # only this source needs confluent-kafka and tansu

        self.broker, self.address = start_broker(workdir)
        self.replay = subprocess.Popen(
            [sys.executable, "-m", "livereduce.tools.kafka_replay", "--broker", self.address, "--speed", str(speed),
             "--create-topics", str(SANS2D)],
            stdout=subprocess.DEVNULL, stderr=(workdir / "kafka_replay.log").open("wb"),
        )  # fmt: skip

    def stop(self) -> None:
        for process in (self.replay, self.broker):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class FakeSms:
    """``livereduce-fake-sms SANS2D --speed S --port 0`` for the whole scenario; stopped at the end."""

    def __init__(self, speed: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "livereduce.tools.fake_sms", str(SANS2D), "--port", "0", "--speed", str(speed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        first = self.process.stdout.readline()
        if "listening on 127.0.0.1:" not in first:
            self.stop()
            raise SystemExit(f"the fake SMS did not start: {first}")
        self.address = "127.0.0.1:" + first.split("127.0.0.1:")[1].split(":")[0].split()[0]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def moment(log: str) -> str:
    """How far the life had come when it was killed, from its log: the last of its milestones it logged."""
    for needle, name in (
        ("stays idle", "idle (source ended)"),
        ("Loading live data chunk", "cycling"),
        ("Initial chunk", "first chunk"),
        ("Resumed accumulation", "resumed, post_proc"),
        ("Resuming run", "loading the checkpoint"),
        ("state: starting -> connecting", "opening the source"),
    ):
        if needle in log:
            return name
    return "starting up"


def life(
    workdir: Path, env: dict[str, str], delay: float | None, sig: signal.Signals, *, from_engine: bool = False
) -> tuple[str, str]:
    """One daemon process: killed with ``sig`` after ``delay`` s (None: run until the source has ended, then
    SIGTERM, or until the daemon exits by itself at the end of the run), counted from its start or, with
    ``from_engine``, from its first engine start (``state: starting -> connecting``: the resume and the cycles
    follow, whatever the machine's load made the start-up cost). Returns (the moment it was killed, the log lines
    it wrote)."""
    log = workdir / "livereduce.log"
    before = log.stat().st_size if log.exists() else 0
    process = subprocess.Popen(
        [sys.executable, "-m", "livereduce", str(workdir / "livereduce.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        if delay is None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                text = log.read_text()[before:] if log.exists() else ""
                if process.poll() is not None or ("stays idle" in text and (workdir / OUTPUT).exists()):
                    break
                time.sleep(0.05)
            else:
                raise SystemExit("the last life did not reach the end of the run within 300 s")
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            return "end", log.read_text()[before:]
        deadline = time.monotonic() + 60
        while from_engine and time.monotonic() < deadline and process.poll() is None:
            if log.exists() and "state: starting -> connecting" in log.read_text()[before:]:
                break
            time.sleep(0.01)
        time.sleep(delay)
        text = log.read_text()[before:] if log.exists() else ""
        process.send_signal(sig)
        process.wait(60)
        return moment(text), log.read_text()[before:] if log.exists() else ""  # killed before it opened its log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run(source: str, kills: int, seed: int, workdir: Path, *, max_delay: float, speed: float) -> dict[str, object]:
    """Run the scenario; the result as printed (see the module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = FakeSms(speed) if source == "adara" else KafkaRun(workdir, speed) if source == "kafka" else None
    try:
        address = server.address if server is not None else None
        return _lives(source, kills, seed, workdir, max_delay=max_delay, speed=speed, address=address)
    finally:
        if server is not None:
            server.stop()


def _lives(
    source: str, kills: int, seed: int, workdir: Path, *, max_delay: float, speed: float, address: str | None
) -> dict[str, object]:
    (workdir / "livereduce.conf").write_text(json.dumps(config(source, workdir, speed, address or "")))
    (workdir / "reduce_SANS2D_live_post_proc.py").write_text(textwrap.dedent(POST_PROC))
    env = dict(os.environ, KILL_RESUME_DIR=str(workdir), PYTHONUNBUFFERED="1")
    rng = random.Random(seed)
    moments: Counter[str] = Counter()
    resumed = refused = 0
    started = time.monotonic()
    for _ in range(kills):
        sig = signal.SIGTERM if rng.random() < 0.2 else signal.SIGKILL
        from_engine = rng.random() >= 0.25  # one life in four: a moment of the start-up (imports: about 0.5 s)
        delay = rng.uniform(0, max_delay if from_engine else STARTUP_S)
        where, text = life(workdir, env, delay, sig, from_engine=from_engine)
        moments[f"{sig.name} {where}"] += 1
        resumed += "Resuming run" in text
        refused += "not used:" in text
    _, text = life(workdir, env, None, signal.SIGTERM)
    elapsed = time.monotonic() - started
    final = dict(np.load(workdir / OUTPUT))
    expected = oracle(SANS2D, source)
    differences = {
        key: f"{int(np.sum(final[key])) if key == 'counts' else int(final[key])} != "
        f"{int(np.sum(value)) if key == 'counts' else int(value)}"
        for key, value in expected.items()
        if not np.array_equal(final[key], value)
    }
    return {
        "source": source,
        "kills": kills,
        "seed": seed,
        "moments": dict(sorted(moments.items())),
        "lives_resumed": resumed + ("Resuming run" in text),
        "checkpoints_refused": refused + ("not used:" in text),
        "seconds_per_life": round(elapsed / (kills + 1), 2),
        "events": int(final["events"]),
        "equal": not differences,
        "differences": differences,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=["file", "adara", "kafka"], default="file")
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=2.5, help="seconds; kills land in [0, this] after start")
    parser.add_argument("--speed", type=float, help="replay speed (default: file 2, adara and kafka 0.5)")
    parser.add_argument("--rounds", type=int, default=1, help="runs, each with --kills / --rounds of the kills")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/livereduce-kill-resume"))
    args = parser.parse_args()
    speed = args.speed if args.speed is not None else {"file": 2.0, "adara": 0.5, "kafka": 0.5}[args.source]
    if args.rounds == 1:
        result = run(args.source, args.kills, args.seed, args.workdir, max_delay=args.max_delay, speed=speed)
    else:
        result = rounds(args, speed)
    print(json.dumps(result, indent=1))
    return 0 if result["equal"] else 1


def rounds(args: argparse.Namespace, speed: float) -> dict[str, object]:
    """``--rounds`` whole runs (a fresh source and checkpoint directory each, seeds ``--seed`` + round), the kills
    spread over them: a run on the source's clock (ADARA, Kafka) lasts its own time, so many kills need many runs.
    The result sums them; ``equal`` only if every run's final accumulation equals the oracle."""
    total: Counter[str] = Counter()
    moments: Counter[str] = Counter()
    unequal: list[dict[str, object]] = []
    started = time.monotonic()
    for number in range(args.rounds):
        kills = args.kills // args.rounds + (number < args.kills % args.rounds)
        workdir = args.workdir / f"round-{number}"
        result = run(args.source, kills, args.seed + number, workdir, max_delay=args.max_delay, speed=speed)
        moments.update(result["moments"])
        total.update({key: result[key] for key in ("kills", "lives_resumed", "checkpoints_refused")})
        if not result["equal"]:
            unequal.append(result)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"round {number + 1}/{args.rounds}: {kills} kills, equal {result['equal']}", file=sys.stderr, flush=True)
    return {
        "source": args.source,
        **total,
        "rounds": args.rounds,
        "seed": args.seed,
        "moments": dict(sorted(moments.items())),
        "seconds": round(time.monotonic() - started),
        "equal": not unequal,
        "unequal_rounds": unequal,
    }


if __name__ == "__main__":
    sys.exit(main())
