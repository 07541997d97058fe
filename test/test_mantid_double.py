"""Tests of the strict mantid test double (test/mantid_double), which stands in for Mantid in engine tests."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from mantid_double.harness import DOUBLE_ROOT, ENV_VARS, Double, DoubleLoader, kept_main, wait_until

FAST = 0.1  # UpdateEvery for tests: a cycle every ~0.15 s (50 ms ticks)


@pytest.fixture
def make_double(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Double]]:
    """Factory: import the double with the given MANTID_DOUBLE_* environment; cleans up threads and modules."""
    loader = DoubleLoader(monkeypatch)
    yield loader.load
    loader.close()


@pytest.fixture
def double(make_double: Callable[..., Double]) -> Double:
    """The double with a clean environment (default facility ISIS, no default instrument)."""
    return make_double()


@pytest.fixture
def scripts(tmp_path: Path) -> Callable[[str, str], str]:
    """Write a script file; returns its absolute path."""

    def write(name: str, code: str) -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(code), encoding="utf-8")
        return str(path)

    return write


def sns(double: Double, **overrides: Any) -> dict[str, Any]:
    """Arguments like livereduce passes for POWGEN (after ConfigService.setFacility("SNS"))."""
    double.kernel.ConfigService.setFacility("SNS")
    args: dict[str, Any] = {
        "Instrument": "POWGEN",
        "UpdateEvery": FAST,
        "PreserveEvents": True,
        "AccumulationMethod": "Add",
        "OutputWorkspace": "result",
        "FromNow": False,
        "FromStartOfRun": True,
    }
    args.update(overrides)
    return args


# ---------------------------------------------------------------------------------------------------------------
# kernel


def test_version_and_exports(double: Double) -> None:
    assert double.mantid.__version__ == "6.15.0"
    assert double.mantid.AlgorithmManager is double.api.AlgorithmManager
    assert double.simpleapi.mtd is double.api.mtd


def test_get_instrument_searches_default_facility_then_all(double: Double) -> None:
    config = double.kernel.ConfigService
    assert config.getFacility().name() == "ISIS"
    powgen = config.getInstrument("pg3")
    assert (powgen.name(), powgen.shortName(), powgen.facility().name()) == ("POWGEN", "PG3", "SNS")
    assert powgen.liveListener() == "SNSLiveEventDataListener"
    assert powgen.liveDataAddress() == "bl11a-daq1.sns.gov:31415"
    assert config.getInstrument("SANS2D").liveListener() == "ISISHistoDataListener"
    assert config.getInstrument("SANS2D_EVENT").liveDataAddress() == "NDXSANS2D:10000"
    assert config.getInstrument("EQSANS").name() == "EQ-SANS"
    assert config.getInstrument("cg3").name() == "BIOSANS"
    assert config.getInstrument("ISIS_Histogram").liveDataAddress() == "127.0.0.1:56789"
    assert config.getInstrument("ADARA_FakeEvent").liveListener() == "FakeEventDataListener"
    assert isinstance(powgen, double.kernel.InstrumentInfo)
    assert "POWGEN" in [i.name() for i in config.getFacility("SNS").instruments()]


def test_unknown_instrument_and_facility_raise(double: Double) -> None:
    config = double.kernel.ConfigService
    with pytest.raises(RuntimeError, match="NOSUCH"):
        config.getInstrument("NOSUCH")
    with pytest.raises(RuntimeError, match="Instrument not found"):
        config.getInstrument()
    with pytest.raises(RuntimeError, match="Narnia"):
        config.setFacility("Narnia")
    assert config.getFacility().name() == "ISIS"
    with pytest.raises(TypeError):
        config.getInstrument(3)


def test_default_instrument_and_facility_from_environment(make_double: Callable[..., Double]) -> None:
    double = make_double(MANTID_DOUBLE_DEFAULT_FACILITY="SNS", MANTID_DOUBLE_DEFAULT_INSTRUMENT="NOM")
    config = double.kernel.ConfigService
    assert config.getFacility().name() == "SNS"
    assert config["default.instrument"] == "NOM"
    assert config.getInstrument().name() == "NOMAD"
    config["default.instrument"] = "POWGEN"
    assert config.getString("default.instrument") == "POWGEN"
    assert config.getInstrument("").shortName() == "PG3"
    config.setFacility("HFIR")
    assert config["default.facility"] == "HFIR"
    with pytest.raises(TypeError):
        config["default.instrument"] = 3


def test_bad_default_facility_environment_fails_import(make_double: Callable[..., Double]) -> None:
    with pytest.raises(RuntimeError, match="Narnia"):
        make_double(MANTID_DOUBLE_DEFAULT_FACILITY="Narnia")


def test_usage_service(double: Double) -> None:
    usage = double.kernel.UsageService
    usage.setApplicationName("livereduce")
    assert usage.getApplicationName() == "livereduce"


# ---------------------------------------------------------------------------------------------------------------
# logging


def test_framework_messages_need_log_to_python(double: Double, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    double.start(**sns(double, UpdateEvery=0))
    assert not [r for r in caplog.records if r.name == "Mantid"]
    assert double.logging.configured_level is None
    double.logging.log_to_python("information")
    assert double.logging.configured_level == "information"
    assert logging.getLogger("Mantid").level == logging.INFO
    double.start(**sns(double, UpdateEvery=0))
    assert "StartLiveData started" in [r.getMessage() for r in caplog.records if r.name == "Mantid"]
    with pytest.raises(ValueError, match="verbose"):
        double.logging.log_to_python("verbose")


# ---------------------------------------------------------------------------------------------------------------
# strictness


def test_unknown_property_raises_value_error_naming_it(double: Double) -> None:
    with pytest.raises(ValueError, match="spectra"):
        double.start(**sns(double, spectra=[1, 2]))
    assert not double.monitors()


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"UpdateEvery": "30"}, "UpdateEvery"),
        ({"UpdateEvery": True}, "UpdateEvery"),
        ({"PreserveEvents": 1}, "PreserveEvents"),
        ({"FromNow": "False"}, "FromNow"),
        ({"AccumulationMethod": 3}, "AccumulationMethod"),
        ({"OutputWorkspace": None}, "OutputWorkspace"),
    ],
)
def test_wrong_type_raises_type_error_naming_property(double: Double, override: dict[str, Any], name: str) -> None:
    with pytest.raises(TypeError, match=name):
        double.start(**sns(double, **override))


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"AccumulationMethod": "Sum"}, "AccumulationMethod"),
        ({"RunTransitionBehavior": "Pause"}, "RunTransitionBehavior"),
        ({"Listener": "MyListener"}, "Listener"),
        ({"Connection": "histo"}, "Connection"),
    ],
)
def test_value_not_allowed_raises_value_error(double: Double, override: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        double.start(**sns(double, **override))


def test_positional_arguments_rejected(double: Double) -> None:
    with pytest.raises(TypeError):
        double.simpleapi.StartLiveData("POWGEN")


@pytest.mark.parametrize(
    "flags",
    [
        {"FromNow": True, "FromStartOfRun": True},
        {"FromNow": False, "FromStartOfRun": False},
        {"FromNow": True, "FromTime": True, "FromStartOfRun": False, "StartTime": "2020-01-01T00:00:00"},
    ],
)
def test_exactly_one_from_option(double: Double, flags: dict[str, bool]) -> None:
    with pytest.raises(RuntimeError, match=r"Please check exactly one of FromNow, FromStartOfRun, FromTime\."):
        double.start(**sns(double, **flags))


def test_from_time_requires_a_valid_start_time(double: Double) -> None:
    with pytest.raises(RuntimeError, match="StartTime"):
        double.start(**sns(double, FromStartOfRun=False, FromTime=True, UpdateEvery=0))
    with pytest.raises(RuntimeError, match="yesterday"):
        double.start(**sns(double, FromStartOfRun=False, FromTime=True, StartTime="yesterday", UpdateEvery=0))
    double.start(**sns(double, FromStartOfRun=False, FromTime=True, StartTime="2010-09-14T04:20:12.95", UpdateEvery=0))
    assert "result" in double.api.mtd


def test_unknown_instrument_and_instrument_of_other_facility(double: Double) -> None:
    with pytest.raises(ValueError, match="NOSUCH"):
        double.start(**sns(double, Instrument="NOSUCH"))
    double.kernel.ConfigService.setFacility("ISIS")
    with pytest.raises(ValueError, match=r"POWGEN.*setFacility"):
        double.start(Instrument="POWGEN", OutputWorkspace="result", UpdateEvery=0)
    with pytest.raises(ValueError, match="full instrument name"):
        double.start(**sns(double, Instrument="PG3"))
    with pytest.raises(RuntimeError, match="Instrument"):
        double.start(OutputWorkspace="result", UpdateEvery=0)


def test_listener_properties_only_for_histogram_listener(double: Double) -> None:
    with pytest.raises(ValueError, match="PeriodList"):
        double.start(**sns(double, PeriodList=[1, 3]))
    with pytest.raises(ValueError, match="SpectraList"):
        double.start(**sns(double, SpectraList=[1, 2]))
    double.kernel.ConfigService.setFacility("TEST_LIVE")
    histo = {"Instrument": "ISIS_Histogram", "AccumulationMethod": "Replace", "OutputWorkspace": "h", "UpdateEvery": 0}
    with pytest.raises(TypeError, match="PeriodList"):
        double.start(**histo, PeriodList=1)
    with pytest.raises(TypeError, match="PeriodList"):
        double.start(**histo, PeriodList=[1, "3"])
    with pytest.raises(ValueError, match="PeriodList"):
        double.start(**histo, PeriodList=[0])
    double.start(**histo, PeriodList=[1, 3], SpectraList=[1, 2, 3])
    assert double.api.mtd["h"].getNumberHistograms() == 3
    # the Listener override decides too
    double.kernel.ConfigService.setFacility("SNS")
    double.start(
        **sns(double, Listener="ISISHistoDataListener", AccumulationMethod="Replace", UpdateEvery=0), PeriodList=[2]
    )


def test_add_is_rejected_for_histogram_listeners(double: Double) -> None:
    double.kernel.ConfigService.setFacility("TEST_LIVE")
    with pytest.raises(RuntimeError, match="produces histograms"):
        double.start(Instrument="ISIS_Histogram", OutputWorkspace="h", UpdateEvery=0)


def test_post_processing_needs_a_distinct_accumulation_workspace(
    double: Double, scripts: Callable[[str, str], str]
) -> None:
    post = scripts("post.py", "output = input.clone()\n")
    with pytest.raises(RuntimeError, match="Must specify the AccumulationWorkspace"):
        double.start(**sns(double, PostProcessingScriptFilename=post))
    with pytest.raises(RuntimeError, match="must be different than the OutputWorkspace"):
        double.start(**sns(double, PostProcessingScriptFilename=post, AccumulationWorkspace="result"))
    with pytest.raises(RuntimeError, match="Only specify one"):
        double.start(**sns(double, ProcessingScript="pass", ProcessingScriptFilename=post))


def test_script_file_must_be_an_existing_str_path(double: Double, tmp_path: Path) -> None:
    missing = tmp_path / "reduce_PG3_live_proc.py"
    with pytest.raises(ValueError, match=r"reduce_PG3_live_proc\.py"):
        double.start(**sns(double, ProcessingScriptFilename=str(missing)))
    missing.write_text("output = input\n", encoding="utf-8")
    with pytest.raises(TypeError, match="ProcessingScriptFilename"):
        double.start(**sns(double, ProcessingScriptFilename=missing))  # a Path, not a str
    double.start(**sns(double, ProcessingScriptFilename=str(missing), UpdateEvery=0))


def test_duplicate_workspace_names_while_running(double: Double, scripts: Callable[[str, str], str]) -> None:
    post = scripts("post.py", "output = input.clone()\n")
    double.start(**sns(double, PostProcessingScriptFilename=post, AccumulationWorkspace="acc_one"))
    with pytest.raises(RuntimeError, match="Another MonitorLiveData thread is running with the same OutputWorkspace"):
        double.start(**sns(double))
    with pytest.raises(
        RuntimeError, match="Another MonitorLiveData thread is running with the same AccumulationWorkspace"
    ):
        double.start(
            **sns(double, OutputWorkspace="other", PostProcessingScriptFilename=post, AccumulationWorkspace="acc_one")
        )
    double.start(**sns(double, OutputWorkspace="other"))  # distinct names: a second session is fine
    assert len(double.monitors()) == 2


def test_connection_failure(make_double: Callable[..., Double]) -> None:
    double = make_double(MANTID_DOUBLE_CONNECT_FAIL="1")
    with pytest.raises(RuntimeError, match=r"Unable to connect listener \[SNSLiveEventDataListener\]"):
        double.start(**sns(double))
    assert not double.monitors()


def test_bad_address(double: Double) -> None:
    with pytest.raises(RuntimeError, match="invalid address"):
        double.start(**sns(double, Address="no port"))
    double.start(**sns(double, Address="localhost:31415", UpdateEvery=0))


# ---------------------------------------------------------------------------------------------------------------
# normal operation


def test_run_with_processing_and_post_processing(
    double: Double, scripts: Callable[[str, str], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="Mantid")
    double.logging.log_to_python("information")
    proc = scripts(
        "proc.py",
        """
        from mantid.simpleapi import mtd

        assert output == "__anonymous_livedata_input_result", output
        assert input.name() == output and output in mtd
        assert input.getNumberHistograms() == 10 and input.blocksize() == 20
        # output stays the chunk's name: the chunk itself is the result
        """,
    )
    post = scripts(
        "post.py",
        """
        from mantid.simpleapi import CloneWorkspace, mtd

        assert output == "result", output
        assert input.name().startswith("accumulation_")
        assert "__anonymous_livedata_input_result" not in mtd
        CloneWorkspace(InputWorkspace=input, OutputWorkspace=output)
        """,
    )
    mtd = double.api.mtd
    accumulation = mtd.unique_name(prefix="accumulation_")
    double.start(
        **sns(
            double,
            ProcessingScriptFilename=proc,
            PostProcessingScriptFilename=post,
            AccumulationWorkspace=accumulation,
        )
    )
    # StartLiveData returned after the first chunk
    assert mtd["result"].counts.sum() == 200.0
    assert mtd.getObjectNames() == sorted([accumulation, "result"])
    monitor = double.monitors()[0]
    assert monitor.name() == "MonitorLiveData"
    assert monitor.isRunning()
    assert not monitor.isExecuted()
    assert monitor.getProperty("UpdateEvery").value == FAST
    assert monitor.getProperty("OutputWorkspace").valueAsStr == "result"
    assert monitor.getProperty("AccumulationWorkspace").valueAsStr == accumulation
    assert monitor.getProperty("OutputWorkspace").value is mtd["result"]
    wait_until(lambda: monitor.double_cycles >= 3, "three MonitorLiveData cycles")
    wait_until(lambda: mtd["result"].counts[0, 0] >= 4.0, "the output to show four accumulated chunks")
    messages = [r.getMessage() for r in caplog.records if r.name == "Mantid"]
    assert any(m.startswith("Loading live data chunk 0 at ") for m in messages)
    monitor.cancel()
    wait_until(lambda: not monitor.isRunning(), "cancel", timeout=1.0)
    assert not monitor.isExecuted()
    assert not double.monitors()
    assert "result" in mtd  # workspaces stay after a cancel
    assert double.api.AlgorithmManager.newestInstanceOf("MonitorLiveData") is monitor


def test_cycles_start_to_start_and_cancel_all(double: Double) -> None:
    double.start(**sns(double, UpdateEvery=0.3))
    monitor = double.monitor()
    first = wait_until(lambda: monitor.double_cycles >= 1, "first cycle")
    assert first > 0.2
    double.api.AlgorithmManager.cancelAll()
    wait_until(lambda: not monitor.isRunning(), "cancelAll", timeout=1.0)


def test_update_every_zero_runs_one_chunk_only(double: Double) -> None:
    double.start(**sns(double, UpdateEvery=0))
    assert double.api.mtd["result"].counts.sum() == 200.0
    assert double.api.AlgorithmManager.newestInstanceOf("MonitorLiveData") is None


@pytest.mark.parametrize(("method", "spectra"), [("Replace", 10), ("Append", None)])
def test_replace_and_append(double: Double, method: str, spectra: int | None) -> None:
    double.start(**sns(double, AccumulationMethod=method))
    monitor = double.monitor()
    wait_until(lambda: monitor.double_cycles >= 2, "two cycles")
    monitor.cancel()
    wait_until(lambda: not monitor.isRunning(), "cancel")
    result = double.api.mtd["result"]
    if spectra is None:
        assert result.getNumberHistograms() == 10 * (monitor.double_cycles + 1)
    else:
        assert result.getNumberHistograms() == spectra
        assert result.counts.max() == 1.0


def test_script_output_contract(double: Double, scripts: Callable[[str, str], str]) -> None:
    bad = scripts("bad.py", "output = 42\n")
    with pytest.raises(RuntimeError, match="Invalid type assigned to 'output'"):
        double.start(**sns(double, ProcessingScriptFilename=bad))
    missing = scripts("missing.py", "output = 'nowhere'\n")
    with pytest.raises(RuntimeError, match="nowhere"):
        double.start(**sns(double, ProcessingScriptFilename=missing))
    doubled = scripts("double.py", "output = input.clone()\noutput.counts *= 2\n")
    double.start(**sns(double, ProcessingScriptFilename=doubled, UpdateEvery=0))
    assert double.api.mtd["result"].counts.max() == 2.0
    double.start(**sns(double, ProcessingScript="output = input", OutputWorkspace="inline", UpdateEvery=0))
    assert "inline" in double.api.mtd


def test_script_error_in_first_chunk_raises_and_launches_nothing(
    double: Double, scripts: Callable[[str, str], str]
) -> None:
    broken = scripts("broken.py", "1 / 0\n")
    with pytest.raises(RuntimeError, match="division by zero") as info:
        double.start(**sns(double, ProcessingScriptFilename=broken))
    assert info.value.__cause__ is None  # Mantid's RuntimeError carries only the text
    assert not double.monitors()
    assert double.api.mtd.getObjectNames() == []  # only the hidden chunk stays, as in Mantid


def test_script_error_later_ends_monitor_live_data(
    double: Double, scripts: Callable[[str, str], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="Mantid")
    double.logging.log_to_python("information")
    proc = scripts(
        "proc.py", "from mantid.simpleapi import mtd\nif 'boom' in mtd:\n    raise ValueError('bad chunk')\n"
    )
    double.start(**sns(double, ProcessingScriptFilename=proc))
    monitor = double.monitor()
    double.api.mtd.addOrReplace("boom", double.api.Workspace([[1.0]]))
    wait_until(lambda: not monitor.isRunning(), "the script error to end MonitorLiveData")
    assert not monitor.isExecuted()
    assert isinstance(monitor.double_error, RuntimeError)
    errors = [r.getMessage() for r in caplog.records if r.name == "Mantid" and r.levelno == logging.ERROR]
    assert any(m.startswith("Error in execution of algorithm MonitorLiveData: bad chunk") for m in errors)
    assert "While processing chunk:" not in errors  # MonitorLiveData runs LoadLiveData with logging off
    assert "result" in double.api.mtd


# ---------------------------------------------------------------------------------------------------------------
# RunPythonScript: globals are __main__'s, input/output are locals of PyExec


@pytest.fixture
def main_module() -> Iterator[ModuleType]:
    """``__main__`` (the scripts' globals), restored after the test."""
    with kept_main() as main:
        yield main


def test_scripts_see_main_not_the_simpleapi_of_the_wrapper(
    double: Double, scripts: Callable[[str, str], str], main_module: ModuleType
) -> None:
    uses_simpleapi = scripts("clone.py", "CloneWorkspace(InputWorkspace=input, OutputWorkspace=output)\n")
    with pytest.raises(RuntimeError, match="name 'CloneWorkspace' is not defined"):
        double.start(**sns(double, ProcessingScriptFilename=uses_simpleapi, UpdateEvery=0))
    main_module.site_factor = 3.0
    uses_main = scripts(
        "main.py",
        """
        global seen
        seen = (input.name(), output)
        output = input.clone()
        output.counts *= site_factor
        """,
    )
    double.start(**sns(double, ProcessingScriptFilename=uses_main, UpdateEvery=0))
    assert double.api.mtd["result"].counts.max() == 3.0
    assert main_module.seen == ("__anonymous_livedata_input_result", "__anonymous_livedata_input_result")
    assert not hasattr(main_module, "input")  # locals of PyExec, not globals
    assert not hasattr(main_module, "CloneWorkspace")  # the wrapper's import went into its locals


def test_errors_read_like_mantids_python_exception(double: Double, scripts: Callable[[str, str], str]) -> None:
    broken = scripts("broken.py", "x = 1\n\nraise ValueError(f'bad chunk {x}')\n")
    with pytest.raises(RuntimeError) as info:
        double.start(**sns(double, ProcessingScriptFilename=broken))
    # the wrapper: 4 lines, the script's 3 lines (line 3 -> 7), return, the call (line 9)
    assert str(info.value) == "bad chunk 1\n  at line 9 in '<string>'\n  caused by line 7 in '<string>'"
    assert double.mantid._algorithms.wrap_script("a\nb\n").splitlines()[4:6] == ["        a", "        b"]
    empty = scripts("empty.py", "")
    with pytest.raises(RuntimeError, match="Python script is empty"):
        double.start(**sns(double, ProcessingScriptFilename=empty))


def test_step_failure_is_logged_by_load_live_data_inside_start_live_data(
    double: Double, scripts: Callable[[str, str], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="Mantid")
    double.logging.log_to_python("information")
    post = scripts("post.py", "raise KeyError('x')\n")
    accumulation = double.api.mtd.unique_name(prefix="accumulation_")
    with pytest.raises(RuntimeError, match="'x'"):
        double.start(**sns(double, PostProcessingScriptFilename=post, AccumulationWorkspace=accumulation))
    messages = [r.getMessage() for r in caplog.records if r.name == "Mantid"]
    assert "Performing post-processing using RunPythonScript" in messages
    assert "While post processing:" in messages
    assert "While processing chunk:" not in messages


def test_none_output_falls_back_to_the_ads(double: Double, scripts: Callable[[str, str], str]) -> None:
    mtd = double.api.mtd
    in_place = scripts("in_place.py", "input.counts *= 5\noutput = None\n")
    double.start(**sns(double, ProcessingScriptFilename=in_place, UpdateEvery=0))
    assert mtd["result"].counts.max() == 5.0  # proc: the (modified) chunk passes through
    writes = scripts(
        "writes.py",
        "from mantid.simpleapi import CloneWorkspace\nCloneWorkspace(input, 'result')\noutput = None\n",
    )
    accumulation = mtd.unique_name(prefix="accumulation_")
    double.start(**sns(double, PostProcessingScriptFilename=writes, AccumulationWorkspace=accumulation, UpdateEvery=0))
    assert mtd["result"] is not mtd[accumulation]  # post: OutputWorkspace taken from the ADS
    mtd.clear()
    nothing = scripts("nothing.py", "output = None\n")
    with pytest.raises(RuntimeError, match="result"):
        double.start(
            **sns(double, PostProcessingScriptFilename=nothing, AccumulationWorkspace=accumulation, UpdateEvery=0)
        )


# ---------------------------------------------------------------------------------------------------------------
# data algorithms


def test_upstream_test_scripts_run_unchanged(double: Double) -> None:
    test_dir = Path(__file__).resolve().parent
    double.kernel.ConfigService.setFacility("TEST_LIVE")
    histogram = {
        "Instrument": "ISIS_Histogram",
        "AccumulationMethod": "Replace",
        "OutputWorkspace": "result",
        "FromNow": False,
        "FromStartOfRun": True,
        "PeriodList": [1, 3],
        "UpdateEvery": 0,
    }
    double.start(**histogram, ProcessingScriptFilename=str(test_dir / "reduce_ISIS_Histogram_live_proc.py"))
    result = double.api.mtd["result"]
    # SumSpectra: 10 spectra of ones over 10000..20000 us in 20 bins -> 1 spectrum; Rebin 300,20,17000 us
    assert result.getNumberHistograms() == 1
    assert result.readX(0)[[0, 1, -1]].tolist() == [300.0, 320.0, 17000.0]
    assert result.blocksize() == 835
    assert result.counts.sum() == pytest.approx(10 * 14)  # the 14 bins of 500 us below 17000 us
    post = str(test_dir / "postprocessing" / "reduce_ISIS_Histogram_live_post_proc.py")
    double.start(**histogram, PostProcessingScriptFilename=post, AccumulationWorkspace="accumulation_x")
    assert double.api.mtd["result"].counts.sum() == 200.0
    double.start(**sns(double, ProcessingScriptFilename=str(test_dir / "reduce_ISIS_Event_live_proc.py")))
    assert double.monitors()


def test_upstreams_rename_workspace_post_processing(double: Double, scripts: Callable[[str, str], str]) -> None:
    # upstream's test/postprocessing script before its accumulation name became unique (positional arguments)
    post = scripts(
        "post.py", 'from mantid.simpleapi import RenameWorkspace\n\nRenameWorkspace("accumulation", "result")\n'
    )
    double.start(**sns(double, PostProcessingScriptFilename=post, AccumulationWorkspace="accumulation"))
    mtd = double.api.mtd
    assert mtd["result"] is mtd["accumulation"]  # LoadLiveData stores both of its outputs again
    monitor = double.monitor()
    wait_until(lambda: monitor.double_cycles >= 2, "two cycles")
    monitor.cancel()
    wait_until(lambda: not monitor.isRunning(), "cancel")
    assert monitor.double_error is None
    mtd.clear()
    with pytest.raises(RuntimeError, match="not found in the Analysis Data Service"):
        double.start(**sns(double, PostProcessingScriptFilename=post, AccumulationWorkspace="accumulation_abcde"))


def test_algorithms_are_strict(double: Double) -> None:
    api, simpleapi = double.api, double.simpleapi
    api.mtd.addOrReplace("ws", api.Workspace(np.ones((3, 4)), [0.0, 10.0, 20.0, 30.0, 40.0]))
    assert sorted(double.mantid._algorithms.ALGORITHMS) == sorted(
        name
        for name in simpleapi.__all__
        if name[0].isupper()
        and name not in {"AlgorithmManager", "AnalysisDataService", "ConfigService", "StartLiveData", "Workspace"}
    )
    with pytest.raises(ValueError, match="Binning"):
        simpleapi.Rebin(InputWorkspace="ws", OutputWorkspace="out", Params="0,5,40", Binning=1)
    with pytest.raises(RuntimeError, match="Params: Mandatory property not set"):
        simpleapi.Rebin(InputWorkspace="ws", OutputWorkspace="out")
    with pytest.raises(TypeError, match="OutputWorkspace"):
        simpleapi.SumSpectra(InputWorkspace="ws")
    with pytest.raises(TypeError, match="FullBinsOnly"):
        simpleapi.Rebin(InputWorkspace="ws", OutputWorkspace="out", Params="5", FullBinsOnly="yes")
    with pytest.raises(ValueError, match="not found in the Analysis Data Service"):
        simpleapi.SumSpectra(InputWorkspace="missing", OutputWorkspace="out")
    with pytest.raises(ValueError, match="Params"):
        simpleapi.Rebin(InputWorkspace="ws", OutputWorkspace="out", Params="0,5")
    with pytest.raises(ValueError, match="Params"):
        simpleapi.Rebin(InputWorkspace="ws", OutputWorkspace="out", Params="0,abc,40")
    with pytest.raises(TypeError, match="positional"):
        simpleapi.SumSpectra("ws", "out", 1)
    with pytest.raises(TypeError, match="multiple values"):
        simpleapi.SumSpectra("ws", InputWorkspace="ws", OutputWorkspace="out")
    with pytest.raises(RuntimeError, match="EndWorkspaceIndex"):
        simpleapi.SumSpectra(InputWorkspace="ws", OutputWorkspace="out", StartWorkspaceIndex=2, EndWorkspaceIndex=1)
    with pytest.raises(RuntimeError, match="must be different"):
        simpleapi.RenameWorkspace("ws", "ws")
    assert "out" not in api.mtd


def test_algorithm_results(double: Double) -> None:
    api, simpleapi = double.api, double.simpleapi
    api.mtd.addOrReplace("ws", api.Workspace(np.arange(12.0).reshape(3, 4), [0.0, 10.0, 20.0, 30.0, 40.0]))
    summed = simpleapi.SumSpectra("ws", "sum", StartWorkspaceIndex=1)
    assert summed is api.mtd["sum"]
    assert summed.counts.tolist() == [[12.0, 14.0, 16.0, 18.0]]
    rebinned = simpleapi.Rebin(InputWorkspace=summed, OutputWorkspace="rebinned", Params=[5.0, 10.0, 35.0])
    assert rebinned.readX(0).tolist() == [5.0, 15.0, 25.0, 35.0]
    assert rebinned.counts.tolist() == [[13.0, 15.0, 17.0]]  # half of each neighbour
    assert double.mantid._algorithms.rebin_edges([0.0, 10.0, 32.0], np.array([0.0])).tolist() == [0, 10, 20, 32]
    assert double.mantid._algorithms.rebin_edges([0.0, 10.0, 21.0], np.array([0.0])).tolist() == [0, 10, 21]
    assert double.mantid._algorithms.rebin_edges([0, 10, 28], np.array([0.0]), True).tolist() == [0, 10, 20]
    assert double.mantid._algorithms.rebin_edges([1.0, -1.0, 8.0], np.array([0.0])).tolist() == [1, 2, 4, 8]
    assert simpleapi.Rebin("rebinned", "whole", "30").readX(0).tolist() == [5.0, 35.0]
    simpleapi.RenameWorkspace("rebinned", "renamed")
    assert "rebinned" not in api.mtd
    assert api.mtd["renamed"].name() == "renamed"
    with pytest.raises(RuntimeError, match="already exists"):
        simpleapi.RenameWorkspace("renamed", "ws", OverwriteExisting=False)
    clone = simpleapi.CloneWorkspace("ws", "copy")
    assert clone is not api.mtd["ws"]
    assert clone.counts.tolist() == api.mtd["ws"].counts.tolist()
    assert simpleapi.DeleteWorkspace("copy") is None
    assert "copy" not in api.mtd
    algorithm = api.AlgorithmManager.create("SumSpectra")
    algorithm.setProperty("InputWorkspace", "ws")
    algorithm.setProperty("OutputWorkspace", "low_level")
    assert algorithm.execute()
    assert api.mtd["low_level"].getNumberHistograms() == 1


# ---------------------------------------------------------------------------------------------------------------
# injected failures and run transitions


def test_failure_injection(make_double: Callable[..., Double], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="Mantid")
    double = make_double(MANTID_DOUBLE_FAIL_AFTER="2")
    double.logging.log_to_python("information")
    double.start(**sns(double))
    monitor = double.monitor()
    wait_until(lambda: not monitor.isRunning(), "the injected failure")
    assert monitor.double_cycles == 1
    assert not monitor.isExecuted()
    assert str(monitor.double_error) == "Lost connection to the DAS"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "Error in execution of algorithm MonitorLiveData: Lost connection to the DAS" in errors


def test_slow_cancel_keeps_names_busy(make_double: Callable[..., Double]) -> None:
    delay = 0.5
    double = make_double(MANTID_DOUBLE_CANCEL_DELAY=str(delay))
    double.start(**sns(double))
    monitor = double.monitor()
    monitor.cancel()
    assert monitor.isRunning()
    with pytest.raises(RuntimeError, match="Another MonitorLiveData"):
        double.start(**sns(double))
    took = wait_until(lambda: not monitor.isRunning(), "the slow cancel")
    assert took >= delay - 0.1
    double.start(**sns(double))  # the names are free again
    assert len(double.monitors()) == 1


def test_end_run_with_stop_ends_normally(make_double: Callable[..., Double]) -> None:
    double = make_double(MANTID_DOUBLE_END_RUN_AFTER="3")
    double.start(**sns(double, RunTransitionBehavior="Stop"))
    monitor = double.monitor()
    wait_until(lambda: not monitor.isRunning(), "RunTransitionBehavior=Stop to end MonitorLiveData")
    assert monitor.isExecuted()
    assert monitor.double_error is None
    assert monitor.double_cycles == 2  # chunk 1 came from StartLiveData
    assert double.api.mtd["result"].counts[0, 0] == 3.0


def test_end_run_with_rename_and_restart(make_double: Callable[..., Double]) -> None:
    double = make_double(MANTID_DOUBLE_END_RUN_AFTER="2")
    double.start(**sns(double, RunTransitionBehavior="Rename"))
    mtd = double.api.mtd
    wait_until(lambda: "result_1" in mtd, "the run-1 clone")
    assert mtd["result_1"].counts[0, 0] == 2.0
    double.api.AlgorithmManager.cancelAll()
    wait_until(lambda: not double.monitors(), "cancel")

    double.start(**sns(double, OutputWorkspace="restart", RunTransitionBehavior="Restart"))
    monitor = double.monitor()
    wait_until(lambda: monitor.double_cycles >= 3, "three cycles")
    monitor.cancel()
    wait_until(lambda: not monitor.isRunning(), "cancel")
    # chunks: 1 (start) 2 [EndRun] | 3 replaces, 4 [EndRun] | 5 replaces ...
    assert mtd["restart"].counts[0, 0] <= 2.0
    assert "restart_1" not in mtd


# ---------------------------------------------------------------------------------------------------------------
# algorithm manager, ADS, low-level API


def test_shutdown_raises(double: Double) -> None:
    with pytest.raises(AssertionError, match=r"must not call AlgorithmManager\.shutdown\(\)"):
        double.mantid.AlgorithmManager.shutdown()


def test_unmanaged_start_live_data_allowed_values(double: Double) -> None:
    algorithm = double.api.AlgorithmManager.createUnmanaged("StartLiveData")
    with pytest.raises(RuntimeError, match="initialize"):
        algorithm.getProperty("AccumulationMethod")
    algorithm.initialize()
    assert algorithm.getProperty("AccumulationMethod").allowedValues == ["Add", "Replace", "Append"]
    assert algorithm.getProperty("RunTransitionBehavior").allowedValues == ["Restart", "Stop", "Rename"]
    assert algorithm.getProperty("AccumulationMethod").value == "Add"
    assert double.api.AlgorithmManager.newestInstanceOf("StartLiveData") is None  # unmanaged
    with pytest.raises(RuntimeError, match="not registered"):
        double.api.AlgorithmManager.create("NoSuchAlgorithm")


def test_low_level_start_and_monitor_handle(double: Double) -> None:
    double.kernel.ConfigService.setFacility("SNS")
    algorithm = double.api.AlgorithmManager.create("StartLiveData")
    algorithm.setProperty("Instrument", "NOMAD")
    algorithm.setProperty("UpdateEvery", 5)
    algorithm.setProperty("OutputWorkspace", "low")
    with pytest.raises(ValueError, match="LastTimeStamp"):
        algorithm.setProperty("LastTimeStamp", "now")
    assert algorithm.execute()
    assert algorithm.isExecuted()
    assert algorithm.getProperty("LastTimeStamp").value
    monitor = algorithm.getProperty("MonitorLiveData").value
    assert monitor in double.monitors()
    monitor.cancel()
    wait_until(lambda: not monitor.isRunning(), "cancel")


def test_analysis_data_service(double: Double) -> None:
    mtd = double.api.mtd
    workspace = double.api.Workspace([[1.0, 2.0], [3.0, 4.0]])
    mtd.addOrReplace("ws", workspace)
    assert mtd["ws"] is workspace
    assert workspace.name() == "ws"
    assert mtd.doesExist("ws")
    assert "ws" in mtd
    mtd.addOrReplace("__hidden", workspace.clone())
    assert mtd.getObjectNames() == ["ws"]
    name = mtd.unique_name(prefix="accumulation_")
    assert name.startswith("accumulation_")
    assert len(name) == len("accumulation_") + 5
    assert name not in mtd
    with pytest.raises(KeyError, match="nope"):
        mtd["nope"]
    with pytest.raises(TypeError):
        mtd.addOrReplace("x", [[1.0]])
    mtd.remove("ws")
    mtd.remove("ws")  # absent: no error, as in Mantid
    mtd.clear()
    assert mtd.size() == 0


# ---------------------------------------------------------------------------------------------------------------
# the record file


def test_record_file_in_process(make_double: Callable[..., Double], tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    double = make_double(MANTID_DOUBLE_RECORD=str(record))
    args = sns(double, UpdateEvery=0)
    double.start(**args)
    with pytest.raises(ValueError, match="spectra"):
        double.start(**args, spectra=[1])
    lines = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    assert [line["arguments"] for line in lines] == [args, {**args, "spectra": [1]}]
    assert all(line["algorithm"] == "StartLiveData" and line["via"] == "simpleapi" for line in lines)
    assert all(line["properties"] == line["arguments"] for line in lines)
    assert abs(lines[0]["time"] - time.time()) < 60


def test_record_file_from_subprocess(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    code = textwrap.dedent(
        """
        from mantid.simpleapi import StartLiveData, mtd
        StartLiveData(Instrument="ISIS_Histogram", UpdateEvery=0, AccumulationMethod="Replace",
                      OutputWorkspace="result", FromNow=False, FromStartOfRun=True, PeriodList=[1, 3])
        assert mtd["result"].getNumberHistograms() == 10
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env |= {
        "PYTHONPATH": str(DOUBLE_ROOT),
        "MANTID_DOUBLE_RECORD": str(record),
        "MANTID_DOUBLE_DEFAULT_FACILITY": "TEST_LIVE",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(text) for text in record.read_text(encoding="utf-8").splitlines()]
    assert line["arguments"] == {
        "Instrument": "ISIS_Histogram",
        "UpdateEvery": 0,
        "AccumulationMethod": "Replace",
        "OutputWorkspace": "result",
        "FromNow": False,
        "FromStartOfRun": True,
        "PeriodList": [1, 3],
    }
    assert line["pid"] != os.getpid()
