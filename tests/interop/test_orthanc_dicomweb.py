"""Orthanc's DICOMweb plugin pulls studies from the node over WADO-RS (issue 17,
item 6), as a site's Orthanc (or any DICOMweb client that cannot type a
password) would: the node is a DICOMweb server in the plugin's configuration,
authenticated with a service account's API key sent as a bearer token in the
plugin's ``HttpHeaders``.

Orthanc asks ``POST /dicom-web/servers/node/retrieve`` for a study; its plugin
runs the QIDO-RS and WADO-RS requests against the node and stores what comes
back. Each instance must arrive byte-identical to the node's stored file (the
node sends what it holds, in its stored transfer syntax: Orthanc asks for no
other), and the node's audit trail must name the service account.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import ADMIN, ADMIN_PASSWORD, LOGS, NodeUnderTest
from tests.interop.netns import NetNamespace
from tests.interop.peers import ORTHANC, ORTHANC_DICOMWEB_PLUGIN, Orthanc
from tests.interop.studies import Study
from tests.support import require

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning"),
]

ORTHANC_WEB = ("ORTHANC_WEB", 4244, 8044)
# compressed and uncompressed syntaxes, single and multi-frame, one study each
PULLED = ("mixed", "rle")
ACCOUNT = "orthanc-dicomweb"


def _reader_key(node: NodeUnderTest) -> str:
    """A service account with a key scoped to reading images, made by an admin."""
    admin = node.signed_in(ADMIN, ADMIN_PASSWORD)
    try:
        account = admin.post(
            "/api/service-accounts",
            json={"name": ACCOUNT, "role": "technologist", "description": "Orthanc DICOMweb"},
        )
        assert account.status_code == 201, account.text
        key = admin.post(
            f"/api/service-accounts/{account.json()['id']}/keys",
            json={"scopes": ["read-images"], "expires_in_days": 30},
        )
        assert key.status_code == 201, key.text
        return str(key.json()["key"])
    finally:
        admin.close()


@pytest.fixture(scope="module")
def orthanc(
    netns: NetNamespace, node: NodeUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Orthanc]:
    require(Path(ORTHANC).exists(), "Orthanc is not installed (apt-get install orthanc)")
    require(
        Path(ORTHANC_DICOMWEB_PLUGIN).exists(),
        "Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)",
    )
    aet, dicom_port, http_port = ORTHANC_WEB
    with netns.entered():  # module fixtures run before the per-test _inside
        key = _reader_key(node)
        started = Orthanc(
            tmp_path_factory.mktemp("orthanc-dicomweb"),
            aet=aet,
            dicom_port=dicom_port,
            http_port=http_port,
            node_port=node.dicom_port,
            plugins=[ORTHANC_DICOMWEB_PLUGIN],
            extra_config={
                "DicomWeb": {
                    "Enable": True,
                    "Root": "/dicom-web/",
                    "Servers": {
                        "node": {
                            "Url": f"http://127.0.0.1:{node.http_port}/dicomweb/",
                            "HttpHeaders": {"Authorization": f"Bearer {key}"},
                        }
                    },
                }
            },
        )
    LOGS["orthanc-dicomweb"] = started.log_tail
    try:
        yield started
    finally:
        LOGS.pop("orthanc-dicomweb", None)
        started.stop()


@pytest.mark.parametrize("kind", PULLED)
def test_orthanc_pulls_a_study_over_wado_rs_byte_identical(
    orthanc: Orthanc, node: NodeUnderTest, studies: dict[str, Study], kind: str
) -> None:
    study = studies[kind]
    orthanc.clear()
    answer = orthanc.http.post(
        "/dicom-web/servers/node/retrieve",
        json={"Resources": [{"Study": study.study_instance_uid}]},
    )
    assert answer.status_code == 200, answer.text
    received = orthanc.instances()
    assert set(received) == study.sop_instance_uids
    for instance in study.instances:
        stored = node.stored_path(instance.sop_instance_uid).read_bytes()
        assert orthanc.file(received[instance.sop_instance_uid]) == stored, instance.source
    # the reads are audited per study and request, with the service account as actor
    events = node.audit_events(
        event_code="110103", actor=ACCOUNT, study_instance_uid=study.study_instance_uid
    )
    assert events, "no 110103 of the service account for the study"
    assert sum(event["details"]["instances"] for event in events) >= len(study.instances)


def test_orthanc_finds_the_node_s_studies_over_qido_rs(
    orthanc: Orthanc, studies: dict[str, Study]
) -> None:
    study = studies["mixed"]
    answer = orthanc.http.post(
        "/dicom-web/servers/node/qido",
        json={"Uri": "/studies", "Arguments": {"StudyInstanceUID": study.study_instance_uid}},
    )
    assert answer.status_code == 200, answer.text
    # the plugin re-emits the answer in Orthanc's own JSON form (one string a value)
    found = answer.json()
    assert [item["0020000D"]["Value"] for item in found] == [study.study_instance_uid]
    assert found[0]["00100020"]["Value"] == study.patient_id
