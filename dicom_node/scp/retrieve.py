"""C-MOVE and C-GET (PS3.4 C.4.2, C.4.3): stored instances sent as C-STORE
sub-operations, to a known peer (C-MOVE) or back on the same association (C-GET).

The instance list is read before the first sub-operation, with no session kept
open; each file is read from the store only when its turn comes, so memory does
not grow with the size of the study. A C-MOVE proposes one context per SOP
class and stored transfer syntax plus an uncompressed fallback per SOP class
(scp/contexts.py); each instance then goes as stored, re-encoded uncompressed,
or transcoded, as the peer's accepted contexts allow (scp/delivery.py). The
110106 Export event and the final response say what the peer answered.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_node.db.engine import Database
from dicom_node.domain.aetitle import Peer
from dicom_node.domain.audit import Actor
from dicom_node.domain.query import InvalidQuery, Level, UnsupportedQuery
from dicom_node.domain.transcode import Transcoder
from dicom_node.scp import status
from dicom_node.scp.contexts import MAX_CONTEXTS, ContextPlan, plan_contexts
from dicom_node.scp.delivery import (
    UNABLE_TO_PERFORM_SUB_OPERATIONS,
    Delivery,
    StoreLink,
    Tally,
    all_failed,
)
from dicom_node.scp.find import failure, identifier_keys, parse_level, reason, refusal_code
from dicom_node.scp.get_negotiation import GetNegotiation
from dicom_node.scp.move_sink import final_status_only
from dicom_node.scp.outgoing import PeerConnector, PeerNeedsTls
from dicom_node.scp.sub_operations import (
    Unsendable,
    comment_final_response,
    deliberately_failing,
    sends_stored_files,
)
from dicom_node.services.query.retrieve import (
    NOTHING_SENT,
    ExportResult,
    HeldSyntaxes,
    RetrieveItem,
    instances_to_retrieve,
    record_export,
)
from dicom_node.settings import Settings
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.scp")

# the retrieve models of the Study Root, which PS3.4 C.6.2 gives no PATIENT level
_STUDY_ROOT_RETRIEVE = {
    str(StudyRootQueryRetrieveInformationModelMove),
    str(StudyRootQueryRetrieveInformationModelGet),
}
UNREACHABLE = "destination unreachable"
# the counts of the final response are US (PS3.7 C.4.2.1, PS3.4 C.4.2.3.1)
MAX_SUB_OPERATIONS = 65535
TOO_MANY = f"more than {MAX_SUB_OPERATIONS} instances: narrow the retrieve"
# PS3.4 C.4.2.1.5, C.4.3.1.4: Refused: Out of Resources, unable to calculate
# number of matches
OUT_OF_RESOURCES_MATCHES = 0xA701
REFUSED_ASSOCIATION = "destination refused the association"
NO_CONTEXT_ACCEPTED = "destination accepted no presentation context"


class RetrieveHandler:
    def __init__(
        self,
        db: Database,
        store: FileStore,
        peers: dict[str, Peer],
        *,
        connector: PeerConnector,
        delivery: Delivery,
        max_list_values: int | None = None,
        patient_level_on_study_root: bool = True,
    ) -> None:
        self._max_list_values = max_list_values  # settings.max_query_list_values
        self._db = db
        self._peers = peers
        self._connector = connector  # plain or TLS, as the peer's entry says
        self._delivery = delivery
        self._patient_level_on_study_root = patient_level_on_study_root
        # the C-GET requester's storage syntaxes (EVT_REQUESTED, scp/server.py)
        self.negotiation = GetNegotiation(HeldSyntaxes(db).of, transcode=delivery.transcodes)

    @classmethod
    def from_settings(
        cls, db: Database, store: FileStore, settings: Settings, *, connector: PeerConnector
    ) -> RetrieveHandler:
        transcoder = Transcoder(
            max_decoded_bytes=settings.max_transcode_bytes,
            max_concurrent=settings.max_concurrent_transcodes,
            # a sub-operation waiting for a transcoding slot gives up when its
            # peer would stop waiting for the C-STORE anyway
            max_wait_seconds=settings.dimse_timeout_seconds,
        )
        return cls(
            db,
            store,
            dict(settings.peers),
            connector=connector,
            delivery=Delivery(
                store,
                transcoder,
                transcode=settings.transcode_on_retrieve,
                max_dataset_bytes=settings.max_dataset_bytes,
            ),
            max_list_values=settings.max_query_list_values,
            patient_level_on_study_root=settings.accept_patient_level_on_study_root,
        )

    # ------------------------------------------------------------------ C-MOVE

    def handle_move(self, event: Event) -> Iterator[Any]:
        requestor = event.assoc.requestor
        destination = str(event.move_destination or "").strip()
        peer = self._peers.get(destination)
        if peer is None:
            log.warning("C-MOVE from %s to unknown destination refused", requestor.ae_title)
            self._record_export(event, destination, None, {}, NOTHING_SENT, "unknown destination")
            yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
            return
        try:
            level, keys, items = self._plan(event)
        except InvalidQuery as exc:
            log.warning("C-MOVE from %s refused: %s", requestor.ae_title, exc)
            self._record_export(event, destination, None, {}, NOTHING_SENT, str(exc))
            yield from final_status_only(1, failure(refusal_code(exc), str(exc)))
            return
        if len(items) > MAX_SUB_OPERATIONS:
            self._refuse_too_many(event, "C-MOVE", destination, level, keys)
            yield from final_status_only(1, failure(OUT_OF_RESOURCES_MATCHES, TOO_MANY))
            return
        if not items:
            self._record_export(event, destination, level, keys, Tally(0).result(), None)
            yield peer.host, peer.port  # pynetdicom then answers 0x0000 without associating
            yield 0
            return
        plan = plan_contexts(Counter((i.sop_class_uid, i.transfer_syntax_uid) for i in items))
        _log_plan(plan, requestor.ae_title, destination)
        link = StoreLink()
        # The node opens the destination association itself (the attempt is the
        # reachability check): one that fails, is rejected or accepts none of the
        # contexts is a known peer unable to take the sub-operations, 0xA702 with
        # every one counted failed and listed (PS3.4 C.4.2.1.4), not 0xA801 (an
        # unknown AE title), which pynetdicom's loop answers when it fails there.
        try:
            store_assoc = self._connector.associate(
                event.assoc.ae, peer, contexts=plan.contexts, handlers=link.handlers()
            )
        except PeerNeedsTls as exc:
            yield from self._nothing_sent(event, destination, level, keys, items, str(exc))
            return
        if not store_assoc.is_established:
            if link.was_accepted:
                why = NO_CONTEXT_ACCEPTED
            elif store_assoc.is_rejected:
                why = REFUSED_ASSOCIATION
            else:
                why = UNREACHABLE
            yield from self._nothing_sent(event, destination, level, keys, items, why)
            return
        sends_stored_files(store_assoc)
        try:
            # handed to pynetdicom's loop through NodeAE.associate (scp/outgoing.py)
            yield peer.host, peer.port, {"established": store_assoc}
            yield len(items)
            yield from self._sub_operations(event, items, level, keys, destination, link, plan)
        finally:
            # pynetdicom releases it after its loop, not when the requester went
            # away before (no-op when already released)
            store_assoc.release()

    def _nothing_sent(
        self,
        event: Event,
        destination: str,
        level: Level,
        keys: dict[str, str | None],
        items: list[RetrieveItem],
        why: str,
    ) -> Iterator[Any]:
        """The C-MOVE's answer when no association to the destination could be
        used: every sub-operation failed and listed, 0xA702."""
        log.warning("C-MOVE from %s: %s: %s", event.assoc.requestor.ae_title, destination, why)
        self._record_export(event, destination, level, keys, all_failed(items, why), why)
        answer, _ = failure(UNABLE_TO_PERFORM_SUB_OPERATIONS, why)
        listed = Dataset()
        listed.FailedSOPInstanceUIDList = [item.sop_instance_uid for item in items]
        yield from final_status_only(len(items), (answer, listed))

    # ------------------------------------------------------------------ C-GET

    def handle_get(self, event: Event) -> Iterator[Any]:
        requestor = event.assoc.requestor
        try:
            level, keys, items = self._plan(event)
        except InvalidQuery as exc:
            log.warning("C-GET from %s refused: %s", requestor.ae_title, exc)
            self._record_export(event, requestor.ae_title, None, {}, NOTHING_SENT, str(exc))
            yield 1
            yield failure(refusal_code(exc), str(exc))
            return
        if len(items) > MAX_SUB_OPERATIONS:
            self._refuse_too_many(event, "C-GET", requestor.ae_title, level, keys)
            yield 1
            yield failure(OUT_OF_RESOURCES_MATCHES, TOO_MANY)
            return
        if not items:
            self._record_export(event, requestor.ae_title, level, keys, Tally(0).result(), None)
            yield 0  # pynetdicom answers 0x0000
            return
        sends_stored_files(event.assoc)
        yield len(items)
        with StoreLink.listening_on(event.assoc) as link:
            yield from self._sub_operations(
                event, items, level, keys, requestor.ae_title, link, None
            )

    def _refuse_too_many(
        self,
        event: Event,
        what: str,
        destination: str,
        level: Level,
        keys: dict[str, str | None],
    ) -> None:
        """More instances than the final response can count (its counts are US,
        PS3.4 C.4.2.3.1 and C.4.3.3.1 want them there): refused before any
        association, 0xA701 (Out of resources: unable to calculate number of
        matches), instead of pynetdicom's 0xC516."""
        log.warning("%s from %s refused: %s", what, event.assoc.requestor.ae_title, TOO_MANY)
        self._record_export(event, destination, level, keys, NOTHING_SENT, TOO_MANY)

    # ------------------------------------------------------------------ shared

    def _plan(self, event: Event) -> tuple[Level, dict[str, str | None], list[RetrieveItem]]:
        try:
            identifier = event.identifier
            level = self._level(identifier, str(event.request.AffectedSOPClassUID))
            # sequences are not unique keys: collected apart and ignored, like the rest
            keys = identifier_keys(identifier, {})
        except InvalidQuery:
            raise
        except UnsupportedQuery as exc:
            raise InvalidQuery(str(exc)) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidQuery(reason(exc)) from None
        items = instances_to_retrieve(
            self._db,
            level=level,
            keys=keys,
            max_list_values=self._max_list_values,
            max_instances=MAX_SUB_OPERATIONS + 1,  # one more says there are too many
        )
        return level, keys, items

    def _level(self, identifier: Dataset, sop_class: str) -> Level:
        """The identifier's level in the model. Tolerance: PATIENT on the Study
        Root retrieve models (Orthanc sends it for every patient it retrieves),
        unless ``accept_patient_level_on_study_root`` is false; the PatientID
        it then needs is checked like on the Patient Root model."""
        try:
            return parse_level(identifier, sop_class)
        except InvalidQuery:
            level = str(identifier.get("QueryRetrieveLevel", "") or "").strip()
            if (
                self._patient_level_on_study_root
                and level == Level.PATIENT.value
                and sop_class in _STUDY_ROOT_RETRIEVE
            ):
                return Level.PATIENT
            raise

    def _sub_operations(
        self,
        event: Event,
        items: list[RetrieveItem],
        level: Level,
        keys: dict[str, str | None],
        destination: str,
        link: StoreLink,
        plan: ContextPlan | None,
    ) -> Iterator[Any]:
        """One C-STORE sub-operation per instance (delivery.py). An instance
        that cannot go (no usable context, unreadable file, transcoding
        impossible) is handed to pynetdicom as an Unsendable, which it counts
        failed and lists like the ones the peer refused (sub_operations.py).
        pynetdicom sends the final response; the node adds its Error Comment.
        Cancel (C-CANCEL) is honoured between sub-operations."""
        what = "C-GET" if plan is None else "C-MOVE"
        tally = Tally(len(items))
        in_flight: RetrieveItem | None = None
        audited = False
        try:
            for index, item in enumerate(items):
                if event.is_cancelled:
                    tally.cancelled(len(items) - index)
                    audited = self._record_export(
                        event, destination, level, keys, tally.result(), None
                    )
                    yield status.CANCEL, tally.failed_uids()
                    return
                outgoing = self._delivery.outgoing(item, link, plan)
                if isinstance(outgoing, str):
                    tally.fail(item.sop_instance_uid, outgoing)
                    with deliberately_failing():
                        yield (
                            status.PENDING,
                            Unsendable(item.sop_class_uid, item.sop_instance_uid, outgoing),
                        )
                    continue
                dataset, how = outgoing
                tally.offered(how)
                link.expect()
                in_flight = item
                yield status.PENDING, dataset
                in_flight = None
                tally.answered(item.sop_instance_uid, link.answer(item.sop_instance_uid))
            audited = self._record_export(event, destination, level, keys, tally.result(), None)
            _log_outcome(what, event.assoc.requestor.ae_title, destination, tally)
            if tally.reasons:
                message_id = event.request.MessageID
                assert message_id is not None  # pynetdicom refuses a request without one
                comment_final_response(event.assoc, message_id, tally.summary())
        finally:
            if not audited:  # the requester went away, or pynetdicom stopped asking
                if in_flight is not None:
                    uid = in_flight.sop_instance_uid
                    tally.answered(uid, link.answer(uid))
                self._record_export(event, destination, level, keys, tally.result(), None)

    def _record_export(
        self,
        event: Event,
        destination: str,
        level: Level | None,
        keys: dict[str, str | None],
        result: ExportResult,
        refused: str | None,
    ) -> bool:
        requestor = event.assoc.requestor
        try:
            record_export(
                self._db,
                actor=Actor.peer(requestor.ae_title, f"{requestor.address}:{requestor.port}"),
                destination=destination,
                level=level,
                keys=keys,
                result=result,
                refused=refused,
            )
        except Exception:
            log.exception("could not audit a retrieve")
        return True


def _log_plan(plan: ContextPlan, requestor: str, destination: str) -> None:
    """Once per retrieve: what did not fit in the 128 presentation contexts."""
    if plan.without_context:
        log.warning(
            "C-MOVE from %s to %s spans more than %d SOP classes: the instances of %d fail",
            requestor,
            destination,
            MAX_CONTEXTS,
            len(plan.without_context),
        )
    if plan.without_pair:
        log.info(
            "C-MOVE from %s to %s: %d stored transfer syntaxes beyond the %d presentation "
            "contexts; their instances go through the uncompressed fallback context",
            requestor,
            destination,
            len(plan.without_pair),
            MAX_CONTEXTS,
        )


def _log_outcome(what: str, requestor: str, destination: str, tally: Tally) -> None:
    counts = tally.counts
    if not counts["failed"]:
        log.info(
            "%s from %s to %s: %d sent (%d transcoded)",
            what,
            requestor,
            destination,
            counts["offered"],
            counts["transcoded"],
        )
        return
    log.warning(
        "%s from %s to %s: %d of %d sub-operations failed (%s)",
        what,
        requestor,
        destination,
        counts["failed"],
        tally.total,
        "; ".join(f"{why}: {n}" for why, n in tally.reasons.most_common(3)),
    )
