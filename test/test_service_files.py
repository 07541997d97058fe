"""The files the service ships: systemd units (systemd-analyze), the polkit rule (run with node), the shell
scripts (their bats suites under test/bats, and shellcheck). Each test skips with a reason where its tool is
missing; .ci/run installs them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

SYSTEMD = ROOT / "systemd"
UNITS = ("livereduce.service", "livereduce@.service", "livereduce_watchdog.service")
EXPOSURE_TARGET = 5.0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def unit_with_stub(unit: str, tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart points at an existing stub (verify checks that the binary exists)."""
    stub = tmp_path / "stub.sh"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    text = re.sub(r"ExecStart=/usr/bin/\S+", f"ExecStart={stub}", (SYSTEMD / unit).read_text())
    copy = tmp_path / unit.replace("@.", "@PG3.")  # a template is verified as one of its instances
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("unit", UNITS)
def test_units_verify(unit, tmp_path):
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit_with_stub(unit, tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_service_exposure_is_at_most_5(tmp_path):
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", str(unit_with_stub("livereduce.service", tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for livereduce.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= EXPOSURE_TARGET


def test_template_differs_from_the_service_only_in_its_instance_lines():
    service = (SYSTEMD / "livereduce.service").read_text().splitlines()
    template = (SYSTEMD / "livereduce@.service").read_text().splitlines()
    only_template = [line for line in template if line not in service]
    assert all("%i" in line or line.startswith("#") for line in only_template), only_template
    assert [line for line in service if line not in template and not line.startswith("#")] == [
        "Description=Live processing service",
        "ExecStart=/usr/bin/livereduce.sh",
        "RuntimeDirectory=livereduce",
    ]


def test_service_keeps_upstreams_directives_and_adds_supervision():
    text = (SYSTEMD / "livereduce.service").read_text()
    for line in (
        "User=snsdata",
        "WorkingDirectory=/tmp",
        "ExecStart=/usr/bin/livereduce.sh",
        "Restart=always",
        "RestartSec=10",
        "StartLimitIntervalSec=86400",
        "Type=notify",
        "NotifyAccess=all",
        "RuntimeDirectory=livereduce",
        "LogsDirectory=SNS_applications",
        "StateDirectory=livereduce",
        "LimitCORE=infinity",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line


POLKIT_HARNESS = """
const rules = [];
global.polkit = {addRule: (f) => rules.push(f), Result: {YES: "yes"}};
require(process.argv[2]);
const [user, unit, verb] = process.argv.slice(3);
const action = {id: "org.freedesktop.systemd1.manage-units", lookup: (k) => ({unit, verb})[k]};
console.log(JSON.stringify(rules.map((rule) => rule(action, {user}) ?? null)));
"""


@pytest.mark.parametrize(
    ("user", "unit", "verb", "allowed"),
    [
        ("snsdata", "livereduce.service", "restart", True),
        ("snsdata", "livereduce.service", "stop", True),
        ("snsdata", "livereduce@PG3.service", "start", True),
        ("snsdata", "livereduce.service", "reload", False),
        ("snsdata", "sshd.service", "restart", False),
        ("alice", "livereduce.service", "restart", False),
    ],
)
def test_polkit_rule(tmp_path, user, unit, verb, allowed):
    rule = tmp_path / "rule.js"
    rule.write_text((SYSTEMD / "50-snsdata-livereduce.rules").read_text())
    harness = tmp_path / "harness.js"
    harness.write_text(POLKIT_HARNESS)
    result = subprocess.run(
        [tool("node"), str(harness), str(rule), user, unit, verb], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == (["yes"] if allowed else [None])


@pytest.mark.parametrize("suite", sorted((ROOT / "test" / "bats").glob("*.bats")), ids=lambda path: path.name)
def test_bats_suite(suite):
    result = subprocess.run([tool("bats"), "--tap", str(suite)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


SHELL_SCRIPTS = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / "rpmbuild.sh", ROOT / ".ci" / "run"]


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shellcheck(script):
    result = subprocess.run([tool("shellcheck"), "-x", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
