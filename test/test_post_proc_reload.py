"""End to end: a post_proc edit during an ADARA run swaps the script in place (issue 17 §1).

The real daemon reads the SANS2D run from the fake SMS; the post_proc script writes its version and the events it
saw. After the edit the new version's output follows at once (before the next cycle), on an accumulation that
kept growing (never a smaller event count), the SMS saw one connection, no restart happened, and the status
counts ``reloads.post_proc``. The Kafka variant is ``test/kafka/test_post_proc_reload.py`` (same checks, no
seek).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, FakeSms, poll_until

POST_PROC = """
import os
from pathlib import Path
from livereduce.engines.scipp.chunk import event_count

out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
out.mkdir(exist_ok=True)
with open(out / "versions.txt", "a") as log:
    log.write(f"{VERSION} {event_count(input)}\\n")
output = input
"""


def post_proc(version: int) -> str:
    return POST_PROC.replace("{VERSION}", str(version))


def versions(workdir: Path) -> list[tuple[int, int]]:
    """(script version, events it saw) of each post_proc run, in order."""
    path = workdir / "out" / "versions.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(v), int(n)) for v, n in (line.split() for line in lines if len(line.split()) == 2)]


def edit_post_proc_during_the_run(process: Daemon) -> tuple[list[tuple[int, int]], float]:
    """Wait for two outputs of version 1, replace the script with version 2 (atomically, as editors save), wait
    for two outputs of version 2; returns the outputs and the seconds from the edit to version 2's first output."""
    poll_until(lambda: len(versions(process.workdir)) >= 2, lambda: f"two outputs; log:\n{process.log()}", 60, 0.05)
    script = process.workdir / "reduce_SANS2D_live_post_proc.py"
    edited = script.with_suffix(".new")
    edited.write_text(post_proc(2))
    edited_at = time.monotonic()
    os.replace(edited, script)
    poll_until(lambda: any(v == 2 for v, _ in versions(process.workdir)), process.log, 30, 0.01)
    seconds = time.monotonic() - edited_at
    poll_until(lambda: [v for v, _ in versions(process.workdir)].count(2) >= 3, process.log, 60, 0.05)
    return versions(process.workdir), seconds


def check_the_swap(process: Daemon, outputs: list[tuple[int, int]]) -> str:
    """The swap kept the accumulation and the source; returns the log."""
    log = process.log()
    assert [v for v, _ in outputs] == sorted(v for v, _ in outputs), outputs  # never version 1 after 2
    events = [n for _, n in outputs]
    assert events == sorted(events), outputs  # the accumulation only grew: never cleared
    assert events[-1] > events[0], outputs
    assert "changed (md5 " in log, log
    assert 'without restarting "StartLiveData"' in log, log
    swap = log.index("Post-processing script reloaded: post_proc on the accumulation")
    assert log.index("changed (md5 ") < swap, log
    assert "Loading live data chunk" not in log[log.index("changed (md5 ") : swap], log  # at once, not a cycle later
    assert "Restarting Live Data" not in log, log
    assert log.count("Starting live data: engine scipp") == 1, log
    status = json.loads((process.workdir / "status.json").read_text())
    assert status["reloads"] == {"post_proc": 1}, status
    assert status["restarts"]["scripts"] == 0, status
    return log


def test_a_post_proc_edit_during_an_adara_run_keeps_the_accumulation_and_the_connection(
    daemon: Callable[..., Daemon], fake_sms: Callable[..., FakeSms]
) -> None:
    sms = fake_sms("--speed", "3")  # the 30 s run in 10 s: the edit lands in the middle
    config = {"listener": "SNSLiveEventDataListener", "address": f"127.0.0.1:{sms.port}", "update_every": 0.5}
    process = daemon(config, {"post_proc": post_proc(1)})
    outputs, seconds = edit_post_proc_during_the_run(process)
    check_the_swap(process, outputs)
    connections = [line for line in sms.lines if line.rstrip().endswith(" connected")]
    assert len(connections) == 1, sms.lines
    process.send(signal.SIGTERM)
    run = process.finish()
    assert run.returncode == 0, run.log
    print(f"edit -> first output of the new post_proc: {seconds:.2f} s")
