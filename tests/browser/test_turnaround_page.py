"""The turnaround dashboard in a real browser (issue 18): the charts are drawn
with the figures GET /api/turnaround answers for a known dataset (the one of
tests/api/test_turnaround.py), their tables say the same, a role without
turnaround:read gets the error page, and both pages of this area fit a
desktop and a tablet."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.support.ui import Select

from tests.api.conftest import ApiServer
from tests.api.test_turnaround import WINDOW, build
from tests.browser.conftest import Page

pytestmark = pytest.mark.browser

# the dates of WINDOW as the page's inputs take them (the browser runs in UTC here)
DATES = "from=2026-02-01&to=2026-02-28"
CHARTED = ["order_to_exam", "exam_to_final", "order_to_final"]


@pytest.fixture
def window() -> tuple[int, int]:
    """The journeys at the desktop size; the layout test takes both."""
    return (1280, 800)


def _figure(value: float | None) -> str:
    """A figure as the tables print it."""
    if value is None:
        return "no data"
    rounded = round(value, 1)
    return str(int(rounded)) if rounded == int(rounded) else str(rounded)


def _api(api: ApiServer, group_by: str) -> dict[str, Any]:
    response = api.client("admin").get("/api/turnaround", params={**WINDOW, "group_by": group_by})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _label(group: str | None, group_by: str) -> str:
    return f"(no {group_by})" if group is None else group


def _open(page: Page, query: str) -> list[Any]:
    page.driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})
    page.open(f"/turnaround?{query}")
    return page.wait_for(
        lambda _: (
            len(found := page.driver.find_elements("css selector", "#charts figure")) == 4 and found
        )
    )


def _bars(figure: Any) -> dict[tuple[str, str], str]:
    return {
        (bar.get_attribute("data-group"), bar.get_attribute("data-series")): bar.get_attribute(
            "data-value"
        )
        for bar in figure.find_elements("css selector", "rect.bar")
    }


def _table(page: Page, figure: Any) -> list[list[str]]:
    figure.find_element("css selector", "details summary").click()
    page.wait_for(lambda _: figure.find_element("css selector", "details table").is_displayed())
    return [
        [cell.text for cell in row.find_elements("css selector", "th, td")]
        for row in figure.find_elements("css selector", "details tbody tr")
    ]


def _assert_charts_match(page: Page, figures: list[Any], report: dict[str, Any]) -> None:
    group_by = report["group_by"]
    groups = [
        (_label(g["group"], group_by), {m["metric"]: m for m in g["metrics"]})
        for g in report["groups"]
    ]
    for figure, metric in zip(figures, CHARTED, strict=False):
        bars = _bars(figure)
        expected = {}
        for label, metrics in groups:
            stats = metrics[metric]
            expected[(label, "Median")] = stats["median_minutes"]
            expected[(label, "90th percentile")] = stats["p90_minutes"]
        assert {key: float(v) if v else None for key, v in bars.items()} == expected, metric
        assert _table(page, figure) == [
            [
                label,
                str(metrics[metric]["count"]),
                str(metrics[metric]["open"]),
                _figure(metrics[metric]["median_minutes"]),
                _figure(metrics[metric]["p90_minutes"]),
                _figure(metrics[metric]["within_sla_percent"]),
            ]
            for label, metrics in groups
        ]
        # the chart's text alternative names each group
        chart = figure.find_element("css selector", "svg.chart-svg")
        described = page.find(f"#{chart.get_dom_attribute('aria-describedby')}")
        assert all(label in described.text for label, _ in groups)
    breaches = figures[3]
    over = {}
    for label, metrics in groups:
        for metric, name in zip(
            CHARTED, ["Order to exam", "Exam to signed", "Order to signed"], strict=True
        ):
            within = metrics[metric]["within_sla_percent"]
            over[(label, name)] = None if within is None else round(100 - within, 1)
    assert {key: float(v) if v else None for key, v in _bars(breaches).items()} == over
    assert _table(page, breaches) == [
        [
            label,
            *(
                _figure(over[(label, name)])
                for name in ["Order to exam", "Exam to signed", "Order to signed"]
            ),
        ]
        for label, _ in groups
    ]


def test_the_dashboard_draws_the_services_figures_by_priority_and_modality(
    page: Page, api: ApiServer
) -> None:
    build(api)
    page.sign_in(api.user("scheduler"))
    figures = _open(page, f"{DATES}&group_by=priority")
    by_priority = _api(api, "priority")
    assert [g["group"] for g in by_priority["groups"]] == ["stat", "urgent", "routine"]
    _assert_charts_match(page, figures, by_priority)
    # the whole window's table: the service's figures without grouping
    (whole,) = _api(api, "none")["groups"]
    rows = {
        row.get_attribute("data-metric"): [c.text for c in row.find_elements("css selector", "td")]
        for row in page.driver.find_elements("css selector", "#overall-table tbody tr")
    }
    for stats in whole["metrics"]:
        assert rows[stats["metric"]] == [
            str(stats["count"]),
            str(stats["open"]),
            _figure(stats["median_minutes"]),
            _figure(stats["p90_minutes"]),
            _figure(stats["within_sla_percent"]),
        ]
    assert "stat 1 h" in page.find("#sla-note").text or "stat 60 min" in page.find("#sla-note").text
    page.check_accessibility()
    page.driver.execute_script("document.getElementById('charts').scrollIntoView()")
    page.screenshot("by-priority")

    # by modality, chosen in the form
    Select(page.find("#t-group")).select_by_value("modality")
    page.driver.find_element("xpath", "//button[normalize-space()='Show']").click()
    page.wait_for(lambda _: "group_by=modality" in page.driver.current_url)
    by_modality = _api(api, "modality")
    labels = [_label(g["group"], "modality") for g in by_modality["groups"]]
    page.wait_for(
        lambda _: (
            [
                t.text
                for t in page.driver.find_elements(
                    "css selector", "#charts figure:first-child text.group-label"
                )
            ]
            == labels
        )
    )
    figures = page.driver.find_elements("css selector", "#charts figure")
    _assert_charts_match(page, figures, by_modality)
    page.check_accessibility()


def test_an_empty_window_and_a_refused_role(page: Page, api: ApiServer) -> None:
    page.sign_in(api.user("scheduler"))
    page.driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})
    page.open("/turnaround?from=2020-01-01&to=2020-01-31&group_by=priority")
    page.wait_for(lambda _: "Nothing started" in page.find("#charts").text)
    page.driver.find_element("xpath", "//button[normalize-space()='Sign out']").click()
    page.wait_for_path("/sign-in")
    page.expected_errors.append(r"/turnaround - Failed to load resource: .* status of 403")
    page.sign_in(api.user("technologist"))
    links = [a.text for a in page.driver.find_elements("css selector", "nav.main-nav a")]
    assert "Turnaround" not in links
    page.open("/turnaround")
    alert = page.wait_for(lambda _: page.driver.find_elements("css selector", "[role=alert]"))
    assert "turnaround" in alert[0].text
    assert page.driver.title == "Error 403 - dicom-node"


@pytest.mark.parametrize("window", [(1280, 800), (768, 1024)], ids=["1280x800", "768x1024"])
def test_the_turnaround_and_audit_pages_fit_a_desktop_and_a_tablet(
    page: Page, api: ApiServer, window: tuple[int, int]
) -> None:
    build(api)
    page.sign_in(api.user("admin"))
    figures = _open(page, f"{DATES}&group_by=radiologist")
    width = page.driver.execute_script("return document.documentElement.clientWidth")
    for figure in figures:
        box = figure.find_element("css selector", "svg.chart-svg").rect
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the turnaround page scrolls sideways by {overflow}px"
    page.screenshot("turnaround")
    page.open("/audit")
    page.wait_for(lambda _: page.driver.find_elements("css selector", "#audit-rows tr"))
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the audit page scrolls sideways by {overflow}px"
    # the table scrolls inside its own frame where it is wider than the page
    frame = page.find(".table-wrap")
    assert frame.value_of_css_property("overflow-x") == "auto"
    assert frame.rect["width"] <= width
    page.screenshot("audit")
