"""Chatty or hostile processing scripts (the daemon as a subprocess): bounded output, os._exit and sys.exit are
script errors, processes a script started do not outlive the daemon."""

from __future__ import annotations

import signal

import psutil

from conftest import poll_until

FAKE = {"listener": "FakeEventDataListener", "event_rate": 600, "update_every": 0.1}


def test_a_script_printing_a_million_lines_costs_the_log_a_thousand(daemon):
    """Before, logging 1M lines per cycle took over 60 s and the stop lost the run."""
    chatty = "for i in range(1_000_000):\n    print('line', i)\nprint('x' * 200_000)\noutput = input\n"
    process = daemon({**FAKE, "stop_timeout_sec": 30}, {"proc": chatty})
    log = process.wait_for_log(lambda log: "Chunk 1:" in log, timeout=120)
    assert "999001 more lines of output from" in log
    assert "(at most 1000 lines per script run)" in log
    first_cycle = log.split("Loading live data chunk 0")[0]
    assert first_cycle.count(" - livereduce.script - INFO - line ") == 1000
    process.send(signal.SIGTERM)
    run = process.finish(timeout=60)
    assert run.returncode == 0


def test_a_long_line_is_cut(daemon):
    process = daemon(FAKE, {"proc": "print('y' * 200_000)\noutput = input\n"})
    log = process.wait_for_log(lambda log: "Chunk 0:" in log)
    assert "(line cut: 200000 characters)" in log
    assert max(len(line) for line in log.splitlines()) < 70_000
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0


def test_a_script_ending_the_process_is_a_script_error(daemon):
    """Before, os._exit(3) killed the daemon with exit 3 ('data source error') and nothing in the log. (sys.exit is
    a script error in process, test_scripts.py: it raises SystemExit, which run_script turns into the same error;
    os._exit ends a process unless the daemon's guard is installed, so it is tried in the daemon.)"""
    script = (
        "import os\nif input.sizes['event_time_zero'] and 'done' not in mtd:\n    mtd['done'] = 1\n    os._exit(3)\n"
        "output = input\n"
    )
    process = daemon(FAKE, {"proc": script})
    log = process.wait_for_log(lambda log: "failed: ProcessingScriptFilename" in log and "Chunk 2:" in log)
    path = process.workdir / "reduce_SANS2D_live_proc.py"
    assert f"ProcessingScriptFilename '{path}', line 4:" in log
    assert process.process.poll() is None  # still running: the cycles go on
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0


def test_processes_started_by_a_script_are_stopped_with_the_daemon(daemon):
    """Before, 4 orphans outlived the daemon."""
    spawn = (
        "import subprocess\n"
        "if 'kids' not in mtd:\n"
        "    mtd['kids'] = [subprocess.Popen(['sleep', '1000']) for _ in range(3)]\n"
        "    mtd['stubborn'] = subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep 1000'])\n"
        "output = input\n"
    )
    process = daemon(FAKE, {"proc": spawn})
    daemon_process = psutil.Process(process.process.pid)
    children = poll_until(
        lambda: len(daemon_process.children(recursive=True)) >= 4 and daemon_process.children(recursive=True),
        "the children",
    )
    process.send(signal.SIGTERM)
    run = process.finish()
    assert run.returncode == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"orphans: {alive}"
    assert run.log.count("Terminating process") >= 4
    assert "still running 2 s after SIGTERM" in run.log  # the one that ignores SIGTERM was killed
