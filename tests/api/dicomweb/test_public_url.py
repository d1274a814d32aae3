"""settings.public_base_url: the URLs in DICOMweb answers (QIDO's RetrieveURL,
the BulkDataURIs of metadata) name the node as its clients reach it, whatever
Host header a request carried (dicomweb-client sends it without the port)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.settings import Settings
from tests.api.dicomweb.conftest import DicomWeb
from tests.conftest import node_settings

PUBLIC = "https://pacs.example.org:8443/imaging"


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    return node_settings(db_url, tmp_path / "data", public_base_url=PUBLIC + "/")


def test_answers_name_the_node_by_its_public_url(dicomweb: DicomWeb) -> None:
    (study,) = dicomweb.load("rle")
    client = dicomweb.client("radiologist")
    (found,) = client.search_for_studies(
        search_filters={"StudyInstanceUID": study.study_instance_uid}
    )
    assert found["00081190"]["Value"] == [f"{PUBLIC}/dicomweb/studies/{study.study_instance_uid}"]
    # a BulkDataURI of the pixel data, from the instance's metadata
    (first,) = client.search_for_instances(study.study_instance_uid, limit=1)
    series_uid = first["0020000E"]["Value"][0]
    sop_uid = first["00080018"]["Value"][0]
    metadata = client.retrieve_instance_metadata(study.study_instance_uid, series_uid, sop_uid)
    assert metadata["7FE00010"]["BulkDataURI"].startswith(
        f"{PUBLIC}/dicomweb/studies/{study.study_instance_uid}/series/{series_uid}"
        f"/instances/{sop_uid}/"
    )


def test_a_public_url_with_a_query_is_refused() -> None:
    with pytest.raises(ValueError, match="without query"):
        Settings(public_base_url="https://pacs.example.org/?x=1")
