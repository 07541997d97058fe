"""End to end: the real SANS2D events served by the fake SMS (a subprocess) and reduced by the daemon (a
subprocess) through SNSLiveEventDataListener, checked against h5py + numpy on the file.

ADARA carries times of flight in units of 100 ns [NP 5.1], so the reference TOFs are the file's rounded to
0.1 µs; everything else (pixel ids, pulse times, event order) is exact."""

from __future__ import annotations

import re
import signal
import socket

import numpy as np
import scipp as sc

from conftest import SANS2D_EVENTS, FakeSms, Sans2dReference, poll_until

PULSE_CHARGE_PC = 12340.0
TOF_EDGES = np.linspace(0.0, 100_000.0, 101)

SAVE = """
    import os
    from pathlib import Path
    import scipp as sc
    out = Path(os.environ["LIVEREDUCE_OUTPUT_DIR"])
    out.mkdir(exist_ok=True)
    sc.io.save_hdf5(input, out / "result.h5")
    for name, kept in list(mtd.items()):
        if name.startswith("result_"):
            sc.io.save_hdf5(kept, out / f"{name}.h5")
    output = input
"""

HISTOGRAMS = """
    import scipp as sc
    from livereduce.engines.scipp.chunk import flat_events
    events = flat_events(input)
    monitors = input.coords["monitors"].value if "monitors" in input.coords else {}
    output = sc.DataGroup({
        "pixels": events.hist(event_id=sc.arange("event_id", 0, 130_001, unit=None, dtype="int32")),
        "tof": events.hist(event_time_offset=sc.linspace("event_time_offset", 0.0, 100_000.0, 101, unit="us")),
        "charge": input.coords["proton_charge"].sum(),
        "monitor1": sc.scalar(float(monitors["monitor1"].sizes["event"]) if "monitor1" in monitors else 0.0),
    })
"""


def live(port: int, **keys: object) -> dict:
    return {
        "listener": "SNSLiveEventDataListener",
        "address": f"127.0.0.1:{port}",
        "engine": "scipp",
        "update_every": 0.2,
        "run_transition": "Stop",
        **keys,
    }


def quantised(tof_us: np.ndarray) -> np.ndarray:
    return np.float32(np.rint(tof_us.astype(np.float64) * 10.0) / 10.0)


def finished(daemon, config: dict, scripts: dict[str, str], name: str = "result.h5") -> sc.DataArray | sc.DataGroup:
    run = daemon(config, scripts).finish()
    assert run.returncode == 0, run.log
    assert "Traceback" not in run.log
    return sc.io.load_hdf5(run.workdir / "out" / name)


def check_pulses(accumulation: sc.DataArray, reference: Sans2dReference, first: int = 0, last: int = 300) -> None:
    """The accumulation holds exactly pulses [first, last) of the file, every event in order."""
    events = accumulation.bins.concat().value
    part = reference.pulses(first, last)
    np.testing.assert_array_equal(accumulation.coords["event_time_zero"].values, reference.pulse_times[first:last])
    np.testing.assert_array_equal(events.coords["event_id"].values, reference.event_id[part])
    np.testing.assert_array_equal(
        events.coords["event_time_offset"].values, quantised(reference.event_time_offset[part])
    )


def test_sans2d_through_the_fake_sms_every_event_exact(daemon, fake_sms, sans2d_reference: Sans2dReference):
    """Chunk-file boundaries every 50 pulses (RUN_EOF/RUN_BOF and the repeated prologue) and 10 malformed
    packets inside the run change nothing."""
    sms = fake_sms("--speed", "0", "--pulse-charge", str(PULSE_CHARGE_PC), "--eof-every", "50", "--corrupt", "10")
    accumulation = finished(daemon, live(sms.port), {"post_proc": SAVE})
    assert accumulation.bins.size().sum().value == SANS2D_EVENTS
    check_pulses(accumulation, sans2d_reference)
    assert accumulation.coords["proton_charge"].sum().value == 300 * PULSE_CHARGE_PC
    assert accumulation.coords["run_number"].value == 1
    assert accumulation.coords["instrument_name"].value == "SANS2D"


def test_histograms_per_pixel_and_tof_and_monitors_equal_numpy(daemon, fake_sms, sans2d_reference: Sans2dReference):
    sms = fake_sms("--speed", "0", "--pulse-charge", str(PULSE_CHARGE_PC), "--monitor-events", "4")
    config = live(sms.port, preserve_events=False)
    result = finished(daemon, config, {"proc": HISTOGRAMS, "post_proc": SAVE})
    np.testing.assert_array_equal(result["pixels"].values, np.bincount(sans2d_reference.event_id, minlength=130_000))
    expected_tof = np.histogram(quantised(sans2d_reference.event_time_offset), TOF_EDGES)[0]
    np.testing.assert_array_equal(result["tof"].values, expected_tof)
    assert result["pixels"].sum().value == SANS2D_EVENTS
    assert result["charge"].value == 300 * PULSE_CHARGE_PC
    assert result["monitor1"].value == 300 * 4


def hello_position(sms: FakeSms) -> int:
    """The pulse the fake SMS's timeline was at when the daemon's hello arrived."""
    line = next(line for line in sms.lines if ": hello " in line)
    return int(line.split(" at pulse ")[1].split()[0])


def test_from_start_of_run_after_connecting_mid_run_gets_the_whole_run(
    daemon, fake_sms, sans2d_reference: Sans2dReference
):
    sms = fake_sms("--speed", "3")
    accumulation = finished(daemon, live(sms.port), {"post_proc": SAVE})
    assert hello_position(sms) > 0, sms.output()  # the run was under way when the daemon connected
    check_pulses(accumulation, sans2d_reference)


def test_now_gets_only_the_later_pulses(daemon, fake_sms, sans2d_reference: Sans2dReference):
    sms = fake_sms("--speed", "3")
    accumulation = finished(daemon, live(sms.port, start="now"), {"post_proc": SAVE})
    first = int(np.searchsorted(sans2d_reference.pulse_times, accumulation.coords["event_time_zero"].values[0]))
    assert 0 < first < 300
    assert abs(first - hello_position(sms)) <= 2, sms.output()
    check_pulses(accumulation, sans2d_reference, first)


def test_a_start_time_gets_exactly_the_pulses_from_it(daemon, fake_sms, sans2d_reference: Sans2dReference):
    sms = fake_sms("--speed", "0", "--eof-every", "100")
    start = str(sans2d_reference.pulse_times[150].astype("datetime64[us]"))  # at or just before pulse 150
    accumulation = finished(daemon, live(sms.port, start=start), {"post_proc": SAVE})
    assert "serving run 1 from pulse 100" in sms.output()  # the SMS rounds back; the listener drops 100..149
    check_pulses(accumulation, sans2d_reference, 150)


def test_dropped_connection_reconnects_and_restarts_at_the_replayed_run(
    daemon, fake_sms, sans2d_reference: Sans2dReference
):
    sms = fake_sms("--speed", "0", "--drop-after", "100")
    process = daemon(live(sms.port), {"post_proc": SAVE})
    run = process.finish()
    assert run.returncode == 0, run.log
    assert f"Connection to the SMS at 127.0.0.1:{sms.port} lost (connection closed by the SMS" in run.log
    assert "dropped after 100 pulses" in sms.output()
    accumulation = sc.io.load_hdf5(run.workdir / "out" / "result.h5")
    assert accumulation.bins.size().sum().value == SANS2D_EVENTS  # not 237,078 plus the first 100 pulses again
    check_pulses(accumulation, sans2d_reference)


def test_pause_and_resume_drop_the_events_between(daemon, fake_sms, sans2d_reference: Sans2dReference):
    sms = fake_sms("--speed", "0", "--pause-at", "50:100")
    run = daemon(live(sms.port), {"post_proc": SAVE}).finish()
    assert run.returncode == 0, run.log
    paused = sans2d_reference.pulses(50, 100)
    logged = sum(int(n) for n in re.findall(r"events dropped at the source: .*?(\d+) paused", run.log))
    assert logged == paused.stop - paused.start
    accumulation = sc.io.load_hdf5(run.workdir / "out" / "result.h5")
    times = accumulation.coords["event_time_zero"].values
    np.testing.assert_array_equal(
        times, np.concatenate([sans2d_reference.pulse_times[:50], sans2d_reference.pulse_times[100:]])
    )
    assert accumulation.bins.size().sum().value == SANS2D_EVENTS - (paused.stop - paused.start)


def test_two_runs_with_rename_keep_each_run(daemon, fake_sms, sans2d_reference: Sans2dReference):
    sms = fake_sms("--speed", "0", "--loops", "2", "--run-number", "7")
    process = daemon(live(sms.port, run_transition="Rename"), {"post_proc": SAVE})
    out = process.workdir / "out"
    poll_until((out / "result_8.h5").is_file, process.log)
    process.send(signal.SIGTERM)
    run = process.finish()
    assert run.returncode == 0, run.log
    assert run.log.count("Run #7 ended. RunTransitionBehavior Rename.") == 1
    assert run.log.count("Run #8 ended. RunTransitionBehavior Rename.") == 1
    first, second = sc.io.load_hdf5(out / "result_7.h5"), sc.io.load_hdf5(out / "result_8.h5")
    assert (first.coords["run_number"].value, second.coords["run_number"].value) == (7, 8)
    check_pulses(first, sans2d_reference)
    assert second.bins.size().sum().value == SANS2D_EVENTS  # Restart: run 8 alone, not run 7 + run 8
    shift = second.coords["event_time_zero"].values[0] - sans2d_reference.pulse_times[0]
    np.testing.assert_array_equal(second.coords["event_time_zero"].values - shift, sans2d_reference.pulse_times)


def test_daemon_started_before_the_sms_retries_until_it_is_there(daemon, fake_sms, sans2d_reference):
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    process = daemon(live(port), {"post_proc": SAVE})
    process.wait_for_log(lambda log: f"cannot connect to the SMS at 127.0.0.1:{port}" in log)
    fake_sms("--speed", "0", port=port)
    run = process.finish()
    assert run.returncode == 0, run.log
    check_pulses(sc.io.load_hdf5(run.workdir / "out" / "result.h5"), sans2d_reference)
