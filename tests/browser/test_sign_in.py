"""Sign-in, the home page and sign-out in a real browser (issue 18), at a
desktop and a tablet size: by mouse-free keyboard too, with visible focus,
readable contrast, the user's time zone, no console error and no request
leaving the node."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from tests.api.conftest import PASSWORD, ApiServer
from tests.browser.conftest import Page

pytestmark = pytest.mark.browser

# WCAG 2.1 AA, 1.4.3: normal text
AA_TEXT = 4.5

# the contrast of each element's text colour against the background behind it
# (the first opaque one up the tree), by the WCAG relative-luminance formula
CONTRAST_JS = """
function rgb(value) { return value.match(/[\\d.]+/g).map(Number); }
function luminance(c) {
  const [r, g, b] = c.slice(0, 3).map(v => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function background(element) {
  for (let e = element; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c;
  }
  return [255, 255, 255];
}
return Array.from(document.querySelectorAll(arguments[0])).map(e => {
  const a = luminance(rgb(getComputedStyle(e).color)), b = luminance(background(e));
  return [e.tagName + "." + e.className, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
});
"""
CHECKED_TEXT = "h1, p, label, a, button, dt, dd, code, .role, .message"


def _assert_readable(page: Page) -> None:
    """AA contrast of the page's text, and no sideways scrolling at this width."""
    ratios = page.driver.execute_script(CONTRAST_JS, CHECKED_TEXT)
    assert ratios, "no text checked"
    low = [(name, round(ratio, 2)) for name, ratio in ratios if ratio < AA_TEXT]
    assert not low, f"below AA contrast: {low}"
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"


def _tab_to(page: Page, element_id: str, limit: int = 12) -> None:
    for _ in range(limit):
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
        if page.active_id() == element_id:
            return
    raise AssertionError(f"Tab never reached #{element_id}")


def _assert_focus_visible(page: Page) -> None:
    style = page.driver.execute_script(
        "const s = getComputedStyle(document.activeElement);"
        "return [s.outlineStyle, parseFloat(s.outlineWidth)];"
    )
    assert style[0] != "none" and style[1] >= 2, f"no visible focus: {style}"


def test_a_radiologist_signs_in_sees_the_home_page_and_signs_out(
    page: Page, api: ApiServer
) -> None:
    name = api.user("radiologist", display_name="Dr Ada Reader")
    # a reading room far from UTC: the page's times follow the browser's zone
    page.driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Pacific/Auckland"})
    page.open("/")
    page.wait_for_path("/sign-in")
    assert page.driver.title == "Sign in - dicom-node"
    _assert_readable(page)
    page.check_accessibility()
    page.screenshot("sign-in")
    page.find("input#username").send_keys(name)
    page.find("input#password").send_keys(PASSWORD)
    page.driver.find_element("xpath", "//button[normalize-space()='Sign in']").click()
    page.wait_for_path("/")
    assert page.find("h1").text == "Signed in as Dr Ada Reader"
    assert "Radiologist" in page.find("header").text
    assert page.driver.title == "Home - dicom-node"
    page.wait_for(lambda _: "Pacific/Auckland" in page.find("footer").text)
    loaded = page.find("time[data-local]")
    assert loaded.text != loaded.get_attribute("datetime")  # rewritten in the local zone
    # the session cookie is out of the page's scripts' reach (HttpOnly)
    assert "dicom_node_session" not in page.driver.execute_script("return document.cookie")
    _assert_readable(page)
    page.check_accessibility()
    # the header links only to what the role may open (api/pages/paths.py)
    links = [a.text for a in page.driver.find_elements("css selector", "nav.main-nav a")]
    assert "Worklist" in links and "Administration" not in links and "Audit trail" not in links
    page.screenshot("home")
    page.driver.find_element("xpath", "//button[normalize-space()='Sign out']").click()
    page.wait_for_path("/sign-in")
    page.open("/")  # signed out: back to the form
    page.wait_for_path("/sign-in")
    assert not page.problems()


def test_a_wrong_password_shows_a_message_not_json(page: Page, api: ApiServer) -> None:
    # the 401 of the page itself is a console entry of Chromium's; nothing else may be
    page.expected_errors.append(r"/sign-in - Failed to load resource: .* status of 401")
    name = api.user("radiologist")
    page.open("/sign-in")
    page.wait_for_path("/sign-in")
    page.find("input#username").send_keys(name)
    page.find("input#password").send_keys("not the password")
    page.find("input#password").submit()
    alert = page.wait_for(lambda _: page.driver.find_elements("css selector", "[role=alert]"))
    assert "wrong username or password" in alert[0].text
    body = page.find("body").text
    assert '"error"' not in body and "{" not in body
    # the username stays filled in, the password does not
    assert page.find("input#username").get_attribute("value") == name
    assert page.find("input#password").get_attribute("value") == ""
    _assert_readable(page)
    page.screenshot("wrong-password")
    assert not page.problems()


def test_sign_in_and_out_with_the_keyboard_alone(page: Page, api: ApiServer) -> None:
    name = api.user("radiologist")
    page.open("/sign-in")
    page.wait_for_path("/sign-in")
    # the first Tab reaches the skip link, which shows itself
    ActionChains(page.driver).send_keys(Keys.TAB).perform()
    skip = page.driver.switch_to.active_element
    assert skip.text == "Skip to main content" and skip.is_displayed()
    _assert_focus_visible(page)
    _tab_to(page, "username")
    _assert_focus_visible(page)
    ActionChains(page.driver).send_keys(name).perform()
    _tab_to(page, "password", limit=1)
    _assert_focus_visible(page)
    page.screenshot("keyboard-focus")
    ActionChains(page.driver).send_keys(PASSWORD, Keys.ENTER).perform()
    page.wait_for_path("/")
    # sign out by keyboard: Tab to the button, Enter
    for _ in range(12):
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
        if page.driver.switch_to.active_element.text == "Sign out":
            break
    else:
        raise AssertionError("Tab never reached the Sign out button")
    _assert_focus_visible(page)
    ActionChains(page.driver).send_keys(Keys.ENTER).perform()
    page.wait_for_path("/sign-in")
    assert not page.problems()
