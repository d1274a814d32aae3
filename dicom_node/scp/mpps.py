"""MPPS SCP (PS3.4 F.7): N-CREATE and N-SET -> one service call -> a status."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import N_CREATE, N_SET
from pynetdicom.events import Event
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.db.engine import Database
from dicom_node.domain.audit import TargetKind
from dicom_node.domain.vr import is_valid_uid
from dicom_node.log_limit import LogLimiter
from dicom_node.scp import status
from dicom_node.services.access.refusals import MPPS_SET_REFUSED, Refusal, RefusalAudit
from dicom_node.services.workflow.mpps import (
    NOT_THE_CREATOR,
    MppsCreate,
    MppsError,
    MppsProblem,
    MppsSet,
    ScheduledStepRef,
    create_mpps,
    update_mpps,
)

log = logging.getLogger("dicom_node.scp")

MPPS_MODEL = str(ModalityPerformedProcedureStep)

# PS3.7 C.4 / PS3.4 F.7.2
_STATUS = {
    MppsProblem.DUPLICATE: 0x0111,  # Duplicate SOP Instance
    MppsProblem.NO_SUCH_INSTANCE: 0x0112,  # No Such SOP Instance
    MppsProblem.NOT_IN_PROGRESS: 0x0110,  # Processing failure
    MppsProblem.INVALID_VALUE: 0x0106,  # Invalid attribute value
    MppsProblem.MISSING_ATTRIBUTE: 0x0120,  # Missing attribute
    MppsProblem.NOT_AUTHORIZED: 0x0124,  # Refused: Not authorized (PS3.7 10.1.3)
}

Answer = tuple[int | Dataset, Dataset | None]


# the audit action of an N-SET refused to another AE than the step's creator


class MppsHandler:
    def __init__(
        self,
        db: Database,
        *,
        set_by_creator_only: bool = True,
        refusals: RefusalAudit | None = None,
    ) -> None:
        self._db = db
        # an N-SET from an AE other than the step's creator is refused (0x0124)
        self._set_by_creator_only = set_by_creator_only
        # its audit, aggregated per peer (the SCP's, shared with access control);
        # None: not audited
        self._refusals = refusals
        # refusal lines per operation, problem and peer address: a peer repeating a
        # refused request gets one line at once, then one per 10 s with the count
        self._lines = LogLimiter(log)

    def handle_create(self, event: Event) -> Answer:
        requestor = event.assoc.requestor
        calling = requestor.ae_title
        try:
            uid = str(cast(N_CREATE, event.request).AffectedSOPInstanceUID or "").strip()
            if not is_valid_uid(uid):
                raise MppsError(MppsProblem.MISSING_ATTRIBUTE, "Affected SOP Instance UID")
            attributes = event.attribute_list
            for required in ("PerformedProcedureStepStatus", "ScheduledStepAttributesSequence"):
                if required not in attributes:  # Type 1 (PS3.4 F.7.2.1)
                    raise MppsError(MppsProblem.MISSING_ATTRIBUTE, required)
            create_mpps(
                self._db,
                MppsCreate(
                    sop_instance_uid=uid,
                    status=_text(attributes, "PerformedProcedureStepStatus"),
                    scheduled_steps=[
                        ScheduledStepRef(
                            _text(item, "StudyInstanceUID") or None,
                            _text(item, "AccessionNumber") or None,
                        )
                        for item in attributes.get("ScheduledStepAttributesSequence", [])
                    ],
                    station_ae_title=_text(attributes, "PerformedStationAETitle") or None,
                    started_at=_moment(
                        attributes,
                        "PerformedProcedureStepStartDate",
                        "PerformedProcedureStepStartTime",
                    ),
                ),
                actor=calling,
                source_address=f"{requestor.address}:{requestor.port}",
            )
        except MppsError as exc:
            self._refused(event, "N-CREATE", exc.problem, str(exc))
            return _failure(_STATUS[exc.problem], str(exc))
        except SQLAlchemyError:
            log.exception("MPPS N-CREATE from %s failed", calling)
            return _failure(status.PROCESSING_FAILURE, "not recorded: try again")
        except Exception as exc:  # undecodable attribute list and the like
            self._refused(event, "N-CREATE", "undecodable", type(exc).__name__)
            return _failure(0x0106, "attribute list cannot be processed")
        return status.SUCCESS, attributes

    def handle_set(self, event: Event) -> Answer:
        requestor = event.assoc.requestor
        calling = requestor.ae_title
        uid = ""
        try:
            request = cast(N_SET, event.request)
            uid = str(request.RequestedSOPInstanceUID or "").strip()
            changes = event.modification_list
            update_mpps(
                self._db,
                MppsSet(
                    sop_instance_uid=uid,
                    status=_text(changes, "PerformedProcedureStepStatus") or None,
                    ended_at=_moment(
                        changes, "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"
                    ),
                    performed_series=_performed_series(changes),
                    discontinuation_reason=_reason(changes),
                ),
                actor=calling,
                creator_only=self._set_by_creator_only,
                source_address=f"{requestor.address}:{requestor.port}",
            )
        except MppsError as exc:
            self._refused(event, "N-SET", exc.problem, str(exc))
            if exc.problem is MppsProblem.NOT_AUTHORIZED:
                self._audit_refused_set(event, uid)
            return _failure(_STATUS[exc.problem], str(exc))
        except SQLAlchemyError:
            log.exception("MPPS N-SET from %s failed", calling)
            return _failure(status.PROCESSING_FAILURE, "not recorded: try again")
        except Exception as exc:
            self._refused(event, "N-SET", "undecodable", type(exc).__name__)
            return _failure(0x0106, "modification list cannot be processed")
        return status.SUCCESS, changes

    def _refused(self, event: Event, operation: str, problem: str, why: str) -> None:
        """One WARNING line per operation, problem and peer address and window."""
        requestor = event.assoc.requestor
        host = str(requestor.address)
        self._lines.warning(
            (operation, problem, host),
            "MPPS %s from %s at %s:%s refused: %s",
            operation,
            requestor.ae_title,
            host,
            requestor.port,
            why,
        )

    def _audit_refused_set(self, event: Event, uid: str) -> None:
        """A Security Alert, aggregated per peer and interval with the other
        refusals: the first at once, the rest counted (``services/access/refusals.py``)."""
        if self._refusals is None:
            return
        requestor = event.assoc.requestor
        self._refusals.record(
            Refusal(
                action=MPPS_SET_REFUSED,
                host=str(requestor.address),
                port=int(requestor.port),
                calling_ae=requestor.ae_title,
                target_class=TargetKind.PROCEDURE_STEP,
                target_id=uid,
                reason=NOT_THE_CREATOR,
            )
        )


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _moment(ds: Dataset, date_keyword: str, time_keyword: str) -> datetime | None:
    """DA + TM in the modality's local time (taken as the node's) -> aware datetime."""
    day, clock = _text(ds, date_keyword), _text(ds, time_keyword).split(".")[0]
    if not day:
        return None
    if len(day) != 8 or not day.isdigit() or (clock and not clock.isdigit()):
        raise MppsError(MppsProblem.INVALID_VALUE, f"{date_keyword}/{time_keyword}")
    clock = (clock + "000000")[:6]
    try:
        return datetime.strptime(day + clock, "%Y%m%d%H%M%S").astimezone()
    except ValueError:
        raise MppsError(MppsProblem.INVALID_VALUE, f"{date_keyword}/{time_keyword}") from None


def _performed_series(ds: Dataset) -> dict[str, list[str]] | None:
    if "PerformedSeriesSequence" not in ds:
        return None
    series: dict[str, list[str]] = {}
    for item in ds.PerformedSeriesSequence:
        uid = _text(item, "SeriesInstanceUID")
        if not is_valid_uid(uid):
            raise MppsError(MppsProblem.INVALID_VALUE, "PerformedSeriesSequence SeriesInstanceUID")
        references = [
            *item.get("ReferencedImageSequence", []),
            *item.get("ReferencedNonImageCompositeSOPInstanceSequence", []),
        ]
        series[uid] = [_text(ref, "ReferencedSOPInstanceUID") for ref in references]
    return series


def _reason(ds: Dataset) -> str | None:
    codes = ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []
    return next((_text(code, "CodeMeaning") for code in codes if "CodeMeaning" in code), None)


def _failure(code: int, comment: str) -> Answer:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[: status.ERROR_COMMENT_MAX]
    return ds, None
