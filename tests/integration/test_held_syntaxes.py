"""What the store holds per SOP class and transfer syntax, for the C-GET
acceptor's choice (services/retrieve.py HeldSyntaxes): counted over the most
recent instances, cached for a while."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from dicom_node.db.engine import Database
from dicom_node.services.ingest import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.retrieve import HeldSyntaxes
from dicom_node.storage import FileStore
from tests.dicomfiles import CT_IMAGE_STORAGE, ct_dataset, to_bytes


def _store(db: Database, store: FileStore, syntax: str, count: int) -> None:
    study = generate_uid()
    for _ in range(count):
        ds = ct_dataset(study_uid=study)
        ds.file_meta.TransferSyntaxUID = syntax
        result = store_instance(
            db,
            store,
            part10=to_bytes(ds),
            source=Source(calling_ae_title="T"),
            policy=IngestPolicy(),
        )
        assert result.outcome is StoreOutcome.STORED


def test_counts_per_sop_class_over_the_recent_instances_cached_for_the_ttl(
    db: Database, tmp_path: Path
) -> None:
    store = FileStore(tmp_path / "store")
    now = [0.0]
    held = HeldSyntaxes(db, ttl=60.0, sample=5, clock=lambda: now[0])
    assert held.of(CT_IMAGE_STORAGE) == {}

    _store(db, store, ExplicitVRLittleEndian, 3)
    assert held.of(CT_IMAGE_STORAGE) == {}  # cached: read again after the TTL
    now[0] = 60.0
    assert held.of(CT_IMAGE_STORAGE) == {ExplicitVRLittleEndian: 3}

    _store(db, store, ImplicitVRLittleEndian, 4)
    now[0] = 120.0
    # the 5 most recent: 4 Implicit, 1 Explicit
    assert held.of(CT_IMAGE_STORAGE) == {ImplicitVRLittleEndian: 4, ExplicitVRLittleEndian: 1}
    assert held.of("1.2.840.10008.5.1.4.1.1.4") == {}
