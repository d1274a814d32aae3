"""Viewer scroll benchmark (issue 18, item 5): in headless Chromium, from an
ArrowDown key press to the next image of a 500-image CT series drawn on the
viewer's canvas.

A script, not a timed test. Run from the repository:

    .venv/bin/python bench/viewer_scroll.py                 # 500 images, as fast as keys go
    .venv/bin/python bench/viewer_scroll.py --interval-ms 50  # a reader's 20 images a second
    .venv/bin/python bench/viewer_scroll.py --images 100      # a quick check of the setup

What it does:

1. takes the CT data set of bench/dicomweb.py (``prepare``: 512x512, 16-bit,
   explicit VR little endian, about 0.5 MB an instance; generated once into
   ``--root``/data and reused), made of three series of ``--images`` each,
   and keeps its middle series: one study of one ``--images``-image series;
2. starts ``dicom-node serve`` with its defaults (bench/dicomweb.py's
   ``node_target``, SQLite unless ``--database postgresql``), adds a
   radiologist and imports the series with ``dicom-node import``;
3. drives headless Chromium through Selenium and the system chromedriver
   with the browser tests' options (tests/browser/conftest.py
   ``chrome_options``): signs in through the form, opens
   ``/viewer/{study}``, waits for the first image, then presses ArrowDown
   (a trusted key event through the DevTools protocol) until the last image,
   each press after the previous image is drawn, ``--interval-ms`` after it;
4. reads the viewer's own timings (``window.dicomNodeViewer.timings``): from
   the key event's timestamp to the frame drawn on the canvas (``drawn``),
   and to the next animation frame after it (``painted``: the image is on
   screen at the latest then), with whether the frame was already
   prefetched; prints p50, p95, max, the share prefetched, the load average
   before and after (``/proc/loadavg``) and the verdict against the target:
   under 100 ms p50 from key press to drawn frame.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pydicom  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from bench.dicomweb import CT_SERIES, node_target, prepare  # noqa: E402
from bench.ingest import DATABASES, DICOM_NODE, database  # noqa: E402
from tests.browser.conftest import CHROMEDRIVER, chrome_options  # noqa: E402

TARGET_P50_MS = 100.0
USER, PASSWORD = "bench-reader", "bench-viewer-Passw0rd-1"
WIDTH, HEIGHT = 1280, 800

# resolves when the viewport has drawn image ``index`` (from 0): no polling delay
WAIT_DRAWN_JS = """
const [index, done] = [String(arguments[0]), arguments[arguments.length - 1]];
const viewport = document.querySelector('.viewport[data-viewport="1"]');
if (viewport && viewport.dataset.drawnFrame === index) { done(true); return; }
const observer = new MutationObserver(() => {
  if (viewport.dataset.drawnFrame === index) { observer.disconnect(); done(true); }
});
observer.observe(viewport, {attributes: true, attributeFilter: ["data-drawn-frame"]});
"""


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def middle_series(files: list[Path]) -> tuple[str, list[Path]]:
    """The study UID and the files of the data set's middle series."""
    middle = f"se{(CT_SERIES + 1) // 2}"
    chosen = [path for path in files if path.parent.name == middle]
    study = str(pydicom.dcmread(chosen[0], stop_before_pixels=True).StudyInstanceUID)
    return study, chosen


def node_env(run_dir: Path, url: str) -> dict[str, str]:
    """The environment node_target gives ``dicom-node serve``, for the CLI beside it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_NODE_")}
    env.update(
        DICOM_NODE_CONFIG=str(run_dir / "node.toml"),
        DICOM_NODE_DATA_DIR=str(run_dir / "data"),
        DICOM_NODE_DATABASE_URL=url,
        DICOM_NODE_LOG_LEVEL="WARNING",
    )
    return env


def percentile(values: list[float], q: int) -> float:
    return quantiles(values, n=100, method="inclusive")[q - 1]


def drive(base_url: str, study: str, images: int, interval: float) -> list[dict[str, Any]]:
    """Sign in, open the viewer, press ArrowDown images - 1 times; the timings."""
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=chrome_options(WIDTH, HEIGHT))
    try:
        driver.set_script_timeout(60)
        wait = WebDriverWait(driver, 60)
        driver.get(base_url + "/sign-in")
        driver.find_element("css selector", "input#username").send_keys(USER)
        driver.find_element("css selector", "input#password").send_keys(PASSWORD, Keys.ENTER)
        wait.until(lambda d: d.current_url.rstrip("/") == base_url)
        driver.get(f"{base_url}/viewer/{study}")
        driver.execute_async_script(WAIT_DRAWN_JS, 0)
        count = driver.execute_script("return window.dicomNodeViewer.active.stack.length")
        assert count == images, f"the viewer holds {count} images, not {images}"
        driver.execute_script("window.dicomNodeViewer.timings.length = 0")
        started = time.monotonic()
        for index in range(1, images):
            ActionChains(driver).send_keys(Keys.ARROW_DOWN).perform()
            driver.execute_async_script(WAIT_DRAWN_JS, index)
            if interval:
                time.sleep(interval)  # the reader's pace, by choice (--interval-ms)
        elapsed = time.monotonic() - started
        # the last paint is recorded one animation frame after its draw
        last_painted = "return 'painted' in window.dicomNodeViewer.timings.at(-1)"
        wait.until(lambda d: d.execute_script(last_painted))
        timings: list[dict[str, Any]] = driver.execute_script(
            "return window.dicomNodeViewer.timings"
        )
        requests = driver.execute_script("return window.dicomNodeViewer.cache.requests")
        rate = (images - 1) / elapsed
        print(f"{images - 1} presses in {elapsed:.1f} s ({rate:.0f} a second), {requests} fetched")
        return timings
    finally:
        driver.quit()


def report(timings: list[dict[str, Any]], loads: list[tuple[str, str]]) -> int:
    drawn = [t["drawn"] for t in timings]
    painted = [t["painted"] for t in timings if "painted" in t]
    cached = sum(1 for t in timings if t["cached"])
    print(
        f"key press -> frame, ms over {len(drawn)} presses (Chromium {WIDTH}x{HEIGHT}, headless):"
    )
    for name, values in (("drawn", drawn), ("painted", painted)):
        print(
            f"  {name:8} p50 {percentile(values, 50):6.1f}  p95 {percentile(values, 95):6.1f}  "
            f"max {max(values):6.1f}"
        )
    print(f"  prefetched (in the cache at the press): {cached} of {len(timings)}")
    for phase, load in loads:
        print(f"  load average {phase}: {load}")
    print(f"  {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    p50 = percentile(drawn, 50)
    met = p50 < TARGET_P50_MS
    verdict = "met" if met else "NOT met"
    print(f"verdict: p50 {p50:.1f} ms against under {TARGET_P50_MS:.0f} ms: {verdict}")
    return 0 if met else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="images in the series (500)")
    parser.add_argument("--interval-ms", type=float, default=0.0, help="pause after each draw")
    parser.add_argument("--database", choices=DATABASES, default="sqlite", help="the node's")
    parser.add_argument("--root", type=Path, default=Path("/tmp/dicom-node-bench"))
    args = parser.parse_args(argv)
    if args.images < 2:
        parser.error("--images at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    data = prepare(args.root / "data", "ct", args.images * CT_SERIES)
    study, files = middle_series(data.files)
    loads = [("start", load_average())]
    work = Path(tempfile.mkdtemp(prefix="viewer-", dir=args.root))
    with contextlib.ExitStack() as stack:
        make_url = stack.enter_context(database(args.database))
        url = make_url(work / "node", "viewer")
        node = stack.enter_context(node_target(work / "node", url))
        env = node_env(work / "node", url)
        cli = [str(DICOM_NODE)]
        add_user = [*cli, "user", "add", USER, "--role", "radiologist", "--password-stdin"]
        subprocess.run(add_user, input=PASSWORD.encode(), check=True, capture_output=True, env=env)
        started = time.monotonic()
        subprocess.run([*cli, "import", str(files[0].parent)], check=True, env=env)
        print(f"imported {len(files)} images in {time.monotonic() - started:.0f} s")
        loads.append(("before the presses", load_average()))
        base_url = f"http://127.0.0.1:{node.server.http_port}"
        timings = drive(base_url, study, len(files), args.interval_ms / 1000)
        loads.append(("after", load_average()))
    return report(timings, loads)


if __name__ == "__main__":
    sys.exit(main())
