"""dicomweb-client on /dicomweb with service accounts' API keys: each key reads
or stores only as its scopes allow, and the requests' audit events name the
account (the keys themselves: tests/api/test_service_accounts.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pydicom
import pytest
from requests import HTTPError
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from tests.api.dicomweb.conftest import DicomWeb


def _account(admin: httpx.Client, name: str, role: str) -> int:
    response = admin.post("/api/service-accounts", json={"name": name, "role": role})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _key(admin: httpx.Client, account: int, *scopes: str) -> str:
    response = admin.post(f"/api/service-accounts/{account}/keys", json={"scopes": list(scopes)})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return str(body["key"])


def test_dicomweb_client_reads_and_stores_with_keys(dicomweb: DicomWeb) -> None:
    """dicomweb-client with a key: QIDO, metadata and STOW, each only with its scope."""
    api = dicomweb.api
    (held,) = dicomweb.load("rle")
    admin = api.client("admin")
    viewer_key = _key(admin, _account(admin, "viewer", "radiologist"), "read-images")
    pipeline_key = _key(admin, _account(admin, "pipeline", "technologist"), "store-images")
    viewer = dicomweb.client(token=viewer_key)
    pipeline = dicomweb.client(token=pipeline_key)

    found = viewer.search_for_studies()
    assert [s["0020000D"]["Value"][0] for s in found] == [held.study_instance_uid]
    metadata = viewer.retrieve_study_metadata(held.study_instance_uid)
    assert len(metadata) == len(held.instances)
    # QIDO at the lower levels, WADO of the study, a frame and a rendered image
    series = viewer.search_for_series(held.study_instance_uid)
    assert {s["0020000E"]["Value"][0] for s in series} == {
        m["0020000E"]["Value"][0] for m in metadata
    }
    instances = viewer.search_for_instances(held.study_instance_uid)
    assert {i["00080018"]["Value"][0] for i in instances} == held.sop_instance_uids
    retrieved = viewer.retrieve_study(held.study_instance_uid)
    assert {str(ds.SOPInstanceUID) for ds in retrieved} == held.sop_instance_uids
    first = instances[0]
    ids = (
        held.study_instance_uid,
        first["0020000E"]["Value"][0],
        first["00080018"]["Value"][0],
    )
    (frame,) = viewer.retrieve_instance_frames(*ids, frame_numbers=[1])
    assert frame
    rendered = viewer.retrieve_instance_rendered(*ids, media_types=("image/png",))
    assert rendered.startswith(b"\x89PNG")
    new = dicomweb.studies["mixed"]
    datasets = [pydicom.dcmread(instance.path) for instance in new.instances]
    with pytest.raises(HTTPError) as refused:
        viewer.store_instances(datasets=datasets)
    assert refused.value.response.status_code == 403

    answer = pipeline.store_instances(datasets=datasets)
    assert "FailedSOPSequence" not in answer
    with pytest.raises(HTTPError) as refused:
        pipeline.search_for_studies()
    assert refused.value.response.status_code == 403
    # the requests' own events name the service accounts
    with api.db.read() as session:
        codes = set(session.execute(select(AuditEvent.event_code, AuditEvent.actor)).all())
    assert ("110112", "viewer") in codes
    assert ("110103", "viewer") in codes
    assert ("110104", "pipeline") in codes
