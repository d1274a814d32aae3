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
``time_limit`` (``send_time_limit_seconds``) the whole; the instances not sent
by then fail with :data:`TIME_LIMIT_REACHED` (a study too large for one request
is better moved by a C-MOVE from the peer). The limit is a deadline, not only a
check between instances: a peer that stops reading leaves pynetdicom's DUL
thread blocked in ``send()``; the DIMSE timeout's abort is cut by the reaper of
``scp/transport.py`` (it shuts the socket of an association being killed), but
a peer that reads slowly enough never trips the DIMSE timeout. At the deadline
a timer shuts the socket down, which ends the blocked write; the request then
answers and the Export event is written.
At most ``max_concurrent_sends`` run at once per process (each holds a worker
thread): one more raises :class:`SendersBusy` before reading anything.

Built once by the composition root (``dicom_node/node.py``, its TLS client
context included) and handed to the API through its context.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import Counter

from pynetdicom.association import Association
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy
from dicom_node.domain.aetitle import Peer
from dicom_node.domain.enums import MetadataStatus
from dicom_node.domain.errors import Conflict, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.query import Level
from dicom_node.domain.transcode import Transcoder
from dicom_node.scp.contexts import ContextPlan, plan_contexts
from dicom_node.scp.delivery import Delivery, StoreLink, Tally, all_failed
from dicom_node.scp.outgoing import NodeAE, PeerConnector, PeerNeedsTls
from dicom_node.scp.retrieve import (
    MAX_SUB_OPERATIONS,
    NO_CONTEXT_ACCEPTED,
    REFUSED_ASSOCIATION,
    TOO_MANY,
    UNREACHABLE,
)
from dicom_node.scp.sub_operations import sends_stored_files
from dicom_node.services.audit.subjects import study_subject, user_actor
from dicom_node.services.query.retrieve import (
    ExportResult,
    PeerUnavailable,
    RetrieveItem,
    SendersBusy,
    SendResult,
    instances_to_retrieve,
    record_export,
)
from dicom_node.settings import Settings
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.scp")

TIME_LIMIT_REACHED = "time limit of the request reached"


class StudySender:
    """What a send needs from the node: the peers, how to reach them, how an
    instance is read for one, and the bounds (time, concurrency). One per
    process, built at startup."""

    def __init__(
        self,
        *,
        ae_title: str,
        peers: dict[str, Peer],
        connector: PeerConnector,
        store: FileStore,
        transcode: bool,
        max_dataset_bytes: int,
        acse_timeout: float,
        dimse_timeout: float,
        network_timeout: float,
        time_limit: float,
        max_concurrent: int,
    ) -> None:
        self.ae_title = ae_title
        self.peers = peers
        self.connector = connector
        self.store = store
        self.transcode = transcode
        self.max_dataset_bytes = max_dataset_bytes
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        self.network_timeout = network_timeout
        self.time_limit = time_limit
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)

    @classmethod
    def from_settings(
        cls, settings: Settings, store: FileStore, *, tls: ssl.SSLContext | None
    ) -> StudySender:
        """As the DICOM server builds its retrieve handler (scp/server.py,
        ``RetrieveHandler.from_settings``); ``tls``: the node's TLS client
        context (``tls_contexts(settings).client``), built once at startup."""
        return cls(
            ae_title=settings.ae_title,
            peers=dict(settings.peers),
            connector=PeerConnector(
                max_pdu=settings.max_pdu_size,
                connect_timeout=settings.tls_handshake_timeout_seconds,
                tls=tls,
            ),
            store=store,
            transcode=settings.transcode_on_retrieve,
            max_dataset_bytes=settings.max_dataset_bytes,
            acse_timeout=settings.acse_timeout_seconds,
            dimse_timeout=settings.dimse_timeout_seconds,
            network_timeout=settings.network_timeout_seconds,
            time_limit=settings.send_time_limit_seconds,
            max_concurrent=settings.max_concurrent_sends,
        )

    def send(
        self,
        db: Database,
        transcoder: Transcoder,
        *,
        study_id: int,
        peer_ae: str,
        principal: Principal,
        source_address: str | None,
    ) -> SendResult:
        """Send every stored instance of study ``study_id`` to ``peer_ae``,
        transcoding (if need be) with the caller's ``transcoder`` (the API
        process's: its concurrency limit is per process).

        Raises SendersBusy (``max_concurrent`` sends running: nothing done),
        NotFound (no such study, or ``peer`` is no configured peer), Conflict
        (the study is rejected, or has more instances than a C-MOVE may
        count), PeerUnavailable (the association failed, was rejected, or
        accepted no context: audited, nothing sent). A send that reached the
        peer returns its result, failures included."""
        if not self._slots.acquire(blocking=False):
            raise SendersBusy(f"{self.max_concurrent} sends are running: try again later")
        try:
            return self._send(
                db,
                transcoder,
                study_id=study_id,
                peer_ae=peer_ae,
                principal=principal,
                source_address=source_address,
            )
        finally:
            self._slots.release()

    def _send(
        self,
        db: Database,
        transcoder: Transcoder,
        *,
        study_id: int,
        peer_ae: str,
        principal: Principal,
        source_address: str | None,
    ) -> SendResult:
        deadline = time.monotonic() + self.time_limit
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

        def audit(result: ExportResult, refused: str | None) -> None:
            try:
                record_export(
                    db,
                    actor=user_actor(principal, source_address),
                    destination=peer_ae,
                    level=Level.STUDY,
                    keys=keys,
                    result=result,
                    refused=refused,
                    target_id=study_id,
                    subject=subject,
                    requested_by="api",
                )
            except Exception:
                log.exception("could not audit a send")

        if not items:
            result = Tally(0).result()
            audit(result, None)
            return SendResult(peer_ae, study_uid, 0, result)
        plan = plan_contexts(Counter((i.sop_class_uid, i.transfer_syntax_uid) for i in items))
        assoc, why = self._associate(peer, plan)
        if assoc is None:
            assert why is not None
            result = all_failed(items, why)
            audit(result, why)
            log.warning("send to %s: %s", peer_ae, why)
            raise PeerUnavailable(peer_ae, why, result)
        tally = Tally(len(items))
        delivery = Delivery(
            self.store,
            transcoder,
            transcode=self.transcode,
            max_dataset_bytes=self.max_dataset_bytes,
        )
        watchdog = Deadline(assoc, max(0.0, deadline - time.monotonic()), peer_ae)
        try:
            self._store_each(assoc, items, plan, tally, delivery, watchdog)
        finally:
            watchdog.cancel()
            assoc.release()  # a no-op once the association was cut or aborted
            result = tally.result()
            audit(result, None)
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

    @staticmethod
    def _store_each(
        assoc: Association,
        items: list[RetrieveItem],
        plan: ContextPlan,
        tally: Tally,
        delivery: Delivery,
        deadline: Deadline,
    ) -> None:
        """One C-STORE per instance, each prepared as a C-MOVE's sub-operation
        is (``Delivery.outgoing``), the peer's status read from the response."""
        link = StoreLink(assoc)
        for item in items:
            uid = item.sop_instance_uid
            if deadline.reached:
                tally.fail(uid, TIME_LIMIT_REACHED)
                continue
            outgoing = delivery.outgoing(item, link, plan)
            if isinstance(outgoing, str):
                tally.fail(uid, outgoing)
                continue
            dataset, how = outgoing
            tally.offered(how)
            try:
                answer = assoc.send_c_store(dataset)
            except Exception as exc:  # pynetdicom raises when the link went away mid-send
                log.warning("send: C-STORE failed: %s", type(exc).__name__)
                answer = None
            if deadline.reached and (answer is None or "Status" not in answer):
                # cut at the deadline in the middle of this instance
                tally.fail(uid, TIME_LIMIT_REACHED)
                continue
            code = answer.get("Status") if answer is not None else None
            tally.answered(uid, int(code) if code is not None else None)


class Deadline:
    """The whole send's deadline, enforced on the connection itself.

    At the deadline the association's socket is shut down (``SHUT_RDWR``),
    from a timer thread: a write blocked on a peer that stopped reading fails
    at once, pynetdicom's DUL sees the connection closed (Event 17), and
    whatever the request thread waits for (the C-STORE response, the DIMSE
    timeout's ``kill()``) ends. A socket send timeout was not used: it bounds
    one ``send()`` call, not the request, and a peer reading a byte now and
    then defeats it."""

    def __init__(self, assoc: Association, seconds: float, peer: str) -> None:
        self._assoc = assoc
        self._peer = peer
        self._at = time.monotonic() + seconds
        self._reached = threading.Event()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    @property
    def reached(self) -> bool:
        # the clock too: the timer's thread may not have run yet (a limit of 0)
        return self._reached.is_set() or time.monotonic() >= self._at

    def cancel(self) -> None:
        self._timer.cancel()

    def _cut(self) -> None:
        self._reached.set()
        sock = getattr(self._assoc.dul.socket, "socket", None)
        if not isinstance(sock, socket.socket) or not self._assoc.dul.is_alive():
            return  # the connection has already ended
        log.warning("send to %s: time limit reached, connection cut", self._peer)
        # apart from close(): pynetdicom closes the socket itself once its DUL ends
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
