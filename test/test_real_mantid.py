"""Upstream's manual check with real Mantid: FakeISISHistoDAE / FakeISISEventDAE servers and the daemon on
test/fake.conf / test/fake_event.conf. Skipped where Mantid cannot be imported (see test/README.md)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENTRY_POINT, ROOT

pytest.importorskip("mantid", reason="real Mantid is not installed here (run in the pixi 'mantid' environment)")


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output or ""


@pytest.mark.parametrize(
    ("server", "config"),
    [("fake_server.py", "fake.conf"), ("fake_event_server.py", "fake_event.conf")],
)
def test_daemon_reduces_live_data_from_a_fake_dae(server: str, config: str, tmp_path: Path) -> None:
    settings = json.loads((ROOT / "test" / config).read_text())
    settings.update(
        script_dir=str(ROOT / "test"),
        log_file=str(tmp_path / "livereduce.log"),
        status_file=str(tmp_path / "status.json"),
    )
    (tmp_path / config).write_text(json.dumps(settings))
    dae = subprocess.Popen([sys.executable, str(ROOT / "test" / server)], cwd=tmp_path)
    daemon = subprocess.Popen(
        [sys.executable, str(ENTRY_POINT), config],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log = tmp_path / "livereduce.log"
        deadline = time.monotonic() + 120
        while daemon.poll() is None and time.monotonic() < deadline:
            if log.exists() and "Loading live data chunk 3" in log.read_text():
                break
            time.sleep(0.5)
        assert daemon.poll() is None, daemon.communicate()[0]
        output = stop(daemon)
        assert daemon.returncode == 0, output
        text = log.read_text()
        assert "StartLiveData(" in text
        assert "Loading live data chunk 3" in text
    finally:
        if daemon.poll() is None:
            stop(daemon)
        stop(dae)
