"""The RPMs: built by rpmbuild.sh, checked with rpmlint, installed into a scratch root with ``rpm --root``.
Skipped with a reason where rpmbuild is missing (.ci/run installs it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

MAIN_FILES = {
    "/usr/bin/livereduce.py": "-rwxr-xr-x",
    "/usr/bin/livereduce.sh": "-rwxr-xr-x",
    "/usr/lib/systemd/system/livereduce.service": "-rw-r--r--",
    "/usr/lib/systemd/system/livereduce@.service": "-rw-r--r--",
    "/etc/logrotate.d/livereduce": "-rw-r--r--",
    "/var/log/SNS_applications": "drwxr-xr-t",
    "/usr/share/livereduce/livereduce/cli.py": "-rw-r--r--",
}
WATCHDOG_FILES = {
    "/usr/bin/livereduce_watchdog.sh": "-rwxr-xr-x",
    "/usr/lib/systemd/system/livereduce_watchdog.service": "-rw-r--r--",
    "/etc/polkit-1/rules.d/50-snsdata-livereduce.rules": "-rw-r--r--",
}


def run(*args: str, **kwargs) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def rpms() -> dict[str, Path]:
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild is not installed (.ci/run installs it)")
    shutil.rmtree(ROOT / "build" / "rpmbuild", ignore_errors=True)
    run(str(ROOT / "rpmbuild.sh"), cwd=ROOT)
    built = {path.name: path for path in (ROOT / "build" / "rpmbuild").rglob("*.rpm")}
    main = next(path for name, path in built.items() if name.startswith("python-livereduce-2") and "src" not in name)
    watchdog = next(path for name, path in built.items() if name.startswith("python-livereduce-watchdog"))
    source = next(path for name, path in built.items() if name.endswith(".src.rpm"))
    return {"main": main, "watchdog": watchdog, "source": source}


def modes(rpm: Path) -> dict[str, str]:
    listing = run("rpm", "-qp", "--queryformat", "[%{FILEMODES:perms} %{FILENAMES}\n]", str(rpm))
    return {name: mode for mode, name in (line.split(" ", 1) for line in listing.splitlines())}


def test_version_comes_from_pyproject(rpms):
    version = run("rpm", "-qp", "--queryformat", "%{VERSION}", str(rpms["main"]))
    assert f'version = "{version}"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize(("package", "expected"), [("main", MAIN_FILES), ("watchdog", WATCHDOG_FILES)])
def test_file_list_and_modes(rpms, package, expected):
    files = modes(rpms[package])
    for name, mode in expected.items():
        assert files.get(name) == mode, (name, files.get(name))
    assert not any("__pycache__" in name for name in files)


def test_requirements(rpms):
    requires = run("rpm", "-qpR", str(rpms["main"])).split()
    for needed in ("jq", "polkit", "systemd", "bash"):
        assert needed in requires
    assert "nsd-app-wrap" not in requires
    assert not any(req.startswith(("user(", "group(")) for req in requires)
    assert "python-livereduce" in run("rpm", "-qpR", str(rpms["watchdog"]))


def test_scriptlets(rpms):
    scripts = run("rpm", "-qp", "--scripts", str(rpms["main"]))
    assert "Error: snsdata user not found. Please create it before installing this package." in scripts
    preun = scripts.split("preuninstall scriptlet")[1].split("postuninstall scriptlet")[0]
    assert "if [ $1 -eq 0 ]; then\n    rm -f /var/log/SNS_applications/livereduce.log*" in preun  # erase only


def test_installed_into_a_scratch_root_the_entry_point_finds_its_package(rpms, tmp_path):
    root = tmp_path / "root"
    run("rpm", "--root", str(root), "--initdb")
    run("rpm", "-ivh", "--nodeps", "--noscripts", "--root", str(root), str(rpms["main"]), str(rpms["watchdog"]))
    for name in {**MAIN_FILES, **WATCHDOG_FILES}:
        assert (root / name.lstrip("/")).exists(), name
    entry = root / "usr/bin/livereduce.py"
    probe = (
        f"import runpy, sys\nsys.argv = [{str(entry)!r}, '--version']\n"
        f"try:\n    runpy.run_path({str(entry)!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "import livereduce\nprint(livereduce.__file__)\n"
    )
    output = run(sys.executable, "-c", probe)
    assert output.startswith("livereduce ")
    assert output.splitlines()[-1] == str(root / "usr/share/livereduce/livereduce/__init__.py")


def test_rpmlint_is_clean_with_the_documented_filters(rpms):
    if shutil.which("rpmlint") is None:
        pytest.skip("rpmlint is not installed (.ci/run installs it)")
    output = run(
        "rpmlint",
        "-c",
        str(ROOT / "rpmlint.toml"),
        str(ROOT / "livereduce.spec"),
        str(rpms["main"]),
        str(rpms["watchdog"]),
        str(rpms["source"]),
    )
    assert " 0 errors" in output
    assert " 0 warnings" in output
