"""Which calling AEs may use which DICOM service (``known_ae_required_for``).

``build_handlers`` wraps the handler of every service the setting names, and
only those: with the default (empty) list nothing is checked and nothing is
looked up. A wrapped handler answers a calling AE title the node does not know
(``services/access/known_aes.py``) with a refusal instead of calling the service:

=============  ===============  =====================================================
service        DIMSE            refusal
=============  ===============  =====================================================
storage        C-STORE          0x0124 Refused: Not authorized (PS3.7 9.1.1, Annex C)
mpps           N-CREATE, N-SET  0x0124 Refused: Not authorized (PS3.7 10.1.5, 10.1.3)
commitment     N-ACTION         0x0124 Refused: Not authorized (PS3.7 10.1.4)
query          C-FIND           0xC124 Unable to process (PS3.4 C.4.1.1.4)
worklist       C-FIND (MWL)     0xC124 Unable to process (PS3.4 K.4.1.1.4)
retrieve       C-GET, C-MOVE    0xC124 Unable to process (PS3.4 C.4.3.1.4, C.4.2.1.5)
=============  ===============  =====================================================

The Query/Retrieve and Worklist services define no "not authorized" status;
their closest failure is "Unable to process", whose Cxxx codes are the
implementation's to assign: 0xC124 echoes 0x0124. Every refusal carries an
ErrorComment saying why, writes one log line (per peer and service, rate
limited like the other refusal lines) and is audited as a Security Alert
(Node Authentication), aggregated per peer as rejected associations are
(``services/access/refusals.py``). C-ECHO is never refused: it shows nothing.

An AE title is a name a peer states, not a credential: this keeps away peers
that are misconfigured or not meant to use a service, not one that spoofs a
known title. Authentication is DICOM TLS with client certificates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from dicom_node.db.engine import Database
from dicom_node.domain.audit import TargetKind
from dicom_node.log_limit import LogLimiter
from dicom_node.scp import status
from dicom_node.scp.find import WORKLIST_MODEL
from dicom_node.scp.move_sink import final_status_only
from dicom_node.services.access.known_aes import KnownAeTitles
from dicom_node.services.access.refusals import REQUEST_REFUSED, Refusal, RefusalAudit
from dicom_node.settings import Settings

log = logging.getLogger("dicom_node.scp")

# PS3.7 Annex C: Failure, Refused: Not authorized
REFUSED_NOT_AUTHORIZED = 0x0124
# PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4, K.4.1.1.4: Failure, Unable to process (Cxxx)
UNABLE_TO_PROCESS_NOT_AUTHORIZED = 0xC124
NOT_KNOWN = "calling AE title not known"

Handler = Callable[[Event], Any]


class AccessControl:
    """The known-AE checks of one SCP, and the audit of what it refuses."""

    def __init__(
        self, required: frozenset[str], known: KnownAeTitles, refusals: RefusalAudit
    ) -> None:
        self.required = required
        self.known = known
        # rejected associations are audited through it too (handlers.handle_rejected)
        self.refusals = refusals
        # the refusal log lines, per kind and peer address: a peer refused in a loop
        # gets its first line at once, then one per 10 s with the count
        self.lines = LogLimiter(log)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> AccessControl:
        configured = [
            *settings.allowed_calling_aets,
            *(peer.ae_title for peer in settings.peers.values()),
        ]
        return cls(
            frozenset(settings.known_ae_required_for),
            KnownAeTitles(db, configured),
            RefusalAudit(db, interval_seconds=settings.rejected_association_audit_interval_seconds),
        )

    def close(self) -> None:
        """The SCP stopped: write the refusal counts still held, audit and log."""
        self.refusals.close()
        self.lines.flush()

    # ------------------------------------------------------------ the wrappers

    def guard(self, service: str, what: str, handler: Handler) -> Handler:
        """C-STORE, N-CREATE, N-SET, N-ACTION (``what``): a handler that returns
        its answer."""
        if service not in self.required:
            return handler

        def guarded(event: Event) -> Any:
            if self._allowed(event, service, what):
                return handler(event)
            comment = _comment(service)
            if service == "storage":
                return _status(REFUSED_NOT_AUTHORIZED, comment)
            return _status(REFUSED_NOT_AUTHORIZED, comment), None

        return guarded

    def guard_find(self, handler: Handler) -> Handler:
        """C-FIND: the Query/Retrieve models are "query", the worklist "worklist"."""
        if not {"query", "worklist"} & self.required:
            return handler

        def guarded(event: Event) -> Iterator[Any]:
            worklist = str(event.request.AffectedSOPClassUID) == WORKLIST_MODEL
            service = "worklist" if worklist else "query"
            if service in self.required and not self._allowed(event, service, "C-FIND"):
                yield _status(UNABLE_TO_PROCESS_NOT_AUTHORIZED, _comment(service)), None
                return
            yield from handler(event)

        return guarded

    def guard_get(self, handler: Handler) -> Handler:
        if "retrieve" not in self.required:
            return handler

        def guarded(event: Event) -> Iterator[Any]:
            if not self._allowed(event, "retrieve", "C-GET"):
                # one sub-operation announced, none sent: pynetdicom answers an
                # announced count of 0 with Success before taking any status
                yield 1
                yield _status(UNABLE_TO_PROCESS_NOT_AUTHORIZED, _comment("retrieve")), None
                return
            yield from handler(event)

        return guarded

    def guard_move(self, handler: Handler) -> Handler:
        if "retrieve" not in self.required:
            return handler

        def guarded(event: Event) -> Iterator[Any]:
            if not self._allowed(event, "retrieve", "C-MOVE"):
                final = _status(UNABLE_TO_PROCESS_NOT_AUTHORIZED, _comment("retrieve")), None
                yield from final_status_only(1, final)
                return
            yield from handler(event)

        return guarded

    # ------------------------------------------------------------ the check

    def _allowed(self, event: Event, service: str, what: str) -> bool:
        requestor = event.assoc.requestor
        calling = requestor.ae_title
        if self.known.is_known(calling):
            return True
        host, port = str(requestor.address), int(requestor.port)
        self.lines.warning(
            (service, host),
            "%s from %s at %s:%s refused: %s (known_ae_required_for: %s)",
            what,
            calling,
            host,
            port,
            NOT_KNOWN,
            service,
        )
        self.refusals.record(
            Refusal(
                action=REQUEST_REFUSED,
                host=host,
                port=port,
                calling_ae=calling,
                target_class=TargetKind.DICOM_SERVICE,
                target_id=service,
                reason=NOT_KNOWN,
            )
        )
        return False


def _comment(service: str) -> str:
    return f"calling AE not authorized for {service}"[: status.ERROR_COMMENT_MAX]


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment
    return ds
