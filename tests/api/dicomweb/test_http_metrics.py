"""HTTP requests in ``GET /metrics`` (api/http_metrics.py): each DICOMweb
service, the API and the event stream counted apart by status class, timed, and
the bytes of the answers added up, over a live server.

Counters are process-global and other tests of this process use the same
server code, so every assertion is on the change across this test's own
requests.
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.http_metrics import service_of, status_class
from dicom_node.metrics import HTTP_SERVICES
from tests.api.dicomweb.conftest import DicomWeb
from tests.support import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.mark.parametrize(
    ("method", "path", "service"),
    [
        ("GET", "/dicomweb/studies", "dicomweb_qido"),
        ("GET", "/dicomweb/studies/1.2/series", "dicomweb_qido"),
        ("GET", "/dicomweb/studies/1.2/series/1.3/instances", "dicomweb_qido"),
        ("GET", "/dicomweb/instances", "dicomweb_qido"),
        ("GET", "/dicomweb/studies/1.2", "dicomweb_wado"),
        ("GET", "/dicomweb/studies/1.2/metadata", "dicomweb_wado"),
        ("GET", "/dicomweb/studies/1.2/series/1.3/instances/1.4/frames/1,2", "dicomweb_wado"),
        ("GET", "/dicomweb/studies/1.2/series/1.3/instances/1.4/rendered", "dicomweb_rendered"),
        ("GET", "/dicomweb/studies/1.2/thumbnail", "dicomweb_rendered"),
        ("POST", "/dicomweb/studies", "dicomweb_stow"),
        ("POST", "/dicomweb/studies/1.2", "dicomweb_stow"),
        ("GET", "/api/events", "events"),
        ("GET", "/api/worklist", "api"),
        ("GET", "/metrics", "metrics"),
        ("GET", "/health", "health"),
        ("GET", "/docs", "docs"),
        ("GET", "/docs-assets/swagger-ui.css", "docs"),
        ("GET", "/", "pages"),
        ("POST", "/sign-in", "pages"),
        ("GET", "/static/css/app.css", "pages"),
        ("GET", "/nowhere", "other"),
        ("GET", "/dicomwebx/studies", "other"),
    ],
)
def test_service_of_a_request(method: str, path: str, service: str) -> None:
    assert service_of(method, path) == service
    assert service in HTTP_SERVICES


def test_status_class() -> None:
    assert [status_class(s) for s in (200, 204, 303, 404, 503, None)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "error",
    ]


def test_dicomweb_requests_are_counted_by_service_and_status(dicomweb: DicomWeb) -> None:
    (study,) = dicomweb.load("rle")
    uid = study.study_instance_uid
    admin = dicomweb.api.client("admin")
    before = scrape(admin)

    assert admin.get("/dicomweb/studies", params={"StudyInstanceUID": uid}).status_code == 200
    assert admin.get("/dicomweb/studies", params={"bogus_parameter": "1"}).status_code == 400
    retrieved = admin.get(f"/dicomweb/studies/{uid}")
    assert retrieved.status_code == 200
    assert admin.get(f"/dicomweb/studies/{uid}/thumbnail").status_code == 200
    assert admin.get("/dicomweb/studies/1.2.3.999").status_code == 404
    assert admin.get("/api/me").status_code == 200

    requests = "dicom_node_http_requests_total"
    expected = {
        ("dicomweb_qido", "2xx"): 1,
        ("dicomweb_qido", "4xx"): 1,
        ("dicomweb_wado", "2xx"): 1,
        ("dicomweb_wado", "4xx"): 1,
        ("dicomweb_rendered", "2xx"): 1,
        ("dicomweb_stow", "2xx"): 0,
        ("api", "2xx"): 1,
    }

    def counted(samples: Samples) -> dict[tuple[str, str], float]:
        return {
            (service, status): delta(before, samples, requests, service=service, status=status)
            for service, status in expected
        }

    # a request is counted once its last byte has gone, which its client may see
    # a moment before the server's count: wait for the counts, do not race them
    scrapes: list[Samples] = []

    def settled() -> bool:
        scrapes.append(scrape(admin))
        return counted(scrapes[-1]) == expected

    assert wait_for(settled), counted(scrapes[-1])
    after = scrapes[-1]
    assert delta(before, after, requests, service="metrics", status="2xx") >= 1
    # the study's bytes went out as WADO-RS, as many as the client read
    sent = delta(before, after, "dicom_node_http_response_bytes_total", service="dicomweb_wado")
    assert sent >= len(retrieved.content)
    timed = "dicom_node_http_request_seconds_count"
    assert delta(before, after, timed, service="dicomweb_wado") == 2
    # no UID in any label: labels are the fixed vocabularies only
    assert not any(uid in value for _, labels in after for _, value in labels)
