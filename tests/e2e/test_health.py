from __future__ import annotations

import httpx

from dicom_node.node import Node


def test_health_reports_database_and_scp_up(node: Node) -> None:
    response = httpx.get(f"http://127.0.0.1:{node.http_port}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": True,
        "components": {"dicom": True, "scheduler": True},
    }


def test_health_is_503_when_the_scp_is_down(node: Node) -> None:
    assert node.dicom is not None
    node.dicom.stop(grace_seconds=0)
    node.dicom = None  # let the fixture's stop() skip it
    response = httpx.get(f"http://127.0.0.1:{node.http_port}/health", timeout=10)
    assert response.status_code == 503
    assert response.json()["components"]["dicom"] is False
    assert response.json()["status"] == "degraded"


def test_openapi_document_and_docs_page_are_served(node: Node) -> None:
    base = f"http://127.0.0.1:{node.http_port}"
    spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
    assert spec["info"]["title"] == "dicom-node"
    assert "/health" in spec["paths"]
    docs = httpx.get(f"{base}/docs", timeout=10)
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
