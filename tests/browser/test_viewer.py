"""The study viewer in a real browser (issue 18): thumbnails, scrolling by
keys and wheel, window presets and drags applied in the browser (no request),
zoom, a measurement in millimetres, cine, a compressed instance (the node
decodes it), the patient's prior studies side by side, and a referring
physician refused a study not theirs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.keys import Keys

from dicom_node.domain.audit import SystemActor
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.results import IngestPolicy
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.api.dicomweb.conftest import (  # noqa: F401 (fixtures used here)
    DicomWeb,
    dicomweb,
    dicomweb_studies,
)
from tests.browser.conftest import Page
from tests.builders import seed_study

pytestmark = pytest.mark.browser

ONE_SIZE = pytest.mark.parametrize("window", [(1280, 800)], indirect=True)
CT_IMAGES = 6
CT_SPACING = 0.661468  # CT_small.dcm's PixelSpacing, both ways

# a checksum of what viewport ``n`` shows (the canvas's pixels)
PIXELS_JS = """
const canvas = document.querySelector(`.viewport[data-viewport="${arguments[0]}"] canvas`);
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let sum = 0;
for (let i = 0; i < data.length; i += 4) sum = (sum * 31 + data[i] + 7 * data[i + 1]) % 1000000007;
return sum;
"""

# whether viewport 1 shows a pure red, a pure green and a pure blue pixel
COLOURS_JS = """
const canvas = document.querySelector('.viewport[data-viewport="1"] canvas');
const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
const found = [false, false, false];
for (let i = 0; i < d.length; i += 4) {
  for (let c = 0; c < 3; c++) {
    if (d[i + c] > 200 && d[i + (c + 1) % 3] < 60 && d[i + (c + 2) % 3] < 60) found[c] = true;
  }
}
return found;
"""

# two stored samples (0 and 100) drawn under a window of 1..99 (centre 50)
RENDER_JS = """
const done = arguments[arguments.length - 1];
import("/static/js/viewer/render.js").then((render) => {
  const info = (photometric, intercept) => ({rows: 1, columns: 2, samples: 1, photometric,
    planar: false, ybr: false, bitsAllocated: 16, bitsStored: 16, signed: false, slope: 1,
    intercept});
  const draw = (photometric, intercept, center) => {
    const i = info(photometric, intercept);
    const frame = render.parseFrame(new Uint8Array(new Uint16Array([0, 100]).buffer), i);
    const image = render.renderInto(new ImageData(2, 1), frame, i, {center, width: 100});
    return [image.data[0], image.data[4]];
  };
  done({MONOCHROME2: draw("MONOCHROME2", 0, 50), MONOCHROME1: draw("MONOCHROME1", 0, 50),
    rescaled: draw("MONOCHROME2", -1024, -974)});
});
"""

# a cache of 10 bytes given frames of 4: a, b, c (a dropped), b read, d (c dropped)
CACHE_JS = """
const done = arguments[arguments.length - 1];
import("/static/js/viewer/frames.js").then(({FrameCache}) => {
  const cache = new FrameCache({limit: 10, parse: () => null});
  const kept = () => [...cache.frames.keys()].sort();
  for (const url of ["a", "b", "c"]) cache.store(url, {bytes: 4});
  const first = kept();
  cache.peek("b");
  cache.store("d", {bytes: 4});
  done([first, kept(), cache.size]);
});
"""


@pytest.fixture
def ct_study(api: ApiServer, tmp_path: Path) -> tuple[str, str]:
    """A CT series of CT_IMAGES images (pydicom's CT_small, each rolled
    sideways so every image differs) in one study; its UID and patient ID."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    pixels = source.pixel_array
    study_uid, series_uid, patient_id = generate_uid(), generate_uid(), "VIEWER-CT"
    files = []
    for number in range(1, CT_IMAGES + 1):
        ds = source.copy()
        ds.PatientID, ds.PatientName = patient_id, "VIEWER^CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber, ds.SeriesNumber = number, 1
        ds.PixelData = np.roll(pixels, number * 16, axis=1).tobytes()
        path = tmp_path / f"ct{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    store_files(api, files)
    return study_uid, patient_id


def store_files(api: ApiServer, files: list[Path]) -> None:
    store = FileStore(api.settings.data_dir, fsync=api.settings.fsync)
    summary = import_files(api.db, store, files, policy=IngestPolicy(), actor=SystemActor.IMPORT)
    assert summary.ok, summary.describe()


def open_viewer(page: Page, api: ApiServer, study_uid: str) -> None:
    page.sign_in(api.user("radiologist"))
    page.open(f"/viewer/{study_uid}")
    page.wait_for_path(f"/viewer/{study_uid}")
    drawn(page, 1, 0)


def drawn(page: Page, viewport: int, index: int) -> None:
    """Wait until viewport ``viewport`` has drawn image ``index`` (from 0) from its frame."""
    css = f'.viewport[data-viewport="{viewport}"]'
    page.wait_for(
        lambda driver: driver.execute_script(
            "const v = document.querySelector(arguments[0]);"
            "return v && v.dataset.drawnFrame === arguments[1];",
            css,
            str(index),
        )
    )


def from_frames(page: Page) -> bool:
    """Whether the active viewport drew its image from the frame's samples
    (not the node's rendered JPEG, its fallback)."""
    return bool(
        page.driver.execute_script("return Boolean(window.dicomNodeViewer.active.current.frame)")
    )


def pixels(page: Page, viewport: int = 1) -> int:
    return int(page.driver.execute_script(PIXELS_JS, viewport))


def overlay(page: Page, viewport: int = 1) -> str:
    return str(page.find(f'.viewport[data-viewport="{viewport}"] .overlay-image').text)


def press(page: Page, *keys: str) -> None:
    ActionChains(page.driver).send_keys(*keys).perform()


def dicomweb_requests(page: Page) -> list[str]:
    page.gather()
    return [url for url in page.requests if "/dicomweb/" in url]


def wait_idle(page: Page) -> None:
    page.wait_for(lambda driver: driver.execute_script("return window.dicomNodeViewer.idle"))


def test_the_viewer_shows_thumbnails_and_the_first_image_at_both_sizes(
    page: Page, api: ApiServer, ct_study: tuple[str, str]
) -> None:
    study_uid, _ = ct_study
    open_viewer(page, api, study_uid)
    thumbnails = page.driver.find_elements("css selector", ".series-button img")
    assert len(thumbnails) == 1
    page.wait_for(
        lambda driver: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", thumbnails[0]
        )
    )
    assert "Image 1 / 6" in overlay(page)
    patient = page.find('.viewport[data-viewport="1"] .overlay-patient').text
    assert "VIEWER CT" in patient and "VIEWER-CT" in patient
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    press(page, "?")
    page.wait_for(lambda driver: driver.execute_script("return shortcuts.open"))
    assert "Page Down" in page.find("#shortcuts").text
    press(page, Keys.ESCAPE)
    page.check_accessibility(exclude=[".viewport canvas"])
    page.screenshot("ct")


@ONE_SIZE
def test_keys_and_wheel_scroll_window_and_zoom_are_drawn_in_the_browser(
    page: Page, api: ApiServer, ct_study: tuple[str, str]
) -> None:
    study_uid, _ = ct_study
    open_viewer(page, api, study_uid)
    first = pixels(page)
    press(page, Keys.ARROW_DOWN)
    drawn(page, 1, 1)
    assert "Image 2 / 6" in overlay(page) and pixels(page) != first
    press(page, Keys.END)
    drawn(page, 1, 5)
    press(page, Keys.HOME)
    drawn(page, 1, 0)
    assert pixels(page) == first
    canvas = page.find('.viewport[data-viewport="1"] canvas')
    ActionChains(page.driver).scroll_from_origin(
        ScrollOrigin.from_element(canvas), 0, 120
    ).perform()
    drawn(page, 1, 1)
    press(page, Keys.PAGE_UP)
    drawn(page, 1, 0)

    # every frame is here now: windowing is the browser's alone
    wait_idle(page)
    before = len(dicomweb_requests(page))
    shown = pixels(page)
    press(page, "3")  # lung
    page.wait_for(lambda _: "W 1500 L -600" in overlay(page))
    lung = pixels(page)
    assert lung != shown
    ActionChains(page.driver).move_to_element(canvas).click_and_hold().move_by_offset(
        40, 25
    ).release().perform()
    page.wait_for(lambda _: "W 1500 L -600" not in overlay(page))
    assert pixels(page) != lung
    press(page, Keys.ARROW_DOWN)
    drawn(page, 1, 1)
    assert len(dicomweb_requests(page)) == before, "windowing or scrolling fetched again"

    press(page, "+")
    page.wait_for(lambda _: "Zoom 125%" in overlay(page))
    press(page, "r")
    page.wait_for(lambda _: "Zoom 100%" in overlay(page))

    # a measurement: its length from the points the viewer holds and the pixel spacing
    press(page, "m")
    ActionChains(page.driver).move_to_element_with_offset(canvas, -60, -40).click_and_hold()\
        .move_by_offset(120, 80).release().perform()  # fmt: skip
    page.wait_for(lambda _: "mm" in page.find(".overlay-measure").text)
    a, b = page.driver.execute_script(
        "const m = window.dicomNodeViewer.active.measure; return [m.a, m.b];"
    )
    expected = math.hypot((b[0] - a[0]) * CT_SPACING, (b[1] - a[1]) * CT_SPACING)
    assert expected > 10
    assert page.find(".overlay-measure").text == f"{expected:.1f} mm"
    page.screenshot("measured")

    # the render module itself: MONOCHROME1 shows its lowest value white, a
    # rescale moves the window in modality units (here: -1024 + stored)
    grey = page.driver.execute_async_script(RENDER_JS)
    assert grey == {"MONOCHROME2": [0, 255], "MONOCHROME1": [255, 0], "rescaled": [0, 255]}
    # the frame cache keeps to its bound, dropping the least recently used first
    assert page.driver.execute_async_script(CACHE_JS) == [["b", "c"], ["b", "d"], 8]


@ONE_SIZE
def test_cine_a_compressed_multiframe_and_priors_side_by_side(
    page: Page,
    api: ApiServer,
    dicomweb: DicomWeb,  # noqa: F811 (the fixture imported above)
) -> None:
    rle, jpeg_ls = dicomweb.load("rle", "jpeg-ls")  # one patient: each the other's prior
    open_viewer(page, api, rle.study_instance_uid)
    assert len(page.driver.find_elements("css selector", ".series-button")) == len(rle.instances)
    # emri_small_RLE: 10 frames of RLE, decoded by the node, windowed here
    multiframe = next(i for i in rle.instances if i.source == "emri_small_RLE.dcm")
    series_uid = str(pydicom.dcmread(multiframe.path, stop_before_pixels=True).SeriesInstanceUID)
    page.find(f'.series-button[data-series="{series_uid}"]').click()
    page.wait_for(lambda _: "Frame 1 / 10" in overlay(page))
    drawn(page, 1, 0)
    assert from_frames(page)
    page.find("#fps").clear()
    page.find("#fps").send_keys("30", Keys.TAB)
    page.find("#play").click()
    seen = set()

    def played(_: Any) -> bool:
        seen.add(overlay(page).split(" · ")[0])
        return len(seen) >= 4

    page.wait_for(played)
    press(page, " ")
    assert page.find("#play").text == "Play"

    # SC_rgb_rle: RGB bands, RLE: decoded by the node, drawn as it comes
    colour = next(i for i in rle.instances if i.source == "SC_rgb_rle.dcm")
    series_uid = str(pydicom.dcmread(colour.path, stop_before_pixels=True).SeriesInstanceUID)
    page.find(f'.series-button[data-series="{series_uid}"]').click()
    page.wait_for(lambda _: "Frame" not in overlay(page))
    drawn(page, 1, 0)
    assert from_frames(page)
    red, green, blue = page.driver.execute_script(COLOURS_JS)
    assert red and green and blue, "the RGB bands are not drawn in colour"

    prior = page.find(f'.prior-open[data-study="{jpeg_ls.study_instance_uid}"]')
    prior.click()
    drawn(page, 2, 0)
    second = page.find('.viewport[data-viewport="2"] .overlay-patient').text
    assert jpeg_ls.patient_id in second
    page.check_accessibility(exclude=[".viewport canvas"])
    page.screenshot("priors")
    page.find("#close-second").click()
    page.wait_for(lambda driver: not driver.find_elements("css selector", '[data-viewport="2"]'))


@ONE_SIZE
def test_a_referring_physician_cannot_open_a_study_not_theirs(page: Page, api: ApiServer) -> None:
    other = seed_study(api.db)
    page.expected_errors.append(r"404 \(Not Found\)")
    page.sign_in(api.user("referring_physician"))
    page.open(f"/viewer/{other.study_uid}")
    page.wait_for_path(f"/viewer/{other.study_uid}")
    assert page.find("h1").text == "Not found"
    assert not page.driver.find_elements("css selector", "#viewer")
