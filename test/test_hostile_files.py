"""Files that block, a full disk, loose permissions: the daemon as a subprocess, and the variations of a start-up
refusal in process (``livereduce --check``: the checks the daemon runs at its start)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import poll_until, run_cli
from test_errors import base, error_line, write

FAKE = {"listener": "FakeEventDataListener", "event_rate": 600, "update_every": 0.1}


def marker(tag: str) -> str:
    return f'with open("ran.txt", "a") as f:\n    f.write("{tag}\\n")\n'


def ran(workdir: Path) -> list[str]:
    path = workdir / "ran.txt"
    return path.read_text().split() if path.exists() else []


# --- FIFOs -------------------------------------------------------------------------------------------------------
def fifo_in_place(tmp_path: Path, what: str) -> tuple[Path, Path]:
    """A configuration and a script in tmp_path, one of them (``what``) replaced by a FIFO: (config, FIFO)."""
    path = write(tmp_path, base())
    target = path if what == "config" else tmp_path / "reduce_SANS2D_live_proc.py"
    target.unlink()
    os.mkfifo(target)
    return path, target


def assert_fifo_refused(result, target: Path) -> None:
    line = error_line(result)
    assert result.returncode == 2, line
    assert "not a regular file (a FIFO)" in line
    assert str(target) in line


@pytest.mark.parametrize("what", ["script", "config"])
def test_a_fifo_as_script_or_config_is_an_error_not_a_hang(tmp_path, livereduce_check, what):
    """Before, start-up (and --check) blocked forever in open() and ignored SIGTERM."""
    path, target = fifo_in_place(tmp_path, what)
    assert_fifo_refused(livereduce_check(path, cwd=tmp_path), target)


def test_a_fifo_as_config_stops_the_daemon_with_one_line(tmp_path):
    path, target = fifo_in_place(tmp_path, "config")
    assert_fifo_refused(run_cli(str(path), cwd=tmp_path, timeout=30), target)


def test_a_fifo_swapped_in_for_a_script_does_not_stop_change_detection(daemon):
    """Before, the watcher blocked reading the FIFO and never saw a change again."""
    process = daemon(FAKE, {"proc": marker("v1")})
    process.wait_for_log(lambda log: "Chunk 0:" in log)
    proc = process.workdir / "reduce_SANS2D_live_proc.py"
    proc.unlink()
    os.mkfifo(proc)
    log = process.wait_for_log(lambda log: "not a regular file (a FIFO)" in log)
    assert "the last good version keeps running" in log
    proc.unlink()
    proc.write_text(marker("v2"))  # the watcher still works: the real script is picked up
    poll_until(lambda: "v2" in ran(process.workdir), "the new script to run")
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0


# --- a full disk, a closed stdout -----------------------------------------------------------------------------
def test_a_full_disk_under_the_log_is_reported_once_and_writing_resumes(daemon, tmp_path):
    """Before, every record printed a '--- Logging error ---' traceback, forever. /dev/full fails every write
    with ENOSPC; re-pointing the log's symlink to a real file is the disk being freed (logrotate-style reopen)."""
    link = tmp_path / "full.log"
    link.symlink_to("/dev/full")
    process = daemon({**FAKE, "log_file": str(link)}, {"proc": "output = input\n"})
    poll_until(lambda: json.loads(_status(tmp_path)).get("log_records_lost", 0) > 20, "lost records counted")
    link.unlink()
    link.write_text("")  # writing works again
    poll_until(lambda: "log records were lost" in link.read_text(), "the log to resume")
    process.send(signal.SIGTERM)
    run = process.finish()
    assert run.returncode == 0
    assert "--- Logging error ---" not in run.stdout
    assert run.stdout.count("cannot write the log to") == 1, run.stdout
    assert "No space left on device" in run.stdout
    assert "works again" in run.stdout
    assert "Chunk" in link.read_text()


def _status(tmp_path: Path) -> str:
    path = tmp_path / "status.json"
    return path.read_text() if path.exists() else "{}"


def test_a_script_closing_stdout_is_reported_once(daemon):
    process = daemon(FAKE, {"proc": "import os\ntry:\n    os.close(1)\nexcept OSError:\n    pass\noutput = input\n"})
    process.wait_for_log(lambda log: "cannot write the log to stdout" in log and "Chunk 5:" in log)
    process.send(signal.SIGTERM)
    run = process.finish()
    assert run.returncode == 0
    assert run.log.count("cannot write the log to stdout") == 1
    assert "--- Logging error ---" not in run.log


# --- permissions ----------------------------------------------------------------------------------------------
def loose_permissions(tmp_path: Path, what: str) -> tuple[Path, Path]:
    """A configuration and its script with ``what`` writable by any user: (config, what is writable)."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    path = write(tmp_path, base(script_dir=str(scripts)), scripts={})
    proc = scripts / "reduce_SANS2D_live_proc.py"
    proc.write_text("output = input\n")
    if what == "script":
        proc.chmod(0o666)
        bad = proc
    elif what == "script_dir":
        scripts.chmod(0o777)
        bad = scripts
    elif what == "config":
        path.chmod(0o666)
        bad = path
    else:
        real = tmp_path / "elsewhere.py"
        real.write_text("output = input\n")
        real.chmod(0o666)
        proc.unlink()
        proc.symlink_to(real)
        bad = real
    return path, bad


def assert_refused_with_the_fix(result, bad: Path) -> None:
    line = error_line(result)
    assert result.returncode == 2, line
    assert f"'{bad}'" in line
    assert f"chmod o-w {bad}" in line


@pytest.mark.parametrize("what", ["script", "script_dir", "config", "symlink target"])
def test_world_writable_code_is_refused_with_the_fix(tmp_path, livereduce_check, what):
    path, bad = loose_permissions(tmp_path, what)
    assert_refused_with_the_fix(livereduce_check(path, cwd=tmp_path), bad)
    bad.chmod(0o664 if bad.is_file() else 0o775)  # group-writable is the documented set-up: accepted
    assert livereduce_check(path, cwd=tmp_path).returncode == 0


def test_world_writable_code_stops_the_daemon_with_the_fix(tmp_path):
    path, bad = loose_permissions(tmp_path, "script")
    assert_refused_with_the_fix(run_cli(str(path), cwd=tmp_path), bad)


def test_strict_permissions_false_turns_the_check_off(tmp_path, livereduce_check):
    path = write(tmp_path, base(strict_permissions=False))
    (tmp_path / "reduce_SANS2D_live_proc.py").chmod(0o666)
    assert livereduce_check(path, cwd=tmp_path).returncode == 0
    path.write_text(json.dumps(base()))
    assert livereduce_check(path, cwd=tmp_path).returncode == 2  # positive control


def test_a_script_made_world_writable_while_running_keeps_the_last_good_one(daemon):
    process = daemon(FAKE, {"proc": marker("v1")})
    process.wait_for_log(lambda log: "Chunk 0:" in log)
    proc = process.workdir / "reduce_SANS2D_live_proc.py"
    proc.write_text(marker("v2"))
    proc.chmod(0o666)
    log = process.wait_for_log(lambda log: "is writable by any user" in log)
    assert "the last good version keeps running" in log
    assert "v2" not in ran(process.workdir)
    proc.chmod(0o644)  # fixed: now the edit is taken
    proc.write_text(marker("v3"))
    poll_until(lambda: "v3" in ran(process.workdir), "the fixed script to run")
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0
