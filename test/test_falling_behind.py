"""End to end: a live stream the daemon cannot keep up with is reported as falling behind — in the log (one WARNING
with the cause and the key that fixes it), in ``livereduce --status`` and at ``/metrics`` — and its memory stays
within the bound.

The source is the fake SMS's synthetic stream (``--synthetic RATE``: random events stamped with the wall clock, so
the lag is on the pulse times' own basis) at 2e6 events/s (16 MB/s), read with ``source_buffer_mb`` 1 and
``accum_method`` Replace (no early chunks): one cycle may take 1 MiB, about 0.07 s of the stream, so the lag grows by
nearly a second per second. The in-process variations (causes, thresholds, catching up) are in
``test/engines/scipp/test_keeping_up.py``."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from conftest import poll_until, run_cli

RATE = 2e6


@pytest.fixture
def synthetic_sms() -> Iterator[int]:
    """``livereduce-fake-sms --synthetic 2e6`` on a free port of 127.0.0.1 (stopped at the end); yields the port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "livereduce.tools.fake_sms", "--synthetic", str(RATE), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert "listening on 127.0.0.1:" in first, first + process.stdout.read()
        threading.Thread(target=process.stdout.read, daemon=True).start()  # never block it on a full pipe
        yield int(first.split("127.0.0.1:")[1].split(":")[0].split()[0])
    finally:
        process.kill()
        process.wait()


def test_a_stream_too_fast_for_the_buffer_is_reported_as_falling_behind_with_its_cause(daemon, synthetic_sms):
    run = daemon(
        {
            "listener": "SNSLiveEventDataListener",
            "address": f"127.0.0.1:{synthetic_sms}",
            "update_every": 1,
            "accum_method": "Replace",
            "preserve_events": False,
            "source_buffer_mb": 1,
            "metrics_port": 0,
            "log_file": "livereduce.log",
        },
        scripts={"proc": "output = input\n"},
        instrument="SNAP",
    )
    log = run.wait_for_log(lambda text: "Live data is falling behind real time" in text, timeout=60)
    warning = next(line for line in log.splitlines() if "Live data is falling behind real time" in line)
    assert " - WARNING - " in warning
    assert "(pulse times; update_every 1 s): the source buffer is too small for this stream" in warning
    assert "(buffer 1 MiB, source_buffer_mb); raise source_buffer_mb or leave it unset" in warning
    lags = [float(m) for m in re.findall(r"; lag ([\d.]+) s$", log, re.MULTILINE)]
    assert lags[-1] > 2.0  # over update_every + 1 s
    chunks_before = log.count("; lag ")
    assert chunks_before <= 10, "reported within a few cycles of falling behind"

    def lag_line() -> str | None:  # the status file is rewritten every few seconds
        status = run_cli("--status", str(run.config_path), cwd=run.workdir)
        assert status.returncode == 0, status.stdout + status.stderr
        line = next(line for line in status.stdout.splitlines() if line.startswith("lag:"))
        return line if "FALLING BEHIND" in line else None

    assert "(pulse times), FALLING BEHIND: the source buffer is too small" in poll_until(lag_line, "--status lag")

    url = poll_until(
        lambda: next((m.group(1) for m in [re.search(r"\(metrics on (\S+)\)", run.log())] if m), None),
        "the metrics URL in the log",
    )
    metrics = urllib.request.urlopen(url, timeout=10).read().decode()
    assert re.search(r"^livereduce_lagging 1\.0$", metrics, re.MULTILINE), metrics
    lag_metric = float(re.search(r"^livereduce_lag_seconds ([\d.e+]+)$", metrics, re.MULTILINE).group(1))
    assert lag_metric > 2.0
    count = float(re.search(r"^livereduce_cycle_lag_seconds_count ([\d.e+]+)$", metrics, re.MULTILINE).group(1))
    assert count >= 3
    paused = re.search(r'^livereduce_source_count_total\{counter="back_pressure_ms"\} ([\d.e+]+)$', metrics, re.M)
    assert float(paused.group(1)) > 0
    limit = re.search(r'^livereduce_source_level\{level="buffer_limit_bytes"\} ([\d.e+]+)$', metrics, re.M)
    assert float(limit.group(1)) == 2**20  # an explicit source_buffer_mb is a hard bound

    run.send(15)
    assert run.finish().returncode == 0
