"""The page's JSON in process: the same words as ``--status``, the event rate, and the current error."""

from __future__ import annotations

from livereduce.status import EngineStatus, Status
from livereduce.status_text import status_rows
from livereduce.web.page import RateHistory, page_state

NOW = 1_700_000_000.0


def status(**engine: object) -> Status:
    values: dict[str, object] = {"state": "running", "run_number": 47210, "chunks": 12, "events": 4_500_000}
    values |= {"last_cycle_end": NOW - 1, "last_cycle_duration": 0.4, "first_pulse": "2023-11-14T22:10:00Z"}
    return Status(
        pid=1,
        state="running",
        updated=NOW,
        started=NOW - 100,
        update_every=5,
        engine=EngineStatus(**values | engine),  # type: ignore[arg-type]
        rss_bytes=100 << 20,
        memory_limit_bytes=1 << 30,
    )


def test_the_page_says_what_status_says():
    shown = page_state("SANS2D", status(), RateHistory(), NOW)
    assert shown["rows"] == [list(row) for row in status_rows(status(), NOW)]
    assert shown["health"] == shown["rows"][0][1] == "OK: running, last cycle 1.0 s ago"
    assert shown["healthy"] is True
    assert (shown["run"], shown["chunks"], shown["events"]) == (47210, 12, 4_500_000)
    assert shown["first_pulse"] == "2023-11-14T22:10:00Z"
    assert ["first pulse", "2023-11-14 22:10:00 UTC"] in shown["rows"]
    assert (shown["rss_bytes"], shown["memory_limit_bytes"]) == (100 << 20, 1 << 30)


def test_before_any_status_the_page_says_starting():
    shown = page_state("SANS2D", None, RateHistory(), NOW)
    assert (shown["state"], shown["healthy"], shown["rows"]) == ("starting", False, [])


def test_an_error_shows_until_a_cycle_succeeds():
    failed = status(last_error="post_proc script failed: line 3: ZeroDivisionError", last_error_time=NOW - 0.5)
    shown = page_state("SANS2D", failed, RateHistory(), NOW)
    assert shown["last_error"] == "post_proc script failed: line 3: ZeroDivisionError"
    assert shown["last_error_time"] == NOW - 0.5
    fixed = status(last_error=failed.engine.last_error, last_error_time=NOW - 6, last_cycle_end=NOW - 1)
    shown = page_state("SANS2D", fixed, RateHistory(), NOW)
    assert (shown["last_error"], shown["last_error_time"]) == ("", None)
    assert any(key == "last error" for key, _ in shown["rows"])  # the table keeps the last one


def test_the_rate_is_taken_between_changes_of_the_total():
    history = RateHistory()
    for second in range(20):  # a status a second, a cycle of 5,000 events every 5 s
        history.add(NOW + second, (second // 5) * 5000)
    assert history.series() == [(NOW + 5, 1000.0), (NOW + 10, 1000.0), (NOW + 15, 1000.0)]
    for second in range(20, 40):  # the data stopped
        history.add(NOW + second, 15000)
    assert history.series()[-1] == (NOW + 39, 0.0)


def test_the_rate_keeps_ten_minutes_and_restarts_with_a_new_process():
    history = RateHistory()
    for second in range(0, 1300, 10):
        history.add(NOW + second, second * 100)
    times = [t for t, _ in history.series()]
    assert times[-1] == NOW + 1290
    assert times[0] >= NOW + 1290 - 600 - 10
    assert {rate for _, rate in history.series()} == {100.0}
    history.add(NOW + 1300, 5)  # a total that went down: another process
    history.add(NOW + 1301, 105)
    assert history.series() == [(NOW + 1301, 100.0)]
    history.add(NOW + 1200, 10**9)  # not after the newest: ignored
    assert history.series() == [(NOW + 1301, 100.0)]
