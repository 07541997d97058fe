"""The file watcher: one FilesChanged per real change, polling where inotify cannot see."""

from __future__ import annotations

import logging
import os
import queue
from pathlib import Path

import pytest

from livereduce.watch import FilesChanged, FileWatcher


@pytest.fixture
def watched(tmp_path: Path):
    """A watcher on ``script.py`` in tmp_path (inotify + polling every 60 s); yields (path, received queue)."""
    received: queue.Queue[FilesChanged] = queue.Queue()
    path = tmp_path / "script.py"
    path.write_text("a = 1\n")
    watcher = FileWatcher([path], received.put, poll_interval=60)
    watcher.start()
    yield path, received, watcher
    watcher.stop()


def test_one_event_for_a_save_in_several_writes(watched):
    path, received, _ = watched
    with path.open("w") as f:
        for part in ("a ", "= ", "2\n"):
            f.write(part)
            f.flush()
    assert received.get(timeout=10).paths == {path}
    with pytest.raises(queue.Empty):
        received.get(timeout=1.5)  # three settle periods: nothing more


def test_identical_content_is_no_change(watched):
    path, received, _ = watched
    path.write_text("a = 1\n")
    with pytest.raises(queue.Empty):
        received.get(timeout=1.5)
    path.write_text("a = 3\n")  # positive control: the watcher is alive and sees a real change
    assert received.get(timeout=10).paths == {path}


def test_delete_and_rename_into_place(watched):
    path, received, _ = watched
    path.unlink()
    assert received.get(timeout=10).paths == {path}
    staged = path.with_name("staged.tmp")
    staged.write_text("b = 2\n")
    staged.replace(path)
    assert received.get(timeout=10).paths == {path}


def test_polling_sees_what_inotify_does_not(tmp_path):
    received: queue.Queue[FilesChanged] = queue.Queue()
    missing_dir = tmp_path / "later"
    path = missing_dir / "script.py"
    watcher = FileWatcher([path], received.put, poll_interval=0.2)  # no directory: nothing for inotify to watch
    watcher.start()
    try:
        missing_dir.mkdir()
        path.write_text("c = 3\n")
        assert received.get(timeout=10).paths == {path}
    finally:
        watcher.stop()


def test_reading_a_script_is_no_event(watched):
    path, received, _ = watched
    for _ in range(20):  # Mantid's RunPythonScript reads the file every cycle
        path.read_text()
    with pytest.raises(queue.Empty):
        received.get(timeout=1.5)
    path.write_text("a = 4\n")  # positive control: the watcher is alive and sees a real change
    assert received.get(timeout=10).paths == {path}


def test_a_log_appended_beside_the_scripts_wakes_the_watcher_only_when_closed(watched):
    path, received, watcher = watched
    seen: list[str] = []
    touched = watcher._touched
    watcher._touched = lambda *paths: (seen.extend(str(p) for p in paths if p), touched(*paths))
    log = path.with_name("livereduce.log")
    log.touch()  # created before (its creation is an event)
    path.write_text("a = 4\n")
    assert received.get(timeout=10).paths == {path}
    seen.clear()
    with log.open("a") as f:
        for line in range(50):  # the daemon's log, written every cycle, open all the time
            f.write(f"line {line}\n")
            f.flush()
        path.write_text("a = 5\n")  # inotify delivers in order: once this is seen, so are the appends
        assert received.get(timeout=10).paths == {path}
        assert str(log) not in seen
    path.write_text("a = 6\n")
    assert received.get(timeout=10).paths == {path}
    assert str(log) in seen  # positive control: its close after writing is an event


def test_a_fifo_in_place_of_a_watched_file_never_blocks_the_watcher(watched):
    path, received, watcher = watched
    path.unlink()
    os.mkfifo(path)
    assert received.get(timeout=10).paths == {path}  # seen as a change (its content is not readable)
    path.unlink()
    path.write_text("a = 5\n")
    assert received.get(timeout=10).paths == {path}  # still watching
    assert watcher.problem() is None


def test_a_dead_watcher_reports_a_problem(tmp_path, monkeypatch):
    watcher = FileWatcher([tmp_path / "x.py"], lambda _: None, poll_interval=0.1)
    assert watcher.problem() is None  # not started: nothing to report
    monkeypatch.setattr(watcher, "_watch", lambda: 1 / 0)
    watcher.start()
    watcher._thread.join(10)
    try:
        assert watcher.problem() == "thread ended"
    finally:
        watcher.stop()


def test_watchdogs_stop_race_message_is_not_logged(caplog):
    """watchdog logs 'queue_events() called when the thread is inactive' at ERROR when an event arrives while
    its observer stops (a normal stop); it ended the daemon's log after 'livereduce stopped' in CI."""
    inotify_log = logging.getLogger("watchdog.observers.inotify")
    with caplog.at_level(logging.ERROR, logger="watchdog.observers.inotify"):
        inotify_log.error("InotifyEmitter.queue_events() called when the thread is inactive")
        inotify_log.error("some other inotify failure")  # the positive control: other errors still get through
    assert [record.getMessage() for record in caplog.records] == ["some other inotify failure"]
