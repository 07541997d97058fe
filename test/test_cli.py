"""The command line: --check, --print-config, --help, --status on a broken pipe, the demo, signals, the log file,
and the entry point copied anywhere."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import scippnexus as snx

from conftest import ENTRY_POINT, ROOT, run_cli
from livereduce import __version__, status_file
from livereduce.cli import _inspect, parse_args


def test_print_config_shows_every_key_with_defaults_resolved(tmp_path):
    path = tmp_path / "livereduce.conf"
    path.write_text(json.dumps({"instrument": "PG3", "engine": "scipp"}))
    result = run_cli("--print-config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["instrument"] == "POWGEN"
    assert printed["script_dir"] == "/SNS/PG3/shared/livereduce"
    assert printed["update_every"] == 30
    assert printed["watchdog"] == {"interval": 60, "threshold": 300}
    assert printed["engine"] == "scipp"
    assert printed["PIXI_ENV"] == "mantid_dev"
    assert printed["listener"] == "SNSLiveEventDataListener"
    assert printed["address"] == "bl11a-daq1.sns.gov:31415"
    # the printed configuration is itself valid and means the same
    again = tmp_path / "again.conf"
    again.write_text(result.stdout)
    assert json.loads(run_cli("--print-config", str(again), cwd=tmp_path).stdout) == printed


def test_check_reports_the_demo_as_valid_without_starting_anything():
    result = run_cli("--check", "demo/livereduce.conf", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "OK (instrument ADARA_FakeEvent, engine scipp)" in result.stdout
    assert "ProcessingScriptFilename" in result.stdout
    assert "PostProcessingScriptFilename" in result.stdout


def test_demo_runs_a_run_writes_plot_and_data_and_exits_0(tmp_path):
    shutil.copytree(ROOT / "demo", tmp_path / "demo")
    config = json.loads((tmp_path / "demo" / "livereduce.conf").read_text())
    assert config["http_port"] == 8400  # the README's demo serves its page; here on a free port
    config.update(end_run_every=2, update_every=0.5, http_port=0)
    (tmp_path / "demo" / "livereduce.conf").write_text(json.dumps(config))
    env = {key: value for key, value in os.environ.items() if key != "USER"}  # upstream crashed without $USER
    env["LIVEREDUCE_OUTPUT_DIR"] = str(tmp_path / "out")
    result = subprocess.run(
        [sys.executable, str(ENTRY_POINT), "demo/livereduce.conf"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Live page on http://127\.0\.0\.1:\d+/ ", result.stdout)  # printed where the demo runs
    log = (tmp_path / "livereduce.log").read_text()
    assert "logging started by user '" in log
    assert "Run #1 ended. RunTransitionBehavior Stop." in log
    assert f"Wrote {tmp_path / 'out' / 'ADARA_FakeEvent_1_live.png'}" in log  # script output reaches the log
    assert (tmp_path / "out" / "ADARA_FakeEvent_1_live.png").read_bytes()[:4] == b"\x89PNG"
    reduced = snx.load(tmp_path / "out" / "ADARA_FakeEvent_1_live.h5", root="entry")  # NeXus (save_nexus)
    assert reduced["pixels"].shape == (64, 64)
    assert reduced["pixels"].sum().value == reduced["tof"].sum().value > 0
    assert reduced["pixels"].coords["run_number"].value == 1


def test_sigint_stops_the_daemon_with_exit_0(daemon):
    process = daemon({"listener": "FakeEventDataListener", "update_every": 0.2}, {"proc": "output = input\n"})
    process.wait_for_log(lambda log: "Chunk 2:" in log)
    process.send(signal.SIGINT)
    run = process.finish(timeout=30)
    assert run.returncode == 0
    assert "received SIGINT(2)" in run.log
    assert "stopping live data processing" in run.log


def test_log_file_from_the_environment(tmp_path):
    (tmp_path / "reduce_SANS2D_live_proc.py").write_text("output = input\n")
    config = tmp_path / "c.conf"
    config.write_text(
        json.dumps(
            {
                "instrument": "SANS2D",
                "script_dir": ".",
                "engine": "scipp",
                "listener": "FakeEventDataListener",
                "update_every": "x",
            }
        )
    )
    env = dict(os.environ, LIVEREDUCE_LOG_FILE=str(tmp_path / "pg3.log"))
    result = subprocess.run(
        [sys.executable, str(ENTRY_POINT), str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "'update_every'" in (tmp_path / "pg3.log").read_text()


def test_help_gives_the_exit_codes_of_status(capsys):
    """Defect 11: before, --help said --status exits 1 when the daemon is unhealthy (1 is dead, 150 unhealthy)."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit 0 running and healthy, 1 dead, 3 not running, 4 unknown, 150 running but unhealthy" in text
    assert "exit 1 if it is unhealthy" not in text


def test_status_keeps_its_exit_code_when_the_reader_goes_away(tmp_path):
    """Defect 11: before, `livereduce --status | head -1` exited 1 ('dead') on the broken pipe."""
    config = tmp_path / "c.conf"
    config.write_text(json.dumps({"instrument": "SANS2D", "status_file": str(tmp_path / "status.json")}))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        result = subprocess.run(
            [sys.executable, str(ENTRY_POINT), "--status", str(config)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 3, result.stderr  # not running (no status file), as if the output had been read
    assert result.stderr == ""


def test_the_entry_point_copied_anywhere_imports_the_installed_package(tmp_path):
    """Item 13: before, scripts/livereduce.py as e.g. /usr/local/bin/livereduce.py imported itself ('livereduce'
    is not a package)."""
    copy = tmp_path / "bin" / "livereduce.py"
    copy.parent.mkdir()
    shutil.copy(ENTRY_POINT, copy)
    result = subprocess.run(
        [sys.executable, str(copy), "--version"],
        cwd=copy.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"livereduce {__version__}\n"


def test_check_reports_a_planted_status_directory(tmp_path, monkeypatch, capsys):
    """--check reports what the daemon would refuse at start (defect 1): the planted per-user status directory."""
    monkeypatch.setattr(status_file, "RUN_DIRECTORY", tmp_path / "no-run")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("LIVEREDUCE_STATUS_FILE", raising=False)
    monkeypatch.setattr(status_file.tempfile, "gettempdir", lambda: str(tmp_path))
    planted = tmp_path / f"livereduce-{os.geteuid()}"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    (tmp_path / "reduce_SANS2D_live_proc.py").write_text("output = input\n")
    config = tmp_path / "c.conf"
    keys = {"instrument": "SANS2D", "engine": "scipp", "script_dir": str(tmp_path), "listener": "FakeEventDataListener"}
    config.write_text(json.dumps(keys))
    assert _inspect(parse_args(["--check", str(config)])) == 2
    assert capsys.readouterr().err == (
        f"livereduce: status directory '{planted}' refused: it is writable by group or others (mode 0777); remove it "
        f'(another user may have planted it), or set "status_file" or $LIVEREDUCE_STATUS_FILE\n'
    )
    planted.chmod(0o700)  # positive control: the daemon's own directory passes
    assert _inspect(parse_args(["--check", str(config)])) == 0
