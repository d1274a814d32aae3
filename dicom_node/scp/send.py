"""A study sent to a configured peer on a person's request (``POST
/api/studies/{id}/send``): what a C-MOVE SCP does for its Move Destination,
started from the API instead of by a C-MOVE request.

Nothing here is a second sender. The pieces are the C-MOVE's own: the
instance list (``services/query/retrieve.instances_to_retrieve``, at STUDY
level), the proposed contexts (``scp/contexts.plan_contexts``), the
association (``scp/outgoing.PeerConnector``: plain or TLS as the peer's entry
says), the route and data set of each instance (``scp/delivery.Delivery``: as
stored, converted or transcoded), the stored-file streaming
(``scp/sub_operations.SubOperationAssociation``), the counting (``Tally``)
and the 110106 Export event with the same details. What differs is only who
drives the loop: here it is this function, calling ``send_c_store`` once per
instance, where a C-MOVE hands the data sets to pynetdicom's move loop (which
does the same call). The actor of the event is the signed-in user.

Synchronous and bounded: the association's timeouts bound each step, and
``time_limit`` the whole; the instances not sent by then fail with
:data:`TIME_LIMIT_REACHED` (a study too large for one request is better moved
by a C-MOVE from the peer).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from pynetdicom.association import Association
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy
from dicom_node.domain.aetitle import Peer
from dicom_node.domain.audit import Subject, TargetKind, export_event
from dicom_node.domain.enums import MetadataStatus
from dicom_node.domain.errors import Conflict, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.query import Level
from dicom_node.domain.transcode import Transcoder
from dicom_node.scp.contexts import BEYOND_LIMIT, ContextPlan, plan_contexts
from dicom_node.scp.delivery import LINK_LOST, Delivery, StoreLink, Tally
from dicom_node.scp.outgoing import NodeAE, PeerConnector, PeerNeedsTls
from dicom_node.scp.retrieve import (
    MAX_SUB_OPERATIONS,
    NO_CONTEXT_ACCEPTED,
    REFUSED_ASSOCIATION,
    TOO_MANY,
    UNREACHABLE,
)
from dicom_node.scp.server import tls_contexts
from dicom_node.scp.sub_operations import sends_stored_files
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import study_subject, user_actor
from dicom_node.services.query.find import audited_keys
from dicom_node.services.query.retrieve import (
    ExportResult,
    RetrieveItem,
    export_outcome,
    instances_to_retrieve,
)
from dicom_node.settings import Settings
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.scp")

TIME_LIMIT_REACHED = "time limit of the request reached"
# an HTTP request waits for the whole send: a bound a person still waits for
DEFAULT_TIME_LIMIT_SECONDS = 300.0


class PeerUnavailable(Exception):
    """No association to the peer could be used: nothing was sent (``result``
    counts every instance failed)."""

    def __init__(self, peer: str, why: str, result: ExportResult) -> None:
        super().__init__(f"{peer}: {why}; nothing was sent")
        self.why = why
        self.result = result


@dataclass(frozen=True)
class SendResult:
    peer: str
    study_instance_uid: str
    instances: int
    result: ExportResult


@dataclass(frozen=True)
class StudySender:
    """What a send needs from the node: the peers, how to reach them, and how
    an instance is read (and transcoded) for one."""

    ae_title: str
    peers: dict[str, Peer]
    connector: PeerConnector
    delivery: Delivery
    acse_timeout: float
    dimse_timeout: float
    network_timeout: float

    @classmethod
    def from_settings(
        cls, settings: Settings, store: FileStore, transcoder: Transcoder
    ) -> StudySender:
        """As the DICOM server builds its retrieve handler (scp/server.py,
        ``RetrieveHandler.from_settings``), with the caller's transcoder (the
        API process's: its concurrency limit is per process)."""
        return cls(
            ae_title=settings.ae_title,
            peers=dict(settings.peers),
            connector=PeerConnector(
                max_pdu=settings.max_pdu_size,
                connect_timeout=settings.tls_handshake_timeout_seconds,
                tls=tls_contexts(settings).client,
            ),
            delivery=Delivery(
                store,
                transcoder,
                transcode=settings.transcode_on_retrieve,
                max_dataset_bytes=settings.max_dataset_bytes,
            ),
            acse_timeout=settings.acse_timeout_seconds,
            dimse_timeout=settings.dimse_timeout_seconds,
            network_timeout=settings.network_timeout_seconds,
        )

    def send(
        self,
        db: Database,
        *,
        study_id: int,
        peer_ae: str,
        principal: Principal,
        source_address: str | None,
        time_limit: float = DEFAULT_TIME_LIMIT_SECONDS,
    ) -> SendResult:
        """Send every stored instance of study ``study_id`` to ``peer_ae``.

        Raises NotFound (no such study, or ``peer`` is no configured
        peer), Conflict (the study is rejected, or has more
        instances than a C-MOVE may count), PeerUnavailable (the association
        failed, was rejected, or accepted no context: audited, nothing sent).
        A send that reached the peer returns its result, failures included."""
        peer = self.peers.get(peer_ae)
        if peer is None:
            # 404, as for the study: the name is well formed, no such peer exists
            raise NotFound("no configured peer of that AE title")
        with db.read() as session:
            study = session.scalar(select(DicomStudy).where(DicomStudy.id == study_id))
            if study is None:
                raise NotFound(f"study {study_id} not found")
            subject = study_subject(session, study)
            study_uid = study.study_instance_uid
            status = study.metadata_status
        if status == MetadataStatus.REJECTED.value:
            # withdrawn from every search and C-FIND: not sent either
            raise Conflict("a rejected study is not sent", current=status)
        keys: dict[str, str | None] = {"StudyInstanceUID": study_uid}
        items = instances_to_retrieve(
            db, level=Level.STUDY, keys=keys, max_instances=MAX_SUB_OPERATIONS + 1
        )
        if len(items) > MAX_SUB_OPERATIONS:
            raise Conflict(TOO_MANY)
        audit = _Audit(db, principal, source_address, peer_ae, study_id, keys, subject)
        if not items:
            result = Tally(0).result()
            audit.record(result, None)
            return SendResult(peer_ae, study_uid, 0, result)
        plan = plan_contexts(Counter((i.sop_class_uid, i.transfer_syntax_uid) for i in items))
        assoc, why = self._associate(peer, plan)
        if assoc is None:
            assert why is not None
            result = _all_failed(items, why)
            audit.record(result, why)
            log.warning("send to %s: %s", peer_ae, why)
            raise PeerUnavailable(peer_ae, why, result)
        tally = Tally(len(items))
        try:
            self._store_each(assoc, items, plan, tally, deadline=time.monotonic() + time_limit)
        finally:
            assoc.release()
            result = tally.result()
            audit.record(result, None)
        counts = tally.counts
        log.info(
            "send to %s: %d of %d sub-operations completed, %d failed",
            peer_ae,
            counts["completed"] + counts["warning"],
            len(items),
            counts["failed"],
        )
        return SendResult(peer_ae, study_uid, len(items), result)

    def _associate(self, peer: Peer, plan: ContextPlan) -> tuple[Association | None, str | None]:
        ae = NodeAE(ae_title=self.ae_title)
        ae.acse_timeout = self.acse_timeout
        ae.dimse_timeout = self.dimse_timeout
        ae.network_timeout = self.network_timeout
        link = StoreLink()
        try:
            assoc = self.connector.associate(
                ae, peer, contexts=plan.contexts, handlers=link.handlers()
            )
        except PeerNeedsTls as exc:
            return None, str(exc)
        if assoc.is_established:
            sends_stored_files(assoc)
            return assoc, None
        if link.was_accepted:
            return None, NO_CONTEXT_ACCEPTED
        if assoc.is_rejected:
            return None, REFUSED_ASSOCIATION
        return None, UNREACHABLE

    def _store_each(
        self,
        assoc: Association,
        items: list[RetrieveItem],
        plan: ContextPlan,
        tally: Tally,
        *,
        deadline: float,
    ) -> None:
        """One C-STORE per instance, as ``RetrieveHandler._sub_operations``
        hands them to pynetdicom (its ``_outgoing``: the same checks in the
        same order), the peer's status read from the response."""
        link = StoreLink(assoc)
        for item in items:
            uid = item.sop_instance_uid
            if time.monotonic() > deadline:
                tally.fail(uid, TIME_LIMIT_REACHED)
                continue
            if not link.is_open:
                tally.fail(uid, LINK_LOST)
                continue
            if item.sop_class_uid in plan.without_context:
                tally.fail(uid, BEYOND_LIMIT)
                continue
            route = self.delivery.route(item, link.accepted(item.sop_class_uid))
            if route.how is None:
                assert route.reason is not None
                tally.fail(uid, route.reason)
                continue
            dataset = self.delivery.dataset(item, route)
            if isinstance(dataset, str):
                tally.fail(uid, dataset)
                continue
            tally.offered(route.how)
            try:
                answer = assoc.send_c_store(dataset)
            except Exception as exc:  # pynetdicom raises when the link went away mid-send
                log.warning("send: C-STORE failed: %s", type(exc).__name__)
                tally.answered(uid, None)
                continue
            code = answer.get("Status") if answer is not None else None
            tally.answered(uid, int(code) if code is not None else None)


@dataclass(frozen=True)
class _Audit:
    db: Database
    principal: Principal
    source_address: str | None
    destination: str
    study_id: int
    keys: dict[str, str | None]
    subject: Subject

    def record(self, result: ExportResult, refused: str | None) -> None:
        """110106 Export, as ``services/query/retrieve.record_export`` writes
        it for a C-MOVE, with the user as the actor."""
        try:
            with self.db.unit_of_work() as session:
                record_audit_event(
                    session,
                    export_event(
                        "instances_exported",
                        user_actor(self.principal, self.source_address),
                        TargetKind.STUDY,
                        self.study_id,
                        self.subject,
                        outcome=export_outcome(result, refused),
                        reason=refused,
                        details={
                            "destination": self.destination,
                            "requested_by": "api",
                            "keys": audited_keys(self.keys),
                            "counts": dict(result.counts),
                            "failed_instances": [
                                {"sop_instance_uid": uid, "reason": reason}
                                for uid, reason in result.failures
                            ],
                        },
                    ),
                )
        except Exception:
            log.exception("could not audit a send")


def _all_failed(items: list[RetrieveItem], why: str) -> ExportResult:
    tally = Tally(len(items))
    for item in items:
        tally.fail(item.sop_instance_uid, why)
    return tally.result()
