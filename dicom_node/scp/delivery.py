"""How each instance of a C-MOVE or C-GET goes out as a C-STORE sub-operation
(PS3.4 C.4.2.3, C.4.3.3), on the association that carries them: the one the
node opened to the Move Destination, or the C-GET requester's own.

Per instance, against the transfer syntaxes the peer accepted for its SOP
class (the node being the C-STORE SCU there):

1. its stored syntax was accepted: the stored data set bytes are sent from
   the file as they are (:class:`~dicom_node.scp.sub_operations.StoredFile`:
   nothing decoded, byte for byte, a Deflated one still deflated);
2. it is stored uncompressed (explicit or implicit VR, deflated, in a byte
   order the peer took): pynetdicom encodes it again in the accepted one,
   pixel data untouched (:func:`~dicom_node.scp.contexts.converts_freely`);
3. otherwise, with ``transcode_on_retrieve``, it is transcoded
   (``domain/transcode.py``) to Explicit VR Little Endian when the peer took a
   native little-endian syntax, else to a lossless compressed one it took;
   never to a lossy syntax (an image is never compressed lossily on the way);
4. otherwise its sub-operation fails, with the reason in the audit and the
   instance in the Failed SOP Instance UID List (it still goes through
   pynetdicom's loop, as an :class:`~dicom_node.scp.sub_operations.Unsendable`,
   so the counts of every response are right).

The status each sub-operation got is read from the C-STORE response itself
(:class:`StoreLink`), so the audit and the final response say what the peer
answered, not what the node offered.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.status import STATUS_FAILURE, STATUS_SUCCESS, STORAGE_SERVICE_CLASS_STATUS

from dicom_node.domain.inflate import DatasetTooLarge
from dicom_node.domain.part10_source import read_stored_instance
from dicom_node.domain.transcode import (
    NATIVE_SYNTAXES,
    TranscodeError,
    Transcoder,
    can_decode,
    can_encode,
    is_lossy,
)
from dicom_node.scp.contexts import BEYOND_LIMIT, ContextPlan, converts_freely
from dicom_node.scp.sub_operations import StoredFile
from dicom_node.services.query.retrieve import ExportResult, RetrieveItem
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.scp")

C_STORE_RSP = 0x8001  # Command Field (PS3.7 E.1)
AS_STORED, CONVERTED, TRANSCODED = "sent_as_stored", "converted", "transcoded"
# the final response's Error Comment is an LO (PS3.7 C.4: at most 64 characters)
FAILED_LIST_IN_AUDIT = 100
NO_CONTEXT = "no presentation context accepted for its SOP class"
TRANSCODING_OFF = "stored transfer syntax not accepted, transcoding off"
NO_TARGET = "no accepted transfer syntax it can be transcoded to"
UNREADABLE = "stored file missing or unreadable"
NO_RESPONSE = "no C-STORE response"
LINK_LOST = "association ended before it was sent"
# PS3.4 C.4.2.1.5, C.4.3.1.4 Failure: Unable to perform sub-operations
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702


@dataclass(frozen=True)
class Route:
    """How one instance goes: ``how`` is AS_STORED, CONVERTED, TRANSCODED or
    None (it cannot: ``reason`` says why); ``target`` is the transcoding's."""

    how: str | None
    target: str | None = None
    reason: str | None = None


def choose_route(stored: str, accepted: Sequence[str], *, transcode: bool) -> Route:
    """The route for an instance stored in ``stored`` when the peer accepted
    ``accepted`` for its SOP class."""
    if not accepted:
        return Route(None, reason=NO_CONTEXT)
    if stored in accepted:
        return Route(AS_STORED)
    if any(converts_freely(stored, syntax) for syntax in accepted):
        return Route(CONVERTED)
    if not transcode:
        return Route(None, reason=TRANSCODING_OFF)
    if not can_decode(stored):
        return Route(None, reason=f"no decoder for {stored}")
    target = transcode_target(accepted)
    if target is None:
        return Route(None, reason=NO_TARGET)
    return Route(TRANSCODED, target=target)


def transcode_target(accepted: Sequence[str]) -> str | None:
    """Explicit VR Little Endian when a native little-endian syntax was accepted
    (pynetdicom writes it as the accepted one), else the first accepted syntax
    the node can encode without loss."""
    if any(syntax in NATIVE_SYNTAXES for syntax in accepted):
        return str(ExplicitVRLittleEndian)
    for syntax in accepted:
        if not is_lossy(syntax) and can_encode(syntax):
            return syntax
    return None


class StoreLink:
    """The association the C-STORE sub-operations go out on: what it accepted,
    and the status of each C-STORE response received on it.

    pynetdicom sends one sub-operation at a time and waits for its response
    before it takes the next data set from the handler, so the response seen
    since :meth:`expect` is the one for that instance (checked against its
    Affected SOP Instance UID when the peer sent one: PS3.7 makes it optional).
    """

    def __init__(self, assoc: Association | None = None) -> None:
        self._assoc = assoc
        self._accepted: dict[str, list[str]] | None = None
        self._answer: tuple[str | None, int] | None = None

    # -- the destination association pynetdicom opens for a C-MOVE
    def handlers(self) -> list[tuple[evt.EventType, Any]]:
        """``evt_handlers`` for that association: it is captured when accepted."""
        return [(evt.EVT_ACCEPTED, self._on_accepted), (evt.EVT_DIMSE_RECV, self._on_received)]

    def _on_accepted(self, event: Event) -> None:
        self._assoc = event.assoc

    # -- the requester's own association for a C-GET
    @classmethod
    @contextmanager
    def listening_on(cls, assoc: Association) -> Iterator[StoreLink]:
        link = cls(assoc)
        assoc.bind(evt.EVT_DIMSE_RECV, link._on_received)
        try:
            yield link
        finally:
            assoc.unbind(evt.EVT_DIMSE_RECV, link._on_received)

    def _on_received(self, event: Event) -> None:
        command = event.message.command_set
        if command is None or command.get("CommandField") != C_STORE_RSP:
            return
        uid = command.get("AffectedSOPInstanceUID")
        self._answer = (str(uid) if uid else None, int(command.get("Status", 0xC000)))

    @property
    def was_accepted(self) -> bool:
        """Whether the peer accepted the association (with contexts or not)."""
        return self._assoc is not None

    @property
    def is_open(self) -> bool:
        return self._assoc is not None and self._assoc.is_established

    def accepted(self, sop_class: str) -> list[str]:
        """The transfer syntaxes accepted for ``sop_class`` with the node as SCU."""
        if self._accepted is None:
            accepted: dict[str, list[str]] = {}
            contexts = self._assoc.accepted_contexts if self._assoc is not None else []
            for context in contexts:
                if context.as_scu and context.transfer_syntax:
                    syntaxes = accepted.setdefault(str(context.abstract_syntax), [])
                    syntaxes.append(str(context.transfer_syntax[0]))
            self._accepted = accepted
        return self._accepted.get(sop_class, [])

    def expect(self) -> None:
        """A sub-operation is about to be handed to pynetdicom."""
        self._answer = None

    def answer(self, sop_instance_uid: str) -> int | None:
        """The status the peer answered for that sub-operation; None when no
        response came (pynetdicom could not send it, or the peer went away)."""
        answer = self._answer
        if answer is None or (answer[0] is not None and answer[0] != sop_instance_uid):
            return None
        return answer[1]


@dataclass
class Tally:
    """What became of each instance of one retrieve: the counts and the reasons
    for the audit and the final response's Error Comment. pynetdicom counts the
    same sub-operations for the responses (every instance goes through its loop)."""

    total: int
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for key in ("offered", "completed", "warning", "failed", AS_STORED, CONVERTED, TRANSCODED):
            self.counts[key] += 0

    def fail(self, uid: str, reason: str) -> None:
        """An instance the node does not send (handed to pynetdicom as an
        Unsendable, which it counts failed and lists)."""
        self._failed(uid, reason)

    def offered(self, how: str) -> None:
        self.counts["offered"] += 1
        self.counts[how] += 1

    def answered(self, uid: str, code: int | None) -> None:
        """The peer's status for an offered sub-operation, as pynetdicom counts
        it (an unknown status is a failure)."""
        if code is None:
            self._failed(uid, NO_RESPONSE)
            return
        category = STORAGE_SERVICE_CLASS_STATUS.get(code, (STATUS_FAILURE, ""))[0]
        if category == STATUS_SUCCESS:
            self.counts["completed"] += 1
        elif category == STATUS_FAILURE:
            self._failed(uid, f"destination answered 0x{code:04X}")
        else:
            self.counts["warning"] += 1

    def cancelled(self, remaining: int) -> None:
        self.counts["cancelled"] = remaining

    def _failed(self, uid: str, reason: str) -> None:
        self.counts["failed"] += 1
        self.reasons[reason] += 1
        self.failures.append((uid, reason))

    def failed_uids(self) -> Dataset:
        """The Failed SOP Instance UID List of a final or cancel response."""
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = [uid for uid, _ in self.failures]
        return identifier

    def summary(self) -> str:
        """The failures in a few words: the one reason, or the most common."""
        if not self.reasons:
            return ""
        reason, count = self.reasons.most_common(1)[0]
        if len(self.reasons) == 1:
            return f"{count} failed: {reason}"
        return f"{self.counts['failed']} failed, {count}: {reason}"

    def result(self) -> ExportResult:
        return ExportResult(counts=dict(self.counts), failures=self.failures[:FAILED_LIST_IN_AUDIT])


def all_failed(items: Sequence[RetrieveItem], why: str) -> ExportResult:
    """The result of a retrieve (or a send) none of whose instances went: no
    association to the peer could be used."""
    tally = Tally(len(items))
    for item in items:
        tally.fail(item.sop_instance_uid, why)
    return tally.result()


class Delivery:
    """Reads, and if need be transcodes, the data set a sub-operation sends."""

    def __init__(
        self,
        store: FileStore,
        transcoder: Transcoder,
        *,
        transcode: bool,
        max_dataset_bytes: int,
    ) -> None:
        self._store = store
        self._transcoder = transcoder
        self._transcode = transcode
        self._max_dataset_bytes = max_dataset_bytes

    @property
    def transcodes(self) -> bool:
        return self._transcode

    def route(self, item: RetrieveItem, accepted: Sequence[str]) -> Route:
        return choose_route(item.transfer_syntax_uid, accepted, transcode=self._transcode)

    def outgoing(
        self, item: RetrieveItem, link: StoreLink, plan: ContextPlan | None
    ) -> tuple[Dataset, str] | str:
        """The data set to send for ``item`` on ``link`` and how it goes
        (AS_STORED, CONVERTED, TRANSCODED), or why it cannot: the same checks
        in the same order for a C-MOVE, a C-GET (``plan`` None: the requester
        proposed the contexts) and a send from the API (``scp/send.py``)."""
        if not link.is_open:
            return LINK_LOST
        if plan is not None and item.sop_class_uid in plan.without_context:
            return BEYOND_LIMIT
        route = self.route(item, link.accepted(item.sop_class_uid))
        if route.how is None:
            assert route.reason is not None
            return route.reason
        dataset = self.dataset(item, route)
        if isinstance(dataset, str):
            return dataset
        return dataset, route.how

    def dataset(self, item: RetrieveItem, route: Route) -> Dataset | str:
        """The data set to send along ``route``, or why there is none. The
        stored file is only read: as stored, only its file meta (pynetdicom
        streams the rest from the file)."""
        try:
            if route.how == AS_STORED:
                stored = StoredFile.of(
                    self._store.absolute(item.file_path),
                    sop_class_uid=item.sop_class_uid,
                    sop_instance_uid=item.sop_instance_uid,
                    transfer_syntax_uid=item.transfer_syntax_uid,
                )
                if stored is not None:
                    return stored
        except Exception as exc:  # missing, truncated, garbage: pydicom raises many kinds
            log.error("stored instance cannot be read for a retrieve: %s", type(exc).__name__)
            return UNREADABLE
        try:
            dataset = read_stored_instance(
                self._store.absolute(item.file_path), max_dataset_bytes=self._max_dataset_bytes
            )
        except DatasetTooLarge as exc:
            return exc.reason
        except Exception as exc:  # missing, truncated, garbage: pydicom raises many kinds
            log.error("stored instance cannot be read for a retrieve: %s", type(exc).__name__)
            return UNREADABLE
        if route.how != TRANSCODED:
            return dataset
        assert route.target is not None
        try:
            return self._transcoder.transcode(dataset, route.target)
        except TranscodeError as exc:
            return str(exc) or "transcoding failed"
        except Exception as exc:  # a codec's own failure on a damaged stream
            log.error("transcoding for a retrieve failed: %s", type(exc).__name__)
            return "transcoding failed"
