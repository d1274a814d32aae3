"""Storage Commitment push model: N-ACTION, then an N-EVENT-REPORT to the requester."""

from __future__ import annotations

import threading

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy
from dicom_node.domain.audit import SystemActor
from dicom_node.node import Node
from dicom_node.services.ingest.importing import import_files, iter_files
from dicom_node.services.ingest.instances import IngestPolicy
from tests.support import SAMPLE_DIR, free_port

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


class Modality:
    """A modality's own Storage Commitment SCU side: it receives the report."""

    def __init__(self) -> None:
        self.port = free_port()
        self.reports: list[tuple[int, Dataset]] = []
        self.received = threading.Event()
        ae = AE(ae_title="MODALITY")
        # accept the node acting as SCP (it sends the N-EVENT-REPORT)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._report)],
        )

    def _report(self, event: evt.Event) -> int:
        self.reports.append((int(event.request.EventTypeID), event.event_information))  # type: ignore[union-attr]
        self.received.set()
        return 0x0000

    def request(
        self, node: Node, references: list[tuple[str, str]], calling: str = "MODALITY"
    ) -> int:
        ae = AE(ae_title=calling)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
        assert assoc.is_established
        info = Dataset()
        info.TransactionUID = generate_uid()
        items = []
        for sop_class, sop_uid in references:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_uid
            items.append(item)
        info.ReferencedSOPSequence = items
        try:
            status, _ = assoc.send_n_action(
                info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE
            )
            return int(status.Status)
        finally:
            assoc.release()


def test_commitment_reports_held_and_failed_instances_and_completes_the_study(make_node) -> None:  # type: ignore[no-untyped-def]
    modality = Modality()
    try:
        node: Node = make_node(peers=f"MODALITY@127.0.0.1:{modality.port}")
        assert node.db is not None and node.store is not None
        import_files(
            node.db,
            node.store,
            list(iter_files([SAMPLE_DIR])),
            policy=IngestPolicy(),
            actor=SystemActor.IMPORT,
        )
        with node.db.read() as session:
            study = session.scalars(select(DicomStudy).order_by(DicomStudy.id)).first()
            assert study is not None
            held = [
                (cls, uid)
                for cls, uid in session.execute(
                    select(DicomInstance.sop_class_uid, DicomInstance.sop_instance_uid)
                    .join(DicomSeries)
                    .where(DicomSeries.study_pk == study.id)
                )
            ]
        unknown = (held[0][0], generate_uid())
        wrong_class = ("1.2.840.10008.5.1.4.1.1.4", held[0][1])  # MR class for a CT instance
        assert modality.request(node, [*held, unknown, wrong_class]) == 0x0000
        assert modality.received.wait(timeout=30)
        ((event_type, report),) = modality.reports
        assert event_type == 2  # failures exist
        committed = {str(i.ReferencedSOPInstanceUID) for i in report.ReferencedSOPSequence}
        assert committed == {uid for _, uid in held}
        failed = {
            (str(i.ReferencedSOPInstanceUID), int(i.FailureReason))
            for i in report.FailedSOPSequence
        }
        assert failed == {(unknown[1], 0x0112), (held[0][1], 0x0119)}
        with node.db.read() as session:
            after = session.get(DicomStudy, study.id)
        # every instance of the study committed: evidence the acquisition is over
        assert after is not None
        assert (after.completeness, after.completeness_evidence) == (
            "complete",
            "storage_commitment",
        )
    finally:
        modality.server.shutdown()


def test_one_instance_named_many_times_does_not_complete_a_study(make_node) -> None:  # type: ignore[no-untyped-def]
    modality = Modality()
    try:
        node: Node = make_node(peers=f"MODALITY@127.0.0.1:{modality.port}")
        assert node.db is not None and node.store is not None
        import_files(
            node.db,
            node.store,
            list(iter_files([SAMPLE_DIR])),
            policy=IngestPolicy(),
            actor=SystemActor.IMPORT,
        )
        with node.db.read() as session:
            study = session.scalars(select(DicomStudy).where(DicomStudy.instance_count > 1)).first()
            assert study is not None
            one = session.execute(
                select(DicomInstance.sop_class_uid, DicomInstance.sop_instance_uid)
                .join(DicomSeries)
                .where(DicomSeries.study_pk == study.id)
            ).first()
            assert one is not None
        repeated = [(one[0], one[1])] * study.instance_count
        assert modality.request(node, repeated) == 0x0000
        assert modality.received.wait(timeout=30)
        with node.db.read() as session:
            after = session.get(DicomStudy, study.id)
        assert after is not None and after.completeness != "complete"
    finally:
        modality.server.shutdown()


def test_a_requester_that_is_not_a_known_peer_is_refused(make_node) -> None:  # type: ignore[no-untyped-def]
    modality = Modality()
    try:
        node: Node = make_node()  # no peers
        status = modality.request(node, [("1.2.840.10008.5.1.4.1.1.2", generate_uid())])
        assert status == 0x0110
        assert not modality.received.wait(timeout=1)
    finally:
        modality.server.shutdown()
