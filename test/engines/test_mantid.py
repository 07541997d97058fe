"""The mantid engine: the daemon (subprocess) with ``engine: mantid`` against the strict Mantid test double
(test/mantid_double on PYTHONPATH; it records every StartLiveData call as one JSON line), and the engine in-process
on the double for what a subprocess cannot show deterministically."""

from __future__ import annotations

import json
import os
import queue
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from conftest import ROOT
from livereduce.config import Config
from livereduce.engines.base import CycleCompleted, EngineEvent, EngineFailed, EngineFinished, EngineStarted
from livereduce.errors import ScriptError, SourceError
from livereduce.scripts import ScriptFailed, load_scripts
from mantid_double.harness import DoubleLoader, kept_main

DOUBLE = ROOT / "test" / "mantid_double"
PASS = "output = input\n"
RESTART = "Restarting Live Data and clearing workspaces"


def calls(workdir: Path) -> list[dict]:
    """The StartLiveData property sets the double recorded, in order."""
    path = workdir / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["properties"] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def mantid_daemon(daemon, tmp_path):
    """``mantid_daemon(config, scripts, **double_env)``: the daemon on the Mantid test double."""

    def start(config: dict, scripts: dict[str, str], **double_env: str):
        env = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(DOUBLE), os.environ.get("PYTHONPATH", "")])),
            "MANTID_DOUBLE_RECORD": str(tmp_path / "calls.jsonl"),
            **double_env,
        }
        config = {"engine": "mantid", **config}
        return daemon(config, scripts, instrument=config["instrument"], env=env)

    return start


def started_in_process(engine, tmp_path: Path, instrument: str = "ISIS_Event", **keys: object) -> dict:
    """The properties of the first StartLiveData call of the engine in process, on the double, for ``keys``."""
    double_env = {"MANTID_DOUBLE_RECORD": str(tmp_path / "calls.jsonl")}
    mantid_engine, events, scripts = engine({"proc": PASS}, instrument=instrument, double_env=double_env, **keys)
    mantid_engine.start(scripts, events.put)
    return calls(tmp_path)[0]


# The daemon with ``engine: mantid`` calls StartLiveData with what its configuration says: upstream's three sample
# configurations show it end to end (below); the variations of the keys are checked on the engine in process.


def test_every_new_key(engine, tmp_path):
    config = {
        "instrument": "ISIS_Histogram",
        "listener": "ISISHistoDataListener",
        "address": "127.0.0.1:56789",
        "run_transition": "Rename",
        "start": "now",
        "spectra": [1, 2, 3],
        "periods": [1],
        "update_every": 0.5,
        "preserve_events": False,
        "accum_method": "Replace",
    }
    properties = started_in_process(engine, tmp_path, **config)
    assert properties == {
        "Instrument": "ISIS_Histogram",
        "UpdateEvery": 0.5,
        "PreserveEvents": False,
        "AccumulationMethod": "Replace",
        "OutputWorkspace": "result",
        "FromNow": True,
        "FromStartOfRun": False,
        "ProcessingScriptFilename": str(tmp_path / "reduce_ISIS_Histogram_live_proc.py"),
        "PeriodList": [1],
        "SpectraList": [1, 2, 3],  # upstream sent "spectra", which Mantid drops
        "Listener": "ISISHistoDataListener",
        "Address": "127.0.0.1:56789",
        "RunTransitionBehavior": "Rename",
    }


def test_start_time_is_passed_as_utc(engine, tmp_path):
    properties = started_in_process(engine, tmp_path, start="2026-01-31T12:00:00+01:00", update_every=1)
    assert (properties["FromNow"], properties["FromStartOfRun"], properties["FromTime"]) == (False, False, True)
    assert properties["StartTime"] == "2026-01-31T11:00:00"


def test_facility_and_default_instrument_are_switched(engine, tmp_path, caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO", logger="livereduce")
    properties = started_in_process(engine, tmp_path, instrument="PG3", update_every=1)
    assert properties["Instrument"] == "POWGEN"
    log = caplog.messages
    assert "Converting instrument using ConfigService" in log
    assert "Default Facility set to SNS" in log
    assert "Default Instrument set to POWGEN" in log


def test_script_edit_cancels_waits_clears_and_restarts(mantid_daemon):
    process = mantid_daemon({"instrument": "ISIS_Event", "update_every": 0.2}, {"proc": PASS})
    process.wait_for_log(lambda log: "Loading live data chunk 2" in log)
    proc = process.workdir / "reduce_ISIS_Event_live_proc.py"
    proc.write_text("mtd.addOrReplace('second_version', input.clone())\n" + PASS)
    log = process.wait_for_log(lambda log: len(calls(process.workdir)) >= 2)
    assert log.count(RESTART) == 1
    assert "stopping live data processing" in log
    first, second = calls(process.workdir)[:2]
    assert first == second  # the same properties, the new file content
    process.send(signal.SIGTERM)
    run = process.finish()
    assert run.returncode == 0
    assert f'Processing script "{proc}" changed - restarting "StartLiveData"' in run.log


def test_monitor_live_data_failure_is_restarted_with_back_off(mantid_daemon):
    process = mantid_daemon(
        {"instrument": "ISIS_Event", "update_every": 0.2}, {"proc": PASS}, MANTID_DOUBLE_FAIL_AFTER="2"
    )
    log = process.wait_for_log(lambda log: len(calls(process.workdir)) >= 2)
    assert "Live data failed: MonitorLiveData ended with an error" in log
    assert "Restarting live data in 1 s (failure 1 in a row)" in log
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0


def test_a_slow_cancel_cannot_block_the_stop(mantid_daemon):
    process = mantid_daemon(
        {"instrument": "ISIS_Event", "update_every": 0.2, "stop_timeout_sec": 1},
        {"proc": PASS},
        MANTID_DOUBLE_CANCEL_DELAY="600",
    )
    process.wait_for_log(lambda log: "Loading live data chunk 2" in log)
    process.send(signal.SIGTERM)
    run = process.finish(timeout=30)
    assert run.returncode == 6
    assert "did not stop within 1 s" in run.log


def test_run_transition_stop_ends_the_daemon(mantid_daemon):
    process = mantid_daemon(
        {"instrument": "ISIS_Event", "update_every": 0.2, "run_transition": "Stop"},
        {"proc": PASS},
        MANTID_DOUBLE_END_RUN_AFTER="2",
    )
    run = process.finish(timeout=60)
    assert run.returncode == 0, run.log
    assert "Live data finished: MonitorLiveData ended" in run.log


def test_mantid_messages_reach_the_log_file(mantid_daemon):
    process = mantid_daemon({"instrument": "ISIS_Event", "update_every": 0.2}, {"proc": "print('hello')\n" + PASS})
    log = process.wait_for_log(lambda log: "Loading live data chunk 2" in log)
    assert " - Mantid - " in log
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0


# ---------------------------------------------------------------------------------------------------------------
# upstream's sample configurations with their own scripts, unchanged


UPSTREAM_CONFIGS = {
    "fake.conf": (
        "test",
        {
            "Instrument": "ISIS_Histogram",
            "UpdateEvery": 3,
            "PreserveEvents": True,
            "AccumulationMethod": "Replace",
            "OutputWorkspace": "result",
            "FromNow": False,
            "FromStartOfRun": True,
            "ProcessingScriptFilename": str(ROOT / "test" / "reduce_ISIS_Histogram_live_proc.py"),
            "PeriodList": [1, 3],
        },
    ),
    "fake_event.conf": (
        "test",
        {
            "Instrument": "ISIS_Event",
            "UpdateEvery": 3,
            "PreserveEvents": True,
            "AccumulationMethod": "Add",
            "OutputWorkspace": "result",
            "FromNow": False,
            "FromStartOfRun": True,
            "ProcessingScriptFilename": str(ROOT / "test" / "reduce_ISIS_Event_live_proc.py"),
        },
    ),
    "postprocessing/fake.conf": (
        "test/postprocessing",
        {
            "Instrument": "ISIS_Histogram",
            "UpdateEvery": 3,
            "PreserveEvents": True,
            "AccumulationMethod": "Replace",
            "OutputWorkspace": "result",
            "FromNow": False,
            "FromStartOfRun": True,
            "PostProcessingScriptFilename": str(
                ROOT / "test" / "postprocessing" / "reduce_ISIS_Histogram_live_post_proc.py"
            ),
            "PeriodList": [1, 3],
        },
    ),
}
"""Upstream's sample configurations: their script_dir, and the StartLiveData call they make."""


@pytest.mark.parametrize(("name", "script_dir", "expected"), [(name, *case) for name, case in UPSTREAM_CONFIGS.items()])
def test_upstream_test_configs_run_with_their_scripts(mantid_daemon, name: str, script_dir: str, expected: dict):
    config = json.loads((ROOT / "test" / name).read_text())
    assert config["script_dir"] == script_dir  # relative to upstream's checkout: made absolute, nothing else
    config["script_dir"] = str(ROOT / script_dir)
    process = mantid_daemon(config, {})
    log = process.wait_for_log(lambda log: "Loading live data chunk 1 at" in log, timeout=120)
    assert "StartLiveData(" in log
    process.send(signal.SIGTERM)
    run = process.finish()
    assert run.returncode == 0, run.log
    assert "Live data failed" not in run.log
    assert "Error" not in run.log
    if name == "fake_event.conf":
        assert "Running proc script" in run.stdout  # print() of a Mantid script reaches the journal
    properties = calls(process.workdir)[0]
    if "PostProcessingScriptFilename" in expected:
        accumulation = properties.pop("AccumulationWorkspace")
        assert accumulation.startswith("accumulation_")
        assert len(accumulation) > len("accumulation_")
    assert properties == expected


# ---------------------------------------------------------------------------------------------------------------
# what scripts see


UPSTREAM_NAMES_SCRIPT = """\
assert isinstance(InstrumentInfo, type) and callable(StartLiveData) and callable(mtd_log_to_python)
assert mantid.__name__ == "mantid" and LOG_NAME == "livereduce" and logformat.startswith("%(asctime)s")
facts = {
    "pid": os.getpid() == psutil.Process().pid,
    "md5": md5(b"chunk").hexdigest()[:6],
    "rss": psutil.Process().memory_info().rss * CONVERSION_FACTOR_BYTES_TO_MB > 0,
    "clock": time.time() > 0 and threading.active_count() > 0,
    "signal": int(signal.SIGTERM),
    "argv": isinstance(sys.argv, list),
    "log_file": LOG_FILE,
}
logger.info("proc sees upstream's names: %s", json.dumps(facts, sort_keys=True))
logging.getLogger("livereduce").info("chunk in the ADS: %s", output in mtd)
"""


def test_scripts_see_upstreams_main_names_in_the_daemon(mantid_daemon):
    process = mantid_daemon({"instrument": "ISIS_Event", "update_every": 0.2}, {"proc": UPSTREAM_NAMES_SCRIPT})
    log = process.wait_for_log(lambda log: "Loading live data chunk 1 at" in log)
    facts = {
        "argv": True,
        "clock": True,
        "log_file": "/var/log/SNS_applications/livereduce.log",
        "md5": "5a8f4f",
        "pid": True,
        "rss": True,
        "signal": 15,
    }
    assert f"proc sees upstream's names: {json.dumps(facts, sort_keys=True)}" in log
    assert "chunk in the ADS: True" in log
    process.send(signal.SIGTERM)
    run = process.finish()
    assert run.returncode == 0, run.log
    assert "Live data failed" not in run.log


def test_simpleapi_names_are_not_in_scope_as_under_mantid(mantid_daemon):
    script = "SumSpectra(InputWorkspace=input, OutputWorkspace=output)\n"  # no import: NameError under Mantid
    process = mantid_daemon({"instrument": "ISIS_Event", "update_every": 0.2}, {"proc": script})
    path = process.workdir / "reduce_ISIS_Event_live_proc.py"
    process.wait_for_log(lambda log: "name 'SumSpectra' is not defined" in log)
    process.send(signal.SIGTERM)
    run = process.finish()
    assert f"ProcessingScriptFilename '{path}', line 1: name 'SumSpectra' is not defined" in run.log


# ---------------------------------------------------------------------------------------------------------------
# a script error in the first chunk (inside StartLiveData)


BROKEN_SECOND_LINE = "chunk = input\nRebin(InputWorkspace=chunk, OutputWorkspace=output, Params='100')\n"


def test_first_chunk_script_error_names_script_and_line_and_is_retried_with_back_off(mantid_daemon):
    process = mantid_daemon({"instrument": "ISIS_Event", "update_every": 0.2}, {"proc": BROKEN_SECOND_LINE})
    path = process.workdir / "reduce_ISIS_Event_live_proc.py"
    expected = f"ProcessingScriptFilename '{path}', line 2: name 'Rebin' is not defined"
    log = process.wait_for_log(lambda log: expected in log)
    assert "StartLiveData failed" not in log  # not a data source error
    process.wait_for_log(lambda log: "Restarting live data in 1 s (failure 1 in a row)" in log)
    path.write_text("from mantid.simpleapi import Rebin\n" + BROKEN_SECOND_LINE)
    process.wait_for_log(lambda log: "Loading live data chunk 0 at" in log)
    process.send(signal.SIGTERM)
    assert process.finish().returncode == 0


# ---------------------------------------------------------------------------------------------------------------
# the engine in-process on the double


@pytest.fixture
def main_module() -> Iterator[ModuleType]:
    """``__main__`` (the scripts' globals), restored after the test."""
    with kept_main() as main:
        yield main


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, main_module: ModuleType, tmp_path: Path) -> Iterator[Callable]:
    """``engine(scripts, instrument="ISIS_Event", double_env={}, **config) -> (MantidEngine, events, scripts)``:
    the engine in this process on a fresh double; every engine built is stopped afterwards."""
    from livereduce.engines.mantid import MantidEngine

    loader = DoubleLoader(monkeypatch)
    built: list[MantidEngine] = []

    def build(scripts: dict[str, str], instrument: str = "ISIS_Event", double_env: dict | None = None, **keys):
        loader.load(**(double_env or {}))
        for role, code in scripts.items():
            (tmp_path / f"reduce_{instrument}_live_{role}.py").write_text(textwrap.dedent(code))
        config = Config(instrument=instrument, engine="mantid", script_dir=str(tmp_path), **keys)
        loaded = load_scripts(tmp_path, config.instrument_info().short_name)
        built.append(MantidEngine(config))
        events: queue.Queue[EngineEvent] = queue.Queue()
        return built[-1], events, loaded

    yield build
    for each in built:
        assert each.stop(10)
    loader.close()


def last_event(events: queue.Queue) -> EngineEvent:
    """The event that ended the engine; the events before are checked: EngineStarted, then CycleCompleted."""
    assert events.get(timeout=30) == EngineStarted()
    while isinstance(event := events.get(timeout=30), CycleCompleted):
        assert event.duration is None  # Mantid does not say how long a cycle took
    return event


def test_chunk_count_follows_mantids_numbering(engine, caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO", logger="Mantid")
    mantid_engine, events, scripts = engine(
        {"proc": "output = input\n"},
        update_every=0.1,
        run_transition="Stop",
        double_env={"MANTID_DOUBLE_END_RUN_AFTER": "3"},
    )
    mantid_engine.start(scripts, events.put)
    finished = last_event(events)
    assert isinstance(finished, EngineFinished)
    loading = [r.getMessage().split(" at ")[0] for r in caplog.records if "Loading live data chunk" in r.getMessage()]
    assert loading == ["Loading live data chunk 0", "Loading live data chunk 1"]
    # StartLiveData's chunk, then MonitorLiveData's chunks 0 and 1 (the run ended after the third)
    assert mantid_engine.health().chunks == 3


def test_a_failed_cycle_is_counted_and_not_a_completed_chunk(engine):
    mantid_engine, events, scripts = engine(
        {"proc": "output = input\n"}, update_every=0.1, double_env={"MANTID_DOUBLE_FAIL_AFTER": "2"}
    )
    mantid_engine.start(scripts, events.put)
    failed = last_event(events)
    assert isinstance(failed, EngineFailed)
    health = mantid_engine.health()
    # StartLiveData's chunk and MonitorLiveData's chunk 0 completed; chunk 1 failed
    assert (health.chunks, health.errors) == (2, 1)
    assert health.last_error.startswith("MonitorLiveData ended with an error")


def test_first_chunk_script_errors_are_script_errors(engine):
    both = {"proc": "output = input\n", "post_proc": "x = 1\nraise ValueError(f'bad {x}')\n"}
    mantid_engine, events, scripts = engine(both)
    with pytest.raises(ScriptFailed) as info:
        mantid_engine.start(scripts, events.put)
    assert isinstance(info.value, ScriptError)
    summary = str(info.value)
    assert summary.startswith(f"PostProcessingScriptFilename '{scripts.post_proc.path}', line 2: bad 1")
    assert "caused by line 6 in '<string>'" in info.value.details  # Mantid's own text, kept for the log
    mantid_engine.stop(10)
    other, events, scripts = engine({"proc": "output = 42\n"})
    with pytest.raises(ScriptFailed, match=r"ProcessingScriptFilename '.*': Invalid type assigned to 'output'"):
        other.start(scripts, events.put)


def test_a_connection_failure_stays_a_source_error(engine):
    mantid_engine, events, scripts = engine(
        {"proc": "output = input\n"}, double_env={"MANTID_DOUBLE_CONNECT_FAIL": "1"}
    )
    with pytest.raises(SourceError, match="Unable to connect listener"):
        mantid_engine.start(scripts, events.put)


def test_upstreams_names_are_added_to_main_without_replacing(engine, main_module):
    main_module.json = "the entry point's own json"
    mantid_engine, events, scripts = engine({"proc": "output = input\n"}, update_every=0.2)
    mantid_engine.start(scripts, events.put)
    assert main_module.json == "the entry point's own json"
    assert main_module.mtd is main_module.mantid.simpleapi.mtd
    assert main_module.logger.name == "livereduce"
