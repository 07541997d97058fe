"""``livereduce-fake-sms``: a fake SNS Stream Management Service serving NeXus event files as an ADARA stream.

Usage: ``livereduce-fake-sms FILE [FILE ...] [--port 0] [--speed 1] ...`` (or ``python3 -m
livereduce.tools.fake_sms``). Each file is one run (``--loops`` repeats the list); runs are numbered from
``--run-number``, else the first file's run number, else 1. A client connects to ``--host:--port`` (default
127.0.0.1:31415; port 0 picks a free one, printed) and gets the stream as the SMS sends it.

Without files, ``--synthetic RATE`` serves runs of random events made on the fly at RATE events/s
(``livereduce.tools.synthetic``): ``--pixels`` pixels, ``--pulse-rate`` Hz, runs of ``--run-seconds`` 1 s apart.
``--start-in S`` puts the timeline on the wall clock (``--speed`` 1): the first run begins S seconds after start
and every pulse is stamped with the wall-clock time at which it is sent.

The command line only: the runs and their packets are ``sms_stream.py`` (files read with livereduce's validated
NeXus reader), the server, the conversation with each client and the fault injection ``sms_server.py``.

Output: one line on stdout per event (``livereduce-fake-sms: LEVEL: message``): listening, each client's
connection, hello and end. Exit codes: 0 after SIGTERM/SIGINT, 2 invalid arguments, 3 a file that cannot be read
or an address it cannot listen on (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from livereduce.errors import SourceError
from livereduce.protocols.adara.packets import MAX_RUN_NUMBER
from livereduce.tools.sms_server import DEFAULT_PORT, FakeSms, Options
from livereduce.tools.sms_stream import Run, Stream, load_run
from livereduce.tools.synthetic import PulsePool, pulse_events, synthetic_run

PROG = "livereduce-fake-sms"
_log = logging.getLogger("livereduce.fake_sms")


def _pause(text: str) -> tuple[int, int]:
    first, _, last = text.partition(":")
    paused = int(first)
    resumed = int(last) if last else paused + 10
    if paused < 0 or resumed <= paused:
        raise argparse.ArgumentTypeError(f"--pause-at {text}: expected P or P:Q with 0 <= P < Q")
    return paused, resumed


def _positive(kind: type) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = kind(text)
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text}: expected a number >= 0")
        return value

    return parse


def _run_number(text: str) -> int:
    """``--run-number``: an ADARA run number, 1..:data:`MAX_RUN_NUMBER`."""
    value = int(text)
    if not 1 <= value <= MAX_RUN_NUMBER:
        raise argparse.ArgumentTypeError(f"{text}: expected a run number within 1..{MAX_RUN_NUMBER}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (``argv``; None: ``sys.argv``); an invalid one exits 2 with argparse's message."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve NeXus event files as an ADARA live stream, like SNS's Stream Management Service.",
    )
    parser.add_argument("files", nargs="*", type=Path, help="NeXus files with NXevent_data (ISIS or SNS layout)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default %(default)s; 0: any free)")
    parser.add_argument("--speed", type=_positive(float), default=1.0, help="timeline speed (0: as fast as possible)")
    parser.add_argument("--loops", type=_positive(int), default=1, help="times to serve the files (0: forever)")
    parser.add_argument("--eof-every", type=int, default=600, help="pulses per chunk file (RUN_EOF/RUN_BOF)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (> 0)")
    parser.add_argument("--run-number", type=_run_number, help="number of the first run (default: the file's, else 1)")
    parser.add_argument("--pulse-charge", type=_positive(float), default=0.0, help="pC per pulse if a file has none")
    parser.add_argument("--instrument", help="instrument name (default: the file's)")
    parser.add_argument("--monitor-events", type=_positive(int), default=0, help="monitor 1 events per pulse")
    parser.add_argument("--drop-after", type=_positive(int), help="break the first connection after N pulses")
    parser.add_argument("--corrupt", type=_positive(int), default=0, help="malformed packets per connection")
    parser.add_argument("--pause-at", type=_pause, help="pause before pulse P, resume before Q (P or P:Q)")
    parser.add_argument("--synthetic", type=_positive(float), metavar="RATE", help="random events/s instead of files")
    parser.add_argument("--pixels", type=int, default=100_000, help="pixels of --synthetic (default %(default)s)")
    parser.add_argument("--pulse-rate", type=float, default=60.0, help="Hz of --synthetic (default %(default)s)")
    parser.add_argument("--run-seconds", type=float, default=90.0, help="run length of --synthetic (default 90)")
    parser.add_argument("--start-in", type=_positive(float), help="wall-clock timeline: first run in S seconds")
    args = parser.parse_args(argv)
    if bool(args.files) == (args.synthetic is not None):
        parser.error("give either files or --synthetic RATE")
    if args.synthetic is not None and not (1 <= args.pixels <= 2**32 and args.pulse_rate > 0 and args.run_seconds > 0):
        parser.error("--synthetic needs --pixels within 1..2**32, --pulse-rate > 0 and --run-seconds > 0")
    if args.start_in is not None and args.speed != 1:
        parser.error("--start-in needs --speed 1 (the timeline is the wall clock)")
    if not args.heartbeat > 0:
        parser.error("--heartbeat must be > 0")
    if args.eof_every < 1:
        parser.error("--eof-every must be at least 1")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be within 0..65535")
    return args


def _runs(args: argparse.Namespace) -> list[Run]:
    """The runs to serve: the files, or one synthetic run.

    Raises:
        SourceError: a file cannot be read.
    """
    if args.synthetic is None:
        return [
            load_run(path, pulse_charge_pc=args.pulse_charge, monitor_events=args.monitor_events) for path in args.files
        ]
    pool = PulsePool.make(pulse_events(args.synthetic, args.pulse_rate), args.pixels)
    return [synthetic_run(pool, seconds=args.run_seconds, pulse_rate=args.pulse_rate)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``livereduce-fake-sms``; returns the exit code (0 after SIGTERM/SIGINT, 2 bad arguments, 3 bad file)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format=f"{PROG}: %(levelname)s: %(message)s")
    try:
        runs = _runs(args)
    except SourceError as err:
        print(f"{PROG}: {err}", file=sys.stderr, flush=True)
        return 3
    options = Options(
        speed=args.speed,
        loops=args.loops,
        eof_every=args.eof_every,
        heartbeat_s=args.heartbeat,
        run_number=args.run_number,
        drop_after=args.drop_after,
        corrupt=args.corrupt,
        pause=args.pause_at,
        start_in=args.start_in,
    )
    try:
        server = FakeSms(
            Stream.of(runs, args.instrument, monitors=args.monitor_events > 0), options, host=args.host, port=args.port
        )
    except OSError as err:
        print(f"{PROG}: cannot listen on {args.host}:{args.port}: {err.strerror or err}", file=sys.stderr)
        return 3
    received: list[str] = []

    def stop(signum: int, _: FrameType | None) -> None:  # records only: logging here could deadlock
        received.append(signal.Signals(signum).name)
        server.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    events = sum(run.events for run in runs)
    pulses = sum(run.pulse_ns.size for run in runs)
    _log.info(
        "listening on %s:%d: %s, %s, %d pulses, %d events, speed %g, loops %s, runs from %d",
        args.host,
        server.port,
        server.stream.instrument,
        f"{len(runs)} file(s)" if args.files else f"synthetic {runs[0].events // pulses} events per pulse",
        pulses,
        events,
        args.speed,
        args.loops or "forever",
        server.timeline.first_number,
    )
    server.serve()
    if received:
        _log.info("received %s, stopping", received[0])
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
