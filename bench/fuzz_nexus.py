#!/usr/bin/env python3
"""Fuzz the file source with many random NeXus files and print how the cases ended.

The cases come from the hypothesis strategy of ``test/test_fuzz_nexus.py`` (random dtypes, shapes, ranges,
orders and truncations of the four ``NXevent_data`` fields, their attributes, a second bank, ``detector_number``,
truncated files). Each case is replayed in process (connect, start, extract until ended) and counted as
``clean`` (the replay delivered exactly the valid stored events), ``exit 3`` (a one-line SourceError naming the
file) or ``other`` (any other exception, a warning, a wrong replay: a defect). ``--daemon N`` also runs the
first N cases through the real daemon (exit 0 / exit 3 with one line / other, including a traceback or a hang).

Usage::

    python bench/fuzz_nexus.py                      # 10,000 cases in process
    python bench/fuzz_nexus.py --cases 2000 --daemon 100 --seed 7

Prints the counts, the most frequent error messages, the time per case, and every ``other`` case with the seed
to reproduce it. Exit status 1 if any case ended as ``other``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from test_fuzz_nexus import Case, nexus_cases, replay_in_daemon, replay_in_process, write_case


def _first_words(message: str) -> str:
    """The problem of a SourceError without the file name and values (to group them)."""
    problem = message.split("'", 2)[-1].lstrip(": ") if message.startswith("'") else message
    return " ".join(problem.split()[:6])


def run(cases: int, daemon_cases: int, chosen_seed: int) -> int:
    counts: Counter[str] = Counter()
    daemon_counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    others: list[str] = []
    slowest = [0.0, ""]
    with tempfile.TemporaryDirectory(prefix="fuzz_nexus_") as scratch:
        work = Path(scratch)

        @seed(chosen_seed)
        @settings(
            max_examples=cases,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=nexus_cases())
        def one(case: Case) -> None:
            number = sum(counts.values())
            path = write_case(work / "case.nxs", case)
            started = time.perf_counter()
            outcome = replay_in_process(path, case.chunk_pulses)
            elapsed = time.perf_counter() - started
            if elapsed > slowest[0]:
                slowest[:] = [elapsed, outcome.kind]
            label = {"source error": "exit 3"}.get(outcome.kind, outcome.kind)
            counts[label] += 1
            if outcome.kind == "source error":
                reasons[_first_words(outcome.detail)] += 1
            elif outcome.kind == "other":
                others.append(f"in process, case {number}: {outcome.detail}\n  {case!r}")
            if number < daemon_cases:
                result = replay_in_daemon(work / f"daemon{number}", case)
                daemon_counts[{"source error": "exit 3"}.get(result.kind, result.kind)] += 1
                if result.kind == "other":
                    others.append(f"daemon, case {number}: {result.detail}\n  {case!r}")

        started = time.perf_counter()
        one()
        total = time.perf_counter() - started

    print(f"seed {chosen_seed}: {sum(counts.values())} cases in {total:.1f} s")
    print("in process: " + ", ".join(f"{counts[key]} {key}" for key in ("clean", "exit 3", "other")))
    if daemon_cases:
        print("daemon:     " + ", ".join(f"{daemon_counts[key]} {key}" for key in ("clean", "exit 3", "other")))
    print(f"slowest in-process case: {slowest[0] * 1000:.0f} ms ({slowest[1]})")
    print("most frequent SourceErrors:")
    for reason, count in reasons.most_common(15):
        print(f"  {count:6d}  {reason}")
    for other in others[:20]:
        print(other)
    return 1 if others else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases to run in process (default 10,000)")
    parser.add_argument("--daemon", type=int, default=0, help="of these, run the first N through the daemon too")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, printed)")
    args = parser.parse_args()
    return run(args.cases, args.daemon, args.seed if args.seed is not None else random.randrange(2**32))


if __name__ == "__main__":
    sys.exit(main())
