"""Configuration garbage: every accepted value works, everything else is exit 2 with one short line, for the
daemon and for --check alike: every case in process (``livereduce --check``, the checks the daemon runs at its
start), one through the daemon as a subprocess."""

from __future__ import annotations

import json

import pytest

from conftest import Daemon, run_cli
from test_errors import base, error_line, write

HUGE = "A" * 1_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"instrument": "SANS2D", "update_every": 1e300}',
            ["'update_every'", "1e+300", "less than or equal to 86400"],
        ),
        ('{"instrument": "SANS2D", "update_every": Infinity}', ["invalid JSON", "Infinity is not a JSON number"]),
        ('{"instrument": "SANS2D", "update_every": NaN}', ["invalid JSON", "NaN is not a JSON number"]),
        ('{"instrument": "SANS2D", "update_every": 1e-300}', ["'update_every'", "greater than or equal to 0.01"]),
        ('{"instrument": "SANS2D", "stop_timeout_sec": 1e10}', ["'stop_timeout_sec'", "less than or equal to 3600"]),
        ('{"instrument": "SANS2D", "poll_interval_sec": 1e300}', ["'poll_interval_sec'", "less than or equal"]),
        ('{"instrument": "SANS2D", "mem_check_interval_sec": 1e300}', ["'mem_check_interval_sec'", "less than"]),
        ('{"instrument": "SANS2D", "update_every": 5, "update_every": 6}', ["duplicate key 'update_every'"]),
        ("[" * 100_000 + "]" * 100_000, ["invalid JSON", "nested too deeply"]),
        ('{"instrument": "SANS2D", "log_file": ""}', ["'log_file'", "non-empty"]),
        ('{"instrument": "../../etc/evil"}', ["'instrument'", "no path"]),
        ('{"instrument": "SANS2D/../../x"}', ["'instrument'", "no path"]),
        (json.dumps({"instrument": HUGE}), ["'instrument'", "characters)", "at most 64 characters"]),
    ],
    ids=[
        "update_every 1e300",
        "Infinity",
        "NaN",
        "update_every 1e-300",
        "stop_timeout 1e10",
        "poll 1e300",
        "mem_check 1e300",
        "duplicate key",
        "deep nesting",
        "empty log_file",
        "instrument ../",
        "instrument with /",
        "1 MB instrument name",
    ],
)
def test_hostile_values_are_one_short_line_and_exit_2(tmp_path, livereduce_check, text, expected):
    assert_short_error(livereduce_check(write(tmp_path, text), cwd=tmp_path), expected)


def test_a_hostile_value_through_the_daemon(tmp_path):
    """The 1 MB instrument name through the daemon as a subprocess: its stdout, where the log goes too, stays short."""
    result = run_cli(str(write(tmp_path, json.dumps({"instrument": HUGE}))), cwd=tmp_path)
    assert_short_error(result, ["'instrument'", "characters)", "at most 64 characters"])


def assert_short_error(result, expected: list[str]) -> None:
    line = error_line(result)
    assert result.returncode == 2, result.stdout + result.stderr
    for part in expected:
        assert part in line, line
    assert len(result.stdout) + len(result.stderr) < 2000, "a bad value is quoted at length"


def test_the_largest_accepted_values_work(tmp_path, livereduce_check):
    """The bounds are usable: the daemon starts with each key at its maximum and stops cleanly."""
    path = write(
        tmp_path,
        base(
            update_every=86400,
            stop_timeout_sec=3600,
            poll_interval_sec=86400,
            mem_check_interval_sec=3600,
            event_rate=1000,
            status_file=str(tmp_path / "status.json"),
        ),
    )
    result = livereduce_check(path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    process = Daemon(tmp_path, path)
    try:
        process.wait_for_log(lambda log: "Initial chunk:" in log)
        process.send(15)
        run = process.finish(timeout=60)
    finally:
        process.kill()
    assert run.returncode == 0, run.log
    assert "Traceback" not in run.log


def test_a_config_that_is_too_big_is_refused(tmp_path, livereduce_check):
    path = tmp_path / "livereduce.conf"
    path.write_text('{"instrument": "SANS2D", "x": "' + "y" * (2 << 20) + '"}')
    result = livereduce_check(path, cwd=tmp_path)
    assert result.returncode == 2
    assert "larger than 1048576 bytes" in error_line(result)
