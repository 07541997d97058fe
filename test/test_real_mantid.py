"""The Mantid environment. Upstream's manual check with real Mantid: FakeISISHistoDAE / FakeISISEventDAE servers and
the daemon on test/fake.conf, test/postprocessing/fake.conf and test/fake_event.conf (skipped where Mantid cannot be
imported, see test/README.md); where it cannot, the servers' one-line refusal; and pixi's ``mantid`` environment."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ENTRY_POINT, ROOT, poll_until

HAVE_MANTID = importlib.util.find_spec("mantid") is not None
needs_mantid = pytest.mark.skipif(
    not HAVE_MANTID, reason="real Mantid is not installed here (run in the pixi 'mantid' environment)"
)


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output or ""


@needs_mantid
@pytest.mark.parametrize(
    ("server", "config"),
    [
        ("fake_server.py", "fake.conf"),
        ("fake_server.py", "postprocessing/fake.conf"),
        ("fake_event_server.py", "fake_event.conf"),
    ],
)
def test_daemon_reduces_live_data_from_a_fake_dae(server: str, config: str, tmp_path: Path) -> None:
    settings = json.loads((ROOT / "test" / config).read_text())
    settings.update(
        script_dir=str(ROOT / settings["script_dir"]),
        log_file=str(tmp_path / "livereduce.log"),
        status_file=str(tmp_path / "status.json"),
    )
    (tmp_path / "livereduce.conf").write_text(json.dumps(settings))
    dae = subprocess.Popen([sys.executable, str(ROOT / "test" / server)], cwd=tmp_path)
    daemon = subprocess.Popen(
        [sys.executable, str(ENTRY_POINT), "livereduce.conf"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log = tmp_path / "livereduce.log"
        poll_until(
            lambda: daemon.poll() is not None or (log.exists() and "Loading live data chunk 3" in log.read_text()),
            lambda: f"'Loading live data chunk 3' in {log}: {log.read_text() if log.exists() else '(no log yet)'}",
            timeout=120,
            interval=0.5,
        )
        assert daemon.poll() is None, daemon.communicate()[0]
        output = stop(daemon)
        assert daemon.returncode == 0, output
        text = log.read_text()
        assert "StartLiveData(" in text
        assert "Loading live data chunk 3" in text
        assert "Live data failed" not in text
    finally:
        if daemon.poll() is None:
            stop(daemon)
        stop(dae)


@pytest.mark.skipif(HAVE_MANTID, reason="Mantid is installed here: the servers run")
@pytest.mark.parametrize(
    ("server", "algorithm"), [("fake_server.py", "FakeISISHistoDAE"), ("fake_event_server.py", "FakeISISEventDAE")]
)
def test_fake_servers_without_mantid_say_so_in_one_line(server: str, algorithm: str, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "test" / server)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"test/{server}: needs Mantid ({algorithm}), which cannot be imported here")
    assert done.stderr.rstrip().endswith(f"run it in the Mantid environment: pixi run -e mantid python test/{server}")


def _conda_name(package: str) -> str:
    return package.replace("-", "_")


def test_pixi_mantid_environment_has_exactly_what_the_daemon_needs() -> None:
    from livereduce.packages import REQUIRED

    needed = {_conda_name(package) for package in REQUIRED.values()}
    pixi = tomllib.loads((ROOT / "pixi.toml").read_text())
    assert pixi["environments"]["mantid"] == {"features": ["mantid"], "no-default-feature": True}
    dependencies = set(pixi["feature"]["mantid"]["dependencies"])
    assert dependencies == {"python", "mantid"} | needed
    operations = (ROOT / "docs" / "operations.md").read_text()
    section = operations.split("### Mantid environment\n", 1)[1].split("\n## ", 1)[0]
    assert {_conda_name(name) for name in section.split("`") if f"| `{name}` |" in section} == needed
