"""Bad input gets one clear message and a defined exit code: every case in process (``livereduce --check``), the
distinct paths through the daemon as a subprocess."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipp as sc

from conftest import SANS2D_EVENTS, Sans2dReference, run_cli

PASS = "output = input\n"


def write(tmp_path: Path, config: object, scripts: dict[str, str] | None = None) -> Path:
    """Config file (a dict is dumped as JSON, a str written as is) and SANS2D scripts in tmp_path."""
    for role, code in ({"proc": PASS} if scripts is None else scripts).items():
        (tmp_path / f"reduce_SANS2D_live_{role}.py").write_text(code)
    path = tmp_path / "livereduce.conf"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def base(**keys: object) -> dict:
    return {"instrument": "SANS2D", "engine": "scipp", "script_dir": ".", "listener": "FakeEventDataListener", **keys}


def error_line(result) -> str:
    """The daemon's last output line (its error message); there must be no traceback."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return output.strip().splitlines()[-1]


CONFIG_CASES: dict[str, tuple[object, list[str]]] = {
    "invalid JSON": ('{"instrument": "SANS2D",', ["invalid JSON", "livereduce.conf", "line 1"]),
    "not an object": ("[1, 2]", ["must be a JSON object"]),
    "update_every text": (base(update_every="fast"), ["'update_every'", '"fast"', "number"]),
    "update_every 0": (base(update_every=0), ["'update_every'", "0", "greater than or equal to 0.01"]),
    "update_every boolean": (base(update_every=True), ["'update_every'", "true", "not a boolean"]),
    "log_file directory missing": (
        base(log_file="/nonexistent-dir/livereduce.log"),
        ["cannot open log file", "/nonexistent-dir"],
    ),
    "preserve_events text": (base(preserve_events="yes"), ["'preserve_events'", '"yes"', "boolean"]),
    "accum_method": (base(accum_method="Sum"), ["'accum_method'", '"Sum"', "'Add', 'Replace' or 'Append'"]),
    "run_transition": (base(run_transition="Pause"), ["'run_transition'", '"Pause"', "'Restart', 'Stop' or 'Rename'"]),
    "listener unknown": (base(listener="MyListener"), ["'listener'", '"MyListener"', "SNSLiveEventDataListener"]),
    "start": (base(start="yesterday"), ["'start'", '"yesterday"', "ISO-8601"]),
    "misspelt key": (base(updte_every=3), ["unknown key 'updte_every'", "did you mean 'update_every'"]),
    "watchdog threshold": (base(watchdog={"threshold": 5}), ["'watchdog.threshold'", "5", "20"]),
    "listener of Mantid only": (
        base(listener="ISISHistoDataListener"),
        ["'ISISHistoDataListener' is not available in the scipp engine"],
    ),
    "file listener without filename": (base(listener="FileEventDataListener"), ["needs the key 'filename'"]),
    "mantid missing": (
        base(engine="mantid"),
        ["the mantid engine needs Mantid", "No module named 'mantid'", "'mantid_dev'"],
    ),
}
"""Each case in process (``livereduce --check``); the daemon raises the same error at its start (the same
``load_config``, engine and script checks), so :data:`DAEMON_CASES` stand for the rest as subprocesses."""

DAEMON_CASES = ("invalid JSON", "log_file directory missing", "mantid missing")
"""Through the daemon as a subprocess: an error before the log file is open, the daemon's own log-file error,
and exit 4 (engine unavailable); "update_every text" in the log file below."""


def assert_error(result, config: object, expected: list[str]) -> None:
    line = error_line(result)
    assert result.returncode == (4 if "mantid" in str(config) else 2), line
    for text in expected:
        assert text in line, line


@pytest.mark.parametrize(("config", "expected"), CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_configuration_errors_give_one_line_and_their_exit_code(tmp_path, livereduce_check, config, expected):
    assert_error(livereduce_check(write(tmp_path, config), cwd=tmp_path), config, expected)


@pytest.mark.parametrize("case", DAEMON_CASES)
def test_configuration_errors_through_the_daemon(tmp_path, case):
    config, expected = CONFIG_CASES[case]
    assert_error(run_cli(str(write(tmp_path, config)), cwd=tmp_path), config, expected)


def test_check_command_reports_a_configuration_error(tmp_path):
    """``--check`` as a subprocess once (its variations above run in process)."""
    config, expected = CONFIG_CASES["invalid JSON"]
    assert_error(run_cli("--check", str(write(tmp_path, config)), cwd=tmp_path), config, expected)


def test_configuration_error_reaches_the_log_file(tmp_path):
    config, expected = CONFIG_CASES["update_every text"]
    path = write(tmp_path, config)
    result = run_cli(str(path), cwd=tmp_path)
    assert_error(result, config, expected)
    assert "- livereduce - ERROR - " in (tmp_path / "livereduce.log").read_text()
    assert "'update_every'" in (tmp_path / "livereduce.log").read_text()


def test_missing_configuration_file_is_an_error_not_a_fallback(tmp_path):
    result = run_cli(str(tmp_path / "nope.conf"), cwd=tmp_path)
    assert result.returncode == 2
    assert "configuration file" in error_line(result)
    assert "nope.conf' does not exist" in error_line(result)


SCRIPT_CASES: dict[str, tuple[dict[str, str], list[str]]] = {
    "no script": (
        {},
        ["Must provide at least one of", "reduce_SANS2D_live_proc.py", "reduce_SANS2D_live_post_proc.py"],
    ),
    "empty proc": ({"proc": ""}, ["ProcessingScriptFilename", "reduce_SANS2D_live_proc.py' is empty"]),
    "blank post_proc": ({"post_proc": "  \n\n"}, ["PostProcessingScriptFilename", "is empty"]),
    "syntax error": ({"proc": "x = 1\nif x\n    y = 2\n"}, ["SyntaxError", "reduce_SANS2D_live_proc.py', line 2"]),
}


@pytest.mark.parametrize(("scripts", "expected"), SCRIPT_CASES.values(), ids=SCRIPT_CASES.keys())
def test_script_errors_give_one_line_and_exit_2(tmp_path, livereduce_check, scripts, expected):
    assert_error(livereduce_check(write(tmp_path, base(), scripts), cwd=tmp_path), base(), expected)


def test_a_script_error_through_the_daemon(tmp_path):
    scripts, expected = SCRIPT_CASES["syntax error"]
    assert_error(run_cli(str(write(tmp_path, base(), scripts)), cwd=tmp_path), base(), expected)


RAISE_ON_THIRD_CHUNK = """\
from pathlib import Path

counter = Path("chunks.txt")
seen = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(seen))
if seen == 3:
    values = [1, 2]
    total = values[7]  # line 8: IndexError on the third chunk
"""

SAVE = """\
import os
from pathlib import Path
import scipp as sc
out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
out.mkdir(exist_ok=True)
sc.io.save_hdf5(input, out / "result.h5")
output = input
"""


def replay_in_six_chunks(sans2d: Path) -> dict:
    return {
        "listener": "FileEventDataListener",
        "filename": str(sans2d),
        "replay_speed": 0,
        "replay_chunk_pulses": 50,
        "update_every": 0.01,
        "run_transition": "Stop",
    }


def test_proc_script_raising_mid_run_drops_that_chunk_and_keeps_the_accumulation(
    daemon, sans2d, sans2d_reference: Sans2dReference
):
    config = replay_in_six_chunks(sans2d)
    run = daemon(config, {"proc": RAISE_ON_THIRD_CHUNK, "post_proc": SAVE}).finish()

    assert run.returncode == 0, run.stdout
    script = run.workdir / "reduce_SANS2D_live_proc.py"
    assert f"Chunk 1 failed: ProcessingScriptFilename '{script}', line 8: IndexError" in run.log
    assert f'File "{script}", line 8, in <module>' in run.log
    assert "total = values[7]" in run.log
    assert re.search(r"Chunk 1: \d+ events in 50 pulses \(run 0, Running\), not accumulated;", run.log)
    assert run.log.index("Chunk 1 failed:") < run.log.index("Chunk 1: ")  # the error first, then the summary
    accumulation = sc.io.load_hdf5(run.workdir / "out" / "result.h5")
    dropped = sans2d_reference.pulses(100, 150)
    expected = np.delete(sans2d_reference.event_id, np.arange(dropped.start, dropped.stop))
    np.testing.assert_array_equal(accumulation.bins.concat().value.coords["event_id"].values, expected)
    assert accumulation.bins.size().sum().value == SANS2D_EVENTS - (dropped.stop - dropped.start)


def test_post_proc_script_raising_keeps_accumulating(daemon, sans2d):
    post_proc = RAISE_ON_THIRD_CHUNK + SAVE
    config = replay_in_six_chunks(sans2d)
    run = daemon(config, {"post_proc": post_proc}).finish()

    assert run.returncode == 0, run.stdout
    assert "Chunk 1 failed: PostProcessingScriptFilename" in run.log
    accumulation = sc.io.load_hdf5(run.workdir / "out" / "result.h5")
    assert accumulation.bins.size().sum().value == SANS2D_EVENTS


def test_repeated_identical_errors_are_summarised(daemon, sans2d):
    config = replay_in_six_chunks(sans2d)
    run = daemon(config, {"proc": "raise ValueError('bad calibration')\n"}).finish()

    assert run.returncode == 0, run.stdout
    assert run.log.count("Traceback") == 1
    assert "Initial chunk failed: ProcessingScriptFilename" in run.log
    assert "Chunk 4 failed again (same error as initial chunk, 6 times in a row)" in run.log
