"""The web pages in a real browser: headless Chromium from Debian's ``chromium``
and ``chromium-driver`` packages, driven by Selenium through the system
chromedriver (Selenium Manager is never asked to download a driver or a
browser: both paths are given), against the ``api`` server of tests/api.

Every ``Page`` keeps the browser's console and network logs: a test fails on a
console error (a CSP violation, a script error, a failed load) and on any
request to a host other than the node's. ``Page.screenshot`` keeps a picture
of the page as a test artefact, in ``$DICOM_NODE_TEST_ARTIFACTS/screenshots``
or, unset, in ``artifacts/screenshots`` of pytest's base temporary directory
(docs/testing.md).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.conftest import (  # noqa: F401 (fixtures used here)
    PASSWORD,
    ApiServer,
    api,
    api_settings,
)
from tests.support import require

CHROMIUM = Path("/usr/bin/chromium")
# axe-core, from npm for the tests only (tests/browser/package.json; .ci/run
# runs `npm ci --prefix tests/browser`)
AXE_JS = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
# the rules axe checks: WCAG 2.0 and 2.1, levels A and AA
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# what a page may load besides the node itself: inline data and its own blobs
LOCAL_SCHEMES = {"data", "blob", "about"}
WAIT_SECONDS = 15
SIGN_IN_PATH = "/sign-in"


@pytest.fixture
def backend() -> str:
    """The pages read through the same services on either database; the API
    tests run both. One is enough to drive a browser against."""
    return "sqlite"


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("DICOM_NODE_TEST_ARTIFACTS")
    if configured:
        root = Path(configured)
    else:
        root = tmp_path_factory.getbasetemp()
        if root.name.startswith("popen-gw"):  # an xdist worker's: share the run's
            root = root.parent
        root = root / "artifacts"
    screenshots = root / "screenshots"
    screenshots.mkdir(parents=True, exist_ok=True)
    return screenshots


@dataclass
class Page:
    """A browser on the node: ``open`` a path, read, ``screenshot``; the logs
    it gathers are checked when the test ends."""

    driver: webdriver.Chrome
    base_url: str
    screenshots: Path
    test_name: str
    console: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    # console errors a test expects (a regular expression each), e.g. a 401 page
    expected_errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def wait_for(self, condition: Any) -> Any:
        return WebDriverWait(self.driver, WAIT_SECONDS).until(condition)

    def wait_for_path(self, path: str) -> None:
        self.wait_for(lambda driver: urlparse(driver.current_url).path == path)
        self.wait_for(
            lambda driver: driver.execute_script("return document.readyState") == "complete"
        )

    def find(self, css: str) -> WebElement:
        return self.driver.find_element("css selector", css)

    def active_id(self) -> str:
        return str(self.driver.switch_to.active_element.get_attribute("id") or "")

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        """Sign in through the form, as a person does; lands on the home page.
        Whoever was signed in in this browser is forgotten first (the form sends
        someone signed in to the home page)."""
        self.driver.delete_all_cookies()
        self.open(SIGN_IN_PATH)
        self.wait_for_path(SIGN_IN_PATH)
        self.find("input#username").send_keys(username)
        self.find("input#password").send_keys(password)
        self.driver.find_element("xpath", "//button[normalize-space()='Sign in']").click()
        self.wait_for_path("/")

    def check_accessibility(self, *, exclude: list[str] | None = None) -> None:
        """Run axe-core in the page (WCAG 2.1 A and AA: contrast, labels, names,
        landmarks...) and fail on any violation. ``exclude``: CSS selectors of
        parts axe cannot judge (a canvas drawn by the viewer)."""
        require(
            AXE_JS.exists(),
            "axe-core is not installed (npm ci --prefix tests/browser)",
        )
        self.driver.execute_script(AXE_JS.read_text())
        result = self.driver.execute_async_script(
            """
            const [tags, exclude, done] = arguments;
            const context = exclude.length ? {exclude: exclude.map(s => [s])} : document;
            axe.run(context, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]})
              .then(r => done(r.violations.map(v => ({
                id: v.id, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + ": " + n.failureSummary),
              }))))
              .catch(e => done([{id: "axe-error", help: String(e), nodes: []}]));
            """,
            AXE_TAGS,
            exclude or [],
        )
        assert not result, "accessibility (axe-core):\n" + "\n".join(
            f"{v['id']}: {v['help']}\n    " + "\n    ".join(v["nodes"]) for v in result
        )

    def screenshot(self, step: str) -> Path:
        size = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
        name = re.sub(r"[^\w.-]+", "_", f"{self.test_name}-{step}-{size[0]}x{size[1]}")
        path = self.screenshots / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), path
        return path

    def gather(self) -> None:
        """Move the browser's buffered logs here (each read empties them)."""
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])

    def problems(self) -> list[str]:
        self.gather()
        found = []
        for entry in self.console:
            if entry["level"] != "SEVERE":
                continue
            if any(re.search(pattern, entry["message"]) for pattern in self.expected_errors):
                continue
            found.append(f"console: {entry['message']}")
        node = urlparse(self.base_url).netloc
        for url in self.requests:
            parsed = urlparse(url)
            if parsed.scheme not in LOCAL_SCHEMES and parsed.netloc != node:
                found.append(f"request to another host: {url}")
        return found


def chrome_options(width: int, height: int) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI and this machine run as root, where the sandbox refuses
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        # nothing of Chromium's own that would reach the internet during a test
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--lang=en-GB",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return options


@pytest.fixture(params=[(1280, 800), (768, 1024)], ids=["1280x800", "768x1024"])
def window(request: pytest.FixtureRequest) -> tuple[int, int]:
    """The two sizes the pages must work at: a reading-room desktop and a tablet."""
    size: tuple[int, int] = request.param
    return size


BrowserFactory = Callable[..., Page]


@pytest.fixture
def browsers(
    window: tuple[int, int], artifacts_dir: Path, request: pytest.FixtureRequest
) -> Iterator[BrowserFactory]:
    """``browsers(base_url, name=...)`` opens one more browser (its own cookies:
    one person each) on a node; every one is checked for console errors and
    requests to other hosts when the test ends, then closed."""
    require(CHROMIUM.exists(), "Chromium is not installed (apt-get install chromium)")
    require(
        CHROMEDRIVER.exists(), "chromedriver is not installed (apt-get install chromium-driver)"
    )
    opened: list[Page] = []

    def open_browser(base_url: str, *, name: str = "") -> Page:
        service = Service(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(service=service, options=chrome_options(*window))
        # the page's own viewport, whatever the window decorations take
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False},
        )
        test_name = f"{request.node.name}-{name}" if name else request.node.name
        browser = Page(driver, base_url, artifacts_dir, test_name)
        opened.append(browser)
        return browser

    try:
        yield open_browser
        problems = [
            f"{browser.test_name}: {problem}"
            for browser in opened
            for problem in browser.problems()
        ]
        assert not problems, "\n".join(problems)
    finally:
        for browser in opened:
            browser.driver.quit()


@pytest.fixture
def page(
    api: ApiServer,  # noqa: F811 (the fixture imported above)
    browsers: BrowserFactory,
) -> Page:
    """One browser on the ``api`` server."""
    return browsers(api.base_url)
