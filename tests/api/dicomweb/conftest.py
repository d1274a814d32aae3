"""DICOMweb served for real: the API (tests/api/conftest.py ``api``) over a
database and store holding pydicom's test files, and real DICOMweb clients.

``dicomweb_studies``: pydicom's test files as the interop tests' studies
(tests/interop/studies.py: distinct UIDs, each file in its own transfer
syntax), written once per session. ``dicomweb`` imports the ones a test names
into the API's node (``dicomweb.load("mixed", "rle")``) as `dicom-node import`
does, and makes clients: ``dicomweb.client(role)`` is a dicomweb-client
``DICOMwebClient`` signed in as a new user of that role (``token=`` to use a
given bearer token or API key instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from dicomweb_client.api import DICOMwebClient

from dicom_node.domain.audit import SystemActor
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.results import IngestPolicy
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.interop.studies import Study, build_studies


@pytest.fixture(scope="session")
def dicomweb_studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Study]:
    return build_studies(tmp_path_factory.mktemp("dicomweb-studies"))


@dataclass
class DicomWeb:
    api: ApiServer
    studies: dict[str, Study]
    clients: list[DICOMwebClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.api.base_url}/dicomweb"

    @property
    def store(self) -> FileStore:
        return FileStore(self.api.settings.data_dir, fsync=self.api.settings.fsync)

    def load(self, *kinds: str) -> list[Study]:
        """Import these studies into the node; returns them."""
        chosen = [self.studies[kind] for kind in kinds]
        files = [instance.path for study in chosen for instance in study.instances]
        summary = import_files(
            self.api.db, self.store, files, policy=IngestPolicy(), actor=SystemActor.IMPORT
        )
        assert summary.ok, summary.describe()
        return chosen

    def token(self, role: str, **extra: object) -> str:
        return self.api.token(self.api.user(role, **extra))

    def client(self, role: str | None = None, *, token: str | None = None) -> DICOMwebClient:
        """A dicomweb-client on /dicomweb with a new ``role`` user's token, or ``token``."""
        if token is None:
            assert role is not None
            token = self.token(role)
        client = DICOMwebClient(url=self.url, headers={"Authorization": f"Bearer {token}"})
        self.clients.append(client)
        return client


@pytest.fixture
def dicomweb(api: ApiServer, dicomweb_studies: dict[str, Study]) -> Iterator[DicomWeb]:
    served = DicomWeb(api, dicomweb_studies)
    yield served
    for client in served.clients:
        client._session.close()  # dicomweb-client has no close()


__all__ = ["DicomWeb"]
