"""C-FIND for the Patient Root and Study Root Query/Retrieve models (PS3.4 C.4.1).

Decode the identifier -> one ``query_index`` call -> one pending response per
match. The database session is closed before the first response is sent, so a
slow or cancelling peer never holds a connection or a lock. Nothing is sent
before the query's audit event is committed (group commit,
services/audit/batch.py); answers are encoded straight from their rows where
that is exact (find_answers.py) and sent the lean way (find_send.py).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy.exc import OperationalError

from dicom_node.db.engine import Database
from dicom_node.domain.query import InvalidQuery, Level, UnprocessableQuery, UnsupportedQuery
from dicom_node.metrics import observe_find
from dicom_node.scp import status
from dicom_node.scp.find_answers import AnswerEncoder
from dicom_node.scp.find_send import EncodedIdentifier, install_find_send
from dicom_node.services.audit.batch import AuditWriter
from dicom_node.services.query.find import query_index, record_query
from dicom_node.services.query.modality_worklist import ScheduledStep, find_scheduled_steps

log = logging.getLogger("dicom_node.scp")

_PATIENT_ROOT = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
_STUDY_ROOT = (Level.STUDY, Level.SERIES, Level.IMAGE)
FIND_MODELS = {
    str(PatientRootQueryRetrieveInformationModelFind): _PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelFind): _STUDY_ROOT,
}
MOVE_MODELS = {
    str(PatientRootQueryRetrieveInformationModelMove): _PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelMove): _STUDY_ROOT,
}
GET_MODELS = {
    str(PatientRootQueryRetrieveInformationModelGet): _PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelGet): _STUDY_ROOT,
}
# the levels each Query/Retrieve information model has (PS3.4 C.6)
MODEL_LEVELS = {**FIND_MODELS, **MOVE_MODELS, **GET_MODELS}
WORKLIST_MODEL = str(ModalityWorklistInformationFind)
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}
_NUMBER_STRING_VRS = {"IS", "DS"}
_UTF8 = "ISO_IR 192"
_LEAN_SYNTAXES = {str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian)}
# a peer that stops reading is the network timeout's business, not this loop's
SEND_WAIT_SECONDS = 5.0
# Answers queued before waiting for them to be sent: a C-CANCEL is seen within
# this many answers. Waiting after each one cost a wake-up of pynetdicom's send
# loop per match (~1.1 ms: 219 ms for 200 matches, Orthanc 131 ms).
ANSWERS_PER_SEND_WAIT = 16

Response = tuple[int | Dataset, Dataset | None]


class FindHandler:
    def __init__(
        self,
        db: Database,
        *,
        max_matches: int,
        worklist_by_calling_ae: bool,
        max_list_values: int,
    ) -> None:
        self._db = db
        self._max_matches = max_matches
        self._worklist_by_calling_ae = worklist_by_calling_ae
        # values one key may list (settings.max_query_list_values)
        self._max_list_values = max_list_values
        install_find_send()
        # Query audit events of this process, committed together (group commit)
        self._audit = AuditWriter(db)

    def handle_find(self, event: Event) -> Iterator[Response]:
        # the query level is known once the identifier is decoded; until then (and
        # for an identifier without a valid one) the duration counts as "unknown"
        level = ["unknown"]
        started = time.monotonic()
        try:
            if str(event.request.AffectedSOPClassUID) == WORKLIST_MODEL:
                level[0] = "worklist"
                yield from self._handle_worklist(event)
                return
            yield from self._handle_query(event, level)
        finally:
            # also when the peer cancels or the association goes away mid-stream
            observe_find(level[0], time.monotonic() - started)

    def _handle_worklist(self, event: Event) -> Iterator[Response]:
        """Modality Worklist (PS3.4 K): one response per scheduled step."""
        requestor = event.assoc.requestor
        address = f"{requestor.address}:{requestor.port}"
        audited = False  # find_scheduled_steps audits what reaches it
        try:
            identifier = event.identifier
            top, step, step_requested = _worklist_keys(identifier)
            audited = True
            result = find_scheduled_steps(
                self._db,
                top=top,
                step=step,
                limit=self._max_matches,
                actor=requestor.ae_title,
                source_address=address,
                station_ae_title=requestor.ae_title if self._worklist_by_calling_ae else None,
                max_list_values=self._max_list_values,
            )
        except Exception as exc:
            yield self._refusal(
                exc, "worklist query", requestor.ae_title, address, audit=not audited
            )
            return
        yield from self._stream(
            event,
            (_worklist_response(top, step, step_requested, s) for s in result.steps),
            warn=bool(result.unsupported),
            truncated=result.truncated,
        )

    def _handle_query(self, event: Event, level_label: list[str]) -> Iterator[Response]:
        requestor = event.assoc.requestor
        address = f"{requestor.address}:{requestor.port}"
        audited = False  # query_index audits what reaches it
        try:
            identifier = event.identifier
            level = parse_level(identifier, str(event.request.AffectedSOPClassUID))
            level_label[0] = level.value.lower()
            sequences: dict[str, dict[str, str | None] | None] = {}
            keys = identifier_keys(identifier, sequences)
            audited = True
            query = query_index(
                self._db,
                level=level,
                keys=keys,
                limit=self._max_matches,
                actor=requestor.ae_title,
                audit=self._audit,
                source_address=address,
                sequences=sequences,
                max_list_values=self._max_list_values,
            )
        except Exception as exc:
            yield self._refusal(exc, "C-FIND", requestor.ae_title, address, audit=not audited)
            return
        # the first answers are built while the Query audit event commits, and
        # none is sent before it has: a failed commit fails the query as the
        # synchronous write did (nothing answered, the same failure status)
        answers = _answers(event, level, keys, query.result.matches)
        ready, unbuildable = _build_until(answers, query.audit.done)
        try:
            query.audit.wait()
        except Exception as exc:
            yield self._refusal(exc, "C-FIND", requestor.ae_title, address, audit=False)
            return
        if unbuildable is not None:  # after the answers before it, as when streaming
            answers = _raising(unbuildable)
        result = query.result
        # private tags are never matched or answered: the peer is warned (FF01)
        # (tags, not elements: reading an element converts its value)
        private = any(not keyword_for_tag(tag) for tag in identifier.keys())  # noqa: SIM118
        yield from self._stream(
            event,
            itertools.chain(ready, answers),
            warn=bool(result.unsupported) or private,
            truncated=result.truncated,
        )

    def _stream(
        self, event: Event, answers: Iterator[Dataset], *, warn: bool, truncated: bool
    ) -> Iterator[Response]:
        """Pending per answer, cancel honoured between answers (seen within
        ``ANSWERS_PER_SEND_WAIT``), then the cap or Success."""
        pending = status.PENDING_WARNING if warn else status.PENDING
        for count, answer in enumerate(answers, start=1):
            if event.is_cancelled:
                log.info("C-FIND from %s cancelled", event.assoc.requestor.ae_title)
                yield status.CANCEL, None
                return
            yield pending, answer
            if count % ANSWERS_PER_SEND_WAIT == 0:
                _wait_until_sent(event)
        if truncated:
            log.warning(
                "C-FIND from %s stopped at the cap of %d matches",
                event.assoc.requestor.ae_title,
                self._max_matches,
            )
            yield failure(
                status.OUT_OF_RESOURCES,
                f"more than {self._max_matches} matches: narrow the query",
            )
            return
        yield status.SUCCESS, None

    def _refusal(
        self, exc: Exception, what: str, actor: str, address: str, *, audit: bool
    ) -> Response:
        """The failure status for what went wrong (PS3.4 C.4.1.1.4), with one log
        line; only a fault of the node's own gets a traceback. Refusals that never
        reached the audited service are audited here."""
        if isinstance(exc, UnsupportedQuery):
            log.warning("%s from %s not supported: %s", what, actor, exc)
            code, comment = status.UNABLE_TO_PROCESS, str(exc)
        elif isinstance(exc, InvalidQuery):
            log.warning("%s from %s refused: %s", what, actor, exc)
            code, comment = refusal_code(exc), str(exc)
        elif isinstance(exc, ValueError | ArithmeticError | KeyError | TypeError | AttributeError):
            # what pydicom raises on an undecodable value (a DS of 400 digits
            # overflows a float): the peer's fault, not worth a traceback
            log.warning("%s from %s refused: %s", what, actor, reason(exc))
            code, comment = status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, reason(exc)
        elif isinstance(exc, OperationalError):
            # connection lost or refused, SQLite locked or full: worth retrying later
            cause = str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__]
            log.error("%s from %s failed: database unavailable: %s", what, actor, cause[0])
            return failure(status.OUT_OF_RESOURCES, "database unavailable")
        else:
            log.exception("%s from %s failed", what, actor)
            return failure(status.UNABLE_TO_PROCESS_INTERNAL, "query failed")
        if audit:
            self._refused(actor, address, comment)
        return failure(code, comment)

    def _refused(self, actor: str, address: str, why: str) -> None:
        try:
            record_query(
                self._db, level=None, keys={}, actor=actor, source_address=address, failure=why
            )
        except Exception:
            log.exception("could not audit a refused C-FIND")


def _wait_until_sent(event: Event) -> None:
    """Backpressure: let pynetdicom send the queued responses before more are made.

    Its DUL loop sends queued responses before it reads anything, so a result
    queued all at once would only see the peer's C-CANCEL after the last match
    (and would sit in memory meanwhile). Waiting for the send queue to empty lets
    the cancel in between two batches of responses.
    """
    queue = event.assoc.dul.to_provider_queue
    deadline = time.monotonic() + SEND_WAIT_SECONDS
    while not queue.empty() and event.assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.0002)


def parse_level(identifier: Dataset, sop_class: str) -> Level:
    value = str(identifier.get("QueryRetrieveLevel", "") or "").strip()
    if not value:
        raise InvalidQuery("QueryRetrieveLevel is missing")
    try:
        level = Level(value)
    except ValueError:
        raise InvalidQuery("QueryRetrieveLevel is not PATIENT, STUDY, SERIES or IMAGE") from None
    if level not in MODEL_LEVELS.get(sop_class, ()):
        raise InvalidQuery(f"level {level} is not part of this information model")
    return level


def identifier_keys(
    identifier: Dataset, sequences: dict[str, dict[str, str | None] | None] | None = None
) -> dict[str, str | None]:
    """keyword -> value as text, decoded with the identifier's character set.

    A sequence key is in the result valued None (asked for). With ``sequences``,
    the keys of its one item go there (None for a zero-length sequence), for the
    query service to match (PS3.4 C.2.2.2.6); without it, a sequence carrying
    values is refused (the caller cannot match it, and ignoring it silently
    would answer entities that do not match)."""
    keys: dict[str, str | None] = {}
    # tags, not elements: iterating a Dataset converts every value first
    for tag in identifier.keys():  # noqa: SIM118
        keyword = keyword_for_tag(tag)
        if not keyword or keyword in _NOT_KEYS:
            continue  # private or unknown tags: never matched, never answered
        number = _number_string(identifier, tag, keyword)
        if number is not None:
            keys[keyword] = number
            continue
        element = identifier[tag]
        value = element.value
        if element.VR == "SQ":
            items = list(value or [])
            if sequences is not None:
                if len(items) > 1:
                    raise InvalidQuery(f"{keyword}: a query sequence has one item at most")
                # nested sequences in the item: asked for, never matched (FF01)
                sequences[keyword] = identifier_keys(items[0], {}) if items else None
            elif any(_carries_values(item) for item in items):
                raise UnsupportedQuery(f"{keyword}: sequence matching is not supported here")
            keys[keyword] = None  # asked for; answered with its items, or empty with FF01
        elif isinstance(value, MultiValue):
            keys[keyword] = "\\".join(str(v) for v in value)
        else:
            keys[keyword] = "" if value is None else str(value)
    return keys


def _number_string(identifier: Dataset, tag: BaseTag, keyword: str) -> str | None:
    """An IS or DS value as the peer sent it (PS3.5 6.2: ASCII digits), read from
    its bytes: pydicom's own conversion turns a 20-digit IS into a float (its
    digits lost) and one of 400 digits into an OverflowError. The query parser
    judges the text (parse_match: not an integer, or out of range). None for
    any other element, or one pydicom has already converted."""
    if dictionary_VR(keyword) not in _NUMBER_STRING_VRS:
        return None
    raw = identifier.get_item(tag)
    if not isinstance(raw, RawDataElement):
        return None
    value = raw.value if isinstance(raw.value, bytes) else b""
    return value.decode("ascii", "replace").strip(" \x00")


def _carries_values(item: Dataset) -> bool:
    """A sequence item with a value somewhere in it (nested empty sequences and
    empty elements are return keys, not matching keys)."""
    for element in item:
        if element.VR == "SQ":
            if any(_carries_values(sub) for sub in element.value or []):
                return True
        elif str(element.value if element.value is not None else "").strip():
            return True
    return False


def _worklist_keys(
    identifier: Dataset,
) -> tuple[dict[str, str | None], dict[str, str | None], bool]:
    """(top-level keys, keys of the ScheduledProcedureStepSequence item, whether
    the sequence was asked for). A stray QueryRetrieveLevel is tolerated."""
    top: dict[str, str | None] = {}
    step: dict[str, str | None] = {}
    requested = False
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword in _NOT_KEYS:
            continue
        if keyword == "ScheduledProcedureStepSequence":
            requested = True
            items = list(element.value or [])
            if len(items) > 1:
                raise InvalidQuery("ScheduledProcedureStepSequence: one item at most")
            if items:
                step = identifier_keys(items[0])
            continue
        top.update(identifier_keys(_only(element)))
    return top, step, requested


def _only(element: Any) -> Dataset:
    ds = Dataset()
    ds.add(element)
    return ds


def _worklist_response(
    top: dict[str, str | None],
    step: dict[str, str | None],
    step_requested: bool,
    scheduled: ScheduledStep,
) -> Dataset:
    """The requested keys at top level and in the step item, nothing else."""
    ds = Dataset()
    values = {keyword: scheduled.top.get(keyword) for keyword in top}
    item_values = {keyword: scheduled.step.get(keyword) for keyword in step}
    texts = [*values.values(), *item_values.values()]
    if any(isinstance(v, str) and not v.isascii() for v in texts):
        ds.SpecificCharacterSet = _UTF8
    for keyword, value in values.items():
        setattr(ds, keyword, "" if value is None else value)
    if step_requested:
        item = Dataset()
        for keyword, value in item_values.items():
            setattr(item, keyword, "" if value is None else value)
        ds.ScheduledProcedureStepSequence = [item]
    return ds


def _build_until(
    answers: Iterator[Dataset], done: Callable[[], bool]
) -> tuple[list[Dataset], Exception | None]:
    """Answers taken from ``answers`` until ``done()``, and what building the
    next one raised, if it did (raised by the caller once it may answer)."""
    ready: list[Dataset] = []
    try:
        for answer in answers:
            ready.append(answer)
            if done():
                break
    except Exception as exc:
        return ready, exc
    return ready, None


def _raising(exc: Exception) -> Iterator[Dataset]:
    """Raise ``exc`` where the next answer was due (pynetdicom answers 0xC311)."""
    raise exc
    yield  # a generator


def _answers(
    event: Event, level: Level, keys: dict[str, str | None], matches: list[dict[str, Any]]
) -> Iterator[Dataset]:
    """The answers, each encoded straight from its row when it can be
    (``find_answers.py``), else built with pydicom. Identifiers are logged by
    pynetdicom only when PHI logging is on: then every answer is a Dataset."""
    syntax = str(event.context.transfer_syntax)
    encoder, implicit = None, False
    if syntax in _LEAN_SYNTAXES and not _config.LOG_RESPONSE_IDENTIFIERS:
        implicit = syntax == ImplicitVRLittleEndian
        encoder = AnswerEncoder.for_query(level, keys, implicit_vr=implicit)
    for match in matches:
        encoded = encoder.encode(match) if encoder is not None else None
        if encoded is None:
            yield _response(level, keys, match)
        else:
            yield EncodedIdentifier(encoded, implicit_vr=implicit)


def _response(level: Level, keys: dict[str, str | None], match: dict[str, Any]) -> Dataset:
    """Exactly the requested keys, plus QueryRetrieveLevel and SpecificCharacterSet.
    A sequence key carries the stored items that matched (requested item keys only)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level.value
    values = {keyword: match.get(keyword) for keyword in keys}
    if any(not text.isascii() for text in _texts(values.values())):
        ds.SpecificCharacterSet = _UTF8
    for keyword, value in values.items():
        if isinstance(value, list):
            setattr(ds, keyword, [_item(item) for item in value])
        elif dictionary_VR(keyword) == "SQ":
            setattr(ds, keyword, [])  # a sequence the node does not hold: zero items
        else:
            setattr(ds, keyword, "" if value is None else value)
    return ds


def _item(values: dict[str, Any]) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, "" if value is None else value)
    return item


def _texts(values: Any) -> Iterator[str]:
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for item in value:
                yield from _texts(item.values())


def failure(code: int, comment: str) -> Response:
    """A final status with its ErrorComment (LO, at most 64 characters)."""
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[: status.ERROR_COMMENT_MAX]
    return ds, None


def reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, InvalidQuery) else "identifier cannot be decoded"


def refusal_code(exc: InvalidQuery) -> int:
    """The failure status for a refused identifier, for C-FIND, C-MOVE and C-GET
    alike (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4): 0xC000 Unable to process when
    the node declines what it was asked (UnprocessableQuery: an integer beyond
    its VR's range, more values than max_query_list_values), 0xA900 Identifier
    does not match SOP Class when the identifier breaks the information model's
    rules (a malformed value, a wildcard in a retrieve's unique key)."""
    if isinstance(exc, UnprocessableQuery):
        return status.UNABLE_TO_PROCESS
    return status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
