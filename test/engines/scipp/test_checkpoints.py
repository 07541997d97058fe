"""Checkpoints in process: what is written, what a resume restores, what is refused, and a write that fails."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import scipp as sc

from conftest import FakeClock
from livereduce.config import Config
from livereduce.engines.scipp.checkpointing import Checkpointer
from livereduce.engines.scipp.checkpoints import (
    MANIFEST,
    CheckpointStore,
    depends_on,
    metadata_from_group,
    metadata_group,
)
from livereduce.engines.scipp.chunk import RunMetadata, flat_events, log_series, make_chunk, monitor_events
from livereduce.engines.scipp.cycle import LiveDataLoader
from livereduce.engines.scipp.listeners.base import Extracted, Listener, RunStatus, SourcePosition
from livereduce.errors import ConfigError
from livereduce.provenance import origin
from livereduce.scripts import ProcessingScripts, load_script

START = np.datetime64("2026-01-01T00:00:00", "ns")


class Counting(Listener):
    """Chunk n (from 1) holds 3 pulses of 2 events with event_id n; run 7 until ``run_ends_at`` (EndRun), then run
    8. Resumes at ``{"next": n}``."""

    name = "Counting"

    def __init__(self, run_ends_at: int = 0) -> None:
        self.next = 1
        self.run_ends_at = run_ends_at

    def connect(self) -> None:
        return

    def resume_refusal(self, position: SourcePosition) -> str | None:
        return None if isinstance(position.get("next"), int) else f"no chunk {position}"

    def start(self, position: object, resume: SourcePosition | None = None) -> None:
        if resume is not None:
            self.next = resume["next"]

    def extract(self) -> Extracted:
        n = self.next
        self.next += 1
        run = 7 if not self.run_ends_at or n <= self.run_ends_at else 8
        times = START + np.arange(3 * n, 3 * n + 3).astype("timedelta64[s]")
        metadata = RunMetadata(
            run_number=run,
            start_time=START,
            instrument_name="SANS2D",
            logs={"temperature": log_series([(int(times[0].astype(np.int64)), float(n))], "K")},
            properties={"run_title": f"title {run}", "run_end": START},
            monitors={"monitor_1": monitor_events(times[:1].astype(np.int64), np.array([5.0], np.float32))},
        )
        chunk = make_chunk(
            np.full(6, n, np.int32),
            np.arange(6, dtype=np.float32),
            times,
            np.array([0, 2, 4]),
            metadata=metadata,
            proton_charge=np.ones(3),
        )
        status = RunStatus.EndRun if n == self.run_ends_at else RunStatus.Running
        return Extracted(chunk, status, (0, 99), position={"next": n + 1})


def make(tmp_path: Path, listener: Listener, proc: str | None = None, **keys: object) -> LiveDataLoader:
    config = Config(instrument="SANS2D", **keys)
    scripts = {}
    if proc is not None:
        path = tmp_path / "proc.py"
        path.write_text(proc)
        scripts["proc"] = load_script("proc", path)
    scripts.setdefault("post_proc", None)
    post = tmp_path / "post.py"
    post.write_text("output = input\n")
    scripts["post_proc"] = load_script("post_proc", post)
    provenance = origin(config, "scipp", {}, listener.name)
    return LiveDataLoader(
        listener, ProcessingScripts(scripts.get("proc"), scripts["post_proc"]), config, 1 << 24, provenance
    )


def checkpointer(tmp_path: Path, loader: LiveDataLoader, clock: FakeClock) -> Checkpointer:
    return Checkpointer(CheckpointStore(tmp_path / "checkpoints"), 1.0, depends_on(loader.provenance), clock)


def checkpoint(points: Checkpointer, loader: LiveDataLoader, clock: FakeClock) -> None:
    """Make a checkpoint due, write it and wait for it."""
    clock.advance(1.0)
    points.after_cycle(loader)
    assert points._collect(30)
    assert points.state.startswith("written"), points.state


def checkpointed(
    tmp_path: Path, chunks: int = 1, proc: str | None = None, **keys: object
) -> tuple[LiveDataLoader, Checkpointer, FakeClock]:
    """A loader of :class:`Counting` that ran ``chunks`` cycles and wrote one checkpoint, its checkpointer, the
    clock."""
    clock = FakeClock()
    loader = make(tmp_path, Counting(), proc, **keys)
    points = checkpointer(tmp_path, loader, clock)
    for _ in range(chunks):
        loader.run()
    checkpoint(points, loader, clock)
    return loader, points, clock


def ids_of(data: sc.DataArray) -> list[int]:
    return np.bincount(flat_events(data).coords["event_id"].values, minlength=10).tolist()


def test_an_event_accumulation_resumes_where_its_checkpoint_stands_and_files_hold_only_new_pulses(tmp_path):
    first, points, clock = checkpointed(tmp_path, 2)
    first.run()
    checkpoint(points, first, clock)
    saved = first.accumulator.accumulation.copy()
    first.run()  # chunk 4: accumulated, never checkpointed (the process is killed here)
    manifest = json.loads((tmp_path / "checkpoints" / MANIFEST).read_text())
    assert manifest["files"] == ["events-000000000000-000000000006.h5", "events-000000000006-000000000009.h5"]
    assert manifest["position"] == {"next": 4}
    assert manifest["provenance"]["chunks"] == 3

    listener = Counting()
    second = make(tmp_path, listener)
    resumed = checkpointer(tmp_path, second, clock).resume(listener, second, None)
    assert resumed is not None
    assert resumed.position == {"next": 4}
    assert sc.identical(second.accumulator.accumulation, saved)  # events, pulses, logs, properties, monitors
    listener.start("now", resume=resumed.position)
    for _ in range(3):
        second.run()
    assert ids_of(second.accumulator.accumulation) == [0, 6, 6, 6, 6, 6, 6, 0, 0, 0]  # each chunk exactly once
    assert second.provenance.chunks == 6
    assert second.provenance.events == 36
    assert second.provenance.first_position == {"next": 2}


@pytest.mark.parametrize(
    ("proc", "keys"),
    [
        (None, {"preserve_events": False}),  # a histogram over the pixel range, with the run metadata
        (
            "import scipp as sc\n"
            "output = sc.DataGroup({'pixels': input.bins.concat().hist(event_id=10), 'n': sc.scalar(1.0)})\n",
            {},
        ),
        ("output = input.bins.concat().value.bin(event_id=5)\n", {}),  # binned, not by pulse
        ("import scipp as sc\noutput = sc.Dataset({'a': input.bins.concat().hist(event_id=4)})\n", {}),
    ],
    ids=["histogram", "DataGroup", "binned by pixel", "Dataset"],
)
def test_any_accumulation_round_trips_through_a_checkpoint(tmp_path, proc, keys):
    first, _, clock = checkpointed(tmp_path, 3, proc, **keys)
    assert first.accumulator.n_pulses is None
    listener = Counting()
    second = make(tmp_path, listener, proc, **keys)
    assert checkpointer(tmp_path, second, clock).resume(listener, second, None) is not None
    assert sc.identical(second.accumulator.accumulation, first.accumulator.accumulation)


def test_a_new_run_starts_a_lineage_and_removes_the_ended_one_at_its_first_checkpoint(tmp_path):
    clock = FakeClock()
    loader = make(tmp_path, Counting(run_ends_at=2))
    points = checkpointer(tmp_path, loader, clock)
    loader.run()
    loader.run()  # EndRun of run 7
    checkpoint(points, loader, clock)
    directory = tmp_path / "checkpoints"
    ended = json.loads((directory / MANIFEST).read_text())
    assert ended["replace_next"] is True
    assert ended["provenance"]["run_number"] == 7
    loader.run()  # run 8
    checkpoint(points, loader, clock)
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["lineage"] != ended["lineage"]
    assert manifest["provenance"]["run_number"] == 8
    assert sorted(p.name for p in directory.iterdir()) == sorted([MANIFEST, manifest["lineage"]])


def test_a_checkpoint_is_refused_with_the_reason_or_discarded_for_a_fresh_start(tmp_path, caplog):
    first, _, clock = checkpointed(tmp_path, 1, "output = input\n")
    caplog.set_level(logging.INFO)

    changed = make(tmp_path, Counting(), "output = input  # edited\n")
    assert checkpointer(tmp_path, changed, clock).resume(changed.listener, changed, None) is None
    old, new = first.scripts.proc.md5, changed.scripts.proc.md5
    assert f"checkpoint of run 7 not used: proc script changed (md5 {old} -> {new})" in caplog.text
    assert changed.accumulator.accumulation is None

    other = make(tmp_path, Counting(), "output = input\n", accum_method="Append")
    assert checkpointer(tmp_path, other, clock).resume(other.listener, other, None) is None
    assert "checkpoint of run 7 not used: accum_method changed (Add -> Append)" in caplog.text

    same = make(tmp_path, Counting(), "output = input\n")
    assert checkpointer(tmp_path, same, clock).resume(same.listener, same, "SIGHUP") is None
    assert "checkpoint of run 7 discarded: SIGHUP (a new accumulation)" in caplog.text
    assert not (tmp_path / "checkpoints" / MANIFEST).exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda d, m: (d / MANIFEST).write_text("{not json"),
        lambda d, m: (d / MANIFEST).write_text(json.dumps({**m, "format": 99})),
        lambda d, m: (d / MANIFEST).write_text(json.dumps({**m, "files": ["../../etc/passwd"]})),
        lambda d, m: (d / MANIFEST).write_text(json.dumps({**m, "seq": "1"})),
        lambda d, m: (d / MANIFEST).write_text(json.dumps([m])),
        lambda d, m: (d / m["lineage"] / m["files"][0]).unlink(),
        lambda d, m: (d / m["lineage"] / m["files"][0]).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100),
        lambda d, m: (d / m["lineage"] / m["metadata_file"]).write_bytes(b""),
    ],
    ids=[
        "not JSON",
        "other format",
        "path outside",
        "wrong type",
        "not an object",
        "file missing",
        "corrupt data",
        "empty metadata",
    ],
)
def test_a_damaged_checkpoint_is_not_used_and_says_why(tmp_path, caplog, damage):
    _, _, clock = checkpointed(tmp_path)
    directory = tmp_path / "checkpoints"
    damage(directory, json.loads((directory / MANIFEST).read_text()))
    second = make(tmp_path, Counting())
    with caplog.at_level(logging.WARNING):
        assert checkpointer(tmp_path, second, clock).resume(second.listener, second, None) is None
    assert "not used: " in caplog.text
    assert second.accumulator.accumulation is None
    second.run()  # and the start is fresh
    assert ids_of(second.accumulator.accumulation)[1] == 6


def test_a_write_that_fails_keeps_the_previous_checkpoint_and_the_next_one_cleans_up(tmp_path, monkeypatch, caplog):
    loader, points, clock = checkpointed(tmp_path)
    directory = tmp_path / "checkpoints"
    before = (directory / MANIFEST).read_text()
    original = CheckpointStore._write_object

    def full_disk(path, data):
        if path.name.startswith("metadata"):
            raise OSError(28, "No space left on device")
        original(path, data)

    monkeypatch.setattr(CheckpointStore, "_write_object", staticmethod(full_disk))
    loader.run()
    clock.advance(1.0)
    points.after_cycle(loader)
    assert points._collect(30)
    assert "No space left on device" in points.state
    assert "No space left on device" in caplog.text
    assert (directory / MANIFEST).read_text() == before
    lineage = json.loads(before)["lineage"]
    assert len(list((directory / lineage).iterdir())) == 3  # the orphan events file of the failed write
    monkeypatch.setattr(CheckpointStore, "_write_object", staticmethod(original))
    loader.run()
    checkpoint(points, loader, clock)
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["provenance"]["chunks"] == 3
    assert sorted(p.name for p in (directory / lineage).iterdir()) == sorted(
        [*manifest["files"], manifest["metadata_file"]]
    )
    listener = Counting()
    resumed = make(tmp_path, listener)
    assert checkpointer(tmp_path, resumed, clock).resume(listener, resumed, None) is not None
    assert ids_of(resumed.accumulator.accumulation) == [0, 6, 6, 6, 0, 0, 0, 0, 0, 0]


def test_a_checkpoint_directory_anyone_may_write_is_refused(tmp_path):
    directory = tmp_path / "open"
    directory.mkdir()
    os.chmod(directory, 0o777)
    with pytest.raises(ConfigError, match="writable by any user"):
        CheckpointStore(directory)
    os.chmod(directory, 0o700)
    CheckpointStore(directory)


def test_run_metadata_of_every_kind_round_trips_packed(tmp_path):
    """Thousands of logs are packed by dtype and unit (one HDF5 group per log took seconds); every kind of log, the
    properties and the monitors come back identical."""
    logs = {f"pv{i}": log_series([(10**9 * i, float(i)), (10**9 * i + 5, float(i) / 3)], "K") for i in range(3000)}
    logs |= {
        "title/with/slashes": log_series([(5, "hello"), (6, "wörld")]),
        "empty string": log_series([(5, "")]),
        "count": log_series([(5, 3), (9, -(2**63))]),
        "no unit": log_series([(5, 1.5)]),
        "array": log_series([(5, np.arange(3.0)), (6, np.arange(2.0))], "m"),
    }
    metadata = RunMetadata(
        run_number=12,
        start_time=START,
        instrument_name="SANS2D",
        logs=logs,
        properties={"run_title": "t", "run_end": START, "n": 3, "x": 0.5},
        monitors={"monitor_1": monitor_events(np.array([1, 2]), np.array([5.0, 6.0], np.float32))},
    )
    sc.io.save_hdf5(metadata_group(metadata), tmp_path / "m.h5")
    back = metadata_from_group(sc.io.load_hdf5(tmp_path / "m.h5"))
    assert list(back.logs) == list(logs)
    for name, log in logs.items():
        assert sc.identical(back.logs[name], log), name
    assert back.properties == metadata.properties
    assert (back.run_number, back.start_time, back.instrument_name) == (12, START, "SANS2D")
    assert sc.identical(back.monitors["monitor_1"], metadata.monitors["monitor_1"])


def test_a_configuration_edit_of_keys_the_accumulation_does_not_depend_on_resumes(tmp_path):
    _, _, clock = checkpointed(tmp_path)
    edited = make(tmp_path, Counting(), update_every=5, log_file="other.log", stop_timeout_sec=3, run_transition="Stop")
    assert checkpointer(tmp_path, edited, clock).resume(edited.listener, edited, None) is not None
    assert edited.accumulator.event_count == 6


def test_the_checkpoint_after_a_run_ended_with_stop_says_the_run_is_complete(tmp_path):
    """With RunTransitionBehavior Stop the engine ends after the run's last chunk; its checkpoint must say that the
    run ended, or a resume past the source's end of run (Kafka: after the 6s4t) waits for an end that never comes
    (found by bench/kill_resume.py on Kafka)."""
    clock = FakeClock()
    loader = make(tmp_path, Counting(run_ends_at=2), run_transition="Stop")
    points = checkpointer(tmp_path, loader, clock)
    loader.run()
    assert loader.run().finished == "run 7 ended (RunTransitionBehavior Stop)"
    checkpoint(points, loader, clock)
    manifest = json.loads((tmp_path / "checkpoints" / MANIFEST).read_text())
    assert manifest["replace_next"] is True
    assert manifest["position"] == {"next": 3}
