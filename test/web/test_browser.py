"""The daemon's live page in a real browser (issue 18): headless chromium (selenium) on the page of the real daemon
(a subprocess), for each source and for what a scientist and an operator do with the page.

Each test saves screenshots (``$LIVEREDUCE_SCREENSHOTS``, else the test's ``tmp_path``) and fails if the browser's
console shows a CSP violation or a script error (``conftest.py``). The SANS2D demo through the fake SMS also makes
the README's screenshot when ``LIVEREDUCE_README_IMAGE`` names a file::

    LIVEREDUCE_README_IMAGE=docs/images/live_page.png python3 -m pytest -n 0 test/web/test_browser.py -k sans2d_demo
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.offline
import pytest

from conftest import ROOT
from livereduce.figures import FigureBoard
from livereduce.metrics import Metrics
from livereduce.web.server import WebServer

from .conftest import Browser, page_url

DEMO = ROOT / "demo" / "sans2d_live"
FAKE = {"listener": "FakeEventDataListener", "event_rate": 2000, "update_every": 0.5}
"""A source that never ends (the daemon keeps cycling until it is stopped)."""
UPLOAD = {"username": "plot_publisher", "password": "s3cret-upload"}

TOF_FIGURE = """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scipp as sc
    from livereduce.engines.scipp.chunk import flat_events
    from livereduce.outputs import save_figure

    tof = flat_events(input).hist(event_time_offset=sc.linspace("event_time_offset", 0.0, 1e5, 101, unit="us"))
    figure, axes = plt.subplots(figsize=(6, 3))
    axes.stairs(tof.values, tof.coords["event_time_offset"].values)
    save_figure(figure, "tof.png", dpi=60)
    plt.close(figure)
    output = input
"""
TOF_PNG_SIZE = (360, 180)
"""Pixels of TOF_FIGURE's PNG: 6 x 3 inches at 60 dpi."""

PUBLISH_PLOT = """
    import time
    import plotly.graph_objects as go
    from livereduce.outputs import publish_plot

    x = list(range(100))
    y = [(i * int(time.time() * 10)) % 97 for i in x]  # other values every cycle
    publish_plot(go.Figure(go.Scatter(x=x, y=y, mode="lines"), layout={"title": {"text": "counts"}}), name="counts")
    output = input
"""

COUNT_EVENT_SOURCES = """
    const Original = window.EventSource;
    const sources = [];
    window.EventSource = class extends Original {
      constructor(...args) { super(...args); sources.push(this); }
    };
    window.openEventSources = () => sources.filter((source) => source.readyState !== Original.CLOSED).length;
"""
"""Test instrumentation run before the page's script (CDP, not subject to the page's CSP): how many of the page's
EventSources are open or reconnecting."""

BROKEN_POST_PROC = """\
output = input
raise RuntimeError("broken on purpose")
"""
"""A post_proc script failing on its line 2."""


def card(page: Browser, title: str) -> Any:
    """The figure card titled ``title`` (its ``h3``), or None while there is none."""
    for article in page.driver.find_elements("css selector", "#figures article.figure"):
        if article.find_element("tag name", "h3").text == title:
            return article
    return None


def plotted(page: Browser, title: str) -> Any:
    """The ``.plot`` div of the card titled ``title`` once plotly drew it (its ``svg.main-svg``), else None."""
    article = card(page, title)
    plots = article.find_elements("css selector", ".plot") if article is not None else []
    return plots[0] if plots and plots[0].find_elements("css selector", "svg.main-svg") else None


def served_figure(url: str, figure_id: str) -> dict[str, Any] | None:
    """The plotly JSON the daemon serves for ``figure_id``, or None once the figure has been replaced (404)."""
    try:
        with urllib.request.urlopen(f"{url}figures/{figure_id}", timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def test_file_replay_counts_events_and_replaces_the_figure_each_cycle(daemon, sans2d: Path, browser: Browser):
    process = daemon(
        {
            "listener": "FileEventDataListener",
            "filename": str(sans2d),
            "replay_speed": 2,  # the file's 30 s in 15 s: many 1 s cycles
            "update_every": 1,
            "run_transition": "Stop",
            "http_port": 0,
        },
        {"post_proc": TOF_FIGURE},
    )
    browser.open(page_url(process))
    first = browser.wait(lambda: browser.number("events"), "a first event count")
    browser.wait(lambda: (browser.number("events") or 0) > first, f"more events than {first:,}")
    assert browser.text("state").endswith("running")
    assert browser.text("run") == "none"  # the file has no run number (0: unknown)

    def image() -> list[Any] | None:
        """[the card's figure id, the image's src, its natural width and height] in one snapshot (a cycle a second
        replaces both between two separate reads), once the image has loaded."""
        return browser.script(
            "const img = document.querySelector('#figures article.figure img');"
            "if (!img || !img.complete || !img.naturalWidth) return null;"
            "return [img.closest('article').dataset.figure, img.src, img.naturalWidth, img.naturalHeight];"
        )

    shown, src, *size = browser.wait(image, "the save_figure PNG")
    assert src.endswith(f"/figures/{shown}")
    assert size == list(TOF_PNG_SIZE)
    assert browser.driver.find_element("css selector", "#figures article.figure h3").text == "tof.png"
    newer, src, *_ = browser.wait(lambda: (found := image()) and found[0] != shown and found, "the next cycle's PNG")
    assert src.endswith(f"/figures/{newer}")
    assert len(browser.driver.find_elements("css selector", "#figures article.figure")) == 1  # replaced, not added
    browser.screenshot("replay")


def test_sans2d_demo_through_the_fake_sms_shows_each_run(daemon, fake_sms, browser: Browser):
    """The SANS2D demo scripts (demo/sans2d_live) on two runs of the fake SMS: the page follows the runs, the
    events and the demo's figure. Makes the README's screenshot (module docstring)."""
    # two runs of 15 s each (room for run 8's 4 cycles on a loaded machine); 4 µC per pulse: ISIS's second target
    # station, about 40 µA at 10 Hz
    sms = fake_sms("--speed", "2", "--loops", "2", "--run-number", "7", "--pulse-charge", "4e6")
    scripts = {role: (DEMO / f"reduce_SANS2D_live_{role}.py").read_text() for role in ("proc", "post_proc")}
    config = {
        "listener": "SNSLiveEventDataListener",
        "address": f"127.0.0.1:{sms.port}",
        "update_every": 1,
        "run_transition": "Restart",
        "http_port": 0,
    }
    browser.open(page_url(daemon(config, scripts)))
    in_run_7 = browser.wait(lambda: browser.text("run") == "7" and browser.number("events"), "events of run 7")
    browser.wait(lambda: (browser.number("events") or 0) > in_run_7, f"more events than {in_run_7:,} in run 7")
    browser.wait(lambda: browser.text("run") == "8", "run 8")
    in_run_8 = browser.wait(lambda: browser.number("events"), "events in run 8")
    browser.wait(lambda: (browser.number("events") or 0) > in_run_8, f"more events than {in_run_8:,} in run 8")
    browser.wait(
        lambda: browser.script(
            "const img = document.querySelector('#figures article.figure img');"
            "const chunks = img && /(\\d+) chunks/.exec(img.closest('article').querySelector('.meta').textContent);"
            "return !!chunks && chunks[1] >= 4 && img.complete && img.naturalWidth && img.alt.startsWith('SANS2D_8')"
        ),
        "the demo's figure of run 8 after 4 chunks",
    )
    shot = browser.screenshot("live")
    if readme := os.environ.get("LIVEREDUCE_README_IMAGE"):
        shutil.copyfile(shot, readme)


def test_a_post_proc_error_shows_until_the_script_is_fixed(daemon, browser: Browser):
    process = daemon({**FAKE, "http_port": 0}, {"proc": "output = input\n", "post_proc": BROKEN_POST_PROC})
    browser.open(page_url(process))
    error = browser.element("error")
    browser.wait(lambda: error.is_displayed() and browser.text("error-text"), "the error on the page")
    text = browser.text("error-text")
    assert "broken on purpose" in text
    assert "line 2" in text
    browser.screenshot("error")

    script = process.workdir / "reduce_SANS2D_live_post_proc.py"
    fixed = script.with_suffix(".new")
    fixed.write_text("output = input\n")
    fixed.replace(script)  # atomically, as editors save
    browser.wait(lambda: not error.is_displayed(), "the error gone after the fix")
    browser.screenshot("fixed")


def test_a_published_plotly_figure_keeps_its_zoom_across_updates(daemon, browser: Browser):
    from selenium.webdriver.common.action_chains import ActionChains

    process = daemon({**FAKE, "http_port": 0}, {"proc": "output = input\n", "post_proc": PUBLISH_PLOT})
    url = page_url(process)
    browser.open(url)
    plot = browser.wait(lambda: plotted(browser, "counts"), "the plotly plot 'counts'")
    x_range = "return arguments[0]._fullLayout.xaxis.range"
    full = browser.script(x_range, plot)
    assert full == pytest.approx([0, 99])

    area = plot.find_element("css selector", ".nsewdrag")  # plotly's drag layer over the plot area
    width = area.size["width"]
    ActionChains(browser.driver).move_to_element_with_offset(area, -width // 5, 0).click_and_hold().move_by_offset(
        width // 5, 0
    ).release().perform()  # a horizontal box (dragmode zoom): x from about 30 to about 50
    zoomed = browser.wait(lambda: (r := browser.script(x_range, plot)) != full and r, "the zoom")
    assert 20 < zoomed[0] < zoomed[1] < 60, zoomed

    article = card(browser, "counts")
    before = article.get_attribute("data-figure")

    def redrawn() -> bool:
        """The card shows a newer figure than ``before`` and plotly drew its data."""
        now = article.get_attribute("data-figure")
        served = served_figure(url, now) if now != before else None
        return served is not None and browser.script("return arguments[0].data[0].y", plot) == served["data"][0]["y"]

    browser.wait(redrawn, "the next update of 'counts' drawn")
    assert browser.script(x_range, plot) == pytest.approx(zoomed)
    browser.screenshot("zoomed")


def test_a_plot_publisher_upload_appears_on_the_page(daemon, browser: Browser):
    requests = pytest.importorskip("requests", reason="requests (what plot_publisher posts with) is not installed")
    process = daemon({**FAKE, "http_port": 0, "http_upload": UPLOAD}, {"proc": "output = input\n"})
    url = page_url(process)
    browser.open(url)
    run = browser.wait(lambda: browser.number("run"), "a run")  # plot_publisher uploads the run's reduced data
    q = [0.01 * i for i in range(1, 51)]
    figure = go.Figure(go.Scatter(x=q, y=[1 / v for v in q], mode="markers"), layout={"title": f"SANS2D {run}"})
    div = plotly.offline.plot(figure, output_type="div", include_plotlyjs=False)  # as plot_publisher's plot1d
    answer = requests.post(f"{url}plots/SANS2D/{run}/upload_plot_data/", data=UPLOAD, files={"file": div}, timeout=10)
    assert answer.status_code == 200, answer.text

    title = f"SANS2D run {run} (uploaded)"
    plot = browser.wait(lambda: plotted(browser, title), "the uploaded plot")
    assert browser.script("return arguments[0].data[0].x", plot) == q
    assert f"run {run}" in card(browser, title).find_element("css selector", ".meta").text
    browser.screenshot("uploaded")


def test_the_page_reconnects_to_a_restarted_daemon_by_itself(daemon, browser: Browser):
    config = {**FAKE, "http_port": 0}
    first = daemon(config, {"proc": "output = input\n"})
    url = page_url(first)
    browser.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_EVENT_SOURCES})
    browser.open(url)
    connection = browser.element("connection")
    browser.wait(lambda: browser.number("events"), "events")

    first.send(signal.SIGTERM)
    assert first.finish(30).returncode == 0
    browser.wait(lambda: connection.text == "connection lost, reconnecting…", "'connection lost'")
    assert connection.get_attribute("data-state") == "lost"
    browser.screenshot("lost")

    (first.workdir / "status.json").unlink()  # so that page_url waits for the new daemon's
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    second = daemon({**config, "http_port": port}, {"proc": "output = input\n"})
    assert page_url(second) == url
    browser.wait(lambda: connection.text == "live", "'live' again")
    assert connection.get_attribute("data-state") == "live"
    assert browser.script("return window.openEventSources()") == 1  # one stream, not one per lost connection
    browser.wait(lambda: browser.text("state").endswith("running"), "the new daemon's state")
    browser.screenshot("reconnected")


def test_the_console_check_sees_csp_violations_and_script_errors(browser: Browser):
    """The harness itself, on the page served in process: the page's CSP blocks an inline script in a real browser,
    and :meth:`Browser.console_problems` reports that and an uncaught error (what every test above checks)."""
    server = WebServer("SANS2D", Metrics(lambda: None, "SANS2D"), FigureBoard())
    url = server.serve("127.0.0.1", 0)
    assert url is not None
    try:
        browser.open(url)
        browser.script(
            "const s = document.createElement('script'); s.textContent = 'window.ran = 1'; document.body.append(s)"
        )
        browser.script("setTimeout(() => { throw new Error('thrown on purpose') }, 0)")
        problems = browser.wait(lambda: len(found := browser.console_problems()) >= 2 and found, "two console problems")
    finally:
        server.close()
    assert browser.script("return window.ran") is None  # blocked
    assert "Content Security Policy directive 'script-src 'self''" in problems[0], problems
    assert "Uncaught Error: thrown on purpose" in problems[1], problems
    browser.console.clear()  # seen: the fixture's check is for the page's own problems
