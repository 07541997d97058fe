"""The processing-script contract (Mantid's RunPythonScript: ``input`` object, ``output`` name)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from livereduce.errors import ScriptError
from livereduce.scripts import ScriptFailed, load_script, load_scripts, run_script, script_paths


def script(tmp_path: Path, code: str, role: str = "proc"):
    path = tmp_path / f"reduce_X_live_{role}.py"
    path.write_text(code)
    return load_script(role, path)


def test_names_use_the_short_name(tmp_path):
    assert script_paths(tmp_path, "PG3") == {
        "proc": tmp_path / "reduce_PG3_live_proc.py",
        "post_proc": tmp_path / "reduce_PG3_live_post_proc.py",
    }


def test_a_script_that_leaves_output_alone_returns_the_name(tmp_path):
    assert run_script(script(tmp_path, "x = input * 2\n"), 21, "result") == "result"


def test_a_script_rebinds_output_to_its_result(tmp_path):
    assert run_script(script(tmp_path, "output = input * 2\n"), 21, "result") == 42


def test_extra_names_are_bound(tmp_path):
    assert run_script(script(tmp_path, "output = accumulation + 1\n"), 1, "result", {"accumulation": 1}) == 2


def test_tracebacks_name_the_script_file_and_its_real_line(tmp_path):
    loaded = script(tmp_path, "a = 1\nb = 2\n\ndef f():\n    return 1 / 0\n\nf()\n")
    with pytest.raises(ScriptFailed) as failure:
        run_script(loaded, None, "result")
    assert str(failure.value) == (
        f"ProcessingScriptFilename '{loaded.path}', line 5: ZeroDivisionError: division by zero"
    )
    assert f'File "{loaded.path}", line 7, in <module>' in failure.value.details
    assert f'File "{loaded.path}", line 5, in f' in failure.value.details
    assert "scripts.py" not in failure.value.details  # livereduce's own frames are not shown


def test_print_and_logging_of_a_script_reach_the_log(tmp_path, caplog):
    loaded = script(tmp_path, "import logging\nprint('hello from proc')\nlogging.getLogger(__name__).info('logged')\n")
    with caplog.at_level(logging.INFO):
        run_script(loaded, None, "result")
    assert ("livereduce.script", logging.INFO, "hello from proc") in caplog.record_tuples
    assert ("__main__", logging.INFO, "logged") in caplog.record_tuples


def test_each_run_gets_a_fresh_namespace(tmp_path):
    loaded = script(tmp_path, "output = globals().get('seen', 0)\nseen = 1\n")
    assert run_script(loaded, None, "r") == 0
    assert run_script(loaded, None, "r") == 0


def test_load_scripts_finds_what_exists(tmp_path):
    (tmp_path / "reduce_PG3_live_post_proc.py").write_text("output = input\n")
    scripts = load_scripts(tmp_path, "PG3")
    assert scripts.proc is None
    assert scripts.post_proc.path == tmp_path / "reduce_PG3_live_post_proc.py"
    assert [s.role for s in scripts] == ["post_proc"]
    assert len(scripts.post_proc.sha256) == 64


def test_nonexistent_script_dir_is_upstreams_error(tmp_path):
    with pytest.raises(ScriptError, match="Must provide at least one of"):
        load_scripts(tmp_path / "missing", "PG3")


def test_sys_exit_in_a_script_is_a_script_error_not_the_end_of_the_engine(tmp_path):
    loaded = script(tmp_path, "import sys\nsys.exit(3)\n")
    with pytest.raises(ScriptFailed, match=r"line 2: SystemExit: 3"):
        run_script(loaded, None, "result")
