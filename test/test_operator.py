"""The operator's first questions, answered by the real daemon: --status (LSB codes, the final summary, found from
any directory), --check (everything the daemon would report), a consistent log, Prometheus metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ENTRY_POINT, poll_until, run_cli
from test_errors import base, replay_in_six_chunks, write

FAKE = {"listener": "FakeEventDataListener", "event_rate": 600, "update_every": 0.1}


def rows(stdout: str) -> dict[str, str]:
    """``--status`` output as key -> value."""
    return {key.strip(): value.strip() for key, value in (line.split(": ", 1) for line in stdout.splitlines())}


def status_of(tmp_path: Path, *args: str, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run(
        [sys.executable, str(ENTRY_POINT), "--status", *args],
        cwd=cwd or tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


# --- --status ------------------------------------------------------------------------------------------------
def test_status_after_a_clean_stop_keeps_the_summary_and_says_not_running(daemon, tmp_path):
    """Before: 'UNHEALTHY', every count zero, exit 1."""
    process = daemon(FAKE, {"proc": "output = input\n"})
    config = str(process.config_path)
    process.wait_for_log(lambda log: "Chunk 3:" in log)
    running = status_of(tmp_path, config)
    assert running.returncode == 0, running.stdout
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0
    stopped = status_of(tmp_path, config)
    assert stopped.returncode == 3, stopped.stdout  # LSB: not running
    shown = rows(stopped.stdout)
    assert shown["stopped"].startswith("exit 0 (SIGTERM) at ")
    assert int(shown["chunks"]) >= 5
    assert int(shown["events"].split()[0]) > 0
    assert shown["run"] == "1"


def test_status_of_a_killed_daemon_is_dead_and_of_nothing_is_not_running(daemon, tmp_path):
    process = daemon(FAKE, {"proc": "output = input\n"})
    process.wait_for_log(lambda log: "Chunk 1:" in log)
    process.kill()
    dead = status_of(tmp_path, str(process.config_path))
    assert dead.returncode == 1, dead.stdout  # LSB: dead, status file left
    assert "died without updating the status" in dead.stdout
    (tmp_path / "status.json").unlink()
    assert status_of(tmp_path, str(process.config_path)).returncode == 3  # no status file: not running
    (tmp_path / "status.json").write_text("{not json")
    assert status_of(tmp_path, str(process.config_path)).returncode == 4  # unreadable: unknown


def test_status_of_a_running_but_unhealthy_daemon_is_150(daemon, tmp_path):
    process = daemon(FAKE, {"proc": "output = input\n"})
    process.wait_for_log(lambda log: "Chunk 0:" in log)
    (process.workdir / "reduce_SANS2D_live_proc.py").unlink()
    process.wait_for_log(lambda log: "no processing script left" in log)
    result = poll_until(lambda: (r := status_of(tmp_path, str(process.config_path))).returncode == 150 and r, "150")
    assert "UNHEALTHY: the daemon is waiting for its processing scripts" in result.stdout


def test_every_failed_cycle_is_counted_in_the_status_and_the_final_line(daemon, tmp_path, sans2d):
    """Before: every chunk failed in proc, yet --status said 'errors: 0'."""
    run = daemon(replay_in_six_chunks(sans2d), {"proc": "raise ValueError('bad calibration')\n"}).finish()
    assert run.returncode == 0
    stopped = status_of(tmp_path, str(run.workdir / "livereduce.conf"))
    shown = rows(stopped.stdout)
    assert shown["errors"] == "6 failed cycles"
    assert "ValueError: bad calibration" in shown["last error"]
    final = run.log.strip().splitlines()[-1]
    assert "livereduce stopped: exit 0 (run 0 ended (RunTransitionBehavior Stop))" in final
    assert "6 errors" in final
    assert "last error at " in final
    assert "ValueError: bad calibration" in final


def test_status_shows_what_a_histogram_accumulation_holds(daemon, tmp_path):
    """Before: 'events: 534320 (accumulated 0)' read as 'nothing accumulated'."""
    process = daemon({**FAKE, "preserve_events": False}, {"proc": "output = input\n"})
    process.wait_for_log(lambda log: "Chunk 2:" in log)
    shown = poll_until(
        lambda: (r := rows(status_of(tmp_path, str(process.config_path)).stdout))["chunks"] != "0" and r,
        "the status after a cycle",  # the status file is written once a second
    )
    assert shown["accumulation"].startswith("DataArray(event_id: 4096, dense")
    assert shown["events"].endswith("received")
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0


def start_with_default_status(config: Path, env: dict[str, str]) -> subprocess.Popen:
    """The daemon with ``config`` (no ``status_file``) and ``env``, in a working directory of its own."""
    workdir = config.parent / f"work-{config.stem}"
    workdir.mkdir()
    return subprocess.Popen(
        [sys.executable, str(ENTRY_POINT), str(config)],
        cwd=workdir,
        env={**os.environ, "LIVEREDUCE_STATUS_FILE": "", "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_two_daemons_of_one_user_have_their_own_status_found_from_any_directory(tmp_path):
    """Before: the default status file was relative to the working directory; then one file for every daemon of a
    user, so that --status CONFIG showed the other daemon (defect 10)."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "reduce_SANS2D_live_proc.py").write_text("output = input\n")
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    configs = [tmp_path / "a.conf", tmp_path / "b.conf"]
    for config in configs:
        config.write_text(json.dumps({**base(script_dir=str(scripts)), **FAKE}))
    processes = [start_with_default_status(config, env) for config in configs]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        poll_until(lambda: len(list((runtime / "livereduce").glob("status-SANS2D-*.json"))) == 2, "two status files")
        for config, process in zip(configs, processes, strict=True):
            found = status_of(tmp_path, str(config), cwd=elsewhere, env=env)
            assert found.returncode in (0, 150), found.stdout + found.stderr
            assert rows(found.stdout)["pid"] == str(process.pid)
            assert rows(found.stdout)["config"].startswith(str(config))
        other = next(path for path in (runtime / "livereduce").iterdir() if str(configs[0]) in path.read_text())
        mixed = status_of(tmp_path, str(configs[1]), cwd=elsewhere, env={"LIVEREDUCE_STATUS_FILE": str(other)})
        assert mixed.returncode == 4, mixed.stdout
        assert mixed.stdout == ""
        assert mixed.stderr == (
            f"livereduce: status file '{other}' belongs to the daemon of configuration '{configs[0]}', not of "
            f"'{configs[1]}': another daemon writes there (set a \"status_file\" in each configuration)\n"
        )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(60) == 0


@pytest.mark.skipif(Path("/run/livereduce").is_dir(), reason="/run/livereduce exists: the daemon would write there")
def test_a_planted_status_directory_is_refused_with_one_line_and_exit_2(tmp_path):
    """Defect 1: before, the daemon (root) followed a planted /tmp/livereduce-<uid> symlink and wrote status.json
    into the directory it points to."""
    temporary = tmp_path / "tmp"
    temporary.mkdir(mode=0o1777)
    victim = tmp_path / "victim"
    victim.mkdir()
    planted = temporary / f"livereduce-{os.geteuid()}"
    planted.symlink_to(victim)
    config = write(tmp_path, {**base(script_dir=str(tmp_path)), **FAKE}, scripts={"proc": "output = input\n"})
    env = {"TMPDIR": str(temporary), "XDG_RUNTIME_DIR": "", "LIVEREDUCE_STATUS_FILE": ""}
    process = start_with_default_status(config, env)
    try:
        assert process.wait(60) == 2
    finally:
        process.kill()
    log = (tmp_path / f"work-{config.stem}" / "livereduce.log").read_text()
    refused = f"status directory '{planted}' refused: it is a symbolic link; remove it"
    errors = [line for line in log.splitlines() if " - ERROR - " in line]
    assert len(errors) == 1, log
    assert refused in errors[0]
    assert list(victim.iterdir()) == []
    status = status_of(tmp_path, str(config), env=env)
    assert status.returncode == 4
    assert status.stderr.startswith(f"livereduce: {refused}")


def test_status_of_a_fifo_or_an_endless_device_is_one_line_and_exit_4(tmp_path):
    """Defect 1: before, --status hung on a FIFO in place of the status file."""
    fifo = tmp_path / "status.json"
    os.mkfifo(fifo)
    config = write(tmp_path, {**base(), "status_file": str(fifo)})
    result = status_of(tmp_path, str(config))
    assert result.returncode == 4
    assert result.stderr == f"livereduce: cannot read status file '{fifo}': not a regular file (a FIFO)\n"


# --- --check -------------------------------------------------------------------------------------------------
def test_check_reports_everything_the_daemon_would(tmp_path):
    """Before: --check stopped at the first problem and said nothing about an unknown instrument."""
    config = tmp_path / "c.conf"
    config.write_text(
        json.dumps(
            {
                "instrument": "NOT_AN_INSTRUMENT",
                "engine": "scipp",
                "listener": "ISISHistoDataListener",
                "script_dir": str(tmp_path / "missing"),
                "log_file": "/nonexistent-dir/x.log",
            }
        )
    )
    result = run_cli("--check", str(config), cwd=tmp_path)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3, result.stderr
    assert "cannot open log file '/nonexistent-dir/x.log'" in errors[0]
    assert "listener 'ISISHistoDataListener' is not available in the scipp engine" in errors[1]
    assert f"script_dir '{tmp_path / 'missing'}' does not exist" in errors[2]
    assert "warning: Instrument 'NOT_AN_INSTRUMENT' is not in the built-in instrument table" in result.stdout


def test_auto_without_mantid_says_so_first(tmp_path):
    """Before: 'listener ... is not available in the scipp engine' after a 35-line dump, Mantid never named."""
    path = write(tmp_path, {"instrument": "SANS2D", "script_dir": ".", "listener": "ISISHistoDataListener"})
    result = run_cli(str(path), cwd=tmp_path)
    assert result.returncode == 4
    lines = result.stdout.strip().splitlines()
    assert "Configuration options" not in result.stdout
    assert lines[-1].startswith('Mantid cannot be imported here, so engine "auto" chose the scipp engine')


# --- the log tells one story ----------------------------------------------------------------------------------
def test_the_scipp_demo_does_not_log_pixi_env(daemon):
    process = daemon(FAKE, {"proc": "output = input\n"})
    log = process.wait_for_log(lambda log: "Initial chunk:" in log)
    assert "PIXI_ENV" not in log.split("Configuration options")[0]
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0


# --- Prometheus metrics --------------------------------------------------------------------------------------
def scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(metrics: dict, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with these labels (any family)."""
    for samples in metrics.values():
        for sample in samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError((name, labels))


def metrics_url(tmp_path: Path) -> str:
    status = tmp_path / "status.json"
    return poll_until(lambda: status.exists() and json.loads(status.read_text()).get("metrics_url"), "metrics_url")


def test_metrics_are_scraped_over_http(daemon, tmp_path):
    proc = "if input.sizes['event_time_zero'] % 2:\n    raise ValueError('odd')\noutput = input\n"
    process = daemon({**FAKE, "metrics_port": 0}, {"proc": proc})
    process.wait_for_log(lambda log: "Chunk 5:" in log)
    url = metrics_url(tmp_path)
    assert url.startswith("http://127.0.0.1:")
    assert f"(metrics on {url})" in process.log()  # the web server's /metrics (metrics_port: http_port's alias)
    assert f"{json.loads((tmp_path / 'status.json').read_text())['http_url']}metrics" == url
    metrics = poll_until(lambda: (m := scrape(url)) and value(m, "livereduce_chunks_total") >= 5 and m, "5 chunks")
    assert value(metrics, "livereduce_events_received_total") > 0
    assert value(metrics, "livereduce_cycle_duration_seconds_count") >= 5
    assert value(metrics, "livereduce_script_errors_total", script="proc") >= 1
    assert value(metrics, "livereduce_script_errors_total", script="post_proc") == 0
    assert value(metrics, "livereduce_rss_bytes") > 10e6
    assert value(metrics, "livereduce_run_number") == 1
    assert value(metrics, "livereduce_state", livereduce_state="running") == 1
    assert 0 <= value(metrics, "livereduce_last_cycle_age_seconds") < 60
    assert value(metrics, "livereduce_update_every_seconds") == 0.1
    assert value(metrics, "livereduce_engine_restarts_total", reason="scripts") == 0
    (process.workdir / "reduce_SANS2D_live_proc.py").write_text("output = input\n")
    process.wait_for_log(lambda log: 'changed - restarting "StartLiveData"' in log)
    poll_until(
        lambda: value(scrape(url), "livereduce_engine_restarts_total", reason="scripts") == 1, "the restart counted"
    )
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0
    with pytest.raises(OSError, match="Connection refused"):
        scrape(url)  # the endpoint ended with the daemon


def test_metrics_listen_on_localhost_only_by_default(daemon, tmp_path):
    process = daemon({**FAKE, "metrics_port": 0}, {"proc": "output = input\n"})
    process.wait_for_log(lambda log: "Live page on" in log)
    port = int(metrics_url(tmp_path).rsplit(":", 1)[1].split("/")[0])
    listening = [c for c in psutil.Process(process.process.pid).net_connections("tcp") if c.status == "LISTEN"]
    assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", port)]
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0


def test_a_metrics_port_in_use_is_an_error_line_and_the_daemon_runs_on(daemon):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        process = daemon({**FAKE, "metrics_port": port}, {"proc": "output = input\n"})
        log = process.wait_for_log(lambda log: "Chunk 2:" in log)
        assert f"The web server cannot listen on 127.0.0.1:{port}" in log
        assert "Address already in use" in log
        process.send(signal.SIGTERM)
        assert process.finish().returncode == 0
    finally:
        busy.close()


def test_missing_packages_are_one_line_naming_each_and_how_to_install(tmp_path):
    """A site's Mantid environment without the daemon's packages: before, a traceback and exit 1. ``-S`` hides
    site-packages, as an environment without them would."""
    path = write(tmp_path, base())
    result = subprocess.run(
        [sys.executable, "-S", str(ENTRY_POINT), str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 4
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert "missing Python packages numpy, pydantic, psutil, watchdog, sdnotify, prometheus-client" in output
    assert f"in the environment of {sys.executable}" in output
    assert "-m pip install numpy pydantic psutil watchdog sdnotify prometheus-client" in output
