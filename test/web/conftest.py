"""The browser tests' fixtures: a headless chromium driven by selenium (``browser``), and the page URL of a daemon
started by ``test/conftest.py``'s ``daemon`` fixture (:func:`page_url`).

chromium and chromedriver are Debian's packages (``chromium``, ``chromium-driver``; ``.ci/run`` installs them);
where either is missing the browser tests skip with the reason. selenium is given both binaries' paths, so its
Selenium Manager never downloads a browser. Screenshots go into ``$LIVEREDUCE_SCREENSHOTS`` (created if missing),
else into the test's ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from conftest import Daemon, poll_until

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

VIEWPORT = (1366, 768)
"""The page's viewport in CSS pixels (a common laptop screen; the README's screenshot)."""
WAIT_S = 30.0
"""Longest wait for something on the page (a daemon cycle is 1 s or less in these tests)."""
CONSOLE_PROBLEM = re.compile(r"Content.Security.Policy|Refused to|Uncaught|Error", re.IGNORECASE)
"""A console message that is a CSP violation or a script error, whatever its level and source."""

T = TypeVar("T")


@dataclass
class Browser:
    """One chromium window on the daemon's page.

    Attributes:
        driver: the selenium WebDriver (chromium through chromedriver).
        screenshots: directory of :meth:`screenshot`'s PNG files.
        name: the test's name (screenshot file names start with it).
        console: every browser console entry read so far (``{"level", "message", "source", "timestamp"}``).
    """

    driver: WebDriver
    screenshots: Path
    name: str
    console: list[dict[str, Any]] = field(default_factory=list)

    def open(self, url: str) -> None:
        """Load ``url`` and wait until the page's event stream is live (``#connection`` says so)."""
        self.driver.get(url)
        self.wait(lambda: self.element("connection").get_attribute("data-state") == "live", "the connection is live")

    def element(self, element_id: str) -> WebElement:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def text(self, element_id: str) -> str:
        """The element's text as shown (empty while it is hidden)."""
        return self.element(element_id).text

    def number(self, element_id: str) -> int | None:
        """The element's text as an integer (thousands separators dropped), or None for a text that is not one."""
        text = self.text(element_id).replace(",", "")
        return int(text) if text.isdigit() else None

    def script(self, code: str, *args: object) -> Any:
        return self.driver.execute_script(code, *args)

    def wait(self, condition: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
        """Poll ``condition`` (every 0.1 s) until it returns something true, and return that; fail naming ``what``
        and showing the page's text after ``timeout`` seconds. Elements replaced while polled are polled again."""
        from selenium.common.exceptions import (
            JavascriptException,
            NoSuchElementException,
            StaleElementReferenceException,
            TimeoutException,
        )
        from selenium.webdriver.support.wait import WebDriverWait

        ignored = (NoSuchElementException, StaleElementReferenceException, JavascriptException)
        try:
            return WebDriverWait(self.driver, timeout, 0.1, ignored).until(lambda _: condition())
        except TimeoutException:
            shot = self.screenshot("timeout")
            body = self.driver.find_element("tag name", "body").text
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}; screenshot {shot}; the page:\n{body}")

    def screenshot(self, label: str) -> Path:
        """Save what the viewport shows as ``<screenshots>/<test>-<label>.png``; returns the path."""
        path = self.screenshots / f"{self.name}-{label}.png"
        self.driver.save_screenshot(str(path))
        return path

    def console_problems(self) -> list[str]:
        """The console's CSP violations and script errors so far (network errors, e.g. a stopped daemon's refused
        connections, are not problems of the page)."""
        self.console.extend(self.driver.get_log("browser"))
        return [
            f"{entry['level']} {entry['source']}: {entry['message']}"
            for entry in self.console
            if entry.get("source") != "network"
            and (entry["level"] in ("SEVERE", "WARNING") or CONSOLE_PROBLEM.search(entry["message"]))
        ]


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Browser]:
    """A headless chromium with a 1366x768 viewport; quit at the end, after checking that its console holds no CSP
    violation or script error (the test fails if it does)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("chromium or chromedriver is not installed (.ci/run installs Debian's chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,768"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    screenshots = Path(os.environ.get("LIVEREDUCE_SCREENSHOTS") or tmp_path)
    screenshots.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(service=webdriver.ChromeService(chromedriver), options=options)
    try:
        # --window-size is the window's outer size: grow it by the frame so that the viewport is VIEWPORT
        frame = driver.execute_script("return [outerWidth - innerWidth, outerHeight - innerHeight]")
        driver.set_window_size(VIEWPORT[0] + frame[0], VIEWPORT[1] + frame[1])
        page = Browser(driver, screenshots, re.sub(r"\W+", "_", request.node.name))
        yield page
        problems = page.console_problems()
        assert not problems, "the browser console:\n" + "\n".join(problems)
    finally:
        driver.quit()


def page_url(process: Daemon, timeout: float = WAIT_S) -> str:
    """The daemon's page URL, as its status file (``status.json`` in its working directory) gives it in
    ``http_url``; fails if the daemon exits or gives none within ``timeout`` seconds."""
    status = process.workdir / "status.json"

    def url() -> str | None:
        if process.process.poll() is not None:
            pytest.fail(f"the daemon exited with {process.process.returncode}:\n{process.log() or process.stdout()}")
        try:
            return json.loads(status.read_text()).get("http_url")
        except (OSError, ValueError):  # not written yet, or being replaced
            return None

    return poll_until(url, lambda: f"http_url in {status}; the log:\n{process.log()}", timeout)
